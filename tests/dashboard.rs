//! The QA dashboard: sign-in through the form, the session cookie (only on safe
//! methods), and a headless Chromium rendering seeded feedback into the chart and the
//! tables, with a screenshot left in the target folder.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Backend;
use common::app::{ADMIN_TOKEN, Auth, TestApp, spawn_app};
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::model::rating::NewRating;
use persona_runner::model::tick::{NewTick, TickFinish, TickStatus, Trigger};
use serde_json::json;
use uuid::Uuid;

/// Seeds ratings for two personas over the last `days` days (one tick per day each).
async fn seed(app: &TestApp, days: i64) -> Vec<Uuid> {
    let mut personas = Vec::new();
    for (email, name, archetype) in [
        ("persona.anna@mana.test", "Anna", "adhd-student"),
        ("persona.tom@mana.test", "Tom", "ceo-busy"),
    ] {
        let (status, body) = app
            .call(
                "POST",
                "/api/v1/admin/personas",
                Auth::Admin,
                Some(json!({
                    "name": name, "email": email, "archetype": archetype,
                    "systemPrompt": "Du bist eine Person mit vollem Kalender, die schnell Ordnung braucht und ehrlich urteilt.",
                    "moduleMix": {"todo": 2, "journal": 1, "habits": 1}, "tickCadence": "daily"
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        personas.push(Uuid::parse_str(body["persona"]["id"].as_str().unwrap()).unwrap());
    }
    for day in 0..days {
        for (index, persona) in personas.iter().enumerate() {
            let tick = app
                .store
                .claim_tick(&NewTick {
                    tenant_id: DEFAULT_TENANT,
                    persona_id: *persona,
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
            // todo slides from 5 to 2 over the window, journal stays at 4, habits wobbles.
            let todo = (5 - (day * 4 / days.max(1)) as i32).clamp(1, 5);
            for (module, rating, note) in [
                (
                    "todo",
                    todo,
                    if todo <= 2 {
                        "Saving a task failed twice <again>"
                    } else {
                        "quick to add tasks"
                    },
                ),
                ("journal", 4, "calm and simple"),
                (
                    "habits",
                    4 + ((day as i32 + index as i32) % 2),
                    "streaks are motivating",
                ),
            ] {
                app.store
                    .record_feedback(&NewRating {
                        tenant_id: DEFAULT_TENANT,
                        tick_id: tick.id,
                        persona_id: *persona,
                        module: module.into(),
                        rating,
                        notes: Some(note.into()),
                        evidence_calls: 3,
                        evidence_errors: i32::from(rating <= 2),
                        evidence_mean_latency_ms: Some(120.0),
                        evidence_rating: None,
                        simulator: "offline".into(),
                        // Spread over the window: `days_ago` days back.
                        recorded_at: Some(
                            persona_runner::time::now()
                                - chrono::Duration::days(days - 1 - day)
                                - chrono::Duration::minutes(5),
                        ),
                    })
                    .await
                    .unwrap();
            }
            app.store
                .finish_tick(tick.id, &TickFinish::status(TickStatus::Ok, None))
                .await
                .unwrap();
        }
    }
    personas
}

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .expect("headless Chromium is needed for the dashboard test: apt-get install chromium (.ci/run does)")
}

/// A local page that signs in through the dashboard's own form.
fn sign_in_page(dir: &Path, base: &str) -> String {
    let page = dir.join("sign-in.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><form method=post action=\"{base}/login\"><input name=token value=\"{ADMIN_TOKEN}\"></form>\
             <script>document.forms[0].submit()</script>"
        ),
    )
    .unwrap();
    format!("file://{}", page.display())
}

/// Runs Chromium without blocking the runtime that serves the dashboard.
async fn run_chromium(profile: &Path, args: &[&str], url: &str) -> std::process::Output {
    let run = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chromium finished within 2 minutes")
        .expect("run chromium")
}

#[tokio::test]
async fn sign_in_sets_a_session_cookie_that_only_reads() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, page) = app.call("GET", "/", Auth::None, None).await;
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("name=\"token\""), "the sign-in form");

    let wrong = app
        .client
        .post(format!("{}/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let right = app
        .client
        .post(format!("{}/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the cookie never carries the token itself"
    );
    let session = cookie.split(';').next().unwrap().to_string();

    let dashboard = app
        .client
        .get(format!("{}/", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(dashboard.contains("id=\"ratings-chart\""), "{dashboard}");
    let read = app
        .client
        .get(format!("{}/api/v1/admin/feedback", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the session reads admin data");
    let write = app
        .client
        .post(format!("{}/api/v1/admin/ticks", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401, "but never writes with it (no CSRF)");
    let out = app
        .client
        .post(format!("{}/logout", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    // The session ended on the server: a kept copy of the cookie no longer reads.
    let replay = app
        .client
        .get(format!("{}/api/v1/admin/feedback", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "a cookie used after /logout is refused");
    let page = app
        .client
        .get(format!("{}/", app.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"token\""), "the sign-in form again");
    // Two sign-ins get different random ids.
    let again = |app: &common::app::TestApp| {
        app.client
            .post(format!("{}/login", app.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={ADMIN_TOKEN}"))
            .send()
    };
    let other = again(&app).await.unwrap().headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(other.split(';').next().unwrap(), session);
    app.stop().await;
}

#[tokio::test]
async fn behind_tls_the_session_cookie_is_secure() {
    let app = common::app::spawn_app_with(
        Backend::Sqlite,
        common::app::AppOptions {
            extra_env: vec![("PERSONA_RUNNER__API__SECURE_COOKIE".into(), "true".into())],
            ..Default::default()
        },
    )
    .await;
    let right = app
        .client
        .post(format!("{}/login", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    app.stop().await;
}

#[tokio::test]
async fn headless_chromium_renders_the_seeded_dashboard() {
    let app = spawn_app(Backend::Sqlite).await;
    seed(&app, 14).await;
    let profile = tempfile::tempdir().unwrap();
    let url = sign_in_page(app.dir.path(), &app.base);

    let dom = run_chromium(profile.path(), &["--dump-dom"], &url).await;
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        html.contains("id=\"ratings-chart\""),
        "signed in through the form: {html}"
    );
    // The chart: one line per module with a point per day.
    for module in ["habits", "journal", "todo"] {
        let line = html
            .split("<polyline")
            .find(|l| l.contains(&format!("data-module=\"{module}\"")))
            .unwrap_or_else(|| panic!("no line for {module}: {html}"));
        let points = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(points.split(' ').count(), 14, "{module}: {points}");
    }
    // The tables: modules ranked weakest first with the regression, low notes escaped,
    // and both personas.
    let modules = html.split("id=\"modules\"").nth(1).unwrap();
    let first_row = modules.split("<tr").nth(2).unwrap();
    assert!(first_row.contains("data-module=\"todo\""), "weakest first: {first_row}");
    assert!(
        html.contains("Saving a task failed twice &lt;again&gt;"),
        "notes are escaped"
    );
    let personas = html.split("id=\"personas\"").nth(1).unwrap();
    assert!(personas.contains("Anna") && personas.contains("Tom"));

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = run_chromium(
        profile.path(),
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1800"],
        &url,
    )
    .await;
    assert!(
        screenshot.status.success(),
        "{}",
        String::from_utf8_lossy(&screenshot.stderr)
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[1..4], b"PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 1800));
    assert!(
        png.len() > 30_000,
        "a rendered page, not a blank one: {} bytes",
        png.len()
    );
    println!("dashboard screenshot: {} ({} bytes)", shot.display(), png.len());

    // A phone-sized viewport renders too.
    let phone = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-phone.png");
    let small = run_chromium(
        profile.path(),
        &[&format!("--screenshot={}", phone.display()), "--window-size=390,1600"],
        &url,
    )
    .await;
    assert!(small.status.success());
    assert!(std::fs::metadata(&phone).unwrap().len() > 10_000);
    app.stop().await;
}

#[tokio::test]
async fn a_low_rating_leads_to_its_ticks_story_in_headless_chromium() {
    let app = spawn_app(Backend::Sqlite).await;
    let (status, body) = app
        .call(
            "POST",
            "/api/v1/admin/personas",
            Auth::Admin,
            Some(json!({
                "name": "Anna", "email": "persona.anna@mana.test", "archetype": "adhd-student",
                "systemPrompt": "Du bist eine Person mit vollem Kalender, die schnell Ordnung braucht und ehrlich urteilt.",
                "moduleMix": {"todo": 2, "journal": 1}, "tickCadence": "daily"
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, started) = app
        .call(
            "POST",
            "/api/v1/admin/personas/persona.anna@mana.test/tick",
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let tick_id = started["tick_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, detail) = app
            .call("GET", &format!("/api/v1/admin/ticks/{tick_id}"), Auth::Admin, None)
            .await;
        if detail["tick"]["status"] != "running" && !detail["ratings"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tick did not finish: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The dashboard's low ratings link to the tick behind each one.
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(
        profile.path(),
        &["--dump-dom"],
        &sign_in_page(app.dir.path(), &app.base),
    )
    .await;
    let html = String::from_utf8_lossy(&dom.stdout).to_string();
    let low = &html[html.find("id=\"low-ratings\"").expect("the low-ratings section")..];
    let href = format!("/ticks/{tick_id}");
    assert!(low.contains(&format!("href=\"{href}\"")), "{low}");

    // One click (the same browser session) shows the story beside the evidence.
    let page = run_chromium(profile.path(), &["--dump-dom"], &format!("{}{href}", app.base)).await;
    let story = String::from_utf8_lossy(&page.stdout).to_string();
    assert!(
        story.contains("id=\"story\"") && story.contains("id=\"calls\""),
        "{story}"
    );
    for step in ["tools", "offline_choice", "call", "ratings", "end"] {
        assert!(
            story.contains(&format!("class=\"step {step}\"")),
            "no {step} step: {story}"
        );
    }
    let (_, detail) = app
        .call("GET", &format!("/api/v1/admin/ticks/{tick_id}"), Auth::Admin, None)
        .await;
    for call in detail["calls"].as_array().unwrap() {
        assert!(
            story.contains(&call["tool_name"].as_str().unwrap().replace('&', "&amp;")),
            "{story}"
        );
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tick-page.png");
    let screenshot = run_chromium(
        profile.path(),
        &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1800"],
        &format!("{}{href}", app.base),
    )
    .await;
    assert!(
        screenshot.status.success(),
        "{}",
        String::from_utf8_lossy(&screenshot.stderr)
    );
    assert_eq!(
        &std::fs::read(&shot).expect("chromium wrote the screenshot")[1..4],
        b"PNG"
    );
    app.stop().await;
}
