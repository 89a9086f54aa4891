//! The daemon's scheduler: which persona is due when, and running due ticks in a bounded
//! pool without overlap.
//!
//! Why our own loop rather than tokio-cron-scheduler (CRATES.md): that crate computes a
//! fixed UTC offset (an hour off after a DST change), overlaps activations, has no
//! catch-up, and does not coordinate replicas. Here:
//! - slots come from [`schedule`] in each persona's zone;
//! - the next slot is kept in the store (`personas.next_due_at`), so restarts and other
//!   replicas know it;
//! - a slot is claimed atomically in the store, so each runs once across replicas;
//! - a persona never has two ticks in flight.
//!
//! The loop talks to the world through [`Ticker`] and keeps time with [`Clock`], which
//! follows tokio's clock. Tests drive it in paused (virtual) time with an in-memory
//! ticker; the daemon plugs in the store and the tick engine.

pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::persona::Persona;
pub use schedule::CatchUp;

/// Wall-clock time that follows tokio's clock from an origin, so paused tests move
/// both together.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin_wall: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl Clock {
    pub fn system() -> Self {
        Self::starting_at(crate::time::now())
    }

    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            origin_wall: wall,
            origin: tokio::time::Instant::now(),
        }
    }

    /// Now, at the precision the stores keep (microseconds).
    pub fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        crate::time::after(self.origin_wall, self.origin.elapsed()).trunc_subsecs(6)
    }

    /// The tokio instant of a wall-clock time (now, if it is past).
    pub fn instant_at(&self, wall: DateTime<Utc>) -> tokio::time::Instant {
        let from_now = (wall - self.now()).to_std().unwrap_or_default();
        tokio::time::Instant::now() + from_now
    }
}

/// How a scheduled run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// This runner ran it; `ok` says whether the tick succeeded.
    Ran { ok: bool },
    /// Not run here: done or running elsewhere, out of attempts, or paused.
    NotRun,
}

/// What the scheduler needs from the world.
pub trait Ticker: Send + Sync + 'static {
    /// The personas to schedule (with their stored next slot).
    fn personas(&self) -> impl Future<Output = Result<Vec<Persona>, String>> + Send;
    /// Keeps a persona's next slot.
    fn set_next_due(&self, persona: Uuid, at: DateTime<Utc>) -> impl Future<Output = ()> + Send;
    /// Claims and runs the persona's tick for `slot`; `cut` ends it early at shutdown.
    fn run_slot(
        &self,
        persona: Persona,
        slot: DateTime<Utc>,
        cut: CancellationToken,
    ) -> impl Future<Output = RunOutcome> + Send;
    /// Runs a one-off tick now (SIGUSR1, the admin API).
    fn run_now(&self, persona: Persona, cut: CancellationToken) -> impl Future<Output = RunOutcome> + Send;
    /// Marks ticks of dead runners (expired leases) abandoned.
    fn sweep(&self, now: DateTime<Utc>) -> impl Future<Output = ()> + Send;
    /// Observes the lag between a slot's due time and its start.
    fn observe_lag(&self, _lag: Duration) {}
    /// Observes how many personas are due and running after each pass.
    fn observe_load(&self, _due: usize, _running: usize) {}
}

/// The scheduler's settings (`[runner]`), replaced on reload.
#[derive(Clone, Debug)]
pub struct Settings {
    pub concurrency: usize,
    pub jitter: Duration,
    pub paused: bool,
    pub catch_up: CatchUp,
    pub starting_deadline: Duration,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    /// How often personas are reloaded (new, deleted, paused, other replicas' progress).
    pub reload_every: Duration,
    /// How often expired leases are swept.
    pub sweep_every: Duration,
    /// After a slot was not ours to run, how soon to look again.
    pub recheck_after: Duration,
    pub shutdown_grace: Duration,
    /// The loop wakes at least this often (it feeds the systemd watchdog).
    pub heartbeat_every: Duration,
}

/// Commands to a running scheduler.
#[derive(Debug)]
pub enum Command {
    /// Tick every runnable persona now (SIGUSR1).
    TickAllNow,
    /// New settings; personas are reloaded too (SIGHUP).
    Reload(Box<Settings>),
}

#[derive(Debug)]
struct Entry {
    persona: Persona,
    /// The slot being served (also the claim key), if one is planned.
    slot: Option<DateTime<Utc>>,
    /// When to try next: the slot plus jitter, a retry, or a recheck.
    due: Option<DateTime<Utc>>,
    /// Failed attempts of the current slot in this runner.
    failures: u32,
    running: bool,
    /// A one-off tick was asked for.
    now_requested: bool,
}

enum Job {
    Slot(DateTime<Utc>),
    Now,
}

/// Runs until `shutdown`: then no new ticks start, running ones get the grace period,
/// then they are cut (and recorded by the ticker), and the loop returns.
pub async fn run<T: Ticker>(
    ticker: Arc<T>,
    mut settings: Settings,
    clock: Clock,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
    heartbeat: impl Fn() + Send,
) {
    let cut = CancellationToken::new();
    let mut entries: HashMap<Uuid, Entry> = HashMap::new();
    let mut running: JoinSet<(Uuid, Option<DateTime<Utc>>, RunOutcome)> = JoinSet::new();
    let mut next_reload = clock.now();
    let mut next_sweep = clock.now();
    loop {
        heartbeat();
        let now = clock.now();
        if now >= next_sweep {
            ticker.sweep(now).await;
            next_sweep = crate::time::after(now, settings.sweep_every);
        }
        if now >= next_reload {
            reload(&*ticker, &settings, &mut entries, now).await;
            next_reload = crate::time::after(now, settings.reload_every);
        }

        // Dispatch what is due, earliest first, while the pool has room.
        if !settings.paused {
            let mut due: Vec<(DateTime<Utc>, Uuid)> = entries
                .iter()
                .filter(|(_, e)| !e.running)
                .filter_map(|(id, e)| {
                    if e.now_requested {
                        Some((DateTime::<Utc>::MIN_UTC, *id))
                    } else {
                        e.due.filter(|d| *d <= now).map(|d| (d, *id))
                    }
                })
                .collect();
            due.sort();
            for (due_at, id) in due {
                if running.len() >= settings.concurrency {
                    break;
                }
                let entry = entries.get_mut(&id).expect("listed");
                let (job, persona) = if entry.now_requested {
                    entry.now_requested = false;
                    (Job::Now, entry.persona.clone())
                } else {
                    ticker.observe_lag((now - due_at).to_std().unwrap_or_default());
                    (
                        Job::Slot(entry.slot.expect("a due entry has a slot")),
                        entry.persona.clone(),
                    )
                };
                entry.running = true;
                let (ticker, cut) = (ticker.clone(), cut.clone());
                running.spawn(async move {
                    match job {
                        Job::Slot(slot) => (id, Some(slot), ticker.run_slot(persona, slot, cut).await),
                        Job::Now => (id, None, ticker.run_now(persona, cut).await),
                    }
                });
            }
        }
        let due_count = entries
            .values()
            .filter(|e| !e.running && e.due.is_some_and(|d| d <= now))
            .count();
        ticker.observe_load(due_count, running.len());

        // Sleep until the next due time, a completion, a command, or shutdown. The
        // heartbeat must keep beating, so never sleep longer than `heartbeat_every`.
        let beat = crate::time::after(now, settings.heartbeat_every);
        let mut wake = [next_reload, next_sweep, beat].into_iter().min().expect("non-empty");
        if !settings.paused
            && running.len() < settings.concurrency
            && let Some(earliest) = entries.values().filter(|e| !e.running).filter_map(|e| e.due).min()
        {
            wake = wake.min(earliest);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(clock.instant_at(wake)) => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((id, slot, outcome)) = done {
                    complete(&*ticker, &settings, &mut entries, id, slot, outcome, clock.now()).await;
                }
            }
            Some(command) = commands.recv() => match command {
                Command::TickAllNow => {
                    for entry in entries.values_mut() {
                        entry.now_requested = !entry.persona.paused && !settings.paused;
                    }
                }
                Command::Reload(new) => {
                    settings = *new;
                    next_reload = clock.now();
                }
            },
        }
    }

    // Drain: no new ticks; running ones get the grace period, then they are cut.
    if !running.is_empty() {
        tracing::info!(running = running.len(), grace = ?settings.shutdown_grace, "draining running ticks");
        let drained = tokio::time::timeout(settings.shutdown_grace, async {
            while let Some(done) = running.join_next().await {
                if let Ok((id, slot, outcome)) = done {
                    complete(&*ticker, &settings, &mut entries, id, slot, outcome, clock.now()).await;
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = running.len(),
                "shutdown grace over: cutting the running ticks"
            );
            cut.cancel();
            while running.join_next().await.is_some() {}
        }
    }
}

/// The slot to serve for a persona. Interval cadences (`hourly`, `daily`, `weekdays`)
/// follow the reference semantics: due a period after the last activity, whoever caused
/// it. Cron cadences continue from the stored next slot.
fn plan(persona: &Persona, settings: &Settings, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let zone = persona.zone();
    match (&persona.tick_cadence, persona.next_due_at, persona.last_active_at) {
        (crate::persona::Cadence::Cron(_), Some(stored), _) => resolve(persona, zone, stored, now, settings),
        // Never active: keep the first slot planned for it, or it would move with every reload.
        (_, Some(stored), None) => Some(stored),
        _ => schedule::next_slot(&persona.tick_cadence, zone, now, persona.last_active_at),
    }
}

/// A candidate slot as it stands at `now`. A future slot stays. A cron slot in the past
/// means slots were missed (downtime, or a tick that ran long): they coalesce into one
/// run of the latest missed slot, or are skipped per the catch-up policy. An interval
/// slot in the past is simply due.
fn resolve(
    persona: &Persona,
    zone: chrono_tz::Tz,
    candidate: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Option<DateTime<Utc>> {
    if candidate >= now {
        return Some(candidate);
    }
    match schedule::latest_slot(&persona.tick_cadence, zone, now) {
        Some(latest) => schedule::catch_up(
            latest.max(candidate),
            now,
            settings.catch_up,
            settings.starting_deadline,
        )
        .or_else(|| schedule::next_slot(&persona.tick_cadence, zone, now, None)),
        None => Some(candidate),
    }
}

fn due_of(persona: &Persona, slot: DateTime<Utc>, settings: &Settings) -> DateTime<Utc> {
    crate::time::after(slot, schedule::jitter(persona.id, settings.jitter))
}

async fn reload<T: Ticker>(ticker: &T, settings: &Settings, entries: &mut HashMap<Uuid, Entry>, now: DateTime<Utc>) {
    let personas = match ticker.personas().await {
        Ok(personas) => personas,
        Err(err) => {
            tracing::warn!(%err, "loading personas failed; keeping the previous plan");
            return;
        }
    };
    let mut seen = std::collections::HashSet::new();
    for persona in personas {
        seen.insert(persona.id);
        let planned = plan(&persona, settings, now);
        if planned != persona.next_due_at
            && let Some(slot) = planned
        {
            ticker.set_next_due(persona.id, slot).await;
        }
        match entries.get_mut(&persona.id) {
            Some(entry) => {
                // A running entry keeps its slot, and so does one waiting to retry it: a
                // failed interval tick stamped `last_active_at`, which moves the plan on.
                // Otherwise adopt the stored plan (another replica may have moved it on).
                if !entry.running && entry.failures == 0 && entry.slot != planned {
                    entry.slot = planned;
                    entry.due = planned.map(|slot| due_of(&persona, slot, settings));
                    entry.failures = 0;
                } else if !entry.running && entry.due.is_none() {
                    entry.due = planned.map(|slot| due_of(&persona, slot, settings));
                }
                entry.persona = persona;
            }
            None => {
                let due = planned.map(|slot| due_of(&persona, slot, settings));
                entries.insert(
                    persona.id,
                    Entry {
                        persona,
                        slot: planned,
                        due,
                        failures: 0,
                        running: false,
                        now_requested: false,
                    },
                );
            }
        }
    }
    entries.retain(|id, entry| entry.running || seen.contains(id));
}

#[allow(clippy::too_many_arguments)]
async fn complete<T: Ticker>(
    ticker: &T,
    settings: &Settings,
    entries: &mut HashMap<Uuid, Entry>,
    id: Uuid,
    slot: Option<DateTime<Utc>>,
    outcome: RunOutcome,
    now: DateTime<Utc>,
) {
    let Some(entry) = entries.get_mut(&id) else { return };
    entry.running = false;
    let Some(slot) = slot else {
        // A one-off tick: the schedule is unchanged.
        return;
    };
    let zone = entry.persona.zone();
    let following = schedule::next_slot(&entry.persona.tick_cadence, zone, slot, Some(now));
    match outcome {
        RunOutcome::Ran { ok: false } => {
            entry.failures += 1;
            let backoff = settings
                .retry_backoff
                .saturating_mul(2u32.saturating_pow(entry.failures - 1));
            let retry_at = crate::time::after(now, backoff);
            if entry.failures < settings.max_attempts && following.is_none_or(|next| retry_at < next) {
                tracing::info!(persona = %entry.persona.name, attempt = entry.failures + 1, ?backoff, "retrying the slot");
                entry.due = Some(retry_at);
                return;
            }
            tracing::warn!(persona = %entry.persona.name, %slot, "slot failed; waiting for the next one");
            advance(ticker, settings, entry, following, now).await;
        }
        RunOutcome::Ran { ok: true } => advance(ticker, settings, entry, following, now).await,
        RunOutcome::NotRun => {
            // Someone else ran it, is running it, or it is settled: look again soon,
            // after the next reload has read what the store says.
            entry.due = Some(crate::time::after(now, settings.recheck_after));
            entry.slot = Some(slot);
        }
    }
}

async fn advance<T: Ticker>(
    ticker: &T,
    settings: &Settings,
    entry: &mut Entry,
    following: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    entry.failures = 0;
    let zone = entry.persona.zone();
    let next = following.and_then(|next| resolve(&entry.persona, zone, next, now, settings));
    entry.slot = next;
    entry.due = next.map(|slot| due_of(&entry.persona, slot, settings));
    if let Some(next) = next {
        entry.persona.next_due_at = Some(next);
        ticker.set_next_due(entry.persona.id, next).await;
    }
}
