//! The loop's own timers: when it next sweeps expired leases, when it next probes a store
//! that takes no writes (with backoff), when it wakes at the latest, and noticing steps of
//! the wall clock between wakes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Port, Scheduler};

/// When the loop next sweeps expired leases and probes a store that takes no writes, and
/// when it last woke (to notice wall-clock steps).
pub(super) struct Timers {
    next_sweep: DateTime<Utc>,
    next_probe: DateTime<Utc>,
    probe_delay: Duration,
    last_wake: (DateTime<Utc>, tokio::time::Instant),
}

impl Timers {
    pub(super) fn new(now: DateTime<Utc>) -> Self {
        Self {
            next_sweep: now,
            next_probe: now,
            probe_delay: Duration::from_secs(1),
            last_wake: (now, tokio::time::Instant::now()),
        }
    }

    /// A wall-clock step (NTP, an operator) moves every due time at once: say so.
    pub(super) fn notice_clock_steps(&mut self, now: DateTime<Utc>) {
        let (last_wall, last_mono) = self.last_wake;
        let drift = (now - last_wall).num_milliseconds() - last_mono.elapsed().as_millis() as i64;
        if drift.abs() > 2000 {
            tracing::warn!(
                step_ms = drift,
                "the wall clock stepped; due times are measured against the new time"
            );
        }
        self.last_wake = (now, tokio::time::Instant::now());
    }
}

impl<T: Port> Scheduler<T> {
    /// Probes a store that takes no writes (with backoff) and sweeps expired leases when
    /// their times come.
    pub(super) async fn maintain(&mut self, now: DateTime<Utc>, timers: &mut Timers) {
        let writable = self.host.writable();
        if !writable && now >= timers.next_probe {
            if self.host.probe().await {
                timers.probe_delay = Duration::from_secs(1);
            } else {
                timers.probe_delay = (timers.probe_delay * 2).min(Duration::from_secs(30));
            }
            timers.next_probe = crate::time::after(now, timers.probe_delay);
        }
        if writable && now >= timers.next_sweep {
            self.host.sweep(now).await;
            timers.next_sweep = crate::time::after(now, self.settings.sweep_every);
        }
    }

    /// When to wake next: the next due time, a sweep or a probe, and at least every
    /// `heartbeat_every` (the heartbeat must keep beating).
    pub(super) fn next_wake(&self, now: DateTime<Utc>, timers: &Timers) -> DateTime<Utc> {
        let mut wake = crate::time::after(now, self.settings.heartbeat_every).min(timers.next_sweep);
        if !self.host.writable() {
            wake = wake.min(timers.next_probe);
        } else if !self.settings.paused
            && self.pool.available() > 0
            && let Some((due, _)) = self.queue.first()
        {
            wake = wake.min(*due);
        }
        wake
    }
}
