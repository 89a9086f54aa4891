//! Ticks and what happens inside them: the claim (at most one running tick per persona,
//! enforced by a partial unique index), the per-call audit, the ratings, the finish, and
//! the expiry of leases left behind by a crashed runner.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Result, Store, StoreError, begin_write, with_pool};
use crate::time::now;

text_enum! {
    /// What started a tick.
    pub enum TickTrigger { Schedule => "schedule", Signal => "signal", Cli => "cli", Api => "api" }
}
text_enum! {
    pub enum TickStatus {
        Running => "running",
        Ok => "ok",
        Failed => "failed",
        Timeout => "timeout",
        Abandoned => "abandoned",
    }
}
text_enum! {
    /// Whether a tick's self-rating was usable.
    pub enum RatingStatus { Valid => "valid", Invalid => "invalid", Skipped => "skipped" }
}

text_enum! {
    /// The outcome of one tool call as audited.
    pub enum ActionResult { Ok => "ok", Error => "error", Deduped => "deduped", Denied => "denied" }
}

/// A tick to claim.
#[derive(Clone, Debug)]
pub struct NewTick {
    pub tenant_id: Uuid,
    pub persona_id: Uuid,
    pub trigger: TickTrigger,
    /// The schedule slot this tick serves (`None` for one-off ticks).
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub runner_id: String,
    pub lease: std::time::Duration,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Tick {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub persona_id: Uuid,
    pub trigger: TickTrigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: TickStatus,
    pub error: Option<String>,
    pub runner_id: String,
    pub lease_expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TickRow {
    id: Uuid,
    tenant_id: Uuid,
    persona_id: Uuid,
    trigger: String,
    scheduled_for: Option<DateTime<Utc>>,
    attempt: i32,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    status: String,
    error: Option<String>,
    runner_id: String,
    lease_expires_at: DateTime<Utc>,
}

impl TryFrom<TickRow> for Tick {
    type Error = StoreError;
    fn try_from(row: TickRow) -> Result<Self> {
        let corrupt = |message| StoreError::Corrupt {
            table: "persona_ticks",
            message,
        };
        Ok(Tick {
            id: row.id,
            tenant_id: row.tenant_id,
            persona_id: row.persona_id,
            trigger: row.trigger.parse().map_err(corrupt)?,
            scheduled_for: row.scheduled_for,
            attempt: row.attempt,
            started_at: row.started_at,
            finished_at: row.finished_at,
            status: row.status.parse().map_err(corrupt)?,
            error: row.error,
            runner_id: row.runner_id,
            lease_expires_at: row.lease_expires_at,
        })
    }
}

/// The outcome of trying to claim a schedule slot.
#[derive(Clone, Debug, PartialEq)]
pub enum SlotClaim {
    /// This runner runs the slot (as the returned tick, with its attempt number).
    Claimed(Tick),
    /// Nothing to do: the slot succeeded already, used up its attempts, or the persona
    /// is paused.
    Settled,
    /// Someone else is running it (or this persona) right now.
    Busy,
}

/// One audited tool call.
#[derive(Clone, Debug)]
pub struct NewAction {
    pub tenant_id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub seq: i32,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    pub result: ActionResult,
    pub error_message: Option<String>,
    pub output: Option<String>,
    pub chaos: bool,
    pub latency_ms: Option<i32>,
}

/// One rating of one module at the end of a tick, with that module's evidence.
#[derive(Clone, Debug)]
pub struct NewFeedback {
    pub tenant_id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub module: String,
    pub rating: i32,
    pub notes: Option<String>,
    pub evidence_calls: i32,
    pub evidence_errors: i32,
    pub evidence_mean_latency_ms: Option<f64>,
}

/// How a tick ended.
#[derive(Clone, Debug)]
pub struct TickFinish {
    pub status: TickStatus,
    pub error: Option<String>,
    pub turns: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub llm_model: Option<String>,
    /// Hash of the prompt templates the tick used.
    pub prompt_version: Option<String>,
    pub rating_status: Option<RatingStatus>,
    /// The model's raw rating answer, kept when it could not be used.
    pub rating_raw: Option<String>,
}

impl TickFinish {
    /// A finish with only a status and an error (counters zero, nothing rated).
    pub fn status(status: TickStatus, error: Option<String>) -> Self {
        Self {
            status,
            error,
            turns: 0,
            tokens_in: 0,
            tokens_out: 0,
            llm_model: None,
            prompt_version: None,
            rating_status: None,
            rating_raw: None,
        }
    }
}

/// An audited call as read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ActionRecord {
    pub seq: i32,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    pub result: String,
    pub error_message: Option<String>,
    pub chaos: bool,
    pub latency_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// A rating as read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FeedbackRecord {
    pub module: String,
    pub rating: i32,
    pub notes: Option<String>,
    pub evidence_calls: i32,
    pub evidence_errors: i32,
    pub evidence_mean_latency_ms: Option<f64>,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`TickRow`].
macro_rules! tick_columns {
    () => {
        "id, tenant_id, persona_id, trigger, scheduled_for, attempt, started_at,
         finished_at, status, error, runner_id, lease_expires_at"
    };
}

macro_rules! select_tick {
    ($tail:literal) => {
        concat!("SELECT ", tick_columns!(), " FROM persona_ticks ", $tail)
    };
}

/// The columns of [`ActionRecord`] and [`FeedbackRecord`], for their queries.
macro_rules! select_actions {
    ($tail:literal) => {
        concat!(
            "SELECT seq, tool_name, module, input_hash, result, error_message, chaos, latency_ms, created_at
             FROM persona_actions ",
            $tail
        )
    };
}

macro_rules! select_feedback {
    ($tail:literal) => {
        concat!(
            "SELECT module, rating, notes, evidence_calls, evidence_errors, evidence_mean_latency_ms, created_at
             FROM persona_feedback ",
            $tail
        )
    };
}

impl Store {
    /// Inserts a `running` tick with a lease. `Conflict` when the persona already has a
    /// running tick or this slot attempt was claimed (by this or another replica).
    pub async fn claim_tick(&self, new: &NewTick) -> Result<Tick> {
        let started_at = now();
        let tick = Tick {
            id: Uuid::new_v4(),
            tenant_id: new.tenant_id,
            persona_id: new.persona_id,
            trigger: new.trigger,
            scheduled_for: new.scheduled_for,
            attempt: new.attempt,
            started_at,
            finished_at: None,
            status: TickStatus::Running,
            error: None,
            runner_id: new.runner_id.clone(),
            lease_expires_at: crate::time::after(started_at, new.lease),
        };
        let inserted = with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO persona_ticks (id, tenant_id, persona_id, trigger, scheduled_for,
                    attempt, started_at, status, runner_id, lease_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9)",
            )
            .bind(tick.id)
            .bind(tick.tenant_id)
            .bind(tick.persona_id)
            .bind(tick.trigger.as_str())
            .bind(tick.scheduled_for)
            .bind(tick.attempt)
            .bind(tick.started_at)
            .bind(&tick.runner_id)
            .bind(tick.lease_expires_at)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });
        match inserted.map_err(StoreError::from) {
            Ok(_) => Ok(tick),
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
                "persona {} already has a running tick or this slot was claimed",
                new.persona_id
            ))),
            Err(other) => Err(other),
        }
    }

    pub async fn get_tick(&self, id: Uuid) -> Result<Option<Tick>> {
        let row: Option<TickRow> = with_pool!(self, pool => {
            sqlx::query_as(select_tick!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Tick::try_from).transpose()
    }

    /// Writes one audited call. Idempotent per `(tick, seq)`: a retried write of the same
    /// call is ignored rather than duplicated.
    pub async fn record_action(&self, action: &NewAction) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO persona_actions (id, tenant_id, tick_id, persona_id, seq, tool_name,
                    module, input_hash, result, error_message, output, chaos, latency_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (tick_id, seq) DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(action.tenant_id)
            .bind(action.tick_id)
            .bind(action.persona_id)
            .bind(action.seq)
            .bind(&action.tool_name)
            .bind(&action.module)
            .bind(&action.input_hash)
            .bind(action.result.as_str())
            .bind(action.error_message.as_deref())
            .bind(action.output.as_deref())
            .bind(action.chaos)
            .bind(action.latency_ms)
            .bind(now())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Stores one rating. The database refuses ratings outside 1..=5 and a second rating
    /// of the same module in the same tick.
    pub async fn record_feedback(&self, feedback: &NewFeedback) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO persona_feedback (id, tenant_id, tick_id, persona_id, module, rating,
                    notes, evidence_calls, evidence_errors, evidence_mean_latency_ms, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(Uuid::new_v4())
            .bind(feedback.tenant_id)
            .bind(feedback.tick_id)
            .bind(feedback.persona_id)
            .bind(&feedback.module)
            .bind(feedback.rating)
            .bind(feedback.notes.as_deref())
            .bind(feedback.evidence_calls)
            .bind(feedback.evidence_errors)
            .bind(feedback.evidence_mean_latency_ms)
            .bind(now())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Ends a running tick and stamps the persona's `last_active_at`. Counters are derived
    /// from the audited actions so they cannot disagree with them.
    pub async fn finish_tick(&self, tick_id: Uuid, finish: &TickFinish) -> Result<Tick> {
        if finish.status == TickStatus::Running {
            return Err(StoreError::Constraint("a tick cannot finish as `running`".into()));
        }
        let finished_at = now();
        let row: Option<TickRow> = with_pool!(self, pool => {
            let mut tx = begin_write!(pool);
            // The counters come from one pass over the audited actions, in the same
            // statement that finishes the tick; RETURNING saves reading it back.
            let row: Option<TickRow> = sqlx::query_as(concat!(
                "WITH counted AS (
                    SELECT COUNT(*) AS total,
                           COALESCE(SUM(CASE WHEN result = 'ok' THEN 1 ELSE 0 END), 0) AS ok,
                           COALESCE(SUM(CASE WHEN result = 'error' THEN 1 ELSE 0 END), 0) AS error,
                           COALESCE(SUM(CASE WHEN result = 'deduped' THEN 1 ELSE 0 END), 0) AS deduped,
                           COALESCE(SUM(CASE WHEN result = 'denied' THEN 1 ELSE 0 END), 0) AS denied
                    FROM persona_actions WHERE tick_id = $1)
                 UPDATE persona_ticks SET status = $2, error = $3, finished_at = $4,
                    turns = $5, tokens_in = $6, tokens_out = $7, llm_model = $8, prompt_version = $9,
                    rating_status = $10, rating_raw = $11,
                    tool_calls = (SELECT total FROM counted),
                    calls_ok = (SELECT ok FROM counted),
                    calls_error = (SELECT error FROM counted),
                    calls_deduped = (SELECT deduped FROM counted),
                    calls_denied = (SELECT denied FROM counted)
                 WHERE id = $1 AND status = 'running'
                 RETURNING ",
                tick_columns!()
            ))
            .bind(tick_id)
            .bind(finish.status.as_str())
            .bind(finish.error.as_deref())
            .bind(finished_at)
            .bind(finish.turns)
            .bind(finish.tokens_in)
            .bind(finish.tokens_out)
            .bind(finish.llm_model.as_deref())
            .bind(finish.prompt_version.as_deref())
            .bind(finish.rating_status.map(RatingStatus::as_str))
            .bind(finish.rating_raw.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = &row {
                sqlx::query("UPDATE personas SET last_active_at = $2 WHERE id = $1")
                    .bind(row.persona_id)
                    .bind(finished_at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            row
        });
        row.ok_or_else(|| StoreError::Conflict(format!("tick {tick_id} is not running")))?
            .try_into()
    }

    /// Claims the next attempt of a schedule slot, atomically across replicas: refused when
    /// the slot has a running or successful tick, has used `max_attempts`, or the persona is
    /// paused. Two replicas racing for the same attempt collide on the unique
    /// `(persona, slot, attempt)` index: one wins, the other gets `Busy`.
    pub async fn claim_slot(&self, new: &NewTick, max_attempts: i32) -> Result<SlotClaim> {
        let slot = new
            .scheduled_for
            .ok_or_else(|| StoreError::Constraint("a slot claim needs scheduled_for".into()))?;
        let started_at = now();
        let lease_expires_at = crate::time::after(started_at, new.lease);
        let id = Uuid::new_v4();
        let attempt: std::result::Result<Option<i32>, sqlx::Error> = with_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO persona_ticks (id, tenant_id, persona_id, trigger, scheduled_for, attempt,
                    started_at, status, runner_id, lease_expires_at)
                 SELECT $1, $2, $3, $4, $5, COALESCE(MAX(t.attempt), 0) + 1, $6, 'running', $7, $8
                 FROM persona_ticks t WHERE t.persona_id = $3 AND t.scheduled_for = $5
                 HAVING COALESCE(SUM(CASE WHEN t.status IN ('running', 'ok') THEN 1 ELSE 0 END), 0) = 0
                    AND COUNT(*) < $9
                    AND NOT (SELECT p.paused FROM personas p WHERE p.id = $3)
                 RETURNING attempt",
            )
            .bind(id)
            .bind(new.tenant_id)
            .bind(new.persona_id)
            .bind(new.trigger.as_str())
            .bind(slot)
            .bind(started_at)
            .bind(&new.runner_id)
            .bind(lease_expires_at)
            .bind(max_attempts)
            .fetch_optional(pool)
            .await
        });
        match attempt.map_err(StoreError::from) {
            Ok(Some(attempt)) => Ok(SlotClaim::Claimed(Tick {
                id,
                tenant_id: new.tenant_id,
                persona_id: new.persona_id,
                trigger: new.trigger,
                scheduled_for: Some(slot),
                attempt,
                started_at,
                finished_at: None,
                status: TickStatus::Running,
                error: None,
                runner_id: new.runner_id.clone(),
                lease_expires_at,
            })),
            Ok(None) => Ok(SlotClaim::Settled),
            Err(StoreError::Conflict(_)) => Ok(SlotClaim::Busy),
            Err(other) => Err(other),
        }
    }

    /// Keeps the persona's next slot, so a restart (or another replica) knows it.
    pub async fn set_next_due(&self, persona_id: Uuid, at: Option<DateTime<Utc>>) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE personas SET next_due_at = $2 WHERE id = $1")
                .bind(persona_id)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Scheduled ticks whose slot lies in `[from, to]`, by slot.
    pub async fn schedule_ticks(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Tick>> {
        let rows: Vec<TickRow> = with_pool!(self, pool => {
            sqlx::query_as(select_tick!("WHERE scheduled_for >= $1 AND scheduled_for <= $2 ORDER BY scheduled_for, persona_id, attempt"))
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Tick::try_from).collect()
    }

    /// Extends the lease of a running tick. `false` when it is no longer running (it
    /// finished, or was abandoned meanwhile).
    pub async fn renew_lease(&self, tick_id: Uuid, until: DateTime<Utc>) -> Result<bool> {
        let updated = with_pool!(self, pool => {
            sqlx::query("UPDATE persona_ticks SET lease_expires_at = $2 WHERE id = $1 AND status = 'running'")
                .bind(tick_id)
                .bind(until)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    }

    /// The audited calls of a tick, in order.
    pub async fn tick_actions(&self, tick_id: Uuid) -> Result<Vec<ActionRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(select_actions!("WHERE tick_id = $1 ORDER BY seq"))
            .bind(tick_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The ratings of a tick, by module.
    pub async fn tick_feedback(&self, tick_id: Uuid) -> Result<Vec<FeedbackRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(select_feedback!("WHERE tick_id = $1 ORDER BY module"))
            .bind(tick_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The persona's latest calls, newest first (for the prompt's story so far).
    pub async fn recent_actions(&self, persona_id: Uuid, limit: i64) -> Result<Vec<ActionRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(select_actions!("WHERE persona_id = $1 ORDER BY created_at DESC, seq DESC LIMIT $2"))
            .bind(persona_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The persona's latest ratings, newest first.
    pub async fn recent_feedback(&self, persona_id: Uuid, limit: i64) -> Result<Vec<FeedbackRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(select_feedback!("WHERE persona_id = $1 ORDER BY created_at DESC LIMIT $2"))
            .bind(persona_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The output of the persona's latest successful call with `input_hash` since
    /// `since`, for deduplication across ticks.
    pub async fn recent_output(
        &self,
        persona_id: Uuid,
        input_hash: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT output FROM persona_actions
                 WHERE persona_id = $1 AND input_hash = $2 AND created_at >= $3 AND result = 'ok'
                 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(persona_id)
            .bind(input_hash)
            .bind(since)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(output,)| output.unwrap_or_default()))
    }

    /// How many ticks the persona has had (seeds the offline driver's choices).
    pub async fn count_ticks(&self, persona_id: Uuid) -> Result<i64> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM persona_ticks WHERE persona_id = $1")
                .bind(persona_id)
                .fetch_one(pool)
                .await?
        }))
    }

    /// Marks running ticks whose lease expired before `at` as `abandoned` (their runner
    /// died), freeing their personas. Returns how many were abandoned.
    pub async fn abandon_expired_ticks(&self, at: DateTime<Utc>) -> Result<u64> {
        Ok(with_pool!(self, pool => {
            sqlx::query(
                "UPDATE persona_ticks SET status = 'abandoned', finished_at = $1,
                    error = 'lease expired: the runner stopped renewing it (crashed or cut off)'
                 WHERE status = 'running' AND lease_expires_at < $1",
            )
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }
}
