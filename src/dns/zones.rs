//! Static zones: RFC 1035 zone files from the zones directory, served beside
//! the registry zone. Loaded once at start-up; a file that does not parse
//! stops start-up with its path and line.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use super::answer::{Answer, Question};

/// Why a zone file could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The zones directory or a file in it could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The first line at which the file stops parsing (1-based).
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// The file parses but is not a servable zone.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Longest CNAME chain followed inside a zone.
const MAX_CNAME_CHAIN: usize = 8;

/// One static zone.
#[derive(Debug)]
pub struct StaticZone {
    /// The zone's name.
    origin: LowerName,
    /// The file it came from, for logs.
    path: PathBuf,
    /// The SOA record, for negative answers.
    soa: Record,
    /// TTL of negative answers: min(SOA TTL, SOA MINIMUM) (RFC 2308 §5).
    negative_ttl: u32,
    /// Every record, by owner name.
    nodes: HashMap<LowerName, Vec<Record>>,
    /// Names that own nothing but have descendants (RFC 4592 §2.2.2).
    empty_non_terminals: HashSet<LowerName>,
    /// Names below the apex that own NS records: zone cuts.
    delegations: HashSet<LowerName>,
}

impl StaticZone {
    /// Parses the zone in `path`; its origin is the file name without `.zone`
    /// unless the file sets `$ORIGIN` before its SOA.
    pub fn load(path: &Path) -> Result<Self, ZoneError> {
        let text = std::fs::read_to_string(path).map_err(|source| ZoneError::Io {
            path: path.to_owned(),
            source,
        })?;
        let origin = origin_from_file_name(path)?;
        let parse =
            |input: &str| Parser::new(input, Some(path.to_owned()), Some(origin.clone())).parse();
        let (_, rrsets) = parse(&text).map_err(|e| {
            let message = e.to_string();
            ZoneError::Syntax {
                path: path.to_owned(),
                line: failing_line(&text, &message, |prefix| {
                    parse(prefix).err().map(|e| e.to_string())
                }),
                message,
            }
        })?;
        let invalid = |message: String| ZoneError::Invalid {
            path: path.to_owned(),
            message,
        };

        let mut nodes: HashMap<LowerName, Vec<Record>> = HashMap::new();
        for (key, rrset) in rrsets {
            nodes
                .entry(key.name)
                .or_default()
                .extend(rrset.records_without_rrsigs().cloned());
        }
        let soas: Vec<&Record> = nodes
            .values()
            .flatten()
            .filter(|r| r.record_type() == RecordType::SOA)
            .collect();
        let [soa] = soas[..] else {
            return Err(invalid(format!(
                "has {} SOA records; a zone has exactly one, at its apex",
                soas.len()
            )));
        };
        let soa = soa.clone();
        let origin = LowerName::new(&soa.name);
        let minimum = match &soa.data {
            RData::SOA(s) => s.minimum,
            _ => unreachable!("filtered on SOA"),
        };
        let negative_ttl = soa.ttl.min(minimum);

        let mut empty_non_terminals = HashSet::new();
        let mut delegations = HashSet::new();
        for (name, records) in &nodes {
            if !origin.zone_of(name) {
                return Err(invalid(format!("{name} is outside the zone {origin}")));
            }
            if *name != origin && records.iter().any(|r| r.record_type() == RecordType::NS) {
                delegations.insert(name.clone());
            }
            let mut parent = name.base_name();
            while parent.num_labels() > origin.num_labels() && !nodes.contains_key(&parent) {
                empty_non_terminals.insert(parent.clone());
                parent = parent.base_name();
            }
        }
        Ok(Self {
            origin,
            path: path.to_owned(),
            soa,
            negative_ttl,
            nodes,
            empty_non_terminals,
            delegations,
        })
    }

    /// The zone's name.
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many names own records.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the zone owns no names (never true: the apex has the SOA).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Answers `q`, whose name is at or below the origin, by RFC 1034 §4.3.2:
    /// look the name up; on a CNAME, answer it and start again at its target
    /// while the target stays in the zone. The last name decides the rest:
    /// its records, NODATA or NXDOMAIN with the SOA (RFC 2308, RFC 6604), or
    /// a referral when it lies below a zone cut.
    pub fn answer(&self, q: &Question<'_>) -> Answer {
        let mut answer = Answer {
            authoritative: true,
            ..Answer::default()
        };
        let mut name = q.lower.clone();
        let mut owner = q.name.clone();
        for hop in 0..=MAX_CNAME_CHAIN {
            // A DS record at a cut belongs to the parent (RFC 4035 §3.1.4.1).
            if let Some(cut) = self.zone_cut(&name, q.qtype == RecordType::DS) {
                let ns = self.delegation_ns(cut);
                if hop == 0 {
                    // Not our data: a referral is not authoritative.
                    answer.authoritative = false;
                }
                // Glue: the in-zone addresses of the child's name servers.
                self.add_target_addresses(&ns, &mut answer);
                answer.authority = ns;
                return answer;
            }
            let records = match self.nodes.get(&name) {
                Some(records) => records.as_slice(),
                None if self.empty_non_terminals.contains(&name) => break,
                None => match self.wildcard(&name) {
                    Some(records) => records,
                    None => {
                        answer.rcode = ResponseCode::NXDomain;
                        break;
                    }
                },
            };
            let with_owner = |r: &Record| {
                let mut r = r.clone();
                r.name = owner.clone();
                r
            };
            if q.qtype == RecordType::ANY && hop == 0 {
                if q.tcp {
                    answer.answers.extend(records.iter().map(with_owner));
                } else {
                    let hinfo = RData::HINFO(HINFO::new("RFC8482".into(), String::new()));
                    answer.answers.push(Record::from_rdata(
                        owner.clone(),
                        self.negative_ttl,
                        hinfo,
                    ));
                }
                return answer;
            }
            let matching: Vec<Record> = records
                .iter()
                .filter(|r| r.record_type() == q.qtype)
                .map(with_owner)
                .collect();
            if !matching.is_empty() {
                self.add_target_addresses(&matching, &mut answer);
                answer.answers.extend(matching);
                return answer;
            }
            let Some(cname) = records
                .iter()
                .find(|r| r.record_type() == RecordType::CNAME)
            else {
                break; // NODATA
            };
            answer.answers.push(with_owner(cname));
            let RData::CNAME(target) = &cname.data else {
                break;
            };
            if !self.origin.zone_of(&LowerName::new(&target.0)) {
                // The rest of the chain is another zone's to answer.
                return answer;
            }
            owner = target.0.clone();
            name = LowerName::new(&owner);
        }
        answer.additional.clear();
        let mut soa = self.soa.clone();
        soa.ttl = self.negative_ttl;
        answer.authority.push(soa);
        answer
    }

    /// Additional-section addresses for in-zone SRV, MX and NS targets.
    fn add_target_addresses(&self, records: &[Record], answer: &mut Answer) {
        for record in records {
            let target = match &record.data {
                RData::SRV(srv) => &srv.target,
                RData::MX(mx) => &mx.exchange,
                RData::NS(ns) => &ns.0,
                _ => continue,
            };
            if let Some(found) = self.nodes.get(&LowerName::new(target)) {
                answer.additional.extend(
                    found
                        .iter()
                        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                        .cloned(),
                );
            }
        }
    }

    /// The highest zone cut at or above `name`, below the apex; with
    /// `parent_side`, a cut at `name` itself does not count.
    fn zone_cut(&self, name: &LowerName, parent_side: bool) -> Option<&LowerName> {
        if self.delegations.is_empty() {
            return None;
        }
        let mut cut = None;
        let mut n = if parent_side {
            name.base_name()
        } else {
            name.clone()
        };
        while n.num_labels() > self.origin.num_labels() {
            if let Some(found) = self.delegations.get(&n) {
                cut = Some(found);
            }
            n = n.base_name();
        }
        cut
    }

    /// The NS records of the child zone at `cut`, for a referral.
    fn delegation_ns(&self, cut: &LowerName) -> Vec<Record> {
        self.nodes[cut]
            .iter()
            .filter(|r| r.record_type() == RecordType::NS)
            .cloned()
            .collect()
    }

    /// The wildcard records that stand in for `name` (RFC 4592): those at
    /// `*.<closest encloser>`, if that exists.
    fn wildcard(&self, name: &LowerName) -> Option<&[Record]> {
        let mut encloser = name.base_name();
        while encloser.num_labels() > self.origin.num_labels()
            && !self.nodes.contains_key(&encloser)
            && !self.empty_non_terminals.contains(&encloser)
        {
            encloser = encloser.base_name();
        }
        let star = LowerName::new(&Name::from_ascii("*").ok()?.append_domain(&encloser).ok()?);
        self.nodes.get(&star).map(Vec::as_slice)
    }
}

/// The origin a zone file's name implies: `example.com.zone` → `example.com.`.
fn origin_from_file_name(path: &Path) -> Result<Name, ZoneError> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let mut name = Name::from_ascii(stem).map_err(|e| ZoneError::Invalid {
        path: path.to_owned(),
        message: format!("the file name {stem:?} is not a zone name ({e})"),
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// The first line at which `text` stops parsing with `message`: the shortest
/// prefix of whole lines that fails the same way. The parser reports no
/// positions, so this bisects; it runs only on the error path.
fn failing_line(text: &str, message: &str, error_of: impl Fn(&str) -> Option<String>) -> usize {
    let ends: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain([text.len()])
        .collect();
    let fails_at = |line: usize| error_of(&text[..ends[line - 1]]).as_deref() == Some(message);
    let (mut lo, mut hi) = (1, ends.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails_at(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Loads every `*.zone` file in `dir`, sorted by name. A missing directory is
/// no zones.
pub fn load_dir(dir: &Path) -> Result<Vec<StaticZone>, ZoneError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ZoneError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ZoneError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "zone") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let zones: Vec<StaticZone> = paths
        .iter()
        .map(|p| StaticZone::load(p))
        .collect::<Result<_, _>>()?;
    for (n, zone) in zones.iter().enumerate() {
        if let Some(other) = zones[..n].iter().find(|z| z.origin == zone.origin) {
            return Err(ZoneError::Invalid {
                path: zone.path.clone(),
                message: format!("zone {} is also in {}", zone.origin, other.path.display()),
            });
        }
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const ZONE: &str = "\
$TTL 300
@       IN SOA ns1 hostmaster 1 3600 600 86400 60
@       IN NS  ns1
ns1     IN A   192.0.2.1
www     IN A   192.0.2.10
        IN AAAA 2001:db8::10
alias   IN CNAME www
_http._tcp IN SRV 0 5 80 www
a.b.c   IN TXT \"deep\"
*.wild  IN A   192.0.2.99
sub     IN NS  ns.sub
ns.sub  IN A   192.0.2.53
";

    fn zone(text: &str) -> Result<StaticZone, ZoneError> {
        let dir = std::env::temp_dir().join(format!(
            "signpost-zones-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("static.example.zone");
        std::fs::write(&path, text).unwrap();
        StaticZone::load(&path)
    }

    fn ask(z: &StaticZone, name: &str, qtype: RecordType) -> Answer {
        let name = Name::from_ascii(name).unwrap();
        let lower = LowerName::new(&name);
        let mut rng = SmallRng::seed_from_u64(0);
        let q = Question {
            name: &name,
            lower: &lower,
            qtype,
            tcp: false,
            client: 0,
            ecs_source_prefix: None,
            rng: &mut rng,
        };
        z.answer(&q)
    }

    #[test]
    fn answers_follow_rfc_1034() {
        let z = zone(ZONE).unwrap();
        assert_eq!(z.origin().to_string(), "static.example.");
        let a = ask(&z, "WWW.static.example.", RecordType::A);
        assert_eq!(
            (a.rcode, a.answers.len(), a.authoritative),
            (ResponseCode::NoError, 1, true)
        );
        assert_eq!(a.answers[0].name.to_string(), "WWW.static.example.");

        let nodata = ask(&z, "www.static.example.", RecordType::MX);
        assert_eq!(
            (nodata.rcode, nodata.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert_eq!(nodata.authority[0].record_type(), RecordType::SOA);
        assert_eq!(nodata.authority[0].ttl, 60);

        let nx = ask(&z, "nope.static.example.", RecordType::A);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority.len(), 1);

        let ent = ask(&z, "b.c.static.example.", RecordType::A);
        assert_eq!((ent.rcode, ent.answers.len()), (ResponseCode::NoError, 0));

        let cname = ask(&z, "alias.static.example.", RecordType::AAAA);
        assert_eq!(cname.answers.len(), 2);
        assert_eq!(cname.answers[1].record_type(), RecordType::AAAA);

        let srv = ask(&z, "_http._tcp.static.example.", RecordType::SRV);
        assert_eq!(srv.additional.len(), 2, "both addresses of the target");

        let wild = ask(&z, "x.wild.static.example.", RecordType::A);
        assert_eq!(wild.answers[0].name.to_string(), "x.wild.static.example.");

        let referral = ask(&z, "host.sub.static.example.", RecordType::A);
        assert!(!referral.authoritative);
        assert_eq!(referral.authority[0].record_type(), RecordType::NS);
        assert_eq!(referral.additional.len(), 1);
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let broken = ZONE.replace("www     IN A   192.0.2.10", "www     IN A   192.0.2.300");
        match zone(&broken) {
            Err(ZoneError::Syntax { line, .. }) => assert_eq!(line, 5),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn a_zone_needs_one_soa() {
        let err = zone("$TTL 60\nwww IN A 192.0.2.1\n").unwrap_err();
        assert!(err.to_string().contains("0 SOA"), "{err}");
    }
}
