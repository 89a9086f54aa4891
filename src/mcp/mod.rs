//! The product's MCP gateway, as a client: opening a session (Streamable HTTP with the
//! persona's bearer or OAuth tokens and headers, or a stdio child process with a clean
//! environment), the handshake at the newest protocol version that still has one, the
//! client capabilities the persona answers (elicitation, sampling, roots), listing every
//! page of tools, the tool policy, and calling tools with a timeout.
//!
//! Every step has a deadline and every failure says, in words, which server, which step
//! and what the root cause was. A session that closes ends: no call is sent into it.
//!
//! Invariant: this is the only module that knows rmcp's client types. The rest of the
//! crate sees [`ToolInfo`], [`CallOutcome`], [`McpError`] and the [`Agent`] it implements.

mod client;
mod content;
mod error;
mod http;
mod oauth;
mod policy;
mod stdio;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use crate::auth::Credentials;
use crate::config::{McpConfig, McpTransport};
use crate::telemetry::{self, semconv};
pub use client::{
    Agent, Capabilities, ElicitationAnswer, ElicitationRequest, SamplingRefused, SamplingReply, SamplingRequest,
    SamplingTurn, ServerRequest, apply_defaults,
};
pub use error::{McpError, Step};
pub use oauth::OAuth;
use opentelemetry::KeyValue;
pub use policy::ToolPolicy;

/// A tool as the rest of the crate sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub module: String,
    pub description: Option<String>,
    /// The tool's input JSON Schema (an object schema), shared: every tick holds the
    /// tools it was offered, and a deep copy per tick showed up in profiles.
    pub input_schema: Arc<Value>,
    pub destructive: bool,
    /// It must be called as a task, which this client does not do (it is withheld).
    pub task_required: bool,
}

/// How a tool call ended, when the gateway answered at all.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    Ok {
        text: String,
    },
    /// The tool reported an error (`isError`), or the gateway refused the call
    /// (unknown tool, invalid parameters, an HTTP error status).
    Error {
        text: String,
    },
    /// The product refused the call for this persona (HTTP 403: not a member of the
    /// space it named, say): the product's permission working, not a tool failing.
    Denied {
        text: String,
    },
}

/// The HTTP client of every MCP session, built once (TLS setup is not per tick): a session's
/// requests reuse its connection. No overall timeout: a session's event stream lives as
/// long as the session; every step has its own deadline.
fn session_http() -> &'static reqwest::Client {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        crate::http::builder(Duration::from_secs(10))
            .build()
            .expect("a reqwest client with static settings builds")
    });
    &CLIENT
}

/// Everything opening a session needs.
pub struct Connect<'a> {
    pub config: &'a McpConfig,
    pub policy: &'a ToolPolicy,
    pub credentials: &'a Credentials,
    /// The persona (its email) the session is for: OAuth grants are per persona.
    pub persona: &'a str,
    /// Set with `auth.mode = "oauth"`.
    pub oauth: Option<Arc<OAuth>>,
    /// Who answers the server's elicitation and sampling requests.
    pub agent: Option<Arc<dyn Agent>>,
    pub capabilities: Capabilities,
}

/// An open MCP session.
pub struct McpSession {
    service: RunningService<RoleClient, client::PersonaClient>,
    tools: Vec<ToolInfo>,
    call_timeout: Duration,
    server: String,
    child: Option<stdio::Child>,
    auth: Option<Arc<http::HttpAuth>>,
    credentials_sent: bool,
    transport: McpTransport,
    trace: Arc<http::Traced>,
}

fn transport_name(transport: McpTransport) -> &'static str {
    match transport {
        McpTransport::Http => "tcp",
        McpTransport::Stdio => "pipe",
    }
}

/// A client span of one MCP method outside a tool call (`initialize`, `tools/list`).
fn method_span(method: &'static str, transport: McpTransport) -> telemetry::Span {
    telemetry::Span::child(
        method,
        telemetry::Kind::Client,
        vec![
            KeyValue::new(semconv::MCP_METHOD_NAME, method),
            KeyValue::new(semconv::NETWORK_TRANSPORT, transport_name(transport)),
        ],
    )
}

/// Renders `{name}` placeholders from the session values. Unknown names are an error
/// naming the header, so a typo is not sent as literal braces.
pub fn render_header(
    header: &str,
    template: &str,
    values: &std::collections::BTreeMap<String, String>,
) -> Result<String, McpError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| McpError::Header {
            header: header.into(),
            reason: format!("unclosed `{{` in `{template}`"),
        })?;
        let name = &rest[start + 1..start + end];
        let value = values.get(name).ok_or_else(|| McpError::Header {
            header: header.into(),
            reason: format!(
                "unknown placeholder `{{{name}}}`; known: {}",
                values.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
        })?;
        out.push_str(value);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn headers(config: &McpConfig, credentials: &Credentials) -> Result<HashMap<HeaderName, HeaderValue>, McpError> {
    let mut headers = HashMap::new();
    for (name, template) in &config.headers {
        let value = render_header(name, template, &credentials.values)?;
        let header_name = name.parse::<HeaderName>().map_err(|e| McpError::Header {
            header: name.clone(),
            reason: e.to_string(),
        })?;
        let header_value = value.parse::<HeaderValue>().map_err(|e| McpError::Header {
            header: name.clone(),
            reason: e.to_string(),
        })?;
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// `step` under the connect deadline.
async fn timed<T>(
    server: &str,
    step: Step,
    timeout: Duration,
    child: Option<&stdio::Child>,
    future: impl Future<Output = Result<T, McpError>>,
) -> Result<T, McpError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => {
            let detail = child.map(|c| c.observed.account()).filter(|a| !a.is_empty());
            Err(McpError::Hung {
                server: server.to_string(),
                step,
                timeout: crate::time::HumanDuration(timeout),
                detail: detail.map(|d| format!(": {d}")).unwrap_or_default(),
            })
        }
    }
}

/// A session's service, once `initialize` is done, with what it needs to report on it.
struct Opened {
    service: RunningService<RoleClient, client::PersonaClient>,
    server: String,
    child: Option<stdio::Child>,
    auth: Option<Arc<http::HttpAuth>>,
    credentials_sent: bool,
}

impl McpSession {
    /// Opens a session and lists every page of tools.
    pub async fn connect(setup: Connect<'_>) -> Result<Self, McpError> {
        let config = setup.config;
        let timeout = config.connect_timeout.0;
        let tasks = Arc::new(http::TaskTools::default());
        let trace = Arc::new(http::Traced::default());
        let handler = client::PersonaClient {
            agent: setup.agent.clone(),
            capabilities: setup.capabilities.clone(),
            trace: trace.slot.clone(),
        };
        let connecting = telemetry::current();
        let initialize = method_span("initialize", config.transport);
        trace.slot.set(initialize.context());
        let opened = match config.transport {
            McpTransport::Http => open_http(&setup, handler, tasks.clone(), trace.clone()).await,
            McpTransport::Stdio => open_stdio(config, handler, tasks.clone()).await,
        };
        let Opened {
            service,
            server,
            child,
            auth,
            credentials_sent,
        } = opened.inspect_err(|err| initialize.fail(err.kind(), "initialize failed"))?;
        if let Some(info) = service.peer_info() {
            initialize.set(semconv::MCP_PROTOCOL_VERSION, info.protocol_version.to_string());
        }
        drop(initialize);
        let listing = method_span("tools/list", config.transport);
        trace.slot.set(listing.context());
        let listed = timed(&server, Step::ListTools, timeout, child.as_ref(), async {
            service.list_all_tools().await.map_err(|err| {
                if let Some((status, challenge)) = error::challenge_of(&err) {
                    return error::unauthorized(&server, Step::ListTools, status, &challenge, credentials_sent);
                }
                McpError::Failed {
                    server: server.clone(),
                    step: Step::ListTools,
                    cause: service_cause(&err, child.as_ref()),
                }
            })
        })
        .await
        .inspect_err(|err| listing.fail(err.kind(), "tools/list failed"))?;
        listing.set(semconv::TOOLS_OFFERED, listed.len() as i64);
        drop(listing);
        trace.slot.set(connecting);
        let tools = listed
            .into_iter()
            .map(|tool| ToolInfo {
                module: setup.policy.module_of(&tool.name),
                task_required: tasks.contains(&tool.name),
                name: tool.name.to_string(),
                description: tool.description.map(|d| d.to_string()),
                // The listing is ours alone: the schema moves out without a copy.
                input_schema: Arc::new(Value::Object(
                    Arc::try_unwrap(tool.input_schema).unwrap_or_else(|shared| (*shared).clone()),
                )),
                destructive: tool
                    .annotations
                    .as_ref()
                    .and_then(|a| a.destructive_hint)
                    .unwrap_or(false),
            })
            .collect();
        Ok(Self {
            service,
            tools,
            call_timeout: config.call_timeout.0,
            server,
            child,
            auth,
            credentials_sent,
            transport: config.transport,
            trace,
        })
    }

    /// The MCP attributes of a call's span: session, protocol version, transport.
    pub fn span_attributes(&self) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new(semconv::MCP_METHOD_NAME, "tools/call"),
            KeyValue::new(semconv::NETWORK_TRANSPORT, transport_name(self.transport)),
        ];
        if let Some(version) = self.protocol_version() {
            attributes.push(KeyValue::new(semconv::MCP_PROTOCOL_VERSION, version));
        }
        if let Some(id) = self.trace.session_id.lock().expect("session id").as_deref() {
            attributes.push(KeyValue::new(semconv::MCP_SESSION_ID, id.to_string()));
        }
        attributes
    }

    /// The protocol version the gateway agreed to.
    pub fn protocol_version(&self) -> Option<String> {
        self.service.peer_info().map(|info| info.protocol_version.to_string())
    }

    /// Every tool the gateway listed (before the policy).
    pub fn tools(&self) -> &[ToolInfo] {
        &self.tools
    }

    /// The tokens this session authorized with (for the redactor).
    pub fn secrets(&self) -> Vec<String> {
        match self.auth.as_deref() {
            Some(http::HttpAuth::OAuth(authorizer)) => authorizer.issued(),
            _ => Vec::new(),
        }
    }

    /// Calls a tool once (never retried: it may have executed). A timeout drops the
    /// request, which makes rmcp send `notifications/cancelled`.
    pub async fn call(
        &self,
        name: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<(CallOutcome, Duration), McpError> {
        let started = Instant::now();
        let mut request = CallToolRequestParams::new(name.to_string()).with_arguments(arguments);
        // The call's span is its trace context: in the HTTP headers (rmcp sends from its own
        // task) and in `params._meta` (SEP-414), which reaches a stdio server too.
        let cx = telemetry::current();
        if let Some((parent, state)) = telemetry::trace_headers(&cx) {
            let mut meta = rmcp::model::RequestMetaObject::new();
            meta.0.set_traceparent(parent);
            if let Some(state) = state {
                meta.0.set_tracestate(state);
            }
            request.meta = Some(meta);
        }
        let _call_context = self.trace.slot.enter(cx);
        let result = tokio::time::timeout(self.call_timeout, self.service.call_tool(request))
            .await
            .map_err(|_| {
                telemetry::fail_current("timeout", "the tool call timed out (mcp.call_timeout)");
                McpError::Timeout {
                    tool: name.into(),
                    timeout: crate::time::HumanDuration(self.call_timeout),
                }
            })?;
        let elapsed = started.elapsed();
        match result {
            Ok(result) => {
                let text = content::render(&result);
                Ok((
                    if result.is_error.unwrap_or(false) {
                        telemetry::fail_current(semconv::TOOL_ERROR, "the tool answered with an error (isError)");
                        CallOutcome::Error { text }
                    } else {
                        CallOutcome::Ok { text }
                    },
                    elapsed,
                ))
            }
            // The gateway answered with a JSON-RPC error: unknown tool, invalid params.
            Err(rmcp::ServiceError::McpError(error)) => {
                telemetry::fail_current(&error.code.0.to_string(), "the gateway answered with a JSON-RPC error");
                Ok((
                    CallOutcome::Error {
                        text: format!("error {}: {}", error.code.0, error.message),
                    },
                    elapsed,
                ))
            }
            Err(err) => {
                if let Some(child) = &self.child {
                    child.observed.settle().await;
                }
                if let Some((status, challenge)) = error::challenge_of(&err) {
                    return Err(error::unauthorized(
                        &self.server,
                        Step::Initialize,
                        status,
                        &challenge,
                        self.credentials_sent,
                    ));
                }
                // An HTTP error status is the product answering badly, not the session
                // going away.
                if let Some(why) = forbidden(&err) {
                    telemetry::fail_current("403", "the product denied the call (HTTP 403)");
                    let text = match why.trim() {
                        "" => "denied by the product (HTTP 403)".to_string(),
                        why => format!("denied by the product (HTTP 403): {why}"),
                    };
                    return Ok((CallOutcome::Denied { text }, elapsed));
                }
                if let Some(status) = http_status(&err) {
                    telemetry::fail_current(&status.to_string(), "the gateway answered with an HTTP error status");
                    return Ok((
                        CallOutcome::Error {
                            text: format!("the gateway answered HTTP {status}"),
                        },
                        elapsed,
                    ));
                }
                Err(McpError::Closed {
                    tool: name.into(),
                    cause: service_cause(&err, self.child.as_ref()),
                })
            }
        }
    }

    /// Ends the session (a stdio child gets a moment to exit, then its group is killed).
    pub async fn close(self) {
        let _ = self.service.cancel().await;
        if let Some(child) = self.child {
            child.stop().await;
        }
    }
}

/// The HTTP status of a failed request, if the server answered with one.
fn http_status(err: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(StreamableHttpError::HttpStatus(status)) = e.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
            return Some(status.status);
        }
        current = e.source();
    }
    None
}

/// A 403 without a challenge (a member removed from the space, say), with the body the
/// product gave: rmcp keeps only the status of 429 and 5xx, and reports other statuses as
/// `HTTP {status}: {body}`, which the session survives.
fn forbidden(err: &rmcp::ServiceError) -> Option<String> {
    if http_status(err) == Some(403) {
        return Some(String::new());
    }
    // A failed send keeps its transport's error as a field, not as its `source()`.
    let mut current: Option<&(dyn std::error::Error + 'static)> = match err {
        rmcp::ServiceError::TransportSend(inner) => Some(inner),
        other => Some(other),
    };
    while let Some(e) = current {
        if let Some(StreamableHttpError::UnexpectedServerResponse(text)) =
            e.downcast_ref::<StreamableHttpError<reqwest::Error>>()
            && let Some(rest) = text.strip_prefix("HTTP 403")
        {
            let body = rest.trim_start_matches(" Forbidden").trim_start_matches(':');
            return Some(crate::redact::cap(body.trim(), 300).into_owned());
        }
        current = e.source();
    }
    None
}

/// Why a request of an open session failed, with what a stdio server left behind.
fn service_cause(err: &rmcp::ServiceError, child: Option<&stdio::Child>) -> String {
    let cause = match err {
        rmcp::ServiceError::TransportClosed => "the connection to the server closed".to_string(),
        rmcp::ServiceError::TransportSend(inner) => error::describe(inner),
        other => error::describe(other),
    };
    match child.map(|c| c.observed.account()).filter(|a| !a.is_empty()) {
        Some(account) => format!("{cause}; {account}"),
        None => cause,
    }
}

/// `initialize` over Streamable HTTP: bearer or OAuth, the rendered headers, one capped
/// reconnect of the event stream.
async fn open_http(
    setup: &Connect<'_>,
    handler: client::PersonaClient,
    tasks: Arc<http::TaskTools>,
    trace: Arc<http::Traced>,
) -> Result<Opened, McpError> {
    let config = setup.config;
    let timeout = config.connect_timeout.0;
    let server = crate::http::display_url(&config.url);
    let (auth, credentials_sent) = match (&setup.oauth, &setup.credentials.token) {
        (Some(oauth), _) => (
            http::HttpAuth::OAuth(oauth::Authorizer::new(
                oauth.clone(),
                setup.persona,
                &config.url,
                setup.credentials.session.clone(),
            )),
            true,
        ),
        (None, Some(token)) => (http::HttpAuth::Bearer(token.clone()), true),
        (None, None) => (http::HttpAuth::None, false),
    };
    let auth = Arc::new(auth);
    let client = http::GatewayHttp {
        inner: session_http().clone(),
        auth: auth.clone(),
        tasks: tasks.clone(),
        trace,
    };
    let mut transport_config = StreamableHttpClientTransportConfig::with_uri(config.url.as_str())
        .custom_headers(headers(config, setup.credentials)?)
        .reinit_on_expired_session(true);
    // rmcp's default SSE reconnect policy retries forever with an uncapped delay.
    // One reconnect, after the server's own `retry:` hint (SEP-1699), resumes a
    // stream a proxy cut; a server that died refuses it, and the call ends
    // within that hint (rmcp servers say 3 s) instead of retrying on.
    let mut reconnect = rmcp::transport::common::client_side_sse::ExponentialBackoff::default();
    reconnect.max_times = Some(1);
    reconnect.base_duration = Duration::from_millis(200);
    reconnect.max_delay = Some(Duration::from_secs(2));
    transport_config.retry_config = Arc::new(reconnect);
    let transport = StreamableHttpClientTransport::with_client(client, transport_config);
    let service = timed(&server, Step::Initialize, timeout, None, async {
        handler
            .serve(transport)
            .await
            .map_err(|err| error::from_initialize(&server, &err, credentials_sent))
    })
    .await?;
    Ok(Opened {
        service,
        server,
        child: None,
        auth: Some(auth),
        credentials_sent,
    })
}

/// `initialize` over a stdio child (its own process group, a clean environment).
async fn open_stdio(
    config: &McpConfig,
    handler: client::PersonaClient,
    tasks: Arc<http::TaskTools>,
) -> Result<Opened, McpError> {
    let timeout = config.connect_timeout.0;
    let server = format!("the stdio server `{}`", config.command.join(" "));
    let (child, stdout, stdin) = stdio::spawn(config, tasks.clone()).map_err(|err| McpError::Failed {
        server: server.clone(),
        step: Step::Start,
        cause: err.to_string(),
    })?;
    let service = timed(&server, Step::Initialize, timeout, Some(&child), async {
        match handler.serve((stdout, stdin)).await {
            Ok(service) => Ok(service),
            Err(err) => {
                let mut failed = error::from_initialize(&server, &err, false);
                // The child's exit is reaped a moment after its pipes close.
                child.observed.settle().await;
                if let McpError::Failed { cause, .. } = &mut failed {
                    let account = child.observed.account();
                    if !account.is_empty() {
                        cause.push_str(&format!("; {account}"));
                    }
                }
                Err(failed)
            }
        }
    })
    .await?;
    Ok(Opened {
        service,
        server,
        child: Some(child),
        auth: None,
        credentials_sent: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_render_placeholders_and_name_unknown_ones() {
        let values = [("space_id".to_string(), "sp-1".to_string())].into_iter().collect();
        assert_eq!(render_header("X-Mana-Space", "{space_id}", &values).unwrap(), "sp-1");
        assert_eq!(render_header("X", "a-{space_id}-b", &values).unwrap(), "a-sp-1-b");
        let err = render_header("X-Mana-Space", "{spaceid}", &values)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("X-Mana-Space") && err.contains("{spaceid}") && err.contains("space_id"),
            "{err}"
        );
    }
}
