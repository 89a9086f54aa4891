//! The QA feedback report: ratings per module, persona and archetype over a window,
//! each with its distribution, the evidence behind it (error rate, latency) and the
//! change against the previous window of the same length, flagged as a regression when
//! the average dropped by at least `feedback.regression_drop` on at least
//! `feedback.regression_min_ratings` ratings in both windows.
//!
//! One builder serves the CLI (`persona-runner feedback`), the admin API and the
//! dashboard, so all three always agree.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::FeedbackConfig;
use crate::store::{DailyRating, Grouping, NoteRecord, RatingGroup, RatingScope, Store, StoreError};

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
            .map(|v| crate::time::parse_instant(v, now).map_err(|message| BadParameter { name, message }))
            .transpose()
    };
    let until = parse("until", until)?.unwrap_or_else(|| crate::time::after(now, std::time::Duration::from_secs(1)));
    let since = parse("since", since)?.unwrap_or_else(|| crate::time::before(until, default_span));
    if since >= until {
        return Err(BadParameter {
            name: "since",
            message: "must be before until".into(),
        });
    }
    Ok(Window { since, until })
}

/// A window parameter that does not parse, named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadParameter {
    pub name: &'static str,
    pub message: String,
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
    pub previous_average: Option<f64>,
    pub previous_count: i64,
    /// `average - previous_average` (`null` without ratings in the previous window).
    pub change: Option<f64>,
    pub regression: bool,
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
}

/// Joins a window's groups with the previous window's and flags regressions.
pub fn compare(current: Vec<RatingGroup>, previous: &[RatingGroup], rules: &FeedbackConfig) -> Vec<GroupReport> {
    let mut reports: Vec<GroupReport> = current
        .into_iter()
        .map(|group| {
            let before = previous.iter().find(|p| p.key == group.key);
            let previous_average = before.map(|p| p.average);
            let previous_count = before.map_or(0, |p| p.count);
            let change = previous_average.map(|p| group.average - p);
            // A small epsilon keeps a drop of exactly `regression_drop` (e.g. 4.0 → 3.5)
            // a regression despite binary floating point.
            let regression = change.is_some_and(|c| -c >= rules.regression_drop - 1e-9)
                && group.count >= rules.regression_min_ratings
                && previous_count >= rules.regression_min_ratings;
            GroupReport {
                error_rate: (group.evidence_calls > 0)
                    .then(|| group.evidence_errors as f64 / group.evidence_calls as f64),
                key: group.key,
                label: group.label,
                count: group.count,
                average: group.average,
                distribution: group.distribution.to_vec(),
                evidence_calls: group.evidence_calls,
                evidence_errors: group.evidence_errors,
                mean_latency_ms: group.mean_latency_ms,
                previous_average,
                previous_count,
                change,
                regression,
            }
        })
        .collect();
    reports.sort_by(|a, b| a.average.total_cmp(&b.average).then_with(|| a.label.cmp(&b.label)));
    reports
}

/// Builds the report over `scope` (and the window of the same length before it) with
/// the thresholds of `rules`.
pub async fn report(store: &Store, scope: &RatingScope, rules: &FeedbackConfig) -> Result<FeedbackReport, StoreError> {
    let previous_since = scope.from - (scope.until - scope.from);
    let previous_scope = scope.with_window(previous_since, scope.from);
    let mut sections = Vec::with_capacity(3);
    for grouping in [Grouping::Module, Grouping::Persona, Grouping::Archetype] {
        let current = store.rating_groups(scope, grouping).await?;
        let previous = store.rating_groups(&previous_scope, grouping).await?;
        sections.push(compare(current, &previous, rules));
    }
    let archetypes = sections.pop().unwrap_or_default();
    let personas = sections.pop().unwrap_or_default();
    let modules = sections.pop().unwrap_or_default();

    let ratings: i64 = modules.iter().map(|m| m.count).sum();
    let average =
        (ratings > 0).then(|| modules.iter().map(|m| m.average * m.count as f64).sum::<f64>() / ratings as f64);
    let regressions = [("module", &modules), ("persona", &personas), ("archetype", &archetypes)]
        .into_iter()
        .flat_map(|(grouping, groups)| {
            groups.iter().filter(|g| g.regression).map(move |g| Regression {
                grouping: grouping.to_string(),
                key: g.key.clone(),
                label: g.label.clone(),
                average: g.average,
                previous_average: g.previous_average.unwrap_or_default(),
                change: g.change.unwrap_or_default(),
                count: g.count,
                previous_count: g.previous_count,
            })
        })
        .collect();
    let lowest_notes = store.lowest_rated_notes(scope, rules.lowest_notes.max(0)).await?;
    let series = store.daily_ratings(scope).await?;
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
        ratings,
        average,
        modules,
        personas,
        archetypes,
        regressions,
        lowest_notes,
        series,
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
mod tests {
    use super::*;

    fn group(key: &str, count: i64, average: f64) -> RatingGroup {
        RatingGroup {
            key: key.into(),
            label: key.into(),
            count,
            average,
            distribution: [0; 5],
            evidence_calls: 10,
            evidence_errors: 2,
            mean_latency_ms: None,
        }
    }

    #[test]
    fn a_drop_of_the_threshold_on_enough_ratings_is_a_regression() {
        let rules = FeedbackConfig::default(); // drop 0.5, at least 5 ratings each
        let current = vec![group("todo", 6, 3.5), group("journal", 4, 1.0), group("habits", 9, 3.6)];
        let previous = vec![group("todo", 5, 4.0), group("journal", 9, 4.0), group("habits", 9, 4.0)];
        let report = compare(current, &previous, &rules);
        let by_key = |k: &str| report.iter().find(|g| g.key == k).unwrap();
        assert!(by_key("todo").regression, "4.0 → 3.5 on 5 and 6 ratings");
        assert!(!by_key("journal").regression, "4 ratings are too few to call it");
        assert!(!by_key("habits").regression, "a drop of 0.4 is under the threshold");
        assert_eq!(by_key("todo").error_rate, Some(0.2));
        assert_eq!(report[0].key, "journal", "weakest first");
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        let rules = FeedbackConfig::default();
        let mut g = group("a,b", 1, 2.0);
        g.label = "say \"hi\"".into();
        let report = FeedbackReport {
            window: Window {
                since: Utc::now(),
                until: Utc::now(),
            },
            previous_window: Window {
                since: Utc::now(),
                until: Utc::now(),
            },
            regression_drop: 0.5,
            regression_min_ratings: 5,
            ratings: 1,
            average: Some(2.0),
            modules: compare(vec![g], &[], &rules),
            personas: vec![],
            archetypes: vec![],
            regressions: vec![],
            lowest_notes: vec![],
            series: vec![],
        };
        let csv = to_csv(&report);
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("module,\"a,b\",\"say \"\"hi\"\"\",1,2.000"),
            "{csv}"
        );
    }
}
