//! The judge: a model apart from the persona that reads a check tick's transcript and its
//! audited calls and answers each criterion `met`, `unmet` or `inconclusive` with a
//! reason. Its answer is JSON, validated, with one repair; an answer that still cannot be
//! used leaves the criterion `inconclusive` with the raw text kept. Never a pass by default.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::llm::{LlmClient, Want};
use crate::model::call::Call;
use crate::model::goal::{CriterionResult, Goal, Judgement};
use crate::model::tick::Transcript;

const TEMPLATE: &str = include_str!("../../prompts/judge.md");
/// How much of the transcript and of the calls the judge reads (characters each).
const TRANSCRIPT_CHARS: usize = 24_000;
const CALLS_CHARS: usize = 16_000;
const OUTPUT_EXCERPT: usize = 600;
/// The most of an unusable answer kept beside the criterion.
const RAW_CHARS: usize = 4_000;

/// A configured judge.
pub struct Judge {
    client: LlmClient,
    version: String,
    secrets: Vec<String>,
}

/// The judge prompt's version: a short hash of its template.
pub fn prompt_version() -> String {
    Sha256::digest(TEMPLATE.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Judge {
    pub fn new(client: LlmClient, temperature: f32, secrets: &[String]) -> Self {
        let version = format!("{} · judge {} · t {temperature}", client.model(), prompt_version());
        Self {
            client,
            version,
            secrets: secrets.to_vec(),
        }
    }

    /// Model · prompt hash · temperature, recorded beside every verdict.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Each criterion of `goal`, judged from the tick's transcript and calls.
    pub async fn judge(&self, goal: &Goal, transcript: Option<&Transcript>, calls: &[Call]) -> Vec<CriterionResult> {
        if goal.criteria.is_empty() {
            return Vec::new();
        }
        let request = prompt(goal, transcript, calls);
        let mut messages = vec![json!({"role": "user", "content": request})];
        let schema = schema(goal.criteria.len());
        let mut raw_answers = Vec::new();
        for attempt in 0..2 {
            let turn = match self.client.chat(&messages, &[], Want::Json(Some(&schema))).await {
                Ok(turn) => turn,
                Err(err) => {
                    let reason = format!("the judge could not be asked: {err}");
                    return inconclusive(goal, &reason, None);
                }
            };
            let answer = turn.content.clone().unwrap_or_default();
            match parse(&answer, goal) {
                Ok(results) => return results,
                Err(problem) => {
                    raw_answers.push(answer);
                    if attempt == 0 {
                        tracing::info!(goal = %goal.name, %problem, "judge answer unusable; asking once more");
                        messages.push(turn.as_message());
                        messages.push(json!({"role": "user", "content": format!(
                            "That answer cannot be used: {problem}. Reply again with only the JSON object described above."
                        )}));
                    } else {
                        tracing::warn!(goal = %goal.name, %problem, "judge answer unusable after one repair");
                        let joined = raw_answers.join("\n\n--- repair answer ---\n\n");
                        let raw = crate::redact::redact_truncate(&joined, &self.secrets, RAW_CHARS);
                        return inconclusive(
                            goal,
                            &format!("the judge's answer could not be used: {problem}"),
                            Some(raw),
                        );
                    }
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

/// Every criterion inconclusive, for the same reason.
fn inconclusive(goal: &Goal, reason: &str, raw: Option<String>) -> Vec<CriterionResult> {
    goal.criteria
        .iter()
        .map(|criterion| CriterionResult {
            criterion: criterion.clone(),
            judgement: Judgement::Inconclusive,
            reason: reason.to_string(),
            raw: raw.clone(),
        })
        .collect()
}

/// With no judge configured: every criterion `not_judged`, which never passes.
pub fn not_judged(goal: &Goal) -> Vec<CriterionResult> {
    goal.criteria
        .iter()
        .map(|criterion| CriterionResult {
            criterion: criterion.clone(),
            judgement: Judgement::NotJudged,
            reason: "no judge is configured ([judge] in config.toml)".into(),
            raw: None,
        })
        .collect()
}

fn prompt(goal: &Goal, transcript: Option<&Transcript>, calls: &[Call]) -> String {
    let criteria = goal
        .criteria
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}. {c}", i + 1))
        .collect::<Vec<_>>()
        .join("\n");
    TEMPLATE
        .replace("{{task}}", goal.task.trim())
        .replace("{{transcript}}", &transcript_text(transcript))
        .replace("{{calls}}", &calls_text(calls))
        .replace("{{criteria}}", &criteria)
}

/// The conversation as the judge reads it: who said what, tool results as the model saw
/// them, capped.
fn transcript_text(transcript: Option<&Transcript>) -> String {
    let Some(entries) = transcript.and_then(|t| t.entries.as_array()) else {
        return "(no transcript was kept)".into();
    };
    let mut text = String::new();
    for entry in entries {
        let step = entry["step"].as_str().unwrap_or("step");
        let body = entry
            .get("content")
            .or_else(|| entry.get("result"))
            .or_else(|| entry.get("text"))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_else(|| entry.to_string());
        let line = format!("[{step}] {}\n", cut(&body, 1_500));
        if text.len() + line.len() > TRANSCRIPT_CHARS {
            text.push_str("(the rest of the conversation is cut)\n");
            break;
        }
        text.push_str(&line);
    }
    if text.is_empty() { "(empty)".into() } else { text }
}

fn calls_text(calls: &[Call]) -> String {
    let mut text = String::new();
    for call in calls {
        let line = format!(
            "- #{} {} [{}] {} args={} output={}\n",
            call.seq,
            call.tool_name,
            call.kind,
            call.result,
            cut(call.arguments.as_deref().unwrap_or("{}"), 800),
            cut(
                call.output.as_deref().or(call.error_message.as_deref()).unwrap_or(""),
                OUTPUT_EXCERPT
            ),
        );
        if text.len() + line.len() > CALLS_CHARS {
            text.push_str("- (further calls are cut)\n");
            break;
        }
        text.push_str(&line);
    }
    if text.is_empty() {
        "(no tool calls)".into()
    } else {
        text
    }
}

fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn schema(criteria: usize) -> Value {
    json!({
        "type": "object",
        "properties": {"verdicts": {"type": "array", "minItems": criteria, "maxItems": criteria, "items": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": criteria},
                "judgement": {"type": "string", "enum": ["met", "unmet", "inconclusive"]},
                "reason": {"type": "string"}
            },
            "required": ["n", "judgement", "reason"]
        }}},
        "required": ["verdicts"]
    })
}

/// The judge's answer, validated: one verdict per criterion, by number; `met`, `unmet`
/// or `inconclusive`; a reason. What is wrong, in words, otherwise.
pub fn parse(answer: &str, goal: &Goal) -> Result<Vec<CriterionResult>, String> {
    let value = crate::llm::recover::json_values(answer)
        .into_iter()
        .find(|v| v.get("verdicts").is_some())
        .ok_or_else(|| "no JSON object with a `verdicts` list".to_string())?;
    let list = value["verdicts"].as_array().ok_or("`verdicts` is not a list")?;
    let mut found: BTreeMap<usize, (Judgement, String)> = BTreeMap::new();
    for (index, entry) in list.iter().enumerate() {
        let n = entry["n"]
            .as_u64()
            .filter(|n| (1..=goal.criteria.len() as u64).contains(n))
            .ok_or_else(|| {
                format!(
                    "verdicts[{index}].n must be a criterion number 1..={}",
                    goal.criteria.len()
                )
            })?;
        let judgement = match entry["judgement"].as_str().map(str::parse::<Judgement>) {
            Some(Ok(j)) if j != Judgement::NotJudged => j,
            _ => {
                return Err(format!(
                    "verdicts[{index}].judgement must be \"met\", \"unmet\" or \"inconclusive\""
                ));
            }
        };
        let reason = entry["reason"].as_str().unwrap_or_default().trim().to_string();
        if found.insert(n as usize, (judgement, reason)).is_some() {
            return Err(format!("criterion {n} is judged twice"));
        }
    }
    let missing: Vec<String> = (1..=goal.criteria.len())
        .filter(|n| !found.contains_key(n))
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(format!("criteria {} are not judged", missing.join(", ")));
    }
    Ok(goal
        .criteria
        .iter()
        .zip(found.into_values())
        .map(|(criterion, (judgement, reason))| CriterionResult {
            criterion: criterion.clone(),
            judgement,
            reason,
            raw: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal() -> Goal {
        serde_json::from_value(json!({"name": "g", "task": "t", "criteria": ["A todo exists.", "It is due Friday."]}))
            .unwrap()
    }

    #[test]
    fn an_answer_judges_every_criterion_once_by_number() {
        let answer = r#"Sure: {"verdicts": [{"n": 2, "judgement": "unmet", "reason": "no date"},
            {"n": 1, "judgement": "met", "reason": "todo.create ok"}]}"#;
        let results = parse(answer, &goal()).unwrap();
        assert_eq!(results[0].judgement, Judgement::Met);
        assert_eq!(results[1].judgement, Judgement::Unmet);
        assert_eq!(results[1].reason, "no date");
    }

    #[test]
    fn unusable_answers_say_what_is_wrong() {
        let g = goal();
        assert!(parse("I think it went well.", &g).unwrap_err().contains("verdicts"));
        let one = r#"{"verdicts": [{"n": 1, "judgement": "met", "reason": "x"}]}"#;
        assert!(parse(one, &g).unwrap_err().contains("criteria 2"));
        let word = r#"{"verdicts": [{"n": 1, "judgement": "yes", "reason": "x"}, {"n": 2, "judgement": "met", "reason": "x"}]}"#;
        assert!(parse(word, &g).unwrap_err().contains("judgement"));
        let twice = r#"{"verdicts": [{"n": 1, "judgement": "met", "reason": "x"}, {"n": 1, "judgement": "met", "reason": "x"}]}"#;
        assert!(parse(twice, &g).unwrap_err().contains("twice"));
        let own = r#"{"verdicts": [{"n": 1, "judgement": "not_judged", "reason": "x"}, {"n": 2, "judgement": "met", "reason": "x"}]}"#;
        assert!(parse(own, &g).is_err());
    }
}
