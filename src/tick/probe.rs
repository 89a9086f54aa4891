//! What `config check` asks of the product before any tick: logging one persona in and
//! listing the tools it would be offered (the policy applied), and the size of the first
//! request a tick of it would send the model, to hold against the model's context window.

use serde_json::{Value, json};

use super::TickError;
use super::product::Products;
use crate::config::{Config, Env};
use crate::mcp::{Capabilities, Connect, McpSession, ToolInfo};

/// The tools `email` (a persona of the default target) would be offered now.
pub async fn offered_tools(config: &Config, env: &Env, email: &str) -> Result<Vec<ToolInfo>, TickError> {
    let products = Products::new(config, env)?;
    let product = products.all().next().expect("the default product");
    let credentials = product.auth.credentials(email).await?;
    let session = McpSession::connect(Connect {
        config: &product.mcp,
        policy: &product.policy,
        credentials: &credentials,
        persona: email,
        oauth: product.oauth.clone(),
        agent: None,
        capabilities: Capabilities::default(),
    })
    .await?;
    let offered = session
        .tools()
        .iter()
        .filter(|tool| product.policy.check(tool).is_ok())
        .cloned()
        .collect();
    session.close().await;
    Ok(offered)
}

/// About what a tick's first request carries besides the conversation: the role-play
/// template around `persona_prompt`, room for the story so far, the opening turn, and
/// the tool definitions as the model gets them.
pub fn first_request_text(persona_prompt: &str, tools: &[ToolInfo], story_actions: usize) -> String {
    let definitions: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({"type": "function", "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": &*tool.input_schema,
            }})
        })
        .collect();
    let story = "- Mon 01.01. 09:00: module.verb (ok)\n".repeat(story_actions);
    format!(
        "{}\n{persona_prompt}\n{story}\n{}\n{}",
        super::prompt::system_prompt_template(),
        super::prompt::opening(""),
        Value::Array(definitions)
    )
}
