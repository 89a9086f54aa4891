//! `persona-runner feedback`: the QA report (the same builder as the admin API and the
//! dashboard) as a table, JSON or CSV.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use persona_runner::feedback::{FeedbackReport, GroupReport};
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::store::RatingScope;

use super::{App, Outcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Args)]
pub struct FeedbackArgs {
    /// Window start: a span back from now (7d, 12h), an RFC 3339 time or a date
    /// (default: feedback.window, 7 days).
    #[arg(long)]
    since: Option<String>,
    /// Window end (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only this module.
    #[arg(long)]
    module: Option<String>,
    /// Only this persona (id or email).
    #[arg(long)]
    persona: Option<String>,
    /// Only this archetype.
    #[arg(long)]
    archetype: Option<String>,
    /// The per-space view instead: each shared space's cross-member interactions,
    /// conflicts, denials and ratings per member.
    #[arg(long)]
    spaces: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Same as --format json.
    #[arg(long, hide = true)]
    json: bool,
}

pub async fn run(args: FeedbackArgs, app: &App) -> Result<Outcome> {
    let rules = &app.config().feedback;
    let window = persona_runner::feedback::window(
        args.since.as_deref(),
        args.until.as_deref(),
        rules.window.0,
        persona_runner::time::now(),
    )
    .map_err(|bad| anyhow::anyhow!("--{}: {}", bad.name, bad.message))?;

    let store = app.store().await?;
    if args.spaces {
        let views = persona_runner::feedback::spaces::space_views(&store, DEFAULT_TENANT, &window).await;
        store.close().await;
        let views = views.context("building the per-space view")?;
        match (args.json, args.format) {
            (true, _) | (_, Format::Json) => out!("{}", super::json(&views)?),
            (_, Format::Csv) => anyhow::bail!("--spaces: CSV is not offered; use --format table or json"),
            (_, Format::Table) => super::space_report::print(&views),
        }
        return Ok(Outcome::Success);
    }
    let persona_id = match &args.persona {
        None => None,
        Some(who) => Some(
            store
                .find_persona(DEFAULT_TENANT, who)
                .await?
                .with_context(|| {
                    format!(
                        "--persona: no persona `{who}` (give an id or an email; see `persona-runner personas list`)"
                    )
                })?
                .id,
        ),
    };
    let scope = RatingScope {
        tenant: DEFAULT_TENANT,
        from: window.since,
        until: window.until,
        module: args.module.clone(),
        persona_id,
        archetype: args.archetype.clone(),
    };
    let report = persona_runner::feedback::report(&store, &scope, rules)
        .await
        .context("building the feedback report")?;
    store.close().await;

    let format = if args.json { Format::Json } else { args.format };
    match format {
        Format::Json => out!("{}", super::json(&report)?),
        Format::Csv => out!("{}", persona_runner::feedback::to_csv(&report).trim_end()),
        Format::Table => print_tables(&report),
    }
    Ok(Outcome::Success)
}

fn group_table(title: &str, groups: &[GroupReport]) {
    if groups.is_empty() {
        return;
    }
    let mut table = super::table(&[
        title,
        "average",
        "ratings",
        "1/2/3/4/5",
        "errors",
        "latency",
        "previous",
        "change",
    ]);
    for g in groups {
        let dist: Vec<String> = g.distribution.iter().map(i64::to_string).collect();
        let change = match g.change {
            Some(c) if g.regression => format!("{c:+.2} REGRESSION"),
            Some(c) => format!("{c:+.2}"),
            None if g.simulator_changed => "simulator changed".into(),
            None => "-".into(),
        };
        table.add_row([
            g.label.clone(),
            format!("{:.2}", g.average),
            g.count.to_string(),
            dist.join("/"),
            g.error_rate.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
            g.mean_latency_ms.map_or("-".into(), |l| format!("{l:.0} ms")),
            g.previous_average
                .map_or("-".into(), |p| format!("{p:.2} ({})", g.previous_count)),
            change,
        ]);
    }
    out!("{table}");
}

fn print_tables(report: &FeedbackReport) {
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    if report.ratings == 0 {
        out!(
            "no ratings from {} to {} (tick some personas first: `persona-runner tick --all`)",
            fmt(report.window.since),
            fmt(report.window.until)
        );
        return;
    }
    out!(
        "ratings from {} to {}: {} ratings, average {:.2}; compared with {} to {}",
        fmt(report.window.since),
        fmt(report.window.until),
        report.ratings,
        report.average.unwrap_or_default(),
        fmt(report.previous_window.since),
        fmt(report.previous_window.until)
    );
    group_table("module", &report.modules);
    group_table("archetype", &report.archetypes);
    group_table("persona", &report.personas);
    if report.regressions.is_empty() {
        out!(
            "no regressions (a drop of at least {} on at least {} ratings in both windows)",
            report.regression_drop,
            report.regression_min_ratings
        );
    } else {
        out!("regressions:");
        for r in &report.regressions {
            out!(
                "  {} {}: {:.2} -> {:.2} ({:+.2}, {} vs {} ratings)",
                r.grouping,
                r.label,
                r.previous_average,
                r.average,
                r.change,
                r.previous_count,
                r.count
            );
        }
    }
    for change in &report.simulator_changes {
        out!("simulator: {}", change.note);
    }
    for simulator in &report.simulators {
        out!(
            "simulator {}: {} ratings, average {:.2}, leniency {}",
            simulator.simulator,
            simulator.ratings,
            simulator.average,
            simulator
                .leniency
                .map_or("- (no evidence)".into(), |l| format!("{l:+.2} against the evidence"))
        );
    }
    print_goals(report);
    for fit in &report.fitness {
        out!(
            "fitness of {}: {} ticks, {} idle ({:.0}%), {} calls ({} recovered from text, {} to unknown tools, \
             {} refused by the schema), ratings {} valid at once, {} after repair, {} invalid",
            if fit.simulator.is_empty() {
                "(unknown)"
            } else {
                &fit.simulator
            },
            fit.ticks,
            fit.idle,
            fit.idle_rate * 100.0,
            fit.calls,
            fit.recovered,
            fit.unknown_tools,
            fit.schema_refused,
            fit.ratings_valid_first,
            fit.ratings_valid_repaired,
            fit.ratings_invalid
        );
    }
    if !report.lowest_notes.is_empty() {
        out!("lowest notes:");
        for n in &report.lowest_notes {
            out!(
                "  {} {}/5 ({}): {}",
                n.module,
                n.rating,
                n.persona,
                n.notes.as_deref().unwrap_or_default()
            );
        }
    }
}

/// Goals' pass rates, one line per goal, simulator and judge version.
fn print_goals(report: &FeedbackReport) {
    for goal in &report.goals {
        let share = if goal.trials == 0 {
            0.0
        } else {
            goal.passed as f64 / goal.trials as f64
        };
        out!(
            "goal {}: {}/{} trials passed ({:.0}%) with {} · judge: {}",
            goal.goal,
            goal.passed,
            goal.trials,
            share * 100.0,
            goal.simulator,
            goal.judge.as_deref().unwrap_or("none")
        );
    }
}
