//! `/v1/export` and `/v1/import`: the whole registry as one JSON document,
//! for backup and migration, with its index.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::{raw_json, read_body};
use super::error::ApiError;
use super::{ApiState, INDEX_HEADER, with_index};
use crate::registry::codec::{state_from_raw, state_to_json};

/// Largest import accepted: about a million instances.
pub const MAX_IMPORT: usize = 512 * 1024 * 1024;

/// `GET /v1/export`: everything, as of one index (which the document and
/// the index header carry).
pub async fn export(State(ApiState { registry, .. }): State<ApiState>) -> Response {
    let state = registry.export();
    let mut response = axum::Json(state_to_json(&state)).into_response();
    response
        .headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(state.index));
    response
}

/// `PUT /v1/import[?replace=true]`: replaces everything with an export, in
/// one commit. Refused (409) over a registry that is not empty unless
/// `replace` is true.
pub async fn import(
    State(ApiState { registry, .. }): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let replace = match params.get("replace").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_field(
                "replace",
                format!("{other:?} is not true or false"),
            ));
        }
    };
    let body = read_body(body, MAX_IMPORT)?;
    let backup = state_from_raw(raw_json(&body)?)?;
    drop(body);
    let (services, instances) = (
        backup.instances.len(),
        backup.instances.values().map(|m| m.len()).sum::<usize>(),
    );
    let index = registry.restore(backup, replace).await?;
    Ok(with_index(
        index,
        json!({ "imported": { "services": services, "instances": instances } }),
    ))
}
