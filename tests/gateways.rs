//! The MCP client against real servers that ask, answer oddly, die, hang or lie: the
//! sample gateway's lab tools (an rmcp server, over HTTP and over stdio), a socket that
//! never answers, a port nobody listens on, and a child that prints garbage. The fault
//! tests run the real binary, as an operator would.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, ScriptedLlm, Step, TestDb, TestGateway, text, tool_calls};
use persona_runner::config::{Config, Env, LlmProvider, McpTransport, RootConfig};
use persona_runner::mcp::ToolPolicy;
use persona_runner::model::call::Call;
use persona_runner::model::persona::{DEFAULT_TENANT, Persona, PersonaSpec};
use persona_runner::model::tick::TickStatus;
use persona_runner::store::Store;
use persona_runner::tick::{TickRunner, TickSummary};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_persona-runner");
const ANNA: &str = "persona.anna@mana.test";

async fn seed_lab_persona(store: &Store) -> Persona {
    let spec: PersonaSpec = serde_json::from_value(json!({
        "name": "Anna Keller",
        "email": ANNA,
        "archetype": "tester",
        "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und probierst jede neue Funktion der App sofort aus.",
        "moduleMix": {"lab": 1},
        "tickCadence": "daily",
        "timeZone": "Europe/Berlin"
    }))
    .unwrap();
    store.upsert_persona(DEFAULT_TENANT, &spec, "UTC").await.unwrap().0
}

async fn lab_gateway() -> TestGateway {
    TestGateway::start_with(|options| options.lab = true).await
}

/// The lab gateway's config with only `tools` offered.
fn offering(gateway: &TestGateway, tools: &[&str]) -> Config {
    let mut config = gateway.config();
    config.mcp.allow = tools.iter().map(|t| t.to_string()).collect();
    config
}

async fn tick(config: Config, env: &Env, store: &Store, persona: &Persona) -> TickSummary {
    let engine = TickRunner::new(store.clone(), Arc::new(config), env).unwrap();
    common::tick_once(&engine, persona).await
}

async fn recorded(store: &Store, summary: &TickSummary) -> Vec<Call> {
    store.tick_calls(summary.tick_id).await.unwrap()
}

fn output(call: &Call) -> Value {
    serde_json::from_str(call.output.as_deref().unwrap_or("null")).unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_handshake_offers_2025_11_25_and_the_tick_records_it() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let summary = tick(offering(&gateway, &["lab.chart"]), &gateway.env(), &store, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    let ticks = store.list_ticks(DEFAULT_TENANT, &Default::default(), 10).await.unwrap();
    assert_eq!(ticks[0].protocol_version.as_deref(), Some("2025-11-25"));
}

#[tokio::test]
async fn the_offline_persona_fills_in_a_form_with_valid_values_and_the_defaults() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let summary = tick(
        offering(&gateway, &["lab.ask_profile"]),
        &gateway.env(),
        &store,
        &persona,
    )
    .await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    let calls = recorded(&store, &summary).await;
    let form = calls
        .iter()
        .find(|c| c.kind.as_str() == "elicitation")
        .expect("the form is audited");
    assert_eq!(form.result.as_str(), "ok");
    assert_eq!(form.tool_name, "elicitation/create");
    assert_eq!(form.module, "lab", "audited under the module of the call that asked");
    let answer = output(form);
    assert_eq!(answer["action"], "accept");
    assert_eq!(answer["content"]["nickname"], "Anna", "the default");
    assert_eq!(answer["content"]["newsletter"], false, "the default");
    let age = answer["content"]["age"].as_i64().expect("a required integer");
    assert!((0..=120).contains(&age), "{age}");
    // The server got the same answer back.
    let call = calls
        .iter()
        .find(|c| c.kind.as_str() == "call" && c.result.as_str() == "ok")
        .unwrap();
    let got = serde_json::from_str::<Value>(call.output.as_deref().unwrap()).unwrap();
    assert_eq!(got["action"], "accept");
    assert_eq!(got["content"], answer["content"]);
    // Exchanges with the server are not calls to the product.
    assert_eq!(
        summary.calls_ok as usize,
        calls
            .iter()
            .filter(|c| c.kind.as_str() == "call" && c.result.as_str() == "ok")
            .count()
    );
}

#[tokio::test]
async fn a_url_form_is_declined_and_audited() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let summary = tick(offering(&gateway, &["lab.open_link"]), &gateway.env(), &store, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    let calls = recorded(&store, &summary).await;
    let form = calls
        .iter()
        .find(|c| c.kind.as_str() == "elicitation")
        .expect("audited");
    assert_eq!(form.result.as_str(), "denied");
    assert!(
        form.arguments
            .as_deref()
            .unwrap()
            .contains("https://calendar.example/connect")
    );
    assert!(form.error_message.as_deref().unwrap().contains("browser"));
    let call = calls.iter().find(|c| c.kind.as_str() == "call").unwrap();
    assert!(call.output.as_deref().unwrap().contains("decline"), "{call:?}");
}

#[tokio::test]
async fn the_llm_persona_answers_a_form_in_character_and_serves_sampling_within_budget() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[
            ("lab_ask_profile", "{}"),
            ("lab_summarize", r#"{"text": "Bio exam on Friday"}"#),
        ])),
        // The form, answered in character (age only; the defaults are added).
        Step::Reply(text(
            r#"{"action": "accept", "content": {"age": 21, "nickname": "Anni"}}"#,
        )),
        // The server's sampling request.
        Step::Reply(text("Exam Friday.")),
        Step::Reply(text("Fertig für heute.")),
        Step::Reply(text(r#"{"ratings": [{"module": "lab", "rating": 4, "note": "ok"}]}"#)),
    ])
    .await;
    let mut config = offering(&gateway, &["lab.ask_profile", "lab.summarize"]);
    config.llm.provider = LlmProvider::Openai;
    config.llm.base_url = llm.base_url();
    config.llm.model = "test-model".into();
    config.llm.api_key_env = "TEST_LLM_KEY".into();
    let mut env = gateway.env();
    env.insert("TEST_LLM_KEY".into(), "sk-test".into());
    let summary = tick(config, &env, &store, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    let calls = recorded(&store, &summary).await;
    let form = calls.iter().find(|c| c.kind.as_str() == "elicitation").unwrap();
    assert_eq!(
        output(form)["content"],
        json!({"age": 21, "nickname": "Anni", "newsletter": false})
    );
    let sampling = calls
        .iter()
        .find(|c| c.kind.as_str() == "sampling")
        .expect("sampling is audited");
    assert_eq!(sampling.result.as_str(), "ok");
    assert_eq!(output(sampling)["text"], "Exam Friday.");
    let summarized = calls.iter().find(|c| c.tool_name == "lab.summarize").unwrap();
    assert!(summarized.output.as_deref().unwrap().contains("Exam Friday."));
    let requests = llm.requests();
    let form_request = &requests[1];
    assert!(
        form_request["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Complete your profile")
    );
    let sampling_request = &requests[2];
    assert_eq!(
        sampling_request["messages"][0]["content"],
        "You write one-line summaries."
    );
    assert!(
        sampling_request["max_tokens"].as_u64().unwrap() <= 64,
        "the server's limit"
    );
    // Five LLM requests of 100+20, 50+10 tokens each: the form and the sampling count too.
    assert_eq!(summary.tokens_in, 100 + 50 * 4);
}

#[tokio::test]
async fn roots_come_from_the_config() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let mut config = offering(&gateway, &["lab.roots"]);
    config.mcp.roots = vec![RootConfig {
        uri: "file:///home/anna/notes".into(),
        name: Some("notes".into()),
    }];
    let summary = tick(config, &gateway.env(), &store, &persona).await;
    let calls = recorded(&store, &summary).await;
    let call = calls
        .iter()
        .find(|c| c.kind.as_str() == "call" && c.result.as_str() == "ok")
        .unwrap();
    assert!(
        call.output.as_deref().unwrap().contains("file:///home/anna/notes"),
        "{call:?}"
    );
}

#[tokio::test]
async fn pictures_become_a_placeholder_and_the_text_after_them_is_kept() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let summary = tick(offering(&gateway, &["lab.chart"]), &gateway.env(), &store, &persona).await;
    let calls = recorded(&store, &summary).await;
    let call = calls
        .iter()
        .find(|c| c.kind.as_str() == "call" && c.result.as_str() == "ok")
        .unwrap();
    assert_eq!(
        call.output.as_deref(),
        Some("[image image/png, 29.3 KiB]\nYour mood rose all week.")
    );
}

#[tokio::test]
async fn a_task_only_tool_is_withheld_with_its_reason() {
    let gateway = lab_gateway().await;
    let config = gateway.config();
    let auth = persona_runner::auth::Authenticator::new(&config, &gateway.env()).unwrap();
    let credentials = auth.credentials(ANNA).await.unwrap();
    let session = common::open_session(&config.mcp, &credentials).await.unwrap();
    let export = session.tools().iter().find(|t| t.name == "lab.export").unwrap();
    assert!(export.task_required);
    let reason = ToolPolicy::new(&config.mcp).check(export).unwrap_err();
    assert!(reason.contains("taskSupport"), "{reason}");
    assert!(
        session
            .tools()
            .iter()
            .filter(|t| t.name != "lab.export")
            .all(|t| !t.task_required)
    );
    session.close().await;

    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let summary = tick(offering(&gateway, &["lab.export"]), &gateway.env(), &store, &persona).await;
    // Nothing offered: the persona could not use the app, which is no evidence about it.
    assert_eq!(summary.status, TickStatus::Idle);
    assert!(
        recorded(&store, &summary).await.is_empty(),
        "nothing offered, nothing sent"
    );
    assert!(!gateway.gateway.calls().iter().any(|c| c.tool == "lab.export"));
    let transcript = store.tick_transcript(summary.tick_id).await.unwrap().unwrap();
    let tools = transcript
        .entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["step"] == "tools")
        .unwrap();
    let export = tools["withheld"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["tool"] == "lab.export")
        .expect("listed as withheld");
    assert!(export["reason"].as_str().unwrap().contains("taskSupport"), "{export}");
}

#[tokio::test]
async fn nested_ref_models_get_valid_arguments_from_the_offline_driver() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let summary = tick(offering(&gateway, &["lab.plan_trip"]), &gateway.env(), &store, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert!(summary.calls_ok >= 1, "{summary:?}");
    assert_eq!(summary.calls_error, 0, "the gateway validated every argument");
    let sent = gateway.gateway.calls();
    let trip = sent.iter().find(|c| c.tool == "lab.plan_trip").unwrap();
    assert!(trip.arguments["traveller"]["home"]["zip"].as_str().unwrap().len() == 5);
}

#[tokio::test]
async fn arguments_the_driver_cannot_build_are_not_sent_and_not_held_against_the_product() {
    let gateway = lab_gateway().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed_lab_persona(&store).await;
    let summary = tick(offering(&gateway, &["lab.verify"]), &gateway.env(), &store, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert!(summary.calls_not_sent >= 1);
    assert_eq!(summary.calls_error, 0);
    assert!(
        summary.ratings.is_empty(),
        "no evidence, no rating: {:?}",
        summary.ratings
    );
    assert!(!gateway.gateway.calls().iter().any(|c| c.tool == "lab.verify"));
    let calls = recorded(&store, &summary).await;
    let why = calls[0].error_message.as_deref().unwrap();
    assert!(why.contains("does not match") && why.contains("+49"), "{why}");
    assert_eq!(calls[0].result.as_str(), "not_sent");
}

// ---- faults, with the real binary ----

/// A config and one-persona catalog in `dir`; `mcp` is the `[mcp]` section's body.
fn write_setup(dir: &Path, auth: &str, mcp: &str) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{db}\"\n[auth]\n{auth}\n[mcp]\n{mcp}\ntool_calls_per_minute = 0\n\
             tool_calls_per_minute_per_persona = 0\n[llm]\nprovider = \"offline\"\n[catalog]\nfiles = [\"catalog.json\"]\n\
             allowed_email_domains = [\"test\"]\n[log]\nlevel = \"warn\"\n",
            db = dir.join("runner.db").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("catalog.json"),
        json!({"personas": [{
            "name": "Anna Keller", "email": ANNA, "archetype": "tester",
            "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und probierst jede neue Funktion der App sofort aus.",
            "moduleMix": {"lab": 1}, "tickCadence": "daily", "timeZone": "Europe/Berlin"
        }]})
        .to_string(),
    )
    .unwrap();
    config
}

/// `catalog seed`, then `tick --all`: the exit code, stderr and how long the tick took.
fn seed_and_tick(dir: &Path, config: &Path) -> (i32, String, Duration) {
    let run = |args: &[&str]| {
        Command::new(BIN)
            .current_dir(dir)
            .arg("--config")
            .arg(config)
            .args(args)
            .env("PERSONA_SEED_SECRET", common::TEST_SEED)
            .output()
            .unwrap()
    };
    let seeded = run(&["catalog", "seed"]);
    assert!(seeded.status.success(), "{}", String::from_utf8_lossy(&seeded.stderr));
    let started = Instant::now();
    let ticked = run(&["tick", "--all"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&ticked.stderr).into_owned() + &String::from_utf8_lossy(&ticked.stdout);
    (ticked.status.code().unwrap_or(-1), stderr, took)
}

async fn tick_error(dir: &Path) -> (String, String) {
    let config = persona_runner::config::DatabaseConfig {
        url: persona_runner::config::DatabaseUrl::new(format!("sqlite://{}", dir.join("runner.db").display())),
        ..Default::default()
    };
    let store = Store::open(&config, None).await.unwrap();
    let ticks = store.list_ticks(DEFAULT_TENANT, &Default::default(), 10).await.unwrap();
    (ticks[0].status.to_string(), ticks[0].error.clone().unwrap_or_default())
}

#[tokio::test]
async fn an_http_server_killed_mid_tick_fails_the_tick_with_exit_1_within_5s() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut gateway = Command::new(BIN)
        .args(["sample-gateway", "--lab", "--listen", &format!("127.0.0.1:{port}")])
        .env("PERSONA_SEED_SECRET", common::TEST_SEED)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(port).await;
    let config = write_setup(
        dir.path(),
        &format!("mode = \"login\"\nlogin_url = \"http://127.0.0.1:{port}/api/v1/auth/login\""),
        &format!("url = \"http://127.0.0.1:{port}/mcp\"\nallow = [\"lab.crash\"]"),
    );
    let (code, stderr, took) = seed_and_tick(dir.path(), &config);
    let _ = gateway.wait();
    assert_eq!(code, 1, "{stderr}");
    let (status, error) = tick_error(dir.path()).await;
    assert!(took < Duration::from_secs(5), "{took:?}: {error}");
    assert_eq!(status, "failed");
    assert!(
        error.contains("the MCP session closed during tool call `lab.crash`"),
        "{error}"
    );
    assert!(!error.contains("rmcp::"), "no Rust type names: {error}");
}

#[tokio::test]
async fn a_stdio_server_killed_mid_tick_fails_the_tick_with_exit_1_within_5s() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        "mode = \"none\"",
        &format!(
            "transport = \"stdio\"\ncommand = [\"{BIN}\", \"sample-gateway\", \"--stdio\", \"--lab\", \"--user\", \"{ANNA}\"]\n\
             env = {{ PERSONA_SEED_SECRET = \"{}\" }}\nallow = [\"lab.crash\"]",
            common::TEST_SEED
        ),
    );
    let (code, stderr, took) = seed_and_tick(dir.path(), &config);
    assert_eq!(code, 1, "{stderr}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (status, error) = tick_error(dir.path()).await;
    assert_eq!(status, "failed");
    assert!(
        error.contains("the MCP session closed during tool call `lab.crash`"),
        "{error}"
    );
    assert!(error.contains("exited"), "says the server exited: {error}");
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_connect_timeout_naming_the_step() {
    // Accepts connections and reads, but never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        "mode = \"none\"",
        &format!("url = \"http://127.0.0.1:{port}/mcp\"\nconnect_timeout = \"2s\""),
    );
    let (code, stderr, took) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || seed_and_tick(&dir, &config)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(took < Duration::from_secs(2 + 5), "{took:?}");
    let (_, error) = tick_error(dir.path()).await;
    assert!(
        error.contains("did not answer (the initialize handshake) within 2s (mcp.connect_timeout)"),
        "{error}"
    );
    assert!(
        error.contains(&format!("127.0.0.1:{port}")),
        "names the server: {error}"
    );
}

#[tokio::test]
async fn a_stdio_server_printing_garbage_fails_naming_the_step_and_what_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        "mode = \"none\"",
        "transport = \"stdio\"\ncommand = [\"sh\", \"-c\", \"while true; do echo 'hello, this is not JSON'; sleep 0.2; done\"]\n\
         connect_timeout = \"2s\"",
    );
    let (code, stderr, took) = seed_and_tick(dir.path(), &config);
    assert_eq!(code, 1, "{stderr}");
    assert!(took < Duration::from_secs(7), "{took:?}");
    let (_, error) = tick_error(dir.path()).await;
    assert!(error.contains("the initialize handshake"), "{error}");
    assert!(error.contains("hello, this is not JSON"), "{error}");
}

#[tokio::test]
async fn a_port_nobody_listens_on_says_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(dir.path(), "mode = \"none\"", "url = \"http://127.0.0.1:1/mcp\"");
    let (code, stderr, _) = seed_and_tick(dir.path(), &config);
    assert_eq!(code, 1, "{stderr}");
    let (_, error) = tick_error(dir.path()).await;
    assert!(error.contains("connection refused"), "{error}");
    assert!(error.contains("the initialize handshake"), "{error}");
    assert!(!error.contains("rmcp::") && !error.contains("Transport ["), "{error}");
}

#[tokio::test]
async fn a_401_without_credentials_says_none_were_sent_and_shows_the_challenge() {
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_setup(
        dir.path(),
        "mode = \"none\"",
        &format!("url = \"{}\"", gateway.mcp_url()),
    );
    let (code, _, _) = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || seed_and_tick(&dir, &config)
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    let (_, error) = tick_error(dir.path()).await;
    assert!(error.contains("no credentials were sent"), "{error}");
    assert!(error.contains("Bearer realm=\"persona-runner-sample\""), "{error}");
}

#[tokio::test]
async fn a_stdio_server_gets_none_of_the_runners_secrets() {
    // The child prints its environment as a tool result would; the runner's secrets and
    // overrides must not be in it, the allowlist and mcp.env must.
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("env.txt");
    let mut config = Config::default();
    config.mcp.transport = McpTransport::Stdio;
    config.mcp.command = vec!["sh".into(), "-c".into(), format!("env > {}; exit 1", dump.display())];
    config.mcp.env.insert("GIVEN".into(), "yes".into());
    config.mcp.connect_timeout = persona_runner::time::HumanDuration::from_secs(5);
    let credentials = persona_runner::auth::Credentials {
        token: None,
        user_id: None,
        values: Default::default(),
        refresh_at: chrono::Utc::now(),
        password: None,
        session: None,
    };
    // Secrets the runner holds in its environment (set for this process only).
    // SAFETY: nextest runs every test in its own process, and no other thread of this
    // one reads the environment while it is set.
    unsafe {
        std::env::set_var("PERSONA_SEED_SECRET_TEST_CANARY", "canary-seed-secret");
        std::env::set_var("PERSONA_RUNNER__DATABASE__PASSWORD_TEST", "canary-db-password");
    }
    let err = common::open_session(&config.mcp, &credentials).await.err().unwrap();
    assert!(err.to_string().contains("exited"), "{err}");
    let seen = std::fs::read_to_string(&dump).unwrap();
    assert!(!seen.contains("canary-"), "{seen}");
    assert!(seen.contains("GIVEN=yes"));
    assert!(seen.lines().any(|l| l.starts_with("PATH=")));
}
