//! Active checks against real TCP and HTTP services, with the real binary:
//! an instance leaves DNS after `fall` failed probes and returns after
//! `rise` passing ones; HTTP 200 passes, 429 warns (one priority tier down),
//! 500 fails; an operator's OUT_OF_SERVICE holds through passing checks.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use serde_json::json;
use support::{Server, addresses, instance};

/// Waits (bounded) for `cond`.
fn eventually(what: &str, cond: impl FnMut() -> bool) {
    support::eventually(what, Duration::from_secs(10), cond);
}

fn served(server: &Server, name: &str) -> Vec<String> {
    addresses(&server.query(name, RecordType::A).answers)
}

/// A TCP service that accepts and closes connections until dropped.
struct TcpService {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpService {
    fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TcpService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_killed_tcp_service_leaves_dns_after_fall_and_returns_after_rise() {
    let server = Server::start(&[]);
    let port = free_port();
    let service = TcpService::start(port);
    let mut body = instance("10.0.0.1", port);
    body["checks"] =
        json!([{"tcp": format!("127.0.0.1:{port}"), "interval": "100ms", "rise": 2, "fall": 2}]);
    assert_eq!(server.register("tcp", "t1", body).0, 200);
    // A new instance with checks is not served until its first pass.
    let (_, reply) = server.call("GET", "/v1/services/tcp/instances/t1", None);
    assert!(matches!(
        reply["instance"]["check_health"].as_str(),
        Some("critical") | Some("passing")
    ));
    eventually("served after the first pass", || {
        served(&server, "tcp.service.internal.") == ["10.0.0.1"]
    });
    drop(service);
    eventually("gone after two failed probes", || {
        served(&server, "tcp.service.internal.").is_empty()
    });
    let (_, reply) = server.call("GET", "/v1/services/tcp/instances/t1", None);
    assert_eq!(reply["instance"]["check_health"], "critical");
    // The latest result is visible, with its output and time.
    let status = &reply["checks_status"][0];
    assert_eq!(
        (status["check"].as_str(), status["health"].as_str()),
        (
            Some(format!("tcp 127.0.0.1:{port}").as_str()),
            Some("critical")
        )
    );
    assert!(
        status["output"]
            .as_str()
            .is_some_and(|o| o.contains("connect to")),
        "{status}"
    );
    assert!(
        status["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{status}"
    );
    let _back = TcpService::start(port);
    eventually("back after two passing probes", || {
        served(&server, "tcp.service.internal.") == ["10.0.0.1"]
    });
}

/// An HTTP service answering every request with the status in `status`.
fn http_service(status: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut buf = [0; 1024];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = stream.read(&mut buf);
            let code = status.load(Ordering::Relaxed);
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    port
}

fn srv_priority(server: &Server, name: &str) -> Vec<u16> {
    server
        .query(name, RecordType::SRV)
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.priority),
            _ => None,
        })
        .collect()
}

#[test]
fn http_checks_pass_warn_and_fail_by_status() {
    let server = Server::start(&[]);
    let status = Arc::new(AtomicU16::new(200));
    let port = http_service(status.clone());
    let mut body = instance("10.0.0.2", 80);
    body["priority"] = json!(10);
    body["checks"] = json!([{"http": format!("http://127.0.0.1:{port}/health"), "interval": "100ms", "rise": 1, "fall": 1}]);
    server.register("web", "h1", body);
    eventually("200: served", || {
        served(&server, "web.service.internal.") == ["10.0.0.2"]
    });
    assert_eq!(srv_priority(&server, "_web._tcp.service.internal."), [10]);
    status.store(429, Ordering::Relaxed);
    eventually("429: warning, one tier down", || {
        srv_priority(&server, "_web._tcp.service.internal.") == [11]
    });
    assert_eq!(
        served(&server, "web.service.internal."),
        ["10.0.0.2"],
        "warning is still served"
    );
    status.store(500, Ordering::Relaxed);
    eventually("500: critical, gone", || {
        served(&server, "web.service.internal.").is_empty()
    });
    status.store(200, Ordering::Relaxed);
    eventually("200 again: back", || {
        srv_priority(&server, "_web._tcp.service.internal.") == [10]
    });
}

#[test]
fn out_of_service_holds_through_passing_checks() {
    let server = Server::start(&[]);
    let port = free_port();
    let _service = TcpService::start(port);
    let mut body = instance("10.0.0.3", port);
    body["checks"] = json!([{"tcp": format!("127.0.0.1:{port}"), "interval": "100ms"}]);
    body["initial"] = json!("passing");
    server.register("db", "d1", body);
    assert_eq!(
        served(&server, "db.service.internal."),
        ["10.0.0.3"],
        "initial: passing serves at once"
    );
    server.call(
        "PUT",
        "/v1/services/db/instances/d1/status",
        Some(json!({"status": "OUT_OF_SERVICE"})),
    );
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            served(&server, "db.service.internal.").is_empty(),
            "a passing check does not undo OUT_OF_SERVICE"
        );
    }
    let (_, reply) = server.call("GET", "/v1/services/db/instances/d1", None);
    assert_eq!(
        (
            reply["instance"]["check_health"].as_str(),
            reply["instance"]["status"].as_str()
        ),
        (Some("passing"), Some("OUT_OF_SERVICE"))
    );
    server.call(
        "PUT",
        "/v1/services/db/instances/d1/status",
        Some(json!({"status": "UP"})),
    );
    assert_eq!(served(&server, "db.service.internal."), ["10.0.0.3"]);
}
