//! The record on both stores: write-ahead call rows that become `unknown` when their tick
//! dies, counters for every final status, daily rating roll-ups the report reads, the
//! alignment evidence kept per day, a tick's end that records its calls in the profile in
//! the finish's transaction, retention in batches, and hot queries on indexes.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::time::Duration;

use chrono::Utc;
use common::{Backend, TestDb};
use persona_runner::model::call::{Call, CallKind, CallResult, Completion};
use persona_runner::model::persona::{DEFAULT_TENANT, PersonaSpec};
use persona_runner::model::profile::{InteractionType, NewInteraction, Observed, ProfileStatus};
use persona_runner::model::rating::NewRating;
use persona_runner::model::tick::{NewTick, TickFinish, TickStatus, Transcript, Trigger};
use persona_runner::store::{ProfileEnd, Prunable, RatingScope, Store, TickProfile};
use uuid::Uuid;

async fn persona(store: &Store, n: u32) -> (Uuid, Uuid) {
    let spec: PersonaSpec = serde_json::from_value(serde_json::json!({
        "name": format!("Record {n}"),
        "email": format!("persona.record-{n}@mana.test"),
        "archetype": "solo-dev",
        "systemPrompt": "Du bist eine Entwicklerin, die ihre Tage mit Listen und kurzen Notizen plant.",
        "moduleMix": {"todo": 0.6, "notes": 0.4},
        "tickCadence": "daily"
    }))
    .unwrap();
    let (persona, _) = store.upsert_persona(DEFAULT_TENANT, &spec, "UTC").await.unwrap();
    (persona.id, persona.user_id.unwrap())
}

fn tick(persona: Uuid, lease: Duration) -> NewTick {
    NewTick {
        tenant_id: DEFAULT_TENANT,
        persona_id: persona,
        trigger: Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        runner_id: "test".into(),
        lease,
        target: None,
        space: None,
    }
}

fn call(tick: Uuid, persona: Uuid, seq: i32, result: CallResult) -> Call {
    Call {
        space: None,
        id: Call::new_id(),
        sent: true,
        recovered: false,
        refusal: None,
        created_at: chrono::Utc::now(),
        tenant_id: DEFAULT_TENANT,
        tick_id: tick,
        persona_id: persona,
        seq,
        kind: CallKind::Call,
        tool_name: "todo.create".into(),
        module: "todo".into(),
        input_hash: format!("{seq:064}"),
        result,
        error_message: None,
        arguments: Some(r#"{"title":"x"}"#.into()),
        output: None,
        chaos: false,
        latency_ms: None,
    }
}

fn rating(tick: Uuid, persona: Uuid, module: &str, rating: i32, at: chrono::DateTime<Utc>) -> NewRating {
    NewRating {
        tenant_id: DEFAULT_TENANT,
        tick_id: tick,
        persona_id: persona,
        module: module.into(),
        rating,
        notes: Some(format!("{module} {rating}")),
        evidence_calls: 2,
        evidence_errors: 1,
        evidence_mean_latency_ms: Some(10.0),
        evidence_rating: Some(3),
        simulator: "offline".into(),
        recorded_at: Some(at),
    }
}

async fn a_call_in_flight_when_its_tick_dies_becomes_unknown_and_is_counted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = persona(&store, 1).await;
    let crashed = store.claim_tick(&tick(persona, Duration::from_secs(1))).await.unwrap();
    store
        .record_action(&call(crashed.id, persona, 0, CallResult::Pending))
        .await
        .unwrap();
    assert!(
        store
            .complete_action(&Completion {
                tick_id: crashed.id,
                seq: 0,
                result: CallResult::Ok,
                error_message: None,
                output: Some("{}".into()),
                latency_ms: Some(5),
            })
            .await
            .unwrap()
    );
    store
        .record_action(&call(crashed.id, persona, 1, CallResult::Pending))
        .await
        .unwrap();
    store
        .record_action(&call(crashed.id, persona, 2, CallResult::Denied))
        .await
        .unwrap();
    // The runner dies with call 1 sent and unanswered; its lease runs out.
    let later = crashed.lease_expires_at + chrono::Duration::seconds(1);
    assert_eq!(store.abandon_expired_ticks(later).await.unwrap(), 1);
    let results: Vec<String> = store
        .tick_actions(crashed.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.result.to_string())
        .collect();
    assert_eq!(results, ["ok", "unknown", "denied"]);
    // The counters of an abandoned tick are derived like any other's.
    let listed = store.list_ticks(DEFAULT_TENANT, &Default::default(), 10).await.unwrap();
    let row = listed.iter().find(|t| t.id == crashed.id).unwrap();
    assert_eq!(
        (row.tool_calls, row.calls_ok, row.calls_unknown, row.calls_denied),
        (3, 1, 1, 1)
    );
    // A late answer cannot turn `unknown` back: the runner learns its lease was lost.
    assert!(
        !store
            .complete_action(&Completion {
                tick_id: crashed.id,
                seq: 1,
                result: CallResult::Ok,
                error_message: None,
                output: None,
                latency_ms: Some(5),
            })
            .await
            .unwrap()
    );
    // A dedup lookup sees the unknown call as one that may have run.
    let earlier = store
        .earlier_call(persona, &format!("{:064}", 1), later - chrono::Duration::hours(1), None)
        .await
        .unwrap();
    assert_eq!(earlier, Some(persona_runner::model::call::EarlierCall::MayHaveRun));
    // Dedup is per space: the same call in a shared space is not a repeat of it.
    let elsewhere = store
        .earlier_call(
            persona,
            &format!("{:064}", 1),
            later - chrono::Duration::hours(1),
            Some("Familie Schubert"),
        )
        .await
        .unwrap();
    assert_eq!(elsewhere, None);
}

async fn finishing_turns_pending_calls_unknown_and_keeps_the_transcript(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = persona(&store, 1).await;
    let running = store.claim_tick(&tick(persona, Duration::from_secs(60))).await.unwrap();
    store
        .record_action(&call(running.id, persona, 0, CallResult::Pending))
        .await
        .unwrap();
    let transcript = Transcript {
        entries: serde_json::json!([{"step": "assistant", "content": "Ich lege eine Aufgabe an."}]),
        chars: 42,
        truncated: false,
    };
    let finished = store
        .finish_tick(
            running.id,
            &TickFinish {
                transcript: Some(transcript.clone()),
                simulator: Some("offline".into()),
                tokens_in: 100,
                tokens_out: 20,
                ..TickFinish::status(TickStatus::Timeout, Some("the tick ran past tick.tick_timeout".into()))
            },
        )
        .await
        .unwrap();
    assert_eq!(finished.status, TickStatus::Timeout);
    assert_eq!(
        store.tick_actions(running.id).await.unwrap()[0].result.as_str(),
        "unknown"
    );
    assert_eq!(store.tick_transcript(running.id).await.unwrap(), Some(transcript));
}

async fn the_report_reads_whole_days_from_roll_ups_and_edges_from_ratings(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = persona(&store, 1).await;
    let day = |d: i64, h: u32| {
        (Utc::now().date_naive() - chrono::Duration::days(d))
            .and_hms_opt(h, 0, 0)
            .unwrap()
            .and_utc()
    };
    // Five days, one tick each: todo rated 2 at 06:00, notes rated 4 at 18:00.
    for d in 1..=5 {
        let t = store.claim_tick(&tick(persona, Duration::from_secs(60))).await.unwrap();
        for (module, hour, value) in [("todo", 6, 2), ("notes", 18, 4)] {
            store
                .record_feedback(&rating(t.id, persona, module, value, day(d, hour)))
                .await
                .unwrap();
        }
        store
            .finish_tick(t.id, &TickFinish::status(TickStatus::Ok, None))
            .await
            .unwrap();
    }
    // From day 4, 12:00 to day 2, 12:00: day 4 after noon (notes), all of day 3, day 2
    // before noon (todo).
    let scope = RatingScope {
        tenant: DEFAULT_TENANT,
        from: day(4, 12),
        until: day(2, 12),
        module: None,
        persona_id: None,
        archetype: None,
    };
    let cells = store.rating_cells(&scope).await.unwrap();
    let total: i64 = cells.iter().map(|c| c.ratings).sum();
    let sum: i64 = cells.iter().map(|c| c.rating_sum).sum();
    assert_eq!((total, sum), (4, 4 + 2 + 4 + 2), "{cells:#?}");
    let report = persona_runner::feedback::report(&store, &scope, &Default::default())
        .await
        .unwrap();
    assert_eq!(report.ratings, 4);
    let todo = report.modules.iter().find(|m| m.key == "todo").unwrap();
    assert_eq!((todo.count, todo.average), (2, 2.0));
    assert_eq!(report.simulators[0].leniency, Some(0.0), "{:?}", report.simulators);
    // Retention may delete the ratings of old ticks: the roll-ups keep the history.
    let deleted = store
        .prune(Prunable::Ticks, Utc::now() + chrono::Duration::days(1), 1000)
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    let after = persona_runner::feedback::report(
        &store,
        &RatingScope {
            from: day(5, 0),
            until: day(1, 0),
            ..scope
        },
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(after.ratings, 8, "whole days 5 to 2 survive in the roll-ups");
}

async fn retention_deletes_old_rows_in_batches(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = persona(&store, 1).await;
    let running = store.claim_tick(&tick(persona, Duration::from_secs(60))).await.unwrap();
    for seq in 0..25 {
        store
            .record_action(&call(running.id, persona, seq, CallResult::Denied))
            .await
            .unwrap();
    }
    store
        .finish_tick(running.id, &TickFinish::status(TickStatus::Ok, None))
        .await
        .unwrap();
    let future = Utc::now() + chrono::Duration::minutes(1);
    assert_eq!(store.prune(Prunable::Actions, future, 10).await.unwrap(), 10);
    assert_eq!(store.prune(Prunable::Actions, future, 10).await.unwrap(), 10);
    assert_eq!(store.prune(Prunable::Actions, future, 10).await.unwrap(), 5);
    assert_eq!(store.prune(Prunable::Actions, future, 10).await.unwrap(), 0);
    // Nothing younger than the cutoff goes.
    let past = Utc::now() - chrono::Duration::days(1);
    assert_eq!(store.prune(Prunable::Ticks, past, 10).await.unwrap(), 0);
    let config = persona_runner::config::RetentionConfig {
        ticks: persona_runner::time::HumanDuration(Duration::ZERO),
        ..Default::default()
    };
    let deleted = persona_runner::retention::prune(&store, &config, &Default::default())
        .await
        .unwrap();
    assert!(deleted >= 1, "the tick itself is past a zero retention");
    assert_eq!(store.row_counts(DEFAULT_TENANT).await.unwrap().ticks, 0);
}

async fn alignment_evidence_is_kept_per_day_not_read_from_history(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, user) = persona(&store, 1).await;
    let interactions: Vec<_> = (0..30)
        .map(|n| persona_runner::model::profile::NewInteraction {
            tenant_id: DEFAULT_TENANT,
            user_id: user,
            persona_id: Some(persona),
            tick_id: None,
            interaction_type: persona_runner::model::profile::InteractionType::ActionTaken,
            page_type: None,
            page_id: None,
            element_id: None,
            element_type: None,
            metadata: serde_json::json!({"action_id": if n % 3 == 0 { "notes.create" } else { "todo.create" }}),
            duration_seconds: None,
            feedback_sentiment: None,
            feedback_comment: None,
        })
        .collect();
    for interaction in &interactions {
        persona_runner::profile::record(&store, interaction).await.unwrap();
    }
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let evidence = store.alignment_evidence(DEFAULT_TENANT, user, &today).await.unwrap();
    assert_eq!(evidence.interactions, 30);
    assert_eq!(evidence.modules["todo"], 20.0);
    assert_eq!(evidence.modules["notes"], 10.0);
    let candidates = persona_runner::profile::Candidates::default();
    let alignment = persona_runner::profile::refresh_alignment(&store, DEFAULT_TENANT, user, &candidates, None)
        .await
        .unwrap();
    // Module mix 60/40 against 67/33 used: Σ min = 0.6 + 0.333.
    assert_eq!(alignment.score, Some(93.3));
    // The ticked persona handed in (not read again) scores the same.
    let mut held = store.get_persona(DEFAULT_TENANT, persona).await.unwrap().unwrap();
    let again = persona_runner::profile::refresh_alignment(&store, DEFAULT_TENANT, user, &candidates, Some(&held))
        .await
        .unwrap();
    assert_eq!(again.score, Some(93.3));
    // It is the definition used: one whose mix is the observed 2:1 scores 100 (the stored
    // one still says 60/40).
    held.module_mix = [("todo".to_string(), 2.0), ("notes".to_string(), 1.0)].into();
    let held_mix = persona_runner::profile::refresh_alignment(&store, DEFAULT_TENANT, user, &candidates, Some(&held))
        .await
        .unwrap();
    assert_eq!(held_mix.score, Some(100.0));
}

fn answered(tick: Uuid, seq: i32) -> Completion {
    Completion {
        tick_id: tick,
        seq,
        result: CallResult::Ok,
        error_message: None,
        output: Some(format!("answer {seq}")),
        latency_ms: Some(3),
    }
}

/// A call's result rides with its tick's next row: both land in one commit, and neither
/// when the call is no longer pending (the tick was declared dead meanwhile).
async fn a_calls_result_rides_with_the_next_write_ahead_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = persona(&store, 1).await;
    let running = store.claim_tick(&tick(persona, Duration::from_secs(1))).await.unwrap();
    store
        .record_action(&call(running.id, persona, 0, CallResult::Pending))
        .await
        .unwrap();
    let next = call(running.id, persona, 1, CallResult::Pending);
    assert!(
        store
            .complete_then_record(answered(running.id, 0), next.clone())
            .await
            .unwrap()
    );
    let rows = store.tick_actions(running.id).await.unwrap();
    assert_eq!(
        rows.iter().map(|a| (a.seq, a.result.as_str())).collect::<Vec<_>>(),
        [(0, "ok"), (1, "pending")]
    );
    let recorded = store.tick_calls(running.id).await.unwrap();
    assert_eq!(recorded[0].output.as_deref(), Some("answer 0"));

    // The runner stalls past its lease; another declares the tick dead.
    let later = running.lease_expires_at + chrono::Duration::seconds(1);
    assert_eq!(store.abandon_expired_ticks(later).await.unwrap(), 1);
    let after = call(running.id, persona, 2, CallResult::Pending);
    assert!(
        !store
            .complete_then_record(answered(running.id, 1), after.clone())
            .await
            .unwrap()
    );
    let results: Vec<String> = store
        .tick_actions(running.id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.result.to_string())
        .collect();
    assert_eq!(
        results,
        ["ok", "unknown"],
        "no late answer, and no row for a call of a dead tick"
    );
}

/// Claims a tick of `persona` and audits one call per module given (`None`: not sent).
async fn tick_with_calls(store: &Store, persona: Uuid, modules: &[Option<&str>]) -> Uuid {
    let running = store.claim_tick(&tick(persona, Duration::from_secs(60))).await.unwrap();
    for (seq, module) in modules.iter().enumerate() {
        let result = if module.is_some() {
            CallResult::Ok
        } else {
            CallResult::NotSent
        };
        let module = module.unwrap_or("todo");
        store
            .record_action(&Call {
                space: None,
                id: Call::new_id(),
                sent: true,
                created_at: chrono::Utc::now(),
                tool_name: format!("{module}.create"),
                module: module.into(),
                ..call(running.id, persona, seq as i32, result)
            })
            .await
            .unwrap();
    }
    running.id
}

async fn a_ticks_end_records_its_calls_and_alignment_in_the_finish_transaction(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona_id, user) = persona(&store, 1).await;
    let persona = store.get_persona(DEFAULT_TENANT, persona_id).await.unwrap().unwrap();
    let since = Utc::now() - chrono::Duration::hours(1);

    // Five calls sent, one never sent: five interactions, and the 60/40 persona that used
    // only `todo` scores 60 (settled: not below the flag, no other persona to read).
    let first = tick_with_calls(
        &store,
        persona_id,
        &[Some("todo"); 5].iter().copied().chain([None]).collect::<Vec<_>>(),
    )
    .await;
    let record = persona_runner::profile::TickInteractions::of(&persona, first).unwrap();
    let ended = store
        .end_tick(first, &TickFinish::status(TickStatus::Ok, None), Some(&record))
        .await
        .unwrap();
    assert_eq!(ended.tick.status, TickStatus::Ok);
    assert!(
        matches!(ended.profile, ProfileEnd::Aligned { interactions: 5 }),
        "{:?}",
        ended.profile
    );
    let recorded = store
        .list_interactions(DEFAULT_TENANT, user, since, None, 100)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 5);
    assert!(recorded.iter().all(|i| i.tick_id == Some(first)));
    let profile = store.get_profile(DEFAULT_TENANT, user).await.unwrap().unwrap();
    assert_eq!(profile.total_interactions, 5);
    assert_eq!(profile.alignment_score, Some(60.0));
    assert_eq!(profile.status, ProfileStatus::Active);
    assert_eq!(
        store
            .alignment_evidence(DEFAULT_TENANT, user, &Utc::now().format("%Y-%m-%d").to_string())
            .await
            .unwrap()
            .interactions,
        5
    );

    // Calls off the persona's modules flag it: finding a suggestion reads other personas,
    // so the end records the interactions and leaves the rescore to its caller.
    let second = tick_with_calls(&store, persona_id, &[Some("calendar"); 20]).await;
    let record = persona_runner::profile::TickInteractions::of(&persona, second).unwrap();
    let ended = store
        .end_tick(second, &TickFinish::status(TickStatus::Ok, None), Some(&record))
        .await
        .unwrap();
    assert!(
        matches!(ended.profile, ProfileEnd::NeedsRescore { interactions: 20 }),
        "{:?}",
        ended.profile
    );
    let profile = store.get_profile(DEFAULT_TENANT, user).await.unwrap().unwrap();
    assert_eq!(profile.total_interactions, 25);
    assert_eq!(
        profile.alignment_score,
        Some(60.0),
        "the end did not store a score it could not settle"
    );
}

/// A profile part whose user does not exist: its interactions break a foreign key.
struct Stranger;

impl TickProfile for Stranger {
    fn tenant(&self) -> Uuid {
        DEFAULT_TENANT
    }
    fn user(&self) -> Uuid {
        Uuid::new_v4()
    }
    fn interactions(&self, calls: &[Call]) -> (Vec<NewInteraction>, Observed) {
        let interactions: Vec<NewInteraction> = calls
            .iter()
            .map(|call| NewInteraction {
                tenant_id: DEFAULT_TENANT,
                user_id: self.user(),
                persona_id: None,
                tick_id: None,
                interaction_type: InteractionType::ActionTaken,
                page_type: None,
                page_id: None,
                element_id: Some(call.tool_name.clone()),
                element_type: None,
                metadata: serde_json::json!({"action_id": call.tool_name}),
                duration_seconds: None,
                feedback_sentiment: None,
                feedback_comment: None,
            })
            .collect();
        (interactions, Observed::default())
    }
    fn learn(&self, _: &mut persona_runner::model::profile::Learned, _: &NewInteraction) {}
    fn evidence_from(&self) -> &str {
        "2000-01-01"
    }
    fn alignment(
        &self,
        _: &persona_runner::model::profile::Profile,
        _: &Observed,
    ) -> Option<persona_runner::model::profile::AlignmentUpdate> {
        None
    }
}

async fn a_refused_profile_part_still_finishes_the_tick(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona_id, user) = persona(&store, 1).await;
    let running = tick_with_calls(&store, persona_id, &[Some("todo"), Some("notes")]).await;
    let ended = store
        .end_tick(running, &TickFinish::status(TickStatus::Ok, None), Some(&Stranger))
        .await
        .unwrap();
    assert!(matches!(ended.profile, ProfileEnd::Refused(_)), "{:?}", ended.profile);
    // The finish committed; the refused part left nothing behind.
    let tick = store.get_tick(running).await.unwrap().unwrap();
    assert_eq!(tick.status, TickStatus::Ok);
    assert!(tick.finished_at.is_some());
    let since = Utc::now() - chrono::Duration::hours(1);
    assert!(
        store
            .list_interactions(DEFAULT_TENANT, user, since, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.row_counts(DEFAULT_TENANT).await.unwrap().interactions, 0);
}

async fn hot_queries_run_on_indexes(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let plans = store.query_plans().await.unwrap();
    assert!(plans.len() >= 12, "{plans:?}");
    for (name, plan) in &plans {
        let full_scan = plan.lines().any(|line| {
            let line = line.trim_start_matches(|c: char| !c.is_alphabetic());
            (line.starts_with("SCAN ") && !line.starts_with("SCAN CONSTANT")) || line.starts_with("Seq Scan")
        });
        assert!(!full_scan, "{name} scans a whole table:\n{plan}");
    }
}

both_backends! {
    a_call_in_flight_when_its_tick_dies_becomes_unknown_and_is_counted,
    finishing_turns_pending_calls_unknown_and_keeps_the_transcript,
    the_report_reads_whole_days_from_roll_ups_and_edges_from_ratings,
    retention_deletes_old_rows_in_batches,
    alignment_evidence_is_kept_per_day_not_read_from_history,
    a_ticks_end_records_its_calls_and_alignment_in_the_finish_transaction,
    a_calls_result_rides_with_the_next_write_ahead_row,
    a_refused_profile_part_still_finishes_the_tick,
    hot_queries_run_on_indexes,
}
