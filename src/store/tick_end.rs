//! A tick's end, in one transaction: the tick finishes (its pending calls declared
//! unknown, its counters derived, the persona stamped, the day's spend added, the
//! transcript kept) and, for a persona with a user, its calls become that user's
//! interactions, with the profile's learned preferences, the day's evidence and the
//! alignment moved with them. A crash cannot leave a finished tick whose interactions
//! were never recorded, and the end is one commit instead of three.
//!
//! What the profile part records is the profile module's decision ([`TickProfile`]); the
//! store only runs it. The part runs under a savepoint: when it is refused (the user was
//! deleted meanwhile, say), the tick still finishes and the caller hears why.

// `record_in_tx!` expands here and names these.
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::evidence::{ALIGNMENT_EVIDENCE, DailyRow, UPSERT_DAY, bind_day};
use super::profiles::{
    ProfileRow, SET_ALIGNMENT, bind_alignment, record_in_tx, select_day_for_update, select_profile_for_update,
};
use super::ticks::{FINISH_TICK, PENDING_TO_UNKNOWN, TickRow};
use super::{RatingStatus, Result, Store, StoreError, Tick, TickFinish, TickStatus, begin_write, with_writer};
use crate::profile::{AlignmentUpdate, Learned, NewInteraction, Observed, Profile};
use crate::time::now;

/// A finished tick's calls as the profile records them, in order.
pub(super) const TICK_CALLS: &str =
    "SELECT kind, tool_name, module, result, chaos FROM persona_actions WHERE tick_id = $1 ORDER BY seq";

/// A call of a finished tick, as its user's interaction is made from it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TickCall {
    pub kind: String,
    pub tool_name: String,
    pub module: String,
    pub result: String,
    pub chaos: bool,
}

/// What a tick's end records in its persona user's profile (decided by the profile
/// module, run by the store inside the end's transaction).
pub trait TickProfile: Sync {
    fn tenant(&self) -> Uuid;
    fn user(&self) -> Uuid;
    /// The tick's calls as interactions, with the evidence they add to the day.
    fn interactions(&self, calls: &[TickCall]) -> (Vec<NewInteraction>, Observed);
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

/// A finished tick and what its end did to the profile.
#[derive(Debug)]
pub struct TickEnd {
    pub tick: Tick,
    pub profile: ProfileEnd,
}

impl Store {
    /// Ends a running tick: its `pending` calls become `unknown` (they may have run), its
    /// counters are derived from its audited calls, the persona's `last_active_at` is
    /// stamped, the tokens are added to the day's spend, and the transcript is kept, all
    /// in one transaction. `Conflict` when the tick is not running any more (its lease
    /// expired and another runner declared it abandoned).
    pub async fn finish_tick(&self, tick_id: Uuid, finish: &TickFinish) -> Result<Tick> {
        Ok(self.end_tick(tick_id, finish, None).await?.tick)
    }

    /// [`finish_tick`](Self::finish_tick), and in the same transaction the profile part
    /// of `profile` (see the module docs).
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
        let kind = self.kind();
        let ended: Result<(Option<TickRow>, ProfileEnd)> = async {
            Ok(with_writer!(self, pool => {
                let mut tx = begin_write!(pool);
                sqlx::query(PENDING_TO_UNKNOWN)
                    .bind(tick_id)
                    .execute(&mut *tx)
                    .await?;
                let row: Option<TickRow> = sqlx::query_as(FINISH_TICK)
                    .bind(tick_id)
                    .bind(finish.status.as_str())
                    .bind(finish.error.as_deref())
                    .bind(finished_at)
                    .bind(finish.turns)
                    .bind(finish.tokens_in)
                    .bind(finish.tokens_out)
                    .bind(finish.llm_model.as_deref())
                    .bind(finish.prompt_version.as_deref())
                    .bind(finish.rating_status.map(RatingStatus::as_str))
                    .bind(finish.rating_raw.as_deref())
                    .bind(finish.simulator.as_deref())
                    .bind(finish.protocol_version.as_deref())
                    .fetch_optional(&mut *tx)
                    .await?;
                let mut ended = ProfileEnd::NotAsked;
                if let Some(row) = &row {
                    sqlx::query("UPDATE personas SET last_active_at = $2, changed_at = $2 WHERE id = $1")
                        .bind(row.persona_id)
                        .bind(finished_at)
                        .execute(&mut *tx)
                        .await?;
                    if finish.tokens_in + finish.tokens_out > 0 {
                        let day = finished_at.format("%Y-%m-%d").to_string();
                        for sql in super::spend::ADD_TO_DAILY_SPEND {
                            sqlx::query(sql)
                                .bind(row.persona_id)
                                .bind(&day)
                                .bind(finish.tokens_in)
                                .bind(finish.tokens_out)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    if let Some(transcript) = &finish.transcript {
                        sqlx::query(
                            "INSERT INTO persona_transcripts (tick_id, tenant_id, entries, chars, truncated, created_at)
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tick_id) DO NOTHING",
                        )
                        .bind(tick_id)
                        .bind(row.tenant_id)
                        .bind(sqlx::types::Json(&transcript.entries))
                        .bind(transcript.chars)
                        .bind(transcript.truncated)
                        .bind(finished_at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    if let Some(asked) = profile {
                        let mut savepoint = sqlx::Acquire::begin(&mut tx).await?;
                        let recorded: Result<ProfileEnd> = async {
                            let calls: Vec<TickCall> =
                                sqlx::query_as(TICK_CALLS).bind(tick_id).fetch_all(&mut *savepoint).await?;
                            let (interactions, delta) = asked.interactions(&calls);
                            let ids: Vec<Uuid> = interactions.iter().map(|_| super::writer::new_row_id()).collect();
                            let (tenant, user) = (asked.tenant(), asked.user());
                            let learn = |learned: &mut Learned, new: &NewInteraction| asked.learn(learned, new);
                            let count = interactions.len();
                            let Some(now_profile) = record_in_tx!(
                                savepoint, kind, tenant, user, &interactions, &ids, finished_at, learn, &delta
                            ) else {
                                return Ok(ProfileEnd::NoProfile { interactions: count });
                            };
                            let days: Vec<DailyRow> = sqlx::query_as(ALIGNMENT_EVIDENCE)
                                .bind(user)
                                .bind(asked.evidence_from())
                                .fetch_all(&mut *savepoint)
                                .await?;
                            let mut observed = Observed::default();
                            for day in days {
                                observed.merge(&Observed::from(day));
                            }
                            Ok(match asked.alignment(&now_profile, &observed) {
                                Some(update) => {
                                    bind_alignment!(sqlx::query(SET_ALIGNMENT), tenant, user, update)
                                        .execute(&mut *savepoint)
                                        .await?;
                                    ProfileEnd::Aligned { interactions: count }
                                }
                                None => ProfileEnd::NeedsRescore { interactions: count },
                            })
                        }
                        .await;
                        ended = match recorded {
                            Ok(ended) => {
                                savepoint.commit().await?;
                                ended
                            }
                            Err(err) => {
                                savepoint.rollback().await?;
                                ProfileEnd::Refused(err)
                            }
                        };
                    }
                }
                tx.commit().await?;
                (row, ended)
            }))
        }
        .await;
        self.observe(&ended);
        let (row, profile) = ended?;
        let tick = row
            .ok_or_else(|| StoreError::Conflict(format!("tick {tick_id} is not running")))?
            .try_into()?;
        Ok(TickEnd { tick, profile })
    }
}
