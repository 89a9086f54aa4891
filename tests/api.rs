//! The sidecar's APIs through the real server (`serve`) on a free port with a fresh
//! database, on SQLite and PostgreSQL. Every response is checked against the served
//! OpenAPI document (`TestApp::call`).

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::time::Duration;

use common::Backend;
use common::app::{Auth, TestApp, spawn_app, token_with, user_token};
use persona_runner::model::persona::{DEFAULT_TENANT, UserKind};
use persona_runner::model::rating::NewRating;
use persona_runner::model::tick::{NewTick, TickFinish, TickStatus, Trigger};
use serde_json::{Value, json};
use uuid::Uuid;

fn persona_body(email: &str, name: &str) -> Value {
    json!({
        "name": name,
        "email": email,
        "archetype": "solo-dev",
        "systemPrompt": "Du bist eine Entwicklerin, die allein an ihrem Produkt arbeitet und Aufgaben knapp plant.",
        "moduleMix": {"todo": 3, "journal": 1},
        "tickCadence": "daily",
        "timeZone": "Europe/Berlin"
    })
}

async fn create(app: &TestApp, email: &str, name: &str) -> Value {
    let (status, body) = app
        .call(
            "POST",
            "/api/v1/admin/personas",
            Auth::Admin,
            Some(persona_body(email, name)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["persona"].clone()
}

fn fields(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .map(|d| d.iter().map(|f| f["field"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

async fn admin_routes_need_the_admin_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (status, body) = app.call("GET", "/api/v1/admin/personas", Auth::None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = app
        .call(
            "GET",
            "/api/v1/admin/personas",
            Auth::Bearer("not-the-token".into()),
            None,
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .call(
            "POST",
            "/api/v1/admin/personas",
            Auth::Bearer("not-the-token".into()),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 401, "checked before the body");
    let (status, body) = app.call("GET", "/api/v1/admin/personas", Auth::Admin, None).await;
    assert_eq!((status, body), (200, json!([])));
    app.stop().await;
}

async fn personas_are_created_updated_listed_paused_and_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = "persona.lena@mana.test";
    let created = create(&app, email, "Lena").await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["email"], email);

    // Idempotent: the same body again changes nothing; a changed body updates.
    let (status, body) = app
        .call(
            "POST",
            "/api/v1/admin/personas",
            Auth::Admin,
            Some(persona_body("Persona.Lena@mana.test", "Lena")),
        )
        .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("unchanged")));
    let mut changed = persona_body(email, "Lena");
    changed["moduleMix"] = json!({"todo": 1, "habits": 2});
    let (status, body) = app
        .call("POST", "/api/v1/admin/personas", Auth::Admin, Some(changed))
        .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("updated")));
    assert_eq!(body["persona"]["id"].as_str(), Some(id.as_str()));
    assert_eq!(body["persona"]["moduleMix"], json!({"habits": 2.0, "todo": 1.0}));
    let counts = app.store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!((counts.personas, counts.persona_users), (1, 1));

    // Bad bodies: every problem named by its field, nothing written.
    let mut bad = persona_body("lena@gmail.com", "");
    bad["moduleMix"] = json!({"todo": -1});
    bad["tickCadence"] = json!("fortnightly");
    bad["colour"] = json!("blue");
    bad.as_object_mut().unwrap().remove("archetype");
    let (status, body) = app.call("POST", "/api/v1/admin/personas", Auth::Admin, Some(bad)).await;
    assert_eq!(status, 400, "{body}");
    let named = fields(&body);
    for field in ["email", "archetype", "colour", "tickCadence", "moduleMix.todo", "name"] {
        assert!(named.iter().any(|f| f == field), "{field} not named in {named:?}");
    }
    let (status, body) = app
        .call("POST", "/api/v1/admin/personas", Auth::Admin, Some(json!({"name": 5})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(fields(&body).contains(&"name".to_string()), "{body}");
    // Not JSON, and too large.
    let response = app
        .client
        .post(format!("{}/api/v1/admin/personas", app.base))
        .bearer_auth(common::app::ADMIN_TOKEN)
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let mut huge = persona_body("persona.huge@mana.test", "Huge");
    huge["systemPrompt"] = json!("x".repeat(70 * 1024));
    let (status, _) = app
        .call("POST", "/api/v1/admin/personas", Auth::Admin, Some(huge))
        .await;
    assert_eq!(status, 413);
    assert_eq!(app.store.row_counts(DEFAULT_TENANT).await.unwrap().personas, 1);

    // List and detail (by id and by email).
    let (status, list) = app.call("GET", "/api/v1/admin/personas", Auth::Admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["recent_actions"], 0);
    assert_eq!(list[0]["last_tick_status"], Value::Null);
    assert_eq!(list[0]["average_rating"], Value::Null);
    let (status, detail) = app
        .call("GET", &format!("/api/v1/admin/personas/{email}"), Auth::Admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["persona"]["id"].as_str(), Some(id.as_str()));
    assert_eq!(detail["recent_actions"], json!([]));
    let (status, _) = app
        .call(
            "GET",
            &format!("/api/v1/admin/personas/{}", Uuid::new_v4()),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Pause and resume.
    let (status, body) = app
        .call("POST", &format!("/api/v1/admin/personas/{id}/pause"), Auth::Admin, None)
        .await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(true)));
    let (status, body) = app
        .call(
            "POST",
            &format!("/api/v1/admin/personas/{id}/resume"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(false)));

    // A human account is never deleted.
    let human = app
        .store
        .create_user(DEFAULT_TENANT, "alice@example.test", "Alice", UserKind::Human)
        .await
        .unwrap();
    let (status, body) = app
        .call("DELETE", "/api/v1/admin/personas/alice@example.test", Auth::Admin, None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("human"), "{body}");
    assert_eq!(app.store.row_counts(DEFAULT_TENANT).await.unwrap().users, 2);
    let _ = human;

    // Hard delete takes the persona user, profile and all rows with it.
    let (status, body) = app
        .call("DELETE", &format!("/api/v1/admin/personas/{id}"), Auth::Admin, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_deleted"], true);
    let counts = app.store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!(
        (counts.personas, counts.persona_users, counts.profiles, counts.users),
        (0, 0, 0, 1)
    );
    let (status, _) = app
        .call("DELETE", &format!("/api/v1/admin/personas/{id}"), Auth::Admin, None)
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

async fn wait_for_tick(app: &TestApp, persona: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, page) = app
            .call(
                "GET",
                &format!("/api/v1/admin/ticks?persona={persona}"),
                Auth::Admin,
                None,
            )
            .await;
        assert_eq!(status, 200);
        if let Some(tick) = page["items"].as_array().and_then(|t| t.first())
            && tick["status"] != "running"
        {
            return tick.clone();
        }
        assert!(std::time::Instant::now() < deadline, "the tick did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_one_off_tick_runs_and_its_calls_are_listed_page_by_page(backend: Backend) {
    let app = spawn_app(backend).await;
    let anna = create(&app, "persona.anna@mana.test", "Anna").await;
    let busy = create(&app, "persona.ben@mana.test", "Ben").await;

    let (status, started) = app
        .call(
            "POST",
            "/api/v1/admin/personas/persona.anna@mana.test/tick",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let tick = wait_for_tick(&app, "persona.anna@mana.test").await;
    assert_eq!(tick["id"], started["tick_id"]);
    assert_eq!(tick["status"], "ok", "{tick}");
    assert_eq!(tick["trigger"], "api");
    let calls = tick["tool_calls"].as_i64().unwrap();
    assert!(calls >= 3, "{tick}");

    // The tick's story: record, transcript, every call and the ratings.
    let tick_id = started["tick_id"].as_str().unwrap();
    let (status, detail) = app
        .call("GET", &format!("/api/v1/admin/ticks/{tick_id}"), Auth::Admin, None)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["tick"]["id"], started["tick_id"]);
    assert_eq!(detail["calls"].as_array().unwrap().len() as i64, calls, "{detail}");
    let entries = detail["transcript"]["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{detail}");
    assert!(!detail["ratings"].as_array().unwrap().is_empty(), "{detail}");
    let (status, _) = app
        .call(
            "GET",
            &format!("/api/v1/admin/ticks/{}", Uuid::new_v4()),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .call("GET", "/api/v1/admin/ticks/not-a-uuid", Auth::Admin, None)
        .await;
    assert_eq!(status, 400);
    assert!(body["details"][0]["field"] == "id", "{body}");

    // A persona with a running tick: 409.
    let busy_id = Uuid::parse_str(busy["id"].as_str().unwrap()).unwrap();
    app.store
        .claim_tick(&NewTick {
            tenant_id: DEFAULT_TENANT,
            persona_id: busy_id,
            trigger: Trigger::Cli,
            scheduled_for: None,
            attempt: 1,
            runner_id: "test".into(),
            lease: Duration::from_secs(60),
            target: None,
            space: None,
        })
        .await
        .unwrap();
    let (status, body) = app
        .call(
            "POST",
            &format!("/api/v1/admin/personas/{busy_id}/tick"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // The calls, two per page, newest first, each once.
    let anna_id = anna["id"].as_str().unwrap();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .call(
                "GET",
                &format!("/api/v1/admin/actions?persona={anna_id}&limit=2&cursor={cursor}"),
                Auth::Admin,
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["tick_id"], started["tick_id"]);
            seen.push(item["seq"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let mut expected: Vec<i64> = (0..calls).rev().collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected, "every call once, newest first");

    // Filters are checked and named.
    let (status, body) = app
        .call("GET", "/api/v1/admin/actions?result=maybe", Auth::Admin, None)
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["result".to_string()]));
    let (status, body) = app.call("GET", "/api/v1/admin/ticks?limit=0", Auth::Admin, None).await;
    assert_eq!((status, fields(&body)), (400, vec!["limit".to_string()]));
    let (status, body) = app
        .call("GET", "/api/v1/admin/ticks?colour=blue", Auth::Admin, None)
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["colour".to_string()]));
    let (status, body) = app
        .call("GET", "/api/v1/admin/ticks?since=yesterday", Auth::Admin, None)
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["since".to_string()]));
    let (status, page) = app
        .call("GET", "/api/v1/admin/ticks?status=running", Auth::Admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        1,
        "only Ben's claimed tick runs"
    );
    let (status, page) = app
        .call(
            "GET",
            &format!(
                "/api/v1/admin/actions?tick={}&result=ok&limit=500",
                started["tick_id"].as_str().unwrap()
            ),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        page["items"].as_array().unwrap().len() as i64,
        tick["calls_ok"].as_i64().unwrap()
    );

    // The detail shows the calls, the tick, and the calls as the user's interactions.
    let (status, detail) = app
        .call("GET", &format!("/api/v1/admin/personas/{anna_id}"), Auth::Admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(detail["recent_actions"].as_array().unwrap().len() as i64, calls.min(20));
    assert_eq!(detail["recent_ticks"][0]["id"], started["tick_id"]);
    assert_eq!(detail["profile"]["total_interactions"].as_i64(), Some(calls));
    let (_, list) = app.call("GET", "/api/v1/admin/personas", Auth::Admin, None).await;
    let row = list.as_array().unwrap().iter().find(|p| p["id"] == anna["id"]).unwrap();
    assert_eq!(row["recent_actions"].as_i64(), Some(calls));
    assert_eq!(row["last_tick_status"], "ok");
    app.stop().await;
}

/// One rating to seed: `(module, rating, calls, errors, mean latency, note)`.
type Rating<'a> = (&'a str, i32, i32, i32, Option<f64>, &'a str);

/// Rates `persona` in one finished tick.
async fn rate(app: &TestApp, persona: Uuid, ratings: &[Rating<'_>]) {
    let tick = app
        .store
        .claim_tick(&NewTick {
            tenant_id: DEFAULT_TENANT,
            persona_id: persona,
            trigger: Trigger::Cli,
            scheduled_for: None,
            attempt: 1,
            runner_id: "test".into(),
            lease: Duration::from_secs(60),
            target: None,
            space: None,
        })
        .await
        .unwrap();
    for (module, rating, calls, errors, latency, note) in ratings {
        app.store
            .record_feedback(&NewRating {
                tenant_id: DEFAULT_TENANT,
                tick_id: tick.id,
                persona_id: persona,
                module: module.to_string(),
                rating: *rating,
                notes: Some(note.to_string()),
                evidence_calls: *calls,
                evidence_errors: *errors,
                evidence_mean_latency_ms: *latency,
                evidence_rating: None,
                simulator: "offline".into(),
                recorded_at: None,
            })
            .await
            .unwrap();
    }
    app.store
        .finish_tick(tick.id, &TickFinish::status(TickStatus::Ok, None))
        .await
        .unwrap();
}

fn group<'a>(groups: &'a Value, key: &str) -> &'a Value {
    groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key} in {groups}"))
}

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

async fn feedback_aggregates_match_hand_computed_values(backend: Backend) {
    let app = spawn_app(backend).await;
    let p1 = create(&app, "persona.p1@mana.test", "P1").await;
    let mut other = persona_body("persona.p2@mana.test", "P2");
    other["archetype"] = json!("ceo-busy");
    let (_, p2) = app
        .call("POST", "/api/v1/admin/personas", Auth::Admin, Some(other))
        .await;
    let p1 = Uuid::parse_str(p1["id"].as_str().unwrap()).unwrap();
    let p2 = Uuid::parse_str(p2["persona"]["id"].as_str().unwrap()).unwrap();

    // The previous window: todo 4,4,5,4,3 (avg 4.0 on 5); journal 5.
    for rating in [4, 4, 5] {
        rate(&app, p1, &[("todo", rating, 2, 0, Some(100.0), "ok")]).await;
    }
    rate(
        &app,
        p2,
        &[("todo", 4, 2, 0, None, "fine"), ("journal", 5, 1, 0, None, "lovely")],
    )
    .await;
    rate(&app, p2, &[("todo", 3, 2, 1, None, "meh")]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let split = persona_runner::time::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The current window: todo 3,3,4,3,2,3 (avg 3.0 on 6, a drop of 1.0); journal 4,4.
    rate(
        &app,
        p1,
        &[
            ("todo", 3, 4, 1, Some(200.0), "slow"),
            ("journal", 4, 2, 0, Some(50.0), "nice"),
        ],
    )
    .await;
    rate(&app, p1, &[("todo", 3, 2, 0, Some(100.0), "ok-ish")]).await;
    rate(&app, p1, &[("todo", 4, 2, 0, None, "good")]).await;
    rate(
        &app,
        p2,
        &[
            ("todo", 3, 4, 2, Some(400.0), "errors"),
            ("journal", 4, 2, 1, None, "fine"),
        ],
    )
    .await;
    rate(&app, p2, &[("todo", 2, 3, 3, Some(1000.0), "every call failed")]).await;
    rate(&app, p2, &[("todo", 3, 1, 0, Some(300.0), "so-so")]).await;

    let since = split.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let until = (split + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let query = format!("since={}&until={}", urlencode(&since), urlencode(&until));
    let (status, report) = app
        .call("GET", &format!("/api/v1/admin/feedback?{query}"), Auth::Admin, None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ratings"], 8);
    assert!(
        close(&report["average"], (3.0 * 6.0 + 8.0) / 8.0),
        "{}",
        report["average"]
    );

    let todo = group(&report["modules"], "todo");
    assert_eq!(todo["count"], 6);
    assert!(close(&todo["average"], 3.0));
    assert_eq!(todo["distribution"], json!([0, 1, 4, 1, 0]));
    // Calls 4+2+2+4+3+1 = 16, errors 1+0+0+2+3+0 = 6.
    assert_eq!(
        (todo["evidence_calls"].as_i64(), todo["evidence_errors"].as_i64()),
        (Some(16), Some(6))
    );
    assert!(close(&todo["error_rate"], 6.0 / 16.0));
    // Latency weighted by calls, over the ratings that had one: (200·4 + 100·2 + 400·4 + 1000·3 + 300·1) / 14.
    assert!(
        close(
            &todo["mean_latency_ms"],
            (800.0 + 200.0 + 1600.0 + 3000.0 + 300.0) / 14.0
        ),
        "{}",
        todo["mean_latency_ms"]
    );
    assert!(close(&todo["previous_average"], 4.0));
    assert_eq!(todo["previous_count"], 5);
    assert!(close(&todo["change"], -1.0));
    assert_eq!(todo["regression"], true);
    let journal = group(&report["modules"], "journal");
    assert!(close(&journal["average"], 4.0));
    assert_eq!(
        (journal["count"].as_i64(), journal["previous_count"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(journal["regression"], false, "too few ratings to call it");
    assert_eq!(report["modules"][0]["key"], "todo", "weakest first");

    // Per persona: P1 3,4,3,4 → 3.5; P2 3,4,2,3 → 3.0. Per archetype likewise.
    let p1_group = group(&report["personas"], &p1.to_string());
    assert!(close(&p1_group["average"], 3.5));
    assert_eq!(p1_group["label"], "P1");
    assert!(close(&group(&report["personas"], &p2.to_string())["average"], 3.0));
    assert!(close(&group(&report["archetypes"], "ceo-busy")["average"], 3.0));
    assert!(close(&group(&report["archetypes"], "solo-dev")["average"], 3.5));
    let regressions: Vec<&str> = report["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(regressions, vec!["todo"]);
    assert_eq!(report["lowest_notes"][0]["notes"], "every call failed");
    assert_eq!(report["lowest_notes"][0]["rating"], 2);
    let today: Vec<&Value> = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["module"] == "todo")
        .collect();
    assert_eq!(today.iter().map(|d| d["count"].as_i64().unwrap()).sum::<i64>(), 6);

    // Filters narrow every section.
    let (_, filtered) = app
        .call(
            "GET",
            &format!("/api/v1/admin/feedback?{query}&module=journal&persona=persona.p2@mana.test"),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(filtered["ratings"], 1);
    assert_eq!(filtered["modules"].as_array().unwrap().len(), 1);
    assert!(close(&group(&filtered["modules"], "journal")["average"], 4.0));
    let (status, body) = app
        .call(
            "GET",
            "/api/v1/admin/feedback?since=2026-01-02&until=2026-01-01",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(
        (status, fields(&body)),
        (422, vec!["since".to_string()]),
        "an inverted window"
    );

    // The CLI prints the same report.
    let cli = |format: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
            .args(["feedback", "--since", &since, "--until", &until, "--format", format])
            .env("PERSONA_RUNNER__DATABASE__URL", app.db.url())
            .current_dir(app.dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let from_cli: Value = serde_json::from_str(&cli("json")).unwrap();
    assert_eq!(from_cli["modules"], report["modules"]);
    let table = cli("table");
    assert!(
        table.contains("todo") && table.contains("3.00") && table.contains("REGRESSION"),
        "{table}"
    );
    assert!(
        table.contains("module todo: 4.00 -> 3.00 (-1.00, 5 vs 6 ratings)"),
        "{table}"
    );
    let csv = cli("csv");
    let todo_row = csv.lines().find(|l| l.starts_with("module,todo,")).unwrap();
    assert_eq!(
        todo_row,
        "module,todo,todo,6,3.000,0,1,4,1,0,16,6,0.375,421.429,4.000,5,-1.000,true"
    );
    app.stop().await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

async fn interactions(app: &TestApp, token: &str, metrics: &[(&str, usize)]) {
    for (metric, times) in metrics {
        for _ in 0..*times {
            let (status, body) = app
                .call(
                    "POST",
                    "/api/my-persona/interactions",
                    Auth::Bearer(token.to_string()),
                    Some(json!({"interaction_type": "metric_focused", "page_type": "dashboard", "metadata": {"metric_id": metric}, "duration_seconds": 12})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
        }
    }
}

async fn the_profile_store_learns_scores_alignment_and_suggests_a_better_persona(backend: Backend) {
    let app = spawn_app(backend).await;
    let tenant = Uuid::new_v4();
    let admin = user_token(Uuid::new_v4(), tenant, &["admin"]);
    let user = Uuid::new_v4();
    let token = user_token(user, tenant, &[]);

    // Init is admin-only and idempotent.
    let (status, _) = app
        .call("POST", "/api/init-personas", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .call("POST", "/api/init-personas", Auth::Bearer(admin.clone()), None)
        .await;
    assert_eq!((status, body["created"].as_i64()), (200, Some(12)), "{body}");
    let (_, body) = app
        .call("POST", "/api/init-personas", Auth::Bearer(admin.clone()), None)
        .await;
    assert_eq!(
        (body["created"].as_i64(), body["existing"].as_i64()),
        (Some(0), Some(12))
    );
    assert_eq!(app.store.row_counts(tenant).await.unwrap().personas, 12);

    let (status, financial) = app
        .call("GET", "/api/personas?flow=Financial", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!((status, financial.as_array().unwrap().len()), (200, 5));
    let (_, sop) = app
        .call("GET", "/api/personas?flow=S%26OP", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!(sop.as_array().unwrap().len(), 7);
    let (status, body) = app
        .call("GET", "/api/personas?flow=HR", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["flow".to_string()]));
    let id_of = |name: &str| -> String {
        financial
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (cfo, controller) = (id_of("CFO"), id_of("Controller"));
    let (status, body) = app
        .call(
            "GET",
            &format!("/api/personas/{cfo}"),
            Auth::Bearer(token.clone()),
            None,
        )
        .await;
    assert_eq!((status, body["name"].as_str()), (200, Some("CFO")));

    // No persona yet; then assign the CFO.
    let (status, _) = app
        .call("GET", "/api/my-persona", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .call(
            "POST",
            "/api/my-persona/interactions",
            Auth::Bearer(token.clone()),
            Some(json!({"interaction_type": "shared"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, profile) = app
        .call(
            "PUT",
            "/api/my-persona/reassign",
            Auth::Bearer(token.clone()),
            Some(json!({"new_persona_id": cfo})),
        )
        .await;
    assert_eq!(
        (status, profile["persona_id"].as_str()),
        (200, Some(cfo.as_str())),
        "{profile}"
    );

    let (status, body) = app
        .call(
            "POST",
            "/api/my-persona/interactions",
            Auth::Bearer(token.clone()),
            Some(json!({"interaction_type": "staring"})),
        )
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["interaction_type".to_string()]));
    let (status, body) = app
        .call(
            "POST",
            "/api/my-persona/interactions",
            Auth::Bearer(token.clone()),
            Some(json!({"interaction_type": "shared", "duration_seconds": -3})),
        )
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["duration_seconds".to_string()]));

    // Behaviour exactly in the CFO's key-metric proportions: alignment 100.
    interactions(
        &app,
        &token,
        &[
            ("roic", 7),
            ("free_cash_flow", 5),
            ("ebitda_margin", 5),
            ("net_debt_to_ebitda", 3),
        ],
    )
    .await;
    let (status, alignment) = app
        .call("GET", "/api/my-persona/alignment", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!(status, 200, "{alignment}");
    assert_eq!(alignment["score"], json!(100.0), "{alignment}");
    assert_eq!(alignment["reassessment_recommended"], false);
    assert_eq!(alignment["status"], "active");

    // Then twice as much controller work: CFO 20/60 = 33.3, Controller 40/60 = 66.7.
    interactions(
        &app,
        &token,
        &[
            ("close_cycle_days", 12),
            ("reconciliation_rate", 12),
            ("journal_error_rate", 8),
            ("audit_findings", 8),
        ],
    )
    .await;
    let (_, alignment) = app
        .call("GET", "/api/my-persona/alignment", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!(alignment["score"], json!(33.3), "{alignment}");
    assert_eq!(alignment["reassessment_recommended"], true);
    assert_eq!(alignment["status"], "pending_reassessment");
    assert_eq!(alignment["suggested_persona_id"].as_str(), Some(controller.as_str()));
    assert_eq!(alignment["suggested_score"], json!(66.7));

    let (status, mine) = app
        .call("GET", "/api/my-persona", Auth::Bearer(token.clone()), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(mine["profile"]["total_interactions"], 60);
    assert_eq!(mine["profile"]["metric_preferences"]["roic"], json!(7.0));
    assert_eq!(mine["profile"]["interaction_summary"]["metric_focused"], 60);
    assert_eq!(mine["profile"]["alignment_score"], json!(33.3));
    assert_eq!(mine["persona"]["name"], "CFO");
    let (status, history) = app
        .call(
            "GET",
            "/api/my-persona/interactions?days=7&type=metric_focused",
            Auth::Bearer(token.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(history["interactions"].as_array().unwrap().len(), 60);
    assert_eq!(history["summary"], json!({"metric_focused": 60}));
    let (_, history) = app
        .call(
            "GET",
            "/api/my-persona/interactions?type=shared",
            Auth::Bearer(token.clone()),
            None,
        )
        .await;
    assert_eq!(history["interactions"], json!([]));
    let (status, body) = app
        .call(
            "GET",
            "/api/my-persona/interactions?days=0",
            Auth::Bearer(token.clone()),
            None,
        )
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["days".to_string()]));

    let (status, stats) = app
        .call(
            "GET",
            &format!("/api/personas/{cfo}/stats?days=30"),
            Auth::Bearer(token.clone()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (stats["users"].as_i64(), stats["pending_reassessment"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["interactions"], 60);
    assert_eq!(stats["by_type"], json!({"metric_focused": 60}));

    // Reassigning starts a new judgement.
    let (_, profile) = app
        .call(
            "PUT",
            "/api/my-persona/reassign",
            Auth::Bearer(token.clone()),
            Some(json!({"new_persona_id": controller})),
        )
        .await;
    assert_eq!(profile["persona_id"].as_str(), Some(controller.as_str()));
    assert_eq!(
        (profile["alignment_score"].clone(), profile["status"].clone()),
        (Value::Null, json!("active"))
    );

    // Admin edits of a persona: validated, email fixed, role checked.
    let (status, _) = app
        .call(
            "PUT",
            &format!("/api/personas/{cfo}"),
            Auth::Bearer(token.clone()),
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .call(
            "PUT",
            &format!("/api/personas/{cfo}"),
            Auth::Bearer(admin.clone()),
            Some(json!({"description": "Owns capital allocation.", "detailLevel": "high"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["description"].as_str(), body["detailLevel"].as_str()),
        (Some("Owns capital allocation."), Some("high"))
    );
    let (status, body) = app
        .call(
            "PUT",
            &format!("/api/personas/{cfo}"),
            Auth::Bearer(admin.clone()),
            Some(json!({"detailLevel": "extreme", "shoeSize": 3})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let named = fields(&body);
    assert!(
        named.contains(&"detailLevel".to_string()) && named.contains(&"shoeSize".to_string()),
        "{named:?}"
    );
    let (status, body) = app
        .call(
            "PUT",
            &format!("/api/personas/{cfo}"),
            Auth::Bearer(admin.clone()),
            Some(json!({"email": "new@x.test"})),
        )
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["email".to_string()]));
    app.stop().await;
}

async fn tenants_cannot_see_or_change_each_others_data(backend: Backend) {
    let app = spawn_app(backend).await;
    let (tenant_a, tenant_b) = (Uuid::new_v4(), Uuid::new_v4());
    let admin_a = user_token(Uuid::new_v4(), tenant_a, &["admin"]);
    let admin_b = user_token(Uuid::new_v4(), tenant_b, &["admin"]);
    let user_a = Uuid::new_v4();
    let token_a = user_token(user_a, tenant_a, &[]);
    let token_b = user_token(Uuid::new_v4(), tenant_b, &[]);
    app.call("POST", "/api/init-personas", Auth::Bearer(admin_a.clone()), None)
        .await;
    let (_, personas_a) = app
        .call("GET", "/api/personas", Auth::Bearer(token_a.clone()), None)
        .await;
    let cfo_a = personas_a
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "CFO")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.call(
        "PUT",
        "/api/my-persona/reassign",
        Auth::Bearer(token_a.clone()),
        Some(json!({"new_persona_id": cfo_a})),
    )
    .await;
    interactions(&app, &token_a, &[("roic", 3)]).await;

    // Tenant B sees none of it and can change none of it.
    let (status, list) = app
        .call("GET", "/api/personas", Auth::Bearer(token_b.clone()), None)
        .await;
    assert_eq!((status, list), (200, json!([])));
    for (method, path, body) in [
        ("GET", format!("/api/personas/{cfo_a}"), None),
        ("GET", format!("/api/personas/{cfo_a}/stats"), None),
        (
            "PUT",
            format!("/api/personas/{cfo_a}"),
            Some(json!({"description": "taken over"})),
        ),
    ] {
        let auth = if method == "PUT" {
            admin_b.clone()
        } else {
            token_b.clone()
        };
        let (status, body) = app.call(method, &path, Auth::Bearer(auth), body).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(!body.to_string().contains("roic"), "no data of tenant A leaks: {body}");
    }
    let (status, _) = app
        .call(
            "PUT",
            "/api/my-persona/reassign",
            Auth::Bearer(token_b.clone()),
            Some(json!({"new_persona_id": cfo_a})),
        )
        .await;
    assert_eq!(status, 404);
    let (_, history) = app
        .call(
            "GET",
            "/api/my-persona/interactions",
            Auth::Bearer(token_b.clone()),
            None,
        )
        .await;
    assert_eq!(history["interactions"], json!([]));
    // The same user id under another tenant's token is refused, not merged.
    let (_, personas_b) = {
        app.call("POST", "/api/init-personas", Auth::Bearer(admin_b.clone()), None)
            .await;
        app.call("GET", "/api/personas", Auth::Bearer(token_b.clone()), None)
            .await
    };
    let cfo_b = personas_b
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "CFO")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(cfo_a, cfo_b);
    let impostor = user_token(user_a, tenant_b, &[]);
    let (status, _) = app
        .call(
            "PUT",
            "/api/my-persona/reassign",
            Auth::Bearer(impostor.clone()),
            Some(json!({"new_persona_id": cfo_b})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app.call("GET", "/api/my-persona", Auth::Bearer(impostor), None).await;
    assert_eq!(status, 404, "tenant A's profile is not visible under tenant B");
    let (status, description) = app
        .call(
            "GET",
            &format!("/api/personas/{cfo_a}"),
            Auth::Bearer(token_a.clone()),
            None,
        )
        .await;
    assert_eq!((status, description["name"].as_str()), (200, Some("CFO")));
    assert_ne!(description["description"], "taken over");

    // Admin API: the tenant header scopes personas and feedback.
    let anna = create(&app, "persona.anna@mana.test", "Anna").await;
    rate(
        &app,
        Uuid::parse_str(anna["id"].as_str().unwrap()).unwrap(),
        &[("todo", 2, 1, 1, None, "default tenant only")],
    )
    .await;
    let other = |path: &str| {
        app.client
            .get(format!("{}{path}", app.base))
            .bearer_auth(common::app::ADMIN_TOKEN)
            .header("X-Persona-Runner-Tenant", tenant_b.to_string())
            .send()
    };
    let response = other(&format!("/api/v1/admin/personas/{}", anna["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let report: Value = other("/api/v1/admin/feedback").await.unwrap().json().await.unwrap();
    assert_eq!(report["ratings"], 0);
    let (_, report) = app.call("GET", "/api/v1/admin/feedback", Auth::Admin, None).await;
    assert_eq!(report["ratings"], 1);
    app.stop().await;
}

async fn user_tokens_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let (user, tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let now = chrono::Utc::now().timestamp();
    let claims = |change: &dyn Fn(&mut Value)| {
        let mut claims = json!({
            "sub": user.to_string(), "tenant_id": tenant.to_string(),
            "iss": "persona-runner", "aud": "persona-runner", "exp": now + 600,
        });
        change(&mut claims);
        token_with(claims)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", claims(&|c| c["exp"] = json!(now - 3600)), "expired"),
        (
            "valid only in an hour",
            claims(&|c| c["nbf"] = json!(now + 3600)),
            "not valid yet",
        ),
        (
            "wrong audience",
            claims(&|c| c["aud"] = json!("someone-else")),
            "audience",
        ),
        (
            "wrong issuer",
            claims(&|c| c["iss"] = json!("https://evil.test")),
            "issued",
        ),
        (
            "no tenant",
            claims(&|c| {
                c.as_object_mut().unwrap().remove("tenant_id");
            }),
            "tenant_id",
        ),
        ("sub not a uuid", claims(&|c| c["sub"] = json!("alice")), "sub"),
        ("garbage", "not.a.jwt".to_string(), "not a JWT"),
    ];
    for (case, token, says) in cases {
        let (status, body) = app.call("GET", "/api/personas", Auth::Bearer(token), None).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(body["error"].as_str().unwrap().contains(says), "{case}: {body}");
    }
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user.to_string(), "tenant_id": tenant.to_string(), "iss": "persona-runner", "aud": "persona-runner", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    let (status, body) = app.call("GET", "/api/personas", Auth::Bearer(forged), None).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("signature"), "{body}");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": user.to_string(), "tenant_id": tenant.to_string(), "iss": "persona-runner", "aud": "persona-runner", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(common::app::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, body) = app.call("GET", "/api/personas", Auth::Bearer(hs512), None).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("not accepted"), "{body}");
    let (status, _) = app.call("GET", "/api/personas", Auth::None, None).await;
    assert_eq!(status, 401);
    let (status, _) = app.call("GET", "/api/personas", Auth::Admin, None).await;
    assert_eq!(status, 401, "the admin token is not a user token");
    let (status, _) = app
        .call(
            "GET",
            "/api/personas",
            Auth::Bearer(user_token(user, tenant, &[])),
            None,
        )
        .await;
    assert_eq!(status, 200);
    app.stop().await;
}

both_backends!(
    admin_routes_need_the_admin_token,
    personas_are_created_updated_listed_paused_and_deleted,
    a_one_off_tick_runs_and_its_calls_are_listed_page_by_page,
    feedback_aggregates_match_hand_computed_values,
    the_profile_store_learns_scores_alignment_and_suggests_a_better_persona,
    tenants_cannot_see_or_change_each_others_data,
    user_tokens_are_checked,
);

#[tokio::test]
async fn without_keys_admin_and_profile_routes_are_closed_not_open() {
    let app = common::app::spawn_app_with(
        Backend::Sqlite,
        common::app::AppOptions {
            admin_token: false,
            jwt_secret: false,
            ..Default::default()
        },
    )
    .await;
    let (status, body) = app.call("GET", "/api/v1/admin/personas", Auth::Admin, None).await;
    assert_eq!(status, 503);
    assert!(
        body["error"].as_str().unwrap().contains("PERSONA_RUNNER_ADMIN_TOKEN"),
        "{body}"
    );
    let token = user_token(Uuid::new_v4(), Uuid::new_v4(), &[]);
    let (status, body) = app.call("GET", "/api/personas", Auth::Bearer(token), None).await;
    assert_eq!(status, 503);
    assert!(body["error"].as_str().unwrap().contains("JWT"), "{body}");
    let (status, _) = app.call("GET", "/", Auth::None, None).await;
    assert_eq!(status, 503);
    let (status, _) = app.call("GET", "/health", Auth::None, None).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_errors() {
    let app = spawn_app(Backend::Sqlite).await;
    let expected = [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/api/openapi.json"),
        ("get", "/"),
        ("get", "/ticks/{id}"),
        ("post", "/login"),
        ("post", "/logout"),
        ("get", "/api/v1/admin/personas"),
        ("post", "/api/v1/admin/personas"),
        ("get", "/api/v1/admin/personas/{id}"),
        ("delete", "/api/v1/admin/personas/{id}"),
        ("post", "/api/v1/admin/personas/{id}/pause"),
        ("post", "/api/v1/admin/personas/{id}/resume"),
        ("post", "/api/v1/admin/personas/{id}/tick"),
        ("post", "/api/v1/admin/ticks"),
        ("get", "/api/v1/admin/ticks"),
        ("get", "/api/v1/admin/ticks/{id}"),
        ("get", "/api/v1/admin/actions"),
        ("get", "/api/v1/admin/feedback"),
        ("get", "/api/v1/admin/spaces"),
        ("post", "/api/v1/admin/checks"),
        ("get", "/api/v1/admin/checks/{id}"),
        ("get", "/api/v1/admin/verdicts"),
        ("get", "/api/personas"),
        ("get", "/api/personas/{id}"),
        ("put", "/api/personas/{id}"),
        ("get", "/api/personas/{id}/stats"),
        ("get", "/api/my-persona"),
        ("post", "/api/my-persona/interactions"),
        ("get", "/api/my-persona/interactions"),
        ("get", "/api/my-persona/alignment"),
        ("put", "/api/my-persona/reassign"),
        ("post", "/api/init-personas"),
    ];
    let paths = app.openapi["paths"].as_object().unwrap();
    let documented: usize = paths
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "delete"].contains(&k.as_str()))
                .count()
        })
        .sum();
    assert_eq!(documented, expected.len(), "{:?}", paths.keys().collect::<Vec<_>>());
    for (method, path) in expected {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} missing");
        let protected = path.starts_with("/api/v1/admin") || (path.starts_with("/api/") && path != "/api/openapi.json");
        if protected {
            assert!(op["responses"]["401"].is_object(), "{method} {path} documents no 401");
            assert!(op["security"].is_array(), "{method} {path} documents no security");
        }
    }
    // Every route answers as documented, even to an unauthenticated caller.
    for (method, path) in expected.into_iter().filter(|(_, p)| *p != "/login") {
        let concrete = path.replace("{id}", &Uuid::new_v4().to_string());
        let body = (method != "get" && method != "delete").then(|| json!({}));
        let (status, _) = app.call(&method.to_uppercase(), &concrete, Auth::None, body).await;
        assert!(status < 500, "{method} {path}: {status}");
    }
    app.stop().await;
}

/// A test-only Ed25519 key (PKCS#8 DER) and its public half as a JWK `x`.
const ED25519_PKCS8: &str = "MC4CAQAwBQYDK2VwBCIEIHgYjzui9tRIWfgAEe2q0S5FplXXfc439LiQ/ofUylAN";
const ED25519_X: &str = "2WSlpSc4lXjKuRrGpMKXLJj4RP4zODKqb_ZI4rlfNuA";

#[tokio::test]
async fn tokens_are_verified_with_the_identity_providers_jwks() {
    use base64::Engine as _;
    // The identity provider's key set, served over HTTP.
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": "key-1", "alg": "EdDSA", "use": "sig"}]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp = listener.local_addr().unwrap();
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fetches.clone();
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = common::app::spawn_app_with(
        Backend::Sqlite,
        common::app::AppOptions {
            extra_toml: format!(
                "jwks_url = \"http://{idp}/.well-known/jwks.json\"\nalgorithms = [\"EdDSA\", \"HS256\"]\nissuer = \"https://idp.example.test\"\n"
            ),
            ..Default::default()
        },
    )
    .await;
    let der = base64::engine::general_purpose::STANDARD.decode(ED25519_PKCS8).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
    let (user, tenant) = (Uuid::new_v4(), Uuid::new_v4());
    let claims = json!({
        "sub": user.to_string(), "tenant_id": tenant.to_string(), "iss": "https://idp.example.test",
        "aud": "persona-runner", "exp": chrono::Utc::now().timestamp() + 600,
    });
    let sign = |kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let (status, body) = app
        .call("GET", "/api/personas", Auth::Bearer(sign("key-1")), None)
        .await;
    assert_eq!((status, body), (200, json!([])));
    let (status, body) = app
        .call("GET", "/api/personas", Auth::Bearer(sign("key-9")), None)
        .await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("key-9"), "{body}");
    // Made-up key ids cannot make the sidecar hammer the identity provider: 50 of them
    // (at once) cost at most one more fetch within jwks_min_refetch.
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    let probes = (0..50).map(|i| {
        let token = sign(&format!("made-up-{i}"));
        let app = &app;
        async move { app.call("GET", "/api/personas", Auth::Bearer(token), None).await.0 }
    });
    let statuses = futures_util::future::join_all(probes).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let extra = fetches.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(extra <= 1, "50 unknown kids caused {extra} JWKS fetches");
    eprintln!("50 unknown kids: {extra} JWKS fetches");
    // The known key still works without a fetch.
    let (status, _) = app
        .call("GET", "/api/personas", Auth::Bearer(sign("key-1")), None)
        .await;
    assert_eq!(status, 200);
    // A token not valid before an hour from now is refused (nbf, beyond the leeway).
    let mut later = claims.clone();
    later["nbf"] = json!(chrono::Utc::now().timestamp() + 3600);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("key-1".into());
    let early = jsonwebtoken::encode(&header, &later, &key).unwrap();
    let (status, body) = app.call("GET", "/api/personas", Auth::Bearer(early), None).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("not valid yet"), "{body}");
    // With a JWKS source an HMAC token is never accepted, whatever the algorithm list.
    let mut hs_claims = claims.clone();
    hs_claims["iss"] = json!("https://idp.example.test");
    let (status, body) = app
        .call("GET", "/api/personas", Auth::Bearer(token_with(hs_claims)), None)
        .await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("not accepted"), "{body}");
    app.stop().await;
}
