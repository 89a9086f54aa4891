//! What a tick records as it goes: one row per tool call (written `pending` before the
//! call is sent, completed when the answer arrives) and one rating per module. Both go
//! through the store's [`writer`](super::writer), which commits whatever is queued in one
//! transaction; a caller returns only once its row is committed.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::writer::Op;
use super::{Result, Store, with_pool};
pub use crate::model::call::{CallKind as ActionKind, CallResult as ActionResult, Completion, EarlierCall};

/// One audited row, as first written.
#[derive(Clone, Debug)]
pub struct NewAction {
    pub tenant_id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub seq: i32,
    pub kind: ActionKind,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    pub result: ActionResult,
    pub error_message: Option<String>,
    /// Canonical JSON of the arguments (redacted and capped).
    pub arguments: Option<String>,
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
    /// The rating the evidence alone gives (the offline driver's rule), to show leniency.
    pub evidence_rating: Option<i32>,
    /// The simulator version that rated (driver, model, prompt, temperature).
    pub simulator: String,
    /// When it was given: now, unless an import or a fixture says otherwise.
    pub recorded_at: Option<DateTime<Utc>>,
}

/// An audited call as read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ActionRecord {
    pub seq: i32,
    /// `call`, `elicitation` or `sampling`.
    pub kind: String,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    /// `pending`, `ok`, `error`, `deduped`, `denied`, `unknown` or `not_sent`.
    pub result: String,
    pub error_message: Option<String>,
    pub chaos: bool,
    pub latency_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// A call as it was sent and answered (redacted, capped): the tick page's evidence.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RecordedCall {
    pub seq: i32,
    pub kind: String,
    pub tool_name: String,
    pub module: String,
    pub result: String,
    pub arguments: Option<String>,
    pub output: Option<String>,
    pub error_message: Option<String>,
    pub chaos: bool,
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
    pub evidence_rating: Option<i32>,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`ActionRecord`], for its queries.
macro_rules! select_actions {
    ($tail:literal) => {
        concat!(
            "SELECT seq, kind, tool_name, module, input_hash, result, error_message, chaos, latency_ms, created_at
             FROM persona_actions ",
            $tail
        )
    };
}

macro_rules! select_feedback {
    ($tail:literal) => {
        concat!(
            "SELECT module, rating, notes, evidence_calls, evidence_errors, evidence_mean_latency_ms,
                    evidence_rating, created_at
             FROM persona_feedback ",
            $tail
        )
    };
}

/// A persona's latest calls (the prompt's story so far).
pub(super) const RECENT_ACTIONS: &str =
    select_actions!("WHERE persona_id = $1 AND kind = 'call' ORDER BY created_at DESC, seq DESC LIMIT $2");

/// A persona's latest ratings.
pub(super) const RECENT_FEEDBACK: &str = select_feedback!("WHERE persona_id = $1 ORDER BY created_at DESC LIMIT $2");

/// A tick's calls with their arguments and outputs, in order.
pub(super) const RECORDED_CALLS: &str =
    "SELECT seq, kind, tool_name, module, result, arguments, output, error_message, chaos
                 FROM persona_actions WHERE tick_id = $1 ORDER BY seq";

/// The latest identical call that ran or may have run (dedup across ticks).
pub(super) const EARLIER_CALL: &str = "SELECT result, output FROM persona_actions
                 WHERE persona_id = $1 AND input_hash = $2 AND created_at >= $3 AND result IN ('ok', 'unknown')
                 ORDER BY created_at DESC LIMIT 1";

impl Store {
    /// Writes one audited row and returns once it is committed. Idempotent per
    /// `(tick, seq)`: a retried write of the same row is ignored rather than duplicated.
    /// A `pending` row is the write-ahead record of a call about to be sent.
    pub async fn record_action(&self, action: &NewAction) -> Result<()> {
        self.writer.submit(Op::Action(Box::new(action.clone()))).await.map(drop)
    }

    /// Completes a `pending` call. `false` when it was not pending any more: the tick was
    /// declared dead meanwhile (its lease expired) and the row already says `unknown`.
    pub async fn complete_action(&self, completion: &Completion) -> Result<bool> {
        let updated = self.writer.submit(Op::Complete(Box::new(completion.clone()))).await?;
        Ok(updated == 1)
    }

    /// Completes the `pending` call `done` and writes `next`, its tick's next row, in one
    /// commit; `next` only when `done` was still pending. `false` when it was not (the
    /// tick was declared dead meanwhile): then nothing was written.
    pub async fn complete_then_record(&self, done: Completion, next: &NewAction) -> Result<bool> {
        // The completion is moved, not copied: it carries the call's output.
        let updated = self
            .writer
            .submit(Op::CompleteThen(Box::new(done), Box::new(next.clone())))
            .await?;
        Ok(updated == 1)
    }

    /// Stores one rating (and its day's roll-up). The database refuses ratings outside
    /// 1..=5 and a second rating of the same module in the same tick.
    pub async fn record_feedback(&self, feedback: &NewFeedback) -> Result<()> {
        self.record_ratings(std::slice::from_ref(feedback)).await
    }

    /// Stores a tick's ratings together, in one commit: all of them or, when one is
    /// refused, none.
    pub async fn record_ratings(&self, ratings: &[NewFeedback]) -> Result<()> {
        if ratings.is_empty() {
            return Ok(());
        }
        let ops = ratings.iter().map(|r| Op::Feedback(Box::new(r.clone()))).collect();
        self.writer.submit_all(ops).await.map(drop)
    }

    /// The audited rows of a tick, in order.
    pub async fn tick_actions(&self, tick_id: Uuid) -> Result<Vec<ActionRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(select_actions!("WHERE tick_id = $1 ORDER BY seq"))
            .bind(tick_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The calls of a tick with their arguments and outputs, in order (for replay).
    pub async fn recorded_calls(&self, tick_id: Uuid) -> Result<Vec<RecordedCall>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(
                RECORDED_CALLS,
            )
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
            sqlx::query_as(RECENT_ACTIONS)
            .bind(persona_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The persona's latest ratings, newest first.
    pub async fn recent_feedback(&self, persona_id: Uuid, limit: i64) -> Result<Vec<FeedbackRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(RECENT_FEEDBACK)
            .bind(persona_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The persona's latest call with `input_hash` since `since` that ran or may have
    /// run (`ok` or `unknown`), for deduplication across ticks.
    pub async fn earlier_call(
        &self,
        persona_id: Uuid,
        input_hash: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<EarlierCall>> {
        let row: Option<(String, Option<String>)> = with_pool!(self, pool => {
            sqlx::query_as(
                EARLIER_CALL,
            )
            .bind(persona_id)
            .bind(input_hash)
            .bind(since)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(result, output)| match result.as_str() {
            "ok" => EarlierCall::Answered(output.unwrap_or_default()),
            _ => EarlierCall::MayHaveRun,
        }))
    }
}
