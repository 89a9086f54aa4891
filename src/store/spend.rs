//! The daily LLM spend: what `finish_tick` adds in its transaction, per persona and in
//! all, and what the spend cap, the dashboard and `/metrics` read back (one row by primary
//! key, however many ticks the day had).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Result, Store, with_pool};

/// Adds a finished tick's tokens to its day, per persona and in all; bound as
/// `($1 persona_id, $2 day, $3 tokens_in, $4 tokens_out)`.
pub(super) const ADD_TO_DAILY_SPEND: [&str; 2] = [
    "INSERT INTO persona_spend_daily (persona_id, day, tokens_in, tokens_out) VALUES ($1, $2, $3, $4)
     ON CONFLICT (persona_id, day) DO UPDATE SET
        tokens_in = persona_spend_daily.tokens_in + excluded.tokens_in,
        tokens_out = persona_spend_daily.tokens_out + excluded.tokens_out",
    "INSERT INTO spend_daily (day, tokens_in, tokens_out)
     SELECT $2, $3, $4 WHERE $1 IS NOT NULL
     ON CONFLICT (day) DO UPDATE SET
        tokens_in = spend_daily.tokens_in + excluded.tokens_in,
        tokens_out = spend_daily.tokens_out + excluded.tokens_out",
];

impl Store {
    /// LLM tokens (prompt + completion) spent on the UTC day of `day`, by one persona or
    /// by all.
    pub async fn tokens_spent(&self, persona_id: Option<Uuid>, day: DateTime<Utc>) -> Result<i64> {
        let (tokens_in, tokens_out) = self.token_spend(persona_id, day).await?;
        Ok(tokens_in + tokens_out)
    }

    /// LLM tokens (prompt, completion) of the ticks that finished on the UTC day of `day`,
    /// of one persona or all: one row of the daily spend that `finish_tick` keeps, so the
    /// cap checked before every tick and each `/metrics` scrape cost the same however many
    /// ticks the day had.
    pub async fn token_spend(&self, persona_id: Option<Uuid>, day: DateTime<Utc>) -> Result<(i64, i64)> {
        let day = day.format("%Y-%m-%d").to_string();
        let spent: Option<(i64, i64)> = with_pool!(self, pool => {
            match persona_id {
                Some(persona_id) => sqlx::query_as(
                    "SELECT tokens_in, tokens_out FROM persona_spend_daily WHERE persona_id = $1 AND day = $2",
                )
                .bind(persona_id)
                .bind(&day)
                .fetch_optional(pool)
                .await?,
                None => sqlx::query_as("SELECT tokens_in, tokens_out FROM spend_daily WHERE day = $1")
                    .bind(&day)
                    .fetch_optional(pool)
                    .await?,
            }
        });
        Ok(spent.unwrap_or((0, 0)))
    }
}
