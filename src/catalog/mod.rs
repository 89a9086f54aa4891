//! Catalog files: reading them one persona at a time, validating (every problem at once,
//! each with its JSON path), seeding into the store (all of a run or nothing), and
//! cleaning persona users up.
//!
//! A catalog is `{"target"?, "personas": [...], "spaces"?: [...]}`. `target` names the product (a
//! `[targets.NAME]` of the config) of every persona that does not name its own; a persona
//! whose target is not configured is kept in the profile store but never ticked.

mod check;
pub mod goals;
mod problem;
mod spaces;
mod stream;

use std::path::{Path, PathBuf};

use serde_json::Value;
use uuid::Uuid;

pub use check::{MAX_NAME_CHARS, MAX_PROMPT_BYTES, MAX_WEIGHT, Problem, Rules, openapi_schemas};
use check::{Seen, check_entry};
use problem::problem;

use crate::model::persona::{Persona, PersonaSpec};
use crate::store::{CleanupReport, Store, StoreError, UpsertOutcome};

/// The catalog format's JSON Schema, as shipped beside the catalogs.
pub const SCHEMA_JSON: &str = include_str!("../../catalog/catalog.schema.json");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{} problem(s) in the catalog:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A validated catalog held in memory (small catalogs: tests, the built-in roles).
#[derive(Clone, Debug)]
pub struct Catalog {
    pub file: PathBuf,
    pub personas: Vec<PersonaSpec>,
    pub spaces: Vec<crate::model::space::Space>,
}

/// What validating a file found.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Checked {
    pub file: PathBuf,
    pub personas: usize,
    pub target: Option<String>,
    /// The goals each archetype gives its personas (the file's `archetypes` table).
    #[serde(skip)]
    pub archetype_goals: std::collections::BTreeMap<String, Vec<crate::model::goal::Goal>>,
    /// The file's shared spaces, checked against its personas.
    #[serde(skip)]
    pub spaces: Vec<crate::model::space::Space>,
}

impl Checked {
    /// A spec of this file as it is seeded: the file's target and archetype goals applied.
    pub fn complete(&self, spec: PersonaSpec) -> PersonaSpec {
        let spec = PersonaSpec {
            target: spec.target.or_else(|| self.target.clone()),
            ..spec
        };
        goals::with_archetype_goals(spec, &self.archetype_goals)
    }
}

/// Reads one file, checks every entry, and hands each valid spec (with the file's target
/// applied) to `each`. Problems accumulate in `problems`.
fn scan_file(
    file: &Path,
    reader: impl std::io::Read,
    rules: &Rules,
    seen: &mut Seen,
    problems: &mut Vec<Problem>,
    each: &mut dyn FnMut(PersonaSpec),
) -> Option<Checked> {
    let mut count = 0;
    let mut members = std::collections::BTreeMap::new();
    let mut on_entry = |index: usize, value: Value| {
        count += 1;
        match check_entry(file, &format!("personas[{index}]"), &value, rules, seen) {
            Ok(spec) => {
                members.insert(crate::model::persona::normalize_email(&spec.email), spec.target.clone());
                each(spec)
            }
            Err(found) => {
                // A persona with a problem of its own is still this file's: its spaces
                // get no second problem for it.
                if let Some(email) = value.get("email").and_then(Value::as_str) {
                    let target = value.get("target").and_then(Value::as_str).map(str::to_string);
                    members.insert(crate::model::persona::normalize_email(email), target);
                }
                problems.extend(found)
            }
        }
    };
    // The file's target may follow its personas: callers apply it once the head is read.
    let head = match stream::scan(reader, &mut on_entry) {
        Ok(head) => head,
        Err(message) => {
            problems.push(problem(file, "(file)", message));
            return None;
        }
    };
    if !head.has_personas {
        problems.push(problem(file, "personas", "missing required field"));
    }
    for key in &head.unknown {
        problems.push(problem(
            file,
            problem::join("", key),
            "unknown field (see catalog/catalog.schema.json)",
        ));
    }
    if let Some(target) = &head.target
        && !valid_target(target)
    {
        problems.push(problem(
            file,
            "target",
            format!("`{target}` is not a target name: letters, digits, `-` and `_`, at most 64"),
        ));
    }
    let archetype_goals = head
        .archetypes
        .as_ref()
        .map(|table| goals::archetype_goals(file, table, problems))
        .unwrap_or_default();
    let spaces = head
        .spaces
        .as_ref()
        .map(|list| spaces::check(file, list, &members, head.target.as_deref(), problems))
        .unwrap_or_default();
    Some(Checked {
        archetype_goals,
        spaces,
        file: file.to_path_buf(),
        personas: count,
        target: head.target,
    })
}

/// A target name, as `[targets.NAME]` and catalogs write it.
pub fn valid_target(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Opens a catalog file no larger than `rules.max_file_bytes`: a file past the cap is
/// refused before a byte is read.
fn open(file: &Path, rules: &Rules) -> Result<std::fs::File, String> {
    let reader = std::fs::File::open(file).map_err(|err| format!("cannot read: {err}"))?;
    let size = reader.metadata().map_err(|err| format!("cannot read: {err}"))?.len();
    if size > rules.max_file_bytes {
        return Err(format!(
            "the file has {size} bytes, more than catalog.max_file_bytes = {}: split it into several \
             catalog files, or raise the cap",
            rules.max_file_bytes
        ));
    }
    Ok(reader)
}

/// Checks `files` together (duplicates count across files) without holding them in
/// memory. What each holds, or every problem of every file.
pub fn validate(files: &[PathBuf], rules: &Rules) -> Result<Vec<Checked>, CatalogError> {
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    let mut checked = Vec::new();
    for file in files {
        match open(file, rules) {
            Ok(reader) => {
                if let Some(found) = scan_file(file, reader, rules, &mut seen, &mut problems, &mut |_| {}) {
                    checked.push(found);
                }
            }
            Err(err) => problems.push(problem(file, "(file)", err)),
        }
    }
    duplicate_spaces(checked.iter().map(|c| (c.file.as_path(), &c.spaces)), &mut problems);
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(CatalogError::Invalid(problems))
    }
}

/// Loads and validates `files` into memory (small catalogs).
pub fn load(files: &[PathBuf], rules: &Rules) -> Result<Vec<Catalog>, CatalogError> {
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    let mut catalogs = Vec::new();
    for file in files {
        let reader = match open(file, rules) {
            Ok(reader) => reader,
            Err(err) => {
                problems.push(problem(file, "(file)", err));
                continue;
            }
        };
        let mut personas = Vec::new();
        if let Some(found) = scan_file(file, reader, rules, &mut seen, &mut problems, &mut |spec| {
            personas.push(spec)
        }) {
            catalogs.push(completed(file, personas, &found));
        }
    }
    duplicate_spaces(catalogs.iter().map(|c| (c.file.as_path(), &c.spaces)), &mut problems);
    if problems.is_empty() {
        Ok(catalogs)
    } else {
        Err(CatalogError::Invalid(problems))
    }
}

/// A space name declared by two files.
fn duplicate_spaces<'a>(
    files: impl Iterator<Item = (&'a Path, &'a Vec<crate::model::space::Space>)>,
    problems: &mut Vec<Problem>,
) {
    let mut seen = std::collections::HashMap::new();
    for (file, spaces) in files {
        for (index, space) in spaces.iter().enumerate() {
            if let Some(first) = seen.insert(space.name.to_lowercase(), file) {
                problems.push(problem(
                    file,
                    format!("spaces[{index}].name"),
                    format!("duplicate space name `{}` (also in {})", space.name, first.display()),
                ));
            }
        }
    }
}

fn completed(file: &Path, personas: Vec<PersonaSpec>, found: &Checked) -> Catalog {
    Catalog {
        file: file.to_path_buf(),
        personas: personas.into_iter().map(|spec| found.complete(spec)).collect(),
        spaces: found.spaces.clone(),
    }
}

/// Validates one catalog's text; `file` only labels the problems.
pub fn validate_text(file: &Path, text: &str, rules: &Rules) -> Result<Catalog, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut personas = Vec::new();
    let found = scan_file(
        file,
        text.as_bytes(),
        rules,
        &mut Seen::default(),
        &mut problems,
        &mut |spec| personas.push(spec),
    );
    match found {
        Some(found) if problems.is_empty() => Ok(completed(file, personas, &found)),
        _ => Err(problems),
    }
}

/// Validates one persona definition (an admin API body) with the catalog's schema and
/// rules. Problems carry paths relative to the persona (`moduleMix.todo`, `email`).
pub fn validate_persona(persona: &Value, rules: &Rules) -> Result<PersonaSpec, Vec<Problem>> {
    check_entry(Path::new("(request body)"), "", persona, rules, &mut Seen::default())
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
        return Err(vec![problem::shape_problem(
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
        max_file_bytes: rules.max_file_bytes,
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
        max_file_bytes: ROLE_CATALOG.len() as u64,
    };
    validate_text(Path::new("catalog/sop-finance.json"), ROLE_CATALOG, &rules)
        .map(|catalog| catalog.personas)
        .expect("the built-in role catalog is valid (checked by the catalog tests)")
}

/// Counts of a seed run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeedReport {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Shared spaces written (created or updated by name).
    pub spaces: usize,
}

impl SeedReport {
    fn count(&mut self, outcome: UpsertOutcome) {
        match outcome {
            UpsertOutcome::Created => self.created += 1,
            UpsertOutcome::Updated => self.updated += 1,
            UpsertOutcome::Unchanged => self.unchanged += 1,
        }
    }
}

/// The problem of the spec a seed failed on, or the store error.
fn seed_error(file: &Path, spec: Option<&PersonaSpec>, err: StoreError) -> CatalogError {
    match (err, spec) {
        (StoreError::Conflict(message), Some(spec)) => CatalogError::Invalid(vec![problem(
            file,
            format!("persona `{}`", spec.email),
            format!("{message}; nothing was seeded"),
        )]),
        (other, _) => CatalogError::Store(other),
    }
}

/// Upserts every persona of `catalogs` into `tenant`, by email, in one transaction: a
/// failing entry leaves the store as it was.
pub async fn seed(
    store: &Store,
    tenant: Uuid,
    catalogs: &[Catalog],
    default_time_zone: &str,
) -> Result<SeedReport, CatalogError> {
    let mut report = SeedReport::default();
    let specs: Vec<(&Path, &PersonaSpec)> = catalogs
        .iter()
        .flat_map(|c| c.personas.iter().map(move |p| (c.file.as_path(), p)))
        .collect();
    store
        .upsert_personas(
            tenant,
            specs.iter().map(|(_, s)| *s),
            default_time_zone,
            |_, _, outcome| report.count(outcome),
        )
        .await
        .map_err(|(index, err)| {
            let (file, spec) = index.and_then(|i| specs.get(i).copied()).unzip();
            seed_error(file.unwrap_or(Path::new("(catalog)")), spec, err)
        })?;
    let spaces: Vec<_> = catalogs.iter().flat_map(|c| c.spaces.iter().cloned()).collect();
    report.spaces = store.upsert_spaces(tenant, &spaces).await?;
    Ok(report)
}

/// Validates `files`, then upserts their personas in one transaction, reading each file
/// one persona at a time again: bounded memory however large the catalogs are.
pub async fn seed_files(
    store: &Store,
    tenant: Uuid,
    files: &[PathBuf],
    rules: &Rules,
    default_time_zone: &str,
) -> Result<SeedReport, CatalogError> {
    let checked = validate(files, rules)?;
    let spaces: Vec<_> = checked.iter().flat_map(|c| c.spaces.iter().cloned()).collect();
    let (sender, mut specs) = tokio::sync::mpsc::channel::<(PathBuf, PersonaSpec)>(512);
    let rules = rules.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut seen = Seen::default();
        let mut problems = Vec::new();
        for found in checked {
            let Ok(file) = std::fs::File::open(&found.file) else {
                return;
            };
            let path = found.file.clone();
            let mut send = |spec: PersonaSpec| {
                let _ = sender.blocking_send((path.clone(), found.complete(spec)));
            };
            scan_file(&found.file, file, &rules, &mut seen, &mut problems, &mut send);
        }
    });
    let mut report = SeedReport::default();
    let mut current: Option<(PathBuf, PersonaSpec)> = None;
    let upserted = store
        .upsert_stream(
            tenant,
            default_time_zone,
            &mut specs,
            &mut current,
            |(_, spec)| spec,
            |outcome| report.count(outcome),
        )
        .await;
    // Stop the reader if the store gave up early (it may wait on a full channel).
    drop(specs);
    let _ = reader.await;
    upserted.map_err(|err| {
        let (file, spec) = current.unzip();
        seed_error(file.as_deref().unwrap_or(Path::new("(catalog)")), spec.as_ref(), err)
    })?;
    // After the personas, whose emails the members name.
    report.spaces = store.upsert_spaces(tenant, &spaces).await?;
    Ok(report)
}

/// The result of a cleanup: what was deleted, and the personas that no catalog listed
/// (drift between the store and the catalogs, reported before they went).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CleanupOutcome {
    pub deleted: CleanupReport,
    pub unlisted: Vec<String>,
}

/// The emails every persona of `files` logs in with, read one persona at a time.
pub fn listed_emails(files: &[PathBuf], rules: &Rules) -> Result<std::collections::HashSet<String>, CatalogError> {
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    let mut emails = std::collections::HashSet::new();
    for file in files {
        match open(file, rules) {
            Ok(reader) => {
                scan_file(file, reader, rules, &mut seen, &mut problems, &mut |spec| {
                    emails.insert(crate::model::persona::normalize_email(&spec.email));
                });
            }
            Err(err) => problems.push(problem(file, "(file)", err)),
        }
    }
    if problems.is_empty() {
        Ok(emails)
    } else {
        Err(CatalogError::Invalid(problems))
    }
}

/// Deletes every persona user of `tenant` (never a human or system user), first noting
/// which of them `listed` (the catalogs' emails) does not hold.
pub async fn cleanup(
    store: &Store,
    tenant: Uuid,
    listed: &std::collections::HashSet<String>,
) -> Result<CleanupOutcome, CatalogError> {
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
