//! What small local models do, as a scripted endpoint plays it (the recorded bodies of a
//! real llama.cpp server are replayed in `llm`'s unit tests, and `tests/real_llm.rs` runs
//! the real thing): calls written as text are recovered and audited as such, a persona
//! that only talks is nudged once and its tick ends `idle` (no evidence, no rating),
//! ratings are found in fences, structured output steps down once when refused, and
//! `llm.extra_body` reaches every request. The simulator's fitness counts all of it.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::sync::Arc;

use common::{Backend, ScriptedLlm, Step, TestDb, TestGateway, text, tool_calls};
use persona_runner::config::{Config, Env, TextToolCalls};
use persona_runner::model::call::CallResult;
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::model::tick::{RatingStatus, TickStatus};
use persona_runner::store::RatingScope;
use persona_runner::tick::TickRunner;
use serde_json::{Value, json};

fn config(gateway: &TestGateway, llm: &ScriptedLlm) -> (Config, Env) {
    common::llm_config(gateway, llm, "qwen-small", "sk-local")
}

/// What llama.cpp answers when a small model writes its call into the text.
fn fenced_call(name: &str, arguments: Value) -> Value {
    let fence = format!(
        "```json\n{}\n```",
        serde_json::to_string_pretty(&json!({"name": name, "arguments": arguments})).unwrap()
    );
    let mut body = text(&fence);
    body["timings"] = json!({"prompt_n": 200, "predicted_n": 40});
    body["system_fingerprint"] = json!("b0-unknown");
    body
}

fn window() -> RatingScope {
    let now = chrono::Utc::now();
    RatingScope {
        tenant: DEFAULT_TENANT,
        from: now - chrono::Duration::hours(1),
        until: now + chrono::Duration::hours(1),
        module: None,
        persona_id: None,
        archetype: None,
    }
}

async fn a_call_written_as_text_is_recovered_audited_and_rated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(fenced_call("todo_create", json!({"title": "Laborbericht abgeben", "due": "2026-12-08"}))),
        Step::Reply(text("Ich habe den Laborbericht eingetragen.")),
        Step::Reply(text(
            "Here is my rating:\n```json\n{\"ratings\": [{\"module\": \"todo\", \"rating\": 4, \"note\": \"Schnell.\"}]}\n```",
        )),
    ])
    .await;
    let (mut config, env) = config(&gateway, &llm);
    config.llm.extra_body = serde_json::from_value(json!({"top_k": 20, "seed": 42})).unwrap();
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "{:?}", summary.error);
    assert_eq!(summary.calls_ok, 1);
    assert_eq!(summary.rating_status, Some(RatingStatus::Valid));

    // The recovered call ran like any call, and the audit says where it came from.
    let calls = store.tick_calls(summary.tick_id).await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].tool_name.as_str(), calls[0].result),
        ("todo.create", CallResult::Ok)
    );
    assert!(calls[0].recovered && calls[0].sent);
    assert_eq!(gateway.gateway.calls().len(), 1, "the product got the call");
    // The model then saw its call made the proper way, and the product's answer.
    let requests = llm.requests();
    let history = requests[1]["messages"].as_array().unwrap();
    let assistant = &history[2];
    assert_eq!(assistant["tool_calls"][0]["id"], "recovered_1_0");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], "todo_create");
    assert!(assistant["content"].is_null(), "{assistant}");
    assert_eq!(history[3]["role"], "tool");
    assert!(history[3]["content"].as_str().unwrap().contains("Laborbericht"));
    // Every request carried the extras; the rating asked for structured output.
    assert!(
        requests.iter().all(|r| r["top_k"] == 20 && r["seed"] == 42),
        "{requests:?}"
    );
    assert_eq!(requests[2]["response_format"]["type"], "json_schema");
    assert!(requests[0].get("response_format").is_none());
    // The transcript marks the turn and the call as recovered.
    let transcript = store.tick_transcript(summary.tick_id).await.unwrap().unwrap();
    let entries = transcript.entries.as_array().unwrap();
    let turn = entries.iter().find(|e| e["step"] == "assistant").unwrap();
    assert_eq!(turn["recovered"], true);
    assert!(
        turn["content"].as_str().unwrap().contains("```json"),
        "what the model wrote is kept"
    );
    let call = entries.iter().find(|e| e["step"] == "call").unwrap();
    assert_eq!(call["recovered"], true);
    // The opening asked the persona to act, naming a tool of its main module.
    let opening = requests[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        opening.contains("todo_create") && opening.contains("tool call"),
        "{opening}"
    );

    let fitness = store.simulator_fitness(&window()).await.unwrap();
    assert_eq!(fitness.len(), 1);
    assert_eq!(
        (
            fitness[0].ticks,
            fitness[0].idle,
            fitness[0].calls,
            fitness[0].recovered
        ),
        (1, 0, 1, 1)
    );
    assert_eq!((fitness[0].ratings_valid_first, fitness[0].ratings_invalid), (1, 0));
}

async fn a_persona_that_only_talks_is_nudged_once_and_its_tick_ends_idle(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(text("Ich bin Anna Keller und benutze gerade die App.")),
        Step::Reply(text("Ich schaue mich nur um.")),
    ])
    .await;
    let (config, env) = config(&gateway, &llm);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Idle);
    assert_eq!(
        summary.error.as_deref(),
        Some("the model answered without using the app")
    );
    // One nudge, in character, naming a tool; then no rating was asked for.
    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "the opening, one nudge, and no rating request");
    let nudge = requests[1]["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(nudge["role"], "user");
    assert!(nudge["content"].as_str().unwrap().contains("todo_create"), "{nudge}");
    assert_eq!(summary.rating_status, Some(RatingStatus::Skipped));
    assert!(store.tick_ratings(summary.tick_id).await.unwrap().is_empty());
    let stored = store.get_tick(summary.tick_id).await.unwrap().unwrap();
    assert_eq!(stored.status, TickStatus::Idle);
    let transcript = store.tick_transcript(summary.tick_id).await.unwrap().unwrap();
    let steps: Vec<&str> = transcript
        .entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"nudge"), "{steps:?}");
    assert_eq!(steps.last(), Some(&"end"));

    // Not product evidence: no module average moves; the simulator's fitness shows it.
    let report = persona_runner::feedback::report(&store, &window(), &Default::default())
        .await
        .unwrap();
    assert_eq!(report.ratings, 0);
    assert_eq!((report.fitness[0].ticks, report.fitness[0].idle), (1, 1));
    assert!((report.fitness[0].idle_rate - 1.0).abs() < 1e-9);
}

async fn structured_output_steps_down_once_when_the_endpoint_refuses_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let rating = r#"{"ratings": [{"module": "todo", "rating": 3, "note": "ok"}]}"#;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("todo_create", r#"{"title": "A"}"#)])),
        Step::Reply(text("Fertig.")),
        Step::Refuse(400, "'response_format' of type json_schema is not supported"),
        Step::Reply(text(rating)),
        Step::Reply(tool_calls(&[("todo_create", r#"{"title": "B"}"#)])),
        Step::Reply(text("Fertig.")),
        Step::Reply(text(rating)),
    ])
    .await;
    let (config, env) = config(&gateway, &llm);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let first = common::tick_once(&engine, &persona).await;
    assert_eq!(
        (first.status, first.rating_status),
        (TickStatus::Ok, Some(RatingStatus::Valid))
    );
    let second = common::tick_once(&engine, &persona).await;
    assert_eq!(second.rating_status, Some(RatingStatus::Valid));
    let formats: Vec<Value> = llm
        .requests()
        .iter()
        .map(|r| r.get("response_format").map_or(Value::Null, |f| f["type"].clone()))
        .collect();
    assert_eq!(
        formats,
        [
            Value::Null,
            Value::Null,
            json!("json_schema"),
            json!("json_object"),
            Value::Null,
            Value::Null,
            json!("json_object"),
        ],
        "stepped down once, and stays down for the process"
    );
}

#[tokio::test]
async fn calls_written_as_text_are_left_alone_when_recovery_is_off() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![Step::Reply(fenced_call("todo_create", json!({"title": "x"})))]).await;
    let (mut config, env) = config(&gateway, &llm);
    config.llm.text_tool_calls = TextToolCalls::Off;
    config.tick.nudges = 0;
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Idle);
    assert!(gateway.gateway.calls().is_empty());
    assert_eq!(llm.requests().len(), 1, "no nudge with tick.nudges = 0");
}

#[tokio::test]
async fn a_call_to_a_tool_not_offered_is_counted_against_the_simulator() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[
            ("todo_frobnicate", "{}"),
            ("todo_create", r#"{"title": 7}"#),
        ])),
        Step::Reply(text("Fertig.")),
        Step::Reply(text(r#"{"ratings": [{"module": "todo", "rating": 2, "note": "hm"}]}"#)),
    ])
    .await;
    let (config, env) = config(&gateway, &llm);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.status, TickStatus::Ok, "it tried: not idle");
    let fitness = store.simulator_fitness(&window()).await.unwrap();
    assert_eq!((fitness[0].unknown_tools, fitness[0].schema_refused), (1, 1));
}

/// What Qwen2.5-Coder-0.5B did under grammar decoding: its note ran on, repeating itself,
/// until `max_tokens` cut the answer. The rating comes first (the schema puts `reason`
/// last), so it counts; the note is kept, marked where it was cut.
#[tokio::test]
async fn a_rating_whose_note_ran_into_the_token_limit_keeps_its_rating() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = common::seed_chaotic_anna(&store).await;
    let gateway = TestGateway::start().await;
    let looping = "The list was slow. ".repeat(30);
    let mut cut = text(&format!(
        r#"{{"ratings": [{{"module": "todo", "rating": 2, "reason": "{looping}"#
    ));
    cut["choices"][0]["finish_reason"] = json!("length");
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("todo_create", r#"{"title": "Einkaufen"}"#)])),
        Step::Reply(text("Fertig.")),
        Step::Reply(cut),
    ])
    .await;
    let (config, env) = config(&gateway, &llm);
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let summary = common::tick_once(&engine, &persona).await;
    assert_eq!(summary.rating_status, Some(RatingStatus::Valid), "{summary:?}");
    assert_eq!(llm.requests().len(), 3, "no repair turn was needed");
    let ratings = store.tick_ratings(summary.tick_id).await.unwrap();
    assert_eq!(ratings.len(), 1);
    assert_eq!(ratings[0].rating, 2);
    let note = ratings[0].notes.as_deref().unwrap();
    assert!(note.starts_with("The list was slow.") && note.ends_with('…'), "{note}");
    let transcript = store.tick_transcript(summary.tick_id).await.unwrap().unwrap();
    let answer = transcript
        .entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["step"] == "rating_answer")
        .unwrap();
    assert_eq!(answer["cut"], true);
    // The schema asked for exactly one rating, `reason` after `rating`.
    let schema = &llm.requests()[2]["response_format"]["json_schema"]["schema"]["properties"]["ratings"];
    assert_eq!(
        (schema["minItems"].as_u64(), schema["maxItems"].as_u64()),
        (Some(1), Some(1))
    );
}

both_backends! {
    a_call_written_as_text_is_recovered_audited_and_rated,
    a_persona_that_only_talks_is_nudged_once_and_its_tick_ends_idle,
    structured_output_steps_down_once_when_the_endpoint_refuses_it,
}
