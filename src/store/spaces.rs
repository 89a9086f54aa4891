//! Shared spaces: the catalog's households and teams as rows (upserted by name per
//! tenant), the calls their members made in them (the story's "what the others did", the
//! QA view), and the daemon's round claims (one replica runs a space's round).

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{Result, Store, with_pool, with_writer};
use crate::model::call::Call;
use crate::model::space::{Member, Space, SpaceKind};
use crate::time::now;

#[derive(sqlx::FromRow)]
struct SpaceRow {
    name: String,
    kind: SpaceKind,
    members: Json<Vec<Member>>,
    share: f64,
    cadence: Option<String>,
    target: Option<String>,
    provisioned_at: Option<DateTime<Utc>>,
}

impl From<SpaceRow> for Space {
    fn from(row: SpaceRow) -> Self {
        Space {
            name: row.name,
            kind: row.kind,
            members: row.members.0,
            share: row.share,
            cadence: row.cadence,
            target: row.target,
            provisioned_at: row.provisioned_at,
        }
    }
}

/// A space with its round plan.
#[derive(Clone, Debug)]
pub struct SpaceRound {
    pub tenant_id: Uuid,
    pub space: Space,
    pub next_round_at: Option<DateTime<Utc>>,
}

/// A call a member made in a space, with who made it.
#[derive(Clone, Debug)]
pub struct SpaceCall {
    pub persona_name: String,
    pub email: Option<String>,
    pub call: Call,
}

const LIST_SPACES: &str = "SELECT name, kind, members, share, cadence, target, provisioned_at FROM persona_spaces WHERE tenant_id = $1 ORDER BY name";
const GET_SPACE: &str = "SELECT name, kind, members, share, cadence, target, provisioned_at FROM persona_spaces WHERE tenant_id = $1 AND name = $2";

/// Calls in a space with their persona, oldest first: `$1` tenant, `$2` space, `$3` since.
const SPACE_CALLS: &str = "SELECT a.id, a.tenant_id, a.tick_id, a.persona_id, a.seq, a.kind, a.tool_name,
        a.module, a.input_hash, a.result, a.error_message, a.arguments, a.output, a.chaos, a.latency_ms,
        a.sent, a.recovered, a.refusal, a.created_at, a.space, p.name AS persona_name, u.email AS persona_email
     FROM persona_actions a JOIN personas p ON p.id = a.persona_id LEFT JOIN users u ON u.id = p.user_id
     WHERE a.tenant_id = $1 AND a.space = $2 AND a.created_at >= $3 AND a.kind = 'call'
     ORDER BY a.created_at, a.seq";

impl Store {
    /// Creates or updates the tenant's spaces by name. A changed cadence is planned
    /// afresh (the daemon plans a round it has not planned yet); changed members must be
    /// provisioned again before ticks by share go there. Returns how many it wrote.
    pub async fn upsert_spaces(&self, tenant_id: Uuid, spaces: &[Space]) -> Result<usize> {
        let at = now();
        for space in spaces {
            let written: Result<u64> = async {
                Ok(with_writer!(self, pool => {
                    sqlx::query(
                        "INSERT INTO persona_spaces (id, tenant_id, name, kind, members, share, cadence, target,
                            created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                         ON CONFLICT (tenant_id, name) DO UPDATE SET kind = excluded.kind,
                            members = excluded.members, share = excluded.share, cadence = excluded.cadence,
                            target = excluded.target, updated_at = excluded.updated_at,
                            next_round_at = CASE WHEN persona_spaces.cadence IS NOT DISTINCT FROM excluded.cadence
                                THEN persona_spaces.next_round_at END,
                            provisioned_at = CASE WHEN persona_spaces.members = excluded.members
                                THEN persona_spaces.provisioned_at END",
                    )
                    .bind(super::writer::new_row_id())
                    .bind(tenant_id)
                    .bind(&space.name)
                    .bind(space.kind)
                    .bind(Json(&space.members))
                    .bind(space.share)
                    .bind(space.cadence.as_deref())
                    .bind(space.target.as_deref())
                    .bind(at)
                    .execute(pool)
                    .await?
                    .rows_affected()
                }))
            }
            .await;
            self.observe(&written);
            written?;
        }
        Ok(spaces.len())
    }

    /// Records that provisioning had every member of `name` join it in the product.
    pub async fn mark_space_provisioned(&self, tenant_id: Uuid, name: &str) -> Result<bool> {
        let marked: Result<u64> = async {
            Ok(with_writer!(self, pool => {
                sqlx::query("UPDATE persona_spaces SET provisioned_at = $3 WHERE tenant_id = $1 AND name = $2")
                    .bind(tenant_id)
                    .bind(name)
                    .bind(now())
                    .execute(pool)
                    .await?
                    .rows_affected()
            }))
        }
        .await;
        self.observe(&marked);
        Ok(marked? > 0)
    }

    /// The tenant's spaces, by name.
    pub async fn list_spaces(&self, tenant_id: Uuid) -> Result<Vec<Space>> {
        let rows: Vec<SpaceRow> = with_pool!(self, pool => {
            sqlx::query_as(LIST_SPACES)
                .bind(tenant_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(Space::from).collect())
    }

    pub async fn get_space(&self, tenant_id: Uuid, name: &str) -> Result<Option<Space>> {
        let row: Option<SpaceRow> = with_pool!(self, pool => {
            sqlx::query_as(GET_SPACE)
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(Space::from))
    }

    /// The spaces `email` is a member of (a tenant has a handful: read whole, filtered here).
    pub async fn spaces_of(&self, tenant_id: Uuid, email: &str) -> Result<Vec<Space>> {
        let mut spaces = self.list_spaces(tenant_id).await?;
        spaces.retain(|space| space.has_member(email));
        Ok(spaces)
    }

    /// Every member's calls in `space` since `since`, oldest first.
    pub async fn space_calls(&self, tenant_id: Uuid, space: &str, since: DateTime<Utc>) -> Result<Vec<SpaceCall>> {
        let rows: Vec<(Call, SpaceWho)> = with_pool!(self, pool => {
            sqlx::query(SPACE_CALLS)
                .bind(tenant_id)
                .bind(space)
                .bind(since)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|row| {
                    use sqlx::{FromRow, Row};
                    Ok((Call::from_row(row)?, SpaceWho {
                        name: row.try_get("persona_name")?,
                        email: row.try_get("persona_email")?,
                    }))
                })
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows
            .into_iter()
            .map(|(call, who)| SpaceCall {
                persona_name: who.name,
                email: who.email,
                call,
            })
            .collect())
    }

    /// Every space that has a round plan or might get one (a cadence of its own, or the
    /// daemon's `spaces.cadence`), with its tenant and when its next round is due
    /// (`None`: not planned yet).
    pub async fn space_rounds(&self) -> Result<Vec<SpaceRound>> {
        let rows: Vec<(Uuid, Option<DateTime<Utc>>, SpaceRow)> = with_pool!(self, pool => {
            sqlx::query(
                "SELECT tenant_id, next_round_at, name, kind, members, share, cadence, target, provisioned_at
                 FROM persona_spaces ORDER BY tenant_id, name",
            )
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                use sqlx::{FromRow, Row};
                Ok((row.try_get("tenant_id")?, row.try_get("next_round_at")?, SpaceRow::from_row(row)?))
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows
            .into_iter()
            .map(|(tenant_id, next_round_at, row)| SpaceRound {
                tenant_id,
                next_round_at,
                space: row.into(),
            })
            .collect())
    }

    /// Moves a space's next round from `seen` (as [`Self::space_rounds`] read it) to
    /// `next`: `true` for the one replica whose update still found `seen`, which then
    /// runs the round (or, when `seen` is `None`, only plans it).
    pub async fn claim_space_round(
        &self,
        tenant_id: Uuid,
        name: &str,
        seen: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let claimed: Result<u64> = async {
            Ok(with_writer!(self, pool => {
                sqlx::query(
                    "UPDATE persona_spaces SET next_round_at = $3
                     WHERE tenant_id = $1 AND name = $2 AND next_round_at IS NOT DISTINCT FROM $4",
                )
                .bind(tenant_id)
                .bind(name)
                .bind(next)
                .bind(seen)
                .execute(pool)
                .await?
                .rows_affected()
            }))
        }
        .await;
        self.observe(&claimed);
        Ok(claimed? == 1)
    }
}

struct SpaceWho {
    name: String,
    email: Option<String>,
}
