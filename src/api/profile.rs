//! The profile store API (seed 004), multi-tenant: every query is scoped by the
//! tenant of the caller's JWT, "my-" routes by its user. Another tenant's persona is a
//! 404, never its data.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::ApiState;
use super::auth::{ProfileAdmin, User};
use super::error::{ApiError, ErrorBody, FieldError, ValidJson, ValidPath, ValidQuery};
use super::params;
use crate::model::persona::{Flow, Persona};
use crate::model::profile::{Alignment, Interaction, InteractionType, NewInteraction, Profile, Sentiment};
use crate::profile::ProfileError;

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

fn days(value: Option<&str>) -> Result<i64, ApiError> {
    params::integer("days", value, params::DAY_SPANS, 30)
}

fn since_days(days: i64) -> chrono::DateTime<chrono::Utc> {
    crate::time::before(crate::time::now(), DAY * days as u32)
}

async fn persona_in_tenant(state: &ApiState, tenant: Uuid, id: &str) -> Result<Persona, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("no persona `{id}`")))?;
    state
        .store()
        .get_persona(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no persona {id}")))
}

/// Provisions the caller as a human user of their tenant on first use.
async fn provision(state: &ApiState, user: &User) -> Result<(), ApiError> {
    let email = user
        .email
        .clone()
        .unwrap_or_else(|| format!("{}@users.invalid", user.user_id));
    let name = user.name.clone().unwrap_or_else(|| email.clone());
    state.store().ensure_tenant(user.tenant).await?;
    state
        .store()
        .ensure_user(user.tenant, user.user_id, &email, &name)
        .await?;
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowQuery {
    /// `S&OP` or `Financial`.
    flow: Option<String>,
}

/// The personas of the caller's tenant, optionally of one flow.
#[utoipa::path(get, path = "/api/personas", tag = "profile", security(("user_jwt" = [])),
    params(FlowQuery),
    responses(
        (status = 200, description = "personas of the tenant by name", body = Vec<Persona>),
        (status = 400, description = "unknown flow", body = ErrorBody),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn list_personas(
    State(state): State<ApiState>,
    user: User,
    ValidQuery(query): ValidQuery<FlowQuery>,
) -> Result<Json<Vec<Persona>>, ApiError> {
    let flow = params::choice::<Flow>("flow", query.flow.as_deref())?;
    let personas = state.store().list_personas(user.tenant).await?;
    Ok(Json(
        personas
            .into_iter()
            .filter(|p| flow.is_none_or(|f| p.flow == Some(f)))
            .collect(),
    ))
}

/// One persona of the caller's tenant.
#[utoipa::path(get, path = "/api/personas/{id}", tag = "profile", security(("user_jwt" = [])),
    params(("id" = Uuid, Path, description = "persona id")),
    responses(
        (status = 200, description = "the persona", body = Persona),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 404, description = "no such persona in the caller's tenant", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn get_persona(
    State(state): State<ApiState>,
    user: User,
    ValidPath(id): ValidPath,
) -> Result<Json<Persona>, ApiError> {
    Ok(Json(persona_in_tenant(&state, user.tenant, &id).await?))
}

/// Update a persona's definition (profile admin role). The body holds the fields to
/// change, in the catalog's camelCase; the email (the login identity) cannot change here.
#[utoipa::path(put, path = "/api/personas/{id}", tag = "profile", security(("user_jwt" = [])),
    params(("id" = Uuid, Path, description = "persona id")),
    request_body(content = Object, description = "any persona definition fields except email"),
    responses(
        (status = 200, description = "the updated persona", body = Persona),
        (status = 400, description = "fields of the wrong shape, each named", body = ErrorBody),
        (status = 422, description = "fields that break a rule the schema cannot state, each named", body = ErrorBody),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 403, description = "the token lacks the admin role", body = ErrorBody),
        (status = 404, description = "no such persona in the caller's tenant", body = ErrorBody),
        (status = 409, description = "the new name is taken", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn update_persona(
    State(state): State<ApiState>,
    ProfileAdmin(user): ProfileAdmin,
    ValidPath(id): ValidPath,
    ValidJson(patch): ValidJson<serde_json::Map<String, Value>>,
) -> Result<Json<Persona>, ApiError> {
    let persona = persona_in_tenant(&state, user.tenant, &id).await?;
    let rules = crate::catalog::Rules::from(&state.config().catalog);
    let spec = crate::catalog::validate_edit(&persona.to_spec(), patch, &rules).map_err(ApiError::from_problems)?;
    let time_zone = spec.time_zone.clone().unwrap_or_else(|| persona.time_zone.clone());
    state
        .store()
        .update_persona_definition(user.tenant, persona.id, &spec, &time_zone)
        .await?;
    Ok(Json(persona_in_tenant(&state, user.tenant, &id).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MyPersona {
    profile: Profile,
    /// The assigned persona (`null` when it was deleted).
    persona: Option<Persona>,
}

/// The caller's profile and assigned persona.
#[utoipa::path(get, path = "/api/my-persona", tag = "profile", security(("user_jwt" = [])),
    responses(
        (status = 200, description = "profile with learned preferences and the persona", body = MyPersona),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 404, description = "no persona assigned yet (PUT /api/my-persona/reassign)", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn my_persona(State(state): State<ApiState>, user: User) -> Result<Json<MyPersona>, ApiError> {
    let profile = state
        .store()
        .get_profile(user.tenant, user.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no persona assigned yet: PUT /api/my-persona/reassign"))?;
    let persona = match profile.persona_id {
        Some(id) => state.store().get_persona(user.tenant, id).await?,
        None => None,
    };
    Ok(Json(MyPersona { profile, persona }))
}

/// An interaction to record.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractionBody {
    interaction_type: InteractionType,
    page_type: Option<String>,
    page_id: Option<String>,
    element_id: Option<String>,
    element_type: Option<String>,
    /// Context such as `metric_id`, `action_id`, `module`, `chart_type`, `data_source`.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    #[schema(minimum = 0, maximum = 2_147_483_647)]
    #[serde(default, deserialize_with = "crate::model::persona::whole_number")]
    duration_seconds: Option<i32>,
    feedback_sentiment: Option<Sentiment>,
    feedback_comment: Option<String>,
}

/// Record one of the caller's interactions; learned preferences move with it.
#[utoipa::path(post, path = "/api/my-persona/interactions", tag = "profile", security(("user_jwt" = [])),
    request_body = InteractionBody,
    responses(
        (status = 201, description = "recorded", body = Interaction),
        (status = 400, description = "invalid fields, each named", body = ErrorBody),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 409, description = "no persona assigned yet", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn record_interaction(
    State(state): State<ApiState>,
    user: User,
    ValidJson(body): ValidJson<InteractionBody>,
) -> Result<Response, ApiError> {
    let mut problems = Vec::new();
    if body.duration_seconds.is_some_and(|d| d < 0) {
        problems.push(FieldError {
            field: "duration_seconds".into(),
            message: "must not be negative".into(),
        });
    }
    if body.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        problems.push(FieldError {
            field: "metadata".into(),
            message: "must be a JSON object".into(),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::fields(problems));
    }
    let profile = state
        .store()
        .get_profile(user.tenant, user.user_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no persona assigned yet: PUT /api/my-persona/reassign first",
            )
        })?;
    let interaction = crate::profile::record(
        state.store(),
        &NewInteraction {
            tenant_id: user.tenant,
            user_id: user.user_id,
            persona_id: profile.persona_id,
            tick_id: None,
            interaction_type: body.interaction_type,
            page_type: body.page_type,
            page_id: body.page_id,
            element_id: body.element_id,
            element_type: body.element_type,
            metadata: body.metadata.unwrap_or_else(|| Value::Object(Default::default())),
            duration_seconds: body.duration_seconds,
            feedback_sentiment: body.feedback_sentiment,
            feedback_comment: body.feedback_comment,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(interaction)).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InteractionQuery {
    /// Days back (1–3650, default 30).
    days: Option<String>,
    /// One interaction type.
    r#type: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InteractionHistory {
    days: i64,
    interactions: Vec<Interaction>,
    /// Interactions in the window by type (all types, whatever `type` filtered).
    summary: BTreeMap<String, i64>,
}

/// The caller's interactions, newest first (at most 1000), with a summary by type.
#[utoipa::path(get, path = "/api/my-persona/interactions", tag = "profile", security(("user_jwt" = [])),
    params(InteractionQuery),
    responses(
        (status = 200, description = "the history", body = InteractionHistory),
        (status = 400, description = "a bad parameter, named", body = ErrorBody),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn list_interactions(
    State(state): State<ApiState>,
    user: User,
    ValidQuery(query): ValidQuery<InteractionQuery>,
) -> Result<Json<InteractionHistory>, ApiError> {
    let days = days(query.days.as_deref())?;
    let kind = params::choice::<InteractionType>("type", query.r#type.as_deref())?;
    let since = since_days(days);
    let interactions = state
        .store()
        .list_interactions(user.tenant, user.user_id, since, kind.map(|k| k.as_str()), 1000)
        .await?;
    let summary = state
        .store()
        .interaction_counts(user.tenant, user.user_id, since)
        .await?;
    Ok(Json(InteractionHistory {
        days,
        interactions,
        summary,
    }))
}

/// The caller's alignment with their persona, computed now (see the formula field).
#[utoipa::path(get, path = "/api/my-persona/alignment", tag = "profile", security(("user_jwt" = [])),
    responses(
        (status = 200, description = "score 0–100 (null without enough evidence), reassessment flag, suggestion", body = Alignment),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 404, description = "no persona assigned yet", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn alignment(State(state): State<ApiState>, user: User) -> Result<Json<Alignment>, ApiError> {
    crate::profile::refresh_alignment(state.store(), user.tenant, user.user_id, state.candidates(), None)
        .await
        .map(Json)
        .map_err(|err| match err {
            ProfileError::NoProfile(_) => ApiError::not_found("no persona assigned yet: PUT /api/my-persona/reassign"),
            ProfileError::Store(err) => err.into(),
        })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassignBody {
    new_persona_id: Uuid,
}

/// Assign the caller to a persona of their tenant (creating their profile).
#[utoipa::path(put, path = "/api/my-persona/reassign", tag = "profile", security(("user_jwt" = [])),
    request_body = ReassignBody,
    responses(
        (status = 200, description = "the updated profile", body = Profile),
        (status = 400, description = "invalid body", body = ErrorBody),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 404, description = "no such persona in the caller's tenant", body = ErrorBody),
        (status = 409, description = "the user id or email belongs to another user or tenant", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn reassign(
    State(state): State<ApiState>,
    user: User,
    ValidJson(body): ValidJson<ReassignBody>,
) -> Result<Json<Profile>, ApiError> {
    let persona = persona_in_tenant(&state, user.tenant, &body.new_persona_id.to_string()).await?;
    provision(&state, &user).await?;
    Ok(Json(
        state
            .store()
            .assign_persona(user.tenant, user.user_id, persona.id)
            .await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Days back (1–3650, default 30).
    days: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PersonaStatsBody {
    persona_id: Uuid,
    days: i64,
    users: i64,
    active_users: i64,
    pending_reassessment: i64,
    average_alignment: Option<f64>,
    interactions: i64,
    by_type: BTreeMap<String, i64>,
    positive_feedback: i64,
    negative_feedback: i64,
}

/// Users and interactions of one persona of the caller's tenant.
#[utoipa::path(get, path = "/api/personas/{id}/stats", tag = "profile", security(("user_jwt" = [])),
    params(("id" = Uuid, Path, description = "persona id"), StatsQuery),
    responses(
        (status = 200, description = "the statistics", body = PersonaStatsBody),
        (status = 400, description = "a bad parameter, named", body = ErrorBody),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 404, description = "no such persona in the caller's tenant", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn persona_stats(
    State(state): State<ApiState>,
    user: User,
    ValidPath(id): ValidPath,
    ValidQuery(query): ValidQuery<StatsQuery>,
) -> Result<Json<PersonaStatsBody>, ApiError> {
    let days = days(query.days.as_deref())?;
    let persona = persona_in_tenant(&state, user.tenant, &id).await?;
    let stats = state
        .store()
        .persona_stats(user.tenant, persona.id, since_days(days))
        .await?;
    Ok(Json(PersonaStatsBody {
        persona_id: persona.id,
        days,
        users: stats.users,
        active_users: stats.active_users,
        pending_reassessment: stats.pending_reassessment,
        average_alignment: stats.average_alignment,
        interactions: stats.interactions,
        by_type: stats.by_type,
        positive_feedback: stats.positive_feedback,
        negative_feedback: stats.negative_feedback,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InitReport {
    created: usize,
    existing: usize,
    /// The tenant's role personas after the call.
    personas: Vec<Persona>,
}

/// Create the 12 default role personas (S&OP and Financial flows) for the caller's
/// tenant (profile admin role). Idempotent: existing names are left as they are.
#[utoipa::path(post, path = "/api/init-personas", tag = "profile", security(("user_jwt" = [])),
    responses(
        (status = 200, description = "what was created and the role personas now", body = InitReport),
        (status = 401, description = "missing, expired or invalid token", body = ErrorBody),
        (status = 403, description = "the token lacks the admin role", body = ErrorBody),
        (status = 503, description = "no JWT key configured", body = ErrorBody),
    ))]
pub async fn init_personas(
    State(state): State<ApiState>,
    ProfileAdmin(user): ProfileAdmin,
) -> Result<Json<InitReport>, ApiError> {
    let store = state.store();
    store.ensure_tenant(user.tenant).await?;
    let roles = crate::catalog::role_personas();
    let mut created = 0;
    for spec in &roles {
        let time_zone = spec
            .time_zone
            .clone()
            .unwrap_or_else(|| state.config().catalog.default_time_zone.clone());
        if store.insert_role_persona(user.tenant, spec, &time_zone).await? {
            created += 1;
        }
    }
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    let personas = store
        .list_personas(user.tenant)
        .await?
        .into_iter()
        .filter(|p| names.contains(&p.name.as_str()))
        .collect();
    Ok(Json(InitReport {
        created,
        existing: roles.len() - created,
        personas,
    }))
}
