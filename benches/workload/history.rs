//! Months of history for the report benchmark: personas, ticks, their audited calls and
//! their ratings (with the daily roll-ups the store keeps), written in bulk.

use chrono::{Duration, Utc};
use persona_runner::model::persona::DEFAULT_TENANT;
use persona_runner::store::Store;
use uuid::Uuid;

const ARCHETYPES: [&str; 4] = ["solo-dev", "researcher", "freelancer", "ceo-busy"];

const PERSONAS: usize = 100;
const CALLS_PER_TICK: usize = 10;
const MODULES: [&str; 6] = ["todo", "journal", "notes", "mood", "calendar", "contacts"];

/// Writes the rows with `$pool` (a concrete pool: the same code for both backends).
macro_rules! bulk_write {
    ($pool:ident, $personas:ident, $ticks:ident, $day:expr) => {{
        let now = Utc::now();
        let span = Duration::days(28).num_seconds();
        for chunk_start in (0..$ticks).step_by(500) {
            let chunk: Vec<usize> = (chunk_start..($ticks).min(chunk_start + 500)).collect();
            let rows: Vec<(Uuid, Uuid, chrono::DateTime<Utc>)> = chunk
                .iter()
                .map(|t| {
                    let at = now - Duration::seconds((*t as i64 * 7919) % span);
                    (Uuid::new_v4(), $personas[t % $personas.len()], at)
                })
                .collect();
            let mut tx = $pool.begin().await.expect("begin");
            let mut ticks = sqlx::QueryBuilder::new(
                "INSERT INTO persona_ticks (id, tenant_id, persona_id, trigger, attempt, started_at,
                    finished_at, status, runner_id, lease_expires_at, simulator, tool_calls, calls_ok) ",
            );
            ticks.push_values(&rows, |mut row, (id, persona, at)| {
                row.push_bind(*id)
                    .push_bind(DEFAULT_TENANT)
                    .push_bind(*persona)
                    .push_bind("cli")
                    .push_bind(1)
                    .push_bind(*at)
                    .push_bind(*at)
                    .push_bind("ok")
                    .push_bind("bench")
                    .push_bind(*at)
                    .push_bind("offline")
                    .push_bind(CALLS_PER_TICK as i32)
                    .push_bind(CALLS_PER_TICK as i32);
            });
            ticks.build().execute(&mut *tx).await.expect("ticks");
            for batch in rows.chunks(50) {
                let calls: Vec<(Uuid, Uuid, usize, chrono::DateTime<Utc>)> = batch
                    .iter()
                    .flat_map(|(tick, persona, at)| (0..CALLS_PER_TICK).map(move |seq| (*tick, *persona, seq, *at)))
                    .collect();
                let mut actions = sqlx::QueryBuilder::new(
                    "INSERT INTO persona_actions (id, tenant_id, tick_id, persona_id, seq, kind, tool_name, module,
                        input_hash, result, arguments, output, chaos, latency_ms, created_at, completed_at) ",
                );
                actions.push_values(&calls, |mut row, (tick, persona, seq, at)| {
                    let module = MODULES[seq % MODULES.len()];
                    row.push_bind(Uuid::new_v4())
                        .push_bind(DEFAULT_TENANT)
                        .push_bind(*tick)
                        .push_bind(*persona)
                        .push_bind(*seq as i32)
                        .push_bind("call")
                        .push_bind(format!("{module}.create"))
                        .push_bind(module)
                        .push_bind("0".repeat(64))
                        .push_bind("ok")
                        .push_bind(r#"{"title":"Wochenplan","priority":"normal"}"#)
                        .push_bind(r#"{"id": 42, "title": "Wochenplan", "priority": "normal", "done": false, "created": "2026-11-30"}"#)
                        .push_bind(false)
                        .push_bind(12)
                        .push_bind(*at)
                        .push_bind(*at);
                });
                actions.build().execute(&mut *tx).await.expect("actions");
            }
            let mut feedback = sqlx::QueryBuilder::new(
                "INSERT INTO persona_feedback (id, tenant_id, tick_id, persona_id, module, rating, notes,
                    evidence_calls, evidence_errors, evidence_mean_latency_ms, evidence_rating, simulator, created_at) ",
            );
            let ratings: Vec<(Uuid, Uuid, usize, chrono::DateTime<Utc>)> = rows
                .iter()
                .enumerate()
                .flat_map(|(i, (tick, persona, at))| (0..3).map(move |m| (*tick, *persona, (i + m) % MODULES.len(), *at)))
                .collect();
            feedback.push_values(&ratings, |mut row, (tick, persona, module, at)| {
                let rating = 1 + ((module * 7 + at.timestamp() as usize) % 5) as i32;
                row.push_bind(Uuid::new_v4())
                    .push_bind(DEFAULT_TENANT)
                    .push_bind(*tick)
                    .push_bind(*persona)
                    .push_bind(MODULES[*module])
                    .push_bind(rating)
                    .push_bind("Ging so, das Speichern dauerte.")
                    .push_bind(3)
                    .push_bind(0)
                    .push_bind(12.0)
                    .push_bind(5)
                    .push_bind("offline")
                    .push_bind(*at);
            });
            feedback.build().execute(&mut *tx).await.expect("feedback");
            tx.commit().await.expect("commit");
        }
        // The roll-ups, as the store's writer keeps them with every rating.
        let day: &str = $day;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO persona_rating_daily (tenant_id, day, module, persona_id, simulator, ratings, rating_sum,
                r1, r2, r3, r4, r5, evidence_calls, evidence_errors, latency_sum, latency_calls,
                evidence_rating_sum, evidence_rated, evidenced_rating_sum)
             SELECT tenant_id, {day}, module, persona_id, COALESCE(simulator, ''), COUNT(*), SUM(rating),
                SUM(CASE WHEN rating = 1 THEN 1 ELSE 0 END), SUM(CASE WHEN rating = 2 THEN 1 ELSE 0 END),
                SUM(CASE WHEN rating = 3 THEN 1 ELSE 0 END), SUM(CASE WHEN rating = 4 THEN 1 ELSE 0 END),
                SUM(CASE WHEN rating = 5 THEN 1 ELSE 0 END), SUM(evidence_calls), SUM(evidence_errors),
                SUM(evidence_mean_latency_ms * evidence_calls), SUM(evidence_calls),
                SUM(evidence_rating), COUNT(*), SUM(rating)
             FROM persona_feedback GROUP BY 1, 2, 3, 4, 5
             ON CONFLICT (tenant_id, day, module, persona_id, simulator) DO NOTHING"
        )))
        .execute(&$pool)
        .await
        .expect("roll-ups");
    }};
}

/// Fills `store` with `actions` audited calls over the last 28 days: a tick per ten calls,
/// three ratings per tick.
pub async fn fill(store: &Store, url: &str, actions: usize) {
    let mut personas = Vec::new();
    for i in 0..PERSONAS {
        let spec: persona_runner::model::persona::PersonaSpec = serde_json::from_value(serde_json::json!({
            "name": format!("Report {i}"),
            "email": format!("persona.report-{i}@bench.test"),
            "archetype": ARCHETYPES[i % 4],
            "systemPrompt": "Eine Person, die ihre Woche mit der App plant und dabei gern Notizen schreibt.",
            "moduleMix": {"todo": 1, "journal": 1},
            "tickCadence": "daily"
        }))
        .expect("a spec");
        let (persona, _) = store
            .upsert_persona(DEFAULT_TENANT, &spec, "UTC")
            .await
            .expect("persona");
        personas.push(persona.id);
    }
    let ticks = actions / CALLS_PER_TICK;
    if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
        bulk_write!(pool, personas, ticks, "substr(created_at, 1, 10)");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("postgres");
        bulk_write!(
            pool,
            personas,
            ticks,
            "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        );
        pool.close().await;
    }
}
