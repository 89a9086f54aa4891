//! `persona-runner replay`: the recorded calls of ticks sent again to the product, with
//! what changed; exit 1 when anything did (for CI after a product fix).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::store::TickFilter;
use persona_runner::tick::{ReplayReport, ReplayVerdict, TickRunner};
use uuid::Uuid;

use super::{App, Outcome};

/// The most ticks one `--since` selection replays.
const MAX_SELECTED: i64 = 500;

#[derive(Args)]
pub struct ReplayArgs {
    /// Tick ids to replay, in order.
    #[arg(value_name = "TICK_ID", required_unless_present = "since")]
    ticks: Vec<Uuid>,
    /// Every tick started since then (a span back like `7d`, a date or RFC 3339), oldest first.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only the ticks of this persona (email or id), with `--since`.
    #[arg(long, value_name = "EMAIL|ID", requires = "since")]
    persona: Option<String>,
    /// Send the calls to this configured target (`[targets.NAME]`) instead of the default one.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ReplayArgs, app: &App) -> Result<Outcome> {
    let store = app.store().await?;
    let mut ticks = args.ticks.clone();
    if let Some(since) = &args.since {
        let now = persona_runner::time::now();
        let since = persona_runner::time::parse_instant(since, now).map_err(|m| anyhow::anyhow!("--since: {m}"))?;
        let persona_id = match &args.persona {
            Some(id) => Some(
                store
                    .find_persona(DEFAULT_TENANT, id)
                    .await?
                    .with_context(|| format!("--persona: no persona `{id}`"))?
                    .id,
            ),
            None => None,
        };
        let filter = TickFilter {
            persona_id,
            since: Some(since),
            ..TickFilter::default()
        };
        let mut selected = store.list_ticks(DEFAULT_TENANT, &filter, MAX_SELECTED).await?;
        selected.reverse();
        ticks.extend(selected.into_iter().map(|t| t.id));
    }
    if ticks.is_empty() {
        bail!("no tick to replay: name tick ids, or widen --since");
    }
    let mut config = app.config().clone();
    if let Some(name) = &args.target {
        let target = config
            .targets
            .get(name)
            .with_context(|| format!("--target: no [targets.{name}] in the config"))?
            .clone();
        config.auth = target.auth;
        config.mcp = target.mcp;
        // Every tick's calls go to that target, whichever product its persona names.
        config.targets.clear();
    }
    // No LLM is asked: the offline driver's engine is enough to log in and call.
    config.llm.provider = persona_runner::config::LlmProvider::Offline;
    let engine = Arc::new(TickRunner::new(store, Arc::new(config), &app.env).context("preparing the replay")?);
    let mut reports = Vec::new();
    for tick in ticks {
        reports.push(
            engine
                .replay(tick)
                .await
                .with_context(|| format!("replaying tick {tick}"))?,
        );
    }
    let changed: usize = reports.iter().map(ReplayReport::changed).sum();
    if args.json {
        println!("{}", super::json(&reports)?);
    } else {
        for report in &reports {
            print_report(report);
        }
        println!(
            "{} tick(s), {} call(s) replayed: {changed} changed",
            reports.len(),
            reports
                .iter()
                .flat_map(|r| &r.calls)
                .filter(|c| !matches!(c.verdict, ReplayVerdict::Skipped(_)))
                .count()
        );
    }
    Ok(if changed == 0 {
        Outcome::Success
    } else {
        Outcome::Problems
    })
}

fn print_report(report: &ReplayReport) {
    println!("tick {} ({})", report.tick_id, report.persona);
    for call in &report.calls {
        let (mark, detail) = match &call.verdict {
            ReplayVerdict::Same => ("same", String::new()),
            ReplayVerdict::Changed(what) => ("CHANGED", format!(": {what}")),
            ReplayVerdict::Skipped(why) => ("skipped", format!(": {why}")),
        };
        println!("  #{} {} {mark}{detail}", call.seq, call.tool);
    }
}
