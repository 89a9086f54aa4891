//! The LLM side: any OpenAI-compatible chat-completions endpoint through async-openai.
//!
//! - **Our retry policy.** async-openai's built-in retry layer is replaced by
//!   `with_http_service`. The service applies [`crate::http::RetryPolicy`] and the global
//!   requests-per-minute limit to every attempt.
//! - **Lenient responses.** Request and response are our own types (`byot`): local servers
//!   send tool calls without `"type": "function"`, `finish_reason: "eos"`, or arguments as
//!   an object rather than a string, and a strict parse would fail on each of these.

mod error;
pub mod info;
mod names;
pub mod recover;
mod span;

use std::num::NonZeroU32;
use std::sync::Arc;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{LlmConfig, RetryConfig, Secret, StructuredOutput};
use crate::http::{Attempt, RetryPolicy, retry_after, retryable_error, retryable_status};
use crate::telemetry::semconv;
pub use error::LlmError;
pub use names::ToolNames;

/// One tool call the model asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    /// The function name the model used (an LLM-side name).
    pub name: String,
    /// The arguments as the model sent them: normally a JSON string.
    pub arguments: String,
}

/// One model turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatTurn {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The endpoint's usage figures were absurd (negative, not a number, or above
    /// [`MAX_TURN_TOKENS`]) and were clamped.
    pub usage_clamped: bool,
}

impl ChatTurn {
    /// The token limit (`max_tokens`) ended this turn: its content may be cut short.
    pub fn hit_token_limit(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }

    /// The assistant message to append to the conversation.
    pub fn as_message(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content});
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|call| json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}))
                .collect();
        }
        message
    }
}

#[derive(Deserialize)]
struct RawResponse {
    #[serde(default)]
    choices: Vec<RawChoice>,
    usage: Option<RawUsage>,
    /// The model that answered (for the span; a server may name another than asked).
    #[serde(default)]
    model: Option<Value>,
}

#[derive(Deserialize)]
struct RawChoice {
    message: Option<RawMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage {
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<RawToolCall>>,
}

#[derive(Deserialize)]
struct RawToolCall {
    id: Option<String>,
    function: RawFunction,
}

#[derive(Deserialize)]
struct RawFunction {
    name: String,
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct RawUsage {
    prompt_tokens: Option<Value>,
    completion_tokens: Option<Value>,
}

/// The most tokens one turn is taken to use: an endpoint's count above it (`2⁶⁴ − 1`),
/// below zero or not a number is clamped into `0..=MAX_TURN_TOKENS`, and the turn says so.
pub const MAX_TURN_TOKENS: u64 = 10_000_000;

/// A usage count as an endpoint sent it, clamped; whether it had to be.
fn token_count(value: Option<&Value>) -> (u64, bool) {
    match value {
        None | Some(Value::Null) => (0, false),
        Some(value) => match value.as_u64() {
            Some(n) if n <= MAX_TURN_TOKENS => (n, false),
            Some(_) => (MAX_TURN_TOKENS, true),
            None => match value.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => ((f.min(MAX_TURN_TOKENS as f64)) as u64, true),
                _ if value.as_i64().is_some_and(|n| n < 0) => (0, true),
                _ => (0, true),
            },
        },
    }
}

/// A chat-completions request body over the caller's messages and tools, with the
/// config's `extra_body` merged in (a key it sets wins over ours).
#[derive(serde::Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    stream: bool,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    tools: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, Value>,
}

/// What an answer must be.
#[derive(Clone, Copy, Debug)]
pub enum Want<'a> {
    /// Whatever the model says (and the tool calls it makes).
    Text,
    /// A JSON object, matching `schema` when one is given: asked for with structured
    /// output as far as the endpoint supports it, and found in the text either way.
    Json(Option<&'a Value>),
}

/// How far structured output goes with this endpoint, learnt from its answers.
const STRUCTURED_SCHEMA: u8 = 2;
const STRUCTURED_OBJECT: u8 = 1;
const STRUCTURED_NONE: u8 = 0;

fn parse_turn(raw: RawResponse) -> Result<ChatTurn, LlmError> {
    let choice = raw
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Malformed("no choices in the response".into()))?;
    let message = choice
        .message
        .ok_or_else(|| LlmError::Malformed("the choice has no message".into()))?;
    let content = match message.content {
        Some(Value::String(text)) => Some(text),
        // Content as a list of parts: keep the text parts.
        Some(Value::Array(parts)) => Some(
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    };
    let tool_calls = message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(index, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{index}")),
            name: call.function.name,
            arguments: match call.function.arguments {
                Some(Value::String(text)) => text,
                Some(Value::Null) | None => "{}".into(),
                Some(other) => other.to_string(),
            },
        })
        .collect();
    let usage = raw.usage.unwrap_or(RawUsage {
        prompt_tokens: None,
        completion_tokens: None,
    });
    let (prompt_tokens, prompt_clamped) = token_count(usage.prompt_tokens.as_ref());
    let (completion_tokens, completion_clamped) = token_count(usage.completion_tokens.as_ref());
    Ok(ChatTurn {
        content,
        tool_calls,
        finish_reason: choice.finish_reason,
        prompt_tokens,
        completion_tokens,
        usage_clamped: prompt_clamped || completion_clamped,
    })
}

/// A chat-completions client with our retry policy and rate limit.
#[derive(Clone)]
pub struct LlmClient {
    client: async_openai::Client<OpenAIConfig>,
    config: LlmConfig,
    /// The structured output this endpoint takes (`STRUCTURED_*`); `auto` starts at the
    /// schema and steps down, once each, on a 400 that names `response_format`.
    structured: Arc<std::sync::atomic::AtomicU8>,
    /// Kept to redact it from error messages an endpoint might echo it in.
    api_key: Secret,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    pub fn new(config: &LlmConfig, retry: &RetryConfig, api_key: &Secret) -> Self {
        let http = crate::http::client(config.request_timeout.0);
        let policy = RetryPolicy::new(retry);
        let limiter: Option<Arc<DefaultDirectRateLimiter>> = NonZeroU32::new(config.requests_per_minute)
            .map(|rpm| Arc::new(RateLimiter::direct(Quota::per_minute(rpm))));
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let (http, policy, limiter) = (http.clone(), policy.clone(), limiter.clone());
            async move {
                let outcome = policy
                    .run("llm request", || async {
                        if let Some(limiter) = &limiter {
                            limiter.until_ready().await;
                        }
                        let mut request = factory.build().await.map_err(|err| Attempt::Fail(Err(err)))?;
                        crate::telemetry::inject(request.headers_mut());
                        let sent = http.execute(request).await;
                        crate::metrics::global().llm_attempt(sent.as_ref().ok().map(|r| r.status().as_u16()));
                        match sent {
                            Ok(response) if retryable_status(response.status()) => {
                                crate::metrics::global().llm_retry();
                                let wait = retry_after(response.headers());
                                tracing::warn!(
                                    status = response.status().as_u16(),
                                    retry_after = %wait.map_or_else(|| "not given".into(), |w| format!("{}s", w.as_secs())),
                                    "LLM endpoint asked to retry"
                                );
                                Err(Attempt::Retry {
                                    last: Ok(response),
                                    retry_after: wait,
                                })
                            }
                            Ok(response) => Ok(response),
                            Err(err) if retryable_error(&err) => {
                                crate::metrics::global().llm_retry();
                                Err(Attempt::Retry {
                                    last: Err(OpenAIError::Reqwest(err)),
                                    retry_after: None,
                                })
                            }
                            Err(err) => Err(Attempt::Fail(Err(OpenAIError::Reqwest(err)))),
                        }
                    })
                    .await;
                match outcome {
                    Ok(response) => Ok(response),
                    // Out of attempts: the last response (async-openai reads its error body).
                    Err(last) => last,
                }
            }
        });
        let openai = OpenAIConfig::new()
            .with_api_base(config.base_url.trim_end_matches('/'))
            .with_api_key(api_key.expose());
        Self {
            client: async_openai::Client::with_config(openai).with_http_service(service),
            structured: Arc::new(std::sync::atomic::AtomicU8::new(match config.structured_output {
                StructuredOutput::Auto | StructuredOutput::JsonSchema => STRUCTURED_SCHEMA,
                StructuredOutput::JsonObject => STRUCTURED_OBJECT,
                StructuredOutput::Off => STRUCTURED_NONE,
            })),
            config: config.clone(),
            api_key: api_key.clone(),
        }
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// One chat turn. `tools` are function definitions (LLM-side names); `want` says
    /// whether the answer must be JSON.
    pub async fn chat(&self, messages: &[Value], tools: &[Value], want: Want<'_>) -> Result<ChatTurn, LlmError> {
        loop {
            let level = self.structured.load(std::sync::atomic::Ordering::Relaxed);
            let format = response_format(want, level);
            let asked_for = format.is_some();
            let answer = self
                .request(messages, tools, format, self.config.max_tokens, self.config.temperature)
                .await;
            match answer {
                Err(LlmError::Api(message)) if asked_for && self.steps_down(level, &message) => continue,
                other => return other,
            }
        }
    }

    /// Whether `auto` structured output steps down after the endpoint refused it (a 400
    /// naming `response_format`): once per level, for the life of the client.
    fn steps_down(&self, level: u8, refusal: &str) -> bool {
        let names_it = refusal.contains("response_format") || refusal.contains("json_schema");
        if self.config.structured_output != StructuredOutput::Auto || !names_it || level == STRUCTURED_NONE {
            return false;
        }
        let lower = level - 1;
        let stepped = self
            .structured
            .compare_exchange(
                level,
                lower,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok();
        if stepped {
            tracing::warn!(
                base_url = %self.config.base_url,
                now = ["none", "json_object", "json_schema"][usize::from(lower)],
                "the LLM endpoint refused this structured output; using less from now on"
            );
        }
        true
    }

    /// A completion of at most `max_tokens` (a server's sampling request), at
    /// `temperature` when the server asks for one.
    pub async fn complete(
        &self,
        messages: &[Value],
        max_tokens: u32,
        temperature: Option<f32>,
    ) -> Result<ChatTurn, LlmError> {
        let temperature = temperature.map_or(self.config.temperature, |t| t.clamp(0.0, 2.0));
        self.request(messages, &[], None, max_tokens.min(self.config.max_tokens), temperature)
            .await
    }

    async fn request(
        &self,
        messages: &[Value],
        tools: &[Value],
        response_format: Option<Value>,
        max_tokens: u32,
        temperature: f32,
    ) -> Result<ChatTurn, LlmError> {
        let extra = &self.config.extra_body;
        // Borrowed, not a `json!` copy: the conversation and the tool list grow with every
        // turn, and cloning them per request was a deep copy of every message.
        let request = ChatRequest {
            model: &self.config.model,
            messages,
            temperature: (!extra.contains_key("temperature")).then_some(temperature),
            max_tokens: (!extra.contains_key("max_tokens")).then_some(max_tokens),
            stream: false,
            tools,
            response_format: response_format.filter(|_| !extra.contains_key("response_format")),
            extra,
        };
        let span = span::chat(&self.config.model, max_tokens, temperature);
        span.set_content(semconv::INPUT_MESSAGES, || {
            crate::redact::redact_known(&Value::from(messages.to_vec()).to_string()).into_owned()
        });
        let raw: Result<RawResponse, _> = span.run(self.client.chat().create_byot(request)).await;
        let raw = raw.map_err(|err| match LlmError::from(err) {
            // Which endpoint could not be reached, as the login's errors say theirs.
            LlmError::Transport(text) => {
                LlmError::Transport(format!("{}: {text}", crate::http::display_url(&self.config.base_url)))
            }
            other => other,
        });
        let raw = raw.map_err(|err| err.redact(self.api_key.expose()));
        let model = raw
            .as_ref()
            .ok()
            .and_then(|raw| raw.model.as_ref())
            .and_then(Value::as_str);
        if let Some(model) = model {
            span.set(semconv::RESPONSE_MODEL, model.to_string());
        }
        let turn = raw.and_then(parse_turn);
        match &turn {
            Ok(turn) => {
                span.set(semconv::USAGE_INPUT_TOKENS, turn.prompt_tokens as i64);
                span.set(semconv::USAGE_OUTPUT_TOKENS, turn.completion_tokens as i64);
                if let Some(reason) = &turn.finish_reason {
                    span.set(
                        semconv::RESPONSE_FINISH_REASONS,
                        opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(reason.clone())].into()),
                    );
                }
                span.set_content(semconv::OUTPUT_MESSAGES, || {
                    crate::redact::redact_known(&turn.as_message().to_string()).into_owned()
                });
            }
            Err(err) => span.fail(err.kind(), "the chat request failed"),
        }
        turn
    }
}

/// The `response_format` of an answer wanted as `want`, at structured-output `level`.
fn response_format(want: Want<'_>, level: u8) -> Option<Value> {
    match (want, level) {
        (Want::Text, _) | (_, STRUCTURED_NONE) => None,
        (Want::Json(Some(schema)), STRUCTURED_SCHEMA) => Some(json!({
            "type": "json_schema",
            "json_schema": {"name": "answer", "strict": true, "schema": schema},
        })),
        (Want::Json(_), _) => Some(json!({"type": "json_object"})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_what_local_servers_send() {
        let raw: RawResponse = serde_json::from_value(json!({
            "choices": [{"message": {"content": null, "tool_calls": [
                {"function": {"name": "todo_create", "arguments": {"title": "x"}}},
                {"id": "c2", "function": {"name": "mood_log", "arguments": "{\"score\": 3}"}}
            ]}, "finish_reason": "eos"}]
        }))
        .unwrap();
        let turn = parse_turn(raw).unwrap();
        assert_eq!(turn.finish_reason.as_deref(), Some("eos"));
        assert_eq!(turn.tool_calls[0].id, "call_0");
        assert_eq!(turn.tool_calls[0].arguments, r#"{"title":"x"}"#);
        assert_eq!(turn.tool_calls[1].arguments, r#"{"score": 3}"#);
        assert_eq!((turn.prompt_tokens, turn.completion_tokens), (0, 0));
    }

    #[test]
    fn errors_never_carry_the_api_key() {
        let err = LlmError::Api("invalid key sk-secret-123 for model x".into()).redact("sk-secret-123");
        assert_eq!(
            err.to_string(),
            "the LLM endpoint refused the request: invalid key [redacted] for model x"
        );
    }

    #[test]
    fn content_parts_are_joined() {
        let raw: RawResponse = serde_json::from_value(json!({
            "choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2}
        }))
        .unwrap();
        let turn = parse_turn(raw).unwrap();
        assert_eq!(turn.content.as_deref(), Some("ab"));
        assert_eq!(turn.prompt_tokens, 10);
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_named_in_one_plain_line() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = LlmConfig {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            ..LlmConfig::default()
        };
        let retry = RetryConfig {
            max_attempts: 1,
            ..RetryConfig::default()
        };
        let client = LlmClient::new(&config, &retry, &Secret::new("sk-unused"));
        let err = client
            .chat(&[json!({"role": "user", "content": "hi"})], &[], Want::Text)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach the LLM endpoint: http://127.0.0.1:{port}/v1: the connection failed: Connection refused (os error 111)"
            )
        );
    }

    /// A body a real llama.cpp server (Qwen2.5-Coder 0.5B/1.5B) sent, as recorded.
    fn recorded(name: &str) -> ChatTurn {
        let path = format!("{}/tests/fixtures/llm/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let raw: RawResponse = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        parse_turn(raw).unwrap()
    }

    fn offered(name: &str) -> Option<String> {
        (name == "todo_create" || name == "todo.create").then(|| "todo_create".to_string())
    }

    #[test]
    fn real_llama_cpp_bodies_parse_and_their_text_calls_are_recovered() {
        // Calls written into the text (0.5B, 1.5B, and padded to max_tokens with "required").
        for name in ["tools", "tools_15b", "tools_required"] {
            let turn = recorded(name);
            assert!(turn.tool_calls.is_empty(), "{name}");
            let calls = recover::tool_calls(turn.content.as_deref().unwrap(), &offered);
            assert_eq!(calls.len(), 1, "{name}");
            let arguments: Value = serde_json::from_str(&calls[0].arguments).unwrap();
            assert_eq!(arguments["title"], "Buy milk", "{name}");
        }
        assert_eq!(recorded("tools_required").finish_reason.as_deref(), Some("length"));
        assert!(recorded("tools_required").hit_token_limit());
        assert!(!recorded("tools_bias_ok").hit_token_limit());
        // A real tool call: an id without the call_ prefix, stray content beside it.
        let biased = recorded("tools_bias_ok");
        assert_eq!(biased.tool_calls[0].id, "ClYiY1VIgyJnjL4Grd3qrr7DyhJJ9Nto");
        assert_eq!(biased.tool_calls[0].name, "todo_create");
        assert_eq!(biased.content.as_deref(), Some("<"));
        assert_eq!((biased.prompt_tokens, biased.completion_tokens), (273, 33));
        // Plain chat: no call anywhere.
        let plain = recorded("plain_15b");
        assert!(plain.tool_calls.is_empty());
        assert!(recover::tool_calls(plain.content.as_deref().unwrap(), &offered).is_empty());
    }

    #[test]
    fn the_request_carries_extra_body_and_lets_it_override_our_sampling_keys() {
        let extra: serde_json::Map<String, Value> =
            serde_json::from_value(json!({"top_k": 20, "temperature": 0.0, "chat_template_kwargs": {"x": 1}})).unwrap();
        let messages = [json!({"role": "user", "content": "hi"})];
        let request = ChatRequest {
            model: "m",
            messages: &messages,
            temperature: (!extra.contains_key("temperature")).then_some(0.7),
            max_tokens: Some(64),
            stream: false,
            tools: &[],
            response_format: response_format(Want::Json(None), STRUCTURED_SCHEMA),
            extra: &extra,
        };
        let body = serde_json::to_value(&request).unwrap();
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(body["top_k"], 20);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["response_format"]["type"], "json_object");
        assert!(body.get("tools").is_none());
        let schema = json!({"type": "object"});
        assert_eq!(
            response_format(Want::Json(Some(&schema)), STRUCTURED_SCHEMA).unwrap()["json_schema"]["schema"],
            schema
        );
        assert!(response_format(Want::Json(Some(&schema)), STRUCTURED_NONE).is_none());
        assert!(response_format(Want::Text, STRUCTURED_SCHEMA).is_none());
    }
}
