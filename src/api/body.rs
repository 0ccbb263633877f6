//! Reading request bodies: JSON objects parsed field by field, so every
//! rejection names the field it is about.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::registry::model::{ValidationError, parse_duration};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The fields of a JSON object body, taken one at a time.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses `body` as a JSON object whose keys are all in `known`.
    pub fn parse(body: Result<Bytes, BytesRejection>, known: &[&str]) -> Result<Self, ApiError> {
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(MAX_BODY)
            } else {
                ApiError::BadRequest {
                    message: format!("could not read the body: {rejection}"),
                    field: None,
                }
            }
        })?;
        let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest {
                message: format!("body is not valid JSON: {e}"),
                field: None,
            })?
        };
        let Value::Object(map) = value else {
            return Err(ApiError::BadRequest {
                message: "body must be a JSON object".into(),
                field: None,
            });
        };
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ValidationError::new(unknown.clone(), "unknown field").into());
        }
        Ok(Self(map))
    }

    /// Removes and returns `name`, treating `null` as absent.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    /// A required string.
    pub fn required_str(&mut self, name: &str) -> Result<String, ValidationError> {
        self.str(name)?
            .ok_or_else(|| ValidationError::new(name, "is required"))
    }

    /// An optional string.
    pub fn str(&mut self, name: &str) -> Result<Option<String>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be a string, not {}", kind(&other)),
            )),
        }
    }

    /// An optional integer in `min..=max`.
    pub fn int(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(ValidationError::new(
                    name,
                    format!("must be an integer from {min} to {max}, not {n}"),
                )),
            },
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be an integer, not {}", kind(&other)),
            )),
        }
    }

    /// An optional boolean.
    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be true or false, not {}", kind(&other)),
            )),
        }
    }

    /// An optional array of strings.
    pub fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s),
                    other => Err(ValidationError::new(
                        format!("{name}[{i}]"),
                        format!("must be a string, not {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be an array of strings, not {}", kind(&other)),
            )),
        }
    }

    /// An optional object of string values.
    pub fn string_map(
        &mut self,
        name: &str,
    ) -> Result<Option<Vec<(String, String)>>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    other => Err(ValidationError::new(
                        format!("{name}.{k}"),
                        format!("must be a string, not {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be an object of strings, not {}", kind(&other)),
            )),
        }
    }

    /// An optional duration: a string like `5s`, or a number of seconds.
    pub fn duration(&mut self, name: &str) -> Result<Option<std::time::Duration>, ValidationError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => parse_duration(name, &s).map(Some),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|secs| Some(std::time::Duration::from_secs(secs)))
                .ok_or_else(|| {
                    ValidationError::new(name, format!("{n} is not a whole number of seconds"))
                }),
            Some(other) => Err(ValidationError::new(
                name,
                format!("must be a duration like \"5s\", not {}", kind(&other)),
            )),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
