//! The scheduler loop in paused (virtual) time against an in-memory ticker: cadences,
//! DST in Europe/Berlin, jitter, catch-up, retries, no overlap, the pool, the kill switch,
//! draining at shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use persona_runner::persona::{Cadence, DEFAULT_TENANT, Persona};
use persona_runner::scheduler::{self, CatchUp, Clock, Command, RunOutcome, Settings, Ticker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn persona(n: u128, cadence: &str) -> Persona {
    let now = utc("2026-01-01T00:00:00Z");
    Persona {
        id: Uuid::from_u128(n),
        tenant_id: DEFAULT_TENANT,
        user_id: Some(Uuid::from_u128(1000 + n)),
        email: Some(format!("p{n}@mana.test")),
        name: format!("P{n}"),
        archetype: "solo-dev".into(),
        system_prompt: String::new(),
        module_mix: Default::default(),
        tick_cadence: cadence.parse::<Cadence>().unwrap(),
        time_zone: "UTC".into(),
        locale: None,
        paused: false,
        last_active_at: None,
        next_due_at: None,
        description: None,
        flow: None,
        role_index: None,
        primary_authority: None,
        decision_focus: None,
        primary_dashboard: None,
        key_metrics: vec![],
        detail_level: None,
        headline_type: None,
        hero_chart_type: None,
        context_factors: vec![],
        required_data_sources: vec![],
        actions: vec![],
        default_profile: None,
        page_templates: vec![],
        created_at: now,
        updated_at: now,
    }
}

fn settings() -> Settings {
    Settings {
        concurrency: 4,
        jitter: Duration::ZERO,
        paused: false,
        catch_up: CatchUp::One,
        starting_deadline: Duration::from_secs(6 * 3600),
        max_attempts: 3,
        retry_backoff: Duration::from_secs(10),
        reload_every: Duration::from_secs(3600),
        sweep_every: Duration::from_secs(3600),
        recheck_after: Duration::from_secs(1),
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

/// Personas in memory; each tick sleeps `duration` of virtual time.
struct Fake {
    clock: Clock,
    personas: Mutex<Vec<Persona>>,
    runs: Mutex<Vec<Run>>,
    duration: Duration,
    /// Slots whose first `n` attempts fail.
    failing: Mutex<HashMap<(Uuid, DateTime<Utc>), u32>>,
    in_flight: Mutex<HashSet<Uuid>>,
    overlaps: Mutex<u32>,
    concurrent: Mutex<(usize, usize)>,
}

impl Fake {
    fn new(clock: Clock, personas: Vec<Persona>, duration: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock,
            personas: Mutex::new(personas),
            runs: Mutex::new(Vec::new()),
            duration,
            failing: Mutex::new(HashMap::new()),
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

    async fn tick(&self, persona: Persona, slot: Option<DateTime<Utc>>, cut: CancellationToken) -> RunOutcome {
        if !self.in_flight.lock().unwrap().insert(persona.id) {
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
            match failing.get_mut(&(persona.id, slot)) {
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
            persona: persona.id,
            slot,
            started,
            finished,
            ok,
        });
        // The tick engine stamps last_active_at when a tick finishes.
        if let Some(p) = self.personas.lock().unwrap().iter_mut().find(|p| p.id == persona.id) {
            p.last_active_at = Some(finished);
        }
        self.in_flight.lock().unwrap().remove(&persona.id);
        self.concurrent.lock().unwrap().0 -= 1;
        RunOutcome::Ran { ok }
    }
}

impl Ticker for Fake {
    async fn personas(&self) -> Result<Vec<Persona>, String> {
        Ok(self.personas.lock().unwrap().clone())
    }
    async fn set_next_due(&self, persona: Uuid, at: DateTime<Utc>) {
        if let Some(p) = self.personas.lock().unwrap().iter_mut().find(|p| p.id == persona) {
            p.next_due_at = Some(at);
        }
    }
    async fn run_slot(&self, persona: Persona, slot: DateTime<Utc>, cut: CancellationToken) -> RunOutcome {
        self.tick(persona, Some(slot), cut).await
    }
    async fn run_now(&self, persona: Persona, cut: CancellationToken) -> RunOutcome {
        self.tick(persona, None, cut).await
    }
    async fn sweep(&self, _now: DateTime<Utc>) {}
}

/// Runs the scheduler for `length` of virtual time, then shuts it down.
async fn run_for(fake: Arc<Fake>, settings: Settings, clock: Clock, length: Duration) -> mpsc::Sender<Command> {
    let (commands, receiver) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(scheduler::run(fake, settings, clock, receiver, shutdown.clone(), || {}));
    tokio::time::sleep(length).await;
    shutdown.cancel();
    task.await.unwrap();
    commands
}

#[tokio::test(start_paused = true)]
async fn cron_slots_follow_berlin_across_both_dst_changes() {
    // 02:30 Berlin: skipped on 2026-03-29 (runs at 03:00 = 01:00 UTC), doubled on 2026-10-25.
    let berlin = || Persona {
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
    let weekdays = Persona {
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
    let personas: Vec<Persona> = (1..=20).map(|n| persona(n, "0 10 * * *")).collect();
    let fake = Fake::new(clock, personas, Duration::from_secs(1));
    let settings = Settings {
        jitter: Duration::from_secs(300),
        concurrency: 20,
        ..settings()
    };
    run_for(fake.clone(), settings, clock, Duration::from_secs(600)).await;
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
        Settings {
            catch_up: CatchUp::None,
            ..settings()
        },
        Settings {
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
    let personas: Vec<Persona> = (1..=10).map(|n| persona(n, "0 12 * * *")).collect();
    let fake = Fake::new(clock, personas, Duration::from_secs(10));
    run_for(
        fake.clone(),
        Settings {
            concurrency: 3,
            ..settings()
        },
        clock,
        Duration::from_secs(120),
    )
    .await;
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
    let daily = Persona {
        last_active_at: Some(utc("2026-05-05T11:00:00Z")),
        ..persona(1, "daily")
    };
    let fake = Fake::new(clock, vec![daily], Duration::from_secs(1));
    // Due 24 h after the last activity; its first attempt fails.
    let slot = utc("2026-05-06T11:00:00Z");
    fake.failing.lock().unwrap().insert((Uuid::from_u128(1), slot), 1);
    // Reloads (every 2 s) come before the retry (after 10 s) and see the failed tick's
    // fresh last_active_at.
    let settings = Settings {
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
    let (commands, receiver) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(scheduler::run(
        fake.clone(),
        Settings {
            paused: true,
            ..settings()
        },
        clock,
        receiver,
        shutdown.clone(),
        || {},
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    commands.send(Command::TickAllNow).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(fake.runs().is_empty(), "runner.paused holds everything");
    commands.send(Command::Reload(Box::new(settings()))).await.unwrap();
    commands.send(Command::TickAllNow).await.unwrap();
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
    let (_commands, receiver) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(scheduler::run(
        fake.clone(),
        settings(),
        clock,
        receiver,
        shutdown.clone(),
        || {},
    ));
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
    let settings = Settings {
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
