//! The DNS request handler: header and EDNS rules, zone dispatch.
//!
//! `respond` is synchronous and allocation-light; it never blocks, takes no
//! lock shared with writers and logs nothing per query above debug.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::{Edns, LowerQuery, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RecordType};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::answer::{Answer, Question};
use super::registry_zone::RegistryZone;
use super::zones::StaticZone;
use crate::projection::order::client_hash;

/// Largest UDP payload we send, whatever the client offers (DNS Flag Day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The EDNS option code of Extended DNS Errors (RFC 8914).
const EDE_OPTION: u16 = 15;
/// UDP payload without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP_PAYLOAD: u16 = 512;

/// Every zone this server answers for.
pub struct Zones {
    /// The registry zone.
    pub registry: RegistryZone,
    /// Zone files, each with a distinct origin.
    pub statics: Vec<StaticZone>,
}

impl Zones {
    /// Answers from the zone closest to the name, or REFUSED outside all.
    pub fn answer(&self, q: &mut Question<'_>) -> Answer {
        let registry = self.registry.origin();
        let mut best: Option<&StaticZone> = None;
        for zone in &self.statics {
            if zone.origin().zone_of(q.lower)
                && best.is_none_or(|b| zone.origin().num_labels() > b.origin().num_labels())
            {
                best = Some(zone);
            }
        }
        let registry_fits = registry.zone_of(q.lower);
        match best {
            Some(zone) if !registry_fits || zone.origin().num_labels() > registry.num_labels() => {
                zone.answer(q)
            }
            _ if registry_fits => self.registry.answer(q),
            _ => Answer::refused(),
        }
    }
}

/// Gives each query its own random source without a shared lock: query n
/// gets a generator seeded from (seed, n). With a fixed seed, a sequence of
/// queries gets a reproducible sequence of orders.
pub struct QueryRng {
    /// Base seed: fixed in tests, from the OS otherwise.
    seed: u64,
    /// Queries so far.
    counter: AtomicU64,
}

impl QueryRng {
    /// A source from `seed`, or from OS entropy when `None`.
    pub fn new(seed: Option<u64>) -> Self {
        Self {
            seed: seed.unwrap_or_else(rand::random),
            counter: AtomicU64::new(0),
        }
    }

    /// The generator for the next query.
    pub fn next(&self) -> SmallRng {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        SmallRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// The most bytes a response may take: 65,535 over TCP, else the payload
/// size of the response's OPT record, or 512 without EDNS.
pub fn payload_limit(tcp: bool, edns: Option<&Edns>) -> usize {
    if tcp {
        usize::from(u16::MAX)
    } else {
        usize::from(edns.map_or(PLAIN_UDP_PAYLOAD, Edns::max_payload))
    }
}

/// What the handler reads of a decoded query: borrowed from hickory's
/// `Request`, or from the UDP path's own decoding of the common shape.
pub struct Incoming<'a> {
    /// The query's header fields.
    pub metadata: &'a Metadata,
    /// Its questions.
    pub queries: &'a [LowerQuery],
    /// Its OPT record, if any.
    pub edns: Option<&'a Edns>,
    /// The client's address.
    pub src: IpAddr,
    /// Whether it came over TCP.
    pub tcp: bool,
}

/// A response ready to encode, not yet cut to the client's payload size.
pub struct Response {
    /// Header fields.
    pub metadata: Metadata,
    /// The OPT record to send, when the request had one.
    pub edns: Option<Edns>,
    /// Sections.
    pub answer: Answer,
}

/// Answers requests: called by the UDP threads and by hickory's `Server`
/// for TCP. Clones share the zones and the random source.
#[derive(Clone)]
pub struct DnsHandler {
    /// What we answer for.
    zones: Arc<Zones>,
    /// Per-query random source for ordering.
    rng: Arc<QueryRng>,
}

impl DnsHandler {
    /// A handler over `zones`.
    pub fn new(zones: Arc<Zones>, rng: QueryRng) -> Self {
        Self {
            zones,
            rng: Arc::new(rng),
        }
    }

    /// Builds the response to `request`.
    pub fn respond(&self, request: &Incoming<'_>) -> Response {
        let mut metadata = Metadata::response_from_request(request.metadata);
        let tcp = request.tcp;
        let request_edns = request.edns;
        let mut edns = request_edns.map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(PLAIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD));
            e.set_version(0);
            // RFC 3225 §3: the DO bit is copied into the response.
            e.set_dnssec_ok(req.flags().dnssec_ok);
            e
        });
        let response = |metadata: Metadata, edns: Option<Edns>| Response {
            metadata,
            edns,
            answer: Answer::default(),
        };

        if request_edns.is_some_and(|e| e.version() > 0) {
            metadata.response_code = ResponseCode::BADVERS;
            return response(metadata, edns);
        }
        if request.metadata.op_code != OpCode::Query {
            metadata.response_code = ResponseCode::NotImp;
            return response(metadata, edns);
        }
        let [query] = request.queries else {
            metadata.response_code = ResponseCode::FormErr;
            return response(metadata, edns);
        };
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            // Not our class, or a zone transfer: not allowed here.
            metadata.response_code = ResponseCode::Refused;
            return response(metadata, edns);
        }
        if qtype == RecordType::OPT {
            metadata.response_code = ResponseCode::FormErr;
            return response(metadata, edns);
        }

        let subnet = request_edns.and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some(*s),
            _ => None,
        });
        let client = match &subnet {
            Some(s) => subnet_hash(s),
            None => address_hash(request.src),
        };
        let mut rng = self.rng.next();
        let original = query.original();
        let mut q = Question {
            name: original.name(),
            lower: query.name(),
            qtype,
            tcp,
            client,
            ecs_source_prefix: subnet.as_ref().map(ClientSubnet::source_prefix),
            rng: &mut rng,
        };
        let mut answer = self.zones.answer(&mut q);
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.authoritative;

        if let (Some(edns), Some(mut subnet)) = (edns.as_mut(), subnet) {
            // RFC 7871 §7.2.1: echo the option with the scope the answer had.
            subnet.set_scope_prefix(answer.ecs_scope.unwrap_or(0));
            edns.options_mut().insert(EdnsOption::Subnet(subnet));
        }
        if let (Some(edns), Some((code, text))) = (edns.as_mut(), answer.ede.take()) {
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(text.as_bytes());
            edns.options_mut()
                .insert(EdnsOption::Unknown(EDE_OPTION, data));
        }
        Response {
            metadata,
            edns,
            answer,
        }
    }
}

/// The hash key of a client address.
fn address_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => client_hash(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => client_hash(&v4.octets()),
            None => client_hash(&v6.octets()),
        },
    }
}

/// The hash key of an ECS subnet: its address masked to the source prefix,
/// so every client in the subnet hashes alike.
fn subnet_hash(subnet: &ClientSubnet) -> u64 {
    let prefix = u32::from(subnet.source_prefix());
    let masked = match subnet.addr() {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - prefix.min(128)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    address_hash(masked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_hash_by_their_prefix() {
        let a = ClientSubnet::new("192.0.2.17".parse().unwrap(), 24, 0);
        let b = ClientSubnet::new("192.0.2.200".parse().unwrap(), 24, 0);
        let c = ClientSubnet::new("192.0.3.17".parse().unwrap(), 24, 0);
        assert_eq!(subnet_hash(&a), subnet_hash(&b));
        assert_ne!(subnet_hash(&a), subnet_hash(&c));
        let zero = ClientSubnet::new("192.0.2.1".parse().unwrap(), 0, 0);
        assert_eq!(subnet_hash(&zero), address_hash("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn mapped_addresses_hash_as_ipv4() {
        assert_eq!(
            address_hash("::ffff:192.0.2.1".parse().unwrap()),
            address_hash("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn query_rngs_repeat_with_a_seed() {
        use rand::Rng;
        let a = QueryRng::new(Some(9));
        let b = QueryRng::new(Some(9));
        for _ in 0..3 {
            assert_eq!(a.next().random::<u64>(), b.next().random::<u64>());
        }
    }
}
