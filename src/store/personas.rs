//! Personas: the idempotent upsert behind catalog seeding and the admin API (with the
//! persona's user), lookups, and what the scheduler reads.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Database, Encode, Type};
use uuid::Uuid;

use super::columns::{Bind, Query};
use super::{BackendKind, Conn, Result, Store, StoreError, begin_write, on_conn, with_pool, with_writer};
use crate::model::goal::Goal;
use crate::model::persona::{
    DetailLevel, Flow, HeadlineType, KeyMetric, ModuleMix, Persona, PersonaSpec, UserKind, normalize_email,
};
use crate::time::now;

/// PostgreSQL: the transaction-scoped lock that makes seeding runs take turns.
const SEED_LOCK: &str = "SELECT pg_advisory_xact_lock(7301)";

/// What the scheduler keeps of a persona: when and how often it is due, not its prompt.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub tick_cadence: String,
    pub time_zone: String,
    pub paused: bool,
    pub last_active_at: Option<DateTime<Utc>>,
    pub next_due_at: Option<DateTime<Utc>>,
    pub target: Option<String>,
    pub changed_at: DateTime<Utc>,
}

/// What an upsert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpsertOutcome {
    Created,
    Updated,
    Unchanged,
}

/// Columns of a persona joined with its user's email, in [`PersonaRow`] order.
macro_rules! select_persona {
    ($($tail:literal)?) => {
        concat!(
            "SELECT p.id, p.tenant_id, p.user_id, u.email, p.name, p.archetype, p.system_prompt,
                    p.module_mix, p.tick_cadence, p.time_zone, p.locale, p.paused,
                    p.last_active_at, p.next_due_at, p.description, p.flow, p.role_index,
                    p.primary_authority, p.decision_focus, p.primary_dashboard, p.key_metrics,
                    p.detail_level, p.headline_type, p.hero_chart_type, p.context_factors,
                    p.required_data_sources, p.actions, p.default_profile, p.page_templates,
                    p.target, p.goals, p.created_at, p.updated_at
             FROM personas p LEFT JOIN users u ON u.id = p.user_id ",
            $($tail)?
        )
    };
}

/// Binds `$3..$27` of the persona insert/update statements (after id and user id).
pub(super) fn bind_spec<'a, 'q, DB: Database>(
    query: Query<'q, DB>,
    spec: &'a PersonaSpec,
    time_zone: &'a str,
    paused: bool,
) -> Query<'q, DB>
where
    bool: Bind<DB>,
    Option<i32>: Bind<DB>,
    Option<Flow>: Bind<DB>,
    Option<DetailLevel>: Bind<DB>,
    Option<HeadlineType>: Bind<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
    Option<&'a str>: Encode<'a, DB> + Type<DB>,
    Json<&'a ModuleMix>: Encode<'a, DB> + Type<DB>,
    Json<&'a Vec<KeyMetric>>: Encode<'a, DB> + Type<DB>,
    Json<&'a Vec<String>>: Encode<'a, DB> + Type<DB>,
    Json<&'a Vec<Value>>: Encode<'a, DB> + Type<DB>,
    Json<&'a Vec<Goal>>: Encode<'a, DB> + Type<DB>,
    Option<Json<&'a Value>>: Encode<'a, DB> + Type<DB>,
{
    query
        .bind(spec.archetype.as_str())
        .bind(spec.system_prompt.as_str())
        .bind(Json(&spec.module_mix))
        .bind(spec.tick_cadence.as_str())
        .bind(time_zone)
        .bind(spec.locale.as_deref())
        .bind(paused)
        .bind(spec.name.as_str())
        .bind(spec.description.as_deref())
        .bind(spec.flow)
        .bind(spec.role_index)
        .bind(spec.primary_authority.as_deref())
        .bind(spec.decision_focus.as_deref())
        .bind(spec.primary_dashboard.as_deref())
        .bind(Json(&spec.key_metrics))
        .bind(spec.detail_level)
        .bind(spec.headline_type)
        .bind(spec.hero_chart_type.as_deref())
        .bind(Json(&spec.context_factors))
        .bind(Json(&spec.required_data_sources))
        .bind(Json(&spec.actions))
        .bind(spec.default_profile.as_ref().map(Json))
        .bind(Json(&spec.page_templates))
        .bind(spec.target.as_deref())
        .bind(Json(&spec.goals))
}

/// The persona insert: `$1` id, `$2` user id, `$3..$27` as [`bind_spec`] binds them,
/// `$28` the time, `$29` the tenant; `$tail` may add a conflict clause.
macro_rules! insert_persona {
    ($tail:literal) => {
        concat!(
            "INSERT INTO personas (
                id, user_id, archetype, system_prompt, module_mix, tick_cadence,
                time_zone, locale, paused, name, description, flow, role_index,
                primary_authority, decision_focus, primary_dashboard, key_metrics,
                detail_level, headline_type, hero_chart_type, context_factors,
                required_data_sources, actions, default_profile, page_templates, target, goals,
                created_at, updated_at, changed_at, tenant_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                     $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $28, $28, $29)",
            $tail
        )
    };
}
pub(super) use insert_persona;

/// `SET` list of the definition columns as [`bind_spec`] binds them (`$3..$27`), and
/// `updated_at = changed_at = $28`.
macro_rules! spec_set {
    () => {
        "archetype = $3, system_prompt = $4, module_mix = $5, tick_cadence = $6, time_zone = $7,
         locale = $8, paused = $9, name = $10, description = $11, flow = $12, role_index = $13,
         primary_authority = $14, decision_focus = $15, primary_dashboard = $16,
         key_metrics = $17, detail_level = $18, headline_type = $19, hero_chart_type = $20,
         context_factors = $21, required_data_sources = $22, actions = $23,
         default_profile = $24, page_templates = $25, target = $26, goals = $27, updated_at = $28,
         changed_at = $28"
    };
}
pub(super) use spec_set;

#[derive(sqlx::FromRow)]
struct PersonaRow {
    id: Uuid,
    tenant_id: Uuid,
    user_id: Option<Uuid>,
    email: Option<String>,
    name: String,
    archetype: String,
    system_prompt: String,
    module_mix: Json<ModuleMix>,
    tick_cadence: String,
    time_zone: String,
    locale: Option<String>,
    paused: bool,
    last_active_at: Option<DateTime<Utc>>,
    next_due_at: Option<DateTime<Utc>>,
    description: Option<String>,
    flow: Option<Flow>,
    role_index: Option<i32>,
    primary_authority: Option<String>,
    decision_focus: Option<String>,
    primary_dashboard: Option<String>,
    key_metrics: Json<Vec<KeyMetric>>,
    detail_level: Option<DetailLevel>,
    headline_type: Option<HeadlineType>,
    hero_chart_type: Option<String>,
    context_factors: Json<Vec<String>>,
    required_data_sources: Json<Vec<String>>,
    actions: Json<Vec<String>>,
    default_profile: Option<Json<Value>>,
    page_templates: Json<Vec<Value>>,
    target: Option<String>,
    goals: Json<Vec<Goal>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<PersonaRow> for Persona {
    type Error = StoreError;

    fn try_from(row: PersonaRow) -> Result<Self> {
        Ok(Persona {
            id: row.id,
            tenant_id: row.tenant_id,
            user_id: row.user_id,
            email: row.email,
            name: row.name,
            archetype: row.archetype,
            system_prompt: row.system_prompt,
            module_mix: row.module_mix.0,
            tick_cadence: row.tick_cadence.parse().map_err(|message| StoreError::Corrupt {
                table: "personas",
                message,
            })?,
            time_zone: row.time_zone,
            locale: row.locale,
            paused: row.paused,
            last_active_at: row.last_active_at,
            next_due_at: row.next_due_at,
            description: row.description,
            flow: row.flow,
            role_index: row.role_index,
            primary_authority: row.primary_authority,
            decision_focus: row.decision_focus,
            primary_dashboard: row.primary_dashboard,
            key_metrics: row.key_metrics.0,
            detail_level: row.detail_level,
            headline_type: row.headline_type,
            hero_chart_type: row.hero_chart_type,
            context_factors: row.context_factors.0,
            required_data_sources: row.required_data_sources.0,
            actions: row.actions.0,
            default_profile: row.default_profile.map(|json| json.0),
            page_templates: row.page_templates.0,
            target: row.target,
            goals: row.goals.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// The persona user of `email` in `tenant`, created (`kind = persona`) when missing and
/// renamed when its name changed. `Conflict` when the email belongs to another kind of
/// account.
async fn persona_user_on(mut conn: Conn<'_>, tenant: Uuid, email: &str, name: &str, at: DateTime<Utc>) -> Result<Uuid> {
    let user: Option<(Uuid, UserKind, String)> = on_conn!(conn.reborrow(), c => {
        sqlx::query_as("SELECT id, kind, name FROM users WHERE tenant_id = $1 AND email = $2")
            .bind(tenant)
            .bind(email)
            .fetch_optional(&mut *c)
            .await?
    });
    match user {
        Some((_, kind, _)) if kind != UserKind::Persona => Err(StoreError::Conflict(format!(
            "{email} belongs to a {kind} account; a persona needs its own email"
        ))),
        Some((id, _, stored)) => {
            if stored != name {
                on_conn!(conn, c => {
                    sqlx::query("UPDATE users SET name = $1 WHERE id = $2")
                        .bind(name)
                        .bind(id)
                        .execute(&mut *c)
                        .await?;
                });
            }
            Ok(id)
        }
        None => {
            let id = Uuid::new_v4();
            on_conn!(conn, c => {
                sqlx::query(
                    "INSERT INTO users (id, tenant_id, email, name, kind, created_at)
                     VALUES ($1, $2, $3, $4, 'persona', $5)",
                )
                .bind(id)
                .bind(tenant)
                .bind(email)
                .bind(name)
                .bind(at)
                .execute(&mut *c)
                .await?;
            });
            Ok(id)
        }
    }
}

/// The stored persona a spec updates: the one of its user, else a profile-only one of
/// the same name (adopted). `Conflict` when the name belongs to a persona with a user.
async fn existing_on(
    mut conn: Conn<'_>,
    tenant: Uuid,
    user_id: Uuid,
    spec: &PersonaSpec,
) -> Result<Option<PersonaRow>> {
    let by_user: Option<PersonaRow> = on_conn!(conn.reborrow(), c => {
        sqlx::query_as(select_persona!("WHERE p.user_id = $1")).bind(user_id).fetch_optional(&mut *c).await?
    });
    if by_user.is_some() {
        return Ok(by_user);
    }
    let by_name: Option<PersonaRow> = on_conn!(conn, c => {
        sqlx::query_as(select_persona!("WHERE p.tenant_id = $1 AND p.name = $2"))
            .bind(tenant)
            .bind(&spec.name)
            .fetch_optional(&mut *c)
            .await?
    });
    match by_name {
        Some(row) if row.user_id.is_some() => Err(StoreError::Conflict(format!(
            "the name `{}` is already used by the persona {}",
            spec.name,
            row.email.as_deref().unwrap_or("without email")
        ))),
        other => Ok(other),
    }
}

/// Upserts one spec on the open transaction `conn` (see [`Store::upsert_personas`]): the
/// persona's id and what was done.
async fn upsert_on(
    mut conn: Conn<'_>,
    tenant: Uuid,
    spec: &PersonaSpec,
    default_time_zone: &str,
    at: DateTime<Utc>,
) -> Result<(Uuid, UpsertOutcome)> {
    let email = normalize_email(&spec.email);
    let time_zone = spec.time_zone.clone().unwrap_or_else(|| default_time_zone.to_string());
    let user_id = persona_user_on(conn.reborrow(), tenant, &email, &spec.name, at).await?;
    let existing = existing_on(conn.reborrow(), tenant, user_id, spec).await?;
    let (id, outcome) = match existing {
        Some(row) => {
            let mut current = Persona::try_from(row)?;
            // An adopted profile-only persona gains its login identity now.
            if current.user_id.is_none() {
                current.email = None;
            }
            if current.matches_spec(spec, &time_zone) && current.user_id == Some(user_id) {
                (current.id, UpsertOutcome::Unchanged)
            } else {
                let paused = spec.paused.unwrap_or(current.paused);
                on_conn!(conn.reborrow(), c => {
                    bind_spec(
                        sqlx::query(concat!("UPDATE personas SET user_id = $2, ", spec_set!(), " WHERE id = $1"))
                            .bind(current.id)
                            .bind(user_id),
                        spec,
                        &time_zone,
                        paused,
                    )
                    .bind(at)
                    .execute(&mut *c)
                    .await?;
                });
                (current.id, UpsertOutcome::Updated)
            }
        }
        None => {
            let id = Uuid::new_v4();
            on_conn!(conn.reborrow(), c => {
                bind_spec(
                    sqlx::query(insert_persona!("")).bind(id).bind(user_id),
                    spec,
                    &time_zone,
                    spec.paused.unwrap_or(false),
                )
                .bind(at)
                .bind(tenant)
                .execute(&mut *c)
                .await?;
            });
            (id, UpsertOutcome::Created)
        }
    };
    // The persona user is a user of the profile store too: it gets its profile with the
    // persona, once.
    on_conn!(conn, c => {
        sqlx::query(
            "INSERT INTO persona_user_profiles (id, tenant_id, user_id, persona_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(tenant)
        .bind(user_id)
        .bind(id)
        .bind(at)
        .execute(&mut *c)
        .await?;
    });
    Ok((id, outcome))
}

/// What the scheduler loads: the personas changed since a time.
pub(super) const SCHEDULE_ROWS: &str =
    "SELECT id, tenant_id, tick_cadence, time_zone, paused, last_active_at, next_due_at, target, changed_at
                 FROM personas WHERE user_id IS NOT NULL AND (changed_at, id) > ($1, $2)
                 ORDER BY changed_at, id LIMIT $3";

impl Store {
    /// Creates or updates the persona with `spec.email` (and its `kind = persona` user) in
    /// `tenant`. Idempotent: storing the same spec again reports `Unchanged` and writes
    /// nothing. A profile-only persona of the same name (no user yet) is adopted.
    ///
    /// Refuses (`Conflict`) to turn an existing human or system account into a persona,
    /// and to reuse a name that belongs to a persona with another email.
    pub async fn upsert_persona(
        &self,
        tenant: Uuid,
        spec: &PersonaSpec,
        default_time_zone: &str,
    ) -> Result<(Persona, UpsertOutcome)> {
        let mut outcome = None;
        self.upsert_personas(tenant, std::iter::once(spec), default_time_zone, |_, id, done| {
            outcome = Some((id, done))
        })
        .await
        .map_err(|(_, err)| err)?;
        let (id, outcome) = outcome.ok_or_else(|| StoreError::NotFound("the upserted persona".into()))?;
        let persona = self
            .get_persona(tenant, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("persona {id}")))?;
        Ok((persona, outcome))
    }

    /// Upserts every spec in one transaction: all of them, or (on the first error, with the
    /// index of the spec that caused it) none. `each` hears what happened to every spec.
    pub async fn upsert_personas<'a>(
        &self,
        tenant: Uuid,
        specs: impl IntoIterator<Item = &'a PersonaSpec>,
        default_time_zone: &str,
        mut each: impl FnMut(usize, Uuid, UpsertOutcome),
    ) -> std::result::Result<(), (Option<usize>, StoreError)> {
        let at = now();
        let mut index = None;
        let result: Result<()> = async {
            with_writer!(self, pool => {
                let mut tx = begin_write!(pool);
                if self.kind() == BackendKind::Postgres {
                    // Replicas seeding together take turns (SQLite's BEGIN IMMEDIATE does that).
                    sqlx::query(SEED_LOCK).execute(&mut *tx).await?;
                }
                for (i, spec) in specs.into_iter().enumerate() {
                    index = Some(i);
                    let (id, outcome) = upsert_on(Conn::from(&mut *tx), tenant, spec, default_time_zone, at).await?;
                    each(i, id, outcome);
                }
                index = None;
                tx.commit().await?;
            });
            Ok(())
        }
        .await;
        result.map_err(|err| (index, err))
    }

    /// Upserts the specs `items` brings, as they arrive, in one transaction: all of them or
    /// none. `current` holds the item being written, so a caller can name the one that
    /// failed.
    pub async fn upsert_stream<T: Send>(
        &self,
        tenant: Uuid,
        default_time_zone: &str,
        items: &mut tokio::sync::mpsc::Receiver<T>,
        current: &mut Option<T>,
        spec_of: impl Fn(&T) -> &PersonaSpec,
        mut each: impl FnMut(UpsertOutcome),
    ) -> Result<()> {
        let at = now();
        with_writer!(self, pool => {
            let mut tx = begin_write!(pool);
            if self.kind() == BackendKind::Postgres {
                sqlx::query(SEED_LOCK).execute(&mut *tx).await?;
            }
            while let Some(item) = items.recv().await {
                let item = current.insert(item);
                let (_, outcome) = upsert_on(Conn::from(&mut *tx), tenant, spec_of(item), default_time_zone, at).await?;
                each(outcome);
            }
            *current = None;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn get_persona(&self, tenant: Uuid, id: Uuid) -> Result<Option<Persona>> {
        let row: Option<PersonaRow> = with_pool!(self, pool => {
            sqlx::query_as(select_persona!("WHERE p.tenant_id = $1 AND p.id = $2"))
                .bind(tenant)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Persona::try_from).transpose()
    }

    /// Finds a persona by id or by its user's email.
    pub async fn find_persona(&self, tenant: Uuid, id_or_email: &str) -> Result<Option<Persona>> {
        if let Ok(id) = Uuid::parse_str(id_or_email.trim()) {
            return self.get_persona(tenant, id).await;
        }
        let email = normalize_email(id_or_email);
        let row: Option<PersonaRow> = with_pool!(self, pool => {
            sqlx::query_as(select_persona!("WHERE p.tenant_id = $1 AND u.email = $2"))
                .bind(tenant)
                .bind(&email)
                .fetch_optional(pool)
                .await?
        });
        row.map(Persona::try_from).transpose()
    }

    /// Every persona of `tenant`, by name.
    pub async fn list_personas(&self, tenant: Uuid) -> Result<Vec<Persona>> {
        let rows: Vec<PersonaRow> = with_pool!(self, pool => {
            sqlx::query_as(select_persona!("WHERE p.tenant_id = $1 ORDER BY p.name, p.id"))
                .bind(tenant)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Persona::try_from).collect()
    }

    /// At most `limit` personas of `tenant` to suggest to a user, role personas first
    /// (those with a flow, then those without a login), by name: bounded however large the
    /// tenant is.
    pub async fn candidate_personas(&self, tenant: Uuid, limit: i64) -> Result<Vec<Persona>> {
        let rows: Vec<PersonaRow> = with_pool!(self, pool => {
            sqlx::query_as(select_persona!(
                "WHERE p.tenant_id = $1
                 ORDER BY CASE WHEN p.flow IS NULL THEN 1 ELSE 0 END,
                          CASE WHEN p.user_id IS NULL THEN 0 ELSE 1 END, p.name, p.id
                 LIMIT $2"
            ))
            .bind(tenant)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Persona::try_from).collect()
    }

    /// What the scheduler keeps of personas with a login identity, across tenants, whose
    /// schedule-relevant state changed after `after` (a `(changed_at, id)` cursor; all of
    /// them without it), oldest change first, at most `limit`: page on with the last row.
    pub async fn schedule_rows(&self, after: Option<(DateTime<Utc>, Uuid)>, limit: i64) -> Result<Vec<ScheduleRow>> {
        let (at, id) = after.unwrap_or((DateTime::<Utc>::UNIX_EPOCH, Uuid::nil()));
        Ok(with_pool!(self, pool => {
            sqlx::query_as(SCHEDULE_ROWS)
                .bind(at)
                .bind(id)
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The ids of every persona with a login identity (the scheduler drops the others).
    pub async fn runnable_ids(&self) -> Result<Vec<Uuid>> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM personas WHERE user_id IS NOT NULL")
                .fetch_all(pool)
                .await?
        }))
    }

    /// One persona by id, whatever its tenant (the scheduler runs what it planned).
    pub async fn persona_by_id(&self, id: Uuid) -> Result<Option<Persona>> {
        let row: Option<PersonaRow> = with_pool!(self, pool => {
            sqlx::query_as(select_persona!("WHERE p.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Persona::try_from).transpose()
    }

    /// Pauses or resumes a persona. `false` when there is no such persona in the tenant.
    pub async fn set_paused(&self, tenant: Uuid, id: Uuid, paused: bool) -> Result<bool> {
        let updated = with_writer!(self, pool => {
            sqlx::query("UPDATE personas SET paused = $3, updated_at = $4, changed_at = $4 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .bind(paused)
                .bind(now())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    }
}
