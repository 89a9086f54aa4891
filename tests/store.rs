//! The store suite: every test runs on SQLite and on a real PostgreSQL server.

#[macro_use]
mod common;

#[allow(unused_imports)]
use common::StoreExt as _;

use std::time::Duration;

use common::{Backend, TestDb};
use persona_runner::model::call::{Call, CallKind, CallResult};
use persona_runner::model::persona::{Cadence, DEFAULT_TENANT, PersonaSpec, UserKind};
use persona_runner::model::rating::NewRating;
use persona_runner::model::tick::{NewTick, TickFinish, TickStatus, Trigger};
use persona_runner::store::{Store, StoreError, UpsertOutcome};
use uuid::Uuid;

fn spec(email: &str, name: &str) -> PersonaSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "email": email,
        "archetype": "solo-dev",
        "systemPrompt": "Du bist eine Entwicklerin, die ihre Tage mit Listen und kurzen Notizen plant.",
        "moduleMix": {"todo": 0.6, "notes": 0.4},
        "tickCadence": "weekdays",
        "timeZone": "Europe/Berlin",
        "keyMetrics": [{"id": "focus_time", "weight": 1.0}],
        "defaultProfile": {"detailPreference": 70}
    }))
    .unwrap()
}

fn new_tick(persona_id: Uuid) -> NewTick {
    NewTick {
        tenant_id: DEFAULT_TENANT,
        persona_id,
        trigger: Trigger::Cli,
        scheduled_for: None,
        attempt: 1,
        runner_id: "test-runner".into(),
        lease: Duration::from_secs(60),
        target: None,
        space: None,
    }
}

fn action(tick_id: Uuid, persona_id: Uuid, seq: i32, result: CallResult) -> Call {
    Call {
        space: None,
        id: Call::new_id(),
        sent: true,
        recovered: false,
        refusal: None,
        created_at: chrono::Utc::now(),
        tenant_id: DEFAULT_TENANT,
        tick_id,
        persona_id,
        seq,
        kind: CallKind::Call,
        tool_name: "todo.create".into(),
        module: "todo".into(),
        input_hash: "a".repeat(64),
        result,
        error_message: None,
        arguments: Some("{}".into()),
        output: Some("{\"id\": 1}".into()),
        chaos: false,
        latency_ms: Some(12),
    }
}

fn feedback(tick_id: Uuid, persona_id: Uuid, module: &str, rating: i32) -> NewRating {
    NewRating {
        tenant_id: DEFAULT_TENANT,
        tick_id,
        persona_id,
        module: module.into(),
        rating,
        notes: Some("ok".into()),
        evidence_calls: 2,
        evidence_errors: 0,
        evidence_mean_latency_ms: Some(12.5),
        evidence_rating: Some(5),
        simulator: "offline".into(),
        recorded_at: None,
    }
}

async fn seeded(store: &Store) -> (Uuid, Uuid) {
    let (persona, _) = store
        .upsert_persona(DEFAULT_TENANT, &spec("persona.anna@mana.test", "Anna"), "UTC")
        .await
        .unwrap();
    (persona.id, persona.user_id.unwrap())
}

async fn migrations_apply_once_and_report_current(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (applied, known) = store.migration_status().await.unwrap();
    assert!(known >= 1);
    assert_eq!(applied, known);
    store.migrate().await.unwrap();
    assert_eq!(store.migration_status().await.unwrap(), (applied, known));
    let counts = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!(counts.users, 0);
}

async fn upsert_is_idempotent_and_updates_edits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let original = spec("Persona.Anna@Mana.test", "Anna");
    let (created, outcome) = store.upsert_persona(DEFAULT_TENANT, &original, "UTC").await.unwrap();
    assert_eq!(outcome, UpsertOutcome::Created);
    assert_eq!(created.email.as_deref(), Some("persona.anna@mana.test"));
    assert_eq!(created.tick_cadence, Cadence::Weekdays);
    assert_eq!(created.time_zone, "Europe/Berlin");
    assert_eq!(created.key_metrics[0].id, "focus_time");

    let (again, outcome) = store.upsert_persona(DEFAULT_TENANT, &original, "UTC").await.unwrap();
    assert_eq!(outcome, UpsertOutcome::Unchanged);
    assert_eq!(again, created, "an unchanged upsert writes nothing");

    let mut edited = original.clone();
    edited.system_prompt.push_str(" Neu: sie joggt morgens.");
    let (updated, outcome) = store.upsert_persona(DEFAULT_TENANT, &edited, "UTC").await.unwrap();
    assert_eq!(outcome, UpsertOutcome::Updated);
    assert_eq!(updated.id, created.id);
    assert!(updated.system_prompt.ends_with("joggt morgens."));
    assert!(updated.updated_at > created.updated_at, "an edit bumps updated_at");

    let counts = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!((counts.users, counts.persona_users, counts.personas), (1, 1, 1));
}

async fn upsert_keeps_an_operator_pause_unless_the_spec_says(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let mut paused = spec("persona.ben@mana.test", "Ben");
    paused.paused = Some(true);
    let (persona, _) = store.upsert_persona(DEFAULT_TENANT, &paused, "UTC").await.unwrap();
    assert!(persona.paused && !persona.is_runnable());
    let unspecified = spec("persona.ben@mana.test", "Ben");
    let (persona, outcome) = store.upsert_persona(DEFAULT_TENANT, &unspecified, "UTC").await.unwrap();
    assert_eq!(outcome, UpsertOutcome::Unchanged);
    assert!(persona.paused);
    // An operator's pause (not the catalog's) survives a spec that does not say either.
    store.set_paused(DEFAULT_TENANT, persona.id, false).await.unwrap();
    store.set_paused(DEFAULT_TENANT, persona.id, true).await.unwrap();
    let (persona, _) = store.upsert_persona(DEFAULT_TENANT, &unspecified, "UTC").await.unwrap();
    assert!(persona.paused, "kept");
    // A spec that says so wins.
    let mut resumed = unspecified.clone();
    resumed.paused = Some(false);
    let (persona, outcome) = store.upsert_persona(DEFAULT_TENANT, &resumed, "UTC").await.unwrap();
    assert_eq!(outcome, UpsertOutcome::Updated);
    assert!(!persona.paused);
}

async fn upsert_refuses_human_accounts_and_taken_names(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store
        .create_user(DEFAULT_TENANT, "boss@mana.test", "Boss", UserKind::Human)
        .await
        .unwrap();
    let err = store
        .upsert_persona(DEFAULT_TENANT, &spec("boss@mana.test", "Boss"), "UTC")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("human account")),
        "{err}"
    );
    let counts = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!((counts.users, counts.persona_users, counts.personas), (1, 0, 0));

    seeded(&store).await;
    let err = store
        .upsert_persona(DEFAULT_TENANT, &spec("other@mana.test", "Anna"), "UTC")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("already used")),
        "{err}"
    );
}

async fn email_is_unique_per_tenant_case_insensitively(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    store
        .create_user(DEFAULT_TENANT, "qa@mana.test", "QA", UserKind::Human)
        .await
        .unwrap();
    let err = store
        .create_user(DEFAULT_TENANT, "QA@Mana.Test", "QA again", UserKind::Human)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Per tenant: another tenant may have the same email.
    let other = uuid::Uuid::new_v4();
    store.ensure_tenant(other).await.unwrap();
    store
        .create_user(other, "qa@mana.test", "QA elsewhere", UserKind::Human)
        .await
        .unwrap();
}

async fn lookups_by_id_and_email(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (id, _) = seeded(&store).await;
    store
        .upsert_persona(DEFAULT_TENANT, &spec("persona.zoe@mana.test", "Zoe"), "UTC")
        .await
        .unwrap();
    let by_email = store
        .find_persona(DEFAULT_TENANT, "PERSONA.ANNA@mana.test")
        .await
        .unwrap()
        .unwrap();
    let by_id = store
        .find_persona(DEFAULT_TENANT, &id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_email, by_id);
    assert!(
        store
            .find_persona(DEFAULT_TENANT, "nobody@mana.test")
            .await
            .unwrap()
            .is_none()
    );
    let other_tenant = Uuid::new_v4();
    assert!(
        store.get_persona(other_tenant, id).await.unwrap().is_none(),
        "tenant scoping"
    );
    let names: Vec<_> = store
        .list_personas(DEFAULT_TENANT)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["Anna", "Zoe"]);
}

async fn at_most_one_running_tick_per_persona(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = seeded(&store).await;
    let tick = store.claim_tick(&new_tick(persona)).await.unwrap();
    assert_eq!(
        store.get_tick(tick.id).await.unwrap().unwrap(),
        tick,
        "timestamps round-trip exactly"
    );
    let err = store.claim_tick(&new_tick(persona)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");

    store
        .finish_tick(tick.id, &TickFinish::status(TickStatus::Ok, None))
        .await
        .unwrap();
    let next = store.claim_tick(&new_tick(persona)).await.unwrap();
    assert_ne!(next.id, tick.id);
}

async fn concurrent_claims_yield_exactly_one_tick(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = seeded(&store).await;
    let claims = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.claim_tick(&new_tick(persona)).await })
    });
    let mut won = 0;
    for claim in claims {
        match claim.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(won, 1);
}

async fn a_slot_attempt_is_claimed_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = seeded(&store).await;
    let slot = persona_runner::time::now();
    let scheduled = NewTick {
        trigger: Trigger::Schedule,
        scheduled_for: Some(slot),
        ..new_tick(persona)
    };
    let tick = store.claim_tick(&scheduled).await.unwrap();
    store
        .finish_tick(tick.id, &TickFinish::status(TickStatus::Failed, Some("x".into())))
        .await
        .unwrap();
    let err = store.claim_tick(&scheduled).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "the same slot attempt runs once: {err}"
    );
    store
        .claim_tick(&NewTick {
            attempt: 2,
            ..scheduled
        })
        .await
        .unwrap();
}

async fn finishing_derives_counters_and_marks_activity(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = seeded(&store).await;
    let tick = store.claim_tick(&new_tick(persona)).await.unwrap();
    for (seq, result) in [
        CallResult::Ok,
        CallResult::Ok,
        CallResult::Error,
        CallResult::Deduped,
        CallResult::Denied,
    ]
    .into_iter()
    .enumerate()
    {
        store
            .record_action(&action(tick.id, persona, seq as i32, result))
            .await
            .unwrap();
    }
    let finished = store
        .finish_tick(tick.id, &TickFinish::status(TickStatus::Ok, None))
        .await
        .unwrap();
    assert_eq!(finished.status, TickStatus::Ok);
    assert!(finished.finished_at.is_some());
    let persona_after = store.get_persona(DEFAULT_TENANT, persona).await.unwrap().unwrap();
    assert_eq!(persona_after.last_active_at, finished.finished_at);
    let err = store
        .finish_tick(tick.id, &TickFinish::status(TickStatus::Failed, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "a finished tick stays finished: {err}"
    );
    let counts = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!(counts.actions, 5);
    // The stored counters were derived from the audited rows.
    let stored = &store
        .list_ticks(DEFAULT_TENANT, &persona_runner::store::TickFilter::default(), 1)
        .await
        .unwrap()[0];
    assert_eq!(
        (
            stored.tool_calls,
            stored.calls_ok,
            stored.calls_error,
            stored.calls_deduped,
            stored.calls_denied
        ),
        (5, 2, 1, 1, 1)
    );
}

async fn action_seq_is_unique_per_tick(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = seeded(&store).await;
    let tick = store.claim_tick(&new_tick(persona)).await.unwrap();
    store
        .record_action(&action(tick.id, persona, 0, CallResult::Ok))
        .await
        .unwrap();
    // A retried write of the same call must not duplicate it.
    store
        .record_action(&action(tick.id, persona, 0, CallResult::Ok))
        .await
        .unwrap();
    store
        .record_action(&action(tick.id, persona, 1, CallResult::Error))
        .await
        .unwrap();
    assert_eq!(store.row_counts(DEFAULT_TENANT).await.unwrap().actions, 2);
}

async fn ratings_must_be_one_to_five_and_once_per_module(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = seeded(&store).await;
    let tick = store.claim_tick(&new_tick(persona)).await.unwrap();
    for bad in [0, 6, -1] {
        let err = store
            .record_feedback(&feedback(tick.id, persona, "todo", bad))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Constraint(_)), "rating {bad}: {err}");
    }
    store
        .record_feedback(&feedback(tick.id, persona, "todo", 5))
        .await
        .unwrap();
    store
        .record_feedback(&feedback(tick.id, persona, "notes", 1))
        .await
        .unwrap();
    let err = store
        .record_feedback(&feedback(tick.id, persona, "todo", 4))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "one rating per module per tick: {err}"
    );
    assert_eq!(store.row_counts(DEFAULT_TENANT).await.unwrap().feedback, 2);

    // A tick's ratings land together: one refused rating keeps the others out, while a
    // write queued beside them by another tick still lands.
    let (ben, _) = store
        .upsert_persona(DEFAULT_TENANT, &spec("persona.ben@mana.test", "Ben"), "UTC")
        .await
        .unwrap();
    let other = store.claim_tick(&new_tick(ben.id)).await.unwrap();
    let refused_pair = [
        feedback(tick.id, persona, "calendar", 4),
        feedback(tick.id, persona, "mood", 9),
    ];
    let beside_it = feedback(other.id, other.persona_id, "todo", 3);
    let (together, beside) = tokio::join!(
        store.record_ratings(refused_pair.to_vec()),
        store.record_feedback(&beside_it)
    );
    assert!(matches!(together.unwrap_err(), StoreError::Constraint(_)));
    beside.unwrap();
    let modules: Vec<String> = store
        .tick_ratings(tick.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.module)
        .collect();
    assert_eq!(modules, ["notes", "todo"], "calendar was refused with mood");
    store
        .record_ratings(vec![
            feedback(tick.id, persona, "calendar", 4),
            feedback(tick.id, persona, "mood", 2),
        ])
        .await
        .unwrap();
    assert_eq!(store.tick_ratings(tick.id).await.unwrap().len(), 4);
}

async fn expired_leases_are_abandoned_and_free_the_persona(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, _) = seeded(&store).await;
    let crashed = store
        .claim_tick(&NewTick {
            lease: Duration::from_secs(1),
            ..new_tick(persona)
        })
        .await
        .unwrap();
    assert_eq!(
        store.abandon_expired_ticks(persona_runner::time::now()).await.unwrap(),
        0
    );
    let later = crashed.lease_expires_at + chrono::Duration::seconds(1);
    assert_eq!(store.abandon_expired_ticks(later).await.unwrap(), 1);
    let tick = store.get_tick(crashed.id).await.unwrap().unwrap();
    assert_eq!(tick.status, TickStatus::Abandoned);
    assert!(tick.error.unwrap().contains("lease expired"));
    store.claim_tick(&new_tick(persona)).await.unwrap();
}

async fn cleanup_removes_persona_users_with_everything_and_never_humans(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (persona, user) = seeded(&store).await;
    let profile = store.get_profile(DEFAULT_TENANT, user).await.unwrap();
    assert_eq!(
        profile.and_then(|p| p.persona_id),
        Some(persona),
        "the upsert gave the persona user its profile"
    );
    let tick = store.claim_tick(&new_tick(persona)).await.unwrap();
    store
        .record_action(&action(tick.id, persona, 0, CallResult::Ok))
        .await
        .unwrap();
    store
        .record_feedback(&feedback(tick.id, persona, "todo", 4))
        .await
        .unwrap();
    persona_runner::profile::record(
        &store,
        &persona_runner::model::profile::NewInteraction {
            tenant_id: DEFAULT_TENANT,
            user_id: user,
            persona_id: Some(persona),
            tick_id: Some(tick.id),
            interaction_type: persona_runner::model::profile::InteractionType::ActionTaken,
            page_type: None,
            page_id: None,
            element_id: Some("todo.create".into()),
            element_type: None,
            metadata: serde_json::json!({"module": "todo"}),
            duration_seconds: None,
            feedback_sentiment: None,
            feedback_comment: None,
        },
    )
    .await
    .unwrap();
    let human = store
        .create_user(DEFAULT_TENANT, "qa.lead@mana.test", "QA Lead", UserKind::Human)
        .await
        .unwrap();
    store.assign_persona(DEFAULT_TENANT, human, persona).await.unwrap();

    let before = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!(
        (
            before.ticks,
            before.actions,
            before.feedback,
            before.profiles,
            before.interactions
        ),
        (1, 1, 1, 2, 1)
    );

    // A running tick would go on calling the product with nowhere to record it.
    let refused = store.delete_persona_users(DEFAULT_TENANT).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("persona.anna@mana.test")),
        "{refused}"
    );
    assert_eq!(
        store.row_counts(DEFAULT_TENANT).await.unwrap(),
        before,
        "nothing deleted"
    );
    store
        .finish_tick(tick.id, &TickFinish::status(TickStatus::Ok, None))
        .await
        .unwrap();

    let report = store.delete_persona_users(DEFAULT_TENANT).await.unwrap();
    assert_eq!((report.users_deleted, report.personas_deleted), (1, 1));
    let after = store.row_counts(DEFAULT_TENANT).await.unwrap();
    assert_eq!(after.users, 1, "the human stays");
    assert_eq!(after.profiles, 1, "the human's profile stays");
    assert_eq!(
        (
            after.persona_users,
            after.personas,
            after.ticks,
            after.actions,
            after.feedback,
            after.interactions
        ),
        (0, 0, 0, 0, 0, 0)
    );
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_in_a_created_folder() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.store().await;
    seeded(&store).await;
    let file = db.url().trim_start_matches("sqlite://").to_string();
    assert!(std::path::Path::new(&file).is_file(), "the folder and file are created");
    assert!(
        std::path::Path::new(&format!("{file}-wal")).is_file(),
        "writes go through the WAL"
    );
}

both_backends! {
    migrations_apply_once_and_report_current,
    upsert_is_idempotent_and_updates_edits,
    upsert_keeps_an_operator_pause_unless_the_spec_says,
    upsert_refuses_human_accounts_and_taken_names,
    email_is_unique_per_tenant_case_insensitively,
    lookups_by_id_and_email,
    at_most_one_running_tick_per_persona,
    concurrent_claims_yield_exactly_one_tick,
    a_slot_attempt_is_claimed_once,
    finishing_derives_counters_and_marks_activity,
    action_seq_is_unique_per_tick,
    ratings_must_be_one_to_five_and_once_per_module,
    expired_leases_are_abandoned_and_free_the_persona,
    cleanup_removes_persona_users_with_everything_and_never_humans,
}

mod slots {
    use super::*;
    use persona_runner::store::SlotClaim;

    fn slot_tick(persona: Uuid, slot: chrono::DateTime<chrono::Utc>, runner: &str) -> NewTick {
        NewTick {
            trigger: Trigger::Schedule,
            scheduled_for: Some(slot),
            runner_id: runner.into(),
            ..new_tick(persona)
        }
    }

    async fn a_slot_runs_once_and_retries_up_to_max_attempts(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (persona, _) = seeded(&store).await;
        let slot = persona_runner::time::now();
        let SlotClaim::Claimed(first) = store.claim_slot(&slot_tick(persona, slot, "a"), 2).await.unwrap() else {
            panic!("the first claim wins");
        };
        assert_eq!(first.attempt, 1);
        assert_eq!(
            store.claim_slot(&slot_tick(persona, slot, "b"), 2).await.unwrap(),
            SlotClaim::Busy,
            "running elsewhere: look again later (that runner may die)"
        );
        store
            .finish_tick(first.id, &TickFinish::status(TickStatus::Failed, None))
            .await
            .unwrap();
        let SlotClaim::Claimed(second) = store.claim_slot(&slot_tick(persona, slot, "b"), 2).await.unwrap() else {
            panic!("a failed slot is retried");
        };
        assert_eq!(second.attempt, 2);
        // Time-ordered ids (v7): a later claim sorts after an earlier one.
        assert_eq!(second.id.get_version_num(), 7);
        assert!(second.id > first.id, "{} then {}", first.id, second.id);
        store
            .finish_tick(second.id, &TickFinish::status(TickStatus::Failed, None))
            .await
            .unwrap();
        assert_eq!(
            store.claim_slot(&slot_tick(persona, slot, "a"), 2).await.unwrap(),
            SlotClaim::Settled,
            "attempts used up"
        );

        let next = slot + chrono::Duration::seconds(2);
        let SlotClaim::Claimed(ok) = store.claim_slot(&slot_tick(persona, next, "a"), 2).await.unwrap() else {
            panic!()
        };
        store
            .finish_tick(ok.id, &TickFinish::status(TickStatus::Ok, None))
            .await
            .unwrap();
        assert_eq!(
            store.claim_slot(&slot_tick(persona, next, "b"), 2).await.unwrap(),
            SlotClaim::Settled,
            "done once"
        );
    }

    async fn racing_replicas_claim_a_slot_once(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (persona, _) = seeded(&store).await;
        let slot = persona_runner::time::now();
        let claims = (0..6).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_slot(&slot_tick(persona, slot, &format!("r{i}")), 3)
                    .await
                    .unwrap()
            })
        });
        let mut won = 0;
        for claim in claims {
            won += usize::from(matches!(claim.await.unwrap(), SlotClaim::Claimed(_)));
        }
        assert_eq!(won, 1);
    }

    async fn paused_personas_are_not_claimed(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let (persona, _) = seeded(&store).await;
        assert!(store.set_paused(DEFAULT_TENANT, persona, true).await.unwrap());
        let slot = persona_runner::time::now();
        assert_eq!(
            store.claim_slot(&slot_tick(persona, slot, "a"), 3).await.unwrap(),
            SlotClaim::Settled
        );
        store.set_paused(DEFAULT_TENANT, persona, false).await.unwrap();
        assert!(matches!(
            store.claim_slot(&slot_tick(persona, slot, "a"), 3).await.unwrap(),
            SlotClaim::Claimed(_)
        ));
        store.set_next_due(persona, Some(slot)).await.unwrap();
        let listed = store.schedule_rows(None, 100).await.unwrap();
        assert_eq!(listed[0].next_due_at, Some(slot));
    }

    both_backends! {
        a_slot_runs_once_and_retries_up_to_max_attempts,
        racing_replicas_claim_a_slot_once,
        paused_personas_are_not_claimed,
    }
}
