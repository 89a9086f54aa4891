//! The sidecar's HTTP server, bounded against clients that never finish: a request's
//! headers must arrive within `api.header_timeout` (which also closes a keep-alive
//! connection idle that long), and at most `api.max_connections` connections are open at
//! once. A new connection beyond the cap takes the place of the oldest one that has not
//! sent a whole request yet, so a flood of half-open connections cannot keep `/health`
//! out; when every connection is busy with real requests, new ones are refused, with a
//! log line at most every ten seconds. (axum's own `serve` has no timer and no cap.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the server is bounded.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// The longest wait for a request's headers (and for the next request on a
    /// keep-alive connection).
    pub header_timeout: Duration,
    /// How long open requests may finish after `stop`.
    pub drain: Duration,
}

/// One open connection: a way to close it, and whether it has sent a whole request.
struct Open {
    close: CancellationToken,
    served: Arc<AtomicBool>,
}

/// A connection let in: how to close it, its served flag, and whether another one was
/// closed to make room.
struct Admitted {
    close: CancellationToken,
    served: Arc<AtomicBool>,
    evicted: bool,
}

/// At most one line per kind every ten seconds, counting what it leaves out.
#[derive(Default)]
struct Throttled {
    since_log: u64,
    last: Option<Instant>,
}

impl Throttled {
    /// Counts one; `Some(count)` when it is time to log.
    fn hit(&mut self) -> Option<u64> {
        self.since_log += 1;
        if self.last.is_some_and(|at| at.elapsed() < Duration::from_secs(10)) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.since_log))
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Slots {
    open: Mutex<VecDeque<(u64, Open)>>,
}

impl Slots {
    /// A place for a new connection: free, or taken from the oldest one that has not
    /// sent a request yet. `None` when every connection is serving real requests.
    fn admit(&self, id: u64, limit: usize) -> Option<Admitted> {
        let mut open = self.open.lock().expect("slots lock");
        let mut evicted = false;
        if open.len() >= limit {
            let idle = open.iter().position(|(_, o)| !o.served.load(Ordering::Relaxed))?;
            if let Some((_, oldest)) = open.remove(idle) {
                oldest.close.cancel();
                evicted = true;
            }
        }
        let close = CancellationToken::new();
        let served = Arc::new(AtomicBool::new(false));
        open.push_back((
            id,
            Open {
                close: close.clone(),
                served: served.clone(),
            },
        ));
        Some(Admitted { close, served, evicted })
    }

    fn release(&self, id: u64) {
        self.open.lock().expect("slots lock").retain(|(open, _)| *open != id);
    }
}

/// Serves `router` on `listener` until `stop`, then gives open requests `limits.drain`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    // http/1 only: the auto builder's HTTP/2 sniffing waits for bytes with no timeout.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let slots = Arc::new(Slots::default());
    let tasks = TaskTracker::new();
    let (mut refusals, mut evictions) = (Throttled::default(), Throttled::default());
    let mut next_id: u64 = 0;
    loop {
        let tcp = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %err, "the sidecar cannot accept a connection now");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let id = next_id;
        let Some(Admitted { close, served, evicted }) = slots.admit(id, limits.max_connections) else {
            if let Some(refused) = refusals.hit() {
                tracing::warn!(
                    limit = limits.max_connections,
                    refused,
                    "the sidecar is at api.max_connections with every connection busy; refusing new ones"
                );
            }
            continue;
        };
        if evicted && let Some(closed) = evictions.hit() {
            tracing::warn!(
                limit = limits.max_connections,
                closed,
                "the sidecar is at api.max_connections; closing the oldest connections that sent no request to let new ones in"
            );
        }
        let _ = tcp.set_nodelay(true);
        let marked = served.clone();
        let service = tower::ServiceBuilder::new()
            .map_request(move |request: axum::http::Request<hyper::body::Incoming>| {
                marked.store(true, Ordering::Relaxed);
                request
            })
            .service(router.clone());
        let (builder, stop, slots) = (builder.clone(), stop.clone(), slots.clone());
        tasks.spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = close.cancelled() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
            }
            slots.release(id);
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(limits.drain, tasks.wait()).await.is_err() {
        tracing::warn!(
            open = tasks.len(),
            "sidecar connections still open after the drain; closing them"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_house_makes_room_by_closing_the_oldest_connection_that_sent_nothing() {
        let slots = Slots::default();
        let first = slots.admit(1, 2).unwrap();
        let second = slots.admit(2, 2).unwrap();
        second.served.store(true, Ordering::Relaxed);
        assert!(!second.evicted);
        let third = slots.admit(3, 2).unwrap();
        assert!(
            third.evicted && first.close.is_cancelled(),
            "the oldest idle connection made room"
        );
        assert!(!second.close.is_cancelled() && !third.close.is_cancelled());
        third.served.store(true, Ordering::Relaxed);
        assert!(slots.admit(4, 2).is_none(), "every connection busy: refused");
        slots.release(2);
        assert!(slots.admit(5, 2).is_some());
    }
}
