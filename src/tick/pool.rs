//! The one bounded pool every tick of a process runs in: scheduled slots, signals, one-off
//! ticks from the API or the CLI. `scheduler.concurrency` permits; a tick holds one while it
//! runs. The pool also owns the `cut` token that ends running ticks when the shutdown
//! grace is over, and tracks the ticks started outside the scheduler so a drain waits for
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug)]
pub struct TickPool {
    permits: Arc<Semaphore>,
    size: AtomicUsize,
    tasks: TaskTracker,
    cut: CancellationToken,
}

impl TickPool {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(size.max(1))),
            size: AtomicUsize::new(size.max(1)),
            tasks: TaskTracker::new(),
            cut: CancellationToken::new(),
        })
    }

    /// A permit if one is free now.
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A permit, waiting for one to free up.
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed")
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Changes the pool's size (SIGHUP). Shrinking takes effect as running ticks return
    /// their permits.
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        let old = self.size.swap(size, Ordering::Relaxed);
        if size > old {
            self.permits.add_permits(size - old);
        } else if size < old {
            let permits = self.permits.clone();
            let surplus = (old - size) as u32;
            tokio::spawn(async move {
                if let Ok(taken) = permits.acquire_many_owned(surplus).await {
                    taken.forget();
                }
            });
        }
    }

    /// The token that cuts running ticks short (their records say so).
    pub fn cut(&self) -> CancellationToken {
        self.cut.clone()
    }

    /// Runs `tick` as a tracked task (a drain waits for it).
    pub fn spawn<F>(&self, tick: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(tick);
    }

    /// Waits up to `grace` for the tracked ticks, then cuts every tick and waits for them
    /// to record how they ended.
    pub async fn drain(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            self.cut.cancel();
            self.tasks.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pool_bounds_and_resizes() {
        let pool = TickPool::new(2);
        let a = pool.try_permit().unwrap();
        let _b = pool.try_permit().unwrap();
        assert!(pool.try_permit().is_none());
        pool.resize(3);
        let c = pool.try_permit().unwrap();
        pool.resize(1);
        drop((a, c));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            pool.available(),
            0,
            "two permits returned, both forgotten by the shrink"
        );
    }
}
