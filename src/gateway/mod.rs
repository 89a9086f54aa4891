//! The sample product: a small "personal organizer" with a login endpoint and an MCP
//! gateway whose tools cover the consumer catalog's modules (todo, calendar, journal,
//! notes, habits, mood, contacts).
//!
//! It ships with the binary (`persona-runner sample-gateway`) so a first run needs no
//! external service, and it is the project's own integration-test gateway: real rmcp
//! server, Streamable HTTP behind bearer tokens, or stdio. It behaves like the reference
//! product where the runner cares:
//! - `POST /api/v1/auth/login` checks the derived password and answers
//!   `{"token", "user": {"id"}}`;
//! - `GET /api/auth/organization/list` lists the personal space and the user's shared
//!   ones, which `organization/create`, `invite-member` and `accept-invitation` make as
//!   Better Auth's organization plugin does (`spaces`); the `X-Mana-Space` header picks
//!   the space a tool acts in;
//! - tools are `module.verb`, listed in pages, validated against their schemas, and the
//!   destructive ones say so.

mod lab;
mod spaces;
mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::{constant_time_eq, derive_password};
use crate::config::Secret;

/// Header the reference gateway wants with the persona's personal space.
pub const SPACE_HEADER: &str = "x-mana-space";

#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The seed secret personas' passwords derive from (the same as the runner's).
    pub seed: Secret,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// Tools per `tools/list` page.
    pub page_size: usize,
    /// Refuse MCP requests without the right `X-Mana-Space` header.
    pub require_space_header: bool,
    /// Time a tool call takes after it executed, before its answer is sent (a slow
    /// product; the fault tests kill runners while calls are in flight).
    pub call_delay: Duration,
    /// Also offer the lab tools (`lab.*`): forms, sampling, roots, pictures, a task-only
    /// tool, nested models, a crash and a hang, for testing clients.
    pub lab: bool,
    /// Only accounts created at `/api/v1/auth/signup` log in (as a real product: the
    /// runner must provision its personas first). Off: any email with its derived
    /// password logs in.
    pub accounts: bool,
}

/// One tool call the gateway executed (for tests and the demo's own record).
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    pub user: String,
    pub tool: String,
    pub arguments: Value,
    /// The W3C `traceparent` the request carried: the HTTP header, and `params._meta`'s
    /// (SEP-414). A product that traces its own work makes its spans children of it.
    pub traceparent: Option<String>,
    pub meta_traceparent: Option<String>,
}

/// The sample product: its data, its tokens, its tools.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    options: GatewayOptions,
    tools: Vec<Tool>,
    validators: HashMap<String, jsonschema::Validator>,
    data: Mutex<HashMap<String, tools::UserData>>,
    /// The latest [`CALL_LOG`] calls (tests read them; a long-running daemon must not
    /// grow with them).
    calls: Mutex<std::collections::VecDeque<CallRecord>>,
    logins: std::sync::atomic::AtomicU64,
    signing_key: Mutex<[u8; 32]>,
    /// Signed-up accounts: lower-case email → the password given at sign-up.
    accounts: Mutex<HashMap<String, Secret>>,
    /// Shared spaces and their invitations.
    spaces: Mutex<spaces::Spaces>,
}

/// How many executed calls the gateway remembers.
const CALL_LOG: usize = 10_000;

/// The verified identity of an HTTP request, handed to the MCP handler.
#[derive(Clone, Debug)]
struct Claims {
    user: String,
}

/// The signing key of the gateway's tokens, from the operating system's CSPRNG.
fn random_key() -> [u8; 32] {
    crate::auth::random_bytes()
}

/// The product's user id of an email: stable, so tokens and data survive re-logins.
pub fn user_id_of(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    uuid::Uuid::from_slice(&digest[..16]).expect("16 bytes").to_string()
}

/// The personal space id of a user.
pub fn personal_space_of(user_id: &str) -> String {
    format!("space-{user_id}")
}

impl Gateway {
    pub fn new(options: GatewayOptions) -> Self {
        let mut definitions = tools::definitions();
        if options.lab {
            definitions.extend(lab::definitions());
        }
        let validators = definitions
            .iter()
            .map(|tool| {
                let validator =
                    jsonschema::validator_for(&tool["inputSchema"]).expect("the sample tools' schemas are valid");
                (tool["name"].as_str().unwrap_or_default().to_string(), validator)
            })
            .collect();
        let tools = serde_json::from_value(Value::Array(definitions)).expect("the sample tools are MCP tools");
        Self {
            inner: Arc::new(Inner {
                options,
                tools,
                validators,
                data: Mutex::new(HashMap::new()),
                calls: Mutex::new(std::collections::VecDeque::new()),
                logins: std::sync::atomic::AtomicU64::new(0),
                signing_key: Mutex::new(random_key()),
                accounts: Mutex::new(HashMap::new()),
                spaces: Mutex::new(Default::default()),
            }),
        }
    }

    /// The tool calls executed so far (the latest 10,000).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.inner.calls.lock().expect("calls lock").iter().cloned().collect()
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.inner.logins.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Invalidates every issued token (as a product does on key rotation).
    pub fn rotate_signing_key(&self) {
        *self.inner.signing_key.lock().expect("key lock") = random_key();
    }

    /// Issues an HS256 JWT for `user_id`.
    pub fn issue_token(&self, user_id: &str, email: &str) -> String {
        let key = *self.inner.signing_key.lock().expect("key lock");
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"sub": user_id, "email": email, "iat": now, "exp": now + self.inner.options.token_ttl.as_secs() as i64});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&key),
        )
        .expect("HS256 signing with a static key cannot fail")
    }

    /// The user id of a valid, unexpired token.
    fn verify_token(&self, token: &str) -> Option<String> {
        let key = *self.inner.signing_key.lock().expect("key lock");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data =
            jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(&key), &validation).ok()?;
        data.claims["sub"].as_str().map(String::from)
    }

    /// The HTTP side: login, organization list, and the MCP endpoint at `/mcp`.
    pub fn router(&self) -> Router {
        let handler_gateway = self.clone();
        let mcp = StreamableHttpService::new(
            move || {
                Ok(Handler {
                    gateway: handler_gateway.clone(),
                    stdio_user: None,
                })
            },
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        );
        let lab = self.inner.options.lab;
        let protected = Router::new()
            .nest_service("/mcp", mcp)
            .layer(axum::middleware::from_fn(
                move |request: Request, next: Next| async move {
                    if lab {
                        mark_task_tools(request, next).await
                    } else {
                        next.run(request).await
                    }
                },
            ))
            .route("/api/auth/organization/list", get(spaces::list))
            .route("/api/auth/organization/create", post(spaces::create))
            .route("/api/auth/organization/invite-member", post(spaces::invite))
            .route("/api/auth/organization/accept-invitation", post(spaces::accept))
            .route("/api/auth/organization/remove-member", post(spaces::remove_member))
            .route_layer(axum::middleware::from_fn_with_state(self.clone(), require_bearer));
        Router::new()
            .route("/api/v1/auth/login", post(login))
            .route("/api/v1/auth/signup", post(signup))
            .merge(protected)
            .with_state(self.clone())
    }

    /// Serves the HTTP side on `listener` until `stop` resolves. Responses are written
    /// with `TCP_NODELAY`: an event of a streamed answer goes out at once.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router()).with_graceful_shutdown(stop).await
    }

    /// Serves MCP on stdin/stdout as `user` until the client closes the stream.
    pub async fn serve_stdio(&self, user: &str) -> Result<(), std::io::Error> {
        let handler = Handler {
            gateway: self.clone(),
            stdio_user: Some(user_id_of(user)),
        };
        let running = handler
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|err| std::io::Error::other(err.to_string()))?;
        Ok(())
    }

    fn remember(&self, user: &str, tool: &str, arguments: &Value, trace: Trace) {
        let mut calls = self.inner.calls.lock().expect("calls lock");
        if calls.len() == CALL_LOG {
            calls.pop_front();
        }
        calls.push_back(CallRecord {
            user: user.into(),
            tool: tool.into(),
            arguments: arguments.clone(),
            traceparent: trace.header,
            meta_traceparent: trace.meta,
        });
    }

    /// Runs a tool on the data of `space` (a user's own, or a shared space's).
    fn execute(&self, user: &str, space: &str, tool: &str, arguments: Value, trace: Trace) -> Result<Value, String> {
        self.remember(user, tool, &arguments, trace);
        let mut data = self.inner.data.lock().expect("data lock");
        tools::run(data.entry(space.to_string()).or_default(), tool, &arguments)
    }
}

/// Lab only: a `tools/list` answer gets `lab.export` marked as needing a task call.
async fn mark_task_tools(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let listing = bytes.windows(10).any(|w| w == b"tools/list");
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    if !listing {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let marked = lab::mark_task_tools(&String::from_utf8_lossy(&bytes));
    let mut response = Response::from_parts(parts, axum::body::Body::from(marked));
    response.headers_mut().remove(header::CONTENT_LENGTH);
    response
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"persona-runner-sample\"")],
        Json(json!({"error": message})),
    )
        .into_response()
}

async fn require_bearer(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(user) = token.and_then(|t| gateway.verify_token(t)) else {
        return unauthorized("missing, invalid or expired bearer token");
    };
    let mcp = request.uri().path().starts_with("/mcp");
    let space = request
        .headers()
        .get(SPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let space = space.as_deref();
    if gateway.inner.options.require_space_header && mcp && space.is_none() {
        return forbidden("X-Mana-Space must name your space");
    }
    let (mut parts, body) = request.into_parts();
    let mut body = axum::body::Body::new(body);
    // A space the user is not a member of: the session opens, its tool calls get 403.
    if mcp && spaces::data_key(&gateway, &user, space).is_none() {
        let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        };
        let method = serde_json::from_slice::<Value>(&bytes).ok();
        if method.as_ref().and_then(|m| m["method"].as_str()) == Some("tools/call") {
            return forbidden("you are not a member of the space X-Mana-Space names");
        }
        body = axum::body::Body::from(bytes);
    }
    parts.extensions.insert(Claims { user });
    next.run(Request::from_parts(parts, body)).await
}

fn forbidden(message: &str) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({"error": message}))).into_response()
}

async fn login(State(gateway): State<Gateway>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected a JSON body {email, password}"})),
        )
            .into_response();
    };
    let (Some(email), Some(password)) = (body["email"].as_str(), body["password"].as_str()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "email and password are required"})),
        )
            .into_response();
    };
    let expected = if gateway.inner.options.accounts {
        let accounts = gateway.inner.accounts.lock().expect("accounts lock");
        match accounts.get(&email.to_lowercase()) {
            Some(password) => password.clone(),
            None => return unauthorized("no such account: sign up first"),
        }
    } else {
        derive_password(&gateway.inner.options.seed, email)
    };
    if !constant_time_eq(expected.expose().as_bytes(), password.as_bytes()) {
        return unauthorized("wrong email or password");
    }
    let user_id = user_id_of(email);
    gateway.inner.logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Json(json!({"token": gateway.issue_token(&user_id, email), "user": {"id": user_id, "email": email}}))
        .into_response()
}

/// Creates an account (`{email, password, name}`): 201, or 409 when it exists.
async fn signup(State(gateway): State<Gateway>, body: Option<Json<Value>>) -> Response {
    let fields = body.as_ref().and_then(|Json(body)| {
        let text = |key: &str| body[key].as_str().filter(|v| !v.is_empty());
        Some((text("email")?, text("password")?, text("name").unwrap_or_default()))
    });
    let Some((email, password, name)) = fields else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "expected a JSON body {email, password, name}"})),
        )
            .into_response();
    };
    let mut accounts = gateway.inner.accounts.lock().expect("accounts lock");
    let key = email.to_lowercase();
    if accounts.contains_key(&key) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "an account with this email exists"})),
        )
            .into_response();
    }
    accounts.insert(key, Secret::new(password));
    let user_id = user_id_of(email);
    (
        StatusCode::CREATED,
        Json(json!({"user": {"id": user_id, "email": email, "name": name}})),
    )
        .into_response()
}

impl Gateway {
    /// How many accounts signed up.
    pub fn accounts(&self) -> usize {
        self.inner.accounts.lock().expect("accounts lock").len()
    }
}

/// The MCP server handler, one per session.
/// The trace context a call arrived with.
struct Trace {
    header: Option<String>,
    meta: Option<String>,
}

#[derive(Clone)]
struct Handler {
    gateway: Gateway,
    /// The user of a stdio session (HTTP sessions carry theirs per request).
    stdio_user: Option<String>,
}

impl Handler {
    fn user(&self, context: &RequestContext<RoleServer>) -> Option<String> {
        if let Some(user) = &self.stdio_user {
            return Some(user.clone());
        }
        let parts = context.extensions.get::<axum::http::request::Parts>()?;
        parts.extensions.get::<Claims>().map(|claims| claims.user.clone())
    }
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "persona-runner-sample-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("A personal organizer: to-dos, calendar, journal, notes, habits, mood, contacts.")
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = &self.gateway.inner.tools;
        let page_size = self.gateway.inner.options.page_size.max(1);
        let start = match request.and_then(|r| r.cursor) {
            Some(cursor) => cursor
                .parse::<usize>()
                .ok()
                .filter(|start| *start < tools.len())
                .ok_or_else(|| ErrorData::invalid_params(format!("unknown cursor `{cursor}`"), None))?,
            None => 0,
        };
        let end = (start + page_size).min(tools.len());
        let next = (end < tools.len()).then(|| end.to_string());
        serde_json::from_value(json!({"tools": tools[start..end], "nextCursor": next}))
            .map_err(|err| ErrorData::internal_error(err.to_string(), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let user = self
            .user(&context)
            .ok_or_else(|| ErrorData::invalid_request("no authenticated user", None))?;
        let name = request.name.to_string();
        let validator = self
            .gateway
            .inner
            .validators
            .get(&name)
            .ok_or_else(|| ErrorData::invalid_params(format!("unknown tool `{name}`"), None))?;
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let problems: Vec<String> = validator
            .iter_errors(&arguments)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if !problems.is_empty() {
            return Err(ErrorData::invalid_params(
                format!("invalid arguments for `{name}`: {}", problems.join("; ")),
                None,
            ));
        }
        let trace = Trace {
            header: context
                .extensions
                .get::<axum::http::request::Parts>()
                .and_then(|parts| parts.headers.get("traceparent"))
                .and_then(|value| value.to_str().ok())
                .map(str::to_string),
            // rmcp hands a request's `_meta` over in its context, not in the params.
            meta: context
                .meta
                .0
                .get_traceparent()
                .or_else(|| request.meta.as_ref().and_then(|meta| meta.0.get_traceparent()))
                .map(str::to_string),
        };
        if name.starts_with("lab.") {
            self.gateway.remember(&user, &name, &arguments, trace);
            return lab::call(&name, &arguments, &context.peer).await.map(Into::into);
        }
        let header = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get(SPACE_HEADER))
            .and_then(|value| value.to_str().ok());
        let space = spaces::data_key(&self.gateway, &user, header)
            .ok_or_else(|| ErrorData::invalid_request("not a member of this space", None))?;
        let (text, is_error) = match self.gateway.execute(&user, &space, &name, arguments, trace) {
            Ok(value) => (value.to_string(), false),
            Err(message) => (message, true),
        };
        if !self.gateway.inner.options.call_delay.is_zero() {
            tokio::time::sleep(self.gateway.inner.options.call_delay).await;
        }
        let result: CallToolResult =
            serde_json::from_value(json!({"content": [{"type": "text", "text": text}], "isError": is_error}))
                .map_err(|err| ErrorData::internal_error(err.to_string(), None))?;
        Ok(result.into())
    }
}
