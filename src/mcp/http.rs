//! The HTTP client under rmcp's Streamable HTTP transport: rmcp's reqwest client with
//! the persona's authorization put on every request (a bearer from the login, or OAuth
//! tokens that are obtained, refreshed and stepped up as the server's 401/403 ask), and
//! `tools/list` read raw, because rmcp's tool model drops `execution.taskSupport`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, ServerJsonRpcMessage};
use rmcp::transport::auth::AuthError;
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, InsufficientScopeError, SseError, StreamableHttpClient, StreamableHttpError,
    StreamableHttpPostResponse,
};
use serde_json::Value;
use sse_stream::Sse;

use super::oauth::Authorizer;
use crate::config::Secret;

type HttpError = StreamableHttpError<reqwest::Error>;

/// rmcp's default largest SSE event (its constant is private).
const MAX_SSE_EVENT: usize = 16 * 1024 * 1024;

/// The largest `tools/list` answer read (rmcp's own JSON limit).
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;

/// How a session's requests are authorized.
pub(super) enum HttpAuth {
    None,
    Bearer(Secret),
    OAuth(Authorizer),
}

/// Tools a server marked `execution.taskSupport: "required"` (this client makes no task
/// calls, so they are withheld).
#[derive(Default)]
pub(super) struct TaskTools(Mutex<HashSet<String>>);

impl TaskTools {
    pub(super) fn contains(&self, tool: &str) -> bool {
        self.0.lock().expect("task tools lock").contains(tool)
    }

    /// Notes the task-required tools of a `tools/list` answer.
    pub(super) fn record(&self, answer: &Value) {
        let Some(tools) = answer.pointer("/result/tools").and_then(Value::as_array) else {
            return;
        };
        let mut known = self.0.lock().expect("task tools lock");
        for tool in tools {
            if tool.pointer("/execution/taskSupport").and_then(Value::as_str) == Some("required")
                && let Some(name) = tool.get("name").and_then(Value::as_str)
            {
                known.insert(name.to_string());
            }
        }
    }
}

#[derive(Clone)]
pub(super) struct GatewayHttp {
    pub inner: reqwest::Client,
    pub auth: Arc<HttpAuth>,
    pub tasks: Arc<TaskTools>,
    pub trace: Arc<Traced>,
}

/// What a session's requests carry of the trace (rmcp sends them from its own tasks, so
/// the span of the call in progress is handed over here), and the session id the server
/// gave, for the spans.
#[derive(Debug, Default)]
pub(super) struct Traced {
    pub slot: crate::telemetry::Slot,
    pub session_id: std::sync::Mutex<Option<Arc<str>>>,
}

impl Traced {
    /// `headers` with the current call's `traceparent` and `tracestate`.
    fn headers(
        &self,
        mut headers: HashMap<HeaderName, HeaderValue>,
        session_id: Option<&Arc<str>>,
    ) -> HashMap<HeaderName, HeaderValue> {
        if let Some(id) = session_id {
            let mut seen = self.session_id.lock().expect("session id");
            if seen.as_deref() != Some(id.as_ref()) {
                *seen = Some(id.clone());
            }
        }
        if let Some((parent, state)) = crate::telemetry::trace_headers(&self.slot.get()) {
            if let Ok(value) = HeaderValue::from_str(&parent) {
                headers.insert(HeaderName::from_static("traceparent"), value);
            }
            if let Some(value) = state.and_then(|s| HeaderValue::from_str(&s).ok()) {
                headers.insert(HeaderName::from_static("tracestate"), value);
            }
        }
        headers
    }
}

fn oauth_failure(err: super::oauth::OAuthError) -> HttpError {
    StreamableHttpError::Auth(AuthError::AuthorizationFailed(err.to_string()))
}

impl GatewayHttp {
    /// Runs `call` with the session's authorization; under OAuth, a 401 or a 403
    /// `insufficient_scope` is answered by authorizing (refreshing, or stepping up) and
    /// the request is sent again, a bounded number of times.
    async fn authorized<T, F, Fut>(&self, call: F) -> Result<T, HttpError>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, HttpError>>,
    {
        match &*self.auth {
            HttpAuth::None => call(None).await,
            HttpAuth::Bearer(token) => call(Some(token.expose().to_string())).await,
            HttpAuth::OAuth(authorizer) => {
                let mut token = authorizer.token().await.map_err(oauth_failure)?;
                // A 401 then a 403 (authorize, then step up) is the longest honest path.
                for _ in 0..2 {
                    match call(token.clone()).await {
                        Err(StreamableHttpError::AuthRequired(challenge)) => {
                            token = Some(
                                authorizer
                                    .unauthorized(&challenge.www_authenticate_header, token.as_deref())
                                    .await
                                    .map_err(oauth_failure)?,
                            );
                        }
                        Err(StreamableHttpError::InsufficientScope(challenge)) => {
                            token = Some(
                                authorizer
                                    .insufficient_scope(&challenge.www_authenticate_header)
                                    .await
                                    .map_err(oauth_failure)?,
                            );
                        }
                        other => return other,
                    }
                }
                call(token).await
            }
        }
    }

    /// `tools/list` sent and read here, so the raw tool definitions can be inspected.
    async fn list_tools(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        token: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let mut request = self
            .inner
            .post(uri.as_ref())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(session) = &session_id {
            request = request.header("mcp-session-id", session.as_ref());
        }
        let response = request
            .json(&message)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = response.status();
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match (status.as_u16(), challenge) {
            (401, Some(challenge)) => {
                return Err(StreamableHttpError::AuthRequired(AuthRequiredError::new(challenge)));
            }
            (403, Some(challenge)) => {
                let scope = scope_of(&challenge);
                return Err(StreamableHttpError::InsufficientScope(InsufficientScopeError::new(
                    challenge, scope,
                )));
            }
            (404, _) if session_id.is_some() => return Err(StreamableHttpError::SessionExpired),
            _ => {}
        }
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"));
        if !status.is_success() {
            let body = crate::http::read_text(response, 4096).await.unwrap_or_default();
            return Err(StreamableHttpError::UnexpectedServerResponse(
                format!("HTTP {status}: {body}").into(),
            ));
        }
        let answer: Value = if is_sse {
            let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
            let mut found = None;
            let mut read = 0usize;
            while let Some(event) = events.next().await {
                let event = event.map_err(StreamableHttpError::Sse)?;
                let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                    continue;
                };
                read += data.len();
                if read > MAX_LIST_BYTES {
                    return Err(StreamableHttpError::ResponseBodyTooLarge {
                        max_size: MAX_LIST_BYTES,
                    });
                }
                let value: Value = serde_json::from_str(&data).map_err(StreamableHttpError::Deserialize)?;
                if value.get("result").is_some() || value.get("error").is_some() {
                    found = Some(value);
                    break;
                }
            }
            found.ok_or(StreamableHttpError::UnexpectedEndOfStream)?
        } else {
            let text = crate::http::read_text(response, MAX_LIST_BYTES)
                .await
                .map_err(|e| StreamableHttpError::UnexpectedServerResponse(e.into()))?;
            serde_json::from_str(&text).map_err(StreamableHttpError::Deserialize)?
        };
        self.tasks.record(&answer);
        let message: ServerJsonRpcMessage = serde_json::from_value(answer).map_err(StreamableHttpError::Deserialize)?;
        Ok(StreamableHttpPostResponse::Json(message, None))
    }
}

/// The `scope` of a `WWW-Authenticate` challenge.
fn scope_of(challenge: &str) -> Option<String> {
    let start = challenge.find("scope=\"")? + "scope=\"".len();
    let end = challenge[start..].find('"')?;
    Some(challenge[start..start + end].to_string())
}

fn is_list_tools(message: &ClientJsonRpcMessage) -> bool {
    matches!(message, ClientJsonRpcMessage::Request(request) if matches!(request.request, ClientRequest::ListToolsRequest(_)))
}

impl StreamableHttpClient for GatewayHttp {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        self.post_message_with_max_sse_event_size(uri, message, session_id, auth, headers, MAX_SSE_EVENT)
            .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let listing = is_list_tools(&message);
        let headers = self.trace.headers(headers, session_id.as_ref());
        self.authorized(|token| {
            let (uri, message, session_id, headers) =
                (uri.clone(), message.clone(), session_id.clone(), headers.clone());
            async move {
                if listing {
                    self.list_tools(uri, message, session_id, token, headers).await
                } else {
                    self.inner
                        .post_message_with_max_sse_event_size(
                            uri,
                            message,
                            session_id,
                            token,
                            headers,
                            max_sse_event_size,
                        )
                        .await
                }
            }
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), HttpError> {
        let headers = self.trace.headers(headers, None);
        self.authorized(|token| {
            let (uri, session_id, headers) = (uri.clone(), session_id.clone(), headers.clone());
            async move { self.inner.delete_session(uri, session_id, token, headers).await }
        })
        .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, HttpError> {
        self.get_stream_with_max_sse_event_size(uri, session_id, last_event_id, auth, headers, MAX_SSE_EVENT)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, HttpError> {
        let headers = self.trace.headers(headers, session_id.as_ref());
        self.authorized(|token| {
            let (uri, session_id, last_event_id, headers) =
                (uri.clone(), session_id.clone(), last_event_id.clone(), headers.clone());
            async move {
                self.inner
                    .get_stream_with_max_sse_event_size(
                        uri,
                        session_id,
                        last_event_id,
                        token,
                        headers,
                        max_sse_event_size,
                    )
                    .await
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn task_required_tools_are_noted_from_the_raw_listing() {
        let tasks = TaskTools::default();
        tasks.record(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "export", "inputSchema": {"type": "object"}, "execution": {"taskSupport": "required"}},
            {"name": "maybe", "inputSchema": {"type": "object"}, "execution": {"taskSupport": "optional"}},
            {"name": "plain", "inputSchema": {"type": "object"}}
        ]}}));
        assert!(tasks.contains("export"));
        assert!(!tasks.contains("maybe") && !tasks.contains("plain"));
    }

    #[test]
    fn the_scope_of_a_challenge() {
        assert_eq!(
            scope_of(r#"Bearer error="insufficient_scope", scope="mcp:basic mcp:write", resource_metadata="x""#)
                .as_deref(),
            Some("mcp:basic mcp:write")
        );
        assert_eq!(scope_of("Bearer realm=\"x\""), None);
    }
}
