//! Goals checked: `check` runs each selected goal of each selected persona K times as
//! fresh ticks (trigger `check`), turns every trial into a verdict (the deterministic
//! checks of [`evaluate`], the criteria of the [`judge`]) and stores it, and sums the
//! trials up per goal (pass@1, pass^k, flaky). [`junit`] writes the result for CI.
//! The CLI, the admin API and the daemon's `[checks] cadence` all run checks through
//! [`Checker`].

pub mod evaluate;
pub mod judge;
pub mod junit;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{Config, ConfigError, Env, LlmProvider};
use crate::llm::LlmClient;
use crate::model::goal::{CheckRun, Goal, GoalSummary, RunStatus, Verdict, outcome, summarize};
use crate::model::persona::Persona;
use crate::model::tick::Trigger;
use crate::store::{Store, StoreError};
use crate::tick::{TickError, TickEvent, TickRequest, TickRunner};
use judge::Judge;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Expected (a usage error): a persona asked for that the store does not have.
    #[error("no persona with id or email `{0}` (see `persona-runner personas list`)")]
    UnknownPersona(String),
    /// Expected (a usage error): a goal no selected persona has.
    #[error("no selected persona has a goal named `{goal}` (goals: {known})")]
    UnknownGoal { goal: String, known: String },
    /// Expected (a usage error).
    #[error("trials must be at least 1")]
    NoTrials,
    /// Expected (a usage error).
    #[error("min_pass ({min_pass}) cannot be more than trials ({trials})")]
    MinPass { min_pass: u32, trials: u32 },
    /// Expected: nothing to check.
    #[error("no runnable persona has goals: add `goals` to a persona or archetype in the catalog and seed it")]
    NoGoals,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tick(#[from] TickError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl CheckError {
    /// Whether the request itself was wrong (exit 2, HTTP 422), not the run.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::UnknownPersona(_) | Self::UnknownGoal { .. } | Self::NoTrials | Self::MinPass { .. }
        )
    }
}

/// Which goals to run, how often, and how many trials must pass.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Selection {
    /// Goal names ([] = every goal of the selected personas).
    pub goals: Vec<String>,
    /// Personas by email or id ([] = every runnable persona with goals).
    pub personas: Vec<String>,
    /// Trials per goal and persona (≥ 1).
    pub trials: u32,
    /// Trials that must pass for a goal to hold (0 = all of them).
    pub min_pass: u32,
}

impl Selection {
    /// `[checks]` as a selection.
    pub fn from_config(config: &Config) -> Self {
        Self {
            goals: config.checks.goals.clone(),
            personas: config.checks.personas.clone(),
            trials: config.checks.trials,
            min_pass: config.checks.min_pass,
        }
    }

    /// The trials that must pass: `min_pass`, or all of them.
    pub fn needed(&self) -> u32 {
        if self.min_pass == 0 { self.trials } else { self.min_pass }
    }

    fn validate(&self) -> Result<(), CheckError> {
        if self.trials < 1 {
            return Err(CheckError::NoTrials);
        }
        if self.min_pass > self.trials {
            return Err(CheckError::MinPass {
                min_pass: self.min_pass,
                trials: self.trials,
            });
        }
        Ok(())
    }
}

/// What a check run came to: the run, each goal's summary with its persona's name, and
/// every verdict. What `check` prints and `GET /api/v1/admin/checks/{id}` serves.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub run: CheckRun,
    pub goals: Vec<NamedSummary>,
    pub verdicts: Vec<Verdict>,
}

/// A goal's summary and its persona as reports name it (the email).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NamedSummary {
    pub persona: String,
    #[serde(flatten)]
    pub summary: GoalSummary,
}

/// The report of run `id` as the store has it now; `None`: no such run.
pub async fn report(store: &Store, tenant: Uuid, id: Uuid) -> Result<Option<Report>, StoreError> {
    let Some(run) = store.check_run(tenant, id).await? else {
        return Ok(None);
    };
    let verdicts = store.run_verdicts(id).await?;
    let mut goals = Vec::new();
    for summary in summarize(&verdicts, run.min_pass.max(0) as u32) {
        let persona = match store.persona_by_id(summary.persona_id).await? {
            Some(persona) => persona.label(),
            None => summary.persona_id.to_string(),
        };
        goals.push(NamedSummary { persona, summary });
    }
    Ok(Some(Report { run, goals, verdicts }))
}

/// One persona's goals to run.
#[derive(Clone, Debug)]
pub struct Planned {
    pub persona: Persona,
    pub goals: Vec<Goal>,
}

/// Runs goals as check ticks and keeps their verdicts.
pub struct Checker {
    engine: Arc<TickRunner>,
    store: Store,
    config: Arc<Config>,
    judge: Option<Judge>,
}

impl Checker {
    /// A checker over `engine`, with the `[judge]` of `config` (none when it is off).
    pub fn new(engine: Arc<TickRunner>, store: Store, config: Arc<Config>, env: &Env) -> Result<Self, CheckError> {
        let key = config.judge_api_key(env)?;
        let judge = match (config.judge.provider, key) {
            (LlmProvider::Offline, _) | (LlmProvider::Auto, None) => None,
            (_, Some(key)) => {
                let client = LlmClient::new(&config.judge, &config.retry, &key);
                Some(Judge::new(
                    client,
                    config.judge.temperature,
                    &crate::tick::process_secrets(&config, env),
                ))
            }
            (LlmProvider::Openai, None) => {
                return Err(CheckError::Config(ConfigError::Secret {
                    key: "judge.api_key".into(),
                    message: format!(
                        "judge.provider = \"openai\" needs an API key: set {} or judge.api_key_file",
                        config.judge.api_key_env
                    ),
                }));
            }
        };
        Ok(Self {
            engine,
            store,
            config,
            judge,
        })
    }

    /// The judge's version, `None` without a judge.
    pub fn judge_version(&self) -> Option<&str> {
        self.judge.as_ref().map(Judge::version)
    }

    /// The personas and goals `selection` names; a usage error for a name nobody has.
    pub async fn plan(&self, tenant: Uuid, selection: &Selection) -> Result<Vec<Planned>, CheckError> {
        selection.validate()?;
        let personas = if selection.personas.is_empty() {
            self.store
                .list_personas(tenant)
                .await?
                .into_iter()
                .filter(|p| p.is_runnable() && self.config.runs_target(p.target.as_deref()) && !p.goals.is_empty())
                .collect()
        } else {
            let mut found = Vec::new();
            for wanted in &selection.personas {
                match self.store.find_persona(tenant, wanted).await? {
                    Some(persona) => found.push(persona),
                    None => return Err(CheckError::UnknownPersona(wanted.clone())),
                }
            }
            found
        };
        for goal in &selection.goals {
            if !personas.iter().any(|p| p.goals.iter().any(|g| &g.name == goal)) {
                let mut known: Vec<&str> = personas
                    .iter()
                    .flat_map(|p| p.goals.iter().map(|g| g.name.as_str()))
                    .collect();
                known.sort_unstable();
                known.dedup();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                return Err(CheckError::UnknownGoal {
                    goal: goal.clone(),
                    known,
                });
            }
        }
        let planned: Vec<Planned> = personas
            .into_iter()
            .map(|persona| {
                let goals = persona
                    .goals
                    .iter()
                    .filter(|g| selection.goals.is_empty() || selection.goals.contains(&g.name))
                    .cloned()
                    .collect();
                Planned { persona, goals }
            })
            .filter(|p| !p.goals.is_empty())
            .collect();
        if planned.is_empty() {
            return Err(CheckError::NoGoals);
        }
        Ok(planned)
    }

    /// Records a new check run, `running`.
    pub async fn open_run(
        &self,
        tenant: Uuid,
        trigger: Trigger,
        selection: &Selection,
    ) -> Result<CheckRun, CheckError> {
        let run = CheckRun {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            trigger,
            status: RunStatus::Running,
            trials: selection.trials as i32,
            min_pass: selection.needed() as i32,
            goals: selection.goals.clone(),
            personas: selection.personas.clone(),
            error: None,
            created_at: crate::time::now(),
            finished_at: None,
        };
        self.store.insert_check_run(&run).await?;
        Ok(run)
    }

    /// Runs every planned goal `run.trials` times: one task per persona (its trials one
    /// after another, as a persona has one tick at a time), `runner.concurrency` personas
    /// at once. The run is finished `done`, or `failed` with the first error.
    pub async fn run(
        self: &Arc<Self>,
        run: &CheckRun,
        planned: Vec<Planned>,
        events: Arc<dyn Fn(TickEvent) + Send + Sync>,
        cut: CancellationToken,
    ) -> Result<Vec<Verdict>, CheckError> {
        let concurrency = self.config.scheduler.concurrency.max(1);
        let mut tasks = tokio::task::JoinSet::new();
        let mut verdicts = Vec::new();
        let mut first_error: Option<String> = None;
        let mut record = |joined: Result<Result<Vec<Verdict>, CheckError>, tokio::task::JoinError>,
                          verdicts: &mut Vec<Verdict>| match joined {
            Ok(Ok(found)) => verdicts.extend(found),
            Ok(Err(err)) => {
                first_error.get_or_insert(err.to_string());
            }
            Err(err) => {
                first_error.get_or_insert(format!("a check task panicked: {err}"));
            }
        };
        for planned in planned {
            if tasks.len() >= concurrency
                && let Some(joined) = tasks.join_next().await
            {
                record(joined, &mut verdicts);
            }
            let (checker, run, events, cut) = (self.clone(), run.clone(), events.clone(), cut.clone());
            tasks.spawn(async move { checker.persona_trials(&run, planned, &*events, &cut).await });
        }
        while let Some(joined) = tasks.join_next().await {
            record(joined, &mut verdicts);
        }
        let status = if first_error.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Done
        };
        self.store
            .finish_check_run(run.id, status, first_error.as_deref())
            .await?;
        Ok(verdicts)
    }

    async fn persona_trials(
        &self,
        run: &CheckRun,
        planned: Planned,
        events: &(dyn Fn(TickEvent) + Send + Sync),
        cut: &CancellationToken,
    ) -> Result<Vec<Verdict>, CheckError> {
        let mut verdicts = Vec::new();
        for goal in &planned.goals {
            for trial in 1..=run.trials.max(1) {
                if cut.is_cancelled() {
                    return Err(CheckError::Tick(TickError::ShuttingDown));
                }
                verdicts.push(self.trial(run, &planned.persona, goal, trial, events, cut).await?);
            }
        }
        Ok(verdicts)
    }

    /// One trial: a fresh check tick with the goal's task, then its verdict, stored.
    async fn trial(
        &self,
        run: &CheckRun,
        persona: &Persona,
        goal: &Goal,
        trial: i32,
        events: &(dyn Fn(TickEvent) + Send + Sync),
        cut: &CancellationToken,
    ) -> Result<Verdict, CheckError> {
        let request = TickRequest {
            persona: persona.clone(),
            trigger: Trigger::Check,
            scheduled_for: None,
            attempt: 1,
            goal: Some(goal.clone()),
            space: Default::default(),
        };
        let tick = self.claim_when_free(&request, cut).await?;
        let summary = self.engine.run_claimed(tick, &request, events, cut).await?;
        let calls = self.store.tick_calls(summary.tick_id).await?;
        let transcript = self.store.tick_transcript(summary.tick_id).await?;
        let facts = evaluate::TickFacts {
            status: summary.status,
            error: summary.error.as_deref(),
            calls: &calls,
            tokens: summary.tokens_in.saturating_add(summary.tokens_out),
            seconds: summary.duration_ms as f64 / 1000.0,
            state: &summary.state,
        };
        let checks = evaluate::evaluate(goal, &facts);
        let criteria = match &self.judge {
            Some(judge) => {
                use crate::telemetry::{Kind, Span, semconv};
                let span = Span::child_of(
                    &summary.trace,
                    semconv::JUDGE,
                    Kind::Internal,
                    vec![opentelemetry::KeyValue::new("persona_runner.goal", goal.name.clone())],
                );
                span.run(judge.judge(goal, transcript.as_ref(), &calls)).await
            }
            None => judge::not_judged(goal),
        };
        let verdict = Verdict {
            id: Uuid::now_v7(),
            tenant_id: persona.tenant_id,
            run_id: run.id,
            goal: goal.name.clone(),
            persona_id: persona.id,
            tick_id: summary.tick_id,
            trial,
            outcome: outcome(&checks, &criteria),
            checks,
            criteria,
            simulator: summary.simulator.clone(),
            judge: self.judge_version().map(str::to_string),
            seconds: summary.duration_ms as f64 / 1000.0,
            created_at: crate::time::now(),
        };
        self.store.record_verdict(&verdict).await?;
        tracing::info!(persona = %persona.label(), goal = %goal.name, trial, outcome = %verdict.outcome,
            tick = %verdict.tick_id, "check trial judged");
        Ok(verdict)
    }

    /// Claims the trial's tick; while the persona has a tick running (the scheduler's, or
    /// an API one), waits for it to end, up to one tick timeout.
    async fn claim_when_free(
        &self,
        request: &TickRequest,
        cut: &CancellationToken,
    ) -> Result<crate::model::tick::Tick, CheckError> {
        let patience = self.config.tick.tick_timeout.0.max(Duration::from_secs(1));
        let started = std::time::Instant::now();
        loop {
            match self.engine.claim(request).await {
                Err(TickError::AlreadyRunning(_)) if started.elapsed() < patience => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = cut.cancelled() => return Err(CheckError::Tick(TickError::ShuttingDown)),
                    }
                }
                other => return Ok(other?),
            }
        }
    }
}
