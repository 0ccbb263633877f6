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

/// How a case is checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// signpost must answer exactly as Knot does.
    Same,
}

/// (query name, type, what it exercises, how it is checked).
const CASES: &[(&str, RecordType, &str, Expect)] = &[
    // Positive answers.
    (
        "www.parity.example.",
        RecordType::A,
        "A RRset of two",
        Expect::Same,
    ),
    (
        "www.parity.example.",
        RecordType::AAAA,
        "AAAA",
        Expect::Same,
    ),
    (
        "www.parity.example.",
        RecordType::TXT,
        "TXT with two strings",
        Expect::Same,
    ),
    (
        "parity.example.",
        RecordType::MX,
        "MX, in-zone target in Additional",
        Expect::Same,
    ),
    (
        "_http._tcp.parity.example.",
        RecordType::SRV,
        "SRV, target addresses in Additional",
        Expect::Same,
    ),
    (
        "ns2.parity.example.",
        RecordType::A,
        "explicit per-record TTL",
        Expect::Same,
    ),
    // Apex.
    ("parity.example.", RecordType::SOA, "apex SOA", Expect::Same),
    (
        "parity.example.",
        RecordType::NS,
        "apex NS with in-zone glue",
        Expect::Same,
    ),
    ("parity.example.", RecordType::TXT, "apex TXT", Expect::Same),
    // Negative answers (RFC 2308).
    (
        "www.parity.example.",
        RecordType::MX,
        "NODATA",
        Expect::Same,
    ),
    (
        "parity.example.",
        RecordType::AAAA,
        "NODATA at the apex",
        Expect::Same,
    ),
    (
        "nope.parity.example.",
        RecordType::A,
        "NXDOMAIN",
        Expect::Same,
    ),
    (
        "deep.nope.parity.example.",
        RecordType::A,
        "NXDOMAIN two labels down",
        Expect::Same,
    ),
    // Empty non-terminals (RFC 4592 §2.2.2): NODATA, never NXDOMAIN.
    ("b.c.parity.example.", RecordType::A, "ENT", Expect::Same),
    (
        "c.parity.example.",
        RecordType::TXT,
        "ENT two levels up",
        Expect::Same,
    ),
    (
        "zz.b.c.parity.example.",
        RecordType::A,
        "NXDOMAIN below an ENT",
        Expect::Same,
    ),
    (
        "a.b.c.parity.example.",
        RecordType::A,
        "the name below the ENTs",
        Expect::Same,
    ),
    // Wildcards (RFC 4592).
    (
        "x.wild.parity.example.",
        RecordType::A,
        "wildcard match",
        Expect::Same,
    ),
    (
        "y.x.wild.parity.example.",
        RecordType::TXT,
        "wildcard two labels down",
        Expect::Same,
    ),
    (
        "x.wild.parity.example.",
        RecordType::MX,
        "wildcard NODATA",
        Expect::Same,
    ),
    (
        "wild.parity.example.",
        RecordType::A,
        "wildcard parent is an ENT",
        Expect::Same,
    ),
    (
        "*.wild.parity.example.",
        RecordType::A,
        "the wildcard owner itself",
        Expect::Same,
    ),
    // CNAME (RFC 1034 §3.6.2, §4.3.2 step 3a; RFC 2308 §2.1/2.2).
    (
        "alias.parity.example.",
        RecordType::A,
        "CNAME chain of two in zone",
        Expect::Same,
    ),
    (
        "alias.parity.example.",
        RecordType::CNAME,
        "CNAME asked for itself",
        Expect::Same,
    ),
    (
        "out.parity.example.",
        RecordType::A,
        "CNAME out of zone",
        Expect::Same,
    ),
    (
        "dangling.parity.example.",
        RecordType::A,
        "CNAME to an in-zone NXDOMAIN",
        Expect::Same,
    ),
    (
        "to-nodata.parity.example.",
        RecordType::TXT,
        "CNAME to an in-zone NODATA",
        Expect::Same,
    ),
    (
        "to-sub.parity.example.",
        RecordType::A,
        "CNAME into the delegation",
        Expect::Same,
    ),
    // Delegation (RFC 1034 §4.3.2 step 3b).
    (
        "host.sub.parity.example.",
        RecordType::A,
        "referral below the cut",
        Expect::Same,
    ),
    (
        "sub.parity.example.",
        RecordType::NS,
        "referral at the cut",
        Expect::Same,
    ),
    (
        "sub.parity.example.",
        RecordType::A,
        "referral at the cut, other type",
        Expect::Same,
    ),
    (
        "ns.sub.parity.example.",
        RecordType::A,
        "glue name: referral",
        Expect::Same,
    ),
    // Case (RFC 4343): matching is case-insensitive.
    (
        "WwW.PaRiTy.ExAmPlE.",
        RecordType::A,
        "mixed case",
        Expect::Same,
    ),
    (
        "X.WiLd.parity.EXAMPLE.",
        RecordType::A,
        "mixed case wildcard",
        Expect::Same,
    ),
    (
        "HoSt.SuB.parity.example.",
        RecordType::A,
        "mixed case referral",
        Expect::Same,
    ),
    (
        "NoPe.Parity.Example.",
        RecordType::A,
        "mixed case NXDOMAIN",
        Expect::Same,
    ),
    // Outside the zone.
    (
        "example.org.",
        RecordType::A,
        "outside every zone",
        Expect::Same,
    ),
    (
        "example.",
        RecordType::SOA,
        "the zone's parent",
        Expect::Same,
    ),
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

/// `name type ttl rdata`, owner lower-cased (RFC 4343).
fn record_text(r: &Record) -> String {
    format!(
        "{} {} {} {}",
        r.name.to_string().to_ascii_lowercase(),
        r.record_type(),
        r.ttl,
        r.data
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
            std::fs::write(
                &conf,
                format!(
                    "server:\n    listen: 127.0.0.1@{port}\n    rundir: {run}\n    user: root:root\n\
                     log:\n  - target: stderr\n    any: info\n\
                     database:\n    storage: {storage}\n\
                     template:\n  - id: default\n    storage: {storage}\n    zonefile-sync: -1\n    \
                     zonefile-load: whole\n    journal-content: none\n    semantic-checks: on\n\
                     zone:\n  - domain: {ORIGIN}\n    file: {zone}\n",
                    run = run.display(),
                    storage = storage.display(),
                    zone = zone_file.display(),
                ),
            )
            .unwrap();
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

#[test]
fn signpost_answers_like_knot() {
    let dir = scratch("knot-parity");
    let zones = dir.join("zones");
    std::fs::create_dir_all(&zones).unwrap();
    let zone_file = zones.join(format!("{ORIGIN}zone"));
    std::fs::write(&zone_file, ZONE).unwrap();

    let knot = Knot::start(&dir, &zone_file);
    let signpost = Server::start_raw(&["--zones-dir", zones.to_str().unwrap(), "--seed", "1"]);

    let mut failures = Vec::new();
    for &(name, qtype, what, expect) in CASES {
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
        match expect {
            Expect::Same => {
                let d = diff(&s, &k);
                if !d.is_empty() {
                    failures.push(format!("{name} {qtype} ({what}):\n{d}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Knot:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}
