//! What went wrong talking to a gateway, in words: which server, which step, and the root
//! cause (refused, DNS, TLS, an HTTP status with its challenge). rmcp's errors nest
//! transport types whose names mean nothing to an operator; they are walked here, never
//! printed whole.

use std::error::Error as StdError;
use std::fmt;

use rmcp::service::ClientInitializeError;
use rmcp::transport::streamable_http_client::StreamableHttpError;

use crate::time::HumanDuration;

/// A step of opening a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Starting a stdio server.
    Start,
    /// The `initialize` handshake (for HTTP also the first connection).
    Initialize,
    /// Listing the tools.
    ListTools,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Start => "starting the server",
            Self::Initialize => "the initialize handshake",
            Self::ListTools => "listing tools",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The gateway wants authorization the client did not give, or refused what it gave.
    /// `credentials_sent`: a fresh login may cure it.
    #[error("{message}")]
    Unauthorized { message: String, credentials_sent: bool },
    /// A step of opening the session failed.
    #[error("{server}: {step} failed: {cause}")]
    Failed { server: String, step: Step, cause: String },
    /// A step of opening the session got no answer in time.
    #[error("{server} did not answer ({step}) within {timeout} (mcp.connect_timeout){detail}")]
    Hung {
        server: String,
        step: Step,
        timeout: HumanDuration,
        /// What the server did say, if anything (a stdio server's stderr).
        detail: String,
    },
    #[error("tool call `{tool}` timed out after {timeout} (mcp.call_timeout)")]
    Timeout { tool: String, timeout: HumanDuration },
    /// The session is gone: no further call can be sent.
    #[error("the MCP session closed during tool call `{tool}`: {cause}")]
    Closed { tool: String, cause: String },
    #[error("header `{header}`: {reason}")]
    Header { header: String, reason: String },
    #[error("{server}: OAuth authorization failed: {message}")]
    OAuth { server: String, message: String },
    #[error("no MCP session is open")]
    NoSession,
}

impl McpError {
    /// The class of the error, as a span's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::Failed { .. } => "failed",
            Self::Hung { .. } => "timeout",
            Self::Timeout { .. } => "timeout",
            Self::Closed { .. } => "session_closed",
            Self::Header { .. } => "bad_header",
            Self::OAuth { .. } => "oauth",
            Self::NoSession => "no_session",
        }
    }

    /// Whether the session is gone: the tick cannot go on (no further call is sent).
    pub fn ends_session(&self) -> bool {
        matches!(
            self,
            Self::Closed { .. } | Self::NoSession | Self::Unauthorized { .. } | Self::OAuth { .. }
        )
    }

    /// Whether a failed call reached the product (it may have run, or hung there).
    pub fn reached_product(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Closed { .. })
    }
}

/// The `WWW-Authenticate` challenge in an rmcp error chain, if the server sent one.
pub(super) fn challenge_of(err: &(dyn StdError + 'static)) -> Option<(u16, String)> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
            match http {
                StreamableHttpError::AuthRequired(auth) => return Some((401, auth.www_authenticate_header.clone())),
                StreamableHttpError::InsufficientScope(scope) => {
                    return Some((403, scope.www_authenticate_header.clone()));
                }
                StreamableHttpError::UnexpectedServerResponse(text) if text.contains("HTTP 401") => {
                    return Some((401, String::new()));
                }
                _ => {}
            }
        }
        current = e.source();
    }
    None
}

/// The root cause of an error, in words.
pub(crate) fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut current = Some(err);
    let mut innermost = err.to_string();
    let mut dns = false;
    while let Some(e) = current {
        if let Some(known) = known_cause(e) {
            return known;
        }
        let text = e.to_string();
        if text == "dns error" || text.starts_with("failed to lookup address") {
            dns = true;
        }
        // Messages that only name a Rust type are skipped for what they wrap.
        if !text.contains("rmcp::") && !text.starts_with("Transport [") && !text.is_empty() {
            innermost = text;
        }
        current = e.source();
    }
    if dns {
        return format!("DNS lookup failed ({innermost})");
    }
    innermost
}

fn known_cause(e: &(dyn StdError + 'static)) -> Option<String> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        let said = match io.kind() {
            ConnectionRefused => "connection refused (nothing listens there)",
            ConnectionReset => "the server reset the connection",
            ConnectionAborted | BrokenPipe => "the connection broke (the server went away)",
            UnexpectedEof => "the connection closed in the middle of an answer",
            TimedOut => "the connection timed out",
            _ => return None,
        };
        return Some(said.to_string());
    }
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(format!("the TLS handshake failed: {tls}"));
    }
    if let Some(http) = e.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        return match http {
            StreamableHttpError::HttpStatus(status) => Some(match &status.retry_after {
                Some(after) => format!("HTTP {} (retry after {after})", status.status),
                None => format!("HTTP {}", status.status),
            }),
            StreamableHttpError::AuthRequired(auth) => {
                Some(format!("HTTP 401 (WWW-Authenticate: {})", auth.www_authenticate_header))
            }
            StreamableHttpError::InsufficientScope(scope) => Some(format!(
                "HTTP 403, insufficient scope (WWW-Authenticate: {})",
                scope.www_authenticate_header
            )),
            StreamableHttpError::UnexpectedServerResponse(text) => Some(unexpected_answer(text)),
            StreamableHttpError::UnexpectedContentType(kind) => Some(format!(
                "the answer has content type {}, neither JSON nor an event stream (is this an MCP endpoint?)",
                kind.as_deref().unwrap_or("(none)")
            )),
            StreamableHttpError::SessionExpired => Some("the server no longer knows the session (HTTP 404)".into()),
            StreamableHttpError::UnexpectedEndOfStream => Some("the answer stream ended before the answer".into()),
            StreamableHttpError::Deserialize(err) => Some(format!("the answer is not JSON-RPC ({err})")),
            StreamableHttpError::ResponseBodyTooLarge { max_size } => {
                Some(format!("the answer is larger than {max_size} bytes"))
            }
            StreamableHttpError::TransportChannelClosed => Some("the connection closed".into()),
            StreamableHttpError::Auth(auth) => Some(format!("OAuth: {auth}")),
            // Its reqwest error is not a `source()`: walk it here.
            StreamableHttpError::Client(client) => Some(describe(client)),
            // Client errors and the rest: their sources say more.
            _ => None,
        };
    }
    if let Some(re) = e.downcast_ref::<reqwest::Error>()
        && re.is_timeout()
    {
        return Some("the request timed out".into());
    }
    None
}

/// rmcp's "could not parse JSON response as ServerJsonRpcMessage: <cause>: <the body>" in
/// words: the cause without the type's name, and without the body it echoes.
fn unexpected_answer(text: &str) -> String {
    let Some(rest) = text.strip_prefix("could not parse JSON response as ") else {
        return format!("unexpected answer: {text}");
    };
    let cause = rest.split_once(": ").map_or("", |(_, cause)| cause);
    let cause = cause
        .find(": {")
        .or_else(|| cause.find(": ["))
        .map_or(cause, |at| &cause[..at]);
    format!("the answer is not valid JSON-RPC ({cause})")
}

/// Why opening a session failed, as an [`McpError`] naming the server and the step.
pub(super) fn from_initialize(server: &str, err: &ClientInitializeError, credentials_sent: bool) -> McpError {
    // The transport error is a field, not a `source()`, of the initialize error.
    let challenge = match err {
        ClientInitializeError::TransportError { error, .. } => challenge_of(error),
        other => challenge_of(other),
    };
    if let Some((status, challenge)) = challenge {
        return unauthorized(server, Step::Initialize, status, &challenge, credentials_sent);
    }
    let cause = match err {
        ClientInitializeError::TransportError { error, .. } => describe(error),
        ClientInitializeError::ConnectionClosed(_) => {
            "the server closed the connection before answering (did it exit?)".to_string()
        }
        ClientInitializeError::JsonRpcError(error) => {
            format!("the server refused it: error {}: {}", error.code.0, error.message)
        }
        other => describe(other),
    };
    McpError::Failed {
        server: server.to_string(),
        step: Step::Initialize,
        cause,
    }
}

/// A 401 or 403 at `step`, with what to do about it.
pub(super) fn unauthorized(server: &str, step: Step, status: u16, challenge: &str, credentials_sent: bool) -> McpError {
    let challenge = if challenge.is_empty() {
        String::new()
    } else {
        format!(" (WWW-Authenticate: {challenge})")
    };
    let message = if credentials_sent {
        format!("{server} rejected the persona's credentials (HTTP {status}) at {step}{challenge}")
    } else {
        format!(
            "{server} answered HTTP {status} at {step}, but no credentials were sent (auth.mode = \"none\"): it \
             wants authorization{challenge}; set auth.mode to \"oauth\", \"login\" or \"static\""
        )
    };
    McpError::Unauthorized {
        message,
        credentials_sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Transport [rmcp::transport::worker::WorkerTransport<Foo>] error: {inner}")]
    struct Wrapper {
        #[source]
        inner: std::io::Error,
    }

    #[test]
    fn an_unparsable_answer_names_its_cause_not_a_type() {
        let said = unexpected_answer(
            "could not parse JSON response as ServerJsonRpcMessage: invalid unicode code point at line 1 column 69: {\"jsonrpc\":\"2.0\"}",
        );
        assert_eq!(
            said,
            "the answer is not valid JSON-RPC (invalid unicode code point at line 1 column 69)"
        );
    }

    #[test]
    fn causes_are_words_not_types() {
        let refused = Wrapper {
            inner: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(describe(&refused), "connection refused (nothing listens there)");
        let other = Wrapper {
            inner: std::io::Error::other("disk on fire"),
        };
        assert_eq!(describe(&other), "disk on fire");
    }

    #[test]
    fn a_401_without_credentials_says_so_and_shows_the_challenge() {
        let err = unauthorized(
            "http://h/mcp",
            Step::Initialize,
            401,
            "Bearer resource_metadata=\"http://h/.well-known/oauth-protected-resource\"",
            false,
        )
        .to_string();
        assert!(err.contains("no credentials were sent"), "{err}");
        assert!(err.contains("resource_metadata"), "{err}");
        assert!(!err.contains("rejected the persona's credentials"), "{err}");
    }
}
