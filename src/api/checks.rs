//! Goals checked through the admin API: start a check run (`POST` → 202 with its id, the
//! trials running in the daemon's tick pool), follow it (`GET /checks/{id}`: the run, each
//! goal's pass@1 / pass^k / flaky, every verdict), and list the latest verdicts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody, ValidJson, ValidPath, ValidQuery};
use super::params;
use crate::check::{CheckError, Report, Selection};
use crate::model::goal::Verdict;

/// What to check; a field left out takes its `[checks]` default.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Goal names (empty or absent: every goal of the selected personas).
    #[serde(default)]
    goals: Vec<String>,
    /// Personas by id or email (empty or absent: every runnable persona with goals).
    #[serde(default)]
    personas: Vec<String>,
    /// Trials per goal and persona, 1–100 (default: checks.trials).
    #[serde(default, deserialize_with = "count")]
    #[schema(minimum = 1, maximum = 100)]
    trials: Option<u32>,
    /// Trials that must pass, at most `trials` (default: checks.min_pass; 0 = all).
    #[serde(default, deserialize_with = "count")]
    #[schema(minimum = 0, maximum = 100)]
    min_pass: Option<u32>,
}

/// A count in a request body: `3` or `3.0`; `null` is "not given".
fn count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let Some(value) = Option::<serde_json::Value>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = crate::model::goal::whole(value).map_err(serde::de::Error::custom)?;
    u32::try_from(whole)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{whole} is too large")))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckStarted {
    pub id: Uuid,
    /// Always `running`: follow the run with `GET /api/v1/admin/checks/{id}`.
    pub status: String,
}

/// The most trials one request may ask for, per goal and persona.
const MAX_TRIALS: u32 = 100;

/// Run goals as check ticks, K trials each, in the background.
#[utoipa::path(post, path = "/api/v1/admin/checks", tag = "admin", security(("admin_token" = [])),
    request_body = CheckRequest,
    responses(
        (status = 202, description = "the check run was recorded and runs in the background", body = CheckStarted),
        (status = 400, description = "the body is not a check request, named", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 413, description = "the body is larger than api.max_body_bytes", body = ErrorBody),
        (status = 415, description = "the body is not JSON (Content-Type: application/json)", body = ErrorBody),
        (status = 422, description = "an unknown goal or persona, trials out of range, or no persona with goals", body = ErrorBody),
        (status = 503, description = "no admin token configured, or no tick engine", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<ApiState>,
    admin: Admin,
    ValidJson(request): ValidJson<CheckRequest>,
) -> Result<Response, ApiError> {
    let config = state.config();
    let selection = Selection {
        goals: request.goals,
        personas: request.personas,
        trials: request.trials.unwrap_or(config.checks.trials),
        min_pass: request.min_pass.unwrap_or(config.checks.min_pass),
    };
    if selection.trials > MAX_TRIALS || selection.min_pass > MAX_TRIALS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("trials and min_pass must be at most {MAX_TRIALS}"),
        ));
    }
    let ticks = state
        .ticks()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "this server runs no tick engine"))?;
    let id = ticks
        .start_check(admin.tenant, crate::model::tick::Trigger::Api, selection)
        .await
        .map_err(|err| match err {
            err if err.is_usage() || matches!(err, CheckError::NoGoals) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
            }
            other => {
                tracing::error!(err = %other, "starting a check run failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the check could not start: {other}"),
                )
            }
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CheckStarted {
            id,
            status: "running".into(),
        }),
    )
        .into_response())
}

/// One check run: its status, each goal's pass@1, pass^k and flakiness, and its verdicts.
#[utoipa::path(get, path = "/api/v1/admin/checks/{id}", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(("id" = Uuid, Path, description = "the check run's id")),
    responses(
        (status = 200, description = "the run as it stands", body = Report),
        (status = 400, description = "the id is not a UUID", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such check run in this tenant", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<ApiState>,
    admin: Admin,
    ValidPath(id): ValidPath,
) -> Result<Json<Report>, ApiError> {
    let id = params::uuid("id", &id)?;
    crate::check::report(state.store(), admin.tenant, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no check run {id}")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerdictQuery {
    /// Persona id or email.
    persona: Option<String>,
    /// Goal name.
    goal: Option<String>,
    /// How many, 1–500 (default 50).
    limit: Option<String>,
}

/// The latest verdicts, newest first.
#[utoipa::path(get, path = "/api/v1/admin/verdicts", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(VerdictQuery),
    responses(
        (status = 200, description = "verdicts, newest first", body = Vec<Verdict>),
        (status = 400, description = "a bad filter, named", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn verdicts(
    State(state): State<ApiState>,
    admin: Admin,
    ValidQuery(query): ValidQuery<VerdictQuery>,
) -> Result<Json<Vec<Verdict>>, ApiError> {
    let limit = params::integer("limit", query.limit.as_deref(), params::PAGE_SIZES, 50)?;
    let persona = match params::text(query.persona) {
        None => None,
        Some(id) => Some(
            state
                .store()
                .find_persona(admin.tenant, &id)
                .await?
                .map_or(Uuid::nil(), |persona| persona.id),
        ),
    };
    let goal = params::text(query.goal);
    Ok(Json(
        state
            .store()
            .verdicts(admin.tenant, persona, goal.as_deref(), limit)
            .await?,
    ))
}
