//! The workloads: each prepares a store, a sample gateway and (where needed) the scripted
//! LLM, runs the release runner as a child, and prints its figures.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use persona_runner::config::{DatabaseConfig, DatabaseUrl};
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::store::Store;
use serde_json::json;

use crate::measure::{self, Usage, median};

pub struct Options {
    pub binary: PathBuf,
    pub runs: usize,
    pub personas: Option<usize>,
    pub postgres: Option<String>,
    /// Scale: personas on a two-minute cron (the rest are idle); 0 measures idle alone.
    pub busy: Option<usize>,
}

const ARCHETYPES: [&str; 4] = ["solo-dev", "researcher", "freelancer", "ceo-busy"];
const HISTORY_MODULES: [&str; 3] = ["todo", "journal", "notes"];
const SEED: &str = "bench-seed-secret-not-for-production";

/// A working folder with a config, a catalog and a running sample gateway.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    _gateway: measure::Guard,
}

impl Setup {
    /// `personas` personas with `cadence`; `extra` TOML appended to the config.
    async fn new(binary: &Path, personas: usize, cadence: &dyn Fn(usize) -> String, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let port = measure::free_port();
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"sqlite://{db}\"\n\
                 [auth]\nlogin_url = \"http://127.0.0.1:{port}/api/v1/auth/login\"\nseed_secret_env = \"BENCH_SEED\"\n\
                 [mcp]\nurl = \"http://127.0.0.1:{port}/mcp\"\ntool_calls_per_minute = 0\ntool_calls_per_minute_per_persona = 0\n\
                 [catalog]\nfiles = [\"catalog.json\"]\nallowed_email_domains = [\"test\"]\n\
                 [log]\nlevel = \"warn\"\n{extra}\n",
                db = dir.path().join("bench.db").display(),
            ),
        )
        .expect("write the config");
        write_catalog(&dir.path().join("catalog.json"), personas, cadence);
        let gateway = measure::spawn(
            binary,
            dir.path(),
            &[
                "--config",
                config.to_str().unwrap(),
                "sample-gateway",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ],
            &[("BENCH_SEED", SEED)],
        );
        measure::wait_for(&format!("http://127.0.0.1:{port}/mcp")).await;
        Self {
            dir,
            config,
            _gateway: gateway,
        }
    }

    fn command(&self, binary: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(self.dir.path())
            .env("BENCH_SEED", SEED)
            .env("BENCH_LLM_KEY", "sk-bench");
        command
    }

    async fn seed(&self, binary: &Path) -> Usage {
        let (usage, status, _) = measure::run(self.command(binary, &["catalog", "seed"])).await;
        assert!(status.success(), "seeding failed");
        usage
    }

    async fn store(&self) -> Store {
        let config = DatabaseConfig {
            url: DatabaseUrl::new(format!("sqlite://{}", self.dir.path().join("bench.db").display())),
            ..DatabaseConfig::default()
        };
        Store::open(&config, None).await.expect("open the bench store")
    }
}

fn write_catalog(path: &Path, personas: usize, cadence: &dyn Fn(usize) -> String) {
    use std::io::Write as _;
    let file = std::fs::File::create(path).expect("create the catalog");
    let mut out = std::io::BufWriter::new(file);
    write!(out, "{{\"personas\": [").unwrap();
    for i in 0..personas {
        if i > 0 {
            write!(out, ",").unwrap();
        }
        let persona = json!({
            "name": format!("Bench {i}"),
            "email": format!("persona.bench-{i}@bench.test"),
            "archetype": ARCHETYPES[i % 4],
            "systemPrompt": "Du bist eine vielbeschäftigte Person, die ihren Alltag mit einer Organizer-App ordnet: Aufgaben, Notizen, Termine und Stimmung.",
            "moduleMix": {"todo": 3, "journal": 2, "notes": 2, "mood": 1, "calendar": 1, "contacts": 1},
            "tickCadence": cadence(i),
            "timeZone": "Europe/Berlin",
        });
        write!(out, "{persona}").unwrap();
    }
    write!(out, "]}}").unwrap();
}

/// Adds `per_persona` interactions of history to every persona user (as months of ticks
/// would have left).
async fn add_history(store: &Store, per_persona: usize) {
    let personas = store.list_personas(DEFAULT_TENANT).await.expect("personas");
    for persona in personas {
        let Some(user_id) = persona.user_id else { continue };
        let interactions: Vec<_> = (0..per_persona)
            .map(|n| persona_runner::model::profile::NewInteraction {
                tenant_id: DEFAULT_TENANT,
                user_id,
                persona_id: Some(persona.id),
                tick_id: None,
                interaction_type: persona_runner::model::profile::InteractionType::ActionTaken,
                page_type: Some("mcp".into()),
                page_id: None,
                element_id: Some("todo.create".into()),
                element_type: Some("tool".into()),
                metadata: json!({"action_id": "todo.create", "module": HISTORY_MODULES[n % 3], "result": "ok"}),
                duration_seconds: None,
                feedback_sentiment: None,
                feedback_comment: None,
            })
            .collect();
        let mut delta = persona_runner::model::profile::Observed::default();
        for i in &interactions {
            delta.add(i.interaction_type, &i.metadata);
        }
        store
            .record_interactions(
                DEFAULT_TENANT,
                user_id,
                &interactions,
                persona_runner::model::profile::learn,
                &delta,
            )
            .await
            .expect("history");
    }
}

/// One measured run of `tick --all`: usage and audited calls.
async fn tick_all(setup: &Setup, binary: &Path, env: &[(&str, &str)]) -> (Usage, i64) {
    let store = setup.store().await;
    let before = store.row_counts(DEFAULT_TENANT).await.expect("counts").actions;
    let mut command = setup.command(binary, &["tick", "--all", "--json"]);
    command.envs(env.iter().copied());
    let (usage, status, _) = measure::run(command).await;
    assert!(status.success(), "the ticks failed");
    let after = store.row_counts(DEFAULT_TENANT).await.expect("counts").actions;
    store.close().await;
    (usage, after - before)
}

fn print_row(name: &str, figures: &[(&str, String)]) {
    let line: Vec<String> = figures.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("{name:<32} {}", line.join(" | "));
}

/// Scripted LLM: `personas` × 20 calls, CPU per 1,000 audited calls and peak memory,
/// without and with 2,000 interactions of history per persona.
pub async fn scripted(options: &Options) {
    let personas = options.personas.unwrap_or(200);
    let llm = crate::llm::start(20).await;
    for history in [0usize, 2000] {
        let mut cpu = Vec::new();
        let mut rss = Vec::new();
        let mut rates = Vec::new();
        for _ in 0..options.runs {
            let extra = format!(
                "[llm]\nprovider = \"openai\"\nbase_url = \"{llm}\"\napi_key_env = \"BENCH_LLM_KEY\"\nrequests_per_minute = 0\n\
                 [tick]\nmax_tool_calls = 20\nmax_turns = 8\n[runner]\nconcurrency = 8\n"
            );
            let setup = Setup::new(&options.binary, personas, &|_| "daily".into(), &extra).await;
            setup.seed(&options.binary).await;
            if history > 0 {
                let store = setup.store().await;
                add_history(&store, history).await;
                store.close().await;
            }
            let (usage, calls) = tick_all(&setup, &options.binary, &[]).await;
            cpu.push(usage.cpu_seconds / calls as f64 * 1000.0);
            rss.push(usage.peak_rss_mib);
            rates.push(calls as f64 / usage.wall.as_secs_f64());
        }
        print_row(
            &format!("scripted {personas}x20, history {history}"),
            &[
                ("CPU s/1k calls", format!("{:.3}", median(cpu))),
                ("peak RSS MiB", format!("{:.1}", median(rss))),
                ("calls/s", format!("{:.0}", median(rates))),
            ],
        );
    }
}

/// Offline driver: `personas` ticks at concurrency 32, audited calls per second.
pub async fn offline(options: &Options) {
    let personas = options.personas.unwrap_or(1000);
    let mut rates = Vec::new();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..options.runs {
        let extra = "[llm]\nprovider = \"offline\"\n[runner]\nconcurrency = 32\n";
        let setup = Setup::new(&options.binary, personas, &|_| "daily".into(), extra).await;
        setup.seed(&options.binary).await;
        let (usage, calls) = tick_all(&setup, &options.binary, &[]).await;
        rates.push(calls as f64 / usage.wall.as_secs_f64());
        cpu.push(usage.cpu_seconds / calls as f64 * 1000.0);
        rss.push(usage.peak_rss_mib);
    }
    print_row(
        &format!("offline {personas} personas"),
        &[
            ("audited calls/s", format!("{:.0}", median(rates))),
            ("CPU s/1k calls", format!("{:.3}", median(cpu))),
            ("peak RSS MiB", format!("{:.1}", median(rss))),
        ],
    );
}

/// Per-call latency over one MCP session, keep-alive on and off, against the sample
/// gateway (and a Python MCP server on uvicorn when `python3 -c "import mcp"` works).
pub async fn pooling(options: &Options) {
    for keep_alive in [true, false] {
        let extra = "[llm]\nprovider = \"offline\"\n[runner]\nconcurrency = 1\n[tick]\nmax_tool_calls = 20\n";
        let setup = Setup::new(&options.binary, 20, &|_| "daily".into(), extra).await;
        setup.seed(&options.binary).await;
        let flag = if keep_alive { "true" } else { "false" };
        tick_all(&setup, &options.binary, &[("PERSONA_RUNNER__HTTP__KEEP_ALIVE", flag)]).await;
        let store = setup.store().await;
        let latencies = call_latencies(&store).await;
        store.close().await;
        print_row(
            &format!("sample gateway, keep-alive {flag}"),
            &[
                ("calls", latencies.len().to_string()),
                ("p50 ms", format!("{:.1}", percentile(&latencies, 0.5))),
                ("p99 ms", format!("{:.1}", percentile(&latencies, 0.99))),
            ],
        );
    }
    python_pooling(options).await;
}

async fn call_latencies(store: &Store) -> Vec<f64> {
    let filter = persona_runner::store::ActionFilter {
        result: Some(persona_runner::model::call::CallResult::Ok),
        ..Default::default()
    };
    store
        .list_calls(DEFAULT_TENANT, &filter, 100_000)
        .await
        .expect("actions")
        .into_iter()
        .filter_map(|(a, _)| a.latency_ms.map(f64::from))
        .collect()
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The same against the official Python SDK's server on uvicorn, when it is installed.
async fn python_pooling(options: &Options) {
    let available = Command::new("python3")
        .args(["-c", "import mcp, uvicorn"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        println!("python MCP server                (skipped: pip install mcp uvicorn)");
        return;
    }
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/workload/echo_server.py");
    for keep_alive in [true, false] {
        let dir = tempfile::tempdir().expect("a folder");
        let port = measure::free_port();
        let _python = measure::Guard(
            Command::new("python3")
                .arg(&server)
                .arg(port.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start the Python server"),
        );
        measure::wait_for(&format!("http://127.0.0.1:{port}/mcp")).await;
        let config = dir.path().join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "[database]\nurl = \"sqlite://{db}\"\n[auth]\nmode = \"none\"\n\
                 [mcp]\nurl = \"http://127.0.0.1:{port}/mcp\"\ntool_calls_per_minute = 0\ntool_calls_per_minute_per_persona = 0\n\
                 [llm]\nprovider = \"offline\"\n[tick]\nmax_tool_calls = 20\n[catalog]\nfiles = [\"catalog.json\"]\n[log]\nlevel = \"warn\"\n",
                db = dir.path().join("bench.db").display()
            ),
        )
        .expect("config");
        write_catalog(&dir.path().join("catalog.json"), 20, &|_| "daily".into());
        let run = |args: &[&str]| {
            let mut command = Command::new(&options.binary);
            command
                .arg("--config")
                .arg(&config)
                .args(args)
                .current_dir(dir.path())
                .env(
                    "PERSONA_RUNNER__HTTP__KEEP_ALIVE",
                    if keep_alive { "true" } else { "false" },
                );
            command
        };
        measure::run(run(&["catalog", "seed"])).await;
        measure::run(run(&["tick", "--all", "--json"])).await;
        let store = Store::open(
            &DatabaseConfig {
                url: DatabaseUrl::new(format!("sqlite://{}", dir.path().join("bench.db").display())),
                ..DatabaseConfig::default()
            },
            None,
        )
        .await
        .expect("store");
        let latencies = call_latencies(&store).await;
        store.close().await;
        print_row(
            &format!("python (uvicorn), keep-alive {keep_alive}"),
            &[
                ("calls", latencies.len().to_string()),
                ("p50 ms", format!("{:.1}", percentile(&latencies, 0.5))),
                ("p99 ms", format!("{:.1}", percentile(&latencies, 0.99))),
            ],
        );
    }
}

/// The QA report at `personas`·… 1,000,000 actions: time to build it, both stores.
pub async fn report(options: &Options) {
    let actions = options.personas.unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a folder");
    let sqlite = format!("sqlite://{}", dir.path().join("report.db").display());
    let mut urls = vec![("sqlite", sqlite)];
    if let Some(url) = &options.postgres {
        urls.push(("postgres", url.clone()));
    }
    for (backend, url) in urls {
        let store = Store::open(
            &DatabaseConfig {
                url: DatabaseUrl::new(url.clone()),
                ..DatabaseConfig::default()
            },
            None,
        )
        .await
        .expect("store");
        let started = Instant::now();
        crate::history::fill(&store, &url, actions).await;
        let filled = started.elapsed();
        let scope = persona_runner::store::RatingScope {
            tenant: DEFAULT_TENANT,
            from: persona_runner::time::now() - chrono::Duration::days(7),
            until: persona_runner::time::now(),
            module: None,
            persona_id: None,
            archetype: None,
        };
        let rules = persona_runner::config::FeedbackConfig::default();
        let mut times = Vec::new();
        for _ in 0..options.runs {
            let started = Instant::now();
            let report = persona_runner::feedback::report(&store, &scope, &rules)
                .await
                .expect("report");
            times.push(started.elapsed().as_secs_f64());
            assert!(report.ratings > 0);
        }
        let size = store
            .sqlite_file()
            .and_then(|f| std::fs::metadata(f).ok())
            .map(|m| m.len());
        store.close().await;
        print_row(
            &format!("report, {actions} actions, {backend}"),
            &[
                ("report s", format!("{:.3}", median(times))),
                ("filled in s", format!("{:.0}", filled.as_secs_f64())),
                (
                    "store MiB",
                    size.map_or("-".into(), |s| format!("{:.0}", s as f64 / 1048576.0)),
                ),
            ],
        );
    }
}

/// 100,000 personas in the daemon: seeding, first schedule, memory, idle CPU, reloads,
/// and the dispatch lag of a steady stream of due personas.
pub async fn scale(options: &Options) {
    let personas = options.personas.unwrap_or(100_000);
    // A yearly slot for almost everyone (idle), and a two-minute cron for a few hundred
    // (a steady stream of due ticks, spread by a minute of jitter).
    let busy = options.busy.unwrap_or(400);
    let cadence = move |i: usize| {
        if i < busy {
            "*/2 * * * *".to_string()
        } else {
            "0 3 1 1 *".to_string()
        }
    };
    let extra = "[llm]\nprovider = \"offline\"\n[runner]\nconcurrency = 16\njitter = \"60s\"\n[api]\nlisten = \"127.0.0.1:PORT\"\n";
    let api_port = measure::free_port();
    let extra = extra.replace("PORT", &api_port.to_string());
    let setup = Setup::new(&options.binary, personas, &cadence, &extra).await;
    let seeding = setup.seed(&options.binary).await;
    print_row(
        &format!("seed {personas} personas"),
        &[
            ("s", format!("{:.1}", seeding.wall.as_secs_f64())),
            (
                "personas/s",
                format!("{:.0}", personas as f64 / seeding.wall.as_secs_f64()),
            ),
            ("peak RSS MiB", format!("{:.1}", seeding.peak_rss_mib)),
        ],
    );
    let mut daemon = setup.command(&options.binary, &["run"]);
    daemon
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let started = Instant::now();
    let child = measure::Guard(daemon.spawn().expect("start the daemon"));
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    loop {
        if let Ok(response) = client.get(format!("{base}/ready")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the daemon did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = started.elapsed();
    // Let the first plans be written and the loads stop overlapping the seeding (a load
    // reads again what changed within a minute before the previous one began), then
    // measure a minute.
    tokio::time::sleep(Duration::from_secs(90)).await;
    let before = measure::sample(pid).expect("the daemon runs");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = measure::sample(pid).expect("the daemon runs");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let lag_p99 = histogram_quantile(&metrics, "persona_runner_scheduler_lag_seconds", 0.99);
    let reload_mean = histogram_mean(&metrics, "persona_runner_scheduler_reload_seconds");
    let ticks = metric_sum(&metrics, "persona_runner_ticks_total");
    print_row(
        &format!("daemon, {personas} personas, {busy} busy"),
        &[
            ("ready s", format!("{:.1}", ready.as_secs_f64())),
            ("RSS MiB", format!("{:.1}", after.rss_mib)),
            ("peak RSS MiB", format!("{:.1}", after.peak_rss_mib)),
            (
                "CPU % of a core",
                format!("{:.2}", (after.cpu_seconds - before.cpu_seconds) / 60.0 * 100.0),
            ),
            ("reload ms", format!("{:.1}", reload_mean * 1000.0)),
            ("lag p99 ms", format!("{:.0}", lag_p99 * 1000.0)),
            ("ticks", format!("{ticks:.0}")),
        ],
    );
    drop(child);
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Buckets of a histogram: (upper bound, cumulative count).
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (bound, rest) = rest.split_once('"')?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let buckets = buckets(text, name);
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count >= total * q)
        .map_or(f64::NAN, |(bound, _)| *bound)
}

fn histogram_mean(text: &str, name: &str) -> f64 {
    let sum = metric_sum(text, &format!("{name}_sum"));
    let count = metric_sum(text, &format!("{name}_count"));
    sum / count
}
