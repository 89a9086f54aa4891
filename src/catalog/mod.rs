//! Catalog files: loading, validating (every problem at once, each with its JSON path),
//! seeding into the store, and cleaning persona users up.
//!
//! Validation is two layers. The JSON Schema beside the catalogs
//! (`catalog/catalog.schema.json`, embedded here) checks structure: required and unknown
//! fields, types, enums, non-negative weights. Code checks what a schema cannot: allowed
//! email domains (configurable), cron syntax, time zone names, prompt length (configurable),
//! all-zero mixes, and duplicates across every file given.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::config::CatalogConfig;
use crate::persona::{Cadence, Persona, PersonaSpec, parse_time_zone};
use crate::store::{CleanupReport, Store, StoreError, UpsertOutcome};

/// The catalog format's JSON Schema, as shipped beside the catalogs.
pub const SCHEMA_JSON: &str = include_str!("../../catalog/catalog.schema.json");

static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA_JSON).expect("the embedded catalog schema is JSON");
    jsonschema::validator_for(&schema).expect("the embedded catalog schema is a valid JSON Schema")
});

/// One thing wrong with a catalog file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// Where in the file: `personas[3].email`, or `(file)` for the file as a whole.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{} problem(s) in the catalog:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the code-level checks need from the config.
#[derive(Clone, Debug)]
pub struct Rules {
    pub allowed_email_domains: Vec<String>,
    pub min_prompt_chars: usize,
}

impl From<&CatalogConfig> for Rules {
    fn from(config: &CatalogConfig) -> Self {
        Self {
            allowed_email_domains: config.allowed_email_domains.clone(),
            min_prompt_chars: config.min_prompt_chars,
        }
    }
}

/// A validated catalog file.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub file: PathBuf,
    pub personas: Vec<PersonaSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    #[serde(rename = "description", default)]
    _description: Option<String>,
    personas: Vec<PersonaSpec>,
}

/// Loads and validates `files` together (duplicates count across files). Returns every
/// problem of every file, or the catalogs when there is none.
pub fn load(files: &[PathBuf], rules: &Rules) -> Result<Vec<Catalog>, CatalogError> {
    let mut problems = Vec::new();
    let mut catalogs = Vec::new();
    let mut seen = Seen::default();
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(err) => {
                problems.push(problem(file, "(file)", format!("cannot read: {err}")));
                continue;
            }
        };
        if let Some(catalog) = check_text(file, &text, rules, &mut seen, &mut problems) {
            catalogs.push(catalog);
        }
    }
    if problems.is_empty() {
        Ok(catalogs)
    } else {
        Err(CatalogError::Invalid(problems))
    }
}

/// Validates one catalog's text; `file` only labels the problems.
pub fn validate_text(file: &Path, text: &str, rules: &Rules) -> Result<Catalog, Vec<Problem>> {
    let mut problems = Vec::new();
    match check_text(file, text, rules, &mut Seen::default(), &mut problems) {
        Some(catalog) if problems.is_empty() => Ok(catalog),
        _ => Err(problems),
    }
}

/// Emails and names seen so far, with where: duplicates are reported at the second place.
#[derive(Default)]
struct Seen {
    emails: HashMap<String, String>,
    names: HashMap<String, String>,
}

fn problem(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        file: file.to_path_buf(),
        path: path.into(),
        message: message.into(),
    }
}

/// Validates one persona definition (an admin API body) with the catalog's schema and
/// rules. Problems carry paths relative to the persona (`moduleMix.todo`, `email`).
pub fn validate_persona(persona: &Value, rules: &Rules) -> Result<PersonaSpec, Vec<Problem>> {
    let file = Path::new("(request body)");
    let wrapped = serde_json::json!({ "personas": [persona] });
    let mut problems = Vec::new();
    let checked = check_value(file, &wrapped, rules, &mut Seen::default(), &mut problems);
    match checked {
        Some(mut catalog) if problems.is_empty() && catalog.personas.len() == 1 => Ok(catalog.personas.remove(0)),
        _ => {
            for problem in &mut problems {
                problem.path = match problem.path.strip_prefix("personas[0]") {
                    Some("") => "(body)".to_string(),
                    Some(rest) => rest.trim_start_matches('.').to_string(),
                    None if problem.path == "personas" => "(body)".to_string(),
                    None => problem.path.clone(),
                };
            }
            Err(problems)
        }
    }
}

/// Validates an edit of a stored persona: `patch` (camelCase fields) laid over `current`,
/// checked like a catalog entry. The email is the login identity and cannot change in an
/// edit; a profile-only persona has none, so everything but the identity is checked.
pub fn validate_edit(
    current: &PersonaSpec,
    patch: serde_json::Map<String, Value>,
    rules: &Rules,
) -> Result<PersonaSpec, Vec<Problem>> {
    let file = Path::new("(request body)");
    if patch.contains_key("email") {
        return Err(vec![problem(
            file,
            "email",
            "the login identity cannot change here; create a persona with the new email instead",
        )]);
    }
    let mut merged = serde_json::to_value(current).expect("a persona definition serializes");
    if let Some(object) = merged.as_object_mut() {
        object.extend(patch);
    }
    if !current.email.is_empty() {
        return validate_persona(&merged, rules);
    }
    // No login identity to check: stand one in that passes, and leave it out again.
    merged["email"] = Value::String("no-login@persona.invalid".into());
    let rules = Rules {
        allowed_email_domains: vec!["invalid".into()],
        min_prompt_chars: rules.min_prompt_chars,
    };
    validate_persona(&merged, &rules).map(|spec| PersonaSpec {
        email: String::new(),
        ..spec
    })
}

/// The 12 role personas of the profile store (S&OP and Financial flows), built in: what
/// `POST /api/init-personas` gives a tenant.
pub fn role_personas() -> Vec<PersonaSpec> {
    const ROLE_CATALOG: &str = include_str!("../../catalog/sop-finance.json");
    let rules = Rules {
        allowed_email_domains: vec!["test".into()],
        min_prompt_chars: 1,
    };
    validate_text(Path::new("catalog/sop-finance.json"), ROLE_CATALOG, &rules)
        .map(|catalog| catalog.personas)
        .expect("the built-in role catalog is valid (checked by the catalog tests)")
}

fn check_text(file: &Path, text: &str, rules: &Rules, seen: &mut Seen, problems: &mut Vec<Problem>) -> Option<Catalog> {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            problems.push(problem(
                file,
                "(file)",
                format!("not valid JSON at line {}, column {}: {err}", err.line(), err.column()),
            ));
            return None;
        }
    };
    check_value(file, &value, rules, seen, problems)
}

fn check_value(
    file: &Path,
    value: &Value,
    rules: &Rules,
    seen: &mut Seen,
    problems: &mut Vec<Problem>,
) -> Option<Catalog> {
    let before = problems.len();

    for error in SCHEMA.iter_errors(value) {
        let path = json_path(error.instance_path().segments());
        match error.kind() {
            jsonschema::error::ValidationErrorKind::Required { property } => {
                let field = property.as_str().unwrap_or_default();
                problems.push(problem(file, join(&path, field), "missing required field"));
            }
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for field in unexpected {
                    problems.push(problem(
                        file,
                        join(&path, field),
                        "unknown field (see catalog/catalog.schema.json)",
                    ));
                }
            }
            _ => problems.push(problem(file, path, error.to_string())),
        }
    }

    if let Some(personas) = value.get("personas").and_then(Value::as_array) {
        for (index, persona) in personas.iter().enumerate() {
            check_persona(file, &format!("personas[{index}]"), persona, rules, seen, problems);
        }
    }

    if problems.len() > before {
        return None;
    }
    match serde_path_to_error::deserialize::<_, CatalogFile>(value) {
        Ok(parsed) => Some(Catalog {
            file: file.to_path_buf(),
            personas: parsed.personas,
        }),
        Err(err) => {
            // The schema and the Rust types should agree; if they do not, say where.
            problems.push(problem(file, err.path().to_string(), err.inner().to_string()));
            None
        }
    }
}

/// The checks a JSON Schema cannot express. Fields of the wrong type are left to the
/// schema's report, so each problem is reported once.
fn check_persona(file: &Path, at: &str, persona: &Value, rules: &Rules, seen: &mut Seen, problems: &mut Vec<Problem>) {
    let field = |name: &str| persona.get(name).and_then(Value::as_str);
    if let Some(email) = field("email") {
        let path = format!("{at}.email");
        match check_email(email, &rules.allowed_email_domains) {
            Err(message) => problems.push(problem(file, &path, message)),
            Ok(()) => {
                let key = crate::persona::normalize_email(email);
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
        let path = format!("{at}.name");
        if let Some(first) = seen.names.get(name.trim()) {
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
    if let Some(prompt) = field("systemPrompt") {
        let chars = prompt.trim().chars().count();
        if chars < rules.min_prompt_chars {
            problems.push(problem(
                file,
                format!("{at}.systemPrompt"),
                format!(
                    "prompt too short: {chars} characters, at least {} needed to describe who the persona is",
                    rules.min_prompt_chars
                ),
            ));
        }
    }
    if let Some(cadence) = field("tickCadence")
        && let Err(message) = cadence.parse::<Cadence>()
    {
        problems.push(problem(file, format!("{at}.tickCadence"), message));
    }
    if let Some(zone) = field("timeZone")
        && let Err(message) = parse_time_zone(zone)
    {
        problems.push(problem(file, format!("{at}.timeZone"), message));
    }
    if let Some(mix) = persona.get("moduleMix").and_then(Value::as_object) {
        let weights: Vec<f64> = mix.values().filter_map(Value::as_f64).collect();
        // Negative weights are the schema's to report; here only "nothing to do".
        if !mix.is_empty() && weights.len() == mix.len() && weights.iter().all(|w| *w == 0.0) {
            problems.push(problem(
                file,
                format!("{at}.moduleMix"),
                "all weights are zero: give at least one module a positive weight",
            ));
        }
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

/// Renders a JSON pointer as `personas[3].email`.
fn json_path<'a>(segments: impl Iterator<Item = jsonschema::paths::LocationSegment<'a>>) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            jsonschema::paths::LocationSegment::Index(index) => path.push_str(&format!("[{index}]")),
            jsonschema::paths::LocationSegment::Property(name) => path = join(&path, &name),
        }
    }
    if path.is_empty() { "(root)".into() } else { path }
}

fn join(path: &str, field: &str) -> String {
    let simple = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    let field = if simple {
        field.to_string()
    } else {
        format!("[{field:?}]")
    };
    match (path, simple) {
        ("" | "(root)", true) => field,
        ("" | "(root)", false) => field,
        (_, true) => format!("{path}.{field}"),
        (_, false) => format!("{path}{field}"),
    }
}

/// Counts of a seed run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeedReport {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// Upserts every persona of `catalogs` into `tenant`, by email. Stops at the first store
/// error (already-seeded personas stay; seeding again finishes the job).
pub async fn seed(
    store: &Store,
    tenant: Uuid,
    catalogs: &[Catalog],
    default_time_zone: &str,
) -> Result<SeedReport, CatalogError> {
    let mut report = SeedReport::default();
    for catalog in catalogs {
        for spec in &catalog.personas {
            let (_, outcome) =
                store
                    .upsert_persona(tenant, spec, default_time_zone)
                    .await
                    .map_err(|err| match err {
                        StoreError::Conflict(message) => CatalogError::Invalid(vec![problem(
                            &catalog.file,
                            format!("persona `{}`", spec.email),
                            message,
                        )]),
                        other => CatalogError::Store(other),
                    })?;
            match outcome {
                UpsertOutcome::Created => report.created += 1,
                UpsertOutcome::Updated => report.updated += 1,
                UpsertOutcome::Unchanged => report.unchanged += 1,
            }
        }
    }
    Ok(report)
}

/// The result of a cleanup: what was deleted, and the personas that no catalog listed
/// (drift between the store and the catalogs, reported before they went).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CleanupOutcome {
    pub deleted: CleanupReport,
    pub unlisted: Vec<String>,
}

/// Deletes every persona user of `tenant` (never a human or system user), first noting
/// which of them no catalog in `catalogs` lists.
pub async fn cleanup(store: &Store, tenant: Uuid, catalogs: &[Catalog]) -> Result<CleanupOutcome, CatalogError> {
    let listed: std::collections::HashSet<String> = catalogs
        .iter()
        .flat_map(|c| c.personas.iter().map(|p| crate::persona::normalize_email(&p.email)))
        .collect();
    let unlisted = store
        .list_personas(tenant)
        .await?
        .into_iter()
        .filter_map(|persona: Persona| persona.email)
        .filter(|email| !listed.contains(email))
        .collect();
    let deleted = store.delete_persona_users(tenant).await?;
    Ok(CleanupOutcome { deleted, unlisted })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
