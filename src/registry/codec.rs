//! The registry's JSON form: one shape for instances and settings, used by
//! the admin API, the disk store and exports, parsed field by field so that
//! every rejection names its field. JSON is not HTTP: this module knows
//! nothing of requests.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::model::{
    Check, CheckTarget, Cluster, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_FALL,
    DEFAULT_RISE, Health, Instance, InstanceId, InstanceSpec, LbPolicy, MAX_CHECKS, MAX_LEASE,
    MAX_TAGS, MAX_TTL, MIN_CHECK_INTERVAL, MIN_LEASE, Meta, Millis, ServiceName, ServiceSettings,
    Status, Tag, ValidationError, format_duration, parse_duration,
};
use super::store::{Instances, StoredState};

/// Fields an instance spec has.
pub const SPEC_FIELDS: &[&str] = &[
    "address",
    "port",
    "weight",
    "priority",
    "tags",
    "meta",
    "cluster",
    "ttl",
    "status",
    "lease",
    "deregister_after",
    "checks",
    "initial",
];

/// Fields of one check.
const CHECK_FIELDS: &[&str] = &["tcp", "http", "interval", "timeout", "rise", "fall"];

/// Parses one check; `at` names it (`checks[0]`).
fn check_from(value: Value, at: &str) -> Result<Check, ValidationError> {
    let named = |e: ValidationError| {
        ValidationError::new(
            format!("{at}.{}", e.field)
                .trim_end_matches('.')
                .to_string(),
            e.message,
        )
    };
    let mut f = Fields::of(value, CHECK_FIELDS, &[]).map_err(named)?;
    let target = match (f.str("tcp").map_err(named)?, f.str("http").map_err(named)?) {
        (Some(tcp), None) => {
            let valid = tcp.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !valid {
                return Err(named(ValidationError::new(
                    "tcp",
                    format!("{tcp:?} is not host:port"),
                )));
            }
            CheckTarget::Tcp(tcp)
        }
        (None, Some(http)) => {
            if !(http.starts_with("http://") || http.starts_with("https://")) || http.len() > 2048 {
                return Err(named(ValidationError::new(
                    "http",
                    format!("{http:?} is not an http:// URL"),
                )));
            }
            CheckTarget::Http(http)
        }
        _ => {
            return Err(named(ValidationError::new(
                "",
                "needs exactly one of tcp or http",
            )));
        }
    };
    let interval = f
        .duration("interval")
        .map_err(named)?
        .unwrap_or(DEFAULT_CHECK_INTERVAL);
    if interval < MIN_CHECK_INTERVAL || interval > MAX_LEASE {
        return Err(named(ValidationError::new(
            "interval",
            format!(
                "must be from {} to {}",
                format_duration(MIN_CHECK_INTERVAL),
                format_duration(MAX_LEASE)
            ),
        )));
    }
    let timeout = f
        .duration("timeout")
        .map_err(named)?
        .unwrap_or(DEFAULT_CHECK_TIMEOUT.min(interval));
    if timeout.is_zero() || timeout > interval {
        return Err(named(ValidationError::new(
            "timeout",
            "must be above zero and at most the interval",
        )));
    }
    Ok(Check {
        target,
        interval,
        timeout,
        rise: f
            .int("rise", 1, 100)
            .map_err(named)?
            .map_or(DEFAULT_RISE, |v| v as u32),
        fall: f
            .int("fall", 1, 100)
            .map_err(named)?
            .map_or(DEFAULT_FALL, |v| v as u32),
    })
}

/// One check as JSON.
fn check_to_json(check: &Check) -> Value {
    let mut v = match &check.target {
        CheckTarget::Tcp(t) => json!({ "tcp": t }),
        CheckTarget::Http(h) => json!({ "http": h }),
    };
    v["interval"] = json!(format_duration(check.interval));
    v["timeout"] = json!(format_duration(check.timeout));
    v["rise"] = json!(check.rise);
    v["fall"] = json!(check.fall);
    v
}

/// The fields of a JSON object, taken one at a time.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// The fields of `value`, which must be an object whose keys are all in
    /// `known` (or in `also`).
    pub fn of(value: Value, known: &[&str], also: &[&str]) -> Result<Self, ValidationError> {
        let Value::Object(map) = value else {
            return Err(ValidationError::new(
                "",
                format!("must be a JSON object, not {}", kind(&value)),
            ));
        };
        only_known(map.keys(), known, also)?;
        Ok(Self(map))
    }

    /// Removes and returns `name`, treating `null` as absent.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    /// A required string.
    pub fn required_str(&mut self, name: &str) -> Result<String, ValidationError> {
        self.str(name)?
            .ok_or_else(|| ValidationError::new(name, "is required"))
    }

    /// An optional string.
    pub fn str(&mut self, name: &str) -> Result<Option<String>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be a string, not {}", kind(&other)),
            )),
        }
    }

    /// An optional integer in `min..=max`.
    pub fn int(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(ValidationError::new(
                    name,
                    format!("must be an integer from {min} to {max}, not {n}"),
                )),
            },
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be an integer, not {}", kind(&other)),
            )),
        }
    }

    /// An optional boolean.
    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be true or false, not {}", kind(&other)),
            )),
        }
    }

    /// An optional array of strings.
    pub fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    other => Err(ValidationError::new(
                        format!("{name}[{i}]"),
                        format!("must be a string, not {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be an array of strings, not {}", kind(&other)),
            )),
        }
    }

    /// An optional object of string values.
    pub fn string_map(
        &mut self,
        name: &str,
    ) -> Result<Option<Vec<(String, String)>>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(ValidationError::new(
                        format!("{name}.{k}"),
                        format!("must be a string, not {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be an object of strings, not {}", kind(&other)),
            )),
        }
    }

    /// An optional duration: a string like `5s`, or a number of seconds.
    pub fn duration(&mut self, name: &str) -> Result<Option<std::time::Duration>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(name, &s).map(Some),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|secs| Some(std::time::Duration::from_secs(secs)))
                .ok_or_else(|| {
                    ValidationError::new(name, format!("{n} is not a whole number of seconds"))
                }),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be a duration like \"5s\", not {}", kind(&other)),
            )),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses the spec fields of `f`; an instance without `cluster` is in
/// `default_cluster`.
pub fn spec_from(
    f: &mut Fields,
    default_cluster: &Cluster,
) -> Result<InstanceSpec, ValidationError> {
    let address_text = f.required_str("address")?;
    let address: IpAddr = address_text.trim().parse().map_err(|_| {
        ValidationError::new(
            "address",
            format!("{address_text:?} is not an IPv4 or IPv6 address"),
        )
    })?;
    if address.is_unspecified() || address.is_multicast() {
        return Err(ValidationError::new(
            "address",
            format!("{address} cannot be connected to"),
        ));
    }
    let port = f
        .int("port", 1, 65535)?
        .ok_or_else(|| ValidationError::new("port", "is required"))?;
    let mut spec = InstanceSpec::new(address, port as u16);
    spec.cluster = default_cluster.clone();
    if let Some(weight) = f.int("weight", 1, 65535)? {
        spec.weight = weight as u16;
    }
    if let Some(priority) = f.int("priority", 0, 65535)? {
        spec.priority = priority as u16;
    }
    if let Some(tags) = f.strings("tags")? {
        let mut parsed = tags
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Tag::parse(t).map_err(|e| ValidationError::new(format!("tags[{i}]"), e.message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort();
        parsed.dedup();
        if parsed.len() > MAX_TAGS {
            return Err(ValidationError::new(
                "tags",
                format!("{} tags; at most {MAX_TAGS}", parsed.len()),
            ));
        }
        spec.tags = parsed.into_boxed_slice();
    }
    if let Some(meta) = f.string_map("meta")? {
        spec.meta = Meta::parse(meta.into_iter().collect::<BTreeMap<_, _>>())?;
    }
    if let Some(cluster) = f.str("cluster")? {
        spec.cluster = Cluster::parse(&cluster)?;
    }
    if let Some(ttl) = f.duration("ttl")? {
        let max = Duration::from_secs(MAX_TTL.into());
        if ttl.subsec_nanos() != 0 || ttl > max {
            return Err(ValidationError::new(
                "ttl",
                format!("must be whole seconds up to {}", format_duration(max)),
            ));
        }
        spec.ttl = ttl.as_secs() as u32;
    }
    if let Some(status) = f.str("status")? {
        spec.status = Status::parse(&status)?;
    }
    let bounded = |field: &str, d: Duration, min: Duration| {
        if d < min || d > MAX_LEASE {
            Err(ValidationError::new(
                field,
                format!(
                    "must be from {} to {}",
                    format_duration(min),
                    format_duration(MAX_LEASE)
                ),
            ))
        } else {
            // Kept to the millisecond below. Not refused: records stored
            // before durations were kept in milliseconds may have finer
            // ones, and a data directory must keep loading.
            Ok(Millis::saturating(d))
        }
    };
    if let Some(lease) = f.duration("lease")? {
        spec.lease = Some(bounded("lease", lease, MIN_LEASE)?);
    }
    if let Some(after) = f.duration("deregister_after")? {
        spec.deregister_after = bounded("deregister_after", after, Duration::ZERO)?;
    }
    if let Some(checks) = f.take("checks") {
        let Value::Array(items) = checks else {
            return Err(ValidationError::new("checks", "must be an array of checks"));
        };
        if items.len() > MAX_CHECKS {
            return Err(ValidationError::new(
                "checks",
                format!("{} checks; at most {MAX_CHECKS}", items.len()),
            ));
        }
        spec.checks = items
            .into_iter()
            .enumerate()
            .map(|(i, c)| check_from(c, &format!("checks[{i}]")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(initial) = f.str("initial")? {
        spec.initial_passing = match initial.as_str() {
            "passing" => true,
            "critical" => false,
            other => {
                return Err(ValidationError::new(
                    "initial",
                    format!("{other:?} is not passing or critical"),
                ));
            }
        };
    }
    Ok(spec)
}

/// An instance as JSON: its spec, its names and its indexes. Serializes
/// straight from the instance, without building a `Value` (this runs twice
/// per registration: the stored record and the API's answer).
#[derive(Debug, Serialize)]
pub struct InstanceJson<'a> {
    service: &'a ServiceName,
    id: &'a InstanceId,
    address: IpAddr,
    port: u16,
    weight: u16,
    priority: u16,
    tags: &'a [Tag],
    meta: &'a Meta,
    cluster: &'a Cluster,
    ttl: String,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
    deregister_after: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initial: Option<&'static str>,
    /// The worse of the two below: what DNS goes by.
    health: Health,
    lease_health: Health,
    check_health: Health,
    create_index: u64,
    modify_index: u64,
}

impl<'a> InstanceJson<'a> {
    /// The JSON form of `instance` of `service`.
    pub fn new(service: &'a ServiceName, instance: &'a Instance) -> Self {
        let i = &instance.spec;
        Self {
            service,
            id: &instance.id,
            address: i.address,
            port: i.port,
            weight: i.weight,
            priority: i.priority,
            tags: &i.tags,
            meta: &i.meta,
            cluster: &i.cluster,
            ttl: format_duration(Duration::from_secs(i.ttl.into())),
            status: i.status,
            lease: i.lease.map(|l| format_duration(l.get())),
            deregister_after: format_duration(i.deregister_after.get()),
            checks: i.checks.iter().map(check_to_json).collect(),
            initial: (!i.checks.is_empty()).then_some(if i.initial_passing {
                "passing"
            } else {
                "critical"
            }),
            health: instance.effective_health(),
            lease_health: instance.health,
            check_health: instance.check_health,
            create_index: instance.create_index,
            modify_index: instance.modify_index,
        }
    }
}

/// An instance as a JSON value (see [`InstanceJson`]).
pub fn instance_to_json(service: &ServiceName, instance: &Instance) -> Value {
    serde_json::to_value(InstanceJson::new(service, instance)).unwrap_or(Value::Null)
}

/// Reads back what [`instance_to_json`] wrote, checking every field again.
/// The service comes back as a checked, lower-case label rather than a
/// [`ServiceName`]: callers read many instances of one service and share
/// one name among them (an allocation per instance, freed later on another
/// thread, would pin half-empty pages of memory after a load).
pub fn instance_from_json(value: Value) -> Result<(String, Instance), ValidationError> {
    let mut f = Fields::of(
        value,
        SPEC_FIELDS,
        &[
            "service",
            "id",
            "create_index",
            "modify_index",
            "health",
            "lease_health",
            "check_health",
        ],
    )?;
    let service = super::model::parse_label("service", &f.required_str("service")?)?;
    let id = InstanceId::parse(&f.required_str("id")?)?;
    let create_index = f
        .int("create_index", 1, u64::MAX)?
        .ok_or_else(|| ValidationError::new("create_index", "is required"))?;
    let modify_index = f
        .int("modify_index", create_index, u64::MAX)?
        .ok_or_else(|| ValidationError::new("modify_index", "is required"))?;
    // `health` is derived (the worse of the two); it is read and ignored.
    let _ = f.take("health");
    let lease_health = f
        .str("lease_health")?
        .map(|h| Health::parse(&h))
        .transpose()?;
    let check_health = f
        .str("check_health")?
        .map(|h| Health::parse(&h))
        .transpose()?;
    let spec = spec_from(&mut f, &Cluster::default())?;
    let mut instance = spec.into_instance(id, create_index, modify_index);
    instance.health = lease_health.unwrap_or_default();
    if let Some(check_health) = check_health {
        instance.check_health = check_health;
    }
    Ok((service, instance))
}

/// Fields service settings have.
pub const SETTINGS_FIELDS: &[&str] = &["lb", "failover", "fail_open"];

/// Service settings as JSON.
pub fn settings_to_json(settings: &ServiceSettings) -> Value {
    json!({ "lb": settings.lb, "failover": settings.failover, "fail_open": settings.fail_open })
}

/// Parses service settings; fields left out keep their defaults.
pub fn settings_from(f: &mut Fields) -> Result<ServiceSettings, ValidationError> {
    let mut settings = ServiceSettings::default();
    if let Some(lb) = f.str("lb")? {
        settings.lb = LbPolicy::parse(&lb)?;
    }
    if let Some(failover) = f.strings("failover")? {
        settings.failover = failover
            .iter()
            .enumerate()
            .map(|(i, c)| Cluster::parse_field(&format!("failover[{i}]"), c))
            .collect::<Result<_, _>>()?;
    }
    if let Some(fail_open) = f.bool("fail_open")? {
        settings.fail_open = fail_open;
    }
    Ok(settings)
}

/// Names the export format, so an import knows what it reads.
pub const EXPORT_FORMAT: &str = "signpost-export";
/// Version of the export format.
pub const EXPORT_VERSION: u64 = 1;

/// Everything, as an export document.
pub fn state_to_json(state: &StoredState) -> Value {
    let mut names: Vec<&ServiceName> = state
        .instances
        .keys()
        .chain(state.settings.keys())
        .collect();
    names.sort();
    names.dedup();
    let services: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let instances: Vec<Value> = state
                .instances
                .get(name)
                .into_iter()
                .flat_map(|m| m.values())
                .map(|i| instance_to_json(name, i))
                .collect();
            json!({
                "name": name,
                "settings": state.settings.get(name).map(settings_to_json),
                "instances": instances,
            })
        })
        .collect();
    json!({ "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "index": state.index, "services": services })
}

/// Refuses the first of `keys` that is in neither `known` nor `also`.
fn only_known<'k>(
    mut keys: impl Iterator<Item = &'k String>,
    known: &[&str],
    also: &[&str],
) -> Result<(), ValidationError> {
    match keys.find(|k| !known.contains(&k.as_str()) && !also.contains(&k.as_str())) {
        Some(unknown) => Err(ValidationError::new(unknown.clone(), "unknown field")),
        None => Ok(()),
    }
}

/// The members of a JSON object kept as raw JSON text, for documents too
/// large to parse into one tree.
struct RawFields<'a>(BTreeMap<String, &'a RawValue>);

impl<'a> RawFields<'a> {
    /// The members of `raw`, which must be an object whose keys are all in
    /// `known`.
    fn of(raw: &'a RawValue, known: &[&str]) -> Result<Self, ValidationError> {
        let map: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get()).map_err(|_| {
            ValidationError::new(
                "",
                format!("must be a JSON object, not {}", kind(&parse_raw(raw))),
            )
        })?;
        only_known(map.keys(), known, &[])?;
        Ok(Self(map))
    }

    /// Removes and returns `name`, treating `null` as absent.
    fn take(&mut self, name: &str) -> Option<&'a RawValue> {
        self.0.remove(name).filter(|raw| raw.get() != "null")
    }

    /// The members not taken, parsed.
    fn into_fields(self) -> Fields {
        Fields(
            self.0
                .into_iter()
                .map(|(k, raw)| (k, parse_raw(raw)))
                .collect(),
        )
    }
}

/// The elements of `raw`, which must be an array (`field` names it).
fn raw_array<'a>(raw: &'a RawValue, field: &str) -> Result<Vec<&'a RawValue>, ValidationError> {
    serde_json::from_str(raw.get()).map_err(|_| {
        ValidationError::new(
            field,
            format!("must be an array, not {}", kind(&parse_raw(raw))),
        )
    })
}

/// `raw` parsed: it is valid JSON already.
fn parse_raw(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// Reads an export document back from its JSON text, checking everything;
/// errors name the service and field (`services[2].instances[0].port`).
///
/// The document is read as raw JSON, and each instance is parsed and
/// checked on its own: the memory an import needs beyond the document's
/// text is what it keeps. Parsed whole, a document of a million instances
/// was a tree of over a gigabyte.
pub fn state_from_raw(doc: &RawValue) -> Result<StoredState, ValidationError> {
    let mut top = RawFields::of(doc, &["format", "version", "index", "services"])?;
    let services = top.take("services");
    let mut f = top.into_fields();
    if f.str("format")?.as_deref() != Some(EXPORT_FORMAT) {
        return Err(ValidationError::new(
            "format",
            format!("must be {EXPORT_FORMAT:?}"),
        ));
    }
    let version = f.int("version", 0, u64::MAX)?.unwrap_or(0);
    if version != EXPORT_VERSION {
        return Err(ValidationError::new(
            "version",
            format!("{version} is not a version this signpost reads ({EXPORT_VERSION})"),
        ));
    }
    let mut state = StoredState {
        index: f.int("index", 0, u64::MAX)?.unwrap_or(0),
        ..StoredState::default()
    };
    // Per service: where it was last listed, and its instances.
    let mut by_service: BTreeMap<ServiceName, (usize, Vec<Arc<Instance>>)> = BTreeMap::new();
    let services = services.map(|raw| raw_array(raw, "services")).transpose()?;
    for (n, service) in services.into_iter().flatten().enumerate() {
        let at = |e: ValidationError| {
            ValidationError::new(format!("services[{n}].{}", e.field), e.message)
        };
        let mut raw = RawFields::of(service, &["name", "settings", "instances"]).map_err(at)?;
        let instances = raw.take("instances");
        let mut s = raw.into_fields();
        let name = ServiceName::parse(&s.required_str("name").map_err(at)?).map_err(at)?;
        if let Some(settings) = s.take("settings") {
            let mut sf = Fields::of(settings, SETTINGS_FIELDS, &[]).map_err(at)?;
            state
                .settings
                .insert(name.clone(), settings_from(&mut sf).map_err(at)?);
        }
        let instances = instances
            .map(|raw| raw_array(raw, "instances"))
            .transpose()
            .map_err(at)?;
        for (m, raw) in instances.into_iter().flatten().enumerate() {
            let at = |e: ValidationError| {
                ValidationError::new(
                    format!("services[{n}].instances[{m}].{}", e.field),
                    e.message,
                )
            };
            let (service, instance) = instance_from_json(parse_raw(raw)).map_err(at)?;
            if service != name.as_str() {
                return Err(at(ValidationError::new(
                    "service",
                    format!("{service} is listed under {name}"),
                )));
            }
            state.index = state.index.max(instance.modify_index);
            let listed = by_service.entry(name.clone()).or_default();
            listed.0 = n;
            listed.1.push(Arc::new(instance));
        }
    }
    // Sorted once per service: inserting one by one would move the whole
    // list per instance when a document lists them out of order.
    for (name, (n, instances)) in by_service {
        let instances = Instances::from_unsorted(instances).map_err(|id| {
            ValidationError::new(
                format!("services[{n}].instances"),
                format!("instance {id} of {name} is listed more than once"),
            )
        })?;
        state.instances.insert(name, instances);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_from_json(doc: Value) -> Result<StoredState, ValidationError> {
        state_from_raw(&RawValue::from_string(doc.to_string()).unwrap())
    }

    fn sample() -> StoredState {
        let mut state = StoredState::default();
        let web = ServiceName::parse("web").unwrap();
        let mut spec = InstanceSpec::new("2001:db8::1".parse().unwrap(), 443);
        spec.tags = Box::new([Tag::parse("v2").unwrap()]);
        spec.meta = Meta::parse([("k".to_string(), "v=w".to_string())].into()).unwrap();
        spec.status = Status::OutOfService;
        spec.ttl = 30;
        spec.lease = Some(Millis::saturating(Duration::from_millis(1500)));
        spec.deregister_after = Millis::saturating(Duration::from_secs(90));
        spec.checks = Box::new([
            Check {
                target: CheckTarget::Tcp("10.0.0.1:80".into()),
                interval: std::time::Duration::from_secs(5),
                timeout: std::time::Duration::from_secs(1),
                rise: 2,
                fall: 3,
            },
            Check {
                target: CheckTarget::Http("http://10.0.0.1/health".into()),
                interval: std::time::Duration::from_millis(500),
                timeout: std::time::Duration::from_millis(200),
                rise: 1,
                fall: 1,
            },
        ]);
        spec.initial_passing = true;
        let mut instance = spec.into_instance(InstanceId::parse("w1").unwrap(), 3, 7);
        instance.health = Health::Critical;
        instance.check_health = Health::Warning;
        state
            .instances
            .entry(web.clone())
            .or_default()
            .insert(Arc::new(instance));
        let settings = ServiceSettings {
            lb: LbPolicy::Hash,
            failover: vec![Cluster::parse("dc2").unwrap()],
            fail_open: true,
        };
        state
            .settings
            .insert(ServiceName::parse("api").unwrap(), settings);
        state.index = 9;
        state
    }

    #[test]
    fn exports_read_back_to_the_same_state() {
        let state = sample();
        assert_eq!(state_from_json(state_to_json(&state)).unwrap(), state);
    }

    #[test]
    fn a_bad_export_names_the_place() {
        let mut doc = state_to_json(&sample());
        doc["services"][1]["instances"][0]["port"] = json!(0);
        assert_eq!(
            state_from_json(doc).unwrap_err().field,
            "services[1].instances[0].port"
        );
        let mut doc = state_to_json(&sample());
        doc["version"] = json!(2);
        assert_eq!(state_from_json(doc).unwrap_err().field, "version");
    }

    #[test]
    fn an_export_listing_an_instance_twice_is_refused() {
        let mut doc = state_to_json(&sample());
        let web = doc["services"][1]["instances"][0].clone();
        // The same service listed again, later, with the same instance.
        doc["services"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "web", "settings": null, "instances": [web]}));
        let e = state_from_json(doc).unwrap_err();
        assert_eq!(e.field, "services[2].instances");
        assert!(
            e.message.contains("w1 of web is listed more than once"),
            "{e}"
        );
    }

    #[test]
    fn instances_listed_out_of_order_are_kept_by_id() {
        let mut doc = state_to_json(&sample());
        let first = doc["services"][1]["instances"][0].clone();
        let mut second = first.clone();
        second["id"] = json!("a0");
        doc["services"][1]["instances"] = json!([first, second]);
        let state = state_from_json(doc).unwrap();
        let ids: Vec<_> = state.instances[&ServiceName::parse("web").unwrap()]
            .values()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["a0", "w1"]);
    }

    #[test]
    fn a_misshapen_export_names_the_member() {
        let doc = state_to_json(&sample());
        let with = |path: &[&str], value: Value| {
            let mut doc = doc.clone();
            let mut at = &mut doc;
            for key in &path[..path.len() - 1] {
                at = match key.parse::<usize>() {
                    Ok(n) => &mut at[n],
                    Err(_) => &mut at[*key],
                };
            }
            at[path[path.len() - 1]] = value;
            state_from_json(doc).unwrap_err()
        };
        let e = with(&["services"], json!({"web": []}));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("services", "must be an array, not an object")
        );
        let e = with(&["services", "1", "instances"], json!("none"));
        assert_eq!(e.field, "services[1].instances");
        let e = with(&["services", "1", "colour"], json!("blue"));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("services[1].colour", "unknown field")
        );
        let e = state_from_json(json!([1, 2])).unwrap_err();
        assert_eq!(e.message, "must be a JSON object, not an array");
        // null members are absent, as in every other body.
        let mut doc = doc.clone();
        doc["services"][1]["settings"] = Value::Null;
        doc["services"][0]["instances"] = Value::Null;
        assert!(state_from_json(doc).is_ok());
    }

    #[test]
    fn finer_leases_are_kept_to_the_millisecond() {
        let mut doc = state_to_json(&sample());
        doc["services"][1]["instances"][0]["lease"] = json!("1s 500ms 700us");
        doc["services"][1]["instances"][0]["deregister_after"] = json!("2s 1us");
        let state = state_from_json(doc).unwrap();
        let web = &state.instances[&ServiceName::parse("web").unwrap()];
        let spec = &web.values().next().unwrap().spec;
        assert_eq!(spec.lease.unwrap().get(), Duration::from_millis(1500));
        assert_eq!(spec.deregister_after.get(), Duration::from_secs(2));
    }
}
