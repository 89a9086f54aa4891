//! The client side of a session: the capabilities it declares and how it answers the
//! server's own requests. Elicitation (form mode) and sampling are answered by the
//! persona through an [`Agent`] the tick provides (the LLM in character, or the offline
//! driver); URL-mode elicitation is declined; roots come from the config. The agent
//! audits each exchange like a call.
//!
//! rmcp marks sampling and roots deprecated (SEP-2577, protocol 2026-07-28); this client
//! speaks 2025-11-25, where both are current.
#![allow(deprecated)]

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult, CustomRequest, CustomResult,
    ElicitRequestParams, ElicitResult, ElicitationAction, Implementation, ListRootsResult, ProtocolVersion, Root,
    SamplingMessage,
};
use rmcp::service::RequestContext;
use rmcp::{ClientHandler, ErrorData, RoleClient};
use serde_json::{Map, Value, json};

use crate::config::RootConfig;

/// The server asks the persona to fill in a form.
#[derive(Clone, Debug)]
pub struct ElicitationRequest {
    pub message: String,
    /// The requested schema: an object schema of flat properties.
    pub schema: Value,
}

/// The persona's answer to a form.
#[derive(Clone, Debug, PartialEq)]
pub enum ElicitationAnswer {
    /// The filled-in object (defaults still missing are added before it is sent).
    Accept(Map<String, Value>),
    Decline,
    Cancel,
}

/// One message of a sampling request, as text.
#[derive(Clone, Debug)]
pub struct SamplingTurn {
    /// `user` or `assistant`.
    pub role: String,
    pub text: String,
}

/// The server asks the client's model to write something.
#[derive(Clone, Debug)]
pub struct SamplingRequest {
    pub system_prompt: Option<String>,
    pub messages: Vec<SamplingTurn>,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
}

#[derive(Clone, Debug)]
pub struct SamplingReply {
    pub text: String,
    pub model: String,
    /// `endTurn` or `maxTokens`.
    pub stop_reason: String,
}

/// Why the persona did not serve a server's sampling request (the server is told).
#[derive(Clone, Debug, thiserror::Error)]
pub enum SamplingRefused {
    #[error("this persona has no model to sample with")]
    NoModel,
    #[error("the tick's token budget (tick.max_tokens_per_tick) is spent")]
    BudgetSpent,
    /// The persona's model failed; what it said.
    #[error("the model failed: {0}")]
    ModelFailed(String),
    #[error("the client could not record this request")]
    NotRecorded,
}

/// What the server asked of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerRequest {
    Elicitation,
    Sampling,
    Roots,
}

/// The error a declined server request gets: too many of them.
fn over_budget() -> ErrorData {
    ErrorData::new(
        rmcp::model::ErrorCode::INVALID_REQUEST,
        "too many requests from the server during this call or session; declined",
        None,
    )
}

/// Whoever answers the server's requests for the persona (the tick, per session).
pub trait Agent: Send + Sync + 'static {
    /// Whether one more request of `kind` may be answered (the tick's budget of the
    /// server's requests); a refused one is counted and declined.
    fn admit(&self, kind: ServerRequest) -> bool;
    fn elicit(&self, request: ElicitationRequest) -> BoxFuture<'_, ElicitationAnswer>;
    /// A URL-mode elicitation: the persona cannot open a browser; it is declined (and
    /// audited).
    fn decline_url(&self, message: String, url: String) -> BoxFuture<'_, ()>;
    /// `Err` says why not; the server is told.
    fn sample(&self, request: SamplingRequest) -> BoxFuture<'_, Result<SamplingReply, SamplingRefused>>;
}

/// What the client declares.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub elicitation: bool,
    pub sampling: bool,
    pub roots: Vec<RootConfig>,
}

/// The protocol version offered: the newest that still has the `initialize` handshake.
pub(super) const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::LATEST_WITH_INITIALIZE;

pub(super) struct PersonaClient {
    pub agent: Option<Arc<dyn Agent>>,
    pub capabilities: Capabilities,
    /// The span of the call in progress: a server request is its child.
    pub trace: crate::telemetry::Slot,
}

/// The span of one server request, a child of the call it came during.
fn request_span(trace: &crate::telemetry::Slot, method: &'static str) -> crate::telemetry::Span {
    use crate::telemetry::semconv;
    crate::telemetry::Span::child_of(
        &trace.get(),
        method,
        crate::telemetry::Kind::Server,
        vec![
            opentelemetry::KeyValue::new(semconv::MCP_METHOD_NAME, method),
            opentelemetry::KeyValue::new(semconv::SERVER_REQUEST, method),
        ],
    )
}

impl PersonaClient {
    fn declared(&self) -> ClientCapabilities {
        let mut declared = serde_json::Map::new();
        if self.capabilities.elicitation && self.agent.is_some() {
            declared.insert("elicitation".into(), json!({"form": {}}));
        }
        if self.capabilities.sampling && self.agent.is_some() {
            declared.insert("sampling".into(), json!({}));
        }
        if !self.capabilities.roots.is_empty() {
            declared.insert("roots".into(), json!({"listChanged": false}));
        }
        serde_json::from_value(Value::Object(declared)).unwrap_or_default()
    }

    async fn answer_form(&self, message: String, schema: Value) -> Result<ElicitResult, ErrorData> {
        let Some(agent) = self.agent.as_ref().filter(|_| self.capabilities.elicitation) else {
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let span = request_span(&self.trace, "elicitation/create");
        let answer = span.run(agent.elicit(ElicitationRequest { message, schema })).await;
        span.set(
            crate::telemetry::semconv::SERVER_REQUEST_ANSWER,
            match &answer {
                ElicitationAnswer::Accept(_) => "accept",
                ElicitationAnswer::Decline => "decline",
                ElicitationAnswer::Cancel => "cancel",
            },
        );
        Ok(match answer {
            ElicitationAnswer::Accept(content) => {
                ElicitResult::new(ElicitationAction::Accept).with_content(Value::Object(content))
            }
            ElicitationAnswer::Decline => ElicitResult::new(ElicitationAction::Decline),
            ElicitationAnswer::Cancel => ElicitResult::new(ElicitationAction::Cancel),
        })
    }
}

/// Adds the `default` of every property the answer leaves out (SEP-1034: the client
/// applies defaults).
pub fn apply_defaults(content: &mut Map<String, Value>, schema: &Value) {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, property) in properties {
        if !content.contains_key(name)
            && let Some(default) = property.get("default")
        {
            content.insert(name.clone(), default.clone());
        }
    }
}

fn sampling_request(params: &CreateMessageRequestParams) -> SamplingRequest {
    let messages = params
        .messages
        .iter()
        .map(|message| {
            let role = serde_json::to_value(&message.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "user".into());
            let text = message
                .content
                .iter()
                .map(|block| match serde_json::to_value(block) {
                    Ok(value) => match value.get("text").and_then(Value::as_str) {
                        Some(text) => text.to_string(),
                        None => format!(
                            "[{} content]",
                            value.get("type").and_then(Value::as_str).unwrap_or("other")
                        ),
                    },
                    Err(_) => "[content]".to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            SamplingTurn { role, text }
        })
        .collect();
    SamplingRequest {
        system_prompt: params.system_prompt.clone(),
        messages,
        max_tokens: params.max_tokens,
        temperature: params.temperature,
    }
}

impl ClientHandler for PersonaClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            self.declared(),
            Implementation::new("persona-runner", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(PROTOCOL_VERSION)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        if self
            .agent
            .as_ref()
            .is_some_and(|agent| !agent.admit(ServerRequest::Elicitation))
        {
            return Err(over_budget());
        }
        match request {
            ElicitRequestParams::FormElicitationParams {
                message,
                requested_schema,
                ..
            } => {
                let schema = serde_json::to_value(&requested_schema).unwrap_or_else(|_| json!({"type": "object"}));
                let mut result = self.answer_form(message, schema.clone()).await?;
                if let Some(Value::Object(content)) = result.content.as_mut() {
                    apply_defaults(content, &schema);
                }
                Ok(result)
            }
            ElicitRequestParams::UrlElicitationParams { message, url, .. } => {
                if let Some(agent) = &self.agent {
                    agent.decline_url(message, url).await;
                }
                Ok(ElicitResult::new(ElicitationAction::Decline))
            }
            _ => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }

    /// An `elicitation/create` whose schema rmcp's typed model does not take (nested
    /// objects, say) arrives here; it is answered the same way.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleClient>,
    ) -> Result<CustomResult, ErrorData> {
        if request.method != "elicitation/create" {
            return Err(ErrorData::method_not_found::<rmcp::model::ElicitationCreateRequestMethod>());
        }
        if self
            .agent
            .as_ref()
            .is_some_and(|agent| !agent.admit(ServerRequest::Elicitation))
        {
            return Err(over_budget());
        }
        let params = request.params.unwrap_or_default();
        if params.get("mode").and_then(Value::as_str) == Some("url") {
            if let Some(agent) = &self.agent {
                let text = |key: &str| params.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
                agent.decline_url(text("message"), text("url")).await;
            }
            return Ok(CustomResult::new(json!({"action": "decline"})));
        }
        let message = params
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let schema = params
            .get("requestedSchema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"}));
        let mut result = self.answer_form(message, schema.clone()).await?;
        if let Some(Value::Object(content)) = result.content.as_mut() {
            apply_defaults(content, &schema);
        }
        serde_json::to_value(&result)
            .map(CustomResult::new)
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))
    }

    #[allow(deprecated)]
    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let Some(agent) = self.agent.as_ref().filter(|_| self.capabilities.sampling) else {
            return Err(ErrorData::method_not_found::<rmcp::model::CreateMessageRequestMethod>());
        };
        if !agent.admit(ServerRequest::Sampling) {
            return Err(over_budget());
        }
        let span = request_span(&self.trace, "sampling/createMessage");
        let reply = span.run(agent.sample(sampling_request(&params))).await;
        match &reply {
            Ok(_) => span.set(crate::telemetry::semconv::SERVER_REQUEST_ANSWER, "answered"),
            Err(_) => span.fail("sampling_refused", "the persona refused the sampling request"),
        }
        match reply {
            Ok(reply) => Ok(
                CreateMessageResult::new(SamplingMessage::assistant_text(reply.text), reply.model)
                    .with_stop_reason(reply.stop_reason),
            ),
            Err(refusal) => Err(ErrorData::internal_error(refusal.to_string(), None)),
        }
    }

    async fn list_roots(&self, _context: RequestContext<RoleClient>) -> Result<ListRootsResult, ErrorData> {
        if self
            .agent
            .as_ref()
            .is_some_and(|agent| !agent.admit(ServerRequest::Roots))
        {
            return Err(over_budget());
        }
        Ok(ListRootsResult::new(
            self.capabilities
                .roots
                .iter()
                .map(|root| match &root.name {
                    Some(name) => Root::new(root.uri.clone()).with_name(name.clone()),
                    None => Root::new(root.uri.clone()),
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_the_answer_leaves_out() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "note": {"type": "string"}
        }});
        let mut content = Map::new();
        content.insert("name".into(), json!("Anna"));
        apply_defaults(&mut content, &schema);
        assert_eq!(Value::Object(content), json!({"name": "Anna", "age": 30}));
    }

    #[test]
    fn capabilities_follow_the_config_and_the_agent() {
        let client = PersonaClient {
            agent: None,
            trace: Default::default(),
            capabilities: Capabilities {
                elicitation: true,
                sampling: true,
                roots: vec![RootConfig {
                    uri: "file:///notes".into(),
                    name: None,
                }],
            },
        };
        let declared = serde_json::to_value(client.declared()).unwrap();
        assert_eq!(
            declared,
            json!({"roots": {"listChanged": false}}),
            "no agent: nothing to answer with"
        );
        let info = serde_json::to_value(client.get_info()).unwrap();
        assert_eq!(info["protocolVersion"], "2025-11-25");
        assert_eq!(info["clientInfo"]["name"], "persona-runner");
    }
}
