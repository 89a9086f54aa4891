//! The end-of-tick self-rating: the JSON the persona must answer with, and checking it.
//! An answer that fails the check is never turned into a rating.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// One usable rating.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModuleRating {
    pub module: String,
    pub rating: i32,
    pub note: String,
}

/// The JSON Schema of the answer (sent as structured output where the endpoint supports it).
pub fn schema(modules: &[String]) -> Value {
    json!({
        "type": "object",
        "properties": {
            "ratings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "module": {"type": "string", "enum": modules},
                        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                        "note": {"type": "string"}
                    },
                    "required": ["module", "rating", "note"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["ratings"],
        "additionalProperties": false
    })
}

/// The `response_format` asking for that schema.
pub fn response_format(modules: &[String]) -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "module_ratings", "strict": true, "schema": schema(modules)}})
}

/// The JSON object inside an answer: models wrap it in code fences or a sentence.
fn extract(text: &str) -> Option<&str> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (end > start).then(|| &text[start..=end])
}

/// Checks an answer against the modules that must be rated. `Err` says what is wrong,
/// in words the repair turn can quote back to the model.
pub fn parse(answer: &str, modules: &[String]) -> Result<Vec<ModuleRating>, String> {
    let json = extract(answer).ok_or("the answer contains no JSON object")?;
    let value: Value = serde_json::from_str(json).map_err(|err| format!("the JSON does not parse: {err}"))?;
    let items = value
        .get("ratings")
        .and_then(Value::as_array)
        .ok_or("the object has no \"ratings\" array")?;
    let wanted: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut problems = Vec::new();
    let mut ratings = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        let module = item.get("module").and_then(Value::as_str);
        let rating = item.get("rating");
        let note = item.get("note").and_then(Value::as_str);
        let Some(module) = module else {
            problems.push(format!("ratings[{index}] has no \"module\""));
            continue;
        };
        if !wanted.contains(module) {
            problems.push(format!(
                "\"{module}\" is not one of the parts to rate ({})",
                modules.join(", ")
            ));
            continue;
        }
        if !seen.insert(module.to_string()) {
            problems.push(format!("\"{module}\" is rated twice"));
            continue;
        }
        let value = match rating.and_then(Value::as_i64) {
            Some(r) if (1..=5).contains(&r) && rating.is_some_and(|v| v.is_i64() || v.is_u64()) => r as i32,
            _ => {
                problems.push(format!(
                    "the rating of \"{module}\" must be a whole number from 1 to 5, got {}",
                    rating.map_or("nothing".into(), Value::to_string)
                ));
                continue;
            }
        };
        ratings.push(ModuleRating {
            module: module.to_string(),
            rating: value,
            note: note.unwrap_or_default().trim().to_string(),
        });
    }
    for missing in wanted.iter().filter(|m| !seen.contains(**m)) {
        problems.push(format!("\"{missing}\" is not rated"));
    }
    if problems.is_empty() {
        Ok(ratings)
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> Vec<String> {
        vec!["todo".into(), "mood".into()]
    }

    #[test]
    fn accepts_a_fenced_answer() {
        let answer = "Here you go:\n```json\n{\"ratings\": [{\"module\": \"todo\", \"rating\": 4, \"note\": \"fine\"}, {\"module\": \"mood\", \"rating\": 2, \"note\": \"slow\"}]}\n```";
        let ratings = parse(answer, &modules()).unwrap();
        assert_eq!(
            ratings[1],
            ModuleRating {
                module: "mood".into(),
                rating: 2,
                note: "slow".into()
            }
        );
    }

    #[test]
    fn names_every_problem() {
        let answer = r#"{"ratings": [{"module": "todo", "rating": 7, "note": ""}, {"module": "calendar", "rating": 3, "note": ""}]}"#;
        let problem = parse(answer, &modules()).unwrap_err();
        assert!(
            problem.contains("\"todo\" must be a whole number from 1 to 5, got 7"),
            "{problem}"
        );
        assert!(
            problem.contains("\"calendar\" is not one of the parts to rate"),
            "{problem}"
        );
        assert!(problem.contains("\"mood\" is not rated"), "{problem}");
        assert!(parse("four stars", &modules()).unwrap_err().contains("no JSON object"));
        let fractional = r#"{"ratings": [{"module": "todo", "rating": 3.5, "note": ""}, {"module": "mood", "rating": 3, "note": ""}]}"#;
        assert!(parse(fractional, &modules()).unwrap_err().contains("whole number"));
    }
}
