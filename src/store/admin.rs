//! What the admin API reads and deletes: persona summaries, tick and action listings
//! with filters and keyset pagination, and the hard delete of one persona.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use sqlx::{FromRow as _, Row};

use super::{Result, Store, StoreError, begin_write, with_pool, with_writer};
use crate::model::call::{Call, CallResult};
use crate::model::persona::{Flow, UserKind};
use crate::model::tick::{RatingStatus, TickRecord, TickStatus, Trigger};

/// One line of the persona list.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct PersonaSummary {
    pub id: Uuid,
    pub name: String,
    pub email: Option<String>,
    pub archetype: String,
    #[schema(value_type = Option<String>)]
    pub flow: Option<Flow>,
    pub tick_cadence: String,
    pub time_zone: String,
    pub paused: bool,
    pub last_active_at: Option<DateTime<Utc>>,
    pub next_due_at: Option<DateTime<Utc>>,
    /// Tool calls since the `actions_since` the list was asked for.
    pub recent_actions: i64,
    #[schema(value_type = Option<String>)]
    pub last_tick_status: Option<TickStatus>,
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The latest tick, for a link to its story.
    pub last_tick_id: Option<Uuid>,
    pub average_rating: Option<f64>,
    pub ratings: i64,
    pub alignment_score: Option<f64>,
}

/// Where a page of a newest-first listing continues: strictly after this row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// Filters of the tick listing (all optional) and its page.
#[derive(Clone, Debug, Default)]
pub struct TickFilter {
    pub persona_id: Option<Uuid>,
    pub status: Option<TickStatus>,
    pub trigger: Option<Trigger>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub after: Option<PageCursor>,
}

/// Filters of the action listing (all optional) and its page.
#[derive(Clone, Debug, Default)]
pub struct ActionFilter {
    pub persona_id: Option<Uuid>,
    pub tick_id: Option<Uuid>,
    pub module: Option<String>,
    pub result: Option<CallResult>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub after: Option<PageCursor>,
}

/// What a hard delete removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteReport {
    pub ticks: i64,
    pub actions: i64,
    pub feedback: i64,
    pub interactions: i64,
    pub user_deleted: bool,
}

/// Audited calls of a tenant with filters, newest first.
pub(super) const LIST_ACTIONS: &str =
    "SELECT a.id, a.tenant_id, a.tick_id, a.persona_id, p.name AS persona, a.seq, a.kind, a.tool_name, a.module,
                        a.input_hash, a.result, a.error_message, a.arguments, a.output, a.chaos, a.latency_ms,
                        a.sent, a.recovered, a.refusal, a.created_at, a.space
                 FROM persona_actions a JOIN personas p ON p.id = a.persona_id
                 WHERE a.tenant_id = $1
                   AND ($2 IS NULL OR a.persona_id = $2)
                   AND ($3 IS NULL OR a.tick_id = $3)
                   AND ($4 IS NULL OR a.module = $4)
                   AND ($5 IS NULL OR a.result = $5)
                   AND ($6 IS NULL OR a.created_at >= $6)
                   AND ($7 IS NULL OR a.created_at < $7)
                   AND ($8 IS NULL OR a.created_at < $8 OR (a.created_at = $8 AND a.id < $9))
                 ORDER BY a.created_at DESC, a.id DESC LIMIT $10";

/// One tick of a tenant, as listed.
const TICK_RECORD: &str = "SELECT t.id, t.persona_id, p.name AS persona, t.trigger, t.scheduled_for, t.attempt,
        t.started_at, t.finished_at, t.status, t.error, t.runner_id, t.llm_model,
        t.prompt_version, t.simulator, t.protocol_version, t.target, t.tokens_in, t.tokens_out,
        t.turns, t.tool_calls, t.calls_ok, t.calls_error, t.calls_deduped, t.calls_denied,
        t.calls_unknown, t.calls_not_sent, t.rating_status, t.trace_id, t.space
     FROM persona_ticks t JOIN personas p ON p.id = t.persona_id
     WHERE t.tenant_id = $1 AND t.id = $2";

/// Ticks of a tenant with filters, newest first.
pub(super) const LIST_TICKS: &str =
    "SELECT t.id, t.persona_id, p.name AS persona, t.trigger, t.scheduled_for, t.attempt,
        t.started_at, t.finished_at, t.status, t.error, t.runner_id, t.llm_model,
        t.prompt_version, t.simulator, t.protocol_version, t.target, t.tokens_in, t.tokens_out,
        t.turns, t.tool_calls, t.calls_ok, t.calls_error, t.calls_deduped, t.calls_denied,
        t.calls_unknown, t.calls_not_sent, t.rating_status, t.trace_id, t.space
     FROM persona_ticks t JOIN personas p ON p.id = t.persona_id
     WHERE t.tenant_id = $1
       AND ($2 IS NULL OR t.persona_id = $2)
       AND ($3 IS NULL OR t.status = $3)
       AND ($4 IS NULL OR t.trigger = $4)
       AND ($5 IS NULL OR t.started_at >= $5)
       AND ($6 IS NULL OR t.started_at < $6)
       AND ($7 IS NULL OR t.started_at < $7 OR (t.started_at = $7 AND t.id < $8))
     ORDER BY t.started_at DESC, t.id DESC LIMIT $9";

impl<'r, R: Row> sqlx::FromRow<'r, R> for TickRecord
where
    &'static str: sqlx::ColumnIndex<R>,
    Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Trigger: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    TickStatus: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<RatingStatus>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(TickRecord {
            id: row.try_get("id")?,
            persona_id: row.try_get("persona_id")?,
            persona: row.try_get("persona")?,
            trigger: row.try_get("trigger")?,
            scheduled_for: row.try_get("scheduled_for")?,
            attempt: row.try_get("attempt")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            status: row.try_get("status")?,
            error: row.try_get("error")?,
            runner_id: row.try_get("runner_id")?,
            llm_model: row.try_get("llm_model")?,
            prompt_version: row.try_get("prompt_version")?,
            simulator: row.try_get("simulator")?,
            protocol_version: row.try_get("protocol_version")?,
            trace_id: row.try_get("trace_id")?,
            target: row.try_get("target")?,
            space: crate::model::space::from_stored(row.try_get("space")?),
            tokens_in: row.try_get("tokens_in")?,
            tokens_out: row.try_get("tokens_out")?,
            turns: row.try_get("turns")?,
            tool_calls: row.try_get("tool_calls")?,
            calls_ok: row.try_get("calls_ok")?,
            calls_error: row.try_get("calls_error")?,
            calls_deduped: row.try_get("calls_deduped")?,
            calls_denied: row.try_get("calls_denied")?,
            calls_unknown: row.try_get("calls_unknown")?,
            calls_not_sent: row.try_get("calls_not_sent")?,
            rating_status: row.try_get("rating_status")?,
        })
    }
}

impl Store {
    /// One tick of `tenant` (another tenant's is not found).
    pub async fn tick_record(&self, tenant: Uuid, id: Uuid) -> Result<Option<TickRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(TICK_RECORD).bind(tenant).bind(id).fetch_optional(pool).await?
        }))
    }

    /// Every persona of `tenant` with its activity: calls since `actions_since`, the
    /// latest tick, the average rating over all time and the user's alignment.
    pub async fn persona_summaries(&self, tenant: Uuid, actions_since: DateTime<Utc>) -> Result<Vec<PersonaSummary>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT p.id, p.name, u.email, p.archetype, p.flow, p.tick_cadence, p.time_zone, p.paused,
                        p.last_active_at, p.next_due_at,
                        (SELECT COUNT(*) FROM persona_actions a
                          WHERE a.persona_id = p.id AND a.created_at >= $2) AS recent_actions,
                        (SELECT t.status FROM persona_ticks t WHERE t.persona_id = p.id
                          ORDER BY t.started_at DESC LIMIT 1) AS last_tick_status,
                        (SELECT t.started_at FROM persona_ticks t WHERE t.persona_id = p.id
                          ORDER BY t.started_at DESC LIMIT 1) AS last_tick_at,
                        (SELECT t.id FROM persona_ticks t WHERE t.persona_id = p.id
                          ORDER BY t.started_at DESC LIMIT 1) AS last_tick_id,
                        (SELECT CAST(AVG(f.rating) AS DOUBLE PRECISION) FROM persona_feedback f
                          WHERE f.persona_id = p.id) AS average_rating,
                        (SELECT COUNT(*) FROM persona_feedback f WHERE f.persona_id = p.id) AS ratings,
                        (SELECT pr.alignment_score FROM persona_user_profiles pr
                          WHERE pr.user_id = p.user_id) AS alignment_score
                 FROM personas p LEFT JOIN users u ON u.id = p.user_id
                 WHERE p.tenant_id = $1 ORDER BY p.name, p.id",
            )
            .bind(tenant)
            .bind(actions_since)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Ticks of `tenant` matching `filter`, newest first, at most `limit`.
    pub async fn list_ticks(&self, tenant: Uuid, filter: &TickFilter, limit: i64) -> Result<Vec<TickRecord>> {
        let (after_at, after_id) = filter.after.map(|c| (c.at, c.id)).unzip();
        Ok(with_pool!(self, pool => {
            sqlx::query_as(LIST_TICKS)
            .bind(tenant)
            .bind(filter.persona_id)
            .bind(filter.status)
            .bind(filter.trigger)
            .bind(filter.since)
            .bind(filter.until)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Audited calls of `tenant` matching `filter`, newest first, at most `limit`, each
    /// with the name of its persona.
    pub async fn list_calls(&self, tenant: Uuid, filter: &ActionFilter, limit: i64) -> Result<Vec<(Call, String)>> {
        let (after_at, after_id) = filter.after.map(|c| (c.at, c.id)).unzip();
        Ok(with_pool!(self, pool => {
            sqlx::query(LIST_ACTIONS)
            .bind(tenant)
            .bind(filter.persona_id)
            .bind(filter.tick_id)
            .bind(filter.module.as_deref())
            .bind(filter.result)
            .bind(filter.since)
            .bind(filter.until)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((Call::from_row(row)?, row.try_get("persona")?)))
            .collect::<sqlx::Result<Vec<_>>>()?
        }))
    }

    /// The kind of the user with `email` in `tenant`, if there is one.
    pub async fn user_kind(&self, tenant: Uuid, email: &str) -> Result<Option<UserKind>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar("SELECT kind FROM users WHERE tenant_id = $1 AND email = $2")
                .bind(tenant)
                .bind(crate::model::persona::normalize_email(email))
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Deletes the persona `id` of `tenant` with its ticks, actions, feedback, and its
    /// user with that user's profile and interactions. Refuses (`Conflict`, nothing
    /// deleted) when the persona's user is not `kind = persona` or it has a running tick;
    /// `NotFound` when there is
    /// no such persona in the tenant.
    pub async fn delete_persona(&self, tenant: Uuid, id: Uuid) -> Result<DeleteReport> {
        with_writer!(self, pool => {
            let mut tx = begin_write!(pool);
            let found: Option<(Option<Uuid>, Option<UserKind>, Option<String>)> = sqlx::query_as(
                "SELECT p.user_id, u.kind, u.email FROM personas p LEFT JOIN users u ON u.id = p.user_id
                 WHERE p.tenant_id = $1 AND p.id = $2",
            )
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((user_id, kind, email)) = found else {
                return Err(StoreError::NotFound(format!("persona {id}")));
            };
            if let Some(kind) = kind.filter(|k| *k != UserKind::Persona) {
                return Err(StoreError::Conflict(format!(
                    "the user {} is a {kind} account, not a persona; it is never deleted here",
                    email.unwrap_or_default()
                )));
            }
            // A running tick would go on calling the product with no row to record it in.
            let running: Option<Uuid> =
                sqlx::query_scalar("SELECT id FROM persona_ticks WHERE persona_id = $1 AND status = 'running'")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(tick) = running {
                return Err(StoreError::Conflict(format!(
                    "persona {id} has a running tick ({tick}); pause it and delete it once the tick has finished"
                )));
            }
            let (ticks, actions, feedback, interactions): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM persona_ticks WHERE persona_id = $1),
                        (SELECT COUNT(*) FROM persona_actions WHERE persona_id = $1),
                        (SELECT COUNT(*) FROM persona_feedback WHERE persona_id = $1),
                        (SELECT COUNT(*) FROM persona_interactions WHERE user_id = $2)",
            )
            .bind(id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
            // Ticks, actions and feedback go by cascade; humans assigned to this persona
            // keep their profiles with the assignment cleared.
            sqlx::query("DELETE FROM personas WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let user_deleted = match user_id {
                Some(user_id) => {
                    sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2 AND kind = 'persona'")
                        .bind(tenant)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1
                }
                None => false,
            };
            tx.commit().await?;
            Ok(DeleteReport {
                ticks,
                actions,
                feedback,
                interactions,
                user_deleted,
            })
        })
    }
}
