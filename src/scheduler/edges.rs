//! The scheduler's edges: what it needs from the world ([`Port`]), how it keeps time
//! ([`Clock`]), what it is told ([`SchedulerSettings`], [`Command`]) and what it tells ([`Status`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CatchUp;
use crate::model::tick::Trigger;
use crate::store::{ScheduleRow, StoreError};

/// Wall-clock time for the scheduler: the system clock, or (in tests) a clock that follows
/// tokio's virtual time from an origin, so paused tests move both together.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    virtual_origin: Option<(DateTime<Utc>, tokio::time::Instant)>,
}

impl Clock {
    /// The system's wall clock: a step (NTP, an operator) is seen at the next wake.
    pub fn system() -> Self {
        Self { virtual_origin: None }
    }

    /// A clock starting at `wall` that advances with tokio's (possibly paused) time.
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            virtual_origin: Some((wall, tokio::time::Instant::now())),
        }
    }

    /// Now, at the precision the stores keep (microseconds).
    pub fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        match self.virtual_origin {
            Some((wall, origin)) => crate::time::after(wall, origin.elapsed()).trunc_subsecs(6),
            None => crate::time::now(),
        }
    }

    /// The tokio instant of a wall-clock time (now, if it is past).
    pub fn instant_at(&self, wall: DateTime<Utc>) -> tokio::time::Instant {
        let from_now = (wall - self.now()).to_std().unwrap_or_default();
        crate::time::instant_after(tokio::time::Instant::now(), from_now)
    }
}

/// How a scheduled run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// This runner ran it; `ok` says whether the tick succeeded.
    Ran { ok: bool },
    /// Someone else is running this persona right now: look again once its lease could
    /// have expired and been swept.
    Busy,
    /// Nothing to do for this slot: it succeeded elsewhere, used up its attempts, or the
    /// persona is paused. Go on to the next slot.
    Settled,
}

/// What the scheduler needs from the world.
pub trait Port: Send + Sync + 'static {
    /// Personas whose schedule changed after `after` (a `(changed_at, id)` cursor; all
    /// without it), oldest change first, at most `limit`.
    fn load(
        &self,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ScheduleRow>, StoreError>> + Send;
    /// The ids of every schedulable persona (the others are dropped).
    fn ids(&self) -> impl Future<Output = Result<Vec<Uuid>, StoreError>> + Send;
    /// Whether personas of `target` run here (`None`: the default target).
    fn runs_target(&self, target: Option<&str>) -> bool;
    /// Keeps the next slots of personas (in one batch).
    fn save_plans(&self, plans: Vec<(Uuid, DateTime<Utc>)>) -> impl Future<Output = ()> + Send;
    /// Claims and runs the persona's tick for `slot`; `cut` ends it early at shutdown.
    fn run_slot(
        &self,
        persona: Uuid,
        slot: DateTime<Utc>,
        cut: CancellationToken,
    ) -> impl Future<Output = RunOutcome> + Send;
    /// Runs a one-off tick now (SIGUSR1, tick-all from the API).
    fn run_now(
        &self,
        persona: Uuid,
        trigger: Trigger,
        cut: CancellationToken,
    ) -> impl Future<Output = RunOutcome> + Send;
    /// Marks ticks of dead runners (expired leases) abandoned.
    fn sweep(&self, now: DateTime<Utc>) -> impl Future<Output = ()> + Send;
    /// Whether the store takes writes (nothing is claimed while it does not).
    fn writable(&self) -> bool {
        true
    }
    /// A small write that tells whether the store takes writes again.
    fn probe(&self) -> impl Future<Output = bool> + Send {
        async { true }
    }
    /// Observes the lag between a slot's due time and its start.
    fn observe_lag(&self, _lag: Duration) {}
    /// Observes how many personas are due (waiting for the pool) and running.
    fn observe_load(&self, _due: usize, _running: usize) {}
}

/// The scheduler's settings (`[runner]`), replaced on reload.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    pub jitter: Duration,
    pub paused: bool,
    pub catch_up: CatchUp,
    pub starting_deadline: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// How often changed personas are loaded (new, deleted, paused, other replicas' progress).
    pub reload_every: Duration,
    /// How often expired leases are swept.
    pub sweep_every: Duration,
    /// After finding another runner's tick on a persona, how soon to look again: by then
    /// a dead runner's lease has expired and been swept (lease + sweep).
    pub busy_recheck: Duration,
    pub shutdown_grace: Duration,
    /// The loop wakes at least this often (it feeds the systemd watchdog).
    pub heartbeat_every: Duration,
}

/// Commands to a running scheduler.
#[derive(Debug)]
pub enum Command {
    /// Tick every runnable persona now (SIGUSR1, or the API), recorded with this trigger.
    TickAllNow(Trigger),
    /// New settings; personas are reloaded too (SIGHUP).
    Reload(Box<SchedulerSettings>),
}

/// What the scheduler tells the rest of the process (readiness, metrics).
#[derive(Debug, Default)]
pub struct Status {
    pub(super) loaded: AtomicBool,
    pub(super) scheduled: AtomicUsize,
}

impl Status {
    /// Whether the first full load of personas is done.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Personas with a plan.
    pub fn scheduled(&self) -> usize {
        self.scheduled.load(Ordering::Relaxed)
    }
}
