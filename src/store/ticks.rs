//! Ticks and what happens inside them: the claim (at most one running tick per persona,
//! enforced by a partial unique index), the per-call audit, the ratings, the finish, and
//! the expiry of leases left behind by a crashed runner.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{Result, Store, StoreError, begin_write, with_pool, with_writer};
use crate::model::tick::{CallCounts, NewTick, Tick, TickStatus, Transcript, Trigger};
use crate::time::now;

impl<'r, R: Row> sqlx::FromRow<'r, R> for Tick
where
    &'static str: sqlx::ColumnIndex<R>,
    Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Trigger: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    TickStatus: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Tick {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            persona_id: row.try_get("persona_id")?,
            trigger: row.try_get("trigger")?,
            scheduled_for: row.try_get("scheduled_for")?,
            attempt: row.try_get("attempt")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            status: row.try_get("status")?,
            error: row.try_get("error")?,
            runner_id: row.try_get("runner_id")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            target: row.try_get("target")?,
            space: crate::model::space::from_stored(row.try_get("space")?),
        })
    }
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for CallCounts
where
    &'static str: sqlx::ColumnIndex<R>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(CallCounts {
            tool_calls: row.try_get("tool_calls")?,
            calls_ok: row.try_get("calls_ok")?,
            calls_error: row.try_get("calls_error")?,
            calls_deduped: row.try_get("calls_deduped")?,
            calls_denied: row.try_get("calls_denied")?,
            calls_unknown: row.try_get("calls_unknown")?,
            calls_not_sent: row.try_get("calls_not_sent")?,
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
    /// Someone else is running this persona right now (if that runner dies, its lease
    /// expires and the slot is claimed again).
    Busy,
}

/// Claims the next attempt of a slot in one statement (see `claim_slot`).
pub(super) const CLAIM_SLOT: &str =
    "INSERT INTO persona_ticks (id, tenant_id, persona_id, trigger, scheduled_for, attempt,
                        started_at, status, runner_id, lease_expires_at, target, space)
                     SELECT $1, $2, $3, $4, $5, COALESCE(MAX(t.attempt), 0) + 1, $6, 'running', $7, $8, $10, $11
                     FROM persona_ticks t WHERE t.persona_id = $3 AND t.scheduled_for = $5
                     HAVING COALESCE(SUM(CASE WHEN t.status IN ('running', 'ok', 'skipped') THEN 1 ELSE 0 END), 0) = 0
                        AND COUNT(*) < $9
                        AND NOT (SELECT p.paused FROM personas p WHERE p.id = $3)
                     RETURNING attempt";

/// Finishes a running tick (see `Store::end_tick`); its counters follow with
/// [`DERIVE_COUNTS`].
pub(super) const FINISH_TICK: &str = "UPDATE persona_ticks SET status = $2, error = $3, finished_at = $4,
        turns = $5, tokens_in = $6, tokens_out = $7, llm_model = $8, prompt_version = $9,
        rating_status = $10, rating_raw = $11, simulator = $12, protocol_version = $13, rating_attempts = $14,
        trace_id = $15
     WHERE id = $1 AND status = 'running'
     RETURNING id, tenant_id, persona_id, trigger, scheduled_for, attempt, started_at,
        finished_at, status, error, runner_id, lease_expires_at, target, space";

/// A finished tick's counters, derived from its audited calls (one pass over its few rows;
/// a call still `pending` was made `unknown` first): the counters are never counted apart.
pub(super) const DERIVE_COUNTS: &str = "UPDATE persona_ticks SET
        (tool_calls, calls_ok, calls_error, calls_deduped, calls_denied, calls_unknown, calls_not_sent) =
        (SELECT COUNT(*),
                COALESCE(SUM(CASE WHEN a.result = 'ok' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN a.result = 'error' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN a.result = 'deduped' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN a.result = 'denied' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN a.result = 'unknown' THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN a.result = 'not_sent' THEN 1 ELSE 0 END), 0)
           FROM persona_actions a WHERE a.tick_id = $1 AND a.kind = 'call')
     WHERE id = $1
     RETURNING tool_calls, calls_ok, calls_error, calls_deduped, calls_denied, calls_unknown, calls_not_sent";

/// Declares the ticks of dead runners abandoned; their counters follow with
/// [`DERIVE_COUNTS`].
pub(super) const ABANDON_TICKS: &str = "UPDATE persona_ticks SET status = 'abandoned', finished_at = $1,
        error = 'lease expired: the runner stopped renewing it (crashed or cut off)'
     WHERE status = 'running' AND lease_expires_at < $1 RETURNING id, persona_id";

/// Which running ticks are stuck.
#[derive(Clone, Copy)]
enum Stuck<'a> {
    LeaseExpired,
    RunnerGone(&'a str),
}

pub(super) const ABANDON_TICKS_OF: &str = "UPDATE persona_ticks SET status = 'abandoned', finished_at = $1,
        error = 'its runner process was gone when a daemon started on the same host (crashed or killed)'
     WHERE status = 'running' AND runner_id = $2 RETURNING id, persona_id";
pub(super) const GONE_PENDING_TO_UNKNOWN: &str = "UPDATE persona_actions SET result = 'unknown'
     WHERE result = 'pending' AND tick_id IN
        (SELECT id FROM persona_ticks WHERE status = 'running' AND runner_id = $1)";
pub(super) const RUNNERS_WITH_RUNNING_TICKS: &str = "SELECT DISTINCT runner_id FROM persona_ticks
     WHERE status = 'running' AND substr(runner_id, 1, $1) = $2";

/// How many ticks a persona has had.
pub(super) const COUNT_TICKS: &str = "SELECT COUNT(*) FROM persona_ticks WHERE persona_id = $1";
/// A finishing tick's calls still `pending` become `unknown` (they may have run).
pub(super) const PENDING_TO_UNKNOWN: &str =
    "UPDATE persona_actions SET result = 'unknown' WHERE tick_id = $1 AND result = 'pending'";
/// The same for every tick whose lease expired before `$1` (swept as abandoned).
pub(super) const ABANDONED_PENDING_TO_UNKNOWN: &str = "UPDATE persona_actions SET result = 'unknown'
     WHERE result = 'pending' AND tick_id IN
        (SELECT id FROM persona_ticks WHERE status = 'running' AND lease_expires_at < $1)";

impl Store {
    /// Inserts a `running` tick with a lease. `Conflict` when the persona already has a
    /// running tick or this slot attempt was claimed (by this or another replica).
    pub async fn claim_tick(&self, new: &NewTick) -> Result<Tick> {
        let started_at = now();
        let tick = Tick {
            id: super::writer::new_row_id(),
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
            target: new.target.clone(),
            space: new.space.clone(),
        };
        let inserted: Result<u64> = async {
            Ok(with_writer!(self, pool => {
                sqlx::query(
                    "INSERT INTO persona_ticks (id, tenant_id, persona_id, trigger, scheduled_for,
                        attempt, started_at, status, runner_id, lease_expires_at, target, space)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10, $11)",
                )
                .bind(tick.id)
                .bind(tick.tenant_id)
                .bind(tick.persona_id)
                .bind(tick.trigger)
                .bind(tick.scheduled_for)
                .bind(tick.attempt)
                .bind(tick.started_at)
                .bind(&tick.runner_id)
                .bind(tick.lease_expires_at)
                .bind(tick.target.as_deref())
                .bind(crate::model::space::stored(tick.space.as_deref()))
                .execute(pool)
                .await?
                .rows_affected()
            }))
        }
        .await;
        self.observe(&inserted);
        match inserted {
            Ok(_) => Ok(tick),
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(match &new.space {
                None => format!(
                    "persona {} already has a running tick or this slot was claimed",
                    new.persona_id
                ),
                Some(space) => format!(
                    "persona {} already has a running tick, or another member is ticking in the space `{space}` \
                     (members never overlap in a space); try again when it ends",
                    new.persona_id
                ),
            })),
            Err(other) => Err(other),
        }
    }

    pub async fn get_tick(&self, id: Uuid) -> Result<Option<Tick>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, tenant_id, persona_id, trigger, scheduled_for, attempt, started_at,
                        finished_at, status, error, runner_id, lease_expires_at, target, space
                 FROM persona_ticks WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// The transcript of a tick, if it kept one.
    pub async fn tick_transcript(&self, tick_id: Uuid) -> Result<Option<Transcript>> {
        let row: Option<(sqlx::types::Json<serde_json::Value>, i64, bool)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT entries, CAST(chars AS BIGINT), truncated FROM persona_transcripts WHERE tick_id = $1")
                .bind(tick_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(entries, chars, truncated)| Transcript {
            entries: entries.0,
            chars,
            truncated,
        }))
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
        let id = super::writer::new_row_id();
        let attempt: Result<Option<i32>> = async {
            Ok(with_writer!(self, pool => {
                sqlx::query_scalar(
                    CLAIM_SLOT,
                )
                .bind(id)
                .bind(new.tenant_id)
                .bind(new.persona_id)
                .bind(new.trigger)
                .bind(slot)
                .bind(started_at)
                .bind(&new.runner_id)
                .bind(lease_expires_at)
                .bind(max_attempts)
                .bind(new.target.as_deref())
                .bind(crate::model::space::stored(new.space.as_deref()))
                // Run to the end, not to the first row: on SQLite the statement commits
                // when it finishes, and a commit that fails (a full disk) must be an error
                // here, never a claimed tick that was not written.
                .fetch_all(pool)
                .await?
                .into_iter()
                .next()
            }))
        }
        .await;
        self.observe(&attempt);
        match attempt {
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
                target: new.target.clone(),
                space: new.space.clone(),
            })),
            // Not claimed: another runner's tick is running (it may die: look again), or
            // the slot is done, out of attempts, or the persona paused (go on).
            Ok(None) => {
                let running: bool = with_pool!(self, pool => {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM persona_ticks WHERE persona_id = $1 AND status = 'running')",
                    )
                    .bind(new.persona_id)
                    .fetch_one(pool)
                    .await?
                });
                Ok(if running { SlotClaim::Busy } else { SlotClaim::Settled })
            }
            Err(StoreError::Conflict(_)) => Ok(SlotClaim::Busy),
            Err(other) => Err(other),
        }
    }

    /// Keeps the next slots of many personas in one transaction (planning 100,000 personas
    /// is one commit, not 100,000).
    pub async fn set_next_due_many(&self, plans: &[(Uuid, Option<DateTime<Utc>>)]) -> Result<()> {
        if plans.is_empty() {
            return Ok(());
        }
        let at = now();
        let result: Result<()> = async {
            with_writer!(self, pool => {
                for chunk in plans.chunks(1000) {
                    let mut tx = begin_write!(pool);
                    for (persona_id, due) in chunk {
                        // A first plan (no slot stored yet) is what every replica computes
                        // alike, so it is not a change to read back: stamping it would make
                        // every scheduler re-read all 100,000 freshly planned personas.
                        sqlx::query(
                            "UPDATE personas SET next_due_at = $2,
                                    changed_at = CASE WHEN next_due_at IS NULL THEN changed_at ELSE $3 END
                              WHERE id = $1",
                        )
                            .bind(persona_id)
                            .bind(due)
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                }
            });
            Ok(())
        }
        .await;
        self.observe(&result);
        result
    }

    /// Extends the lease of a running tick. `false` when it is no longer running (it
    /// finished, or another runner declared it abandoned meanwhile).
    pub async fn renew_lease(&self, tick_id: Uuid, until: DateTime<Utc>) -> Result<bool> {
        let updated: Result<u64> = async {
            Ok(with_writer!(self, pool => {
                sqlx::query("UPDATE persona_ticks SET lease_expires_at = $2 WHERE id = $1 AND status = 'running'")
                    .bind(tick_id)
                    .bind(until)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }))
        }
        .await;
        self.observe(&updated);
        Ok(updated? == 1)
    }

    /// How many ticks the persona has had (seeds the offline driver's choices).
    pub async fn count_ticks(&self, persona_id: Uuid) -> Result<i64> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar(COUNT_TICKS)
                .bind(persona_id)
                .fetch_one(pool)
                .await?
        }))
    }

    /// Marks running ticks whose lease expired before `at` as `abandoned` (their runner
    /// died): their `pending` calls become `unknown`, their counters are derived, and their
    /// personas are marked changed so every replica plans them again. Returns how many
    /// were abandoned.
    pub async fn abandon_expired_ticks(&self, at: DateTime<Utc>) -> Result<u64> {
        self.abandon(at, Stuck::LeaseExpired).await
    }

    /// The same for the running ticks of `runner` (a process known to be gone), whatever
    /// their lease says: a daemon restarted after kill -9 sweeps its predecessor's at once.
    pub async fn abandon_ticks_of(&self, runner: &str, at: DateTime<Utc>) -> Result<u64> {
        self.abandon(at, Stuck::RunnerGone(runner)).await
    }

    /// The runners with a tick running whose id starts with `prefix` (`host:`).
    pub async fn runners_with_running_ticks(&self, prefix: &str) -> Result<Vec<String>> {
        let result: Result<Vec<String>> = async {
            Ok(with_pool!(self, pool => {
                sqlx::query_scalar(RUNNERS_WITH_RUNNING_TICKS)
                    .bind(prefix.len() as i64)
                    .bind(prefix)
                    .fetch_all(pool)
                    .await?
            }))
        }
        .await;
        self.observe(&result);
        result
    }

    async fn abandon(&self, at: DateTime<Utc>, stuck: Stuck<'_>) -> Result<u64> {
        let result: Result<u64> = async {
            Ok(with_writer!(self, pool => {
                let mut tx = begin_write!(pool);
                // The lease variant compares with `at`, the other with the runner's id.
                let abandoned: Vec<(Uuid, Uuid)> = match stuck {
                    Stuck::LeaseExpired => {
                        sqlx::query(ABANDONED_PENDING_TO_UNKNOWN).bind(at).execute(&mut *tx).await?;
                        sqlx::query_as(ABANDON_TICKS).bind(at).fetch_all(&mut *tx).await?
                    }
                    Stuck::RunnerGone(runner) => {
                        sqlx::query(GONE_PENDING_TO_UNKNOWN).bind(runner).execute(&mut *tx).await?;
                        sqlx::query_as(ABANDON_TICKS_OF).bind(at).bind(runner).fetch_all(&mut *tx).await?
                    }
                };
                for (tick, _) in &abandoned {
                    sqlx::query(DERIVE_COUNTS).bind(tick).execute(&mut *tx).await?;
                }
                let personas: Vec<Uuid> = abandoned.iter().map(|(_, persona)| *persona).collect();
                for persona in &personas {
                    sqlx::query("UPDATE personas SET changed_at = $2 WHERE id = $1")
                        .bind(persona)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                personas.len() as u64
            }))
        }
        .await;
        self.observe(&result);
        result
    }
}
