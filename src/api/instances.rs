//! `/v1/services/{service}/instances/{id}`: register, read, deregister.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::body::Fields;
use super::error::ApiError;
use super::{ApiState, with_index};
use crate::registry::model::{
    Cluster, Instance, InstanceId, InstanceSpec, MAX_TAGS, MAX_TTL, Meta, ServiceName, Status, Tag,
    ValidationError, format_duration,
};

/// Fields a registration body may carry.
const FIELDS: &[&str] = &[
    "id",
    "address",
    "port",
    "weight",
    "priority",
    "tags",
    "meta",
    "cluster",
    "ttl",
    "status",
    "lease",
    "deregister_after",
    "checks",
];

/// Fields of DESIGN §1 that arrive with leases and health checks.
const NOT_YET: &[&str] = &["lease", "deregister_after", "checks"];

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
    let mut f = Fields::parse(body, FIELDS)?;
    for field in NOT_YET {
        if f.take(field).is_some() {
            return Err(ValidationError::new(
                *field,
                "is not supported yet: leases and health checks are not implemented",
            )
            .into());
        }
    }
    if let Some(body_id) = f.str("id")?
        && InstanceId::parse(&body_id)? != *id
    {
        return Err(ValidationError::new(
            "id",
            format!("{body_id:?} differs from the id in the path ({id})"),
        )
        .into());
    }
    let address_text = f.required_str("address")?;
    let address: IpAddr = address_text.trim().parse().map_err(|_| {
        ValidationError::new(
            "address",
            format!("{address_text:?} is not an IPv4 or IPv6 address"),
        )
    })?;
    if address.is_unspecified() || address.is_multicast() {
        return Err(
            ValidationError::new("address", format!("{address} cannot be connected to")).into(),
        );
    }
    let port = f
        .int("port", 1, 65535)?
        .ok_or_else(|| ValidationError::new("port", "is required"))?;
    let mut spec = InstanceSpec::new(address, port as u16);
    spec.cluster = default_cluster.clone();
    if let Some(weight) = f.int("weight", 1, 65535)? {
        spec.weight = weight as u16;
    }
    if let Some(priority) = f.int("priority", 0, 65535)? {
        spec.priority = priority as u16;
    }
    if let Some(tags) = f.strings("tags")? {
        let mut parsed = tags
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Tag::parse(t).map_err(|e| ValidationError::new(format!("tags[{i}]"), e.message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort();
        parsed.dedup();
        if parsed.len() > MAX_TAGS {
            return Err(ValidationError::new(
                "tags",
                format!("{} tags; at most {MAX_TAGS}", parsed.len()),
            )
            .into());
        }
        spec.tags = parsed;
    }
    if let Some(meta) = f.string_map("meta")? {
        spec.meta = Meta::parse(meta.into_iter().collect::<BTreeMap<_, _>>())?;
    }
    if let Some(cluster) = f.str("cluster")? {
        spec.cluster = Cluster::parse(&cluster)?;
    }
    if let Some(ttl) = f.duration("ttl")? {
        if ttl.subsec_nanos() != 0 || ttl > MAX_TTL {
            return Err(ValidationError::new(
                "ttl",
                format!("must be whole seconds up to {}", format_duration(MAX_TTL)),
            )
            .into());
        }
        spec.ttl = ttl;
    }
    if let Some(status) = f.str("status")? {
        spec.status = Status::parse(&status)?;
    }
    Ok(spec)
}

/// An instance as the API shows it.
pub fn instance_json(service: &ServiceName, instance: &Instance) -> Value {
    let i = &instance.spec;
    json!({
        "service": service,
        "id": instance.id,
        "address": i.address.to_string(),
        "port": i.port,
        "weight": i.weight,
        "priority": i.priority,
        "tags": i.tags,
        "meta": i.meta,
        "cluster": i.cluster,
        "ttl": format_duration(i.ttl),
        "status": i.status,
        "create_index": instance.create_index,
        "modify_index": instance.modify_index,
    })
}

/// `PUT`: register or replace. `?cas=N` writes only at modify index N
/// (0: only if new).
pub async fn put(
    State(ApiState {
        registry,
        default_cluster,
    }): State<ApiState>,
    Path((service, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    let cas = cas(&params)?;
    let spec = parse_spec(body, &id, &default_cluster)?;
    let instance = registry.put_instance(&service, &id, spec, cas).await?;
    Ok(with_index(
        registry.index(),
        json!({ "instance": instance_json(&service, &instance) }),
    ))
}

/// `GET`: one instance.
pub async fn get(
    State(ApiState { registry, .. }): State<ApiState>,
    Path((service, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (service, id) = names(&service, &id)?;
    let index = registry.index();
    let instance = registry.instance(&service, &id).ok_or_else(|| {
        ApiError::NotFound(format!("instance {id} of service {service} not found"))
    })?;
    Ok(with_index(
        index,
        json!({ "instance": instance_json(&service, &instance) }),
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
