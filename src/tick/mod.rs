//! One tick of one persona (DESIGN.md §4):
//! 1. claim it, with a lease that is renewed while the tick runs;
//! 2. log in;
//! 3. open MCP and apply the tool policy;
//! 4. role-play through the LLM, or let the offline driver act;
//! 5. dedup and audit every call as it completes;
//! 6. ask for a self-rating;
//! 7. finish the record.
//!
//! The record is honest: every call is written when it completes, so a tick cut off
//! mid-way (timeout, shutdown, crash) keeps the calls it made. Counters are derived from
//! those rows. A rating answer that cannot be used is stored as such, never as a rating.

mod agent;
use crate::redact as audit;
mod call;
mod goal;
mod lease;
mod offline;
mod offline_play;
mod pool;
pub mod probe;
mod product;
mod prompt;
pub mod rating;
mod replay;
mod roleplay;
mod round;
mod secrets;
mod session;
mod space;
mod spend;
mod state;
mod summary;
mod trace;
mod transcript;
mod validators;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

pub use pool::TickPool;
pub use replay::{ReplayReport, ReplayedCall, Verdict as ReplayVerdict};
pub use round::{MemberTick, RoundPlan};
pub use secrets::process_secrets;
pub use summary::TickSummary;

use crate::auth::AuthError;
use crate::config::{Config, ConfigError, Env, LlmProvider};
use crate::llm::{LlmClient, LlmError};
use crate::mcp::McpError;
use crate::model::call::CallResult;
use crate::model::persona::Persona;
use crate::model::tick::{CallCounts, RatingStatus, Tick, TickFinish, TickStatus, Trigger};
use crate::store::{ProfileEnd, Store, StoreError};
use state::TickState;
use validators::ValidatorCache;

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// Expected: the persona is busy (another runner, or a tick not finished yet).
    #[error("persona {0} already has a running tick")]
    AlreadyRunning(String),
    #[error("persona {0} has no login identity (a profile-only role persona) and cannot be ticked")]
    NotRunnable(String),
    /// Expected: the persona belongs to a product this config does not drive.
    #[error(
        "persona {persona} uses the target `{target}`, which this config does not define: add [targets.{target}] \
         with its auth and mcp settings to tick it"
    )]
    NoTarget { persona: String, target: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Mcp(#[from] McpError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tick lost its lease (another runner may run the persona now): it stopped.
    #[error("the tick lost its lease and stopped: {0}")]
    LeaseLost(String),
    /// Expected: the daemon is stopping and starts no more ticks.
    #[error("the scheduler is stopping: no new ticks are started")]
    ShuttingDown,
    /// Expected: the space asked for cannot be worked in (not declared, not a member, not
    /// in the product's organization list, or the product keeps no spaces).
    #[error("shared space: {0}")]
    Space(String),
    /// Expected: a tick to replay that cannot be (not found, persona gone).
    #[error("cannot replay: {0}")]
    Replay(String),
}

/// What a tick reports while it runs (the CLI prints these as live progress).
#[derive(Clone, Debug)]
pub enum TickEvent {
    Started {
        persona: String,
        tick: Uuid,
    },
    Turn {
        persona: String,
        turn: u32,
    },
    Tool {
        persona: String,
        tool: String,
        module: String,
        result: CallResult,
        latency_ms: Option<i32>,
        chaos: bool,
    },
    Finished {
        summary: Box<TickSummary>,
    },
}

/// A tick to run.
#[derive(Clone, Debug)]
pub struct TickRequest {
    pub persona: Persona,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
    /// A check tick's goal: its task is the persona's intention, its state checks are
    /// read after play.
    pub goal: Option<crate::model::goal::Goal>,
    /// The space it works in (by default chosen by the shares of the persona's spaces).
    pub space: crate::model::space::SpaceChoice,
}

enum Driver {
    Llm(Arc<LlmClient>),
    Offline { seed: u64, chaos: bool },
}

/// Everything ticks share: store, config, login cache, the LLM client, rate limits.
pub struct TickRunner {
    /// Every secret value the process holds (seed secret, LLM key, admin token, JWT and
    /// OAuth secrets, database password, gateway token): whatever a product echoes back,
    /// none of them is stored, logged by us or sent to the LLM.
    process_secrets: Vec<String>,
    store: Store,
    config: Arc<Config>,
    /// The default product and each `[targets.NAME]`: login, gateway, policy, OAuth.
    products: product::Products,
    driver: Driver,
    runner_id: String,
    tool_limit: Option<DefaultDirectRateLimiter>,
    tool_limit_per_persona: Option<DefaultKeyedRateLimiter<Uuid>>,
    /// Compiled tool schemas by their canonical JSON: compiled once, not per tick.
    validators: Mutex<ValidatorCache>,
    simulator: String,
    candidates: crate::profile::Candidates,
}

/// What a call of the tick needs to know about its tick.
pub(crate) struct CallContext<'a> {
    persona: &'a Persona,
    /// A check tick's goal.
    goal: Option<&'a crate::model::goal::Goal>,
    tick_id: Uuid,
    label: &'a str,
    events: &'a (dyn Fn(TickEvent) + Send + Sync),
    /// The shared space the tick works in; `None`: the persona's own.
    space: Option<&'a str>,
}

/// Why an `idle` tick is not `ok`.
const IDLE: &str = "the model answered without using the app";

fn runner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    format!("{}:{}", host.trim(), std::process::id())
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

impl TickRunner {
    /// Builds the engine. `llm.provider = "auto"` uses the LLM when an API key is
    /// configured and the offline driver otherwise.
    pub fn new(store: Store, config: Arc<Config>, env: &Env) -> Result<Self, TickError> {
        let products = product::Products::new(&config, env)?;
        let api_key = config.llm_api_key(env)?;
        let driver = match (config.llm.provider, api_key) {
            (LlmProvider::Offline, _) | (LlmProvider::Auto, None) => Driver::Offline {
                seed: config.llm.seed,
                chaos: config.llm.chaos,
            },
            (_, Some(key)) => Driver::Llm(Arc::new(LlmClient::new(&config.llm, &config.retry, &key))),
            (LlmProvider::Openai, None) => {
                return Err(TickError::Config(ConfigError::Secret {
                    key: "llm.api_key".into(),
                    message: format!(
                        "llm.provider = \"openai\" needs an API key: set {} or llm.api_key_file",
                        config.llm.api_key_env
                    ),
                }));
            }
        };
        let simulator = match &driver {
            Driver::Llm(llm) => format!(
                "llm {} · prompt {} · t {}",
                llm.model(),
                prompt::version(),
                config.llm.temperature
            ),
            Driver::Offline { chaos: true, .. } => "offline · chaos".to_string(),
            Driver::Offline { .. } => "offline".to_string(),
        };
        let per_minute = |n: u32| NonZeroU32::new(n).map(Quota::per_minute);
        let process_secrets = process_secrets(&config, env);
        Ok(Self {
            process_secrets,
            store,
            products,
            driver,
            runner_id: runner_id(),
            tool_limit: per_minute(config.mcp.tool_calls_per_minute).map(RateLimiter::direct),
            tool_limit_per_persona: per_minute(config.mcp.tool_calls_per_minute_per_persona).map(RateLimiter::keyed),
            validators: Mutex::new(ValidatorCache::default()),
            simulator,
            candidates: crate::profile::Candidates::default(),
            config,
        })
    }

    /// Why a tick must not start because the day's LLM spend cap is reached (`[budget]`),
    /// if it is. Only the LLM driver spends; a store that cannot say counts as spent.
    async fn over_budget(&self, persona_id: Uuid) -> Option<String> {
        let budget = &self.config.budget;
        if !matches!(self.driver, Driver::Llm(_)) {
            return None;
        }
        let day = crate::time::now().date_naive().and_hms_opt(0, 0, 0)?.and_utc();
        let caps = [
            (
                budget.tokens_per_day_per_persona,
                Some(persona_id),
                "budget.tokens_per_day_per_persona",
                "this persona",
            ),
            (budget.tokens_per_day, None, "budget.tokens_per_day", "all personas"),
        ];
        for (cap, scope, key, whom) in caps.into_iter().filter(|(cap, ..)| *cap > 0) {
            match self.store.tokens_spent(scope, day).await {
                Ok(spent) if (spent as u64) < cap => {}
                Ok(spent) => {
                    return Some(format!(
                        "skipped: the spend cap is reached ({spent} of {cap} tokens today for {whom}, {key}); no LLM request was made"
                    ));
                }
                Err(err) => {
                    return Some(format!(
                        "skipped: today's spend cannot be read ({err}); no LLM request was made"
                    ));
                }
            }
        }
        None
    }

    /// A fresh tick state, already redacting every secret of the process.
    fn tick_state(&self) -> TickState {
        let mut state = TickState::new(self.config.tick.transcript_chars);
        state.redact = self.process_secrets.clone();
        state
    }

    /// `offline` or the model name, for the record and the CLI.
    pub fn driver_name(&self) -> &str {
        match &self.driver {
            Driver::Llm(llm) => llm.model(),
            Driver::Offline { .. } => "offline",
        }
    }

    /// The simulator version of this engine's ticks: driver, model, prompt template hash
    /// and temperature. Ratings of different simulators are never compared.
    pub fn simulator(&self) -> &str {
        &self.simulator
    }

    /// The identity this process claims ticks as (`host:pid`).
    pub fn runner_id(&self) -> &str {
        &self.runner_id
    }

    /// Keeps renewing the lease of a claimed tick until the guard is dropped (while the
    /// tick waits for a place in the pool).
    pub fn hold_lease(&self, tick_id: Uuid) -> impl Drop + Send + use<> {
        lease::Lease::start(self.store.clone(), tick_id, self.config.tick.lease.0)
    }

    /// Forgets idle per-persona rate-limit state (call now and then: it grows with the
    /// personas that ticked).
    pub fn prune(&self) {
        if let Some(limit) = &self.tool_limit_per_persona {
            limit.retain_recent();
        }
        self.products.all().for_each(|product| product.auth.prune());
    }

    /// Claims and runs a one-off tick and returns its summary (also for failed ticks:
    /// their failure is part of the record). `Err` only when the tick could not start.
    pub async fn run(
        &self,
        request: &TickRequest,
        events: &(dyn Fn(TickEvent) + Send + Sync),
    ) -> Result<TickSummary, TickError> {
        let tick = self.claim(request).await?;
        self.run_claimed(tick, request, events, &CancellationToken::new()).await
    }

    /// Claims a tick for the request (one at a time per persona).
    pub async fn claim(&self, request: &TickRequest) -> Result<Tick, TickError> {
        let persona = &request.persona;
        let label = persona.label();
        if persona.user_id.is_none() || persona.email.is_none() {
            return Err(TickError::NotRunnable(label));
        }
        if let Some(target) = persona.target.as_deref().filter(|t| !self.config.runs_target(Some(t))) {
            return Err(TickError::NoTarget {
                persona: label,
                target: target.to_string(),
            });
        }
        let new = self.new_tick(request).await?;
        match self.store.claim_tick(&new).await {
            Ok(tick) => Ok(tick),
            Err(StoreError::Conflict(_)) => Err(TickError::AlreadyRunning(match &new.space {
                Some(space) => format!("{label} (or another member of the space `{space}`)"),
                None => label,
            })),
            Err(other) => Err(other.into()),
        }
    }

    /// Runs a claimed tick to its end. Whatever ends it (done, failed, timed out, cut by
    /// `cut` at shutdown, its lease lost, or a panic), it is finished here, in one place:
    /// calls still `pending` become `unknown`, counters are derived, the transcript kept.
    pub async fn run_claimed(
        &self,
        tick: Tick,
        request: &TickRequest,
        events: &(dyn Fn(TickEvent) + Send + Sync),
        cut: &CancellationToken,
    ) -> Result<TickSummary, TickError> {
        let persona = &request.persona;
        let label = persona.label();
        let started = Instant::now();
        events(TickEvent::Started {
            persona: label.clone(),
            tick: tick.id,
        });
        let mut state = self.tick_state();
        let ctx = CallContext {
            persona,
            goal: request.goal.as_ref(),
            tick_id: tick.id,
            label: &label,
            events,
            space: tick.space.as_deref(),
        };
        let model = match &self.driver {
            Driver::Llm(llm) => Some(llm.model()),
            Driver::Offline { .. } => None,
        };
        let root = trace::root(&tick, request, &self.simulator, model);
        let log_span = trace::log_span(&root);
        state.trace_id = root.ids().map(|(trace_id, _)| trace_id);
        let (status, error) = root
            .run(self.play_to_end(&ctx, &mut state, cut))
            .instrument(log_span.clone())
            .await;
        let ended = root
            .run(self.finish(&ctx, &mut state, status, error))
            .instrument(log_span)
            .await;
        trace::finish(
            &root,
            ended.as_ref().map_or(TickStatus::Abandoned, |(status, ..)| *status),
            &state,
        );
        let trace = root.context();
        drop(root);
        let (status, error, counts) = ended?;
        let summary = TickSummary {
            tick_id: tick.id,
            persona_id: persona.id,
            persona: label,
            trigger: request.trigger,
            space: crate::model::space::stored(tick.space.as_deref()).to_string(),
            status,
            error,
            calls_ok: counts.calls_ok.max(0) as u32,
            calls_error: counts.calls_error.max(0) as u32,
            calls_deduped: counts.calls_deduped.max(0) as u32,
            calls_denied: counts.calls_denied.max(0) as u32,
            calls_unknown: counts.calls_unknown.max(0) as u32,
            calls_not_sent: counts.calls_not_sent.max(0) as u32,
            modules: state.used_modules(),
            ratings: state.ratings.clone(),
            rating_status: state.rating_status,
            tokens_in: state.spend.tokens_in(),
            tokens_out: state.spend.tokens_out(),
            turns: state.turns,
            simulator: self.simulator.clone(),
            duration_ms: started.elapsed().as_millis(),
            state: std::mem::take(&mut state.state_answers),
            trace_id: state.trace_id.clone(),
            trace,
        };
        events(TickEvent::Finished {
            summary: Box::new(summary.clone()),
        });
        Ok(summary)
    }

    /// Plays the tick under its lease, its timeout, the shutdown's cut and the spend cap:
    /// how it ended and why.
    async fn play_to_end(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        cut: &CancellationToken,
    ) -> (TickStatus, Option<String>) {
        let lease = lease::Lease::start(self.store.clone(), ctx.tick_id, self.config.tick.lease.0);
        let timeout = self.config.tick.tick_timeout;
        if ctx.persona.user_id.is_none() {
            return (
                TickStatus::Failed,
                Some(TickError::NotRunnable(ctx.label.to_string()).to_string()),
            );
        }
        if let Some(reason) = self.over_budget(ctx.persona.id).await {
            state.rating_status = Some(RatingStatus::Skipped);
            return (TickStatus::Skipped, Some(reason));
        }
        let play = std::panic::AssertUnwindSafe(self.play(ctx, state)).catch_unwind();
        let ended = tokio::select! {
            outcome = tokio::time::timeout(timeout.0, play) => match outcome {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(err))) => Some((TickStatus::Failed, err.to_string())),
                Ok(Err(panic)) => Some((TickStatus::Failed, format!("the tick panicked: {}", panic_message(&*panic)))),
                Err(_) => Some((TickStatus::Timeout, format!("the tick ran past tick.tick_timeout ({timeout})"))),
            },
            () = cut.cancelled() => Some((TickStatus::Failed, "cut short: the daemon is shutting down and scheduler.shutdown_grace ran out".to_string())),
            reason = lease.lost() => Some((TickStatus::Failed, format!("the tick lost its lease and stopped at once: {reason}"))),
        };
        match ended {
            Some((status, error)) => (status, Some(error)),
            // A persona that never used the app is no evidence about it, whatever it said.
            None if state.calls_asked == 0 => (TickStatus::Idle, Some(IDLE.to_string())),
            None => (TickStatus::Ok, None),
        }
    }

    /// Ends the tick in the store: the last call's result saved, the session closed, the
    /// transcript kept, the tick's calls made its user's interactions. The error as stored
    /// (redacted), how the store recorded its end, and its calls as the store counted them.
    async fn finish(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        status: TickStatus,
        error: Option<String>,
    ) -> Result<(TickStatus, Option<String>, CallCounts), TickError> {
        let (label, tick_id) = (ctx.label, ctx.tick_id);
        // An answered call whose result was not committed yet (the tick ended right after
        // it, or was cut): committed before the finish turns pending calls `unknown`.
        if let Err(err) = self.save_completion(state).await {
            tracing::warn!(%err, persona = %label, tick = %tick_id, "the last call's result could not be saved");
        }
        if let Some(session) = state.session.take() {
            session.close().await;
        }
        if let Some(agent) = state.agent.clone() {
            agent.audit_declined().await;
        }
        state.merge_agent_notes();
        // Stored on the tick: redacted like every text we keep.
        let error = error.map(|e| audit::redact_truncate(&e, &state.redact, 2000));
        if let Some(error) = &error {
            tracing::warn!(persona = %label, tick = %tick_id, %error, "tick did not finish cleanly");
        }
        state.transcript.push("end", json!({"status": status, "error": error}));
        // The tick's calls become the persona user's interactions, and its alignment is
        // rescored, in the finish's own transaction.
        let record = crate::profile::TickInteractions::of(ctx.persona, tick_id).filter(|_| state.audited_any());
        let finish = TickFinish {
            status,
            error: error.clone(),
            turns: state.turns,
            tokens_in: state.spend.tokens_in(),
            tokens_out: state.spend.tokens_out(),
            llm_model: Some(self.driver_name().to_string()),
            prompt_version: Some(prompt::version().to_string()),
            simulator: Some(self.simulator.clone()),
            protocol_version: state.protocol_version.clone(),
            rating_status: state.rating_status,
            rating_raw: state.rating_raw.clone(),
            rating_attempts: state.rating_attempts,
            transcript: Some(state.transcript.finish(&state.redact)),
            trace_id: state.trace_id.clone(),
        };
        let profile = record.as_ref().map(|r| r as &dyn crate::store::TickProfile);
        let mut ended = self.store.end_tick(tick_id, &finish, profile).await;
        if let Err(StoreError::Constraint(refusal)) = &ended {
            // Whatever a tick met, it ends: what the store would not take is left out.
            let why = format!(
                "the tick's record was refused by the store ({refusal}); it ends without its figures and transcript"
            );
            tracing::warn!(persona = %label, tick = %tick_id, %why);
            ended = self
                .store
                .end_tick(tick_id, &TickFinish::status(TickStatus::Failed, Some(why)), None)
                .await;
        }
        let ended = match ended {
            Ok(ended) => ended,
            Err(StoreError::Conflict(_)) => {
                return Err(TickError::LeaseLost(format!(
                    "tick {tick_id} was declared abandoned by another runner before it finished"
                )));
            }
            Err(err) => return Err(err.into()),
        };
        self.after_profile(ended.profile, ctx.persona, label).await;
        Ok((ended.tick.status, ended.tick.error, ended.counts))
    }
}

impl TickRunner {
    /// What is left of the profile part of a tick's end: a rescore that must read other
    /// personas (a flagged user's suggestion) runs after the commit; a refused part is
    /// logged (the tick itself finished).
    async fn after_profile(&self, profiled: ProfileEnd, persona: &Persona, label: &str) {
        let failed = match profiled {
            // A profile part is asked only for a persona with a user.
            ProfileEnd::NeedsRescore { .. } => match persona.user_id {
                Some(user) => crate::profile::refresh_alignment(
                    &self.store,
                    persona.tenant_id,
                    user,
                    &self.candidates,
                    Some(persona),
                )
                .await
                .err()
                .map(|err| err.to_string()),
                None => None,
            },
            ProfileEnd::Refused(err) => Some(err.to_string()),
            ProfileEnd::NotAsked | ProfileEnd::Aligned { .. } | ProfileEnd::NoProfile { .. } => None,
        };
        if let Some(err) = failed {
            tracing::warn!(%err, persona = %label, "recording the tick in the profile store failed");
        }
    }
}

impl std::fmt::Debug for TickRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickRunner")
            .field("driver", &self.driver_name())
            .finish_non_exhaustive()
    }
}
