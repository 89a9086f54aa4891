//! An OTLP/HTTP trace receiver for the tests: `POST /v1/traces` in protobuf or JSON,
//! decoded with the official protocol types (`opentelemetry-proto`), the spans kept as
//! plain data. It answers 200 like a collector, or, when told to, refuses every batch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message as _;

/// One received span, as plain data.
#[derive(Clone, Debug)]
pub struct SeenSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root.
    pub parent_span_id: String,
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// The `service.name` of its resource.
    pub service: String,
    /// The status code (0 unset, 1 ok, 2 error) and message.
    pub status: (i32, String),
}

impl SeenSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// What a batch arrived as.
#[derive(Clone, Debug)]
pub struct Batch {
    pub content_type: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Received {
    spans: Vec<SeenSpan>,
    batches: Vec<Batch>,
}

pub struct Collector {
    pub addr: std::net::SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

fn text_of(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| text_of(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<SeenSpan> {
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text_of(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(SeenSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text_of(kv.value.as_ref())))
                        .collect(),
                    service: service.clone(),
                    status: span.status.map(|s| (s.code, s.message)).unwrap_or_default(),
                });
            }
        }
    }
    spans
}

impl Collector {
    /// A collector that takes every batch.
    pub async fn start() -> Self {
        Self::start_answering(StatusCode::OK).await
    }

    /// A collector that answers every batch with `status` (and keeps it only on 200).
    pub async fn start_answering(status: StatusCode) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let keep = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let keep = keep.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let decoded = if content_type.starts_with("application/json") {
                        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
                    } else {
                        ExportTraceServiceRequest::decode(body.as_ref()).map_err(|e| e.to_string())
                    };
                    let request = match decoded {
                        Ok(request) => request,
                        Err(err) => return (StatusCode::BAD_REQUEST, err),
                    };
                    let mut received = keep.lock().unwrap();
                    received.batches.push(Batch { content_type, headers });
                    if status == StatusCode::OK {
                        received.spans.extend(flatten(request));
                    }
                    (status, String::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, received, task }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<SeenSpan> {
        self.received.lock().unwrap().spans.clone()
    }

    pub fn batches(&self) -> Vec<Batch> {
        self.received.lock().unwrap().batches.clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
