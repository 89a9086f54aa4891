//! Test harness: a fresh database per test, on SQLite or on a real PostgreSQL server.
//!
//! PostgreSQL: when `PERSONA_RUNNER_TEST_POSTGRES_URL` names a server (superuser URL),
//! each test creates its own database there and drops it afterwards. Otherwise each test
//! starts a throwaway server from the machine's PostgreSQL binaries (`initdb` into a
//! temporary folder, a free loopback port, `fsync=off`) and removes it on drop. As root,
//! the server runs as the `postgres` user, since PostgreSQL refuses to run as root.
#![allow(dead_code)]

pub mod app;
pub mod hostile;
pub mod otlp;
pub mod runner;
pub mod store_ext;

#[allow(unused_imports)]
pub use store_ext::{StoreExt, open_session};

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use persona_runner::config::{DatabaseConfig, DatabaseUrl};
use persona_runner::store::Store;

pub const POSTGRES_URL_ENV: &str = "PERSONA_RUNNER_TEST_POSTGRES_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that lives as long as the test: a temporary SQLite file or a PostgreSQL
/// database (on a server of its own, or on the one named by the environment).
pub struct TestDb {
    pub config: DatabaseConfig,
    _dir: tempfile::TempDir,
    server: Option<PgServer>,
    external: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("nested/folder/test.db").display());
                Self {
                    config: database_config(url),
                    _dir: dir,
                    server: None,
                    external: None,
                }
            }
            Backend::Postgres => match std::env::var(POSTGRES_URL_ENV).ok().filter(|u| !u.is_empty()) {
                Some(admin_url) => {
                    let name = format!("persona_runner_test_{}", uuid::Uuid::new_v4().simple());
                    admin_sql(&admin_url, &format!("CREATE DATABASE {name}")).await;
                    let url = replace_database(&admin_url, &name);
                    Self {
                        config: database_config(url),
                        _dir: dir,
                        server: None,
                        external: Some((admin_url, name)),
                    }
                }
                None => {
                    let server = PgServer::start(dir.path());
                    Self {
                        config: database_config(server.url()),
                        _dir: dir,
                        server: Some(server),
                        external: None,
                    }
                }
            },
        }
    }

    /// Opens the store and applies the migrations.
    pub async fn store(&self) -> Store {
        Store::open(&self.config, None)
            .await
            .expect("open and migrate the test store")
    }

    pub fn url(&self) -> &str {
        self.config.url.expose()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.external.take() {
            // Drop runs outside any runtime of the test: use a small one of our own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(admin_sql(
                    &admin_url,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ));
            })
            .join();
        }
        drop(self.server.take());
    }
}

fn database_config(url: String) -> DatabaseConfig {
    DatabaseConfig {
        url: DatabaseUrl::new(url),
        max_connections: 4,
        ..DatabaseConfig::default()
    }
}

async fn admin_sql(admin_url: &str, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .expect("admin statement");
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A PostgreSQL server of the test's own.
pub struct PgServer {
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    run_as: Option<String>,
}

impl PgServer {
    pub fn start(parent: &Path) -> Self {
        let bin = postgres_bin_dir();
        let run_as = is_root().then(|| "postgres".to_string());
        let root = parent.join("pg");
        std::fs::create_dir_all(&root).unwrap();
        if let Some(user) = &run_as {
            chown_to(user, parent);
            chown_to(user, &root);
        }
        let data = root.join("data");
        run(
            &bin,
            &run_as,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        // A free port can be taken between our probe and the server's bind: retry a few times.
        for attempt in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=50",
                root.display()
            );
            let log = root.join("server.log");
            let started = command(&bin, &run_as, "pg_ctl")
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "30",
                    "-l",
                    log.to_str().unwrap(),
                    "start",
                ])
                .output()
                .expect("run pg_ctl");
            if started.status.success() {
                return Self {
                    data,
                    port,
                    bin,
                    run_as,
                };
            }
            if attempt == 4 {
                panic!(
                    "PostgreSQL did not start: {}\n{}",
                    String::from_utf8_lossy(&started.stderr),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        unreachable!()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = command(&self.bin, &self.run_as, "pg_ctl")
            .args(["-D", self.data.to_str().unwrap(), "stop", "-m", "immediate", "-w"])
            .output();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn chown_to(user: &str, path: &Path) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().expect("run id");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| {
            panic!("no user `{user}` to run PostgreSQL as (create it, or run the tests as a non-root user)")
        })
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g"))).expect("chown the test folder");
}

fn command(bin: &Path, run_as: &Option<String>, program: &str) -> Command {
    let program = bin.join(program);
    match run_as {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn run(bin: &Path, run_as: &Option<String>, program: &str, args: &[&str]) {
    let out = command(bin, run_as, program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port free right now (a server may still take it first: callers retry or
/// accept that rare race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The folder with `initdb` and `pg_ctl`: `$PG_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian), else `pg_config --bindir`.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let out = Command::new("pg_config").arg("--bindir").output().expect(
        "PostgreSQL server binaries not found: install postgresql (Debian: apt-get install postgresql) \
         or set PG_BIN_DIR, or set PERSONA_RUNNER_TEST_POSTGRES_URL to a server",
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs each named async test body (`async fn name(backend: Backend)`) once per backend,
/// as `sqlite::name` and `postgres::name`.
#[allow(unused_macros)]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )+
        }
    };
}

/// The sample gateway (login + MCP) on a free loopback port, for as long as the test runs.
pub struct TestGateway {
    pub gateway: persona_runner::gateway::Gateway,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

pub const TEST_SEED: &str = "test-seed-secret-for-the-suite";

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut persona_runner::gateway::GatewayOptions)) -> Self {
        let mut options = persona_runner::gateway::GatewayOptions {
            seed: persona_runner::config::Secret::new(TEST_SEED),
            token_ttl: std::time::Duration::from_secs(600),
            page_size: 5,
            require_space_header: false,
            call_delay: std::time::Duration::ZERO,
            lab: false,
            accounts: false,
        };
        adjust(&mut options);
        let gateway = persona_runner::gateway::Gateway::new(options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = gateway.clone();
        let task = tokio::spawn(async move {
            serving.serve(listener, std::future::pending()).await.unwrap();
        });
        Self { gateway, addr, task }
    }

    pub fn login_url(&self) -> String {
        format!("http://{}/api/v1/auth/login", self.addr)
    }

    pub fn signup_url(&self) -> String {
        format!("http://{}/api/v1/auth/signup", self.addr)
    }

    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The `[spaces]` section that points the runner at this gateway's organizations.
    pub fn spaces_toml(&self) -> String {
        let organization = |path: &str| format!("http://{}/api/auth/organization/{path}", self.addr);
        format!(
            "[spaces]\nlist_url = \"{}\"\ncreate_url = \"{}\"\ninvite_url = \"{}\"\naccept_url = \"{}\"\n",
            organization("list"),
            organization("create"),
            organization("invite-member"),
            organization("accept-invitation")
        )
    }

    pub fn organizations_url(&self) -> String {
        format!("http://{}/api/auth/organization/list", self.addr)
    }

    /// A runner config pointed at this gateway (login mode, the suite's seed secret).
    pub fn config(&self) -> persona_runner::config::Config {
        let mut config = persona_runner::config::Config::default();
        config.auth.login_url = self.login_url();
        config.auth.seed_secret_env = "TEST_SEED_SECRET".into();
        config.mcp.url = self.mcp_url();
        config.retry.initial_delay = persona_runner::time::HumanDuration(std::time::Duration::from_millis(10));
        let organization = |path: &str| format!("http://{}/api/auth/organization/{path}", self.addr);
        config.spaces.list_url = organization("list");
        config.spaces.create_url = organization("create");
        config.spaces.invite_url = organization("invite-member");
        config.spaces.accept_url = organization("accept-invitation");
        config
    }

    /// The environment snapshot that goes with [`TestGateway::config`].
    pub fn env(&self) -> persona_runner::config::Env {
        [("TEST_SEED_SECRET".to_string(), TEST_SEED.to_string())]
            .into_iter()
            .collect()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One scripted answer of the fake LLM endpoint.
#[derive(Clone, Debug)]
pub enum Step {
    /// HTTP 200 with this chat-completion body.
    Reply(serde_json::Value),
    /// An error status, optionally with `Retry-After`.
    Status(u16, Option<&'static str>),
    /// Never answers (the client must give up or be dropped).
    Hang,
    /// An error status with this message in the OpenAI error body.
    Refuse(u16, &'static str),
    /// This chat-completion body, once the test adds a permit to the semaphore (so it
    /// can change the world while the tick waits for its model).
    Held(std::sync::Arc<tokio::sync::Semaphore>, serde_json::Value),
}

/// A chat-completion body calling tools: `(function name, arguments text)`.
pub fn tool_calls(calls: &[(&str, &str)]) -> serde_json::Value {
    let calls: Vec<serde_json::Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            serde_json::json!({"id": format!("call_{i}_{name}"), "type": "function", "function": {"name": name, "arguments": args}})
        })
        .collect();
    serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": calls}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
}

/// A chat-completion body with text only.
pub fn text(content: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
    })
}

/// An OpenAI-compatible endpoint that answers from a script and records every request.
pub struct ScriptedLlm {
    pub addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, serde_json::Value)>>>,
    /// The `traceparent` header of each request, in order.
    traceparents: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedLlm {
    pub async fn start(steps: Vec<Step>) -> Self {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let steps = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(steps)));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let traceparents = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (steps_in, requests_in, traceparents_in) = (steps.clone(), requests.clone(), traceparents.clone());
        // What llama.cpp says of its model: a small context window, so checks can warn.
        let models = axum::routing::get(|| async {
            axum::Json(serde_json::json!({"object": "list", "data": [{"id": "test-model", "meta": {"n_ctx": 1024}}]}))
        });
        let app = axum::Router::new().route("/v1/models", models).route(
            "/v1/chat/completions",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                let (steps, requests, traceparents) = (steps_in.clone(), requests_in.clone(), traceparents_in.clone());
                async move {
                    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
                    traceparents.lock().unwrap().push(traceparent);
                    requests.lock().unwrap().push((std::time::Instant::now(), body.0));
                    let step = steps.lock().unwrap().pop_front();
                    match step {
                        Some(Step::Reply(body)) => axum::Json(body).into_response(),
                        Some(Step::Status(status, retry_after)) => {
                            let mut response = (
                                StatusCode::from_u16(status).unwrap(),
                                axum::Json(serde_json::json!({"error": {"message": format!("scripted {status}"), "type": "test", "param": null, "code": null}})),
                            )
                                .into_response();
                            if let Some(wait) = retry_after {
                                response.headers_mut().insert("retry-after", wait.parse().unwrap());
                            }
                            response
                        }
                        Some(Step::Refuse(status, message)) => (
                            StatusCode::from_u16(status).unwrap(),
                            axum::Json(serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})),
                        )
                            .into_response(),
                        Some(Step::Held(gate, body)) => {
                            gate.acquire().await.unwrap().forget();
                            axum::Json(body).into_response()
                        }
                        Some(Step::Hang) => {
                            std::future::pending::<()>().await;
                            unreachable!()
                        }
                        None => (
                            StatusCode::BAD_REQUEST,
                            axum::Json(serde_json::json!({"error": {"message": "script exhausted", "type": "test", "param": null, "code": null}})),
                        )
                            .into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            requests,
            traceparents,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The `traceparent` header of each request received, in order.
    pub fn traceparents(&self) -> Vec<Option<String>> {
        self.traceparents.lock().unwrap().clone()
    }

    /// The request bodies received, in order.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.requests.lock().unwrap().iter().map(|(at, _)| *at).collect()
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the binary in `dir` with only `PATH` and `env` in its environment.
pub fn run_binary<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[&str],
    env: &[(K, V)],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_persona-runner"));
    cmd.current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("run persona-runner")
}

/// `mcp.command` that starts the sample gateway on stdio as `user`.
pub fn stdio_gateway_command(user: &str) -> Vec<String> {
    vec![
        env!("CARGO_BIN_EXE_persona-runner").into(),
        "sample-gateway".into(),
        "--stdio".into(),
        "--user".into(),
        user.into(),
    ]
}

/// A working directory holding the shipped catalogs, as a fresh install has them.
pub fn workdir_with_catalogs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir(dir.path().join("catalog")).unwrap();
    for file in ["consumer-app.json", "sop-finance.json"] {
        std::fs::copy(root.join("catalog").join(file), dir.path().join("catalog").join(file)).unwrap();
    }
    dir
}

/// The store a daemon or CLI run in `dir` used (the default SQLite file).
pub async fn default_store_in(dir: &Path) -> Store {
    let config = DatabaseConfig {
        url: DatabaseUrl::new(format!("sqlite://{}/data/persona-runner.db", dir.display())),
        ..Default::default()
    };
    Store::open(&config, None).await.unwrap()
}

/// Waits until something listens on the loopback `port`.
pub async fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Anna, a persona of the todo module on a daily cadence (the scripted-tick tests' persona).
pub async fn seed_anna(store: &persona_runner::store::Store) -> persona_runner::model::persona::Persona {
    let spec: persona_runner::model::persona::PersonaSpec = serde_json::from_value(serde_json::json!({
        "name": "Anna Keller",
        "email": "persona.anna@mana.test",
        "archetype": "adhd-student",
        "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und vergisst ständig Abgaben.",
        "moduleMix": {"todo": 1},
        "tickCadence": "daily",
    }))
    .unwrap();
    store
        .upsert_persona(persona_runner::model::persona::DEFAULT_TENANT, &spec, "UTC")
        .await
        .unwrap()
        .0
}

/// Anna as the LLM tick tests play her: todo and mood, in Berlin, chaotic.
pub async fn seed_chaotic_anna(store: &Store) -> persona_runner::model::persona::Persona {
    let spec: persona_runner::model::persona::PersonaSpec = serde_json::from_value(serde_json::json!({
        "name": "Anna Keller",
        "email": "persona.anna@mana.test",
        "archetype": "adhd-student",
        "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und vergisst ständig Abgaben. Du schreibst kurz und chaotisch.",
        "moduleMix": {"todo": 0.6, "mood": 0.4},
        "tickCadence": "daily",
        "timeZone": "Europe/Berlin"
    }))
    .unwrap();
    store
        .upsert_persona(persona_runner::model::persona::DEFAULT_TENANT, &spec, "UTC")
        .await
        .unwrap()
        .0
}

/// A config and environment that reach `gateway` and play with the scripted `llm` as
/// `model`, its key `key` in `TEST_LLM_KEY`.
pub fn llm_config(
    gateway: &TestGateway,
    llm: &ScriptedLlm,
    model: &str,
    key: &str,
) -> (persona_runner::config::Config, persona_runner::config::Env) {
    let mut config = gateway.config();
    config.llm.provider = persona_runner::config::LlmProvider::Openai;
    config.llm.base_url = llm.base_url();
    config.llm.model = model.into();
    config.llm.api_key_env = "TEST_LLM_KEY".into();
    let mut env = gateway.env();
    env.insert("TEST_LLM_KEY".into(), key.into());
    (config, env)
}

/// A tick engine on `store` that reaches `gateway` and plays personas with the scripted
/// `llm` as `model`.
pub fn scripted_engine(
    store: &persona_runner::store::Store,
    gateway: &TestGateway,
    llm: &ScriptedLlm,
    model: &str,
) -> persona_runner::tick::TickRunner {
    let (config, env) = llm_config(gateway, llm, model, "sk-test");
    persona_runner::tick::TickRunner::new(store.clone(), std::sync::Arc::new(config), &env).unwrap()
}

/// One CLI-triggered tick of `persona`, first attempt, no progress shown.
pub async fn tick_once(
    engine: &persona_runner::tick::TickRunner,
    persona: &persona_runner::model::persona::Persona,
) -> persona_runner::tick::TickSummary {
    let request = persona_runner::tick::TickRequest {
        persona: persona.clone(),
        trigger: persona_runner::model::tick::Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        goal: None,
        space: Default::default(),
    };
    engine.run(&request, &|_| {}).await.unwrap()
}

/// `persona-runner catalog seed ARGS… CATALOGS…` (the real binary) with a config that
/// reaches `gateway`'s login, sign-up and MCP endpoints, plus `extra_toml`.
pub async fn catalog_seed(
    dir: &Path,
    db: &TestDb,
    gateway: &TestGateway,
    extra_toml: &str,
    args: &[&str],
    catalogs: &[&str],
) -> std::process::Output {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[auth]\nlogin_url = \"{}\"\nsignup_url = \"{}\"\n\
             seed_secret_env = \"TEST_SEED_SECRET\"\n[mcp]\nurl = \"{}\"\n{extra_toml}",
            db.url(),
            gateway.login_url(),
            gateway.signup_url(),
            gateway.mcp_url()
        ),
    )
    .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
        .arg("--config")
        .arg(&config)
        .args(["catalog", "seed"])
        .args(args)
        .args(catalogs)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_SEED_SECRET", TEST_SEED)
        .output()
        .await
        .unwrap()
}
