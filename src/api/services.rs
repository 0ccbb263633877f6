//! `/v1/services` and `/v1/services/{service}`: listings and settings.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::body::Fields;
use super::error::ApiError;
use super::instances::instance_json;
use super::{ApiState, with_index};
use crate::registry::model::{Cluster, LbPolicy, ServiceName, ServiceSettings};

fn settings_json(settings: &ServiceSettings) -> Value {
    json!({ "lb": settings.lb, "failover": settings.failover, "fail_open": settings.fail_open })
}

/// `GET /v1/services`: every service with its instance counts.
pub async fn list(State(ApiState { registry, .. }): State<ApiState>) -> Response {
    let index = registry.index();
    let services: Vec<Value> = registry
        .services()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "instances": s.instances,
                "served": s.served,
                "settings": settings_json(&s.settings.clone().unwrap_or_default()),
            })
        })
        .collect();
    with_index(index, json!({ "services": services }))
}

/// `GET /v1/services/{service}`: settings and every instance.
pub async fn get(
    State(ApiState { registry, .. }): State<ApiState>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let name = ServiceName::parse(&service)?;
    let index = registry.index();
    let state = registry
        .service(&name)
        .ok_or_else(|| ApiError::NotFound(format!("service {name} not found")))?;
    let instances: Vec<Value> = state
        .instances
        .iter()
        .map(|i| instance_json(&name, i))
        .collect();
    Ok(with_index(
        index,
        json!({
            "service": name,
            "settings": settings_json(&state.settings.unwrap_or_default()),
            "instances": instances,
        }),
    ))
}

/// `PUT /v1/services/{service}`: settings. Fields left out keep their
/// defaults (the body is the whole new settings).
pub async fn put_settings(
    State(ApiState { registry, .. }): State<ApiState>,
    Path(service): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = ServiceName::parse(&service)?;
    let mut f = Fields::parse(body, &["lb", "failover", "fail_open"])?;
    let mut settings = ServiceSettings::default();
    if let Some(lb) = f.str("lb")? {
        settings.lb = LbPolicy::parse(&lb)?;
    }
    if let Some(failover) = f.strings("failover")? {
        settings.failover = failover
            .iter()
            .enumerate()
            .map(|(i, c)| Cluster::parse_field(&format!("failover[{i}]"), c))
            .collect::<Result<_, _>>()?;
    }
    if let Some(fail_open) = f.bool("fail_open")? {
        settings.fail_open = fail_open;
    }
    let index = registry.put_settings(&name, settings.clone()).await?;
    Ok(with_index(
        index,
        json!({ "service": name, "settings": settings_json(&settings) }),
    ))
}
