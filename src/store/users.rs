//! Users: inserting one, and the cleanup that deletes a tenant's persona users
//! with everything they left.

use uuid::Uuid;

use super::{Result, Store, StoreError, begin_write, with_writer};
use crate::model::persona::normalize_email;
use crate::time::now;

/// What a cleanup deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CleanupReport {
    pub users_deleted: u64,
    pub personas_deleted: u64,
}

impl Store {
    /// Inserts the user `id`; `Conflict` when the id or the email is taken.
    pub(super) async fn insert_user(
        &self,
        tenant: Uuid,
        id: Uuid,
        email: &str,
        name: &str,
        kind: crate::model::persona::UserKind,
    ) -> Result<()> {
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO users (id, tenant_id, email, name, kind, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(tenant)
            .bind(normalize_email(email))
            .bind(name)
            .bind(kind.as_str())
            .bind(now())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Deletes every `kind = persona` user of `tenant` with their personas, ticks, actions,
    /// feedback, profiles and interactions (by foreign-key cascade). Never touches a human
    /// or system user, nor a profile-only persona without a user. `Conflict` (nothing
    /// deleted) while any of them has a running tick.
    pub async fn delete_persona_users(&self, tenant: Uuid) -> Result<CleanupReport> {
        with_writer!(self, pool => {
            let mut tx = begin_write!(pool);
            // A running tick would go on calling the product with no row to record it in.
            let running: Vec<String> = sqlx::query_scalar(
                "SELECT u.email FROM persona_ticks t JOIN personas p ON p.id = t.persona_id
                   JOIN users u ON u.id = p.user_id
                 WHERE t.status = 'running' AND p.tenant_id = $1 AND u.kind = 'persona' ORDER BY u.email",
            )
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await?;
            if !running.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "these personas have a running tick: {}; stop the daemon (or wait) and clean up then",
                    running.join(", ")
                )));
            }
            let personas = sqlx::query(
                "DELETE FROM personas WHERE tenant_id = $1
                   AND user_id IN (SELECT id FROM users WHERE tenant_id = $1 AND kind = 'persona')",
            )
            .bind(tenant)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let users = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND kind = 'persona'")
                .bind(tenant)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(CleanupReport {
                users_deleted: users,
                personas_deleted: personas,
            })
        })
    }
}
