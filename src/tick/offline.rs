//! The offline driver's craft: arguments synthesized from a tool's JSON Schema, edge cases
//! for chaos personas, and ratings from evidence. Deterministic for a seeded RNG.

use serde_json::{Map, Value, json};

/// Words the synthesized strings are made of: what a persona might write in an organizer.
const WORDS: &[&str] = &[
    "Einkauf",
    "Zahnarzt",
    "Steuer",
    "Projekt",
    "Lauf",
    "Mama anrufen",
    "Rechnung",
    "Yoga",
    "Meeting",
    "Bericht",
    "Wäsche",
    "Geburtstag",
    "Lesen",
    "Garten",
    "Termin",
    "Idee",
    "Notiz",
    "Plan",
    "Fahrrad",
    "Kita",
];

fn pick<'a>(rng: &mut fastrand::Rng, items: &'a [Value]) -> Option<&'a Value> {
    (!items.is_empty()).then(|| &items[rng.usize(..items.len())])
}

fn schema_type(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t),
        // ["string", "null"]: take the first non-null.
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

fn text(rng: &mut fastrand::Rng, min: usize, max: usize) -> String {
    let mut out = String::new();
    while out.chars().count() < min.max(3) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(WORDS[rng.usize(..WORDS.len())]);
    }
    out.chars()
        .take(max.max(min))
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn string(schema: &Value, rng: &mut fastrand::Rng) -> Value {
    let today = crate::time::now().date_naive();
    let days = chrono::Duration::days(rng.i64(-14..=30));
    let value = match schema.get("format").and_then(Value::as_str) {
        Some("date") => (today + days).to_string(),
        Some("date-time") => {
            let hour = rng.u32(7..=20);
            format!("{}T{hour:02}:{:02}:00Z", today + days, [0, 15, 30, 45][rng.usize(..4)])
        }
        Some("time") => format!("{:02}:{:02}:00", rng.u32(7..=20), [0, 30][rng.usize(..2)]),
        Some("email") => format!("kontakt{}@example.test", rng.u32(1..1000)),
        Some("uri" | "url") => format!("https://example.test/{}", rng.u32(1..1000)),
        Some("uuid") => uuid::Uuid::from_u128(rng.u128(..)).to_string(),
        _ => {
            let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(1) as usize;
            let max = schema.get("maxLength").and_then(Value::as_u64).unwrap_or(60).min(60) as usize;
            let mut value = text(rng, min, max);
            while value.chars().count() < min {
                value.push('x');
            }
            value
        }
    };
    Value::String(value)
}

fn number_bounds(schema: &Value, integer: bool) -> (f64, f64) {
    let step = if integer { 1.0 } else { 0.01 };
    let low = schema
        .get("minimum")
        .and_then(Value::as_f64)
        .or_else(|| schema.get("exclusiveMinimum").and_then(Value::as_f64).map(|m| m + step))
        .unwrap_or(1.0);
    let high = schema
        .get("maximum")
        .and_then(Value::as_f64)
        .or_else(|| schema.get("exclusiveMaximum").and_then(Value::as_f64).map(|m| m - step))
        .unwrap_or(low.max(0.0) + 100.0);
    (low, high.max(low))
}

/// How deep nested objects and arrays are built; past it, only what is required.
const OPTIONAL_DEPTH: usize = 3;
/// How deep a schema may nest (through `$ref`s) before the driver gives up on it.
const MAX_DEPTH: usize = 24;

/// Arguments valid for a tool's input schema (as far as types, required, enums, bounds,
/// lengths and formats go; patterns are not synthesized). Local `$ref`s (`#/$defs/…`,
/// `#/definitions/…`) are followed and `allOf` parts merged, as the official SDKs write
/// nested models. `Err` says why no value could be built (an external or missing
/// `$ref`, a schema that requires itself without end).
pub fn generate(schema: &Value, rng: &mut fastrand::Rng) -> Result<Value, String> {
    value_for(schema, schema, rng, 0)
}

/// The schema a local `$ref` points to.
fn resolve<'a>(root: &'a Value, reference: &str) -> Result<&'a Value, String> {
    let pointer = reference
        .strip_prefix('#')
        .ok_or_else(|| format!("`$ref` {reference} is not local to the schema"))?;
    let pointer = pointer.replace("%25", "%").replace("~1", "/").replace("~0", "~");
    root.pointer(&pointer)
        .ok_or_else(|| format!("`$ref` {reference} points to nothing in the schema"))
}

/// `schema` with its `$ref` followed and its `allOf` parts merged into one object schema.
fn flatten(root: &Value, schema: &Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("the schema nests deeper than the driver follows (a `$ref` that requires itself?)".into());
    }
    let mut merged = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let mut target = flatten(root, resolve(root, reference)?, depth + 1)?;
            // Siblings of `$ref` (2020-12) refine the target.
            if let (Some(target), Some(own)) = (target.as_object_mut(), schema.as_object()) {
                for (key, value) in own.iter().filter(|(key, _)| *key != "$ref") {
                    target.insert(key.clone(), value.clone());
                }
            }
            target
        }
        None => schema.clone(),
    };
    let parts = merged
        .as_object_mut()
        .and_then(|object| object.remove("allOf"))
        .and_then(|parts| parts.as_array().cloned());
    for part in parts.unwrap_or_default() {
        let part = flatten(root, &part, depth + 1)?;
        let (Some(into), Some(from)) = (merged.as_object_mut(), part.as_object()) else {
            continue;
        };
        for (key, value) in from {
            match (key.as_str(), into.get_mut(key)) {
                ("properties", Some(Value::Object(properties))) => {
                    if let Value::Object(more) = value {
                        properties.extend(more.clone());
                    }
                }
                ("required", Some(Value::Array(required))) => {
                    if let Value::Array(more) = value {
                        required.extend(
                            more.iter()
                                .filter(|r| !required.contains(r))
                                .cloned()
                                .collect::<Vec<_>>(),
                        );
                    }
                }
                (_, Some(_)) => {}
                (_, None) => {
                    into.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Ok(merged)
}

fn value_for(root: &Value, schema: &Value, rng: &mut fastrand::Rng, depth: usize) -> Result<Value, String> {
    let schema = &flatten(root, schema, depth)?;
    if let Some(value) = schema.get("const") {
        return Ok(value.clone());
    }
    if let Some(value) = schema.get("enum").and_then(Value::as_array).and_then(|e| pick(rng, e)) {
        return Ok(value.clone());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array).filter(|o| !o.is_empty()) {
            // Prefer an option that is not `null` (an optional model is still a model).
            let non_null: Vec<&Value> = options
                .iter()
                .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            let option = if non_null.is_empty() {
                &options[rng.usize(..options.len())]
            } else {
                non_null[rng.usize(..non_null.len())]
            };
            return value_for(root, option, rng, depth + 1);
        }
    }
    let inferred = if schema.get("properties").is_some() {
        Some("object")
    } else {
        None
    };
    Ok(match schema_type(schema).or(inferred) {
        Some("string") => string(schema, rng),
        Some("integer") => {
            let (low, high) = number_bounds(schema, true);
            let (low, high) = (low.ceil() as i64, high.floor() as i64);
            // Keep numbers small and human unless the schema demands otherwise.
            json!(rng.i64(low..=high.min(low.saturating_add(20)).max(low)))
        }
        Some("number") => {
            let (low, high) = number_bounds(schema, false);
            let value = low + rng.f64() * (high - low).min(100.0);
            json!((value * 100.0).round() / 100.0)
        }
        Some("boolean") => json!(rng.bool()),
        Some("null") => Value::Null,
        Some("array") => {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = schema.get("maxItems").and_then(Value::as_u64).unwrap_or(3).min(3) as usize;
            let count = if depth > OPTIONAL_DEPTH {
                min
            } else {
                rng.usize(min..=max.max(min))
            };
            let items = schema.get("items").cloned().unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..count)
                    .map(|_| value_for(root, &items, rng, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        Some("object") => {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut object = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    // Optional fields half the time, and less deep down.
                    if required.contains(&name.as_str()) || (depth < OPTIONAL_DEPTH && rng.bool()) {
                        object.insert(name.clone(), value_for(root, property, rng, depth + 1)?);
                    }
                }
            }
            Value::Object(object)
        }
        _ => json!(text(rng, 3, 20)),
    })
}

/// An edge case: the valid `arguments` with one field replaced by something a robust
/// gateway must reject or survive (unicode, empty or huge strings, boundary numbers,
/// wrong types).
pub fn chaos(arguments: &Value, schema: &Value, rng: &mut fastrand::Rng) -> Value {
    let mut arguments = arguments.clone();
    let properties = schema.get("properties").and_then(Value::as_object);
    let Some((name, property)) = properties.and_then(|p| {
        let entries: Vec<_> = p.iter().collect();
        (!entries.is_empty()).then(|| entries[rng.usize(..entries.len())])
    }) else {
        arguments = json!({"unexpected": "🦀".repeat(64)});
        return arguments;
    };
    let edge = match schema_type(property) {
        Some("string") => [
            json!(""),
            json!("Zoë 🦀 ∑ 漢字 \u{202e}rtl \u{0000} — äöüß"),
            json!("x".repeat(20_000)),
            json!("'; DROP TABLE todos; --"),
            json!(12345),
        ][rng.usize(..5)]
        .clone(),
        Some("integer" | "number") => {
            let (low, high) = number_bounds(property, true);
            [
                json!(low - 1.0),
                json!(high + 1.0),
                json!(0),
                json!(-1),
                json!(i64::MAX),
                json!("NaN"),
                json!(1.5),
            ][rng.usize(..7)]
            .clone()
        }
        Some("boolean") => json!("yes"),
        Some("array") => {
            [json!([]), json!("not a list"), Value::Array(vec![json!(null); 1000])][rng.usize(..3)].clone()
        }
        _ => json!(null),
    };
    if let Some(object) = arguments.as_object_mut() {
        object.insert(name.clone(), edge);
    }
    arguments
}

/// Replaces top-level integer `id`/`*_id` arguments with ids seen earlier in the tick, so
/// "complete to-do 3" refers to a to-do that exists (random ids would only measure the
/// driver's luck, not the product).
pub fn reuse_ids(arguments: &mut Value, schema: &Value, known: &[i64], rng: &mut fastrand::Rng) {
    let (Some(object), Some(properties)) = (
        arguments.as_object_mut(),
        schema.get("properties").and_then(Value::as_object),
    ) else {
        return;
    };
    if known.is_empty() {
        return;
    }
    for (name, property) in properties {
        let is_id = name == "id" || name.ends_with("_id");
        if is_id && schema_type(property) == Some("integer") && object.contains_key(name) {
            object.insert(name.clone(), json!(known[rng.usize(..known.len())]));
        }
    }
}

/// Collects integer `id` fields from a tool's JSON output.
pub fn collect_ids(output: &str, known: &mut Vec<i64>) {
    fn walk(value: &Value, known: &mut Vec<i64>) {
        match value {
            Value::Object(map) => {
                if let Some(id) = map.get("id").and_then(Value::as_i64)
                    && !known.contains(&id)
                {
                    known.push(id);
                }
                map.values().for_each(|v| walk(v, known));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, known)),
            _ => {}
        }
    }
    if let Ok(value) = serde_json::from_str::<Value>(output) {
        walk(&value, known);
    }
}

/// A rating from evidence: success rate of the ordinary (non-chaos) calls, lowered by
/// one for a mean latency over a second. No calls, no rating: nothing is invented.
pub fn rating_from_evidence(calls: u32, errors: u32, mean_latency_ms: Option<f64>) -> Option<i32> {
    if calls == 0 {
        return None;
    }
    let success = f64::from(calls - errors.min(calls)) / f64::from(calls);
    let base = match success {
        s if s >= 0.95 => 5,
        s if s >= 0.8 => 4,
        s if s >= 0.6 => 3,
        s if s >= 0.3 => 2,
        _ => 1,
    };
    let slow = mean_latency_ms.is_some_and(|ms| ms > 1000.0);
    Some((base - i32::from(slow)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> Vec<Value> {
        vec![
            json!({"type": "object", "properties": {
                "title": {"type": "string", "minLength": 5, "maxLength": 8},
                "due": {"type": "string", "format": "date"},
                "at": {"type": "string", "format": "date-time"},
                "priority": {"type": "string", "enum": ["low", "high"]},
                "count": {"type": "integer", "minimum": 10, "maximum": 12},
                "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "done": {"type": "boolean"},
                "email": {"type": "string", "format": "email"},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 2},
                "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": ["string", "null"], "pattern": "^[0-9]+$"}}, "required": ["city"], "additionalProperties": false},
                "kind": {"oneOf": [{"const": "a"}, {"const": "b"}]}
            }, "required": ["title", "due", "at", "priority", "count", "ratio", "done", "email", "tags", "address", "kind"], "additionalProperties": false}),
            json!({"type": "object", "properties": {}}),
        ]
    }

    #[test]
    fn generated_arguments_are_valid_for_their_schema() {
        for schema in schemas() {
            // The zip pattern is not synthesized: drop it to check the rest strictly.
            let mut strict = schema.clone();
            if let Some(zip) = strict
                .pointer_mut("/properties/address/properties/zip")
                .and_then(Value::as_object_mut)
            {
                zip.remove("pattern");
            }
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&strict)
                .unwrap();
            for seed in 0..200 {
                let value = generate(&schema, &mut fastrand::Rng::with_seed(seed)).unwrap();
                let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "seed {seed}: {value} → {errors:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_arguments() {
        let schema = &schemas()[0];
        let a = generate(schema, &mut fastrand::Rng::with_seed(7)).unwrap();
        let b = generate(schema, &mut fastrand::Rng::with_seed(7)).unwrap();
        let c = generate(schema, &mut fastrand::Rng::with_seed(8)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn chaos_breaks_the_schema_on_purpose() {
        let schema = &schemas()[0];
        let validator = jsonschema::validator_for(schema).unwrap();
        let mut invalid = 0;
        for seed in 0..100 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let valid = generate(schema, &mut rng).unwrap();
            if !validator.is_valid(&chaos(&valid, schema, &mut rng)) {
                invalid += 1;
            }
        }
        // Most edge cases violate the schema (unicode in a free string field does not).
        assert!(invalid > 50, "{invalid}");
    }

    #[test]
    fn ids_seen_earlier_are_reused() {
        let mut known = Vec::new();
        collect_ids(r#"{"id": 3, "title": "x", "items": [{"id": 7}]}"#, &mut known);
        collect_ids("not json", &mut known);
        assert_eq!(known, [3, 7]);
        let schema =
            json!({"type": "object", "properties": {"habit_id": {"type": "integer"}, "count": {"type": "integer"}}});
        let mut arguments = json!({"habit_id": 99, "count": 99});
        reuse_ids(&mut arguments, &schema, &known, &mut fastrand::Rng::with_seed(1));
        assert!(known.contains(&arguments["habit_id"].as_i64().unwrap()));
        assert_eq!(arguments["count"], 99);
    }

    #[test]
    fn references_and_all_of_are_followed_as_the_python_sdk_writes_them() {
        // pydantic's shape: a nested model under $defs, an optional one as anyOf [$ref, null].
        let schema = json!({
            "type": "object",
            "$defs": {
                "Address": {"type": "object", "properties": {
                    "city": {"type": "string", "minLength": 2},
                    "zip": {"type": "string", "maxLength": 5}
                }, "required": ["city", "zip"], "additionalProperties": false},
                "Person": {"allOf": [
                    {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                    {"properties": {"home": {"$ref": "#/$defs/Address"}}, "required": ["home"]}
                ]}
            },
            "properties": {
                "owner": {"$ref": "#/$defs/Person"},
                "billing": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": null},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/Address"}}
            },
            "required": ["owner", "billing"]
        });
        let validator = jsonschema::validator_for(&schema).unwrap();
        for seed in 0..100 {
            let value = generate(&schema, &mut fastrand::Rng::with_seed(seed)).unwrap();
            let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "seed {seed}: {value} → {errors:?}");
            assert!(value["owner"]["home"]["city"].is_string(), "{value}");
        }
    }

    #[test]
    fn schemas_that_cannot_be_built_say_why() {
        let external =
            json!({"type": "object", "properties": {"a": {"$ref": "https://example.test/a.json"}}, "required": ["a"]});
        let err = generate(&external, &mut fastrand::Rng::with_seed(1)).unwrap_err();
        assert!(err.contains("not local"), "{err}");
        let missing = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}, "required": ["a"]});
        assert!(
            generate(&missing, &mut fastrand::Rng::with_seed(1))
                .unwrap_err()
                .contains("points to nothing")
        );
        let endless = json!({"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}, "required": ["next"]}},
            "$ref": "#/$defs/Node"});
        assert!(
            generate(&endless, &mut fastrand::Rng::with_seed(1))
                .unwrap_err()
                .contains("deeper")
        );
    }

    #[test]
    fn evidence_ratings() {
        assert_eq!(rating_from_evidence(10, 0, Some(20.0)), Some(5));
        assert_eq!(rating_from_evidence(10, 0, Some(1500.0)), Some(4));
        assert_eq!(rating_from_evidence(4, 1, None), Some(3));
        assert_eq!(rating_from_evidence(4, 4, None), Some(1));
        assert_eq!(rating_from_evidence(0, 0, None), None, "no evidence, no rating");
    }
}
