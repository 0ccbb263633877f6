//! DNS over real UDP and TCP sockets against the real binary: the rows of
//! DESIGN §2 and the wire rules (RFC 1034/1035, 2782, 2308, 6891, 8482, 7871).

mod support;

use std::time::Duration;

use hickory_proto::op::{Edns, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use serde_json::json;
use support::{DnsQuery, Server, addresses, instance, srv_targets, udp_raw};

/// web: two IPv4 instances in dc1 (one tagged v2 with meta), one IPv6 in dc2.
fn web(server: &Server) {
    let mut one = instance("10.0.0.5", 8080);
    one["weight"] = json!(50);
    one["tags"] = json!(["v2"]);
    one["meta"] = json!({ "version": "1.4", "team": "edge" });
    assert_eq!(server.register("web", "web-1", one).0, 200);
    assert_eq!(
        server
            .register("web", "web-2", instance("10.0.0.6", 8080))
            .0,
        200
    );
    let mut three = instance("2001:db8::7", 8443);
    three["cluster"] = json!("dc2");
    assert_eq!(server.register("web", "web-3", three).0, 200);
}

#[test]
fn a_registration_is_served_as_soon_as_it_is_acknowledged() {
    let server = Server::start(&[]);
    for n in 1..=20u8 {
        let (status, _) = server.register(
            "fresh",
            &format!("i{n}"),
            instance(&format!("10.9.0.{n}"), 80),
        );
        assert_eq!(status, 200);
        // No sleep: the answer must already include it.
        let reply = server.query("fresh.service.internal.", RecordType::A);
        assert_eq!(reply.answers.len(), n as usize, "after registration {n}");
        assert!(addresses(&reply.answers).contains(&format!("10.9.0.{n}")));
    }
    assert_eq!(
        server
            .call("DELETE", "/v1/services/fresh/instances/i1", None)
            .0,
        200
    );
    let reply = server.query("fresh.service.internal.", RecordType::A);
    assert!(!addresses(&reply.answers).contains(&"10.9.0.1".to_string()));
}

#[test]
fn srv_in_both_forms_with_target_addresses_in_additional() {
    let server = Server::start(&[]);
    web(&server);
    for name in [
        "_web._tcp.service.internal.",
        "web.service.internal.",
        "_web._udp.service.internal.",
    ] {
        let reply = server.query(name, RecordType::SRV);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(reply.metadata.authoritative, "{name}");
        let mut targets = srv_targets(&reply.answers);
        targets.sort();
        assert_eq!(
            targets,
            [
                "web-1.web.instance.internal.",
                "web-2.web.instance.internal."
            ],
            "{name}"
        );
        // Additional holds each target's address, in the answer's order.
        let order: Vec<String> = reply
            .additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .map(|r| r.name.to_string())
            .collect();
        assert_eq!(order, srv_targets(&reply.answers), "{name}");
        for r in &reply.answers {
            let RData::SRV(srv) = &r.data else {
                panic!("SRV expected")
            };
            assert_eq!(srv.port, 8080);
            let expected = if srv.target.to_string().starts_with("web-1") {
                50
            } else {
                100
            };
            assert_eq!((srv.priority, srv.weight), (10, expected));
        }
    }
    // The other cluster, named explicitly; its targets carry the cluster.
    let reply = server.query("_web._tcp.service.dc2.internal.", RecordType::SRV);
    assert_eq!(
        srv_targets(&reply.answers),
        ["web-3.web.instance.dc2.internal."]
    );
    assert_eq!(addresses(&reply.additionals), ["2001:db8::7"]);
}

#[test]
fn tag_and_cluster_filters() {
    let server = Server::start(&[]);
    web(&server);
    assert_eq!(
        addresses(
            &server
                .query("v2.web.service.internal.", RecordType::A)
                .answers
        ),
        ["10.0.0.5"]
    );
    let srv = server.query("_web._v2.service.internal.", RecordType::SRV);
    assert_eq!(srv_targets(&srv.answers), ["web-1.web.instance.internal."]);
    assert_eq!(
        addresses(
            &server
                .query("web.service.dc2.internal.", RecordType::AAAA)
                .answers
        ),
        ["2001:db8::7"]
    );
    // dc1 (named explicitly) is the local cluster.
    assert_eq!(
        server
            .query("web.service.dc1.internal.", RecordType::A)
            .answers
            .len(),
        2
    );
    // A/AAAA answer only the matching family: dc1 has no IPv6 instance.
    let nodata = server.query("web.service.internal.", RecordType::AAAA);
    assert_eq!(
        (nodata.metadata.response_code, nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );
    // An unknown tag or cluster does not exist.
    for name in [
        "v9.web.service.internal.",
        "_web._v9.service.internal.",
        "web.service.dc9.internal.",
    ] {
        assert_eq!(
            server.query(name, RecordType::A).metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
    }
}

#[test]
fn instance_names_answer_address_and_meta() {
    let server = Server::start(&[]);
    web(&server);
    let a = server.query("web-1.web.instance.internal.", RecordType::A);
    assert_eq!(addresses(&a.answers), ["10.0.0.5"]);
    let txt = server.query("web-1.web.instance.internal.", RecordType::TXT);
    let RData::TXT(t) = &txt.answers[0].data else {
        panic!("TXT expected")
    };
    let strings: Vec<String> = t
        .txt_data
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(strings, ["team=edge", "version=1.4"]);
    let aaaa = server.query("web-3.web.instance.dc2.internal.", RecordType::AAAA);
    assert_eq!(addresses(&aaaa.answers), ["2001:db8::7"]);
    // An instance without meta has one empty TXT string (RFC 6763 §6.1).
    let empty = server.query("web-2.web.instance.internal.", RecordType::TXT);
    let RData::TXT(t) = &empty.answers[0].data else {
        panic!("TXT expected")
    };
    assert_eq!(t.txt_data.len(), 1);
    assert!(t.txt_data[0].is_empty());
    // Wrong family, wrong cluster, no such id.
    assert_eq!(
        server
            .query("web-1.web.instance.internal.", RecordType::AAAA)
            .answers
            .len(),
        0
    );
    let wrong_cluster = server.query("web-1.web.instance.dc2.internal.", RecordType::A);
    assert_eq!(wrong_cluster.metadata.response_code, ResponseCode::NXDomain);
    let missing = server.query("web-9.web.instance.internal.", RecordType::A);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn only_up_instances_are_served() {
    let server = Server::start(&[]);
    web(&server);
    for status in ["OUT_OF_SERVICE", "STARTING"] {
        let mut drained = instance("10.0.0.6", 8080);
        drained["status"] = json!(status);
        assert_eq!(server.register("web", "web-2", drained).0, 200);
        let reply = server.query("web.service.internal.", RecordType::A);
        assert_eq!(addresses(&reply.answers), ["10.0.0.5"], "{status}");
        assert_eq!(
            srv_targets(
                &server
                    .query("web.service.internal.", RecordType::SRV)
                    .answers
            )
            .len(),
            1
        );
        // Its own name still exists, with nothing to serve.
        let own = server.query("web-2.web.instance.internal.", RecordType::A);
        assert_eq!(
            (own.metadata.response_code, own.answers.len()),
            (ResponseCode::NoError, 0),
            "{status}"
        );
    }
}

#[test]
fn apex_answers_soa_and_ns_with_glue() {
    let server = Server::start(&[]);
    let soa = server.query("internal.", RecordType::SOA);
    assert!(soa.metadata.authoritative);
    let RData::SOA(s) = &soa.answers[0].data else {
        panic!("SOA expected")
    };
    assert_eq!(s.mname.to_string(), "ns.internal.");
    assert_eq!(s.minimum, 5);
    let serial_before = s.serial;
    server.register("web", "web-1", instance("10.0.0.5", 80));
    let RData::SOA(after) = &server.query("internal.", RecordType::SOA).answers[0].data else {
        panic!()
    };
    assert!(
        after.serial > serial_before,
        "the serial follows the registry index"
    );

    let ns = server.query("internal.", RecordType::NS);
    let RData::NS(target) = &ns.answers[0].data else {
        panic!("NS expected")
    };
    assert_eq!(target.0.to_string(), "ns.internal.");
    assert_eq!(addresses(&ns.additionals), ["127.0.0.1"]);
    assert_eq!(
        addresses(&server.query("ns.internal.", RecordType::A).answers),
        ["127.0.0.1"]
    );
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_in_authority() {
    let server = Server::start(&[]);
    web(&server);
    let cases = [
        (
            "nope.service.internal.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "deep.web-1.web.instance.internal.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("x.y.internal.", RecordType::A, ResponseCode::NXDomain),
        (
            "web.service.internal.",
            RecordType::MX,
            ResponseCode::NoError,
        ),
        (
            "_web._tcp.service.internal.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        // Empty non-terminals above real names exist (RFC 8020, RFC 9156).
        ("service.internal.", RecordType::A, ResponseCode::NoError),
        (
            "_tcp.service.internal.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        (
            "_v2.service.internal.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        (
            "web.instance.internal.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        ("dc2.internal.", RecordType::A, ResponseCode::NoError),
        (
            "instance.dc2.internal.",
            RecordType::A,
            ResponseCode::NoError,
        ),
        ("internal.", RecordType::A, ResponseCode::NoError),
    ];
    for (name, qtype, rcode) in cases {
        let reply = server.query(name, qtype);
        assert_eq!(reply.metadata.response_code, rcode, "{name} {qtype}");
        assert!(reply.metadata.authoritative, "{name}");
        assert_eq!(reply.answers.len(), 0, "{name}");
        assert_eq!(reply.authorities.len(), 1, "{name}");
        let soa = &reply.authorities[0];
        assert_eq!(
            (soa.record_type(), soa.name.to_string(), soa.ttl),
            (RecordType::SOA, "internal.".into(), 5)
        );
    }
}

#[test]
fn names_outside_our_zones_are_refused() {
    let server = Server::start(&[]);
    for name in ["example.com.", ".", "internal.example.", "nternal."] {
        let reply = server.query(name, RecordType::A);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(
            !reply.metadata.authoritative && !reply.metadata.recursion_available,
            "{name}"
        );
        assert!(reply.answers.is_empty() && reply.authorities.is_empty());
    }
}

#[test]
fn the_question_case_is_echoed() {
    let server = Server::start(&[]);
    web(&server);
    let name = "WeB.SeRvIcE.InTeRnAl.";
    let reply = server.query(name, RecordType::A);
    assert_eq!(reply.queries[0].name().to_string(), name);
    assert!(reply.answers.iter().all(|r| r.name.to_string() == name));
    let nx = server.query("NoPe.SERVICE.internal.", RecordType::A);
    assert_eq!(nx.queries[0].name().to_string(), "NoPe.SERVICE.internal.");
}

#[test]
fn edns_is_echoed_clamped_and_versioned() {
    let server = Server::start(&[]);
    // Clamped to 1232 from above and to 512 from below.
    for (offered, expected) in [(4096, 1232), (1232, 1232), (1000, 1000), (100, 512)] {
        let mut q = DnsQuery::new("internal.", RecordType::SOA);
        q.edns = Some(offered);
        let edns = q.udp(server.dns).edns.expect("OPT echoed");
        assert_eq!(
            (edns.max_payload(), edns.version()),
            (expected, 0),
            "offered {offered}"
        );
    }
    // No OPT in, no OPT out.
    assert!(
        DnsQuery::new("internal.", RecordType::SOA)
            .udp(server.dns)
            .edns
            .is_none()
    );
    // Version 1: BADVERS, with an OPT of version 0.
    let mut q = DnsQuery::new("internal.", RecordType::SOA);
    let mut edns = Edns::new();
    edns.set_version(1);
    q.message.set_edns(edns);
    let reply = q.udp(server.dns);
    // BADVERS is 16 (shared with BADSIG, which is how it decodes).
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert_eq!(reply.edns.expect("OPT with BADVERS").version(), 0);
    assert!(reply.answers.is_empty());
    // DO is copied; unknown options are ignored.
    let mut q = DnsQuery::new("internal.", RecordType::SOA);
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true);
    edns.options_mut()
        .insert(EdnsOption::Unknown(65001, vec![1, 2, 3]));
    q.message.set_edns(edns);
    let reply = q.udp(server.dns);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    let edns = reply.edns.unwrap();
    assert!(edns.flags().dnssec_ok);
    assert!(edns.option(EdnsCode::Unknown(65001)).is_none());
}

fn many(server: &Server, n: u8) {
    for i in 1..=n {
        let (status, _) = server.register(
            "big",
            &format!("i{i}"),
            instance(&format!("10.1.0.{i}"), 80),
        );
        assert_eq!(status, 200);
    }
}

#[test]
fn udp_truncates_by_answer_order_and_tcp_answers_in_full() {
    let server = Server::start(&[]);
    many(&server, 80);
    // Without EDNS: 512 bytes, TC, and the kept answers are whole records.
    let raw = udp_raw(
        server.dns,
        &DnsQuery::new("big.service.internal.", RecordType::A)
            .message
            .to_vec()
            .unwrap(),
    )
    .unwrap();
    assert!(raw.len() <= 512, "{} bytes", raw.len());
    let reply = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert!(reply.metadata.truncation);
    assert!(!reply.answers.is_empty() && reply.answers.len() < 80);
    // With EDNS: up to 1232 bytes, TC, and the OPT record is still there.
    let mut q = DnsQuery::new("big.service.internal.", RecordType::SRV);
    q.edns = Some(4096);
    let raw = udp_raw(server.dns, &{
        let mut m = q.message.clone();
        let mut e = Edns::new();
        e.set_max_payload(4096);
        m.set_edns(e);
        m.to_vec().unwrap()
    })
    .unwrap();
    assert!(raw.len() <= 1232, "{} bytes", raw.len());
    let reply = hickory_proto::op::Message::from_vec(&raw).unwrap();
    assert!(reply.metadata.truncation);
    assert!(reply.edns.is_some(), "OPT survives truncation");
    // TCP: everything, with every target's address.
    let mut q = DnsQuery::new("big.service.internal.", RecordType::SRV);
    q.edns = Some(1232);
    let full = q.tcp(server.dns);
    assert!(!full.metadata.truncation);
    assert_eq!(
        (full.answers.len(), addresses(&full.additionals).len()),
        (80, 80)
    );
}

#[test]
fn truncation_keeps_the_weighted_order() {
    // Weights 1000 for i1 and 1 for the rest: i1 comes first in nearly every
    // answer, so a cut that kept arrival order would lose it when it is last.
    let server = Server::start(&[]);
    for i in 1..=60u8 {
        let mut body = instance(&format!("10.2.0.{i}"), 80);
        body["weight"] = json!(if i == 60 { 65535 } else { 1 });
        server.register("cut", &format!("i{i:02}"), body);
    }
    let mut first_is_heavy = 0;
    for _ in 0..50 {
        let reply = DnsQuery::new("cut.service.internal.", RecordType::A).udp(server.dns);
        assert!(reply.metadata.truncation);
        if addresses(&reply.answers)[0] == "10.2.0.60" {
            first_is_heavy += 1;
        }
    }
    // P(heavy first) = 65535/(65535+59) ≈ 0.9991 per answer.
    assert!(first_is_heavy >= 45, "{first_is_heavy}/50");
}

#[test]
fn any_is_minimal_over_udp_and_full_over_tcp() {
    let server = Server::start(&[]);
    web(&server);
    let udp = server.query("web.service.internal.", RecordType::ANY);
    assert_eq!(udp.answers.len(), 1);
    let RData::HINFO(h) = &udp.answers[0].data else {
        panic!("HINFO expected (RFC 8482)")
    };
    assert_eq!(String::from_utf8_lossy(&h.cpu), "RFC8482");
    let mut q = DnsQuery::new("web.service.internal.", RecordType::ANY);
    q.edns = Some(1232);
    let tcp = q.tcp(server.dns);
    let types: std::collections::BTreeSet<RecordType> =
        tcp.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        types,
        [RecordType::A, RecordType::SRV].into_iter().collect()
    );
    assert_eq!(
        server
            .query("nope.service.internal.", RecordType::ANY)
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );
}

#[test]
fn ttls_follow_the_instance_and_an_rrset_has_one_ttl() {
    let server = Server::start(&[]);
    let mut short = instance("10.3.0.1", 80);
    short["ttl"] = json!("2s");
    let mut long = instance("10.3.0.2", 80);
    long["ttl"] = json!("30s");
    server.register("ttl", "short", short);
    server.register("ttl", "long", long);
    let reply = server.query("ttl.service.internal.", RecordType::A);
    assert!(
        reply.answers.iter().all(|r| r.ttl == 2),
        "RFC 2181 §5.2: the smallest"
    );
    assert_eq!(
        server
            .query("long.ttl.instance.internal.", RecordType::A)
            .answers[0]
            .ttl,
        30
    );
    server.register("ttl", "plain", instance("10.3.0.3", 80));
    assert_eq!(
        server
            .query("plain.ttl.instance.internal.", RecordType::A)
            .answers[0]
            .ttl,
        5,
        "default 5 s"
    );
}

#[test]
fn header_rules_opcode_count_class_and_transfers() {
    let server = Server::start(&[]);
    // Opcode STATUS: NOTIMP.
    let mut q = DnsQuery::new("internal.", RecordType::SOA);
    q.message.metadata.op_code = OpCode::Status;
    assert_eq!(
        q.udp(server.dns).metadata.response_code,
        ResponseCode::NotImp
    );
    // Two questions, or none: FORMERR.
    let mut q = DnsQuery::new("internal.", RecordType::SOA);
    q.message.add_query(hickory_proto::op::Query::query(
        "ns.internal.".parse().unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        q.udp(server.dns).metadata.response_code,
        ResponseCode::FormErr
    );
    let mut q = DnsQuery::new("internal.", RecordType::SOA);
    q.message.queries.clear();
    assert_eq!(
        q.udp(server.dns).metadata.response_code,
        ResponseCode::FormErr
    );
    // Class CH (version.bind and friends): REFUSED.
    let mut q = DnsQuery::new("version.bind.", RecordType::TXT);
    q.message.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        q.udp(server.dns).metadata.response_code,
        ResponseCode::Refused
    );
    // Zone transfers are not offered.
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let reply = DnsQuery::new("internal.", qtype).tcp(server.dns);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{qtype}"
        );
    }
    // RD is echoed, RA is never set, ID is kept.
    let reply = DnsQuery::new("internal.", RecordType::SOA).udp(server.dns);
    assert!(reply.metadata.recursion_desired && !reply.metadata.recursion_available);
    assert_eq!(reply.metadata.id, 0x5150);
}

#[test]
fn malformed_packets_get_formerr_or_silence_and_the_server_lives() {
    let server = Server::start(&[]);
    let good = DnsQuery::new("web.service.internal.", RecordType::A)
        .message
        .to_vec()
        .unwrap();
    // A header claiming one question and carrying garbage: FORMERR, same id.
    let mut garbage = good[..12].to_vec();
    garbage.extend_from_slice(&[0x3f, 0xff, 0xff, 0x00]);
    let reply =
        hickory_proto::op::Message::from_vec(&udp_raw(server.dns, &garbage).expect("FORMERR"))
            .unwrap();
    assert_eq!(
        (reply.metadata.response_code, reply.metadata.id),
        (ResponseCode::FormErr, 0x5150)
    );
    // Every truncation of a valid query, and a response (QR=1) sent to us.
    for len in 0..good.len() {
        let wait = std::time::Duration::from_millis(if len < 12 { 200 } else { 2000 });
        if let Some(reply) = support::udp_raw_within(server.dns, &good[..len], wait) {
            let reply = hickory_proto::op::Message::from_vec(&reply).unwrap();
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::FormErr,
                "prefix of {len} bytes"
            );
        }
    }
    let mut response = good.clone();
    response[2] |= 0x80;
    let silence =
        support::udp_raw_within(server.dns, &response, std::time::Duration::from_millis(300));
    assert!(
        silence.is_none(),
        "responses are not answered (no reflection)"
    );
    // Random bytes: whatever comes back, the server still answers after.
    let mut seed = 0x9E37_79B9_u32;
    for n in 0..300 {
        let len = 12 + (n % 80);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(&bytes, server.dns).unwrap();
    }
    server.assert_alive();
}

#[test]
fn round_robin_rotates_and_random_shuffles() {
    let server = Server::start(&[]);
    for i in 1..=3u8 {
        server.register("rr", &format!("i{i}"), instance(&format!("10.4.0.{i}"), 80));
    }
    assert_eq!(
        server
            .call(
                "PUT",
                "/v1/services/rr",
                Some(json!({ "lb": "round_robin" }))
            )
            .0,
        200
    );
    let firsts: Vec<String> = (0..6)
        .map(|_| addresses(&server.query("rr.service.internal.", RecordType::A).answers)[0].clone())
        .collect();
    assert_eq!(
        firsts[..3],
        firsts[3..],
        "a rotation of three repeats every three queries"
    );
    let distinct: std::collections::BTreeSet<&String> = firsts.iter().collect();
    assert_eq!(distinct.len(), 3);
    // SRV and A share the rotation and the order.
    assert_eq!(
        server
            .call("PUT", "/v1/services/rr", Some(json!({ "lb": "random" })))
            .0,
        200
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(
            addresses(&server.query("rr.service.internal.", RecordType::A).answers)[0].clone(),
        );
    }
    assert_eq!(seen.len(), 3, "every instance comes first sometimes");
}

#[test]
fn weighted_order_over_the_wire_matches_the_weights() {
    let server = Server::start(&[]);
    for (id, weight) in [("a", 10), ("b", 30), ("c", 60)] {
        let mut body = instance(&format!("10.5.0.{}", weight), 80);
        body["weight"] = json!(weight);
        server.register("w", id, body);
    }
    let trials = 2000;
    let mut first = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..trials {
        let reply = server.query("w.service.internal.", RecordType::A);
        assert_eq!(reply.answers.len(), 3);
        *first
            .entry(addresses(&reply.answers)[0].clone())
            .or_default() += 1;
    }
    // Each instance first with probability w/Σw; 5 standard deviations.
    for (address, p) in [("10.5.0.10", 0.1), ("10.5.0.30", 0.3), ("10.5.0.60", 0.6)] {
        let n = trials as f64;
        let (mean, sd) = (n * p, (n * p * (1.0 - p)).sqrt());
        let got = first.get(address).copied().unwrap_or(0) as f64;
        assert!(
            (got - mean).abs() <= 5.0 * sd,
            "{address}: {got} vs {mean} ± {}",
            5.0 * sd
        );
    }
}

#[test]
fn priority_tiers_come_first_in_srv_and_a() {
    let server = Server::start(&[]);
    for (id, priority, last) in [("backup", 20, 1), ("main-1", 10, 2), ("main-2", 10, 3)] {
        let mut body = instance(&format!("10.6.0.{last}"), 80);
        body["priority"] = json!(priority);
        server.register("tier", id, body);
    }
    for _ in 0..20 {
        let a = addresses(
            &server
                .query("tier.service.internal.", RecordType::A)
                .answers,
        );
        assert_eq!(a[2], "10.6.0.1");
        let srv = srv_targets(
            &server
                .query("tier.service.internal.", RecordType::SRV)
                .answers,
        );
        assert_eq!(srv[2], "backup.tier.instance.internal.");
    }
}

#[test]
fn hash_keeps_a_client_on_its_instance_and_honours_ecs() {
    let server = Server::start(&[]);
    for i in 1..=5u8 {
        server.register("h", &format!("i{i}"), instance(&format!("10.7.0.{i}"), 80));
    }
    server.call("PUT", "/v1/services/h", Some(json!({ "lb": "hash" })));
    let ask = |subnet: Option<&str>| {
        let mut q = DnsQuery::new("h.service.internal.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        if let Some(s) = subnet {
            let ecs: ClientSubnet = s.parse().unwrap();
            edns.options_mut().insert(EdnsOption::Subnet(ecs));
        }
        q.message.set_edns(edns);
        q.udp(server.dns)
    };
    let first = addresses(&ask(None).answers);
    for _ in 0..10 {
        assert_eq!(
            addresses(&ask(None).answers),
            first,
            "same client, same order"
        );
    }
    // Different subnets spread over the instances; each one is sticky.
    let mut firsts = std::collections::BTreeSet::new();
    for n in 0..40 {
        let subnet = format!("198.51.{n}.0/24");
        let reply = ask(Some(&subnet));
        let again = ask(Some(&format!("198.51.{n}.77/24")));
        assert_eq!(
            addresses(&reply.answers),
            addresses(&again.answers),
            "{subnet}"
        );
        // RFC 7871: echo the option, scope = source prefix (the answer depends on it).
        let Some(EdnsOption::Subnet(ecs)) = reply
            .edns
            .as_ref()
            .unwrap()
            .option(EdnsCode::Subnet)
            .cloned()
        else {
            panic!("ECS echoed");
        };
        assert_eq!((ecs.source_prefix(), ecs.scope_prefix()), (24, 24));
        firsts.insert(addresses(&reply.answers)[0].clone());
    }
    assert!(firsts.len() >= 4, "40 subnets over 5 instances: {firsts:?}");
}

#[test]
fn ecs_scope_is_zero_when_the_answer_does_not_depend_on_it() {
    let server = Server::start(&[]);
    server.register("plain", "i1", instance("10.8.0.1", 80));
    let mut q = DnsQuery::new("plain.service.internal.", RecordType::A);
    let mut edns = Edns::new();
    edns.options_mut()
        .insert(EdnsOption::Subnet("203.0.113.0/24".parse().unwrap()));
    q.message.set_edns(edns);
    let reply = q.udp(server.dns);
    let Some(EdnsOption::Subnet(ecs)) = reply.edns.unwrap().option(EdnsCode::Subnet).cloned()
    else {
        panic!("ECS echoed");
    };
    assert_eq!(ecs.scope_prefix(), 0);
}

#[test]
fn domain_and_cluster_flags_change_the_names() {
    let server = Server::start(&["--domain", "Disco.Example", "--cluster", "east"]);
    server.register("web", "w1", instance("10.0.0.1", 80));
    let mut other = instance("10.0.0.2", 80);
    other["cluster"] = json!("dc1");
    server.register("web", "w2", other);
    assert_eq!(
        addresses(
            &server
                .query("web.service.disco.example.", RecordType::A)
                .answers
        ),
        ["10.0.0.1"]
    );
    assert_eq!(
        addresses(
            &server
                .query("web.service.dc1.disco.example.", RecordType::A)
                .answers
        ),
        ["10.0.0.2"]
    );
    assert_eq!(
        srv_targets(
            &server
                .query("_web._tcp.service.dc1.disco.example.", RecordType::SRV)
                .answers
        ),
        ["w2.web.instance.dc1.disco.example."]
    );
    assert_eq!(
        server
            .query("web.service.internal.", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::Refused
    );
}

#[test]
fn static_zones_are_served_beside_the_registry() {
    let server = Server::start(&[]);
    let a = server.query("db.static.example.", RecordType::A);
    assert!(a.metadata.authoritative);
    assert_eq!(addresses(&a.answers), ["192.0.2.20"]);
    let cname = server.query("www.static.example.", RecordType::AAAA);
    assert_eq!(addresses(&cname.answers), ["2001:db8::20"]);
    assert_eq!(cname.answers[0].record_type(), RecordType::CNAME);
    let srv = server.query("_pg._tcp.static.example.", RecordType::SRV);
    assert_eq!(addresses(&srv.additionals), ["192.0.2.20", "2001:db8::20"]);
    let nx = server.query("nope.static.example.", RecordType::A);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        (nx.authorities[0].record_type(), nx.authorities[0].ttl),
        (RecordType::SOA, 60)
    );
}

#[test]
fn tcp_serves_several_queries_on_one_connection() {
    // The runtime's thread count (`--workers`) serves TCP and the API alike.
    for workers in ["1", "3"] {
        tcp_serves_several_queries_with(&["--workers", workers]);
    }
}

fn tcp_serves_several_queries_with(args: &[&str]) {
    use std::io::{Read, Write};
    let server = Server::start(args);
    web(&server);
    let mut stream = std::net::TcpStream::connect(server.dns).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    for n in 0..5u16 {
        let mut q = DnsQuery::new("web.service.internal.", RecordType::A);
        q.message.metadata.id = n;
        let bytes = q.message.to_vec().unwrap();
        stream
            .write_all(&(bytes.len() as u16).to_be_bytes())
            .unwrap();
        stream.write_all(&bytes).unwrap();
        let mut len = [0; 2];
        stream.read_exact(&mut len).unwrap();
        let mut reply = vec![0; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).unwrap();
        let reply = hickory_proto::op::Message::from_vec(&reply).unwrap();
        assert_eq!((reply.metadata.id, reply.answers.len()), (n, 2));
    }
}

#[test]
fn tcp_answers_pipelined_queries_in_order_and_survives_bad_streams() {
    use std::io::{Read, Write};
    let server = Server::start(&[]);
    web(&server);
    let framed = |id: u16, name: &str| {
        let mut q = DnsQuery::new(name, RecordType::A);
        q.message.metadata.id = id;
        let bytes = q.message.to_vec().unwrap();
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&bytes);
        out
    };
    let read_reply = |stream: &mut std::net::TcpStream| {
        let mut len = [0; 2];
        stream.read_exact(&mut len)?;
        let mut reply = vec![0; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply)?;
        Ok::<_, std::io::Error>(hickory_proto::op::Message::from_vec(&reply).unwrap())
    };
    let connect = || {
        let stream = std::net::TcpStream::connect(server.dns).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        stream
    };

    // Twenty queries in one write: twenty answers, in order.
    let mut stream = connect();
    let mut burst = Vec::new();
    for id in 0..20u16 {
        let name = if id % 2 == 0 {
            "web.service.internal."
        } else {
            "nope.service.internal."
        };
        burst.extend(framed(id, name));
    }
    stream.write_all(&burst).unwrap();
    for id in 0..20u16 {
        let reply = read_reply(&mut stream).unwrap();
        let expected = if id % 2 == 0 {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        assert_eq!(
            (reply.metadata.id, reply.metadata.response_code),
            (id, expected)
        );
    }

    // A message with a readable header and garbage after it: FORMERR, and
    // the connection goes on.
    let good = framed(7, "web.service.internal.");
    let mut garbage = good[2..14].to_vec();
    garbage.extend_from_slice(&[0x3f, 0xff, 0xff, 0x00]);
    stream
        .write_all(&(garbage.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&garbage).unwrap();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(
        (reply.metadata.id, reply.metadata.response_code),
        (7, ResponseCode::FormErr)
    );
    stream
        .write_all(&framed(8, "web.service.internal."))
        .unwrap();
    assert_eq!(read_reply(&mut stream).unwrap().answers.len(), 2);

    // A response sent to the server ends the connection without a reply.
    let mut response = good.clone();
    response[4] |= 0x80; // QR
    stream.write_all(&response).unwrap();
    assert!(read_reply(&mut stream).is_err(), "closed, nothing sent");

    // A connection cut in the middle of a message, and one that sends only
    // half a length: the server keeps serving.
    let mut cut = connect();
    cut.write_all(&good[..good.len() / 2]).unwrap();
    drop(cut);
    let mut half = connect();
    half.write_all(&good[..1]).unwrap();
    drop(half);
    let mut again = connect();
    again
        .write_all(&framed(9, "web.service.internal."))
        .unwrap();
    assert_eq!(read_reply(&mut again).unwrap().metadata.id, 9);
    assert_eq!(
        server
            .query("web.service.internal.", RecordType::A)
            .answers
            .len(),
        2
    );
}

#[test]
fn answers_stay_whole_while_writers_change_weights() {
    let server = std::sync::Arc::new(Server::start(&[]));
    let ids: Vec<String> = (1..=8).map(|i| format!("c{i}")).collect();
    for (n, id) in ids.iter().enumerate() {
        server.register("churn", id, instance(&format!("10.10.0.{}", n + 1), 80));
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let server = server.clone();
            let ids = ids.clone();
            std::thread::spawn(move || {
                for round in 0..40u32 {
                    let n = (w * 2 + round as usize) % ids.len();
                    let mut body = instance(&format!("10.10.0.{}", n + 1), 80);
                    // Unique per write and never the initial 100, so every write
                    // changes something and gets its own index.
                    body["weight"] = json!(101 + w as u32 * 40 + round);
                    assert_eq!(server.register("churn", &ids[n], body).0, 200);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                for _ in 0..300 {
                    let reply = server.query("_churn._tcp.service.internal.", RecordType::SRV);
                    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
                    assert!(reply.metadata.authoritative && !reply.metadata.truncation);
                    // Every instance, once, each with its own address in Additional.
                    let mut targets = srv_targets(&reply.answers);
                    assert_eq!(targets.len(), 8);
                    assert_eq!(addresses(&reply.additionals).len(), 8);
                    targets.sort();
                    targets.dedup();
                    assert_eq!(targets.len(), 8);
                    for r in &reply.answers {
                        let RData::SRV(srv) = &r.data else {
                            panic!("SRV expected")
                        };
                        assert!((100..=260).contains(&srv.weight), "{}", srv.weight);
                    }
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(readers) {
        t.join().expect("no thread failed");
    }
    let (_, body) = server.call("GET", "/v1/services/churn", None);
    assert_eq!(
        body["index"].as_u64(),
        Some(8 + 160),
        "every write has its own index"
    );
}

#[test]
fn a_status_change_takes_an_instance_out_of_dns_and_back() {
    let server = Server::start(&[]);
    web(&server);
    let drain = json!({"status": "OUT_OF_SERVICE"});
    assert_eq!(
        server
            .call(
                "PUT",
                "/v1/services/web/instances/web-2/status",
                Some(drain)
            )
            .0,
        200
    );
    assert_eq!(
        addresses(&server.query("web.service.internal.", RecordType::A).answers),
        ["10.0.0.5"]
    );
    let up = json!({"status": "UP"});
    assert_eq!(
        server
            .call("PUT", "/v1/services/web/instances/web-2/status", Some(up))
            .0,
        200
    );
    assert_eq!(
        server
            .query("web.service.internal.", RecordType::A)
            .answers
            .len(),
        2
    );
}

#[test]
fn a_lapsed_lease_leaves_dns_and_a_heartbeat_brings_it_back() {
    let server = Server::start(&[]);
    let mut body = instance("10.0.0.7", 80);
    body["lease"] = json!("1s");
    assert_eq!(server.register("leased", "l1", body).0, 200);
    assert_eq!(
        addresses(
            &server
                .query("leased.service.internal.", RecordType::A)
                .answers
        ),
        ["10.0.0.7"]
    );
    // No heartbeat: gone once the second is up (polled, bounded; not a timing assertion).
    support::eventually(
        "gone after the 1 s lease lapsed",
        Duration::from_secs(5),
        || {
            server
                .query("leased.service.internal.", RecordType::A)
                .answers
                .is_empty()
        },
    );
    let (_, instance) = server.call("GET", "/v1/services/leased/instances/l1", None);
    assert_eq!(instance["instance"]["health"], "critical");
    assert_eq!(
        server
            .call("PUT", "/v1/services/leased/instances/l1/heartbeat", None)
            .0,
        200
    );
    assert_eq!(
        addresses(
            &server
                .query("leased.service.internal.", RecordType::A)
                .answers
        ),
        ["10.0.0.7"]
    );
}

#[test]
fn failover_answers_from_the_next_cluster_and_comes_back() {
    let server = Server::start(&[]);
    let mut local = instance("10.0.0.1", 80);
    local["status"] = json!("OUT_OF_SERVICE");
    server.register("web", "near", local);
    let mut far = instance("10.2.0.1", 80);
    far["cluster"] = json!("dc2");
    far["tags"] = json!(["v9"]);
    server.register("web", "far", far);
    let a = |name: &str| addresses(&server.query(name, RecordType::A).answers);
    assert!(
        a("web.service.internal.").is_empty(),
        "no failover configured"
    );

    let settings = json!({"failover": ["dc3", "dc2"]});
    assert_eq!(
        server.call("PUT", "/v1/services/web", Some(settings)).0,
        200
    );
    assert_eq!(
        a("web.service.internal."),
        ["10.2.0.1"],
        "dc3 has nothing, dc2 answers"
    );
    let srv = server.query("_web._tcp.service.internal.", RecordType::SRV);
    assert_eq!(
        srv_targets(&srv.answers),
        ["far.web.instance.dc2.internal."]
    );
    assert_eq!(addresses(&srv.additionals), ["10.2.0.1"]);
    assert_eq!(
        a("v9.web.service.internal."),
        ["10.2.0.1"],
        "a tag only the failover cluster has"
    );
    let explicit = server.query("web.service.dc1.internal.", RecordType::A);
    assert_eq!(
        (explicit.metadata.response_code, explicit.answers.len()),
        (ResponseCode::NoError, 0),
        "an explicit cluster does not fail over"
    );

    let up = json!({"status": "UP"});
    server.call("PUT", "/v1/services/web/instances/near/status", Some(up));
    assert_eq!(
        a("web.service.internal."),
        ["10.0.0.1"],
        "back to the local cluster"
    );
}

#[test]
fn fail_open_serves_unhealthy_instances_and_says_so() {
    let server = Server::start(&[]);
    let mut body = instance("10.0.0.9", 80);
    body["lease"] = json!("100ms");
    server.register("fragile", "f1", body);
    support::eventually("the lease lapsed", Duration::from_secs(5), || {
        server
            .query("fragile.service.internal.", RecordType::A)
            .answers
            .is_empty()
    });
    assert_eq!(
        server
            .call(
                "PUT",
                "/v1/services/fragile",
                Some(json!({"fail_open": true}))
            )
            .0,
        200
    );
    let reply = server.query("fragile.service.internal.", RecordType::A);
    assert_eq!(addresses(&reply.answers), ["10.0.0.9"]);
    let Some(EdnsOption::Unknown(15, ede)) = reply
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Unknown(15)))
        .cloned()
    else {
        panic!("an Extended DNS Error (RFC 8914) is attached");
    };
    assert_eq!(&ede[..2], &[0, 0], "info code 0, Other");
    assert!(String::from_utf8_lossy(&ede[2..]).contains("fail-open"));
    // Without EDNS there is nowhere to put it; the answer is the same.
    let plain = DnsQuery::new("fragile.service.internal.", RecordType::A).udp(server.dns);
    assert_eq!(addresses(&plain.answers), ["10.0.0.9"]);
    // A healthy answer carries no EDE.
    server.register("fragile", "f2", instance("10.0.0.10", 80));
    let healthy = server.query("fragile.service.internal.", RecordType::A);
    assert_eq!(addresses(&healthy.answers), ["10.0.0.10"]);
    assert!(
        healthy
            .edns
            .unwrap()
            .option(EdnsCode::Unknown(15))
            .is_none()
    );
}

#[test]
fn dns_sd_browsing_per_rfc_6763() {
    let server = Server::start(&[]);
    web(&server);
    let mut idle = instance("10.3.3.3", 80);
    idle["status"] = json!("OUT_OF_SERVICE");
    server.register("idle", "i1", idle);
    let ptrs = |reply: &hickory_proto::op::Message| -> Vec<String> {
        reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(p) => Some(p.0.to_string()),
                _ => None,
            })
            .collect()
    };
    // §9: service types with something served.
    let types = server.query("_services._dns-sd._udp.service.internal.", RecordType::PTR);
    assert_eq!(ptrs(&types), ["_web._tcp.service.internal."]);
    // §4: instances, with SRV, TXT and addresses in Additional (§12).
    let browse = server.query("_web._tcp.service.internal.", RecordType::PTR);
    let mut instances = ptrs(&browse);
    instances.sort();
    assert_eq!(
        instances,
        [
            "web-1._web._tcp.service.internal.",
            "web-2._web._tcp.service.internal."
        ]
    );
    let kinds: std::collections::BTreeSet<RecordType> =
        browse.additionals.iter().map(|r| r.record_type()).collect();
    assert_eq!(
        kinds,
        [RecordType::A, RecordType::SRV, RecordType::TXT]
            .into_iter()
            .collect()
    );
    // The instance name resolves to SRV and TXT.
    let srv = server.query("web-1._web._tcp.service.internal.", RecordType::SRV);
    assert_eq!(srv_targets(&srv.answers), ["web-1.web.instance.internal."]);
    assert_eq!(addresses(&srv.additionals), ["10.0.0.5"]);
    let txt = server.query("web-1._web._tcp.service.internal.", RecordType::TXT);
    assert_eq!(txt.answers.len(), 1);
    // The other cluster browses under its own name.
    let dc2 = server.query(
        "_services._dns-sd._udp.service.dc2.internal.",
        RecordType::PTR,
    );
    assert_eq!(ptrs(&dc2), ["_web._tcp.service.dc2.internal."]);
    // Parents exist; unknown instances do not.
    let ent = server.query("_dns-sd._udp.service.internal.", RecordType::A);
    assert_eq!(
        (ent.metadata.response_code, ent.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let nx = server.query("nope._web._tcp.service.internal.", RecordType::SRV);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn every_udp_thread_answers_alike() {
    // Four threads reading one socket (the default), then four sockets on
    // one port: the kernel hands each client port to one of them, so forty
    // fresh client sockets reach all of them.
    every_udp_thread_answers_alike_with(&["--dns-threads", "4"]);
    every_udp_thread_answers_alike_with(&["--dns-threads", "4", "--dns-reuseport"]);
}

fn every_udp_thread_answers_alike_with(args: &[&str]) {
    let server = Server::start(args);
    server.register("web", "a", instance("10.9.0.1", 80));
    server.register("web", "b", instance("10.9.0.2", 80));
    for n in 0..40 {
        let reply = DnsQuery::new("WEB.service.internal.", RecordType::A).udp(server.dns);
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "query {n}"
        );
        assert!(reply.metadata.authoritative);
        assert_eq!(reply.queries[0].name().to_ascii(), "WEB.service.internal.");
        let mut got = addresses(&reply.answers);
        got.sort();
        assert_eq!(got, ["10.9.0.1", "10.9.0.2"], "query {n}");
    }
    // A burst, sent before any reply is read, so that the threads take it
    // in batches: every query is answered, once. A hundred replies fit the
    // client socket's default receive buffer.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    const BURST: u16 = 100;
    for id in 0..BURST {
        let mut q = DnsQuery::new("web.service.internal.", RecordType::A);
        q.message.metadata.id = id;
        socket.send_to(&q.bytes(), server.dns).unwrap();
    }
    let mut seen = vec![false; usize::from(BURST)];
    let mut buf = vec![0; 65535];
    for _ in 0..BURST {
        let (n, _) = socket.recv_from(&mut buf).expect("a reply to every query");
        let reply = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(reply.answers.len(), 2);
        let id = usize::from(reply.metadata.id);
        assert!(!seen[id], "query {id} answered twice");
        seen[id] = true;
    }
    server.assert_alive();
}
