//! Ratings for QA, read in cells: per UTC day, module, persona and simulator, the count,
//! sum and 1–5 distribution with the evidence behind them. Whole days come from the daily
//! roll-ups (kept beyond the raw rows' retention, updated with each rating), the partial
//! days at a window's edges from the raw ratings, so a report costs the same at a thousand
//! ratings as at a million. The domain (`crate::feedback`) groups the cells.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use uuid::Uuid;

use super::{BackendKind, Result, Store, with_pool};

/// Which ratings a report looks at: a tenant, a half-open window `[from, until)`, and
/// optional filters.
#[derive(Clone, Debug)]
pub struct RatingScope {
    pub tenant: Uuid,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub module: Option<String>,
    pub persona_id: Option<Uuid>,
    pub archetype: Option<String>,
}

impl RatingScope {
    /// The same filters over another window.
    pub fn with_window(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Self {
        Self {
            from,
            until,
            ..self.clone()
        }
    }
}

/// The ratings of one day, module, persona and simulator.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RatingCell {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub module: String,
    pub persona_id: Uuid,
    pub persona: String,
    pub archetype: String,
    /// The simulator version that rated (`""` when unknown).
    pub simulator: String,
    pub ratings: i64,
    pub rating_sum: i64,
    pub r1: i64,
    pub r2: i64,
    pub r3: i64,
    pub r4: i64,
    pub r5: i64,
    pub evidence_calls: i64,
    pub evidence_errors: i64,
    /// Σ mean latency × calls, and the calls that were timed.
    pub latency_sum: f64,
    pub latency_calls: i64,
    /// Σ of the evidence-derived ratings, how many ratings had one, and Σ of those
    /// ratings' own values (the difference of the two sums is the leniency).
    pub evidence_rating_sum: i64,
    pub evidence_rated: i64,
    pub evidenced_rating_sum: i64,
}

/// One day of one module's ratings (UTC days, `YYYY-MM-DD`): the dashboard's chart.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DailyRating {
    pub module: String,
    pub day: String,
    pub average: f64,
    pub count: i64,
}

/// One rating with its note, who gave it and the module's evidence in that tick.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct NoteRecord {
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub persona: String,
    pub archetype: String,
    pub module: String,
    pub rating: i32,
    pub notes: Option<String>,
    pub evidence_calls: i32,
    pub evidence_errors: i32,
    pub simulator: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The filters of a [`RatingScope`] after `$1` tenant and two window bounds (`$2`, `$3`).
macro_rules! scope_filters {
    ($table:literal) => {
        concat!(
            " AND ($4 IS NULL OR ",
            $table,
            ".module = $4) AND ($5 IS NULL OR ",
            $table,
            ".persona_id = $5) AND ($6 IS NULL OR p.archetype = $6)"
        )
    };
}

/// The aggregate columns of raw ratings, in [`RatingCell`] order after the keys.
macro_rules! raw_cells {
    ($day:literal) => {
        concat!(
            "SELECT ",
            $day,
            " AS day, f.module, f.persona_id, p.name AS persona, p.archetype,
                COALESCE(f.simulator, '') AS simulator, COUNT(*) AS ratings,
                CAST(SUM(f.rating) AS BIGINT) AS rating_sum,
                CAST(SUM(CASE WHEN f.rating = 1 THEN 1 ELSE 0 END) AS BIGINT) AS r1,
                CAST(SUM(CASE WHEN f.rating = 2 THEN 1 ELSE 0 END) AS BIGINT) AS r2,
                CAST(SUM(CASE WHEN f.rating = 3 THEN 1 ELSE 0 END) AS BIGINT) AS r3,
                CAST(SUM(CASE WHEN f.rating = 4 THEN 1 ELSE 0 END) AS BIGINT) AS r4,
                CAST(SUM(CASE WHEN f.rating = 5 THEN 1 ELSE 0 END) AS BIGINT) AS r5,
                CAST(SUM(f.evidence_calls) AS BIGINT) AS evidence_calls,
                CAST(SUM(f.evidence_errors) AS BIGINT) AS evidence_errors,
                CAST(COALESCE(SUM(f.evidence_mean_latency_ms * f.evidence_calls), 0) AS DOUBLE PRECISION) AS latency_sum,
                CAST(SUM(CASE WHEN f.evidence_mean_latency_ms IS NULL THEN 0 ELSE f.evidence_calls END) AS BIGINT)
                    AS latency_calls,
                CAST(COALESCE(SUM(f.evidence_rating), 0) AS BIGINT) AS evidence_rating_sum,
                CAST(SUM(CASE WHEN f.evidence_rating IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS evidence_rated,
                CAST(SUM(CASE WHEN f.evidence_rating IS NULL THEN 0 ELSE f.rating END) AS BIGINT) AS evidenced_rating_sum
             FROM persona_feedback f JOIN personas p ON p.id = f.persona_id
             WHERE f.tenant_id = $1 AND f.created_at >= $2 AND f.created_at < $3",
            scope_filters!("f"),
            " GROUP BY 1, f.module, f.persona_id, p.name, p.archetype, COALESCE(f.simulator, '')"
        )
    };
}

pub(super) const ROLLUP_CELLS: &str = concat!(
    "SELECT r.day, r.module, r.persona_id, p.name AS persona, p.archetype, r.simulator,
        CAST(r.ratings AS BIGINT) AS ratings, CAST(r.rating_sum AS BIGINT) AS rating_sum,
        CAST(r.r1 AS BIGINT) AS r1, CAST(r.r2 AS BIGINT) AS r2, CAST(r.r3 AS BIGINT) AS r3,
        CAST(r.r4 AS BIGINT) AS r4, CAST(r.r5 AS BIGINT) AS r5,
        CAST(r.evidence_calls AS BIGINT) AS evidence_calls, CAST(r.evidence_errors AS BIGINT) AS evidence_errors,
        CAST(r.latency_sum AS DOUBLE PRECISION) AS latency_sum, CAST(r.latency_calls AS BIGINT) AS latency_calls,
        CAST(r.evidence_rating_sum AS BIGINT) AS evidence_rating_sum,
        CAST(r.evidence_rated AS BIGINT) AS evidence_rated,
        CAST(r.evidenced_rating_sum AS BIGINT) AS evidenced_rating_sum
     FROM persona_rating_daily r JOIN personas p ON p.id = r.persona_id
     WHERE r.tenant_id = $1 AND r.day >= $2 AND r.day < $3",
    scope_filters!("r")
);

/// The lowest-rated notes of a scope, worst and newest first.
pub(super) const LOWEST_NOTES: &str = concat!(
    "SELECT f.tick_id, f.persona_id, p.name AS persona, p.archetype, f.module, f.rating,
            f.notes, f.evidence_calls, f.evidence_errors, f.simulator, f.created_at
     FROM persona_feedback f JOIN personas p ON p.id = f.persona_id
     WHERE f.tenant_id = $1 AND f.created_at >= $2 AND f.created_at < $3",
    scope_filters!("f"),
    " AND f.notes IS NOT NULL ORDER BY f.rating, f.created_at DESC LIMIT $7"
);

/// Raw rating cells of the partial days at a window's edges, per backend.
pub(super) const RAW_CELLS_SQLITE: &str = raw_cells!("substr(f.created_at, 1, 10)");
pub(super) const RAW_CELLS_POSTGRES: &str = raw_cells!("to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')");

/// Midnight (UTC) starting the day of `at`, or the next midnight when `at` is not one.
fn midnight_at_or_after(at: DateTime<Utc>) -> DateTime<Utc> {
    let start = at.date_naive().and_time(NaiveTime::MIN).and_utc();
    if start == at { start } else { start + Duration::days(1) }
}

fn midnight_at_or_before(at: DateTime<Utc>) -> DateTime<Utc> {
    at.date_naive().and_time(NaiveTime::MIN).and_utc()
}

impl Store {
    /// The ratings in `scope` as cells. Days that lie wholly inside the window are read
    /// from the roll-ups; the partial days at its edges from the raw ratings.
    pub async fn rating_cells(&self, scope: &RatingScope) -> Result<Vec<RatingCell>> {
        let whole_from = midnight_at_or_after(scope.from);
        let whole_until = midnight_at_or_before(scope.until);
        let mut cells = Vec::new();
        if whole_from < whole_until {
            cells.extend(
                self.rollup_cells(
                    scope,
                    &whole_from.format("%Y-%m-%d").to_string(),
                    &whole_until.format("%Y-%m-%d").to_string(),
                )
                .await?,
            );
            if scope.from < whole_from {
                cells.extend(self.raw_cells(scope, scope.from, whole_from).await?);
            }
            if whole_until < scope.until {
                cells.extend(self.raw_cells(scope, whole_until, scope.until).await?);
            }
        } else {
            cells.extend(self.raw_cells(scope, scope.from, scope.until).await?);
        }
        Ok(cells)
    }

    async fn rollup_cells(&self, scope: &RatingScope, from_day: &str, until_day: &str) -> Result<Vec<RatingCell>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(ROLLUP_CELLS)
                .bind(scope.tenant)
                .bind(from_day)
                .bind(until_day)
                .bind(scope.module.as_deref())
                .bind(scope.persona_id)
                .bind(scope.archetype.as_deref())
                .fetch_all(pool)
                .await?
        }))
    }

    async fn raw_cells(
        &self,
        scope: &RatingScope,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<RatingCell>> {
        // Timestamps are RFC 3339 text on SQLite, TIMESTAMPTZ on PostgreSQL.
        let sql = match self.kind() {
            BackendKind::Sqlite => RAW_CELLS_SQLITE,
            BackendKind::Postgres => RAW_CELLS_POSTGRES,
        };
        Ok(with_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(scope.tenant)
                .bind(from)
                .bind(until)
                .bind(scope.module.as_deref())
                .bind(scope.persona_id)
                .bind(scope.archetype.as_deref())
                .fetch_all(pool)
                .await?
        }))
    }

    /// The lowest-rated notes in `scope`, worst and newest first.
    pub async fn lowest_rated_notes(&self, scope: &RatingScope, limit: i64) -> Result<Vec<NoteRecord>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(LOWEST_NOTES)
            .bind(scope.tenant)
            .bind(scope.from)
            .bind(scope.until)
            .bind(scope.module.as_deref())
            .bind(scope.persona_id)
            .bind(scope.archetype.as_deref())
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn whole_days_are_those_between_the_edges() {
        assert_eq!(
            midnight_at_or_after(utc("2026-03-01T10:00:00Z")),
            utc("2026-03-02T00:00:00Z")
        );
        assert_eq!(
            midnight_at_or_after(utc("2026-03-01T00:00:00Z")),
            utc("2026-03-01T00:00:00Z")
        );
        assert_eq!(
            midnight_at_or_before(utc("2026-03-08T10:00:00Z")),
            utc("2026-03-08T00:00:00Z")
        );
    }
}

/// How fit one simulator version was to simulate over a window, counted from its ticks
/// and their calls (see `feedback::SimulatorFitness`).
#[derive(Clone, Debug, Default, PartialEq, sqlx::FromRow)]
pub struct FitnessRow {
    /// The simulator version (`""` when unknown).
    pub simulator: String,
    pub ticks: i64,
    pub idle: i64,
    pub ratings_valid_first: i64,
    pub ratings_valid_repaired: i64,
    pub ratings_invalid: i64,
    #[sqlx(default)]
    pub calls: i64,
    #[sqlx(default)]
    pub recovered: i64,
    #[sqlx(default)]
    pub unknown_tools: i64,
    #[sqlx(default)]
    pub schema_refused: i64,
}

/// Per simulator, the ticks started in `[$2, $3)` of tenant `$1`: how they ended and how
/// their ratings went.
const FITNESS_TICKS: &str = "SELECT COALESCE(simulator, '') AS simulator, COUNT(*) AS ticks,
        CAST(SUM(CASE WHEN status = 'idle' THEN 1 ELSE 0 END) AS BIGINT) AS idle,
        CAST(SUM(CASE WHEN rating_status = 'valid' AND rating_attempts <= 1 THEN 1 ELSE 0 END) AS BIGINT)
            AS ratings_valid_first,
        CAST(SUM(CASE WHEN rating_status = 'valid' AND rating_attempts > 1 THEN 1 ELSE 0 END) AS BIGINT)
            AS ratings_valid_repaired,
        CAST(SUM(CASE WHEN rating_status = 'invalid' THEN 1 ELSE 0 END) AS BIGINT) AS ratings_invalid
     FROM persona_ticks
     WHERE tenant_id = $1 AND started_at >= $2 AND started_at < $3 AND status <> 'running'
     GROUP BY COALESCE(simulator, '')";

/// The same ticks' calls: how many, recovered from text, to tools not listed, refused by
/// the tool's schema (or not JSON, or not an object).
const FITNESS_CALLS: &str = "SELECT COALESCE(t.simulator, '') AS simulator, COUNT(*) AS calls,
        CAST(SUM(CASE WHEN a.recovered THEN 1 ELSE 0 END) AS BIGINT) AS recovered,
        CAST(SUM(CASE WHEN a.refusal = 'unknown_tool' THEN 1 ELSE 0 END) AS BIGINT) AS unknown_tools,
        CAST(SUM(CASE WHEN a.refusal IN ('schema', 'not_json', 'not_object') THEN 1 ELSE 0 END) AS BIGINT)
            AS schema_refused
     FROM persona_actions a JOIN persona_ticks t ON t.id = a.tick_id
     WHERE t.tenant_id = $1 AND t.started_at >= $2 AND t.started_at < $3 AND t.status <> 'running'
       AND a.kind = 'call'
     GROUP BY COALESCE(t.simulator, '')";

/// One simulator's calls: (simulator, calls, recovered, unknown tools, schema refused).
type FitnessCalls = (String, i64, i64, i64, i64);

impl Store {
    /// Per simulator version, how fit it was to simulate in `scope`'s window (the scope's
    /// module, persona and archetype filters do not apply: fitness is the simulator's).
    pub async fn simulator_fitness(&self, scope: &RatingScope) -> Result<Vec<FitnessRow>> {
        let (ticks, calls): (Vec<FitnessRow>, Vec<FitnessCalls>) = with_pool!(self, pool => {
            let ticks = sqlx::query_as(FITNESS_TICKS)
                .bind(scope.tenant)
                .bind(scope.from)
                .bind(scope.until)
                .fetch_all(pool)
                .await?;
            let calls = sqlx::query_as(FITNESS_CALLS)
                .bind(scope.tenant)
                .bind(scope.from)
                .bind(scope.until)
                .fetch_all(pool)
                .await?;
            (ticks, calls)
        });
        let mut rows = ticks;
        for (simulator, count, recovered, unknown_tools, schema_refused) in calls {
            if let Some(row) = rows.iter_mut().find(|r| r.simulator == simulator) {
                row.calls = count;
                row.recovered = recovered;
                row.unknown_tools = unknown_tools;
                row.schema_refused = schema_refused;
            }
        }
        rows.sort_by(|a, b| a.simulator.cmp(&b.simulator));
        Ok(rows)
    }
}
