//! The scheduler loop in paused (virtual) time against an in-memory host: cadences,
//! DST in Europe/Berlin, jitter, catch-up, retries, no overlap, the pool, the kill switch,
//! panics, busy slots, paused personas, draining at shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::model::tick::Trigger;
use persona_runner::scheduler::{self, CatchUp, Clock, Command, Port, RunOutcome, SchedulerSettings, Status};
use persona_runner::store::ScheduleRow;
use persona_runner::tick::TickPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn persona(n: u128, cadence: &str) -> ScheduleRow {
    ScheduleRow {
        id: Uuid::from_u128(n),
        tenant_id: DEFAULT_TENANT,
        tick_cadence: cadence.into(),
        time_zone: "UTC".into(),
        paused: false,
        last_active_at: None,
        next_due_at: None,
        target: None,
        changed_at: utc("2026-01-01T00:00:00Z"),
    }
}

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        jitter: Duration::ZERO,
        paused: false,
        catch_up: CatchUp::One,
        starting_deadline: Duration::from_secs(6 * 3600),
        max_attempts: 3,
        retry_backoff: Duration::from_secs(10),
        reload_every: Duration::from_secs(3600),
        sweep_every: Duration::from_secs(3600),
        busy_recheck: Duration::from_secs(90),
        shutdown_grace: Duration::from_secs(10),
        heartbeat_every: Duration::from_secs(3600),
    }
}

#[derive(Clone, Debug)]
struct Run {
    persona: Uuid,
    slot: Option<DateTime<Utc>>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    ok: bool,
}

/// Personas in memory, as the store keeps them; each tick sleeps `duration` of virtual time.
struct Fake {
    clock: Clock,
    personas: Mutex<Vec<ScheduleRow>>,
    runs: Mutex<Vec<Run>>,
    duration: Duration,
    /// Slots whose first `n` attempts fail.
    failing: Mutex<HashMap<(Uuid, DateTime<Utc>), u32>>,
    /// Personas whose next `n` ticks panic.
    panicking: Mutex<HashMap<Uuid, u32>>,
    /// Personas another runner is running until this time (claims say `Busy`).
    busy_until: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    /// Claims asked for, per persona (also the refused ones).
    claims: Mutex<HashMap<Uuid, u32>>,
    in_flight: Mutex<HashSet<Uuid>>,
    overlaps: Mutex<u32>,
    concurrent: Mutex<(usize, usize)>,
}

impl Fake {
    fn new(clock: Clock, personas: Vec<ScheduleRow>, duration: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock,
            personas: Mutex::new(personas),
            runs: Mutex::new(Vec::new()),
            duration,
            failing: Mutex::new(HashMap::new()),
            panicking: Mutex::new(HashMap::new()),
            busy_until: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            overlaps: Mutex::new(0),
            concurrent: Mutex::new((0, 0)),
        })
    }

    fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }

    fn starts(&self, persona: u128) -> Vec<DateTime<Utc>> {
        self.runs()
            .iter()
            .filter(|r| r.persona == Uuid::from_u128(persona))
            .map(|r| r.started)
            .collect()
    }

    fn claims(&self, persona: u128) -> u32 {
        self.claims
            .lock()
            .unwrap()
            .get(&Uuid::from_u128(persona))
            .copied()
            .unwrap_or(0)
    }

    /// Changes a persona as an API call would (its `changed_at` moves).
    fn edit(&self, persona: u128, change: impl FnOnce(&mut ScheduleRow)) {
        let now = self.clock.now();
        let mut personas = self.personas.lock().unwrap();
        let row = personas.iter_mut().find(|p| p.id == Uuid::from_u128(persona)).unwrap();
        change(row);
        row.changed_at = now;
    }

    async fn tick(&self, persona: Uuid, slot: Option<DateTime<Utc>>, cut: CancellationToken) -> RunOutcome {
        *self.claims.lock().unwrap().entry(persona).or_default() += 1;
        let row = self.personas.lock().unwrap().iter().find(|p| p.id == persona).cloned();
        let Some(row) = row else { return RunOutcome::Settled };
        if row.paused {
            return RunOutcome::Settled;
        }
        if self
            .busy_until
            .lock()
            .unwrap()
            .get(&persona)
            .is_some_and(|until| *until > self.clock.now())
        {
            return RunOutcome::Busy;
        }
        let panics = match self.panicking.lock().unwrap().get_mut(&persona) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if panics {
            let finished = self.clock.now();
            self.runs.lock().unwrap().push(Run {
                persona,
                slot,
                started: finished,
                finished,
                ok: false,
            });
            panic!("injected panic in a tick");
        }
        if !self.in_flight.lock().unwrap().insert(persona) {
            *self.overlaps.lock().unwrap() += 1;
        }
        {
            let mut c = self.concurrent.lock().unwrap();
            c.0 += 1;
            c.1 = c.1.max(c.0);
        }
        let started = self.clock.now();
        let cut_short = tokio::select! {
            () = tokio::time::sleep(self.duration) => false,
            () = cut.cancelled() => true,
        };
        let failing = slot.is_some_and(|slot| {
            let mut failing = self.failing.lock().unwrap();
            match failing.get_mut(&(persona, slot)) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        });
        let ok = !cut_short && !failing;
        let finished = self.clock.now();
        self.runs.lock().unwrap().push(Run {
            persona,
            slot,
            started,
            finished,
            ok,
        });
        // The tick engine stamps last_active_at when a tick finishes.
        if let Some(p) = self.personas.lock().unwrap().iter_mut().find(|p| p.id == persona) {
            p.last_active_at = Some(finished);
            p.changed_at = finished;
        }
        self.in_flight.lock().unwrap().remove(&persona);
        self.concurrent.lock().unwrap().0 -= 1;
        RunOutcome::Ran { ok }
    }
}

impl Port for Fake {
    async fn load(
        &self,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: usize,
    ) -> Result<Vec<ScheduleRow>, persona_runner::store::StoreError> {
        let mut rows: Vec<ScheduleRow> = self
            .personas
            .lock()
            .unwrap()
            .iter()
            .filter(|p| after.is_none_or(|after| (p.changed_at, p.id) > after))
            .cloned()
            .collect();
        rows.sort_by_key(|p| (p.changed_at, p.id));
        rows.truncate(limit);
        Ok(rows)
    }
    async fn ids(&self) -> Result<Vec<Uuid>, persona_runner::store::StoreError> {
        Ok(self.personas.lock().unwrap().iter().map(|p| p.id).collect())
    }
    fn runs_target(&self, target: Option<&str>) -> bool {
        target.is_none()
    }
    async fn save_plans(&self, plans: Vec<(Uuid, DateTime<Utc>)>) {
        let now = self.clock.now();
        let mut personas = self.personas.lock().unwrap();
        for (id, at) in plans {
            if let Some(p) = personas.iter_mut().find(|p| p.id == id) {
                p.next_due_at = Some(at);
                p.changed_at = now;
            }
        }
    }
    async fn run_slot(&self, persona: Uuid, slot: DateTime<Utc>, cut: CancellationToken) -> RunOutcome {
        self.tick(persona, Some(slot), cut).await
    }
    async fn run_now(&self, persona: Uuid, _trigger: Trigger, cut: CancellationToken) -> RunOutcome {
        self.tick(persona, None, cut).await
    }
    async fn sweep(&self, _now: DateTime<Utc>) {}
}

/// Starts the scheduler with a pool of `concurrency`.
fn start(
    fake: Arc<Fake>,
    settings: SchedulerSettings,
    concurrency: usize,
    clock: Clock,
) -> (mpsc::Sender<Command>, CancellationToken, tokio::task::JoinHandle<()>) {
    let (commands, receiver) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let wiring = scheduler::Wiring {
        host: fake,
        pool: TickPool::new(concurrency),
        settings,
        clock,
        commands: receiver,
        shutdown: shutdown.clone(),
        status: Arc::new(Status::default()),
    };
    let task = tokio::spawn(scheduler::run(wiring, || {}));
    (commands, shutdown, task)
}

/// Runs the scheduler for `length` of virtual time, then shuts it down.
async fn run_for(fake: Arc<Fake>, settings: SchedulerSettings, clock: Clock, length: Duration) {
    run_with(fake, settings, 4, clock, length).await;
}

async fn run_with(fake: Arc<Fake>, settings: SchedulerSettings, concurrency: usize, clock: Clock, length: Duration) {
    let (_commands, shutdown, task) = start(fake, settings, concurrency, clock);
    tokio::time::sleep(length).await;
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cron_slots_follow_berlin_across_both_dst_changes() {
    // 02:30 Berlin: skipped on 2026-03-29 (runs at 03:00 = 01:00 UTC), doubled on 2026-10-25.
    let berlin = || ScheduleRow {
        time_zone: "Europe/Berlin".into(),
        ..persona(1, "30 2 * * *")
    };
    let clock = Clock::starting_at(utc("2026-03-28T12:00:00Z"));
    let fake = Fake::new(clock, vec![berlin()], Duration::from_secs(60));
    run_for(fake.clone(), settings(), clock, Duration::from_secs(3 * 86_400)).await;
    assert_eq!(
        fake.starts(1),
        [
            utc("2026-03-29T01:00:00Z"),
            utc("2026-03-30T00:30:00Z"),
            utc("2026-03-31T00:30:00Z")
        ]
    );

    let clock = Clock::starting_at(utc("2026-10-24T12:00:00Z"));
    let fake = Fake::new(clock, vec![berlin()], Duration::from_secs(60));
    run_for(fake.clone(), settings(), clock, Duration::from_secs(2 * 86_400)).await;
    assert_eq!(
        fake.starts(1),
        [utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")],
        "the repeated hour runs once"
    );
}

#[tokio::test(start_paused = true)]
async fn interval_cadences_follow_the_last_activity() {
    let clock = Clock::starting_at(utc("2026-05-06T10:00:00Z")); // a Wednesday
    let weekdays = ScheduleRow {
        time_zone: "Europe/Berlin".into(),
        ..persona(3, "weekdays")
    };
    let fake = Fake::new(
        clock,
        vec![persona(1, "daily"), persona(2, "hourly"), weekdays],
        Duration::from_secs(30),
    );
    run_for(fake.clone(), settings(), clock, Duration::from_secs(5 * 86_400)).await;
    let daily = fake.starts(1);
    assert_eq!(daily[0], utc("2026-05-06T10:00:00Z"), "never active: due at once");
    assert_eq!(
        daily[1],
        utc("2026-05-07T10:00:30Z"),
        "then 24 h after the last activity ended"
    );
    assert_eq!(daily.len(), 5);
    // Each start is an hour after the previous tick ended (30 s later): k · 3630 s < 5 days.
    assert_eq!(
        fake.starts(2).len(),
        120,
        "hourly, each an hour after the last activity"
    );
    let hourly = fake.starts(2);
    assert_eq!(hourly[1] - hourly[0], chrono::Duration::seconds(3630));
    // Weekdays: Wed, Thu, Fri, then Monday 00:00 Berlin (Sunday 22:00 UTC).
    let weekdays = fake.starts(3);
    assert_eq!(weekdays.len(), 4, "{weekdays:?}");
    assert_eq!(weekdays[3], utc("2026-05-10T22:00:00Z"));
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_personas_sharing_a_slot() {
    let clock = Clock::starting_at(utc("2026-05-06T09:59:00Z"));
    let personas: Vec<ScheduleRow> = (1..=20).map(|n| persona(n, "0 10 * * *")).collect();
    let fake = Fake::new(clock, personas, Duration::from_secs(1));
    let settings = SchedulerSettings {
        jitter: Duration::from_secs(300),
        ..settings()
    };
    run_with(fake.clone(), settings, 20, clock, Duration::from_secs(600)).await;
    let starts: Vec<DateTime<Utc>> = fake.runs().iter().map(|r| r.started).collect();
    assert_eq!(starts.len(), 20);
    let slot = utc("2026-05-06T10:00:00Z");
    assert!(
        starts
            .iter()
            .all(|s| *s >= slot && *s < slot + chrono::Duration::seconds(300))
    );
    let distinct: HashSet<_> = starts.iter().collect();
    assert!(
        distinct.len() >= 15,
        "spread out: {} distinct start times",
        distinct.len()
    );
    for run in fake.runs() {
        assert_eq!(run.slot, Some(slot), "the claim key is the slot, not the jittered time");
        let expected = slot
            + chrono::Duration::from_std(scheduler::schedule::jitter(run.persona, Duration::from_secs(300))).unwrap();
        assert_eq!(run.started, expected, "the same offset every time");
    }
}

#[tokio::test(start_paused = true)]
async fn missed_slots_after_downtime_coalesce_into_one_run() {
    let now = utc("2026-05-06T12:20:00Z");
    let mut missed = persona(1, "0 * * * *");
    missed.next_due_at = Some(utc("2026-05-06T09:00:00Z")); // 09, 10, 11, 12 missed
    let clock = Clock::starting_at(now);
    let fake = Fake::new(clock, vec![missed.clone()], Duration::from_secs(10));
    run_for(fake.clone(), settings(), clock, Duration::from_secs(3600)).await;
    let runs = fake.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        (runs[0].started, runs[0].slot),
        (now, Some(utc("2026-05-06T12:00:00Z"))),
        "one run now, for the latest missed slot"
    );
    assert_eq!(runs[1].started, utc("2026-05-06T13:00:00Z"), "then the regular slots");

    // catch_up = none skips them; so does a deadline shorter than the latest one's delay (20 min).
    for settings in [
        SchedulerSettings {
            catch_up: CatchUp::None,
            ..settings()
        },
        SchedulerSettings {
            starting_deadline: Duration::from_secs(600),
            ..settings()
        },
    ] {
        let clock = Clock::starting_at(now);
        let fake = Fake::new(clock, vec![missed.clone()], Duration::from_secs(10));
        run_for(fake.clone(), settings, clock, Duration::from_secs(3600)).await;
        assert_eq!(fake.starts(1), [utc("2026-05-06T13:00:00Z")]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_persona_never_overlaps_itself_and_late_slots_coalesce() {
    // A slot every 10 s, ticks taking 25 s.
    let clock = Clock::starting_at(utc("2026-05-06T12:00:00Z"));
    let fake = Fake::new(clock, vec![persona(1, "*/10 * * * * *")], Duration::from_secs(25));
    run_for(fake.clone(), settings(), clock, Duration::from_secs(120)).await;
    assert_eq!(*fake.overlaps.lock().unwrap(), 0);
    let runs = fake.runs();
    for pair in runs.windows(2) {
        assert!(pair[1].started >= pair[0].finished, "{pair:?}");
    }
    assert!(
        runs.len() >= 4 && runs.len() <= 5,
        "one run per 25 s, not one per slot: {}",
        runs.len()
    );
}

#[tokio::test(start_paused = true)]
async fn the_pool_bounds_concurrent_ticks() {
    let clock = Clock::starting_at(utc("2026-05-06T11:59:59Z"));
    let personas: Vec<ScheduleRow> = (1..=10).map(|n| persona(n, "0 12 * * *")).collect();
    let fake = Fake::new(clock, personas, Duration::from_secs(10));
    run_with(fake.clone(), settings(), 3, clock, Duration::from_secs(120)).await;
    assert_eq!(fake.runs().len(), 10);
    assert_eq!(fake.concurrent.lock().unwrap().1, 3);
}

#[tokio::test(start_paused = true)]
async fn failed_ticks_retry_with_backoff_within_their_slot() {
    let clock = Clock::starting_at(utc("2026-05-06T11:59:59Z"));
    let fake = Fake::new(
        clock,
        vec![persona(1, "0 12 * * *"), persona(2, "0 12 * * *")],
        Duration::from_secs(1),
    );
    let slot = utc("2026-05-06T12:00:00Z");
    fake.failing.lock().unwrap().insert((Uuid::from_u128(1), slot), 1);
    fake.failing.lock().unwrap().insert((Uuid::from_u128(2), slot), 5);
    run_for(fake.clone(), settings(), clock, Duration::from_secs(600)).await;
    let runs = fake.runs();
    let one: Vec<_> = runs.iter().filter(|r| r.persona == Uuid::from_u128(1)).collect();
    assert_eq!(one.iter().map(|r| r.ok).collect::<Vec<_>>(), [false, true]);
    assert_eq!(
        one[1].started - one[0].finished,
        chrono::Duration::seconds(10),
        "first backoff"
    );
    let two: Vec<_> = runs.iter().filter(|r| r.persona == Uuid::from_u128(2)).collect();
    assert_eq!(two.len(), 3, "max_attempts, then wait for the next slot");
    assert_eq!(
        two[2].started - two[1].finished,
        chrono::Duration::seconds(20),
        "exponential"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_interval_tick_is_retried_although_reloads_replan_it() {
    let clock = Clock::starting_at(utc("2026-05-06T12:00:00Z"));
    let daily = ScheduleRow {
        last_active_at: Some(utc("2026-05-05T11:00:00Z")),
        ..persona(1, "daily")
    };
    let fake = Fake::new(clock, vec![daily], Duration::from_secs(1));
    // Due 24 h after the last activity; its first attempt fails.
    let slot = utc("2026-05-06T11:00:00Z");
    fake.failing.lock().unwrap().insert((Uuid::from_u128(1), slot), 1);
    // Reloads (every 2 s) come before the retry (after 10 s) and see the failed tick's
    // fresh last_active_at.
    let settings = SchedulerSettings {
        reload_every: Duration::from_secs(2),
        ..settings()
    };
    run_for(fake.clone(), settings, clock, Duration::from_secs(120)).await;
    let runs = fake.runs();
    assert_eq!(
        runs.iter().map(|r| (r.slot, r.ok)).collect::<Vec<_>>(),
        [(Some(slot), false), (Some(slot), true)]
    );
    assert_eq!(runs[1].started - runs[0].finished, chrono::Duration::seconds(10));
}

#[tokio::test(start_paused = true)]
async fn the_kill_switch_holds_dispatch_and_signals_tick_everyone() {
    let clock = Clock::starting_at(utc("2026-05-06T12:00:00Z"));
    let mut paused_one = persona(2, "0 0 1 1 *");
    paused_one.paused = true;
    let fake = Fake::new(clock, vec![persona(1, "0 0 1 1 *"), paused_one], Duration::from_secs(1));
    let (commands, shutdown, task) = start(
        fake.clone(),
        SchedulerSettings {
            paused: true,
            ..settings()
        },
        4,
        clock,
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    commands.send(Command::TickAllNow(Trigger::Signal)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(fake.runs().is_empty(), "scheduler.paused holds everything");
    commands.send(Command::Reload(Box::new(settings()))).await.unwrap();
    commands.send(Command::TickAllNow(Trigger::Signal)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let runs = fake.runs();
    assert_eq!(runs.len(), 1, "only the unpaused persona: {runs:?}");
    assert_eq!((runs[0].persona, runs[0].slot), (Uuid::from_u128(1), None));
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_then_cuts_after_the_grace() {
    let clock = Clock::starting_at(utc("2026-05-06T11:59:59Z"));
    let fake = Fake::new(
        clock,
        vec![persona(1, "0 12 * * *"), persona(2, "0 12 * * *")],
        Duration::from_secs(30),
    );
    let started = tokio::time::Instant::now();
    let (_commands, shutdown, task) = start(fake.clone(), settings(), 4, clock);
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(15), "5 s, then the 10 s grace");
    let runs = fake.runs();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| !r.ok), "cut and recorded as not ok");
}

#[tokio::test(start_paused = true)]
async fn reloads_do_not_postpone_a_persona_that_never_ran() {
    // Reloading every 15 s must not move the first slot of a never-active persona. The
    // jitter offset of persona 1 is 44 s, so a moving slot would be caught here.
    let clock = Clock::starting_at(utc("2026-05-06T10:00:00Z"));
    let fake = Fake::new(clock, vec![persona(1, "daily")], Duration::from_secs(1));
    let settings = SchedulerSettings {
        jitter: Duration::from_secs(60),
        reload_every: Duration::from_secs(15),
        ..settings()
    };
    run_for(fake.clone(), settings, clock, Duration::from_secs(120)).await;
    let starts = fake.starts(1);
    assert_eq!(starts.len(), 1, "{starts:?}");
    let offset = scheduler::schedule::jitter(Uuid::from_u128(1), Duration::from_secs(60));
    assert_eq!(
        starts[0],
        utc("2026-05-06T10:00:00Z") + chrono::Duration::from_std(offset).unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn catch_up_none_runs_every_slot_within_its_jitter_despite_reloads() {
    // A 5-minute cron for an hour, the default 60 s jitter and 15 s reloads: a reload
    // between a slot and slot + jitter must not count the slot as missed.
    let clock = Clock::starting_at(utc("2026-05-06T12:00:30Z"));
    let personas: Vec<ScheduleRow> = (1..=20).map(|n| persona(n, "*/5 * * * *")).collect();
    let fake = Fake::new(clock, personas, Duration::from_secs(2));
    let settings = SchedulerSettings {
        catch_up: CatchUp::None,
        jitter: Duration::from_secs(60),
        reload_every: Duration::from_secs(15),
        ..settings()
    };
    // Until 13:01:40: the 13:00 slot plus the largest jitter and the tick's length.
    run_with(fake.clone(), settings, 20, clock, Duration::from_secs(3670)).await;
    for n in 1..=20 {
        let slots: Vec<_> = fake
            .runs()
            .iter()
            .filter(|r| r.persona == Uuid::from_u128(n))
            .map(|r| r.slot.unwrap())
            .collect();
        // 12:05 … 13:00: twelve slots in the hour after 12:00:30.
        assert_eq!(slots.len(), 12, "persona {n}: {slots:?}");
        assert_eq!(slots[0], utc("2026-05-06T12:05:00Z"));
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_at_least_the_period_does_not_starve_a_persona() {
    let clock = Clock::starting_at(utc("2026-05-06T12:00:00Z"));
    let fake = Fake::new(clock, vec![persona(7, "*/2 * * * *")], Duration::from_secs(1));
    let settings = SchedulerSettings {
        jitter: Duration::from_secs(600),
        ..settings()
    };
    run_for(fake.clone(), settings, clock, Duration::from_secs(1200)).await;
    let runs = fake.runs();
    assert!(runs.len() >= 9, "a slot every 2 minutes for 20 minutes: {}", runs.len());
    for run in &runs {
        let late = run.started - run.slot.unwrap();
        assert!(
            late < chrono::Duration::seconds(60),
            "jitter capped at half the period: {late}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_tick_that_panics_is_a_failed_attempt_and_the_persona_keeps_its_schedule() {
    let clock = Clock::starting_at(utc("2026-05-06T11:59:59Z"));
    let fake = Fake::new(clock, vec![persona(1, "0 * * * *")], Duration::from_secs(1));
    fake.panicking.lock().unwrap().insert(Uuid::from_u128(1), 3);
    run_for(fake.clone(), settings(), clock, Duration::from_secs(3 * 3600)).await;
    let runs = fake.runs();
    let slots: Vec<_> = runs.iter().map(|r| (r.slot.unwrap(), r.ok)).collect();
    let noon = utc("2026-05-06T12:00:00Z");
    // Three panicking attempts use up the 12:00 slot; 13:00 and 14:00 run.
    assert_eq!(
        slots,
        [
            (noon, false),
            (noon, false),
            (noon, false),
            (utc("2026-05-06T13:00:00Z"), true),
            (utc("2026-05-06T14:00:00Z"), true)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_persona_is_never_claimed() {
    let clock = Clock::starting_at(utc("2026-05-06T12:00:00Z"));
    let fake = Fake::new(
        clock,
        vec![persona(1, "*/10 * * * * *"), persona(2, "*/10 * * * * *")],
        Duration::from_secs(1),
    );
    let settings = SchedulerSettings {
        reload_every: Duration::from_secs(15),
        ..settings()
    };
    let (_commands, shutdown, task) = start(fake.clone(), settings, 4, clock);
    tokio::time::sleep(Duration::from_secs(35)).await;
    fake.edit(2, |p| p.paused = true);
    // The next load (within 15 s) sees the pause.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let claims_when_seen = fake.claims(2);
    tokio::time::sleep(Duration::from_secs(600)).await;
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(fake.claims(2), claims_when_seen, "no claim after the pause was loaded");
    assert!(fake.claims(1) >= 60, "the other persona goes on: {}", fake.claims(1));
}

#[tokio::test(start_paused = true)]
async fn a_slot_busy_elsewhere_is_claimed_again_once_the_lease_could_have_expired() {
    // Another runner claimed the 12:00 slot and died: claims say `Busy` until its lease
    // is swept (2 minutes later here).
    let clock = Clock::starting_at(utc("2026-05-06T11:59:59Z"));
    let fake = Fake::new(clock, vec![persona(1, "0 * * * *")], Duration::from_secs(1));
    fake.busy_until
        .lock()
        .unwrap()
        .insert(Uuid::from_u128(1), utc("2026-05-06T12:02:00Z"));
    run_for(fake.clone(), settings(), clock, Duration::from_secs(600)).await;
    let runs = fake.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].slot,
        Some(utc("2026-05-06T12:00:00Z")),
        "the same slot, claimed again"
    );
    assert_eq!(
        runs[0].started,
        utc("2026-05-06T12:03:00Z"),
        "after busy_recheck (90 s) twice"
    );
    assert_eq!(
        fake.claims(1),
        3,
        "two busy answers, then the run; no claim every 500 ms"
    );
}
