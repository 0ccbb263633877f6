//! The registry zone (`internal.` by default): answers from the projection's
//! current snapshot, ordered per query (DESIGN §2, §3).

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, HINFO, NS, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use smallvec::SmallVec;

use super::answer::{Answer, INLINE, Question, ServiceAnswer, srv_with_address};
use super::names::{self, RegistryName};
use crate::projection::order::{QueryContext, order};
use crate::projection::{ClusterRecords, InstanceRecords, Projection, ServiceRecords, Snapshot};
use crate::registry::model::LbPolicy;

/// Settings of the registry zone.
#[derive(Debug, Clone)]
pub struct RegistryZoneConfig {
    /// The zone's name (`internal.`).
    pub domain: Name,
    /// This server's cluster: names without a cluster label mean it.
    pub cluster: String,
    /// Negative-answer TTL (SOA minimum and SOA TTL), seconds.
    pub negative_ttl: u32,
    /// Addresses served for `ns.<domain>` (the NS target); may be empty.
    pub ns_addresses: Vec<IpAddr>,
}

/// The registry zone.
pub struct RegistryZone {
    /// Its settings.
    config: RegistryZoneConfig,
    /// `config.domain`, for matching.
    origin: LowerName,
    /// `ns.<domain>`: the NS target.
    ns_name: Name,
    /// `hostmaster.<domain>`: the SOA RNAME.
    hostmaster: Name,
    /// Where snapshots come from.
    projection: Arc<Projection>,
}

/// What exists at a name, for one snapshot.
enum Node<'s> {
    /// The name does not exist: NXDOMAIN.
    Missing,
    /// The name exists and holds no records (an empty non-terminal): NODATA.
    Empty,
    /// The zone apex.
    Apex,
    /// The name server name.
    NameServer,
    /// A service name, with its filter.
    Service {
        service: &'s Arc<ServiceRecords>,
        name: &'s str,
        tag: Option<&'s str>,
        srv_only: bool,
        /// No cluster label: the service's failover clusters may answer.
        local_form: bool,
    },
    /// The DNS-SD service type enumeration name of a cluster.
    ServiceTypes {
        cluster: &'s ClusterRecords,
        /// The cluster label the question used, if any.
        label: Option<&'s str>,
    },
    /// A DNS-SD service instance name.
    DnssdInstance {
        service: &'s ServiceRecords,
        index: usize,
    },
    /// An instance name.
    Instance {
        service: &'s ServiceRecords,
        index: usize,
    },
}

impl RegistryZone {
    /// The zone, answering from `projection`.
    pub fn new(config: RegistryZoneConfig, projection: Arc<Projection>) -> Self {
        let origin = LowerName::new(&config.domain);
        let under = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&config.domain))
                .expect("one label under a valid domain is a valid name")
        };
        Self {
            ns_name: under("ns"),
            hostmaster: under("hostmaster"),
            origin,
            config,
            projection,
        }
    }

    /// The zone's name.
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// Answers `q`, whose name is at or below the origin.
    pub fn answer(&self, q: &mut Question<'_>) -> Answer {
        let snapshot = self.projection.load();
        let mut answer = Answer {
            authoritative: true,
            ..Answer::default()
        };
        let node = self.node(
            &snapshot,
            names::parse(q.lower, self.origin.num_labels() as usize),
        );
        if matches!(node, Node::Missing) {
            answer.rcode = ResponseCode::NXDomain;
        } else if q.qtype == RecordType::ANY && !q.tcp {
            // RFC 8482 §4.2: one small synthesised record instead of everything.
            let hinfo = HINFO::new("RFC8482".into(), String::new());
            let ttl = self.config.negative_ttl;
            answer
                .answers
                .push(Record::from_rdata(q.name.clone(), ttl, RData::HINFO(hinfo)));
        } else if q.qtype == RecordType::ANY {
            for qtype in [
                RecordType::SOA,
                RecordType::NS,
                RecordType::SRV,
                RecordType::A,
                RecordType::AAAA,
                RecordType::TXT,
                RecordType::PTR,
            ] {
                self.records(&snapshot, &node, qtype, q, &mut answer);
            }
        } else {
            self.records(&snapshot, &node, q.qtype, q, &mut answer);
        }
        if answer.no_answers() {
            answer.additional.clear();
            answer.authority.push(self.soa(
                &snapshot,
                self.config.domain.clone(),
                self.config.negative_ttl,
            ));
        }
        answer
    }

    /// Finds what `name` refers to in `snapshot`.
    fn node<'s>(&self, snapshot: &'s Snapshot, name: RegistryName<'s>) -> Node<'s> {
        let local = self.config.cluster.as_str();
        let known = |c: Option<&str>| snapshot.cluster(c.unwrap_or(local)).is_some();
        let empty_if = |exists: bool| if exists { Node::Empty } else { Node::Missing };
        match name {
            RegistryName::Apex => Node::Apex,
            RegistryName::NameServer => Node::NameServer,
            RegistryName::ClusterNode { cluster } => empty_if(known(Some(cluster))),
            RegistryName::Branch { cluster } => empty_if(known(cluster)),
            RegistryName::ProtoNode { cluster, tag } => {
                let c = snapshot.cluster(cluster.unwrap_or(local));
                empty_if(c.is_some_and(|c| tag.is_none_or(|t| c.has_tag(t))))
            }
            RegistryName::InstanceParent { cluster, service } => {
                let c = snapshot.cluster(cluster.unwrap_or(local));
                empty_if(
                    c.and_then(|c| c.service(service))
                        .is_some_and(|s| !s.instances.is_empty()),
                )
            }
            RegistryName::Service {
                cluster,
                service,
                tag,
                srv_only,
            } => {
                let Some(records) = snapshot
                    .cluster(cluster.unwrap_or(local))
                    .and_then(|c| c.service_arc(service))
                else {
                    return Node::Missing;
                };
                let local_form = cluster.is_none();
                let tagged_somewhere = |t: &str| {
                    records.has_tag(t)
                        || (local_form
                            && records.failover.iter().any(|fc| {
                                snapshot
                                    .cluster(fc)
                                    .and_then(|c| c.service(service))
                                    .is_some_and(|s| s.has_tag(t))
                            }))
                };
                if tag.is_some_and(|t| !tagged_somewhere(t)) {
                    return Node::Missing;
                }
                Node::Service {
                    service: records,
                    name: service,
                    tag,
                    srv_only,
                    local_form,
                }
            }
            RegistryName::Instance {
                cluster,
                service,
                id,
            } => match instance_at(snapshot, cluster.unwrap_or(local), service, id) {
                Some((service, index)) => Node::Instance { service, index },
                None => Node::Missing,
            },
            RegistryName::ServiceTypes { cluster } => {
                match snapshot.cluster(cluster.unwrap_or(local)) {
                    Some(records) => Node::ServiceTypes {
                        cluster: records,
                        label: cluster,
                    },
                    None => Node::Missing,
                }
            }
            RegistryName::DnssdInstance {
                cluster,
                service,
                id,
            } => match instance_at(snapshot, cluster.unwrap_or(local), service, id) {
                Some((service, index)) => Node::DnssdInstance { service, index },
                None => Node::Missing,
            },
            RegistryName::Unknown => Node::Missing,
        }
    }

    /// Appends the records of type `qtype` at `node` to `answer`.
    fn records(
        &self,
        snapshot: &Snapshot,
        node: &Node<'_>,
        qtype: RecordType,
        q: &mut Question<'_>,
        answer: &mut Answer,
    ) {
        match (node, qtype) {
            (Node::Apex, RecordType::SOA) => {
                answer
                    .answers
                    .push(self.soa(snapshot, q.name.clone(), self.config.negative_ttl));
            }
            (Node::Apex, RecordType::NS) => {
                let ns = RData::NS(NS(self.ns_name.clone()));
                answer
                    .answers
                    .push(Record::from_rdata(q.name.clone(), NS_TTL, ns));
                for address in &self.config.ns_addresses {
                    answer
                        .additional
                        .push(address_record(self.ns_name.clone(), NS_TTL, *address));
                }
            }
            (Node::NameServer, RecordType::A | RecordType::AAAA) => {
                for address in &self.config.ns_addresses {
                    if family_matches(qtype, address) {
                        answer
                            .answers
                            .push(address_record(q.name.clone(), NS_TTL, *address));
                    }
                }
            }
            (Node::Instance { service, index }, _) => {
                let instance = &service.instances[*index];
                if !instance.served {
                    return;
                }
                match qtype {
                    RecordType::A | RecordType::AAAA
                        if family_matches(qtype, &instance.address()) =>
                    {
                        answer.answers.push(address_record(
                            q.name.clone(),
                            instance.ttl(),
                            instance.address(),
                        ));
                    }
                    RecordType::TXT => {
                        let txt = RData::TXT(instance.txt());
                        answer.answers.push(Record::from_rdata(
                            q.name.clone(),
                            instance.ttl(),
                            txt,
                        ));
                    }
                    _ => {}
                }
            }
            (Node::ServiceTypes { cluster, label }, RecordType::PTR) => {
                // RFC 6763 §9: one PTR per service type with something served.
                let mut names: Vec<&str> = cluster
                    .services()
                    .filter(|(_, s)| s.instances.iter().any(|i| i.served))
                    .map(|(n, _)| n)
                    .collect();
                names.sort_unstable();
                for name in names {
                    let mut labels = vec![format!("_{name}"), "_tcp".into(), "service".into()];
                    labels.extend(label.map(str::to_string));
                    if let Ok(target) = Name::from_labels(labels.iter().map(|l| l.as_bytes()))
                        .and_then(|n| n.append_domain(&self.config.domain))
                    {
                        answer.answers.push(Record::from_rdata(
                            q.name.clone(),
                            BROWSE_TTL,
                            RData::PTR(PTR(target)),
                        ));
                    }
                }
            }
            (Node::DnssdInstance { service, index }, RecordType::SRV | RecordType::TXT) => {
                let instance = &service.instances[*index];
                if instance.served {
                    let (records, extra) = dnssd_instance(q.name, service, instance);
                    answer
                        .answers
                        .extend(records.into_iter().filter(|r| r.record_type() == qtype));
                    if qtype == RecordType::SRV {
                        answer.additional.extend(extra);
                    }
                }
            }
            (
                Node::Service {
                    service,
                    tag: None,
                    srv_only: true,
                    ..
                },
                RecordType::PTR,
            ) => {
                // RFC 6763 §4: browsing; §12.1: SRV and TXT (and §12.2 the
                // addresses) of each instance in Additional.
                let ttl = service
                    .instances
                    .iter()
                    .filter(|i| i.served)
                    .map(InstanceRecords::ttl)
                    .min()
                    .unwrap_or(0);
                for instance in service.instances.iter().filter(|i| i.served) {
                    let Ok(label) = Name::from_labels([instance.id().as_bytes()]) else {
                        continue;
                    };
                    let Ok(owner) = label.append_domain(&q.lower.to_lowercase()) else {
                        continue;
                    };
                    answer.answers.push(Record::from_rdata(
                        q.name.clone(),
                        ttl,
                        RData::PTR(PTR(owner.clone())),
                    ));
                    let (records, extra) = dnssd_instance(&owner, service, instance);
                    answer.additional.extend(records);
                    answer.additional.extend(extra);
                }
            }
            (
                Node::Service {
                    service,
                    name,
                    tag,
                    srv_only,
                    local_form,
                },
                RecordType::SRV | RecordType::A | RecordType::AAAA,
            ) => {
                if *srv_only && qtype != RecordType::SRV {
                    return;
                }
                let wanted = |s: &ServiceRecords, healthy: bool| -> Picked {
                    s.instances
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| {
                            (if healthy { i.served } else { i.up })
                                && tag.is_none_or(|t| i.has_tag(t))
                                && (qtype == RecordType::SRV || family_matches(qtype, &i.address()))
                        })
                        .map(|(n, _)| n)
                        .collect()
                };
                // The local cluster, then (for names without a cluster label)
                // the first failover cluster with something served; with
                // fail_open and nothing healthy anywhere, every UP instance.
                let clusters: SmallVec<[&Arc<ServiceRecords>; 4]> = std::iter::once(*service)
                    .chain(
                        service
                            .failover
                            .iter()
                            .filter(|_| *local_form)
                            .filter_map(|fc| {
                                snapshot.cluster(fc).and_then(|c| c.service_arc(name))
                            }),
                    )
                    .collect();
                for healthy in [true, false] {
                    if !healthy && !service.fail_open {
                        break;
                    }
                    if let Some((records, picked)) = clusters
                        .iter()
                        .map(|s| (*s, wanted(s, healthy)))
                        .find(|(_, p)| !p.is_empty())
                    {
                        if !healthy {
                            answer.ede = Some((
                                EDE_OTHER,
                                "fail-open: no healthy instance; serving every UP instance".into(),
                            ));
                        }
                        self.service_records(records, picked, qtype, q, answer);
                        break;
                    }
                }
            }
            _ => {}
        }
    }

    /// The `picked` instances of `service` (positions in its instances),
    /// ordered for this query.
    fn service_records(
        &self,
        service: &Arc<ServiceRecords>,
        picked: Picked,
        qtype: RecordType,
        q: &mut Question<'_>,
        answer: &mut Answer,
    ) {
        let candidates: SmallVec<[_; INLINE]> = picked
            .iter()
            .map(|&n| service.candidate(&service.instances[n]))
            .collect();
        let ctx = QueryContext {
            rotation: if service.lb == LbPolicy::RoundRobin {
                service.next_rotation()
            } else {
                0
            },
            client: q.client,
        };
        let mut ordered: Picked = smallvec::smallvec![0; picked.len()];
        order(&candidates, service.lb, ctx, q.rng, &mut ordered);
        if service.lb == LbPolicy::Hash {
            answer.ecs_scope = q.ecs_source_prefix;
        }
        // RFC 2181 §5.2: one TTL for the whole RRset, the smallest asked for.
        let ttl = picked
            .iter()
            .map(|&n| service.instances[n].ttl())
            .min()
            .unwrap_or(0);
        let service = ServiceAnswer {
            records: service.clone(),
            order: ordered.iter().map(|&o| picked[o] as u32).collect(),
            srv: qtype == RecordType::SRV,
            ttl,
        };
        if q.qtype == qtype {
            // Asked for directly: the writer takes the projection's data as
            // it is.
            answer.service = Some(service);
        } else {
            // Part of ANY, after and before other types: records, in place.
            service.push_records(q.name, &mut answer.answers, &mut answer.additional);
        }
    }

    /// The zone's SOA with owner `owner` (the apex as asked, or the origin).
    fn soa(&self, snapshot: &Snapshot, owner: Name, ttl: u32) -> Record {
        let soa = SOA::new(
            self.ns_name.clone(),
            self.hostmaster.clone(),
            // RFC 1982 serial arithmetic tolerates the wrap.
            snapshot.index as u32,
            3600,
            600,
            86_400,
            self.config.negative_ttl,
        );
        Record::from_rdata(owner, ttl, RData::SOA(soa))
    }
}

/// Extended DNS Error "Other" (RFC 8914 §4.1): no code says "fail-open", so
/// the extra text does.
const EDE_OTHER: u16 = 0;

/// Positions of instances in a service's records.
type Picked = SmallVec<[usize; INLINE]>;

/// TTL of the apex NS and the name server's address: they change only with
/// the configuration.
const NS_TTL: u32 = 3600;

fn family_matches(qtype: RecordType, address: &IpAddr) -> bool {
    matches!(
        (qtype, address),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
    )
}

/// An instance of `service` in `cluster`, and its position there.
fn instance_at<'s>(
    snapshot: &'s Snapshot,
    cluster: &str,
    service: &str,
    id: &str,
) -> Option<(&'s ServiceRecords, usize)> {
    let records = snapshot.cluster(cluster)?.service(service)?;
    Some((records, records.position(id)?))
}

/// TTL of the service type enumeration (RFC 6763 §9).
const BROWSE_TTL: u32 = 5;

/// A DNS-SD instance's SRV and TXT at `owner`, and its address (for
/// Additional).
fn dnssd_instance(
    owner: &Name,
    service: &ServiceRecords,
    instance: &InstanceRecords,
) -> (Vec<Record>, Vec<Record>) {
    let (srv, address) = srv_with_address(service, instance);
    let ttl = instance.ttl();
    let records = vec![
        Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)),
        Record::from_rdata(owner.clone(), ttl, RData::TXT(instance.txt())),
    ];
    (records, vec![address])
}

/// An A or AAAA record for `address`.
pub fn address_record(owner: Name, ttl: u32, address: IpAddr) -> Record {
    let rdata = match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner, ttl, rdata)
}
