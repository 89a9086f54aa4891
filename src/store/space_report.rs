//! What the per-space QA view reads: the members' ticks in a space and the ratings they
//! gave at those ticks' ends, over a window (the calls come from
//! [`Store::space_calls`]).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Result, Store, with_pool};
use crate::model::space::{SpaceRating, SpaceTick};
use crate::model::tick::TickStatus;

const SPACE_TICKS: &str = "SELECT t.id, u.email, p.name, t.started_at, t.status
     FROM persona_ticks t JOIN personas p ON p.id = t.persona_id LEFT JOIN users u ON u.id = p.user_id
     WHERE t.tenant_id = $1 AND t.space = $2 AND t.started_at >= $3 AND t.started_at < $4
     ORDER BY t.started_at";

const SPACE_RATINGS: &str = "SELECT f.tick_id, u.email, f.module, f.rating, f.notes, f.created_at
     FROM persona_feedback f JOIN persona_ticks t ON t.id = f.tick_id JOIN personas p ON p.id = f.persona_id
        LEFT JOIN users u ON u.id = p.user_id
     WHERE f.tenant_id = $1 AND t.space = $2 AND f.created_at >= $3 AND f.created_at < $4
     ORDER BY f.created_at";

impl Store {
    /// The members' ticks in `space` that started in `[since, until)`, oldest first.
    pub async fn space_ticks(
        &self,
        tenant_id: Uuid,
        space: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<SpaceTick>> {
        type Row = (Uuid, Option<String>, String, DateTime<Utc>, TickStatus);
        let rows: Vec<Row> = with_pool!(self, pool => {
            sqlx::query_as(SPACE_TICKS)
                .bind(tenant_id)
                .bind(space)
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(tick_id, email, persona_name, started_at, status)| SpaceTick {
                tick_id,
                email: email.unwrap_or_default(),
                persona_name,
                started_at,
                status,
            })
            .collect())
    }

    /// The ratings given at the end of ticks in `space`, in `[since, until)`, oldest first.
    pub async fn space_ratings(
        &self,
        tenant_id: Uuid,
        space: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<SpaceRating>> {
        type Row = (Uuid, Option<String>, String, i32, Option<String>, DateTime<Utc>);
        let rows: Vec<Row> = with_pool!(self, pool => {
            sqlx::query_as(SPACE_RATINGS)
                .bind(tenant_id)
                .bind(space)
                .bind(since)
                .bind(until)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(tick_id, email, module, rating, notes, created_at)| SpaceRating {
                tick_id,
                email: email.unwrap_or_default(),
                module,
                rating,
                notes,
                created_at,
            })
            .collect())
    }
}
