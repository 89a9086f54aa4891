//! Replicas: three daemons share one PostgreSQL database; 50 personas on a 2-second cron
//! for 60 s. Every slot must run exactly once: no duplicates, none missed. Counted from
//! the store; the figures are printed.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Backend, TestDb, TestGateway};
use persona_runner::model::persona::{DEFAULT_TENANT, PersonaSpec};
use persona_runner::model::tick::TickStatus;

const BIN: &str = env!("CARGO_BIN_EXE_persona-runner");
const PERSONAS: usize = 50;
const RUN: Duration = Duration::from_secs(60);

struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_every_slot_exactly_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let store = db.store().await;
    for n in 0..PERSONAS {
        let spec: PersonaSpec = serde_json::from_value(serde_json::json!({
            "name": format!("Replica Persona {n}"),
            "email": format!("replica.{n}@mana.test"),
            "archetype": "solo-dev",
            "systemPrompt": "Du bist eine Testperson, die alle zwei Sekunden kurz ihre Stimmung und Aufgaben pflegt.",
            "moduleMix": {"mood": 1, "todo": 1},
            "tickCadence": "*/2 * * * * *",
            "timeZone": "UTC"
        }))
        .unwrap();
        store.upsert_persona(DEFAULT_TENANT, &spec, "UTC").await.unwrap();
    }
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        let port = common::free_port();
        let config = format!(
            "[database]\nurl = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n[auth]\nlogin_url = \"{}\"\n\
             seed_secret_env = \"TEST_SEED_SECRET\"\n[mcp]\nurl = \"{}\"\ntool_calls_per_minute = 0\ntool_calls_per_minute_per_persona = 0\n[sample_gateway]\nenabled = \"off\"\n\
             [runner]\nconcurrency = 8\njitter = \"0s\"\nreload_every = \"1s\"\nsweep_every = \"5s\"\n\
             starting_deadline = \"10s\"\n[tick]\nlease = \"20s\"\n[log]\nlevel = \"warn\"\n",
            db.url(),
            gateway.login_url(),
            gateway.mcp_url()
        );
        let path = dir.path().join(format!("replica-{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env_clear()
            .env("TEST_SEED_SECRET", common::TEST_SEED)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("replica-{i}.log"))).unwrap())
            .spawn()
            .unwrap();
        replicas.push(Replica(child));
    }
    // Let all three start, then measure a window well inside the run.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let from = persona_runner::time::now();
    tokio::time::sleep(RUN).await;
    let to = persona_runner::time::now();
    for replica in &replicas {
        let _ = Command::new("kill")
            .args(["-TERM", &replica.0.id().to_string()])
            .status();
    }
    for replica in &mut replicas {
        let status = replica.0.wait().unwrap();
        assert!(status.success(), "a replica exited with {status}");
    }

    // Every even second in the window is a slot of every persona.
    let first = from.timestamp() + (from.timestamp() % 2) + 2;
    let last = to.timestamp() - 4;
    let slots: Vec<i64> = (first..=last).step_by(2).collect();
    let ticks = store
        .schedule_ticks(
            chrono::DateTime::from_timestamp(first, 0).unwrap(),
            chrono::DateTime::from_timestamp(last, 0).unwrap(),
        )
        .await
        .unwrap();
    let mut ok_per_slot: HashMap<(uuid::Uuid, i64), usize> = HashMap::new();
    let mut runners: HashMap<String, usize> = HashMap::new();
    let mut lags = Vec::new();
    for tick in &ticks {
        *runners.entry(tick.runner_id.clone()).or_default() += 1;
        if tick.status == TickStatus::Ok {
            let slot = tick.scheduled_for.unwrap();
            *ok_per_slot.entry((tick.persona_id, slot.timestamp())).or_default() += 1;
            lags.push((tick.started_at - slot).num_milliseconds());
        }
    }
    let personas = store.runnable_ids().await.unwrap();
    assert_eq!(personas.len(), PERSONAS, "every persona is counted");
    assert!(
        slots.len() >= 20,
        "the window holds the slots of about a minute: {}",
        slots.len()
    );
    let expected = slots.len() * personas.len();
    let duplicates: usize = ok_per_slot.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    let missed = personas
        .iter()
        .flat_map(|p| slots.iter().map(move |s| (*p, *s)))
        .filter(|key| !ok_per_slot.contains_key(key))
        .count();
    let failed = ticks.iter().filter(|t| t.status != TickStatus::Ok).count();
    lags.sort_unstable();
    let percentile = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "replicas: {} slots x {} personas = {expected} expected; {} run ok; {duplicates} duplicates; {missed} missed; \
         {failed} failed attempts; runners {:?}; start lag p50 {} ms, p99 {} ms, max {} ms",
        slots.len(),
        personas.len(),
        ok_per_slot.len(),
        runners.values().collect::<Vec<_>>(),
        percentile(0.5),
        percentile(0.99),
        lags.last().copied().unwrap_or_default()
    );
    assert_eq!(duplicates, 0, "a slot ran twice");
    assert_eq!(missed, 0, "a slot was never run");
    assert_eq!(runners.len(), 3, "all three replicas took slots: {runners:?}");
}
