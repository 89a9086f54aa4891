//! The role-play against a real model: llama.cpp's own server with a small Qwen2.5-Coder
//! (`../shared/tools/real-llm/`), the sample gateway, and personas of the shipped
//! consumer catalog, at temperature 0 with a fixed seed (repeatable on one machine).
//!
//! Ignored by the plain test command (it needs the model server); `.ci/real-llm` installs
//! and starts the server, sets `PERSONA_RUNNER_TEST_LLM_URL`, and runs it with
//! `cargo nextest run --run-ignored only --test real_llm`.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{Backend, TestDb, TestGateway};
use persona_runner::catalog::Rules;
use persona_runner::config::LlmProvider;
use persona_runner::model::call::CallResult;
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::model::tick::{RatingStatus, TickStatus, Trigger};
use persona_runner::tick::{TickRequest, TickRunner};
use serde_json::json;

/// Personas of the consumer catalog ticked, one of each kind of life.
const PERSONAS: [&str; 4] = [
    "persona.anna@mana.test",
    "persona.katharina@mana.test",
    "persona.felix@mana.test",
    "persona.renate@mana.test",
];

#[tokio::test]
#[ignore = "needs a llama.cpp server: run by .ci/real-llm"]
async fn a_small_real_model_uses_the_app_and_rates_it() {
    let url = std::env::var("PERSONA_RUNNER_TEST_LLM_URL")
        .expect("PERSONA_RUNNER_TEST_LLM_URL names the llama.cpp server's /v1 (see .ci/real-llm)");
    let model = std::env::var("PERSONA_RUNNER_TEST_LLM_MODEL").unwrap_or_else(|_| "qwen2.5-coder-0.5b-instruct".into());
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog/consumer-app.json");
    let gateway = TestGateway::start().await;
    let mut config = gateway.config();
    persona_runner::catalog::seed_files(&store, DEFAULT_TENANT, &[catalog], &Rules::from(&config.catalog), "UTC")
        .await
        .unwrap();
    config.llm.provider = LlmProvider::Openai;
    config.llm.base_url = url;
    config.llm.model = model;
    config.llm.api_key_env = "TEST_LLM_KEY".into();
    config.llm.temperature = 0.0;
    config.llm.max_tokens = 400;
    config.llm.request_timeout = persona_runner::time::HumanDuration::from_secs(600);
    config.llm.extra_body = serde_json::from_value(json!({"seed": 42})).unwrap();
    config.tick.tick_timeout = persona_runner::time::HumanDuration::from_secs(1200);
    config.tick.max_turns = 6;
    let mut env = gateway.env();
    env.insert("TEST_LLM_KEY".into(), "sk-local".into());
    let engine = TickRunner::new(store.clone(), Arc::new(config), &env).unwrap();
    let mut report = Vec::new();
    for email in PERSONAS {
        let persona = store.find_persona(DEFAULT_TENANT, email).await.unwrap().unwrap();
        let started = std::time::Instant::now();
        let request = TickRequest {
            persona,
            trigger: Trigger::Cli,
            scheduled_for: None,
            attempt: 1,
            goal: None,
            space: Default::default(),
        };
        let summary = engine.run(&request, &|_| {}).await.unwrap();
        let calls = store.tick_calls(summary.tick_id).await.unwrap();
        let recovered = calls.iter().filter(|c| c.recovered).count();
        println!(
            "{email}: {} · {} calls ({} ok, {recovered} recovered from text) · rating {:?} · {:.0} s",
            summary.status,
            calls.len(),
            summary.calls_ok,
            summary.rating_status,
            started.elapsed().as_secs_f64()
        );
        // The rating answers as the model wrote them, for whoever reads a failed run.
        let transcript = store.tick_transcript(summary.tick_id).await.unwrap().unwrap();
        for entry in transcript.entries.as_array().unwrap() {
            if entry["step"] == "rating_answer" {
                let content = entry["content"].as_str().unwrap_or_default();
                let head: String = content.chars().take(300).collect();
                println!(
                    "  rating answer {} (cut {}): {head} · problem: {}",
                    entry["attempt"], entry["cut"], entry["problem"]
                );
            }
        }
        report.push((email, summary, calls));
    }
    for (email, summary, calls) in &report {
        assert_ne!(summary.status, TickStatus::Idle, "{email} never used the app");
        assert_eq!(summary.status, TickStatus::Ok, "{email}: {:?}", summary.error);
        assert!(
            calls.iter().any(|c| c.result == CallResult::Ok && c.sent),
            "{email} made no call that the product answered: {calls:?}"
        );
        // A rating the model botched even after the repair is recorded as such, never
        // filled in: Invalid carries no ratings.
        if summary.rating_status != Some(RatingStatus::Valid) {
            assert_eq!(
                summary.rating_status,
                Some(RatingStatus::Invalid),
                "{email}: {summary:?}"
            );
            assert!(summary.ratings.is_empty(), "{email}: {summary:?}");
        }
    }
    // The real-models issue's bar is 8 of 10 valid ratings on the 1.5B model. The 0.5B
    // model CI runs botched ratings by running on in a note until max_tokens (2 of 4 on
    // the CI machine); with the rating before the note and a cut answer completed, it rated
    // 4 of 4 here. One in four may still fail on another machine, not more.
    let valid = report
        .iter()
        .filter(|(_, summary, _)| summary.rating_status == Some(RatingStatus::Valid) && !summary.ratings.is_empty())
        .count();
    assert!(
        valid + 1 >= PERSONAS.len(),
        "{valid} of {} ticks ended with valid ratings",
        PERSONAS.len()
    );
    let produced = gateway.gateway.calls().len();
    assert!(produced >= PERSONAS.len(), "the product received {produced} calls");
}
