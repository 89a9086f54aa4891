//! The dashboard's parts, rendered from the report and the store's summaries: the
//! ratings chart (with simulator changes marked), the module, simulator, low-rating and
//! persona tables, and today's spend. Each links to the ticks behind what it shows.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};

use super::html::esc;
use crate::feedback::{FeedbackReport, GroupReport};
use crate::model::tick::TickStatus;
use crate::store::PersonaSummary;

/// A palette that stays distinguishable on light and dark backgrounds.
const COLORS: [&str; 10] = [
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#475569",
];

/// Percent-encodes a query value (module names are `[A-Za-z0-9_-]`, but a link must not
/// trust that).
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Today's LLM spend against the cap (and in money, with prices).
pub(super) fn spend_stat(budget: &crate::config::BudgetConfig, tokens_in: i64, tokens_out: i64) -> String {
    let spent = tokens_in + tokens_out;
    let (class, of_cap) = match budget.tokens_per_day {
        0 => ("", "no cap".to_string()),
        cap => (
            if spent as u64 >= cap { "bad" } else { "" },
            format!("of {cap} ({:.0}%)", spent as f64 * 100.0 / cap as f64),
        ),
    };
    let money = budget
        .cost(tokens_in, tokens_out)
        .map(|cost| format!(" · {cost:.2} {}", esc(&budget.currency)))
        .unwrap_or_default();
    format!(
        "<div class=\"stat\" id=\"spend\"><b class=\"{class}\">{spent}</b><span class=\"muted\">LLM tokens today (UTC), {of_cap}{money}</span></div>"
    )
}

/// Ratings per module per day as an SVG line chart (y 1–5, x the window's days).
pub(super) fn chart(report: &FeedbackReport, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let (width, height) = (900.0_f64, 280.0_f64);
    let (left, right, top, bottom) = (34.0, 12.0, 12.0, 28.0);
    let first = since.date_naive();
    let last = until.date_naive();
    let span = (last - first).num_days().max(1) as f64;
    let x = |day: NaiveDate| left + (day - first).num_days() as f64 / span * (width - left - right);
    let y = |rating: f64| top + (5.0 - rating) / 4.0 * (height - top - bottom);

    let mut by_module: BTreeMap<&str, Vec<(NaiveDate, f64, i64)>> = BTreeMap::new();
    for point in &report.series {
        if let Ok(day) = NaiveDate::parse_from_str(&point.day, "%Y-%m-%d") {
            by_module
                .entry(&point.module)
                .or_default()
                .push((day, point.average, point.count));
        }
    }
    let mut svg = format!(
        "<svg id=\"ratings-chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Average rating per module per day\">"
    );
    for rating in 1..=5 {
        let ry = y(f64::from(rating));
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{ry:.1}\" y2=\"{ry:.1}\" stroke=\"currentColor\" stroke-opacity=\"0.15\"/>\
             <text x=\"{}\" y=\"{:.1}\" font-size=\"11\" fill=\"currentColor\" fill-opacity=\"0.6\" text-anchor=\"end\">{rating}</text>",
            width - right,
            left - 8.0,
            ry + 4.0
        );
    }
    for (label_day, anchor) in [(first, "start"), (last, "end")] {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"currentColor\" fill-opacity=\"0.6\" text-anchor=\"{anchor}\">{label_day}</text>",
            x(label_day),
            height - 8.0
        );
    }
    let mut legend = String::new();
    for (index, (module, points)) in by_module.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(d, a, _)| format!("{:.1},{:.1}", x(*d), y(*a)))
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" data-module=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            esc(module),
            path.join(" ")
        );
        for (day, average, count) in points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{} {day}: {average:.2} ({count} ratings)</title></circle>",
                x(*day),
                y(*average),
                esc(module)
            );
        }
        let _ = write!(
            legend,
            "<span><i style=\"background:{color}\"></i>{}</span>",
            esc(module)
        );
    }
    // A simulator change is a break in the series, not a product change: marked, never
    // compared across.
    let mut changes = String::new();
    for change in &report.simulator_changes {
        let Ok(day) = NaiveDate::parse_from_str(&change.day, "%Y-%m-%d") else {
            continue;
        };
        if day < first || day > last {
            continue;
        }
        let cx = x(day);
        let _ = write!(
            svg,
            "<line class=\"simulator-change\" x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"currentColor\" stroke-dasharray=\"4 3\"><title>{}</title></line>",
            height - bottom,
            esc(&change.note)
        );
        let _ = write!(changes, "<li class=\"simulator-change\">{}</li>", esc(&change.note));
    }
    svg.push_str("</svg>");
    if !changes.is_empty() {
        changes = format!("<ul class=\"muted\">{changes}</ul>");
    }
    let empty = if by_module.is_empty() {
        "<p class=\"muted\">No ratings in this window yet.</p>"
    } else {
        ""
    };
    format!(
        "<section class=\"wide\"><h2>Ratings per module over time</h2>{svg}<div class=\"legend\">{legend}</div>{changes}{empty}</section>"
    )
}

/// Each simulator version that rated: how many ratings, and how lenient it is against
/// the rating the evidence alone gives.
pub(super) fn simulators_table(report: &FeedbackReport) -> String {
    if report.simulators.is_empty() && report.fitness.is_empty() {
        return String::new();
    }
    let mut rows = String::new();
    for simulator in &report.simulators {
        let leniency = match simulator.leniency {
            Some(l) if l >= 1.0 => format!("<span class=\"bad\">{l:+.2} lenient</span>"),
            Some(l) if l <= -1.0 => format!("<span class=\"bad\">{l:+.2} harsh</span>"),
            Some(l) => format!("{l:+.2}"),
            None => "–".into(),
        };
        let _ = write!(
            rows,
            "<tr class=\"simulator\"><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{leniency}</td><td>{} – {}</td></tr>",
            esc(&simulator.simulator),
            simulator.ratings,
            simulator.average,
            simulator.evidence_average.map_or("–".into(), |a| format!("{a:.2}")),
            esc(&simulator.first_day),
            esc(&simulator.last_day),
        );
    }
    format!(
        "<section class=\"wide\" id=\"simulators\"><h2>Simulators</h2><p class=\"muted\">A simulator is driver · model · prompt template (· temperature). \
         Ratings of different simulators are never compared; leniency is a simulator's own average minus what the evidence gives.</p>\
         <div class=\"scroll\" tabindex=\"0\"><table><caption>Ratings per simulator version over the window</caption><thead><tr><th>simulator</th><th>n</th><th>avg</th><th>evidence</th><th>leniency</th><th>days</th></tr></thead>\
         <tbody>{rows}</tbody></table></div>{}</section>",
        fitness_table(report)
    )
}

/// Whether each simulator version is fit to simulate: idle ticks, calls recovered from
/// text, unknown tools, arguments the schema refused, rating answers.
fn fitness_table(report: &FeedbackReport) -> String {
    let mut rows = String::new();
    for fit in &report.fitness {
        let idle = if fit.idle > 0 {
            format!(
                "<span class=\"bad\">{} ({:.0}%)</span>",
                fit.idle,
                fit.idle_rate * 100.0
            )
        } else {
            "0".into()
        };
        let _ = write!(
            rows,
            "<tr class=\"fitness\"><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{idle}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} / {} / {}</td></tr>",
            esc(if fit.simulator.is_empty() {
                "(unknown)"
            } else {
                &fit.simulator
            }),
            fit.ticks,
            fit.calls,
            fit.recovered,
            fit.unknown_tools,
            fit.schema_refused,
            fit.ratings_valid_first,
            fit.ratings_valid_repaired,
            fit.ratings_invalid,
        );
    }
    format!(
        "<h3>Fitness to simulate</h3><p class=\"muted\">Idle: ticks in which the persona never used the app (no evidence). \
         Recovered: calls the model wrote as text. Ratings: valid at once / after one repair / invalid.</p>\
         <div class=\"scroll\" tabindex=\"0\"><table><caption>Simulator fitness over the window</caption><thead><tr><th>simulator</th><th>ticks</th><th>idle</th><th>calls</th>\
         <th>recovered</th><th>unknown tools</th><th>schema refused</th><th>ratings</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )
}

fn distribution(counts: &[i64]) -> String {
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let bars: String = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let h = 2 + n * 16 / most;
            format!("<span style=\"height:{h}px\" title=\"{} stars: {n}\"></span>", i + 1)
        })
        .collect();
    format!("<span class=\"dist\">{bars}</span>")
}

pub(super) fn modules_table(modules: &[GroupReport], report: &FeedbackReport) -> String {
    let mut rows = String::new();
    for m in modules {
        // A regression links to the ticks behind it: the module's lowest-rated tick of the
        // window, else the module's calls (each names its tick).
        let behind = report.lowest_notes.iter().find(|n| n.module == m.key).map_or_else(
            || {
                format!(
                    "/api/v1/admin/actions?module={}&since={}",
                    urlencoding(&m.key),
                    report.window.since.format("%Y-%m-%dT%H:%M:%SZ")
                )
            },
            |note| format!("/ticks/{}", note.tick_id),
        );
        let change = match m.change {
            Some(c) if m.regression => format!(
                "<a class=\"bad\" href=\"{}\" title=\"the ticks behind it\">{c:+.2} regression</a>",
                esc(&behind)
            ),
            Some(c) => format!("{c:+.2}"),
            None if m.simulator_changed => "<span class=\"muted\">simulator changed</span>".into(),
            None => "–".into(),
        };
        let _ = write!(
            rows,
            "<tr class=\"{}\" data-module=\"{}\"><td>{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{change}</td></tr>",
            if m.regression { "regression" } else { "" },
            esc(&m.key),
            esc(&m.label),
            m.average,
            m.count,
            distribution(&m.distribution),
            m.error_rate.map_or("–".into(), |r| format!("{:.0}%", r * 100.0)),
            m.mean_latency_ms.map_or("–".into(), |l| format!("{l:.0} ms")),
        );
    }
    format!(
        "<section id=\"modules\"><h2>Modules, weakest first</h2><p class=\"muted\">Regression: average down ≥ {} on ≥ {} ratings in both windows.</p>\
         <div class=\"scroll\" tabindex=\"0\"><table><caption>Average rating per module, weakest first, with its evidence and change</caption><thead><tr><th>module</th><th>avg</th><th>n</th><th>1–5</th><th>errors</th><th>latency</th><th>change</th></tr></thead>\
         <tbody>{rows}</tbody></table></div></section>",
        report.regression_drop, report.regression_min_ratings
    )
}

/// The highest rating the dashboard calls low.
const LOW_RATING: i32 = crate::feedback::spaces::LOW;

pub(super) fn low_ratings(report: &FeedbackReport) -> String {
    let mut rows = String::new();
    // The report's lowest notes are the lowest there are; only 1–3 are low.
    for n in report.lowest_notes.iter().filter(|n| n.rating <= LOW_RATING) {
        let _ = write!(
            rows,
            "<tr><td class=\"num\"><a href=\"/ticks/{}\" title=\"the tick behind this rating\">{}/5</a></td><td>{}</td><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            n.tick_id,
            n.rating,
            esc(&n.module),
            esc(&n.persona),
            esc(n.notes.as_deref().unwrap_or_default()),
            n.created_at.format("%m-%d %H:%M")
        );
    }
    if rows.is_empty() {
        return format!(
            "<section id=\"low-ratings\"><h2>Latest low ratings</h2><p class=\"muted\">No rating of {LOW_RATING} or below in this window.</p></section>"
        );
    }
    format!(
        "<section id=\"low-ratings\"><h2>Latest low ratings</h2><div class=\"scroll\" tabindex=\"0\"><table><caption>Ratings of {LOW_RATING} or below, worst and newest first, each linked to its tick</caption>\
         <thead><tr><th>rating</th><th>module</th><th>persona</th><th>note</th><th>when</th></tr></thead>\
         <tbody>{rows}</tbody></table></div></section>"
    )
}

pub(super) fn personas_table(personas: &[PersonaSummary]) -> String {
    let mut rows = String::new();
    for p in personas.iter().filter(|p| p.email.is_some()) {
        let status = match p.last_tick_status {
            Some(TickStatus::Ok) => "<span class=\"good\">ok</span>".to_string(),
            Some(other) => format!("<span class=\"bad\">{}</span>", esc(other.as_str())),
            None => "<span class=\"muted\">never</span>".to_string(),
        };
        // The latest tick's story is one click away.
        let status = match p.last_tick_id {
            Some(id) => format!("<a href=\"/ticks/{id}\" title=\"the latest tick\">{status}</a>"),
            None => status,
        };
        let alignment = match p.alignment_score {
            Some(a) if a < crate::model::profile::REASSESS_BELOW => format!("<span class=\"bad\">{a:.0}</span>"),
            Some(a) => format!("{a:.0}"),
            None => "–".into(),
        };
        let _ = write!(
            rows,
            "<tr><td>{}{}</td><td>{}</td><td>{status}</td><td class=\"muted\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{alignment}</td></tr>",
            esc(&p.name),
            if p.paused {
                " <span class=\"muted\">(paused)</span>"
            } else {
                ""
            },
            esc(&p.archetype),
            p.last_tick_at
                .map_or("–".into(), |t| t.format("%m-%d %H:%M").to_string()),
            p.recent_actions,
            p.average_rating.map_or("–".into(), |a| format!("{a:.2}")),
        );
    }
    format!(
        "<section class=\"wide\" id=\"personas\"><h2>Personas</h2><div class=\"scroll\" tabindex=\"0\"><table><caption>Every persona with a login: its latest tick, recent calls, rating and alignment</caption><thead><tr><th>persona</th><th>archetype</th><th>last tick</th><th>when</th><th>calls 7d</th><th>avg rating</th><th>alignment</th></tr></thead>\
         <tbody>{rows}</tbody></table></div></section>"
    )
}
