//! The lab: tools the sample product offers with `--lab`, so the runner's client features
//! meet a real server in the tests. They ask the client to fill in forms (form and URL
//! elicitation), to sample its model, to list its roots; they answer with pictures, need a
//! task call, take nested `$ref` models, crash the server or never answer.
//!
//! Sampling and roots are deprecated in rmcp (SEP-2577, protocol 2026-07-28) but current
//! in 2025-11-25, which the runner speaks.
#![allow(deprecated)]

use std::time::Duration;

use base64::Engine as _;
use rmcp::model::{
    CallToolResult, CreateMessageRequestParams, ElicitRequestParams, ElicitationSchema, SamplingMessage,
};
use rmcp::{ErrorData, Peer, RoleServer};
use serde_json::{Value, json};

/// The lab tools' definitions (module `lab`).
pub fn definitions() -> Vec<Value> {
    let object =
        |properties: Value, required: Value| json!({"type": "object", "properties": properties, "required": required});
    vec![
        json!({"name": "lab.ask_profile", "description": "Asks you to fill in your profile.",
               "inputSchema": object(json!({}), json!([]))}),
        json!({"name": "lab.open_link", "description": "Asks you to open a page in the browser.",
               "inputSchema": object(json!({}), json!([]))}),
        json!({"name": "lab.summarize", "description": "Summarizes a text with your assistant's model.",
               "inputSchema": object(json!({"text": {"type": "string", "minLength": 1}}), json!(["text"]))}),
        json!({"name": "lab.roots", "description": "Lists the folders you share.",
               "inputSchema": object(json!({}), json!([]))}),
        json!({"name": "lab.chart", "description": "Draws your mood chart.",
               "inputSchema": object(json!({}), json!([]))}),
        json!({"name": "lab.export", "description": "Exports everything (a long task).",
               "inputSchema": object(json!({}), json!([]))}),
        // The shape pydantic (the Python SDK) gives nested models.
        json!({"name": "lab.plan_trip", "description": "Plans a trip for a traveller.",
        "inputSchema": {
            "type": "object",
            "$defs": {
                "Address": {"type": "object", "properties": {
                    "city": {"type": "string", "minLength": 1},
                    "zip": {"type": "string", "minLength": 5, "maxLength": 5}
                }, "required": ["city", "zip"]},
                "Traveller": {"allOf": [
                    {"type": "object", "properties": {"name": {"type": "string", "minLength": 1}}, "required": ["name"]},
                    {"properties": {"home": {"$ref": "#/$defs/Address"}}, "required": ["home"]}
                ]}
            },
            "properties": {
                "traveller": {"$ref": "#/$defs/Traveller"},
                "destination": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
                "nights": {"type": "integer", "minimum": 1, "maximum": 30}
            },
            "required": ["traveller", "nights"]
        }}),
        // A schema the offline driver cannot satisfy (it does not synthesize patterns).
        json!({"name": "lab.verify", "description": "Verifies a phone number.",
               "inputSchema": object(json!({"phone": {"type": "string", "pattern": "^\\+49[0-9]{9,11}$"}}), json!(["phone"]))}),
        // For goals that fail and goals that are flaky (the trial runner's tests).
        json!({"name": "lab.fail", "description": "Submits your tax form (the service is down: it always fails).",
               "inputSchema": object(json!({}), json!([]))}),
        json!({"name": "lab.flaky", "description": "Syncs your data (it fails every other time).",
               "inputSchema": object(json!({}), json!([]))}),
        json!({"name": "lab.crash", "description": "Crashes the product.",
               "inputSchema": object(json!({}), json!([]))}),
        json!({"name": "lab.hang", "description": "Never answers.",
               "inputSchema": object(json!({}), json!([]))}),
    ]
}

/// A one-pixel PNG, padded: a picture of ~30 KB.
fn picture() -> String {
    let mut bytes = vec![0u8; 30_000];
    bytes[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn text(value: Value) -> CallToolResult {
    CallToolResult::success(vec![rmcp::model::ContentBlock::text(value.to_string())])
}

fn failed(err: impl std::fmt::Display) -> ErrorData {
    ErrorData::internal_error(err.to_string(), None)
}

/// Runs a lab tool.
#[allow(deprecated)]
pub async fn call(tool: &str, arguments: &Value, peer: &Peer<RoleServer>) -> Result<CallToolResult, ErrorData> {
    match tool {
        "lab.ask_profile" => {
            let schema: ElicitationSchema = serde_json::from_value(json!({
                "type": "object",
                "properties": {
                    "nickname": {"type": "string", "minLength": 1, "default": "Anna"},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "newsletter": {"type": "boolean", "default": false}
                },
                "required": ["age"]
            }))
            .map_err(failed)?;
            let answer = peer
                .create_elicitation(ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message: "Complete your profile".into(),
                    requested_schema: schema,
                })
                .await
                .map_err(failed)?;
            Ok(text(serde_json::to_value(answer).map_err(failed)?))
        }
        "lab.open_link" => {
            let answer = peer
                .create_elicitation(ElicitRequestParams::UrlElicitationParams {
                    meta: None,
                    message: "Connect your calendar".into(),
                    url: "https://calendar.example/connect".into(),
                    elicitation_id: "connect-1".into(),
                })
                .await
                .map_err(failed)?;
            Ok(text(serde_json::to_value(answer).map_err(failed)?))
        }
        "lab.summarize" => {
            let input = arguments["text"].as_str().unwrap_or_default();
            let mut request =
                CreateMessageRequestParams::new(vec![SamplingMessage::user_text(format!("Summarize: {input}"))], 64);
            request.system_prompt = Some("You write one-line summaries.".into());
            let reply = peer.create_message(request).await.map_err(failed)?;
            Ok(text(serde_json::to_value(reply).map_err(failed)?))
        }
        "lab.roots" => {
            let roots = peer.list_roots().await.map_err(failed)?;
            Ok(text(serde_json::to_value(roots).map_err(failed)?))
        }
        "lab.chart" => serde_json::from_value(json!({"content": [
            {"type": "image", "data": picture(), "mimeType": "image/png"},
            {"type": "text", "text": "Your mood rose all week."}
        ]}))
        .map_err(failed),
        "lab.export" => Ok(text(json!({"exported": true}))),
        "lab.plan_trip" => Ok(text(json!({"planned": arguments}))),
        "lab.verify" => Ok(text(json!({"verified": arguments}))),
        "lab.fail" => Ok(CallToolResult::error(vec![rmcp::model::ContentBlock::text(
            "the tax service is down, try again later",
        )])),
        "lab.flaky" => {
            static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            if CALLS
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .is_multiple_of(2)
            {
                Ok(text(json!({"synced": true})))
            } else {
                Ok(CallToolResult::error(vec![rmcp::model::ContentBlock::text(
                    "sync conflict, try again",
                )]))
            }
        }
        "lab.crash" => {
            // Dies with the call in flight, as a crashing product does.
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                std::process::exit(3);
            });
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(text(json!({"crashed": false})))
        }
        "lab.hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(text(json!({"answered": "too late"})))
        }
        other => Err(ErrorData::invalid_params(format!("unknown tool `{other}`"), None)),
    }
}

/// The raw `tools/list` answer with `lab.export` marked as needing a task call (rmcp's
/// tool model has no `execution` field, so the lab adds it to the wire text).
pub fn mark_task_tools(body: &str) -> String {
    body.replace(
        "\"name\":\"lab.export\"",
        "\"execution\":{\"taskSupport\":\"required\"},\"name\":\"lab.export\"",
    )
}
