//! Load generator of `scripts/bench-registry.sh`: durable registration
//! throughput, PUT→DNS visibility, restart time and memory of a running
//! signpost. A benchmark for people to read: it asserts nothing about
//! timings. It checks correctness on the way (every PUT answered 200, every
//! new address visible in DNS, nothing lost over a restart) and reports what
//! it found.
//!
//! The script starts the servers (an embedded-store one and, optionally, a
//! memory-store one for comparison) and passes their addresses and pids; this
//! program runs the phases against them, stops and restarts the embedded one
//! itself (to time the restart from exec), prints a summary and writes the
//! raw results as JSON.
//!
//! Per server, for each visibility size in turn (the memory server only the
//! first unless `--memory-full`):
//!   1. fill to the size (`--clients` clients; recorded as "fill");
//!   2. (embedded, at `--restart-size`) RSS, then SIGTERM and start again on
//!      the same data dir, `--restarts` times: the `registry loaded ...
//!      elapsed_ms` it logs, exec to its `dns listening` line, the instance
//!      count and index from `GET /v1/services`, 300 addresses in DNS;
//!   3. visibility (`--vis-clients` clients, half new instances in existing
//!      services, half address changes of existing instances);
//!   4. after the first size only: throughput, `--throughput-count` new
//!      registrations, then `--update-count` address updates of random
//!      existing instances, by `--clients` clients with one keep-alive
//!      connection each.
//!
//! Naming: instance k is `i<k>` in service `s<k / per_service>` at
//! 10.x.y.z (k + 1); visibility's new instances are `n<j>` in a random
//! existing service; changed and new addresses are 11.x.y.z, never reused.
//!
//! Run it through the script; `cargo run --release --example registry_bench
//! -- --help` lists the flags.

#[path = "common/put.rs"]
mod put;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use put::{PutConnection, PutError};

use clap::Parser;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Flags; the script passes them.
#[derive(Debug, Parser)]
#[command(about = "signpost registry benchmark (run it through scripts/bench-registry.sh)")]
struct Args {
    /// The signpost binary (used to restart the embedded server).
    #[arg(long)]
    bin: PathBuf,
    /// Embedded-store server: API address (host:port).
    #[arg(long)]
    embedded_api: String,
    /// Embedded-store server: DNS address.
    #[arg(long)]
    embedded_dns: SocketAddr,
    /// Embedded-store server: pid.
    #[arg(long)]
    embedded_pid: u32,
    /// Embedded-store server: its --data-dir.
    #[arg(long)]
    data_dir: PathBuf,
    /// The --zones-dir to restart with.
    #[arg(long)]
    zones_dir: PathBuf,
    /// Where to write the pid of each restarted server (the script stops it).
    #[arg(long)]
    restart_pid_file: PathBuf,
    /// Directory for the restarted servers' stderr logs.
    #[arg(long)]
    log_dir: PathBuf,
    /// Memory-store server: API address; without it, no comparison.
    #[arg(long, requires_all = ["memory_dns", "memory_pid"])]
    memory_api: Option<String>,
    /// Memory-store server: DNS address.
    #[arg(long)]
    memory_dns: Option<SocketAddr>,
    /// Memory-store server: pid.
    #[arg(long)]
    memory_pid: Option<u32>,
    /// Also take the memory server to every size (RSS, visibility).
    #[arg(long)]
    memory_full: bool,
    /// Concurrent HTTP clients for throughput and fills.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// New registrations in the throughput phase.
    #[arg(long, default_value_t = 50_000)]
    throughput_count: u64,
    /// Address updates of random existing instances after the throughput
    /// phase (writes spread over every service).
    #[arg(long, default_value_t = 50_000)]
    update_count: u64,
    /// Upper bound on each throughput phase, seconds.
    #[arg(long, default_value_t = 60.0)]
    throughput_max_secs: f64,
    /// Registry sizes at which visibility is measured.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    vis_sizes: Vec<u64>,
    /// Visibility samples per size.
    #[arg(long, default_value_t = 2000)]
    vis_samples: u64,
    /// Concurrent clients for visibility.
    #[arg(long, default_value_t = 8)]
    vis_clients: usize,
    /// Instances per service.
    #[arg(long, default_value_t = 100)]
    per_service: u64,
    /// Size at which the embedded server is restarted (0: no restart).
    #[arg(long, default_value_t = 100_000)]
    restart_size: u64,
    /// How many times it is restarted.
    #[arg(long, default_value_t = 3)]
    restarts: u32,
    /// Upper bound on any fill phase, seconds.
    #[arg(long, default_value_t = 240.0)]
    fill_max_secs: f64,
    /// The registry zone.
    #[arg(long, default_value = "internal")]
    domain: String,
    /// Raw results (JSON).
    #[arg(long)]
    out: PathBuf,
    /// JSON file with environment facts from the script, merged in.
    #[arg(long)]
    meta: Option<PathBuf>,
}

// --------------------------------------------------------------------------
// statistics

/// Percentiles of microsecond samples, in milliseconds.
fn dist(samples: &[u64]) -> Value {
    if samples.is_empty() {
        return json!({ "n": 0 });
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1] as f64 / 1000.0
    };
    let mean = s.iter().sum::<u64>() as f64 / s.len() as f64 / 1000.0;
    json!({
        "n": s.len(),
        "min_ms": s[0] as f64 / 1000.0,
        "p50_ms": at(50.0),
        "p90_ms": at(90.0),
        "p99_ms": at(99.0),
        "p999_ms": at(99.9),
        "max_ms": s[s.len() - 1] as f64 / 1000.0,
        "mean_ms": (mean * 1000.0).round() / 1000.0,
    })
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

// --------------------------------------------------------------------------
// /proc

fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// (comm, state, utime + stime ticks) from a /proc stat file.
fn read_stat(path: &Path) -> Option<(String, char, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, state, utime + stime))
}

fn alive(pid: u32) -> bool {
    matches!(read_stat(Path::new(&format!("/proc/{pid}/stat"))), Some((_, s, _)) if s != 'Z' && s != 'X')
}

/// A field of /proc/PID/status (a number; kB for sizes).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    status_field(Path::new(&format!("/proc/{pid}/status")), field)
}

/// A numeric field of a /proc status file.
fn status_field(path: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn memory(pid: u32) -> Value {
    let mib = |f| status_kb(pid, f).map(|kb| (kb as f64 / 1024.0 * 10.0).round() / 10.0);
    json!({
        "vm_rss_mib": mib("VmRSS"),
        "vm_hwm_mib": mib("VmHWM"),
        "rss_anon_mib": mib("RssAnon"),
        "rss_file_mib": mib("RssFile"),
        "threads": status_kb(pid, "Threads"),
    })
}

/// CPU and I/O counters of one process, for deltas over a phase.
struct ProcSnap {
    at: Instant,
    ticks: u64,
    threads: HashMap<u32, (String, u64)>,
    io: HashMap<String, u64>,
    ctx: (u64, u64),
    /// Busy ticks of the whole machine (every CPU), from /proc/stat.
    machine_busy: u64,
}

/// user + nice + system + irq + softirq + steal ticks of all CPUs.
fn machine_busy_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum()
}

impl ProcSnap {
    fn take(pid: u32) -> Self {
        let at = Instant::now();
        let ticks = read_stat(Path::new(&format!("/proc/{pid}/stat"))).map_or(0, |s| s.2);
        let mut threads = HashMap::new();
        // Context switches are per thread: summed over the threads alive now.
        let mut ctx = (0, 0);
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in dir.flatten() {
                let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Some((comm, _, t)) = read_stat(&entry.path().join("stat")) {
                    threads.insert(tid, (comm, t));
                }
                let status = entry.path().join("status");
                ctx.0 += status_field(&status, "voluntary_ctxt_switches").unwrap_or(0);
                ctx.1 += status_field(&status, "nonvoluntary_ctxt_switches").unwrap_or(0);
            }
        }
        let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().parse().ok()?))
            })
            .collect();
        Self {
            at,
            ticks,
            threads,
            io,
            ctx,
            machine_busy: machine_busy_ticks(),
        }
    }

    /// What happened between `self` and `later`.
    fn delta(&self, later: &ProcSnap, tck: u64) -> Value {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let cpu = later.ticks.saturating_sub(self.ticks) as f64 / tck as f64;
        let mut threads: Vec<(u32, String, f64)> = later
            .threads
            .iter()
            .map(|(tid, (comm, t))| {
                let before = self.threads.get(tid).map_or(0, |b| b.1);
                (
                    *tid,
                    comm.clone(),
                    t.saturating_sub(before) as f64 / tck as f64,
                )
            })
            .filter(|t| t.2 > 0.0)
            .collect();
        threads.sort_by(|a, b| b.2.total_cmp(&a.2));
        let io = |k: &str| {
            later
                .io
                .get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(self.io.get(k).copied().unwrap_or(0))
        };
        json!({
            "wall_s": round3(wall),
            "cpu_s": round3(cpu),
            "cpu_cores": round3(cpu / wall),
            "machine_busy_cores": round3(
                later.machine_busy.saturating_sub(self.machine_busy) as f64 / tck as f64 / wall
            ),
            "busiest_threads": threads.iter().take(8).map(|(tid, comm, s)| json!({
                "tid": tid, "comm": comm, "cpu_s": round3(*s), "cores": round3(s / wall),
            })).collect::<Vec<_>>(),
            "write_bytes": io("write_bytes"),
            "read_bytes": io("read_bytes"),
            "write_syscalls": io("syscw"),
            "voluntary_ctxt_switches": later.ctx.0.saturating_sub(self.ctx.0),
            "nonvoluntary_ctxt_switches": later.ctx.1.saturating_sub(self.ctx.1),
        })
    }
}

/// The block device's statistics file for the data directory's device.
static DATA_DEVICE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

fn device_stat(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let path = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/stat"));
    path.exists().then_some(path)
}

/// Bytes the data directory's block device has written so far (the whole
/// device: other processes' writes count too). Per-process `write_bytes`
/// in /proc is no use for the log: on this host's kernel it counted about
/// 0.9 MB per sync of a few KB overwritten in a preallocated file, while
/// the device wrote the few KB.
fn device_written() -> Option<u64> {
    let path = DATA_DEVICE.get()?.as_ref()?;
    let stat = std::fs::read_to_string(path).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

// --------------------------------------------------------------------------
// the servers

/// One running server.
#[derive(Debug, Clone)]
struct Server {
    /// `embedded` or `memory`.
    store: &'static str,
    /// `http://host:port`.
    api: String,
    dns: SocketAddr,
    pid: u32,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// Instances counted by `GET /v1/services`, and the index header.
async fn count(client: &reqwest::Client, server: &Server) -> Result<(u64, u64, u64), String> {
    let response = client
        .get(format!("{}/v1/services", server.api))
        .send()
        .await
        .map_err(|e| format!("GET /v1/services: {e}"))?;
    let header = response
        .headers()
        .get("x-signpost-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("GET /v1/services: no X-Signpost-Index")?;
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("GET /v1/services: {e}"))?;
    let services = body["services"]
        .as_array()
        .ok_or("GET /v1/services: no services array")?;
    let instances = services
        .iter()
        .map(|s| s["instances"].as_u64().unwrap_or(0))
        .sum();
    Ok((instances, services.len() as u64, header))
}

/// PUTs one instance; Ok(()) on 200, else what went wrong.
async fn put(
    client: &reqwest::Client,
    api: &str,
    service: &str,
    id: &str,
    address: Ipv4Addr,
    port: u16,
) -> Result<(), String> {
    let body = format!(r#"{{"address":"{address}","port":{port}}}"#);
    let response = client
        .put(format!("{api}/v1/services/{service}/instances/{id}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".to_string()
            } else if e.is_connect() {
                "connect".to_string()
            } else {
                "transport".to_string()
            }
        })?;
    let status = response.status().as_u16();
    // Read the body so that the connection is reused.
    let _ = response.bytes().await;
    if status == 200 {
        Ok(())
    } else {
        Err(format!("http {status}"))
    }
}

fn fill_address(k: u64) -> Ipv4Addr {
    Ipv4Addr::from(0x0A00_0000u32 + (k as u32 + 1))
}

fn fill_names(k: u64, per_service: u64) -> (String, String) {
    (format!("s{}", k / per_service), format!("i{k}"))
}

/// State shared by the phases: which instances exist and where.
struct Book {
    per_service: u64,
    /// Instances 0..next_k exist (fill and throughput).
    next_k: AtomicU64,
    /// Visibility's new instances n0..next_n.
    next_n: AtomicU64,
    /// Source of fresh 11.x.y.z addresses.
    next_addr: AtomicU32,
    /// Addresses that differ from `fill_address(k)`.
    changed: Mutex<HashMap<u64, Ipv4Addr>>,
    /// Visibility's new instances: j -> (service, address).
    added: Mutex<HashMap<u64, (String, Ipv4Addr)>>,
}

impl Book {
    fn new(per_service: u64) -> Self {
        Self {
            per_service,
            next_k: AtomicU64::new(0),
            next_n: AtomicU64::new(0),
            next_addr: AtomicU32::new(1),
            changed: Mutex::new(HashMap::new()),
            added: Mutex::new(HashMap::new()),
        }
    }

    fn fresh_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(0x0B00_0000u32 + self.next_addr.fetch_add(1, Ordering::Relaxed))
    }

    fn expected(&self, k: u64) -> Ipv4Addr {
        self.changed
            .lock()
            .get(&k)
            .copied()
            .unwrap_or_else(|| fill_address(k))
    }
}

// --------------------------------------------------------------------------
// registration phases (fill, throughput)

/// What a registration phase writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// New instances k, k+1, ...: consecutive writes land in the same service.
    New,
    /// New addresses for random existing instances (each client its own
    /// residue class of k): writes spread over every service.
    Update,
}

/// `count` registrations by `clients` clients, each on its own keep-alive
/// connection, stopping early after `max`.
async fn register_many(
    server: &Server,
    book: &Arc<Book>,
    clients: usize,
    count: u64,
    max: Duration,
    writes: Writes,
    tck: u64,
) -> Value {
    let start_k = book.next_k.load(Ordering::SeqCst);
    let issued = Arc::new(AtomicU64::new(0));
    let before = ProcSnap::take(server.pid);
    let self_before = ProcSnap::take(std::process::id());
    let device_before = device_written();
    let started = Instant::now();
    let deadline = started + max;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let issued = issued.clone();
        let api = server.api.clone();
        let per_service = book.per_service;
        let book = book.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = PutConnection::new(&api);
            let mut rng = SmallRng::seed_from_u64(0xfeed + c as u64);
            let slots = (start_k / clients as u64).max(1);
            let mut latencies = Vec::new();
            let mut done_at = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = issued.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                let (k, address) = match writes {
                    Writes::New => (start_k + i, fill_address(start_k + i)),
                    Writes::Update => (
                        rng.random_range(0..slots) * clients as u64 + c as u64,
                        book.fresh_address(),
                    ),
                };
                let (service, id) = fill_names(k, per_service);
                let t0 = Instant::now();
                let path = format!("/v1/services/{service}/instances/{id}");
                let body = format!(r#"{{"address":"{address}","port":8080}}"#);
                let result = connection.put(&path, body.as_bytes()).await;
                latencies.push(us(t0.elapsed()));
                done_at.push(started.elapsed().as_secs() as u32);
                match result {
                    Err(PutError::Status(status, _)) => {
                        *errors.entry(format!("http {status}")).or_default() += 1
                    }
                    Err(PutError::Transport(what)) => {
                        *errors.entry(what.to_string()).or_default() += 1
                    }
                    Ok(_) if writes == Writes::Update => {
                        book.changed.lock().insert(k, address);
                    }
                    Ok(_) => {}
                }
            }
            (latencies, done_at, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut per_second: Vec<u64> = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (l, d, e) = task.await.expect("client task");
        latencies.extend(l);
        for s in d {
            let s = s as usize;
            if per_second.len() <= s {
                per_second.resize(s + 1, 0);
            }
            per_second[s] += 1;
        }
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    let after = ProcSnap::take(server.pid);
    let self_after = ProcSnap::take(std::process::id());
    let device_bytes = device_written()
        .zip(device_before)
        .map(|(after, before)| after.saturating_sub(before));
    let done = latencies.len() as u64;
    let failed: u64 = errors.values().sum();
    // Every issued k below start_k + done was attempted; failures are
    // counted (and reported) rather than tracked one by one.
    if writes == Writes::New {
        book.next_k.store(start_k + done, Ordering::SeqCst);
    }
    let ok = done - failed;
    let server_cpu = before.delta(&after, tck);
    let loadgen_cpu = self_before.delta(&self_after, tck);
    // Everything the device wrote during the phase (a checkpoint running as
    // it ends is counted in the next).
    let write_bytes = device_bytes.unwrap_or(0);
    let cores = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let others = cores(&server_cpu, "machine_busy_cores")
        - cores(&server_cpu, "cpu_cores")
        - cores(&loadgen_cpu, "cpu_cores");
    json!({
        "store": server.store,
        "writes": match writes { Writes::New => "new", Writes::Update => "update" },
        "clients": clients,
        "first_k": start_k,
        "requested": count,
        "attempted": done,
        "ok": ok,
        "errors": errors,
        "stopped_by_time_limit": done < count,
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "regs_per_s": (ok as f64 / elapsed.as_secs_f64()).round(),
        "put_latency": dist(&latencies),
        "completed_per_second": per_second,
        "server": server_cpu,
        "disk_write_bytes_per_reg": write_bytes.checked_div(ok).unwrap_or(0),
        "disk_measured": if device_bytes.is_some() { "block device" } else { "unavailable" },
        "loadgen": loadgen_cpu,
        "machine_busy_cores": server_cpu["machine_busy_cores"],
        "other_cores": round3(others.max(0.0)),
    })
}

/// Registers new instances until the server holds `target`.
async fn fill_to(
    server: &Server,
    book: &Arc<Book>,
    clients: usize,
    target: u64,
    max: Duration,
    tck: u64,
) -> Result<Value, String> {
    let client = http_client();
    let (have, _, _) = count(&client, server).await?;
    if have >= target {
        return Ok(json!({ "from": have, "to": have, "attempted": 0 }));
    }
    eprintln!(
        "registry-bench: {}: filling {have} -> {target} ({clients} clients)",
        server.store
    );
    let mut result =
        register_many(server, book, clients, target - have, max, Writes::New, tck).await;
    let (now, services, index) = count(&client, server).await?;
    result["from"] = json!(have);
    result["to"] = json!(now);
    result["services"] = json!(services);
    result["index"] = json!(index);
    if now != target {
        return Err(format!(
            "{}: fill to {target} ended at {now} instances (errors: {})",
            server.store, result["errors"]
        ));
    }
    Ok(result)
}

// --------------------------------------------------------------------------
// DNS

struct Dns {
    socket: tokio::net::UdpSocket,
    next_id: u16,
    buf: Vec<u8>,
    timeouts: u64,
}

impl Dns {
    async fn new(server: SocketAddr) -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP");
        socket.connect(server).await.expect("connect UDP");
        Self {
            socket,
            next_id: rand::random(),
            buf: vec![0; 4096],
            timeouts: 0,
        }
    }

    /// The A records of `name`, or the rcode when there are none.
    async fn a(&mut self, name: &Name) -> Result<Vec<Ipv4Addr>, String> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let mut query = Message::new(id, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(name.clone(), RecordType::A));
        let wire = query.to_vec().map_err(|e| e.to_string())?;
        for _attempt in 0..5 {
            self.socket.send(&wire).await.map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.socket.recv(&mut self.buf)).await {
                    Err(_) => {
                        self.timeouts += 1;
                        break; // resend
                    }
                    Ok(Err(e)) => return Err(e.to_string()),
                    Ok(Ok(n)) => {
                        let Ok(reply) = Message::from_vec(&self.buf[..n]) else {
                            continue;
                        };
                        if reply.metadata.id != id {
                            continue; // a late answer to an earlier query
                        }
                        let addresses: Vec<Ipv4Addr> = reply
                            .answers
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::A(a) => Some(a.0),
                                _ => None,
                            })
                            .collect();
                        if addresses.is_empty() {
                            return Err(format!("{:?}", reply.metadata.response_code));
                        }
                        return Ok(addresses);
                    }
                }
            }
        }
        Err("no answer after 5 tries".into())
    }
}

fn instance_name(id: &str, service: &str, domain: &str) -> Name {
    Name::from_ascii(format!("{id}.{service}.instance.{domain}.")).expect("valid instance name")
}

// --------------------------------------------------------------------------
// visibility

/// `samples` PUT→DNS round trips by `clients` clients: even samples register
/// a new instance in an existing service, odd ones change the address of an
/// existing instance (each client its own instances, so no two clients race
/// on one).
async fn visibility(
    server: &Server,
    book: &Arc<Book>,
    clients: usize,
    samples: u64,
    domain: &str,
    tck: u64,
) -> Result<Value, String> {
    let client = http_client();
    let (before_count, _, _) = count(&client, server).await?;
    let existing = book.next_k.load(Ordering::SeqCst);
    let full_services = (existing / book.per_service).max(1);
    eprintln!(
        "registry-bench: {}: visibility at {before_count} instances ({samples} samples, {clients} clients)",
        server.store
    );
    let issued = Arc::new(AtomicU64::new(0));
    let proc_before = ProcSnap::take(server.pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let issued = issued.clone();
        let book = book.clone();
        let server = server.clone();
        let domain = domain.to_string();
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut dns = Dns::new(server.dns).await;
            let mut rng = SmallRng::seed_from_u64(0x5eed + c as u64);
            let mut rows = Vec::new();
            loop {
                let i = issued.fetch_add(1, Ordering::SeqCst);
                if i >= samples {
                    break;
                }
                let address = book.fresh_address();
                let (kind, service, id, k) = if i.is_multiple_of(2) {
                    let j = book.next_n.fetch_add(1, Ordering::SeqCst);
                    let s = rng.random_range(0..full_services);
                    ("new", format!("s{s}"), format!("n{j}"), None)
                } else {
                    // An instance of this client's own residue class.
                    let slots = existing / clients as u64;
                    let k = rng.random_range(0..slots.max(1)) * clients as u64 + c as u64;
                    let (service, id) = fill_names(k, book.per_service);
                    ("change", service, id, Some(k))
                };
                let name = instance_name(&id, &service, &domain);
                let t0 = Instant::now();
                let put_result = put(&client, &server.api, &service, &id, address, 8080).await;
                let put_us = us(t0.elapsed());
                if let Err(e) = put_result {
                    rows.push(json!({ "kind": kind, "error": format!("PUT: {e}") }));
                    continue;
                }
                match k {
                    Some(k) => {
                        book.changed.lock().insert(k, address);
                    }
                    None => {
                        let j: u64 = id[1..].parse().expect("n<j>");
                        book.added.lock().insert(j, (service.clone(), address));
                    }
                }
                let t_dns = Instant::now();
                let mut retries = 0u64;
                let mut last = String::new();
                let visible = loop {
                    match dns.a(&name).await {
                        Ok(addresses) if addresses.contains(&address) => break true,
                        Ok(addresses) => last = format!("{addresses:?}"),
                        Err(e) => last = e,
                    }
                    if t_dns.elapsed() > Duration::from_secs(2) {
                        break false;
                    }
                    retries += 1;
                };
                let total_us = us(t0.elapsed());
                let mut row = json!({
                    "kind": kind,
                    "total_us": total_us,
                    "put_us": put_us,
                    "dns_us": total_us - put_us,
                    "retries": retries,
                });
                if !visible {
                    row["not_visible"] = json!(last);
                } else if retries > 0 {
                    row["first_seen_before"] = json!(last);
                }
                rows.push(row);
            }
            (rows, dns.timeouts)
        }));
    }
    let mut rows = Vec::new();
    let mut dns_timeouts = 0;
    for task in tasks {
        let (r, t) = task.await.expect("visibility task");
        rows.extend(r);
        dns_timeouts += t;
    }
    let elapsed = started.elapsed();
    let proc_after = ProcSnap::take(server.pid);
    let (after_count, _, _) = count(&client, server).await?;
    let pick = |kind: Option<&str>, field: &str| -> Vec<u64> {
        rows.iter()
            .filter(|r| kind.is_none_or(|k| r["kind"] == k))
            .filter_map(|r| r[field].as_u64())
            .collect()
    };
    let errors = rows.iter().filter(|r| r.get("error").is_some()).count();
    let not_visible = rows
        .iter()
        .filter(|r| r.get("not_visible").is_some())
        .count();
    let retries: u64 = pick(None, "retries").iter().sum();
    let samples_retried = rows
        .iter()
        .filter(|r| r["retries"].as_u64().unwrap_or(0) > 0)
        .count();
    Ok(json!({
        "store": server.store,
        "instances_before": before_count,
        "instances_after": after_count,
        "clients": clients,
        "samples": rows.len(),
        "elapsed_s": round3(elapsed.as_secs_f64()),
        "put_to_visible": dist(&pick(None, "total_us")),
        "put_to_visible_new": dist(&pick(Some("new"), "total_us")),
        "put_to_visible_change": dist(&pick(Some("change"), "total_us")),
        "put_latency": dist(&pick(None, "put_us")),
        "dns_after_put": dist(&pick(None, "dns_us")),
        "retries": retries,
        "samples_retried": samples_retried,
        "not_visible": not_visible,
        "put_errors": errors,
        "dns_timeouts": dns_timeouts,
        "server": proc_before.delta(&proc_after, tck),
        "rows": rows,
    }))
}

// --------------------------------------------------------------------------
// stop and restart

/// SIGTERM and wait for the process to be gone; the time it took.
fn stop(pid: u32, child: Option<&mut Child>) -> Result<Duration, String> {
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    if !status.success() {
        return Err(format!("kill -TERM {pid} failed"));
    }
    while alive(pid) {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            return Err(format!(
                "pid {pid} did not stop within 30 s of SIGTERM; killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let took = started.elapsed();
    if let Some(child) = child {
        let _ = child.wait();
    }
    Ok(took)
}

/// A server this program started.
struct Restarted {
    child: Child,
    server: Server,
    exec_to_dns: Duration,
    exec_to_api: Duration,
    loaded_ms: Option<u64>,
    loaded_line: Option<String>,
}

fn restart(args: &Args, run: u32) -> Result<Restarted, String> {
    let log = args.log_dir.join(format!("restart-{run}.err"));
    let stderr = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let started = Instant::now();
    let mut child = Command::new(&args.bin)
        .arg("serve")
        .args(["--dns-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--store", "embedded", "--data-dir"])
        .arg(&args.data_dir)
        .arg("--zones-dir")
        .arg(&args.zones_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.bin.display()))?;
    let pid = child.id();
    std::fs::write(&args.restart_pid_file, format!("{pid}\n"))
        .map_err(|e| format!("{}: {e}", args.restart_pid_file.display()))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((line, Instant::now())).is_err() {
                break;
            }
        }
    });
    let (mut dns, mut api) = (None, None);
    while dns.is_none() || api.is_none() {
        let left = Duration::from_secs(300).saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok((line, at)) => {
                if let Some(rest) = line.strip_prefix("dns listening on ") {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    dns = Some((addr.parse::<SocketAddr>().map_err(|e| e.to_string())?, at));
                } else if let Some(rest) = line.strip_prefix("api listening on ") {
                    api = Some((rest.trim().to_string(), at));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("restarted server did not come up:\n{err}"));
            }
        }
    }
    let (dns, dns_at) = dns.expect("dns line");
    let (api, api_at) = api.expect("api line");
    // The log line is written before the ports open, so it is there by now.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let line = text.lines().find(|l| l.contains("registry loaded"));
    let loaded_ms = line.and_then(|l| {
        let at = l.find("elapsed_ms=")? + "elapsed_ms=".len();
        l[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    Ok(Restarted {
        child,
        server: Server {
            store: "embedded",
            api,
            dns,
            pid,
        },
        exec_to_dns: dns_at.duration_since(started),
        exec_to_api: api_at.duration_since(started),
        loaded_ms,
        loaded_line: line.map(str::to_string),
    })
}

/// Looks up `n` random instances in DNS and compares with what was written.
async fn spot_check(server: &Server, book: &Book, n: u64, domain: &str) -> Value {
    let mut dns = Dns::new(server.dns).await;
    let mut rng = SmallRng::seed_from_u64(42);
    let existing = book.next_k.load(Ordering::SeqCst);
    let added: Vec<(u64, (String, Ipv4Addr))> = book
        .added
        .lock()
        .iter()
        .map(|(j, v)| (*j, v.clone()))
        .collect();
    let changed: Vec<u64> = book.changed.lock().keys().copied().collect();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for i in 0..n {
        // A third each: any instance, a changed one, a new one.
        let (service, id, expected) = match i % 3 {
            1 if !changed.is_empty() => {
                let k = changed[rng.random_range(0..changed.len())];
                let (s, id) = fill_names(k, book.per_service);
                (s, id, book.expected(k))
            }
            2 if !added.is_empty() => {
                let (j, (s, a)) = &added[rng.random_range(0..added.len())];
                (s.clone(), format!("n{j}"), *a)
            }
            _ => {
                let k = rng.random_range(0..existing.max(1));
                let (s, id) = fill_names(k, book.per_service);
                (s, id, book.expected(k))
            }
        };
        checked += 1;
        match dns.a(&instance_name(&id, &service, domain)).await {
            Ok(a) if a == vec![expected] => {}
            other => wrong.push(json!({ "name": format!("{id}.{service}"), "expected": expected.to_string(), "got": format!("{other:?}") })),
        }
    }
    json!({ "checked": checked, "wrong": wrong })
}

// --------------------------------------------------------------------------
// the run

async fn run_server(
    args: &Args,
    mut server: Server,
    book: &Arc<Book>,
    results: &mut Value,
    tck: u64,
) -> Result<Option<Restarted>, String> {
    let client = http_client();
    let fill_max = Duration::from_secs_f64(args.fill_max_secs);
    let key = server.store;
    let mut sizes = args.vis_sizes.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let full = server.store == "embedded" || args.memory_full;
    let mut out = json!({ "fills": [], "visibility": [], "memory": [] });
    let mut restarted: Option<Restarted> = None;
    let push = |out: &mut Value, field: &str, v: Value| {
        out[field].as_array_mut().expect("array").push(v);
    };

    for (i, &size) in sizes.iter().enumerate() {
        if i > 0 && !full {
            break;
        }
        // Fill to the size.
        let fill = fill_to(&server, book, args.clients, size, fill_max, tck).await?;
        push(&mut out, "fills", fill);
        let (now, services, index) = count(&client, &server).await?;
        push(
            &mut out,
            "memory",
            json!({
                "instances": now, "services": services, "after": "fill", "proc": memory(server.pid),
            }),
        );
        // Restart at the restart size.
        if server.store == "embedded" && size == args.restart_size && args.restarts > 0 {
            let (r, s) = restarts(args, &server, book, now, index).await?;
            out["restart"] = r;
            restarted = Some(s);
            server = restarted.as_ref().expect("restarted").server.clone();
            push(
                &mut out,
                "memory",
                json!({
                    "instances": now, "services": services, "after": "restart", "proc": memory(server.pid),
                }),
            );
        }
        // Visibility at the size.
        let v = visibility(
            &server,
            book,
            args.vis_clients,
            args.vis_samples,
            &args.domain,
            tck,
        )
        .await?;
        push(&mut out, "visibility", v);
        let (now, services, _) = count(&client, &server).await?;
        push(
            &mut out,
            "memory",
            json!({
                "instances": now, "services": services, "after": "visibility", "proc": memory(server.pid),
            }),
        );
        if i > 0 {
            continue;
        }
        // After the first size: throughput, new instances, then updates
        // spread over every service.
        for (writes, n, field) in [
            (Writes::New, args.throughput_count, "throughput"),
            (Writes::Update, args.update_count, "throughput_update"),
        ] {
            if n == 0 {
                continue;
            }
            let (have, services_before, _) = count(&client, &server).await?;
            eprintln!(
                "registry-bench: {key}: throughput: {n} {} from {have} ({} clients)",
                match writes {
                    Writes::New => "new registrations",
                    Writes::Update => "address updates of random instances",
                },
                args.clients
            );
            let mut t = register_many(
                &server,
                book,
                args.clients,
                n,
                Duration::from_secs_f64(args.throughput_max_secs),
                writes,
                tck,
            )
            .await;
            let (now, services, _) = count(&client, &server).await?;
            t["instances_before"] = json!(have);
            t["services_before"] = json!(services_before);
            t["instances_after"] = json!(now);
            t["services_after"] = json!(services);
            eprintln!(
                "registry-bench: {key}: {} regs/s, p50 {} ms, p99 {} ms",
                t["regs_per_s"], t["put_latency"]["p50_ms"], t["put_latency"]["p99_ms"]
            );
            out[field] = t;
            push(
                &mut out,
                "memory",
                json!({
                    "instances": now, "services": services, "after": field, "proc": memory(server.pid),
                }),
            );
        }
    }
    if server.store == "embedded" {
        let db = args.data_dir.join("signpost.redb");
        out["db_file_bytes"] = json!(std::fs::metadata(&db).map(|m| m.len()).ok());
    }
    results[key] = out;
    Ok(restarted)
}

/// Stops the embedded server `args.restarts` times and starts it again.
async fn restarts(
    args: &Args,
    first: &Server,
    book: &Arc<Book>,
    instances: u64,
    index: u64,
) -> Result<(Value, Restarted), String> {
    let client = http_client();
    let mut runs = Vec::new();
    let mut current: Option<Restarted> = None;
    let mut server = first.clone();
    for run in 1..=args.restarts {
        eprintln!(
            "registry-bench: restart {run}/{}: SIGTERM pid {} ({instances} instances, index {index})",
            args.restarts, server.pid
        );
        let rss_before = memory(server.pid);
        let shutdown = match current.as_mut() {
            Some(r) => stop(server.pid, Some(&mut r.child))?,
            None => stop(server.pid, None)?,
        };
        let next = restart(args, run)?;
        let (count_after, services_after, index_after) = count(&client, &next.server).await?;
        let rss_after = memory(next.server.pid);
        let check = spot_check(&next.server, book, 300, &args.domain).await;
        eprintln!(
            "registry-bench: restart {run}: loaded {:?} ms, exec->dns listening {:.1} ms, {count_after} instances, index {index_after}",
            next.loaded_ms,
            next.exec_to_dns.as_secs_f64() * 1000.0
        );
        runs.push(json!({
            "run": run,
            "shutdown_ms": round3(shutdown.as_secs_f64() * 1000.0),
            "registry_loaded_elapsed_ms": next.loaded_ms,
            "registry_loaded_line": next.loaded_line,
            "exec_to_dns_listening_ms": round3(next.exec_to_dns.as_secs_f64() * 1000.0),
            "exec_to_api_listening_ms": round3(next.exec_to_api.as_secs_f64() * 1000.0),
            "instances_before": instances,
            "instances_after": count_after,
            "services_after": services_after,
            "index_before": index,
            "index_after": index_after,
            "instances_match": count_after == instances,
            "index_match": index_after == index,
            "spot_check": check,
            "memory_before_stop": rss_before,
            "memory_after_start": rss_after,
        }));
        server = next.server.clone();
        current = Some(next);
    }
    Ok((json!(runs), current.expect("at least one restart")))
}

// --------------------------------------------------------------------------
// summary

fn f(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else if x.abs() >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn summary(args: &Args, r: &Value) -> String {
    let mut s = String::new();
    let mut line = |t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    let stores: Vec<&str> = ["embedded", "memory"]
        .into_iter()
        .filter(|k| r.get(*k).is_some())
        .collect();
    line(format!(
        "signpost registry benchmark: {} CPUs, {} instances per service, loopback",
        f(&r["meta"]["cpus"]),
        args.per_service
    ));
    line(String::new());
    line(format!(
        "1. Registration throughput: {} clients, one keep-alive connection each; every 200 is a committed write",
        args.clients
    ));
    line(
        "   new = new instances i<k>, i<k+1>... (a batch touches 1-2 services); update = new address for random"
            .to_string(),
    );
    line(
        "   existing instances (a batch touches ~all its services); fill = the `new` workload used to fill."
            .to_string(),
    );
    line(
        "   cores: CPU used by the server, by this load generator, and by everything else (kernel I/O threads, other processes)"
            .to_string(),
    );
    line(format!(
        "{:<9} {:<7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9} {:>9} {:>11} {:>10}",
        "store",
        "writes",
        "from",
        "regs",
        "secs",
        "regs/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "srv cores",
        "gen cores",
        "other cores",
        "disk B/reg"
    ));
    for k in &stores {
        let mut rows: Vec<(&str, &Value)> = Vec::new();
        for (label, field) in [("new", "throughput"), ("update", "throughput_update")] {
            if !r[*k][field].is_null() {
                rows.push((label, &r[*k][field]));
            }
        }
        for fill in r[*k]["fills"].as_array().into_iter().flatten() {
            if fill["attempted"].as_u64().unwrap_or(0) > 0 {
                rows.push(("fill", fill));
            }
        }
        for (label, t) in rows {
            let errors: u64 = t["errors"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
            let from = if t["instances_before"].is_null() {
                &t["from"]
            } else {
                &t["instances_before"]
            };
            line(format!(
                "{:<9} {:<7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>9} {:>9} {:>11} {:>10}",
                k,
                label,
                f(from),
                f(&t["ok"]),
                f(&t["elapsed_s"]),
                f(&t["regs_per_s"]),
                f(&t["put_latency"]["p50_ms"]),
                f(&t["put_latency"]["p99_ms"]),
                f(&t["put_latency"]["max_ms"]),
                errors,
                f(&t["server"]["cpu_cores"]),
                f(&t["loadgen"]["cpu_cores"]),
                f(&t["other_cores"]),
                f(&t["disk_write_bytes_per_reg"]),
            ));
        }
    }
    line(String::new());
    line(format!(
        "2. PUT -> DNS visibility: {} samples per row (half new instances, half address changes), {} clients",
        args.vis_samples, args.vis_clients
    ));
    line(format!(
        "{:<9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8}",
        "store",
        "instances",
        "p50 ms",
        "p99 ms",
        "max ms",
        "put p50",
        "put p99",
        "dns p50",
        "dns p99",
        "retries",
        "missed",
        "errors"
    ));
    for k in &stores {
        for v in r[*k]["visibility"].as_array().into_iter().flatten() {
            line(format!(
                "{:<9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8}",
                k,
                f(&v["instances_before"]),
                f(&v["put_to_visible"]["p50_ms"]),
                f(&v["put_to_visible"]["p99_ms"]),
                f(&v["put_to_visible"]["max_ms"]),
                f(&v["put_latency"]["p50_ms"]),
                f(&v["put_latency"]["p99_ms"]),
                f(&v["dns_after_put"]["p50_ms"]),
                f(&v["dns_after_put"]["p99_ms"]),
                f(&v["retries"]),
                f(&v["not_visible"]),
                f(&v["put_errors"]),
            ));
        }
    }
    line(String::new());
    let restarts = r["embedded"]["restart"].as_array();
    if let Some(runs) = restarts {
        line(format!(
            "3. Restart of the embedded store with {} instances (SIGTERM, start on the same data dir; page cache warm)",
            f(&runs[0]["instances_before"])
        ));
        line(format!(
            "{:<4} {:>12} {:>18} {:>12} {:>11} {:>10} {:>9} {:>12} {:>10}",
            "run",
            "shutdown ms",
            "registry loaded ms",
            "exec->dns ms",
            "instances",
            "index",
            "index ok",
            "spot check",
            "RSS MiB"
        ));
        for run in runs {
            let wrong = run["spot_check"]["wrong"].as_array().map_or(0, Vec::len);
            line(format!(
                "{:<4} {:>12} {:>18} {:>12} {:>11} {:>10} {:>9} {:>12} {:>10}",
                f(&run["run"]),
                f(&run["shutdown_ms"]),
                f(&run["registry_loaded_elapsed_ms"]),
                f(&run["exec_to_dns_listening_ms"]),
                f(&run["instances_after"]),
                f(&run["index_after"]),
                if run["index_match"] == true && run["instances_match"] == true {
                    "yes"
                } else {
                    "NO"
                },
                format!(
                    "{}/{} ok",
                    f(&run["spot_check"]["checked"]).parse::<u64>().unwrap_or(0) - wrong as u64,
                    f(&run["spot_check"]["checked"])
                ),
                f(&run["memory_after_start"]["vm_rss_mib"]),
            ));
        }
        line(String::new());
    }
    line("4. Server memory".to_string());
    line(format!(
        "{:<9} {:>9} {:>8} {:<17} {:>9} {:>9} {:>9}",
        "store", "instances", "services", "after", "RSS MiB", "HWM MiB", "anon MiB"
    ));
    for k in &stores {
        for m in r[*k]["memory"].as_array().into_iter().flatten() {
            line(format!(
                "{:<9} {:>9} {:>8} {:<17} {:>9} {:>9} {:>9}",
                k,
                f(&m["instances"]),
                f(&m["services"]),
                f(&m["after"]),
                f(&m["proc"]["vm_rss_mib"]),
                f(&m["proc"]["vm_hwm_mib"]),
                f(&m["proc"]["rss_anon_mib"]),
            ));
        }
    }
    if let Some(bytes) = r["embedded"]["db_file_bytes"].as_u64() {
        line(format!(
            "redb file: {:.1} MiB",
            bytes as f64 / 1024.0 / 1024.0
        ));
    }
    line(String::new());
    let rates: Vec<(&str, f64)> = [("new", "throughput"), ("update", "throughput_update")]
        .into_iter()
        .filter_map(|(label, field)| Some((label, r["embedded"][field]["regs_per_s"].as_f64()?)))
        .collect();
    let restart_ms: Vec<f64> = restarts
        .into_iter()
        .flatten()
        .filter_map(|x| x["exec_to_dns_listening_ms"].as_f64())
        .collect();
    line("Targets".to_string());
    for (label, rate) in rates {
        line(format!(
            "  >= 20000 durable registrations/s ({label}): {} ({rate:.0}/s)",
            if rate >= 20_000.0 { "met" } else { "NOT met" }
        ));
    }
    if !restart_ms.is_empty() {
        let worst = restart_ms.iter().copied().fold(0.0, f64::max);
        line(format!(
            "  restart with {} instances < 1 s (exec -> dns listening): {} (worst of {}: {worst:.0} ms)",
            args.restart_size,
            if worst < 1000.0 { "met" } else { "NOT met" },
            restart_ms.len()
        ));
    }
    let mut problems = Vec::new();
    for k in &stores {
        let t = &r[*k]["throughput"];
        if let Some(e) = t["errors"].as_object().filter(|m| !m.is_empty()) {
            problems.push(format!(
                "{k}: throughput errors {}",
                Value::Object(e.clone())
            ));
        }
        for v in r[*k]["visibility"].as_array().into_iter().flatten() {
            for field in ["retries", "not_visible", "put_errors", "dns_timeouts"] {
                if v[field].as_u64().unwrap_or(0) > 0 {
                    problems.push(format!(
                        "{k} visibility at {}: {field} = {}",
                        f(&v["instances_before"]),
                        v[field]
                    ));
                }
            }
        }
    }
    for run in restarts.into_iter().flatten() {
        if run["instances_match"] != true || run["index_match"] != true {
            problems.push(format!(
                "restart {}: instances {} -> {}, index {} -> {}",
                run["run"],
                run["instances_before"],
                run["instances_after"],
                run["index_before"],
                run["index_after"]
            ));
        }
        if run["spot_check"]["wrong"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
        {
            problems.push(format!(
                "restart {}: spot check wrong: {}",
                run["run"], run["spot_check"]["wrong"]
            ));
        }
    }
    if problems.is_empty() {
        line("  no errors, no retries, nothing lost".to_string());
    } else {
        for p in problems {
            line(format!("  PROBLEM: {p}"));
        }
    }
    s
}

// --------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let _ = DATA_DEVICE.set(device_stat(&args.data_dir));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("registry-bench: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let tck = clk_tck();
    let mut results = json!({});
    let mut meta = match &args.meta {
        Some(path) => std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| json!({})),
        None => json!({}),
    };
    meta["config"] = json!({
        "clients": args.clients,
        "throughput_count": args.throughput_count,
        "throughput_max_secs": args.throughput_max_secs,
        "update_count": args.update_count,
        "vis_sizes": args.vis_sizes,
        "vis_samples": args.vis_samples,
        "vis_clients": args.vis_clients,
        "per_service": args.per_service,
        "restart_size": args.restart_size,
        "restarts": args.restarts,
        "memory_full": args.memory_full,
        "domain": args.domain,
    });
    if meta.get("cpus").is_none() {
        meta["cpus"] = json!(std::thread::available_parallelism().map_or(0, |n| n.get()));
    }
    results["meta"] = meta;
    let started = Instant::now();

    let embedded = Server {
        store: "embedded",
        api: format!("http://{}", args.embedded_api.trim_start_matches("http://")),
        dns: args.embedded_dns,
        pid: args.embedded_pid,
    };
    let book = Arc::new(Book::new(args.per_service));
    let mut last = run_server(&args, embedded.clone(), &book, &mut results, tck).await?;
    let final_embedded = last.as_ref().map_or(embedded.pid, |r| r.server.pid);
    let shutdown = match last.as_mut() {
        Some(r) => stop(final_embedded, Some(&mut r.child)),
        None => stop(final_embedded, None),
    };
    if let Err(e) = shutdown {
        eprintln!("registry-bench: {e}");
    }
    let _ = std::fs::remove_file(&args.restart_pid_file);

    if let (Some(api), Some(dns), Some(pid)) = (&args.memory_api, args.memory_dns, args.memory_pid)
    {
        let memory = Server {
            store: "memory",
            api: format!("http://{}", api.trim_start_matches("http://")),
            dns,
            pid,
        };
        let book = Arc::new(Book::new(args.per_service));
        run_server(&args, memory, &book, &mut results, tck).await?;
        if let Err(e) = stop(pid, None) {
            eprintln!("registry-bench: {e}");
        }
    }
    results["meta"]["elapsed_s"] = json!(round3(started.elapsed().as_secs_f64()));
    let text = summary(&args, &results);
    results["summary"] = json!(text);
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&results).expect("JSON"),
    )
    .map_err(|e| format!("{}: {e}", args.out.display()))?;
    print!("{text}");
    if text.contains("PROBLEM:") {
        return Err("correctness problems found (see PROBLEM lines above)".into());
    }
    Ok(())
}
