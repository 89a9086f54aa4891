//! Reliability against the real binary: an operator's bad day. The product is the sample
//! gateway in this process, which logs every call it executes; after each ordeal every
//! executed call must have exactly one row that accounts for it (`ok`/`error` when its
//! answer was recorded, `unknown` when its tick died first), no tick may stay `running`
//! and no row `pending`.
//!
//! - kill -9 at random moments, ten times, on SQLite and on PostgreSQL;
//! - the disk under the SQLite store fills up mid-run and frees again;
//! - a tick panics;
//! - one of two replicas on PostgreSQL is killed mid-run.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::path::Path;
use std::time::Duration;

use common::runner::{Reconciled, Runner, catalog, reconcile};
use common::{Backend, TEST_SEED, TestDb, TestGateway};
use persona_runner::model::persona::DEFAULT_TENANT;

/// A daemon config on `database_url` against `gateway`: offline driver, every persona due
/// every second, short leases and sweeps so abandoned ticks are found quickly.
fn config(database_url: &str, gateway: &TestGateway, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{database_url}\"\n\
         [auth]\nlogin_url = \"{login}\"\nseed_secret_env = \"TEST_SEED_SECRET\"\n\
         [mcp]\nurl = \"{mcp}\"\ntool_calls_per_minute = 0\ntool_calls_per_minute_per_persona = 0\n\
         [llm]\nprovider = \"offline\"\n\
         [catalog]\nfiles = [\"catalog.json\"]\n\
         [tick]\nlease = \"3s\"\n\
         [sample_gateway]\nenabled = \"off\"\n\
         [runner]\nconcurrency = 4\njitter = \"0s\"\nreload_every = \"1s\"\nsweep_every = \"1s\"\n\
         shutdown_grace = \"2s\"\nretry_backoff = \"1s\"\n{extra}\n",
        login = gateway.login_url(),
        mcp = gateway.mcp_url(),
    )
}

const ENV: [(&str, &str); 1] = [("TEST_SEED_SECRET", TEST_SEED)];

/// Starts the daemon once more, lets it sweep what the killed ones left (lease 3 s,
/// sweep every second), stops it gently, and reconciles.
async fn settle(dir: &Path, config: &str, db: &TestDb, gateway: &TestGateway) -> Reconciled {
    let mut runner = Runner::start(dir, config, &ENV);
    runner.wait_ready(200, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(runner.stop().await.success(), "{}", runner.log());
    let store = db.store().await;
    let report = reconcile(&store, &gateway.gateway).await;
    if let Some(file) = store.sqlite_file() {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(integrity, "ok");
        let broken_keys: Vec<(String,)> = sqlx::query_as("PRAGMA foreign_key_check")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(broken_keys.is_empty(), "{broken_keys:?}");
        pool.close().await;
    }
    store.close().await;
    report
}

async fn kill_nine_loses_no_call(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Calls take 50 ms, so kills land in flight as well as between calls.
    let gateway = TestGateway::start_with(|o| o.call_delay = Duration::from_millis(50)).await;
    let dir = tempfile::tempdir().unwrap();
    catalog(&dir.path().join("catalog.json"), 8, "* * * * * *");
    let config = config(db.url(), &gateway, "");
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..10 {
        let mut runner = Runner::start(dir.path(), &config, &ENV);
        runner.wait_ready(200, Duration::from_secs(30)).await;
        // Somewhere in a tick, or between ticks, or before the first one.
        tokio::time::sleep(Duration::from_millis(rng.u64(200..2500))).await;
        runner.kill_hard();
        eprintln!(
            "round {round}: killed; {} calls executed so far",
            gateway.gateway.calls().len()
        );
    }
    let report = settle(dir.path(), &config, &db, &gateway).await;
    eprintln!("kill -9 x10 on {backend:?}: {report:?}");
    assert!(report.executed > 50, "the rounds ran ticks: {report:?}");
    assert_eq!(
        (report.missing, report.duplicates, report.pending, report.stuck_ticks),
        (0, 0, 0, 0),
        "{report:?}"
    );
}

/// A small file system of its own for the store, to fill: a tmpfs where this process may
/// mount one, else the same effect from a file-size limit on the daemon.
struct Space {
    dir: std::path::PathBuf,
    mounted: bool,
}

impl Space {
    fn new(parent: &Path) -> Self {
        let dir = parent.join("store");
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|out| out.status.success());
        Self { dir, mounted }
    }

    /// Takes every free byte (tmpfs), or caps the daemon's file size at what its files
    /// hold now (a limit).
    fn fill(&self, daemon: u32) {
        if self.mounted {
            use std::io::Write as _;
            let mut filler = std::fs::File::create(self.dir.join("filler")).unwrap();
            let chunk = vec![0u8; 64 * 1024];
            while filler.write_all(&chunk).is_ok() {}
            // The last partial chunk: byte by byte until nothing is left.
            while filler.write_all(&[0]).is_ok() {}
        } else {
            let limit = std::fs::read_dir(&self.dir)
                .unwrap()
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0);
            let status = std::process::Command::new("prlimit")
                .args(["--pid", &daemon.to_string(), &format!("--fsize={limit}:unlimited")])
                .status()
                .unwrap();
            assert!(status.success(), "prlimit");
        }
    }

    fn free(&self, daemon: u32) {
        if self.mounted {
            std::fs::remove_file(self.dir.join("filler")).unwrap();
        } else {
            let status = std::process::Command::new("prlimit")
                .args(["--pid", &daemon.to_string(), "--fsize=unlimited:unlimited"])
                .status()
                .unwrap();
            assert!(status.success(), "prlimit");
        }
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(&self.dir).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_every_call_until_it_frees_and_the_daemon_heals() {
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let space = Space::new(dir.path());
    let url = format!("sqlite://{}", space.dir.join("runner.db").display());
    catalog(&dir.path().join("catalog.json"), 6, "* * * * * *");
    let config = config(&url, &gateway, "");
    let mut runner = Runner::start(dir.path(), &config, &ENV);
    runner.wait_ready(200, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!gateway.gateway.calls().is_empty(), "ticks ran before the disk filled");

    space.fill(runner.child.id());
    let reason = runner.wait_ready(503, Duration::from_secs(30)).await;
    let expected = if space.mounted {
        "the database is full"
    } else {
        "the database cannot be written"
    };
    assert!(reason.contains(expected), "{reason}");
    // Calls already under way when the disk filled may finish (their rows were written
    // first); after that, nothing goes out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = gateway.gateway.calls().len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        gateway.gateway.calls().len(),
        during,
        "no call is sent while nothing can be recorded"
    );
    let (_, metrics) = runner.get("/metrics").await.unwrap();
    assert!(metrics.contains("persona_runner_store_writable 0"), "{metrics}");
    let outages = runner.log().matches("the store stopped taking writes").count();
    assert_eq!(
        outages,
        1,
        "one line per outage, not one per persona:\n{}",
        runner.log()
    );

    space.free(runner.child.id());
    runner.wait_ready(200, Duration::from_secs(30)).await;
    let healed = gateway.gateway.calls().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        gateway.gateway.calls().len() > healed,
        "ticks run again without a restart"
    );
    // The outage is declared over once writes kept succeeding through a trial (10 s).
    let recovered = async {
        while !runner.log().contains("the store takes writes again") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(30), recovered).await.is_ok(),
        "{}",
        runner.log()
    );
    assert_eq!(
        runner.log().matches("the store stopped taking writes").count(),
        1,
        "{}",
        runner.log()
    );
    assert!(runner.stop().await.success());

    let db_config = persona_runner::config::DatabaseConfig {
        url: persona_runner::config::DatabaseUrl::new(url.clone()),
        ..Default::default()
    };
    // The ticks the outage broke are swept by the next run (their leases ran out).
    let mut again = Runner::start(dir.path(), &config, &ENV);
    again.wait_ready(200, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(again.stop().await.success());
    let store = persona_runner::store::Store::open(&db_config, None).await.unwrap();
    let report = reconcile(&store, &gateway.gateway).await;
    eprintln!("disk full then freed: {report:?}");
    assert_eq!(
        (report.missing, report.duplicates, report.pending, report.stuck_ticks),
        (0, 0, 0, 0),
        "{report:?}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_that_panics_is_recorded_and_its_persona_ticks_again() {
    let db = TestDb::new(Backend::Sqlite).await;
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    catalog(&dir.path().join("catalog.json"), 3, "* * * * * *");
    let config = config(db.url(), &gateway, "");
    let env = [
        ("TEST_SEED_SECRET", TEST_SEED),
        ("PERSONA_RUNNER_FAULT_PANIC", "persona.rel-0@mana.test"),
    ];
    let mut runner = Runner::start(dir.path(), &config, &env);
    runner.wait_ready(200, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(runner.get("/health").await.unwrap().0, 200);
    assert!(runner.stop().await.success());
    let store = db.store().await;
    let panicky = store
        .find_persona(DEFAULT_TENANT, "persona.rel-0@mana.test")
        .await
        .unwrap()
        .unwrap();
    let filter = persona_runner::store::TickFilter {
        persona_id: Some(panicky.id),
        ..Default::default()
    };
    let ticks = store.list_ticks(DEFAULT_TENANT, &filter, 100).await.unwrap();
    let panicked = ticks
        .iter()
        .filter(|t| {
            t.status.as_str() == "failed" && t.error.as_deref().is_some_and(|e| e.contains("the tick panicked"))
        })
        .count();
    assert!(panicked >= 3, "it kept its schedule: {ticks:#?}");
    assert!(ticks.iter().all(|t| t.status.as_str() != "running"));
    let others = store
        .list_ticks(DEFAULT_TENANT, &Default::default(), 1000)
        .await
        .unwrap();
    assert!(
        others
            .iter()
            .any(|t| t.persona_id != panicky.id && t.status.as_str() == "ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_leaves_its_slots_to_the_other() {
    let db = TestDb::new(Backend::Postgres).await;
    // Calls take 300 ms: both replicas are mid-tick most of the time.
    let gateway = TestGateway::start_with(|o| o.call_delay = Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    // A slot every 30 s: an abandoned slot is still the latest when its lease is swept,
    // so it is claimed again (older ones would coalesce into the latest, by design).
    catalog(&dir.path().join("catalog.json"), 8, "*/30 * * * * *");
    let config = config(db.url(), &gateway, "");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    for replica in [&one, &two] {
        std::fs::create_dir_all(replica).unwrap();
        std::fs::copy(dir.path().join("catalog.json"), replica.join("catalog.json")).unwrap();
    }
    let mut survivor = Runner::start(&one, &config, &ENV);
    let mut victim = Runner::start(&two, &config, &ENV);
    survivor.wait_ready(200, Duration::from_secs(30)).await;
    victim.wait_ready(200, Duration::from_secs(30)).await;
    // Kill the victim a second into the next slot, while its ticks run.
    let now = chrono::Utc::now();
    let into = (now.timestamp() % 30) as u64 * 1000 + u64::from(now.timestamp_subsec_millis());
    tokio::time::sleep(Duration::from_millis(30_000 - into + 1000)).await;
    victim.kill_hard();
    // Its leases (3 s) expire, a sweep (1 s) finds them, the survivor looks again.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(survivor.stop().await.success());
    let store = db.store().await;
    let ticks = store
        .list_ticks(DEFAULT_TENANT, &Default::default(), 10_000)
        .await
        .unwrap();
    let abandoned: Vec<_> = ticks.iter().filter(|t| t.status.as_str() == "abandoned").collect();
    assert!(!abandoned.is_empty(), "the victim was killed mid-tick: {ticks:#?}");
    // Every slot ran once at most, whoever ran it.
    let mut ok_per_slot = std::collections::HashMap::new();
    for tick in ticks.iter().filter(|t| t.status.as_str() == "ok") {
        *ok_per_slot.entry((tick.persona_id, tick.scheduled_for)).or_insert(0) += 1;
    }
    assert!(ok_per_slot.values().all(|n| *n == 1), "a slot ran twice");
    // The killed replica's ticks were abandoned, and their slots claimed again.
    for tick in &abandoned {
        let retried = ticks.iter().any(|t| {
            t.persona_id == tick.persona_id
                && t.scheduled_for == tick.scheduled_for
                && t.attempt > tick.attempt
                && t.runner_id != tick.runner_id
        });
        let of_persona: Vec<_> = ticks
            .iter()
            .filter(|t| t.persona_id == tick.persona_id)
            .map(|t| {
                (
                    t.scheduled_for,
                    t.attempt,
                    t.status.as_str(),
                    t.started_at,
                    t.runner_id.as_str(),
                )
            })
            .collect();
        assert!(
            retried,
            "the slot {:?} of {} was not claimed again: {of_persona:#?}\n{}",
            tick.scheduled_for,
            tick.persona,
            survivor.log()
        );
    }
    let report = reconcile(&store, &gateway.gateway).await;
    eprintln!(
        "replica killed: {} abandoned and claimed again; {report:?}",
        abandoned.len()
    );
    assert_eq!(
        (report.missing, report.duplicates, report.pending),
        (0, 0, 0),
        "{report:?}"
    );
}

both_backends! {
    kill_nine_loses_no_call,
}

/// A slot claim whose commit fails (the disk is full) is an error: never a "claimed" tick
/// that was not written, whose calls would then break the store's references.
#[tokio::test]
async fn a_slot_claim_on_a_full_disk_is_an_outage_not_a_phantom_tick() {
    use persona_runner::config::{DatabaseConfig, DatabaseUrl};
    use persona_runner::model::tick::{NewTick, Trigger};
    use persona_runner::store::{SlotClaim, Store};
    let dir = tempfile::tempdir().unwrap();
    let space = Space::new(dir.path());
    if !space.mounted {
        eprintln!("skipped: filling a disk needs a tmpfs mount (run as root, as CI does)");
        return;
    }
    let config = DatabaseConfig {
        url: DatabaseUrl::new(format!("sqlite://{}", space.dir.join("claim.db").display())),
        ..DatabaseConfig::default()
    };
    let store = Store::open(&config, None).await.unwrap();
    let persona = common::seed_anna(&store).await;
    let claim = |slot| NewTick {
        tenant_id: persona.tenant_id,
        persona_id: persona.id,
        trigger: Trigger::Schedule,
        scheduled_for: Some(slot),
        attempt: 1,
        runner_id: "test".into(),
        lease: Duration::from_secs(60),
        target: None,
        space: None,
    };
    space.fill(std::process::id());
    let slot = persona_runner::time::now();
    match store.claim_slot(&claim(slot), 3).await {
        Err(err) => assert!(err.outage().is_some(), "a full disk is an outage: {err}"),
        Ok(SlotClaim::Claimed(tick)) => panic!("claimed tick {} on a full disk", tick.id),
        Ok(other) => panic!("unexpected answer on a full disk: {other:?}"),
    }
    space.free(std::process::id());
    assert_eq!(store.count_ticks(persona.id).await.unwrap(), 0, "nothing was written");
    let SlotClaim::Claimed(tick) = store.claim_slot(&claim(slot), 3).await.unwrap() else {
        panic!("the claim succeeds once there is room");
    };
    assert!(
        store.get_tick(tick.id).await.unwrap().is_some(),
        "a claimed tick is stored"
    );
}
