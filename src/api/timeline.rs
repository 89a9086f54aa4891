//! A tick's transcript as a conversation (the tick page's "story"): the system prompt and
//! story so far folded away, each user turn, nudge and assistant message as a bubble, each
//! call as a card (tool, module, arguments, result or error, latency, and badges for
//! deduped with a link to the earlier call, denied, not sent, recovered, unknown, chaos),
//! the server's elicitation and sampling exchanges, the rating turn with each rating
//! beside the calls that are its evidence, and the end. Long text is folded with its size
//! shown, and every entry keeps a raw-JSON toggle. Server-rendered, no script.

use std::fmt::Write as _;

use serde_json::Value;

use super::html::{count, esc};
use crate::model::call::{CallKind, CallResult};
use crate::model::rating::Rating;
use crate::model::tick::TickStatus;

/// Text longer than this is folded.
const FOLD_CHARS: usize = 600;

/// The timeline's items.
pub(super) fn render(entries: &[Value], ratings: &[Rating]) -> String {
    let mut out = String::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = entry.get("step").and_then(Value::as_str).unwrap_or("step");
        let body = match name {
            "system" => system(entry),
            "tools" => tools(entry),
            "user" => bubble("user", "Opening", text_of(entry, "content")),
            "nudge" => bubble("user", "Nudge", text_of(entry, "content")),
            "rating_request" => bubble("user", "Rating request", text_of(entry, "content")),
            "assistant" => assistant(entry),
            "rating_answer" => rating_answer(entry),
            "offline_choice" => offline_choice(entry),
            "call" => call(entry, &entries[..index]),
            "elicitation" | "sampling" => server_request(name, entry),
            "ratings" => rated(entry, entries, ratings),
            "state" => state_read(entry),
            "end" => end(entry),
            _ => generic(entry),
        };
        let anchor = match (name, entry.get("seq").and_then(Value::as_i64)) {
            ("call", Some(seq)) => format!(" id=\"call-{seq}\""),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<li class=\"step {}\"{anchor}>{body}{}</li>",
            esc(name),
            raw(entry)
        );
    }
    out
}

fn text_of<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A call's result as the transcript wrote it (`None`: not one the runner writes).
fn result_of(entry: &Value) -> Option<CallResult> {
    text_of(entry, "result").parse().ok()
}

/// Text as a paragraph block, folded when long, its size shown.
fn folded(label: &str, text: &str) -> String {
    let chars = text.chars().count();
    if chars <= FOLD_CHARS {
        return format!("<pre>{}</pre>", esc(text));
    }
    format!(
        "<details><summary>{} ({})</summary><pre>{}</pre></details>",
        esc(label),
        count(chars as i64, "character"),
        esc(text)
    )
}

fn raw(entry: &Value) -> String {
    let json = serde_json::to_string_pretty(entry).unwrap_or_default();
    format!(
        "<details class=\"raw\"><summary>JSON</summary><pre>{}</pre></details>",
        esc(&json)
    )
}

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

fn system(entry: &Value) -> String {
    let story = text_of(entry, "story_so_far");
    format!(
        "<details class=\"system\"><summary>System prompt and story so far <span class=\"muted\">({} · {})</span></summary>\
         <pre>{}</pre><p class=\"muted\">Story so far</p><pre>{}</pre><p class=\"muted\">template {}</p></details>",
        esc(text_of(entry, "local_time")),
        esc(text_of(entry, "time_zone")),
        esc(text_of(entry, "persona_prompt")),
        esc(if story.is_empty() { "(nothing yet)" } else { story }),
        esc(text_of(entry, "template")),
    )
}

fn tools(entry: &Value) -> String {
    let names = |key: &str| -> Vec<String> {
        entry
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| match v {
                Value::String(name) => name.clone(),
                other => format!("{}: {}", text_of(other, "tool"), text_of(other, "reason")),
            })
            .collect()
    };
    let (offered, withheld) = (names("offered"), names("withheld"));
    format!(
        "<details><summary>Tools: {} offered, {} withheld <span class=\"muted\">(MCP {})</span></summary><p>{}</p>{}</details>",
        offered.len(),
        withheld.len(),
        esc(text_of(entry, "protocol_version")),
        esc(&offered.join(", ")),
        if withheld.is_empty() {
            String::new()
        } else {
            format!("<p class=\"muted\">Withheld: {}</p>", esc(&withheld.join("; ")))
        }
    )
}

fn bubble(who: &str, label: &str, text: &str) -> String {
    format!(
        "<div class=\"bubble {who}\"><p class=\"who\">{}</p>{}</div>",
        esc(label),
        folded("the whole message", text)
    )
}

fn assistant(entry: &Value) -> String {
    let mut out = format!(
        "<div class=\"bubble assistant\"><p class=\"who\">Persona · turn {}{}</p>",
        entry.get("turn").and_then(Value::as_i64).unwrap_or_default(),
        if entry.get("recovered").and_then(Value::as_bool) == Some(true) {
            format!(" {}", badge("info", "calls recovered from text"))
        } else {
            String::new()
        }
    );
    let content = text_of(entry, "content");
    if !content.is_empty() {
        out.push_str(&folded("the whole message", content));
    }
    let calls: Vec<String> = entry
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| format!("<code>{}</code>", esc(text_of(c, "tool"))))
        .collect();
    if !calls.is_empty() {
        let _ = write!(out, "<p class=\"muted\">asks for {}</p>", calls.join(", "));
    }
    out.push_str("</div>");
    out
}

fn rating_answer(entry: &Value) -> String {
    let mut label = format!(
        "Persona · rating answer {}",
        entry.get("attempt").and_then(Value::as_i64).unwrap_or(1)
    );
    if entry.get("cut").and_then(Value::as_bool) == Some(true) {
        label.push_str(" (cut at the token limit)");
    }
    let mut out = bubble("assistant", &label, text_of(entry, "content"));
    if let Some(problem) = entry.get("problem").and_then(Value::as_str) {
        let _ = write!(out, "<p class=\"bad\">Unusable: {}</p>", esc(problem));
    }
    out
}

fn offline_choice(entry: &Value) -> String {
    format!(
        "<p class=\"muted\">Offline driver, turn {}: picks <code>{}</code> ({}){}</p>",
        entry.get("turn").and_then(Value::as_i64).unwrap_or_default(),
        esc(text_of(entry, "tool")),
        esc(text_of(entry, "module")),
        if entry.get("chaos").and_then(Value::as_bool) == Some(true) {
            " as a chaos case"
        } else {
            ""
        }
    )
}

/// The earlier call a deduped one repeats: the last before it with the same tool and
/// arguments that was answered.
fn earlier_seq(entry: &Value, before: &[Value]) -> Option<i64> {
    before
        .iter()
        .rev()
        .filter(|e| e.get("step").and_then(Value::as_str) == Some("call"))
        .find(|e| {
            e.get("tool") == entry.get("tool")
                && e.get("arguments") == entry.get("arguments")
                // Dedup replays only an answered call, or one that may have run.
                && matches!(result_of(e), Some(CallResult::Ok | CallResult::Unknown))
        })
        .and_then(|e| e.get("seq").and_then(Value::as_i64))
}

fn call(entry: &Value, before: &[Value]) -> String {
    let result = result_of(entry);
    let mut badges = vec![match result {
        Some(CallResult::Ok) => badge("good", "ok"),
        Some(CallResult::Error) => badge("bad", "error"),
        Some(CallResult::Deduped) => badge("info", "deduped"),
        Some(CallResult::Denied) => badge("bad", "denied"),
        Some(CallResult::NotSent) => badge("bad", "not sent"),
        Some(CallResult::Unknown) => badge("warn", "unknown"),
        Some(CallResult::Pending) => badge("warn", "pending"),
        None => badge("info", text_of(entry, "result")),
    }];
    if result == Some(CallResult::Deduped) {
        badges.push(match earlier_seq(entry, before) {
            Some(seq) => format!("<a href=\"#call-{seq}\">repeats call #{seq}</a>"),
            None => "<span class=\"muted\">repeats an earlier call</span>".into(),
        });
    }
    for (flag, text) in [("recovered", "recovered from text"), ("chaos", "chaos")] {
        if entry.get(flag).and_then(Value::as_bool) == Some(true) {
            badges.push(badge("info", text));
        }
    }
    if let Some(refusal) = entry.get("refusal").and_then(Value::as_str) {
        badges.push(format!("<span class=\"muted\">refused: {}</span>", esc(refusal)));
    }
    let latency = entry
        .get("latency_ms")
        .and_then(Value::as_i64)
        .map_or_else(String::new, |ms| format!(" · {ms} ms"));
    let arguments = match entry.get("arguments") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => "(none)".into(),
        Some(other) => other.to_string(),
    };
    format!(
        "<div class=\"card\"><p><b>#{} <code>{}</code></b> <span class=\"muted\">{}{latency}</span> {}</p>\
         <p class=\"muted\">arguments</p>{}<p class=\"muted\">answer</p>{}</div>",
        entry.get("seq").and_then(Value::as_i64).unwrap_or_default(),
        esc(text_of(entry, "tool")),
        esc(text_of(entry, "module")),
        badges.join(" "),
        folded("the arguments", &arguments),
        folded("the whole answer", text_of(entry, "answer")),
    )
}

fn server_request(kind: &str, entry: &Value) -> String {
    let show = |key: &str| match entry.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => serde_json::to_string_pretty(other).unwrap_or_default(),
        None => String::new(),
    };
    let label = if kind.parse::<CallKind>() == Ok(CallKind::Sampling) {
        "The product asked the persona's model (sampling)"
    } else {
        "The product asked the persona (elicitation)"
    };
    format!(
        "<div class=\"card server\"><p><b>{label}</b> {}</p><p class=\"muted\">request</p>{}<p class=\"muted\">answer</p>{}{}</div>",
        badge(
            if result_of(entry) == Some(CallResult::Ok) {
                "good"
            } else {
                "bad"
            },
            text_of(entry, "result")
        ),
        folded("the request", &show("request")),
        folded("the answer", &show("answer")),
        entry
            .get("error")
            .and_then(Value::as_str)
            .map(|e| format!("<p class=\"bad\">{}</p>", esc(e)))
            .unwrap_or_default()
    )
}

/// The ratings, each beside the calls of its module (its evidence).
fn rated(entry: &Value, entries: &[Value], stored: &[Rating]) -> String {
    let mut out = String::from("<div class=\"card ratings\"><p><b>Ratings</b></p><ul>");
    let given = entry
        .get("ratings")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for rating in &given {
        let module = text_of(rating, "module");
        let evidence: Vec<String> = entries
            .iter()
            .filter(|e| e.get("step").and_then(Value::as_str) == Some("call") && text_of(e, "module") == module)
            .filter_map(|e| {
                let seq = e.get("seq").and_then(Value::as_i64)?;
                Some(format!(
                    "<a href=\"#call-{seq}\">#{seq} {}</a>",
                    esc(text_of(e, "result"))
                ))
            })
            .collect();
        let stored = stored.iter().find(|r| r.module == module);
        let _ = write!(
            out,
            "<li><b>{}/5</b> {} — {}<br><span class=\"muted\">evidence: {}{}</span></li>",
            rating.get("rating").and_then(Value::as_i64).unwrap_or_default(),
            esc(module),
            esc(text_of(rating, "note")),
            if evidence.is_empty() {
                "no call".into()
            } else {
                evidence.join(", ")
            },
            stored.map_or_else(String::new, |r| format!(
                " ({}, {})",
                count(i64::from(r.evidence_calls), "call"),
                count(i64::from(r.evidence_errors), "error")
            )),
        );
    }
    out.push_str("</ul></div>");
    out
}

fn state_read(entry: &Value) -> String {
    format!(
        "<div class=\"card\"><p><b>State read</b> <code>{}</code> <span class=\"muted\">(the runner's own, after play)</span></p>{}{}</div>",
        esc(text_of(entry, "tool")),
        folded("the answer", text_of(entry, "text")),
        entry
            .get("error")
            .and_then(Value::as_str)
            .map(|e| format!("<p class=\"bad\">{}</p>", esc(e)))
            .unwrap_or_default()
    )
}

fn end(entry: &Value) -> String {
    let status = text_of(entry, "status");
    let class = match status.parse::<TickStatus>() {
        Ok(TickStatus::Ok) => "good",
        // The persona did nothing, or the spend cap held it: no failure of the product.
        Ok(TickStatus::Idle | TickStatus::Skipped) => "warn",
        _ => "bad",
    };
    format!(
        "<p><b>End</b> {}{}</p>",
        badge(class, status),
        entry
            .get("error")
            .and_then(Value::as_str)
            .map(|e| format!(" {}", esc(e)))
            .unwrap_or_default()
    )
}

/// A step this page does not know: its fields as they are.
fn generic(entry: &Value) -> String {
    let mut fields = String::new();
    for (key, value) in entry.as_object().into_iter().flatten().filter(|(k, _)| *k != "step") {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let _ = write!(fields, "<p class=\"muted\">{}</p>{}", esc(key), folded(key, &text));
    }
    format!(
        "<div class=\"card\"><p><b>{}</b></p>{fields}</div>",
        esc(text_of(entry, "step"))
    )
}
