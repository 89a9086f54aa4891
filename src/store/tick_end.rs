//! A tick's end, in one transaction: the tick finishes (its pending calls declared
//! unknown, its counters derived, the persona stamped, the day's spend added, the
//! transcript kept) and, for a persona with a user, its calls become that user's
//! interactions, with the profile's learned preferences, the day's evidence and the
//! alignment moved with them. A crash cannot leave a finished tick whose interactions
//! were never recorded, and the end is one commit instead of three.
//!
//! What the profile part records is the profile service's decision ([`TickProfile`]); the
//! store only runs it. The part runs under a savepoint: when it is refused (the user was
//! deleted meanwhile, say), the tick still finishes and the caller hears why.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::calls::TICK_CALLS;
use super::evidence::alignment_evidence_on;
use super::interactions::{Recording, record_on};
use super::profiles::set_alignment_on;
use super::ticks::{DERIVE_COUNTS, FINISH_TICK, PENDING_TO_UNKNOWN};
use super::{Conn, Result, Store, StoreError, begin_write, on_conn, with_writer};
use crate::model::call::Call;
use crate::model::profile::{AlignmentUpdate, Learned, NewInteraction, Observed, Profile};
use crate::model::tick::{CallCounts, Tick, TickFinish, TickStatus};
use crate::time::now;

/// What a tick's end records in its persona user's profile (decided by the profile
/// service, run by the store inside the end's transaction).
pub trait TickProfile: Sync {
    fn tenant(&self) -> Uuid;
    fn user(&self) -> Uuid;
    /// The tick's calls as interactions, with the evidence they add to the day.
    fn interactions(&self, calls: &[Call]) -> (Vec<NewInteraction>, Observed);
    /// Moves learned preferences with one interaction.
    fn learn(&self, learned: &mut Learned, interaction: &NewInteraction);
    /// The first day (`YYYY-MM-DD`) of the evidence the alignment reads.
    fn evidence_from(&self) -> &str;
    /// The alignment to store, or `None` when deciding it needs more than the store read
    /// here (the caller rescores after the commit).
    fn alignment(&self, profile: &Profile, observed: &Observed) -> Option<AlignmentUpdate>;
}

/// What became of the profile part of a tick's end.
#[derive(Debug)]
pub enum ProfileEnd {
    /// None was asked for (no user, no audited call, or the tick was not running).
    NotAsked,
    /// Interactions recorded and the alignment stored.
    Aligned { interactions: usize },
    /// Interactions recorded; the alignment needs a rescore that reads more.
    NeedsRescore { interactions: usize },
    /// Interactions recorded; the user has no profile to move or rescore.
    NoProfile { interactions: usize },
    /// Refused and rolled back to the savepoint; the tick finished all the same.
    Refused(StoreError),
}

/// A finished tick, its calls counted from the audit, and what its end did to the
/// profile.
#[derive(Debug)]
pub struct TickEnd {
    pub tick: Tick,
    pub counts: CallCounts,
    pub profile: ProfileEnd,
}

impl Store {
    /// Ends a running tick: its `pending` calls become `unknown` (they may have run), its
    /// counters are derived from its audited calls, the persona's `last_active_at` is
    /// stamped, the tokens are added to the day's spend, and the transcript is kept; in
    /// the same transaction the profile part of `profile` (see the module docs).
    /// `Conflict` when the tick is not running any more (its lease expired and another
    /// runner declared it abandoned).
    pub async fn end_tick(
        &self,
        tick_id: Uuid,
        finish: &TickFinish,
        profile: Option<&dyn TickProfile>,
    ) -> Result<TickEnd> {
        if finish.status == TickStatus::Running {
            return Err(StoreError::Constraint("a tick cannot finish as `running`".into()));
        }
        let finished_at = now();
        let ended: Result<Option<(Tick, CallCounts, ProfileEnd)>> = async {
            Ok(with_writer!(self, pool => {
                let mut tx = begin_write!(pool);
                let ended = end_on(Conn::from(&mut *tx), tick_id, finish, finished_at, profile).await?;
                tx.commit().await?;
                ended
            }))
        }
        .await;
        self.observe(&ended);
        let (tick, counts, profile) =
            ended?.ok_or_else(|| StoreError::Conflict(format!("tick {tick_id} is not running")))?;
        Ok(TickEnd { tick, counts, profile })
    }
}

/// The steps of a tick's end on the open transaction `conn`: the finish, then (when the
/// tick was still running) the persona, the spend, the transcript and the profile part.
async fn end_on(
    mut conn: Conn<'_>,
    tick_id: Uuid,
    finish: &TickFinish,
    finished_at: DateTime<Utc>,
    profile: Option<&dyn TickProfile>,
) -> Result<Option<(Tick, CallCounts, ProfileEnd)>> {
    let Some((tick, counts)) = finish_on(conn.reborrow(), tick_id, finish, finished_at).await? else {
        return Ok(None);
    };
    on_conn!(conn.reborrow(), c => {
        sqlx::query("UPDATE personas SET last_active_at = $2, changed_at = $2 WHERE id = $1")
            .bind(tick.persona_id)
            .bind(finished_at)
            .execute(&mut *c)
            .await?;
    });
    add_spend_on(conn.reborrow(), &tick, finish, finished_at).await?;
    if let Some(transcript) = &finish.transcript {
        on_conn!(conn.reborrow(), c => {
            sqlx::query(
                "INSERT INTO persona_transcripts (tick_id, tenant_id, entries, chars, truncated, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tick_id) DO NOTHING",
            )
            .bind(tick_id)
            .bind(tick.tenant_id)
            .bind(sqlx::types::Json(&transcript.entries))
            .bind(transcript.chars)
            .bind(transcript.truncated)
            .bind(finished_at)
            .execute(&mut *c)
            .await?;
        });
    }
    let ended = match profile {
        Some(asked) => profile_on(conn, tick_id, finished_at, asked).await?,
        None => ProfileEnd::NotAsked,
    };
    Ok(Some((tick, counts, ended)))
}

/// Finishes the tick if it is still running: its pending calls become `unknown`, its
/// counters are derived from its calls. `None` when it was not running.
async fn finish_on(
    mut conn: Conn<'_>,
    tick_id: Uuid,
    finish: &TickFinish,
    finished_at: DateTime<Utc>,
) -> Result<Option<(Tick, CallCounts)>> {
    Ok(on_conn!(conn.reborrow(), c => {
        sqlx::query(PENDING_TO_UNKNOWN).bind(tick_id).execute(&mut *c).await?;
        let finished: Option<Tick> = sqlx::query_as(FINISH_TICK)
            .bind(tick_id)
            .bind(finish.status)
            .bind(finish.error.as_deref())
            .bind(finished_at)
            .bind(finish.turns)
            .bind(finish.tokens_in)
            .bind(finish.tokens_out)
            .bind(finish.llm_model.as_deref())
            .bind(finish.prompt_version.as_deref())
            .bind(finish.rating_status)
            .bind(finish.rating_raw.as_deref())
            .bind(finish.simulator.as_deref())
            .bind(finish.protocol_version.as_deref())
            .bind(finish.rating_attempts)
            .bind(finish.trace_id.as_deref())
            .fetch_optional(&mut *c)
            .await?;
        match finished {
            Some(tick) => {
                let counts: CallCounts = sqlx::query_as(DERIVE_COUNTS).bind(tick_id).fetch_one(&mut *c).await?;
                Some((tick, counts))
            }
            None => None,
        }
    }))
}

/// Adds the tick's tokens to the day's spend (per persona and in all).
async fn add_spend_on(mut conn: Conn<'_>, tick: &Tick, finish: &TickFinish, finished_at: DateTime<Utc>) -> Result<()> {
    if finish.tokens_in + finish.tokens_out <= 0 {
        return Ok(());
    }
    let day = finished_at.format("%Y-%m-%d").to_string();
    for sql in super::spend::ADD_TO_DAILY_SPEND {
        on_conn!(conn.reborrow(), c => {
            sqlx::query(sql)
                .bind(tick.persona_id)
                .bind(&day)
                .bind(finish.tokens_in)
                .bind(finish.tokens_out)
                .execute(&mut *c)
                .await?;
        });
    }
    Ok(())
}

/// The profile part, under a savepoint: refused, it is rolled back and reported, and the
/// tick's end goes on.
async fn profile_on(
    conn: Conn<'_>,
    tick_id: Uuid,
    finished_at: DateTime<Utc>,
    asked: &dyn TickProfile,
) -> Result<ProfileEnd> {
    Ok(on_conn!(conn, c => {
        let mut savepoint = sqlx::Connection::begin(&mut *c).await?;
        match record_tick_on(Conn::from(&mut *savepoint), tick_id, finished_at, asked).await {
            Ok(ended) => {
                savepoint.commit().await?;
                ended
            }
            Err(err) => {
                savepoint.rollback().await?;
                ProfileEnd::Refused(err)
            }
        }
    }))
}

/// The tick's calls as its user's interactions, the learning and evidence they bring, and
/// the alignment when it is settled here.
async fn record_tick_on(
    mut conn: Conn<'_>,
    tick_id: Uuid,
    finished_at: DateTime<Utc>,
    asked: &dyn TickProfile,
) -> Result<ProfileEnd> {
    let calls: Vec<Call> = on_conn!(conn.reborrow(), c => {
        sqlx::query_as(TICK_CALLS).bind(tick_id).fetch_all(&mut *c).await?
    });
    let (interactions, delta) = asked.interactions(&calls);
    let ids: Vec<Uuid> = interactions.iter().map(|_| super::writer::new_row_id()).collect();
    let (tenant, user) = (asked.tenant(), asked.user());
    let count = interactions.len();
    let learn = |learned: &mut Learned, new: &NewInteraction| asked.learn(learned, new);
    let recording = Recording {
        tenant,
        user,
        interactions: &interactions,
        ids: &ids,
        at: finished_at,
        delta: &delta,
    };
    let recorded = record_on(conn.reborrow(), &recording, learn).await?;
    let Some(profile) = recorded else {
        return Ok(ProfileEnd::NoProfile { interactions: count });
    };
    let observed = alignment_evidence_on(conn.reborrow(), tenant, user, asked.evidence_from()).await?;
    Ok(match asked.alignment(&profile, &observed) {
        Some(update) => {
            set_alignment_on(conn, tenant, user, &update).await?;
            ProfileEnd::Aligned { interactions: count }
        }
        None => ProfileEnd::NeedsRescore { interactions: count },
    })
}
