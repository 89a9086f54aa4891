//! The export pipeline: the SDK's batch processor on its own thread, the OTLP/HTTP
//! exporter with its blocking reqwest client (the async one panics on that thread, which
//! has no reactor: opentelemetry-rust#2673), and two thin wrappers of ours that make a
//! dead or slow collector cost a tick nothing and show in `/metrics`:
//! - [`Gate`] bounds what is queued, counting each span it turns away;
//! - [`Counted`] counts what the collector took or refused, and says once (a warning,
//!   not an error) when it stops answering, and once when it is back.
//!
//! The SDK's own queue counts its drops privately; the gate's bound is reached first
//! (it also counts the batch being exported), so every drop is one we count.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};

use crate::config::{OtlpProtocol, TelemetrySettings};

/// The tracer provider `settings` describe.
pub(super) fn provider(settings: &TelemetrySettings) -> Result<SdkTracerProvider, String> {
    let headers: HashMap<String, String> = settings
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose().to_string()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.endpoint.clone())
        .with_protocol(match settings.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        })
        .with_timeout(settings.export_timeout)
        .with_headers(headers)
        .build()
        // The builder's errors name the setting; an invalid endpoint's text is left out
        // (it may carry a key), never a header's value.
        .map_err(|err| match err.to_string() {
            text if text.contains("invalid endpoint") => "the endpoint is not a valid URL".to_string(),
            text => text,
        })?;
    let queued = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        inner: exporter,
        queued: queued.clone(),
        failing: AtomicBool::new(false),
    };
    let batch = BatchSpanProcessor::builder(counted)
        .with_batch_config(
            BatchConfigBuilder::default()
                // Room beyond the gate's bound, so the SDK's queue is never the one full.
                .with_max_queue_size(settings.queue_size.saturating_mul(2).max(2))
                .with_max_export_batch_size(512.min(settings.queue_size).max(1))
                .with_scheduled_delay(Duration::from_secs(2))
                .build(),
        )
        .build();
    let gate = Gate {
        inner: batch,
        queued,
        capacity: settings.queue_size,
    };
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attributes(
            [
                ("service.version", env!("CARGO_PKG_VERSION").to_string()),
                ("telemetry.sdk.name", "opentelemetry".into()),
                ("telemetry.sdk.language", "rust".into()),
            ]
            .into_iter()
            .chain(settings.resource.iter().map(|(k, v)| (k.as_str(), v.clone())))
            .map(|(k, v)| opentelemetry::KeyValue::new(k.to_string(), v)),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(gate)
        .with_sampler(super::sampler(settings.sampler))
        .with_resource(resource)
        .build())
}

/// Bounds the spans waiting for export (queued or being exported).
#[derive(Debug)]
struct Gate {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::global().trace_spans("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, with what happened to each batch counted.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    /// The collector refused or missed the last batch.
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.queued
            .fetch_sub(spans.min(self.queued.load(Ordering::Acquire)), Ordering::AcqRel);
        match &result {
            Ok(()) => {
                crate::metrics::global().trace_spans("exported", spans);
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("the trace collector takes spans again");
                }
            }
            Err(err) => {
                crate::metrics::global().trace_spans("export_failed", spans);
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        %err,
                        spans,
                        "the trace collector did not take a batch of spans; they are dropped \
                         (counted in persona_runner_trace_spans_total), ticks go on"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
