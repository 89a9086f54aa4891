//! Deleting rows past their retention, a small batch at a time, through the indexes the
//! rest of the store already keeps (per tenant and time).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Result, Store, with_pool, with_writer};

/// What can be pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prunable {
    /// Audited calls.
    Actions,
    /// Profile-store interactions.
    Interactions,
    /// Finished ticks, with their ratings, transcripts and remaining calls.
    Ticks,
    /// Daily token spend.
    Spend,
    /// Per-day alignment evidence (the score reads 30 days).
    Evidence,
    /// Expired dashboard sessions.
    Sessions,
    /// Heartbeats of runners long gone.
    Heartbeats,
}

pub(super) const PRUNE_ACTIONS: &str = "DELETE FROM persona_actions WHERE id IN (SELECT id FROM persona_actions
                        WHERE tenant_id = $1 AND created_at < $2 LIMIT $3)";

pub(super) const PRUNE_INTERACTIONS: &str =
    "DELETE FROM persona_interactions WHERE id IN (SELECT id FROM persona_interactions
                        WHERE tenant_id = $1 AND created_at < $2 LIMIT $3)";

pub(super) const PRUNE_TICKS: &str = "DELETE FROM persona_ticks WHERE id IN (SELECT id FROM persona_ticks
                        WHERE tenant_id = $1 AND started_at < $2 AND status <> 'running' LIMIT $3)";

impl Store {
    /// Deletes up to `batch` rows of `what` older than `cutoff` in each tenant; how many.
    pub async fn prune(&self, what: Prunable, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        let day = cutoff.format("%Y-%m-%d").to_string();
        let global = match what {
            Prunable::Spend => Some((
                "DELETE FROM spend_daily WHERE day < $1",
                "DELETE FROM persona_spend_daily WHERE day < $1",
            )),
            _ => None,
        };
        if let Some((first, second)) = global {
            let mut deleted = 0;
            for sql in [first, second] {
                deleted += with_writer!(self, pool => {
                    sqlx::query(sql).bind(&day).execute(pool).await?.rows_affected()
                });
            }
            return Ok(deleted);
        }
        let once = match what {
            Prunable::Sessions => Some("DELETE FROM dashboard_sessions WHERE expires_at < $1"),
            Prunable::Heartbeats => Some("DELETE FROM runner_heartbeats WHERE seen_at < $1"),
            _ => None,
        };
        if let Some(sql) = once {
            return Ok(with_writer!(self, pool => {
                sqlx::query(sql).bind(cutoff).execute(pool).await?.rows_affected()
            }));
        }
        let tenants: Vec<Uuid> = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM tenants").fetch_all(pool).await?
        });
        let mut deleted = 0;
        for tenant in tenants {
            deleted += match what {
                Prunable::Actions => self.prune_in(PRUNE_ACTIONS, tenant, cutoff, batch).await?,
                Prunable::Interactions => self.prune_in(PRUNE_INTERACTIONS, tenant, cutoff, batch).await?,
                Prunable::Ticks => self.prune_in(PRUNE_TICKS, tenant, cutoff, batch).await?,
                Prunable::Evidence => with_writer!(self, pool => {
                    sqlx::query("DELETE FROM persona_user_daily WHERE tenant_id = $1 AND day < $2")
                        .bind(tenant)
                        .bind(&day)
                        .execute(pool)
                        .await?
                        .rows_affected()
                }),
                Prunable::Spend | Prunable::Sessions | Prunable::Heartbeats => 0,
            };
        }
        Ok(deleted)
    }

    async fn prune_in(&self, sql: &'static str, tenant: Uuid, cutoff: DateTime<Utc>, batch: i64) -> Result<u64> {
        Ok(with_writer!(self, pool => {
            sqlx::query(sql)
                .bind(tenant)
                .bind(cutoff)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
