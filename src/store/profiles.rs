//! The profile store's per-user rows: the user profile (assigned persona, learned
//! preferences, alignment) and the interaction audit.

use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Result, Store, with_pool};
use crate::time::now;

/// One interaction of a user, of the profile store's types (`action_taken`, …).
#[derive(Clone, Debug)]
pub struct NewInteraction {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub persona_id: Option<Uuid>,
    pub tick_id: Option<Uuid>,
    pub interaction_type: String,
    pub page_type: Option<String>,
    pub element_id: Option<String>,
    pub metadata: Value,
}

impl Store {
    /// Creates the profile of `user_id` assigned to `persona_id` unless it exists.
    /// Returns whether it was created.
    pub async fn ensure_user_profile(&self, tenant: Uuid, user_id: Uuid, persona_id: Option<Uuid>) -> Result<bool> {
        let at = now();
        let inserted = with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO persona_user_profiles (id, tenant_id, user_id, persona_id, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(Uuid::new_v4())
            .bind(tenant)
            .bind(user_id)
            .bind(persona_id)
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Appends one interaction to the audit and bumps the user's interaction counter.
    pub async fn record_interaction(&self, interaction: &NewInteraction) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let at = now();
        with_pool!(self, pool => {
            let mut tx = super::begin_write!(pool);
            sqlx::query(
                "INSERT INTO persona_interactions (id, tenant_id, user_id, persona_id, tick_id,
                    interaction_type, page_type, element_id, metadata, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(interaction.tenant_id)
            .bind(interaction.user_id)
            .bind(interaction.persona_id)
            .bind(interaction.tick_id)
            .bind(&interaction.interaction_type)
            .bind(interaction.page_type.as_deref())
            .bind(interaction.element_id.as_deref())
            .bind(Json(&interaction.metadata))
            .bind(at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE persona_user_profiles
                 SET total_interactions = total_interactions + 1, last_interaction_at = $2, updated_at = $2
                 WHERE user_id = $1",
            )
            .bind(interaction.user_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(id)
    }
}
