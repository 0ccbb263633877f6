//! The writers of `scripts/bench-dns.sh --writers`: N writers, one
//! keep-alive connection each, each PUTting a random instance of the
//! benchmark's registry with a new weight R times a second, on one thread.
//!
//! The Python writers of `scripts/bench_dns.py` used about 40% of a core for
//! 1,000 PUTs a second; pinned, they share dnsperf's CPU, so most of the
//! "throughput with writers" they measured was dnsperf starved of its core
//! rather than signpost slowed down. This one does the same work in a few
//! percent. A benchmark for people to read: it asserts nothing.
//!
//! Prints `ready` once every connection is open, writes until its standard
//! input closes (or `--max-seconds`), then writes its figures as JSON to
//! `--out`, in the form `bench_dns.py writers` writes them.

#[path = "common/put.rs"]
mod put;

use std::io::{BufRead, Read};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use put::{PutConnection, PutError};

#[derive(Parser)]
struct Args {
    /// The admin API, `http://host:port`.
    #[arg(long)]
    api: String,
    /// registry.jsonl of `bench_dns.py gen`: `{"service", "id", "body"}` lines.
    #[arg(long)]
    registry: String,
    /// Writers, one connection each.
    #[arg(long)]
    writers: usize,
    /// PUTs a second per writer; 0: back to back.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Accepted for the Python writers' command line; one thread does it all.
    #[arg(long, default_value_t = 1)]
    procs: usize,
    #[arg(long, default_value_t = 600.0)]
    max_seconds: f64,
    /// Keep every latency in the output.
    #[arg(long)]
    raw: bool,
    #[arg(long)]
    out: String,
}

/// One writer's results.
#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    errors: u64,
    samples: Vec<String>,
    late: u64,
    index_first: Option<u64>,
    index_last: Option<u64>,
}

/// Every instance of the registry: its API path and its registration body.
type Rows = Vec<(String, serde_json::Map<String, Value>)>;

/// The registry's instances.
fn read_registry(path: &str) -> Result<Rows, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut rows = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("{path}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Value = serde_json::from_str(&line).map_err(|e| format!("{path}: {e}"))?;
        let (Some(service), Some(id), Some(Value::Object(body))) =
            (row["service"].as_str(), row["id"].as_str(), row.get("body"))
        else {
            return Err(format!("{path}: a line without service, id and body"));
        };
        rows.push((
            format!("/v1/services/{service}/instances/{id}"),
            body.clone(),
        ));
    }
    if rows.is_empty() {
        return Err(format!("{path}: empty registry"));
    }
    Ok(rows)
}

/// This process's user + system CPU seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    ticks as f64 / 100.0
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

async fn writer(
    w: usize,
    args: Arc<Args>,
    rows: Arc<Rows>,
    mut connection: PutConnection,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut rng = SmallRng::seed_from_u64(args.seed * 100_003 + w as u64);
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut next = start + interval.map_or(Duration::ZERO, |i| i.mul_f64(rng.random()));
    let mut tally = Tally::default();
    let mut body = Vec::with_capacity(512);
    for k in 0u64.. {
        if let Some(interval) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += interval;
            let now = Instant::now();
            if next + Duration::from_secs(1) < now {
                // Over a second behind: do not burst.
                tally.late += 1;
                next = now;
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (path, fields) = &rows[rng.random_range(0..rows.len())];
        let mut fields = fields.clone();
        // 101..65535: never a generated weight (10..100), distinct between
        // writers, and offset by the seed (each run has its own), so that
        // every PUT changes the instance.
        let step = w as u64 + args.writers as u64 * k;
        let weight = 101 + (args.seed.wrapping_mul(7_919) + step) % 65_435;
        fields.insert("weight".into(), json!(weight));
        body.clear();
        serde_json::to_writer(&mut body, &fields).expect("JSON to a Vec");
        let t0 = Instant::now();
        match connection.put(path, &body).await {
            Ok(index) => {
                tally.latencies.push(t0.elapsed().as_secs_f64());
                if let Some(index) = index {
                    tally.index_first = Some(tally.index_first.map_or(index, |f| f.min(index)));
                    tally.index_last = Some(tally.index_last.map_or(index, |l| l.max(index)));
                }
            }
            Err(e) => {
                tally.errors += 1;
                if tally.samples.len() < 3 {
                    tally.samples.push(format!("PUT {path}: {e}"));
                }
                if let PutError::Transport(_) = e {
                    // Not a tight loop against a server that is gone.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    tally
}

async fn run(args: Args) -> Result<(), String> {
    let args = Arc::new(args);
    let rows = Arc::new(read_registry(&args.registry)?);
    let mut connections = Vec::with_capacity(args.writers);
    for _ in 0..args.writers {
        let mut connection = PutConnection::new(&args.api);
        connection
            .connect()
            .await
            .map_err(|e| format!("writers: connecting to {}: {e}", args.api))?;
        connections.push(connection);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(w, c)| {
            tokio::spawn(writer(
                w,
                args.clone(),
                rows.clone(),
                c,
                start,
                stop.clone(),
            ))
        })
        .collect();
    println!("ready");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = done_tx.send(());
    });
    let _ = tokio::time::timeout(Duration::from_secs_f64(args.max_seconds), done_rx).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut tallies = Vec::new();
    let mut unfinished = 0;
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Ok(Ok(tally)) => tallies.push(tally),
            _ => unfinished += 1,
        }
    }
    let mut lat: Vec<f64> = tallies.iter().flat_map(|t| t.latencies.clone()).collect();
    lat.sort_by(f64::total_cmp);
    let mut result = json!({
        "writers": args.writers,
        "rate_per_writer": args.rate,
        "target_per_s": (args.rate > 0.0).then(|| args.rate * args.writers as f64),
        "elapsed_s": elapsed,
        "writes_ok": lat.len(),
        "write_errors": tallies.iter().map(|t| t.errors).sum::<u64>(),
        "error_samples": tallies.iter().flat_map(|t| t.samples.clone()).take(5).collect::<Vec<_>>(),
        "writes_per_s": (elapsed > 0.0).then(|| (lat.len() as f64 / elapsed * 10.0).round() / 10.0),
        "fell_behind": tallies.iter().map(|t| t.late).sum::<u64>(),
        "latency_s": {
            "p50": percentile(&lat, 50.0), "p90": percentile(&lat, 90.0),
            "p99": percentile(&lat, 99.0), "p99.9": percentile(&lat, 99.9),
        },
        "max_latency_s": lat.last(),
        "index_first": tallies.iter().filter_map(|t| t.index_first).min(),
        "index_last": tallies.iter().filter_map(|t| t.index_last).max(),
        "cpu_s": ((cpu_seconds() - cpu_start) * 1000.0).round() / 1000.0,
        "writers_unfinished": unfinished,
        "processes": 1,
        "client": "bench_writers (Rust, one thread)",
    });
    if args.raw {
        result["latencies"] = json!(lat);
    }
    let text = serde_json::to_string_pretty(&result).expect("JSON");
    std::fs::write(&args.out, text).map_err(|e| format!("{}: {e}", args.out))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
