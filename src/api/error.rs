//! The one error shape of the API and the extractors that produce it: JSON bodies
//! (content type, size, unknown fields, types: each problem named by its field) and
//! query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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

    /// The problems of a persona definition (catalog validation): 400 when the body does
    /// not have the documented shape, 422 when it does but breaks a rule the schema
    /// cannot state.
    pub fn from_problems(problems: Vec<crate::catalog::Problem>) -> Self {
        let shape = problems.iter().any(|p| p.shape);
        let mut error = Self::fields(
            problems
                .into_iter()
                .map(|p| FieldError {
                    field: p.path,
                    message: p.message,
                })
                .collect(),
        );
        if !shape {
            error.status = StatusCode::UNPROCESSABLE_ENTITY;
        }
        error
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
            StoreError::Constraint(message) => Self::new(StatusCode::BAD_REQUEST, message),
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

/// Parses a JSON body, naming the path of the first problem. Text with a NUL character
/// is refused here, before any store sees it (PostgreSQL cannot keep it, SQLite would).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: serde_json::Value = serde::Deserialize::deserialize(&mut deserializer)
        .map_err(|err| ApiError::field("(body)", format!("not valid JSON: {err}")))?;
    deserializer
        .end()
        .map_err(|err| ApiError::field("(body)", format!("unexpected text after the JSON value: {err}")))?;
    if let Some(path) = nul_at(&value, String::new()) {
        return Err(ApiError::field(path, "text must not contain NUL (U+0000)"));
    }
    // Every body of this API is an object; serde's derived structs would also take an
    // array of their fields in order, so `[]` would be an empty request.
    if !value.is_object() {
        let kind = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(ApiError::field("(body)", format!("must be a JSON object, got {kind}")));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." || path.is_empty() {
            "(body)".to_string()
        } else {
            path
        };
        ApiError::field(field, err.into_inner().to_string())
    })
}

/// The path of the first string (or key) holding a NUL character.
fn nul_at(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    let here = || {
        if path.is_empty() {
            "(body)".to_string()
        } else {
            path.clone()
        }
    };
    match value {
        Value::String(text) if text.contains('\0') => Some(here()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') { Some(at) } else { nul_at(item, at) }
        }),
        _ => None,
    }
}

/// A path's one parameter as text, refused (400, in the one error body) when it is not
/// valid UTF-8 once percent-decoded (`%FF`).
pub struct ValidPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ValidPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|path| ValidPath(path.0))
            .map_err(|_| ApiError::field("(path)", "the path's parameter is not valid UTF-8 text once decoded"))
    }
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
