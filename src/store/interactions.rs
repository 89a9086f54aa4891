//! The interaction audit of the profile store: recording a user's interactions (the
//! rows, the learned preferences they move and the day's evidence they add, in one
//! transaction; a tick's end runs the same steps inside its own), and reading them back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::evidence::{DailyRow, UPSERT_DAY, bind_day};
use super::profiles::{ProfileRow, select_profile_for_update};
use super::{BackendKind, Conn, Result, Store, StoreError, begin_write, on_conn, with_pool, with_writer};
use crate::model::profile::{Interaction, Learned, NewInteraction, Observed, Profile};
use crate::time::now;

#[derive(sqlx::FromRow)]
struct InteractionRow {
    id: Uuid,
    user_id: Uuid,
    persona_id: Option<Uuid>,
    tick_id: Option<Uuid>,
    interaction_type: String,
    page_type: Option<String>,
    page_id: Option<String>,
    element_id: Option<String>,
    element_type: Option<String>,
    metadata: Json<Value>,
    duration_seconds: Option<i32>,
    feedback_sentiment: Option<String>,
    feedback_comment: Option<String>,
    created_at: DateTime<Utc>,
}

impl TryFrom<InteractionRow> for Interaction {
    type Error = StoreError;
    fn try_from(row: InteractionRow) -> Result<Self> {
        let corrupt = |message| StoreError::Corrupt {
            table: "persona_interactions",
            message,
        };
        Ok(Interaction {
            id: row.id,
            user_id: row.user_id,
            persona_id: row.persona_id,
            tick_id: row.tick_id,
            interaction_type: row.interaction_type.parse().map_err(corrupt)?,
            page_type: row.page_type,
            page_id: row.page_id,
            element_id: row.element_id,
            element_type: row.element_type,
            metadata: row.metadata.0,
            duration_seconds: row.duration_seconds,
            feedback_sentiment: row.feedback_sentiment.map(|s| s.parse()).transpose().map_err(corrupt)?,
            feedback_comment: row.feedback_comment,
            created_at: row.created_at,
        })
    }
}

/// A user's interactions since a time, newest first.
pub(super) const LIST_INTERACTIONS: &str =
    "SELECT id, user_id, persona_id, tick_id, interaction_type, page_type, page_id, element_id,
                        element_type, metadata, duration_seconds, feedback_sentiment, feedback_comment, created_at
                 FROM persona_interactions
                 WHERE tenant_id = $1 AND user_id = $2 AND created_at >= $3
                   AND ($4 IS NULL OR interaction_type = $4)
                 ORDER BY created_at DESC, id DESC LIMIT $5";

/// A user's evidence of one day, locked like the profile row.
pub(super) fn select_day_for_update(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Sqlite => {
            "SELECT interactions, detail_signals, modules, metrics, actions FROM persona_user_daily WHERE user_id = $1 AND day = $2"
        }
        BackendKind::Postgres => {
            "SELECT interactions, detail_signals, modules, metrics, actions FROM persona_user_daily WHERE user_id = $1 AND day = $2 FOR UPDATE"
        }
    }
}

/// Interactions of one user to record at one time, with their ids and the evidence they
/// add to the day.
pub(super) struct Recording<'a> {
    pub tenant: Uuid,
    pub user: Uuid,
    pub interactions: &'a [NewInteraction],
    pub ids: &'a [Uuid],
    pub at: DateTime<Utc>,
    pub delta: &'a Observed,
}

/// Records interactions of one user on the open transaction `conn` (see
/// [`Store::record_interactions`]; the tick's end runs it inside its own transaction):
/// inserts them, moves the profile's learned preferences with `learn`, adds the delta to
/// the day's evidence. The user's profile as it now stands (`None` without one). With no
/// interactions it only reads the profile.
pub(super) async fn record_on(
    mut conn: Conn<'_>,
    recording: &Recording<'_>,
    learn: impl Fn(&mut Learned, &NewInteraction),
) -> Result<Option<Profile>> {
    insert_interactions_on(conn.reborrow(), recording).await?;
    let select = select_profile_for_update(conn.kind());
    let row: Option<ProfileRow> = on_conn!(conn.reborrow(), c => {
        sqlx::query_as(select)
            .bind(recording.tenant)
            .bind(recording.user)
            .fetch_optional(&mut *c)
            .await?
    });
    let mut profile = row.map(Profile::try_from).transpose()?;
    if let Some(profile) = profile.as_mut().filter(|_| !recording.interactions.is_empty()) {
        for new in recording.interactions {
            learn(&mut profile.learned, new);
        }
        learned_on(conn.reborrow(), recording, &profile.learned).await?;
        profile.total_interactions += recording.interactions.len() as i32;
        profile.last_interaction_at = Some(recording.at);
        profile.updated_at = recording.at;
    }
    if !recording.interactions.is_empty() {
        add_evidence_on(conn, recording.user, recording.tenant, recording.at, recording.delta).await?;
    }
    Ok(profile)
}

/// Inserts the interactions, many rows per statement (well under either backend's
/// parameter limit).
async fn insert_interactions_on(mut conn: Conn<'_>, recording: &Recording<'_>) -> Result<()> {
    for (chunk, chunk_ids) in recording.interactions.chunks(500).zip(recording.ids.chunks(500)) {
        on_conn!(conn.reborrow(), c => {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO persona_interactions (id, tenant_id, user_id, persona_id, tick_id,
                    interaction_type, page_type, page_id, element_id, element_type, metadata,
                    duration_seconds, feedback_sentiment, feedback_comment, created_at) ",
            );
            insert.push_values(chunk.iter().zip(chunk_ids), |mut row, (new, id)| {
                row.push_bind(*id)
                    .push_bind(recording.tenant)
                    .push_bind(recording.user)
                    .push_bind(new.persona_id)
                    .push_bind(new.tick_id)
                    .push_bind(new.interaction_type)
                    .push_bind(new.page_type.clone())
                    .push_bind(new.page_id.clone())
                    .push_bind(new.element_id.clone())
                    .push_bind(new.element_type.clone())
                    .push_bind(Json(new.metadata.clone()))
                    .push_bind(new.duration_seconds)
                    .push_bind(new.feedback_sentiment)
                    .push_bind(new.feedback_comment.clone())
                    .push_bind(recording.at);
            });
            insert.build().execute(&mut *c).await?;
        });
    }
    Ok(())
}

/// Stores the learned preferences and counters the interactions moved.
async fn learned_on(conn: Conn<'_>, recording: &Recording<'_>, learned: &Learned) -> Result<()> {
    on_conn!(conn, c => {
        sqlx::query(
            "UPDATE persona_user_profiles SET detail_preference = $3, external_data_usage = $4,
                decision_speed = $5, collaboration_frequency = $6, metric_preferences = $7,
                action_preferences = $8, data_source_preferences = $9, interaction_summary = $10,
                total_interactions = total_interactions + $12, last_interaction_at = $11, updated_at = $11
             WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(recording.tenant)
        .bind(recording.user)
        .bind(learned.detail_preference)
        .bind(learned.external_data_usage)
        .bind(learned.decision_speed)
        .bind(learned.collaboration_frequency)
        .bind(Json(&learned.metric_preferences))
        .bind(Json(&learned.action_preferences))
        .bind(Json(&learned.data_source_preferences))
        .bind(Json(&learned.interaction_summary))
        .bind(recording.at)
        .bind(recording.interactions.len() as i32)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Adds `delta` to the user's evidence of the day of `at`.
async fn add_evidence_on(
    mut conn: Conn<'_>,
    user: Uuid,
    tenant: Uuid,
    at: DateTime<Utc>,
    delta: &Observed,
) -> Result<()> {
    let day = at.format("%Y-%m-%d").to_string();
    let select = select_day_for_update(conn.kind());
    let existing: Option<DailyRow> = on_conn!(conn.reborrow(), c => {
        sqlx::query_as(select).bind(user).bind(&day).fetch_optional(&mut *c).await?
    });
    let mut evidence = existing.map(Observed::from).unwrap_or_default();
    evidence.merge(delta);
    on_conn!(conn, c => {
        bind_day(sqlx::query(UPSERT_DAY), user, &day, tenant, &evidence).execute(&mut *c).await?;
    });
    Ok(())
}

impl Store {
    /// Appends interactions of one user to the audit and, when the user has a profile,
    /// moves its learned preferences with `learn` and bumps its counters; adds `delta` to
    /// the user's evidence of `day` (what the alignment score reads). One transaction.
    pub async fn record_interactions(
        &self,
        tenant: Uuid,
        user: Uuid,
        interactions: &[NewInteraction],
        learn: impl Fn(&mut Learned, &NewInteraction),
        delta: &Observed,
    ) -> Result<Vec<Interaction>> {
        if interactions.is_empty() {
            return Ok(Vec::new());
        }
        let at = now();
        let ids: Vec<Uuid> = interactions.iter().map(|_| super::writer::new_row_id()).collect();
        let recording = Recording {
            tenant,
            user,
            interactions,
            ids: &ids,
            at,
            delta,
        };
        with_writer!(self, pool => {
            let mut tx = begin_write!(pool);
            record_on(Conn::from(&mut *tx), &recording, &learn).await?;
            tx.commit().await?;
        });
        Ok(interactions
            .iter()
            .zip(ids)
            .map(|(new, id)| Interaction {
                id,
                user_id: user,
                persona_id: new.persona_id,
                tick_id: new.tick_id,
                interaction_type: new.interaction_type,
                page_type: new.page_type.clone(),
                page_id: new.page_id.clone(),
                element_id: new.element_id.clone(),
                element_type: new.element_type.clone(),
                metadata: new.metadata.clone(),
                duration_seconds: new.duration_seconds,
                feedback_sentiment: new.feedback_sentiment,
                feedback_comment: new.feedback_comment.clone(),
                created_at: at,
            })
            .collect())
    }

    /// The user's interactions since `since` (of `kind` when given), newest first.
    pub async fn list_interactions(
        &self,
        tenant: Uuid,
        user: Uuid,
        since: DateTime<Utc>,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Interaction>> {
        let rows: Vec<InteractionRow> = with_pool!(self, pool => {
            sqlx::query_as(
                LIST_INTERACTIONS,
            )
            .bind(tenant)
            .bind(user)
            .bind(since)
            .bind(kind)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Interaction::try_from).collect()
    }

    /// The user's interactions since `since` counted by type.
    pub async fn interaction_counts(
        &self,
        tenant: Uuid,
        user: Uuid,
        since: DateTime<Utc>,
    ) -> Result<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT interaction_type, COUNT(*) FROM persona_interactions
                 WHERE tenant_id = $1 AND user_id = $2 AND created_at >= $3 GROUP BY interaction_type",
            )
            .bind(tenant)
            .bind(user)
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().collect())
    }
}
