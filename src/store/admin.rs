//! What the admin API reads and deletes: persona summaries, tick and action listings
//! with filters and keyset pagination, and the hard delete of one persona.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Result, Store, StoreError, begin_write, with_pool, with_writer};

/// One line of the persona list.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct PersonaSummary {
    pub id: Uuid,
    pub name: String,
    pub email: Option<String>,
    pub archetype: String,
    pub flow: Option<String>,
    pub tick_cadence: String,
    pub time_zone: String,
    pub paused: bool,
    pub last_active_at: Option<DateTime<Utc>>,
    pub next_due_at: Option<DateTime<Utc>>,
    /// Tool calls since the `actions_since` the list was asked for.
    pub recent_actions: i64,
    pub last_tick_status: Option<String>,
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The latest tick, for a link to its story.
    pub last_tick_id: Option<Uuid>,
    pub average_rating: Option<f64>,
    pub ratings: i64,
    pub alignment_score: Option<f64>,
}

/// A tick as listed: its outcome and counters.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct TickRecord {
    pub id: Uuid,
    pub persona_id: Uuid,
    pub persona: String,
    pub trigger: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub error: Option<String>,
    pub runner_id: String,
    pub llm_model: Option<String>,
    pub prompt_version: Option<String>,
    /// Driver, model, prompt template hash and temperature: what produced the ratings.
    pub simulator: Option<String>,
    /// The MCP protocol version the gateway agreed to.
    pub protocol_version: Option<String>,
    /// The target (product) it ran against; `null`: the default target.
    pub target: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub turns: i32,
    pub tool_calls: i32,
    pub calls_ok: i32,
    pub calls_error: i32,
    pub calls_deduped: i32,
    pub calls_denied: i32,
    pub calls_unknown: i32,
    pub calls_not_sent: i32,
    pub rating_status: Option<String>,
}

/// An audited call as listed.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct ActionListing {
    pub id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub persona: String,
    pub seq: i32,
    /// `call`, `elicitation` or `sampling`.
    pub kind: String,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    pub result: String,
    pub error_message: Option<String>,
    pub chaos: bool,
    pub latency_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
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
    pub status: Option<String>,
    pub trigger: Option<String>,
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
    pub result: Option<String>,
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

macro_rules! select_tick_record {
    ($tail:literal) => {
        concat!(
            "SELECT t.id, t.persona_id, p.name AS persona, t.trigger, t.scheduled_for, t.attempt,
                    t.started_at, t.finished_at, t.status, t.error, t.runner_id, t.llm_model,
                    t.prompt_version, t.simulator, t.protocol_version, t.target, t.tokens_in, t.tokens_out,
                    t.turns, t.tool_calls, t.calls_ok, t.calls_error, t.calls_deduped, t.calls_denied,
                    t.calls_unknown, t.calls_not_sent, t.rating_status
             FROM persona_ticks t JOIN personas p ON p.id = t.persona_id ",
            $tail
        )
    };
}

/// Audited calls of a tenant with filters, newest first.
pub(super) const LIST_ACTIONS: &str =
    "SELECT a.id, a.tick_id, a.persona_id, p.name AS persona, a.seq, a.kind, a.tool_name, a.module,
                        a.input_hash, a.result, a.error_message, a.chaos, a.latency_ms, a.created_at
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

/// Ticks of a tenant with filters, newest first.
pub(super) const LIST_TICKS: &str = select_tick_record!(
    "WHERE t.tenant_id = $1
       AND ($2 IS NULL OR t.persona_id = $2)
       AND ($3 IS NULL OR t.status = $3)
       AND ($4 IS NULL OR t.trigger = $4)
       AND ($5 IS NULL OR t.started_at >= $5)
       AND ($6 IS NULL OR t.started_at < $6)
       AND ($7 IS NULL OR t.started_at < $7 OR (t.started_at = $7 AND t.id < $8))
     ORDER BY t.started_at DESC, t.id DESC LIMIT $9"
);

const TICK_RECORD: &str = select_tick_record!("WHERE t.tenant_id = $1 AND t.id = $2");

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
            .bind(filter.status.as_deref())
            .bind(filter.trigger.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Audited calls of `tenant` matching `filter`, newest first, at most `limit`.
    pub async fn list_actions(&self, tenant: Uuid, filter: &ActionFilter, limit: i64) -> Result<Vec<ActionListing>> {
        let (after_at, after_id) = filter.after.map(|c| (c.at, c.id)).unzip();
        Ok(with_pool!(self, pool => {
            sqlx::query_as(
                LIST_ACTIONS,
            )
            .bind(tenant)
            .bind(filter.persona_id)
            .bind(filter.tick_id)
            .bind(filter.module.as_deref())
            .bind(filter.result.as_deref())
            .bind(filter.since)
            .bind(filter.until)
            .bind(after_at)
            .bind(after_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The kind of the user with `email` in `tenant`, if there is one.
    pub async fn user_kind(&self, tenant: Uuid, email: &str) -> Result<Option<String>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar("SELECT kind FROM users WHERE tenant_id = $1 AND email = $2")
                .bind(tenant)
                .bind(crate::persona::normalize_email(email))
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
            let found: Option<(Option<Uuid>, Option<String>, Option<String>)> = sqlx::query_as(
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
            if let Some(kind) = kind.as_deref().filter(|k| *k != "persona") {
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
