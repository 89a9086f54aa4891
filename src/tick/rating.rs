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

/// The answer's ratings object, wherever the model put it (a code fence, a sentence
/// around it): the first JSON object with a `ratings` array. With one module to rate, an
/// object that rates it alone (`{"rating": 4, "note": "…"}`) stands for that module.
fn ratings_object(answer: &str, modules: &[String]) -> Option<Value> {
    let values = crate::llm::recover::json_values(answer);
    if let Some(found) = values.iter().find(|v| v.get("ratings").is_some_and(Value::is_array)) {
        return Some(found.clone());
    }
    let [module] = modules else {
        return values.into_iter().find(Value::is_object);
    };
    values
        .into_iter()
        .find(Value::is_object)
        .map(|single| match single.get("rating") {
            Some(rating) => {
                let note = single.get("note").or_else(|| single.get("comment")).cloned();
                json!({"ratings": [{"module": module, "rating": rating, "note": note.unwrap_or(json!(""))}]})
            }
            None => single,
        })
}

/// Checks an answer against the modules that must be rated. `Err` says what is wrong,
/// in words the repair turn can quote back to the model.
pub fn parse(answer: &str, modules: &[String]) -> Result<Vec<ModuleRating>, String> {
    let value = ratings_object(answer, modules).ok_or("the answer contains no JSON object")?;
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
        let note = item.get("note").or_else(|| item.get("comment")).and_then(Value::as_str);
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

    #[test]
    fn a_single_module_may_be_rated_by_a_bare_object_as_small_models_answer() {
        // What Qwen2.5-Coder-1.5B answered to a one-module rating request.
        let answer = "{\n  \"rating\": 5,\n  \"comment\": \"The todo was created.\"\n}";
        let ratings = parse(answer, &["todo".to_string()]).unwrap();
        assert_eq!(
            (ratings[0].rating, ratings[0].note.as_str()),
            (5, "The todo was created.")
        );
        // With two modules to rate, a bare rating says nothing about which one.
        assert!(parse(answer, &modules()).is_err());
        // Other JSON in the prose does not hide the ratings object.
        let prose = "Context: {\"a\": 1}. My answer: {\"ratings\": [{\"module\": \"todo\", \"rating\": 4, \"note\": \"\"}, {\"module\": \"mood\", \"rating\": 3, \"note\": \"\"}]}";
        assert_eq!(parse(prose, &modules()).unwrap().len(), 2);
    }
}
