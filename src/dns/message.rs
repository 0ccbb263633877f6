//! Writing a response in one pass, cut to the client's payload size as it
//! goes.
//!
//! The UDP path uses this instead of hickory's encoder: it writes straight
//! into the thread's buffer, compresses names through a small table of
//! suffix hashes that the thread reuses, and never encodes twice to find
//! what fits. The cutting rules: answers and authority are kept as a
//! prefix of their order (DESIGN §3) and a cut there sets TC; additional
//! records that do not fit are left out without TC (RFC 2181 §9); the OPT
//! record always has room (hickory's own encoder could drop it with the
//! records, and sets TC when only additional data was left out).
//!
//! Names are compressed (RFC 1035 §4.1.4) in owner names and in the RDATA
//! of the RFC 1035 types (NS, CNAME, PTR, MX, SOA); SRV targets are written
//! whole (RFC 2782) but later names may point into them. Matching is exact,
//! byte for byte, so an answer keeps the case of the question (0x20).

use std::net::IpAddr;

use hickory_proto::op::{Edns, MessageType, Metadata};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use smallvec::SmallVec;

use super::answer::{Answer, INLINE, ServiceAnswer};
use super::wire::{name_len, opt_len};

/// Where each SRV target of an answer was written (`None`: past where a
/// compression pointer reaches).
type Targets = SmallVec<[Option<u16>; INLINE]>;

/// A or AAAA, by the address's family.
fn address_type(address: &IpAddr) -> RecordType {
    match address {
        IpAddr::V4(_) => RecordType::A,
        IpAddr::V6(_) => RecordType::AAAA,
    }
}

/// An address record's RDLENGTH and RDATA.
fn write_address(out: &mut Vec<u8>, address: &IpAddr) {
    match address {
        IpAddr::V4(v4) => {
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// Size of the fixed DNS header.
pub(super) const HEADER_LEN: usize = 12;
/// Largest offset a compression pointer can hold.
const MAX_POINTER: usize = 0x3FFF;
/// Most labels a name can have (255 bytes of wire form).
const MAX_LABELS: usize = 128;
/// Names with at most this many labels are compressed; deeper ones (rare)
/// are written whole.
const FAST_LABELS: usize = 16;

/// A slot of the suffix table.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// The response the slot belongs to; other values mean empty.
    generation: u32,
    /// Offset of the suffix's first label.
    offset: u16,
    /// Hash of the suffix's labels (see [`suffix_hashes`]).
    hash: u64,
}

/// Slots in the suffix table (a power of two). A response of 64 KiB can
/// hold more suffixes; once the table is full, later names are simply
/// compressed less.
const SLOTS: usize = 1024;
/// Slots probed before giving up.
const PROBES: usize = 8;

/// Scratch space kept by a thread between responses: an open-addressing
/// table from name suffixes to where they are in the message. Slots of
/// earlier responses are told apart by a generation number, so nothing is
/// cleared between responses.
pub struct Encoder {
    /// The table.
    slots: Box<[Slot]>,
    /// The current response's generation.
    generation: u32,
    /// Slots filled in the current response, in order, for undoing.
    filled: Vec<u16>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            generation: 1,
            filled: Vec::with_capacity(SLOTS),
        }
    }
}

/// What the written response contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// TC was set: answer or authority records were cut.
    pub truncated: bool,
}

impl Encoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a response into `out` (cleared first): the header from
    /// `metadata`, the question section as received (`question`, holding
    /// `questions` entries, the first named `qname`), `answer`'s records
    /// cut to `limit` bytes, and the OPT record of `edns`.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        out: &mut Vec<u8>,
        metadata: &Metadata,
        question: &[u8],
        questions: u16,
        qname: Option<&Name>,
        answer: &Answer,
        edns: Option<&Edns>,
        limit: usize,
    ) -> Written {
        out.clear();
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.slots.fill(Slot::default());
            self.generation = 1;
        }
        self.filled.clear();
        out.extend_from_slice(&[0; HEADER_LEN]);
        out.extend_from_slice(question);
        // The question is copied as received. When it is a plain name (no
        // pointer), later names can point into it.
        let plain_question = qname.is_some_and(|q| question.len() == name_len(q) + 4);
        if let Some(qname) = qname.filter(|_| plain_question) {
            self.register(qname, HEADER_LEN);
        }

        let opt_len = edns.map_or(0, opt_len);
        let room = limit.saturating_sub(opt_len).min(usize::from(u16::MAX));
        let mut truncated = false;
        let mut counts = [0u16; 3];
        // Where each service answer's SRV target was written, for the
        // owner of its address record.
        let mut targets = Targets::new();
        'sections: for (section, records) in
            [&answer.answers, &answer.authority, &answer.additional]
                .into_iter()
                .enumerate()
        {
            if let Some(service) = answer.service.as_ref().filter(|_| section != 1) {
                let (wrote, all) = if section == 0 {
                    let wrote = self.service_answers(
                        out,
                        service,
                        qname,
                        plain_question,
                        room,
                        &mut targets,
                    );
                    (wrote, service.order.len())
                } else {
                    let wrote = self.service_addresses(out, service, &targets, room);
                    (wrote, targets.len())
                };
                counts[section] += wrote;
                if usize::from(wrote) < all {
                    truncated = section < 2;
                    break 'sections;
                }
            }
            for record in records {
                if !self.record(out, record, room) {
                    // A cut answer or authority section sets TC and ends
                    // the message; a cut additional section just ends it.
                    truncated = section < 2;
                    break 'sections;
                }
                counts[section] += 1;
            }
        }
        let mut additional = counts[2];
        if let Some(edns) = edns {
            write_opt(out, edns, metadata);
            additional += 1;
        }
        let mut flags = *metadata;
        flags.truncation |= truncated;
        write_header(out, &flags, questions, counts[0], counts[1], additional);
        Written { truncated }
    }

    /// Writes `service`'s answer records (SRV or A/AAAA) at `qname` while
    /// they fit in `room`; returns how many. A `plain_question` (copied as
    /// a name without pointers) is pointed at. Notes in `targets` where
    /// each SRV target went.
    fn service_answers(
        &mut self,
        out: &mut Vec<u8>,
        service: &ServiceAnswer,
        qname: Option<&Name>,
        plain_question: bool,
        room: usize,
        targets: &mut Targets,
    ) -> u16 {
        let mut wrote = 0;
        for &n in &service.order {
            let instance = &service.records.instances[n as usize];
            let start = out.len();
            let known = self.filled.len();
            match qname {
                // The question's name, as asked: a pointer to it.
                Some(_) if plain_question => {
                    out.extend_from_slice(&(0xC000 | HEADER_LEN as u16).to_be_bytes())
                }
                Some(qname) => self.name(out, qname, true),
                None => out.push(0),
            }
            let rtype = if service.srv {
                RecordType::SRV
            } else {
                address_type(&instance.address())
            };
            out.extend_from_slice(&u16::from(rtype).to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes()); // IN
            out.extend_from_slice(&service.ttl.to_be_bytes());
            let target_at;
            if service.srv {
                let len = 6 + service.records.target_len(instance);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                out.extend_from_slice(&instance.priority.to_be_bytes());
                out.extend_from_slice(&instance.weight.to_be_bytes());
                out.extend_from_slice(&instance.port().to_be_bytes());
                target_at = out.len();
                // RFC 2782: the target is not compressed.
                service.records.write_target(instance, out);
            } else {
                target_at = usize::MAX;
                write_address(out, &instance.address());
            }
            if out.len() > room {
                self.undo(out, start, known);
                return wrote;
            }
            if service.srv {
                targets.push(
                    u16::try_from(target_at)
                        .ok()
                        .filter(|&t| usize::from(t) <= MAX_POINTER),
                );
            }
            wrote += 1;
        }
        wrote
    }

    /// Writes the address record of each SRV target in `targets` order
    /// (owner: a pointer to the target) while they fit; returns how many.
    fn service_addresses(
        &mut self,
        out: &mut Vec<u8>,
        service: &ServiceAnswer,
        targets: &[Option<u16>],
        room: usize,
    ) -> u16 {
        let mut wrote = 0;
        for (&n, &target) in service.order.iter().zip(targets) {
            let instance = &service.records.instances[n as usize];
            let start = out.len();
            match target {
                Some(at) => out.extend_from_slice(&(0xC000 | at).to_be_bytes()),
                None => service.records.write_target(instance, out),
            }
            let address = instance.address();
            out.extend_from_slice(&u16::from(address_type(&address)).to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes()); // IN
            out.extend_from_slice(&instance.ttl().to_be_bytes());
            write_address(out, &address);
            if out.len() > room {
                out.truncate(start);
                return wrote;
            }
            wrote += 1;
        }
        wrote
    }

    /// Takes back a record cut short: the bytes from `start` and the
    /// suffixes noted since `known`.
    fn undo(&mut self, out: &mut Vec<u8>, start: usize, known: usize) {
        out.truncate(start);
        for &slot in &self.filled[known..] {
            self.slots[usize::from(slot)].generation = 0;
        }
        self.filled.truncate(known);
    }

    /// Appends `record` if the message stays within `room` bytes; returns
    /// false, with nothing appended, when it would not.
    fn record(&mut self, out: &mut Vec<u8>, record: &Record, room: usize) -> bool {
        let start = out.len();
        let known = self.filled.len();
        self.name(out, &record.name, true);
        out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
        out.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
        out.extend_from_slice(&record.ttl.to_be_bytes());
        let length_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let written = self.rdata(out, &record.data);
        let rdata_len = out.len() - length_at - 2;
        match (written, u16::try_from(rdata_len)) {
            (true, Ok(len)) if out.len() <= room => {
                out[length_at..length_at + 2].copy_from_slice(&len.to_be_bytes());
                true
            }
            _ => {
                self.undo(out, start, known);
                false
            }
        }
    }

    /// Appends the RDATA of `data`; false if it cannot be encoded.
    fn rdata(&mut self, out: &mut Vec<u8>, data: &RData) -> bool {
        match data {
            RData::A(a) => out.extend_from_slice(&a.0.octets()),
            RData::AAAA(aaaa) => out.extend_from_slice(&aaaa.0.octets()),
            RData::SRV(srv) => {
                out.extend_from_slice(&srv.priority.to_be_bytes());
                out.extend_from_slice(&srv.weight.to_be_bytes());
                out.extend_from_slice(&srv.port.to_be_bytes());
                self.name(out, &srv.target, false);
            }
            RData::TXT(txt) => {
                for string in txt.txt_data.iter() {
                    let Ok(len) = u8::try_from(string.len()) else {
                        return false;
                    };
                    out.push(len);
                    out.extend_from_slice(string);
                }
            }
            RData::PTR(ptr) => self.name(out, &ptr.0, true),
            RData::NS(ns) => self.name(out, &ns.0, true),
            RData::CNAME(cname) => self.name(out, &cname.0, true),
            RData::MX(mx) => {
                out.extend_from_slice(&mx.preference.to_be_bytes());
                self.name(out, &mx.exchange, true);
            }
            RData::SOA(soa) => {
                self.name(out, &soa.mname, true);
                self.name(out, &soa.rname, true);
                for value in [
                    soa.serial,
                    soa.refresh as u32,
                    soa.retry as u32,
                    soa.expire as u32,
                    soa.minimum,
                ] {
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
            other => {
                // Any other type, from a zone file: hickory writes it, in
                // place, compressing nothing outside its own RDATA.
                let at = u32::try_from(out.len()).unwrap_or(u32::MAX);
                let mut encoder = BinEncoder::with_offset(out, at);
                return other.emit(&mut encoder).is_ok();
            }
        }
        true
    }

    /// Appends `name`, ending in a pointer to an earlier copy of its longest
    /// suffix found when `compress`, and records its new suffixes.
    fn name(&mut self, out: &mut Vec<u8>, name: &Name, compress: bool) {
        let mut labels: [&[u8]; FAST_LABELS] = [&[]; FAST_LABELS];
        let Some(n) = labels_of(name, &mut labels) else {
            // A name this deep is written whole and never pointed to.
            for label in name.iter() {
                out.push(label.len() as u8);
                out.extend_from_slice(label);
            }
            out.push(0);
            return;
        };
        let labels = &labels[..n];
        let mut hashes = [0u64; FAST_LABELS + 1];
        suffix_hashes(labels, &mut hashes);

        let mut pointer = None;
        if compress {
            pointer = (0..n).find_map(|i| {
                self.find(out, &labels[i..], hashes[i])
                    .map(|offset| (i, offset))
            });
        }
        let written = pointer.map_or(n, |(i, _)| i);
        for (i, label) in labels[..written].iter().enumerate() {
            self.insert(out.len(), hashes[i]);
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        match pointer {
            Some((_, offset)) => out.extend_from_slice(&(0xC000 | offset).to_be_bytes()),
            None => out.push(0),
        }
    }

    /// Records the suffixes of `name`, written without pointers at `offset`.
    fn register(&mut self, name: &Name, mut offset: usize) {
        let mut labels: [&[u8]; FAST_LABELS] = [&[]; FAST_LABELS];
        let Some(n) = labels_of(name, &mut labels) else {
            return;
        };
        let labels = &labels[..n];
        let mut hashes = [0u64; FAST_LABELS + 1];
        suffix_hashes(labels, &mut hashes);
        for (i, label) in labels.iter().enumerate() {
            self.insert(offset, hashes[i]);
            offset += 1 + label.len();
        }
    }

    /// Notes that a suffix with `hash` starts at `offset`, unless the
    /// table has no room near its slot. The caller writes only suffixes
    /// not found, so the first copy of each is the one kept.
    fn insert(&mut self, offset: usize, hash: u64) {
        let Ok(offset) = u16::try_from(offset) else {
            return;
        };
        if usize::from(offset) > MAX_POINTER {
            return;
        }
        let mut at = hash as usize & (SLOTS - 1);
        for _ in 0..PROBES {
            let slot = &mut self.slots[at];
            if slot.generation != self.generation {
                *slot = Slot {
                    generation: self.generation,
                    offset,
                    hash,
                };
                self.filled.push(at as u16);
                return;
            }
            at = (at + 1) & (SLOTS - 1);
        }
    }

    /// The offset of an earlier copy of exactly `labels` (to the root).
    fn find(&self, out: &[u8], labels: &[&[u8]], hash: u64) -> Option<u16> {
        let mut at = hash as usize & (SLOTS - 1);
        for _ in 0..PROBES {
            let slot = &self.slots[at];
            if slot.generation != self.generation {
                return None;
            }
            if slot.hash == hash && same_name(out, usize::from(slot.offset), labels) {
                return Some(slot.offset);
            }
            at = (at + 1) & (SLOTS - 1);
        }
        None
    }
}

/// Puts the labels of `name` into `labels` and returns how many, or None
/// when it has more than [`FAST_LABELS`].
fn labels_of<'n>(name: &'n Name, labels: &mut [&'n [u8]; FAST_LABELS]) -> Option<usize> {
    let mut n = 0;
    for label in name.iter() {
        *labels.get_mut(n)? = label;
        n += 1;
    }
    Some(n)
}

/// Fills `hashes[i]` with a hash of `labels[i..]`; `hashes[labels.len()]`
/// is the root's.
fn suffix_hashes(labels: &[&[u8]], hashes: &mut [u64]) {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    hashes[labels.len()] = h;
    for (i, label) in labels.iter().enumerate().rev() {
        h = (h ^ label.len() as u64).wrapping_mul(0x100_0000_01B3);
        for &b in label.iter() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        h = h.rotate_left(29);
        hashes[i] = h;
    }
}

/// Whether the name at `offset` in `out` (following pointers) is exactly
/// `labels` followed by the root.
fn same_name(out: &[u8], mut offset: usize, labels: &[&[u8]]) -> bool {
    let mut labels = labels.iter();
    // A message holds fewer pointers than this; the bound guards a loop.
    for _ in 0..MAX_LABELS * 2 {
        let Some(&len) = out.get(offset) else {
            return false;
        };
        if len & 0xC0 == 0xC0 {
            let Some(&low) = out.get(offset + 1) else {
                return false;
            };
            offset = usize::from(len & 0x3F) << 8 | usize::from(low);
            continue;
        }
        let len = usize::from(len);
        match labels.next() {
            None => return len == 0,
            Some(label) => {
                if label.len() != len || out.get(offset + 1..offset + 1 + len) != Some(label) {
                    return false;
                }
                offset += 1 + len;
            }
        }
    }
    false
}

/// Appends the OPT record: `edns` with the upper bits of the response code.
fn write_opt(out: &mut Vec<u8>, edns: &Edns, metadata: &Metadata) {
    if edns.options().as_ref().is_empty() {
        out.push(0);
        out.extend_from_slice(&41u16.to_be_bytes());
        out.extend_from_slice(&edns.max_payload().to_be_bytes());
        let ttl = u32::from(metadata.response_code.high()) << 24
            | u32::from(edns.version()) << 16
            | u32::from(u16::from(*edns.flags()));
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        return;
    }
    let mut edns = edns.clone();
    edns.set_rcode_high(metadata.response_code.high());
    let at = u32::try_from(out.len()).unwrap_or(u32::MAX);
    let mut encoder = BinEncoder::with_offset(out, at);
    if edns.emit(&mut encoder).is_err() {
        tracing::debug!("could not encode the OPT record");
    }
}

/// Fills in the 12-byte header at the start of `out`.
fn write_header(
    out: &mut [u8],
    m: &Metadata,
    questions: u16,
    answers: u16,
    authority: u16,
    additional: u16,
) {
    let mut flags = 0u16;
    if m.message_type == MessageType::Response {
        flags |= 0x8000;
    }
    flags |= u16::from(u8::from(m.op_code) & 0x0F) << 11;
    for (set, bit) in [
        (m.authoritative, 0x0400),
        (m.truncation, 0x0200),
        (m.recursion_desired, 0x0100),
        (m.recursion_available, 0x0080),
        (m.authentic_data, 0x0020),
        (m.checking_disabled, 0x0010),
    ] {
        if set {
            flags |= bit;
        }
    }
    flags |= u16::from(m.response_code.low());
    let words = [m.id, flags, questions, answers, authority, additional];
    for (i, word) in words.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&word.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::tests::{question, srv_answer};
    use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{RecordType, rdata};
    use hickory_proto::serialize::binary::BinDecodable;

    fn metadata() -> Metadata {
        let mut m = Metadata::new(0x1234, MessageType::Response, OpCode::Query);
        m.authoritative = true;
        m.recursion_desired = true;
        m
    }

    fn write(
        answer: &Answer,
        owner: &Name,
        edns: Option<&Edns>,
        limit: usize,
    ) -> (Vec<u8>, Written) {
        let mut out = Vec::new();
        let written = Encoder::new().write(
            &mut out,
            &metadata(),
            &question(owner),
            1,
            Some(owner),
            answer,
            edns,
            limit,
        );
        (out, written)
    }

    #[test]
    fn a_response_decodes_to_what_was_written() {
        let owner = Name::from_ascii("_Web._tcp.Service.internal.").unwrap();
        let mut answer = srv_answer(&owner, 3);
        answer.answers.push(Record::from_rdata(
            owner.clone(),
            7,
            RData::TXT(TXT::new(vec!["a=1".into(), "b=2".into()])),
        ));
        let soa = rdata::SOA::new(
            Name::from_ascii("ns.internal.").unwrap(),
            Name::from_ascii("hostmaster.internal.").unwrap(),
            42,
            1,
            2,
            3,
            5,
        );
        answer.authority.push(Record::from_rdata(
            Name::from_ascii("internal.").unwrap(),
            5,
            RData::SOA(soa),
        ));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.set_dnssec_ok(true);
        let (out, written) = write(&answer, &owner, Some(&edns), 1232);
        assert!(!written.truncated);
        let message = Message::from_bytes(&out).unwrap();
        assert_eq!(message.id, 0x1234);
        assert!(message.authoritative && message.recursion_desired && !message.truncation);
        assert_eq!(
            message.queries[0].name().to_string(),
            "_Web._tcp.Service.internal."
        );
        assert_eq!(message.answers, answer.answers);
        assert_eq!(message.authorities, answer.authority);
        assert_eq!(message.additionals, answer.additional);
        let got = message.edns.as_ref().unwrap();
        assert_eq!(got.max_payload(), 1232);
        assert!(got.flags().dnssec_ok);
        // Owner names point at the question: every SRV owner is 2 bytes.
        assert!(out.windows(2).filter(|w| *w == [0xC0, 0x0C]).count() >= 4);
    }

    #[test]
    fn it_is_no_longer_than_hickorys_encoding() {
        let owner = Name::from_ascii("web.service.internal.").unwrap();
        let answer = srv_answer(&owner, 10);
        let (out, _) = write(&answer, &owner, None, 65535);
        let mut m = Message::query();
        m.add_query(Query::query(owner.clone(), RecordType::SRV));
        m.add_answers(answer.answers.clone());
        m.add_additionals(answer.additional.clone());
        assert!(out.len() <= m.to_vec().unwrap().len(), "{}", out.len());
    }

    /// A service answer for `n` instances of "web" (every third on IPv6),
    /// in position order.
    fn service_answer(n: usize, srv: bool) -> Answer {
        use crate::projection::{Projection, ProjectionConfig};
        use crate::registry::ServiceState;
        use crate::registry::model::{InstanceId, InstanceSpec, ServiceName};
        use std::sync::Arc;

        let projection = Projection::new(ProjectionConfig {
            domain: Name::from_ascii("internal.").unwrap(),
            cluster: "dc1".into(),
        });
        let mut instances: Vec<_> = (0..n)
            .map(|i| {
                let address = if i % 3 == 2 {
                    format!("2001:db8::{i:x}")
                } else {
                    format!("10.0.{}.{}", i / 250, i % 250)
                };
                let mut spec = InstanceSpec::new(address.parse().unwrap(), 8000 + i as u16);
                spec.weight = 1 + i as u16;
                let id = InstanceId::parse(&format!("i{i:03}")).unwrap();
                Arc::new(spec.into_instance(id, 1, 1))
            })
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let state = ServiceState {
            name: ServiceName::parse("web").unwrap(),
            settings: None,
            instances,
        };
        projection.rebuild(&[state.view()], 1);
        let snapshot = projection.load_full();
        let records = snapshot.local().service_arc("web").unwrap().clone();
        let order = (0..records.instances.len() as u32).rev().collect();
        Answer {
            service: Some(ServiceAnswer {
                records,
                order,
                srv,
                ttl: 7,
            }),
            ..Answer::default()
        }
    }

    #[test]
    fn service_answers_decode_to_their_records() {
        let owner = Name::from_ascii("_Web._tcp.Service.internal.").unwrap();
        for srv in [true, false] {
            let answer = service_answer(12, srv);
            let (out, written) = write(&answer, &owner, None, 65535);
            assert!(!written.truncated);
            let mut records = service_answer(12, srv);
            records.materialize(&owner);
            let m = Message::from_bytes(&out).unwrap();
            assert_eq!(m.answers, records.answers, "srv {srv}");
            assert_eq!(m.additionals, records.additional, "srv {srv}");
            // Never longer than the same records through the general path.
            let (general, _) = write(&records, &owner, None, 65535);
            assert!(
                out.len() <= general.len(),
                "{} > {}",
                out.len(),
                general.len()
            );
        }
    }

    #[test]
    fn service_answers_are_cut_by_the_same_rules() {
        let owner = Name::from_ascii("web.service.internal.").unwrap();
        // Additional data goes first, without TC.
        let (out, written) = write(&service_answer(8, true), &owner, None, 512);
        let m = Message::from_bytes(&out).unwrap();
        assert!(!written.truncated && !m.truncation && out.len() <= 512);
        assert_eq!(m.answers.len(), 8);
        assert!(m.additionals.len() < 8);

        // Answers are cut as a prefix, with TC; OPT keeps its room.
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let (out, written) = write(&service_answer(100, true), &owner, Some(&edns), 1232);
        assert!(written.truncated && out.len() <= 1232, "{}", out.len());
        let m = Message::from_bytes(&out).unwrap();
        assert!(m.truncation && m.additionals.is_empty() && m.edns.is_some());
        let mut all = service_answer(100, true);
        all.materialize(&owner);
        let kept = m.answers.len();
        assert!(kept > 10 && kept < 100, "{kept}");
        assert_eq!(m.answers[..], all.answers[..kept]);
    }

    #[test]
    fn cuts_follow_the_fit_rules() {
        let owner = Name::from_ascii("web.service.internal.").unwrap();
        // Additional data is dropped first, without TC.
        let answer = srv_answer(&owner, 8);
        let (out, written) = write(&answer, &owner, None, 512);
        assert!(!written.truncated && out.len() <= 512);
        let m = Message::from_bytes(&out).unwrap();
        assert_eq!(m.answers.len(), 8);
        assert!(m.additionals.len() < 8);
        assert!(!m.truncation);

        // Answers are cut as a prefix, with TC, and OPT keeps its room.
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let answer = srv_answer(&owner, 100);
        let (out, written) = write(&answer, &owner, Some(&edns), 1232);
        assert!(written.truncated && out.len() <= 1232, "{}", out.len());
        let m = Message::from_bytes(&out).unwrap();
        assert!(m.truncation);
        let kept = m.answers.len();
        assert!(kept > 10 && kept < 100, "{kept}");
        assert_eq!(m.answers[..], answer.answers[..kept]);
        assert!(m.additionals.is_empty());
        assert!(m.edns.is_some());
    }

    #[test]
    fn extended_rcodes_go_in_the_opt_record() {
        let owner = Name::from_ascii("web.service.internal.").unwrap();
        let mut m = metadata();
        m.response_code = ResponseCode::BADVERS;
        let mut out = Vec::new();
        Encoder::new().write(
            &mut out,
            &m,
            &question(&owner),
            1,
            Some(&owner),
            &Answer::default(),
            Some(&Edns::new()),
            512,
        );
        let message = Message::from_bytes(&out).unwrap();
        // 16: hickory reads it back as BADSIG, which shares the number.
        assert_eq!(u16::from(message.response_code), 16);
        assert_eq!(out[3] & 0x0F, 0);
    }

    #[test]
    fn names_match_exactly_through_pointers() {
        let mut out = vec![0u8; HEADER_LEN];
        let mut encoder = Encoder::new();
        let a = Name::from_ascii("x.example.internal.").unwrap();
        let b = Name::from_ascii("y.example.internal.").unwrap();
        encoder.name(&mut out, &a, true);
        let before = out.len();
        encoder.name(&mut out, &b, true);
        // "y" then a pointer to "example.internal." inside the first name.
        assert_eq!(out.len() - before, 2 + 2);
        let c = Name::from_ascii("y.EXAMPLE.internal.").unwrap();
        let before = out.len();
        encoder.name(&mut out, &c, true);
        // Another case is another name here: only "internal." is shared.
        assert_eq!(out.len() - before, 2 + 8 + 2);
        let labels: Vec<&[u8]> = b.iter().collect();
        assert!(same_name(&out, before - 4, &labels));
    }
}
