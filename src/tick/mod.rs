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

mod audit;
mod offline;
mod prompt;
pub mod rating;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};
use sha2::Digest as _;
use uuid::Uuid;

pub use audit::{canonical_json, input_hash};

use crate::auth::{AuthError, Authenticator, Credentials};
use crate::config::{Config, ConfigError, DedupWindow, Env, LlmProvider};
use crate::llm::{LlmClient, LlmError, ToolNames};
use crate::mcp::{CallOutcome, McpError, McpSession, ToolInfo, ToolPolicy};
use crate::persona::Persona;
use crate::profile::{InteractionType, NewInteraction};
use crate::store::{
    ActionResult, NewAction, NewFeedback, NewTick, RatingStatus, Store, StoreError, Tick, TickFinish, TickStatus,
    TickTrigger,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// Expected: the persona is busy (another runner, or a tick not finished yet).
    #[error("persona {0} already has a running tick")]
    AlreadyRunning(String),
    #[error("persona {0} has no login identity (a profile-only role persona) and cannot be ticked")]
    NotRunnable(String),
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
        result: ActionResult,
        latency_ms: Option<i32>,
        chaos: bool,
    },
    Finished {
        summary: Box<TickSummary>,
    },
}

/// The end of a tick, as the CLI and API report it (read back from the store).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TickSummary {
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub persona: String,
    pub trigger: TickTrigger,
    pub status: TickStatus,
    pub error: Option<String>,
    pub calls_ok: u32,
    pub calls_error: u32,
    pub calls_deduped: u32,
    pub calls_denied: u32,
    pub modules: Vec<String>,
    pub ratings: Vec<rating::Rating>,
    pub rating_status: Option<RatingStatus>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub turns: i32,
    pub duration_ms: u128,
}

/// A tick to run.
#[derive(Clone, Debug)]
pub struct TickRequest {
    pub persona: Persona,
    pub trigger: TickTrigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
}

enum Driver {
    Llm(Box<LlmClient>),
    Offline { seed: u64, chaos: bool },
}

/// Everything ticks share: store, config, login cache, the LLM client, rate limits.
pub struct TickEngine {
    store: Store,
    config: Arc<Config>,
    auth: Authenticator,
    driver: Driver,
    runner_id: String,
    tool_limit: Option<DefaultDirectRateLimiter>,
    tool_limit_per_persona: Option<DefaultKeyedRateLimiter<Uuid>>,
    policy: ToolPolicy,
    /// Compiled tool schemas by their canonical JSON: compiled once, not per tick.
    validators: std::sync::Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// Per-module evidence of one tick.
#[derive(Clone, Debug, Default)]
struct ModuleStats {
    calls: u32,
    errors: u32,
    /// Calls sent as deliberate edge cases (offline chaos).
    chaos_calls: u32,
    chaos_errors: u32,
    latency_total_ms: u64,
    latency_count: u32,
}

impl ModuleStats {
    /// "mean 120 ms", or "no timing" when no call was timed (prompt and notes).
    fn latency_text(&self) -> String {
        self.mean_latency()
            .map_or("no timing".into(), |ms| format!("mean {ms:.0} ms"))
    }

    fn mean_latency(&self) -> Option<f64> {
        (self.latency_count > 0).then(|| self.latency_total_ms as f64 / f64::from(self.latency_count))
    }
}

/// The arguments of a call as they arrived.
enum Arguments {
    /// Text from the model, normally JSON.
    Raw(String),
    /// Built by the offline driver.
    Value(Value),
}

/// How much of an unusable rating answer is kept on the tick.
const RATING_RAW_CHARS: usize = 20_000;

/// The mutable state of one running tick. It lives outside the timed future, so what a
/// tick did is still known when the timeout cuts it.
struct TickState {
    session: Option<McpSession>,
    /// Secrets to redact from any text we store or show: every bearer token of the tick.
    redact: Vec<String>,
    offered: Vec<ToolInfo>,
    withheld: HashMap<String, &'static str>,
    validators: HashMap<String, Arc<jsonschema::Validator>>,
    seq: i32,
    calls_made: u32,
    seen: HashMap<String, String>,
    modules: BTreeMap<String, ModuleStats>,
    turns: i32,
    tokens_in: i64,
    tokens_out: i64,
    reauthenticated: bool,
    rating_status: Option<RatingStatus>,
    rating_raw: Option<String>,
    /// Ids seen in this tick's tool outputs, for the offline driver's `*_id` arguments.
    known_ids: Vec<i64>,
}

impl TickState {
    /// Adds the bearer token of `credentials` to what is redacted for the rest of the
    /// tick (a token replaced by a fresh login is still kept out).
    fn remember(&mut self, credentials: &Credentials) {
        if let Some(token) = &credentials.token
            && !self.redact.iter().any(|known| known == token.expose())
        {
            self.redact.push(token.expose().to_string());
        }
    }

    fn new() -> Self {
        Self {
            session: None,
            redact: Vec::new(),
            offered: Vec::new(),
            withheld: HashMap::new(),
            validators: HashMap::new(),
            seq: 0,
            calls_made: 0,
            seen: HashMap::new(),
            modules: BTreeMap::new(),
            turns: 0,
            tokens_in: 0,
            tokens_out: 0,
            reauthenticated: false,
            rating_status: None,
            rating_raw: None,
            known_ids: Vec::new(),
        }
    }

    /// Modules the persona really used: at least one call that was sent or deduped.
    fn used_modules(&self) -> Vec<String> {
        self.modules
            .iter()
            .filter(|(_, s)| s.calls > 0)
            .map(|(m, _)| m.clone())
            .collect()
    }
}

/// Aborts the lease renewal when the tick ends or is dropped mid-way.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn runner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    format!("{}:{}", host.trim(), std::process::id())
}

impl TickEngine {
    /// Builds the engine. `llm.provider = "auto"` uses the LLM when an API key is
    /// configured and the offline driver otherwise.
    pub fn new(store: Store, config: Arc<Config>, env: &Env) -> Result<Self, TickError> {
        let auth = Authenticator::new(&config, env)?;
        let api_key = config.llm_api_key(env)?;
        let driver = match (config.llm.provider, api_key) {
            (LlmProvider::Offline, _) | (LlmProvider::Auto, None) => Driver::Offline {
                seed: config.llm.seed,
                chaos: config.llm.chaos,
            },
            (_, Some(key)) => Driver::Llm(Box::new(LlmClient::new(&config.llm, &config.retry, &key))),
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
        let per_minute = |n: u32| NonZeroU32::new(n).map(Quota::per_minute);
        Ok(Self {
            store,
            auth,
            driver,
            runner_id: runner_id(),
            tool_limit: per_minute(config.mcp.tool_calls_per_minute).map(RateLimiter::direct),
            tool_limit_per_persona: per_minute(config.mcp.tool_calls_per_minute_per_persona).map(RateLimiter::keyed),
            policy: ToolPolicy::new(&config.mcp),
            validators: std::sync::Mutex::new(HashMap::new()),
            config,
        })
    }

    /// `offline` or the model name, for the record and the CLI.
    pub fn driver_name(&self) -> &str {
        match &self.driver {
            Driver::Llm(llm) => llm.model(),
            Driver::Offline { .. } => "offline",
        }
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
        match self.store.claim_tick(&self.new_tick(request)).await {
            Ok(tick) => Ok(tick),
            Err(StoreError::Conflict(_)) => Err(TickError::AlreadyRunning(label)),
            Err(other) => Err(other.into()),
        }
    }

    /// The claim of a request (the scheduler claims slots through the store itself).
    pub fn new_tick(&self, request: &TickRequest) -> NewTick {
        NewTick {
            tenant_id: request.persona.tenant_id,
            persona_id: request.persona.id,
            trigger: request.trigger,
            scheduled_for: request.scheduled_for,
            attempt: request.attempt,
            runner_id: self.runner_id.clone(),
            lease: self.config.tick.lease.0,
        }
    }

    /// Runs a claimed tick to its end. `cut` ends it early (the daemon's shutdown grace
    /// ran out): the tick is then finished as `failed` with what it did so far.
    pub async fn run_claimed(
        &self,
        tick: Tick,
        request: &TickRequest,
        events: &(dyn Fn(TickEvent) + Send + Sync),
        cut: &CancellationToken,
    ) -> Result<TickSummary, TickError> {
        let persona = &request.persona;
        let label = persona.label();
        if persona.user_id.is_none() {
            return Err(TickError::NotRunnable(label));
        }
        let lease = self.config.tick.lease.0;
        let started = Instant::now();
        events(TickEvent::Started {
            persona: label.clone(),
            tick: tick.id,
        });
        let _renewal = AbortOnDrop(self.spawn_lease_renewal(tick.id, lease));
        let mut state = TickState::new();
        let timeout = self.config.tick.tick_timeout;
        let (status, error) = tokio::select! {
            outcome = tokio::time::timeout(timeout.0, self.play(request, tick.id, &label, &mut state, events)) => match outcome {
                Ok(Ok(())) => (TickStatus::Ok, None),
                // Stored on the tick: redacted like every text we keep.
                Ok(Err(err)) => (TickStatus::Failed, Some(audit::redact_truncate(&err.to_string(), &state.redact, 2000))),
                Err(_) => (TickStatus::Timeout, Some(format!("the tick ran past tick.tick_timeout ({timeout})"))),
            },
            () = cut.cancelled() => (TickStatus::Failed, Some("cut short: the daemon is shutting down and runner.shutdown_grace ran out".to_string())),
        };
        if let Some(session) = state.session.take() {
            session.close().await;
        }
        if let Some(error) = &error {
            tracing::warn!(persona = %label, tick = %tick.id, %error, "tick did not finish cleanly");
        }
        let finished = self
            .store
            .finish_tick(
                tick.id,
                &TickFinish {
                    status,
                    error: error.clone(),
                    turns: state.turns,
                    tokens_in: state.tokens_in,
                    tokens_out: state.tokens_out,
                    llm_model: Some(self.driver_name().to_string()),
                    prompt_version: Some(prompt::version().to_string()),
                    rating_status: state.rating_status,
                    rating_raw: state.rating_raw.clone(),
                },
            )
            .await?;
        // The tick's calls were recorded as the persona user's interactions: rescore how
        // far the role-play drifts from the persona's definition.
        if let Some(user_id) = persona.user_id.filter(|_| state.seq > 0)
            && let Err(err) = crate::profile::refresh_alignment(&self.store, persona.tenant_id, user_id).await
        {
            tracing::warn!(%err, persona = %label, "refreshing the alignment score failed");
        }
        let summary = self
            .summarize(
                request.trigger,
                &label,
                persona.id,
                &finished.id,
                status,
                error,
                &state,
                started,
            )
            .await?;
        events(TickEvent::Finished {
            summary: Box::new(summary.clone()),
        });
        Ok(summary)
    }

    fn spawn_lease_renewal(&self, tick_id: Uuid, lease: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(every).await;
                let until = crate::time::after(crate::time::now(), lease);
                match store.renew_lease(tick_id, until).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(err) => tracing::warn!(%tick_id, %err, "renewing the tick lease failed"),
                }
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn summarize(
        &self,
        trigger: TickTrigger,
        label: &str,
        persona_id: Uuid,
        tick_id: &Uuid,
        status: TickStatus,
        error: Option<String>,
        state: &TickState,
        started: Instant,
    ) -> Result<TickSummary, TickError> {
        let actions = self.store.tick_actions(*tick_id).await?;
        let count = |result: ActionResult| actions.iter().filter(|a| a.result == result.as_str()).count() as u32;
        let ratings = self
            .store
            .tick_feedback(*tick_id)
            .await?
            .into_iter()
            .map(|f| rating::Rating {
                module: f.module,
                rating: f.rating,
                note: f.notes.unwrap_or_default(),
            })
            .collect();
        Ok(TickSummary {
            tick_id: *tick_id,
            persona_id,
            persona: label.to_string(),
            trigger,
            status,
            error,
            calls_ok: count(ActionResult::Ok),
            calls_error: count(ActionResult::Error),
            calls_deduped: count(ActionResult::Deduped),
            calls_denied: count(ActionResult::Denied),
            modules: state.used_modules(),
            ratings,
            rating_status: state.rating_status,
            tokens_in: state.tokens_in,
            tokens_out: state.tokens_out,
            turns: state.turns,
            duration_ms: started.elapsed().as_millis(),
        })
    }

    /// Logs in and opens the MCP session; one fresh login and one retry on a 401.
    async fn connect(&self, email: &str, state: &mut TickState) -> Result<(), TickError> {
        let credentials = self.auth.credentials(email).await?;
        // Before the session opens: an error opening it may already echo the token.
        state.remember(&credentials);
        let session = match McpSession::open_with(&self.config.mcp, &self.policy, &credentials).await {
            Err(McpError::Unauthorized) if !state.reauthenticated => {
                state.reauthenticated = true;
                tracing::info!(email, "gateway refused the cached token; logging in again");
                self.auth.invalidate(email);
                let fresh = self.auth.credentials(email).await?;
                state.remember(&fresh);
                McpSession::open_with(&self.config.mcp, &self.policy, &fresh).await?
            }
            other => other?,
        };
        let policy = &self.policy;
        state.offered.clear();
        state.withheld.clear();
        state.validators.clear();
        for tool in session.tools() {
            match policy.check(tool) {
                Ok(()) => {
                    match self.validator(&tool.input_schema) {
                        Ok(validator) => {
                            state.validators.insert(tool.name.clone(), validator);
                        }
                        Err(err) => {
                            tracing::warn!(tool = %tool.name, %err, "tool schema is not a valid JSON Schema; arguments go unchecked")
                        }
                    }
                    state.offered.push(tool.clone());
                }
                Err(reason) => {
                    state.withheld.insert(tool.name.clone(), reason);
                }
            }
        }
        state.session = Some(session);
        Ok(())
    }

    /// The compiled validator of a tool schema, from the cache when seen before.
    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let key = canonical_json(schema);
        if let Some(found) = self.validators.lock().expect("validator cache").get(&key) {
            return Ok(found.clone());
        }
        let compiled = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
        self.validators
            .lock()
            .expect("validator cache")
            .insert(key, compiled.clone());
        Ok(compiled)
    }

    async fn play(
        &self,
        request: &TickRequest,
        tick_id: Uuid,
        label: &str,
        state: &mut TickState,
        events: &(dyn Fn(TickEvent) + Send + Sync),
    ) -> Result<(), TickError> {
        let email = request.persona.email.as_deref().unwrap_or_default();
        self.connect(email, state).await?;
        let ctx = CallContext {
            persona: &request.persona,
            tick_id,
            label,
            events,
        };
        match &self.driver {
            Driver::Llm(llm) => self.play_llm(llm, &ctx, state).await,
            Driver::Offline { seed, chaos } => self.play_offline(*seed, *chaos, &ctx, state).await,
        }
    }

    async fn play_llm(&self, llm: &LlmClient, ctx: &CallContext<'_>, state: &mut TickState) -> Result<(), TickError> {
        let persona = ctx.persona;
        let limits = &self.config.tick;
        let story = prompt::story_so_far(
            &self
                .store
                .recent_actions(persona.id, limits.story_actions as i64)
                .await?,
            &self.store.recent_feedback(persona.id, 5).await?,
        );
        // Every listed tool gets a name, so a call to a withheld one maps back to it.
        let mut withheld: Vec<&str> = state.withheld.keys().map(String::as_str).collect();
        withheld.sort_unstable();
        let names = ToolNames::new(state.offered.iter().map(|t| t.name.as_str()).chain(withheld));
        let tools: Vec<Value> = state
            .offered
            .iter()
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": names.llm_name(&tool.name),
                    "description": tool.description.clone().unwrap_or_default(),
                    "parameters": tool.input_schema,
                }})
            })
            .collect();
        let mut messages = vec![
            json!({"role": "system", "content": prompt::system_prompt(persona, crate::time::now(), &story)}),
            json!({"role": "user", "content": "(You open the app.)"}),
        ];
        loop {
            if state.turns as u32 >= limits.max_turns
                || (state.tokens_in + state.tokens_out) as u64 >= limits.max_tokens_per_tick
            {
                tracing::debug!(persona = %ctx.label, turns = state.turns, "tick budget reached");
                break;
            }
            state.turns += 1;
            (ctx.events)(TickEvent::Turn {
                persona: ctx.label.to_string(),
                turn: state.turns as u32,
            });
            let turn = llm.chat(&messages, &tools, None).await?;
            state.tokens_in += turn.prompt_tokens as i64;
            state.tokens_out += turn.completion_tokens as i64;
            messages.push(turn.as_message());
            if turn.tool_calls.is_empty() {
                break;
            }
            // Every call of the turn executes (budget permitting) and every one is answered.
            for call in &turn.tool_calls {
                let mcp_name = names.mcp_name(&call.name).unwrap_or(&call.name).to_string();
                let answer = self
                    .call_tool(ctx, state, &mcp_name, Arguments::Raw(call.arguments.clone()), false)
                    .await;
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": answer}));
            }
            if state.calls_made >= limits.max_tool_calls {
                break;
            }
        }
        self.rate_with_llm(llm, ctx, state, messages).await
    }

    fn evidence(state: &TickState, modules: &[String]) -> String {
        modules
            .iter()
            .map(|module| {
                let stats = &state.modules[module];
                format!(
                    "- {module}: {} calls, {} failed, {}",
                    stats.calls,
                    stats.errors,
                    stats.latency_text()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn rate_with_llm(
        &self,
        llm: &LlmClient,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        mut messages: Vec<Value>,
    ) -> Result<(), TickError> {
        let modules = state.used_modules();
        if modules.is_empty() {
            state.rating_status = Some(RatingStatus::Skipped);
            return Ok(());
        }
        messages.push(
            json!({"role": "user", "content": prompt::rating_prompt(&modules, &Self::evidence(state, &modules))}),
        );
        let format = self
            .config
            .llm
            .response_format
            .then(|| rating::response_format(&modules));
        let mut answers = Vec::new();
        for attempt in 0..2 {
            let turn = llm.chat(&messages, &[], format.clone()).await?;
            state.tokens_in += turn.prompt_tokens as i64;
            state.tokens_out += turn.completion_tokens as i64;
            let answer = turn.content.clone().unwrap_or_default();
            answers.push(answer.clone());
            match rating::parse(&answer, &modules) {
                Ok(ratings) => {
                    self.store_ratings(ctx, state, &ratings).await?;
                    state.rating_status = Some(RatingStatus::Valid);
                    return Ok(());
                }
                Err(problem) if attempt == 0 => {
                    tracing::info!(persona = %ctx.label, %problem, "rating answer unusable; asking once more");
                    messages.push(turn.as_message());
                    messages.push(json!({"role": "user", "content": format!(
                        "That answer cannot be used: {problem}. Reply again with only the JSON object described above."
                    )}));
                }
                Err(problem) => {
                    tracing::warn!(persona = %ctx.label, %problem, "rating answer unusable after one repair; no rating recorded");
                }
            }
        }
        state.rating_status = Some(RatingStatus::Invalid);
        state.rating_raw = Some(audit::redact_truncate(
            &answers.join("\n\n--- repair answer ---\n\n"),
            &state.redact,
            RATING_RAW_CHARS,
        ));
        Ok(())
    }

    async fn store_ratings(
        &self,
        ctx: &CallContext<'_>,
        state: &TickState,
        ratings: &[rating::Rating],
    ) -> Result<(), TickError> {
        for rating in ratings {
            let stats = state.modules.get(&rating.module).cloned().unwrap_or_default();
            self.store
                .record_feedback(&NewFeedback {
                    tenant_id: ctx.persona.tenant_id,
                    tick_id: ctx.tick_id,
                    persona_id: ctx.persona.id,
                    module: rating.module.clone(),
                    rating: rating.rating,
                    notes: (!rating.note.is_empty()).then(|| audit::redact_truncate(&rating.note, &state.redact, 2000)),
                    evidence_calls: stats.calls as i32,
                    evidence_errors: stats.errors as i32,
                    evidence_mean_latency_ms: stats.mean_latency(),
                })
                .await?;
        }
        Ok(())
    }

    async fn play_offline(
        &self,
        seed: u64,
        chaos: bool,
        ctx: &CallContext<'_>,
        state: &mut TickState,
    ) -> Result<(), TickError> {
        let persona = ctx.persona;
        // Seeded by the persona's email (stable across databases) and its tick count, so
        // the same seed replays the same sequence and each tick still differs.
        let ordinal = self.store.count_ticks(persona.id).await?;
        let email_bits = sha2::Sha256::digest(persona.email.as_deref().unwrap_or_default().as_bytes());
        let persona_seed = u64::from_le_bytes(email_bits[..8].try_into().expect("8 bytes"));
        let mut rng =
            fastrand::Rng::with_seed(seed ^ persona_seed ^ (ordinal as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut by_module: BTreeMap<String, Vec<ToolInfo>> = BTreeMap::new();
        for tool in &state.offered {
            by_module.entry(tool.module.clone()).or_default().push(tool.clone());
        }
        let weighted: Vec<(String, f64)> = persona
            .module_mix
            .iter()
            .filter(|(module, weight)| **weight > 0.0 && by_module.contains_key(module.as_str()))
            .map(|(module, weight)| (module.clone(), *weight))
            .collect();
        let count = if by_module.is_empty() {
            0
        } else {
            rng.usize(3..=8).min(self.config.tick.max_tool_calls as usize)
        };
        for turn in 0..count {
            let module = if weighted.is_empty() {
                // None of the persona's modules exist here: any module will do.
                by_module
                    .keys()
                    .nth(rng.usize(..by_module.len()))
                    .expect("non-empty")
                    .to_string()
            } else {
                let total: f64 = weighted.iter().map(|(_, w)| w).sum();
                let mut point = rng.f64() * total;
                weighted
                    .iter()
                    .find(|(_, w)| {
                        point -= w;
                        point < 0.0
                    })
                    .unwrap_or(&weighted[weighted.len() - 1])
                    .0
                    .clone()
            };
            let tools = &by_module[module.as_str()];
            let tool = tools[rng.usize(..tools.len())].clone();
            let mut arguments = offline::generate(&tool.input_schema, &mut rng, 0);
            offline::reuse_ids(&mut arguments, &tool.input_schema, &state.known_ids, &mut rng);
            let is_chaos = chaos && rng.bool();
            if is_chaos {
                arguments = offline::chaos(&arguments, &tool.input_schema, &mut rng);
            }
            state.turns = turn as i32 + 1;
            (ctx.events)(TickEvent::Turn {
                persona: ctx.label.to_string(),
                turn: state.turns as u32,
            });
            let answer = self
                .call_tool(ctx, state, &tool.name, Arguments::Value(arguments), is_chaos)
                .await;
            offline::collect_ids(&answer, &mut state.known_ids);
        }
        let modules = state.used_modules();
        if modules.is_empty() {
            state.rating_status = Some(RatingStatus::Skipped);
            return Ok(());
        }
        let ratings: Vec<rating::Rating> = modules
            .iter()
            .map(|module| {
                let stats = &state.modules[module];
                // Rejecting a deliberate edge case is correct behaviour, not a failure.
                let calls = stats.calls - stats.chaos_calls;
                let errors = stats.errors - stats.chaos_errors;
                let latency = stats.latency_text();
                rating::Rating {
                    module: module.clone(),
                    rating: offline::rating_from_evidence(calls, errors, stats.mean_latency()),
                    note: format!(
                        "offline driver, from evidence: {calls} calls, {errors} failed, {latency}{}",
                        if stats.chaos_calls > 0 {
                            format!(
                                ", plus {} edge cases ({} rejected)",
                                stats.chaos_calls, stats.chaos_errors
                            )
                        } else {
                            String::new()
                        }
                    ),
                }
            })
            .collect();
        self.store_ratings(ctx, state, &ratings).await?;
        state.rating_status = Some(RatingStatus::Valid);
        Ok(())
    }

    /// Executes one requested call: policy, argument checks, dedup, rate limits, the
    /// call, the audit row and the profile interaction. Returns what the model is told.
    async fn call_tool(
        &self,
        ctx: &CallContext<'_>,
        state: &mut TickState,
        tool: &str,
        arguments: Arguments,
        chaos: bool,
    ) -> String {
        let seq = state.seq;
        state.seq += 1;

        // Offered tools know their module; only an unknown name needs the policy's rule.
        let offered_module = state.offered.iter().find(|t| t.name == tool).map(|t| t.module.clone());
        let offered = offered_module.is_some();

        // Parse the arguments first: the hash needs them.
        let parsed: Result<Value, String> = match &arguments {
            Arguments::Value(value) => Ok(value.clone()),
            Arguments::Raw(text) if text.trim().is_empty() => Ok(json!({})),
            Arguments::Raw(text) => {
                serde_json::from_str::<Value>(text).map_err(|err| format!("the arguments are not valid JSON ({err})"))
            }
        };
        let hash = match (&parsed, &arguments) {
            (Ok(value), _) => input_hash(tool, value),
            (Err(_), Arguments::Raw(text)) => audit::hash_text(tool, text),
            (Err(_), Arguments::Value(value)) => input_hash(tool, value),
        };
        let mut record = NewAction {
            tenant_id: ctx.persona.tenant_id,
            tick_id: ctx.tick_id,
            persona_id: ctx.persona.id,
            seq,
            tool_name: tool.to_string(),
            module: offered_module.unwrap_or_else(|| self.policy.module_of(tool)),
            input_hash: hash.clone(),
            result: ActionResult::Denied,
            error_message: None,
            output: None,
            chaos,
            latency_ms: None,
        };

        let answer = 'answer: {
            if state.calls_made >= self.config.tick.max_tool_calls {
                record.error_message =
                    Some("not sent: the tick's tool-call budget (tick.max_tool_calls) is used up".into());
                break 'answer "Error: you have used up your actions for now; this call was not executed.".to_string();
            }
            if !offered {
                let reason = state.withheld.get(tool).copied().unwrap_or("no such tool");
                record.error_message = Some(format!("not sent: {reason}"));
                break 'answer format!("Error: the tool `{tool}` is not available to you ({reason}).");
            }
            state.calls_made += 1;
            let value = match parsed {
                Ok(Value::Object(map)) => Value::Object(map),
                Ok(other) => {
                    record.result = ActionResult::Error;
                    record.error_message = Some(format!(
                        "not sent: the arguments must be a JSON object, got {}",
                        kind(&other)
                    ));
                    break 'answer "Error: the arguments must be a JSON object.".to_string();
                }
                Err(problem) => {
                    record.result = ActionResult::Error;
                    record.error_message = Some(format!("not sent: {problem}"));
                    break 'answer format!("Error: {problem}. Call the tool again with a JSON object.");
                }
            };
            if !chaos && let Some(validator) = state.validators.get(tool) {
                let problems: Vec<String> = validator
                    .iter_errors(&value)
                    .take(5)
                    .map(|e| {
                        let path = e.instance_path().to_string();
                        if path.is_empty() {
                            e.to_string()
                        } else {
                            format!("{path}: {e}")
                        }
                    })
                    .collect();
                if !problems.is_empty() {
                    record.result = ActionResult::Error;
                    let problem = format!("the arguments do not match the tool's schema: {}", problems.join("; "));
                    record.error_message = Some(format!(
                        "not sent: {}",
                        audit::redact_truncate(&problem, &state.redact, 500)
                    ));
                    break 'answer format!("Error: {problem}.");
                }
            }
            // A repeat within the dedup window is not sent again.
            let earlier = match state.seen.get(&hash) {
                Some(output) => Some(output.clone()),
                None => match self.config.tick.dedup_window {
                    DedupWindow::Tick => None,
                    DedupWindow::Last(window) => {
                        let since = crate::time::before(crate::time::now(), window.0);
                        self.store
                            .recent_output(ctx.persona.id, &hash, since)
                            .await
                            .unwrap_or_else(|err| {
                                tracing::warn!(%err, "dedup lookup failed; sending the call");
                                None
                            })
                    }
                },
            };
            if let Some(output) = earlier {
                record.result = ActionResult::Deduped;
                break 'answer format!("(Same call as before, not sent again. Earlier result:)\n{output}");
            }
            if let Some(limit) = &self.tool_limit {
                limit.until_ready().await;
            }
            if let Some(limit) = &self.tool_limit_per_persona {
                limit.until_key_ready(&ctx.persona.id).await;
            }
            let map = value.as_object().cloned().unwrap_or_default();
            let mut outcome = match &state.session {
                Some(session) => session.call(tool, map.clone()).await,
                None => Err(McpError::Connect {
                    target: "gateway".into(),
                    reason: "no session".into(),
                }),
            };
            // A 401 means the call never ran: log in again once and retry it.
            if matches!(outcome, Err(McpError::Unauthorized)) && !state.reauthenticated {
                state.reauthenticated = true;
                let email = ctx.persona.email.as_deref().unwrap_or_default();
                self.auth.invalidate(email);
                if let Some(old) = state.session.take() {
                    old.close().await;
                }
                if let Err(err) = self.connect(email, state).await {
                    let err = audit::redact_truncate(&err.to_string(), &state.redact, 500);
                    tracing::warn!(%err, "reconnecting after a 401 failed");
                }
                if let Some(session) = &state.session {
                    outcome = session.call(tool, map).await;
                }
            }
            let max_output = self.config.tick.max_output_chars;
            match outcome {
                Ok((CallOutcome::Ok { text }, latency)) => {
                    let text = audit::redact_truncate(&text, &state.redact, max_output);
                    record.result = ActionResult::Ok;
                    record.latency_ms = Some(latency.as_millis().min(i32::MAX as u128) as i32);
                    record.output = Some(text.clone());
                    state.seen.insert(hash.clone(), text.clone());
                    text
                }
                Ok((CallOutcome::Error { text }, latency)) => {
                    record.result = ActionResult::Error;
                    record.latency_ms = Some(latency.as_millis().min(i32::MAX as u128) as i32);
                    record.error_message = Some(audit::redact_truncate(&text, &state.redact, 500));
                    format!(
                        "Error from the app: {}",
                        audit::redact_truncate(&text, &state.redact, max_output)
                    )
                }
                Err(err) => {
                    record.result = ActionResult::Error;
                    let message = audit::redact_truncate(&err.to_string(), &state.redact, 500);
                    record.error_message = Some(message.clone());
                    format!("Error: the call failed ({message}).")
                }
            }
        };

        if record.result != ActionResult::Denied {
            let stats = state.modules.entry(record.module.clone()).or_default();
            stats.calls += 1;
            let failed = record.result == ActionResult::Error;
            stats.errors += u32::from(failed);
            if chaos {
                stats.chaos_calls += 1;
                stats.chaos_errors += u32::from(failed);
            }
            if let Some(ms) = record.latency_ms {
                stats.latency_total_ms += ms as u64;
                stats.latency_count += 1;
            }
        }
        if let Err(err) = self.store.record_action(&record).await {
            tracing::error!(%err, tool, "writing the audit row failed");
        }
        if let Some(user_id) = ctx.persona.user_id
            && let Err(err) = crate::profile::record(
                &self.store,
                &NewInteraction {
                    tenant_id: ctx.persona.tenant_id,
                    user_id,
                    persona_id: Some(ctx.persona.id),
                    tick_id: Some(ctx.tick_id),
                    interaction_type: InteractionType::ActionTaken,
                    page_type: Some("mcp".into()),
                    page_id: None,
                    element_id: Some(tool.to_string()),
                    element_type: Some("tool".into()),
                    metadata: json!({"action_id": tool, "module": record.module, "result": record.result, "chaos": chaos}),
                    // The gateway's latency is not the persona's decision time.
                    duration_seconds: None,
                    feedback_sentiment: None,
                    feedback_comment: None,
                },
            )
            .await
        {
            tracing::warn!(%err, "recording the profile interaction failed");
        }
        (ctx.events)(TickEvent::Tool {
            persona: ctx.label.to_string(),
            tool: tool.to_string(),
            module: record.module.clone(),
            result: record.result,
            latency_ms: record.latency_ms,
            chaos,
        });
        answer
    }
}

struct CallContext<'a> {
    persona: &'a Persona,
    tick_id: Uuid,
    label: &'a str,
    events: &'a (dyn Fn(TickEvent) + Send + Sync),
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl std::fmt::Debug for TickEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickEngine")
            .field("driver", &self.driver_name())
            .finish_non_exhaustive()
    }
}
