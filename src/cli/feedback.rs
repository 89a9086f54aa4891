//! `persona-runner feedback`: the QA report, a first version: per module the average
//! rating and how many, and the lowest-rated notes.

use anyhow::Result;
use clap::Args;
use persona_runner::persona::DEFAULT_TENANT;
use persona_runner::time::HumanDuration;

use super::{App, Outcome};

#[derive(Args)]
pub struct FeedbackArgs {
    /// How far back to look.
    #[arg(long, default_value = "7d")]
    since: HumanDuration,
    /// Only this module.
    #[arg(long)]
    module: Option<String>,
    /// Lowest notes to show.
    #[arg(long, default_value_t = 5)]
    notes: i64,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: FeedbackArgs, app: &App) -> Result<Outcome> {
    let store = app.store().await?;
    let since = persona_runner::time::before(persona_runner::time::now(), args.since.0);
    let keep = |module: &str| args.module.as_deref().is_none_or(|m| m == module);
    let modules: Vec<_> = store
        .module_ratings(DEFAULT_TENANT, since)
        .await?
        .into_iter()
        .filter(|m| keep(&m.module))
        .collect();
    let notes: Vec<_> = store
        .lowest_notes(DEFAULT_TENANT, since, args.notes.max(0) * 10)
        .await?
        .into_iter()
        .filter(|n| keep(&n.module))
        .take(args.notes.max(0) as usize)
        .collect();
    store.close().await;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"since": since, "modules": modules, "lowest_notes": notes})
            )?
        );
        return Ok(Outcome::Success);
    }
    if modules.is_empty() {
        out!(
            "no ratings since {} (tick some personas first: `persona-runner tick --all`)",
            since.format("%Y-%m-%d %H:%M UTC")
        );
        return Ok(Outcome::Success);
    }
    let mut table = super::table(&["module", "average", "ratings"]);
    for m in &modules {
        table.add_row([m.module.clone(), format!("{:.2}", m.average), m.count.to_string()]);
    }
    out!("ratings since {}\n{table}", since.format("%Y-%m-%d %H:%M UTC"));
    if !notes.is_empty() {
        out!("\nlowest notes:");
        for n in &notes {
            out!(
                "  {} {}/5 ({}): {}",
                n.module,
                n.rating,
                n.persona,
                n.notes.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(Outcome::Success)
}
