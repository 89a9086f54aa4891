//! Goals in a catalog: the rules the schema cannot state (names unique per persona, globs
//! and regexes that compile), the goals an archetype gives all of its personas (the
//! catalog's `archetypes` table), and merging those into each persona's own.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::LazyLock;

use serde_json::Value;

use super::SCHEMA_JSON;
use super::problem::{Problem, join, json_path, problem, shape_problem};
use crate::model::goal::{Check, Goal};
use crate::model::persona::PersonaSpec;

/// The schema of a goals list (`$defs/goals` of the catalog schema).
static GOALS_SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let catalog: Value = serde_json::from_str(SCHEMA_JSON).expect("the embedded catalog schema is JSON");
    let goals = serde_json::json!({
        "$schema": catalog["$schema"],
        "$defs": catalog["$defs"],
        "$ref": "#/$defs/goals",
    });
    jsonschema::validator_for(&goals).expect("the embedded catalog schema is a valid JSON Schema")
});

/// The rules of a persona's `goals` a schema cannot express (its shape is the persona
/// schema's to report): names unique, globs and regexes that compile.
pub(super) fn check_goal_rules(file: &Path, at: &str, goals: Option<&Value>, problems: &mut Vec<Problem>) {
    let Some(goals) = goals.and_then(Value::as_array) else {
        return;
    };
    let mut names = HashSet::new();
    for (index, goal) in goals.iter().enumerate() {
        let path = format!("{}[{index}]", join(at, "goals"));
        if let Some(name) = goal.get("name").and_then(Value::as_str)
            && !names.insert(name)
        {
            problems.push(problem(
                file,
                join(&path, "name"),
                format!("duplicate goal name `{name}`"),
            ));
        }
        for (number, check) in goal
            .get("checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_patterns(file, &format!("{}[{number}]", join(&path, "checks")), check, problems);
        }
    }
}

fn check_patterns(file: &Path, at: &str, check: &Value, problems: &mut Vec<Problem>) {
    for key in ["called", "not_called"] {
        if let Some(glob) = check.get(key).and_then(Value::as_str)
            && let Err(err) = globset::Glob::new(glob)
        {
            problems.push(problem(file, join(at, key), format!("`{glob}` is not a glob: {err}")));
        }
    }
    for (pointer, pattern) in check.get("args").and_then(Value::as_object).into_iter().flatten() {
        if let Some(pattern) = pattern.as_str()
            && let Err(err) = regex::Regex::new(pattern)
        {
            problems.push(problem(
                file,
                format!("{}[\"{pointer}\"]", join(at, "args")),
                format!("not a regex: {err}"),
            ));
        }
    }
    if let Some(pattern) = check.pointer("/state/matches").and_then(Value::as_str)
        && let Err(err) = regex::Regex::new(pattern)
    {
        problems.push(problem(file, join(at, "state.matches"), format!("not a regex: {err}")));
    }
}

/// The catalog's `archetypes` table: each archetype's goals, checked with paths
/// (`archetypes.adhd-student.goals[0].task`).
pub(super) fn archetype_goals(file: &Path, table: &Value, problems: &mut Vec<Problem>) -> BTreeMap<String, Vec<Goal>> {
    let mut found = BTreeMap::new();
    let Some(table) = table.as_object() else {
        problems.push(shape_problem(
            file,
            "archetypes",
            "must be an object of archetype → {goals}",
        ));
        return found;
    };
    for (archetype, entry) in table {
        let at = format!("archetypes.{archetype}");
        let Some(entry) = entry.as_object() else {
            problems.push(shape_problem(file, at, "must be an object {\"goals\": [...]}"));
            continue;
        };
        for key in entry.keys().filter(|k| k.as_str() != "goals") {
            problems.push(shape_problem(
                file,
                join(&at, key),
                "unknown field (see catalog/catalog.schema.json)",
            ));
        }
        let goals = entry.get("goals").cloned().unwrap_or(Value::Array(Vec::new()));
        let before = problems.len();
        for error in GOALS_SCHEMA.iter_errors(&goals) {
            problems.push(shape_problem(
                file,
                json_path(&join(&at, "goals"), error.instance_path().segments()),
                error.to_string(),
            ));
        }
        check_goal_rules(file, &at, Some(&goals), problems);
        if problems.len() > before {
            continue;
        }
        match serde_json::from_value::<Vec<Goal>>(goals) {
            Ok(goals) => {
                found.insert(archetype.clone(), goals);
            }
            Err(err) => problems.push(shape_problem(file, join(&at, "goals"), err.to_string())),
        }
    }
    found
}

/// `spec` with its archetype's goals added after its own (its own goal of the same name wins).
pub fn with_archetype_goals(spec: PersonaSpec, archetypes: &BTreeMap<String, Vec<Goal>>) -> PersonaSpec {
    let Some(shared) = archetypes.get(&spec.archetype) else {
        return spec;
    };
    let mut goals = spec.goals;
    for goal in shared {
        if !goals.iter().any(|own| own.name == goal.name) {
            goals.push(goal.clone());
        }
    }
    PersonaSpec { goals, ..spec }
}

/// What [`tool_problems`] found: (goal, tool) pairs.
pub struct ToolProblems<'a> {
    /// State checks whose tool the product marks destructive: refused.
    pub destructive: Vec<(&'a str, &'a str)>,
    /// Tools (or globs) a check names that match no tool the product lists: warned about.
    pub unknown: Vec<(&'a str, String)>,
}

/// The state-check tools of `goals` the product lists as destructive, and the tools any
/// check names that the product does not list: what `catalog validate --product` refuses
/// and warns about.
pub fn tool_problems<'a>(goals: &'a [Goal], listed: &[(String, bool)]) -> ToolProblems<'a> {
    let mut destructive = Vec::new();
    let mut unknown = Vec::new();
    for goal in goals {
        for check in &goal.checks {
            let named = match check {
                Check::Called(c) => Some(c.called.as_str()),
                Check::NotCalled(c) => Some(c.not_called.as_str()),
                Check::State(s) => Some(s.state.tool.as_str()),
                _ => None,
            };
            let Some(named) = named else { continue };
            let Ok(glob) = globset::Glob::new(named).map(|g| g.compile_matcher()) else {
                continue;
            };
            let matching: Vec<&(String, bool)> = listed.iter().filter(|(name, _)| glob.is_match(name)).collect();
            if matching.is_empty() {
                unknown.push((goal.name.as_str(), named.to_string()));
            }
            if let Check::State(state) = check
                && matching.iter().any(|(_, is_destructive)| *is_destructive)
            {
                destructive.push((goal.name.as_str(), state.state.tool.as_str()));
            }
        }
    }
    ToolProblems { destructive, unknown }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destructive_state_tool_is_refused_and_an_unlisted_tool_warned_about() {
        let goals: Vec<Goal> = serde_json::from_value(serde_json::json!([{
            "name": "g", "task": "t",
            "checks": [{"called": "todo.*"}, {"not_called": "calendar.delete"},
                       {"state": {"tool": "todo.delete"}}, {"state": {"tool": "todo.list"}}]
        }]))
        .unwrap();
        let listed = [
            ("todo.create".to_string(), false),
            ("todo.list".to_string(), false),
            ("todo.delete".to_string(), true),
        ];
        let found = tool_problems(&goals, &listed);
        assert_eq!(found.destructive, [("g", "todo.delete")]);
        assert_eq!(found.unknown, [("g", "calendar.delete".to_string())]);
    }
}
