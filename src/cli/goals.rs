//! `persona-runner check`: run goals as check ticks, K trials each, and give the verdict a
//! CI gate reads: a table (pass@1, pass^k, flaky, what fell short), JSON, JUnit XML, and
//! the exit code (0 held, 1 fell short, 2 usage error). In this process, or `--via` a
//! daemon's admin API.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use persona_runner::check::{CheckError, Checker, Report, Selection, junit};
use persona_runner::model::goal::{CheckRun, GoalSummary, RunStatus};
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::model::tick::Trigger;
use persona_runner::tick::{TickEvent, TickRunner};
use uuid::Uuid;

use super::{App, Outcome};

#[derive(Args)]
pub struct CheckArgs {
    /// A goal by name (repeatable; default: every goal of the selected personas).
    #[arg(long = "goal", value_name = "NAME")]
    goals: Vec<String>,
    /// A persona by email or id (repeatable; default with --all: every persona with goals).
    #[arg(long = "persona", value_name = "EMAIL|ID")]
    personas: Vec<String>,
    /// Every runnable persona with goals (the default when no --persona is given).
    #[arg(long, conflicts_with = "personas")]
    all: bool,
    /// Trials per goal and persona (default: checks.trials).
    #[arg(long, value_name = "K")]
    trials: Option<u32>,
    /// Trials that must pass for a goal to hold (default: checks.min_pass, 0 = all).
    #[arg(long, value_name = "N")]
    min_pass: Option<u32>,
    /// Write the verdicts as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Print the run, the summaries and the verdicts as JSON.
    #[arg(long)]
    json: bool,
    /// Ask the daemon at this address (admin token from api.admin_token_*) to run the check.
    #[arg(long, value_name = "http://HOST:PORT")]
    via: Option<String>,
}

pub async fn run(args: CheckArgs, app: &App) -> Result<Outcome> {
    let selection = Selection {
        goals: args.goals.clone(),
        personas: args.personas.clone(),
        trials: args.trials.unwrap_or(app.config().checks.trials),
        min_pass: args.min_pass.unwrap_or(app.config().checks.min_pass),
    };
    let report = match &args.via {
        Some(via) => match via_daemon(via, &selection, app).await? {
            Ok(report) => report,
            Err(usage) => {
                eprintln!("error: {}", super::error_line(&usage));
                return Ok(Outcome::Usage);
            }
        },
        None => match locally(&selection, app, args.json).await {
            Ok(report) => report,
            Err(err) => match err.downcast_ref::<CheckError>() {
                Some(check) if check.is_usage() => {
                    eprintln!("error: {}", super::error_line(check));
                    return Ok(Outcome::Usage);
                }
                _ => return Err(err),
            },
        },
    };
    let summaries: Vec<GoalSummary> = report.goals.iter().map(|g| g.summary.clone()).collect();
    let label = |id: Uuid| {
        report
            .goals
            .iter()
            .find(|g| g.summary.persona_id == id)
            .map_or_else(|| id.to_string(), |g| g.persona.clone())
    };
    let base = args.via.clone().unwrap_or_else(|| links_base(app));
    let tick_url = |id: Uuid| format!("{}/ticks/{id}", base.trim_end_matches('/'));
    if let Some(path) = &args.junit {
        let labels: Vec<String> = summaries.iter().map(|s| label(s.persona_id)).collect();
        let mut suites: Vec<junit::Suite<'_>> = Vec::new();
        for (summary, persona) in summaries.iter().zip(&labels) {
            match suites.iter_mut().find(|s| s.persona == persona.as_str()) {
                Some(suite) => suite.goals.push(summary),
                None => suites.push(junit::Suite {
                    persona,
                    goals: vec![summary],
                }),
            }
        }
        let xml = junit::document(
            &suites,
            &report.verdicts,
            selection.needed(),
            report.run.created_at,
            &tick_url,
        );
        std::fs::write(path, xml).with_context(|| format!("writing the JUnit report {}", path.display()))?;
    }
    if args.json {
        out!("{}", super::json(&report)?);
    } else {
        print_table(&summaries, &label, &tick_url, &report.run);
    }
    let held = report.run.status == RunStatus::Done && summaries.iter().all(|s| s.holds);
    Ok(if held { Outcome::Success } else { Outcome::Problems })
}

/// Where tick pages are linked from: `checks.links_base`, else the sidecar's own address.
fn links_base(app: &App) -> String {
    let configured = &app.config().checks.links_base;
    if !configured.is_empty() {
        return configured.clone();
    }
    let mut listen = app.config().api.listen;
    if listen.ip().is_unspecified() {
        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{listen}")
}

async fn locally(selection: &Selection, app: &App, quiet: bool) -> Result<Report> {
    let store = app.store().await?;
    let config = Arc::new(app.config().clone());
    let engine =
        Arc::new(TickRunner::new(store.clone(), config.clone(), &app.env).context("preparing the tick engine")?);
    let checker = Arc::new(Checker::new(engine.clone(), store.clone(), config, &app.env)?);
    let planned = checker.plan(DEFAULT_TENANT, selection).await?;
    let trials: usize = planned.iter().map(|p| p.goals.len()).sum::<usize>() * selection.trials as usize;
    eprintln!(
        "checking {} goal(s) of {} persona(s), {} trial(s) each ({trials} check ticks) with {}; judge: {}",
        planned.iter().map(|p| p.goals.len()).sum::<usize>(),
        planned.len(),
        selection.trials,
        engine.driver_name(),
        checker.judge_version().unwrap_or("none (criteria are not judged)")
    );
    let run = checker.open_run(DEFAULT_TENANT, Trigger::Cli, selection).await?;
    let live = std::io::stderr().is_terminal() && !quiet;
    let events: Arc<dyn Fn(TickEvent) + Send + Sync> = Arc::new(move |event| {
        if live && let TickEvent::Finished { summary } = &event {
            eprintln!(
                "[{}] check tick {} {} in {} ms",
                summary.persona, summary.tick_id, summary.status, summary.duration_ms
            );
        }
    });
    checker
        .run(&run, planned, events, tokio_util::sync::CancellationToken::new())
        .await?;
    let report = persona_runner::check::report(&store, DEFAULT_TENANT, run.id)
        .await?
        .context("the check run vanished from the store")?;
    store.close().await;
    if let Some(error) = &report.run.error {
        eprintln!(
            "error: the check run stopped early: {}",
            persona_runner::redact::escape_controls(error)
        );
    }
    Ok(report)
}

fn print_table(
    summaries: &[GoalSummary],
    label: &dyn Fn(Uuid) -> String,
    tick_url: &dyn Fn(Uuid) -> String,
    run: &CheckRun,
) {
    let k = run.trials;
    let mut table = super::table(&[
        "persona",
        "goal",
        "passed",
        "pass@1",
        &format!("pass^{k}"),
        "flaky",
        "verdict",
    ]);
    for s in summaries {
        table.add_row([
            label(s.persona_id),
            s.goal.clone(),
            format!("{}/{}", s.passed, s.trials),
            format!("{:.2}", s.pass_at_1),
            if s.pass_all { "yes" } else { "no" }.to_string(),
            if s.flaky { "flaky" } else { "-" }.to_string(),
            if s.holds { "held" } else { "FELL SHORT" }.to_string(),
        ]);
    }
    out!("{table}");
    for s in summaries {
        for shortfall in &s.shortfalls {
            out!(
                "{} · {} · trial {} {} ({}):",
                label(s.persona_id),
                s.goal,
                shortfall.trial,
                shortfall.outcome,
                tick_url(shortfall.tick_id)
            );
            for unmet in &shortfall.unmet {
                out!("  - {}", persona_runner::redact::escape_controls(unmet));
            }
        }
    }
    let held = summaries.iter().filter(|s| s.holds).count();
    out!(
        "{held} of {} goal(s) held (at least {} of {k} trials each); run {}",
        summaries.len(),
        run.min_pass,
        run.id
    );
}

/// Asks the daemon to run the check, then polls it until the run ends. `Err` inside: the
/// daemon refused the request as a usage error (HTTP 422).
async fn via_daemon(base: &str, selection: &Selection, app: &App) -> Result<Result<Report, String>> {
    let token = app.config().admin_token(&app.env)?.with_context(|| {
        format!(
            "--via needs the daemon's admin token: set {}",
            app.config().api.admin_token_env
        )
    })?;
    let http = persona_runner::http::client(Duration::from_secs(30));
    let base = base.trim_end_matches('/');
    let response = http
        .post(format!("{base}/api/v1/admin/checks"))
        .bearer_auth(token.expose())
        .json(selection)
        .send()
        .await
        .with_context(|| format!("asking the daemon at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
        return Ok(Err(body["error"]
            .as_str()
            .unwrap_or("the daemon refused the check")
            .to_string()));
    }
    if !status.is_success() {
        anyhow::bail!(
            "the daemon at {base} answered HTTP {}: {}",
            status.as_u16(),
            body["error"].as_str().unwrap_or_default()
        );
    }
    let id = body["id"]
        .as_str()
        .context("the daemon's answer has no check id")?
        .to_string();
    eprintln!("check run {id} accepted by {base}; waiting for it to end");
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let response = http
            .get(format!("{base}/api/v1/admin/checks/{id}"))
            .bearer_auth(token.expose())
            .send()
            .await
            .with_context(|| format!("polling the check run at {base}"))?;
        if !response.status().is_success() {
            anyhow::bail!("polling check run {id}: HTTP {}", response.status().as_u16());
        }
        let report: Report = response.json().await.context("reading the check run")?;
        if report.run.status != RunStatus::Running {
            return Ok(Ok(report));
        }
    }
}
