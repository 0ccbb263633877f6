//! What a zone hands back for one question, before it is put on the wire.

use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use rand::rngs::SmallRng;
use smallvec::SmallVec;

use super::registry_zone::address_record;
use crate::projection::{InstanceRecords, ServiceRecords};

/// One question, as a zone sees it.
pub struct Question<'a> {
    /// The name as the client wrote it: answers carry its case (0x20).
    pub name: &'a Name,
    /// The same name in lower case, for matching.
    pub lower: &'a LowerName,
    /// The type asked for.
    pub qtype: RecordType,
    /// Whether it came over TCP (ANY gets the full answer there; RFC 8482).
    pub tcp: bool,
    /// Hash of the client's address or ECS subnet, for `hash` ordering.
    pub client: u64,
    /// The ECS source prefix length the client sent, if any.
    pub ecs_source_prefix: Option<u8>,
    /// This query's random source.
    pub rng: &'a mut SmallRng,
}

/// A zone's answer. Records are in the order they must be sent: a cut to
/// fit a UDP payload keeps a prefix of each section.
#[derive(Debug, Default)]
pub struct Answer {
    /// NOERROR, NXDOMAIN, REFUSED, ...
    pub rcode: ResponseCode,
    /// AA: set for every answer from a zone we serve.
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA of negative answers, NS of referrals).
    pub authority: Vec<Record>,
    /// The additional section (addresses of SRV targets and name servers).
    pub additional: Vec<Record>,
    /// ECS scope prefix to return: the answer depended on the client subnet.
    pub ecs_scope: Option<u8>,
    /// An Extended DNS Error (RFC 8914) to attach: info code and text.
    pub ede: Option<(u16, String)>,
    /// A service's instances, kept as the projection's ready-made data
    /// rather than as records. They come before `answers` (SRV, or A/AAAA
    /// records) and, for SRV, before `additional` (each target's address).
    /// The UDP writer writes them straight from that data; every other
    /// reader calls [`Answer::materialize`] first.
    pub service: Option<ServiceAnswer>,
}

/// Instances an answer holds without allocating: a service of up to this
/// many instances is answered with no allocation for its order.
pub const INLINE: usize = 16;

/// The instances of one service that answer a question, in answer order.
#[derive(Debug)]
pub struct ServiceAnswer {
    /// The service's records (kept alive by this answer).
    pub records: Arc<ServiceRecords>,
    /// Positions in `records.instances`, in the order to send.
    pub order: SmallVec<[u32; INLINE]>,
    /// SRV records (addresses in Additional), or A/AAAA records at the
    /// question's name.
    pub srv: bool,
    /// TTL of the answer RRset (RFC 2181 §5.2: one for all of it).
    pub ttl: u32,
}

impl ServiceAnswer {
    /// Appends the answer as records: SRV or A/AAAA at `qname` (the
    /// question's name as the client wrote it) to `answers`, and for SRV
    /// each target's address to `additional`.
    pub fn push_records(
        &self,
        qname: &Name,
        answers: &mut Vec<Record>,
        additional: &mut Vec<Record>,
    ) {
        for &n in &self.order {
            let instance = &self.records.instances[n as usize];
            if self.srv {
                let (srv, address) = srv_with_address(&self.records, instance);
                answers.push(Record::from_rdata(qname.clone(), self.ttl, RData::SRV(srv)));
                additional.push(address);
            } else {
                answers.push(address_record(qname.clone(), self.ttl, instance.address()));
            }
        }
    }
}

/// `instance`'s SRV data, and the address record of its target (for
/// Additional), for answers built as records.
pub fn srv_with_address(service: &ServiceRecords, instance: &InstanceRecords) -> (SRV, Record) {
    let target = service.target(instance);
    let srv = SRV::new(
        instance.priority,
        instance.weight,
        instance.port(),
        target.clone(),
    );
    let address = address_record(target, instance.ttl(), instance.address());
    (srv, address)
}

impl Answer {
    /// Whether the answer section is empty (NODATA when the name exists).
    pub fn no_answers(&self) -> bool {
        self.answers.is_empty() && self.service.as_ref().is_none_or(|s| s.order.is_empty())
    }

    /// Turns `service` into records at the front of their sections;
    /// `qname` is the question's name as the client wrote it.
    pub fn materialize(&mut self, qname: &Name) {
        let Some(service) = self.service.take() else {
            return;
        };
        let mut answers = Vec::with_capacity(service.order.len() + self.answers.len());
        let mut additional = Vec::new();
        service.push_records(qname, &mut answers, &mut additional);
        answers.append(&mut self.answers);
        self.answers = answers;
        additional.append(&mut self.additional);
        self.additional = additional;
    }

    /// REFUSED, for names outside every zone.
    pub fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            ..Self::default()
        }
    }
}
