//! The profile store's rows: users provisioned from tokens, user profiles (assigned
//! persona, learned preferences, alignment), per-persona stats, and the profile-side
//! edits of persona definitions. (The interactions are in `interactions`.)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{BackendKind, Conn, Result, Store, StoreError, begin_write, on_conn, with_pool, with_writer};
use crate::model::persona::PersonaSpec;
use crate::model::profile::{AlignmentUpdate, Learned, Profile};
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

/// The user's profile row, locked for the transaction on PostgreSQL (SQLite's `BEGIN
/// IMMEDIATE` already serializes writers).
pub(super) fn select_profile_for_update(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Sqlite => SELECT_PROFILE,
        BackendKind::Postgres => select_profile!(" FOR UPDATE"),
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
            let updated = super::personas::bind_spec(
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
            super::personas::bind_spec(
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
