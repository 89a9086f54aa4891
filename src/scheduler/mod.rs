//! The daemon's scheduler: which persona is due when, and starting due ticks in the tick
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
//! It scales with what happens, not with how many personas exist: each persona is a small
//! [`Entry`] (its cadence interned, never its prompt), due times sit in a priority queue
//! (a wake looks at what is due, not at everyone), a loader task off the dispatch path
//! reads only the personas whose `changed_at` moved since the last load, and new plans are
//! written in batches. A paused persona has no due time at all. While the store takes no
//! writes, nothing is claimed; the store is probed with backoff until it does.
//!
//! The loop talks to the world through [`Port`] and keeps time with [`Clock`]. Tests drive
//! it in paused (virtual) time with an in-memory host; the daemon plugs in the store and
//! the tick runner.

mod edges;
mod loader;
mod timers;
pub use crate::model::schedule;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::model::tick::Trigger;
use crate::store::ScheduleRow;
use crate::tick::TickPool;
pub use edges::{Clock, Command, Port, RunOutcome, SchedulerSettings, Status};
use loader::{Loaded, loader};
pub use schedule::{CatchUp, Rule};
use timers::Timers;

/// One persona as the scheduler keeps it: how and when it is due, never its definition.
#[derive(Debug)]
struct Entry {
    rule: Arc<(Rule, Duration)>,
    zone: Tz,
    paused: bool,
    /// Its target runs here.
    runnable: bool,
    last_active_at: Option<DateTime<Utc>>,
    next_due_at: Option<DateTime<Utc>>,
    changed_at: DateTime<Utc>,
    /// The slot being served (also the claim key), if one is planned.
    slot: Option<DateTime<Utc>>,
    /// When to try next: the slot plus jitter, a retry, or a recheck.
    due: Option<DateTime<Utc>>,
    /// Failed attempts of the current slot in this runner.
    failures: u32,
    running: bool,
    /// The key this entry has in the queue, if any.
    queued: Option<DateTime<Utc>>,
}

impl Entry {
    fn rule(&self) -> &Rule {
        &self.rule.0
    }

    fn period(&self) -> Duration {
        self.rule.1
    }
}

#[derive(Clone, Copy, Debug)]
enum Job {
    Slot(DateTime<Utc>),
    Now(Trigger),
}

struct Scheduler<T: Port> {
    host: Arc<T>,
    pool: Arc<TickPool>,
    settings: SchedulerSettings,
    clock: Clock,
    entries: HashMap<Uuid, Entry>,
    /// Due times, earliest first: a wake looks only at what is due.
    queue: BTreeSet<(DateTime<Utc>, Uuid)>,
    rules: HashMap<String, Arc<(Rule, Duration)>>,
    /// One-off ticks asked for (tick-all), in order.
    now_requested: VecDeque<(Uuid, Trigger)>,
    running: JoinSet<(Uuid, Job, RunOutcome)>,
    jobs: HashMap<tokio::task::Id, (Uuid, Job)>,
    unsaved: Vec<(Uuid, DateTime<Utc>)>,
    status: Arc<Status>,
}

/// What a scheduler runs with.
pub struct Wiring<T: Port> {
    pub host: Arc<T>,
    /// The process's tick pool (shared with one-off ticks).
    pub pool: Arc<TickPool>,
    pub settings: SchedulerSettings,
    pub clock: Clock,
    pub commands: mpsc::Receiver<Command>,
    pub shutdown: CancellationToken,
    pub status: Arc<Status>,
}

/// Runs until `shutdown`: then no new ticks start, running ones get the grace period,
/// then they are cut (and recorded by the host), and the loop returns. `heartbeat` is
/// called on every wake (the watchdog checks it).
pub async fn run<T: Port>(wiring: Wiring<T>, heartbeat: impl Fn() + Send) {
    let Wiring {
        host,
        pool,
        settings,
        clock,
        mut commands,
        shutdown,
        status,
    } = wiring;
    let (loaded_in, mut loaded) = mpsc::channel(4);
    let (every_in, every) = watch::channel(settings.reload_every);
    let reload_now = Arc::new(tokio::sync::Notify::new());
    let loader_stop = shutdown.child_token();
    let loader_task = tokio::spawn(loader(
        host.clone(),
        clock,
        loaded_in,
        every,
        reload_now.clone(),
        loader_stop.clone(),
    ));
    let mut scheduler = Scheduler {
        host,
        pool,
        settings,
        clock,
        entries: HashMap::new(),
        queue: BTreeSet::new(),
        rules: HashMap::new(),
        now_requested: VecDeque::new(),
        running: JoinSet::new(),
        jobs: HashMap::new(),
        unsaved: Vec::new(),
        status,
    };
    let mut timers = Timers::new(scheduler.clock.now());
    loop {
        heartbeat();
        let now = scheduler.clock.now();
        timers.notice_clock_steps(now);
        scheduler.maintain(now, &mut timers).await;
        if scheduler.host.writable() && !scheduler.settings.paused {
            scheduler.dispatch(now);
        }
        scheduler.save_plans();
        let waiting = scheduler.queue.range(..(now, Uuid::max())).count() + scheduler.now_requested.len();
        scheduler.host.observe_load(waiting, scheduler.running.len());
        let wake = scheduler.next_wake(now, &timers);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(scheduler.clock.instant_at(wake)) => {}
            Some(done) = scheduler.running.join_next_with_id(), if !scheduler.running.is_empty() => {
                scheduler.finished(done);
            }
            Some(found) = loaded.recv() => scheduler.loaded(found),
            Some(command) = commands.recv() => match command {
                Command::TickAllNow(trigger) => scheduler.tick_all(trigger),
                Command::Reload(new) => {
                    let _ = every_in.send(new.reload_every);
                    scheduler.settings = *new;
                    scheduler.replan_all();
                    reload_now.notify_one();
                }
            },
        }
    }
    loader_stop.cancel();
    let _ = loader_task.await;
    scheduler.save_plans();
    scheduler.drain().await;
}

impl<T: Port> Scheduler<T> {
    /// Starts what is due, one-off requests first, while the pool has room.
    fn dispatch(&mut self, now: DateTime<Utc>) {
        while let Some(&(id, trigger)) = self.now_requested.front() {
            let Some(entry) = self.entries.get(&id) else {
                self.now_requested.pop_front();
                continue;
            };
            if entry.running {
                self.now_requested.pop_front();
                continue;
            }
            let Some(permit) = self.pool.try_permit() else { return };
            self.now_requested.pop_front();
            self.start(id, Job::Now(trigger), permit);
        }
        while let Some(&(due, id)) = self.queue.first() {
            if due > now {
                break;
            }
            let slot = self.entries.get(&id).and_then(|e| e.slot);
            let Some(slot) = slot else {
                self.unqueue(id);
                continue;
            };
            let Some(permit) = self.pool.try_permit() else { break };
            self.unqueue(id);
            self.host.observe_lag((now - due).to_std().unwrap_or_default());
            self.start(id, Job::Slot(slot), permit);
        }
    }

    fn start(&mut self, id: Uuid, job: Job, permit: tokio::sync::OwnedSemaphorePermit) {
        self.unqueue(id);
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.running = true;
        let (host, cut) = (self.host.clone(), self.pool.cut());
        let handle = self.running.spawn(async move {
            let _permit = permit;
            let outcome = match job {
                Job::Slot(slot) => host.run_slot(id, slot, cut).await,
                Job::Now(trigger) => host.run_now(id, trigger, cut).await,
            };
            (id, job, outcome)
        });
        self.jobs.insert(handle.id(), (id, job));
    }

    /// A run ended, or its task panicked (then it counts as a failed run: the persona
    /// keeps its schedule).
    fn finished(&mut self, done: Result<(tokio::task::Id, (Uuid, Job, RunOutcome)), tokio::task::JoinError>) {
        let (task, id, job, outcome) = match done {
            Ok((task, (id, job, outcome))) => (task, id, job, outcome),
            Err(err) => {
                let Some(&(id, job)) = self.jobs.get(&err.id()) else {
                    return;
                };
                tracing::error!(persona = %id, %err, "a tick task panicked; the persona keeps its schedule");
                (err.id(), id, job, RunOutcome::Ran { ok: false })
            }
        };
        self.jobs.remove(&task);
        self.complete(id, job, outcome, self.clock.now());
    }

    fn complete(&mut self, id: Uuid, job: Job, outcome: RunOutcome, now: DateTime<Utc>) {
        let settings = self.settings.clone();
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.running = false;
        let Job::Slot(slot) = job else {
            // A one-off tick: the schedule is unchanged (its due time, if one passed while
            // it ran, is served now).
            self.requeue(id);
            return;
        };
        let following = schedule::next_slot(entry.rule(), entry.zone, slot, Some(now));
        match outcome {
            RunOutcome::Ran { ok: false } => {
                entry.failures += 1;
                let backoff = settings
                    .retry_backoff
                    .saturating_mul(2u32.saturating_pow(entry.failures - 1));
                let retry_at = crate::time::after(now, backoff);
                if entry.failures < settings.max_attempts && following.is_none_or(|next| retry_at < next) {
                    tracing::info!(persona = %id, attempt = entry.failures + 1, ?backoff, "retrying the slot");
                    entry.due = Some(retry_at);
                    self.requeue(id);
                    return;
                }
                tracing::warn!(persona = %id, %slot, "slot failed; waiting for the next one");
                self.advance(id, following, now);
            }
            RunOutcome::Ran { ok: true } | RunOutcome::Settled => self.advance(id, following, now),
            RunOutcome::Busy => {
                // Another runner's tick: look again once a dead runner's lease has
                // expired and been swept, so an abandoned slot is claimed again.
                entry.due = Some(crate::time::after(now, settings.busy_recheck));
                self.requeue(id);
            }
        }
    }

    /// Moves a persona on to the slot after the one it served.
    fn advance(&mut self, id: Uuid, following: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let settings = &self.settings;
        let Some(entry) = self.entries.get_mut(&id) else { return };
        entry.failures = 0;
        let next = following.and_then(|next| resolve(entry, next, now, settings));
        entry.slot = next;
        entry.due = next
            .filter(|_| entry.runnable && !entry.paused)
            .map(|slot| due_of(id, entry, slot, settings));
        if let Some(next) = next
            && entry.next_due_at != Some(next)
        {
            entry.next_due_at = Some(next);
            self.unsaved.push((id, next));
        }
        self.requeue(id);
    }

    /// Puts a persona's due time in the queue (in place of its old one).
    fn requeue(&mut self, id: Uuid) {
        self.unqueue(id);
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if let Some(due) = entry.due
            && !entry.running
        {
            self.queue.insert((due, id));
            entry.queued = Some(due);
        }
    }

    /// Takes a persona out of the queue.
    fn unqueue(&mut self, id: Uuid) {
        if let Some(due) = self.entries.get_mut(&id).and_then(|e| e.queued.take()) {
            self.queue.remove(&(due, id));
        }
    }

    fn tick_all(&mut self, trigger: Trigger) {
        if self.settings.paused {
            return;
        }
        let mut ids: Vec<Uuid> = self
            .entries
            .iter()
            .filter(|(_, e)| e.runnable && !e.paused)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        self.now_requested.extend(ids.into_iter().map(|id| (id, trigger)));
    }

    fn rule_of(&mut self, cadence: &str) -> Option<Arc<(Rule, Duration)>> {
        if let Some(rule) = self.rules.get(cadence) {
            return Some(rule.clone());
        }
        let rule = Rule::of(&cadence.parse().ok()?)?;
        let period = rule.period();
        let interned = Arc::new((rule, period));
        self.rules.insert(cadence.to_string(), interned.clone());
        Some(interned)
    }

    fn loaded(&mut self, found: Loaded) {
        let now = self.clock.now();
        match found {
            Loaded::Rows(rows) => {
                for row in rows {
                    self.apply(row, now);
                }
            }
            Loaded::FirstLoadDone => {
                self.status.loaded.store(true, Ordering::Release);
                tracing::info!(personas = self.entries.len(), "scheduler loaded the personas");
            }
            Loaded::Ids(ids) => {
                let keep: std::collections::HashSet<Uuid> = ids.into_iter().collect();
                let gone: Vec<Uuid> = self
                    .entries
                    .iter()
                    .filter(|(id, entry)| !entry.running && !keep.contains(*id))
                    .map(|(id, _)| *id)
                    .collect();
                for id in gone {
                    self.unqueue(id);
                    self.entries.remove(&id);
                }
            }
        }
        self.status.scheduled.store(self.entries.len(), Ordering::Relaxed);
        crate::metrics::global().scheduled(self.entries.len());
    }

    /// Takes one changed persona: new, edited, paused or resumed, or moved on by another
    /// replica.
    fn apply(&mut self, row: ScheduleRow, now: DateTime<Utc>) {
        // Already known: an older change, or the same one read again (loads overlap).
        if self.entries.get(&row.id).is_some_and(|e| {
            e.changed_at > row.changed_at
                || (e.changed_at == row.changed_at
                    && e.paused == row.paused
                    && e.last_active_at == row.last_active_at
                    && e.next_due_at == row.next_due_at)
        }) {
            return;
        }
        let Some(rule) = self.rule_of(&row.tick_cadence) else {
            tracing::warn!(persona = %row.id, cadence = %row.tick_cadence, "a stored cadence does not parse; the persona is not scheduled");
            return;
        };
        let zone = crate::model::persona::parse_time_zone(&row.time_zone).unwrap_or(chrono_tz::UTC);
        let runnable = self.host.runs_target(row.target.as_deref());
        let entry = self.entries.entry(row.id).or_insert_with(|| Entry {
            rule: rule.clone(),
            zone,
            paused: row.paused,
            runnable,
            last_active_at: row.last_active_at,
            next_due_at: row.next_due_at,
            changed_at: row.changed_at,
            slot: None,
            due: None,
            failures: 0,
            running: false,
            queued: None,
        });
        entry.rule = rule;
        entry.zone = zone;
        entry.paused = row.paused;
        entry.runnable = runnable;
        entry.last_active_at = row.last_active_at;
        entry.next_due_at = row.next_due_at;
        entry.changed_at = row.changed_at;
        // A running entry keeps its slot, and so does one waiting to retry it (a failed
        // interval tick stamped `last_active_at`, which moves the plan on).
        if !entry.running && entry.failures == 0 {
            self.replan(row.id, now);
        }
    }

    /// Plans a persona afresh from what it is and what the store says.
    fn replan(&mut self, id: Uuid, now: DateTime<Utc>) {
        let settings = &self.settings;
        let Some(entry) = self.entries.get_mut(&id) else { return };
        let planned = plan(entry, settings, now);
        entry.slot = planned;
        entry.due = planned
            .filter(|_| entry.runnable && !entry.paused)
            .map(|slot| due_of(id, entry, slot, settings));
        if let Some(slot) = planned
            && entry.next_due_at != Some(slot)
        {
            entry.next_due_at = Some(slot);
            self.unsaved.push((id, slot));
        }
        self.requeue(id);
    }

    fn replan_all(&mut self) {
        let now = self.clock.now();
        let ids: Vec<Uuid> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.running && e.failures == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.replan(id, now);
        }
    }

    /// Writes new plans in one batch, off the dispatch path.
    fn save_plans(&mut self) {
        if self.unsaved.is_empty() {
            return;
        }
        let plans = std::mem::take(&mut self.unsaved);
        let host = self.host.clone();
        tokio::spawn(async move { host.save_plans(plans).await });
    }

    /// No new ticks; running ones get the grace period, then they are cut.
    async fn drain(&mut self) {
        if self.running.is_empty() {
            return;
        }
        tracing::info!(running = self.running.len(), grace = ?self.settings.shutdown_grace, "draining running ticks");
        let grace = self.settings.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = self.running.join_next_with_id().await {
                self.finished(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                running = self.running.len(),
                "shutdown grace over: cutting the running ticks"
            );
            self.pool.cut().cancel();
            while let Some(done) = self.running.join_next_with_id().await {
                self.finished(done);
            }
        }
    }
}

/// The slot to serve for a persona. Interval cadences (`hourly`, `daily`, `weekdays`)
/// follow the reference semantics: due a period after the last activity, whoever caused
/// it. Cron cadences continue from the stored next slot.
fn plan(entry: &Entry, settings: &SchedulerSettings, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match (entry.rule(), entry.next_due_at, entry.last_active_at) {
        (Rule::Cron(_), Some(stored), _) => resolve(entry, stored, now, settings),
        // Never active: keep the first slot planned for it, or it would move with every load.
        (_, Some(stored), None) => Some(stored),
        _ => schedule::next_slot(entry.rule(), entry.zone, now, entry.last_active_at),
    }
}

/// A candidate slot as it stands at `now`. A slot whose time has come within its jitter
/// (plus a little slack for loads and lag) is current, not missed. A cron slot further in
/// the past means slots were missed (downtime, or a tick that ran long): they coalesce
/// into one run of the latest missed slot, or are skipped per the catch-up policy. An
/// interval slot in the past is simply due.
fn resolve(
    entry: &Entry,
    candidate: DateTime<Utc>,
    now: DateTime<Utc>,
    settings: &SchedulerSettings,
) -> Option<DateTime<Utc>> {
    let slack = settings.jitter.min(entry.period() / 2) + Duration::from_secs(60).min(entry.period() / 4);
    if crate::time::after(candidate, slack) >= now {
        return Some(candidate);
    }
    match schedule::latest_slot(entry.rule(), entry.zone, now) {
        Some(latest) => {
            let latest = latest.max(candidate);
            // The latest slot may itself still be current (it came due moments ago).
            if crate::time::after(latest, slack) >= now {
                return Some(latest);
            }
            schedule::catch_up(latest, now, settings.catch_up, settings.starting_deadline)
                .or_else(|| schedule::next_slot(entry.rule(), entry.zone, now, None))
        }
        None => Some(candidate),
    }
}

fn due_of(id: Uuid, entry: &Entry, slot: DateTime<Utc>, settings: &SchedulerSettings) -> DateTime<Utc> {
    crate::time::after(slot, schedule::jitter_within(id, settings.jitter, entry.period()))
}
