//! The ratings of ticks: one row per module a persona rated at a tick's end, stored with
//! that module's evidence, and the day's roll-up moved with it in the same commit (the QA
//! report reads whole days from the roll-ups). Written through the store's
//! [`writer`](super::writer), like the calls.

use chrono::{DateTime, Utc};
use sqlx::{Database, Encode, Row, Type};
use uuid::Uuid;

use super::columns::{Bind, Query};
use super::writer::{Op, Write, WriteFuture};
use super::{Conn, Result, Store, on_conn, with_pool};
use crate::model::rating::{NewRating, Rating};
use crate::time::now;

const INSERT_RATING: &str = "INSERT INTO persona_feedback (id, tenant_id, tick_id, persona_id, module, rating,
        notes, evidence_calls, evidence_errors, evidence_mean_latency_ms, evidence_rating, simulator, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Adds one rating to its day's roll-up: `$1` tenant, `$2` day, `$3` module, `$4`
/// persona, `$5` simulator, then the rating's contributions (see [`bind_rollup`]).
const ROLLUP_UPSERT: &str = "INSERT INTO persona_rating_daily (tenant_id, day, module, persona_id, simulator,
        ratings, rating_sum, r1, r2, r3, r4, r5, evidence_calls, evidence_errors, latency_sum, latency_calls,
        evidence_rating_sum, evidence_rated, evidenced_rating_sum)
     VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
     ON CONFLICT (tenant_id, day, module, persona_id, simulator) DO UPDATE SET
        ratings = persona_rating_daily.ratings + 1,
        rating_sum = persona_rating_daily.rating_sum + excluded.rating_sum,
        r1 = persona_rating_daily.r1 + excluded.r1,
        r2 = persona_rating_daily.r2 + excluded.r2,
        r3 = persona_rating_daily.r3 + excluded.r3,
        r4 = persona_rating_daily.r4 + excluded.r4,
        r5 = persona_rating_daily.r5 + excluded.r5,
        evidence_calls = persona_rating_daily.evidence_calls + excluded.evidence_calls,
        evidence_errors = persona_rating_daily.evidence_errors + excluded.evidence_errors,
        latency_sum = persona_rating_daily.latency_sum + excluded.latency_sum,
        latency_calls = persona_rating_daily.latency_calls + excluded.latency_calls,
        evidence_rating_sum = persona_rating_daily.evidence_rating_sum + excluded.evidence_rating_sum,
        evidence_rated = persona_rating_daily.evidence_rated + excluded.evidence_rated,
        evidenced_rating_sum = persona_rating_daily.evidenced_rating_sum + excluded.evidenced_rating_sum";

/// A persona's latest ratings.
pub(super) const RECENT_RATINGS: &str = "SELECT module, rating, notes, evidence_calls, evidence_errors,
        evidence_mean_latency_ms, evidence_rating, created_at
     FROM persona_feedback WHERE persona_id = $1 ORDER BY created_at DESC LIMIT $2";

/// A tick's ratings, by module.
const TICK_RATINGS: &str = "SELECT module, rating, notes, evidence_calls, evidence_errors,
        evidence_mean_latency_ms, evidence_rating, created_at
     FROM persona_feedback WHERE tick_id = $1 ORDER BY module";

impl<'r, R: Row> sqlx::FromRow<'r, R> for Rating
where
    &'static str: sqlx::ColumnIndex<R>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Rating {
            module: row.try_get("module")?,
            rating: row.try_get("rating")?,
            notes: row.try_get("notes")?,
            evidence_calls: row.try_get("evidence_calls")?,
            evidence_errors: row.try_get("evidence_errors")?,
            evidence_mean_latency_ms: row.try_get("evidence_mean_latency_ms")?,
            evidence_rating: row.try_get("evidence_rating")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Binds a rating stored at `at` to [`INSERT_RATING`].
fn bind_rating<'a, 'q, DB: Database>(query: Query<'q, DB>, rating: &'a NewRating, at: DateTime<Utc>) -> Query<'q, DB>
where
    Uuid: Bind<DB>,
    i32: Bind<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    Option<f64>: Bind<DB>,
    Option<i32>: Bind<DB>,
    DateTime<Utc>: Bind<DB>,
{
    query
        .bind(super::writer::new_row_id())
        .bind(rating.tenant_id)
        .bind(rating.tick_id)
        .bind(rating.persona_id)
        .bind(rating.module.as_str())
        .bind(rating.rating)
        .bind(rating.notes.as_deref())
        .bind(rating.evidence_calls)
        .bind(rating.evidence_errors)
        .bind(rating.evidence_mean_latency_ms)
        .bind(rating.evidence_rating)
        .bind(rating.simulator.as_str())
        .bind(at)
}

/// Binds [`ROLLUP_UPSERT`] for a rating stored at `at`: its contributions to the day.
fn bind_rollup<'a, 'q, DB: Database>(query: Query<'q, DB>, rating: &'a NewRating, at: DateTime<Utc>) -> Query<'q, DB>
where
    Uuid: Bind<DB>,
    i64: Bind<DB>,
    f64: Bind<DB>,
    String: Bind<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let value = i64::from(rating.rating);
    let calls = i64::from(rating.evidence_calls);
    let timed = rating.evidence_mean_latency_ms.is_some();
    let evidenced = rating.evidence_rating.is_some();
    query
        .bind(rating.tenant_id)
        .bind(at.format("%Y-%m-%d").to_string())
        .bind(rating.module.as_str())
        .bind(rating.persona_id)
        .bind(rating.simulator.as_str())
        .bind(value)
        .bind(i64::from(value == 1))
        .bind(i64::from(value == 2))
        .bind(i64::from(value == 3))
        .bind(i64::from(value == 4))
        .bind(i64::from(value == 5))
        .bind(calls)
        .bind(i64::from(rating.evidence_errors))
        .bind(rating.evidence_mean_latency_ms.unwrap_or(0.0) * calls as f64)
        .bind(if timed { calls } else { 0 })
        .bind(i64::from(rating.evidence_rating.unwrap_or(0)))
        .bind(i64::from(evidenced))
        .bind(if evidenced { value } else { 0 })
}

impl Write for NewRating {
    fn apply<'t>(&'t self, conn: Conn<'t>) -> WriteFuture<'t> {
        Box::pin(async move {
            let at = self.recorded_at.unwrap_or_else(now);
            on_conn!(conn, conn => {
                bind_rating(sqlx::query(INSERT_RATING), self, at).execute(&mut *conn).await?;
                bind_rollup(sqlx::query(ROLLUP_UPSERT), self, at).execute(&mut *conn).await?;
            });
            Ok(1)
        })
    }
}

impl Store {
    /// Stores a tick's ratings (and their days' roll-ups) together, in one commit: all of
    /// them or, when one is refused, none. The database refuses ratings outside 1..=5 and
    /// a second rating of the same module in the same tick.
    pub async fn record_ratings(&self, ratings: Vec<NewRating>) -> Result<()> {
        if ratings.is_empty() {
            return Ok(());
        }
        let ops = ratings.into_iter().map(|rating| Box::new(rating) as Op).collect();
        self.writer.submit_all(ops).await.map(drop)
    }

    /// The ratings of a tick, by module.
    pub async fn tick_ratings(&self, tick_id: Uuid) -> Result<Vec<Rating>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(TICK_RATINGS).bind(tick_id).fetch_all(pool).await?
        }))
    }

    /// The persona's latest ratings, newest first.
    pub async fn recent_ratings(&self, persona_id: Uuid, limit: i64) -> Result<Vec<Rating>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(RECENT_RATINGS).bind(persona_id).bind(limit).fetch_all(pool).await?
        }))
    }
}
