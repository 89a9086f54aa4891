//! The daemon's side of the scheduler and of the API's one-off ticks: [`SchedulerPort`] is
//! the scheduler's [`Port`] (the store's schedule rows and atomic slot claims, the tick
//! engine), and [`ApiPort`] starts one-off ticks and check runs for the API (and the `[checks]`
//! cadence) in the same tick pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{RwLock, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::{BoxFuture, TickPort};
use crate::check::{CheckError, Checker, Selection};
use crate::config::Config;
use crate::model::persona::Persona;
use crate::model::tick::{Tick, TickStatus, Trigger};
use crate::scheduler::{Command, Port, RunOutcome};
use crate::store::{ScheduleRow, SlotClaim, Store, StoreError};
use crate::tick::{TickError, TickEvent, TickPool, TickRequest, TickRunner};

/// The scheduler's view of the world: the store and the tick runner (replaced on SIGHUP).
pub struct SchedulerPort {
    pub(super) store: Store,
    pub(super) engine: RwLock<Arc<TickRunner>>,
    pub(super) config: std::sync::RwLock<Arc<Config>>,
    pub(super) max_attempts: AtomicU64,
    pub(super) started_at: DateTime<Utc>,
}

impl SchedulerPort {
    pub fn new(store: Store, engine: Arc<TickRunner>, config: Arc<Config>) -> Self {
        Self {
            store,
            max_attempts: AtomicU64::new(u64::from(config.scheduler.max_attempts)),
            engine: RwLock::new(engine),
            config: std::sync::RwLock::new(config),
            started_at: crate::time::now(),
        }
    }

    pub async fn engine(&self) -> Arc<TickRunner> {
        self.engine.read().await.clone()
    }

    /// The config in force (replaced on SIGHUP).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Runs a claimed tick to its end (the engine records every way it can end).
    pub async fn run_claimed(
        &self,
        engine: Arc<TickRunner>,
        tick: Tick,
        request: TickRequest,
        cut: CancellationToken,
    ) -> RunOutcome {
        match engine.run_claimed(tick, &request, &record_metrics, &cut).await {
            Ok(summary) => RunOutcome::Ran {
                // An idle tick is the simulator's failing, not the product's: no retry.
                ok: matches!(summary.status, TickStatus::Ok | TickStatus::Skipped | TickStatus::Idle),
            },
            // Another runner declared it abandoned: it may run the persona now.
            Err(TickError::LeaseLost(reason)) => {
                tracing::warn!(persona = %request.persona.label(), %reason, "a tick lost its lease");
                RunOutcome::Busy
            }
            Err(err) => {
                tracing::error!(persona = %request.persona.label(), %err, "tick could not be recorded");
                RunOutcome::Ran { ok: false }
            }
        }
    }
}

/// Counts what a tick reports in the process's metrics.
pub fn record_metrics(event: TickEvent) {
    let metrics = crate::metrics::global();
    match event {
        TickEvent::Tool {
            module,
            result,
            latency_ms,
            ..
        } => metrics.tool_call(
            result.as_str(),
            &module,
            latency_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
        ),
        TickEvent::Finished { summary } => metrics.tick_finished(
            summary.status.as_str(),
            summary.trigger.as_str(),
            Duration::from_millis(summary.duration_ms as u64),
            summary.tokens_in,
            summary.tokens_out,
        ),
        TickEvent::Started { .. } | TickEvent::Turn { .. } => {}
    }
}

impl Port for SchedulerPort {
    async fn load(&self, after: Option<(DateTime<Utc>, Uuid)>, limit: usize) -> Result<Vec<ScheduleRow>, StoreError> {
        self.store.schedule_rows(after, limit as i64).await
    }

    async fn ids(&self) -> Result<Vec<Uuid>, StoreError> {
        self.store.runnable_ids().await
    }

    fn runs_target(&self, target: Option<&str>) -> bool {
        let config = self.config.read().expect("config lock").clone();
        config.runs_target(target)
    }

    async fn save_plans(&self, plans: Vec<(Uuid, DateTime<Utc>)>) {
        let plans: Vec<(Uuid, Option<DateTime<Utc>>)> = plans.into_iter().map(|(id, at)| (id, Some(at))).collect();
        if let Err(err) = self.store.set_next_due_many(&plans).await {
            tracing::warn!(%err, personas = plans.len(), "keeping the next slots failed");
        }
    }

    async fn run_slot(&self, persona: Uuid, slot: DateTime<Utc>, cut: CancellationToken) -> RunOutcome {
        let persona = match self.store.persona_by_id(persona).await {
            Ok(Some(persona)) => persona,
            // Deleted meanwhile: nothing to run (the next load drops it).
            Ok(None) => return RunOutcome::Settled,
            Err(err) => {
                tracing::warn!(%err, "loading a due persona failed");
                return RunOutcome::Busy;
            }
        };
        let engine = self.engine().await;
        let request = TickRequest {
            persona,
            trigger: Trigger::Schedule,
            scheduled_for: Some(slot),
            attempt: 1,
            goal: None,
            space: Default::default(),
        };
        let max_attempts = self.max_attempts.load(Ordering::Relaxed) as i32;
        let new = match engine.new_tick(&request).await {
            Ok(new) => new,
            Err(err) => {
                tracing::warn!(%err, "choosing the space of a due persona failed");
                return RunOutcome::Busy;
            }
        };
        match self.store.claim_slot(&new, max_attempts).await {
            Ok(SlotClaim::Claimed(tick)) => self.run_claimed(engine, tick, request, cut).await,
            Ok(SlotClaim::Settled) => RunOutcome::Settled,
            Ok(SlotClaim::Busy) => RunOutcome::Busy,
            Err(err) => {
                if err.outage().is_none() {
                    tracing::warn!(%err, "claiming a slot failed");
                }
                RunOutcome::Busy
            }
        }
    }

    async fn run_now(&self, persona: Uuid, trigger: Trigger, cut: CancellationToken) -> RunOutcome {
        let Ok(Some(persona)) = self.store.persona_by_id(persona).await else {
            return RunOutcome::Settled;
        };
        let engine = self.engine().await;
        let request = TickRequest {
            persona,
            trigger,
            scheduled_for: None,
            attempt: 1,
            goal: None,
            space: Default::default(),
        };
        match engine.claim(&request).await {
            Ok(tick) => self.run_claimed(engine, tick, request, cut).await,
            Err(TickError::AlreadyRunning(_)) => RunOutcome::Busy,
            Err(_) => RunOutcome::Settled,
        }
    }

    async fn sweep(&self, now: DateTime<Utc>) {
        match self.store.abandon_expired_ticks(now).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                abandoned = n,
                "ticks of a stopped runner expired and were marked abandoned"
            ),
            Err(err) => {
                if err.outage().is_none() {
                    tracing::warn!(%err, "sweeping expired leases failed");
                }
            }
        }
        self.engine().await.prune();
    }

    fn writable(&self) -> bool {
        self.store.health().is_writable()
    }

    async fn probe(&self) -> bool {
        let runner = self.engine().await.runner_id().to_string();
        self.store.probe_write(&runner, self.started_at).await.is_ok()
    }

    fn observe_lag(&self, lag: Duration) {
        crate::metrics::global().scheduler_lag(lag);
    }

    fn observe_load(&self, due: usize, running: usize) {
        crate::metrics::global().load(due, running);
    }
}

/// Starts one-off ticks for the API in the process's tick pool. With a scheduler (`run`),
/// "tick everyone" goes through it as SIGUSR1 does; without one (`serve`) each runnable
/// persona is claimed here, one pool place at a time.
pub struct ApiPort {
    pub(super) host: Arc<SchedulerPort>,
    pub(super) pool: Arc<TickPool>,
    pub(super) commands: Option<mpsc::Sender<Command>>,
    /// For the judge's API key, read when a check starts.
    pub(super) env: crate::config::Env,
}

impl ApiPort {
    /// Claims now (so the caller gets the tick id or a conflict at once), then runs the
    /// tick when the pool has room, its lease kept alive meanwhile.
    async fn start_one(&self, persona: Persona, trigger: Trigger) -> Result<Uuid, TickError> {
        let engine = self.host.engine().await;
        let request = TickRequest {
            persona,
            trigger,
            scheduled_for: None,
            attempt: 1,
            goal: None,
            space: Default::default(),
        };
        let tick = engine.claim(&request).await?;
        let tick_id = tick.id;
        let (host, pool) = (self.host.clone(), self.pool.clone());
        self.pool.spawn(async move {
            let lease = engine.hold_lease(tick.id);
            let _permit = pool.permit().await;
            drop(lease);
            host.run_claimed(engine, tick, request, pool.cut()).await;
        });
        Ok(tick_id)
    }
}

impl ApiPort {
    /// Plans a check run (a usage error comes back at once), records it, and runs its
    /// trials in the pool, so a shutdown drains them like any tick.
    async fn check(&self, tenant: Uuid, trigger: Trigger, selection: Selection) -> Result<Uuid, CheckError> {
        let engine = self.host.engine().await;
        let config = self.host.config();
        let checker = Arc::new(Checker::new(engine, self.host.store.clone(), config, &self.env)?);
        let planned = checker.plan(tenant, &selection).await?;
        let run = checker.open_run(tenant, trigger, &selection).await?;
        let id = run.id;
        let cut = self.pool.cut();
        self.pool.spawn(async move {
            match checker.run(&run, planned, Arc::new(|_| {}), cut).await {
                Ok(verdicts) => tracing::info!(run = %run.id, trials = verdicts.len(), "check run finished"),
                Err(err) => tracing::warn!(run = %run.id, %err, "check run could not be finished"),
            }
        });
        Ok(id)
    }
}

impl TickPort for ApiPort {
    fn start_check(
        &self,
        tenant: Uuid,
        trigger: Trigger,
        selection: Selection,
    ) -> BoxFuture<'_, Result<Uuid, CheckError>> {
        Box::pin(self.check(tenant, trigger, selection))
    }

    fn start(&self, persona: Persona) -> BoxFuture<'_, Result<Uuid, TickError>> {
        Box::pin(self.start_one(persona, Trigger::Api))
    }

    fn start_all(&self) -> BoxFuture<'_, Result<String, TickError>> {
        Box::pin(async move {
            if let Some(commands) = &self.commands {
                return match commands.send(Command::TickAllNow(Trigger::Api)).await {
                    Ok(()) => Ok("every runnable persona is being ticked".to_string()),
                    Err(_) => Err(TickError::ShuttingDown),
                };
            }
            let ids = self.host.store.runnable_ids().await?;
            let count = ids.len();
            let (host, pool) = (self.host.clone(), self.pool.clone());
            // One persona at a time, as the pool frees places: memory stays flat.
            self.pool.spawn(async move {
                for id in ids {
                    let permit = pool.permit().await;
                    let Ok(Some(persona)) = host.store.persona_by_id(id).await else {
                        continue;
                    };
                    if !persona.is_runnable() || !host.runs_target(persona.target.as_deref()) {
                        continue;
                    }
                    let engine = host.engine().await;
                    let request = TickRequest {
                        persona,
                        trigger: Trigger::Api,
                        scheduled_for: None,
                        attempt: 1,
                        goal: None,
                        space: Default::default(),
                    };
                    let Ok(tick) = engine.claim(&request).await else {
                        continue;
                    };
                    let (host, cut) = (host.clone(), pool.cut());
                    pool.spawn(async move {
                        let _permit = permit;
                        host.run_claimed(engine, tick, request, cut).await;
                    });
                }
            });
            Ok(format!("{count} personas are being ticked"))
        })
    }
}

/// Ticks left `running` by a process of this host that is gone (kill -9, a crash, a
/// restarted container whose daemon got the same pid) are stuck for sure: abandoned at
/// startup, before this daemon claims anything, rather than when their lease runs out.
pub(super) async fn sweep_gone_runners(store: &Store, runner_id: &str) {
    let Some((host, own_pid)) = runner_id.rsplit_once(':') else {
        return;
    };
    let prefix = format!("{host}:");
    let runners = match store.runners_with_running_ticks(&prefix).await {
        Ok(runners) => runners,
        Err(err) => {
            tracing::warn!(%err, "looking for ticks of stopped runners failed; their leases will expire");
            return;
        }
    };
    for runner in runners {
        let Some(pid) = runner.strip_prefix(&prefix).and_then(|pid| pid.parse::<i32>().ok()) else {
            continue;
        };
        // Nothing of this process runs yet, so its own id on a running tick is a predecessor's.
        if pid.to_string() != own_pid && process_alive(pid) {
            continue;
        }
        match store.abandon_ticks_of(&runner, chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                abandoned = n,
                runner = %runner,
                "ticks of a runner process that is gone were marked abandoned at startup"
            ),
            Err(err) => tracing::warn!(%err, runner = %runner, "abandoning the ticks of a gone runner failed"),
        }
    }
}

fn process_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}
