//! The deterministic half of a verdict: each check of a goal against the tick's audited
//! calls, its figures (tokens, seconds) and the runner's state reads. Pure: the same tick
//! gives the same results.

use globset::GlobMatcher;
use serde_json::Value;

use crate::model::call::{Call, CallKind, CallResult};
use crate::model::goal::{Check, CheckResult, Goal, StateAnswer, StateRead};
use crate::model::tick::TickStatus;

/// What a check tick left to check.
pub struct TickFacts<'a> {
    pub status: TickStatus,
    pub error: Option<&'a str>,
    pub calls: &'a [Call],
    pub tokens: i64,
    pub seconds: f64,
    pub state: &'a [StateAnswer],
}

/// The tick's own ending first (a tick that did not end `ok` fails its goal), then each
/// check of the goal in order.
pub fn evaluate(goal: &Goal, facts: &TickFacts<'_>) -> Vec<CheckResult> {
    let ended_ok = facts.status == TickStatus::Ok;
    let mut results = vec![CheckResult {
        check: "tick ended ok".into(),
        passed: ended_ok,
        detail: if ended_ok {
            "the tick ended ok".into()
        } else {
            format!(
                "the tick ended {}: {}",
                facts.status,
                facts.error.unwrap_or("no reason given")
            )
        },
    }];
    let mut state_answers = facts.state.iter();
    for check in &goal.checks {
        let (passed, detail) = match check {
            Check::Called(called) => {
                let want = called.result.unwrap_or(CallResult::Ok);
                let min = called.min.unwrap_or(1).max(1) as usize;
                let matcher = glob(&called.called);
                let found = persona_calls(facts.calls)
                    .filter(|c| c.result == want && matcher.as_ref().is_some_and(|m| m.is_match(&c.tool_name)))
                    .filter(|c| args_match(c, &called.args))
                    .count();
                let args = if called.args.is_empty() {
                    ""
                } else {
                    " with matching arguments"
                };
                (
                    found >= min,
                    format!("{found} {want} call(s) of `{}`{args}, {min} needed", called.called),
                )
            }
            Check::NotCalled(not) => {
                let matcher = glob(&not.not_called);
                let found: Vec<&str> = persona_calls(facts.calls)
                    .filter(|c| c.sent && matcher.as_ref().is_some_and(|m| m.is_match(&c.tool_name)))
                    .map(|c| c.tool_name.as_str())
                    .collect();
                (
                    found.is_empty(),
                    if found.is_empty() {
                        format!("no call of `{}`", not.not_called)
                    } else {
                        format!("called {}", found.join(", "))
                    },
                )
            }
            Check::MaxErrors(max) => {
                let errors = persona_calls(facts.calls)
                    .filter(|c| c.result == CallResult::Error)
                    .count();
                (
                    errors as u64 <= max.max_errors,
                    format!("{errors} error(s), at most {}", max.max_errors),
                )
            }
            Check::MaxCalls(max) => {
                let sent = persona_calls(facts.calls).filter(|c| c.sent).count();
                (
                    sent as u64 <= max.max_calls,
                    format!("{sent} call(s) sent, at most {}", max.max_calls),
                )
            }
            Check::MaxTokens(max) => {
                let tokens = facts.tokens.max(0) as u64;
                (
                    tokens <= max.max_tokens,
                    format!("{tokens} token(s), at most {}", max.max_tokens),
                )
            }
            Check::MaxSeconds(max) => (
                facts.seconds <= max.max_seconds as f64,
                format!("{:.1} s, at most {} s", facts.seconds, max.max_seconds),
            ),
            Check::State(state) => judge_state(&state.state, state_answers.next()),
        };
        results.push(CheckResult {
            check: check.describe(),
            passed,
            detail,
        });
    }
    results
}

/// The persona's own calls (not the server's requests, not the runner's state reads).
fn persona_calls(calls: &[Call]) -> impl Iterator<Item = &Call> {
    calls.iter().filter(|c| c.kind == CallKind::Call)
}

/// A glob the catalog validator let through; `None` (matching nothing) if one did not compile.
fn glob(pattern: &str) -> Option<GlobMatcher> {
    globset::Glob::new(pattern).ok().map(|g| g.compile_matcher())
}

/// Every `args` entry (JSON pointer → regex) finds a value matching its regex.
fn args_match(call: &Call, args: &std::collections::BTreeMap<String, String>) -> bool {
    if args.is_empty() {
        return true;
    }
    let Some(arguments) = call
        .arguments
        .as_deref()
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
    else {
        return false;
    };
    args.iter().all(|(pointer, pattern)| {
        let Ok(regex) = regex::Regex::new(pattern) else {
            return false;
        };
        arguments
            .pointer(pointer)
            .is_some_and(|value| regex.is_match(&value_text(value)))
    })
}

/// A JSON value as the text a pattern is matched against (a string without its quotes).
fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn judge_state(read: &StateRead, answer: Option<&StateAnswer>) -> (bool, String) {
    let Some(answer) = answer else {
        return (
            false,
            format!("`{}` was not read (the tick ended before its state reads)", read.tool),
        );
    };
    let Some(text) = answer.text.as_deref() else {
        return (
            false,
            format!(
                "reading `{}` failed: {}",
                read.tool,
                answer.error.as_deref().unwrap_or("no answer")
            ),
        );
    };
    let subject = match &read.pointer {
        None => text.to_string(),
        Some(pointer) => {
            let found = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.pointer(pointer).cloned());
            match found {
                Some(value) => value_text(&value),
                None => return (false, format!("`{}` answered no value at `{pointer}`", read.tool)),
            }
        }
    };
    if let Some(needle) = &read.contains
        && !subject.contains(needle.as_str())
    {
        return (false, format!("`{}` answered without \"{needle}\"", read.tool));
    }
    if let Some(pattern) = &read.matches {
        match regex::Regex::new(pattern) {
            Ok(regex) if regex.is_match(&subject) => {}
            Ok(_) => return (false, format!("`{}` answered nothing matching /{pattern}/", read.tool)),
            Err(err) => return (false, format!("/{pattern}/ is not a regex: {err}")),
        }
    }
    (true, format!("`{}` answered as expected", read.tool))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::call::canonical_json;
    use uuid::Uuid;

    fn call(tool: &str, result: CallResult, args: Value) -> Call {
        Call {
            space: None,
            id: Uuid::new_v4(),
            tenant_id: Uuid::nil(),
            tick_id: Uuid::nil(),
            persona_id: Uuid::nil(),
            seq: 0,
            kind: CallKind::Call,
            tool_name: tool.into(),
            module: "todo".into(),
            input_hash: String::new(),
            result,
            error_message: None,
            arguments: Some(canonical_json(&args)),
            output: None,
            chaos: false,
            latency_ms: None,
            sent: true,
            recovered: false,
            refusal: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn goal(checks: Value) -> Goal {
        serde_json::from_value(serde_json::json!({"name": "g", "task": "t", "checks": checks})).unwrap()
    }

    fn facts<'a>(calls: &'a [Call], state: &'a [StateAnswer]) -> TickFacts<'a> {
        TickFacts {
            status: TickStatus::Ok,
            error: None,
            calls,
            tokens: 1200,
            seconds: 3.0,
            state,
        }
    }

    #[test]
    fn call_checks_count_ok_calls_by_glob_and_argument() {
        let calls = [
            call(
                "todo.create",
                CallResult::Ok,
                serde_json::json!({"title": "Abgabe Statistik"}),
            ),
            call(
                "todo.create",
                CallResult::Error,
                serde_json::json!({"title": "Einkauf"}),
            ),
            call("notes.add", CallResult::Ok, serde_json::json!({})),
        ];
        let checks = goal(serde_json::json!([
            {"called": "todo.*"},
            {"called": "todo.create", "min": 2},
            {"called": "todo.create", "args": {"/title": "(?i)abgabe"}},
            {"called": "todo.create", "args": {"/title": "Urlaub"}},
            {"called": "todo.create", "result": "error"},
            {"not_called": "todo.delete"},
            {"not_called": "notes.*"},
            {"max_errors": 0}, {"max_calls": 3}, {"max_tokens": 1000}, {"max_seconds": 5}
        ]));
        let passed: Vec<bool> = evaluate(&checks, &facts(&calls, &[]))
            .iter()
            .map(|r| r.passed)
            .collect();
        assert_eq!(
            passed,
            [
                true, true, false, true, false, true, true, false, false, true, false, true
            ]
        );
    }

    #[test]
    fn state_checks_read_the_answer_text_or_a_pointer_into_it() {
        let checks = goal(serde_json::json!([
            {"state": {"tool": "todo.list", "contains": "Abgabe"}},
            {"state": {"tool": "todo.list", "pointer": "/items/0/title", "matches": "^Abgabe"}},
            {"state": {"tool": "todo.list", "pointer": "/items/5"}},
            {"state": {"tool": "todo.list", "contains": "x"}}
        ]));
        let text = r#"{"items":[{"title":"Abgabe Statistik"}]}"#;
        let answer = |text: Option<&str>| StateAnswer {
            tool: "todo.list".into(),
            text: text.map(Into::into),
            error: text.is_none().then(|| "HTTP 500".to_string()),
        };
        let state = [answer(Some(text)), answer(Some(text)), answer(Some(text)), answer(None)];
        let results = evaluate(&checks, &facts(&[], &state));
        let passed: Vec<bool> = results.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [true, true, true, false, false]);
        assert!(results[4].detail.contains("HTTP 500"), "{}", results[4].detail);
    }

    #[test]
    fn a_tick_that_did_not_end_ok_fails_its_goal() {
        let mut failed = facts(&[], &[]);
        failed.status = TickStatus::Failed;
        failed.error = Some("login refused");
        let results = evaluate(&goal(serde_json::json!([])), &failed);
        assert!(!results[0].passed && results[0].detail.contains("login refused"));
    }
}
