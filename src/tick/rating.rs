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
/// The free text is called `reason` so that it comes after `rating`: servers that decode
/// by grammar (llama.cpp, Ollama, vLLM) emit properties in the schema's key order, which
/// is alphabetical here, and a small model that runs on in its note until the token limit
/// has then given its rating already (see `parse`). One item per module.
pub fn schema(modules: &[String]) -> Value {
    json!({
        "type": "object",
        "properties": {
            "ratings": {
                "type": "array",
                "minItems": modules.len(),
                "maxItems": modules.len(),
                "items": {
                    "type": "object",
                    "properties": {
                        "module": {"type": "string", "enum": modules},
                        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                        "reason": {"type": "string"}
                    },
                    "required": ["module", "rating", "reason"],
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
fn ratings_object(answer: &str, modules: &[String], cut: bool) -> Option<Value> {
    let mut values = crate::llm::recover::json_values(answer);
    if cut && !values.iter().any(|v| v.get("ratings").is_some()) {
        values.extend(crate::llm::recover::complete_cut(answer));
    }
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
                let note = NOTE_KEYS.iter().find_map(|key| single.get(*key)).cloned();
                json!({"ratings": [{"module": module, "rating": rating, "note": note.unwrap_or(json!(""))}]})
            }
            None => single,
        })
}

/// The keys a rating's free text goes by: the schema's, and what models write instead.
const NOTE_KEYS: [&str; 3] = ["reason", "note", "comment"];

/// Checks an answer against the modules that must be rated. `Err` says what is wrong,
/// in words the repair turn can quote back to the model.
///
/// `cut`: the token limit ended the answer. What it holds is then completed (see
/// `recover::complete_cut`): a rating given before the note ran on still counts, and its
/// note ends in `…` where it was cut. Every check below still applies.
pub fn parse(answer: &str, modules: &[String], cut: bool) -> Result<Vec<ModuleRating>, String> {
    let value = ratings_object(answer, modules, cut).ok_or(if cut {
        "the answer was cut off at the token limit before it held any JSON object"
    } else {
        "the answer contains no JSON object"
    })?;
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
        let note = NOTE_KEYS.iter().find_map(|key| item.get(*key)).and_then(Value::as_str);
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
        let ratings = parse(answer, &modules(), false).unwrap();
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
        let problem = parse(answer, &modules(), false).unwrap_err();
        assert!(
            problem.contains("\"todo\" must be a whole number from 1 to 5, got 7"),
            "{problem}"
        );
        assert!(
            problem.contains("\"calendar\" is not one of the parts to rate"),
            "{problem}"
        );
        assert!(problem.contains("\"mood\" is not rated"), "{problem}");
        assert!(
            parse("four stars", &modules(), false)
                .unwrap_err()
                .contains("no JSON object")
        );
        let fractional = r#"{"ratings": [{"module": "todo", "rating": 3.5, "note": ""}, {"module": "mood", "rating": 3, "note": ""}]}"#;
        assert!(
            parse(fractional, &modules(), false)
                .unwrap_err()
                .contains("whole number")
        );
    }

    #[test]
    fn a_single_module_may_be_rated_by_a_bare_object_as_small_models_answer() {
        // What Qwen2.5-Coder-1.5B answered to a one-module rating request.
        let answer = "{\n  \"rating\": 5,\n  \"comment\": \"The todo was created.\"\n}";
        let ratings = parse(answer, &["todo".to_string()], false).unwrap();
        assert_eq!(
            (ratings[0].rating, ratings[0].note.as_str()),
            (5, "The todo was created.")
        );
        // With two modules to rate, a bare rating says nothing about which one.
        assert!(parse(answer, &modules(), false).is_err());
        // Other JSON in the prose does not hide the ratings object.
        let prose = "Context: {\"a\": 1}. My answer: {\"ratings\": [{\"module\": \"todo\", \"rating\": 4, \"note\": \"\"}, {\"module\": \"mood\", \"rating\": 3, \"note\": \"\"}]}";
        assert_eq!(parse(prose, &modules(), false).unwrap().len(), 2);
    }

    #[test]
    fn a_rating_cut_off_in_its_note_counts_with_the_note_marked_cut() {
        // What Qwen2.5-Coder-0.5B answered under grammar decoding: a note that repeats
        // itself until max_tokens, after the rating (the schema puts `reason` last).
        let looping = "The calendar was not responsive. ".repeat(40);
        let answer = format!(
            r#"{{"ratings": [{{"module": "todo", "rating": 2, "reason": "fine"}}, {{"module": "mood", "rating": 3, "reason": "{looping}"#
        );
        let ratings = parse(&answer, &modules(), true).unwrap();
        assert_eq!((ratings[0].rating, ratings[1].rating), (2, 3));
        assert!(ratings[1].note.ends_with('…'), "{}", ratings[1].note);
        // Not cut by the limit, the same text is no answer.
        assert!(parse(&answer, &modules(), false).is_err());
        // Cut inside a key: the member before it stands, and the checks still apply.
        let in_key = r#"{"ratings": [{"module": "todo", "rating": 4, "reas"#;
        let problem = parse(in_key, &modules(), true).unwrap_err();
        assert_eq!(problem, "\"mood\" is not rated");
        let in_key_one = parse(in_key, &["todo".to_string()], true).unwrap();
        assert_eq!((in_key_one[0].rating, in_key_one[0].note.as_str()), (4, ""));
        // Cut before any rating was given: nothing is made up.
        let early = r#"{"ratings": [{"module": "todo", "reason": "It was"#;
        assert!(
            parse(early, &["todo".to_string()], true)
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            parse("Well, I think", &modules(), true)
                .unwrap_err()
                .contains("cut off")
        );
    }

    #[test]
    fn the_schema_orders_the_rating_before_its_free_text() {
        let schema = schema(&modules());
        let item = &schema["properties"]["ratings"]["items"]["properties"];
        let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
        // Grammar decoding follows this order, which serde_json keeps alphabetical.
        assert_eq!(keys, ["module", "rating", "reason"]);
        assert_eq!(schema["properties"]["ratings"]["maxItems"], 2);
    }
}
