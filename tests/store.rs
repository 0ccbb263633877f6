//! Durability with the real binary: restarts keep answers and index,
//! `kill -9` loses no acknowledged write, bad data directories stop start-up
//! with a reason, and exports round-trip.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use serde_json::{Value, json};
use support::{Server, addresses, instance, run, scratch};

fn start(dir: &Path) -> Server {
    Server::start(&["--data-dir", dir.to_str().unwrap()])
}

/// What DNS says about a service: sorted SRV lines (priority, weight, port,
/// target, TTL) and sorted A lines (address, TTL).
fn dns_view(server: &Server, service: &str) -> (Vec<String>, Vec<String>) {
    let srv = server.query(
        &format!("_{service}._tcp.service.internal."),
        RecordType::SRV,
    );
    let mut srv_lines: Vec<String> = srv
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => format!(
                "{} {} {} {} ttl={}",
                s.priority, s.weight, s.port, s.target, r.ttl
            ),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    srv_lines.sort();
    let a = server.query(&format!("{service}.service.internal."), RecordType::A);
    let mut a_lines: Vec<String> = a
        .answers
        .iter()
        .map(|r| format!("{} ttl={}", addresses(std::slice::from_ref(r))[0], r.ttl))
        .collect();
    a_lines.sort();
    (srv_lines, a_lines)
}

fn populate(server: &Server) {
    for (id, address, weight, ttl, tags) in [
        ("a", "10.0.0.1", 10, "30s", json!(["v2"])),
        ("b", "10.0.0.2", 20, "30s", json!([])),
        ("c", "10.0.0.3", 70, "30s", json!(["v2"])),
    ] {
        let body = json!({"address": address, "port": 8080, "weight": weight, "ttl": ttl, "tags": tags, "meta": {"id": id}});
        assert_eq!(server.register("web", id, body).0, 200);
    }
    let mut far = instance("10.9.0.1", 9090);
    far["cluster"] = json!("dc2");
    server.register("web", "far", far);
    server.call(
        "PUT",
        "/v1/services/web",
        Some(json!({"lb": "round_robin"})),
    );
    server.register("db", "d1", instance("10.0.1.1", 5432));
    server.call("DELETE", "/v1/services/db/instances/d1", None);
    server.register("db", "d2", instance("10.0.1.2", 5432));
}

#[test]
fn a_restart_serves_the_same_answers_at_the_same_index() {
    let dir = scratch("restart");
    let before = start(&dir);
    populate(&before);
    let (_, export_before) = before.call("GET", "/v1/export", None);
    let view_before = dns_view(&before, "web");
    let soa_before = before.query("internal.", RecordType::SOA).answers[0].clone();
    assert!(before.terminate().success(), "SIGTERM is a clean exit");

    let after = start(&dir);
    assert_eq!(dns_view(&after, "web"), view_before);
    assert_eq!(
        after.query("internal.", RecordType::SOA).answers[0],
        soa_before,
        "serial = index"
    );
    let (_, export_after) = after.call("GET", "/v1/export", None);
    assert_eq!(export_after, export_before, "every field and index");
    // Settings came back too: round robin rotates.
    let first: BTreeSet<String> = (0..3)
        .map(|_| addresses(&after.query("web.service.internal.", RecordType::A).answers)[0].clone())
        .collect();
    assert_eq!(first.len(), 3);
    // The index goes on from where it was.
    let (_, reply) = after.register("web", "d", instance("10.0.0.4", 8080));
    assert_eq!(
        reply["index"],
        json!(export_before["index"].as_u64().unwrap() + 1)
    );

    // The same after kill -9.
    let view = dns_view(&after, "web");
    after.kill9();
    let again = start(&dir);
    assert_eq!(dns_view(&again, "web"), view);
}

/// A small deterministic generator for kill timing.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = scratch("crash");
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    for round in 0..rounds {
        // Every other round checkpoints all the time, so that kills land
        // in checkpoints and in switches between log files too.
        let server = if round % 2 == 1 {
            Server::start(&[
                "--data-dir",
                dir.to_str().unwrap(),
                "--checkpoint-interval",
                "1ms",
            ])
        } else {
            start(&dir)
        };
        // Everything acknowledged so far is there, in the API and in DNS.
        check_acked(&server, &acked.lock(), round);
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let (api, acked) = (server.api.clone(), acked.clone());
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap();
                    for n in 0.. {
                        let id = format!("r{round}-t{t}-n{n}");
                        let address = format!("10.{}.{}.{}", t, n / 250, n % 250 + 1);
                        let body = json!({"address": address, "port": 80});
                        let url = format!("{api}/v1/services/crash/instances/{id}");
                        match client.put(url).body(body.to_string()).send() {
                            Ok(r) if r.status() == 200 => acked.lock().push((id, address)),
                            Ok(r) => panic!("{id}: status {}", r.status()),
                            Err(_) => return, // the server is gone
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + xorshift(&mut seed) % 180));
        server.kill9();
        for w in writers {
            w.join().unwrap();
        }
    }
    let server = start(&dir);
    let acked = acked.lock();
    assert!(
        acked.len() > rounds * 4,
        "the writers got writes through: {}",
        acked.len()
    );
    eprintln!(
        "{rounds} kill -9 rounds: {} acknowledged writes, all present",
        acked.len()
    );
    check_acked(&server, &acked, rounds);
}

fn check_acked(server: &Server, acked: &[(String, String)], round: usize) {
    let (status, export) = server.call("GET", "/v1/export", None);
    assert_eq!(status, 200);
    let stored: BTreeSet<(String, String)> = export["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().iter())
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for write in acked {
        assert!(
            stored.contains(write),
            "round {round}: acknowledged {write:?} is missing"
        );
    }
    // Indexes are distinct and none is past the registry's.
    let index = export["index"].as_u64().unwrap();
    let mut seen = BTreeSet::new();
    for i in export["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap())
    {
        let m = i["modify_index"].as_u64().unwrap();
        assert!(
            m <= index && seen.insert(m),
            "round {round}: index {m} reused or past {index}"
        );
    }
    // DNS serves them: sample the last few.
    for (id, address) in acked.iter().rev().take(5) {
        let reply = server.query(&format!("{id}.crash.instance.internal."), RecordType::A);
        assert_eq!(
            addresses(&reply.answers),
            std::slice::from_ref(address),
            "round {round}: {id} over DNS"
        );
    }
}

#[test]
fn an_import_is_all_or_nothing_across_a_crash() {
    let dir = scratch("import-crash");
    let mut doc = json!({"format": "signpost-export", "version": 1, "index": 0, "services": []});
    let instances: Vec<Value> = (0..3000)
        .map(|n| {
            json!({"service": "bulk", "id": format!("b{n}"), "address": format!("10.20.{}.{}", n / 250, n % 250 + 1),
                   "port": 80, "create_index": n + 1, "modify_index": n + 1})
        })
        .collect();
    doc["services"] = json!([{ "name": "bulk", "settings": null, "instances": instances }]);
    let body = doc.to_string();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for round in 0..8 {
        let server = start(&dir);
        let count = |server: &Server| {
            let (_, s) = server.call("GET", "/v1/services/bulk", None);
            s["instances"].as_array().map_or(0, Vec::len)
        };
        let present = count(&server);
        assert!(
            present == 0 || present == 3000,
            "round {round}: {present} of 3000"
        );
        eprintln!("round {round}: {present} of 3000 present");
        let url = format!("{}/v1/import?replace=true", server.api);
        let body = body.clone();
        let sender = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::new().put(url).body(body).send();
        });
        std::thread::sleep(Duration::from_millis(xorshift(&mut seed) % 400));
        server.kill9();
        sender.join().unwrap();
    }
    let server = start(&dir);
    let (_, s) = server.call("GET", "/v1/services/bulk", None);
    let present = s["instances"].as_array().map_or(0, Vec::len);
    assert!(
        present == 0 || present == 3000,
        "after the last crash: {present} of 3000"
    );
}

/// Starts the server on `dir`, expects it to refuse, and returns what it
/// said on stderr.
fn refused_start(dir: &Path) -> String {
    let out = support::serve_command(&["--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_data_directories_stop_start_up_with_the_path_and_a_remedy() {
    let dir = scratch("bad-dirs");
    let held = dir.join("held");
    let _running = start(&held);
    let err = refused_start(&held);
    assert!(
        err.contains(held.to_str().unwrap()) && err.contains("in use by another signpost"),
        "{err}"
    );

    let damaged = dir.join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("signpost.redb"), vec![0xA5; 8192]).unwrap();
    let err = refused_start(&damaged);
    assert!(
        err.contains("signpost.redb") && err.contains("damaged") && err.contains("import"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(damaged.join("signpost.redb")).unwrap(),
        vec![0xA5; 8192],
        "left untouched"
    );

    // Acknowledged writes only in the write-ahead log, whose first record
    // is then damaged: start-up names the log file and applies nothing.
    let logged = dir.join("logged");
    let server = Server::start(&[
        "--data-dir",
        logged.to_str().unwrap(),
        "--checkpoint-interval",
        "1h",
    ]);
    for n in 0..3 {
        let body = json!({"address": format!("10.0.0.{}", n + 1), "port": 80});
        assert_eq!(server.register("web", &format!("w{n}"), body).0, 200);
    }
    server.kill9();
    let wal = logged.join("signpost.wal.0");
    let mut bytes = std::fs::read(&wal).unwrap();
    bytes[4096 + 40] ^= 0xFF; // inside the first record's payload
    std::fs::write(&wal, &bytes).unwrap();
    let err = refused_start(&logged);
    assert!(
        err.contains("signpost.wal.0") && err.contains("record 1 is damaged"),
        "{err}"
    );
}

#[test]
fn export_and_import_round_trip_through_the_api_and_the_data_dir() {
    let dir = scratch("backup");
    let source = start(&dir.join("a"));
    populate(&source);
    let file = dir.join("backup.json");
    let (ok, _, err) = run(&["export", "--api", &source.api, "-o", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();

    // Into a fresh server, through its API: same state, same index.
    let target = start(&dir.join("b"));
    // `signpost import --replace` of whatever `file` holds at the time.
    let import_replace = || {
        run(&[
            "import",
            file.to_str().unwrap(),
            "--api",
            &target.api,
            "--replace",
        ])
    };
    let (ok, _, err) = run(&["import", file.to_str().unwrap(), "--api", &target.api]);
    assert!(ok, "{err}");
    assert_eq!(target.call("GET", "/v1/export", None).1, exported);
    assert_eq!(dns_view(&target, "web"), dns_view(&source, "web"));
    // Not over existing data unless asked; then the index moves on.
    let (ok, _, err) = run(&["import", file.to_str().unwrap(), "--api", &target.api]);
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, _, err) = import_replace();
    assert!(ok, "{err}");
    assert_eq!(
        target.call("GET", "/v1/export", None).1["index"],
        json!(exported["index"].as_u64().unwrap() + 1)
    );

    // Offline, on a data directory: refused while a server holds it.
    let c = dir.join("c");
    let (ok, _, err) = run(&[
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        c.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["export", "--data-dir", c.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), exported);
    let (ok, _, err) = run(&["export", "--data-dir", dir.join("a").to_str().unwrap()]);
    assert!(!ok && err.contains("in use by another signpost"), "{err}");
    // A server started on it serves the imported state.
    let served = start(&c);
    assert_eq!(dns_view(&served, "web"), dns_view(&source, "web"));

    // An import that keeps an instance's indexes but changes its address is
    // served as imported (nothing cached by index survives it).
    let mut moved = exported.clone();
    let web = moved["services"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == "web")
        .unwrap();
    let a = web["instances"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i["id"] == "a")
        .unwrap();
    a["address"] = json!("10.7.7.7");
    std::fs::write(&file, moved.to_string()).unwrap();
    let (ok, _, err) = import_replace();
    assert!(ok, "{err}");
    let reply = target.query("a.web.instance.internal.", RecordType::A);
    assert_eq!(addresses(&reply.answers), ["10.7.7.7"]);

    // A bad export is refused, naming the place.
    let mut bad = exported.clone();
    bad["services"][0]["instances"][0]["weight"] = json!(0);
    std::fs::write(&file, bad.to_string()).unwrap();
    let (ok, _, err) = import_replace();
    assert!(
        !ok && err.contains("services[0].instances[0].weight"),
        "{err}"
    );
}
