//! The alignment evidence: one small row per user and UTC day (`persona_user_daily`),
//! kept with each recorded interaction, so rescoring a user reads at most 30 rows however
//! long their history is; and the one-time backfill of those rows for an older store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Database, Encode, Type};
use uuid::Uuid;

use super::columns::{Bind, Query};
use super::{Conn, Result, Store, begin_write, on_conn, with_pool, with_writer};
use crate::model::profile::Observed;
use crate::time::now;

/// One user's evidence of one day, as stored.
#[derive(sqlx::FromRow)]
pub(super) struct DailyRow {
    interactions: i32,
    detail_signals: i32,
    modules: Json<BTreeMap<String, f64>>,
    metrics: Json<BTreeMap<String, f64>>,
    actions: Json<BTreeMap<String, f64>>,
}

impl From<DailyRow> for Observed {
    fn from(row: DailyRow) -> Self {
        Observed {
            interactions: row.interactions.max(0) as usize,
            detail_signals: row.detail_signals.max(0) as usize,
            modules: row.modules.0,
            metrics: row.metrics.0,
            actions: row.actions.0,
        }
    }
}

/// A user's alignment evidence from a day on.
pub(super) const ALIGNMENT_EVIDENCE: &str = "SELECT interactions, detail_signals, modules, metrics, actions
                 FROM persona_user_daily WHERE user_id = $1 AND day >= $2 AND tenant_id = $3";

/// A day's evidence, replacing what the day had (`$1` user … `$8` actions, bound with
/// [`bind_day`]).
pub(super) const UPSERT_DAY: &str =
    "INSERT INTO persona_user_daily (user_id, day, tenant_id, interactions, detail_signals, modules, metrics, actions)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (user_id, day) DO UPDATE SET interactions = excluded.interactions,
        detail_signals = excluded.detail_signals, modules = excluded.modules,
        metrics = excluded.metrics, actions = excluded.actions";

/// The same for the backfill, which never overwrites a day already kept.
const BACKFILL_DAY: &str =
    "INSERT INTO persona_user_daily (user_id, day, tenant_id, interactions, detail_signals, modules, metrics, actions)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, day) DO NOTHING";

/// Binds a day's evidence to [`UPSERT_DAY`] or the backfill's insert.
pub(super) fn bind_day<'a, 'q, DB: Database>(
    query: Query<'q, DB>,
    user: Uuid,
    day: &'a str,
    tenant: Uuid,
    evidence: &'a Observed,
) -> Query<'q, DB>
where
    Uuid: Bind<DB>,
    i32: Bind<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    Json<&'a BTreeMap<String, f64>>: Encode<'a, DB> + Type<DB>,
{
    query
        .bind(user)
        .bind(day)
        .bind(tenant)
        .bind(evidence.interactions as i32)
        .bind(evidence.detail_signals as i32)
        .bind(Json(&evidence.modules))
        .bind(Json(&evidence.metrics))
        .bind(Json(&evidence.actions))
}

/// The user's evidence for the alignment score from `from_day` (`YYYY-MM-DD`, UTC) on,
/// read on `conn`: at most one small row per day, however many interactions there were.
pub(super) async fn alignment_evidence_on(
    conn: Conn<'_>,
    tenant: Uuid,
    user: Uuid,
    from_day: &str,
) -> Result<Observed> {
    let rows: Vec<DailyRow> = on_conn!(conn, c => {
        sqlx::query_as(ALIGNMENT_EVIDENCE).bind(user).bind(from_day).bind(tenant).fetch_all(&mut *c).await?
    });
    let mut total = Observed::default();
    for row in rows {
        total.merge(&Observed::from(row));
    }
    Ok(total)
}

impl Store {
    /// Builds the per-day evidence rows from the interactions of the last 30 days when an
    /// older store has interactions but no evidence rows yet (once, after the migration
    /// that added them).
    pub(super) async fn backfill_user_daily(&self) -> Result<()> {
        use futures_util::TryStreamExt as _;
        let since = crate::time::before(now(), std::time::Duration::from_secs(30 * 86_400));
        let needed: bool = with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT NOT EXISTS (SELECT 1 FROM persona_user_daily)
                        AND EXISTS (SELECT 1 FROM persona_interactions WHERE created_at >= $1)",
            )
            .bind(since)
            .fetch_one(pool)
            .await?
        });
        if !needed {
            return Ok(());
        }
        let mut days: std::collections::HashMap<(Uuid, String), (Uuid, Observed)> = Default::default();
        with_pool!(self, pool => {
            let mut rows = sqlx::query_as::<_, (Uuid, Uuid, String, Json<Value>, DateTime<Utc>)>(
                "SELECT user_id, tenant_id, interaction_type, metadata, created_at
                 FROM persona_interactions WHERE created_at >= $1",
            )
            .bind(since)
            .fetch(pool);
            while let Some((user, tenant, kind, metadata, at)) = rows.try_next().await? {
                let Ok(kind) = kind.parse() else { continue };
                days.entry((user, at.format("%Y-%m-%d").to_string()))
                    .or_insert_with(|| (tenant, Observed::default()))
                    .1
                    .add(kind, &metadata.0);
            }
        });
        let days: Vec<_> = days.into_iter().collect();
        with_writer!(self, pool => {
            for chunk in days.chunks(1000) {
                let mut tx = begin_write!(pool);
                for ((user, day), (tenant, evidence)) in chunk {
                    bind_day(sqlx::query(BACKFILL_DAY), *user, day, *tenant, evidence)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        });
        tracing::info!(rows = days.len(), "built the alignment evidence of the last 30 days");
        Ok(())
    }

    /// The evidence of `user` in `tenant` for the alignment score from `from_day`
    /// (`YYYY-MM-DD`, UTC) on: at most one small row per day.
    pub async fn alignment_evidence(&self, tenant: Uuid, user: Uuid, from_day: &str) -> Result<Observed> {
        with_pool!(self, pool => {
            let mut conn = pool.acquire().await?;
            alignment_evidence_on(Conn::from(&mut *conn), tenant, user, from_day).await
        })
    }
}
