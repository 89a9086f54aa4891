//! The daemon as operators run it: the real binary, real signals, real HTTP.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ScriptedLlm, Step, tool_calls};

const BIN: &str = env!("CARGO_BIN_EXE_persona-runner");

/// A daemon in a temp dir with its own ports, the shipped catalogs and a config file.
struct Daemon {
    child: Child,
    dir: PathBuf,
    api: u16,
}

impl Daemon {
    fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_command("run", dir, config, env)
    }

    /// Starts `persona-runner COMMAND` (`run` or `serve`) and waits until it is ready.
    fn start_command(subcommand: &str, dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let api = common::free_port();
        let gateway = common::free_port();
        let text = format!(
            "[api]\nlisten = \"127.0.0.1:{api}\"\n[sample_gateway]\nlisten = \"127.0.0.1:{gateway}\"\n\
             [auth]\nlogin_url = \"http://127.0.0.1:{gateway}/api/v1/auth/login\"\n\
             [mcp]\nurl = \"http://127.0.0.1:{gateway}/mcp\"\n{config}"
        );
        std::fs::write(dir.join("daemon.toml"), text).unwrap();
        let mut command = Command::new(BIN);
        command
            .current_dir(dir)
            .args(["--config", "daemon.toml", subcommand])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let mut daemon = Self {
            child,
            dir: dir.to_path_buf(),
            api,
        };
        daemon.wait_ready();
        daemon
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::blocking_get(&self.url(path))?;
        Some(response)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some((200, _)) = self.get("/ready") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited early ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the daemon did not become ready:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A metric's value, summed over its label sets matching `filter`.
    /// The sum of the samples of `name` whose line contains `filter`; NaN when none.
    fn metric(&self, name: &str, filter: &str) -> f64 {
        let (_, text) = self.get("/metrics").unwrap();
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .collect();
        // Absent is not zero: NaN fails every comparison, so a family that is never
        // exported cannot satisfy `== 0.0`.
        if values.is_empty() {
            f64::NAN
        } else {
            values.iter().sum()
        }
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit in {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal blocking HTTP for the tests (no extra client crate).
mod reqwest {
    pub fn blocking_get(url: &str) -> Option<(u16, String)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let response = persona_runner::http::client(std::time::Duration::from_secs(10))
                .get(url)
                .send()
                .await
                .ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.ok()?))
        })
    }
}

fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn signals_tick_reload_and_drain() {
    let dir = common::workdir_with_catalogs();
    // Jitter 0: the personas due at the first start run at once; then it is quiet for hours.
    let mut daemon = Daemon::start(dir.path(), "[runner]\njitter = \"0s\"\n", &[]);
    let (status, body) = daemon.get("/health").unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    assert!(
        daemon
            .get("/metrics")
            .unwrap()
            .1
            .contains("persona_runner_scheduler_lag_seconds")
    );

    // Wait until the first-start ticks are done, so none of them is still running.
    wait_until("the first-start ticks to finish", Duration::from_secs(60), || {
        daemon.metric("persona_runner_personas_running", "") == 0.0
            && daemon.metric("persona_runner_personas_due", "") == 0.0
            && daemon.metric("persona_runner_ticks_total", "trigger=\"schedule\"") >= 1.0
    });
    // SIGUSR1: every runnable persona ticks now: the 10 consumer personas. The 12 role
    // personas belong to the `sop-finance` target, not configured here: never ticked.
    daemon.signal("USR1");
    wait_until("10 signal ticks", Duration::from_secs(60), || {
        daemon.metric("persona_runner_ticks_total", "trigger=\"signal\"") >= 10.0
            && daemon.metric("persona_runner_personas_running", "") == 0.0
    });
    assert_eq!(daemon.metric("persona_runner_ticks_total", "trigger=\"signal\""), 10.0);
    assert!(daemon.metric("persona_runner_ticks_total", "trigger=\"schedule\"") <= 10.0);
    // The 12 role personas are in the store, untouched: no tick, no rating of theirs.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = common::default_store_in(dir.path()).await;
        let personas = store
            .list_personas(persona_runner::model::persona::DEFAULT_TENANT)
            .await
            .unwrap();
        let roles: Vec<_> = personas
            .iter()
            .filter(|p| p.target.as_deref() == Some("sop-finance"))
            .collect();
        assert_eq!(roles.len(), 12);
        for role in roles {
            assert_eq!(store.count_ticks(role.id).await.unwrap(), 0, "{} was ticked", role.name);
        }
    });
    assert!(daemon.metric("persona_runner_tool_calls_total", "result=\"ok\"") > 0.0);

    // SIGHUP with a broken config: logged, the daemon keeps running on the old one.
    let good = std::fs::read_to_string(dir.path().join("daemon.toml")).unwrap();
    std::fs::write(
        dir.path().join("daemon.toml"),
        format!("{good}\n[tick]\nmax_turnz = 2\n"),
    )
    .unwrap();
    daemon.signal("HUP");
    wait_until("the reload to be refused", Duration::from_secs(10), || {
        daemon.log().contains("keeping the running one")
    });
    assert!(daemon.log().contains("tick.max_turnz"), "the log names the bad key");
    assert_eq!(daemon.get("/health").unwrap().0, 200);
    assert!(daemon.child.try_wait().unwrap().is_none());

    // SIGTERM: drains and exits 0.
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(daemon.log().contains("stopped"));
}

#[test]
fn a_second_daemon_on_the_same_sqlite_file_is_refused() {
    let dir = common::workdir_with_catalogs();
    let _first = Daemon::start(dir.path(), "", &[]);
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["--config", "daemon.toml", "run"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another persona-runner daemon") && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
}

#[test]
fn tick_via_the_daemon_needs_the_admin_token() {
    let dir = common::workdir_with_catalogs();
    // The kill switch holds the schedule, so no scheduled tick competes with the API's.
    let daemon = Daemon::start(
        dir.path(),
        "[runner]
paused = true
",
        &[("PERSONA_RUNNER_ADMIN_TOKEN", "admin-secret-for-tests")],
    );
    let via = |token: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .current_dir(dir.path())
            .args([
                "--config",
                "daemon.toml",
                "tick",
                "--via",
                &daemon.url(""),
                "--persona",
                "persona.anna@mana.test",
            ])
            .env_clear();
        if let Some(token) = token {
            command.env("PERSONA_RUNNER_ADMIN_TOKEN", token);
        }
        command.output().unwrap()
    };
    let out = via(Some("admin-secret-for-tests"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("accepted, tick "),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the API tick", Duration::from_secs(20), || {
        daemon.metric("persona_runner_ticks_total", "trigger=\"api\"") >= 1.0
    });

    let out = via(Some("wrong-token"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
    let out = via(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PERSONA_RUNNER_ADMIN_TOKEN"));
}

#[test]
fn serve_runs_the_sidecar_alone_and_stops_on_term() {
    let dir = common::workdir_with_catalogs();
    let mut sidecar = Daemon::start_command(
        "serve",
        dir.path(),
        "",
        &[("PERSONA_RUNNER_ADMIN_TOKEN", "serve-token")],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (personas, spec) = runtime.block_on(async {
        let client = persona_runner::http::client(Duration::from_secs(10));
        let personas = client
            .get(sidecar.url("/api/v1/admin/personas"))
            .bearer_auth("serve-token")
            .send()
            .await
            .unwrap();
        let spec = client.get(sidecar.url("/api/openapi.json")).send().await.unwrap();
        (
            (personas.status().as_u16(), personas.text().await.unwrap()),
            (spec.status().as_u16(), spec.text().await.unwrap()),
        )
    });
    // `serve` neither seeds nor schedules: an empty store stays empty.
    assert_eq!(personas, (200, "[]".to_string()));
    assert_eq!(spec.0, 200);
    assert!(spec.1.contains("\"/api/v1/admin/feedback\""));
    sidecar.signal("TERM");
    let status = sidecar.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{}", sidecar.log());
}

#[test]
fn admin_routes_are_closed_without_a_configured_token() {
    let dir = common::workdir_with_catalogs();
    let daemon = Daemon::start(dir.path(), "", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        persona_runner::http::client(Duration::from_secs(10))
            .post(daemon.url("/api/v1/admin/ticks"))
            .bearer_auth("anything")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_running_at_shutdown_is_cut_after_the_grace_and_recorded() {
    let dir = common::workdir_with_catalogs();
    // The LLM hangs on the second turn; the tick is then still running at SIGTERM.
    let llm = ScriptedLlm::start(vec![
        Step::Reply(tool_calls(&[("mood_log", r#"{"score": 3}"#)])),
        Step::Hang,
    ])
    .await;
    let config = format!(
        "[llm]\nprovider = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"TEST_KEY\"\n[runner]\nshutdown_grace = \"1s\"\npaused = true\n",
        llm.base_url()
    );
    let dir_path = dir.path().to_path_buf();
    let mut daemon = tokio::task::spawn_blocking(move || {
        Daemon::start(
            &dir_path,
            &config,
            &[("TEST_KEY", "k"), ("PERSONA_RUNNER_ADMIN_TOKEN", "t")],
        )
    })
    .await
    .unwrap();
    let client = persona_runner::http::client(Duration::from_secs(10));
    let accepted = client
        .post(daemon.url("/api/v1/admin/personas/persona.anna@mana.test/tick"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    let tick_id = accepted.json::<serde_json::Value>().await.unwrap()["tick_id"]
        .as_str()
        .unwrap()
        .to_string();
    let again = client
        .post(daemon.url("/api/v1/admin/personas/persona.anna@mana.test/tick"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409, "one running tick per persona");
    for _ in 0..100 {
        if llm.requests().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(llm.requests().len(), 2, "the model hangs on its second turn");

    daemon.signal("TERM");
    // While the tick drains, the sidecar still answers (health, metrics).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = client.get(daemon.url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "the sidecar outlives the drain");
    let status = tokio::task::spawn_blocking(move || {
        let status = daemon.wait_exit(Duration::from_secs(20));
        (status, daemon)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit 0 after cutting the tick");

    let store = common::default_store_in(dir.path()).await;
    let tick = store
        .get_tick(uuid::Uuid::parse_str(&tick_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tick.status, persona_runner::model::tick::TickStatus::Failed);
    assert!(tick.error.unwrap().contains("shutdown_grace"));
    assert_eq!(
        store.tick_actions(tick.id).await.unwrap().len(),
        1,
        "the call made before the cut is kept"
    );
}
