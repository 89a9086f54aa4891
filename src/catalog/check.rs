//! Checking one persona definition: the catalog format's JSON Schema (structure: required
//! and unknown fields, types, enums, non-negative weights) and the rules a schema cannot
//! express (allowed email domains, cron expressions that ever fire, time zone names,
//! prompt and name lengths, sane weights, duplicates across every file given). Every
//! problem is reported at once, each with its JSON path.

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use serde_json::Value;

use super::SCHEMA_JSON;
pub use super::problem::Problem;
use super::problem::{join, json_path, problem, shape_problem};
use crate::config::CatalogConfig;
use crate::model::persona::{Cadence, PersonaSpec, parse_time_zone};

/// The longest persona name.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest system prompt, in bytes.
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;
/// The largest module-mix weight (weights are relative; a huge one only starves the rest).
pub const MAX_WEIGHT: f64 = 1e6;
/// A cron cadence must fire within this many days, or the persona would never tick.
pub const CRON_HORIZON_DAYS: i64 = 400;

/// The schema of one persona entry (`$defs/persona` of the catalog schema).
static PERSONA_SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let catalog: Value = serde_json::from_str(SCHEMA_JSON).expect("the embedded catalog schema is JSON");
    let persona = serde_json::json!({
        "$schema": catalog["$schema"],
        "$defs": catalog["$defs"],
        "$ref": "#/$defs/persona",
    });
    jsonschema::validator_for(&persona).expect("the embedded catalog schema is a valid JSON Schema")
});

/// The catalog schema's persona entry as OpenAPI components, so the API documents
/// exactly the shape it checks: `PersonaDefinition` (an entry, for the admin upsert),
/// `PersonaEdit` (the same fields, all optional, no email) and the definitions they use
/// (`Catalog…`). References are rewritten from `#/$defs/x` to `#/components/schemas/Catalogx`.
pub fn openapi_schemas() -> Vec<(String, Value)> {
    let catalog: Value = serde_json::from_str(SCHEMA_JSON).expect("the embedded catalog schema is JSON");
    fn rewrite(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get_mut("$ref")
                    && let Some(name) = target.strip_prefix("#/$defs/")
                {
                    *target = format!("#/components/schemas/Catalog{}", capitalized(name));
                }
                map.values_mut().for_each(rewrite);
            }
            Value::Array(items) => items.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    fn capitalized(name: &str) -> String {
        let mut chars = name.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    }
    let mut schemas = Vec::new();
    for (name, definition) in catalog["$defs"].as_object().into_iter().flatten() {
        let mut definition = definition.clone();
        rewrite(&mut definition);
        if name == EDITABLE_DEFINITION {
            let mut edit = definition.clone();
            if let Some(edit) = edit.as_object_mut() {
                edit.remove("required");
                if let Some(properties) = edit.get_mut("properties").and_then(Value::as_object_mut) {
                    properties.remove("email");
                }
            }
            schemas.push(("PersonaDefinition".to_string(), definition));
            schemas.push(("PersonaEdit".to_string(), edit));
        } else {
            schemas.push((format!("Catalog{}", capitalized(name)), definition));
        }
    }
    schemas
}

/// What the code-level checks need from the config.
#[derive(Clone, Debug)]
pub struct Rules {
    pub allowed_email_domains: Vec<String>,
    pub min_prompt_chars: usize,
    /// Largest catalog file read, in bytes (`catalog.max_file_bytes`).
    pub max_file_bytes: u64,
}

impl From<&CatalogConfig> for Rules {
    fn from(config: &CatalogConfig) -> Self {
        Self {
            allowed_email_domains: config.allowed_email_domains.clone(),
            min_prompt_chars: config.min_prompt_chars,
            max_file_bytes: config.max_file_bytes,
        }
    }
}

/// Emails and names seen so far, with where: duplicates are reported at the second place.
#[derive(Default)]
pub(super) struct Seen {
    emails: HashMap<String, String>,
    names: HashMap<String, String>,
}

/// Checks one persona entry at `at` (`personas[3]`, or `""` for a request body). The spec,
/// or every problem found.
pub(super) fn check_entry(
    file: &Path,
    at: &str,
    persona: &Value,
    rules: &Rules,
    seen: &mut Seen,
) -> Result<PersonaSpec, Vec<Problem>> {
    let mut problems = Vec::new();
    for error in PERSONA_SCHEMA.iter_errors(persona) {
        let path = json_path(at, error.instance_path().segments());
        match error.kind() {
            jsonschema::error::ValidationErrorKind::Required { property } => {
                let field = property.as_str().unwrap_or_default();
                problems.push(shape_problem(file, join(&path, field), "missing required field"));
            }
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    problems.push(shape_problem(
                        file,
                        join(&path, field),
                        "unknown field (see catalog/catalog.schema.json)",
                    ));
                }
            }
            _ => problems.push(shape_problem(file, path, error.to_string())),
        }
    }
    check_rules(file, at, persona, rules, seen, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_path_to_error::deserialize::<_, PersonaSpec>(persona).map_err(|err| {
        // The schema and the Rust types should agree; if they do not, say where.
        vec![shape_problem(
            file,
            join(at, &err.path().to_string()),
            err.inner().to_string(),
        )]
    })
}

/// The catalog schema's definition of a persona, whose edit form the API also documents.
const EDITABLE_DEFINITION: &str = "persona";

/// The checks a JSON Schema cannot express. Fields of the wrong type are left to the
/// schema's report, so each problem is reported once.
fn check_rules(file: &Path, at: &str, persona: &Value, rules: &Rules, seen: &mut Seen, problems: &mut Vec<Problem>) {
    check_identity(file, at, persona, rules, seen, problems);
    check_prompt(file, at, persona, rules, problems);
    check_schedule(file, at, persona, problems);
    check_mix(file, at, persona, problems);
    super::goals::check_goal_rules(file, at, persona.get("goals"), problems);
}

/// Email (allowed domain, unique) and name (length, unique).
fn check_identity(file: &Path, at: &str, persona: &Value, rules: &Rules, seen: &mut Seen, problems: &mut Vec<Problem>) {
    let field = |name: &str| persona.get(name).and_then(Value::as_str);
    let path = |name: &str| join(at, name);
    if let Some(email) = field("email") {
        let path = path("email");
        match check_email(email, &rules.allowed_email_domains) {
            Err(message) => problems.push(problem(file, &path, message)),
            Ok(()) => {
                let key = crate::model::persona::normalize_email(email);
                if let Some(first) = seen.emails.get(&key) {
                    problems.push(problem(
                        file,
                        &path,
                        format!("duplicate email `{email}` (first at {first})"),
                    ));
                } else {
                    seen.emails.insert(key, format!("{}: {path}", file.display()));
                }
            }
        }
    }
    if let Some(name) = field("name").filter(|n| !n.trim().is_empty()) {
        let path = path("name");
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            problems.push(problem(
                file,
                &path,
                format!("too long: {chars} characters, at most {MAX_NAME_CHARS}"),
            ));
        } else if let Some(first) = seen.names.get(name.trim()) {
            problems.push(problem(
                file,
                &path,
                format!("duplicate name `{name}` (first at {first})"),
            ));
        } else {
            seen.names
                .insert(name.trim().to_string(), format!("{}: {path}", file.display()));
        }
    }
}

/// The system prompt: long enough to describe someone, short enough to send every turn.
fn check_prompt(file: &Path, at: &str, persona: &Value, rules: &Rules, problems: &mut Vec<Problem>) {
    let field = |name: &str| persona.get(name).and_then(Value::as_str);
    let path = |name: &str| join(at, name);
    if let Some(prompt) = field("systemPrompt") {
        let chars = prompt.trim().chars().count();
        if chars < rules.min_prompt_chars {
            problems.push(problem(
                file,
                path("systemPrompt"),
                format!(
                    "prompt too short: {chars} characters, at least {} needed to describe who the persona is",
                    rules.min_prompt_chars
                ),
            ));
        }
        if prompt.len() > MAX_PROMPT_BYTES {
            problems.push(problem(
                file,
                path("systemPrompt"),
                format!(
                    "prompt too long: {} KiB, at most {} KiB (it is sent with every model turn)",
                    prompt.len().div_ceil(1024),
                    MAX_PROMPT_BYTES / 1024
                ),
            ));
        }
    }
}

/// The cadence (parses, fires soon enough) and the time zone.
fn check_schedule(file: &Path, at: &str, persona: &Value, problems: &mut Vec<Problem>) {
    let field = |name: &str| persona.get(name).and_then(Value::as_str);
    let path = |name: &str| join(at, name);
    if let Some(cadence) = field("tickCadence") {
        match cadence.parse::<Cadence>() {
            Err(message) => problems.push(problem(file, path("tickCadence"), message)),
            Ok(cadence) => {
                if let Err(message) = fires_soon(&cadence) {
                    problems.push(problem(file, path("tickCadence"), message));
                }
            }
        }
    }
    if let Some(zone) = field("timeZone")
        && let Err(message) = parse_time_zone(zone)
    {
        problems.push(problem(file, path("timeZone"), message));
    }
}

/// The module mix: some weight positive, none absurd.
fn check_mix(file: &Path, at: &str, persona: &Value, problems: &mut Vec<Problem>) {
    let path = |name: &str| join(at, name);
    if let Some(mix) = persona.get("moduleMix").and_then(Value::as_object) {
        let weights: Vec<f64> = mix.values().filter_map(Value::as_f64).collect();
        // Negative weights are the schema's to report; here only "nothing to do".
        if !mix.is_empty() && weights.len() == mix.len() && weights.iter().all(|w| *w == 0.0) {
            problems.push(problem(
                file,
                path("moduleMix"),
                "all weights are zero: give at least one module a positive weight",
            ));
        }
        for (module, weight) in mix {
            if let Some(weight) = weight.as_f64()
                && !(weight.is_finite() && weight <= MAX_WEIGHT)
            {
                problems.push(problem(
                    file,
                    join(&path("moduleMix"), module),
                    format!("weight {weight} is too large: weights are relative, keep them at most {MAX_WEIGHT:.0}"),
                ));
            }
        }
    }
}

/// A cron cadence must fire within [`CRON_HORIZON_DAYS`] (`0 0 31 2 *` never does).
fn fires_soon(cadence: &Cadence) -> Result<(), String> {
    let Cadence::Cron(expr) = cadence else { return Ok(()) };
    let cron: croner::Cron = expr
        .parse()
        .map_err(|err| format!("`{expr}` is not a valid cron expression: {err}"))?;
    let now = crate::time::now();
    let horizon = crate::time::after(now, std::time::Duration::from_secs(CRON_HORIZON_DAYS as u64 * 86_400));
    match cron.find_next_occurrence(&now, false) {
        Ok(next) if next <= horizon => Ok(()),
        _ => Err(format!(
            "`{expr}` never fires in the next {CRON_HORIZON_DAYS} days, so the persona would never tick"
        )),
    }
}

fn check_email(email: &str, allowed_domains: &[String]) -> Result<(), String> {
    let email = email.trim();
    let Some((local, domain)) = email.split_once('@') else {
        return Err(format!("`{email}` is not an email address (no @)"));
    };
    let valid_part = |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '@');
    if !valid_part(local)
        || !valid_part(domain)
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(format!("`{email}` is not an email address"));
    }
    let domain = domain.to_lowercase();
    let allowed = allowed_domains.iter().any(|suffix| {
        let suffix = suffix.to_lowercase();
        domain == suffix || domain.ends_with(&format!(".{suffix}"))
    });
    if !allowed {
        let list = allowed_domains
            .iter()
            .map(|d| format!(".{d}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "must end in a test domain ({list}; see catalog.allowed_email_domains) so no mail reaches a real inbox, got `{email}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        assert!(fires_soon(&"0 9 * * MON-FRI".parse().unwrap()).is_ok());
        let err = fires_soon(&"0 0 31 2 *".parse().unwrap()).unwrap_err();
        assert!(err.contains("never fires in the next 400 days"), "{err}");
        assert!(fires_soon(&Cadence::Daily).is_ok());
    }

    #[test]
    fn email_domains() {
        let allowed = vec!["test".to_string()];
        assert!(check_email("persona.anna@mana.test", &allowed).is_ok());
        assert!(check_email("a@b.test", &allowed).is_ok());
        let err = check_email("anna@gmail.com", &allowed).unwrap_err();
        assert!(err.starts_with("must end in a test domain (.test"), "{err}");
        assert!(check_email("anna@contest", &allowed).is_err());
        assert!(check_email("anna.mana.test", &allowed).unwrap_err().contains("no @"));
        assert!(check_email("a b@mana.test", &allowed).is_err());
        let only_mana = vec!["mana.test".to_string()];
        assert!(check_email("x@mana.test", &only_mana).is_ok());
        assert!(check_email("x@other.test", &only_mana).is_err());
    }

    #[test]
    fn paths_read_like_code() {
        assert_eq!(join("personas[3]", "email"), "personas[3].email");
        assert_eq!(
            join("personas[3].moduleMix", "to do"),
            "personas[3].moduleMix[\"to do\"]"
        );
        assert_eq!(join("(root)", "personas"), "personas");
        assert_eq!(join("", "email"), "email");
    }
}
