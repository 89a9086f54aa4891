//! The audit of calls: one row per call of a tick (written `pending` before the call is
//! sent and completed when the answer arrives, or written final when it never went out),
//! the SQL of those rows, and their reads (the story so far, a tick's calls, dedup across
//! ticks). Writes go through the store's [`writer`](super::writer), which commits whatever
//! is queued in one transaction; a caller returns only once its row is committed.

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, Row, Type};
use uuid::Uuid;

use super::columns::{Bind, Query};
use super::writer::{Op, Write, WriteFuture};
use super::{Conn, Result, Store, on_conn, with_pool};
use crate::model::call::{Call, CallKind, CallResult, Completion, EarlierCall, Refusal};
use crate::time::now;

/// A call's row, as first written: `pending` (about to be sent) or final (never sent).
const INSERT_CALL: &str = "INSERT INTO persona_actions (id, tenant_id, tick_id, persona_id, seq, kind, tool_name,
        module, input_hash, result, error_message, arguments, output, chaos, latency_ms, sent,
        recovered, refusal, created_at, completed_at, space)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
     ON CONFLICT (tick_id, seq) DO NOTHING";

/// A call's completion: its write-ahead row gets the result.
pub(super) const COMPLETE_CALL: &str = "UPDATE persona_actions SET result = $3, error_message = $4, output = $5,
        latency_ms = $6, completed_at = $7
     WHERE tick_id = $1 AND seq = $2 AND result = 'pending'";

/// A persona's latest calls (the prompt's story so far).
pub(super) const RECENT_CALLS: &str = "SELECT id, tenant_id, tick_id, persona_id, seq, kind, tool_name, module,
        input_hash, result, error_message, arguments, output, chaos, latency_ms, sent, recovered, refusal,
        created_at, space
     FROM persona_actions WHERE persona_id = $1 AND kind = 'call' ORDER BY created_at DESC, seq DESC LIMIT $2";

/// A tick's calls, in order.
pub(super) const TICK_CALLS: &str = "SELECT id, tenant_id, tick_id, persona_id, seq, kind, tool_name, module,
        input_hash, result, error_message, arguments, output, chaos, latency_ms, sent, recovered, refusal,
        created_at, space
     FROM persona_actions WHERE tick_id = $1 ORDER BY seq";

/// The latest identical call that ran or may have run (dedup across ticks).
pub(super) const EARLIER_CALL: &str = "SELECT result, output FROM persona_actions
     WHERE persona_id = $1 AND input_hash = $2 AND created_at >= $3 AND result IN ('ok', 'unknown')
       AND kind = 'call' AND space = $4
     ORDER BY created_at DESC LIMIT 1";

impl<'r, R: Row> sqlx::FromRow<'r, R> for Call
where
    &'static str: sqlx::ColumnIndex<R>,
    Uuid: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    CallKind: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    CallResult: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<Refusal>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Call {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            tick_id: row.try_get("tick_id")?,
            persona_id: row.try_get("persona_id")?,
            seq: row.try_get("seq")?,
            kind: row.try_get("kind")?,
            tool_name: row.try_get("tool_name")?,
            module: row.try_get("module")?,
            input_hash: row.try_get("input_hash")?,
            result: row.try_get("result")?,
            error_message: row.try_get("error_message")?,
            arguments: row.try_get("arguments")?,
            output: row.try_get("output")?,
            chaos: row.try_get("chaos")?,
            latency_ms: row.try_get("latency_ms")?,
            sent: row.try_get("sent")?,
            recovered: row.try_get("recovered")?,
            refusal: row.try_get("refusal")?,
            space: crate::model::space::from_stored(row.try_get("space")?),
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Binds a call to [`INSERT_CALL`].
fn bind_call<'a, 'q, DB: Database>(query: Query<'q, DB>, call: &'a Call) -> Query<'q, DB>
where
    Uuid: Bind<DB>,
    i32: Bind<DB>,
    bool: Bind<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    Option<i32>: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
    Option<DateTime<Utc>>: Bind<DB>,
    CallKind: Bind<DB>,
    CallResult: Bind<DB>,
    Option<Refusal>: Bind<DB>,
{
    query
        .bind(call.id)
        .bind(call.tenant_id)
        .bind(call.tick_id)
        .bind(call.persona_id)
        .bind(call.seq)
        .bind(call.kind)
        .bind(call.tool_name.as_str())
        .bind(call.module.as_str())
        .bind(call.input_hash.as_str())
        .bind(call.result)
        .bind(call.error_message.as_deref())
        .bind(call.arguments.as_deref())
        .bind(call.output.as_deref())
        .bind(call.chaos)
        .bind(call.latency_ms)
        .bind(call.sent)
        .bind(call.recovered)
        .bind(call.refusal)
        .bind(call.created_at)
        .bind((call.result != CallResult::Pending).then(now))
        .bind(crate::model::space::stored(call.space.as_deref()))
}

/// Binds a completion to [`COMPLETE_CALL`].
fn bind_completion<'a, 'q, DB: Database>(query: Query<'q, DB>, done: &'a Completion) -> Query<'q, DB>
where
    Uuid: Bind<DB>,
    i32: Bind<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    Option<i32>: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
    CallResult: Bind<DB>,
{
    query
        .bind(done.tick_id)
        .bind(done.seq)
        .bind(done.result)
        .bind(done.error_message.as_deref())
        .bind(done.output.as_deref())
        .bind(done.latency_ms)
        .bind(now())
}

impl Write for Call {
    fn apply<'t>(&'t self, conn: Conn<'t>) -> WriteFuture<'t> {
        Box::pin(async move {
            Ok(on_conn!(conn, conn => bind_call(sqlx::query(INSERT_CALL), self).execute(conn).await?.rows_affected()))
        })
    }
}

impl Write for Completion {
    fn apply<'t>(&'t self, conn: Conn<'t>) -> WriteFuture<'t> {
        Box::pin(async move {
            Ok(
                on_conn!(conn, conn => bind_completion(sqlx::query(COMPLETE_CALL), self).execute(conn).await?.rows_affected()),
            )
        })
    }
}

/// A call's completion, then the next call of its tick, written only when the completion
/// found its call still pending (its count is the completion's).
struct CompleteThen {
    done: Completion,
    next: Call,
}

impl Write for CompleteThen {
    fn apply<'t>(&'t self, conn: Conn<'t>) -> WriteFuture<'t> {
        Box::pin(async move {
            let mut conn = conn;
            let completed = self.done.apply(conn.reborrow()).await?;
            if completed > 0 {
                self.next.apply(conn).await?;
            }
            Ok(completed)
        })
    }
}

impl Store {
    /// Writes one call and returns once it is committed. Idempotent per `(tick, seq)`: a
    /// retried write of the same row is ignored rather than duplicated. A `pending` row is
    /// the write-ahead record of a call about to be sent.
    pub async fn record_call(&self, call: Call) -> Result<()> {
        self.writer.submit(Box::new(call) as Op).await.map(drop)
    }

    /// Completes a `pending` call. `false` when it was not pending any more: the tick was
    /// declared dead meanwhile (its lease expired) and the row already says `unknown`.
    pub async fn complete_call(&self, completion: Completion) -> Result<bool> {
        Ok(self.writer.submit(Box::new(completion)).await? == 1)
    }

    /// Completes the `pending` call `done` and writes `next`, its tick's next call, in one
    /// commit; `next` only when `done` was still pending. `false` when it was not (the
    /// tick was declared dead meanwhile): then nothing was written.
    pub async fn complete_then_record(&self, done: Completion, next: Call) -> Result<bool> {
        Ok(self.writer.submit(Box::new(CompleteThen { done, next })).await? == 1)
    }

    /// The calls of a tick, in order, with their arguments and outputs.
    pub async fn tick_calls(&self, tick_id: Uuid) -> Result<Vec<Call>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(TICK_CALLS).bind(tick_id).fetch_all(pool).await?
        }))
    }

    /// The persona's latest tool calls, newest first (for the prompt's story so far).
    pub async fn recent_calls(&self, persona_id: Uuid, limit: i64) -> Result<Vec<Call>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(RECENT_CALLS).bind(persona_id).bind(limit).fetch_all(pool).await?
        }))
    }

    /// The persona's latest call with `input_hash` since `since` that ran or may have
    /// run (`ok` or `unknown`) in the same space, for deduplication across ticks: the same
    /// call in two spaces is not a repeat.
    pub async fn earlier_call(
        &self,
        persona_id: Uuid,
        input_hash: &str,
        since: DateTime<Utc>,
        space: Option<&str>,
    ) -> Result<Option<EarlierCall>> {
        let row: Option<(CallResult, Option<String>)> = with_pool!(self, pool => {
            sqlx::query_as(EARLIER_CALL)
                .bind(persona_id)
                .bind(input_hash)
                .bind(since)
                .bind(crate::model::space::stored(space))
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(result, output)| match result {
            CallResult::Ok => EarlierCall::Answered(output.unwrap_or_default()),
            _ => EarlierCall::MayHaveRun,
        }))
    }
}
