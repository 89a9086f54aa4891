//! Hostile loopback servers for `tests/hostile.rs`: an MCP gateway that speaks just enough
//! JSON-RPC to reach a tool call and then misbehaves as told, and a recorder for any
//! axum router (a login, an OAuth server, a second origin), each on a free port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request a hostile server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Every request of a server, shared with its handlers.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn push(&self, path: &str, headers: &HeaderMap, body: &Bytes) {
        self.0.lock().unwrap().push(Seen {
            path: path.into(),
            headers: headers.clone(),
            body: body.clone(),
        });
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// A router served on a free loopback port until dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the hostile MCP gateway answers.
pub type Handler = Arc<dyn Fn(&HeaderMap, &Value) -> Option<Response> + Send + Sync>;

/// The `tools/list` result for a request.
pub type Tools = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// What a hostile gateway does at each step; `None` answers like a plain server.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Before anything else, for every POST (e.g. a 401 echoing the request).
    pub gate: Option<Handler>,
    pub initialize: Option<Handler>,
    /// The `tools/list` result (default: one tool, `todo.add`).
    pub tools: Option<Tools>,
    pub call: Option<Handler>,
    /// More routes on the same origin (a login, OAuth metadata and token endpoints).
    pub extra: Option<axum::Router>,
}

/// The one tool a plain hostile gateway offers.
pub fn todo_tool() -> Value {
    json!({"name": "todo.add", "description": "Adds a todo.", "inputSchema": {
        "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}})
}

/// A JSON-RPC answer to request `id`.
pub fn result(id: &Value, result: Value) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

/// A JSON-RPC error answer to request `id`.
pub fn rpc_error(id: &Value, message: &str) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000, "message": message}})).into_response()
}

/// An event stream of these JSON-RPC messages, in order.
pub fn event_stream(messages: impl IntoIterator<Item = Value>) -> Response {
    let mut body = String::new();
    for message in messages {
        body.push_str(&format!("event: message\ndata: {message}\n\n"));
    }
    ([("content-type", "text/event-stream")], body).into_response()
}

/// The MCP gateway on `/mcp`, and every request it got.
pub async fn mcp(behaviour: Behaviour) -> (Server, Log) {
    let log = Log::default();
    let seen = log.clone();
    let extra = behaviour.extra.clone().unwrap_or_default();
    let behaviour = Arc::new(behaviour);
    let post = axum::routing::post(move |headers: HeaderMap, body: Bytes| {
        let (log, behaviour) = (seen.clone(), behaviour.clone());
        async move {
            log.push("/mcp", &headers, &body);
            let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(gate) = &behaviour.gate
                && let Some(response) = gate(&headers, &message)
            {
                return response;
            }
            let id = message["id"].clone();
            match message["method"].as_str() {
                // Notifications and the client's answers to our own requests.
                _ if id.is_null() || message.get("method").is_none() => StatusCode::ACCEPTED.into_response(),
                Some("initialize") => behaviour
                    .initialize
                    .as_ref()
                    .and_then(|handler| handler(&headers, &message))
                    .unwrap_or_else(|| {
                        let version = message["params"]["protocolVersion"].clone();
                        result(
                            &id,
                            json!({"protocolVersion": version, "capabilities": {"tools": {}},
                                   "serverInfo": {"name": "hostile", "version": "0"}}),
                        )
                    }),
                Some("tools/list") => {
                    let tools = behaviour
                        .tools
                        .as_ref()
                        .map_or_else(|| json!({"tools": [todo_tool()]}), |tools| tools(&message));
                    result(&id, tools)
                }
                Some("tools/call") => behaviour
                    .call
                    .as_ref()
                    .and_then(|handler| handler(&headers, &message))
                    .unwrap_or_else(|| result(&id, json!({"content": [{"type": "text", "text": "added"}]}))),
                Some("ping") => result(&id, json!({})),
                _ => axum::Json(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no such method"}}),
                )
                .into_response(),
            }
        }
    })
    .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
    .delete(|| async { StatusCode::OK });
    (
        Server::start(axum::Router::new().route("/mcp", post).merge(extra)).await,
        log,
    )
}

/// A body that arrives one byte per second (`bytes` of them).
pub fn trickle(bytes: usize) -> Body {
    let stream = futures_util::stream::unfold(0, move |sent| async move {
        if sent >= bytes {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), sent + 1))
    });
    Body::from_stream(stream)
}
