//! Goals checked: trials as real check ticks against the real sample gateway (its lab
//! tools give a goal that always fails and one that fails every other time), the offline
//! driver or a scripted judge, verdicts stored on SQLite and PostgreSQL, and the real
//! binary's exit codes and JUnit file.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::sync::Arc;
use std::time::Duration;

use common::app::{Auth, spawn_app};
use common::{Backend, ScriptedLlm, Step, TEST_SEED, TestDb, TestGateway, text};
use persona_runner::check::{Checker, Selection};
use persona_runner::model::call::CallKind;
use persona_runner::model::goal::{Judgement, Outcome, summarize};
use persona_runner::model::persona::{DEFAULT_TENANT, Persona};
use persona_runner::model::tick::Trigger;
use persona_runner::store::Store;
use persona_runner::tick::TickRunner;
use serde_json::{Value, json};

/// A persona whose goals cover every way a trial can go. Her own play (after the goal's
/// tools) stays in `notes`, so nothing she does deletes the to-do a state check reads.
fn goals() -> Value {
    json!([
        {"name": "add-a-todo", "task": "Schreib dir die Abgabe für Statistik auf.",
         "checks": [{"called": "todo.create"}, {"not_called": "todo.delete"}, {"max_calls": 20},
                    {"state": {"tool": "todo.list", "arguments": {"status": "all"}, "pointer": "/0/title", "matches": "."}}]},
        {"name": "file-taxes", "task": "Reich deine Steuererklärung ein.", "checks": [{"called": "lab.fail"}]},
        {"name": "sync", "task": "Synchronisiere deine Daten.", "checks": [{"called": "lab.flaky"}]},
        {"name": "taxes-in-list", "task": "Schau, ob die Steuer auf der Liste steht.",
         "checks": [{"state": {"tool": "todo.list", "contains": "Steuererklärung"}}]},
        {"name": "judged", "task": "Schreib dir die Abgabe auf.", "checks": [{"called": "todo.create"}],
         "criteria": ["A to-do for the deadline was created."]}
    ])
}

async fn seed(store: &Store) -> Persona {
    let spec = serde_json::from_value(json!({
        "name": "Anna Keller",
        "email": "persona.anna@mana.test",
        "archetype": "adhd-student",
        "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und vergisst ständig Abgaben.",
        "moduleMix": {"notes": 1},
        "tickCadence": "daily",
        "goals": goals(),
    }))
    .unwrap();
    store.upsert_persona(DEFAULT_TENANT, &spec, "UTC").await.unwrap().0
}

fn selection(goals: &[&str], trials: u32) -> Selection {
    Selection {
        goals: goals.iter().map(|g| g.to_string()).collect(),
        personas: Vec::new(),
        trials,
        min_pass: 0,
    }
}

async fn goals_pass_fail_flake_and_read_state(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let persona = seed(&store).await;
    let gateway = TestGateway::start_with(|o| o.lab = true).await;
    let mut config = gateway.config();
    // Twenty ticks in a row: the per-persona tool-call rate limit would pace them.
    config.mcp.tool_calls_per_minute_per_persona = 0;
    let config = Arc::new(config);
    let engine = Arc::new(TickRunner::new(store.clone(), config.clone(), &gateway.env()).unwrap());
    let checker = Arc::new(Checker::new(engine, store.clone(), config, &gateway.env()).unwrap());
    let wanted = selection(&["add-a-todo", "file-taxes", "sync", "taxes-in-list", "judged"], 4);
    let planned = checker.plan(DEFAULT_TENANT, &wanted).await.unwrap();
    let run = checker.open_run(DEFAULT_TENANT, Trigger::Cli, &wanted).await.unwrap();
    let verdicts = checker
        .run(&run, planned, Arc::new(|_| {}), Default::default())
        .await
        .unwrap();
    assert_eq!(verdicts.len(), 20, "five goals, four trials each");

    let summaries = summarize(&verdicts, 0);
    let of = |goal: &str| summaries.iter().find(|s| s.goal == goal).unwrap();
    let todo = of("add-a-todo");
    assert!(todo.holds && todo.pass_all && !todo.flaky, "{todo:?}");
    let taxes = of("file-taxes");
    assert_eq!(taxes.passed, 0);
    assert!(!taxes.holds);
    let unmet = &taxes.shortfalls[0].unmet;
    assert!(
        unmet
            .iter()
            .any(|u| u.contains("lab.fail") && u.contains("0 ok call(s)")),
        "{unmet:?}"
    );
    let sync = of("sync");
    assert_eq!(
        (sync.passed, sync.flaky, sync.holds, sync.pass_all),
        (2, true, false, false),
        "{sync:?}"
    );
    assert!((sync.pass_at_1 - 0.5).abs() < 1e-9);
    let state = of("taxes-in-list");
    assert_eq!(state.passed, 0);
    assert!(
        state.shortfalls[0]
            .unmet
            .iter()
            .any(|u| u.contains("answered without \"Steuererklärung\"")),
        "{:?}",
        state.shortfalls[0].unmet
    );
    // No judge: a criterion is not judged, and that is never a pass.
    let judged = of("judged");
    assert_eq!(judged.passed, 0);
    assert!(
        verdicts
            .iter()
            .filter(|v| v.goal == "judged")
            .all(|v| v.outcome == Outcome::Unjudged
                && v.criteria[0].judgement == Judgement::NotJudged
                && v.judge.is_none())
    );

    // Every trial is a recorded tick with trigger `check`; the state read is the
    // runner's own `check` row, not the persona's.
    for verdict in &verdicts {
        let tick = store.get_tick(verdict.tick_id).await.unwrap().unwrap();
        assert_eq!(tick.trigger, Trigger::Check);
        assert_eq!(verdict.persona_id, persona.id);
    }
    let todo_tick = verdicts.iter().find(|v| v.goal == "add-a-todo").unwrap().tick_id;
    let calls = store.tick_calls(todo_tick).await.unwrap();
    let reads: Vec<_> = calls.iter().filter(|c| c.kind == CallKind::Check).collect();
    assert_eq!(reads.len(), 1, "{calls:?}");
    assert_eq!(reads[0].tool_name, "todo.list");
    assert_eq!(calls[0].tool_name, "todo.create", "the goal's tool is called first");

    // The run is done and reads back whole, verdicts and all.
    let report = persona_runner::check::report(&store, DEFAULT_TENANT, run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.run.status, persona_runner::model::goal::RunStatus::Done);
    assert_eq!(report.verdicts.len(), 20);
    assert_eq!(report.goals.len(), 5);
    assert!(report.goals.iter().all(|g| g.persona == "persona.anna@mana.test"));
    assert_eq!(
        store
            .verdicts(DEFAULT_TENANT, Some(persona.id), Some("sync"), 10)
            .await
            .unwrap()
            .len(),
        4
    );
    let rates = store
        .goal_pass_rates(
            DEFAULT_TENANT,
            run.created_at,
            chrono::Utc::now() + chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    let sync_rate = rates.iter().find(|r| r.goal == "sync").unwrap();
    assert_eq!(
        (sync_rate.trials, sync_rate.passed, sync_rate.simulator.as_str()),
        (4, 2, "offline")
    );
}

async fn usage_errors_name_what_is_unknown(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    seed(&store).await;
    let gateway = TestGateway::start().await;
    let config = Arc::new(gateway.config());
    let engine = Arc::new(TickRunner::new(store.clone(), config.clone(), &gateway.env()).unwrap());
    let checker = Checker::new(engine, store.clone(), config, &gateway.env()).unwrap();
    let err = checker
        .plan(DEFAULT_TENANT, &selection(&["nope"], 1))
        .await
        .unwrap_err();
    assert!(
        err.is_usage() && err.to_string().contains("`nope`") && err.to_string().contains("add-a-todo"),
        "{err}"
    );
    let mut unknown = selection(&[], 1);
    unknown.personas = vec!["nobody@mana.test".into()];
    assert!(
        checker
            .plan(DEFAULT_TENANT, &unknown)
            .await
            .unwrap_err()
            .to_string()
            .contains("nobody@mana.test")
    );
    assert!(
        checker
            .plan(DEFAULT_TENANT, &selection(&[], 0))
            .await
            .unwrap_err()
            .is_usage()
    );
}

/// A chat completion whose text is `content`.
fn judge_says(content: &str) -> Step {
    Step::Reply(text(content))
}

#[tokio::test]
async fn the_judge_reads_the_calls_and_only_met_passes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    seed(&store).await;
    let gateway = TestGateway::start().await;
    let verdict =
        |n: &str| format!(r#"{{"verdicts": [{{"n": 1, "judgement": "{n}", "reason": "todo.create answered ok"}}]}}"#);
    let judge = ScriptedLlm::start(vec![
        judge_says(&verdict("met")),
        judge_says(&verdict("unmet")),
        judge_says(&verdict("inconclusive")),
        // Garbage, then garbage again after the one repair.
        judge_says("Looks fine to me!"),
        judge_says("I already said: fine."),
        // A repair that works.
        judge_says("{\"verdicts\": []}"),
        judge_says(&verdict("met")),
    ])
    .await;
    let mut config = gateway.config();
    config.judge.provider = persona_runner::config::LlmProvider::Openai;
    config.judge.base_url = judge.base_url();
    config.judge.model = "judge-model".into();
    config.judge.api_key_env = "TEST_JUDGE_KEY".into();
    let mut env = gateway.env();
    env.insert("TEST_JUDGE_KEY".into(), "sk-judge-secret".into());
    let config = Arc::new(config);
    let engine = Arc::new(TickRunner::new(store.clone(), config.clone(), &env).unwrap());
    let checker = Arc::new(Checker::new(engine, store.clone(), config, &env).unwrap());
    let wanted = selection(&["judged"], 5);
    let planned = checker.plan(DEFAULT_TENANT, &wanted).await.unwrap();
    let run = checker.open_run(DEFAULT_TENANT, Trigger::Cli, &wanted).await.unwrap();
    let verdicts = checker
        .run(&run, planned, Arc::new(|_| {}), Default::default())
        .await
        .unwrap();

    let judgements: Vec<Judgement> = verdicts.iter().map(|v| v.criteria[0].judgement).collect();
    assert_eq!(
        judgements,
        [
            Judgement::Met,
            Judgement::Unmet,
            Judgement::Inconclusive,
            Judgement::Inconclusive,
            Judgement::Met
        ]
    );
    let outcomes: Vec<Outcome> = verdicts.iter().map(|v| v.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Pass,
            Outcome::Fail,
            Outcome::Unjudged,
            Outcome::Unjudged,
            Outcome::Pass
        ]
    );
    let garbage = &verdicts[3].criteria[0];
    assert!(
        garbage.raw.as_deref().unwrap().contains("Looks fine to me!"),
        "{garbage:?}"
    );
    assert!(
        garbage.raw.as_deref().unwrap().contains("I already said"),
        "{garbage:?}"
    );
    assert!(garbage.reason.contains("could not be used"), "{garbage:?}");
    let version = verdicts[0].judge.as_deref().unwrap();
    assert!(
        version.starts_with("judge-model · judge ") && version.ends_with("· t 0"),
        "{version}"
    );

    // The judge read the audited calls, not only the conversation.
    let first = judge.requests()[0]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first.contains("todo.create [call] ok args="), "{first}");
    assert!(first.contains("1. A to-do for the deadline was created."), "{first}");
    assert!(!first.contains("sk-judge-secret"));
}

/// `persona-runner ARGS…` on `db` against `gateway` (no LLM: the offline driver).
async fn binary(dir: &std::path::Path, db: &TestDb, gateway: &TestGateway, args: &[&str]) -> std::process::Output {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[auth]\nlogin_url = \"{}\"\nseed_secret_env = \"TEST_SEED_SECRET\"\n[mcp]\nurl = \"{}\"\n\
             [checks]\nlinks_base = \"http://qa.example\"\n",
            db.url(),
            gateway.login_url(),
            gateway.mcp_url()
        ),
    )
    .unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_SEED_SECRET", TEST_SEED)
        .output()
        .await
        .unwrap()
}

/// Runs `check ARGS… --junit JUNIT` through the binary, asserts its exit code and the
/// file's schema, and returns what it printed with the JUnit XML.
async fn check_exits(
    dir: &std::path::Path,
    db: &TestDb,
    gateway: &TestGateway,
    args: &[&str],
    junit: &std::path::Path,
    code: i32,
) -> (String, String) {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.extend(["--junit", junit.to_str().unwrap()]);
    let out = binary(dir, db, gateway, &all).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    validate_junit(junit);
    (stdout, std::fs::read_to_string(junit).unwrap())
}

/// Validates `xml` against the Jenkins JUnit schema when CI provides it
/// (`PERSONA_RUNNER_JUNIT_XSD`, see `.ci/run`); well-formedness is checked either way.
fn validate_junit(path: &std::path::Path) {
    let xml = std::fs::read_to_string(path).unwrap();
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "),
        "{xml}"
    );
    assert_eq!(xml.matches("<testsuite ").count(), xml.matches("</testsuite>").count());
    let Ok(xsd) = std::env::var("PERSONA_RUNNER_JUNIT_XSD") else {
        eprintln!("PERSONA_RUNNER_JUNIT_XSD is not set: the schema check runs in CI");
        return;
    };
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", &xsd])
        .arg(path)
        .output()
        .expect("xmllint (libxml2-utils) is installed where PERSONA_RUNNER_JUNIT_XSD is set");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn check_exits_0_when_a_goal_holds_1_when_it_falls_short_and_2_on_usage_errors() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    seed(&store).await;
    store.close().await;
    let gateway = TestGateway::start_with(|o| o.lab = true).await;
    let dir = tempfile::tempdir().unwrap();

    let held = dir.path().join("held.xml");
    let args = ["--goal", "add-a-todo", "--trials", "3"];
    let (stdout, xml) = check_exits(dir.path(), &db, &gateway, &args, &held, 0).await;
    assert!(
        stdout.contains("add-a-todo") && stdout.contains("3/3") && stdout.contains("held"),
        "{stdout}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 1, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");

    let short = dir.path().join("short.xml");
    let args = ["--goal", "file-taxes", "--goal", "add-a-todo", "--trials", "3"];
    let (stdout, xml) = check_exits(dir.path(), &db, &gateway, &args, &short, 1).await;
    assert!(
        stdout.contains("FELL SHORT") && stdout.contains("http://qa.example/ticks/"),
        "{stdout}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 2, "one testcase per goal: {xml}");
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(
        xml.contains("0 of 3 trials passed, 3 needed: check {&quot;called&quot;:&quot;lab.fail&quot;}"),
        "{xml}"
    );
    assert!(
        xml.contains("http://qa.example/ticks/"),
        "the failure links the tick pages: {xml}"
    );

    // --min-pass lets a flaky goal hold when enough trials pass.
    let out = binary(
        dir.path(),
        &db,
        &gateway,
        &["check", "--goal", "sync", "--trials", "2", "--min-pass", "1", "--json"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["goals"][0]["passed"], 1);
    assert_eq!(report["goals"][0]["flaky"], true);
    assert!(
        report["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["simulator"] == "offline")
    );

    for (args, named) in [
        (&["check", "--goal", "nope"][..], "`nope`"),
        (&["check", "--persona", "nobody@mana.test"][..], "nobody@mana.test"),
        (&["check", "--trials", "0"][..], "trials"),
        (&["check", "--trials", "2", "--min-pass", "3"][..], "min_pass"),
    ] {
        let out = binary(dir.path(), &db, &gateway, args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

async fn checks_run_through_the_admin_api(backend: Backend) {
    let app = spawn_app(backend).await;
    seed(&app.store).await;
    let (status, body) = app
        .call(
            "POST",
            "/api/v1/admin/checks",
            Auth::Admin,
            Some(json!({"goals": ["add-a-todo"], "trials": 2})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let (status, report) = app
            .call("GET", &format!("/api/v1/admin/checks/{id}"), Auth::Admin, None)
            .await;
        assert_eq!(status, 200, "{report}");
        if report["run"]["status"] != "running" {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the check run did not end: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["run"]["status"], "done", "{report}");
    assert_eq!(report["run"]["trigger"], "api");
    assert_eq!(report["goals"][0]["passed"], 2, "{report}");
    assert_eq!(report["goals"][0]["persona"], "persona.anna@mana.test");
    let (status, verdicts) = app
        .call(
            "GET",
            "/api/v1/admin/verdicts?goal=add-a-todo&persona=persona.anna@mana.test",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(verdicts.as_array().unwrap().len(), 2, "{verdicts}");

    let (status, body) = app
        .call(
            "POST",
            "/api/v1/admin/checks",
            Auth::Admin,
            Some(json!({"goals": ["nope"]})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`nope`"), "{body}");
    // An array is no request, although serde would read one into the struct's fields.
    let (status, body) = app
        .call("POST", "/api/v1/admin/checks", Auth::Admin, Some(json!([])))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object, got an array"),
        "{body}"
    );
    let (status, _) = app
        .call(
            "GET",
            &format!("/api/v1/admin/checks/{}", uuid::Uuid::new_v4()),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // The dashboard's grid links each trial to its tick.
    let tick = verdicts[0]["tick_id"].as_str().unwrap();
    let page = app.page("/").await;
    assert!(
        page.contains("id=\"goals\"") && page.contains(&format!("href=\"/ticks/{tick}\"")),
        "{page}"
    );
    // And the tick page shows the trial's verdict with its checks.
    let tick_page = app.page(&format!("/ticks/{tick}")).await;
    let verdict = &tick_page[tick_page.find("id=\"verdicts\"").expect("a verdicts section")..];
    let goal = verdicts[0]["goal"].as_str().unwrap();
    let outcome = verdicts[0]["outcome"].as_str().unwrap();
    assert!(verdict.contains(goal) && verdict.contains(outcome), "{verdict}");
    app.stop().await;
}

both_backends!(
    goals_pass_fail_flake_and_read_state,
    usage_errors_name_what_is_unknown,
    checks_run_through_the_admin_api
);

#[test]
fn a_catalog_with_goals_validates_and_bad_goals_are_named_by_path() {
    let rules = persona_runner::catalog::Rules::from(&persona_runner::config::CatalogConfig::default());
    let catalog = json!({
        "archetypes": {"adhd-student": {"goals": [{"name": "plan", "task": "Plane die Woche.", "checks": [{"called": "calendar.*"}]}]}},
        "personas": [{
            "name": "Anna Keller", "email": "persona.anna@mana.test", "archetype": "adhd-student",
            "systemPrompt": "Du bist Anna, 21, studierst Biologie in Leipzig und vergisst ständig Abgaben und Termine.",
            "moduleMix": {"todo": 1}, "tickCadence": "daily", "goals": goals()
        }]
    });
    let found =
        persona_runner::catalog::validate_text(std::path::Path::new("c.json"), &catalog.to_string(), &rules).unwrap();
    let names: Vec<&str> = found.personas[0].goals.iter().map(|g| g.name.as_str()).collect();
    assert!(
        names.contains(&"plan") && names.contains(&"sync"),
        "the archetype's goal is added: {names:?}"
    );

    let mut bad = catalog.clone();
    bad["personas"][0]["goals"] = json!([
        {"name": "a", "task": "x", "checks": [{"called": "todo.[", "mins": 1}]},
        {"name": "a", "task": "x", "checks": [{"state": {"tool": "todo.list", "matches": "("}}]}
    ]);
    let problems = persona_runner::catalog::validate_text(std::path::Path::new("c.json"), &bad.to_string(), &rules)
        .unwrap_err()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(problems.contains("personas[0].goals[0].checks[0]"), "{problems}");
    assert!(
        problems.contains("personas[0].goals[1].name") && problems.contains("duplicate goal name `a`"),
        "{problems}"
    );
    assert!(
        problems.contains("state.matches") && problems.contains("not a regex"),
        "{problems}"
    );
}

#[tokio::test]
async fn the_daemon_checks_goals_on_its_cadence() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let persona = seed(&store).await;
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[database]\nurl = \"{}\"\n[auth]\nlogin_url = \"{}\"\nseed_secret_env = \"TEST_SEED_SECRET\"\n[mcp]\nurl = \"{}\"\n\
         [catalog]\nfiles = []\n[sample_gateway]\nenabled = \"off\"\n\
         [checks]\ncadence = \"*/2 * * * * *\"\ngoals = [\"add-a-todo\"]\n",
        db.url(),
        gateway.login_url(),
        gateway.mcp_url()
    );
    let mut daemon = common::runner::Runner::start(dir.path(), &config, &[("TEST_SEED_SECRET", TEST_SEED)]);
    daemon.wait_ready(200, Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let verdict = loop {
        let found = store
            .verdicts(DEFAULT_TENANT, Some(persona.id), None, 10)
            .await
            .unwrap();
        if let Some(verdict) = found.into_iter().next() {
            break verdict;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled check ran:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(verdict.goal, "add-a-todo");
    assert_eq!(verdict.outcome, Outcome::Pass, "{verdict:?}");
    let run = store.check_run(DEFAULT_TENANT, verdict.run_id).await.unwrap().unwrap();
    assert_eq!(run.trigger, Trigger::Schedule);
    assert!(daemon.stop().await.success(), "{}", daemon.log());
}

/// A judge that is down, or hangs past its timeout, leaves the criteria inconclusive and
/// says why: the trial is not a pass, and the run still ends.
#[tokio::test]
async fn a_judge_that_is_down_or_hangs_leaves_criteria_inconclusive() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    seed(&store).await;
    let gateway = TestGateway::start().await;
    let hanging = ScriptedLlm::start(vec![Step::Hang, Step::Hang]).await;
    for (base_url, said) in [
        (
            format!("http://127.0.0.1:{}/v1", common::free_port()),
            "the judge could not be asked",
        ),
        (hanging.base_url(), "the judge could not be asked"),
    ] {
        let mut config = gateway.config();
        config.judge.provider = persona_runner::config::LlmProvider::Openai;
        config.judge.base_url = base_url;
        config.judge.api_key_env = "TEST_JUDGE_KEY".into();
        config.judge.request_timeout = persona_runner::time::HumanDuration(Duration::from_millis(500));
        config.retry.max_attempts = 1;
        let mut env = gateway.env();
        env.insert("TEST_JUDGE_KEY".into(), "sk-judge".into());
        let config = Arc::new(config);
        let engine = Arc::new(TickRunner::new(store.clone(), config.clone(), &env).unwrap());
        let checker = Arc::new(Checker::new(engine, store.clone(), config, &env).unwrap());
        let wanted = selection(&["judged"], 1);
        let planned = checker.plan(DEFAULT_TENANT, &wanted).await.unwrap();
        let run = checker.open_run(DEFAULT_TENANT, Trigger::Cli, &wanted).await.unwrap();
        let started = std::time::Instant::now();
        let verdicts = checker
            .run(&run, planned, Arc::new(|_| {}), Default::default())
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        let criterion = &verdicts[0].criteria[0];
        assert_eq!(criterion.judgement, Judgement::Inconclusive);
        assert!(criterion.reason.starts_with(said), "{criterion:?}");
        assert_eq!(verdicts[0].outcome, Outcome::Unjudged);
    }
}
