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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Backend, Begin, Conn, Health, Outage, Result, StoreError};

/// What a [`Write`] runs as: the rows it changed, or the database's refusal.
pub(crate) type WriteFuture<'t> = Pin<Box<dyn Future<Output = Result<u64, sqlx::Error>> + Send + 't>>;

/// One write of the tick path, run on the batch's open transaction. The rows that write
/// (calls, ratings) implement it beside their SQL; the writer only batches and commits.
pub(crate) trait Write: Send + Sync + 'static {
    /// Runs the write on `conn` (the batch's transaction): the rows it changed.
    fn apply<'t>(&'t self, conn: Conn<'t>) -> WriteFuture<'t>;
}

/// A boxed write, as jobs carry them.
pub(crate) type Op = Box<dyn Write>;

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

/// A new row's id: time-ordered (UUID v7), so a batch of inserts lands on the rightmost
/// pages of the id index instead of one random page per row (fewer pages per commit).
pub(super) fn new_row_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// Runs `ops` in one transaction; the rows each changed, or the failure with the index of
/// the write that caused it (`None`: beginning or committing failed).
async fn commit(backend: &Backend, ops: &[&Op]) -> Result<Vec<u64>, (Option<usize>, StoreError)> {
    match backend {
        Backend::Sqlite { write, .. } => {
            let mut tx = write.begin_write().await.map_err(|e| (None, e))?;
            let counts = apply_all(ops, Conn::Sqlite(&mut tx)).await?;
            tx.commit().await.map_err(|e| (None, StoreError::from(e)))?;
            Ok(counts)
        }
        Backend::Postgres(pool) => {
            let mut tx = pool.begin_write().await.map_err(|e| (None, e))?;
            let counts = apply_all(ops, Conn::Postgres(&mut tx)).await?;
            tx.commit().await.map_err(|e| (None, StoreError::from(e)))?;
            Ok(counts)
        }
    }
}

/// Applies `ops` in order on `conn`: the rows each changed, or the index of the one
/// refused.
async fn apply_all(ops: &[&Op], mut conn: Conn<'_>) -> Result<Vec<u64>, (Option<usize>, StoreError)> {
    let mut counts = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let count = op
            .apply(conn.reborrow())
            .await
            .map_err(|e| (Some(index), StoreError::from(e)))?;
        counts.push(count);
    }
    Ok(counts)
}
