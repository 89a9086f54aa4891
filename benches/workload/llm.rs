//! A scripted OpenAI-compatible endpoint for the benchmark: every persona makes
//! `calls` tool calls, four per turn, against the sample gateway's tools (each with other
//! arguments, so none is deduplicated), then stops, then rates every part it used.

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

/// Calls the sample gateway accepts, by LLM function name, with arguments made distinct
/// by `n`.
fn call(n: usize) -> (&'static str, Value) {
    match n % 10 {
        0 => ("todo_create", json!({"title": format!("Aufgabe {n}")})),
        1 => ("todo_list", json!({"status": "open"})),
        2 => ("journal_add", json!({"text": format!("Eintrag {n}: ein ruhiger Tag")})),
        3 => ("journal_list", json!({})),
        4 => (
            "notes_create",
            json!({"title": format!("Notiz {n}"), "body": "Einkaufsliste"}),
        ),
        5 => ("notes_search", json!({"query": format!("Notiz {n}")})),
        6 => ("mood_log", json!({"score": 1 + n % 5})),
        7 => ("mood_history", json!({})),
        8 => ("calendar_list", json!({})),
        _ => ("contacts_find", json!({"query": format!("Kontakt {n}")})),
    }
}

fn reply(message: Value, prompt_tokens: u64) -> Json<Value> {
    Json(json!({
        "id": "bench", "object": "chat.completion", "created": 0, "model": "bench-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 20, "total_tokens": prompt_tokens + 20}
    }))
}

async fn complete(Json(request): Json<Value>, calls: usize) -> Json<Value> {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let tokens = 50 + messages.len() as u64 * 30;
    // The rating request comes without tools: rate every part named in it.
    if request.get("tools").is_none() {
        let prompt = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default();
        let parts = prompt
            .lines()
            .find_map(|l| l.strip_prefix("Parts to rate: "))
            .unwrap_or_default();
        let ratings: Vec<Value> = parts
            .split(", ")
            .filter(|p| !p.is_empty())
            .map(|module| json!({"module": module, "rating": 4, "note": "Ging gut."}))
            .collect();
        return reply(
            json!({"role": "assistant", "content": json!({"ratings": ratings}).to_string()}),
            tokens,
        );
    }
    let done = messages.iter().filter(|m| m["role"] == "tool").count();
    if done >= calls {
        return reply(json!({"role": "assistant", "content": "Fertig für heute."}), tokens);
    }
    let tool_calls: Vec<Value> = (done..(done + 4).min(calls))
        .map(|n| {
            let (name, arguments) = call(n);
            json!({"id": format!("call_{n}"), "type": "function",
                   "function": {"name": name, "arguments": arguments.to_string()}})
        })
        .collect();
    reply(
        json!({"role": "assistant", "content": null, "tool_calls": tool_calls}),
        tokens,
    )
}

/// Serves the scripted endpoint on a free port; its base URL (`…/v1`).
pub async fn start(calls: usize) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |body: Json<Value>| complete(body, calls)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}
