//! A round of a shared space: its members one after another, each tick in the space, so
//! what one member creates the next can see, finish or correct within one run (`tick
//! --space NAME`, and the daemon's rounds on `spaces.cadence`).

use tokio_util::sync::CancellationToken;

use super::TickSummary;
use super::{TickError, TickEvent, TickRequest, TickRunner};
use crate::model::space::{RoundOrder, Space, SpaceChoice};
use crate::model::tick::Trigger;

/// How one round runs.
#[derive(Clone, Copy, Debug)]
pub struct RoundPlan {
    pub order: RoundOrder,
    /// Between two members.
    pub pause: std::time::Duration,
    pub trigger: Trigger,
}

/// One member's part of a round.
#[derive(Debug)]
pub struct MemberTick {
    pub email: String,
    pub outcome: Result<TickSummary, TickError>,
}

impl TickRunner {
    /// Runs `space`'s members in the plan's order. `stop` ends the round between two
    /// members; `cut` ends the running member's tick (recorded as cut).
    pub async fn run_round(
        &self,
        tenant_id: uuid::Uuid,
        space: &Space,
        plan: RoundPlan,
        events: &(dyn Fn(TickEvent) + Send + Sync),
        stop: &CancellationToken,
        cut: &CancellationToken,
    ) -> Vec<MemberTick> {
        let mut members = space.members.clone();
        if plan.order == RoundOrder::Shuffled {
            fastrand::shuffle(&mut members);
        }
        let mut done = Vec::with_capacity(members.len());
        for (index, member) in members.into_iter().enumerate() {
            if index > 0 && !plan.pause.is_zero() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(plan.pause) => {}
                }
            }
            if stop.is_cancelled() {
                break;
            }
            let outcome = self
                .member_tick(tenant_id, space, &member.email, plan.trigger, events, cut)
                .await;
            done.push(MemberTick {
                email: member.email,
                outcome,
            });
        }
        done
    }

    async fn member_tick(
        &self,
        tenant_id: uuid::Uuid,
        space: &Space,
        email: &str,
        trigger: Trigger,
        events: &(dyn Fn(TickEvent) + Send + Sync),
        cut: &CancellationToken,
    ) -> Result<TickSummary, TickError> {
        let persona = self.store.find_persona(tenant_id, email).await?.ok_or_else(|| {
            TickError::Space(format!(
                "{email}, a member of `{}`, is not a seeded persona",
                space.name
            ))
        })?;
        let request = TickRequest {
            persona,
            trigger,
            scheduled_for: None,
            attempt: 1,
            goal: None,
            space: SpaceChoice::Shared(space.name.clone()),
        };
        let tick = self.claim(&request).await?;
        self.run_claimed(tick, &request, events, cut).await
    }
}
