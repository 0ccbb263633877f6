//! `/v1/services/{service}/instances/{id}`: register, read, deregister.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::json;

use super::body::read_object;
use super::error::ApiError;
use super::{ApiState, serialized_with_index, with_index};
use crate::health::{CheckReport, Checker};
use crate::registry::Registry;
use crate::registry::codec::{InstanceJson, SPEC_FIELDS, spec_from};
use crate::registry::model::{Cluster, InstanceId, InstanceSpec, ServiceName, ValidationError};
use crate::registry::model::{Instance, Status, format_duration};

/// Fields a registration body may carry besides the spec's.
const EXTRA_FIELDS: &[&str] = &["id"];

/// Parses the path's service and id.
fn names(service: &str, id: &str) -> Result<(ServiceName, InstanceId), ApiError> {
    Ok((ServiceName::parse(service)?, InstanceId::parse(id)?))
}

/// Parses `?cas=N`.
fn cas(params: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    params
        .get("cas")
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::bad_field("cas", format!("{v:?} is not an index")))
        })
        .transpose()
}

/// Parses a registration body for instance `id`; without a `cluster` field
/// the instance is in `default_cluster`.
pub fn parse_spec(
    body: Result<Bytes, BytesRejection>,
    id: &InstanceId,
    default_cluster: &Cluster,
) -> Result<InstanceSpec, ApiError> {
    let mut f = read_object(body, SPEC_FIELDS, EXTRA_FIELDS)?;
    if let Some(body_id) = f.str("id")?
        && InstanceId::parse(&body_id)? != *id
    {
        return Err(ValidationError::new(
            "id",
            format!("{body_id:?} differs from the id in the path ({id})"),
        )
        .into());
    }
    Ok(spec_from(&mut f, default_cluster)?)
}

/// `{"index": N, "instance": {...}}`, serialized without building a `Value`.
/// With a lease, `lease_remaining` says how long until it lapses (or, once
/// it has, until the instance is removed).
#[derive(serde::Serialize)]
struct InstanceReply<'a> {
    index: u64,
    instance: InstanceJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_remaining: Option<String>,
    /// The latest result of each active check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks_status: Vec<CheckReport>,
}

fn instance_reply(
    registry: &Registry,
    checks: Option<&Checker>,
    index: u64,
    service: &ServiceName,
    instance: &Instance,
) -> Response {
    let (lease_remaining, checks_status) = live(registry, checks, service, instance);
    serialized_with_index(
        index,
        &InstanceReply {
            index,
            instance: InstanceJson::new(service, instance),
            lease_remaining,
            checks_status,
        },
    )
}

/// What is known of an instance beyond its record: the time left on its
/// lease and its checks' latest results.
pub fn live(
    registry: &Registry,
    checks: Option<&Checker>,
    service: &ServiceName,
    instance: &Instance,
) -> (Option<String>, Vec<CheckReport>) {
    // Milliseconds are enough for a lease; humantime would print nanoseconds.
    let remaining = registry
        .lease_remaining(service, &instance.id)
        .map(|d| format_duration(std::time::Duration::from_millis(d.as_millis() as u64)));
    let reports = checks
        .map(|c| c.reports(service, &instance.id))
        .unwrap_or_default();
    (remaining, reports)
}

/// `PUT`: register or replace. `?cas=N` writes only at modify index N
/// (0: only if new).
pub async fn put(
    State(ApiState {
        registry,
        default_cluster,
        checks,
        ..
    }): State<ApiState>,
    Path((service, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    let cas = cas(&params)?;
    let spec = parse_spec(body, &id, &default_cluster)?;
    let instance = registry.put_instance(&service, &id, spec, cas).await?;
    Ok(instance_reply(
        &registry,
        checks.as_deref(),
        registry.index(),
        &service,
        &instance,
    ))
}

/// `GET`: one instance; a blocking read with `?index=N&wait=30s`.
pub async fn get(
    State(ApiState {
        registry, checks, ..
    }): State<ApiState>,
    Path((service, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    super::block(&registry, &params).await?;
    let index = registry.index();
    let instance = registry.instance(&service, &id).ok_or_else(|| {
        ApiError::NotFound(format!("instance {id} of service {service} not found"))
    })?;
    Ok(instance_reply(
        &registry,
        checks.as_deref(),
        index,
        &service,
        &instance,
    ))
}

/// `PUT .../status`: sets the status (`STARTING`, `UP`, `OUT_OF_SERVICE`)
/// and keeps the rest of the registration.
pub async fn put_status(
    State(ApiState {
        registry, checks, ..
    }): State<ApiState>,
    Path((service, id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    let mut f = read_object(body, &["status"], &[])?;
    let status = Status::parse(&f.required_str("status")?)?;
    let instance = registry.set_status(&service, &id, status).await?;
    Ok(instance_reply(
        &registry,
        checks.as_deref(),
        registry.index(),
        &service,
        &instance,
    ))
}

/// `PUT .../heartbeat`: renews the lease. 404 for an unknown instance (the
/// client should register again), 422 for one without a lease.
pub async fn put_heartbeat(
    State(ApiState {
        registry, checks, ..
    }): State<ApiState>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    let instance = registry.heartbeat(&service, &id).await?;
    Ok(instance_reply(
        &registry,
        checks.as_deref(),
        registry.index(),
        &service,
        &instance,
    ))
}

/// `DELETE`: deregister. `?cas=N` deletes only at modify index N.
pub async fn delete(
    State(ApiState { registry, .. }): State<ApiState>,
    Path((service, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    let index = registry
        .delete_instance(&service, &id, cas(&params)?)
        .await?;
    Ok(with_index(
        index,
        json!({ "deleted": { "service": service, "id": id } }),
    ))
}
