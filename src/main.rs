//! The `signpost` binary: parse the command line, run, report.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use signpost::config::{Cli, Command};

/// mimalloc: the server allocates and frees many small objects per request
/// (HTTP, JSON, records); glibc's malloc was about a third of its CPU time
/// under registration load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        builder.worker_threads(args.worker_threads());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signpost: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                init_tracing();
                signpost::app::serve(args, signpost::app::shutdown_signal()).await?;
            }
            Command::Register(args) => signpost::client::register(args).await?,
            Command::Deregister(args) => signpost::client::deregister(args).await?,
            Command::List(args) => signpost::client::list(args).await?,
            Command::Status(args) => signpost::client::status(args).await?,
            Command::Heartbeat(args) => signpost::client::heartbeat(args).await?,
            Command::Watch(args) => signpost::client::watch(args).await?,
            Command::Export(args) => signpost::client::export(args).await?,
            Command::Import(args) => signpost::client::import(args).await?,
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signpost: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides. hickory logs every query at info,
/// so it is held to warnings.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,hickory_server=warn,hickory_proto=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
