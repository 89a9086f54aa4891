//! Retention: the record does not grow forever. Every `retention.every`, rows older than
//! their configured age are deleted in small batches (per tenant, through the indexes the
//! queries already use), so writers are never blocked for long. Daily rating roll-ups are
//! kept: the QA report's history outlives the raw rows.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::store::{Prunable, Store};

/// Deletes old rows until `stop`; the first pass runs a minute after start.
pub async fn run(store: Store, config: RetentionConfig, stop: CancellationToken) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = config.every.0.max(Duration::from_secs(60));
        if !store.health().is_writable() {
            continue;
        }
        if let Err(err) = prune(&store, &config, &stop).await {
            tracing::warn!(%err, "deleting old rows failed; trying again later");
        }
    }
}

/// One pass: every kind of row older than its age, in batches of `config.batch`.
pub async fn prune(
    store: &Store,
    config: &RetentionConfig,
    stop: &CancellationToken,
) -> Result<u64, crate::store::StoreError> {
    let now = crate::time::now();
    let plans = [
        (Prunable::Actions, config.actions.0),
        (Prunable::Interactions, config.interactions.0),
        (Prunable::Ticks, config.ticks.0),
        (Prunable::Spend, config.ticks.0),
        (Prunable::Evidence, Duration::from_secs(60 * 86_400)),
        (Prunable::Sessions, Duration::ZERO),
        (Prunable::Heartbeats, Duration::from_secs(86_400)),
    ];
    let mut deleted = 0;
    for (what, age) in plans {
        let cutoff = crate::time::before(now, age);
        loop {
            if stop.is_cancelled() {
                return Ok(deleted);
            }
            let n = store.prune(what, cutoff, i64::from(config.batch.max(1))).await?;
            deleted += n;
            if n < u64::from(config.batch.max(1)) {
                break;
            }
            // Let other writers in between batches.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "deleted rows past their retention");
    }
    Ok(deleted)
}
