//! The binary as an operator uses it: commands, exit codes, output, redaction.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_persona-runner");

/// Runs the binary in `dir` with a clean environment (no inherited overrides or secrets).
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    common::run_binary(dir, args, env)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_command() {
    let out = run_in(Path::new("."), &["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for command in [
        "run", "serve", "tick", "catalog", "feedback", "personas", "migrate", "password", "config",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "`{command}` missing from:\n{help}"
        );
    }
}

#[test]
fn password_prints_the_reference_vector_and_production_refuses_the_dev_secret() {
    let dir = common::workdir_with_catalogs();
    let out = run_in(dir.path(), &["password", "persona.anna@mana.test"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1FJ7w8KbjK5CWVa8NqfobexAFNuQKxiA");
    assert!(text(&out.stderr).contains("development fallback"));

    let production = [("PERSONA_RUNNER__ENVIRONMENT", "production")];
    let out = run_in(dir.path(), &["password", "persona.anna@mana.test"], &production);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("PERSONA_SEED_SECRET"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let dev_in_prod = [
        ("PERSONA_RUNNER__ENVIRONMENT", "production"),
        ("PERSONA_SEED_SECRET", "dev-persona-seed-secret-rotate-in-prod"),
    ];
    let out = run_in(dir.path(), &["password", "persona.anna@mana.test"], &dev_in_prod);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("development fallback") && !stderr.contains("rotate-in-prod"),
        "{stderr}"
    );
}

#[test]
fn validate_reports_every_problem_and_fails() {
    let dir = common::workdir_with_catalogs();
    let out = run_in(dir.path(), &["catalog", "validate"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("catalog/consumer-app.json (10 personas)"));
    assert!(text(&out.stdout).contains("catalog/sop-finance.json (12 personas, target sop-finance)"));

    let catalog = std::fs::read_to_string(dir.path().join("catalog/consumer-app.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    value["personas"][3]["email"] = "someone@gmail.com".into();
    value["personas"][5]["tickCadence"] = "every tuesday".into();
    value["personas"][7]["mood"] = 1.into();
    std::fs::write(dir.path().join("broken.json"), value.to_string()).unwrap();
    let out = run_in(dir.path(), &["catalog", "validate", "broken.json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for path in [
        "personas[3].email: must end in a test domain",
        "personas[5].tickCadence",
        "personas[7].mood: unknown field",
        // The space CEO-Tandem still names the email persona 3 no longer has.
        "spaces[2].members[1]: `persona.matthias@mana.test` is not a persona of this catalog",
    ] {
        assert!(stdout.contains(path), "`{path}` missing from:\n{stdout}");
    }
    assert!(text(&out.stderr).contains("4 problem(s)"));
}

#[test]
fn seed_twice_then_list_show_and_cleanup_on_the_embedded_default() {
    let dir = common::workdir_with_catalogs();
    let out = run_in(dir.path(), &["catalog", "seed"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("22 created, 0 updated, 0 unchanged"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        dir.path().join("data/persona-runner.db").is_file(),
        "the default SQLite file and folder are created"
    );

    let out = run_in(dir.path(), &["catalog", "seed", "--json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report,
        serde_json::json!({"created": 0, "updated": 0, "unchanged": 22, "spaces": 5})
    );

    let out = run_in(dir.path(), &["personas", "list", "--json"], &[]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 22);
    let out = run_in(dir.path(), &["personas", "list"], &[]);
    assert!(text(&out.stdout).contains("persona.anna@mana.test") && text(&out.stdout).contains("22 personas"));

    let out = run_in(dir.path(), &["personas", "show", "PERSONA.ANNA@mana.test"], &[]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("archetype:     adhd-student"),
        "{}",
        text(&out.stdout)
    );
    let out = run_in(dir.path(), &["personas", "show", "cfo@chainalign.test", "--json"], &[]);
    let cfo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfo["flow"], "Financial");
    let out = run_in(dir.path(), &["personas", "show", "nobody@mana.test"], &[]);
    assert_eq!(out.status.code(), Some(1));

    let out = run_in(dir.path(), &["catalog", "cleanup", "catalog/consumer-app.json"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("deleted 22 persona users"));
    assert!(text(&out.stderr).contains("cfo@chainalign.test was in the store but in no catalog"));
}

#[test]
fn migrate_reports_the_schema_version() {
    let dir = common::workdir_with_catalogs();
    let out = run_in(
        dir.path(),
        &["migrate"],
        &[("PERSONA_RUNNER__DATABASE__MIGRATE_ON_START", "false")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("8 of 8 migrations applied (8 new)"),
        "{}",
        text(&out.stdout)
    );
    let out = run_in(dir.path(), &["migrate"], &[]);
    assert!(text(&out.stdout).contains("(0 new)"), "{}", text(&out.stdout));
}

#[test]
fn config_check_prints_the_effective_config_without_secrets() {
    let dir = common::workdir_with_catalogs();
    std::fs::write(dir.path().join("seed"), "file-seed-secret-value\n").unwrap();
    std::fs::write(
        dir.path().join("custom.toml"),
        "[auth]\nseed_secret_file = \"seed\"\n[database]\nmax_connections = 3\n",
    )
    .unwrap();
    let env = [
        ("PERSONA_RUNNER_CONFIG", "custom.toml"),
        ("PERSONA_RUNNER__DATABASE__URL", "sqlite://check.db"),
        ("PERSONA_SEED_SECRET", "env-seed-secret-value"),
    ];
    let out = run_in(dir.path(), &["config", "check"], &env);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("# config: custom.toml"));
    assert!(stdout.contains("# overridden by PERSONA_RUNNER__DATABASE__URL"));
    assert!(stdout.contains("max_connections = 3") && stdout.contains("url = \"sqlite://check.db\""));
    assert!(stdout.contains("# seed secret: set, from file seed"), "{stdout}");
    assert!(!stdout.contains("seed-secret-value"), "{stdout}");
    assert!(
        stdout.contains("# traces: off (set OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{stdout}"
    );
    // Checking changes nothing: no database file is created, no migration applied.
    assert!(stdout.contains("check.db does not exist yet"), "{stdout}");
    assert!(
        !dir.path().join("check.db").exists(),
        "config check created the database"
    );
    assert!(run_in(dir.path(), &["migrate"], &env).status.success());
    let migrated = std::fs::read(dir.path().join("check.db")).unwrap();
    let out = run_in(dir.path(), &["config", "check"], &env);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("# database: reachable (8 of 8 migrations applied)"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("check.db")).unwrap(),
        migrated,
        "the file is untouched"
    );

    // URLs are shown with their credentials masked; static mode without a token fails.
    let env = [
        ("PERSONA_RUNNER__AUTH__MODE", "static"),
        (
            "PERSONA_RUNNER__AUTH__LOGIN_URL",
            "https://bot:hunter2@login.test/in?token=abc",
        ),
        ("PERSONA_RUNNER__MCP__URL", "https://mcp.test/mcp?api_key=k1"),
        ("PERSONA_RUNNER__DATABASE__URL", "sqlite://check.db"),
    ];
    let out = run_in(dir.path(), &["config", "check"], &env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("# gateway token: ERROR: auth.mode = \"static\" needs a token"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2") && !stdout.contains("abc") && !stdout.contains("k1"),
        "{stdout}"
    );
    assert!(stdout.contains("https://bot:***@login.test/in?token=***"), "{stdout}");

    // A password in the URL is masked even when the database is unreachable.
    let env = [
        (
            "PERSONA_RUNNER__DATABASE__URL",
            "postgres://runner:hunter2@127.0.0.1:1/x",
        ),
        ("PERSONA_RUNNER__DATABASE__CONNECT_TIMEOUT", "1s"),
    ];
    let out = run_in(dir.path(), &["config", "check"], &env);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        all.contains("runner:***@127.0.0.1") && !all.contains("hunter2"),
        "{all}"
    );
}

#[test]
fn bad_config_is_rejected_with_the_key() {
    let dir = common::workdir_with_catalogs();
    let out = run_in(
        dir.path(),
        &["personas", "list"],
        &[("PERSONA_RUNNER__LOG__FORMAT", "xml")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`log.format` (from PERSONA_RUNNER__LOG__FORMAT)") && stderr.contains("json"),
        "{stderr}"
    );
}

/// The sample gateway as its own process on a free port, killed on drop.
struct GatewayProcess {
    child: std::process::Child,
    port: u16,
}

impl GatewayProcess {
    fn start(dir: &Path) -> Self {
        let port = common::free_port();
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .args(["sample-gateway", "--listen", &format!("127.0.0.1:{port}")])
            .env_clear()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the sample gateway did not start");
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PERSONA_RUNNER__AUTH__LOGIN_URL".into(),
                format!("http://127.0.0.1:{}/api/v1/auth/login", self.port),
            ),
            (
                "PERSONA_RUNNER__MCP__URL".into(),
                format!("http://127.0.0.1:{}/mcp", self.port),
            ),
        ]
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tick_runs_personas_in_process_and_reports_each() {
    let dir = common::workdir_with_catalogs();
    let gateway = GatewayProcess::start(dir.path());
    let env = gateway.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert!(run_in(dir.path(), &["catalog", "seed"], &env).status.success());

    let out = run_in(dir.path(), &["tick", "--persona", "persona.anna@mana.test"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("persona.anna@mana.test") && stdout.contains(" ok "),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("with offline"),
        "no API key: the offline driver"
    );

    let out = run_in(dir.path(), &["tick", "--persona", "nobody@mana.test"], &env);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no persona with id or email `nobody@mana.test`"));

    let mut all_env = env.clone();
    all_env.push(("PERSONA_RUNNER__SCHEDULER__CONCURRENCY", "3"));
    all_env.push(("PERSONA_RUNNER__LOG__LEVEL", "warn"));
    let out = run_in(dir.path(), &["tick", "--all", "--json"], &all_env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The caps on body-printing dependencies only lower their level: under `warn`, the MCP
    // client's info lines (one per session opened and closed) stay out.
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains("rmcp") && !stderr.contains("INFO"),
        "log.level = warn still printed info lines:\n{stderr}"
    );
    let summaries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // The 12 role personas belong to the `sop-finance` target, which is not configured.
    assert_eq!(summaries.len(), 10);
    assert!(summaries.iter().all(|s| s["status"] == "ok"), "{summaries:#?}");

    // Never more than tick.concurrency ticks at once: check the recorded intervals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let overlap = runtime.block_on(async {
        let store = common::default_store_in(dir.path()).await;
        let mut edges = Vec::new();
        for summary in &summaries {
            let id = uuid::Uuid::parse_str(summary["tick_id"].as_str().unwrap()).unwrap();
            let tick = store.get_tick(id).await.unwrap().unwrap();
            edges.push((tick.started_at, 1));
            edges.push((tick.finished_at.unwrap(), -1));
        }
        edges.sort();
        edges
            .iter()
            .scan(0, |running, (_, step)| {
                *running += step;
                Some(*running)
            })
            .max()
            .unwrap()
    });
    assert!(overlap <= 3, "{overlap} ticks ran at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_reports_the_model_and_warns_when_a_first_request_does_not_fit() {
    let llm = common::ScriptedLlm::start(Vec::new()).await;
    let dir = common::workdir_with_catalogs();
    let base_url = llm.base_url();
    // No product listens here (not even a sample gateway on the default port).
    let nowhere = format!("http://127.0.0.1:{}", common::free_port());
    let (login, mcp) = (format!("{nowhere}/login"), format!("{nowhere}/mcp"));
    let env = [
        ("PERSONA_RUNNER__DATABASE__URL", "sqlite://check.db"),
        ("PERSONA_RUNNER__AUTH__LOGIN_URL", login.as_str()),
        ("PERSONA_RUNNER__MCP__URL", mcp.as_str()),
        ("PERSONA_RUNNER__LLM__PROVIDER", "openai"),
        ("PERSONA_RUNNER__LLM__BASE_URL", base_url.as_str()),
        ("OPENAI_API_KEY", "sk-local-check"),
    ];
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            run_in(&dir, &["config", "check"], &env)
        }
    })
    .await
    .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("serves test-model; context window 1024 tokens (from /models)"),
        "{stdout}"
    );
    // No product runs here: the estimate leaves the tools out, and still exceeds 1024.
    assert!(stdout.contains("# product: not reachable now"), "{stdout}");
    assert!(stdout.contains("estimated"), "{stdout}");
    assert!(
        stdout.contains("WARNING: that is more than the model's context window of 1024 tokens"),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-local-check"), "the key is never printed");
}
