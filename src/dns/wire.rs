//! Wire sizes of names and of the OPT record.

use hickory_proto::op::Edns;
use hickory_proto::rr::Name;

/// Wire length of `name` without compression.
pub fn name_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dns::answer::Answer;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{RData, Record, RecordType};
    use hickory_proto::serialize::binary::BinEncodable;

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
}
