//! The store's writer for the tick path: audited calls and ratings. One task takes every
//! queued write, commits them in one transaction (group commit), and answers each caller
//! only after that commit, so a caller that returns `Ok` has its row on disk (a call is
//! never sent before its write-ahead row is committed) and a failed commit reaches every
//! caller it concerns.
//!
//! On SQLite it uses the one writer connection of the store; on PostgreSQL a pool
//! connection. When one write of a batch is refused (a constraint: its tick was deleted,
//! say), the batch is rolled back and each write is retried alone, so only that one
//! fails. A connection whose transaction could not be ended is closed, never reused (see
//! `reusable` in the store).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::audit::{Completion, NewAction, NewFeedback};
use super::{Backend, Begin, Health, Outage, Result, StoreError};
use crate::time::now;

/// One write of the tick path.
pub(crate) enum Op {
    Action(Box<NewAction>),
    Complete(Box<Completion>),
    /// A call's completion, then the next row of its tick, written only when the
    /// completion found its call still pending (its count is the completion's).
    CompleteThen(Box<Completion>, Box<NewAction>),
    Feedback(Box<NewFeedback>),
}

/// Writes that land together or not at all (one caller's), and who waits for them.
struct Job {
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<Vec<u64>>>,
}

/// The handle every clone of the store shares; the task ends when the last one is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Writes committed together at most: enough to amortize a commit, small enough that a
/// batch never holds the SQLite write lock for long.
const MAX_BATCH: usize = 256;

impl Writer {
    pub(crate) fn start(backend: Backend, health: Arc<Health>) -> Self {
        let (jobs, queue) = mpsc::channel(4 * MAX_BATCH);
        // Its own thread: a commit never waits in the run queue behind tick work while it
        // holds the database's write lock (every other writer would wait with it).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the store writer");
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || runtime.block_on(run(backend, health, queue)))
            .expect("start the store writer thread");
        Self { jobs }
    }

    /// Queues `op` and waits for its commit; the rows it changed.
    pub(crate) async fn submit(&self, op: Op) -> Result<u64> {
        Ok(self.submit_all(vec![op]).await?[0])
    }

    /// Queues `ops` to be committed together (all or none) and waits for that commit; the
    /// rows each changed.
    pub(crate) async fn submit_all(&self, ops: Vec<Op>) -> Result<Vec<u64>> {
        let closed = || StoreError::Unavailable(Outage::Unreachable("the store is closed".into()));
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { ops, reply }).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(backend: Backend, health: Arc<Health>, mut queue: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        let mut queued = first.ops.len();
        batch.push(first);
        while queued < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => {
                    queued += job.ops.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let ops: Vec<&Op> = batch.iter().flat_map(|job| &job.ops).collect();
        let outcome = commit(&backend, &ops).await;
        crate::metrics::global().store_batch(ops.len());
        match outcome {
            Ok(counts) => {
                let mut counts = counts.into_iter();
                for job in batch.drain(..) {
                    let mine = counts.by_ref().take(job.ops.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            // One write was refused for itself: give each job its own transaction, so the
            // others land and only that one fails.
            Err((Some(_), err)) if err.outage().is_none() && batch.len() > 1 => {
                for job in batch.drain(..) {
                    let ops: Vec<&Op> = job.ops.iter().collect();
                    let result = commit(&backend, &ops).await.map_err(|(_, e)| e);
                    health.observe(&result);
                    let _ = job.reply.send(result);
                }
            }
            Err((_, err)) => {
                let failed: Result<()> = Err(shared(&err));
                health.observe(&failed);
                let mut first = Some(err);
                for job in batch.drain(..) {
                    let err = first.take().unwrap_or_else(|| shared(failed.as_ref().unwrap_err()));
                    let _ = job.reply.send(Err(err));
                }
            }
        }
    }
}

/// The same failure for another caller of the batch (sqlx errors do not clone).
fn shared(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(outage) => StoreError::Unavailable(outage.clone()),
        StoreError::Conflict(message) => StoreError::Conflict(message.clone()),
        StoreError::Constraint(message) => StoreError::Constraint(message.clone()),
        other => StoreError::NotCommitted(other.to_string()),
    }
}

/// A call's completion: its write-ahead row gets the result.
pub(super) const COMPLETE_CALL: &str = "UPDATE persona_actions SET result = $3, error_message = $4, output = $5,
        latency_ms = $6, completed_at = $7
     WHERE tick_id = $1 AND seq = $2 AND result = 'pending'";

/// A new row's id: time-ordered (UUID v7), so a batch of inserts lands on the rightmost
/// pages of the id index instead of one random page per row (fewer pages per commit).
pub(super) fn new_row_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Inserts a call's row (a write-ahead `pending` row or a final one) on `$tx`.
macro_rules! insert_action {
    ($tx:ident, $action:expr) => {{
        let action: &NewAction = $action;
        sqlx::query(
            "INSERT INTO persona_actions (id, tenant_id, tick_id, persona_id, seq, kind, tool_name,
                module, input_hash, result, error_message, arguments, output, chaos, latency_ms,
                created_at, completed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (tick_id, seq) DO NOTHING",
        )
        .bind(super::writer::new_row_id())
        .bind(action.tenant_id)
        .bind(action.tick_id)
        .bind(action.persona_id)
        .bind(action.seq)
        .bind(action.kind.as_str())
        .bind(&action.tool_name)
        .bind(&action.module)
        .bind(&action.input_hash)
        .bind(action.result.as_str())
        .bind(action.error_message.as_deref())
        .bind(action.arguments.as_deref())
        .bind(action.output.as_deref())
        .bind(action.chaos)
        .bind(action.latency_ms)
        .bind(now())
        .bind((action.result != super::audit::ActionResult::Pending).then(now))
        .execute(&mut *$tx)
        .await
        .map(|done| done.rows_affected())
    }};
}

/// Completes a pending call on `$tx`: the rows changed (0: it was not pending).
macro_rules! complete_call {
    ($tx:ident, $done:expr) => {{
        let done: &Completion = $done;
        sqlx::query(super::writer::COMPLETE_CALL)
            .bind(done.tick_id)
            .bind(done.seq)
            .bind(done.result.as_str())
            .bind(done.error_message.as_deref())
            .bind(done.output.as_deref())
            .bind(done.latency_ms)
            .bind(now())
            .execute(&mut *$tx)
            .await
            .map(|done| done.rows_affected())
    }};
}

/// Executes one write on the transaction `$tx`: the rows it changed.
macro_rules! apply {
    ($tx:ident, $op:expr) => {
        match $op {
            Op::Action(action) => insert_action!($tx, action),
            Op::Complete(done) => complete_call!($tx, done),
            Op::CompleteThen(done, next) => match complete_call!($tx, done) {
                Ok(0) => Ok(0),
                Ok(completed) => insert_action!($tx, next).map(|_| completed),
                Err(err) => Err(err),
            },
            Op::Feedback(feedback) => {
                let at = feedback.recorded_at.unwrap_or_else(now);
                let inserted = sqlx::query(
                    "INSERT INTO persona_feedback (id, tenant_id, tick_id, persona_id, module, rating,
                        notes, evidence_calls, evidence_errors, evidence_mean_latency_ms, evidence_rating,
                        simulator, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(super::writer::new_row_id())
                .bind(feedback.tenant_id)
                .bind(feedback.tick_id)
                .bind(feedback.persona_id)
                .bind(&feedback.module)
                .bind(feedback.rating)
                .bind(feedback.notes.as_deref())
                .bind(feedback.evidence_calls)
                .bind(feedback.evidence_errors)
                .bind(feedback.evidence_mean_latency_ms)
                .bind(feedback.evidence_rating)
                .bind(&feedback.simulator)
                .bind(at)
                .execute(&mut *$tx)
                .await;
                match inserted {
                    Err(err) => Err(err),
                    Ok(_) => super::feedback::bind_rollup!(sqlx::query(super::feedback::ROLLUP_UPSERT), feedback, at)
                        .execute(&mut *$tx)
                        .await
                        .map(|_| 1),
                }
            }
        }
    };
}

macro_rules! commit_on {
    ($pool:ident, $ops:ident) => {{
        let mut tx = $pool.begin_write().await.map_err(|e| (None, e))?;
        let mut counts = Vec::with_capacity($ops.len());
        for (index, op) in $ops.iter().enumerate() {
            let count = apply!(tx, op).map_err(|e| (Some(index), StoreError::from(e)))?;
            counts.push(count);
        }
        tx.commit().await.map_err(|e| (None, StoreError::from(e)))?;
        Ok(counts)
    }};
}

/// Runs `ops` in one transaction; the rows each changed, or the failure with the index of
/// the write that caused it (`None`: beginning or committing failed).
async fn commit(backend: &Backend, ops: &[&Op]) -> Result<Vec<u64>, (Option<usize>, StoreError)> {
    match backend {
        Backend::Sqlite { write, .. } => commit_on!(write, ops),
        Backend::Postgres(pool) => commit_on!(pool, ops),
    }
}
