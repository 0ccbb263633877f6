//! signpost: service discovery that speaks DNS.
//!
//! - [`registry`]: the truth about services and instances; commits to a store
//!   (group commit), numbers changes, tells an observer, keeps the change log
//!   for watches and the lease timers. Knows nothing of DNS or HTTP.
//! - [`projection`]: turns a changed service into ready-made DNS data and
//!   publishes immutable snapshots by atomic swap; answer ordering.
//! - [`dns`]: hickory-server transport, the registry zone (with failover,
//!   fail-open and DNS-SD), static zones, wire rules (EDNS, ECS, EDE,
//!   truncation). Reads snapshots; never sees the registry.
//! - [`health`]: active TCP/HTTP checks; reports to the registry only.
//! - [`api`]: the HTTP admin API; parses requests into registry types.
//! - [`client`]: the client commands (`register`, `list`, `watch`, `export`, ...).
//! - [`config`]: command line and defaults. [`app`]: wiring.

pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod dns;
pub mod health;
pub mod projection;
pub mod registry;
