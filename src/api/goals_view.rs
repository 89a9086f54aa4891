//! The dashboard's goals section: a goals × personas grid of each goal's last K trials
//! (K = `checks.trials`), every trial a mark linked to its tick page, and the pass rates
//! per goal within each simulator and judge version.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use uuid::Uuid;

use super::html::esc;
use crate::model::goal::{Outcome, Verdict};
use crate::store::GoalPassRate;

/// The grid, from the newest verdicts (newest first) and the personas' names.
pub(super) fn goals_grid(
    verdicts: &[Verdict],
    names: &BTreeMap<Uuid, String>,
    k: usize,
    rates: &[GoalPassRate],
) -> String {
    if verdicts.is_empty() {
        return "<section class=\"wide\" id=\"goals\"><h2>Goals</h2><p class=\"muted\">No goal has been checked yet: \
                add <code>goals</code> to a persona in the catalog, then run <code>persona-runner check</code> \
                (or set <code>[checks] cadence</code>).</p></section>"
            .into();
    }
    let mut goals: Vec<&str> = verdicts.iter().map(|v| v.goal.as_str()).collect();
    goals.sort_unstable();
    goals.dedup();
    let mut personas: Vec<Uuid> = Vec::new();
    for v in verdicts {
        if !personas.contains(&v.persona_id) {
            personas.push(v.persona_id);
        }
    }
    personas.sort_by_key(|id| names.get(id).cloned().unwrap_or_default());
    let name = |id: &Uuid| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let header: String = personas.iter().map(|p| format!("<th>{}</th>", esc(&name(p)))).collect();
    let mut rows = String::new();
    for goal in &goals {
        let _ = write!(rows, "<tr><th scope=\"row\">{}</th>", esc(goal));
        for persona in &personas {
            // The last K trials, oldest first, so the newest sits at the right.
            let mut trials: Vec<&Verdict> = verdicts
                .iter()
                .filter(|v| v.goal == *goal && v.persona_id == *persona)
                .take(k.max(1))
                .collect();
            trials.reverse();
            if trials.is_empty() {
                rows.push_str("<td class=\"muted\">–</td>");
                continue;
            }
            let passed = trials.iter().filter(|v| v.outcome == Outcome::Pass).count();
            let marks: String = trials.iter().map(|v| mark(v)).collect();
            let class = if passed == trials.len() {
                "good"
            } else if passed == 0 {
                "bad"
            } else {
                "warn"
            };
            let _ = write!(
                rows,
                "<td><span class=\"marks\">{marks}</span> <span class=\"{class}\">{passed}/{}</span></td>",
                trials.len()
            );
        }
        rows.push_str("</tr>");
    }
    format!(
        "<section class=\"wide\" id=\"goals\"><h2>Goals</h2><p class=\"muted\">The last {} of each goal, oldest \
         first: ✓ pass, ✗ fail, ? unjudged (a criterion inconclusive or not judged never passes). Each mark opens its tick.</p>\
         <div class=\"scroll\" tabindex=\"0\"><table><caption>Each goal's latest trials per persona, oldest first</caption><thead><tr><th>goal</th>{header}</tr></thead><tbody>{rows}</tbody></table></div>{}</section>",
        super::html::count(k as i64, "trial"),
        pass_rates(rates)
    )
}

fn mark(verdict: &Verdict) -> String {
    let (symbol, class, word) = match verdict.outcome {
        Outcome::Pass => ("✓", "good", "passed"),
        Outcome::Fail => ("✗", "bad", "failed"),
        Outcome::Unjudged => ("?", "warn", "unjudged"),
    };
    let unmet = verdict.unmet();
    let title = if unmet.is_empty() {
        format!("trial {} {word}", verdict.trial)
    } else {
        format!("trial {} {word}: {}", verdict.trial, unmet.join("; "))
    };
    format!(
        "<a class=\"{class}\" href=\"/ticks/{}\" title=\"{}\" aria-label=\"{}\">{symbol}</a>",
        verdict.tick_id,
        esc(&title),
        esc(&title)
    )
}

/// Pass rates per goal over the window, one row per simulator and judge version.
fn pass_rates(rates: &[GoalPassRate]) -> String {
    if rates.is_empty() {
        return String::new();
    }
    let mut rows = String::new();
    for rate in rates {
        let share = if rate.trials == 0 {
            0.0
        } else {
            rate.passed as f64 / rate.trials as f64
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{:.0}%</td><td class=\"muted\">{}</td><td class=\"muted\">{}</td></tr>",
            esc(&rate.goal),
            rate.passed,
            rate.trials,
            share * 100.0,
            esc(&rate.simulator),
            esc(rate.judge.as_deref().unwrap_or("no judge"))
        );
    }
    format!(
        "<h3>Pass rates in this window</h3><p class=\"muted\">Compared only within one simulator and judge version: a model \
         switch starts a new row, it is never a regression.</p><div class=\"scroll\" tabindex=\"0\"><table><caption>Trials passed per goal, simulator and judge</caption><thead><tr><th>goal</th>\
         <th>passed</th><th>rate</th><th>simulator</th><th>judge</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}
