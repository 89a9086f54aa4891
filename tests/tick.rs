//! The tick engine end to end: the real sample gateway (rmcp server, bearer auth, login),
//! a scripted OpenAI-compatible endpoint, and the store on SQLite and PostgreSQL.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, ScriptedLlm, Step, TestDb, TestGateway, text, tool_calls};
use persona_runner::config::{Config, Env, LlmProvider, McpTransport};
use persona_runner::model::persona::{DEFAULT_TENANT, PersonaSpec};
use persona_runner::model::tick::{RatingStatus, TickStatus};
use persona_runner::tick::TickRunner;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ANNA: &str = "persona.anna@mana.test";
const LLM_KEY: &str = "sk-test-key-never-logged-4711";

fn llm_config(gateway: &TestGateway, llm: &ScriptedLlm) -> (Config, Env) {
    common::llm_config(gateway, llm, "test-model", LLM_KEY)
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The tool messages of a request, by tool_call_id.
fn tool_answers(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap().to_string(),
                m["content"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn a_scripted_role_play_is_audited_deduped_and_rated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let create = r#"{"title": "Biologie-Referat vorbereiten", "priority": "high"}"#;
    let llm = ScriptedLlm::start(vec![
        // Turn 1: two calls in one turn.
        Step::Reply(tool_calls(&[("todo_create", create), ("mood_log", r#"{"score": 4}"#)])),
        // Turn 2 is rate limited once, then: a repeat, a withheld destructive tool,
        // an unknown tool, and arguments that are not JSON.
        Step::Status(429, Some("1")),
        Step::Reply(tool_calls(&[
            ("todo_create", r#"{"priority":"high","title":"Biologie-Referat vorbereiten"}"#),
            ("todo_delete", r#"{"id": 1}"#),
            ("todo_fly", "{}"),
            ("todo_list", "{not json"),
        ])),
        // Turn 3 fails once on the server side, then the model stops.
        Step::Status(500, None),
        Step::Reply(text("Fertig für heute.")),
        // The rating: first unusable, then repaired.
        Step::Reply(text("Ich gebe 7 Sterne!")),
        Step::Reply(text(
            r#"```json
{"ratings": [{"module": "todo", "rating": 4, "note": "Anlegen ging schnell."}, {"module": "mood", "rating": 5, "note": "Super einfach."}]}
```"#,
        )),
    ])
    .await;
    let (config, env) = llm_config(&gateway, &llm);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();

    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert_eq!(summary.rating_status, Some(RatingStatus::Valid));
    assert_eq!(
        (
            summary.calls_ok,
            summary.calls_error,
            summary.calls_deduped,
            summary.calls_denied
        ),
        (2, 1, 1, 2)
    );
    assert_eq!(summary.turns, 3);

    // The product saw each distinct call once.
    let calls = gateway.gateway.calls();
    let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(tools, ["todo.create", "mood.log"]);

    // The audit: every call, in order, with the right hash.
    let actions = store.tick_actions(summary.tick_id).await.unwrap();
    let audit: Vec<(&str, &str)> = actions
        .iter()
        .map(|a| (a.tool_name.as_str(), a.result.as_str()))
        .collect();
    assert_eq!(
        audit,
        [
            ("todo.create", "ok"),
            ("mood.log", "ok"),
            ("todo.create", "deduped"),
            ("todo.delete", "denied"),
            ("todo_fly", "denied"),
            ("todo.list", "error"),
        ]
    );
    let expected_hash = sha256_hex("todo.create\n{\"priority\":\"high\",\"title\":\"Biologie-Referat vorbereiten\"}");
    assert_eq!(actions[0].input_hash, expected_hash);
    assert_eq!(
        actions[2].input_hash, expected_hash,
        "a repeat with other key order is the same call"
    );
    assert!(actions[0].latency_ms.is_some());
    assert!(actions[3].error_message.as_deref().unwrap().contains("destructiveHint"));
    assert!(actions[5].error_message.as_deref().unwrap().contains("not valid JSON"));

    // Every call of a turn was answered to the model.
    let requests = llm.requests();
    assert_eq!(requests.len(), 7, "3 turns, 2 failed attempts, 2 rating answers");
    let answers = tool_answers(&requests[4]);
    assert_eq!(answers.len(), 6);
    assert!(
        answers[2].1.contains("not sent again") && answers[2].1.contains("Biologie-Referat"),
        "{answers:?}"
    );
    assert!(answers[3].1.contains("not available"), "{answers:?}");
    assert!(answers[4].1.contains("not available"), "{answers:?}");
    assert!(answers[5].1.contains("not valid JSON"), "{answers:?}");
    assert_eq!(answers[0].0, "call_0_todo_create");
    // The MCP names were offered under valid function names, destructive ones withheld.
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        offered.contains(&"todo_create") && !offered.contains(&"todo_delete"),
        "{offered:?}"
    );
    // Retry-After: 1 was honoured between the 429 and the retry.
    let arrivals = llm.arrivals();
    assert!(
        arrivals[2] - arrivals[1] >= Duration::from_millis(950),
        "{:?}",
        arrivals[2] - arrivals[1]
    );
    // The repair turn quoted the problem.
    let repair = requests[6]["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap();
    assert!(repair.contains("no JSON object"), "{repair}");
    // The system prompt carried the persona and its preferred modules.
    let system = requests[0]["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("Du bist Anna") && system.contains("todo (60%), mood (40%)"),
        "{system}"
    );

    // Ratings with their evidence; the tick record.
    let feedback = store.tick_ratings(summary.tick_id).await.unwrap();
    let todo = feedback.iter().find(|f| f.module == "todo").unwrap();
    // The evidence is what reached the product: the one todo.create (the repeat was not
    // sent, the malformed todo.list never left the runner).
    assert_eq!((todo.rating, todo.evidence_calls, todo.evidence_errors), (4, 1, 0));
    assert_eq!(todo.evidence_rating, Some(5), "what the evidence alone gives");
    assert_eq!(feedback.iter().find(|f| f.module == "mood").unwrap().rating, 5);
    assert_eq!(
        summary.tokens_in,
        100 * 2 + 50 * 3,
        "two tool turns, the final text, two rating answers"
    );
    let persona_after = store.get_persona(DEFAULT_TENANT, persona.id).await.unwrap().unwrap();
    assert!(persona_after.last_active_at.is_some());
    let counts = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!(counts.interactions, 6, "one action_taken interaction per call");
}

async fn an_invalid_repair_records_no_rating(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("mood_log", r#"{"score": 2}"#)])),
        Step::Reply(text("ok")),
        Step::Reply(text("5/5")),
        Step::Reply(text(r#"{"ratings": [{"module": "mood", "rating": 9, "note": "x"}]}"#)),
    ])
    .await;
    let (config, env) = llm_config(&gateway, &llm);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok);
    assert_eq!(summary.rating_status, Some(RatingStatus::Invalid));
    assert!(summary.ratings.is_empty(), "never a made-up rating");
    assert_eq!(store.row_counts(DEFAULT_TENANT).await.unwrap().feedback, 0);
    assert_eq!(llm.requests().len(), 4, "play, play, rating, one repair");
}

/// A tick whose calls drift from the persona flags its user at the tick's end, and the
/// rescore that looks for a better persona (after the end's commit) points to one.
async fn a_drifting_tick_flags_its_user_and_suggests_a_better_persona(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let anna = common::seed_chaotic_anna(&store).await;
    let moody: PersonaSpec = serde_json::from_value(json!({
        "name": "Moritz Mood",
        "email": "persona.moritz@mana.test",
        "archetype": "journaler",
        "systemPrompt": "Du bist Moritz und schreibst jeden Abend auf, wie es dir geht.",
        "moduleMix": {"mood": 1.0},
        "tickCadence": "daily"
    }))
    .unwrap();
    let moritz = store.upsert_persona(DEFAULT_TENANT, &moody, "UTC").await.unwrap().0;
    let gateway = TestGateway::start().await;
    let moods: Vec<String> = (1..=5).map(|n| format!(r#"{{"score": {n}}}"#)).collect();
    let calls: Vec<(&str, &str)> = moods.iter().map(|m| ("mood_log", m.as_str())).collect();
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&calls)),
        Step::Reply(text("Genug für heute.")),
        Step::Reply(text(r#"{"ratings": [{"module": "mood", "rating": 4, "note": "ok"}]}"#)),
    ])
    .await;
    let (config, env) = llm_config(&gateway, &llm);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &anna).await;
    assert_eq!(
        (summary.status, summary.calls_ok),
        (TickStatus::Ok, 5),
        "{:?}",
        summary.error
    );

    // Only mood against Anna's 60/40 todo/mood: 40, below the flag; Moritz fits fully.
    let profile = store
        .get_profile(DEFAULT_TENANT, anna.user_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(profile.total_interactions, 5);
    assert_eq!(profile.alignment_score, Some(40.0));
    assert!(profile.reassessment_recommended);
    assert_eq!(
        profile.status,
        persona_runner::model::profile::ProfileStatus::PendingReassessment
    );
    assert_eq!(profile.suggested_persona_id, Some(moritz.id));
}

/// The model hangs on the turn after a call: the call's answer is already committed while
/// the tick waits (a crash then would lose nothing), not held until the next call.
#[tokio::test]
async fn an_answered_call_is_saved_before_the_tick_waits_for_a_hanging_model() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("todo_create", r#"{"title": "Abgabe"}"#)])),
        Step::Hang,
    ])
    .await;
    let (config, env) = llm_config(&gateway, &llm);
    let engine = Arc::new(TickRunner::new(store.clone(), Arc::new(config), &env).unwrap());
    let running = tokio::spawn({
        let (engine, persona) = (engine.clone(), persona.clone());
        async move { common::tick_once(&engine, &persona).await }
    });
    let mut results = Vec::new();
    for _ in 0..100 {
        if llm.requests().len() == 2 {
            let ticks = store.list_ticks(DEFAULT_TENANT, &Default::default(), 1).await.unwrap();
            results = store
                .tick_actions(ticks[0].id)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.result)
                .collect();
            if !results.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(llm.requests().len(), 2, "the model was asked again and hangs");
    assert!(!running.is_finished(), "the tick is still waiting for the model");
    assert_eq!(
        results,
        [persona_runner::model::call::CallResult::Ok],
        "answered, and committed before the wait"
    );
    running.abort();
}

both_backends! {
    a_scripted_role_play_is_audited_deduped_and_rated,
    an_invalid_repair_records_no_rating,
    a_drifting_tick_flags_its_user_and_suggests_a_better_persona,
}

#[tokio::test]
async fn a_tick_cut_off_midway_keeps_its_calls_and_is_abandoned_after_its_lease() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[
            ("todo_create", r#"{"title": "Lernplan"}"#),
            ("mood_log", r#"{"score": 3}"#),
        ])),
        Step::Hang,
    ])
    .await;
    let (mut config, env) = llm_config(&gateway, &llm);
    config.tick.lease = persona_runner::time::HumanDuration(Duration::from_millis(900));
    let engine = Arc::new(TickRunner::new(store.clone(), Arc::new(config), &env).unwrap());
    let task = {
        let (engine, persona) = (engine.clone(), persona.clone());
        tokio::spawn(async move { common::tick_once(&engine, &persona).await })
    };
    // Wait until the model hangs on its second turn, then kill the tick.
    for _ in 0..100 {
        if llm.requests().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(llm.requests().len(), 2);
    task.abort();
    let _ = task.await;

    let counts = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!(
        (counts.ticks, counts.actions),
        (1, 2),
        "every completed call is recorded"
    );
    // The lease is no longer renewed; once it lapses the tick is abandoned.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        store.abandon_expired_ticks(persona_runner::time::now()).await.unwrap(),
        1
    );
    let next = common::seed_chaotic_anna(&store).await;
    let offline = TickRunner::new(store.clone(), Arc::new(gateway.config()), &gateway.env()).unwrap();
    assert_eq!(
        common::tick_once(&offline, &next).await.status,
        TickStatus::Ok,
        "the persona is free again"
    );
}

#[tokio::test]
async fn the_offline_driver_runs_any_schema_described_gateway_deterministically() {
    let mut sequences = Vec::new();
    for _ in 0..2 {
        // A fresh product each time: the driver reacts to what the product returns.
        let gateway = TestGateway::start().await;
        let db = TestDb::new(Backend::Sqlite).await;
        let store = db.store().await;
        let persona = common::seed_chaotic_anna(&store).await;
        let mut config = gateway.config();
        config.llm.seed = 42;
        let engine = TickRunner::new(store.clone(), Arc::new(config), &gateway.env()).unwrap();
        assert_eq!(engine.driver_name(), "offline", "no API key: the offline driver");
        let summary = common::tick_once(&engine, &persona).await;
        assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
        assert_eq!(summary.rating_status, Some(RatingStatus::Valid));
        let actions = store.tick_actions(summary.tick_id).await.unwrap();
        assert!((3..=8).contains(&actions.len()), "{}", actions.len());
        for action in &actions {
            let message = action.error_message.as_deref().unwrap_or_default();
            assert!(
                !message.contains("invalid arguments") && !message.contains("schema"),
                "{action:?}"
            );
        }
        assert!(
            actions.iter().all(|a| ["todo", "mood"].contains(&a.module.as_str())),
            "modules by the mix"
        );
        sequences.push(
            actions
                .into_iter()
                .map(|a| (a.tool_name, a.input_hash))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(sequences[0], sequences[1], "the same seed replays the same calls");
}

#[tokio::test]
async fn chaos_mode_sends_marked_edge_cases() {
    let gateway = TestGateway::start().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let mut config = gateway.config();
    config.llm.chaos = true;
    let engine = TickRunner::new(store.clone(), Arc::new(config), &gateway.env()).unwrap();
    let mut chaos_calls = 0;
    let mut rejected = 0;
    for _ in 0..4 {
        let summary = common::tick_once(&engine, &persona).await;
        for action in store.tick_actions(summary.tick_id).await.unwrap() {
            if action.chaos {
                chaos_calls += 1;
                rejected += usize::from(action.result.as_str() == "error");
            }
        }
    }
    assert!(chaos_calls > 0, "edge cases are sent and marked");
    assert!(rejected > 0, "the gateway rejects some of them");
}

#[tokio::test]
async fn a_rejected_token_means_one_fresh_login() {
    let gateway = TestGateway::start().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let engine = TickRunner::new(store.clone(), Arc::new(gateway.config()), &gateway.env()).unwrap();
    assert_eq!(common::tick_once(&engine, &persona).await.status, TickStatus::Ok);
    assert_eq!(gateway.gateway.logins(), 1);
    assert_eq!(common::tick_once(&engine, &persona).await.status, TickStatus::Ok);
    assert_eq!(gateway.gateway.logins(), 1, "the cached token serves the next tick");
    // The product rotates its keys: the cached token is now refused.
    gateway.gateway.rotate_signing_key();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert!(summary.calls_ok > 0);
    assert_eq!(gateway.gateway.logins(), 2, "exactly one fresh login");
}

#[tokio::test]
async fn a_tick_over_stdio() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let mut config = Config::default();
    config.auth.mode = persona_runner::config::AuthMode::None;
    config.mcp.transport = McpTransport::Stdio;
    config.mcp.command = common::stdio_gateway_command(ANNA);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &Env::new()).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    let actions = store.tick_actions(summary.tick_id).await.unwrap();
    assert!(!actions.is_empty());
    assert!(actions.iter().all(|a| a.input_hash.len() == 64));
}

#[tokio::test]
async fn an_unreachable_gateway_fails_the_tick_with_a_clear_error() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let mut config = Config::default();
    config.auth.login_url = "http://127.0.0.1:9/api/v1/auth/login".into();
    config.retry.max_attempts = 1;
    let engine = TickRunner::new(store.clone(), Arc::new(config), &Env::new()).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Failed);
    let error = summary.error.unwrap();
    assert!(error.contains(ANNA) && error.contains("cannot reach"), "{error}");
    let tick = store.get_tick(summary.tick_id).await.unwrap().unwrap();
    assert_eq!(tick.status, TickStatus::Failed);
}

#[tokio::test]
async fn a_tick_past_its_timeout_is_cut_and_recorded() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("mood_log", r#"{"score": 1}"#)])),
        Step::Hang,
    ])
    .await;
    let (mut config, env) = llm_config(&gateway, &llm);
    config.tick.tick_timeout = persona_runner::time::HumanDuration(Duration::from_millis(700));
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Timeout);
    assert!(summary.error.unwrap().contains("tick.tick_timeout"));
    assert_eq!(summary.calls_ok, 1, "the call made before the cut is kept");
    let stored = store.get_tick(summary.tick_id).await.unwrap().unwrap();
    assert_eq!(
        stored.status,
        TickStatus::Timeout,
        "recorded in the store, not only reported"
    );
    assert!(stored.finished_at.is_some());
}

#[tokio::test]
async fn a_dedup_window_of_a_day_spans_ticks() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let call = r#"{"title": "Wohnung putzen"}"#;
    let rating = r#"{"ratings": [{"module": "todo", "rating": 3, "note": "ok"}]}"#;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("todo_create", call)])),
        Step::Reply(text("ok")),
        Step::Reply(text(rating)),
        Step::Reply(tool_calls(&[("todo_create", call)])),
        Step::Reply(text("ok")),
        Step::Reply(text(rating)),
    ])
    .await;
    let (mut config, env) = llm_config(&gateway, &llm);
    config.tick.dedup_window =
        persona_runner::config::DedupWindow::Last(persona_runner::time::HumanDuration::from_secs(86_400));
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    assert_eq!(common::tick_once(&engine, &persona).await.calls_ok, 1);
    let second = common::tick_once(&engine, &persona).await;
    assert_eq!((second.calls_ok, second.calls_deduped), (0, 1));
    assert_eq!(gateway.gateway.calls().len(), 1, "the product saw the call once");
    let answers = tool_answers(&llm.requests()[4]);
    assert!(
        answers[0].1.contains("Wohnung putzen"),
        "the earlier result is replayed: {answers:?}"
    );
}

#[tokio::test]
async fn a_static_bearer_token_works_without_login() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let token = gateway
        .gateway
        .issue_token(&persona_runner::gateway::user_id_of(ANNA), ANNA);
    let mut config = gateway.config();
    config.auth.mode = persona_runner::config::AuthMode::Static;
    config.auth.login_url = "http://127.0.0.1:9/unused".into();
    let mut env = Env::new();
    env.insert("PERSONA_RUNNER_GATEWAY_TOKEN".into(), token);
    let engine = TickRunner::new(store.clone(), Arc::new(config.clone()), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert!(summary.calls_ok > 0);
    let err = TickRunner::new(store.clone(), Arc::new(config), &Env::new()).unwrap_err();
    assert!(err.to_string().contains("PERSONA_RUNNER_GATEWAY_TOKEN"), "{err}");
}

#[tokio::test]
async fn a_scripted_tick_over_stdio_records_the_right_hash() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[(
            "todo_create",
            r#"{"title": "Klausur anmelden", "due": "2026-12-01"}"#,
        )])),
        Step::Reply(text("ok")),
        Step::Reply(text(
            r#"{"ratings": [{"module": "todo", "rating": 4, "note": "schnell"}]}"#,
        )),
    ])
    .await;
    let mut config = Config::default();
    config.auth.mode = persona_runner::config::AuthMode::None;
    config.mcp.transport = McpTransport::Stdio;
    config.mcp.command = common::stdio_gateway_command(ANNA);
    config.llm.provider = LlmProvider::Openai;
    config.llm.base_url = llm.base_url();
    config.llm.api_key_env = "TEST_LLM_KEY".into();
    let env: Env = [("TEST_LLM_KEY".to_string(), LLM_KEY.to_string())]
        .into_iter()
        .collect();
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert_eq!(summary.rating_status, Some(RatingStatus::Valid));
    let actions = store.tick_actions(summary.tick_id).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].result, persona_runner::model::call::CallResult::Ok);
    assert_eq!(
        actions[0].input_hash,
        sha256_hex("todo.create\n{\"due\":\"2026-12-01\",\"title\":\"Klausur anmelden\"}")
    );
}

#[tokio::test]
async fn secrets_a_product_echoes_are_neither_stored_nor_shown_to_the_model() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    const ADMIN: &str = "admin-token-echoed-by-the-product";
    const JWT: &str = "jwt-secret-echoed-by-the-product";
    const DB_PASSWORD: &str = "db-password-echoed";
    let seed = persona_runner::config::Secret::new(common::TEST_SEED);
    let password = persona_runner::auth::derive_password(&seed, ANNA).expose().to_string();
    let secrets = [LLM_KEY, ADMIN, JWT, DB_PASSWORD, common::TEST_SEED, password.as_str()];
    // The product echoes whatever it gets: the title comes back in the tool result.
    let title = secrets.join(" ");
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("todo_create", &json!({ "title": title }).to_string())])),
        Step::Reply(text("ok")),
        Step::Reply(text(r#"{"ratings": [{"module": "todo", "rating": 4, "note": "ok"}]}"#)),
    ])
    .await;
    let mut config = gateway.config();
    config.llm.provider = LlmProvider::Openai;
    config.llm.base_url = llm.base_url();
    config.llm.api_key_env = "TEST_LLM_KEY".into();
    config.database.password_env = Some("TEST_DB_PASSWORD".into());
    let env: Env = [
        ("TEST_LLM_KEY", LLM_KEY),
        ("PERSONA_RUNNER_ADMIN_TOKEN", ADMIN),
        ("PERSONA_RUNNER_JWT_SECRET", JWT),
        ("TEST_DB_PASSWORD", DB_PASSWORD),
        ("TEST_SEED_SECRET", common::TEST_SEED),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    let actions = store.tick_calls(summary.tick_id).await.unwrap();
    assert_eq!(actions.len(), 1);
    let output = actions[0].output.clone().unwrap_or_default();
    assert!(output.contains("[redacted]"), "the echo came back: {output}");
    // What the model got back for the call (the tool message) holds none of them.
    let tool_results: Vec<String> = llm
        .requests()
        .iter()
        .flat_map(|r| r["messages"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].to_string())
        .collect();
    assert!(!tool_results.is_empty());
    for secret in secrets {
        for stored in [&output, &actions[0].arguments.clone().unwrap_or_default()] {
            assert!(!stored.contains(secret), "{secret} stored: {stored}");
        }
        for shown in &tool_results {
            assert!(!shown.contains(secret), "{secret} shown to the model: {shown}");
        }
    }
}

#[tokio::test]
async fn a_persona_over_its_daily_token_cap_is_skipped_without_an_llm_request() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    // One tick: a turn without tools, then the rating (each reply costs tokens).
    let llm = ScriptedLlm::start(vec![
        Step::Reply(text("Heute nichts zu tun.")),
        Step::Reply(text(r#"{"ratings": []}"#)),
    ])
    .await;
    let mut config = gateway.config();
    config.llm.provider = LlmProvider::Openai;
    config.llm.base_url = llm.base_url();
    config.llm.api_key_env = "TEST_LLM_KEY".into();
    config.budget.tokens_per_day_per_persona = 50;
    let mut env = gateway.env();
    env.insert("TEST_LLM_KEY".into(), LLM_KEY.into());
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let first = common::tick_once(&engine, &persona).await;
    assert_ne!(first.status, TickStatus::Skipped, "{:?}", first.error);
    let spent = first.tokens_in + first.tokens_out;
    assert!(spent >= 50, "the first tick spent the cap: {spent}");
    let requests = llm.requests().len();

    let second = common::tick_once(&engine, &persona).await;
    assert_eq!(second.status, TickStatus::Skipped);
    let reason = second.error.clone().unwrap();
    assert!(
        reason.contains("spend cap") && reason.contains("budget.tokens_per_day_per_persona"),
        "{reason}"
    );
    assert_eq!(llm.requests().len(), requests, "no LLM request once the cap is spent");
    let recorded = store.get_tick(second.tick_id).await.unwrap().unwrap();
    assert_eq!(recorded.status, TickStatus::Skipped);
}
