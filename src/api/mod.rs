//! The admin API (DESIGN §4): HTTP/JSON over axum. It parses and validates
//! requests into registry types and renders registry state; it knows nothing
//! of DNS.

mod backup;
mod body;
mod error;
mod instances;
mod services;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::json;

pub use body::MAX_BODY;
pub use error::ApiError;

use crate::registry::Registry;
use crate::registry::model::Cluster;

/// What every handler gets.
#[derive(Clone)]
pub struct ApiState {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The cluster of instances registered without one: the server's own.
    pub default_cluster: Cluster,
    /// Becomes true when the server stops: long-lived answers (watch
    /// streams) end so that shutdown does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The check scheduler, for the latest check results (none in tests
    /// that run no checks).
    pub checks: Option<Arc<crate::health::Checker>>,
}

/// Header carrying the registry index on every response.
pub const INDEX_HEADER: HeaderName = HeaderName::from_static("x-signpost-index");

/// The admin API over `registry`; instances registered without a cluster go
/// to `default_cluster`; watch streams end when `stopping` turns true.
pub fn router(
    registry: Arc<Registry>,
    default_cluster: Cluster,
    stopping: tokio::sync::watch::Receiver<bool>,
    checks: Option<Arc<crate::health::Checker>>,
) -> Router {
    let state = ApiState {
        registry: registry.clone(),
        stopping,
        checks,
        default_cluster,
    };
    Router::new()
        .route("/v1/services", get(services::list))
        .route(
            "/v1/services/{service}",
            get(services::get).put(services::put_settings),
        )
        .route(
            "/v1/services/{service}/instances/{id}",
            get(instances::get)
                .put(instances::put)
                .delete(instances::delete),
        )
        .route(
            "/v1/services/{service}/instances/{id}/status",
            put(instances::put_status),
        )
        .route(
            "/v1/services/{service}/instances/{id}/heartbeat",
            put(instances::put_heartbeat),
        )
        .route("/v1/watch", get(watch::watch))
        .route("/v1/export", get(backup::export))
        .route(
            "/v1/import",
            put(backup::import).layer(DefaultBodyLimit::max(backup::MAX_IMPORT)),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response_with_state(
            registry, add_index,
        ))
        .with_state(state)
}

/// Adds the registry index to responses that do not carry one yet.
async fn add_index(State(registry): State<Arc<Registry>>, mut response: Response) -> Response {
    if !response.headers().contains_key(INDEX_HEADER) {
        response
            .headers_mut()
            .insert(INDEX_HEADER, HeaderValue::from(registry.index()));
    }
    response
}

/// A JSON body with `index` in it and in the index header.
fn with_index(index: u64, mut body: serde_json::Value) -> Response {
    body["index"] = json!(index);
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index));
    response
}

/// Longest a blocking read waits, and how long it waits when it names no `wait`.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(600);
const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// A blocking read (`?index=N&wait=30s`, as in Consul): waits until the
/// registry index passes N, or for `wait` (default 5 min, at most 10 min).
/// Without `index` it does not wait.
async fn block(
    registry: &Registry,
    params: &std::collections::HashMap<String, String>,
) -> Result<(), ApiError> {
    let Some(index) = params.get("index") else {
        return Ok(());
    };
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::bad_field("index", format!("{index:?} is not an index")))?;
    let wait = match params.get("wait") {
        None => DEFAULT_WAIT,
        Some(w) => crate::registry::model::parse_duration("wait", w)?.min(MAX_WAIT),
    };
    registry.wait_past(index, wait).await;
    Ok(())
}

/// `body` as JSON (it carries `index` itself), with the index header.
fn serialized_with_index<T: serde::Serialize>(index: u64, body: &T) -> Response {
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index));
    response
}

/// Liveness: the process answers.
async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: the registry is loaded (it is before the API listens).
async fn ready(State(ApiState { registry, .. }): State<ApiState>) -> Response {
    with_index(
        registry.index(),
        json!({ "status": "ready", "store": registry.store_kind() }),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see DESIGN §4 for the API".into())
}
