//! The admin API under `/api/v1/admin` (admin token): personas (create-or-update by
//! email, list, detail, hard delete, pause, resume, one-off tick, tick all). What they
//! did (ticks, actions, the feedback report) is in [`super::history`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::ApiState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody, ValidJson, ValidPath, ValidQuery};
use super::params;
use super::views::ActionRecord;
use crate::feedback::Grouping;
use crate::model::persona::Persona;
use crate::model::persona::UserKind;
use crate::model::profile::Profile;
use crate::model::tick::TickRecord;
use crate::store::{PersonaSummary, RatingScope, TickFilter, UpsertOutcome};
use crate::tick::TickError;

/// The persona `id` (a UUID or the persona's email) of the caller's tenant.
pub(super) async fn find(state: &ApiState, tenant: Uuid, id: &str) -> Result<Persona, ApiError> {
    state
        .store()
        .find_persona(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no persona `{id}` in this tenant")))
}

/// What an upsert did and the persona as stored.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UpsertResponse {
    outcome: UpsertOutcome,
    persona: Persona,
    /// With `provision=true`: whether the product account was created or already existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    provisioned: Option<crate::auth::SignUp>,
    /// With `provision=true`: each of the persona's shared spaces, created or joined in the
    /// product (a space whose other members have no account yet fails here until they do).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    spaces: Vec<SpaceProvisioning>,
}

/// What provisioning one of the persona's spaces did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SpaceProvisioning {
    space: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    done: Option<crate::auth::SpaceTally>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Creates or joins every space of `persona` in its product, each on its own.
async fn provision_spaces(state: &ApiState, persona: &Persona) -> Result<Vec<SpaceProvisioning>, ApiError> {
    let (Some(email), Some(provisioner)) = (
        persona.email.as_deref(),
        state.space_provisioner(persona.target.as_deref()),
    ) else {
        return Ok(Vec::new());
    };
    let mut spaces = state.store().spaces_of(persona.tenant_id, email).await?;
    spaces.retain(|space| space.target == persona.target);
    let mut done = Vec::with_capacity(spaces.len());
    for space in spaces {
        let outcome = provisioner.calls.provision(&provisioner.auth, &space).await;
        if outcome.is_ok() {
            state
                .store()
                .mark_space_provisioned(persona.tenant_id, &space.name)
                .await?;
        }
        done.push(SpaceProvisioning {
            space: space.name,
            error: outcome.as_ref().err().map(ToString::to_string),
            done: outcome.ok(),
        });
    }
    Ok(done)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UpsertQuery {
    /// `true`: also sign the persona up in its product (`auth.signup_url`), and create or
    /// join its shared spaces there (`[spaces]`).
    provision: Option<String>,
}

/// Create or update the persona with the body's email (idempotent).
///
/// The body is a persona definition as in a catalog file (`catalog/catalog.schema.json`).
/// The `kind = persona` user is created with it; an email of a human account is refused.
#[utoipa::path(post, path = "/api/v1/admin/personas", tag = "admin", security(("admin_token" = [])),
    request_body = crate::model::persona::PersonaSpec,
    params(UpsertQuery),
    responses(
        (status = 201, description = "created", body = UpsertResponse),
        (status = 200, description = "updated or unchanged", body = UpsertResponse),
        (status = 400, description = "not a persona definition (its shape); every problem with its field", body = ErrorBody),
        (status = 422, description = "a definition that breaks a rule its schema cannot state (test-domain email, a cron that fires, prompt length, time zone); every problem with its field", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 409, description = "the email belongs to a human account, or the name to another persona; or provision=true without a sign-up endpoint for the persona's product", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 502, description = "provision=true: the product refused the sign-up or did not answer (the persona is stored)", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn upsert_persona(
    State(state): State<ApiState>,
    admin: Admin,
    ValidQuery(query): ValidQuery<UpsertQuery>,
    ValidJson(body): ValidJson<Value>,
) -> Result<Response, ApiError> {
    let config = state.config();
    let provision = params::flag("provision", query.provision.as_deref())?;
    let rules = crate::catalog::Rules::from(&config.catalog);
    let spec = crate::catalog::validate_persona(&body, &rules).map_err(ApiError::from_problems)?;
    let provisioner = match provision {
        false => None,
        true => Some(state.provisioner(spec.target.as_deref()).ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "provision=true, but the persona's product has no sign-up endpoint: set auth.signup_url",
            )
        })?),
    };
    let (persona, outcome) = state
        .store()
        .upsert_persona(admin.tenant, &spec, &config.catalog.default_time_zone)
        .await?;
    let provisioned = match provisioner {
        None => None,
        Some(provisioner) => Some(
            provisioner
                .sign_up(&spec.email, &spec.name)
                .await
                .map_err(|err| ApiError::new(StatusCode::BAD_GATEWAY, format!("{err} (the persona is stored)")))?,
        ),
    };
    let spaces = match provisioned {
        Some(_) => provision_spaces(&state, &persona).await?,
        None => Vec::new(),
    };
    let status = if outcome == UpsertOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(UpsertResponse {
            outcome,
            persona,
            provisioned,
            spaces,
        }),
    )
        .into_response())
}

/// List the tenant's personas with their activity.
#[utoipa::path(get, path = "/api/v1/admin/personas", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    responses(
        (status = 200, description = "every persona: 7-day calls, last tick, average rating, alignment", body = Vec<PersonaSummary>),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn list_personas(State(state): State<ApiState>, admin: Admin) -> Result<Json<Vec<PersonaSummary>>, ApiError> {
    let since = crate::time::before(crate::time::now(), std::time::Duration::from_secs(7 * 86_400));
    Ok(Json(state.store().persona_summaries(admin.tenant, since).await?))
}

/// One module's ratings of one persona (all time).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModuleFeedback {
    module: String,
    average: f64,
    count: i64,
    /// Ratings of 1, 2, 3, 4 and 5.
    distribution: Vec<i64>,
    error_rate: Option<f64>,
    mean_latency_ms: Option<f64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PersonaDetail {
    persona: Persona,
    /// The latest 20 tool calls, newest first.
    recent_actions: Vec<ActionRecord>,
    /// The latest 20 ticks, newest first.
    recent_ticks: Vec<TickRecord>,
    feedback: Vec<ModuleFeedback>,
    /// The persona user's profile (learned preferences, alignment).
    profile: Option<Profile>,
}

/// A persona's definition, recent calls and ticks, and per-module feedback.
#[utoipa::path(get, path = "/api/v1/admin/personas/{id}", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(("id" = String, Path, description = "persona id or email")),
    responses(
        (status = 200, description = "the persona", body = PersonaDetail),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such persona in this tenant", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn get_persona(
    State(state): State<ApiState>,
    admin: Admin,
    ValidPath(id): ValidPath,
) -> Result<Json<PersonaDetail>, ApiError> {
    let persona = find(&state, admin.tenant, &id).await?;
    let store = state.store();
    let recent_actions = store
        .recent_calls(persona.id, 20)
        .await?
        .into_iter()
        .map(ActionRecord::from)
        .collect();
    let filter = TickFilter {
        persona_id: Some(persona.id),
        ..TickFilter::default()
    };
    let recent_ticks = store.list_ticks(admin.tenant, &filter, 20).await?;
    let scope = RatingScope {
        tenant: admin.tenant,
        from: DateTime::<Utc>::UNIX_EPOCH,
        until: crate::time::after(crate::time::now(), std::time::Duration::from_secs(1)),
        module: None,
        persona_id: Some(persona.id),
        archetype: None,
    };
    let feedback = crate::feedback::groups(store, &scope, Grouping::Module, &state.config().feedback)
        .await?
        .into_iter()
        .map(|g| ModuleFeedback {
            error_rate: g.error_rate,
            module: g.key,
            average: g.average,
            count: g.count,
            distribution: g.distribution.to_vec(),
            mean_latency_ms: g.mean_latency_ms,
        })
        .collect();
    let profile = match persona.user_id {
        Some(user) => store.get_profile(admin.tenant, user).await?,
        None => None,
    };
    Ok(Json(PersonaDetail {
        persona,
        recent_actions,
        recent_ticks,
        feedback,
        profile,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeleteResponse {
    deleted: Uuid,
    ticks: i64,
    actions: i64,
    feedback: i64,
    interactions: i64,
    user_deleted: bool,
}

/// Hard-delete a persona with its ticks, actions, feedback and profile rows.
///
/// Refuses (409) when the user behind `id` is not `kind = persona`: a human account is
/// never deleted here.
#[utoipa::path(delete, path = "/api/v1/admin/personas/{id}", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "persona id or email")),
    responses(
        (status = 200, description = "deleted, with what went with it", body = DeleteResponse),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such persona in this tenant", body = ErrorBody),
        (status = 409, description = "the user is not a persona", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn delete_persona(
    State(state): State<ApiState>,
    admin: Admin,
    ValidPath(id): ValidPath,
) -> Result<Json<DeleteResponse>, ApiError> {
    let store = state.store();
    let persona = match store.find_persona(admin.tenant, &id).await? {
        Some(persona) => persona,
        None => {
            if let Some(kind) = store
                .user_kind(admin.tenant, &id)
                .await?
                .filter(|k| *k != UserKind::Persona)
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("{id} is a {kind} account, not a persona: it is never deleted here"),
                ));
            }
            return Err(ApiError::not_found(format!("no persona `{id}` in this tenant")));
        }
    };
    let report = store.delete_persona(admin.tenant, persona.id).await?;
    tracing::info!(persona = %persona.label(), ticks = report.ticks, "persona deleted through the admin API");
    Ok(Json(DeleteResponse {
        deleted: persona.id,
        ticks: report.ticks,
        actions: report.actions,
        feedback: report.feedback,
        interactions: report.interactions,
        user_deleted: report.user_deleted,
    }))
}

async fn set_paused(state: &ApiState, admin: Admin, id: &str, paused: bool) -> Result<Json<Persona>, ApiError> {
    let persona = find(state, admin.tenant, id).await?;
    state.store().set_paused(admin.tenant, persona.id, paused).await?;
    Ok(Json(find(state, admin.tenant, &persona.id.to_string()).await?))
}

/// Pause a persona: the scheduler skips it until resumed (a running tick finishes).
#[utoipa::path(post, path = "/api/v1/admin/personas/{id}/pause", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "persona id or email")),
    responses(
        (status = 200, description = "the paused persona", body = Persona),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such persona in this tenant", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<ApiState>,
    admin: Admin,
    ValidPath(id): ValidPath,
) -> Result<Json<Persona>, ApiError> {
    set_paused(&state, admin, &id, true).await
}

/// Resume a paused persona.
#[utoipa::path(post, path = "/api/v1/admin/personas/{id}/resume", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "persona id or email")),
    responses(
        (status = 200, description = "the resumed persona", body = Persona),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such persona in this tenant", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<ApiState>,
    admin: Admin,
    ValidPath(id): ValidPath,
) -> Result<Json<Persona>, ApiError> {
    set_paused(&state, admin, &id, false).await
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TickStarted {
    pub tick_id: Uuid,
    /// Always `running`: follow the tick with `GET /api/v1/admin/ticks?persona=…`.
    pub status: String,
}

/// Start a one-off tick of a persona now.
#[utoipa::path(post, path = "/api/v1/admin/personas/{id}/tick", tag = "admin", security(("admin_token" = [])),
    params(("id" = String, Path, description = "persona id or email")),
    responses(
        (status = 202, description = "the tick was claimed and runs in the background", body = TickStarted),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such persona in this tenant", body = ErrorBody),
        (status = 409, description = "the persona has a running tick", body = ErrorBody),
        (status = 422, description = "a profile-only persona has no login and cannot be ticked", body = ErrorBody),
        (status = 503, description = "no admin token configured, or no tick engine", body = ErrorBody),
    ))]
pub async fn tick(State(state): State<ApiState>, admin: Admin, ValidPath(id): ValidPath) -> Result<Response, ApiError> {
    let persona = find(&state, admin.tenant, &id).await?;
    let ticks = state
        .ticks()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this server runs no tick engine"))?;
    let tick_id = ticks.start(persona).await.map_err(|err| match err {
        TickError::AlreadyRunning(who) => {
            ApiError::new(StatusCode::CONFLICT, format!("{who} already has a running tick"))
        }
        TickError::NotRunnable(who) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{who} has no login identity (a profile-only role persona) and cannot be ticked"),
        ),
        err @ TickError::NoTarget { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string()),
        other => {
            tracing::error!(err = %other, "starting a one-off tick failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the tick could not start: {other}"),
            )
        }
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(TickStarted {
            tick_id,
            status: "running".into(),
        }),
    )
        .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TicksStarted {
    status: String,
}

/// Tick every runnable persona now (as SIGUSR1 does).
#[utoipa::path(post, path = "/api/v1/admin/ticks", tag = "admin", security(("admin_token" = [])),
    responses(
        (status = 202, description = "ticks are being started", body = TicksStarted),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 503, description = "no admin token configured, or the scheduler is stopping", body = ErrorBody),
    ))]
pub async fn tick_all(State(state): State<ApiState>, _admin: Admin) -> Result<Response, ApiError> {
    let ticks = state
        .ticks()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this server runs no tick engine"))?;
    let status = ticks
        .start_all()
        .await
        .map_err(|err| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(TicksStarted { status })).into_response())
}
