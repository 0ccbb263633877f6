//! Parity with a reference authoritative server: signpost and Knot DNS serve
//! the same zone file and must give the same answers (RFC 1034 §4.3.2,
//! RFC 2181, RFC 2308, RFC 4592), compared section by section.
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
use support::{DnsQuery, Server, scratch, udp_raw_within};

/// The zone's origin; the file is `<ORIGIN>zone`.
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
#[rustfmt::skip]
const CASES: &[(&str, RecordType, ResponseCode, &str)] = &[
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

/// Whether `addr` answers an SOA query for the zone, authoritatively.
fn answers_soa(addr: SocketAddr) -> bool {
    let mut q = DnsQuery::new(ORIGIN, RecordType::SOA);
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
fn knot_conf(port: u16, run: &Path, storage: &Path, zone_file: &Path) -> String {
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
  - domain: {ORIGIN}
    file: {zone}
"
    )
}

impl Knot {
    /// Starts knotd on a free loopback port serving `zone_file` as ORIGIN,
    /// with its state in `dir`; waits until it answers.
    fn start(dir: &Path, zone_file: &Path) -> Self {
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
            std::fs::write(&conf, knot_conf(port, &run, &storage, zone_file)).unwrap();
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
                if answers_soa(addr) {
                    return knot;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_log = std::fs::read_to_string(&knot.log).unwrap_or_default();
            drop(knot);
        }
        panic!("knotd never answered for {ORIGIN}; its last log:\n{last_log}");
    }
}

fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut q = DnsQuery::new(name, qtype);
    q.edns = Some(1232);
    q.udp(server)
}

/// Serves ZONE from both servers, asks each case of both, and fails listing
/// every case whose answers differ.
fn compare_with_knot(scratch_name: &str, cases: &[(&str, RecordType, ResponseCode, &str)]) {
    let dir = scratch(scratch_name);
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    let zone_file = zones.join(format!("{ORIGIN}zone"));
    std::fs::write(&zone_file, ZONE).unwrap();

    let knot = Knot::start(&dir, &zone_file);
    let signpost = Server::start_raw(&["--zones-dir", zones.to_str().unwrap(), "--seed", "1"]);

    let mut failures = Vec::new();
    for &(name, qtype, rcode, what) in cases {
        let s = ask(signpost.dns, name, qtype);
        let k = ask(knot.addr, name, qtype);
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
