//! What an LLM endpoint says about itself, for `config check`: the models it serves and
//! their context window (llama.cpp's `/props` and `/v1/models`, vLLM's `max_model_len`),
//! and how many tokens a text takes (llama.cpp's `/tokenize`, else an estimate).

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{LlmConfig, Secret};

/// What the endpoint told about its models.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelInfo {
    /// The model ids `/models` lists.
    pub served: Vec<String>,
    /// The context window in tokens, and which answer said so.
    pub context: Option<(u64, &'static str)>,
}

/// A text's size in tokens, and whether it was counted by the server or estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCount {
    Counted(usize),
    /// About a token per three characters (JSON and German run denser than English prose).
    Estimated(usize),
}

impl TokenCount {
    pub fn tokens(self) -> usize {
        match self {
            Self::Counted(n) | Self::Estimated(n) => n,
        }
    }
}

/// Reads the endpoint's description of itself. Nothing here is an error: an endpoint
/// that says nothing leaves the fields empty.
pub async fn model_info(config: &LlmConfig, api_key: &Secret) -> Result<ModelInfo, String> {
    let client = crate::http::client(Duration::from_secs(10));
    let base = config.base_url.trim_end_matches('/');
    let models: Value = get_json(&client, &format!("{base}/models"), api_key).await?;
    let data = models
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let served = data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let from_models = data.iter().find_map(|m| {
        m.pointer("/meta/n_ctx")
            .or_else(|| m.get("max_model_len"))
            .or_else(|| m.get("context_length"))
            .and_then(Value::as_u64)
    });
    let mut info = ModelInfo {
        served,
        context: from_models.map(|n| (n, "/models")),
    };
    if info.context.is_none() {
        let props = get_json(&client, &format!("{}/props", root(base)), api_key).await.ok();
        info.context = props
            .as_ref()
            .and_then(|p| p.pointer("/default_generation_settings/n_ctx"))
            .and_then(Value::as_u64)
            .map(|n| (n, "/props"));
    }
    Ok(info)
}

/// The tokens of `text`: counted by the server's `/tokenize` where it has one.
pub async fn count_tokens(config: &LlmConfig, api_key: &Secret, text: &str) -> TokenCount {
    let client = crate::http::client(Duration::from_secs(30));
    let url = format!("{}/tokenize", root(config.base_url.trim_end_matches('/')));
    let counted = async {
        let response = client
            .post(&url)
            .bearer_auth(api_key.expose())
            .json(&json!({"content": text}))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: Value = crate::http::read_json(response, crate::http::MAX_BODY_BYTES)
            .await
            .ok()?;
        body.get("tokens").and_then(Value::as_array).map(Vec::len)
    }
    .await;
    counted.map_or_else(
        || TokenCount::Estimated(text.chars().count().div_ceil(3)),
        TokenCount::Counted,
    )
}

/// The server's root: the base URL without its `/v1`.
fn root(base: &str) -> &str {
    base.strip_suffix("/v1").unwrap_or(base)
}

async fn get_json(client: &reqwest::Client, url: &str, api_key: &Secret) -> Result<Value, String> {
    let response = client
        .get(url)
        .bearer_auth(api_key.expose())
        .send()
        .await
        .map_err(|e| crate::redact::redact(&crate::http::describe(&e), &[api_key.expose()]).into_owned())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url} answered HTTP {status}"));
    }
    crate::http::read_json(response, crate::http::MAX_BODY_BYTES).await
}
