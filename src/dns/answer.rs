//! What a zone hands back for one question, before it is put on the wire.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use rand::rngs::SmallRng;

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
}

impl Answer {
    /// REFUSED, for names outside every zone.
    pub fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            ..Self::default()
        }
    }
}
