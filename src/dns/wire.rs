//! Fitting a response into the client's payload size.
//!
//! hickory's encoder drops records that do not fit and sets TC, but it can
//! drop the OPT record with them and it also sets TC when only additional
//! data was left out. Here the response is cut first, so the encoder never
//! has to: OPT always has room, answers are cut as a prefix of their order
//! (DESIGN §3), and additional data is dropped without TC (RFC 2181 §9).

use hickory_proto::op::Edns;
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use super::answer::Answer;

/// Size of the fixed DNS header.
const HEADER_LEN: usize = 12;

/// What is left after fitting.
#[derive(Debug, PartialEq, Eq)]
pub enum Fit {
    /// Everything fits.
    Whole,
    /// Some additional records were left out (no TC).
    AdditionalCut,
    /// Answer or authority records were cut: set TC.
    Truncated,
}

/// Wire length of `name` without compression.
pub fn name_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

/// An upper bound of `record`'s encoded size (no compression assumed).
fn record_len(record: &Record) -> usize {
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + name_len(&srv.target),
        RData::NS(ns) => name_len(&ns.0),
        RData::CNAME(c) => name_len(&c.0),
        RData::PTR(p) => name_len(&p.0),
        RData::MX(mx) => 2 + name_len(&mx.exchange),
        RData::SOA(soa) => name_len(&soa.mname) + name_len(&soa.rname) + 20,
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        other => other.to_bytes().map_or(usize::MAX / 4, |b| b.len()),
    };
    name_len(&record.name) + 10 + rdata
}

/// Encoded size of the OPT record for `edns`.
pub fn opt_len(edns: &Edns) -> usize {
    11 + edns
        .options()
        .as_ref()
        .iter()
        .map(|(_, option)| 4 + usize::from(option.len()))
        .sum::<usize>()
}

/// Cuts `answer` so that a response with `question` (the question section
/// as received) and `edns` encodes within `limit` bytes.
pub fn fit(question: &[u8], answer: &mut Answer, edns: Option<&Edns>, limit: usize) -> Fit {
    let fixed = HEADER_LEN + question.len() + edns.map_or(0, opt_len);
    let bound: usize = [&answer.answers, &answer.authority, &answer.additional]
        .iter()
        .flat_map(|section| section.iter())
        .map(record_len)
        .sum();
    if fixed + bound <= limit {
        return Fit::Whole;
    }

    // Encode as hickory will (question bytes first, then compressed records)
    // and keep what fits in the room left after the OPT record.
    let room = limit
        .saturating_sub(edns.map_or(0, opt_len))
        .min(usize::from(u16::MAX));
    let mut buf = Vec::with_capacity(room);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(room as u16);
    let fits = |encoder: &mut BinEncoder<'_>, records: &[Record]| -> usize {
        match encoder.emit_all(records.iter()) {
            Ok(n) => n,
            Err(hickory_proto::ProtoError::NotAllRecordsWritten { count, .. }) => count,
            Err(_) => 0,
        }
    };
    if encoder.emit_vec(&[0; HEADER_LEN]).is_err() || encoder.emit_vec(question).is_err() {
        answer.answers.clear();
        answer.authority.clear();
        answer.additional.clear();
        return Fit::Truncated;
    }
    encoder.store_label_pointer(HEADER_LEN, HEADER_LEN + question.len());

    let n = fits(&mut encoder, &answer.answers);
    if n < answer.answers.len() {
        answer.answers.truncate(n);
        answer.authority.clear();
        answer.additional.clear();
        return Fit::Truncated;
    }
    let n = fits(&mut encoder, &answer.authority);
    if n < answer.authority.len() {
        answer.authority.truncate(n);
        answer.additional.clear();
        return Fit::Truncated;
    }
    let n = fits(&mut encoder, &answer.additional);
    if n < answer.additional.len() {
        answer.additional.truncate(n);
        return Fit::AdditionalCut;
    }
    Fit::Whole
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType;
    use hickory_proto::rr::rdata::{A, SRV};

    /// The question section for `name` SRV, as a client sends it.
    pub(crate) fn question(name: &Name) -> Vec<u8> {
        Query::query(name.clone(), RecordType::SRV)
            .to_bytes()
            .unwrap()
    }

    /// `n` SRV records at `name`, each with its target's A in Additional.
    pub(crate) fn srv_answer(name: &Name, n: usize) -> Answer {
        let mut answer = Answer::default();
        for i in 0..n {
            let target = Name::from_ascii(format!("instance-{i}.web.instance.internal.")).unwrap();
            let srv = SRV::new(10, 100, 8080, target.clone());
            answer
                .answers
                .push(Record::from_rdata(name.clone(), 5, RData::SRV(srv)));
            let a = RData::A(A::new(10, 0, (i / 256) as u8, (i % 256) as u8));
            answer.additional.push(Record::from_rdata(target, 5, a));
        }
        answer
    }

    /// Encodes like the server does and returns the size.
    fn encoded_len(q: &Name, answer: &Answer, edns: Option<&Edns>) -> usize {
        let mut m = Message::query();
        m.add_query(Query::query(q.clone(), RecordType::SRV));
        m.add_answers(answer.answers.clone());
        m.add_additionals(answer.additional.clone());
        if let Some(e) = edns {
            m.set_edns(e.clone());
        }
        m.to_vec().unwrap().len()
    }

    #[test]
    fn small_answers_are_untouched() {
        let name = Name::from_ascii("web.service.internal.").unwrap();
        let mut answer = srv_answer(&name, 3);
        assert_eq!(fit(&question(&name), &mut answer, None, 512), Fit::Whole);
        assert_eq!(answer.answers.len(), 3);
    }

    #[test]
    fn additional_goes_before_answers_and_without_tc() {
        let name = Name::from_ascii("web.service.internal.").unwrap();
        let mut answer = srv_answer(&name, 8);
        assert_eq!(
            fit(&question(&name), &mut answer, None, 512),
            Fit::AdditionalCut
        );
        assert_eq!(answer.answers.len(), 8);
        assert!(answer.additional.len() < 8);
        assert!(encoded_len(&name, &answer, None) <= 512);
    }

    #[test]
    fn answers_are_cut_as_a_prefix_and_opt_keeps_its_room() {
        let name = Name::from_ascii("web.service.internal.").unwrap();
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        let full = srv_answer(&name, 100);
        let mut answer = srv_answer(&name, 100);
        assert_eq!(
            fit(&question(&name), &mut answer, Some(&edns), 1232),
            Fit::Truncated
        );
        let kept = answer.answers.len();
        assert!(kept > 10 && kept < 100, "{kept}");
        assert_eq!(answer.answers[..], full.answers[..kept]);
        assert!(answer.additional.is_empty());
        assert!(encoded_len(&name, &answer, Some(&edns)) <= 1232);
    }
}
