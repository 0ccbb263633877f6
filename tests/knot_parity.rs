//! Parity with a reference authoritative server: signpost and Knot DNS serve
//! the same zone and must give the same answers (RFC 1034 §4.3.2, RFC 2181,
//! RFC 2308, RFC 4592), compared section by section. Two zones: a static
//! zone file both servers load, and the registry zone (`internal.`), which
//! signpost builds from API registrations and Knot loads from the zone file
//! those registrations stand for.
//!
//! Needs `knotd` (Debian/Ubuntu: `apt-get install knot`). A missing knotd is
//! a failure, not a skip.

mod support;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use serde_json::{Value, json};
use support::{DnsQuery, Server, scratch, udp_raw_within};

/// The static zone's origin; the file is `<ORIGIN>zone`.
const ORIGIN: &str = "parity.example.";

/// A zone with every shape of answer RFC 1034 §4.3.2 distinguishes.
const ZONE: &str = r#"$ORIGIN parity.example.
$TTL 300
@           IN SOA  ns1 hostmaster (
                    2026010101 ; serial
                    3600       ; refresh
                    600        ; retry
                    86400      ; expire
                    60 )       ; minimum: negative-answer TTL
            IN NS   ns1
            IN NS   ns2
            IN MX   10 mail
            IN TXT  "v=parity"
ns1         IN A    192.0.2.1
            IN AAAA 2001:db8::1
ns2    600  IN A    192.0.2.2
mail        IN A    192.0.2.25
            IN AAAA 2001:db8::25
www         IN A    192.0.2.80
            IN A    192.0.2.81
            IN AAAA 2001:db8::80
            IN TXT  "hello world" "second string"
alias       IN CNAME alias2
alias2  120 IN CNAME www
out         IN CNAME target.elsewhere.example.
dangling    IN CNAME nothere
to-nodata   IN CNAME mail
to-sub      IN CNAME host.sub
_http._tcp  IN SRV  0 10 80 www
            IN SRV  10 5 8080 mail
a.b.c       IN A    192.0.2.99
*.wild      IN A    192.0.2.42
            IN TXT  "wildcard"
sub         IN NS   ns.sub
            IN NS   ns.elsewhere.example.
ns.sub      IN A    192.0.2.53
            IN AAAA 2001:db8::53
"#;

use ResponseCode::{NXDomain, NoError, Refused};

/// (query name, type, the RCODE the zone implies, what it exercises). Every
/// case must get the same answer from both servers; the RCODE column also
/// checks that Knot loaded the zone as intended.
type Case = (&'static str, RecordType, ResponseCode, &'static str);

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Positive answers; MX, SRV and NS targets' addresses in Additional.
    ("www.parity.example.", RecordType::A, NoError, "A RRset of two"),
    ("www.parity.example.", RecordType::AAAA, NoError, "AAAA"),
    ("www.parity.example.", RecordType::TXT, NoError, "TXT with two strings"),
    ("parity.example.", RecordType::MX, NoError, "MX with an in-zone target"),
    ("_http._tcp.parity.example.", RecordType::SRV, NoError, "SRV with in-zone targets"),
    ("ns2.parity.example.", RecordType::A, NoError, "explicit per-record TTL"),
    // Apex.
    ("parity.example.", RecordType::SOA, NoError, "apex SOA"),
    ("parity.example.", RecordType::NS, NoError, "apex NS with in-zone glue"),
    ("parity.example.", RecordType::TXT, NoError, "apex TXT"),
    // Negative answers: SOA in Authority, TTL min(SOA TTL, MINIMUM) (RFC 2308).
    ("www.parity.example.", RecordType::MX, NoError, "NODATA"),
    ("parity.example.", RecordType::AAAA, NoError, "NODATA at the apex"),
    ("nope.parity.example.", RecordType::A, NXDomain, "NXDOMAIN"),
    ("deep.nope.parity.example.", RecordType::A, NXDomain, "NXDOMAIN two labels down"),
    // Empty non-terminals: NODATA, never NXDOMAIN (RFC 4592 §2.2.2, RFC 8020).
    ("b.c.parity.example.", RecordType::A, NoError, "ENT"),
    ("c.parity.example.", RecordType::TXT, NoError, "ENT two levels up"),
    ("zz.b.c.parity.example.", RecordType::A, NXDomain, "NXDOMAIN below an ENT"),
    ("a.b.c.parity.example.", RecordType::A, NoError, "the name below the ENTs"),
    // Wildcards (RFC 4592).
    ("x.wild.parity.example.", RecordType::A, NoError, "wildcard match"),
    ("y.x.wild.parity.example.", RecordType::TXT, NoError, "wildcard two labels down"),
    ("x.wild.parity.example.", RecordType::MX, NoError, "wildcard NODATA"),
    ("wild.parity.example.", RecordType::A, NoError, "wildcard's parent is an ENT"),
    ("*.wild.parity.example.", RecordType::A, NoError, "the wildcard owner itself"),
    // CNAME (RFC 1034 §3.6.2 and §4.3.2 step 3a).
    ("alias.parity.example.", RecordType::A, NoError, "CNAME chain of two in zone"),
    ("alias.parity.example.", RecordType::CNAME, NoError, "CNAME asked for itself"),
    ("out.parity.example.", RecordType::A, NoError, "CNAME out of zone"),
    // Delegation: a referral, AA clear (RFC 1034 §4.3.2 step 3b).
    ("host.sub.parity.example.", RecordType::A, NoError, "referral below the cut"),
    ("sub.parity.example.", RecordType::NS, NoError, "referral at the cut"),
    ("sub.parity.example.", RecordType::A, NoError, "referral at the cut, other type"),
    ("ns.sub.parity.example.", RecordType::A, NoError, "a glue name: referral"),
    // Case: matching is case-insensitive (RFC 4343).
    ("WwW.PaRiTy.ExAmPlE.", RecordType::A, NoError, "mixed case"),
    ("X.WiLd.parity.EXAMPLE.", RecordType::A, NoError, "mixed case wildcard"),
    ("HoSt.SuB.parity.example.", RecordType::A, NoError, "mixed case referral"),
    ("NoPe.Parity.Example.", RecordType::A, NXDomain, "mixed case NXDOMAIN"),
    // Outside the zone: neither server is authoritative, so REFUSED.
    ("example.org.", RecordType::A, Refused, "outside every zone"),
    ("example.", RecordType::SOA, Refused, "the zone's parent"),
    // CNAMEs whose in-zone target is negative or delegated. RFC 6604 §3 and
    // RFC 2308 §2.1: the RCODE is the last name's, so NXDOMAIN, with the
    // CNAME in Answer and the SOA in Authority.
    ("dangling.parity.example.", RecordType::A, NXDomain, "CNAME to an in-zone NXDOMAIN"),
    // RFC 2308 §2.2 and §3: NODATA after a CNAME still carries the SOA.
    ("to-nodata.parity.example.", RecordType::TXT, NoError, "CNAME to an in-zone NODATA"),
    // RFC 1034 §4.3.2: step 3a restarts at the target, step 3b then refers
    // (NS in Authority, glue in Additional).
    ("to-sub.parity.example.", RecordType::A, NoError, "CNAME into the delegation"),
    // RFC 4035 §3.1.4.1: DS at a cut is the parent's to answer (here NODATA).
    ("sub.parity.example.", RecordType::DS, NoError, "DS at the cut, from the parent side"),
];

/// One response reduced to what must match.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    rcode: ResponseCode,
    aa: bool,
    tc: bool,
    /// Order of RRsets in the answer: a CNAME chain must come in order.
    answer_order: Vec<(String, RecordType)>,
    answer: BTreeSet<String>,
    authority: BTreeSet<String>,
    additional: BTreeSet<String>,
}

/// `name type ttl rdata`, with domain names lower-cased.
///
/// Names compare case-insensitively (RFC 4343 §3), and the two servers
/// legitimately write them in different cases: Knot compresses names in
/// RDATA against the question, so for `NoPe.Parity.Example.` its SOA says
/// `ns1.Parity.Example.`, and for `HoSt.SuB.parity.example.` its NS says
/// `ns.SuB.parity.example.`, where signpost writes the zone file's case.
/// TXT strings are data, not names, and keep their case.
fn record_text(r: &Record) -> String {
    let rdata = r.data.to_string();
    let rdata = match r.record_type() {
        RecordType::TXT => rdata,
        _ => rdata.to_ascii_lowercase(),
    };
    format!(
        "{} {} {} {rdata}",
        r.name.to_string().to_ascii_lowercase(),
        r.record_type(),
        r.ttl,
    )
}

fn section(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r.record_type() != RecordType::OPT)
        .map(record_text)
        .collect()
}

fn shape(m: &Message) -> Shape {
    let mut answer_order: Vec<(String, RecordType)> = Vec::new();
    for r in &m.answers {
        let key = (r.name.to_string().to_ascii_lowercase(), r.record_type());
        if answer_order.last() != Some(&key) {
            answer_order.push(key);
        }
    }
    Shape {
        rcode: m.metadata.response_code,
        aa: m.metadata.authoritative,
        tc: m.metadata.truncation,
        answer_order,
        answer: section(&m.answers),
        authority: section(&m.authorities),
        additional: section(&m.additionals),
    }
}

/// A readable diff of two shapes, empty when they are equal.
fn diff(signpost: &Shape, knot: &Shape) -> String {
    let mut out = String::new();
    let mut field = |what: &str, s: String, k: String| {
        if s != k {
            out.push_str(&format!("  {what}: signpost {s} / knot {k}\n"));
        }
    };
    field("rcode", signpost.rcode.to_string(), knot.rcode.to_string());
    field("AA", signpost.aa.to_string(), knot.aa.to_string());
    field("TC", signpost.tc.to_string(), knot.tc.to_string());
    field(
        "answer order",
        format!("{:?}", signpost.answer_order),
        format!("{:?}", knot.answer_order),
    );
    for (what, s, k) in [
        ("answer", &signpost.answer, &knot.answer),
        ("authority", &signpost.authority, &knot.authority),
        ("additional", &signpost.additional, &knot.additional),
    ] {
        for only in s.difference(k) {
            out.push_str(&format!("  {what}: only signpost: {only}\n"));
        }
        for only in k.difference(s) {
            out.push_str(&format!("  {what}: only knot:     {only}\n"));
        }
    }
    out
}

/// A knotd child process serving one zone, killed on drop.
struct Knot {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where knotd is, or a failure telling how to install it.
fn knotd_path() -> PathBuf {
    let candidates = ["/usr/sbin/knotd", "/usr/local/sbin/knotd"];
    let from_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("knotd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .iter()
        .map(PathBuf::from)
        .chain(from_path)
        .find(|p| p.is_file())
        .expect("knotd (Knot DNS) is needed for this test: apt-get install knot")
}

/// A loopback port that was free for UDP a moment ago.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `addr` answers an SOA query for `origin`, authoritatively.
fn answers_soa(addr: SocketAddr, origin: &str) -> bool {
    let mut q = DnsQuery::new(origin, RecordType::SOA);
    q.edns = Some(1232);
    udp_raw_within(addr, &q.bytes(), Duration::from_millis(200))
        .and_then(|bytes| Message::from_vec(&bytes).ok())
        .is_some_and(|m| {
            m.metadata.response_code == ResponseCode::NoError
                && m.metadata.authoritative
                && m.answers.len() == 1
        })
}

/// A minimal knotd configuration: one listener, state under the scratch
/// dir, the zone file read as is and never written back, no DNSSEC. `user:`
/// stays at its default, root:root, which is what knotd runs as here.
fn knot_conf(port: u16, run: &Path, storage: &Path, origin: &str, zone_file: &Path) -> String {
    let (run, storage, zone) = (run.display(), storage.display(), zone_file.display());
    format!(
        "server:
    listen: 127.0.0.1@{port}
    rundir: {run}
log:
  - target: stderr
    any: info
database:
    storage: {storage}
template:
  - id: default
    storage: {storage}
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: on
zone:
  - domain: {origin}
    file: {zone}
"
    )
}

impl Knot {
    /// Starts knotd on a free loopback port serving `zone_file` as `origin`,
    /// with its state in `dir`; waits until it answers.
    fn start(dir: &Path, origin: &str, zone_file: &Path) -> Self {
        let knotd = knotd_path();
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let run = dir.join(format!("run-{attempt}"));
            let storage = dir.join(format!("db-{attempt}"));
            std::fs::create_dir_all(&run).unwrap();
            std::fs::create_dir_all(&storage).unwrap();
            let conf = dir.join(format!("knot-{attempt}.conf"));
            std::fs::write(&conf, knot_conf(port, &run, &storage, origin, zone_file)).unwrap();
            let log = dir.join(format!("knotd-{attempt}.log"));
            let child = Command::new(&knotd)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("{} does not start ({e})", knotd.display()));
            let mut knot = Knot { child, addr, log };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if knot.child.try_wait().unwrap().is_some() {
                    break;
                }
                if answers_soa(addr, origin) {
                    return knot;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_log = std::fs::read_to_string(&knot.log).unwrap_or_default();
            drop(knot);
        }
        panic!("knotd never answered for {origin}; its last log:\n{last_log}");
    }
}

fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut q = DnsQuery::new(name, qtype);
    q.edns = Some(1232);
    q.udp(server)
}

/// Serves ZONE from both servers and compares them on `cases`.
fn compare_with_knot(scratch_name: &str, cases: &[Case]) {
    let dir = scratch(scratch_name);
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    let zone_file = zones.join(format!("{ORIGIN}zone"));
    std::fs::write(&zone_file, ZONE).unwrap();

    let knot = Knot::start(&dir, ORIGIN, &zone_file);
    let signpost = Server::start_raw(&["--zones-dir", zones.to_str().unwrap(), "--seed", "1"]);
    compare(signpost.dns, knot.addr, cases);
}

/// Asks each case of both servers and fails listing every case whose
/// answers differ.
fn compare(signpost: SocketAddr, knot: SocketAddr, cases: &[Case]) {
    let mut failures = Vec::new();
    for &(name, qtype, rcode, what) in cases {
        let s = ask(signpost, name, qtype);
        let k = ask(knot, name, qtype);
        // The question is echoed as asked, case included (RFC 1035 §4.1.1).
        for (who, m) in [("signpost", &s), ("knot", &k)] {
            let echoed: Vec<String> = m.queries.iter().map(|q| q.name().to_string()).collect();
            assert_eq!(
                echoed,
                [name],
                "{who} echoes the question of {name} {qtype}"
            );
        }
        let (s, k) = (shape(&s), shape(&k));
        assert_eq!(
            k.rcode, rcode,
            "Knot's RCODE for {name} {qtype}: is the zone loaded as intended?"
        );
        let d = diff(&s, &k);
        if !d.is_empty() {
            failures.push(format!("{name} {qtype} ({what}):\n{d}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Knot:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn signpost_answers_like_knot() {
    compare_with_knot("knot-parity", CASES);
}

/// The registry zone's origin (signpost's default `--domain`).
const REGISTRY_ORIGIN: &str = "internal.";

/// What `register_instances` registers, as (service, id, body).
///
/// TTLs differ between instances, so service RRsets show the RFC 2181 §5.2
/// rule (one TTL per RRset, the smallest of its members) while each
/// instance's own records and its SRV-target addresses keep its own TTL.
fn registrations() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        // web in dc1: two in priority 10 (one tagged v2 with meta), one IPv6
        // in priority 20.
        (
            "web",
            "w1",
            json!({"address": "10.0.0.1", "port": 8080, "weight": 100, "priority": 10,
                   "tags": ["v2"], "meta": {"version": "1.4", "zone": "a"}, "ttl": "5s"}),
        ),
        (
            "web",
            "w2",
            json!({"address": "10.0.0.2", "port": 8080, "weight": 50, "priority": 10,
                   "ttl": "10s"}),
        ),
        (
            "web",
            "w3",
            json!({"address": "2001:db8::3", "port": 8081, "weight": 20, "priority": 20,
                   "ttl": "30s"}),
        ),
        // web in dc2: its SRV target names the cluster.
        (
            "web",
            "w4",
            json!({"address": "10.1.0.4", "port": 8080, "cluster": "dc2", "ttl": "5s"}),
        ),
        // db: one UP, one OUT_OF_SERVICE (whose tag still names a service).
        (
            "db",
            "db-1",
            json!({"address": "10.0.1.1", "port": 5432, "meta": {"role": "primary"},
                   "ttl": "5s"}),
        ),
        (
            "db",
            "db-2",
            json!({"address": "10.0.1.2", "port": 5432, "tags": ["canary"],
                   "status": "OUT_OF_SERVICE", "ttl": "5s"}),
        ),
        // api: nothing served at all.
        (
            "api",
            "api-1",
            json!({"address": "10.0.2.1", "port": 9000, "status": "OUT_OF_SERVICE",
                   "ttl": "5s"}),
        ),
    ]
}

/// The registry zone that `registrations()` stand for, written by hand from
/// the README's "DNS names" table, as an RFC 1035 master file. `SERIAL` is
/// replaced by the registry index after the registrations, which is what
/// signpost's SOA serial is, so the SOA compares exactly and nothing needs
/// normalising.
///
/// Names that exist in signpost but hold none of the queried records (a
/// service or instance whose instances are all not UP, a tag only a not-UP
/// instance carries) answer NODATA there. A master file cannot hold an empty
/// node (RFC 1035 §5: every entry is a record), and an empty leaf would be
/// NXDOMAIN in Knot. Such names carry one record of the private-use type
/// TYPE65280 (RFC 6895 §3.1), in RFC 3597 generic form, which makes the name
/// exist without adding any record signpost serves. The cases never ask for
/// TYPE65280 and leave out ANY (signpost answers ANY over UDP with the RFC
/// 8482 HINFO; Knot with its own choice), so the placeholder is never
/// compared; every queried type at those names is NODATA at both servers, as
/// signpost means it. Names that are parents of real names (`service`,
/// `_tcp.service`, `dc2`, ...) need nothing: they are empty non-terminals in
/// both servers.
const REGISTRY_ZONE: &str = r#"$ORIGIN internal.
@                        5 IN SOA  ns hostmaster SERIAL 3600 600 86400 5
@                     3600 IN NS   ns
ns                    3600 IN A    127.0.0.1

; web, dc1: w1 (10, 100, v2, meta, 5 s), w2 (10, 50, 10 s), w3 (IPv6, 20, 20, 30 s).
; A RRset {w1, w2}: TTL 5; AAAA {w3}: 30; SRV {w1, w2, w3}: 5.
web.service              5 IN A    10.0.0.1
web.service              5 IN A    10.0.0.2
web.service             30 IN AAAA 2001:db8::3
web.service              5 IN SRV  10 100 8080 w1.web.instance
web.service              5 IN SRV  10 50 8080 w2.web.instance
web.service              5 IN SRV  20 20 8081 w3.web.instance
_web._tcp.service        5 IN SRV  10 100 8080 w1.web.instance
_web._tcp.service        5 IN SRV  10 50 8080 w2.web.instance
_web._tcp.service        5 IN SRV  20 20 8081 w3.web.instance
_web._udp.service        5 IN SRV  10 100 8080 w1.web.instance
_web._udp.service        5 IN SRV  10 50 8080 w2.web.instance
_web._udp.service        5 IN SRV  20 20 8081 w3.web.instance
v2.web.service           5 IN A    10.0.0.1
v2.web.service           5 IN SRV  10 100 8080 w1.web.instance
_web._v2.service         5 IN SRV  10 100 8080 w1.web.instance
w1.web.instance          5 IN A    10.0.0.1
w1.web.instance          5 IN TXT  "version=1.4" "zone=a"
w2.web.instance         10 IN A    10.0.0.2
w2.web.instance         10 IN TXT  ""
w3.web.instance         30 IN AAAA 2001:db8::3
w3.web.instance         30 IN TXT  ""
; The local cluster named explicitly: the same answers, the same targets.
web.service.dc1          5 IN A    10.0.0.1
web.service.dc1          5 IN A    10.0.0.2
_web._tcp.service.dc1    5 IN SRV  10 100 8080 w1.web.instance
_web._tcp.service.dc1    5 IN SRV  10 50 8080 w2.web.instance
_web._tcp.service.dc1    5 IN SRV  20 20 8081 w3.web.instance

; web, dc2: w4 (defaults 10, 100), target under instance.dc2.
web.service.dc2          5 IN A    10.1.0.4
web.service.dc2          5 IN SRV  10 100 8080 w4.web.instance.dc2
_web._tcp.service.dc2    5 IN SRV  10 100 8080 w4.web.instance.dc2
_web._udp.service.dc2    5 IN SRV  10 100 8080 w4.web.instance.dc2
w4.web.instance.dc2      5 IN A    10.1.0.4
w4.web.instance.dc2      5 IN TXT  ""

; db: db-1 UP; db-2 OUT_OF_SERVICE, tagged canary: in no service RRset, but
; its own name and its tag's names exist (placeholders, see above).
db.service               5 IN A    10.0.1.1
db.service               5 IN SRV  10 100 5432 db-1.db.instance
_db._tcp.service         5 IN SRV  10 100 5432 db-1.db.instance
_db._udp.service         5 IN SRV  10 100 5432 db-1.db.instance
db-1.db.instance         5 IN A    10.0.1.1
db-1.db.instance         5 IN TXT  "role=primary"
db-2.db.instance         5 IN TYPE65280 \# 0
canary.db.service        5 IN TYPE65280 \# 0
_db._canary.service      5 IN TYPE65280 \# 0

; api: only api-1, OUT_OF_SERVICE: the service's names exist, empty.
api.service              5 IN TYPE65280 \# 0
_api._tcp.service        5 IN TYPE65280 \# 0
_api._udp.service        5 IN TYPE65280 \# 0
api-1.api.instance       5 IN TYPE65280 \# 0
"#;

/// Cases for the registry zone; see REGISTRY_ZONE.
#[rustfmt::skip]
const REGISTRY_CASES: &[Case] = &[
    // Service answers; SRV targets' addresses in Additional with their own TTLs.
    ("web.service.internal.", RecordType::A, NoError, "service A, smallest TTL"),
    ("web.service.internal.", RecordType::AAAA, NoError, "service AAAA"),
    ("web.service.internal.", RecordType::SRV, NoError, "service SRV, two priorities"),
    ("_web._tcp.service.internal.", RecordType::SRV, NoError, "RFC 2782 form"),
    ("_web._udp.service.internal.", RecordType::SRV, NoError, "RFC 2782 form, udp"),
    ("db.service.internal.", RecordType::A, NoError, "OUT_OF_SERVICE left out"),
    ("_db._tcp.service.internal.", RecordType::SRV, NoError, "OUT_OF_SERVICE left out of SRV"),
    // Tag filters.
    ("v2.web.service.internal.", RecordType::A, NoError, "tag filter A"),
    ("v2.web.service.internal.", RecordType::SRV, NoError, "tag filter SRV"),
    ("_web._v2.service.internal.", RecordType::SRV, NoError, "tag filter, RFC 2782 form"),
    // Instances.
    ("w1.web.instance.internal.", RecordType::A, NoError, "instance A"),
    ("w1.web.instance.internal.", RecordType::TXT, NoError, "instance meta as TXT"),
    ("w2.web.instance.internal.", RecordType::TXT, NoError, "no meta: one empty string"),
    ("w3.web.instance.internal.", RecordType::AAAA, NoError, "instance AAAA"),
    ("db-1.db.instance.internal.", RecordType::TXT, NoError, "instance meta, other service"),
    // Clusters.
    ("web.service.dc2.internal.", RecordType::A, NoError, "other cluster A"),
    ("web.service.dc2.internal.", RecordType::SRV, NoError, "other cluster SRV"),
    ("_web._tcp.service.dc2.internal.", RecordType::SRV, NoError, "target names the cluster"),
    ("w4.web.instance.dc2.internal.", RecordType::A, NoError, "instance in another cluster"),
    ("w4.web.instance.dc2.internal.", RecordType::TXT, NoError, "its TXT"),
    ("web.service.dc1.internal.", RecordType::A, NoError, "local cluster named"),
    ("_web._tcp.service.dc1.internal.", RecordType::SRV, NoError, "local cluster named, SRV"),
    // Apex and name server.
    ("internal.", RecordType::SOA, NoError, "apex SOA"),
    ("internal.", RecordType::NS, NoError, "apex NS with its address"),
    ("ns.internal.", RecordType::A, NoError, "name server address"),
    ("ns.internal.", RecordType::AAAA, NoError, "name server, NODATA"),
    ("internal.", RecordType::A, NoError, "NODATA at the apex"),
    // NODATA at names that hold records.
    ("web.service.internal.", RecordType::TXT, NoError, "service TXT"),
    ("_web._tcp.service.internal.", RecordType::A, NoError, "RFC 2782 form holds SRV only"),
    ("v2.web.service.internal.", RecordType::AAAA, NoError, "tag with no IPv6 instance"),
    ("w1.web.instance.internal.", RecordType::AAAA, NoError, "IPv4 instance AAAA"),
    ("w3.web.instance.internal.", RecordType::A, NoError, "IPv6 instance A"),
    ("w1.web.instance.internal.", RecordType::SRV, NoError, "instance SRV"),
    // NODATA where nothing is served (the placeholders).
    ("db-2.db.instance.internal.", RecordType::A, NoError, "not UP: its name, NODATA"),
    ("db-2.db.instance.internal.", RecordType::TXT, NoError, "not UP: no TXT either"),
    ("api.service.internal.", RecordType::A, NoError, "service with nothing UP"),
    ("_api._tcp.service.internal.", RecordType::SRV, NoError, "the same, RFC 2782 form"),
    ("api-1.api.instance.internal.", RecordType::A, NoError, "only instance, not UP"),
    ("canary.db.service.internal.", RecordType::A, NoError, "tag only a not-UP instance has"),
    ("_db._canary.service.internal.", RecordType::SRV, NoError, "the same, RFC 2782 form"),
    // Empty non-terminals: NODATA (RFC 8020, RFC 9156).
    ("service.internal.", RecordType::A, NoError, "ENT service"),
    ("_tcp.service.internal.", RecordType::SRV, NoError, "ENT _tcp"),
    ("_udp.service.internal.", RecordType::SRV, NoError, "ENT _udp"),
    ("_v2.service.internal.", RecordType::SRV, NoError, "ENT tag"),
    ("_canary.service.internal.", RecordType::SRV, NoError, "ENT tag of a not-UP instance"),
    ("instance.internal.", RecordType::A, NoError, "ENT instance"),
    ("web.instance.internal.", RecordType::A, NoError, "ENT instance parent"),
    ("api.instance.internal.", RecordType::TXT, NoError, "ENT over a not-UP instance"),
    ("dc2.internal.", RecordType::A, NoError, "ENT cluster"),
    ("service.dc2.internal.", RecordType::A, NoError, "ENT service in a cluster"),
    ("instance.dc2.internal.", RecordType::A, NoError, "ENT instance in a cluster"),
    ("_tcp.service.dc2.internal.", RecordType::SRV, NoError, "ENT _tcp in a cluster"),
    ("dc1.internal.", RecordType::A, NoError, "ENT local cluster"),
    // NXDOMAIN.
    ("nope.service.internal.", RecordType::A, NXDomain, "unknown service"),
    ("_nope._tcp.service.internal.", RecordType::SRV, NXDomain, "unknown service, RFC 2782"),
    ("v9.web.service.internal.", RecordType::A, NXDomain, "unknown tag"),
    ("_web._v9.service.internal.", RecordType::SRV, NXDomain, "unknown tag, RFC 2782"),
    ("_v9.service.internal.", RecordType::SRV, NXDomain, "unknown tag's parent"),
    ("_db._v2.service.internal.", RecordType::SRV, NXDomain, "another service's tag"),
    ("web.service.dc9.internal.", RecordType::A, NXDomain, "unknown cluster"),
    ("dc9.internal.", RecordType::A, NXDomain, "unknown cluster node"),
    ("db.service.dc2.internal.", RecordType::A, NXDomain, "service not in that cluster"),
    ("_v2.service.dc2.internal.", RecordType::SRV, NXDomain, "tag not in that cluster"),
    ("w9.web.instance.internal.", RecordType::A, NXDomain, "unknown instance"),
    ("w4.web.instance.internal.", RecordType::A, NXDomain, "dc2 instance under the local name"),
    ("w1.web.instance.dc2.internal.", RecordType::A, NXDomain, "local instance under dc2"),
    ("nope.instance.internal.", RecordType::A, NXDomain, "unknown instance parent"),
    ("a.b.web.service.internal.", RecordType::A, NXDomain, "too deep under a service"),
    ("x.w1.web.instance.internal.", RecordType::A, NXDomain, "below an instance"),
    ("a.b.c.d.e.internal.", RecordType::A, NXDomain, "too deep"),
    // Case: matching is case-insensitive (RFC 4343).
    ("WeB.SeRvIcE.InTeRnAl.", RecordType::A, NoError, "mixed case service"),
    ("_WEB._TCP.Service.Internal.", RecordType::SRV, NoError, "mixed case RFC 2782"),
    ("V2.Web.SERVICE.internal.", RecordType::SRV, NoError, "mixed case tag"),
    ("W1.Web.Instance.Internal.", RecordType::TXT, NoError, "mixed case instance"),
    ("Web.Service.DC2.Internal.", RecordType::A, NoError, "mixed case cluster"),
    ("INTERNAL.", RecordType::SOA, NoError, "mixed case apex"),
    ("NoPe.Service.Internal.", RecordType::A, NXDomain, "mixed case NXDOMAIN"),
];

#[test]
fn registry_zone_answers_like_knot() {
    let signpost = Server::start(&[]);
    let mut index = None;
    for (service, id, body) in registrations() {
        let (status, reply) = signpost.register(service, id, body);
        assert_eq!(status, 200, "register {service}/{id}: {reply}");
        index = reply["index"].as_u64();
    }
    let serial = index.expect("the API reports the registry index");

    let dir = scratch("knot-parity-registry");
    let zone_file = dir.join(format!("{REGISTRY_ORIGIN}zone"));
    let zone = REGISTRY_ZONE.replace("SERIAL", &serial.to_string());
    std::fs::write(&zone_file, zone).unwrap();
    let knot = Knot::start(&dir, REGISTRY_ORIGIN, &zone_file);

    compare(signpost.dns, knot.addr, REGISTRY_CASES);
}
