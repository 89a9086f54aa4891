//! The daemon's rounds of shared spaces: a space with a cadence (its own from the catalog,
//! or `spaces.cadence`) has its members ticked one after another at each slot (UTC), so a
//! hand-off happens within one round. One replica runs a round: it claims the slot by
//! moving `next_round_at` in the store. Rounds run one at a time, beside the scheduler;
//! members never overlap in their space, because a running tick holds the space (a
//! unique index), across replicas too.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::persona::Cadence;
use crate::model::schedule::{Rule, next_slot};
use crate::model::tick::Trigger;
use crate::store::{SpaceRound, Store};
use crate::tick::{RoundPlan, TickRunner};

/// How long the loop sleeps at most: new spaces and cadences from a reseed get planned.
const LOOK_AGAIN: Duration = Duration::from_secs(30);

/// Spawns the round loop with the token that cuts a running member. `stop` ends it
/// between members, with the scheduler; the cut comes only once the drain's grace is over.
pub(super) fn spawn(
    store: Store,
    engine: Arc<TickRunner>,
    config: Arc<Config>,
    stop: CancellationToken,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let cut = CancellationToken::new();
    let round_cut = cut.clone();
    let task = tokio::spawn(async move {
        loop {
            let wait = match one_pass(&store, &engine, &config, &stop, &cut).await {
                Ok(wait) => wait,
                Err(err) => {
                    tracing::warn!(%err, "space rounds: the store did not answer; trying again");
                    LOOK_AGAIN
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    });
    (task, round_cut)
}

/// The rule of a space's rounds: its own cadence, else the daemon's.
fn rule_of(round: &SpaceRound, config: &Config) -> Option<Rule> {
    let text = round
        .space
        .cadence
        .as_deref()
        .or(Some(config.spaces.cadence.trim()).filter(|c| !c.is_empty()))?;
    Rule::of(&text.parse::<Cadence>().ok()?)
}

/// The next slot after `now` (an interval cadence counts from now).
fn next_round(rule: &Rule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_slot(rule, chrono_tz::UTC, now, Some(now)).filter(|next| *next > now)
}

/// Plans unplanned rounds, runs due ones this replica claims; returns how long to wait.
async fn one_pass(
    store: &Store,
    engine: &TickRunner,
    config: &Config,
    stop: &CancellationToken,
    cut: &CancellationToken,
) -> Result<Duration, crate::store::StoreError> {
    let mut wait = LOOK_AGAIN;
    for round in store.space_rounds().await? {
        if stop.is_cancelled() {
            break;
        }
        // A space the product doesn't have yet gets no rounds: its members' ticks would
        // only fail to find it (`catalog seed --provision` creates it).
        if round.space.provisioned_at.is_none() {
            continue;
        }
        let Some(rule) = rule_of(&round, config) else {
            continue;
        };
        let now = crate::time::now();
        let name = &round.space.name;
        match round.next_round_at {
            None => {
                let next = next_round(&rule, now);
                store.claim_space_round(round.tenant_id, name, None, next).await?;
                if let Some(next) = next {
                    wait = wait.min((next - now).to_std().unwrap_or_default());
                }
            }
            Some(due) if due <= now => {
                let next = next_round(&rule, now);
                if store.claim_space_round(round.tenant_id, name, Some(due), next).await? {
                    run_one(engine, config, &round, stop, cut).await;
                }
            }
            Some(due) => wait = wait.min((due - now).to_std().unwrap_or_default()),
        }
    }
    Ok(wait)
}

async fn run_one(
    engine: &TickRunner,
    config: &Config,
    round: &SpaceRound,
    stop: &CancellationToken,
    cut: &CancellationToken,
) {
    let plan = RoundPlan {
        order: config.spaces.order,
        pause: config.spaces.pause.0,
        trigger: Trigger::Schedule,
    };
    tracing::info!(space = %round.space.name, members = round.space.members.len(), "space round started");
    let members = engine
        .run_round(round.tenant_id, &round.space, plan, &|_| {}, stop, cut)
        .await;
    for member in members {
        match member.outcome {
            Ok(summary) => tracing::info!(
                space = %round.space.name, email = %member.email, tick = %summary.tick_id,
                status = %summary.status, "space round: member ticked"
            ),
            Err(err) => tracing::warn!(
                space = %round.space.name, email = %member.email, %err, "space round: member's tick failed"
            ),
        }
    }
}
