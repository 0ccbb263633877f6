//! Reading request bodies: a JSON object, within the size limit, handed to
//! the registry's field-by-field parser.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::registry::codec::Fields;

/// Largest request body accepted (imports excepted).
pub const MAX_BODY: usize = 64 * 1024;

/// Parses `body` as a JSON object whose keys are all in `known` or `also`.
/// An empty body is an empty object.
pub fn read_object(
    body: Result<Bytes, BytesRejection>,
    known: &[&str],
    also: &[&str],
) -> Result<Fields, ApiError> {
    let value = read_json(body, MAX_BODY)?;
    if !value.is_object() {
        return Err(ApiError::BadRequest {
            message: "body must be a JSON object".into(),
            field: None,
        });
    }
    Ok(Fields::of(value, known, also)?)
}

/// Parses `body` as JSON; `limit` is named when the body was over it.
pub fn read_json(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Value, ApiError> {
    let body = read_body(body, limit)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(&body).map_err(not_json)
}

/// `body` as raw JSON, for documents too large to parse into one tree. An
/// empty body is an empty object.
pub fn raw_json(body: &[u8]) -> Result<&RawValue, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_str("{}").map_err(not_json);
    }
    serde_json::from_slice(body).map_err(not_json)
}

fn not_json(e: serde_json::Error) -> ApiError {
    ApiError::BadRequest {
        message: format!("body is not valid JSON: {e}"),
        field: None,
    }
}

/// The body; `limit` is named when it was over it.
pub fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest {
                message: format!("could not read the body: {rejection}"),
                field: None,
            }
        }
    })
}
