//! Traces: every tick as one OpenTelemetry trace (an `invoke_agent` root, its login, MCP
//! connect, `chat` and `execute_tool` children), exported over OTLP/HTTP when
//! `[telemetry]` or the `OTEL_*` variables ask for it, and joined to the product's own
//! traces by W3C `traceparent` on every request we send it.
//!
//! Owns the tracer provider (the process's one, set globally so any module can open a
//! span without plumbing), our [`Span`] handle over the SDK's, the task's current
//! context ([`current`], [`scope`]) and the trace headers ([`trace_headers`]). Export
//! never waits on or fails a tick: `export` bounds the queue and counts what it drops.
//!
//! When export is off, spans are the API's no-ops: nothing is recorded, no header is
//! sent, no trace id is kept.

mod export;
pub mod semconv;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};

use crate::config::{OtlpProtocol, SamplerSetting, TelemetrySettings};

pub use opentelemetry::trace::SpanKind as Kind;

/// Message content on spans (opt-in).
static CONTENT: AtomicBool = AtomicBool::new(false);

/// Whether a tracer provider is exporting: without one, spans are not even started (no
/// lookup of the global provider, no attributes built, per call).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are recorded at all in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The longest content attribute, in characters (as a transcript entry's text).
pub const CONTENT_CHARS: usize = 8_000;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up trace export to {endpoint}: {message}")]
    Exporter { endpoint: String, message: String },
}

/// The process's trace export; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    endpoint: Option<String>,
}

impl Telemetry {
    /// Export as `settings` say (`None`: off). Call after the TLS provider is installed.
    pub fn init(settings: Option<&TelemetrySettings>) -> Result<Self, TelemetryError> {
        let Some(settings) = settings else {
            return Ok(Self::default());
        };
        for (_, value) in &settings.headers {
            crate::redact::register(value.expose());
        }
        let provider = export::provider(settings).map_err(|message| TelemetryError::Exporter {
            endpoint: shown_url(&settings.endpoint),
            message,
        })?;
        opentelemetry::global::set_tracer_provider(provider.clone());
        CONTENT.store(settings.content, Ordering::Relaxed);
        ENABLED.store(true, Ordering::Relaxed);
        tracing::info!(
            endpoint = %shown_url(&settings.endpoint),
            protocol = match settings.protocol {
                OtlpProtocol::HttpProtobuf => "http/protobuf",
                OtlpProtocol::HttpJson => "http/json",
            },
            service = %settings.service_name,
            content = settings.content,
            "exporting traces over OTLP"
        );
        Ok(Self {
            provider: Some(provider),
            endpoint: Some(settings.endpoint.clone()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is queued, waiting at most `grace` (the export runs on its own
    /// thread, so this never holds up the runtime).
    pub async fn shutdown(self, grace: Duration) {
        let Some(provider) = self.provider else {
            return;
        };
        let endpoint = self.endpoint.unwrap_or_default();
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(grace)).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(
                endpoint = %shown_url(&endpoint),
                %err,
                "traces still queued at shutdown could not all be exported"
            ),
            Err(_) => tracing::warn!("the trace export's shutdown panicked"),
        }
    }
}

/// A URL as logs show it: no user, password or query (where keys are sometimes put).
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Whether spans carry message content.
pub fn content() -> bool {
    CONTENT.load(Ordering::Relaxed)
}

pub(crate) fn sampler(setting: SamplerSetting) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler;
    match setting {
        SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
        SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
        SamplerSetting::TraceIdRatio(ratio) => Sampler::TraceIdRatioBased(ratio),
        SamplerSetting::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerSetting::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerSetting::ParentBasedTraceIdRatio(ratio) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

tokio::task_local! {
    /// The span the task is in, for the requests it sends (and the spans it opens).
    static CURRENT: Context;
}

/// The context of the span the running task is in (empty outside any).
pub fn current() -> Context {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `future` inside `cx`: its requests carry `cx`'s trace, its spans are children.
/// The future is boxed at once (this is no `async fn`, which would hold it inline until
/// its first poll): a scope wraps a whole step (a tick's play, a call), and keeping those
/// state machines inline in their callers' overflowed a test thread's stack.
pub fn scope<F: Future>(cx: Context, future: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(cx, Box::pin(future))
}

/// Marks the current span failed (`error.type` and an error status in our words): for a
/// step that knows the class of a failure its span's owner only sees as a result.
pub fn fail_current(error_type: &str, description: &str) {
    let cx = current();
    let span = cx.span();
    span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, error_type.to_string()));
    span.set_status(Status::error(description.to_string()));
}

/// `traceparent` and `tracestate` of a context, when it is in a recorded trace.
pub fn trace_headers(cx: &Context) -> Option<(String, Option<String>)> {
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return None;
    }
    let parent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    let state = context.trace_state().header();
    Some((parent, (!state.is_empty()).then_some(state)))
}

/// The trace headers of the current context, for a request about to be sent.
pub fn current_headers() -> Option<(String, Option<String>)> {
    trace_headers(&current())
}

/// Adds the current trace's headers to a request (login, lookups, sign-up, the LLM).
pub fn inject(headers: &mut reqwest::header::HeaderMap) {
    if let Some((parent, state)) = current_headers() {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&parent) {
            headers.insert("traceparent", value);
        }
        if let Some(value) = state.and_then(|s| reqwest::header::HeaderValue::from_str(&s).ok()) {
            headers.insert("tracestate", value);
        }
    }
}

/// A context handed between tasks: the MCP session's requests run on rmcp's own tasks,
/// which see the span of the call in progress through this.
#[derive(Clone, Debug, Default)]
pub struct Slot(Arc<std::sync::Mutex<Context>>);

impl Slot {
    pub fn set(&self, cx: Context) {
        *self.0.lock().expect("trace slot") = cx;
    }

    pub fn get(&self) -> Context {
        self.0.lock().expect("trace slot").clone()
    }

    /// Holds `cx` until the guard drops (the call ends, times out or is cancelled), then
    /// puts back what was there: a finished call's context never outlives it.
    pub fn enter(&self, cx: Context) -> SlotGuard<'_> {
        let previous = std::mem::replace(&mut *self.0.lock().expect("trace slot"), cx);
        SlotGuard { slot: self, previous }
    }
}

/// See [`Slot::enter`].
#[derive(Debug)]
pub struct SlotGuard<'a> {
    slot: &'a Slot,
    previous: Context,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.slot.set(std::mem::take(&mut self.previous));
    }
}

/// One span, ended when dropped (or by [`Span::end`]).
#[derive(Debug)]
pub struct Span {
    cx: Context,
}

impl Span {
    /// A new trace's root.
    pub fn root(name: impl Into<String>, kind: SpanKind, attributes: Vec<KeyValue>) -> Self {
        Self::start(name.into(), kind, &Context::new(), attributes)
    }

    /// A child of the running task's current span.
    pub fn child(name: impl Into<String>, kind: SpanKind, attributes: Vec<KeyValue>) -> Self {
        Self::start(name.into(), kind, &current(), attributes)
    }

    /// A child of `parent`.
    pub fn child_of(parent: &Context, name: impl Into<String>, kind: SpanKind, attributes: Vec<KeyValue>) -> Self {
        Self::start(name.into(), kind, parent, attributes)
    }

    /// A span that records nothing (export is off).
    pub fn off() -> Self {
        Self { cx: Context::new() }
    }

    fn start(name: String, kind: SpanKind, parent: &Context, attributes: Vec<KeyValue>) -> Self {
        if !enabled() {
            return Self::off();
        }
        let tracer = opentelemetry::global::tracer("persona-runner");
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&tracer, parent);
        Self {
            cx: parent.with_span(span),
        }
    }

    /// The span as a parent of others.
    pub fn context(&self) -> Context {
        self.cx.clone()
    }

    /// Runs `future` inside this span.
    pub fn run<F: Future>(&self, future: F) -> impl Future<Output = F::Output> + use<F> {
        scope(self.context(), future)
    }

    /// Whether this span is recorded (export on and sampled).
    pub fn recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.cx.span().set_attribute(KeyValue::new(key, value.into()));
    }

    pub fn set_all(&self, attributes: Vec<KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// Opt-in content: `text` is asked for only when content is on. The caller redacts
    /// it (the tick's redactor knows the tick's secrets); it is capped here.
    pub fn set_content(&self, key: &'static str, text: impl FnOnce() -> String) {
        if content() && self.recording() {
            let text = text();
            let capped = crate::redact::cap(&text, CONTENT_CHARS);
            self.set(key, capped.into_owned());
        }
    }

    /// Marks the span failed: `error.type` and an error status in our own words.
    pub fn fail(&self, error_type: impl Into<String>, description: impl Into<String>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, error_type.into()));
        span.set_status(Status::error(description.into()));
    }

    /// The trace id and this span's id, as hex, when recorded.
    pub fn ids(&self) -> Option<(String, String)> {
        let span = self.cx.span();
        let context = span.span_context();
        // An unsampled span has valid ids too, but no trace was exported under them.
        (context.is_valid() && context.is_sampled())
            .then(|| (context.trace_id().to_string(), context.span_id().to_string()))
    }

    pub fn end(self) {}
}

impl Drop for Span {
    fn drop(&mut self) {
        self.cx.span().end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_spans_record_nothing_and_send_no_header() {
        let span = Span::root("invoke_agent anna", SpanKind::Internal, Vec::new());
        assert!(!span.recording());
        assert_eq!(span.ids(), None);
        assert_eq!(trace_headers(&span.context()), None);
    }

    fn tracer(sampler: opentelemetry_sdk::trace::Sampler) -> opentelemetry::global::BoxedTracer {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(sampler)
            .build();
        opentelemetry::global::BoxedTracer::new(Box::new(opentelemetry::trace::TracerProvider::tracer(
            &provider, "test",
        )))
    }

    #[test]
    fn an_unsampled_tick_keeps_no_trace_id_and_sends_no_header() {
        let span = tracer(opentelemetry_sdk::trace::Sampler::AlwaysOff).start("root");
        let handle = Span {
            cx: Context::new().with_span(span),
        };
        assert!(
            handle.cx.span().span_context().is_valid(),
            "the SDK gives it ids all the same"
        );
        assert_eq!(handle.ids(), None);
        let sampled = Span {
            cx: Context::new().with_span(tracer(opentelemetry_sdk::trace::Sampler::AlwaysOn).start("root")),
        };
        assert!(sampled.ids().is_some());
    }

    #[test]
    fn a_slot_gives_back_its_context_when_the_call_ends() {
        let slot = Slot::default();
        let base = Context::new().with_span(tracer(opentelemetry_sdk::trace::Sampler::AlwaysOn).start("connect"));
        slot.set(base.clone());
        let call = Context::new().with_span(tracer(opentelemetry_sdk::trace::Sampler::AlwaysOn).start("call"));
        {
            let _guard = slot.enter(call.clone());
            assert_eq!(trace_headers(&slot.get()), trace_headers(&call));
        }
        assert_eq!(
            trace_headers(&slot.get()),
            trace_headers(&base),
            "the finished call's context is gone"
        );
    }

    #[tokio::test]
    async fn a_scope_makes_its_span_the_current_one() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = opentelemetry::global::BoxedTracer::new(Box::new(opentelemetry::trace::TracerProvider::tracer(
            &provider, "test",
        )));
        let span = tracer.start("root");
        let cx = Context::new().with_span(span);
        let expected = cx.span().span_context().trace_id().to_string();
        let seen = scope(cx, async { current_headers() }).await.unwrap();
        assert!(seen.0.starts_with(&format!("00-{expected}-")), "{}", seen.0);
        assert!(seen.0.ends_with("-01"), "sampled: {}", seen.0);
        assert_eq!(current_headers(), None, "outside the scope there is no trace");
    }
}
