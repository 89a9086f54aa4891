//! Simulator versions and spend, with ticks played by the scripted LLM against the real
//! sample gateway and read through the real sidecar: ticks rated by one model and then
//! another are not compared, so a model switch shows as a simulator change on the report
//! and the dashboard, never as a product regression; today's spend shows against the cap.

mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use chrono::{SecondsFormat, Utc};
use common::app::{AppOptions, Auth, TestApp, spawn_app, spawn_app_with};
use common::{Backend, ScriptedLlm, Step, text, tool_calls};
use persona_runner::model::persona::{DEFAULT_TENANT, Persona};
use persona_runner::model::tick::{TickStatus, Trigger};
use persona_runner::tick::TickRequest;
use serde_json::json;

const TICKS: usize = 5;

/// `TICKS` ticks of `persona` played by `model`, each rating the todo module `rating`.
async fn ticks_by(app: &TestApp, persona: &Persona, model: &str, rating: u8) {
    let mut steps = Vec::new();
    for _ in 0..TICKS {
        steps.push(Step::Reply(tool_calls(&[("todo_list", "{}")])));
        steps.push(Step::Reply(text("Fertig für heute.")));
        steps.push(Step::Reply(text(&format!(
            r#"{{"ratings": [{{"module": "todo", "rating": {rating}, "note": "so war es"}}]}}"#
        ))));
    }
    let llm = ScriptedLlm::start(steps).await;
    let engine = common::scripted_engine(&app.store, &app.gateway, &llm, model);
    for _ in 0..TICKS {
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
    }
}

#[tokio::test]
async fn switching_the_model_shows_a_simulator_change_and_no_regression() {
    let app = spawn_app(Backend::Sqlite).await;
    let persona = common::seed_anna(&app.store).await;
    ticks_by(&app, &persona, "model-a", 5).await;
    let switch = Utc::now();
    ticks_by(&app, &persona, "model-b", 1).await;

    // The window after the switch against the one before it: a drop of 4 on 5 ratings
    // each, far past the regression threshold, but by another simulator.
    let since = switch.to_rfc3339_opts(SecondsFormat::Micros, true);
    let until = (switch + chrono::Duration::seconds(120)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let (status, report) = app
        .call(
            "GET",
            &format!("/api/v1/admin/feedback?since={since}&until={until}"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let todo = &report["modules"][0];
    assert_eq!(todo["key"], "todo", "{report}");
    assert_eq!(todo["count"], TICKS);
    assert_eq!(todo["average"], 1.0);
    assert_eq!(todo["simulator_changed"], true, "{todo}");
    assert_eq!(todo["regression"], false, "{todo}");
    assert_eq!(todo["change"], serde_json::Value::Null, "not compared: {todo}");
    assert_eq!(report["regressions"], json!([]), "{report}");
    let notes: Vec<&str> = report["simulator_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["note"].as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("model-a") && n.contains("model-b") && n.contains("not compared")),
        "{notes:?}"
    );
    // The window's simulator, with its leniency: every call succeeded (the evidence gives
    // 5), yet model-b rated 1.
    let simulators = report["simulators"].as_array().unwrap();
    assert_eq!(simulators.len(), 1, "{simulators:?}");
    assert!(simulators[0]["simulator"].as_str().unwrap().contains("model-b"));
    assert_eq!(simulators[0]["leniency"], -4.0, "{simulators:?}");

    // The dashboard marks the change on the chart, says so, and lists both simulators.
    let (status, page) = app.call("GET", "/", Auth::Admin, None).await;
    assert_eq!(status, 200);
    let page = page.as_str().unwrap();
    assert!(
        page.contains("<line class=\"simulator-change\""),
        "the chart marks the change"
    );
    assert!(page.contains("not compared"), "the note is shown");
    assert_eq!(
        page.matches("<tr class=\"simulator\">").count(),
        2,
        "both rated this week"
    );
    assert!(page.contains("-4.00 harsh"), "model-b's harshness is shown");
    app.stop().await;
}

#[tokio::test]
async fn todays_spend_shows_against_the_cap_in_metrics_and_on_the_dashboard() {
    let app = spawn_app_with(
        Backend::Sqlite,
        AppOptions {
            extra_toml:
                "[budget]\ntokens_per_day = 100000\nprice_in_per_1k = 1.0\nprice_out_per_1k = 2.0\ncurrency = \"EUR\"\n"
                    .into(),
            ..AppOptions::default()
        },
    )
    .await;
    let persona = common::seed_anna(&app.store).await;
    ticks_by(&app, &persona, "model-a", 4).await;
    // Each scripted tick: three requests of 100/20, 50/10 and 50/10 tokens.
    let (tokens_in, tokens_out) = (TICKS as i64 * 200, TICKS as i64 * 40);

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        format!("persona_runner_llm_tokens_today{{direction=\"in\"}} {tokens_in}"),
        format!("persona_runner_llm_tokens_today{{direction=\"out\"}} {tokens_out}"),
        "persona_runner_llm_budget_tokens_per_day 100000".to_string(),
        "persona_runner_llm_cost_today 1.4".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from:\n{metrics}");
    }
    let (_, page) = app.call("GET", "/", Auth::Admin, None).await;
    let page = page.as_str().unwrap();
    let spent = tokens_in + tokens_out;
    assert!(
        page.contains(&format!(
            "<b class=\"\">{spent}</b><span class=\"muted\">LLM tokens today (UTC), of 100000 (1%) · 1.40 EUR"
        )),
        "the dashboard shows today's spend: {page}"
    );
    // The persona's row leads to its latest tick's story.
    let filter = persona_runner::store::TickFilter {
        persona_id: Some(persona.id),
        ..Default::default()
    };
    let latest = app.store.list_ticks(DEFAULT_TENANT, &filter, 1).await.unwrap();
    assert!(
        page.contains(&format!(
            "<a href=\"/ticks/{}\" title=\"the latest tick\">",
            latest[0].id
        )),
        "the persona row links its latest tick"
    );
    app.stop().await;
}
