//! The query plans of the store's hot queries, so a test can keep them on indexes on
//! both backends (a tick's cost must not grow with the size of history). PostgreSQL plans
//! are taken with sequential scans discouraged: on the small tables of a test it would
//! otherwise scan even where an index serves.

use sqlx::Row as _;
use uuid::Uuid;

use super::{Backend, Result, Store};

/// Runs `EXPLAIN` of `$sql` with `$binds` on `$conn` and collects the plan's text from
/// column `$column`.
macro_rules! plan {
    ($conn:expr, $prefix:expr, $column:expr, $sql:expr $(, $bind:expr)* $(,)?) => {{
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{}{}", $prefix, $sql)))
            $(.bind($bind))*
            .fetch_all(&mut *$conn)
            .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>($column).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }};
}

/// Every hot query, explained on `$conn`.
macro_rules! explain_all {
    ($conn:expr, $prefix:expr, $column:expr, $raw_cells:expr) => {{
        let id = Uuid::nil();
        let now = crate::time::now();
        let none: Option<&str> = None;
        let no_id: Option<Uuid> = None;
        let no_time: Option<chrono::DateTime<chrono::Utc>> = None;
        vec![
            (
                "claim a slot",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::ticks::CLAIM_SLOT,
                    id,
                    id,
                    id,
                    "schedule",
                    now,
                    now,
                    "r",
                    now,
                    3,
                    none,
                    "personal"
                ),
            ),
            (
                "finish a tick",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::ticks::FINISH_TICK,
                    id,
                    "ok",
                    none,
                    now,
                    0,
                    0i64,
                    0i64,
                    none,
                    none,
                    none,
                    none,
                    none,
                    none,
                    0i32,
                    none
                ),
            ),
            (
                "complete a call",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::calls::COMPLETE_CALL,
                    id,
                    0i32,
                    "ok",
                    none,
                    none,
                    0i32,
                    now
                ),
            ),
            (
                "a finishing tick's pending calls",
                plan!($conn, $prefix, $column, super::ticks::PENDING_TO_UNKNOWN, id),
            ),
            (
                "an abandoned tick's pending calls",
                plan!($conn, $prefix, $column, super::ticks::ABANDONED_PENDING_TO_UNKNOWN, now),
            ),
            (
                "sweep expired leases",
                plan!($conn, $prefix, $column, super::ticks::ABANDON_TICKS, now),
            ),
            (
                "a finished tick's calls for the profile",
                plan!($conn, $prefix, $column, super::calls::TICK_CALLS, id),
            ),
            (
                "store an alignment",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::profiles::SET_ALIGNMENT,
                    id,
                    id,
                    Some(60.0f64),
                    false,
                    no_id,
                    "active",
                    now
                ),
            ),
            (
                "count ticks",
                plan!($conn, $prefix, $column, super::ticks::COUNT_TICKS, id),
            ),
            (
                "dedup across ticks",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::calls::EARLIER_CALL,
                    id,
                    "h",
                    now,
                    "personal"
                ),
            ),
            (
                "story so far: actions",
                plan!($conn, $prefix, $column, super::calls::RECENT_CALLS, id, 10i64),
            ),
            (
                "story so far: ratings",
                plan!($conn, $prefix, $column, super::ratings::RECENT_RATINGS, id, 5i64),
            ),
            (
                "a tick's calls",
                plan!($conn, $prefix, $column, super::calls::TICK_CALLS, id),
            ),
            (
                "scheduler load",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::personas::SCHEDULE_ROWS,
                    now,
                    id,
                    5000i64
                ),
            ),
            (
                "alignment evidence",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::evidence::ALIGNMENT_EVIDENCE,
                    id,
                    "2026-01-01",
                    id
                ),
            ),
            (
                "interaction history",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::interactions::LIST_INTERACTIONS,
                    id,
                    id,
                    now,
                    none,
                    100i64
                ),
            ),
            (
                "report: roll-ups",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::feedback::ROLLUP_CELLS,
                    id,
                    "2026-01-01",
                    "2026-01-08",
                    none,
                    no_id,
                    none
                ),
            ),
            (
                "report: edges",
                plan!($conn, $prefix, $column, $raw_cells, id, now, now, none, no_id, none),
            ),
            (
                "report: lowest notes",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::feedback::LOWEST_NOTES,
                    id,
                    now,
                    now,
                    none,
                    no_id,
                    none,
                    10i64
                ),
            ),
            (
                "admin: actions",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::admin::LIST_ACTIONS,
                    id,
                    no_id,
                    no_id,
                    none,
                    none,
                    no_time,
                    no_time,
                    no_time,
                    no_id,
                    50i64
                ),
            ),
            (
                "admin: ticks",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::admin::LIST_TICKS,
                    id,
                    no_id,
                    none,
                    none,
                    no_time,
                    no_time,
                    no_time,
                    no_id,
                    50i64
                ),
            ),
            (
                "retention: actions",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::retention::PRUNE_ACTIONS,
                    id,
                    now,
                    1000i64
                ),
            ),
            (
                "retention: interactions",
                plan!(
                    $conn,
                    $prefix,
                    $column,
                    super::retention::PRUNE_INTERACTIONS,
                    id,
                    now,
                    1000i64
                ),
            ),
            (
                "retention: ticks",
                plan!($conn, $prefix, $column, super::retention::PRUNE_TICKS, id, now, 1000i64),
            ),
        ]
    }};
}

impl Store {
    /// The plans of the hot queries, by name (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN`
    /// on PostgreSQL). Nothing is executed.
    pub async fn query_plans(&self) -> Result<Vec<(&'static str, String)>> {
        Ok(match &self.backend {
            Backend::Sqlite { read, .. } => {
                let mut conn = read.acquire().await?;
                explain_all!(conn, "EXPLAIN QUERY PLAN ", 3, super::feedback::RAW_CELLS_SQLITE)
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
                let plans = explain_all!(tx, "EXPLAIN ", 0, super::feedback::RAW_CELLS_POSTGRES);
                tx.rollback().await?;
                plans
            }
        })
    }
}
