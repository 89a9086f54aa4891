//! The per-space QA view: what the members of a shared space did with each other's
//! entries over a window, read from the audit.
//! - **Interactions:** member B read, completed or changed an entry member A made there.
//!   An entry is the id a call's answer gave (per tool family, e.g. `todos` #3); a read
//!   is a later answer that lists it, a change a later call whose arguments name it.
//! - **Conflicts:** two members changed the same entry within [`CONFLICT_WINDOW`].
//! - **Denials:** the product refused a member's call in the space (HTTP 403).
//! - **Ratings per member** of the modules they used there, and every low rating with
//!   the partners' ticks around it, so QA sees both sides of a hand-off.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::Window;
use crate::model::call::{CallKind, CallResult};
use crate::model::space::{Space, SpaceRating, SpaceTick, first_text};
use crate::store::{SpaceCall, Store, StoreError};

/// Two members changing one entry this close together is a conflict: long enough for a
/// round of a few members, short enough that a change next day is a follow-up, not a race.
pub const CONFLICT_WINDOW: chrono::Duration = chrono::Duration::hours(1);

/// A rating at or below this is a low one (as on the dashboard's low ratings).
pub const LOW: i32 = 3;

/// One space over the window.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SpaceView {
    pub name: String,
    pub kind: String,
    pub members: Vec<String>,
    pub provisioned: bool,
    /// Calls per member in the space.
    pub calls: BTreeMap<String, usize>,
    pub ticks: Vec<SpaceTick>,
    pub interactions: Vec<SpaceInteraction>,
    pub conflicts: Vec<Conflict>,
    pub denials: Vec<Denial>,
    pub ratings: Vec<MemberRating>,
    pub low_ratings: Vec<LowRating>,
}

/// Whether a member read an entry or changed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    Read,
    Changed,
}

/// Member `by` read or changed an entry `of` made.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SpaceInteraction {
    pub by: String,
    pub of: String,
    pub touch: Touch,
    /// The entry: its tool family and id, e.g. `todos #3`.
    pub entry: String,
    /// What it is about, from the call that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub tool: String,
    pub at: DateTime<Utc>,
    pub tick_id: Uuid,
    /// The tick that made the entry.
    pub made_in: Uuid,
}

/// Two or more members changed one entry within [`CONFLICT_WINDOW`].
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    pub entry: String,
    pub members: Vec<String>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub ticks: Vec<Uuid>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Denial {
    pub email: String,
    pub tool: String,
    pub at: DateTime<Utc>,
    pub tick_id: Uuid,
}

/// A member's ratings of one module in the space.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MemberRating {
    pub email: String,
    pub module: String,
    pub average: f64,
    pub count: usize,
}

/// A low rating with the ticks of the partners around it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LowRating {
    #[serde(flatten)]
    pub rating: SpaceRating,
    /// Each partner's last tick in the space before the rated one and first after it.
    pub partner_ticks: Vec<SpaceTick>,
}

/// Every space of the tenant over `window`.
pub async fn space_views(store: &Store, tenant_id: Uuid, window: &Window) -> Result<Vec<SpaceView>, StoreError> {
    let mut views = Vec::new();
    for space in store.list_spaces(tenant_id).await? {
        let calls = store.space_calls(tenant_id, &space.name, window.since).await?;
        let calls: Vec<SpaceCall> = calls.into_iter().filter(|c| c.call.created_at < window.until).collect();
        let ticks = store
            .space_ticks(tenant_id, &space.name, window.since, window.until)
            .await?;
        let ratings = store
            .space_ratings(tenant_id, &space.name, window.since, window.until)
            .await?;
        views.push(view(&space, &calls, ticks, &ratings));
    }
    Ok(views)
}

/// The view of one space from its calls, ticks and ratings (each oldest first).
pub fn view(space: &Space, calls: &[SpaceCall], ticks: Vec<SpaceTick>, ratings: &[SpaceRating]) -> SpaceView {
    let mut counts = BTreeMap::new();
    for call in calls.iter().filter(|c| c.call.kind == CallKind::Call) {
        *counts.entry(email_of(call)).or_insert(0) += 1;
    }
    let (interactions, conflicts) = entries(calls);
    let denials = calls
        .iter()
        .filter(|c| c.call.result == CallResult::Denied)
        .map(|c| Denial {
            email: email_of(c),
            tool: c.call.tool_name.clone(),
            at: c.call.created_at,
            tick_id: c.call.tick_id,
        })
        .collect();
    let low_ratings = ratings
        .iter()
        .filter(|r| r.rating <= LOW)
        .map(|r| LowRating {
            partner_ticks: around(&ticks, r),
            rating: r.clone(),
        })
        .collect();
    SpaceView {
        name: space.name.clone(),
        kind: space.kind.as_str().to_string(),
        members: space.members.iter().map(|m| m.email.clone()).collect(),
        provisioned: space.provisioned_at.is_some(),
        calls: counts,
        interactions,
        conflicts,
        denials,
        ratings: member_ratings(ratings),
        low_ratings,
        ticks,
    }
}

fn email_of(call: &SpaceCall) -> String {
    call.email.clone().unwrap_or_else(|| call.persona_name.clone())
}

/// Where an entry came from.
struct Made {
    email: String,
    text: Option<String>,
    tick_id: Uuid,
}

/// The interactions across members and the conflicts, from the calls in time order.
fn entries(calls: &[SpaceCall]) -> (Vec<SpaceInteraction>, Vec<Conflict>) {
    let mut made: HashMap<String, Made> = HashMap::new();
    let mut changes: BTreeMap<String, Vec<(String, DateTime<Utc>, Uuid)>> = BTreeMap::new();
    let mut interactions = Vec::new();
    // A member reading one entry twice in a tick is one interaction.
    let mut seen: std::collections::HashSet<(String, String, Touch, Uuid)> = std::collections::HashSet::new();
    for entry in calls.iter().filter(|c| c.call.result == CallResult::Ok) {
        let call = &entry.call;
        let family = family(&call.tool_name);
        let arguments = parse(call.arguments.as_deref());
        let output = parse(call.output.as_deref());
        let email = email_of(entry);
        let named = named_ids(&arguments);
        let mut touched: Vec<(String, Touch)> = named.iter().map(|id| (key(family, id), Touch::Changed)).collect();
        let mut listed = Vec::new();
        collect_ids(&output, &mut listed);
        for id in &listed {
            let entry_key = key(family, id);
            if !touched.iter().any(|(k, _)| *k == entry_key) {
                touched.push((entry_key, Touch::Read));
            }
        }
        // A new entry: the answer's own id, not one the call named.
        if let Some(id) = output.get("id").and_then(scalar)
            && !named.contains(&id)
        {
            made.entry(key(family, &id)).or_insert(Made {
                email: email.clone(),
                text: first_text(&arguments).map(|t| t.chars().take(80).collect()),
                tick_id: call.tick_id,
            });
        }
        for (entry_key, touch) in touched {
            if touch == Touch::Changed {
                changes
                    .entry(entry_key.clone())
                    .or_default()
                    .push((email.clone(), call.created_at, call.tick_id));
            }
            let Some(origin) = made.get(&entry_key).filter(|m| m.email != email) else {
                continue;
            };
            if !seen.insert((email.clone(), entry_key.clone(), touch, call.tick_id)) {
                continue;
            }
            interactions.push(SpaceInteraction {
                by: email.clone(),
                of: origin.email.clone(),
                touch,
                entry: entry_key,
                text: origin.text.clone(),
                tool: call.tool_name.clone(),
                at: call.created_at,
                tick_id: call.tick_id,
                made_in: origin.tick_id,
            });
        }
    }
    (interactions, conflicts(changes))
}

/// Entries changed by two or more members within [`CONFLICT_WINDOW`] of each other.
fn conflicts(changes: BTreeMap<String, Vec<(String, DateTime<Utc>, Uuid)>>) -> Vec<Conflict> {
    let mut found = Vec::new();
    for (entry, list) in changes {
        for (i, (email, at, _)) in list.iter().enumerate() {
            let close: Vec<&(String, DateTime<Utc>, Uuid)> = list[i..]
                .iter()
                .take_while(|(_, later, _)| *later - *at <= CONFLICT_WINDOW)
                .collect();
            if close.iter().any(|(other, _, _)| other != email) {
                let mut members: Vec<String> = close.iter().map(|(e, _, _)| e.clone()).collect();
                members.dedup();
                let mut ticks: Vec<Uuid> = close.iter().map(|(_, _, t)| *t).collect();
                ticks.dedup();
                found.push(Conflict {
                    entry: entry.clone(),
                    members,
                    first: *at,
                    last: close.last().map_or(*at, |c| c.1),
                    ticks,
                });
                break;
            }
        }
    }
    found
}

fn member_ratings(ratings: &[SpaceRating]) -> Vec<MemberRating> {
    let mut groups: BTreeMap<(String, String), (i64, usize)> = BTreeMap::new();
    for rating in ratings {
        let group = groups.entry((rating.email.clone(), rating.module.clone())).or_default();
        group.0 += i64::from(rating.rating);
        group.1 += 1;
    }
    groups
        .into_iter()
        .map(|((email, module), (sum, count))| MemberRating {
            email,
            module,
            average: sum as f64 / count as f64,
            count,
        })
        .collect()
}

/// The partners' last tick before the rated one and their first after it.
fn around(ticks: &[SpaceTick], rating: &SpaceRating) -> Vec<SpaceTick> {
    let Some(rated) = ticks.iter().find(|t| t.tick_id == rating.tick_id) else {
        return Vec::new();
    };
    let mut partners: Vec<&str> = ticks
        .iter()
        .map(|t| t.email.as_str())
        .filter(|e| *e != rating.email)
        .collect();
    partners.sort_unstable();
    partners.dedup();
    let mut found = Vec::new();
    for partner in partners {
        let theirs = ticks.iter().filter(|t| t.email == partner);
        if let Some(before) = theirs.clone().rfind(|t| t.started_at <= rated.started_at) {
            found.push(before.clone());
        }
        if let Some(after) = theirs.clone().find(|t| t.started_at > rated.started_at) {
            found.push(after.clone());
        }
    }
    found
}

/// A tool's family: its name up to the first `.`, `_` or `/` (`todos.complete` → `todos`).
fn family(tool: &str) -> &str {
    tool.split(['.', '_', '/']).next().unwrap_or(tool)
}

fn key(family: &str, id: &str) -> String {
    format!("{family} #{id}")
}

fn parse(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The ids a call's arguments name: values of `id` or of keys ending in `_id`/`Id`.
fn named_ids(arguments: &Value) -> Vec<String> {
    let Value::Object(map) = arguments else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| *k == "id" || k.ends_with("_id") || k.ends_with("Id"))
        .filter_map(|(_, v)| scalar(v))
        .collect()
}

/// Every `id` in an answer, at any depth (a list, a search, a calendar).
fn collect_ids(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(id) = map.get("id").and_then(scalar) {
                into.push(id);
            }
            for (k, v) in map {
                if k != "id" {
                    collect_ids(v, into);
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| collect_ids(v, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::call::Call;
    use crate::model::space::{Member, SpaceKind, SpaceRole};

    fn call(email: &str, tick: u128, minute: i64, tool: &str, arguments: &str, output: &str) -> SpaceCall {
        let call = Call {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            tick_id: Uuid::from_u128(tick),
            persona_id: Uuid::nil(),
            seq: 0,
            kind: CallKind::Call,
            tool_name: tool.into(),
            module: family(tool).into(),
            input_hash: String::new(),
            result: CallResult::Ok,
            error_message: None,
            arguments: Some(arguments.into()),
            output: Some(output.into()),
            chaos: false,
            latency_ms: None,
            sent: true,
            recovered: false,
            refusal: None,
            space: Some("Familie".into()),
            created_at: DateTime::<Utc>::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap(),
        };
        SpaceCall {
            persona_name: email.into(),
            email: Some(email.into()),
            call,
        }
    }

    #[test]
    fn a_partners_read_and_change_are_interactions_once_per_tick_and_two_changes_a_conflict() {
        let calls = [
            call(
                "a",
                1,
                0,
                "todos.create",
                r#"{"title":"Windeln kaufen"}"#,
                r#"{"id":3,"title":"Windeln kaufen"}"#,
            ),
            call("b", 2, 5, "todos.list", "{}", r#"[{"id":3,"title":"Windeln kaufen"}]"#),
            call("b", 2, 6, "todos.complete", r#"{"id":3}"#, r#"{"id":3,"done":true}"#),
            // Read again in the same tick: still one read.
            call("b", 2, 7, "todos.list", "{}", r#"[{"id":3,"title":"Windeln kaufen"}]"#),
            call(
                "a",
                3,
                30,
                "todos.update",
                r#"{"id":3,"title":"Windeln"}"#,
                r#"{"id":3}"#,
            ),
            call("a", 3, 31, "notes.search", r#"{"query":"x"}"#, r#"[{"id":3}]"#),
        ];
        let space = Space {
            name: "Familie".into(),
            kind: SpaceKind::Family,
            members: vec![
                Member {
                    email: "a".into(),
                    role: SpaceRole::Owner,
                },
                Member {
                    email: "b".into(),
                    role: SpaceRole::Member,
                },
            ],
            share: 0.5,
            cadence: None,
            target: None,
            provisioned_at: None,
        };
        let view = view(&space, &calls, Vec::new(), &[]);
        let seen: Vec<(&str, &str, Touch, &str)> = view
            .interactions
            .iter()
            .map(|i| (i.by.as_str(), i.of.as_str(), i.touch, i.tool.as_str()))
            .collect();
        // notes #3 is another entry than todos #3: no interaction.
        assert_eq!(
            seen,
            [
                ("b", "a", Touch::Read, "todos.list"),
                ("b", "a", Touch::Changed, "todos.complete")
            ]
        );
        assert_eq!(view.interactions[0].text.as_deref(), Some("Windeln kaufen"));
        assert_eq!(view.interactions[0].made_in, Uuid::from_u128(1));
        assert_eq!(view.conflicts.len(), 1, "{:?}", view.conflicts);
        assert_eq!(view.conflicts[0].entry, "todos #3");
        assert_eq!(view.conflicts[0].members, ["b", "a"]);
        assert_eq!(view.calls["a"], 3);
    }
}
