//! The profile store's rows: users provisioned from tokens, user profiles (assigned
//! persona, learned preferences, alignment), the interaction audit, per-persona stats,
//! and the profile-side edits of persona definitions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::evidence::{DailyRow, UPSERT_DAY, bind_day};
use super::{BackendKind, Conn, Result, Store, StoreError, begin_write, on_conn, with_pool, with_writer};
use crate::model::persona::PersonaSpec;
use crate::model::profile::{AlignmentUpdate, Interaction, Learned, NewInteraction, Observed, Profile};
use crate::time::now;

#[derive(sqlx::FromRow)]
pub(super) struct ProfileRow {
    id: Uuid,
    tenant_id: Uuid,
    user_id: Uuid,
    persona_id: Option<Uuid>,
    detail_preference: i32,
    external_data_usage: i32,
    decision_speed: i32,
    collaboration_frequency: i32,
    metric_preferences: Json<BTreeMap<String, f64>>,
    action_preferences: Json<BTreeMap<String, f64>>,
    data_source_preferences: Json<BTreeMap<String, f64>>,
    context_preferences: Json<Vec<String>>,
    total_interactions: i32,
    last_interaction_at: Option<DateTime<Utc>>,
    interaction_summary: Json<BTreeMap<String, i64>>,
    alignment_score: Option<f64>,
    reassessment_recommended: bool,
    suggested_persona_id: Option<Uuid>,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ProfileRow> for Profile {
    type Error = StoreError;
    fn try_from(row: ProfileRow) -> Result<Self> {
        Ok(Profile {
            id: row.id,
            tenant_id: row.tenant_id,
            user_id: row.user_id,
            persona_id: row.persona_id,
            learned: Learned {
                detail_preference: row.detail_preference,
                external_data_usage: row.external_data_usage,
                decision_speed: row.decision_speed,
                collaboration_frequency: row.collaboration_frequency,
                metric_preferences: row.metric_preferences.0,
                action_preferences: row.action_preferences.0,
                data_source_preferences: row.data_source_preferences.0,
                interaction_summary: row.interaction_summary.0,
            },
            context_preferences: row.context_preferences.0,
            total_interactions: row.total_interactions,
            last_interaction_at: row.last_interaction_at,
            alignment_score: row.alignment_score,
            reassessment_recommended: row.reassessment_recommended,
            suggested_persona_id: row.suggested_persona_id,
            status: row.status.parse().map_err(|message| StoreError::Corrupt {
                table: "persona_user_profiles",
                message,
            })?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

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

/// Aggregates of the users assigned to one persona.
#[derive(Clone, Debug, PartialEq)]
pub struct PersonaStats {
    pub users: i64,
    pub active_users: i64,
    pub pending_reassessment: i64,
    pub average_alignment: Option<f64>,
    pub interactions: i64,
    pub by_type: BTreeMap<String, i64>,
    pub positive_feedback: i64,
    pub negative_feedback: i64,
}

/// The profile columns in [`ProfileRow`] order, for one user of one tenant.
macro_rules! select_profile {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, user_id, persona_id, detail_preference, external_data_usage,
                decision_speed, collaboration_frequency, metric_preferences, action_preferences,
                data_source_preferences, context_preferences, total_interactions, last_interaction_at,
                interaction_summary, alignment_score, reassessment_recommended, suggested_persona_id,
                status, created_at, updated_at
             FROM persona_user_profiles WHERE tenant_id = $1 AND user_id = $2",
            $tail
        )
    };
}

const SELECT_PROFILE: &str = select_profile!("");

/// A user's interactions since a time, newest first.
pub(super) const LIST_INTERACTIONS: &str =
    "SELECT id, user_id, persona_id, tick_id, interaction_type, page_type, page_id, element_id,
                        element_type, metadata, duration_seconds, feedback_sentiment, feedback_comment, created_at
                 FROM persona_interactions
                 WHERE tenant_id = $1 AND user_id = $2 AND created_at >= $3
                   AND ($4 IS NULL OR interaction_type = $4)
                 ORDER BY created_at DESC, id DESC LIMIT $5";

/// The user's profile row, locked for the transaction on PostgreSQL (SQLite's `BEGIN
/// IMMEDIATE` already serializes writers).
pub(super) fn select_profile_for_update(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Sqlite => SELECT_PROFILE,
        BackendKind::Postgres => select_profile!(" FOR UPDATE"),
    }
}

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

/// Stores a computed alignment (`$3` score … `$7` time).
pub(super) const SET_ALIGNMENT: &str =
    "UPDATE persona_user_profiles SET alignment_score = $3, reassessment_recommended = $4,
        suggested_persona_id = $5, status = $6, updated_at = $7
     WHERE tenant_id = $1 AND user_id = $2";

/// Stores a computed alignment on `conn`.
pub(super) async fn set_alignment_on(
    conn: Conn<'_>,
    tenant: Uuid,
    user: Uuid,
    alignment: &AlignmentUpdate,
) -> Result<()> {
    on_conn!(conn, c => {
        sqlx::query(SET_ALIGNMENT)
            .bind(tenant)
            .bind(user)
            .bind(alignment.score)
            .bind(alignment.reassessment_recommended)
            .bind(alignment.suggested_persona_id)
            .bind(alignment.status)
            .bind(now())
            .execute(&mut *c)
            .await?;
    });
    Ok(())
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
    /// Makes sure `tenant` exists (tenants of the profile API come from verified tokens
    /// and are created on first use).
    pub async fn ensure_tenant(&self, tenant: Uuid) -> Result<()> {
        with_writer!(self, pool => {
            sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
                .bind(tenant)
                .bind(tenant.to_string())
                .bind(now())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Makes sure the user `id` exists in `tenant` (a human provisioned from a verified
    /// token on first use). `Conflict` when the id belongs to another tenant or the email
    /// to another user.
    pub async fn ensure_user(&self, tenant: Uuid, id: Uuid, email: &str, name: &str) -> Result<()> {
        let owner: Option<Uuid> = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT tenant_id FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        match owner {
            Some(owner) if owner == tenant => Ok(()),
            Some(_) => Err(StoreError::Conflict(format!("user {id} belongs to another tenant"))),
            None => self
                .insert_user(tenant, id, email, name, crate::model::persona::UserKind::Human)
                .await
                .map_err(|err| match err {
                    StoreError::Conflict(_) => {
                        StoreError::Conflict(format!("the email {email} belongs to another user of this tenant"))
                    }
                    other => other,
                }),
        }
    }

    pub async fn get_profile(&self, tenant: Uuid, user: Uuid) -> Result<Option<Profile>> {
        let row: Option<ProfileRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_PROFILE).bind(tenant).bind(user).fetch_optional(pool).await?
        });
        row.map(Profile::try_from).transpose()
    }

    /// Assigns `persona` to `user` (creating the profile if needed) and clears the
    /// reassessment state: a new assignment starts a new judgement.
    pub async fn assign_persona(&self, tenant: Uuid, user: Uuid, persona: Uuid) -> Result<Profile> {
        let at = now();
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO persona_user_profiles (id, tenant_id, user_id, persona_id, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (user_id) DO UPDATE SET persona_id = excluded.persona_id,
                    alignment_score = NULL, reassessment_recommended = FALSE,
                    suggested_persona_id = NULL, status = 'active', updated_at = excluded.updated_at
                 WHERE persona_user_profiles.tenant_id = excluded.tenant_id",
            )
            .bind(Uuid::new_v4())
            .bind(tenant)
            .bind(user)
            .bind(persona)
            .bind(at)
            .execute(pool)
            .await?;
        });
        self.get_profile(tenant, user)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("profile of user {user}")))
    }

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

    /// Stores a computed alignment.
    pub async fn set_alignment(&self, tenant: Uuid, user: Uuid, alignment: &AlignmentUpdate) -> Result<()> {
        with_writer!(self, pool => {
            let mut conn = pool.acquire().await?;
            set_alignment_on(Conn::from(&mut *conn), tenant, user, alignment).await?;
        });
        Ok(())
    }

    /// The users assigned to `persona` and their interactions since `since`.
    pub async fn persona_stats(&self, tenant: Uuid, persona: Uuid, since: DateTime<Utc>) -> Result<PersonaStats> {
        let (users, active_users, pending, average_alignment): (i64, i64, i64, Option<f64>) = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT COUNT(*),
                        COALESCE(SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN status = 'pending_reassessment' THEN 1 ELSE 0 END), 0),
                        CAST(AVG(alignment_score) AS DOUBLE PRECISION)
                 FROM persona_user_profiles WHERE tenant_id = $1 AND persona_id = $2",
            )
            .bind(tenant)
            .bind(persona)
            .fetch_one(pool)
            .await?
        });
        let rows: Vec<(String, i64, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT interaction_type, COUNT(*),
                        COALESCE(SUM(CASE WHEN feedback_sentiment = 'positive' THEN 1 ELSE 0 END), 0),
                        COALESCE(SUM(CASE WHEN feedback_sentiment = 'negative' THEN 1 ELSE 0 END), 0)
                 FROM persona_interactions
                 WHERE tenant_id = $1 AND persona_id = $2 AND created_at >= $3
                 GROUP BY interaction_type",
            )
            .bind(tenant)
            .bind(persona)
            .bind(since)
            .fetch_all(pool)
            .await?
        });
        Ok(PersonaStats {
            users,
            active_users,
            pending_reassessment: pending,
            average_alignment,
            interactions: rows.iter().map(|r| r.1).sum(),
            positive_feedback: rows.iter().map(|r| r.2).sum(),
            negative_feedback: rows.iter().map(|r| r.3).sum(),
            by_type: rows.into_iter().map(|r| (r.0, r.1)).collect(),
        })
    }

    /// Rewrites the definition of persona `id` in `tenant` (its login identity and
    /// runtime state stay). `NotFound` when there is no such persona in the tenant;
    /// `Conflict` when the new name is taken.
    pub async fn update_persona_definition(
        &self,
        tenant: Uuid,
        id: Uuid,
        spec: &PersonaSpec,
        time_zone: &str,
    ) -> Result<()> {
        let updated = with_writer!(self, pool => {
            let mut tx = begin_write!(pool);
            let paused: Option<bool> = sqlx::query_scalar("SELECT paused FROM personas WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(paused) = paused else {
                return Err(StoreError::NotFound(format!("persona {id}")));
            };
            let updated = super::personas::bind_spec!(
                sqlx::query(concat!(
                    "UPDATE personas SET ",
                    super::personas::spec_set!(),
                    " WHERE id = $1 AND tenant_id = $2"
                ))
                .bind(id)
                .bind(tenant),
                spec,
                time_zone,
                spec.paused.unwrap_or(paused),
            )
            .bind(now())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE users SET name = $2 WHERE id = (SELECT user_id FROM personas WHERE id = $1)")
                .bind(id)
                .bind(&spec.name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            updated
        });
        if updated == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("persona {id}")))
        }
    }

    /// Adds a profile-only persona (no login identity) unless `tenant` has one of that
    /// name. Returns whether it was added.
    pub async fn insert_role_persona(&self, tenant: Uuid, spec: &PersonaSpec, time_zone: &str) -> Result<bool> {
        let at = now();
        let inserted = with_writer!(self, pool => {
            super::personas::bind_spec!(
                sqlx::query(super::personas::insert_persona!(" ON CONFLICT (tenant_id, name) DO NOTHING"))
                .bind(Uuid::new_v4())
                .bind(Option::<Uuid>::None),
                spec,
                time_zone,
                spec.paused.unwrap_or(false),
            )
            .bind(at)
            .bind(tenant)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }
}
