//! The report's grouping, comparison and CSV on hand-made rating cells.

use super::*;

fn cell(module: &str, day: &str, simulator: &str, ratings: i64, average: f64) -> RatingCell {
    RatingCell {
        day: day.into(),
        module: module.into(),
        persona_id: uuid::Uuid::nil(),
        persona: "p".into(),
        archetype: "a".into(),
        simulator: simulator.into(),
        ratings,
        rating_sum: (average * ratings as f64).round() as i64,
        r1: 0,
        r2: 0,
        r3: 0,
        r4: 0,
        r5: 0,
        evidence_calls: 10,
        evidence_errors: 2,
        latency_sum: 0.0,
        latency_calls: 0,
        evidence_rating_sum: 0,
        evidence_rated: 0,
        evidenced_rating_sum: 0,
    }
}

#[test]
fn a_drop_of_the_threshold_on_enough_ratings_is_a_regression() {
    let rules = FeedbackConfig::default(); // drop 0.5, at least 5 ratings each
    let current = [
        cell("todo", "2026-01-08", "s", 6, 3.5),
        cell("journal", "2026-01-08", "s", 4, 1.0),
        cell("habits", "2026-01-08", "s", 10, 3.6),
    ];
    let previous = [
        cell("todo", "2026-01-01", "s", 6, 4.0),
        cell("journal", "2026-01-01", "s", 9, 4.0),
        cell("habits", "2026-01-01", "s", 10, 4.0),
    ];
    let report = compare(
        &group(&current, Grouping::Module),
        &group(&previous, Grouping::Module),
        &rules,
    );
    let by_key = |k: &str| report.iter().find(|g| g.key == k).unwrap();
    assert!(by_key("todo").regression, "4.0 → 3.5 on 6 and 6 ratings");
    assert!(!by_key("journal").regression, "4 ratings are too few to call it");
    assert!(!by_key("habits").regression, "a drop of 0.4 is under the threshold");
    assert_eq!(by_key("todo").error_rate, Some(0.2));
    assert_eq!(report[0].key, "journal", "weakest first");
}

#[test]
fn ratings_of_another_simulator_are_not_compared() {
    let rules = FeedbackConfig::default();
    let a = "llm model-a · prompt 111 · t 0.7";
    let b = "llm model-b · prompt 111 · t 0.7";
    let previous = [cell("todo", "2026-01-01", a, 10, 4.5)];
    let current = [cell("todo", "2026-01-08", b, 10, 2.0)];
    let report = compare(
        &group(&current, Grouping::Module),
        &group(&previous, Grouping::Module),
        &rules,
    );
    assert!(!report[0].regression, "a model switch is not a product regression");
    assert!(report[0].simulator_changed);
    assert_eq!(report[0].previous_average, None);
    let both: Vec<RatingCell> = previous.iter().chain(&current).cloned().collect();
    let changes = simulator_changes(&both);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].note,
        "model changed from model-a to model-b on 2026-01-08; ratings before and after are not compared"
    );
    // A shared simulator still is compared, even beside a new one.
    let current = [
        cell("todo", "2026-01-08", b, 10, 2.0),
        cell("todo", "2026-01-08", a, 10, 3.5),
    ];
    let report = compare(
        &group(&current, Grouping::Module),
        &group(&previous, Grouping::Module),
        &rules,
    );
    assert!(report[0].regression, "4.5 → 3.5 on the shared simulator");
    assert_eq!(report[0].change, Some(-1.0));
}

#[test]
fn leniency_compares_own_ratings_with_the_evidence() {
    let mut generous = cell("todo", "2026-01-08", "s", 4, 5.0);
    generous.evidence_rated = 4;
    generous.evidence_rating_sum = 8; // the evidence says 2
    generous.evidenced_rating_sum = 20;
    let report = simulators(&[generous]);
    assert_eq!(report[0].evidence_average, Some(2.0));
    assert_eq!(report[0].leniency, Some(3.0));
}

#[test]
fn csv_quotes_fields_that_need_it() {
    let rules = FeedbackConfig::default();
    let mut c = cell("a,b", "2026-01-08", "s", 1, 2.0);
    c.module = "a,b".into();
    let mut modules = compare(&group(&[c], Grouping::Module), &Grouped::new(), &rules);
    modules[0].label = "say \"hi\"".into();
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
        modules,
        personas: vec![],
        archetypes: vec![],
        regressions: vec![],
        lowest_notes: vec![],
        series: vec![],
        simulators: vec![],
        simulator_changes: vec![],
        fitness: Vec::new(),
        goals: Vec::new(),
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
