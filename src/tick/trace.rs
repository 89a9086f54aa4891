//! A tick's trace: the `invoke_agent {persona}` root and the `execute_tool {tool}` span of
//! each call, with the GenAI and MCP attributes (`telemetry::semconv`) and ours. The
//! login, connect, chat and server-request spans are opened where those steps run, as
//! children of the task's current span.

use opentelemetry::KeyValue;

use super::TickRequest;
use super::state::TickState;
use crate::model::call::{Call, CallResult};
use crate::model::tick::{Tick, TickStatus};
use crate::telemetry::{Kind, Span, semconv};

/// The root of a tick's trace.
pub(super) fn root(tick: &Tick, request: &TickRequest, simulator: &str, model: Option<&str>) -> Span {
    let persona = &request.persona;
    let mut attributes = vec![
        KeyValue::new(semconv::OPERATION_NAME, semconv::INVOKE_AGENT),
        KeyValue::new(semconv::AGENT_NAME, persona.name.clone()),
        KeyValue::new(semconv::AGENT_ID, persona.id.to_string()),
        KeyValue::new(semconv::CONVERSATION_ID, tick.id.to_string()),
        KeyValue::new(semconv::TICK_TRIGGER, request.trigger.as_str()),
        KeyValue::new(semconv::ARCHETYPE, persona.archetype.clone()),
        KeyValue::new(
            semconv::TARGET,
            persona.target.clone().unwrap_or_else(|| "default".into()),
        ),
        KeyValue::new(semconv::SIMULATOR, simulator.to_string()),
        KeyValue::new(
            semconv::SPACE,
            crate::model::space::stored(tick.space.as_deref()).to_string(),
        ),
    ];
    if let Some(model) = model {
        attributes.push(KeyValue::new(semconv::PROVIDER_NAME, "openai"));
        attributes.push(KeyValue::new(semconv::REQUEST_MODEL, model.to_string()));
    }
    Span::root(
        format!("{} {}", semconv::INVOKE_AGENT, persona.name),
        Kind::Internal,
        attributes,
    )
}

/// The root's end: status, usage, and `error.type` for a tick that did not end `ok`.
pub(super) fn finish(span: &Span, status: TickStatus, state: &TickState) {
    span.set(semconv::TICK_STATUS, status.as_str());
    span.set(semconv::USAGE_INPUT_TOKENS, state.spend.tokens_in());
    span.set(semconv::USAGE_OUTPUT_TOKENS, state.spend.tokens_out());
    if let Some(rating) = state.rating_status {
        span.set(semconv::RATING_STATUS, rating.as_str());
    }
    match status {
        TickStatus::Ok | TickStatus::Running => {}
        // Not failures of the runner: the persona did nothing, or the spend cap held it.
        TickStatus::Idle | TickStatus::Skipped => {}
        other => span.fail(other.as_str(), format!("the tick ended {}", other.as_str())),
    }
}

/// The span of one call the persona asked for, opened before anything is decided.
pub(super) fn call(tool: &str, call_id: Option<&str>, record: &Call) -> Span {
    // Per call: nothing is built when nothing is exported.
    if !crate::telemetry::enabled() {
        return Span::off();
    }
    let span = Span::child(
        format!("{} {tool}", semconv::EXECUTE_TOOL),
        Kind::Internal,
        vec![
            KeyValue::new(semconv::OPERATION_NAME, semconv::EXECUTE_TOOL),
            KeyValue::new(semconv::TOOL_NAME, tool.to_string()),
            KeyValue::new(semconv::TOOL_TYPE, "extension"),
            KeyValue::new(
                semconv::TOOL_CALL_ID,
                call_id.map_or_else(|| record.id.to_string(), str::to_string),
            ),
            KeyValue::new(semconv::CALL_MODULE, record.module.clone()),
            KeyValue::new(semconv::CALL_SEQ, i64::from(record.seq)),
            KeyValue::new(semconv::CALL_RECOVERED, record.recovered),
            KeyValue::new(semconv::CALL_CHAOS, record.chaos),
        ],
    );
    span.set_content(semconv::TOOL_CALL_ARGUMENTS, || {
        record.arguments.clone().unwrap_or_default()
    });
    span
}

/// The call's span at its end: the result as audited; `error.type` on errors; the
/// answer the persona got, when content is on (redacted like the transcript's).
pub(super) fn end_call(span: Span, record: &Call, answer: &str, state: &TickState) {
    span.set(semconv::CALL_RESULT, record.result.as_str());
    span.set(semconv::CALL_SENT, record.sent);
    if let Some(refusal) = record.refusal {
        span.set(semconv::CALL_REFUSAL, refusal.as_str());
    }
    match (record.result, record.refusal) {
        (CallResult::Ok | CallResult::Deduped | CallResult::Pending, _) => {}
        (_, Some(refusal)) => span.fail(refusal.as_str(), "the runner refused the call before sending it"),
        // The MCP session set `error.type` as it read the answer: `tool_error` for
        // `isError`, the JSON-RPC code, the HTTP status, or `timeout`.
        (CallResult::Error, None) if record.sent => {}
        (CallResult::Error, None) => span.fail(semconv::TOOL_ERROR, "the call failed"),
        (other, None) => span.fail(other.as_str(), format!("the call ended {}", other.as_str())),
    }
    span.set_content(semconv::TOOL_CALL_RESULT, || {
        super::audit::redact_truncate(answer, &state.redact, crate::telemetry::CONTENT_CHARS)
    });
}

/// The log's span of a tick, so its JSON lines carry the trace (text lines stay as
/// they were: `logging` says which).
pub(super) fn log_span(span: &Span) -> tracing::Span {
    match span.ids() {
        Some((trace_id, span_id)) if crate::logging::spans_in_lines() => {
            tracing::info_span!("tick", trace_id = %trace_id, span_id = %span_id)
        }
        _ => tracing::Span::none(),
    }
}
