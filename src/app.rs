//! Wiring: builds the registry, the projection, DNS and the API, prints
//! where they listen, and runs them until shutdown. The only module that
//! sees every other.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::config::{ServeArgs, StoreKind};
use crate::dns::handler::{DnsHandler, QueryRng, Zones};
use crate::dns::registry_zone::{RegistryZone, RegistryZoneConfig};
use crate::dns::zones::{self, ZoneError};
use crate::health::Checker;
use crate::projection::{Projection, ProjectionConfig};
use crate::registry::model::Cluster;
use crate::registry::store::redb::{DataDirError, RedbStore};
use crate::registry::store::{MemoryStore, Store, StoreError};
use crate::registry::{Observers, Registry};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is invalid.
    #[error("invalid --{flag}: {message}")]
    Config {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A zone file could not be served.
    #[error("zone file {0}")]
    Zone(#[from] ZoneError),
    /// The data directory cannot be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The store could not be loaded.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A socket could not be bound or served.
    #[error("{what} {addr}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Runs the server until `shutdown` completes.
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let config_error = |flag, message: String| AppError::Config { flag, message };
    let mut domain = Name::from_ascii(args.domain.trim_end_matches('.'))
        .map_err(|e| config_error("domain", e.to_string()))?
        .to_lowercase();
    domain.set_fqdn(true);
    if domain.is_root() {
        return Err(config_error(
            "domain",
            "the root cannot be the registry zone".into(),
        ));
    }
    let cluster = Cluster::parse(&args.cluster).map_err(|e| config_error("cluster", e.message))?;
    let negative_ttl = u32::try_from(args.negative_ttl.as_secs()).unwrap_or(u32::MAX);

    let statics = zones::load_dir(&args.zones_dir)?;
    if let Some(clash) = statics.iter().find(|z| **z.origin() == domain) {
        return Err(ZoneError::Invalid {
            path: clash.path().to_owned(),
            message: format!("zone {domain} is the registry zone (--domain)"),
        }
        .into());
    }
    for zone in &statics {
        tracing::info!(zone = %zone.origin(), file = %zone.path().display(), names = zone.len(), "loaded zone");
    }

    let projection = Arc::new(Projection::new(ProjectionConfig {
        domain: domain.clone(),
        cluster: cluster.as_str().to_string(),
    }));
    let store: Arc<dyn Store> = match args.store {
        StoreKind::Embedded => {
            Arc::new(RedbStore::open(&args.data_dir)?.checkpoint_interval(args.checkpoint_interval))
        }
        StoreKind::Memory => Arc::new(MemoryStore::new()),
    };
    // Everything stored is loaded and projected before any port opens.
    let started = std::time::Instant::now();
    let checker = Checker::new();
    let observers = Observers(vec![projection.clone(), Arc::new(checker.clone())]);
    let registry = Arc::new(Registry::open(store, Arc::new(observers)).await?);
    checker.attach(&registry);
    tracing::info!(
        store = registry.store_kind(),
        index = registry.index(),
        services = registry.service_names().len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registry loaded"
    );

    let ns_addresses = if !args.ns_addresses.is_empty() {
        args.ns_addresses.clone()
    } else if args.dns_addr.ip().is_unspecified() {
        Vec::new()
    } else {
        vec![args.dns_addr.ip()]
    };
    let zones = Arc::new(Zones {
        registry: RegistryZone::new(
            RegistryZoneConfig {
                domain: domain.clone(),
                cluster: cluster.as_str().to_string(),
                negative_ttl,
                ns_addresses,
            },
            projection,
        ),
        statics,
    });

    let io_error = |what, addr| move |source| AppError::Io { what, addr, source };
    let listeners = crate::dns::bind(args.dns_addr, args.udp_threads(), args.dns_reuseport)
        .await
        .map_err(io_error("cannot bind DNS to", args.dns_addr))?;
    let dns_addr = listeners
        .local_addr()
        .map_err(io_error("cannot bind DNS to", args.dns_addr))?;
    let http = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(io_error("cannot bind the API to", args.http_addr))?;
    let http_addr = http
        .local_addr()
        .map_err(io_error("cannot bind the API to", args.http_addr))?;

    let dns = crate::dns::serve(DnsHandler::new(zones, QueryRng::new(args.seed)), listeners)
        .map_err(io_error("cannot serve DNS on", dns_addr))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let router = crate::api::router(
        registry.clone(),
        cluster.clone(),
        stop_rx.clone(),
        Some(checker.clone()),
    );
    let api = axum::serve(http, router).with_graceful_shutdown(async move {
        let mut stop_rx = stop_rx;
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });

    // Tests and scripts read these two lines to find the ports.
    println!("dns listening on {dns_addr} (udp, tcp) zone {domain} cluster {cluster}");
    println!("api listening on http://{http_addr}");
    tracing::info!(%dns_addr, %http_addr, store = registry.store_kind(), "signpost started");

    let api_task = tokio::spawn(async move { api.await });
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    dns.shutdown().await;
    match api_task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(AppError::Io {
            what: "API server failed on",
            addr: http_addr,
            source,
        }),
        Err(_) => Ok(()),
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
