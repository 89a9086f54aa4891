//! Rating aggregates for QA: per module, persona or archetype over a window, with the
//! 1–5 distribution and the evidence behind the ratings; the daily series of the
//! dashboard's chart; the lowest-rated notes. Every average is a real average with its
//! count (the reference system once reported a count as the average).

use chrono::{DateTime, Utc};
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

/// What ratings are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    Module,
    Persona,
    Archetype,
}

/// The ratings of one group over a window.
#[derive(Clone, Debug, PartialEq)]
pub struct RatingGroup {
    /// Module name, archetype, or the persona's id.
    pub key: String,
    /// What to show: the module, archetype or persona name.
    pub label: String,
    pub count: i64,
    pub average: f64,
    /// How many ratings of 1, 2, 3, 4 and 5.
    pub distribution: [i64; 5],
    /// Tool calls behind these ratings, and how many failed.
    pub evidence_calls: i64,
    pub evidence_errors: i64,
    /// Mean latency of those calls, weighted by calls (`None` when none was timed).
    pub mean_latency_ms: Option<f64>,
}

/// One day of one module's ratings (UTC days, `YYYY-MM-DD`): the dashboard's chart.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
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
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct GroupStats {
    count: i64,
    average: f64,
    r1: i64,
    r2: i64,
    r3: i64,
    r4: i64,
    r5: i64,
    calls: i64,
    errors: i64,
    latency: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct KeyedGroup {
    key: String,
    #[sqlx(flatten)]
    stats: GroupStats,
}

#[derive(sqlx::FromRow)]
struct PersonaGroup {
    persona_id: Uuid,
    name: String,
    #[sqlx(flatten)]
    stats: GroupStats,
}

impl GroupStats {
    fn into_group(self, key: String, label: String) -> RatingGroup {
        RatingGroup {
            key,
            label,
            count: self.count,
            average: self.average,
            distribution: [self.r1, self.r2, self.r3, self.r4, self.r5],
            evidence_calls: self.calls,
            evidence_errors: self.errors,
            mean_latency_ms: self.latency,
        }
    }
}

/// The aggregate columns shared by every grouping, then the scope's `FROM … WHERE`.
macro_rules! grouped {
    ($keys:literal, $group_by:literal) => {
        concat!(
            "SELECT ",
            $keys,
            ", COUNT(*) AS count, CAST(AVG(f.rating) AS DOUBLE PRECISION) AS average,
                SUM(CASE WHEN f.rating = 1 THEN 1 ELSE 0 END) AS r1,
                SUM(CASE WHEN f.rating = 2 THEN 1 ELSE 0 END) AS r2,
                SUM(CASE WHEN f.rating = 3 THEN 1 ELSE 0 END) AS r3,
                SUM(CASE WHEN f.rating = 4 THEN 1 ELSE 0 END) AS r4,
                SUM(CASE WHEN f.rating = 5 THEN 1 ELSE 0 END) AS r5,
                CAST(SUM(f.evidence_calls) AS BIGINT) AS calls,
                CAST(SUM(f.evidence_errors) AS BIGINT) AS errors,
                CAST(SUM(f.evidence_mean_latency_ms * f.evidence_calls) AS DOUBLE PRECISION)
                    / NULLIF(SUM(CASE WHEN f.evidence_mean_latency_ms IS NULL THEN 0 ELSE f.evidence_calls END), 0)
                    AS latency ",
            scope_sql!(),
            " GROUP BY ",
            $group_by
        )
    };
}

/// `FROM … WHERE` of a [`RatingScope`] bound as `$1..$6`.
macro_rules! scope_sql {
    () => {
        "FROM persona_feedback f JOIN personas p ON p.id = f.persona_id
         WHERE f.tenant_id = $1 AND f.created_at >= $2 AND f.created_at < $3
           AND ($4 IS NULL OR f.module = $4)
           AND ($5 IS NULL OR f.persona_id = $5)
           AND ($6 IS NULL OR p.archetype = $6)"
    };
}

macro_rules! bind_scope {
    ($query:expr, $scope:expr) => {
        $query
            .bind($scope.tenant)
            .bind($scope.from)
            .bind($scope.until)
            .bind($scope.module.as_deref())
            .bind($scope.persona_id)
            .bind($scope.archetype.as_deref())
    };
}

impl Store {
    /// Ratings in `scope` grouped by `grouping`, by key.
    pub async fn rating_groups(&self, scope: &RatingScope, grouping: Grouping) -> Result<Vec<RatingGroup>> {
        let mut groups: Vec<RatingGroup> = match grouping {
            Grouping::Module | Grouping::Archetype => {
                let rows: Vec<KeyedGroup> = if grouping == Grouping::Module {
                    with_pool!(self, pool => {
                        bind_scope!(sqlx::query_as(grouped!("f.module AS key", "f.module")), scope)
                            .fetch_all(pool)
                            .await?
                    })
                } else {
                    with_pool!(self, pool => {
                        bind_scope!(sqlx::query_as(grouped!("p.archetype AS key", "p.archetype")), scope)
                            .fetch_all(pool)
                            .await?
                    })
                };
                rows.into_iter()
                    .map(|row| row.stats.into_group(row.key.clone(), row.key))
                    .collect()
            }
            Grouping::Persona => {
                let rows: Vec<PersonaGroup> = with_pool!(self, pool => {
                    bind_scope!(
                        sqlx::query_as(grouped!("f.persona_id AS persona_id, p.name AS name", "f.persona_id, p.name")),
                        scope
                    )
                    .fetch_all(pool)
                    .await?
                });
                rows.into_iter()
                    .map(|row| row.stats.into_group(row.persona_id.to_string(), row.name))
                    .collect()
            }
        };
        groups.sort_by(|a, b| a.label.cmp(&b.label).then_with(|| a.key.cmp(&b.key)));
        Ok(groups)
    }

    /// Per module and UTC day: the average rating and its count, by module then day.
    pub async fn daily_ratings(&self, scope: &RatingScope) -> Result<Vec<DailyRating>> {
        // Timestamps are RFC 3339 text on SQLite, TIMESTAMPTZ on PostgreSQL.
        Ok(match self.kind() {
            BackendKind::Sqlite => with_pool!(self, pool => {
                bind_scope!(
                    sqlx::query_as(concat!(
                        "SELECT f.module AS module, substr(f.created_at, 1, 10) AS day,
                                CAST(AVG(f.rating) AS DOUBLE PRECISION) AS average, COUNT(*) AS count ",
                        scope_sql!(),
                        " GROUP BY f.module, day ORDER BY f.module, day"
                    )),
                    scope
                )
                .fetch_all(pool)
                .await?
            }),
            BackendKind::Postgres => with_pool!(self, pool => {
                bind_scope!(
                    sqlx::query_as(concat!(
                        "SELECT f.module AS module, to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
                                CAST(AVG(f.rating) AS DOUBLE PRECISION) AS average, COUNT(*) AS count ",
                        scope_sql!(),
                        " GROUP BY f.module, day ORDER BY f.module, day"
                    )),
                    scope
                )
                .fetch_all(pool)
                .await?
            }),
        })
    }

    /// The lowest-rated notes in `scope`, worst and newest first.
    pub async fn lowest_rated_notes(&self, scope: &RatingScope, limit: i64) -> Result<Vec<NoteRecord>> {
        Ok(with_pool!(self, pool => {
            bind_scope!(
                sqlx::query_as(concat!(
                    "SELECT f.tick_id, f.persona_id, p.name AS persona, p.archetype, f.module, f.rating,
                            f.notes, f.evidence_calls, f.evidence_errors, f.created_at ",
                    scope_sql!(),
                    " AND f.notes IS NOT NULL ORDER BY f.rating, f.created_at DESC LIMIT $7"
                )),
                scope
            )
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}
