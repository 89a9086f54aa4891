//! The tick page of the dashboard (`/ticks/{id}`): one tick's story step by step (what
//! the persona was told, wrote, chose and saw, the rating exchange) beside the evidence
//! (every audited call) and the ratings. Low ratings on the dashboard link here. Same
//! sign-in as the dashboard; the JSON of the same story is `GET /api/v1/admin/ticks/{id}`.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use uuid::Uuid;

use super::ApiState;
use super::auth::is_admin;
use super::dashboard::login_form;
use super::html::{count, esc, html, html_page};
use super::timeline;
use crate::model::goal::{Outcome, Verdict};
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
    let verdicts = store.tick_verdicts(DEFAULT_TENANT, id).await?;

    let trace_url = state.settings().config.telemetry.trace_url.clone();
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1><a href=\"/\">persona-runner QA</a> · tick</h1></header><main>\
         <section class=\"wide\" id=\"tick\"><h2>{} · {} · {}</h2><p class=\"muted\">{} · trigger {} · space {} · simulator {} · {} ({} ok, {}) · {}</p>{}{}</section>",
        esc(&tick.persona),
        tick.started_at.format("%Y-%m-%d %H:%M UTC"),
        esc(tick.status.as_str()),
        tick.id,
        esc(tick.trigger.as_str()),
        esc(crate::model::space::stored(tick.space.as_deref())),
        esc(tick.simulator.as_deref().unwrap_or("–")),
        count(i64::from(tick.tool_calls), "call"),
        tick.calls_ok,
        count(i64::from(tick.calls_error), "error"),
        count(tick.tokens_in + tick.tokens_out, "token"),
        trace_line(tick.trace_id.as_deref(), trace_url.as_deref()),
        tick.error
            .as_deref()
            .map(|e| format!("<p class=\"bad\">{}</p>", esc(e)))
            .unwrap_or_default(),
    );
    let mut rows = String::new();
    for r in &ratings {
        let _ = write!(
            rows,
            "<tr><td class=\"num\">{}/5</td><td>{}</td><td>{}</td><td class=\"num\">{}, {}</td></tr>",
            r.rating,
            esc(&r.module),
            esc(r.notes.as_deref().unwrap_or_default()),
            count(i64::from(r.evidence_calls), "call"),
            count(i64::from(r.evidence_errors), "error")
        );
    }
    let ratings_table = if ratings.is_empty() {
        "<p class=\"muted\">This tick recorded no rating.</p>".to_string()
    } else {
        format!(
            "<div class=\"scroll\" tabindex=\"0\"><table><caption>Each module's 1–5 rating with its note and evidence</caption>\
             <thead><tr><th>rating</th><th>module</th><th>note</th><th>evidence</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    let _ = write!(
        body,
        "<section id=\"ratings\"><h2>Ratings</h2>{ratings_table}</section>"
    );
    body.push_str(&verdicts_section(&verdicts));
    let steps = match &transcript {
        Some(t) => {
            let entries = t.entries.as_array().map(Vec::as_slice).unwrap_or_default();
            let mut steps = timeline::render(entries, &ratings);
            if t.truncated {
                steps.push_str("<li class=\"muted\">… the rest was cut at tick.transcript_chars</li>");
            }
            steps
        }
        None => "<li class=\"muted\">No transcript was kept for this tick.</li>".to_string(),
    };
    let _ = write!(
        body,
        "<section class=\"wide\" id=\"story\"><h2>The conversation</h2><ol class=\"story\">{steps}</ol></section>"
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
        "<section class=\"wide\" id=\"calls\"><h2>Evidence: every call</h2><div class=\"scroll\" tabindex=\"0\"><table><caption>Every audited call of the tick, as stored</caption>\
         <thead><tr><th>#</th><th>tool</th><th>result</th><th>arguments</th><th>answer</th></tr></thead><tbody>{rows}</tbody></table></div></section></main>"
    );
    Ok(Some(html_page("persona-runner: tick", &body)))
}

/// A check tick's verdicts: each goal's outcome, its checks and criteria.
fn verdicts_section(verdicts: &[Verdict]) -> String {
    if verdicts.is_empty() {
        return String::new();
    }
    let mut items = String::new();
    for v in verdicts {
        let mut lines = String::new();
        for c in &v.checks {
            let _ = write!(
                lines,
                "<li><span class=\"{}\">{}</span> {} <span class=\"muted\">{}</span></li>",
                if c.passed { "good" } else { "bad" },
                if c.passed { "passed" } else { "failed" },
                esc(&c.check),
                esc(&c.detail)
            );
        }
        for c in &v.criteria {
            let _ = write!(
                lines,
                "<li><span class=\"muted\">{}</span> {} <span class=\"muted\">{}</span></li>",
                esc(c.judgement.as_str()),
                esc(&c.criterion),
                esc(&c.reason)
            );
        }
        let _ = write!(
            items,
            "<li><b>{}</b> trial {}: <span class=\"{}\">{}</span><ul>{lines}</ul></li>",
            esc(&v.goal),
            v.trial,
            if v.outcome == Outcome::Pass { "good" } else { "bad" },
            esc(v.outcome.as_str())
        );
    }
    format!("<section id=\"verdicts\"><h2>Verdicts</h2><ul>{items}</ul></section>")
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
