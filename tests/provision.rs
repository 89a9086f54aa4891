//! Provisioning through the real binary: `catalog seed --provision` signs the catalog's
//! personas up at the real sample gateway (run with accounts required), idempotently,
//! with a dry run, and the accounts then log in; the password never shows.

mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::process::Output;
use std::sync::Arc;

use common::app::{Auth, spawn_app};
use common::{Backend, TEST_SEED, TestDb, TestGateway};
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::model::tick::{TickStatus, Trigger};
use persona_runner::tick::{TickRequest, TickRunner};
use serde_json::json;

const CATALOGS: [&str; 2] = [
    concat!(env!("CARGO_MANIFEST_DIR"), "/catalog/consumer-app.json"),
    concat!(env!("CARGO_MANIFEST_DIR"), "/catalog/sop-finance.json"),
];

async fn seed(dir: &std::path::Path, db: &TestDb, gateway: &TestGateway, extra: &[&str]) -> Output {
    common::catalog_seed(dir, db, gateway, "", extra, &CATALOGS).await
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn seeding_with_provision_creates_accounts_that_then_log_in() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gateway = TestGateway::start_with(|options| options.accounts = true).await;
    let dir = tempfile::tempdir().unwrap();

    // A dry run says who would be signed up where, and changes nothing.
    let out = seed(dir.path(), &db, &gateway, &["--provision", "--dry-run"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("would sign up ").count(), 10, "{}", text(&out));
    assert!(
        text(&out).contains("12 persona(s) of undeclared targets left out"),
        "{}",
        text(&out)
    );
    let store = db.store().await;
    assert_eq!(gateway.gateway.accounts(), 0);
    assert!(
        store.list_personas(DEFAULT_TENANT).await.unwrap().is_empty(),
        "nothing seeded"
    );

    // Seeded without provisioning, a persona cannot log in to a product that needs accounts.
    let out = seed(dir.path(), &db, &gateway, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let personas = store.list_personas(DEFAULT_TENANT).await.unwrap();
    let persona = personas.iter().find(|p| p.target.is_none()).unwrap().clone();
    let engine = TickRunner::new(store.clone(), Arc::new(gateway.config()), &gateway.env()).unwrap();
    let request = TickRequest {
        persona: persona.clone(),
        trigger: Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        goal: None,
        space: Default::default(),
    };
    let before = engine.run(&request, &|_| {}).await.unwrap();
    assert_eq!(before.status, TickStatus::Failed);
    assert!(
        before.error.unwrap_or_default().contains("401"),
        "refused: no account yet"
    );

    // Provisioned: the 10 consumer personas get accounts; a second run finds them.
    let out = seed(dir.path(), &db, &gateway, &["--provision"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("provisioned: 10 signed up, 0 already had an account, 0 failed"),
        "{}",
        text(&out)
    );
    assert_eq!(gateway.gateway.accounts(), 10);
    let again = seed(dir.path(), &db, &gateway, &["--provision"]).await;
    assert!(
        text(&again).contains("0 signed up, 10 already had an account"),
        "{}",
        text(&again)
    );

    let engine = TickRunner::new(store.clone(), Arc::new(gateway.config()), &gateway.env()).unwrap();
    let after = engine.run(&request, &|_| {}).await.unwrap();
    assert_eq!(after.status, TickStatus::Ok, "{:?}", after.error);

    // The derived password went to the product only.
    let password = persona_runner::auth::derive_password(
        &persona_runner::config::Secret::new(TEST_SEED),
        persona.email.as_deref().unwrap(),
    );
    for out in [&out, &again] {
        assert!(!text(out).contains(password.expose()), "the password is never printed");
    }
}

#[tokio::test]
async fn the_admin_upsert_provisions_on_request() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = json!({
        "name": "Nora",
        "email": "persona.nora@mana.test",
        "archetype": "solo-dev",
        "systemPrompt": "Du bist Nora, planst deine Woche knapp, prüfst Zahlen, bevor du entscheidest, und schreibst kurz.",
        "moduleMix": {"todo": 1},
        "tickCadence": "daily",
    });
    let post = |query: &'static str| app.call("POST", query, Auth::Admin, Some(body.clone()));
    let (status, created) = post("/api/v1/admin/personas?provision=true").await;
    assert_eq!((status, &created["provisioned"]), (201, &json!("created")), "{created}");
    let (status, again) = post("/api/v1/admin/personas?provision=true").await;
    assert_eq!((status, &again["provisioned"]), (200, &json!("exists")), "{again}");
    let (status, plain) = post("/api/v1/admin/personas").await;
    assert_eq!(status, 200);
    assert!(plain.get("provisioned").is_none(), "{plain}");
    let (status, bad) = post("/api/v1/admin/personas?provision=yes").await;
    assert_eq!(
        (status, &bad["details"][0]["field"]),
        (400, &json!("provision")),
        "{bad}"
    );
    assert_eq!(app.gateway.gateway.accounts(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_sign_up_endpoint_fails_the_seed_naming_it() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let closed = common::free_port();
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[auth]\nsignup_url = \"http://127.0.0.1:{closed}/signup\"\n\
             seed_secret_env = \"TEST_SEED_SECRET\"\n[retry]\nmax_attempts = 1\n",
            db.url()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
        .arg("--config")
        .arg(&config)
        .args(["catalog", "seed", "--provision", CATALOGS[0]])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_SEED_SECRET", TEST_SEED)
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("0 signed up, 0 already had an account, 10 failed"),
        "{all}"
    );
    assert!(all.contains("cannot reach"), "each failure says why: {all}");
    assert!(!all.contains(TEST_SEED), "no secret in the output");
}

/// The README's first-run commands with the default config and no edits: the bundled
/// product on its default address (accounts required, as a real product), then
/// `catalog seed --provision`, a tick and the feedback report.
#[test]
fn the_first_run_commands_work_with_the_default_config() {
    let dir = common::workdir_with_catalogs();
    let run = |args: &[&str]| common::run_binary(dir.path(), args, &[] as &[(&str, &str)]);
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
        .current_dir(dir.path())
        .args(["sample-gateway", "--accounts"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect("127.0.0.1:3071").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sample gateway did not listen on 3071"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let seeded = run(&["catalog", "seed", "--provision"]);
    let all = text(&seeded);
    let ticked = run(&["tick", "--persona", "persona.anna@mana.test"]);
    let feedback = run(&["feedback"]);
    let _ = gateway.kill();
    let _ = gateway.wait();
    assert!(seeded.status.success(), "{all}");
    assert!(all.contains("signed up") && all.contains(", 0 failed"), "{all}");
    assert!(ticked.status.success(), "{}", text(&ticked));
    assert!(
        text(&ticked).contains(" ok "),
        "the provisioned account logs in: {}",
        text(&ticked)
    );
    assert!(feedback.status.success(), "{}", text(&feedback));
}
