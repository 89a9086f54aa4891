//! The admin API's history under `/api/v1/admin` (admin token or dashboard session):
//! ticks, one tick's story, audited actions, and the QA feedback report.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ApiState;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody, ValidPath, ValidQuery};
use super::params;
use super::views::{ActionListing, FeedbackRecord, RecordedCall};
use crate::feedback::FeedbackReport;
use crate::model::call::CallResult;
use crate::model::tick::{TickRecord, TickStatus, Transcript, Trigger};
use crate::store::{ActionFilter, PageCursor, RatingScope, TickFilter};

/// The page size of a listing without `limit`.
const DEFAULT_PAGE: i64 = 50;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TickQuery {
    /// Persona id or email.
    persona: Option<String>,
    /// running, ok, failed, timeout, abandoned
    status: Option<String>,
    /// schedule, signal, cli, api
    trigger: Option<String>,
    /// Started at or after: a span back (`7d`), RFC 3339 or a date.
    since: Option<String>,
    /// Started before.
    until: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TickPage {
    items: Vec<TickRecord>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The persona a listing is filtered on. A persona that does not exist matches nothing:
/// the filter then selects the nil id, which no persona has.
async fn persona_filter(state: &ApiState, tenant: Uuid, value: Option<String>) -> Result<Option<Uuid>, ApiError> {
    match params::text(value) {
        None => Ok(None),
        Some(id) => Ok(Some(
            state
                .store()
                .find_persona(tenant, &id)
                .await?
                .map_or(Uuid::nil(), |persona| persona.id),
        )),
    }
}

/// The paging and window parameters every listing shares.
struct Page {
    limit: i64,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after: Option<PageCursor>,
}

impl Page {
    fn parse(
        limit: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Self, ApiError> {
        let now = crate::time::now();
        Ok(Self {
            limit: params::integer("limit", limit, params::PAGE_SIZES, DEFAULT_PAGE)?,
            since: params::instant("since", since, now)?,
            until: params::instant("until", until, now)?,
            after: params::decode_cursor(cursor)?.map(|(at, id)| PageCursor { at, id }),
        })
    }

    /// The cursor of the page after `items`, when this page was full.
    fn next_cursor<T>(&self, items: &[T], key: impl Fn(&T) -> (DateTime<Utc>, Uuid)) -> Option<String> {
        (items.len() as i64 == self.limit)
            .then(|| {
                items.last().map(|item| {
                    let (at, id) = key(item);
                    params::encode_cursor(at, id)
                })
            })
            .flatten()
    }
}

/// List ticks, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/api/v1/admin/ticks", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(TickQuery),
    responses(
        (status = 200, description = "a page of ticks", body = TickPage),
        (status = 400, description = "a bad filter, named", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn list_ticks(
    State(state): State<ApiState>,
    admin: Admin,
    ValidQuery(query): ValidQuery<TickQuery>,
) -> Result<Json<TickPage>, ApiError> {
    let page = Page::parse(
        query.limit.as_deref(),
        query.since.as_deref(),
        query.until.as_deref(),
        query.cursor.as_deref(),
    )?;
    let filter = TickFilter {
        persona_id: persona_filter(&state, admin.tenant, query.persona).await?,
        status: params::choice::<TickStatus>("status", query.status.as_deref())?,
        trigger: params::choice::<Trigger>("trigger", query.trigger.as_deref())?,
        since: page.since,
        until: page.until,
        after: page.after,
    };
    let items = state.store().list_ticks(admin.tenant, &filter, page.limit).await?;
    let next_cursor = page.next_cursor(&items, |t| (t.started_at, t.id));
    Ok(Json(TickPage { items, next_cursor }))
}

/// One tick with its story: what the persona wrote, chose, saw and rated.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TickDetail {
    tick: TickRecord,
    /// The transcript (redacted, capped per tick); `null` when none was kept.
    transcript: Option<Transcript>,
    /// Every audited call, in order.
    calls: Vec<RecordedCall>,
    /// The ratings, with their evidence.
    ratings: Vec<FeedbackRecord>,
}

/// One tick: its record, transcript, calls and ratings.
#[utoipa::path(get, path = "/api/v1/admin/ticks/{id}", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(("id" = Uuid, Path, description = "tick id")),
    responses(
        (status = 200, description = "the tick and its story", body = TickDetail),
        (status = 400, description = "the id is not a UUID", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such tick in this tenant", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn get_tick(
    State(state): State<ApiState>,
    admin: Admin,
    ValidPath(id): ValidPath,
) -> Result<Json<TickDetail>, ApiError> {
    let id = params::uuid("id", &id)?;
    let store = state.store();
    let tick = store
        .tick_record(admin.tenant, id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no tick {id}")))?;
    Ok(Json(TickDetail {
        transcript: store.tick_transcript(id).await?,
        calls: store
            .tick_calls(id)
            .await?
            .into_iter()
            .map(RecordedCall::from)
            .collect(),
        ratings: store
            .tick_ratings(id)
            .await?
            .into_iter()
            .map(FeedbackRecord::from)
            .collect(),
        tick,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActionQuery {
    /// Persona id or email.
    persona: Option<String>,
    /// Tick id.
    tick: Option<String>,
    module: Option<String>,
    /// ok, error, deduped, denied
    result: Option<String>,
    /// At or after: a span back (`7d`), RFC 3339 or a date.
    since: Option<String>,
    until: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActionPage {
    items: Vec<ActionListing>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// List audited tool calls, newest first, with filters and cursor pagination.
#[utoipa::path(get, path = "/api/v1/admin/actions", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(ActionQuery),
    responses(
        (status = 200, description = "a page of actions", body = ActionPage),
        (status = 400, description = "a bad filter, named", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn list_actions(
    State(state): State<ApiState>,
    admin: Admin,
    ValidQuery(query): ValidQuery<ActionQuery>,
) -> Result<Json<ActionPage>, ApiError> {
    let page = Page::parse(
        query.limit.as_deref(),
        query.since.as_deref(),
        query.until.as_deref(),
        query.cursor.as_deref(),
    )?;
    let filter = ActionFilter {
        persona_id: persona_filter(&state, admin.tenant, query.persona).await?,
        tick_id: query.tick.as_deref().map(|t| params::uuid("tick", t)).transpose()?,
        module: params::text(query.module),
        result: params::choice::<CallResult>("result", query.result.as_deref())?,
        since: page.since,
        until: page.until,
        after: page.after,
    };
    let items: Vec<ActionListing> = state
        .store()
        .list_calls(admin.tenant, &filter, page.limit)
        .await?
        .into_iter()
        .map(|(call, persona)| ActionListing::of(call, persona))
        .collect();
    let next_cursor = page.next_cursor(&items, |a| (a.created_at, a.id));
    Ok(Json(ActionPage { items, next_cursor }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedbackQuery {
    /// Window start: a span back (`7d`), RFC 3339 or a date (default: feedback.window before until).
    since: Option<String>,
    /// Window end (default: now).
    until: Option<String>,
    module: Option<String>,
    /// Persona id or email.
    persona: Option<String>,
    archetype: Option<String>,
}

/// A report's window from its parameters; a bad one is named (422 when inverted).
pub(super) fn window_of(
    state: &ApiState,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<crate::feedback::Window, ApiError> {
    crate::feedback::window(since, until, state.config().feedback.window.0, crate::time::now()).map_err(|bad| {
        let mut error = ApiError::field(bad.name, bad.message);
        if bad.inverted {
            error.status = StatusCode::UNPROCESSABLE_ENTITY;
        }
        error
    })
}

/// The QA feedback report: per module, persona and archetype, with regressions.
#[utoipa::path(get, path = "/api/v1/admin/feedback", tag = "admin", security(("admin_token" = []), ("dashboard_session" = [])),
    params(FeedbackQuery),
    responses(
        (status = 200, description = "the report over the window, against the previous window", body = FeedbackReport),
        (status = 400, description = "a bad parameter, named", body = ErrorBody),
        (status = 422, description = "since is not before until", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 503, description = "no admin token configured", body = ErrorBody),
    ))]
pub async fn feedback(
    State(state): State<ApiState>,
    admin: Admin,
    ValidQuery(query): ValidQuery<FeedbackQuery>,
) -> Result<Json<FeedbackReport>, ApiError> {
    let rules = &state.config().feedback;
    let window = window_of(&state, query.since.as_deref(), query.until.as_deref())?;
    let scope = RatingScope {
        tenant: admin.tenant,
        from: window.since,
        until: window.until,
        module: params::text(query.module),
        persona_id: persona_filter(&state, admin.tenant, query.persona).await?,
        archetype: params::text(query.archetype),
    };
    Ok(Json(crate::feedback::report(state.store(), &scope, rules).await?))
}
