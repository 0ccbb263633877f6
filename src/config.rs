//! Command line: the server's settings and the client commands. Defaults live
//! here and only here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default DNS address (UDP and TCP).
pub const DEFAULT_DNS_ADDR: &str = "127.0.0.1:8600";
/// Default admin API address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8500";
/// Default admin API URL for the client commands.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8500";

/// signpost: service discovery that speaks DNS.
#[derive(Debug, Parser)]
#[command(name = "signpost", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: DNS and the admin API.
    Serve(ServeArgs),
    /// Register (or replace) an instance of a service.
    Register(RegisterArgs),
    /// Remove an instance of a service.
    Deregister(DeregisterArgs),
    /// List services, or the instances of one service.
    List(ListArgs),
    /// Set an instance's status: STARTING, UP or OUT_OF_SERVICE (drain).
    Status(StatusArgs),
    /// Renew an instance's lease, once or every interval.
    Heartbeat(HeartbeatArgs),
    /// Print changes as they are committed (all services, or one).
    Watch(WatchArgs),
    /// Write the whole registry as JSON (a backup), from a running server or
    /// from a data directory no server is using.
    Export(ExportArgs),
    /// Replace the registry with an export, through a running server or into
    /// a data directory no server is using.
    Import(ImportArgs),
}

/// Settings of `signpost serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// DNS address, UDP and TCP on the same port (port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_DNS_ADDR, env = "SIGNPOST_DNS_ADDR")]
    pub dns_addr: SocketAddr,
    /// Admin API address (port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_HTTP_ADDR, env = "SIGNPOST_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// The registry's DNS zone.
    #[arg(long, default_value = "internal", env = "SIGNPOST_DOMAIN")]
    pub domain: String,
    /// This server's cluster: names without a cluster label mean it.
    #[arg(long, default_value = "dc1", env = "SIGNPOST_CLUSTER")]
    pub cluster: String,
    /// Directory of RFC 1035 zone files (`*.zone`) served beside the registry.
    #[arg(long, default_value = "zones", env = "SIGNPOST_ZONES_DIR")]
    pub zones_dir: PathBuf,
    /// TTL of negative answers (the SOA minimum).
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "SIGNPOST_NEGATIVE_TTL")]
    pub negative_ttl: Duration,
    /// Address(es) served for `ns.<domain>`, the zone's NS target. Defaults to
    /// the DNS address when it is not a wildcard.
    #[arg(
        long = "ns-address",
        env = "SIGNPOST_NS_ADDRESS",
        value_delimiter = ','
    )]
    pub ns_addresses: Vec<IpAddr>,
    /// Where the registry keeps its state.
    #[arg(long, value_enum, default_value = "embedded", env = "SIGNPOST_STORE")]
    pub store: StoreKind,
    /// Directory of the embedded store (created if missing).
    #[arg(long, default_value = "data", env = "SIGNPOST_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Embedded store: longest an acknowledged write stays only in the
    /// write-ahead log before a checkpoint applies it to the database file.
    /// Longer means fewer, larger checkpoints; shorter, less to replay at
    /// start.
    #[arg(long, default_value = "200ms", value_parser = parse_duration, env = "SIGNPOST_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Duration,
    /// Threads answering DNS over UDP. 0: one per CPU this process may run
    /// on.
    #[arg(long, default_value_t = 0, env = "SIGNPOST_DNS_THREADS")]
    pub dns_threads: usize,
    /// Threads of the async runtime, which serves the admin API, DNS over
    /// TCP, health checks and the write path. 0: half the CPUs this
    /// process may run on (at least one), since the UDP threads take one
    /// per CPU.
    #[arg(long, default_value_t = 0, env = "SIGNPOST_WORKERS")]
    pub workers: usize,
    /// Give each UDP thread a socket of its own on the port (`SO_REUSEPORT`)
    /// instead of one socket they all read.
    #[arg(long, env = "SIGNPOST_DNS_REUSEPORT")]
    pub dns_reuseport: bool,
    /// Seed for answer ordering, for reproducible tests. Random by default.
    #[arg(long, hide = true, env = "SIGNPOST_SEED")]
    pub seed: Option<u64>,
}

impl ServeArgs {
    /// Threads of the async runtime: `--workers`, or half the CPUs.
    ///
    /// With one worker per CPU besides the UDP threads, each write woke
    /// workers on every core and cost twice the CPU under DNS load (see
    /// the README).
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => (cpus() / 2).max(1),
            n => n,
        }
    }

    /// Threads answering DNS over UDP: `--dns-threads`, or one per CPU.
    pub fn udp_threads(&self) -> usize {
        match self.dns_threads {
            0 => cpus(),
            n => n,
        }
    }
}

/// CPUs this process may run on.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The registry's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// One file in --data-dir; every acknowledged write survives a crash.
    Embedded,
    /// Memory only: for tests and throwaway use; nothing survives the process.
    Memory,
}

/// Where the client commands find the admin API.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Admin API base URL.
    #[arg(long, default_value = DEFAULT_API_URL, env = "SIGNPOST_API")]
    pub api: String,
}

/// `signpost register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// Service name.
    pub service: String,
    /// Instance address (IPv4 or IPv6).
    #[arg(long)]
    pub address: String,
    /// Instance port.
    #[arg(long)]
    pub port: u16,
    /// Instance id; defaults to the address and port (`10-0-0-5-8080`).
    #[arg(long)]
    pub id: Option<String>,
    /// Weight within its priority tier (1..65535).
    #[arg(long)]
    pub weight: Option<u16>,
    /// Priority tier, lower first (0..65535).
    #[arg(long)]
    pub priority: Option<u16>,
    /// A tag; repeat for more.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Metadata as key=value; repeat for more.
    #[arg(long = "meta", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
    /// Cluster the instance runs in.
    #[arg(long)]
    pub cluster: Option<String>,
    /// TTL of its DNS answers (`5s`).
    #[arg(long)]
    pub ttl: Option<String>,
    /// STARTING, UP or OUT_OF_SERVICE.
    #[arg(long)]
    pub status: Option<String>,
    /// Lease (`10s`): without a heartbeat for this long the instance turns
    /// critical and leaves DNS.
    #[arg(long)]
    pub lease: Option<String>,
    /// How long an instance whose lease lapsed stays before it is removed (`5m`).
    #[arg(long)]
    pub deregister_after: Option<String>,
    /// The admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `signpost heartbeat`.
#[derive(Debug, Clone, Args)]
pub struct HeartbeatArgs {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub id: String,
    /// Keep renewing at this interval instead of once (`3s`).
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// The admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `signpost deregister`.
#[derive(Debug, Clone, Args)]
pub struct DeregisterArgs {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub id: String,
    /// The admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `signpost status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub id: String,
    /// STARTING, UP or OUT_OF_SERVICE.
    pub status: String,
    /// The admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `signpost watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Service to watch; every service when absent.
    pub service: Option<String>,
    /// Start after this index (replays what came after it); now when absent.
    #[arg(long)]
    pub index: Option<u64>,
    /// Print each event's JSON instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// The admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `signpost list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Service to list instances of; all services when absent.
    pub service: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The admin API.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Where export and import read or write: a server, or a data directory.
#[derive(Debug, Clone, Args)]
pub struct BackupTarget {
    /// Admin API base URL (used unless --data-dir is given).
    #[arg(long, default_value = DEFAULT_API_URL, env = "SIGNPOST_API")]
    pub api: String,
    /// Work on this data directory directly; no server may be using it.
    #[arg(long, conflicts_with = "api")]
    pub data_dir: Option<PathBuf>,
}

/// `signpost export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// File to write; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Where from.
    #[command(flatten)]
    pub target: BackupTarget,
}

/// `signpost import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The export to read (`-` for standard input).
    pub file: PathBuf,
    /// Overwrite a registry that is not empty (its index still moves forward).
    #[arg(long)]
    pub replace: bool,
    /// Where to.
    #[command(flatten)]
    pub target: BackupTarget,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| e.to_string())
}

fn parse_key_value(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{value:?} is not key=value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["signpost", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Serve(args) => args,
            _ => unreachable!("parsed serve"),
        }
    }

    #[test]
    fn thread_counts_default_from_the_cpus() {
        let default = serve(&[]);
        assert_eq!(default.udp_threads(), cpus());
        assert_eq!(default.worker_threads(), (cpus() / 2).max(1));
        let set = serve(&["--workers", "3", "--dns-threads", "5"]);
        assert_eq!((set.worker_threads(), set.udp_threads()), (3, 5));
    }
}
