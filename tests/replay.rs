//! `persona-runner replay` (the real binary) against the real sample gateway: a tick
//! recorded with the scripted LLM is sent again without any LLM; the same product
//! answers the same (exit 0), a changed one is reported call by call (exit 1), and one
//! that dies on a replayed call (its own process) ends the replay there.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Backend, ScriptedLlm, Step, TEST_SEED, TestDb, TestGateway, text, tool_calls};
use persona_runner::model::call::{Call, CallKind, CallResult};
use persona_runner::model::persona::Persona;
use persona_runner::model::tick::{NewTick, TickFinish, TickStatus, Trigger};
use persona_runner::store::Store;
use persona_runner::tick::TickRequest;
use serde_json::Value;
use uuid::Uuid;

/// One tick in which the scripted model makes `calls`, then stops and rates.
async fn tick(store: &Store, gateway: &TestGateway, persona: &Persona, calls: &[(&str, &str)]) -> Uuid {
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(calls)),
        Step::Reply(text("Fertig.")),
        Step::Reply(text(r#"{"ratings": [{"module": "todo", "rating": 4, "note": "ok"}]}"#)),
    ])
    .await;
    let engine = common::scripted_engine(store, gateway, &llm, "test-model");
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
    summary.tick_id
}

/// `persona-runner replay ARGS…` with a config for `db` and `gateway` (no LLM key at all);
/// awaited, so the gateway in this test's runtime keeps serving.
async fn replay(dir: &std::path::Path, db: &TestDb, gateway: &TestGateway, args: &[&str]) -> Output {
    replay_at(dir, db, &gateway.login_url(), &gateway.mcp_url(), args).await
}

/// The same against any product's login and MCP URLs.
async fn replay_at(dir: &std::path::Path, db: &TestDb, login_url: &str, mcp_url: &str, args: &[&str]) -> Output {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[auth]\nlogin_url = \"{login_url}\"\nseed_secret_env = \"TEST_SEED_SECRET\"\n[mcp]\nurl = \"{mcp_url}\"\n",
            db.url(),
        ),
    )
    .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
        .arg("--config")
        .arg(&config)
        .arg("replay")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_SEED_SECRET", TEST_SEED)
        .output()
        .await
        .unwrap()
}

async fn a_replay_reports_what_changed_in_the_product(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let persona = common::seed_anna(&store).await;
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let recorded = tick(
        &store,
        &gateway,
        &persona,
        &[
            ("todo_list", r#"{"status": "all"}"#),
            ("todo_complete", r#"{"id": 4711}"#),
            ("todo_complete", r#"{"id": "not a number"}"#),
            ("todo_delete", r#"{"id": 4711}"#),
        ],
    )
    .await;
    let calls_before = gateway.gateway.calls().len();

    // The same product: every call answers as recorded.
    let out = replay(dir.path(), &db, &gateway, &[&recorded.to_string()]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("todo.list same"), "{stdout}");
    assert!(
        stdout.contains("#1 todo.complete same"),
        "the same error is the same: {stdout}"
    );
    assert!(
        stdout.contains("#2 todo.complete skipped"),
        "refused by the tick, not sent now: {stdout}"
    );
    assert!(
        stdout.contains("todo.delete skipped"),
        "never sent, never repeated: {stdout}"
    );
    assert!(stdout.contains("0 changed"), "{stdout}");
    assert_eq!(
        gateway.gateway.calls().len(),
        calls_before + 2,
        "the replay sent the two calls that reached the product, not the withheld one"
    );

    // The product changes (another tick adds a to-do): the list now differs.
    tick(
        &store,
        &gateway,
        &persona,
        &[("todo_create", r#"{"title": "Neue Abgabe"}"#)],
    )
    .await;
    let out = replay(dir.path(), &db, &gateway, &["--json", &recorded.to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    let calls = reports[0]["calls"].as_array().unwrap();
    let verdict = |tool: &str| {
        calls
            .iter()
            .find(|c| c["tool"] == tool)
            .map(|c| (c["verdict"].as_str().unwrap().to_string(), c["detail"].clone()))
            .unwrap()
    };
    let (list, detail) = verdict("todo.list");
    assert_eq!(list, "changed");
    assert!(detail.as_str().unwrap().contains("Neue Abgabe"), "{detail}");
    assert_eq!(verdict("todo.complete").0, "same");
    assert_eq!(verdict("todo.delete").0, "skipped");
}

both_backends!(a_replay_reports_what_changed_in_the_product);

/// The product dies on a replayed call (the sample gateway, its own process, exits during
/// `lab.crash`, which answered when the tick was recorded): that call is `changed` with the
/// cause, the calls after it are not sent into the dead session, and the exit code says
/// something changed.
#[tokio::test]
async fn a_product_that_dies_on_a_replayed_call_is_a_change_and_the_rest_are_not_sent() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_anna(&store).await;
    let recorded = store
        .claim_tick(&NewTick {
            tenant_id: persona.tenant_id,
            persona_id: persona.id,
            trigger: Trigger::Cli,
            scheduled_for: None,
            attempt: 1,
            runner_id: "recorded".into(),
            lease: Duration::from_secs(60),
            target: None,
            space: None,
        })
        .await
        .unwrap();
    for (seq, tool, arguments, output) in [
        (0, "todo.list", r#"{"status":"all"}"#, "[]"),
        (1, "lab.crash", "{}", r#"{"crashed":false}"#),
        (2, "todo.list", r#"{"status":"open"}"#, "[]"),
    ] {
        store
            .record_action(&Call {
                space: None,
                id: Call::new_id(),
                sent: true,
                recovered: false,
                refusal: None,
                created_at: chrono::Utc::now(),
                tenant_id: persona.tenant_id,
                tick_id: recorded.id,
                persona_id: persona.id,
                seq,
                kind: CallKind::Call,
                tool_name: tool.into(),
                module: tool.split('.').next().unwrap().into(),
                input_hash: format!("{seq:064}"),
                result: CallResult::Ok,
                error_message: None,
                arguments: Some(arguments.into()),
                output: Some(output.into()),
                chaos: false,
                latency_ms: Some(5),
            })
            .await
            .unwrap();
    }
    store
        .finish_tick(recorded.id, &TickFinish::status(TickStatus::Ok, None))
        .await
        .unwrap();
    store.close().await;

    let port = common::free_port();
    let mut gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
        .args(["sample-gateway", "--lab", "--listen", &format!("127.0.0.1:{port}")])
        .env("PERSONA_SEED_SECRET", TEST_SEED)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    common::wait_for_port(port).await;
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = replay_at(
        dir.path(),
        &db,
        &format!("http://127.0.0.1:{port}/api/v1/auth/login"),
        &format!("http://127.0.0.1:{port}/mcp"),
        &["--json", &recorded.id.to_string()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(
        gateway.wait().await.unwrap().code(),
        Some(3),
        "the product died on the call"
    );

    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    let calls = reports[0]["calls"].as_array().unwrap();
    assert_ne!(calls[0]["verdict"], "skipped", "sent while the product was up");
    assert_eq!(calls[1]["verdict"], "changed");
    assert!(
        calls[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("was ok, now the session ended:"),
        "{}",
        calls[1]["detail"]
    );
    assert_eq!(calls[2]["verdict"], "skipped");
    assert_eq!(calls[2]["detail"], "not sent: the session ended at call #1");
}
