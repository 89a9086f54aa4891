//! Hostile outsiders against the real binary: a product, an OAuth server and an LLM that
//! misbehave on purpose (tests/common/hostile.rs), and anyone who can reach the sidecar.
//! Each case asserts what a run must always hold: it ends in bounded time with the exit
//! status it should, never panics, leaves no secret in stderr or the database, and records
//! the tick with its error in words.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::hostile::{self, Behaviour, Server};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_persona-runner");
const ANNA: &str = "persona.anna@mana.test";
const SEED: &str = "seed-hostile-7b1f0c2e9d";

/// What one run of the binary left behind.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Ran {
    fn summaries(&self) -> Vec<Value> {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("tick --json printed no JSON ({err}):\n{}", self.stdout))
    }

    /// The one tick a `tick --persona … --json` run reports.
    fn tick(&self) -> Value {
        let summaries = self.summaries();
        assert_eq!(
            summaries.len(),
            1,
            "one tick, reported:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        summaries[0].clone()
    }
}

/// A fresh install: the shipped catalogs seeded into its own SQLite file, and the
/// environment every run gets (a seed secret of its own, fast retries, offline play).
struct Case {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Case {
    async fn new(env: &[(&str, &str)]) -> Self {
        let dir = common::workdir_with_catalogs();
        let mut base: Vec<(String, String)> = [
            ("PERSONA_SEED_SECRET", SEED),
            ("PERSONA_RUNNER__RETRY__INITIAL_DELAY", "10ms"),
            ("PERSONA_RUNNER__RETRY__MAX_DELAY", "50ms"),
            ("PERSONA_RUNNER__LLM__PROVIDER", "offline"),
            ("PERSONA_RUNNER__MCP__CONNECT_TIMEOUT", "5s"),
            ("PERSONA_RUNNER__MCP__CALL_TIMEOUT", "5s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        base.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let case = Self { dir, env: base };
        let seeded = case.run(&["catalog", "seed"], &[], Duration::from_secs(60)).await;
        assert_eq!(seeded.code, Some(0), "{}", seeded.stderr);
        case
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Ran {
        let mut command = tokio::process::Command::new(BIN);
        command
            .current_dir(self.path())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // A panic would print its message and backtrace: the runs look for it.
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let out = tokio::time::timeout(limit, command.output())
            .await
            .unwrap_or_else(|_| panic!("`{}` did not end within {limit:?}", args.join(" ")))
            .unwrap();
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }

    /// One tick of Anna, as JSON.
    async fn tick(&self, env: &[(&str, &str)]) -> Ran {
        self.run(&["tick", "--persona", ANNA, "--json"], env, Duration::from_secs(90))
            .await
    }

    /// Every byte the store holds (the database and its journal files).
    fn database_bytes(&self) -> Vec<u8> {
        let data = self.path().join("data");
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(&data).into_iter().flatten().flatten() {
            bytes.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
        bytes
    }

    /// What every run must hold: no panic, no secret in stderr or the store.
    fn assert_clean(&self, ran: &Ran, secrets: &[&str]) {
        assert!(
            !ran.stderr.contains("panicked") && !ran.stderr.contains("RUST_BACKTRACE"),
            "a panic:\n{}",
            ran.stderr
        );
        let stored = self.database_bytes();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(!ran.stderr.contains(secret), "`{secret}` in stderr:\n{}", ran.stderr);
            assert!(!ran.stdout.contains(secret), "`{secret}` in stdout:\n{}", ran.stdout);
            assert!(
                !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "`{secret}` in the database"
            );
        }
    }
}

/// An unsigned JWT with these claims (the product's to verify; the runner only reads `exp`).
fn jwt(claims: Value) -> String {
    let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(json!({"alg": "HS256", "typ": "JWT"})),
        part(claims),
        part(json!("sig"))
    )
}

fn host(headers: &HeaderMap) -> String {
    format!(
        "http://{}",
        headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1")
    )
}

/// A login route answering `token` for anyone, recording what it was sent.
fn login_route(token: String, log: hostile::Log) -> axum::routing::MethodRouter {
    axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
        let (token, log) = (token.clone(), log.clone());
        async move {
            log.push("/login", &headers, &body);
            axum::Json(json!({"token": token, "user": {"id": "user-1"}}))
        }
    })
}

/// A hostile gateway whose origin also has a login answering `token` (recorded in `log`):
/// the server, its login URL and its MCP URL.
async fn with_login(behaviour: Behaviour, token: &str, log: &hostile::Log) -> (Server, String, String) {
    let login = axum::Router::new().route("/login", login_route(token.into(), log.clone()));
    let extra = match behaviour.extra.clone() {
        Some(more) => login.merge(more),
        None => login,
    };
    let (gateway, _) = hostile::mcp(Behaviour {
        extra: Some(extra),
        ..behaviour
    })
    .await;
    let (login, mcp) = (gateway.url("/login"), gateway.url("/mcp"));
    (gateway, login, mcp)
}

/// The password the hostile login was sent.
fn password_sent(log: &hostile::Log) -> String {
    let seen = log.all();
    let body: Value = serde_json::from_slice(&seen.first().expect("a login request").body).unwrap();
    body["password"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// 1. No panic on any `expires_in` or `exp`.

/// A P-256 key in PKCS#8 PEM, made for these tests only.
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVKOs6uux38LWclT0
iEokrIF8A0Saj77aFndofG4qY9WhRANCAARw4d0k0z8eixQgjAwCz0hEtnHDCQk0
UsUfcjVyVrlLXfjiDJa7MmlMlba8sH/s9SRoPtFagHDd4MaWNBMcI+7S
-----END PRIVATE KEY-----";
const MINTED: &str = "at-minted-3c9e51";

/// An MCP gateway behind OAuth whose token endpoints hand out tokens that never expire
/// (`expires_in` = 2⁶⁴−1), and which answers 503 once the token arrives.
async fn oauth_gateway() -> Server {
    let far = u64::MAX;
    let gate: hostile::Handler = Arc::new(|headers: &HeaderMap, _: &Value| {
        let bearer = headers.get("authorization").and_then(|h| h.to_str().ok());
        Some(if bearer == Some(&format!("Bearer {MINTED}")) {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            let challenge = format!(
                "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
                host(headers)
            );
            (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response()
        })
    });
    let resource = axum::routing::get(|headers: HeaderMap| async move {
        let origin = host(&headers);
        axum::Json(json!({"resource": format!("{origin}/mcp"), "authorization_servers": [origin]}))
    });
    let metadata = axum::routing::get(|headers: HeaderMap| async move {
        let origin = host(&headers);
        axum::Json(json!({
            "issuer": origin, "token_endpoint": format!("{origin}/token"),
            "authorization_endpoint": format!("{origin}/authorize"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["client_credentials", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        }))
    });
    let token = axum::routing::post(move || async move {
        axum::Json(json!({"access_token": MINTED, "token_type": "Bearer", "expires_in": far}))
    });
    // Cross-app access: the IdP exchanges the ID token for an ID-JAG bound to this server.
    let idp = axum::routing::post(move |headers: HeaderMap| async move {
        let origin = host(&headers);
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss": format!("{origin}/idp"), "aud": origin, "sub": "user-1", "client_id": "hostile-client",
            "jti": "jag-1", "iat": now, "exp": now + 600, "resource": format!("{origin}/mcp")});
        let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let jag = format!(
            "{}.{}.{}",
            part(json!({"alg": "ES256", "typ": "oauth-id-jag+jwt"})),
            part(claims),
            part(json!("s"))
        );
        axum::Json(
            json!({"access_token": jag, "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag",
            "token_type": "N_A", "expires_in": far}),
        )
    });
    let extra = axum::Router::new()
        .route("/.well-known/oauth-protected-resource/mcp", resource)
        .route("/.well-known/oauth-authorization-server", metadata)
        .route("/token", token)
        .route("/idp/token", idp);
    let (server, _) = hostile::mcp(Behaviour {
        gate: Some(gate),
        extra: Some(extra),
        ..Default::default()
    })
    .await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn no_panic_on_any_expires_in_or_exp() {
    let gateway = oauth_gateway().await;
    let mcp = gateway.url("/mcp");
    let case = Case::new(&[
        ("PERSONA_RUNNER__MCP__URL", &mcp),
        ("PERSONA_RUNNER__AUTH__MODE", "oauth"),
    ])
    .await;
    std::fs::write(case.path().join("key.pem"), KEY).unwrap();
    let key = case.path().join("key.pem").display().to_string();
    let idp = gateway.url("/idp/token");
    let idp_issuer = gateway.url("/idp");
    let grants: [&[(&str, &str)]; 2] = [
        &[
            ("PERSONA_RUNNER__AUTH__OAUTH__GRANT", "client_credentials"),
            ("PERSONA_RUNNER__AUTH__OAUTH__PRIVATE_KEY_FILE", &key),
        ],
        &[
            ("PERSONA_RUNNER__AUTH__OAUTH__GRANT", "cross_app"),
            ("PERSONA_RUNNER__AUTH__OAUTH__IDP_ISSUER", &idp_issuer),
            ("PERSONA_RUNNER__AUTH__OAUTH__IDP_TOKEN_ENDPOINT", &idp),
            ("PERSONA_RUNNER__AUTH__OAUTH__IDP_CLIENT_ID", "idp-client"),
            ("PERSONA_RUNNER_OAUTH_ID_TOKEN", "id-token-of-anna"),
        ],
    ];
    for grant in grants {
        let mut env = grant.to_vec();
        env.push(("PERSONA_RUNNER__AUTH__OAUTH__CLIENT_ID", "hostile-client"));
        let ran = case.tick(&env).await;
        case.assert_clean(&ran, &[MINTED]);
        assert_eq!(ran.code, Some(1), "{}", ran.stderr);
        let tick = ran.tick();
        assert_eq!(tick["status"], "failed", "{tick}");
        // The token was used (the gateway's 503 is the cause), not lost to a panic.
        assert!(tick["error"].as_str().unwrap().contains("HTTP 503"), "{tick}");
    }

    // A login token whose `exp` no clock can hold, then one from before the epoch.
    for exp in [json!(i64::MAX), json!(-62_000_000_000i64), json!(1e300)] {
        let log = hostile::Log::default();
        let token = jwt(json!({"sub": "user-1", "exp": exp}));
        let (_gateway, login, mcp) = with_login(Behaviour::default(), &token, &log).await;
        let ran = case
            .tick(&[
                ("PERSONA_RUNNER__AUTH__MODE", "login"),
                ("PERSONA_RUNNER__AUTH__LOGIN_URL", &login),
                ("PERSONA_RUNNER__MCP__URL", &mcp),
            ])
            .await;
        case.assert_clean(&ran, &[&token, &password_sent(&log)]);
        assert_eq!(ran.tick()["status"], "ok", "exp {exp}: {}", ran.stderr);
    }
}

// ---------------------------------------------------------------------------------------
// 2. No secret in stderr under any echo, at any level, in either format.

#[tokio::test(flavor = "multi_thread")]
async fn secrets_echoed_by_the_product_reach_no_log_line() {
    let token = "tok-echoed-5e2b7d1c";
    let log = hostile::Log::default();
    // The gateway's 401 echoes what it was sent: the bearer token and the seed secret.
    let gate: hostile::Handler = Arc::new(|headers: &HeaderMap, _: &Value| {
        let sent = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let challenge = format!("Bearer error=\"invalid_token\", error_description=\"you sent {sent}; seed {SEED}\"");
        Some(
            (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "unauthorized",
            )
                .into_response(),
        )
    });
    let (_gateway, login, mcp) = with_login(
        Behaviour {
            gate: Some(gate),
            ..Default::default()
        },
        token,
        &log,
    )
    .await;
    let case = Case::new(&[
        ("PERSONA_RUNNER__AUTH__LOGIN_URL", &login),
        ("PERSONA_RUNNER__MCP__URL", &mcp),
    ])
    .await;
    for format in ["text", "json"] {
        for level in ["trace", "debug", "info", "warn", "error"] {
            let ran = case
                .tick(&[("PERSONA_RUNNER__LOG__FORMAT", format), ("RUST_LOG", level)])
                .await;
            let password = password_sent(&log);
            case.assert_clean(&ran, &[token, SEED, &password]);
            let tick = ran.tick();
            assert_eq!(tick["status"], "failed", "{format}/{level}: {tick}");
            let error = tick["error"].as_str().unwrap();
            assert!(error.contains("HTTP 401") && error.contains("[redacted]"), "{error}");
            if level == "trace" {
                assert!(ran.stderr.contains("[redacted]"), "the echo is in the log, redacted");
            }
        }
    }

    // The OAuth token endpoint echoes the client secret in its refusal.
    let secret = "cs-echoed-94a0f3";
    let refuse = axum::routing::post(move || async move {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"error": "invalid_client", "error_description": format!("client secret {secret} is wrong")}),
            ),
        )
    });
    let gate: hostile::Handler = Arc::new(|headers: &HeaderMap, _: &Value| {
        let challenge = format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            host(headers)
        );
        Some((StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response())
    });
    let resource = axum::routing::get(|headers: HeaderMap| async move {
        let origin = host(&headers);
        axum::Json(json!({"resource": format!("{origin}/mcp"), "authorization_servers": [origin]}))
    });
    let metadata = axum::routing::get(|headers: HeaderMap| async move {
        let origin = host(&headers);
        axum::Json(json!({"issuer": origin, "token_endpoint": format!("{origin}/token"),
            "authorization_endpoint": format!("{origin}/authorize"), "response_types_supported": ["code"],
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"]}))
    });
    let (gateway, _) = hostile::mcp(Behaviour {
        gate: Some(gate),
        extra: Some(
            axum::Router::new()
                .route("/.well-known/oauth-protected-resource/mcp", resource)
                .route("/.well-known/oauth-authorization-server", metadata)
                .route("/token", refuse),
        ),
        ..Default::default()
    })
    .await;
    let mcp = gateway.url("/mcp");
    for format in ["text", "json"] {
        for level in ["trace", "info"] {
            let ran = case
                .tick(&[
                    ("PERSONA_RUNNER__MCP__URL", &mcp),
                    ("PERSONA_RUNNER__AUTH__MODE", "oauth"),
                    ("PERSONA_RUNNER__AUTH__OAUTH__GRANT", "client_credentials"),
                    ("PERSONA_RUNNER__AUTH__OAUTH__CLIENT_ID", "hostile-client"),
                    ("PERSONA_RUNNER_OAUTH_CLIENT_SECRET", secret),
                    ("PERSONA_RUNNER__LOG__FORMAT", format),
                    ("RUST_LOG", level),
                ])
                .await;
            case.assert_clean(&ran, &[secret]);
            assert!(!ran.stderr.contains("AuthorizationFailed("), "{}", ran.stderr);
            assert_eq!(ran.tick()["status"], "failed", "{}", ran.stderr);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. The LLM's key and bodies: capped, redacted.

/// An OpenAI-compatible endpoint answering every chat request with `answer`.
async fn llm(answer: impl Fn(&Value) -> Response + Send + Sync + 'static) -> Server {
    let answer = Arc::new(answer);
    let chat = axum::routing::post(move |body: axum::Json<Value>| {
        let answer = answer.clone();
        async move { answer(&body.0) }
    });
    let models = axum::routing::get(|| async { axum::Json(json!({"object": "list", "data": [{"id": "test-model"}]})) });
    Server::start(
        axum::Router::new()
            .route("/v1/chat/completions", chat)
            .route("/v1/models", models),
    )
    .await
}

fn llm_env(server: &Server) -> Vec<(String, String)> {
    vec![
        ("PERSONA_RUNNER__LLM__PROVIDER".into(), "openai".into()),
        ("PERSONA_RUNNER__LLM__BASE_URL".into(), server.url("/v1")),
        ("PERSONA_RUNNER__LLM__MODEL".into(), "test-model".into()),
        ("PERSONA_RUNNER__LLM__REQUEST_TIMEOUT".into(), "10s".into()),
        ("PERSONA_RUNNER__LLM__STRUCTURED_OUTPUT".into(), "off".into()),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_llm_body_is_capped_and_its_echoed_key_redacted() {
    let key = "sk-hostile-4f7a1e0b";
    // 8 MB that are not a chat completion, echoing the key throughout.
    let model = llm(move |_| {
        let mut body = String::from("{\"choices\": [");
        while body.len() < 8 * 1024 * 1024 {
            body.push_str(&format!("\"your key is {key}\", "));
        }
        ([("content-type", "application/json")], body).into_response()
    })
    .await;
    let gateway = common::TestGateway::start().await;
    let (login, mcp) = (gateway.login_url(), gateway.mcp_url());
    let case = Case::new(&[
        ("PERSONA_RUNNER__AUTH__LOGIN_URL", &login),
        ("PERSONA_RUNNER__MCP__URL", &mcp),
        ("PERSONA_SEED_SECRET", common::TEST_SEED),
        ("OPENAI_API_KEY", key),
    ])
    .await;
    let mut env = llm_env(&model);
    for level in ["debug", "info"] {
        env.push(("RUST_LOG".into(), level.into()));
        let ran = case.tick(&as_refs(&env)).await;
        case.assert_clean(&ran, &[key]);
        assert!(
            ran.stderr.len() < 256 * 1024,
            "{level}: {} bytes of stderr",
            ran.stderr.len()
        );
        let tick = ran.tick();
        assert_eq!(tick["status"], "failed", "{tick}");
        assert!(tick["error"].as_str().unwrap().contains("LLM"), "{tick}");
        env.pop();
    }
}

// ---------------------------------------------------------------------------------------
// 4. Causes in words, never a Rust `Debug` dump or type name.

const DUMPS: [&str; 6] = [
    "reqwest::Error {",
    "Os {",
    "kind: ",
    "Some(",
    "ServerJsonRpcMessage",
    "worker quit with fatal",
];

fn assert_words(text: &str) {
    for dump in DUMPS {
        assert!(!text.contains(dump), "`{dump}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn causes_are_told_in_words() {
    let log = hostile::Log::default();
    let token = "tok-words-81d2";
    // Invalid UTF-8 inside a tool result.
    let call: hostile::Handler = Arc::new(|_: &HeaderMap, message: &Value| {
        let id = message["id"].to_string();
        let mut body =
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":""#).into_bytes();
        body.extend_from_slice(b"\xff\xfe broken");
        body.extend_from_slice(br#""}]}}"#);
        Some(([("content-type", "application/json")], body).into_response())
    });
    let (_gateway, login, mcp) = with_login(
        Behaviour {
            call: Some(call),
            ..Default::default()
        },
        token,
        &log,
    )
    .await;
    let case = Case::new(&[("PERSONA_RUNNER__AUTH__LOGIN_URL", &login)]).await;

    let ran = case.tick(&[("PERSONA_RUNNER__MCP__URL", &mcp)]).await;
    case.assert_clean(&ran, &[token]);
    assert_words(&ran.stderr);
    let tick = ran.tick();
    assert_words(&tick.to_string());
    assert!(
        tick["calls_error"].as_u64().unwrap() + tick["calls_unknown"].as_u64().unwrap() > 0,
        "{tick}"
    );

    // Nothing listens at the gateway's port.
    let refused = format!("http://127.0.0.1:{}/mcp", common::free_port());
    let ran = case.tick(&[("PERSONA_RUNNER__MCP__URL", &refused)]).await;
    case.assert_clean(&ran, &[token]);
    assert_words(&ran.stderr);
    let tick = ran.tick();
    assert!(
        tick["error"]
            .as_str()
            .unwrap()
            .contains("connection refused (nothing listens there)"),
        "{tick}"
    );
    assert!(
        !ran.stderr.contains(" ERROR "),
        "one clear warning, no second alarm:\n{}",
        ran.stderr
    );

    // The LLM asks to wait 999999 s: the tick does not, and says so in words.
    let model = llm(|_| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "999999")],
            axum::Json(json!({"error": {"message": "slow down", "type": "rate_limit"}})),
        )
            .into_response()
    })
    .await;
    let mut env = llm_env(&model);
    env.push(("PERSONA_RUNNER__MCP__URL".into(), mcp.to_string()));
    env.push(("OPENAI_API_KEY".into(), "sk-words".into()));
    let ran = case.tick(&as_refs(&env)).await;
    case.assert_clean(&ran, &[token, "sk-words"]);
    assert_words(&ran.stderr);
    assert!(ran.elapsed < Duration::from_secs(60), "{:?}", ran.elapsed);
    assert_eq!(ran.tick()["status"], "failed", "{}", ran.stderr);
}

// ---------------------------------------------------------------------------------------
// 5. No tick left running by any LLM answer.

fn completion(message: Value, usage: Value) -> Response {
    axum::Json(json!({
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }))
    .into_response()
}

/// A model that calls `tool` once, then rates; `usage` on every answer.
fn playing_model(tool: &'static str, usage: Value) -> impl Fn(&Value) -> Response + Send + Sync + 'static {
    move |request: &Value| {
        let messages = request["messages"].as_array().cloned().unwrap_or_default();
        let last = messages.last().map(|m| m["content"].to_string()).unwrap_or_default();
        if last.contains("Parts to rate") {
            let rating = json!({"ratings": [{"module": "todo", "rating": 4, "note": "It worked."}]});
            return completion(
                json!({"role": "assistant", "content": rating.to_string()}),
                usage.clone(),
            );
        }
        if last.contains("shows you a form") {
            let answer = json!({"action": "accept", "content": {"ok": true}});
            return completion(
                json!({"role": "assistant", "content": answer.to_string()}),
                usage.clone(),
            );
        }
        if messages.iter().any(|m| m["role"] == "tool") {
            return completion(
                json!({"role": "assistant", "content": "Done for today."}),
                usage.clone(),
            );
        }
        let call = json!({"id": "call_1", "type": "function", "function": {"name": tool, "arguments": "{\"title\": \"Abgabe\"}"}});
        completion(
            json!({"role": "assistant", "content": null, "tool_calls": [call]}),
            usage.clone(),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_llm_answer_leaves_a_tick_running() {
    let gateway = common::TestGateway::start().await;
    let (login, mcp) = (gateway.login_url(), gateway.mcp_url());
    let case = Case::new(&[
        ("PERSONA_RUNNER__AUTH__LOGIN_URL", &login),
        ("PERSONA_SEED_SECRET", common::TEST_SEED),
        ("OPENAI_API_KEY", "sk-usage"),
    ])
    .await;
    let cases = [
        json!({"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX, "total_tokens": u64::MAX}),
        json!({"prompt_tokens": -5, "completion_tokens": -1, "total_tokens": -6}),
        json!({"prompt_tokens": 1e300, "completion_tokens": "many", "total_tokens": null}),
    ];
    for usage in cases {
        let model = llm(playing_model("todo.create", usage.clone())).await;
        let mut env = llm_env(&model);
        env.push(("PERSONA_RUNNER__MCP__URL".into(), mcp.clone()));
        let ran = case.tick(&as_refs(&env)).await;
        case.assert_clean(&ran, &["sk-usage"]);
        let tick = ran.tick();
        assert_ne!(tick["status"], "running", "{tick}");
        let store = common::default_store_in(case.path()).await;
        let id = uuid::Uuid::parse_str(tick["tick_id"].as_str().unwrap()).unwrap();
        let stored = store.get_tick(id).await.unwrap().unwrap();
        assert!(stored.finished_at.is_some(), "the stored tick finished: {stored:?}");
        // Clamped into 0..=10,000,000 a turn (llm::MAX_TURN_TOKENS), never refused.
        let tokens_in = tick["tokens_in"].as_i64().unwrap();
        assert!((0..=10_000_000 * 4).contains(&tokens_in), "{tick}");
        assert_eq!(
            tokens_in == 0,
            usage["prompt_tokens"].as_i64().is_some_and(|n| n < 0),
            "{tick}"
        );
        store.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// 7. An elicitation flood ends within its cap.

#[tokio::test(flavor = "multi_thread")]
async fn an_elicitation_flood_ends_within_its_cap() {
    const FLOOD: usize = 10_000;
    let token = "tok-flood-3a";
    let log = hostile::Log::default();
    let call: hostile::Handler = Arc::new(|_: &HeaderMap, message: &Value| {
        let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}});
        let asks = (0..FLOOD).map(move |i| {
            json!({"jsonrpc": "2.0", "id": format!("ask-{i}"), "method": "elicitation/create",
                   "params": {"message": "Confirm?", "requestedSchema": schema.clone()}})
        });
        let done =
            json!({"jsonrpc": "2.0", "id": message["id"], "result": {"content": [{"type": "text", "text": "added"}]}});
        Some(hostile::event_stream(asks.chain([done])))
    });
    let (gateway, requests) = hostile::mcp(Behaviour {
        call: Some(call),
        initialize: Some(Arc::new(|_: &HeaderMap, message: &Value| {
            let version = message["params"]["protocolVersion"].clone();
            Some(hostile::result(
                &message["id"],
                json!({"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "flood", "version": "0"}}),
            ))
        })),
        extra: Some(axum::Router::new().route("/login", login_route(token.into(), log.clone()))),
        ..Default::default()
    })
    .await;
    let model = llm(playing_model(
        "todo.add",
        json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
    ))
    .await;
    let (login, mcp) = (gateway.url("/login"), gateway.url("/mcp"));
    let mut env = llm_env(&model);
    env.push(("PERSONA_RUNNER__AUTH__LOGIN_URL".into(), login));
    env.push(("PERSONA_RUNNER__MCP__URL".into(), mcp));
    env.push(("OPENAI_API_KEY".into(), "sk-flood".into()));
    env.push(("PERSONA_RUNNER__MCP__CALL_TIMEOUT".into(), "60s".into()));
    let case = Case::new(&as_refs(&env)).await;
    let ran = case.tick(&[]).await;
    case.assert_clean(&ran, &[token, "sk-flood"]);
    let tick = ran.tick();
    assert_ne!(tick["status"], "running", "{tick}");

    let store = common::default_store_in(case.path()).await;
    let id = uuid::Uuid::parse_str(tick["tick_id"].as_str().unwrap()).unwrap();
    let actions = store.tick_calls(id).await.unwrap();
    // 10 answered (mcp.max_server_requests_per_call), one row for the rest, the call.
    let elicitations: Vec<_> = actions.iter().filter(|a| a.tool_name == "elicitation/create").collect();
    assert!(elicitations.len() <= 12, "{} elicitation rows", elicitations.len());
    // Requests still in flight when the call ends are declined with the tick's end (a row
    // for each batch, each saying how many), or dropped with the session.
    let answered = elicitations
        .iter()
        .filter(|a| a.error_message.as_deref().is_none_or(|e| !e.starts_with("declined")))
        .count();
    assert_eq!(answered, 10, "mcp.max_server_requests_per_call answered");
    let declined: usize = elicitations
        .iter()
        .filter_map(|a| a.error_message.as_deref()?.strip_prefix("declined "))
        .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    let answers = requests
        .all()
        .iter()
        .filter(|r| r.body.windows(4).any(|w| w == b"ask-"))
        .count();
    assert!(declined > FLOOD / 2 && declined <= FLOOD - 10, "{declined} declined");
    assert!((10..=FLOOD).contains(&answers), "{answers} answers");
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// 8. Product text forges no line and reaches no terminal as an escape.

#[tokio::test(flavor = "multi_thread")]
async fn product_text_cannot_forge_a_line_or_reach_the_terminal() {
    let token = "tok-forge-77";
    let log = hostile::Log::default();
    let hostile_text = "\u{1b}]0;pwned\u{7}\u{1b}[31mred\nERROR persona_runner::daemon: forged line\r\n\u{2028}";
    let (_gateway, login, mcp) = with_login(
        Behaviour {
            initialize: Some(Arc::new(move |_: &HeaderMap, message: &Value| {
                Some(hostile::rpc_error(&message["id"], hostile_text))
            })),
            ..Default::default()
        },
        token,
        &log,
    )
    .await;
    let case = Case::new(&[
        ("PERSONA_RUNNER__AUTH__LOGIN_URL", &login),
        ("PERSONA_RUNNER__MCP__URL", &mcp),
    ])
    .await;
    for args in [
        vec!["tick", "--persona", ANNA],
        vec!["tick", "--persona", ANNA, "--json"],
    ] {
        let ran = case.run(&args, &[("RUST_LOG", "debug")], Duration::from_secs(60)).await;
        case.assert_clean(&ran, &[token]);
        assert_eq!(ran.code, Some(1), "{}", ran.stderr);
        for (name, text) in [("stderr", &ran.stderr), ("stdout", &ran.stdout)] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\r'),
                "{name}: {text:?}"
            );
            assert!(!text.contains('\u{2028}'), "{name}: {text:?}");
            assert!(
                !text
                    .lines()
                    .any(|line| line.trim_start().starts_with("ERROR persona_runner::daemon: forged")),
                "{name} has a forged line:\n{text}"
            );
        }
        assert!(
            ran.stderr.contains("forged line"),
            "the text is there, escaped:\n{}",
            ran.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------
// 9. No password goes to another origin.

#[tokio::test(flavor = "multi_thread")]
async fn no_password_goes_to_another_origin() {
    let elsewhere = hostile::Log::default();
    let other =
        Server::start(axum::Router::new().route("/login", login_route("tok-elsewhere".into(), elsewhere.clone())))
            .await;
    let to_other = other.url("/login");
    let log = hostile::Log::default();
    let redirect = |to: String| {
        axum::routing::post(move || {
            let to = to.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", to)]) }
        })
    };
    let (gateway, _) = hostile::mcp(Behaviour {
        extra: Some(
            axum::Router::new()
                .route("/login-elsewhere", redirect(to_other))
                .route("/login-here", redirect("/login".into()))
                .route("/login", login_route("tok-here-5d".into(), log.clone())),
        ),
        ..Default::default()
    })
    .await;
    let mcp = gateway.url("/mcp");
    let case = Case::new(&[("PERSONA_RUNNER__MCP__URL", &mcp)]).await;

    let away = gateway.url("/login-elsewhere");
    let ran = case.tick(&[("PERSONA_RUNNER__AUTH__LOGIN_URL", &away)]).await;
    case.assert_clean(&ran, &["tok-elsewhere"]);
    assert!(
        elsewhere.all().is_empty(),
        "the other origin got {} request(s)",
        elsewhere.all().len()
    );
    let tick = ran.tick();
    assert_eq!(tick["status"], "failed");
    assert!(
        tick["error"].as_str().unwrap().contains("redirected to another origin"),
        "{tick}"
    );

    // Within the origin it is followed, unless following is off.
    let here = gateway.url("/login-here");
    let ran = case.tick(&[("PERSONA_RUNNER__AUTH__LOGIN_URL", &here)]).await;
    case.assert_clean(&ran, &["tok-here-5d", &password_sent(&log)]);
    assert_eq!(ran.tick()["status"], "ok", "{}", ran.stderr);
    let ran = case
        .tick(&[
            ("PERSONA_RUNNER__AUTH__LOGIN_URL", &here),
            ("PERSONA_RUNNER__HTTP__FOLLOW_REDIRECTS", "false"),
        ])
        .await;
    let tick = ran.tick();
    assert!(
        tick["error"].as_str().unwrap().contains("http.follow_redirects is off"),
        "{tick}"
    );
}

// ---------------------------------------------------------------------------------------
// 10. No orphan process.

fn alive(pid: i32) -> bool {
    // A zombie waits for its reaper; it runs no more.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_servers_grandchild_ends_with_the_session() {
    let case = Case::new(&[]).await;
    let pidfile = case.path().join("grandchild.pid");
    // A server that starts a child in a session (and process group) of its own, then ends
    // at stdin's end without ever answering.
    let script = format!("setsid sleep 300 & echo $! > {}; cat > /dev/null", pidfile.display());
    let command = serde_json::to_string(&["sh", "-c", &script]).unwrap();
    let ran = case
        .tick(&[
            ("PERSONA_RUNNER__AUTH__MODE", "none"),
            ("PERSONA_RUNNER__MCP__TRANSPORT", "stdio"),
            ("PERSONA_RUNNER__MCP__COMMAND", &command),
            ("PERSONA_RUNNER__MCP__CONNECT_TIMEOUT", "2s"),
        ])
        .await;
    case.assert_clean(&ran, &[]);
    assert_eq!(ran.tick()["status"], "failed", "{}", ran.stderr);
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still = alive(pid);
    if still {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    assert!(!still, "the grandchild {pid} outlived the session");
}

// ---------------------------------------------------------------------------------------
// 11. Errors in words.

#[tokio::test(flavor = "multi_thread")]
async fn login_failures_are_told_in_words() {
    let html = axum::routing::post(|| async { axum::response::Html("<html><body>Sign in</body></html>") });
    let looping = axum::routing::post(|| async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/loop")]) });
    let (gateway, _) = hostile::mcp(Behaviour {
        extra: Some(axum::Router::new().route("/html", html).route("/loop", looping)),
        ..Default::default()
    })
    .await;
    let mcp = gateway.url("/mcp");
    let case = Case::new(&[("PERSONA_RUNNER__MCP__URL", &mcp)]).await;
    for (path, words) in [
        ("/html", "answered HTTP 200, but with an HTML page, not JSON"),
        ("/loop", "redirected more than 10 times (a redirect loop?)"),
    ] {
        let url = gateway.url(path);
        let ran = case.tick(&[("PERSONA_RUNNER__AUTH__LOGIN_URL", &url)]).await;
        case.assert_clean(&ran, &[]);
        let tick = ran.tick();
        assert!(tick["error"].as_str().unwrap().contains(words), "{path}: {tick}");
        assert!(!tick["error"].as_str().unwrap().contains("cannot reach"), "{tick}");
        assert_words(&ran.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_llm_answer_is_a_timeout() {
    let model = llm(|_| {
        (
            [("content-type", "application/json")],
            axum::body::Body::new(hostile::trickle(120)),
        )
            .into_response()
    })
    .await;
    let gateway = common::TestGateway::start().await;
    let (login, mcp) = (gateway.login_url(), gateway.mcp_url());
    let mut env = llm_env(&model);
    env.extend([
        ("PERSONA_RUNNER__AUTH__LOGIN_URL".to_string(), login),
        ("PERSONA_RUNNER__MCP__URL".into(), mcp),
        ("PERSONA_SEED_SECRET".into(), common::TEST_SEED.into()),
        ("OPENAI_API_KEY".into(), "sk-trickle".into()),
        ("PERSONA_RUNNER__LLM__REQUEST_TIMEOUT".into(), "2s".into()),
        ("PERSONA_RUNNER__RETRY__MAX_ATTEMPTS".into(), "1".into()),
    ]);
    let case = Case::new(&as_refs(&env)).await;
    let ran = case.tick(&[]).await;
    case.assert_clean(&ran, &["sk-trickle"]);
    let tick = ran.tick();
    let error = tick["error"].as_str().unwrap();
    assert!(error.contains("in time"), "{error}");
    assert!(!error.contains("error decoding response body"), "{error}");
    assert!(ran.elapsed < Duration::from_secs(60), "{:?}", ran.elapsed);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_in_use_is_said_once_and_an_oversized_catalog_is_refused_by_path() {
    let case = Case::new(&[]).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let ran = case
        .run(
            &["run"],
            &[
                ("PERSONA_RUNNER__API__LISTEN", &listen),
                ("PERSONA_RUNNER__SAMPLE_GATEWAY__ENABLED", "off"),
            ],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(
        ran.stderr.matches("Address already in use").count(),
        1,
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("choose another port with api.listen"),
        "{}",
        ran.stderr
    );

    let ran = case
        .run(
            &["catalog", "validate"],
            &[("PERSONA_RUNNER__CATALOG__MAX_FILE_BYTES", "1000")],
            Duration::from_secs(30),
        )
        .await;
    assert_ne!(ran.code, Some(0));
    let said = format!("{}{}", ran.stdout, ran.stderr);
    assert!(
        said.contains("catalog/consumer-app.json") && said.contains("more than catalog.max_file_bytes = 1000"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_restarted_after_kill_9_sweeps_its_stuck_ticks_at_once() {
    // A product whose tool call never ends: the tick is running when the daemon dies.
    let call: hostile::Handler = Arc::new(|_: &HeaderMap, _: &Value| {
        Some(
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::new(hostile::trickle(usize::MAX)),
            )
                .into_response(),
        )
    });
    let log = hostile::Log::default();
    let (_gateway, login, mcp) = with_login(
        Behaviour {
            call: Some(call),
            ..Default::default()
        },
        "tok-kill",
        &log,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    common::runner::catalog(&dir.path().join("catalog.json"), 1, "* * * * * *");
    let config = format!(
        "[auth]\nlogin_url = \"{login}\"\n[mcp]\nurl = \"{mcp}\"\ncall_timeout = \"600s\"\n[llm]\nprovider = \"offline\"\n\
         [sample_gateway]\nenabled = \"off\"\n[tick]\nlease = \"60s\"\n[catalog]\nfiles = [\"catalog.json\"]\n"
    );
    let env = [("PERSONA_SEED_SECRET", SEED)];
    let mut daemon = common::runner::Runner::start(dir.path(), &config, &env);
    daemon.wait_ready(200, Duration::from_secs(30)).await;
    let store = common::default_store_in(dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let ticks: Vec<uuid::Uuid> = store
            .list_ticks(persona_runner::model::persona::DEFAULT_TENANT, &Default::default(), 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| t.status == persona_runner::model::tick::TickStatus::Running)
            .map(|t| t.id)
            .collect();
        if !ticks.is_empty() {
            break ticks;
        }
        assert!(Instant::now() < deadline, "no tick started:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.kill_hard();
    let restarted = Instant::now();
    let mut daemon = common::runner::Runner::start(dir.path(), &config, &env);
    daemon.wait_ready(200, Duration::from_secs(30)).await;
    let swept = loop {
        let states: Vec<String> = futures_util::future::join_all(running.iter().map(|id| {
            let store = store.clone();
            async move { store.get_tick(*id).await.unwrap().unwrap().status.to_string() }
        }))
        .await;
        if states.iter().all(|s| s == "abandoned") {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "{states:?}:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Well before the lease (60 s) and the first periodic sweep (30 s) could do it.
    assert!(swept < Duration::from_secs(20), "{swept:?}");
    assert!(daemon.log().contains("marked abandoned at startup"), "{}", daemon.log());
    daemon.kill_hard();
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// 6. 20,000 idle connections stop neither ticks nor `/health`.

/// Opens `count` connections to `port`, each with half a request, holds them `hold`
/// seconds, and says how many the server closed meanwhile (a process of its own: it
/// raises its own open-file limit).
const IDLE_CLIENT: &str = r#"
import json, resource, socket, sys, time
port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, failed = [], 0
for _ in range(count):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        s.setblocking(False)
        held.append(s)
    except OSError:
        failed += 1
        s.close()
print(json.dumps({"opened": len(held), "failed": failed}), flush=True)
time.sleep(hold)
closed = 0
for s in held:
    try:
        s.recv(1)
        closed += 1
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(json.dumps({"closed": closed}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_idle_connections_stop_neither_ticks_nor_health() {
    use tokio::io::AsyncBufReadExt as _;
    let gateway = common::TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    common::runner::catalog(&dir.path().join("catalog.json"), 2, "* * * * * *");
    let config = format!(
        "[auth]\nlogin_url = \"{}\"\n[mcp]\nurl = \"{}\"\ntool_calls_per_minute = 0\ntool_calls_per_minute_per_persona = 0\n\
         [llm]\nprovider = \"offline\"\n[catalog]\nfiles = [\"catalog.json\"]\n[sample_gateway]\nenabled = \"off\"\n\
         [scheduler]\njitter = \"0s\"\n",
        gateway.login_url(),
        gateway.mcp_url()
    );
    let env = [
        ("PERSONA_SEED_SECRET", common::TEST_SEED),
        ("PERSONA_RUNNER__API__HEADER_TIMEOUT", "2s"),
        ("PERSONA_RUNNER_ADMIN_TOKEN", "admin-token-hostile-1"),
    ];
    let started = Instant::now();
    let mut daemon = common::runner::Runner::start(dir.path(), &config, &env);
    daemon.wait_ready(200, Duration::from_secs(30)).await;
    let store = common::default_store_in(dir.path()).await;
    let finished = || async {
        store
            .list_ticks(
                persona_runner::model::persona::DEFAULT_TENANT,
                &Default::default(),
                100_000,
            )
            .await
            .unwrap()
            .iter()
            .filter(|t| t.status == persona_runner::model::tick::TickStatus::Ok)
            .count()
    };

    // Two clients of 10,000 each: one process could not hold 20,000 under a 20,000 limit.
    let hold = 8.0;
    let mut clients: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new("python3")
                .args(["-c", IDLE_CLIENT, &daemon.api.to_string(), "10000", &hold.to_string()])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut readers: Vec<_> = clients
        .iter_mut()
        .map(|c| tokio::io::BufReader::new(c.stdout.take().unwrap()).lines())
        .collect();
    let mut opened = 0;
    for reader in &mut readers {
        let line: Value = serde_json::from_str(&reader.next_line().await.unwrap().unwrap()).unwrap();
        opened += line["opened"].as_u64().unwrap();
    }
    let held_since = Instant::now();
    let opening = started.elapsed();
    let before = finished().await;
    // While they are held: /health answers, and ticks keep finishing.
    let mut health = Vec::new();
    while held_since.elapsed() < Duration::from_secs_f64(hold - 2.0) {
        let asked = Instant::now();
        let answered = daemon.get("/health").await.map(|(status, _)| status);
        health.push((answered, asked.elapsed()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = finished().await - before;
    let mut closed = 0;
    for reader in &mut readers {
        let line: Value = serde_json::from_str(&reader.next_line().await.unwrap().unwrap()).unwrap();
        closed += line["closed"].as_u64().unwrap();
    }
    for client in &mut clients {
        let _ = client.wait().await;
    }
    eprintln!(
        "{opened} idle connections (opened in {opening:?}); {closed} closed by the sidecar; {during} ticks finished meanwhile; /health: {health:?}"
    );
    assert!(opened >= 19_000, "the clients opened {opened}");
    assert!(
        health
            .iter()
            .all(|(status, took)| *status == Some(200) && *took < Duration::from_secs(2)),
        "{health:?}"
    );
    assert!(
        during >= 2,
        "{during} ticks finished while the connections were held:\n{}",
        daemon.log()
    );
    // Every connection that sent half a request was dropped (evicted, or timed out at 2 s).
    assert!(closed >= opened * 99 / 100, "{closed} of {opened} closed");
    let log = daemon.log();
    assert!(
        log.contains("closing the oldest connections that sent no request"),
        "{log}"
    );
    assert!(
        !log.contains("Too many open files") && !log.contains("os error 24"),
        "{log}"
    );

    // A byte that is no UTF-8 in an admin path: the API's JSON error, not plain text.
    let answer = persona_runner::http::client(Duration::from_secs(5))
        .get(format!("http://127.0.0.1:{}/api/v1/admin/personas/%FF", daemon.api))
        .bearer_auth("admin-token-hostile-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body: Value = answer.json().await.expect("a JSON error body");
    assert!(body["error"].is_string() || body["error"].is_object(), "{body}");
    daemon.stop().await;
    store.close().await;
}

// ---------------------------------------------------------------------------------------
// What already held, kept held: each ends in bounded time with the tick recorded.

#[tokio::test(flavor = "multi_thread")]
async fn what_already_held_stays_held() {
    let token = "tok-held-0e";
    let huge_tools = |_: &Value| {
        let tools: Vec<Value> = (0..10_000)
            .map(|i| json!({"name": format!("todo.t{i}"), "inputSchema": {"type": "object"}}))
            .collect();
        json!({"tools": tools})
    };
    let cursor_loop = |_: &Value| json!({"tools": [hostile::todo_tool()], "nextCursor": "again"});
    let ref_cycle = |_: &Value| {
        json!({"tools": [{"name": "todo.add", "inputSchema": {
            "type": "object", "$defs": {"a": {"$ref": "#/$defs/a"}},
            "properties": {"title": {"$ref": "#/$defs/a"}}, "required": ["title"]}}]})
    };
    let big_result: hostile::Handler = Arc::new(|_: &HeaderMap, message: &Value| {
        let text = "x".repeat(50 * 1024 * 1024);
        Some(hostile::result(
            &message["id"],
            json!({"content": [{"type": "text", "text": text}]}),
        ))
    });
    let endless: hostile::Handler = Arc::new(|_: &HeaderMap, _: &Value| {
        Some(
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::new(hostile::trickle(usize::MAX)),
            )
                .into_response(),
        )
    });
    let cases: Vec<(&str, Option<hostile::Tools>, Option<hostile::Handler>)> = vec![
        ("10,000 tools", Some(Arc::new(huge_tools)), None),
        ("a nextCursor loop", Some(Arc::new(cursor_loop)), None),
        ("a $ref cycle", Some(Arc::new(ref_cycle)), None),
        ("a 50 MB result", None, Some(big_result)),
        ("an endless event stream", None, Some(endless)),
    ];
    let log = hostile::Log::default();
    let case = Case::new(&[]).await;
    for (name, tools, call) in cases {
        let (_gateway, login, mcp) = with_login(
            Behaviour {
                tools,
                call,
                ..Default::default()
            },
            token,
            &log,
        )
        .await;
        let ran = case
            .tick(&[
                ("PERSONA_RUNNER__AUTH__LOGIN_URL", &login),
                ("PERSONA_RUNNER__MCP__URL", &mcp),
            ])
            .await;
        case.assert_clean(&ran, &[token]);
        assert_words(&ran.stderr);
        let tick = ran.tick();
        eprintln!("{name}: {} in {:?}: {}", tick["status"], ran.elapsed, tick["error"]);
        assert!(ran.elapsed < Duration::from_secs(45), "{name}: {:?}", ran.elapsed);
        assert_ne!(tick["status"], "running", "{name}: {tick}");
    }

    // A model asking for 1,000 calls at once, and one with 10 MB of arguments.
    let gateway = common::TestGateway::start().await;
    let (login, mcp) = (gateway.login_url(), gateway.mcp_url());
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    for (name, calls) in [
        (
            "1,000 tool calls in one message",
            (0..1000)
                .map(|i| json!({"id": format!("c{i}"), "type": "function", "function": {"name": "todo.create", "arguments": "{\"title\": \"x\"}"}}))
                .collect::<Vec<_>>(),
        ),
        (
            "10 MB of arguments",
            vec![json!({"id": "c0", "type": "function", "function": {"name": "todo.create",
                "arguments": json!({"title": "y".repeat(10 * 1024 * 1024)}).to_string()}})],
        ),
    ] {
        let usage = usage.clone();
        let model = llm(move |request: &Value| {
            let first = !request["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
            if first && request.get("tools").is_some() {
                completion(json!({"role": "assistant", "content": null, "tool_calls": calls.clone()}), usage.clone())
            } else {
                playing_model("todo.create", usage.clone())(request)
            }
        })
        .await;
        let mut env = llm_env(&model);
        env.extend([
            ("PERSONA_RUNNER__AUTH__LOGIN_URL".to_string(), login.clone()),
            ("PERSONA_RUNNER__MCP__URL".into(), mcp.clone()),
            ("PERSONA_SEED_SECRET".into(), common::TEST_SEED.into()),
            ("OPENAI_API_KEY".into(), "sk-held".into()),
        ]);
        let ran = case.tick(&as_refs(&env)).await;
        case.assert_clean(&ran, &["sk-held"]);
        assert_words(&ran.stderr);
        let tick = ran.tick();
        eprintln!("{name}: {} in {:?}: ok {} denied {}: {}", tick["status"], ran.elapsed, tick["calls_ok"], tick["calls_denied"], tick["error"]);
        assert!(ran.elapsed < Duration::from_secs(45), "{name}: {:?}", ran.elapsed);
        assert_ne!(tick["status"], "running", "{name}: {tick}");
        // The product never runs more than tick.max_tool_calls of them.
        assert!(tick["calls_ok"].as_u64().unwrap() <= 20, "{name}: {tick}");
    }
}
