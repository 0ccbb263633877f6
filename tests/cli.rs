//! The binary as operators use it: the client commands, start-up errors,
//! and answers checked with `dig`.

mod support;

use std::process::Command;

use support::{Server, binary, dig, run, scratch};

#[test]
fn register_list_deregister_through_the_cli() {
    let server = Server::start(&[]);
    let api = server.api.as_str();
    let (ok, out, err) = run(&[
        "register",
        "web",
        "--address",
        "10.0.0.5",
        "--port",
        "8080",
        "--weight",
        "50",
        "--tag",
        "v2",
        "--meta",
        "version=1.4",
        "--api",
        api,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("registered web/10-0-0-5-8080"), "{out}");
    let (ok, _, err) = run(&[
        "register",
        "web",
        "--id",
        "web-2",
        "--address",
        "10.0.0.6",
        "--port",
        "8080",
        "--api",
        api,
    ]);
    assert!(ok, "{err}");

    let (ok, out, _) = run(&["list", "--api", api]);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("web ") && l.contains(" 2 ")),
        "{out}"
    );
    let (ok, out, _) = run(&["list", "web", "--api", api]);
    assert!(ok);
    assert!(
        out.contains("10-0-0-5-8080") && out.contains("10.0.0.5:8080") && out.contains("v2"),
        "{out}"
    );
    let (ok, out, _) = run(&["list", "web", "--json", "--api", api]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["instances"].as_array().unwrap().len(), 2);

    let answer = dig(server.dns, &["+short", "_web._tcp.service.internal", "SRV"]);
    assert!(
        answer.contains("10 50 8080 10-0-0-5-8080.web.instance.internal."),
        "{answer}"
    );

    let (ok, out, err) = run(&["deregister", "web", "10-0-0-5-8080", "--api", api]);
    assert!(ok, "{err}");
    assert!(out.contains("deregistered"));
    let answer = dig(server.dns, &["+short", "web.service.internal", "A"]);
    assert_eq!(answer.trim(), "10.0.0.6");
}

#[test]
fn cli_errors_name_the_field_and_exit_non_zero() {
    let server = Server::start(&[]);
    let (ok, _, err) = run(&[
        "register",
        "web",
        "--address",
        "10.0.0.300",
        "--port",
        "80",
        "--api",
        &server.api,
    ]);
    assert!(!ok);
    assert!(err.contains("422") && err.contains("address:"), "{err}");
    let (ok, _, err) = run(&["deregister", "web", "nope", "--api", &server.api]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    let (ok, _, err) = run(&["list", "--api", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach signpost at http://127.0.0.1:9 ") && err.contains("refused"),
        "{err}"
    );
}

fn serve_fails(extra: &[&str]) -> String {
    let out = support::serve_command(extra).output().unwrap();
    assert!(!out.status.success(), "serve {extra:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_broken_zone_file_stops_start_up_naming_file_and_line() {
    let dir = scratch("broken-zone");
    let good = std::fs::read_to_string(support::repo_zones().join("static.example.zone")).unwrap();
    let broken = good.replace(
        "db          IN A    192.0.2.20",
        "db          IN A    192.0.2.999",
    );
    let line = broken
        .lines()
        .position(|l| l.contains("192.0.2.999"))
        .unwrap()
        + 1;
    std::fs::write(dir.join("static.example.zone"), broken).unwrap();
    let err = serve_fails(&["--zones-dir", dir.to_str().unwrap()]);
    let expected = format!("static.example.zone:{line}:");
    assert!(err.contains(&expected), "expected {expected:?} in {err}");
}

#[test]
fn invalid_settings_stop_start_up_with_a_reason() {
    let dir = scratch("clash");
    std::fs::write(dir.join("internal.zone"), "@ 60 IN SOA ns h 1 2 3 4 5\n").unwrap();
    let err = serve_fails(&["--zones-dir", dir.to_str().unwrap()]);
    assert!(
        err.contains("internal.zone") && err.contains("registry zone"),
        "{err}"
    );
    let err = serve_fails(&["--cluster", "service"]);
    assert!(err.contains("--cluster"), "{err}");
    let err = serve_fails(&["--domain", "bad..name"]);
    assert!(err.contains("--domain"), "{err}");
    let taken = Server::start(&[]);
    let out = Command::new(binary())
        .args([
            "serve",
            "--dns-addr",
            &taken.dns.to_string(),
            "--http-addr",
            "127.0.0.1:0",
            "--store",
            "memory",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot bind DNS to") && err.contains(&taken.dns.to_string()),
        "{err}"
    );
}

#[test]
fn dig_sees_srv_truncation_retry_and_negative_answers() {
    let server = Server::start(&[]);
    for i in 1..=80u8 {
        server.register(
            "big",
            &format!("i{i}"),
            support::instance(&format!("10.1.0.{i}"), 80),
        );
    }
    // dig retries over TCP on TC and gets every record.
    let out = dig(server.dns, &["big.service.internal", "A"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 80,"), "{out}");
    let out = dig(
        server.dns,
        &["+ignore", "+noedns", "big.service.internal", "A"],
    );
    assert!(
        out.contains(" tc") && out.contains("flags: qr aa tc"),
        "{out}"
    );
    let out = dig(server.dns, &["nope.service.internal", "A"]);
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("flags: qr aa"),
        "{out}"
    );
    assert!(out.contains("AUTHORITY: 1,"), "{out}");
    let out = dig(server.dns, &["example.com", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    let out = dig(server.dns, &["+notcp", "big.service.internal", "ANY"]);
    assert!(out.contains("HINFO") && out.contains("RFC8482"), "{out}");
    let out = dig(server.dns, &["+edns=1", "internal", "SOA"]);
    assert!(out.contains("BADVERS"), "{out}");
}

#[test]
fn status_drains_an_instance_from_the_cli() {
    let server = Server::start(&[]);
    server.register("web", "w1", support::instance("10.0.0.5", 80));
    let (ok, out, err) = run(&[
        "status",
        "web",
        "w1",
        "OUT_OF_SERVICE",
        "--api",
        &server.api,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("web/w1 is OUT_OF_SERVICE"), "{out}");
    assert_eq!(
        dig(server.dns, &["+short", "web.service.internal", "A"]).trim(),
        ""
    );
    let (ok, _, err) = run(&["status", "web", "w1", "SLEEPING", "--api", &server.api]);
    assert!(!ok && err.contains("status:"), "{err}");
}

#[test]
fn watch_prints_changes_as_they_happen() {
    use std::io::BufRead;
    let server = Server::start(&[]);
    let mut watcher = std::process::Command::new(binary())
        .args(["watch", "web", "--index", "0", "--api", &server.api])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    server.register("web", "w1", support::instance("10.0.0.5", 80));
    server.register("other", "o1", support::instance("10.0.0.9", 80));
    server.call("DELETE", "/v1/services/web/instances/w1", None);
    let next = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a line within 10 s")
    };
    let first = next();
    assert!(first.contains("put web/w1 10.0.0.5:80"), "{first}");
    let second = next();
    assert!(second.contains("delete web/w1"), "{second}");
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn sigterm_ends_open_watch_streams_and_exits_cleanly() {
    let server = Server::start(&[]);
    let watch = reqwest::blocking::Client::new()
        .get(format!("{}/v1/watch", server.api))
        .send()
        .expect("the watch stream opens");
    assert_eq!(watch.status(), 200);
    let status = server.terminate_within(std::time::Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: an open watch must not hold up shutdown"
    );
    drop(watch);
}

#[test]
fn leases_from_the_cli() {
    let server = Server::start(&[]);
    let (ok, _, err) = run(&[
        "register",
        "web",
        "--id",
        "w1",
        "--address",
        "10.0.0.5",
        "--port",
        "80",
        "--lease",
        "30s",
        "--api",
        &server.api,
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["heartbeat", "web", "w1", "--api", &server.api]);
    assert!(ok, "{err}");
    assert!(out.contains("web/w1 is passing; lease"), "{out}");
    let (ok, out, _) = run(&["list", "web", "--api", &server.api]);
    assert!(
        ok && out.contains("HEALTH") && out.contains("passing"),
        "{out}"
    );
    let (ok, _, err) = run(&["heartbeat", "web", "nope", "--api", &server.api]);
    assert!(!ok && err.contains("404"), "{err}");
}
