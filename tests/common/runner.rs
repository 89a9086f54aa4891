//! The real daemon binary driven from an async test, for the reliability suite: start it
//! on a config, ask its sidecar over HTTP, kill it hard or stop it gently, and read what
//! the store recorded against what the product executed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::StoreExt as _;
use persona_runner::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_persona-runner");

/// A running `persona-runner run`.
pub struct Runner {
    pub child: Child,
    pub dir: PathBuf,
    pub api: u16,
    log: PathBuf,
}

impl Runner {
    /// Starts the daemon in `dir` with `config` (the `[api]` section is added) and `env`,
    /// appending its log to `dir/runner.log`.
    pub fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let api = super::free_port();
        std::fs::write(
            dir.join("runner.toml"),
            format!("{config}\n[api]\nlisten = \"127.0.0.1:{api}\"\n"),
        )
        .unwrap();
        let log = dir.join("runner.log");
        let mut command = Command::new(BIN);
        command
            .current_dir(dir)
            .args(["--config", "runner.toml", "run"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            );
        for (k, v) in env {
            command.env(k, v);
        }
        Self {
            child: command.spawn().unwrap(),
            dir: dir.to_path_buf(),
            api,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = persona_runner::http::client(Duration::from_secs(5))
            .get(format!("http://127.0.0.1:{}{path}", self.api))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `/ready` answers `status`; the body.
    pub async fn wait_ready(&mut self, status: u16, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some((got, body)) = self.get("/ready").await
                && got == status
            {
                return body;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("the daemon exited ({exit}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "/ready did not answer {status} in {within:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no drain, no finish, leases left to expire.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not stop:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A catalog of `count` personas (`persona.rel-N@mana.test`) ticking on `cadence`.
pub fn catalog(path: &Path, count: usize, cadence: &str) {
    let personas: Vec<serde_json::Value> = (0..count)
        .map(|n| {
            serde_json::json!({
                "name": format!("Reliable {n}"),
                "email": format!("persona.rel-{n}@mana.test"),
                "archetype": "solo-dev",
                "systemPrompt": "Du bist eine Entwicklerin, die ihre Tage mit Listen, kurzen Notizen und Terminen plant.",
                "moduleMix": {"todo": 3, "notes": 2, "journal": 1, "habits": 1},
                "tickCadence": cadence
            })
        })
        .collect();
    std::fs::write(path, serde_json::json!({ "personas": personas }).to_string()).unwrap();
}

/// How the product's executed calls compare with the audit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Calls the product executed.
    pub executed: usize,
    /// Rows that say a call was answered (`ok`/`error` with a latency) or may have run.
    pub answered: usize,
    pub unknown: usize,
    /// Executed calls with no row to account for them.
    pub missing: usize,
    /// Answered rows with no execution behind them (a call recorded twice).
    pub duplicates: usize,
    /// Rows still `pending`, and ticks still `running`.
    pub pending: usize,
    pub stuck_ticks: usize,
}

/// Compares every call `gateway` executed with the audit rows of `store`: per persona,
/// tool and canonical arguments, `answered ≤ executed ≤ answered + unknown`.
pub async fn reconcile(store: &Store, gateway: &persona_runner::gateway::Gateway) -> Reconciled {
    use persona_runner::model::persona::DEFAULT_TENANT;
    let personas = store.list_personas(DEFAULT_TENANT).await.unwrap();
    let user_of: HashMap<String, uuid::Uuid> = personas
        .iter()
        .filter_map(|p| Some((persona_runner::gateway::user_id_of(p.email.as_deref()?), p.id)))
        .collect();
    let mut executed: HashMap<(uuid::Uuid, String), i64> = HashMap::new();
    for call in gateway.calls() {
        let persona = user_of[&call.user];
        let hash = persona_runner::model::call::input_hash(&call.tool, &call.arguments);
        *executed.entry((persona, hash)).or_default() += 1;
    }
    let mut answered: HashMap<(uuid::Uuid, String), i64> = HashMap::new();
    let mut unknown: HashMap<(uuid::Uuid, String), i64> = HashMap::new();
    let mut report = Reconciled::default();
    let ticks = store
        .list_ticks(DEFAULT_TENANT, &Default::default(), 100_000)
        .await
        .unwrap();
    report.stuck_ticks = ticks.iter().filter(|t| t.status.as_str() == "running").count();
    for tick in &ticks {
        for action in store.tick_actions(tick.id).await.unwrap() {
            let key = (tick.persona_id, action.input_hash.clone());
            match action.result.as_str() {
                "ok" | "error" if action.latency_ms.is_some() => *answered.entry(key).or_default() += 1,
                "unknown" => *unknown.entry(key).or_default() += 1,
                "pending" => report.pending += 1,
                _ => {}
            }
        }
    }
    for (key, count) in &executed {
        let ok = answered.get(key).copied().unwrap_or(0);
        let maybe = unknown.get(key).copied().unwrap_or(0);
        report.missing += (count - ok - maybe).max(0) as usize;
    }
    for (key, ok) in &answered {
        report.duplicates += (ok - executed.get(key).copied().unwrap_or(0)).max(0) as usize;
    }
    report.executed = executed.values().sum::<i64>() as usize;
    report.answered = answered.values().sum::<i64>() as usize;
    report.unknown = unknown.values().sum::<i64>() as usize;
    report
}
