//! Shared spaces against the real sample gateway: `catalog seed --provision` (the real
//! binary, accounts required) creates the catalog's spaces once; a round in which the
//! second member's read returns what the first wrote, and the second's story tells of it;
//! a member the product removed is denied, not failed; dedup per space; a space tick
//! replayed in its space; members never overlap in a space, and a round is claimed once;
//! the QA view over the API and the dashboard. Both stores.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::process::Output;
use std::sync::Arc;

use common::app::{AppOptions, Auth, spawn_app, spawn_app_with};
use common::{Backend, ScriptedLlm, Step, TestDb, TestGateway, text, tool_calls};
use persona_runner::auth::{Authenticator, SpaceCalls};
use persona_runner::config::{DedupWindow, Env};
use persona_runner::model::call::CallResult;
use persona_runner::model::persona::{DEFAULT_TENANT, Persona};
use persona_runner::model::space::{RoundOrder, SpaceChoice};
use persona_runner::model::tick::{NewTick, TickFinish, TickStatus, Trigger};
use persona_runner::store::{Store, StoreError};
use persona_runner::tick::{RoundPlan, TickRequest, TickRunner};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/catalog/consumer-app.json");
const FAMILY: &str = "Familie Schubert";
const LENA: &str = "persona.lena@mana.test";
const TOBIAS: &str = "persona.tobias@mana.test";

/// `persona-runner catalog seed EXTRA… consumer-app.json` against `gateway`, its
/// organization endpoints included.
async fn seed_binary(dir: &std::path::Path, db: &TestDb, gateway: &TestGateway, extra: &[&str]) -> Output {
    common::catalog_seed(dir, db, gateway, &gateway.spaces_toml(), extra, &[CATALOG]).await
}

fn output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The organization list `email` gets from the product.
async fn organizations(gateway: &TestGateway, email: &str) -> Vec<Value> {
    let user = persona_runner::gateway::user_id_of(email);
    let token = gateway.gateway.issue_token(&user, email);
    persona_runner::http::install_crypto_provider();
    reqwest::Client::new()
        .get(gateway.organizations_url())
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn names(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// The consumer catalog seeded in-process, and its spaces provisioned in the product.
async fn seed_with_spaces(store: &Store, gateway: &TestGateway) {
    let config = gateway.config();
    let catalogs = persona_runner::catalog::load(&[CATALOG.into()], &(&config.catalog).into()).unwrap();
    persona_runner::catalog::seed(store, DEFAULT_TENANT, &catalogs, "Europe/Berlin")
        .await
        .unwrap();
    let calls = SpaceCalls::new(&config, &config.auth).unwrap();
    let auth = Authenticator::new(&config, &gateway.env()).unwrap();
    for space in &catalogs[0].spaces {
        calls.provision(&auth, space).await.unwrap();
        assert!(store.mark_space_provisioned(DEFAULT_TENANT, &space.name).await.unwrap());
    }
}

async fn persona(store: &Store, email: &str) -> Persona {
    store.find_persona(DEFAULT_TENANT, email).await.unwrap().unwrap()
}

/// An engine on the scripted `llm`, with `adjust` applied to its config.
fn engine(
    store: &Store,
    gateway: &TestGateway,
    llm: &ScriptedLlm,
    adjust: impl FnOnce(&mut persona_runner::config::Config),
) -> TickRunner {
    let (mut config, env): (_, Env) = common::llm_config(gateway, llm, "test-model", "sk-test");
    adjust(&mut config);
    TickRunner::new(store.clone(), Arc::new(config), &env).unwrap()
}

/// One tick's script: these calls, then "done", then a rating of the first call's module.
fn turn(calls: &[(&str, &str)]) -> Vec<Step> {
    let module = calls[0].0.split('_').next().unwrap();
    vec![
        Step::Reply(tool_calls(calls)),
        Step::Reply(text("Fertig für heute.")),
        Step::Reply(text(&rating(module))),
    ]
}

fn rating(module: &str) -> String {
    json!({"ratings": [{"module": module, "rating": 4, "note": "passt"}]}).to_string()
}

fn request(persona: &Persona, space: SpaceChoice) -> TickRequest {
    TickRequest {
        persona: persona.clone(),
        trigger: Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        goal: None,
        space,
    }
}

fn shared() -> SpaceChoice {
    SpaceChoice::Shared(FAMILY.into())
}

#[tokio::test]
async fn provisioning_creates_the_catalog_spaces_once_and_again_changes_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gateway = TestGateway::start_with(|options| options.accounts = true).await;
    let dir = tempfile::tempdir().unwrap();

    let out = seed_binary(dir.path(), &db, &gateway, &["--provision", "--dry-run"]).await;
    assert!(out.status.success(), "{}", output(&out));
    assert_eq!(
        output(&out).matches("would create space ").count(),
        5,
        "{}",
        output(&out)
    );
    assert!(
        output(&out).contains(&format!("would create space {FAMILY} (family)")),
        "{}",
        output(&out)
    );
    assert_eq!(gateway.gateway.accounts(), 0, "a dry run changes nothing");

    let out = seed_binary(dir.path(), &db, &gateway, &["--provision"]).await;
    assert!(out.status.success(), "{}", output(&out));
    assert!(
        output(&out).contains("spaces: 5 created, 5 joined, 0 already present, 0 failed"),
        "{}",
        output(&out)
    );
    let store = db.store().await;
    let spaces = store.list_spaces(DEFAULT_TENANT).await.unwrap();
    assert_eq!(spaces.len(), 5);
    assert!(spaces.iter().all(|s| s.provisioned_at.is_some()), "{spaces:?}");
    // Both partners see the family in their organization list, beside their own space.
    for email in [LENA, TOBIAS] {
        let entries = organizations(&gateway, email).await;
        assert_eq!(names(&entries), ["Personal", FAMILY], "{email}: {entries:?}");
        assert_eq!(entries[0]["metadata"]["type"], "personal");
        assert_eq!(entries[1]["metadata"]["type"], "family");
    }
    assert_eq!(
        names(&organizations(&gateway, "persona.anna@mana.test").await),
        ["Personal", "Lerngruppe Fokus"]
    );

    let again = seed_binary(dir.path(), &db, &gateway, &["--provision"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", output(&again));
    assert!(
        output(&again).contains("spaces: 0 created, 0 joined, 10 already present, 0 failed"),
        "{}",
        output(&again)
    );
    assert_eq!(
        names(&organizations(&gateway, LENA).await),
        ["Personal", FAMILY],
        "nothing doubled"
    );
}

async fn a_round_hands_an_entry_from_one_member_to_the_next(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let gateway = TestGateway::start().await;
    seed_with_spaces(&store, &gateway).await;
    let mut script = turn(&[("todo_create", r#"{"title": "Windeln kaufen"}"#)]);
    script.extend(turn(&[("todo_list", r#"{"status": "open"}"#)]));
    let llm = ScriptedLlm::start(script).await;
    let engine = engine(&store, &gateway, &llm, |_| {});
    let space = store.get_space(DEFAULT_TENANT, FAMILY).await.unwrap().unwrap();
    let plan = RoundPlan {
        order: RoundOrder::Fixed,
        pause: std::time::Duration::ZERO,
        trigger: Trigger::Cli,
    };
    let never = CancellationToken::new();
    let round = engine
        .run_round(DEFAULT_TENANT, &space, plan, &|_| {}, &never, &never)
        .await;

    let members: Vec<&str> = round.iter().map(|m| m.email.as_str()).collect();
    assert_eq!(members, [LENA, TOBIAS], "the catalog's order");
    let summaries: Vec<_> = round.into_iter().map(|m| m.outcome.unwrap()).collect();
    for summary in &summaries {
        assert_eq!(
            (summary.status, summary.space.as_str()),
            (TickStatus::Ok, FAMILY),
            "{:?}",
            summary.error
        );
        let tick = store.get_tick(summary.tick_id).await.unwrap().unwrap();
        assert_eq!(tick.space.as_deref(), Some(FAMILY), "the tick records its space");
        let calls = store.tick_calls(summary.tick_id).await.unwrap();
        assert!(!calls.is_empty());
        assert!(
            calls.iter().all(|c| c.space.as_deref() == Some(FAMILY)),
            "every call records its space: {calls:?}"
        );
    }
    // Tobias's read returns what Lena wrote there.
    let read = store.tick_calls(summaries[1].tick_id).await.unwrap();
    let list = read.iter().find(|c| c.tool_name == "todo.list").unwrap();
    assert_eq!(list.result, CallResult::Ok);
    assert!(list.output.as_deref().unwrap().contains("Windeln kaufen"), "{list:?}");
    // And his story so far tells him who wrote it.
    let requests = llm.requests();
    let told = requests[3].to_string();
    assert!(told.contains("Lena"), "{told}");
    assert!(told.contains("todo.create \\\"Windeln kaufen\\\""), "{told}");
    assert!(
        !requests[0].to_string().contains("Windeln kaufen"),
        "Lena's own story had nothing yet"
    );

    // The personal space does not see it.
    let lena = persona(&store, LENA).await;
    let llm_personal = ScriptedLlm::start(turn(&[("todo_list", r#"{"status": "open"}"#)])).await;
    let personal = engine_for(&store, &gateway, &llm_personal)
        .run(&request(&lena, SpaceChoice::Personal), &|_| {})
        .await
        .unwrap();
    let calls = store.tick_calls(personal.tick_id).await.unwrap();
    assert_eq!(calls[0].space, None);
    assert!(!calls[0].output.as_deref().unwrap().contains("Windeln"), "{calls:?}");

    // Tobias's tick replays in the family space: the same list.
    let report = engine.replay(summaries[1].tick_id).await.unwrap();
    assert_eq!(report.space.as_deref(), Some(FAMILY));
    assert_eq!(report.changed(), 0, "{report:?}");
    assert_eq!(report.calls[0].tool, "todo.list");

    // QA sees Tobias read Lena's entry.
    let family = family_view(&store).await;
    assert!(family.provisioned);
    assert_eq!(family.ticks.len(), 2);
    let interaction = family.interactions.first().unwrap();
    assert_eq!((interaction.by.as_str(), interaction.of.as_str()), (TOBIAS, LENA));
    assert_eq!(interaction.touch, persona_runner::feedback::spaces::Touch::Read);
    assert!(
        interaction
            .text
            .as_deref()
            .unwrap_or_default()
            .contains("Windeln kaufen")
    );
    assert_eq!(family.ratings.len(), 2, "each member rated todo in the space");
}

/// The family's QA view over the last hour.
async fn family_view(store: &Store) -> persona_runner::feedback::spaces::SpaceView {
    let now = chrono::Utc::now();
    let window = persona_runner::feedback::Window {
        since: now - chrono::Duration::hours(1),
        until: now + chrono::Duration::hours(1),
    };
    let views = persona_runner::feedback::spaces::space_views(store, DEFAULT_TENANT, &window)
        .await
        .unwrap();
    views.into_iter().find(|v| v.name == FAMILY).unwrap()
}

fn engine_for(store: &Store, gateway: &TestGateway, llm: &ScriptedLlm) -> TickRunner {
    engine(store, gateway, llm, |_| {})
}

async fn the_same_call_in_two_spaces_is_not_a_repeat(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let gateway = TestGateway::start().await;
    seed_with_spaces(&store, &gateway).await;
    let call = [("todo_create", r#"{"title": "Wocheneinkauf planen"}"#)];
    let mut script = turn(&call);
    script.extend(turn(&call));
    script.extend(turn(&call));
    let llm = ScriptedLlm::start(script).await;
    let engine = engine(&store, &gateway, &llm, |config| {
        config.tick.dedup_window = DedupWindow::Last(persona_runner::time::HumanDuration(
            std::time::Duration::from_secs(86_400),
        ));
    });
    let lena = persona(&store, LENA).await;
    let mut results = Vec::new();
    for space in [SpaceChoice::Personal, shared(), shared()] {
        let summary = engine.run(&request(&lena, space), &|_| {}).await.unwrap();
        let calls = store.tick_calls(summary.tick_id).await.unwrap();
        results.push((calls[0].space.clone(), calls[0].result));
    }
    assert_eq!(
        results,
        [
            (None, CallResult::Ok),
            (Some(FAMILY.to_string()), CallResult::Ok),
            (Some(FAMILY.to_string()), CallResult::Deduped),
        ]
    );
    let created = gateway
        .gateway
        .calls()
        .iter()
        .filter(|c| c.tool == "todo.create")
        .count();
    assert_eq!(created, 2, "one in each space reached the product");
}

async fn members_never_overlap_in_their_space_and_a_round_is_claimed_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let config = persona_runner::config::Config::default();
    let catalogs = persona_runner::catalog::load(&[CATALOG.into()], &(&config.catalog).into()).unwrap();
    persona_runner::catalog::seed(&store, DEFAULT_TENANT, &catalogs, "Europe/Berlin")
        .await
        .unwrap();
    let (lena, tobias) = (persona(&store, LENA).await, persona(&store, TOBIAS).await);
    let claim = |persona: &Persona, space: Option<&str>| NewTick {
        tenant_id: DEFAULT_TENANT,
        persona_id: persona.id,
        trigger: Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        runner_id: "replica-a".into(),
        lease: std::time::Duration::from_secs(60),
        target: None,
        space: space.map(str::to_string),
    };
    let finish = |id| {
        let store = store.clone();
        async move {
            store
                .finish_tick(id, &TickFinish::status(TickStatus::Ok, None))
                .await
                .unwrap()
        }
    };

    let lenas = store.claim_tick(&claim(&lena, Some(FAMILY))).await.unwrap();
    let err = store.claim_tick(&claim(&tobias, Some(FAMILY))).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(
        err.to_string().contains("another member is ticking in the space"),
        "{err}"
    );
    let own = store.claim_tick(&claim(&tobias, None)).await.unwrap();
    finish(own.id).await;
    finish(lenas.id).await;
    let his = store.claim_tick(&claim(&tobias, Some(FAMILY))).await.unwrap();
    assert_eq!(his.space.as_deref(), Some(FAMILY));
    finish(his.id).await;

    // A round: planned once, then run by the one replica whose claim still saw its slot.
    let slot = persona_runner::time::now();
    let next = slot + chrono::Duration::days(1);
    assert!(
        store
            .claim_space_round(DEFAULT_TENANT, FAMILY, None, Some(slot))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_space_round(DEFAULT_TENANT, FAMILY, None, Some(slot))
            .await
            .unwrap(),
        "planned already"
    );
    let won = [
        store
            .claim_space_round(DEFAULT_TENANT, FAMILY, Some(slot), Some(next))
            .await
            .unwrap(),
        store
            .claim_space_round(DEFAULT_TENANT, FAMILY, Some(slot), Some(next))
            .await
            .unwrap(),
    ];
    assert_eq!(won, [true, false], "one replica runs the round");
    let rounds = store.space_rounds().await.unwrap();
    let family = rounds.iter().find(|r| r.space.name == FAMILY).unwrap();
    assert_eq!(family.next_round_at, Some(next));

    // Reseeded unchanged, a space stays provisioned; with its members changed it must be again.
    assert!(store.mark_space_provisioned(DEFAULT_TENANT, FAMILY).await.unwrap());
    let mut spaces = catalogs[0].spaces.clone();
    store.upsert_spaces(DEFAULT_TENANT, &spaces).await.unwrap();
    let provisioned = |store: Store| async move {
        store
            .get_space(DEFAULT_TENANT, FAMILY)
            .await
            .unwrap()
            .unwrap()
            .provisioned_at
    };
    assert!(provisioned(store.clone()).await.is_some());
    let family = spaces.iter_mut().find(|s| s.name == FAMILY).unwrap();
    family.members.reverse();
    store.upsert_spaces(DEFAULT_TENANT, &spaces).await.unwrap();
    assert!(
        provisioned(store.clone()).await.is_none(),
        "members changed: provision again"
    );
}

both_backends!(
    a_round_hands_an_entry_from_one_member_to_the_next,
    the_same_call_in_two_spaces_is_not_a_repeat,
    members_never_overlap_in_their_space_and_a_round_is_claimed_once
);

#[tokio::test]
async fn a_member_the_product_removed_is_denied_not_failed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let gateway = TestGateway::start().await;
    seed_with_spaces(&store, &gateway).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let llm = ScriptedLlm::start(vec![
        Step::Held(
            gate.clone(),
            tool_calls(&[("todo_create", r#"{"title": "Kinderarzt anrufen"}"#)]),
        ),
        Step::Reply(text("Komisch, das ging nicht.")),
        Step::Reply(text(&rating("todo"))),
    ])
    .await;
    let engine = engine_for(&store, &gateway, &llm);
    let tobias = persona(&store, TOBIAS).await;
    let asked = request(&tobias, shared());
    let tick = engine.run(&asked, &|_| {});
    // While Tobias's model thinks, Lena (the owner) removes him from the family.
    let remove = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while llm.requests().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the tick never asked its model");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let family = organizations(&gateway, LENA).await[1]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let token = gateway
            .gateway
            .issue_token(&persona_runner::gateway::user_id_of(LENA), LENA);
        let removed = reqwest::Client::new()
            .post(format!("http://{}/api/auth/organization/remove-member", gateway.addr))
            .bearer_auth(token)
            .json(&json!({"organizationId": family, "memberIdOrEmail": TOBIAS}))
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), 200);
        gate.add_permits(1);
    };
    let (summary, ()) = tokio::join!(tick, remove);
    let summary = summary.unwrap();
    assert_eq!((summary.calls_denied, summary.calls_error), (1, 0), "{summary:?}");
    assert_ne!(summary.status, TickStatus::Failed, "{summary:?}");
    let calls = store.tick_calls(summary.tick_id).await.unwrap();
    assert_eq!(calls[0].result, CallResult::Denied);
    assert!(
        calls[0].error_message.as_deref().unwrap_or_default().contains("403"),
        "{calls:?}"
    );
    assert_eq!(names(&organizations(&gateway, TOBIAS).await), ["Personal"]);

    // QA sees the denial in the space.
    let family = family_view(&store).await;
    assert_eq!(family.denials.len(), 1);
    assert_eq!(
        (family.denials[0].email.as_str(), family.denials[0].tool.as_str()),
        (TOBIAS, "todo.create")
    );

    // Removed, his next tick in the space fails before any call: it is not in his list.
    let next = engine.run(&request(&tobias, shared()), &|_| {}).await.unwrap();
    assert_eq!(next.status, TickStatus::Failed);
    assert!(next.error.unwrap().contains("no space `Familie Schubert`"));
}

#[tokio::test]
async fn the_api_and_the_dashboard_show_each_space() {
    let app = spawn_app(Backend::Sqlite).await;
    seed_with_spaces(&app.store, &app.gateway).await;
    let mut script = turn(&[("notes_create", r#"{"title": "Urlaub", "body": "Ostsee im Juli?"}"#)]);
    script.extend(turn(&[("notes_search", r#"{"query": "Ostsee"}"#)]));
    let llm = ScriptedLlm::start(script).await;
    let engine = engine_for(&app.store, &app.gateway, &llm);
    let space = app.store.get_space(DEFAULT_TENANT, FAMILY).await.unwrap().unwrap();
    let plan = RoundPlan {
        order: RoundOrder::Fixed,
        pause: std::time::Duration::ZERO,
        trigger: Trigger::Cli,
    };
    let never = CancellationToken::new();
    for member in engine
        .run_round(DEFAULT_TENANT, &space, plan, &|_| {}, &never, &never)
        .await
    {
        member.outcome.unwrap();
    }

    let (status, body) = app.call("GET", "/api/v1/admin/spaces", Auth::Admin, None).await;
    assert_eq!(status, 200, "{body}");
    let family = body
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == FAMILY)
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(family["members"], json!([LENA, TOBIAS]));
    assert_eq!(family["interactions"][0]["by"], TOBIAS, "{family:#}");
    assert_eq!(family["interactions"][0]["touch"], "read");
    let (status, _) = app.call("GET", "/api/v1/admin/spaces", Auth::None, None).await;
    assert_eq!(status, 401, "admin only");

    let page = app.page("/").await;
    assert!(page.contains("Shared spaces"), "{page}");
    assert!(page.contains(FAMILY), "{page}");
    assert!(page.contains("Urlaub"), "the entry Tobias read: {page}");
    app.stop().await;
}

/// The daemon (the real binary) runs a provisioned space's rounds on `spaces.cadence`:
/// its members tick in the space one after the other, the next round is planned, and
/// SIGTERM ends it cleanly.
#[tokio::test]
async fn the_daemon_runs_a_space_round_on_its_cadence() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    let gateway = TestGateway::start().await;
    seed_with_spaces(&store, &gateway).await;
    let dir = tempfile::tempdir().unwrap();
    let api = common::free_port();
    let config = dir.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[auth]\nlogin_url = \"{}\"\nseed_secret_env = \"TEST_SEED_SECRET\"\n\
             [mcp]\nurl = \"{}\"\n[api]\nlisten = \"127.0.0.1:{api}\"\n[sample_gateway]\nenabled = \"off\"\n\
             [catalog]\nfiles = [\"{CATALOG}\"]\n{}cadence = \"*/2 * * * * *\"\n",
            db.url(),
            gateway.login_url(),
            gateway.mcp_url(),
            gateway.spaces_toml()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_persona-runner"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEST_SEED_SECRET", common::TEST_SEED)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // A round's ticks: no schedule slot of their own (scheduled ticks by share have one).
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (lena, tobias) = loop {
        let until = chrono::Utc::now() + chrono::Duration::minutes(1);
        let mut round = Vec::new();
        for tick in store.space_ticks(DEFAULT_TENANT, FAMILY, since, until).await.unwrap() {
            let full = store.get_tick(tick.tick_id).await.unwrap().unwrap();
            if full.scheduled_for.is_none() && tick.status == TickStatus::Ok {
                round.push((tick.email, full));
            }
        }
        let first = |email: &str| round.iter().find(|(e, _)| e == email).map(|(_, t)| t.clone());
        if let (Some(lena), Some(tobias)) = (first(LENA), first(TOBIAS)) {
            break (lena, tobias);
        }
        assert!(std::time::Instant::now() < deadline, "no round ran:\n{}", read_log());
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "the daemon exited:\n{}",
            read_log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!((lena.trigger, tobias.trigger), (Trigger::Schedule, Trigger::Schedule));
    assert!(tobias.started_at > lena.started_at, "Lena first, then Tobias");
    let rounds = store.space_rounds().await.unwrap();
    let family = rounds.iter().find(|r| r.space.name == FAMILY).unwrap();
    assert!(family.next_round_at.is_some(), "the next round is planned");
    let others = rounds.iter().filter(|r| r.space.name != FAMILY);
    assert!(
        others.clone().all(|r| r.next_round_at.is_some()),
        "every provisioned space gets rounds"
    );

    let pid = daemon.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), daemon.wait())
        .await
        .expect("the daemon stops within 30 s")
        .unwrap();
    assert!(status.success(), "{status}:\n{}", read_log());
}

#[tokio::test]
async fn the_admin_upsert_with_provision_creates_and_joins_the_personas_spaces() {
    let organization = |path: &str| format!("\"http://{{gateway}}/api/auth/organization/{path}\"");
    let options = AppOptions {
        extra_toml: format!(
            "[spaces]\nlist_url = {}\ncreate_url = {}\ninvite_url = {}\naccept_url = {}\n",
            organization("list"),
            organization("create"),
            organization("invite-member"),
            organization("accept-invitation")
        ),
        ..Default::default()
    };
    let app = spawn_app_with(Backend::Sqlite, options).await;
    let config = persona_runner::config::Config::default();
    let catalogs = persona_runner::catalog::load(&[CATALOG.into()], &(&config.catalog).into()).unwrap();
    persona_runner::catalog::seed(&app.store, DEFAULT_TENANT, &catalogs, "Europe/Berlin")
        .await
        .unwrap();
    let catalog: Value = serde_json::from_str(&std::fs::read_to_string(CATALOG).unwrap()).unwrap();
    let lena = catalog["personas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == LENA)
        .unwrap()
        .clone();
    let upsert = || {
        app.call(
            "POST",
            "/api/v1/admin/personas?provision=true",
            Auth::Admin,
            Some(lena.clone()),
        )
    };

    let (status, first) = upsert().await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        first["spaces"],
        json!([{"space": FAMILY, "done": {"created": 1, "joined": 1, "present": 0}}]),
        "{first}"
    );
    let space = app.store.get_space(DEFAULT_TENANT, FAMILY).await.unwrap().unwrap();
    assert!(space.provisioned_at.is_some());
    assert_eq!(names(&organizations(&app.gateway, TOBIAS).await), ["Personal", FAMILY]);

    let (_, again) = upsert().await;
    assert_eq!(
        again["spaces"],
        json!([{"space": FAMILY, "done": {"created": 0, "joined": 0, "present": 2}}]),
        "idempotent: {again}"
    );
    app.stop().await;
}

/// The product's organization endpoints are down: each space fails on its own, named with
/// the step and the URL, the seed exits 1, and no space is marked provisioned (so no tick
/// goes there by share).
#[tokio::test]
async fn provisioning_against_dead_organization_endpoints_fails_each_space_by_name() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let closed = common::free_port();
    let dead = |path: &str| format!("\"http://127.0.0.1:{closed}/api/auth/organization/{path}\"");
    let spaces = format!(
        "[retry]\nmax_attempts = 1\n[spaces]\nlist_url = {}\ncreate_url = {}\ninvite_url = {}\naccept_url = {}\n",
        dead("list"),
        dead("create"),
        dead("invite-member"),
        dead("accept-invitation")
    );
    let out = common::catalog_seed(dir.path(), &db, &gateway, &spaces, &["--provision"], &[CATALOG]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(
        output(&out).contains("spaces: 0 created, 0 joined, 0 already present, 5 failed"),
        "{}",
        output(&out)
    );
    assert!(
        output(&out).contains(&format!("space {FAMILY}: ")) && output(&out).contains(&format!("127.0.0.1:{closed}")),
        "{}",
        output(&out)
    );
    assert!(!output(&out).contains(common::TEST_SEED));
    let store = db.store().await;
    let spaces = store.list_spaces(DEFAULT_TENANT).await.unwrap();
    assert_eq!(spaces.len(), 5);
    assert!(spaces.iter().all(|s| s.provisioned_at.is_none()), "{spaces:?}");
}
