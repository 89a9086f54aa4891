//! No secret reaches a log line, even at `trace` level and from every crate (rmcp,
//! reqwest, hyper, sqlx, ours): seed secret, derived password, LLM API key, bearer tokens.
//! A binary of its own, so it can install the global subscriber.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Backend, ScriptedLlm, Step, TEST_SEED, TestDb, TestGateway, text, tool_calls};
use persona_runner::config::{LlmProvider, Secret};
use persona_runner::model::persona::{DEFAULT_TENANT, PersonaSpec};
use persona_runner::model::tick::{TickStatus, Trigger};
use persona_runner::tick::{TickRequest, TickRunner};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const ANNA: &str = "persona.anna@mana.test";
const LLM_KEY: &str = "sk-trace-test-key-0815-secret";
/// Every token the sample gateway issues starts with this: base64url of its JWT header
/// `{"typ":"JWT","alg":"HS256"}` (as jsonwebtoken writes it).
const TOKEN_PREFIX: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_log_line_at_trace_level() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let spec: PersonaSpec = serde_json::from_value(json!({
        "name": "Anna", "email": ANNA, "archetype": "adhd-student",
        "systemPrompt": "Du bist Anna, 21, Biologiestudentin in Leipzig, chaotisch und immer knapp dran.",
        "moduleMix": {"todo": 1}, "tickCadence": "daily"
    }))
    .unwrap();
    let persona = store.upsert_persona(DEFAULT_TENANT, &spec, "UTC").await.unwrap().0;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Status(429, Some("0")),
        Step::Reply(tool_calls(&[("todo_create", r#"{"title": "Mensa-Karte aufladen"}"#)])),
        Step::Reply(text("erledigt")),
        Step::Reply(text(r#"{"ratings": [{"module": "todo", "rating": 4, "note": "ok"}]}"#)),
    ])
    .await;
    let mut config = gateway.config();
    config.llm.provider = LlmProvider::Openai;
    config.llm.base_url = llm.base_url();
    config.llm.api_key_env = "TEST_LLM_KEY".into();
    let mut env = gateway.env();
    env.insert("TEST_LLM_KEY".into(), LLM_KEY.into());
    let engine = TickRunner::new(store.clone(), Arc::new(config.clone()), &env).unwrap();
    tracing::info!(?config, ?engine, "configured");
    let request = TickRequest {
        persona: persona.clone(),
        trigger: Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        goal: None,
        space: Default::default(),
    };
    let summary = engine.run(&request, &|_| {}).await.unwrap();
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert_eq!(summary.calls_ok, 1);

    // A failing login too: its error is logged.
    let mut wrong = env.clone();
    wrong.insert("TEST_SEED_SECRET".into(), "another-seed-secret-value".into());
    let failing = TickRunner::new(store.clone(), Arc::new(config), &wrong).unwrap();
    let failed = failing.run(&request, &|_| {}).await.unwrap();
    assert_eq!(failed.status, TickStatus::Failed);

    // The sidecar: the admin token as bearer and through the dashboard's sign-in form,
    // a wrong one, and user JWTs (valid and forged).
    let app = common::app::spawn_app(Backend::Sqlite).await;
    let user_jwt = common::app::user_token(uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), &["admin"]);
    let (status, _) = app
        .call("GET", "/api/v1/admin/personas", common::app::Auth::Admin, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            "POST",
            "/api/init-personas",
            common::app::Auth::Bearer(user_jwt.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let forged = format!("{}x", &user_jwt[..user_jwt.len() - 1]);
    let (status, _) = app
        .call("GET", "/api/personas", common::app::Auth::Bearer(forged), None)
        .await;
    assert_eq!(status, 401);
    let signed_in = app
        .client
        .post(format!("{}/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", common::app::ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    let session = signed_in.headers()["set-cookie"].to_str().unwrap().to_string();
    let session = session
        .split(';')
        .next()
        .unwrap()
        .split('=')
        .nth(1)
        .unwrap()
        .to_string();
    let dashboard = app
        .client
        .get(format!("{}/", app.base))
        .header("cookie", format!("persona_runner_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    app.stop().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.len() > 10_000,
        "trace logging really captured the run ({} bytes)",
        logs.len()
    );
    assert!(
        logs.contains("todo.create") || logs.contains("tools/call"),
        "the tick is in the logs"
    );
    let password = persona_runner::auth::derive_password(&Secret::new(TEST_SEED), ANNA);
    let wrong_password = persona_runner::auth::derive_password(&Secret::new("another-seed-secret-value"), ANNA);
    for (what, secret) in [
        ("seed secret", TEST_SEED),
        ("other seed secret", "another-seed-secret-value"),
        ("derived password", password.expose()),
        ("wrong derived password", wrong_password.expose()),
        ("LLM API key", LLM_KEY),
        ("bearer token", TOKEN_PREFIX),
        ("admin token", common::app::ADMIN_TOKEN),
        ("JWT secret", common::app::JWT_SECRET),
        ("user JWT", user_jwt.as_str()),
        ("dashboard session", session.as_str()),
    ] {
        if let Some(at) = logs.find(secret) {
            let line = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            panic!(
                "the {what} appears in the logs: {}",
                &logs[line..(at + 80).min(logs.len())]
            );
        }
    }
}
