//! The API's one error type: every failure becomes `{"error", "field"}` with
//! a status that says whose fault it is. Internals never leak.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::registry::RegistryError;
use crate::registry::model::ValidationError;

/// A request that could not be carried out. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: not JSON, a bad query parameter (400).
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The parameter, if one is to blame.
        field: Option<String>,
    },
    /// A value is invalid (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No such service, instance or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists, the method does not (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A conditional write lost (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit (413).
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// The store could not commit; retry later (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A 400 about `field`.
    pub fn bad_field(field: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            e @ RegistryError::NoLease(_) => {
                Self::Invalid(ValidationError::new("lease", e.to_string()))
            }
            e @ RegistryError::Conflict { .. } => Self::Conflict(e.to_string()),
            RegistryError::Store(e) => {
                tracing::warn!(error = %e, "store refused a write");
                Self::Unavailable(
                    "the store is unavailable; nothing was changed, retry later".into(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match &self {
            Self::Invalid(e) => json!({ "error": e.message, "field": e.field }),
            Self::BadRequest {
                message,
                field: Some(field),
            } => json!({ "error": message, "field": field }),
            other => json!({ "error": other.to_string() }),
        };
        (self.status(), Json(body)).into_response()
    }
}
