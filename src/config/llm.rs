//! `[llm]`: which model plays the personas, and how the runner talks to it (structured
//! output, calls written as text, the request extras a server or model needs).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::time::HumanDuration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmProvider {
    /// `openai` when an API key is configured, else `offline`.
    Auto,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
    /// No LLM: tools and arguments chosen from the module mix and the tools' schemas.
    Offline,
}

/// Whether the rating (and the persona's form answers) ask for structured output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// `json_schema`, falling back once per process (to `json_object`, then none) when the
    /// endpoint answers 400 naming `response_format`.
    Auto,
    /// `response_format: {"type": "json_schema", …}` with the answer's schema.
    JsonSchema,
    /// `response_format: {"type": "json_object"}`.
    JsonObject,
    /// No `response_format`: the JSON is found in the answer's text.
    Off,
}

/// What to do with tool calls a model writes as text instead of as tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextToolCalls {
    /// Run the calls to offered tools found in the message (fenced or bare JSON,
    /// `<tool_call>` tags), marked `recovered` in the audit.
    Recover,
    /// Only real `tool_calls` count.
    Off,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    /// Base URL of the chat-completions API (…/v1).
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key. systemd credential name: llm-api-key.
    pub api_key_env: String,
    /// File holding the API key (wins over the variable).
    pub api_key_file: Option<PathBuf>,
    pub temperature: f32,
    /// Completion tokens per model turn.
    pub max_tokens: u32,
    /// Structured output for answers that must be JSON (`auto`, `json_schema`,
    /// `json_object`, `off`).
    pub structured_output: StructuredOutput,
    /// Tool calls written as text: `recover` (default) or `off`.
    pub text_tool_calls: TextToolCalls,
    /// Merged into every chat request as it is (e.g. `top_k`, `seed`, `logit_bias`,
    /// `chat_template_kwargs`): what a particular server or model needs.
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// Chat requests per minute across all personas (0 = unlimited).
    pub requests_per_minute: u32,
    /// Timeout of one chat request.
    pub request_timeout: HumanDuration,
    /// Offline driver: seed of its choices (each tick mixes in the persona and time).
    pub seed: u64,
    /// Offline driver: send edge cases on purpose (marked `chaos` in the audit).
    pub chaos: bool,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: LlmProvider::Auto,
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            api_key_file: None,
            temperature: 0.7,
            max_tokens: 1024,
            structured_output: StructuredOutput::Auto,
            text_tool_calls: TextToolCalls::Recover,
            extra_body: serde_json::Map::new(),
            requests_per_minute: 60,
            request_timeout: HumanDuration::from_secs(120),
            seed: 0,
            chaos: false,
        }
    }
}
