//! A running tick's lease: renewed at a third of its length while the tick runs. When it
//! is lost (another runner declared the tick abandoned, or no renewal got through before
//! it ran out, e.g. during a database stall), the tick must stop at once: another replica
//! may already be running the persona.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Store;

/// The renewal task of one tick; dropping it stops renewing.
pub(super) struct Lease {
    lost: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    /// Starts renewing the lease of `tick_id`, which runs until `expires` (monotonic).
    pub fn start(store: Store, tick_id: Uuid, length: Duration) -> Self {
        let lost = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        let (signal, why) = (lost.clone(), reason.clone());
        let task = tokio::spawn(async move {
            let every = (length / 3).max(Duration::from_millis(100));
            let mut valid_until = crate::time::instant_after(tokio::time::Instant::now(), length);
            loop {
                tokio::time::sleep(every).await;
                let attempt_at = tokio::time::Instant::now();
                let until = crate::time::after(crate::time::now(), length);
                let problem = match store.renew_lease(tick_id, until).await {
                    Ok(true) => {
                        valid_until = attempt_at + length;
                        continue;
                    }
                    Ok(false) => "another runner declared it abandoned (its lease had expired)".to_string(),
                    Err(err) if tokio::time::Instant::now() >= valid_until => {
                        format!("it could not be renewed before it ran out ({err})")
                    }
                    Err(err) => {
                        tracing::warn!(%tick_id, %err, "renewing the tick lease failed; trying again");
                        continue;
                    }
                };
                *why.lock().expect("lease reason") = Some(problem);
                signal.cancel();
                return;
            }
        });
        Self { lost, reason, task }
    }

    /// Resolves when the lease is lost, with why.
    pub async fn lost(&self) -> String {
        self.lost.cancelled().await;
        self.reason
            .lock()
            .expect("lease reason")
            .clone()
            .unwrap_or_else(|| "the lease was lost".into())
    }
}
