//! A tick in a shared space: which space it works in (asked for, or chosen by the shares
//! of its persona's spaces), the space's id in the product's organization list (sent as
//! `spaces.header`, or as `spaces.argument` of every call), and what the other members
//! recently did there, for the story so far.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{CallContext, TickError, TickRequest, TickRunner};
use crate::model::call::CallResult;
use crate::model::space::{self, SpaceChoice};
use crate::model::tick::NewTick;
use crate::store::SpaceCall;

/// How far back the story looks for the other members' calls, and how many it tells.
const PARTNER_DAYS: i64 = 7;
const PARTNER_ACTIONS: usize = 12;

impl TickRunner {
    /// The claim of a request, its space decided (the scheduler claims slots through the
    /// store itself, with this claim).
    pub async fn new_tick(&self, request: &TickRequest) -> Result<NewTick, TickError> {
        Ok(NewTick {
            tenant_id: request.persona.tenant_id,
            persona_id: request.persona.id,
            trigger: request.trigger,
            scheduled_for: request.scheduled_for,
            attempt: request.attempt,
            runner_id: self.runner_id.clone(),
            lease: self.config.tick.lease.0,
            target: request.persona.target.clone(),
            space: self.choose_space(request).await?,
        })
    }

    /// The space a tick works in: the one asked for, or one of the persona's provisioned
    /// spaces by their shares (check trials stay personal: their goal is the persona's own).
    async fn choose_space(&self, request: &TickRequest) -> Result<Option<String>, TickError> {
        let persona = &request.persona;
        let Some(email) = persona.email.as_deref() else {
            return Ok(None);
        };
        match &request.space {
            SpaceChoice::Personal => Ok(None),
            SpaceChoice::ByShare if request.goal.is_some() => Ok(None),
            SpaceChoice::Shared(name) => {
                let found = self.store.get_space(persona.tenant_id, name).await?;
                match found {
                    Some(space) if space.has_member(email) => Ok(Some(space.name)),
                    Some(_) => Err(TickError::Space(format!(
                        "{} is not a member of the space `{name}` in the catalog",
                        persona.label()
                    ))),
                    None => Err(TickError::Space(format!(
                        "no space `{name}`: declare it in a catalog's `spaces` and seed it"
                    ))),
                }
            }
            SpaceChoice::ByShare => {
                let mut spaces = self.store.spaces_of(persona.tenant_id, email).await?;
                spaces.retain(|s| s.target == persona.target && s.provisioned_at.is_some());
                Ok(space::choose(&spaces, fastrand::f64()).map(|s| s.name.clone()))
            }
        }
    }

    /// For a tick in a shared space: finds the space's id in the persona's organization
    /// list, and returns the MCP settings that send it (`spaces.header`).
    pub(super) async fn space_settings(
        &self,
        space: Option<&str>,
        label: &str,
        product: &super::product::Product,
        credentials: &crate::auth::Credentials,
    ) -> Result<Option<(String, crate::config::McpConfig)>, TickError> {
        let Some(name) = space else {
            return Ok(None);
        };
        let token = credentials.token.as_ref().ok_or_else(|| {
            TickError::Space("a tick in a shared space needs a login token to read the organization list".into())
        })?;
        let calls = product.spaces.as_ref().map_err(|err| TickError::Space(err.clone()))?;
        let id = calls
            .find(token, name)
            .await
            .map_err(|err| TickError::Space(err.to_string()))?
            .ok_or_else(|| {
                TickError::Space(format!(
                    "{} has no space `{name}` in its organization list ({}): provision it with `catalog seed --provision`",
                    label,
                    calls.list_url()
                ))
            })?;
        let mut mcp = product.mcp.clone();
        let header = self.config.spaces.header.trim();
        if !header.is_empty() {
            mcp.headers.insert(header.to_string(), id.clone());
        }
        Ok(Some((id, mcp)))
    }

    /// A call's arguments with the space id added as `spaces.argument`, when a gateway
    /// takes the space as an argument (the audited arguments, and their hash, stay as the
    /// persona wrote them).
    pub(super) fn with_space_argument(
        &self,
        space_id: Option<&str>,
        mut arguments: serde_json::Map<String, Value>,
    ) -> serde_json::Map<String, Value> {
        let argument = self.config.spaces.argument.trim();
        if let (Some(id), false) = (space_id, argument.is_empty()) {
            arguments.insert(argument.to_string(), Value::String(id.to_string()));
        }
        arguments
    }

    /// The story's part about the space: who else is in it and what they did lately.
    pub(super) async fn space_story(&self, ctx: &CallContext<'_>) -> Result<String, TickError> {
        let Some(name) = ctx.space else {
            return Ok(String::new());
        };
        let email = ctx.persona.email.as_deref().unwrap_or_default();
        let Some(shared) = self.store.get_space(ctx.persona.tenant_id, name).await? else {
            return Ok(String::new());
        };
        let now = crate::time::now();
        let since = crate::time::before(now, std::time::Duration::from_secs(PARTNER_DAYS as u64 * 86_400));
        let calls = self.store.space_calls(ctx.persona.tenant_id, name, since).await?;
        let others: Vec<&SpaceCall> = calls
            .iter()
            .filter(|c| c.call.persona_id != ctx.persona.id && c.call.result == CallResult::Ok)
            .collect();
        let partners: Vec<&str> = shared.partners_of(email).map(|m| m.email.as_str()).collect();
        Ok(partner_story(
            name,
            shared.kind.as_str(),
            &partners,
            &others,
            now,
            ctx.persona.zone(),
        ))
    }
}

/// The space's part of the story so far, in the persona's time zone.
pub fn partner_story(
    space: &str,
    kind: &str,
    partners: &[&str],
    others: &[&SpaceCall],
    now: DateTime<Utc>,
    zone: chrono_tz::Tz,
) -> String {
    let mut story = format!(
        "\n\nRight now you are in the shared space \"{space}\" ({kind}) with {}: what you add here, they see, \
         and you see theirs. You may complete, comment on or correct what they entered.",
        partners.join(", ")
    );
    if others.is_empty() {
        story.push_str("\nNobody else did anything there in the last days.");
        return story;
    }
    story.push_str("\nWhat the others did there lately:");
    let today = now.with_timezone(&zone).date_naive();
    let start = others.len().saturating_sub(PARTNER_ACTIONS);
    for entry in &others[start..] {
        let local = entry.call.created_at.with_timezone(&zone);
        let day = match (today - local.date_naive()).num_days() {
            0 => "today".to_string(),
            1 => "yesterday".to_string(),
            _ => local.format("%a %d.%m.").to_string(),
        };
        let _ = write!(
            story,
            "\n- {}, {day} {}: {}{}",
            entry.persona_name,
            local.format("%H:%M"),
            entry.call.tool_name,
            what(entry.call.arguments.as_deref(), entry.call.output.as_deref())
        );
    }
    story
}

/// A call's gist: its first text argument, and the id the product gave back.
fn what(arguments: Option<&str>, output: Option<&str>) -> String {
    let parse = |text: Option<&str>| text.and_then(|t| serde_json::from_str::<Value>(t).ok());
    let mut gist = String::new();
    if let Some(arguments) = parse(arguments)
        && let Some(text) = space::first_text(&arguments)
    {
        let text: String = text.chars().take(80).collect();
        let _ = write!(gist, " \"{text}\"");
    }
    if let Some(Value::Object(map)) = parse(output)
        && let Some(id) = map.get("id").filter(|id| id.is_number() || id.is_string())
    {
        let _ = write!(gist, " (id {id})");
    }
    gist
}
