//! What can go wrong asking the model, in words: refused, unreachable, or not a chat
//! completion, never with the API key in it.

use async_openai::error::OpenAIError;

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
    /// The class of the error, as a span's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Api(_) => "api_error",
            Self::Transport(_) => "transport_error",
            Self::Malformed(_) => "malformed_response",
        }
    }

    /// The same error with `secret` removed from its message.
    pub(super) fn redact(self, secret: &str) -> Self {
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
