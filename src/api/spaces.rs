//! The per-space QA view over HTTP: each shared space of the tenant with its members'
//! interactions, conflicts, denials and ratings (the same builder as `feedback --spaces`
//! and the dashboard's section).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::ApiState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody, ValidQuery};
use crate::feedback::spaces::SpaceView;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SpacesQuery {
    /// Window start: a span back (`7d`), RFC 3339 or a date (default: feedback.window before until).
    since: Option<String>,
    /// Window end (default: now).
    until: Option<String>,
}

/// The tenant's shared spaces over the window, each with what its members did together.
#[utoipa::path(get, path = "/api/v1/admin/spaces", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(SpacesQuery),
    responses(
        (status = 200, description = "every shared space: ticks, cross-member interactions, conflicts, denials, ratings per member, low ratings with the partners' ticks", body = Vec<SpaceView>),
        (status = 400, description = "a bad parameter, named", body = ErrorBody),
        (status = 422, description = "since is not before until", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<ApiState>,
    admin: Admin,
    ValidQuery(query): ValidQuery<SpacesQuery>,
) -> Result<Json<Vec<SpaceView>>, ApiError> {
    let window = super::history::window_of(&state, query.since.as_deref(), query.until.as_deref())?;
    Ok(Json(
        crate::feedback::spaces::space_views(state.store(), admin.tenant, &window).await?,
    ))
}
