//! `/v1/services` and `/v1/services/{service}`: listings and settings.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::body::read_object;
use super::error::ApiError;
use super::{ApiState, with_index};
use crate::registry::codec::{SETTINGS_FIELDS, instance_to_json, settings_from, settings_to_json};
use crate::registry::model::ServiceName;

/// `GET /v1/services`: every service with its instance counts; a blocking
/// read with `?index=N&wait=30s`.
pub async fn list(
    State(ApiState { registry, .. }): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    super::block(&registry, &params).await?;
    let index = registry.index();
    let services: Vec<Value> = registry
        .services()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "instances": s.instances,
                "served": s.served,
                "settings": settings_to_json(&s.settings.clone().unwrap_or_default()),
            })
        })
        .collect();
    Ok(with_index(index, json!({ "services": services })))
}

/// `GET /v1/services/{service}`: settings and every instance, each with its
/// lease time left and latest check results; a blocking read with
/// `?index=N&wait=30s`.
pub async fn get(
    State(ApiState {
        registry, checks, ..
    }): State<ApiState>,
    Path(service): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = ServiceName::parse(&service)?;
    super::block(&registry, &params).await?;
    let index = registry.index();
    let state = registry
        .service(&name)
        .ok_or_else(|| ApiError::NotFound(format!("service {name} not found")))?;
    let instances: Vec<Value> = state
        .instances
        .iter()
        .map(|i| {
            let mut value = instance_to_json(&name, i);
            let (remaining, reports) =
                super::instances::live(&registry, checks.as_deref(), &name, i);
            if let Some(remaining) = remaining {
                value["lease_remaining"] = json!(remaining);
            }
            if !reports.is_empty() {
                value["checks_status"] = json!(reports);
            }
            value
        })
        .collect();
    Ok(with_index(
        index,
        json!({
            "service": name,
            "settings": settings_to_json(&state.settings.unwrap_or_default()),
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
    let settings = settings_from(&mut read_object(body, SETTINGS_FIELDS, &[])?)?;
    let index = registry.put_settings(&name, settings.clone()).await?;
    Ok(with_index(
        index,
        json!({ "service": name, "settings": settings_to_json(&settings) }),
    ))
}
