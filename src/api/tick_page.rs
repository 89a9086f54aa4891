//! The tick page of the dashboard (`/ticks/{id}`): one tick's story step by step (what
//! the persona was told, wrote, chose and saw, the rating exchange) beside the evidence
//! (every audited call) and the ratings. Low ratings on the dashboard link here. Same
//! sign-in as the dashboard; the JSON of the same story is `GET /api/v1/admin/ticks/{id}`.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use uuid::Uuid;

use super::ApiState;
use super::auth::is_admin;
use super::dashboard::login_form;
use super::html::{esc, html, html_page};
use crate::model::persona::DEFAULT_TENANT;

/// One tick's story (HTML).
#[utoipa::path(get, path = "/ticks/{id}", tag = "dashboard", security((), ("dashboard_session" = [])),
    params(("id" = String, Path, description = "tick id (UUID)")),
    responses(
        (status = 200, description = "the tick page, or the sign-in form", body = String, content_type = "text/html"),
        (status = 404, description = "no such tick", body = String, content_type = "text/html"),
        (status = 503, description = "no admin token configured", body = String, content_type = "text/html"),
    ))]
pub async fn page(
    State(state): State<ApiState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(token) = state.admin_token() else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            login_form(Some("no admin token is configured")),
        );
    };
    if !is_admin(&headers, &method, &token, state.sessions()) {
        return html(StatusCode::OK, login_form(None));
    }
    let not_found = || {
        html(
            StatusCode::NOT_FOUND,
            html_page("persona-runner", "<p>No such tick. <a href=\"/\">Back</a></p>"),
        )
    };
    let Ok(id) = Uuid::parse_str(id.trim()) else {
        return not_found();
    };
    match render(&state, id).await {
        Ok(Some(text)) => html(StatusCode::OK, text),
        Ok(None) => not_found(),
        Err(err) => {
            tracing::error!(%err, "rendering a tick page failed");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                html_page(
                    "persona-runner",
                    "<p>The store failed to answer; see the daemon's log, then reload.</p>",
                ),
            )
        }
    }
}

async fn render(state: &ApiState, id: Uuid) -> Result<Option<String>, crate::store::StoreError> {
    let store = state.store();
    let Some(tick) = store.tick_record(DEFAULT_TENANT, id).await? else {
        return Ok(None);
    };
    let transcript = store.tick_transcript(id).await?;
    let calls = store.tick_calls(id).await?;
    let ratings = store.tick_ratings(id).await?;

    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1><a href=\"/\">persona-runner QA</a> · tick</h1></header><main>\
         <section class=\"wide\" id=\"tick\"><h2>{} · {} · {}</h2><p class=\"muted\">{} · trigger {} · simulator {} · {} calls ({} ok, {} error) · {} tokens</p>{}{}</section>",
        esc(&tick.persona),
        tick.started_at.format("%Y-%m-%d %H:%M UTC"),
        esc(tick.status.as_str()),
        tick.id,
        esc(tick.trigger.as_str()),
        esc(tick.simulator.as_deref().unwrap_or("–")),
        tick.tool_calls,
        tick.calls_ok,
        tick.calls_error,
        tick.tokens_in + tick.tokens_out,
        trace_line(
            tick.trace_id.as_deref(),
            state.settings().config.telemetry.trace_url.as_deref()
        ),
        tick.error
            .as_deref()
            .map(|e| format!("<p class=\"bad\">{}</p>", esc(e)))
            .unwrap_or_default(),
    );
    let mut rows = String::new();
    for r in &ratings {
        let _ = write!(
            rows,
            "<tr><td class=\"num\">{}/5</td><td>{}</td><td>{}</td><td class=\"num\">{} calls, {} errors</td></tr>",
            r.rating,
            esc(&r.module),
            esc(r.notes.as_deref().unwrap_or_default()),
            r.evidence_calls,
            r.evidence_errors
        );
    }
    let _ = write!(
        body,
        "<section id=\"ratings\"><h2>Ratings</h2><div class=\"scroll\"><table><thead><tr><th>rating</th><th>module</th><th>note</th><th>evidence</th></tr></thead><tbody>{rows}</tbody></table></div></section>"
    );
    let mut steps = String::new();
    match &transcript {
        Some(t) => {
            for entry in t.entries.as_array().into_iter().flatten() {
                steps.push_str(&step(entry));
            }
            if t.truncated {
                steps.push_str("<li class=\"muted\">… the rest was cut at tick.transcript_chars</li>");
            }
        }
        None => steps.push_str("<li class=\"muted\">No transcript was kept for this tick.</li>"),
    }
    let _ = write!(
        body,
        "<section class=\"wide\" id=\"story\"><h2>The story</h2><ol class=\"story\">{steps}</ol></section>"
    );
    let mut rows = String::new();
    for c in &calls {
        let _ = write!(
            rows,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><pre>{}</pre></td><td><pre>{}</pre></td></tr>",
            c.seq,
            esc(&c.tool_name),
            esc(c.result.as_str()),
            esc(c.arguments.as_deref().unwrap_or_default()),
            esc(c.output.as_deref().or(c.error_message.as_deref()).unwrap_or_default()),
        );
    }
    let _ = write!(
        body,
        "<section class=\"wide\" id=\"calls\"><h2>Evidence: every call</h2><div class=\"scroll\"><table><thead><tr><th>#</th><th>tool</th><th>result</th><th>arguments</th><th>answer</th></tr></thead><tbody>{rows}</tbody></table></div></section></main>"
    );
    Ok(Some(html_page("persona-runner: tick", &body)))
}

/// The tick's trace id, linked into the operator's trace viewer when
/// `telemetry.trace_url` says where that is.
fn trace_line(trace_id: Option<&str>, trace_url: Option<&str>) -> String {
    match (trace_id, trace_url) {
        (Some(id), Some(url)) => format!(
            "<p id=\"trace\">trace <a href=\"{}\"><code>{}</code></a></p>",
            esc(&url.replace("{trace_id}", id)),
            esc(id)
        ),
        (Some(id), None) => format!(
            "<p id=\"trace\">trace <code>{}</code> <span class=\"muted\">(set telemetry.trace_url to link it)</span></p>",
            esc(id)
        ),
        (None, _) => String::new(),
    }
}

/// One transcript entry: its step name, then its fields (text as text, the rest as JSON).
fn step(entry: &Value) -> String {
    let name = entry.get("step").and_then(Value::as_str).unwrap_or("step");
    let mut fields = String::new();
    for (key, value) in entry.as_object().into_iter().flatten().filter(|(k, _)| *k != "step") {
        let text = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let _ = write!(
            fields,
            "<div><span class=\"muted\">{}</span><pre>{}</pre></div>",
            esc(key),
            esc(&text)
        );
    }
    format!("<li class=\"step {}\"><b>{}</b>{fields}</li>", esc(name), esc(name))
}
