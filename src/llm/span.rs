//! The `chat {model}` span of an LLM request, with the GenAI request attributes; the
//! response's are set by the request itself.

use crate::telemetry::semconv;

/// The `chat {model}` span of one request (a child of whatever asked: a turn, the
/// rating, a sampling request, the judge).
pub(super) fn chat(model: &str, max_tokens: u32, temperature: f32) -> crate::telemetry::Span {
    if !crate::telemetry::enabled() {
        return crate::telemetry::Span::off();
    }
    use opentelemetry::KeyValue;
    crate::telemetry::Span::child(
        format!("{} {model}", semconv::CHAT),
        crate::telemetry::Kind::Client,
        vec![
            KeyValue::new(semconv::OPERATION_NAME, semconv::CHAT),
            KeyValue::new(semconv::PROVIDER_NAME, "openai"),
            KeyValue::new(semconv::REQUEST_MODEL, model.to_string()),
            KeyValue::new(semconv::REQUEST_MAX_TOKENS, i64::from(max_tokens)),
            KeyValue::new(semconv::REQUEST_TEMPERATURE, f64::from(temperature)),
        ],
    )
}
