//! The product's MCP gateway, as a client: opening a session (Streamable HTTP with the
//! persona's bearer and headers, or a stdio child process), listing every page of tools,
//! the tool policy, and calling tools with a timeout.
//!
//! Invariant: this is the only module that knows rmcp's client types. The rest of the
//! crate sees [`ToolInfo`], [`CallOutcome`] and [`McpError`].

mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use crate::auth::Credentials;
use crate::config::{McpConfig, McpTransport};
pub use policy::ToolPolicy;

/// A tool as the rest of the crate sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub module: String,
    pub description: Option<String>,
    /// The tool's input JSON Schema (an object schema).
    pub input_schema: Value,
    pub destructive: bool,
}

/// How a tool call ended, when the gateway answered at all.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutcome {
    Ok {
        text: String,
    },
    /// The tool reported an error (`isError`), or the gateway refused the call
    /// (unknown tool, invalid parameters).
    Error {
        text: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP gateway rejected the persona's credentials (HTTP 401)")]
    Unauthorized {},
    #[error("cannot open an MCP session with {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("listing the gateway's tools failed: {0}")]
    ListTools(String),
    #[error("tool call `{tool}` timed out after {timeout:?}")]
    Timeout { tool: String, timeout: Duration },
    #[error("the MCP session closed during tool call `{tool}`: {reason}")]
    Transport { tool: String, reason: String },
    #[error("header `{header}`: {reason}")]
    Header { header: String, reason: String },
    #[error("no MCP session is open")]
    NoSession,
}

impl McpError {
    /// Whether the session is gone: the tick cannot go on (no further call is sent).
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            Self::Transport { .. } | Self::NoSession | Self::Unauthorized { .. }
        )
    }

    /// Whether a failed call reached the product (it may have run, or hung there).
    pub fn reached_product(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Transport { .. })
    }
}

/// The HTTP client of every MCP session, built once (TLS setup is not per tick): a session's
/// requests reuse its connection. No overall timeout: a session's event stream lives as
/// long as the session; calls have their own timeout.
fn session_http() -> &'static reqwest::Client {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        crate::http::builder(Duration::from_secs(10))
            .build()
            .expect("a reqwest client with static settings builds")
    });
    &CLIENT
}

/// An open MCP session.
pub struct McpSession {
    service: RunningService<RoleClient, ClientConfig>,
    tools: Vec<ToolInfo>,
    call_timeout: Duration,
}

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("persona-runner", env!("CARGO_PKG_VERSION")),
    )
}

/// Whether an rmcp error (printed with `Debug`, as its types are layered and mostly
/// non-exhaustive) is an authentication failure.
fn is_unauthorized(debug: &str) -> bool {
    debug.contains("AuthRequired") || debug.contains("HTTP 401") || debug.contains("status: 401")
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

impl McpSession {
    /// Opens a session and lists every page of tools.
    pub async fn open(config: &McpConfig, credentials: &Credentials) -> Result<Self, McpError> {
        Self::open_with(config, &ToolPolicy::new(config), credentials).await
    }

    /// [`McpSession::open`] with a policy already built from `config` (the tick engine
    /// keeps one, so its globs are not compiled again per session).
    pub async fn open_with(
        config: &McpConfig,
        policy: &ToolPolicy,
        credentials: &Credentials,
    ) -> Result<Self, McpError> {
        let service = match config.transport {
            McpTransport::Http => Self::open_http(config, credentials).await?,
            McpTransport::Stdio => Self::open_stdio(config).await?,
        };
        let listed = service.list_all_tools().await.map_err(|err| {
            let debug = format!("{err:?}");
            if is_unauthorized(&debug) {
                McpError::Unauthorized {}
            } else {
                McpError::ListTools(err.to_string())
            }
        })?;
        let tools = listed
            .into_iter()
            .map(|tool| ToolInfo {
                module: policy.module_of(&tool.name),
                name: tool.name.to_string(),
                description: tool.description.map(|d| d.to_string()),
                input_schema: Value::Object((*tool.input_schema).clone()),
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
        })
    }

    async fn open_http(
        config: &McpConfig,
        credentials: &Credentials,
    ) -> Result<RunningService<RoleClient, ClientConfig>, McpError> {
        let mut headers = HashMap::new();
        for (name, template) in &config.headers {
            let value = render_header(name, template, &credentials.values)?;
            let header_name = name
                .parse::<reqwest::header::HeaderName>()
                .map_err(|e| McpError::Header {
                    header: name.clone(),
                    reason: e.to_string(),
                })?;
            let header_value = value
                .parse::<reqwest::header::HeaderValue>()
                .map_err(|e| McpError::Header {
                    header: name.clone(),
                    reason: e.to_string(),
                })?;
            headers.insert(header_name, header_value);
        }
        let mut transport_config = StreamableHttpClientTransportConfig::with_uri(config.url.as_str())
            .custom_headers(headers)
            .reinit_on_expired_session(true);
        // rmcp's default SSE reconnect policy retries forever with an uncapped delay.
        let mut reconnect = rmcp::transport::common::client_side_sse::ExponentialBackoff::default();
        reconnect.max_times = Some(3);
        reconnect.base_duration = Duration::from_millis(200);
        reconnect.max_delay = Some(Duration::from_secs(2));
        transport_config.retry_config = Arc::new(reconnect);
        if let Some(token) = &credentials.token {
            transport_config = transport_config.auth_header(token.expose());
        }
        let transport = StreamableHttpClientTransport::with_client(session_http().clone(), transport_config);
        client_config().serve(transport).await.map_err(|err| {
            let debug = format!("{err:?}");
            if is_unauthorized(&debug) {
                McpError::Unauthorized {}
            } else {
                // rmcp's message may quote the URL: show it as every configured URL is shown.
                let shown = crate::http::display_url(&config.url);
                McpError::Connect {
                    reason: err.to_string().replace(config.url.as_str(), &shown),
                    target: shown,
                }
            }
        })
    }

    async fn open_stdio(config: &McpConfig) -> Result<RunningService<RoleClient, ClientConfig>, McpError> {
        let target = config.command.join(" ");
        let (program, args) = config.command.split_first().ok_or_else(|| McpError::Connect {
            target: target.clone(),
            reason: "mcp.command is empty".into(),
        })?;
        let mut command = tokio::process::Command::new(program);
        command.args(args).envs(&config.env);
        // The child must not talk to systemd on our behalf.
        for var in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ] {
            command.env_remove(var);
        }
        if let Some(dir) = &config.working_dir {
            command.current_dir(dir);
        }
        let transport = TokioChildProcess::new(command).map_err(|err| McpError::Connect {
            target: target.clone(),
            reason: err.to_string(),
        })?;
        client_config().serve(transport).await.map_err(|err| McpError::Connect {
            target,
            reason: err.to_string(),
        })
    }

    /// The protocol version the gateway agreed to.
    pub fn protocol_version(&self) -> Option<String> {
        self.service.peer_info().map(|info| info.protocol_version.to_string())
    }

    /// Every tool the gateway listed (before the policy).
    pub fn tools(&self) -> &[ToolInfo] {
        &self.tools
    }

    /// Calls a tool once (never retried: it may have executed). A timeout drops the
    /// request, which makes rmcp send `notifications/cancelled`.
    pub async fn call(
        &self,
        name: &str,
        arguments: serde_json::Map<String, Value>,
    ) -> Result<(CallOutcome, Duration), McpError> {
        let started = Instant::now();
        let request = CallToolRequestParams::new(name.to_string()).with_arguments(arguments);
        let result = tokio::time::timeout(self.call_timeout, self.service.call_tool(request))
            .await
            .map_err(|_| McpError::Timeout {
                tool: name.into(),
                timeout: self.call_timeout,
            })?;
        let elapsed = started.elapsed();
        match result {
            Ok(result) => {
                let mut text: Vec<String> = result
                    .content
                    .iter()
                    .filter_map(|block| serde_json::to_value(block).ok())
                    .map(|block| match block.get("text").and_then(Value::as_str) {
                        Some(text) => text.to_string(),
                        None => block.to_string(),
                    })
                    .collect();
                if text.is_empty()
                    && let Some(structured) = &result.structured_content
                {
                    text.push(structured.to_string());
                }
                let text = text.join("\n");
                Ok((
                    if result.is_error.unwrap_or(false) {
                        CallOutcome::Error { text }
                    } else {
                        CallOutcome::Ok { text }
                    },
                    elapsed,
                ))
            }
            // The gateway answered with a JSON-RPC error: unknown tool, invalid params.
            Err(rmcp::ServiceError::McpError(error)) => Ok((
                CallOutcome::Error {
                    text: format!("error {}: {}", error.code.0, error.message),
                },
                elapsed,
            )),
            Err(err) => {
                let debug = format!("{err:?}");
                if is_unauthorized(&debug) {
                    Err(McpError::Unauthorized {})
                } else {
                    Err(McpError::Transport {
                        tool: name.into(),
                        reason: err.to_string(),
                    })
                }
            }
        }
    }

    /// Ends the session (and a stdio child).
    pub async fn close(self) {
        let _ = self.service.cancel().await;
    }
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
