//! A catalog's `spaces`: households and teams of its personas. Each entry is checked
//! with its JSON path: a name (unique across the catalogs, never `personal`), a kind,
//! members that are personas of the same file and target, roles (exactly one owner) and
//! a share between 0 and 1.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::Value;

use super::problem::problem;
use super::{Problem, valid_target};
use crate::model::persona::normalize_email;
use crate::model::space::{DEFAULT_SHARE, Member, PERSONAL, Space, SpaceKind, SpaceRole};

const KEYS: [&str; 6] = ["name", "kind", "members", "roles", "share", "cadence"];

/// The spaces of one file. `members` maps each persona email of the file to its target.
pub(super) fn check(
    file: &Path,
    spaces: &Value,
    members: &BTreeMap<String, Option<String>>,
    file_target: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Vec<Space> {
    let Some(entries) = spaces.as_array() else {
        problems.push(problem(file, "spaces", "must be an array of spaces"));
        return Vec::new();
    };
    let mut names = HashSet::new();
    let mut found = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let at = format!("spaces[{index}]");
        let before = problems.len();
        let Some(map) = entry.as_object() else {
            problems.push(problem(
                file,
                &at,
                "must be an object {name, kind, members, roles?, share?}",
            ));
            continue;
        };
        for key in map.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            problems.push(problem(
                file,
                format!("{at}.{key}"),
                "unknown field (see catalog/catalog.schema.json)",
            ));
        }
        let name = map.get("name").and_then(Value::as_str).unwrap_or_default().trim();
        if name.is_empty() || name.chars().count() > 80 {
            problems.push(problem(file, format!("{at}.name"), "required: 1 to 80 characters"));
        } else if name.eq_ignore_ascii_case(PERSONAL) {
            problems.push(problem(
                file,
                format!("{at}.name"),
                "`personal` names each persona's own space",
            ));
        } else if !names.insert(name.to_lowercase()) {
            problems.push(problem(
                file,
                format!("{at}.name"),
                format!("duplicate space name `{name}`"),
            ));
        }
        let kind = map
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .parse::<SpaceKind>();
        if let Err(err) = &kind {
            problems.push(problem(file, format!("{at}.kind"), err.clone()));
        }
        let share = match map.get("share") {
            None => DEFAULT_SHARE,
            Some(value) => match value.as_f64().filter(|s| (0.0..=1.0).contains(s)) {
                Some(share) => share,
                None => {
                    problems.push(problem(file, format!("{at}.share"), "must be a number from 0 to 1"));
                    DEFAULT_SHARE
                }
            },
        };
        let cadence = map.get("cadence").and_then(Value::as_str).map(str::to_string);
        if let Some(text) = &cadence
            && let Err(err) = text.parse::<crate::model::persona::Cadence>()
        {
            problems.push(problem(file, format!("{at}.cadence"), err));
        }
        let space_members = check_members(file, &at, map, members, file_target, problems);
        if problems.len() == before
            && let Ok(kind) = kind
        {
            found.push(Space {
                name: name.to_string(),
                kind,
                members: space_members,
                share,
                cadence,
                target: file_target.filter(|t| valid_target(t)).map(str::to_string),
                provisioned_at: None,
            });
        }
    }
    found
}

/// The members with their roles: personas of this file and target, at least two, one owner.
fn check_members(
    file: &Path,
    at: &str,
    map: &serde_json::Map<String, Value>,
    personas: &BTreeMap<String, Option<String>>,
    file_target: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Vec<Member> {
    let emails: Vec<String> = match map.get("members").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(email) => Some(normalize_email(email)),
                None => {
                    problems.push(problem(file, format!("{at}.members[{i}]"), "must be an email"));
                    None
                }
            })
            .collect(),
        None => {
            problems.push(problem(
                file,
                format!("{at}.members"),
                "required: an array of member emails",
            ));
            return Vec::new();
        }
    };
    if emails.len() < 2 {
        problems.push(problem(
            file,
            format!("{at}.members"),
            "a shared space needs at least two members",
        ));
    }
    let mut unique = HashSet::new();
    for (i, email) in emails.iter().enumerate() {
        let path = format!("{at}.members[{i}]");
        if !unique.insert(email.clone()) {
            problems.push(problem(file, &path, format!("`{email}` is listed twice")));
        }
        match personas.get(email) {
            None => problems.push(problem(
                file,
                &path,
                format!("`{email}` is not a persona of this catalog"),
            )),
            Some(target) if target.as_deref().or(file_target) != file_target => problems.push(problem(
                file,
                &path,
                format!("`{email}` uses another target than the catalog's: members share one product"),
            )),
            Some(_) => {}
        }
    }
    let roles = map.get("roles").and_then(Value::as_object);
    if let Some(roles) = roles {
        for (email, role) in roles {
            if !emails.contains(&normalize_email(email)) {
                problems.push(problem(
                    file,
                    format!("{at}.roles.{email}"),
                    "not a member of this space",
                ));
            }
            if let Err(err) = role.as_str().unwrap_or_default().parse::<SpaceRole>() {
                problems.push(problem(file, format!("{at}.roles.{email}"), err));
            }
        }
    }
    // Without roles the first member owns the space.
    let role_of = |index: usize, email: &str| {
        let given = roles.and_then(|r| r.iter().find(|(e, _)| normalize_email(e) == email));
        match given.and_then(|(_, role)| role.as_str()?.parse::<SpaceRole>().ok()) {
            Some(role) => role,
            None if roles.is_none() && index == 0 => SpaceRole::Owner,
            None => SpaceRole::Member,
        }
    };
    let members: Vec<Member> = emails
        .iter()
        .enumerate()
        .map(|(i, email)| Member {
            email: email.clone(),
            role: role_of(i, email),
        })
        .collect();
    let owners = members.iter().filter(|m| m.role == SpaceRole::Owner).count();
    if owners != 1 && !emails.is_empty() {
        problems.push(problem(
            file,
            format!("{at}.roles"),
            format!("a space has exactly one owner, this one has {owners}"),
        ));
    }
    members
}
