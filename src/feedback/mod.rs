//! The QA feedback report: ratings per module, persona and archetype over a window,
//! each with its distribution, the evidence behind it (error rate, latency) and the
//! change against the previous window of the same length, flagged as a regression when
//! the average dropped by at least `feedback.regression_drop` on at least
//! `feedback.regression_min_ratings` ratings in both windows.
//!
//! One builder serves the CLI (`persona-runner feedback`), the admin API and the
//! dashboard, so all three always agree.

mod fitness;
pub mod spaces;
pub use fitness::SimulatorFitness;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::FeedbackConfig;
use std::collections::{BTreeMap, BTreeSet};

use crate::store::{DailyRating, NoteRecord, RatingCell, RatingScope, Store, StoreError};

/// The window `[since, until)` of a report from its parameters as people write them
/// (a span back like `7d`, RFC 3339, or a date; see [`crate::time::parse_instant`]).
/// `until` defaults to a second past `now`, so ratings stamped this instant count;
/// `since` to `default_span` before `until`. A bad value is named.
pub fn window(
    since: Option<&str>,
    until: Option<&str>,
    default_span: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Window, BadParameter> {
    let parse = |name: &'static str, value: Option<&str>| {
        value
            .filter(|v| !v.is_empty())
            .map(|v| {
                crate::time::parse_instant(v, now).map_err(|message| BadParameter {
                    name,
                    message,
                    inverted: false,
                })
            })
            .transpose()
    };
    let until = parse("until", until)?.unwrap_or_else(|| crate::time::after(now, std::time::Duration::from_secs(1)));
    let since = parse("since", since)?.unwrap_or_else(|| crate::time::before(until, default_span));
    if since >= until {
        return Err(BadParameter {
            name: "since",
            message: "must be before until".into(),
            inverted: true,
        });
    }
    Ok(Window { since, until })
}

/// A window parameter that does not parse, named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadParameter {
    pub name: &'static str,
    pub message: String,
    /// Both parse, but `since` is not before `until`.
    pub inverted: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// One module, persona or archetype in the window, against the previous window.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GroupReport {
    /// Module name, archetype, or persona id.
    pub key: String,
    /// Module name, archetype, or persona name.
    pub label: String,
    pub count: i64,
    pub average: f64,
    /// How many ratings of 1, 2, 3, 4 and 5, in that order.
    pub distribution: Vec<i64>,
    /// Tool calls behind these ratings and how many failed.
    pub evidence_calls: i64,
    pub evidence_errors: i64,
    /// Failed calls / calls behind the ratings (`null` without calls).
    pub error_rate: Option<f64>,
    pub mean_latency_ms: Option<f64>,
    /// The simulator versions that gave these ratings.
    pub simulators: Vec<String>,
    /// The previous window's average on the simulators both windows share (`null` when
    /// they share none: ratings of different simulators are not compared).
    pub previous_average: Option<f64>,
    pub previous_count: i64,
    /// The change on the shared simulators (`null` without them).
    pub change: Option<f64>,
    pub regression: bool,
    /// The simulators differ from the previous window's.
    pub simulator_changed: bool,
}

/// A group flagged as a regression, for a quick list.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Regression {
    /// `module`, `persona` or `archetype`.
    pub grouping: String,
    pub key: String,
    pub label: String,
    pub average: f64,
    pub previous_average: f64,
    pub change: f64,
    pub count: i64,
    pub previous_count: i64,
}

/// What one simulator version rated, and how lenient it is: its own ratings against the
/// ratings the evidence alone gives (a model that rates everything 5 shows up here).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SimulatorReport {
    pub simulator: String,
    pub ratings: i64,
    pub average: f64,
    /// Ratings that had evidence (calls that reached the product) to compare with.
    pub evidence_rated: i64,
    /// The average rating the evidence alone gives.
    pub evidence_average: Option<f64>,
    /// Own average minus evidence average on the same ratings (`> 0`: lenient).
    pub leniency: Option<f64>,
    pub first_day: String,
    pub last_day: String,
}

/// A day on which a new simulator version started rating.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SimulatorChange {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub from: Vec<String>,
    pub to: String,
    /// In words, for the report and the chart.
    pub note: String,
}

/// The whole report. Groups are ordered weakest first (lowest average, then label).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeedbackReport {
    pub window: Window,
    pub previous_window: Window,
    pub regression_drop: f64,
    pub regression_min_ratings: i64,
    pub ratings: i64,
    pub average: Option<f64>,
    pub modules: Vec<GroupReport>,
    pub personas: Vec<GroupReport>,
    pub archetypes: Vec<GroupReport>,
    pub regressions: Vec<Regression>,
    pub lowest_notes: Vec<NoteRecord>,
    pub series: Vec<DailyRating>,
    pub simulators: Vec<SimulatorReport>,
    /// When the simulator changed (over both windows): ratings across a change are not
    /// compared.
    pub simulator_changes: Vec<SimulatorChange>,
    /// Per simulator version over the window, whether it was fit to simulate.
    pub fitness: Vec<SimulatorFitness>,
    /// Goals' pass rates over the window, one row per goal, simulator and judge version:
    /// rates are compared only within a row (a model switch is never a regression).
    pub goals: Vec<crate::store::GoalPassRate>,
}

/// What ratings are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    Module,
    Persona,
    Archetype,
}

impl Grouping {
    fn name(self) -> &'static str {
        match self {
            Self::Module => "module",
            Self::Persona => "persona",
            Self::Archetype => "archetype",
        }
    }

    /// The key and label of a cell in this grouping.
    fn of(self, cell: &RatingCell) -> (String, String) {
        match self {
            Self::Module => (cell.module.clone(), cell.module.clone()),
            Self::Persona => (cell.persona_id.to_string(), cell.persona.clone()),
            Self::Archetype => (cell.archetype.clone(), cell.archetype.clone()),
        }
    }
}

/// Sums of ratings and their evidence.
#[derive(Clone, Debug, Default, PartialEq)]
struct Tally {
    count: i64,
    sum: i64,
    distribution: [i64; 5],
    calls: i64,
    errors: i64,
    latency_sum: f64,
    latency_calls: i64,
    evidence_sum: i64,
    evidence_rated: i64,
    evidenced_sum: i64,
}

impl Tally {
    fn add(&mut self, cell: &RatingCell) {
        self.count += cell.ratings;
        self.sum += cell.rating_sum;
        for (slot, n) in self
            .distribution
            .iter_mut()
            .zip([cell.r1, cell.r2, cell.r3, cell.r4, cell.r5])
        {
            *slot += n;
        }
        self.calls += cell.evidence_calls;
        self.errors += cell.evidence_errors;
        self.latency_sum += cell.latency_sum;
        self.latency_calls += cell.latency_calls;
        self.evidence_sum += cell.evidence_rating_sum;
        self.evidence_rated += cell.evidence_rated;
        self.evidenced_sum += cell.evidenced_rating_sum;
    }

    fn merge(&mut self, other: &Tally) {
        self.count += other.count;
        self.sum += other.sum;
        for (slot, n) in self.distribution.iter_mut().zip(other.distribution) {
            *slot += n;
        }
        self.calls += other.calls;
        self.errors += other.errors;
        self.latency_sum += other.latency_sum;
        self.latency_calls += other.latency_calls;
        self.evidence_sum += other.evidence_sum;
        self.evidence_rated += other.evidence_rated;
        self.evidenced_sum += other.evidenced_sum;
    }

    fn average(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }
}

/// Per group: the tally over all simulators, and per simulator.
type Grouped = BTreeMap<String, (String, Tally, BTreeMap<String, Tally>)>;

fn group(cells: &[RatingCell], grouping: Grouping) -> Grouped {
    let mut groups: Grouped = BTreeMap::new();
    for cell in cells {
        let (key, label) = grouping.of(cell);
        let entry = groups
            .entry(key)
            .or_insert_with(|| (label, Tally::default(), BTreeMap::new()));
        entry.1.add(cell);
        entry.2.entry(cell.simulator.clone()).or_default().add(cell);
    }
    groups
}

/// Joins a window's groups with the previous window's: averages and regressions compare
/// only the simulators both windows share.
fn compare(current: &Grouped, previous: &Grouped, rules: &FeedbackConfig) -> Vec<GroupReport> {
    let mut reports: Vec<GroupReport> = current
        .iter()
        .map(|(key, (label, total, by_simulator))| {
            let before = previous.get(key);
            let mut now_shared = Tally::default();
            let mut before_shared = Tally::default();
            let mut changed = false;
            if let Some((_, _, before_by_simulator)) = before {
                for (simulator, tally) in by_simulator {
                    match before_by_simulator.get(simulator) {
                        Some(old) => {
                            now_shared.merge(tally);
                            before_shared.merge(old);
                        }
                        None => changed = true,
                    }
                }
                changed |= before_by_simulator.keys().any(|s| !by_simulator.contains_key(s));
            }
            let shared = before_shared.count > 0;
            let change = shared.then(|| now_shared.average() - before_shared.average());
            // A small epsilon keeps a drop of exactly `regression_drop` (e.g. 4.0 → 3.5)
            // a regression despite binary floating point.
            let regression = change.is_some_and(|c| -c >= rules.regression_drop - 1e-9)
                && now_shared.count >= rules.regression_min_ratings
                && before_shared.count >= rules.regression_min_ratings;
            GroupReport {
                key: key.clone(),
                label: label.clone(),
                count: total.count,
                average: total.average(),
                distribution: total.distribution.to_vec(),
                evidence_calls: total.calls,
                evidence_errors: total.errors,
                error_rate: (total.calls > 0).then(|| total.errors as f64 / total.calls as f64),
                mean_latency_ms: (total.latency_calls > 0).then(|| total.latency_sum / total.latency_calls as f64),
                simulators: by_simulator.keys().cloned().collect(),
                previous_average: shared.then(|| before_shared.average()),
                previous_count: before_shared.count,
                change,
                regression,
                simulator_changed: changed,
            }
        })
        .collect();
    reports.sort_by(|a, b| a.average.total_cmp(&b.average).then_with(|| a.label.cmp(&b.label)));
    reports
}

/// Per simulator: its ratings and its leniency, over `cells`.
fn simulators(cells: &[RatingCell]) -> Vec<SimulatorReport> {
    let mut by: BTreeMap<&str, (Tally, String, String)> = BTreeMap::new();
    for cell in cells {
        let entry = by
            .entry(cell.simulator.as_str())
            .or_insert_with(|| (Tally::default(), cell.day.clone(), cell.day.clone()));
        entry.0.add(cell);
        entry.1 = entry.1.clone().min(cell.day.clone());
        entry.2 = entry.2.clone().max(cell.day.clone());
    }
    by.into_iter()
        .map(|(simulator, (tally, first_day, last_day))| {
            let rated = tally.evidence_rated as f64;
            let evidence_average = (tally.evidence_rated > 0).then(|| tally.evidence_sum as f64 / rated);
            SimulatorReport {
                simulator: simulator.to_string(),
                ratings: tally.count,
                average: tally.average(),
                evidence_rated: tally.evidence_rated,
                evidence_average,
                leniency: evidence_average.map(|evidence| tally.evidenced_sum as f64 / rated - evidence),
                first_day,
                last_day,
            }
        })
        .collect()
}

/// How two simulator versions differ, in words ("model changed from A to B").
pub fn describe_change(from: &[String], to: &str) -> String {
    let parts = |s: &str| -> Vec<String> { s.split(" · ").map(str::to_string).collect() };
    let new = parts(to);
    let single = match from {
        [one] => Some(parts(one)),
        _ => None,
    };
    match single {
        Some(old) if old.len() == new.len() && old.len() > 1 => {
            let differing: Vec<String> = old
                .iter()
                .zip(&new)
                .filter(|(a, b)| a != b)
                .map(|(a, b)| {
                    let (kind, a_value) = a.split_once(' ').unwrap_or(("simulator", a));
                    let b_value = b.split_once(' ').map_or(b.as_str(), |(_, v)| v);
                    let kind = match kind {
                        "llm" => "model",
                        "prompt" => "prompt template",
                        "t" => "temperature",
                        other => other,
                    };
                    format!("{kind} changed from {a_value} to {b_value}")
                })
                .collect();
            differing.join(", ")
        }
        _ => format!(
            "simulator changed from {} to {to}",
            if from.is_empty() {
                "none".to_string()
            } else {
                from.join(" + ")
            }
        ),
    }
}

/// The days on which a simulator version rated for the first time after another had
/// rated. Cells are per day, so two simulators that both rated on the first day are
/// told apart but not ordered: that change is noted as "both rated that day".
fn simulator_changes(cells: &[RatingCell]) -> Vec<SimulatorChange> {
    let mut days: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for cell in cells {
        days.entry(cell.day.as_str())
            .or_default()
            .insert(cell.simulator.as_str());
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut last_day: Option<BTreeSet<&str>> = None;
    let mut changes = Vec::new();
    for (day, simulators) in days {
        let new: Vec<&str> = simulators.iter().filter(|s| !seen.contains(*s)).copied().collect();
        let (before, same_day): (Vec<&str>, bool) = match &last_day {
            Some(previous) => (previous.iter().copied().collect(), false),
            None => (new.first().copied().into_iter().collect(), true),
        };
        for simulator in new.iter().filter(|s| !before.contains(*s)) {
            let from: Vec<String> = before.iter().map(|s| s.to_string()).collect();
            let change = describe_change(&from, simulator);
            let note = if same_day {
                format!("{change} on {day} (both rated that day); ratings of the two are not compared")
            } else {
                format!("{change} on {day}; ratings before and after are not compared")
            };
            changes.push(SimulatorChange {
                day: day.to_string(),
                note,
                from,
                to: simulator.to_string(),
            });
        }
        seen.extend(simulators.iter().copied());
        last_day = Some(simulators);
    }
    changes
}

/// Per module and UTC day: the average rating and its count, by module then day.
fn series(cells: &[RatingCell]) -> Vec<DailyRating> {
    let mut by: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
    for cell in cells {
        by.entry((cell.module.as_str(), cell.day.as_str()))
            .or_default()
            .add(cell);
    }
    by.into_iter()
        .map(|((module, day), tally)| DailyRating {
            module: module.to_string(),
            day: day.to_string(),
            average: tally.average(),
            count: tally.count,
        })
        .collect()
}

/// The groups of one grouping over `scope`, without a comparison (a persona's detail).
pub async fn groups(
    store: &Store,
    scope: &RatingScope,
    grouping: Grouping,
    rules: &FeedbackConfig,
) -> Result<Vec<GroupReport>, StoreError> {
    let cells = store.rating_cells(scope).await?;
    Ok(compare(&group(&cells, grouping), &Grouped::new(), rules))
}

/// Builds the report over `scope` (and the window of the same length before it) with
/// the thresholds of `rules`. Two reads of cells (whole days from the roll-ups), one of
/// the lowest notes: its cost does not grow with the number of ratings.
pub async fn report(store: &Store, scope: &RatingScope, rules: &FeedbackConfig) -> Result<FeedbackReport, StoreError> {
    // Kept within the years both stores sort correctly (a window from year 0813 has no
    // previous window of the same length).
    let previous_since = (scope.from - (scope.until - scope.from)).max(crate::time::earliest());
    let previous_scope = scope.with_window(previous_since, scope.from);
    let current = store.rating_cells(scope).await?;
    let previous = store.rating_cells(&previous_scope).await?;
    let mut sections = Vec::with_capacity(3);
    let mut regressions = Vec::new();
    for grouping in [Grouping::Module, Grouping::Persona, Grouping::Archetype] {
        let reports = compare(&group(&current, grouping), &group(&previous, grouping), rules);
        regressions.extend(reports.iter().filter(|g| g.regression).map(|g| Regression {
            grouping: grouping.name().to_string(),
            key: g.key.clone(),
            label: g.label.clone(),
            average: g.average,
            previous_average: g.previous_average.unwrap_or_default(),
            change: g.change.unwrap_or_default(),
            count: g.count,
            previous_count: g.previous_count,
        }));
        sections.push(reports);
    }
    let archetypes = sections.pop().unwrap_or_default();
    let personas = sections.pop().unwrap_or_default();
    let modules = sections.pop().unwrap_or_default();
    let mut all = Tally::default();
    current.iter().for_each(|cell| all.add(cell));
    let lowest_notes = store.lowest_rated_notes(scope, rules.lowest_notes.max(0)).await?;
    let both: Vec<RatingCell> = previous.iter().chain(&current).cloned().collect();
    Ok(FeedbackReport {
        window: Window {
            since: scope.from,
            until: scope.until,
        },
        previous_window: Window {
            since: previous_since,
            until: scope.from,
        },
        regression_drop: rules.regression_drop,
        regression_min_ratings: rules.regression_min_ratings,
        ratings: all.count,
        average: (all.count > 0).then(|| all.average()),
        modules,
        personas,
        archetypes,
        regressions,
        lowest_notes,
        series: series(&current),
        simulators: simulators(&current),
        simulator_changes: simulator_changes(&both),
        fitness: store
            .simulator_fitness(scope)
            .await?
            .into_iter()
            .map(SimulatorFitness::from)
            .collect(),
        goals: store.goal_pass_rates(scope.tenant, scope.from, scope.until).await?,
    })
}

/// The report's groups as CSV (one row per group, `grouping` first), RFC 4180 quoting.
pub fn to_csv(report: &FeedbackReport) -> String {
    fn field(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    }
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    let mut out = String::from(
        "grouping,key,label,count,average,r1,r2,r3,r4,r5,evidence_calls,evidence_errors,error_rate,\
         mean_latency_ms,previous_average,previous_count,change,regression\n",
    );
    for (grouping, groups) in [
        ("module", &report.modules),
        ("persona", &report.personas),
        ("archetype", &report.archetypes),
    ] {
        for g in groups {
            let dist: Vec<String> = g.distribution.iter().map(i64::to_string).collect();
            out.push_str(&format!(
                "{grouping},{},{},{},{:.3},{},{},{},{},{},{},{},{},{}\n",
                field(&g.key),
                field(&g.label),
                g.count,
                g.average,
                dist.join(","),
                g.evidence_calls,
                g.evidence_errors,
                opt(g.error_rate),
                opt(g.mean_latency_ms),
                opt(g.previous_average),
                g.previous_count,
                opt(g.change),
                g.regression
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
