//! The scheduler's loader: reads the personas whose schedule changed, off the dispatch
//! path, and hands them to the loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Clock, Port};
use crate::store::ScheduleRow;

/// What the loader found.
pub(super) enum Loaded {
    /// Changed personas (a page of them).
    Rows(Vec<ScheduleRow>),
    /// The first full load is complete.
    FirstLoadDone,
    /// Every current id: the others were deleted.
    Ids(Vec<Uuid>),
}

/// Rows per page of a load.
const LOAD_PAGE: usize = 5000;
/// Changes are read again from this far before the newest one seen: replicas' clocks
/// differ a little, and a change stamped slightly in the past must not be missed.
const LOOKBACK: Duration = Duration::from_secs(60);
/// Every this many loads, the full id list is read to drop deleted personas.
const IDS_EVERY: u32 = 20;

/// Reads what changed, every `reload_every` or when told to, off the dispatch path.
pub(super) async fn loader<T: Port>(
    host: Arc<T>,
    clock: Clock,
    out: mpsc::Sender<Loaded>,
    mut every: watch::Receiver<Duration>,
    now: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let mut newest: Option<DateTime<Utc>> = None;
    // When the last complete load began: a change committed after it is stamped no earlier
    // than LOOKBACK before it, so nothing older needs reading again. Without it, an idle
    // store would have everything stamped in the minute before its newest change read
    // again on every load (100,000 freshly seeded personas, forever).
    let mut last_start: Option<DateTime<Utc>> = None;
    let mut first = true;
    let mut loads: u32 = 0;
    let mut failing = false;
    loop {
        let started = tokio::time::Instant::now();
        let started_at = clock.now();
        let mut cursor = newest
            .max(last_start)
            .map(|at| (crate::time::before(at, LOOKBACK), Uuid::nil()));
        let mut result = Ok(());
        loop {
            match host.load(cursor, LOAD_PAGE).await {
                Ok(rows) => {
                    let full = rows.len() == LOAD_PAGE;
                    if let Some(last) = rows.last() {
                        newest = newest.max(Some(last.changed_at));
                        cursor = Some((last.changed_at, last.id));
                    }
                    if !rows.is_empty() && out.send(Loaded::Rows(rows)).await.is_err() {
                        return;
                    }
                    if !full {
                        break;
                    }
                }
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        loads += 1;
        if result.is_ok() && (first || loads.is_multiple_of(IDS_EVERY)) {
            match host.ids().await {
                Ok(ids) if !first => {
                    if out.send(Loaded::Ids(ids)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(err) => result = Err(err),
            }
        }
        match result {
            Ok(()) => {
                last_start = Some(started_at);
                crate::metrics::global().scheduler_reload(started.elapsed());
                if failing {
                    tracing::info!("loading personas works again");
                    failing = false;
                }
                if first {
                    first = false;
                    if out.send(Loaded::FirstLoadDone).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                // One line per outage, not one per attempt.
                if !failing {
                    tracing::warn!(%err, "loading personas failed; keeping the current plan and trying again");
                    failing = true;
                }
            }
        }
        let wait = *every.borrow_and_update();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = now.notified() => {}
            changed = every.changed() => if changed.is_err() { return },
        }
    }
}
