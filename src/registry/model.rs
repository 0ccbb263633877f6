//! Validated value types of the registry: names, instances, service settings.
//!
//! Everything a client sends is parsed into these types before it reaches the
//! registry, so the registry and the projection never see an invalid value.
//! Each rejection names the field it is about.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// A rejected value, with the name of the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field as a client names it (`address`, `meta.version`, `tags[2]`).
    pub field: String,
    /// What is wrong with it, in words a client can act on.
    pub message: String,
}

impl ValidationError {
    /// A rejection of `field` for the reason `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks that `value` is one DNS label of `[a-z0-9-]`, 1..=63 characters, not
/// starting or ending with `-`, and returns it in lower case.
pub fn parse_label(field: &str, value: &str) -> Result<String, ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(ValidationError::new(
            field,
            format!(
                "is {} characters long; a DNS label has at most 63",
                value.len()
            ),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(ValidationError::new(
            field,
            format!("contains {bad:?}; only letters, digits and '-' are allowed"),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(ValidationError::new(
            field,
            "must not start or end with '-'",
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// Label types hold their text as `Arc<str>` where copies are
/// many (a service name in every snapshot, tags), so they share it;
/// `Box<str>` where one copy lives as long as the value (an instance's id),
/// as its allocation is 16 bytes smaller.
macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $text:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($text);

        impl $name {
            /// Parses and lower-cases a label, naming the field on error.
            pub fn parse(value: &str) -> Result<Self, ValidationError> {
                parse_label($field, value).map(|label| Self(label.into()))
            }

            /// The label, in lower case.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

label_type!(
    /// A service name: one DNS label, stored in lower case.
    ServiceName,
    "service",
    Arc<str>
);
label_type!(
    /// An instance id, unique within its service: one DNS label.
    InstanceId,
    "id",
    Box<str>
);
label_type!(
    /// A tag: one DNS label, usable as a filter in DNS names.
    Tag,
    "tags",
    Arc<str>
);

impl Tag {
    /// The tag's text, shared rather than copied.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

/// A cluster (data centre) name: one DNS label that is not a structural label
/// of the DNS layout (`service`, `instance`, `ns`), so names stay unambiguous.
///
/// Instances of a cluster share one copy of its name ([`intern`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cluster(Arc<str>);

impl Serialize for Cluster {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Distinct cluster names shared at most; past this, names are not shared
/// (they are still correct, just not deduplicated).
const MAX_INTERNED: usize = 4096;

/// The shared copy of cluster name `label`.
fn intern(label: String) -> Arc<str> {
    static NAMES: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut names = NAMES.lock();
    if let Some(shared) = names.get(label.as_str()) {
        return shared.clone();
    }
    let label: Arc<str> = label.into();
    if names.len() < MAX_INTERNED {
        names.insert(label.clone());
    }
    label
}

/// Labels that name parts of the DNS layout and so cannot be cluster names.
pub const RESERVED_CLUSTER_NAMES: [&str; 3] = ["service", "instance", "ns"];

impl Cluster {
    /// Parses a cluster name; `field` is where it came from (`cluster`, `failover[0]`).
    pub fn parse_field(field: &str, value: &str) -> Result<Self, ValidationError> {
        let label = parse_label(field, value)?;
        if RESERVED_CLUSTER_NAMES.contains(&label.as_str()) {
            return Err(ValidationError::new(
                field,
                format!("{label:?} is reserved by the DNS layout"),
            ));
        }
        Ok(Self(intern(label)))
    }

    /// Parses a cluster name given in the `cluster` field.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        Self::parse_field("cluster", value)
    }

    /// The cluster name, in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self(intern(DEFAULT_CLUSTER.to_string()))
    }
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The cluster an instance belongs to when it does not say.
pub const DEFAULT_CLUSTER: &str = "dc1";
/// Weight of an instance that does not say (DESIGN §1).
pub const DEFAULT_WEIGHT: u16 = 100;
/// Priority of an instance that does not say (DESIGN §1).
pub const DEFAULT_PRIORITY: u16 = 10;
/// TTL of an instance's answers when it does not say (DESIGN §2), in seconds.
pub const DEFAULT_TTL: u32 = 5;
/// How long an instance whose lease has lapsed stays (critical) before it is
/// removed, when it does not say (DESIGN §1).
pub const DEFAULT_DEREGISTER_AFTER: Duration = Duration::from_secs(300);
/// Shortest lease: heartbeats more often than this are a load, not a signal.
pub const MIN_LEASE: Duration = Duration::from_millis(100);
/// Longest lease or deregistration delay: a week.
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 86_400);
/// Longest TTL an instance may ask for, in seconds: a day, far above any
/// sane discovery TTL.
pub const MAX_TTL: u32 = 86_400;
/// Longest meta key (DESIGN §1).
pub const MAX_META_KEY: usize = 32;
/// Largest meta as a whole, counting every `key=value` (DESIGN §1).
pub const MAX_META_BYTES: usize = 1024;
/// Most tags on one instance; each becomes a DNS filter, so keep the set small.
pub const MAX_TAGS: usize = 64;

/// What the operator or the instance says about its readiness (DESIGN §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Registered but not ready: not served.
    Starting,
    /// Ready: served while its health allows.
    #[default]
    Up,
    /// Drained by an operator: not served.
    OutOfService,
}

impl Status {
    /// Parses `STARTING`, `UP` or `OUT_OF_SERVICE` (any case).
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value.to_ascii_uppercase().as_str() {
            "STARTING" => Ok(Self::Starting),
            "UP" => Ok(Self::Up),
            "OUT_OF_SERVICE" => Ok(Self::OutOfService),
            _ => Err(ValidationError::new(
                "status",
                format!("{value:?} is not one of STARTING, UP, OUT_OF_SERVICE"),
            )),
        }
    }

    /// Whether this status lets the instance be served.
    pub fn is_served(self) -> bool {
        self == Self::Up
    }
}

/// What leases and checks say about an instance (DESIGN §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Alive: served.
    #[default]
    Passing,
    /// Degraded: served, one priority tier down.
    Warning,
    /// Dead or unreachable: not served.
    Critical,
}

impl Health {
    /// Parses `passing`, `warning` or `critical`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "passing" => Ok(Self::Passing),
            "warning" => Ok(Self::Warning),
            "critical" => Ok(Self::Critical),
            _ => Err(ValidationError::new(
                "health",
                format!("{value:?} is not one of passing, warning, critical"),
            )),
        }
    }
}

/// How a service's answers are ordered within a priority tier (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// RFC 2782 weighted random order: first place with probability w/Σw.
    #[default]
    Weighted,
    /// Rotation by one place per query.
    RoundRobin,
    /// Uniform shuffle.
    Random,
    /// Weighted rendezvous hashing of the client address (or its ECS subnet).
    Hash,
}

impl LbPolicy {
    /// Parses `weighted`, `round_robin`, `random` or `hash`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "weighted" => Ok(Self::Weighted),
            "round_robin" => Ok(Self::RoundRobin),
            "random" => Ok(Self::Random),
            "hash" => Ok(Self::Hash),
            _ => Err(ValidationError::new(
                "lb",
                format!("{value:?} is not one of weighted, round_robin, random, hash"),
            )),
        }
    }
}

/// A duration in whole milliseconds, up to about 49 days: 4 bytes where a
/// `Duration` takes 16, in a struct every instance carries. Leases and
/// deregistration delays are at most a week ([`MAX_LEASE`]).
///
/// Held as the count plus one, so that zero is free for `Option<Millis>`
/// to use as `None` and an optional lease is 4 bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(std::num::NonZeroU32);

impl Millis {
    /// `d` to the millisecond below, at most `u32::MAX - 1` milliseconds.
    pub const fn saturating(d: Duration) -> Self {
        let ms = d.as_millis();
        let stored = if ms >= u32::MAX as u128 {
            u32::MAX
        } else {
            ms as u32 + 1
        };
        match std::num::NonZeroU32::new(stored) {
            Some(n) => Self(n),
            None => unreachable!(),
        }
    }

    /// As a `Duration`.
    pub const fn get(self) -> Duration {
        Duration::from_millis(self.0.get() as u64 - 1)
    }
}

/// Parses a duration written like `500ms`, `10s`, `5m`, `1h 30m`.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, ValidationError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        ValidationError::new(
            field,
            format!("{value:?} is not a duration like 500ms, 10s or 5m ({e})"),
        )
    })
}

/// Writes a duration the way `parse_duration` reads it back (`5s`, `1m 30s`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Instance metadata: `key=value` pairs, served as TXT on the instance name.
///
/// Kept as one string, the pairs in key order, each `key=value` and a line
/// feed between them: one allocation per instance, where a slice of string
/// pairs costs three and a map several hundred bytes. Keys are printable
/// ASCII without `=` and values have no control characters, so neither the
/// separator nor the first `=` of a pair can be part of a key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta(Box<str>);

/// Separates pairs in [`Meta`]'s string.
const META_SEPARATOR: char = '\n';

impl Serialize for Meta {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl Meta {
    /// Validates keys (1..=32 printable ASCII characters, no `=`) and values
    /// (no control characters), and the whole (≤ 1 KiB as `key=value` strings).
    pub fn parse(pairs: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        let mut total = 0;
        for (key, value) in &pairs {
            let field = format!("meta.{key}");
            if key.is_empty() {
                return Err(ValidationError::new("meta", "keys must not be empty"));
            }
            if key.len() > MAX_META_KEY {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "key is {} characters long; at most {MAX_META_KEY}",
                        key.len()
                    ),
                ));
            }
            if !key.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
                return Err(ValidationError::new(
                    field,
                    "key must be printable ASCII without spaces or '='",
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    field,
                    "value must not contain control characters",
                ));
            }
            // Each pair becomes one TXT string `key=value`, at most 255 bytes.
            let pair_len = key.len() + 1 + value.len();
            if pair_len > 255 {
                return Err(ValidationError::new(
                    field,
                    format!("key=value is {pair_len} bytes; one TXT string holds at most 255"),
                ));
            }
            total += pair_len;
        }
        if total > MAX_META_BYTES {
            return Err(ValidationError::new(
                "meta",
                format!("is {total} bytes as key=value strings; at most {MAX_META_BYTES}"),
            ));
        }
        // Exactly the length: the boxed string keeps the allocation as is.
        let mut joined = String::with_capacity(total + pairs.len().saturating_sub(1));
        for (key, value) in &pairs {
            if !joined.is_empty() {
                joined.push(META_SEPARATOR);
            }
            joined.push_str(key);
            joined.push('=');
            joined.push_str(value);
        }
        Ok(Self(joined.into_boxed_str()))
    }

    /// The pairs, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .split(META_SEPARATOR)
            .filter_map(|pair| pair.split_once('='))
    }

    /// The pairs as TXT strings, `key=value`, ordered by key.
    pub fn txt_strings(&self) -> impl Iterator<Item = &str> {
        self.0.split(META_SEPARATOR).filter(|pair| !pair.is_empty())
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a registration says about an instance; the registry adds the id and
/// the indexes. Built by the API from a request body, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// Where clients connect: the A or AAAA answer.
    pub address: IpAddr,
    /// Where clients connect: the SRV port.
    pub port: u16,
    /// Share of traffic within its priority tier (1..=65535).
    pub weight: u16,
    /// Tier: lower is tried first (0..=65535).
    pub priority: u16,
    /// Filters usable in DNS names (`v2.web.service.internal`), sorted, unique.
    pub tags: Box<[Tag]>,
    /// Free-form key=value pairs, served as TXT.
    pub meta: Meta,
    /// The cluster it runs in.
    pub cluster: Cluster,
    /// TTL of its answers, in seconds (at most [`MAX_TTL`]).
    pub ttl: u32,
    /// Readiness set by operator or instance.
    pub status: Status,
    /// Heartbeat period: without a heartbeat for this long the instance
    /// becomes critical. `None`: no lease.
    pub lease: Option<Millis>,
    /// How long a critical instance stays before it is removed.
    pub deregister_after: Millis,
    /// Active checks; the instance's check health is the worst of them.
    pub checks: Box<[Check]>,
    /// Whether an instance with checks is served before its first check
    /// passes (`initial: passing`); by default it is not.
    pub initial_passing: bool,
}

/// What an active check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// A TCP connect to `host:port`.
    Tcp(String),
    /// An HTTP GET: 2xx passing, 429 warning, anything else critical.
    Http(String),
}

/// One active check (DESIGN §1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What to probe.
    pub target: CheckTarget,
    /// Time between probes.
    pub interval: Duration,
    /// Longest a probe may take.
    pub timeout: Duration,
    /// Consecutive passes that make a failing check pass.
    pub rise: u32,
    /// Consecutive failures that make a passing check fail.
    pub fall: u32,
}

/// Check defaults (DESIGN §1 and the liveness issue).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Default probe timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Default rise.
pub const DEFAULT_RISE: u32 = 2;
/// Default fall.
pub const DEFAULT_FALL: u32 = 3;
/// Shortest check interval.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Most checks on one instance.
pub const MAX_CHECKS: usize = 8;

impl InstanceSpec {
    /// A spec with every optional field at its default.
    pub fn new(address: IpAddr, port: u16) -> Self {
        Self {
            address,
            port,
            weight: DEFAULT_WEIGHT,
            priority: DEFAULT_PRIORITY,
            tags: Box::default(),
            meta: Meta::default(),
            cluster: Cluster::default(),
            ttl: DEFAULT_TTL,
            status: Status::default(),
            lease: None,
            deregister_after: Millis::saturating(DEFAULT_DEREGISTER_AFTER),
            checks: Box::default(),
            initial_passing: false,
        }
    }

    /// The check health a new registration starts with.
    pub fn initial_check_health(&self) -> Health {
        if self.checks.is_empty() || self.initial_passing {
            Health::Passing
        } else {
            Health::Critical
        }
    }

    /// The instance this spec describes, with its id and indexes.
    pub fn into_instance(self, id: InstanceId, create_index: u64, modify_index: u64) -> Instance {
        Instance {
            id,
            check_health: self.initial_check_health(),
            spec: self,
            health: Health::Passing,
            create_index,
            modify_index,
        }
    }
}

/// One registered instance of a service, as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique within the service; part of the instance's DNS name.
    pub id: InstanceId,
    /// What its registration says.
    pub spec: InstanceSpec,
    /// What its lease says (passing while it has none).
    pub health: Health,
    /// What its active checks say (passing while it has none).
    pub check_health: Health,
    /// Index of the write that created it.
    pub create_index: u64,
    /// Index of the write that last changed it.
    pub modify_index: u64,
}

impl Instance {
    /// Whether DNS should serve it: status UP and neither lease nor checks
    /// critical.
    pub fn is_served(&self) -> bool {
        self.spec.status.is_served() && self.effective_health() != Health::Critical
    }

    /// The worse of lease and check health: what operators see and DNS uses.
    pub fn effective_health(&self) -> Health {
        self.health.max(self.check_health)
    }
}

/// Per-service settings (`PUT /v1/services/{service}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSettings {
    /// How answers are ordered within a priority tier.
    pub lb: LbPolicy,
    /// Clusters whose instances are served, in a later tier, when the local
    /// cluster has none served; in the order given.
    pub failover: Vec<Cluster>,
    /// Serve every UP instance when none is healthy (takes effect with health checks).
    pub fail_open: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lower_cased_and_checked() {
        assert_eq!(ServiceName::parse("Web-1").unwrap().as_str(), "web-1");
        for bad in ["", "-web", "web-", "we_b", "web.x", &"a".repeat(64), "wéb"] {
            let err = ServiceName::parse(bad).unwrap_err();
            assert_eq!(err.field, "service", "{bad:?}");
        }
        assert!(ServiceName::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn structural_labels_are_not_clusters() {
        assert_eq!(Cluster::parse("service").unwrap_err().field, "cluster");
        assert_eq!(
            Cluster::parse_field("failover[1]", "instance")
                .unwrap_err()
                .field,
            "failover[1]"
        );
        assert_eq!(Cluster::parse("DC2").unwrap().as_str(), "dc2");
    }

    #[test]
    fn millis_keep_the_millisecond_and_an_optional_one_is_four_bytes() {
        for ms in [0, 1, 1500, MAX_LEASE.as_millis() as u64] {
            let d = Duration::from_millis(ms);
            assert_eq!(Millis::saturating(d).get(), d);
        }
        let sub = Duration::from_micros(1999);
        assert_eq!(Millis::saturating(sub).get(), Duration::from_millis(1));
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(
            Millis::saturating(huge).get(),
            Duration::from_millis(u64::from(u32::MAX) - 1)
        );
        assert_eq!(size_of::<Option<Millis>>(), 4);
    }

    #[test]
    fn meta_reads_back_its_pairs_in_key_order() {
        let pairs = [("zone", "eu-1"), ("a", "x=y"), ("empty", "")];
        let meta = Meta::parse(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap();
        let read: Vec<_> = meta.iter().collect();
        assert_eq!(read, [("a", "x=y"), ("empty", ""), ("zone", "eu-1")]);
        let txt: Vec<_> = meta.txt_strings().collect();
        assert_eq!(txt, ["a=x=y", "empty=", "zone=eu-1"]);
        assert!(Meta::default().is_empty());
        assert_eq!(Meta::default().txt_strings().count(), 0);
    }

    #[test]
    fn durations_read_back_what_they_write() {
        for s in ["500ms", "10s", "5m", "1h 30m"] {
            let d = parse_duration("ttl", s).unwrap();
            assert_eq!(parse_duration("ttl", &format_duration(d)).unwrap(), d);
        }
        assert_eq!(parse_duration("ttl", "ten").unwrap_err().field, "ttl");
    }

    #[test]
    fn meta_limits_name_the_key() {
        let mut m = BTreeMap::new();
        m.insert("k".repeat(33), "v".into());
        assert_eq!(
            Meta::parse(m).unwrap_err().field,
            format!("meta.{}", "k".repeat(33))
        );
        let mut m = BTreeMap::new();
        m.insert("a=b".into(), "v".into());
        assert_eq!(Meta::parse(m).unwrap_err().field, "meta.a=b");
        let mut m = BTreeMap::new();
        for i in 0..20 {
            m.insert(format!("key{i}"), "v".repeat(60));
        }
        assert_eq!(Meta::parse(m).unwrap_err().field, "meta");
    }

    #[test]
    fn status_and_policy_parse() {
        assert_eq!(
            Status::parse("out_of_service").unwrap(),
            Status::OutOfService
        );
        assert_eq!(Status::parse("DOWN").unwrap_err().field, "status");
        assert_eq!(
            LbPolicy::parse("round_robin").unwrap(),
            LbPolicy::RoundRobin
        );
        assert_eq!(LbPolicy::parse("fastest").unwrap_err().field, "lb");
    }
}
