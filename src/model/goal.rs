//! Goals and verdicts as data. A goal is what a persona sets out to do in a check tick
//! (`task`), with deterministic checks of the tick's audit and of the product's state
//! afterwards, and criteria a judge reads. A verdict is how one trial of a goal went: each
//! check and criterion, the simulator and judge versions, and the outcome.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::call::CallResult;

/// One goal of a persona (from its catalog entry or its archetype's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// Unique per persona: `check --goal NAME` selects it.
    pub name: String,
    /// The persona's intention for the tick, given to the model in character.
    pub task: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Statements the judge answers met, unmet or inconclusive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<String>,
}

/// A deterministic check, written as the one key that names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Check {
    Called(Called),
    NotCalled(NotCalled),
    MaxErrors(MaxErrors),
    MaxCalls(MaxCalls),
    MaxTokens(MaxTokens),
    MaxSeconds(MaxSeconds),
    State(StateCheck),
}

/// At least `min` calls of a tool matching the glob `called`, with `result` (default
/// `ok`), whose arguments match every `args` entry (JSON pointer → regex).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Called {
    pub called: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_option")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CallResult>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub args: std::collections::BTreeMap<String, String>,
}

/// No call (sent to the product) of a tool matching the glob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotCalled {
    pub not_called: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxErrors {
    #[serde(deserialize_with = "whole")]
    pub max_errors: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxCalls {
    #[serde(deserialize_with = "whole")]
    pub max_calls: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxTokens {
    #[serde(deserialize_with = "whole")]
    pub max_tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxSeconds {
    #[serde(deserialize_with = "whole")]
    pub max_seconds: u64,
}

/// The product's state after the tick, read by the runner with a read-only tool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateCheck {
    pub state: StateRead,
}

/// Which tool to call with which arguments, and what its answer must hold: the text at
/// `pointer` (the whole answer without one) containing `contains` and matching `matches`;
/// a pointer alone must find a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateRead {
    pub tool: String,
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub arguments: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

/// A count as JSON writes it: `3`, or `3.0` (what many JSON encoders make of a whole
/// number, and what JSON Schema's `integer` allows).
pub fn whole<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 9_007_199_254_740_991.0)
                .map(|f| f as u64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("`{number}` is not a whole number ≥ 0")))
}

fn whole_option<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    whole(deserializer).map(Some)
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn is_empty_object(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(|o| o.is_empty())
}

impl Check {
    /// The check as its catalog author wrote it, for reports.
    pub fn describe(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The tool glob a call check names, for the offline driver to call first.
    pub fn wanted_tool(&self) -> Option<&str> {
        match self {
            Self::Called(called) => Some(&called.called),
            _ => None,
        }
    }
}

/// A goal's state reads, in order.
pub fn state_reads(goal: &Goal) -> impl Iterator<Item = &StateRead> {
    goal.checks.iter().filter_map(|check| match check {
        Check::State(state) => Some(&state.state),
        _ => None,
    })
}

/// What the runner's read of the product's state answered after a check tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateAnswer {
    pub tool: String,
    /// The answer's text (capped), or `None` when the read failed.
    pub text: Option<String>,
    /// Why the read failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

text_enum! {
    /// A judge's answer to one criterion. `not_judged`: no judge is configured.
    pub enum Judgement {
        Met => "met",
        Unmet => "unmet",
        Inconclusive => "inconclusive",
        NotJudged => "not_judged",
    }
}

text_enum! {
    /// How one trial of a goal went: `pass` only when every check passed and every
    /// criterion was met; `fail` when a check failed or a criterion was unmet; otherwise
    /// `unjudged` (a criterion inconclusive or not judged), which never counts as a pass.
    pub enum Outcome { Pass => "pass", Fail => "fail", Unjudged => "unjudged" }
}

/// One check of a trial.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    /// What was found, in words.
    pub detail: String,
}

/// One criterion of a trial, as the judge answered it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CriterionResult {
    pub criterion: String,
    /// `met`, `unmet`, `inconclusive` or `not_judged`.
    #[schema(value_type = String)]
    pub judgement: Judgement,
    pub reason: String,
    /// The judge's raw answer, kept when it could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// The outcome of checks and criteria together.
pub fn outcome(checks: &[CheckResult], criteria: &[CriterionResult]) -> Outcome {
    if checks.iter().any(|c| !c.passed) || criteria.iter().any(|c| c.judgement == Judgement::Unmet) {
        Outcome::Fail
    } else if criteria.iter().any(|c| c.judgement != Judgement::Met) {
        Outcome::Unjudged
    } else {
        Outcome::Pass
    }
}

/// One trial of one goal of one persona: a check tick and what was found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    /// The check run the trial belongs to.
    pub run_id: Uuid,
    pub goal: String,
    pub persona_id: Uuid,
    pub tick_id: Uuid,
    /// 1-based, within the run.
    pub trial: i32,
    /// `pass`, `fail` or `unjudged`.
    #[schema(value_type = String)]
    pub outcome: Outcome,
    pub checks: Vec<CheckResult>,
    pub criteria: Vec<CriterionResult>,
    /// The simulator that played the persona (driver · model · prompt · temperature).
    pub simulator: String,
    /// The judge's version (model · prompt · temperature); `None`: no judge.
    pub judge: Option<String>,
    /// How long the trial's tick ran.
    pub seconds: f64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

text_enum! {
    /// Where a check run is: running, done (every trial has a verdict), or failed (it
    /// stopped early; `error` says why).
    pub enum RunStatus { Running => "running", Done => "done", Failed => "failed" }
}

/// A check run: the goals of some personas, each run `trials` times as check ticks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckRun {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    /// Who asked: `cli`, `api` or `schedule`.
    #[schema(value_type = String)]
    pub trigger: super::tick::Trigger,
    #[schema(value_type = String)]
    pub status: RunStatus,
    pub trials: i32,
    /// Trials that must pass for a goal to hold.
    pub min_pass: i32,
    /// The goals and personas asked for (empty: all).
    pub goals: Vec<String>,
    pub personas: Vec<String>,
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// How one goal of one persona did over the trials of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GoalSummary {
    pub persona_id: Uuid,
    pub goal: String,
    pub trials: u32,
    pub passed: u32,
    /// The share of trials that passed: the chance one trial passes.
    pub pass_at_1: f64,
    /// Whether every trial passed (τ²-bench's pass^k for this run's k).
    pub pass_all: bool,
    /// Some trials passed, not all.
    pub flaky: bool,
    /// At least `min_pass` trials passed.
    pub holds: bool,
    /// The trials that did not pass, with what fell short.
    pub shortfalls: Vec<Shortfall>,
}

/// A trial that did not pass: its tick, and the unmet checks and criteria in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Shortfall {
    pub trial: i32,
    pub tick_id: Uuid,
    #[schema(value_type = String)]
    pub outcome: Outcome,
    pub unmet: Vec<String>,
}

impl Verdict {
    /// The failed checks and the criteria not met, in words.
    pub fn unmet(&self) -> Vec<String> {
        let checks = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("check {}: {}", c.check, c.detail));
        let criteria = self
            .criteria
            .iter()
            .filter(|c| c.judgement != Judgement::Met)
            .map(|c| format!("criterion \"{}\": {} ({})", c.criterion, c.judgement, c.reason));
        checks.chain(criteria).collect()
    }
}

/// Per persona and goal (in the order first seen), how the verdicts went; a goal holds
/// when at least `min_pass` of its trials passed (`0`: all of them).
pub fn summarize(verdicts: &[Verdict], min_pass: u32) -> Vec<GoalSummary> {
    let mut order: Vec<(Uuid, String)> = Vec::new();
    for v in verdicts {
        let key = (v.persona_id, v.goal.clone());
        if !order.contains(&key) {
            order.push(key);
        }
    }
    order
        .into_iter()
        .map(|(persona_id, goal)| {
            let mine: Vec<&Verdict> = verdicts
                .iter()
                .filter(|v| v.persona_id == persona_id && v.goal == goal)
                .collect();
            let trials = mine.len() as u32;
            let passed = mine.iter().filter(|v| v.outcome == Outcome::Pass).count() as u32;
            let needed = if min_pass == 0 { trials } else { min_pass.min(trials) };
            GoalSummary {
                persona_id,
                goal,
                trials,
                passed,
                pass_at_1: if trials == 0 {
                    0.0
                } else {
                    f64::from(passed) / f64::from(trials)
                },
                pass_all: trials > 0 && passed == trials,
                flaky: passed > 0 && passed < trials,
                holds: trials > 0 && passed >= needed,
                shortfalls: mine
                    .iter()
                    .filter(|v| v.outcome != Outcome::Pass)
                    .map(|v| Shortfall {
                        trial: v.trial,
                        tick_id: v.tick_id,
                        outcome: v.outcome,
                        unmet: v.unmet(),
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_read_as_their_catalog_authors_write_them() {
        let goal: Goal = serde_json::from_value(serde_json::json!({
            "name": "plan-the-week", "task": "Plane deine Woche.",
            "checks": [
                {"called": "todo.*", "min": 2, "args": {"/title": "(?i)abgabe"}},
                {"not_called": "todo.delete"}, {"max_errors": 0}, {"max_calls": 8},
                {"max_tokens": 20000}, {"max_seconds": 120},
                {"state": {"tool": "todo.list", "contains": "Abgabe"}}
            ],
            "criteria": ["The week's deadlines are all in the list."]
        }))
        .unwrap();
        assert!(matches!(&goal.checks[0], Check::Called(c) if c.min == Some(2) && c.args.len() == 1));
        assert!(matches!(&goal.checks[1], Check::NotCalled(_)));
        assert!(matches!(&goal.checks[6], Check::State(s) if s.state.arguments == serde_json::json!({})));
        assert_eq!(state_reads(&goal).count(), 1);
        assert_eq!(goal.checks[2].describe(), r#"{"max_errors":0}"#);
        // A key no check has is no check.
        let bad = serde_json::from_value::<Check>(serde_json::json!({"called": "x", "mins": 2}));
        assert!(bad.is_err());
    }

    #[test]
    fn inconclusive_never_passes_and_unmet_fails() {
        let check = |passed| CheckResult {
            check: "c".into(),
            passed,
            detail: String::new(),
        };
        let criterion = |judgement| CriterionResult {
            criterion: "k".into(),
            judgement,
            reason: String::new(),
            raw: None,
        };
        assert_eq!(outcome(&[check(true)], &[criterion(Judgement::Met)]), Outcome::Pass);
        assert_eq!(outcome(&[check(true)], &[]), Outcome::Pass);
        assert_eq!(
            outcome(&[check(true)], &[criterion(Judgement::Inconclusive)]),
            Outcome::Unjudged
        );
        assert_eq!(
            outcome(&[check(true)], &[criterion(Judgement::NotJudged)]),
            Outcome::Unjudged
        );
        assert_eq!(outcome(&[check(false)], &[criterion(Judgement::Met)]), Outcome::Fail);
        assert_eq!(outcome(&[check(true)], &[criterion(Judgement::Unmet)]), Outcome::Fail);
    }

    fn verdict(goal: &str, trial: i32, outcome: Outcome) -> Verdict {
        Verdict {
            id: Uuid::new_v4(),
            tenant_id: Uuid::nil(),
            run_id: Uuid::nil(),
            goal: goal.into(),
            persona_id: Uuid::nil(),
            tick_id: Uuid::new_v4(),
            trial,
            outcome,
            checks: vec![CheckResult {
                check: r#"{"called":"todo.create"}"#.into(),
                passed: outcome != Outcome::Fail,
                detail: "no ok call of todo.create".into(),
            }],
            criteria: Vec::new(),
            simulator: "offline".into(),
            judge: None,
            seconds: 1.0,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_goal_holds_when_enough_trials_pass_and_is_flaky_when_some_do() {
        let verdicts = [
            verdict("a", 1, Outcome::Pass),
            verdict("a", 2, Outcome::Fail),
            verdict("a", 3, Outcome::Pass),
            verdict("a", 4, Outcome::Pass),
            verdict("b", 1, Outcome::Pass),
        ];
        let all = summarize(&verdicts, 0);
        assert_eq!(all.len(), 2);
        let a = &all[0];
        assert_eq!(
            (a.trials, a.passed, a.pass_all, a.flaky, a.holds),
            (4, 3, false, true, false)
        );
        assert!((a.pass_at_1 - 0.75).abs() < 1e-9);
        assert_eq!(a.shortfalls.len(), 1);
        assert_eq!(a.shortfalls[0].trial, 2);
        assert!(a.shortfalls[0].unmet[0].contains("todo.create"), "{:?}", a.shortfalls);
        assert!(all[1].holds && all[1].pass_all && !all[1].flaky);
        // Three of four suffice with --min-pass 3.
        assert!(summarize(&verdicts, 3)[0].holds);
    }
}
