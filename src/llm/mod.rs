//! The LLM side: any OpenAI-compatible chat-completions endpoint through async-openai.
//!
//! - **Our retry policy.** async-openai's built-in retry layer is replaced by
//!   `with_http_service`. The service applies [`crate::http::RetryPolicy`] and the global
//!   requests-per-minute limit to every attempt.
//! - **Lenient responses.** Request and response are our own types (`byot`): local servers
//!   send tool calls without `"type": "function"`, `finish_reason: "eos"`, or arguments as
//!   an object rather than a string, and a strict parse would fail on each of these.

mod names;

use std::num::NonZeroU32;
use std::sync::Arc;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{LlmConfig, RetryConfig, Secret};
use crate::http::{Attempt, RetryPolicy, retry_after, retryable_error, retryable_status};
pub use names::ToolNames;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the LLM endpoint refused the request: {0}")]
    Api(String),
    #[error("cannot reach the LLM endpoint: {0}")]
    Transport(String),
    #[error("the LLM answer is not a chat completion: {0}")]
    Malformed(String),
}

impl LlmError {
    /// The same error with `secret` removed from its message.
    fn redact(self, secret: &str) -> Self {
        let clean = |text: String| crate::config::redact(&text, &[secret]).into_owned();
        match self {
            Self::Api(text) => Self::Api(clean(text)),
            Self::Transport(text) => Self::Transport(clean(text)),
            Self::Malformed(text) => Self::Malformed(clean(text)),
        }
    }
}

impl From<OpenAIError> for LlmError {
    fn from(err: OpenAIError) -> Self {
        match err {
            OpenAIError::ApiError(api) => Self::Api(api.to_string()),
            OpenAIError::Reqwest(err) => Self::Transport(crate::http::describe(&err)),
            OpenAIError::JSONDeserialize(err, _) => Self::Malformed(err.to_string()),
            other => Self::Api(other.to_string()),
        }
    }
}

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
}

impl ChatTurn {
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
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// A chat-completions request body over the caller's messages and tools.
#[derive(serde::Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Value],
    temperature: f32,
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    tools: &'a [Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
}

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
    Ok(ChatTurn {
        content,
        tool_calls,
        finish_reason: choice.finish_reason,
        prompt_tokens: usage.prompt_tokens.unwrap_or(0),
        completion_tokens: usage.completion_tokens.unwrap_or(0),
    })
}

/// A chat-completions client with our retry policy and rate limit.
#[derive(Clone)]
pub struct LlmClient {
    client: async_openai::Client<OpenAIConfig>,
    config: LlmConfig,
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
                        let request = factory.build().await.map_err(|err| Attempt::Fail(Err(err)))?;
                        let sent = http.execute(request).await;
                        crate::metrics::global().llm_attempt(sent.as_ref().ok().map(|r| r.status().as_u16()));
                        match sent {
                            Ok(response) if retryable_status(response.status()) => {
                                crate::metrics::global().llm_retry();
                                let wait = retry_after(response.headers());
                                tracing::warn!(
                                    status = response.status().as_u16(),
                                    ?wait,
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
            config: config.clone(),
            api_key: api_key.clone(),
        }
    }

    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// One chat turn. `tools` are function definitions (LLM-side names);
    /// `response_format` asks for structured output where the endpoint supports it.
    pub async fn chat(
        &self,
        messages: &[Value],
        tools: &[Value],
        response_format: Option<Value>,
    ) -> Result<ChatTurn, LlmError> {
        self.request(
            messages,
            tools,
            response_format,
            self.config.max_tokens,
            self.config.temperature,
        )
        .await
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
        // Borrowed, not a `json!` copy: the conversation and the tool list grow with every
        // turn, and cloning them per request was a deep copy of every message.
        let request = ChatRequest {
            model: &self.config.model,
            messages,
            temperature,
            max_tokens,
            stream: false,
            tools,
            response_format,
        };
        let raw: RawResponse = self
            .client
            .chat()
            .create_byot(request)
            .await
            .map_err(|err| LlmError::from(err).redact(self.api_key.expose()))?;
        parse_turn(raw)
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
}
