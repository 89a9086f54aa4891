//! The one error shape of the API and the extractors that produce it: JSON bodies
//! (content type, size, unknown fields, types: each problem named by its field) and
//! query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// One problem with one field of a request.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where: a JSON path (`moduleMix.todo`), a query parameter, or a header.
    pub field: String,
    pub message: String,
}

/// Every error response: what failed and, for bad input, each field's problem.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: message.into(),
                details: Vec::new(),
            },
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 400 for one bad field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::fields(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 400 for the problems of a persona definition (catalog validation).
    pub fn from_problems(problems: Vec<crate::catalog::Problem>) -> Self {
        Self::fields(
            problems
                .into_iter()
                .map(|p| FieldError {
                    field: p.path,
                    message: p.message,
                })
                .collect(),
        )
    }

    /// 400 listing every bad field.
    pub fn fields(details: Vec<FieldError>) -> Self {
        let summary = match details.as_slice() {
            [one] => format!("invalid request: {}: {}", one.field, one.message),
            many => format!("invalid request: {} problems (see details)", many.len()),
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: summary,
                details,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Conflict(message) => Self::new(StatusCode::CONFLICT, message),
            StoreError::Constraint(message) => Self::new(StatusCode::BAD_REQUEST, format!("rejected: {message}")),
            other => {
                tracing::error!(err = %other, "store error while serving a request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the store failed to answer; see the daemon's log, then retry",
                )
            }
        }
    }
}

/// A JSON body, validated: `application/json`, within `api.max_body_bytes` (413
/// otherwise), and every type error or unknown field reported with its path.
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "the body is larger than api.max_body_bytes allows")
            } else {
                ApiError::new(status, format!("cannot read the body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// Parses a JSON body, naming the path of the first problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let field = if path == "." || path.is_empty() {
            "(body)".to_string()
        } else {
            path
        };
        // serde_json appends " at line L column C"; keep it only for syntax errors.
        let message = inner.to_string();
        let message = if inner.is_data() {
            message.split(" at line ").next().unwrap_or_default().to_string()
        } else {
            message
        };
        ApiError::field(field, message)
    })?;
    deserializer
        .end()
        .map_err(|err| ApiError::field("(body)", format!("unexpected text after the JSON value: {err}")))?;
    Ok(value)
}

/// A query string whose parameters are all optional text, parsed by the handler with
/// errors that name the parameter; unknown parameters are refused.
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ValidQuery(q.0))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let message = text.trim_start_matches("Failed to deserialize query string: ");
                // serde names an unknown parameter as "unknown field `name`, expected …".
                let field = message
                    .split_once("unknown field `")
                    .and_then(|(_, rest)| rest.split('`').next())
                    .unwrap_or("(query)")
                    .to_string();
                ApiError::field(field, message.to_string())
            })
    }
}

/// Parses an optional time parameter (a span back from `now`, RFC 3339, or a date),
/// naming it on failure.
pub fn instant(name: &str, value: Option<&str>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| crate::time::parse_instant(v, now).map_err(|m| ApiError::field(name, m)))
        .transpose()
}

/// Parses an optional query parameter, naming it on failure.
pub fn param<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<T>().map_err(|err| ApiError::field(name, err.to_string())))
        .transpose()
}
