//! Test harness: the real `signpost` binary on port 0, a DNS client over
//! real UDP and TCP sockets (hickory-proto), `dig`, and the admin API.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    /// DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// Admin API base URL.
    pub api: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// A scratch directory unique to this test process and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("signpost-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's example zones.
pub fn repo_zones() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("zones")
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_signpost")
}

impl Server {
    /// Starts `signpost serve` on free ports with the repo's zones, seed 1,
    /// and `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        let zones = repo_zones();
        let mut args = vec!["--zones-dir", zones.to_str().unwrap(), "--seed", "1"];
        args.extend_from_slice(extra);
        Self::start_raw(&args)
    }

    /// Starts `signpost serve` on free ports with exactly `extra` flags.
    pub fn start_raw(extra: &[&str]) -> Self {
        let log = scratch(&format!("log-{}", rand_suffix())).join("stderr.log");
        let mut child = serve_command(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("signpost starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut dns, mut api) = (None, None);
        while dns.is_none() || api.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.wait();
                panic!(
                    "signpost exited before listening: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            if let Some(rest) = line.strip_prefix("dns listening on ") {
                dns = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("api listening on ") {
                api = Some(rest.trim().to_string());
            }
        }
        // Keep draining stdout so the server never writes into a closed pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            dns: dns.unwrap(),
            api: api.unwrap(),
            log,
        }
    }

    /// Kills the server with SIGKILL (`kill -9`) and waits for it to die.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; `None` (after a
    /// SIGKILL) if the server did not stop in time.
    pub fn terminate_within(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `PUT` an instance; returns (status, body).
    pub fn register(&self, service: &str, id: &str, body: Value) -> (u16, Value) {
        self.call(
            "PUT",
            &format!("/v1/services/{service}/instances/{id}"),
            Some(body),
        )
    }

    /// Any API call; returns (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::blocking::Client::new();
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", self.api));
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let resp = req.send().expect("API answers");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Asks over UDP with EDNS (payload 1232).
    pub fn query(&self, name: &str, qtype: RecordType) -> Message {
        let mut q = DnsQuery::new(name, qtype);
        q.edns = Some(1232);
        q.udp(self.dns)
    }

    /// Asserts the server still answers, retrying as a stub resolver does
    /// (a query can be lost when a burst has filled the socket buffer).
    pub fn assert_alive(&self) {
        let query = DnsQuery::new("internal.", RecordType::SOA).bytes();
        let reply = (0..5)
            .find_map(|_| udp_raw_within(self.dns, &query, Duration::from_secs(1)))
            .expect("the server answers again");
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(
            reply.metadata.response_code,
            hickory_proto::op::ResponseCode::NoError
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Polls `cond` every 50 ms until it holds, for at most `limit`: a
/// liveness bound, not a timing assertion.
pub fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cond(), "{what}: not within {limit:?}");
}

/// Runs the binary with `args`; (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `signpost serve` on free ports with `extra` flags, not yet started; with
/// a data directory of its own unless `extra` names one.
pub fn serve_command(extra: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args([
        "serve",
        "--dns-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    if !extra.contains(&"--data-dir") {
        let dir = scratch(&format!("data-{}", rand_suffix()));
        command.arg("--data-dir").arg(dir);
    }
    command.args(extra);
    command
}

/// A DNS query under construction.
pub struct DnsQuery {
    /// The message to send.
    pub message: Message,
    /// EDNS payload to offer; `None` sends no OPT.
    pub edns: Option<u16>,
}

impl DnsQuery {
    /// A query for `name`/`qtype` with RD set, like a stub resolver sends.
    pub fn new(name: &str, qtype: RecordType) -> Self {
        let mut message = Message::query();
        message.metadata.id = 0x5150;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        Self {
            message,
            edns: None,
        }
    }

    /// The query as bytes.
    pub fn bytes(mut self) -> Vec<u8> {
        if let Some(payload) = self.edns
            && self.message.edns.is_none()
        {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            self.message.set_edns(edns);
        }
        self.message.to_vec().unwrap()
    }

    /// Sends over UDP and parses the reply.
    pub fn udp(self, server: SocketAddr) -> Message {
        Message::from_vec(&udp_raw(server, &self.bytes()).expect("a UDP reply"))
            .expect("a parsable reply")
    }

    /// Sends over TCP and parses the reply.
    pub fn tcp(self, server: SocketAddr) -> Message {
        Message::from_vec(&tcp_raw(server, &self.bytes())).expect("a parsable reply")
    }
}

/// Sends raw bytes over UDP; the reply's bytes, or `None` after 2 s of silence.
pub fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    udp_raw_within(server, bytes, Duration::from_secs(2))
}

/// Sends raw bytes over UDP; the reply's bytes, or `None` after `wait`.
pub fn udp_raw_within(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send_to(bytes, server).unwrap();
    let mut buf = vec![0; 65535];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Sends raw bytes over TCP (length-prefixed) and reads one reply.
pub fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut len = [0; 2];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).unwrap();
    reply
}

/// Runs `dig` against `server` with `args`; returns its stdout.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig is installed (Debian dnsutils); .ci/run installs it");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A/AAAA addresses in a section, as strings, in order.
pub fn addresses(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.to_string()),
            RData::AAAA(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

/// The SRV targets in a section, in order.
pub fn srv_targets(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.target.to_string()),
            _ => None,
        })
        .collect()
}

/// A registration body.
pub fn instance(address: &str, port: u16) -> Value {
    serde_json::json!({ "address": address, "port": port })
}
