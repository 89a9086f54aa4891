//! `persona-runner run`: the daemon. It owns the one shutdown tree:
//! - a root cancellation token for the process, cancelled on TERM/INT, with a child token
//!   per task that must stop dispatching at once (scheduler, watchdog);
//! - one token for the HTTP servers (sidecar, sample gateway), cancelled once running
//!   ticks have drained, so they still reach the product and health stays observable;
//! - awaiting every task before returning.
//!
//! It wires the scheduler to the store and the tick engine, serves the sidecar (`api`:
//! health, metrics, admin and profile APIs, dashboard, one-off ticks), handles signals
//! (TERM/INT drain, HUP reload, USR1 tick everyone), and speaks systemd's notify
//! protocol. `serve` runs the sidecar alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{RwLock, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{self, Config, Env};
use crate::persona::{DEFAULT_TENANT, Persona};
use crate::scheduler::{self, Command, RunOutcome, Settings, Ticker};
use crate::store::{SlotClaim, Store, TickStatus, TickTrigger};
use crate::tick::{TickEngine, TickError, TickEvent, TickRequest};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another persona-runner daemon already runs on the SQLite database {0}: SQLite supports one \
         daemon; stop the other one, or use PostgreSQL (database.url = postgres://…) for replicas"
    )]
    SqliteInUse(String),
    #[error("cannot open the SQLite daemon lock {path}: {source}")]
    LockFile { path: String, source: std::io::Error },
    #[error("cannot serve {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tick(#[from] TickError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Seed(#[from] crate::auth::SeedSecretError),
}

/// Where the daemon's config comes from, to reload it on SIGHUP.
#[derive(Clone, Debug)]
pub struct ConfigOrigin {
    pub explicit: Option<PathBuf>,
    pub env: Env,
}

impl ConfigOrigin {
    fn load(&self) -> Result<Config, config::ConfigError> {
        config::load(self.explicit.as_deref(), &self.env).map(|loaded| loaded.config)
    }
}

pub fn settings(config: &Config) -> Settings {
    let runner = &config.runner;
    Settings {
        concurrency: runner.concurrency,
        jitter: runner.jitter.0,
        paused: runner.paused,
        catch_up: runner.catch_up,
        starting_deadline: runner.starting_deadline.0,
        max_attempts: runner.max_attempts,
        retry_backoff: runner.retry_backoff.0,
        reload_every: runner.reload_every.0,
        sweep_every: runner.sweep_every.0,
        recheck_after: Duration::from_millis(500),
        shutdown_grace: runner.shutdown_grace.0,
        heartbeat_every: Duration::from_secs(2),
    }
}

/// The scheduler's view of the world: the store and the tick engine.
pub struct StoreTicker {
    store: Store,
    engine: RwLock<Arc<TickEngine>>,
    max_attempts: AtomicU64,
}

impl StoreTicker {
    async fn run_claimed(
        &self,
        engine: Arc<TickEngine>,
        tick: crate::store::Tick,
        request: TickRequest,
        cut: CancellationToken,
    ) -> RunOutcome {
        match engine.run_claimed(tick, &request, &record_metrics, &cut).await {
            Ok(summary) => RunOutcome::Ran {
                ok: summary.status == TickStatus::Ok,
            },
            Err(err) => {
                tracing::error!(persona = %request.persona.name, %err, "tick could not be recorded");
                RunOutcome::Ran { ok: false }
            }
        }
    }
}

fn record_metrics(event: TickEvent) {
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

impl Ticker for StoreTicker {
    async fn personas(&self) -> Result<Vec<Persona>, String> {
        self.store.schedulable_personas().await.map_err(|e| e.to_string())
    }

    async fn set_next_due(&self, persona: Uuid, at: DateTime<Utc>) {
        if let Err(err) = self.store.set_next_due(persona, Some(at)).await {
            tracing::warn!(%persona, %err, "keeping the next slot failed");
        }
    }

    async fn run_slot(&self, persona: Persona, slot: DateTime<Utc>, cut: CancellationToken) -> RunOutcome {
        let engine = self.engine.read().await.clone();
        let request = TickRequest {
            persona,
            trigger: TickTrigger::Schedule,
            scheduled_for: Some(slot),
            attempt: 1,
        };
        let max_attempts = self.max_attempts.load(Ordering::Relaxed) as i32;
        match self.store.claim_slot(&engine.new_tick(&request), max_attempts).await {
            Ok(SlotClaim::Claimed(tick)) => self.run_claimed(engine, tick, request, cut).await,
            Ok(SlotClaim::Settled | SlotClaim::Busy) => RunOutcome::NotRun,
            Err(err) => {
                tracing::warn!(%err, "claiming a slot failed");
                RunOutcome::NotRun
            }
        }
    }

    async fn run_now(&self, persona: Persona, cut: CancellationToken) -> RunOutcome {
        let engine = self.engine.read().await.clone();
        let request = TickRequest {
            persona,
            trigger: TickTrigger::Signal,
            scheduled_for: None,
            attempt: 1,
        };
        match engine.claim(&request).await {
            Ok(tick) => self.run_claimed(engine, tick, request, cut).await,
            Err(_) => RunOutcome::NotRun,
        }
    }

    async fn sweep(&self, now: DateTime<Utc>) {
        match self.store.abandon_expired_ticks(now).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                abandoned = n,
                "ticks of a stopped runner expired and were marked abandoned"
            ),
            Err(err) => tracing::warn!(%err, "sweeping expired leases failed"),
        }
    }

    fn observe_lag(&self, lag: Duration) {
        crate::metrics::global().scheduler_lag(lag);
    }

    fn observe_load(&self, due: usize, running: usize) {
        crate::metrics::global().load(due, running);
    }
}

/// Starts one-off ticks for the API on the running engine. With a scheduler (`run`),
/// "tick everyone" goes through it as SIGUSR1 does; without one (`serve`) each runnable
/// persona is claimed here.
struct Launcher {
    ticker: Arc<StoreTicker>,
    tasks: TaskTracker,
    cut: CancellationToken,
    commands: Option<mpsc::Sender<Command>>,
}

impl Launcher {
    async fn start(&self, persona: Persona, trigger: TickTrigger) -> Result<Uuid, TickError> {
        let engine = self.ticker.engine.read().await.clone();
        let request = TickRequest {
            persona,
            trigger,
            scheduled_for: None,
            attempt: 1,
        };
        let tick = engine.claim(&request).await?;
        let tick_id = tick.id;
        let (ticker, cut) = (self.ticker.clone(), self.cut.clone());
        self.tasks.spawn(async move {
            ticker.run_claimed(engine, tick, request, cut).await;
        });
        Ok(tick_id)
    }
}

impl crate::api::TickLauncher for Launcher {
    fn launch(&self, persona: Persona) -> crate::api::BoxFuture<'_, Result<Uuid, TickError>> {
        Box::pin(self.start(persona, TickTrigger::Api))
    }

    fn launch_all(&self) -> crate::api::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            if let Some(commands) = &self.commands {
                return match commands.send(Command::TickAllNow).await {
                    Ok(()) => Ok("every runnable persona is being ticked".to_string()),
                    Err(_) => Err("the scheduler is stopping".to_string()),
                };
            }
            let personas = self
                .ticker
                .store
                .schedulable_personas()
                .await
                .map_err(|e| e.to_string())?;
            let mut started = 0;
            for persona in personas.into_iter().filter(Persona::is_runnable) {
                if self.start(persona, TickTrigger::Api).await.is_ok() {
                    started += 1;
                }
            }
            Ok(format!("{started} ticks started"))
        })
    }
}

/// systemd notifications; no-ops outside systemd (no `NOTIFY_SOCKET`).
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(%err, "sd_notify failed");
    }
}

/// Holds the SQLite single-daemon lock for as long as it lives.
struct SqliteLock(#[allow(dead_code)] std::fs::File);

fn lock_sqlite(store: &Store) -> Result<Option<SqliteLock>, DaemonError> {
    let Some(file) = store.sqlite_file() else {
        return Ok(None);
    };
    let path = PathBuf::from(format!("{}.daemon-lock", file.display()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DaemonError::LockFile {
            path: path.display().to_string(),
            source,
        })?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(SqliteLock(lock))),
        Err(_) => Err(DaemonError::SqliteInUse(file.display().to_string())),
    }
}

/// Seeds the catalogs when asked (`catalog.sync`) or when the store is empty.
async fn seed_catalogs(store: &Store, config: &Config, first_start: bool) -> Result<(), DaemonError> {
    // Counting is only needed on a first start without `catalog.sync`.
    let seed = config.catalog.sync || (first_start && store.row_counts(DEFAULT_TENANT).await?.personas == 0);
    if !seed {
        return Ok(());
    }
    let rules = crate::catalog::Rules::from(&config.catalog);
    let catalogs = crate::catalog::load(&config.catalog.files, &rules)?;
    let report = crate::catalog::seed(store, DEFAULT_TENANT, &catalogs, &config.catalog.default_time_zone).await?;
    tracing::info!(
        created = report.created,
        updated = report.updated,
        unchanged = report.unchanged,
        "catalogs seeded"
    );
    Ok(())
}

/// Waits up to `grace` for the tracked tasks (one-off ticks), then cuts the rest and waits
/// for them to record how they ended.
async fn drain(tasks: &TaskTracker, cut: &CancellationToken, grace: Duration) {
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        cut.cancel();
        tasks.wait().await;
    }
}

/// Binds `api.listen` and serves the sidecar until `stop`.
async fn start_sidecar(
    config: &Arc<Config>,
    env: &Env,
    store: &Store,
    launcher: Arc<Launcher>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let addr = config.api.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind {
            what: "the sidecar",
            addr,
            source,
        })?;
    let state = crate::api::ApiState::new(
        store.clone(),
        config.clone(),
        config.admin_token(env)?,
        config.jwt_secret(env)?,
        Some(launcher),
    );
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, "sidecar listening (/, /api/v1/admin, /api, /api/openapi.json, /health, /ready, /metrics)");
    Ok(tokio::spawn(async move {
        if let Err(err) = crate::api::serve(listener, state, stop).await {
            tracing::error!(%err, "the sidecar stopped serving");
        }
    }))
}

/// `persona-runner serve`: the sidecar alone (APIs, dashboard, one-off ticks), without
/// the scheduler, until SIGTERM/SIGINT (or `shutdown`); running one-off ticks get
/// `runner.shutdown_grace`.
pub async fn serve(origin: ConfigOrigin, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let config = Arc::new(origin.load()?);
    let env = &origin.env;
    let password = config.database_password(env)?;
    let store = Store::open(&config.database, password.as_ref()).await?;
    let engine = Arc::new(TickEngine::new(store.clone(), config.clone(), env)?);
    let ticker = Arc::new(StoreTicker {
        store: store.clone(),
        engine: RwLock::new(engine),
        max_attempts: AtomicU64::new(u64::from(config.runner.max_attempts)),
    });
    let tasks = TaskTracker::new();
    let cut = CancellationToken::new();
    let launcher = Arc::new(Launcher {
        ticker,
        tasks: tasks.clone(),
        cut: cut.clone(),
        commands: None,
    });
    // The sidecar stays up while one-off ticks drain (health, metrics), then stops.
    let http_stop = CancellationToken::new();
    let sidecar = start_sidecar(&config, env, &store, launcher, http_stop.clone()).await?;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving the sidecar"),
    ]);
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                () = shutdown.cancelled() => {}
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            },
            _ => shutdown.cancelled().await,
        }
    }
    shutdown.cancel();
    notify(&[sd_notify::NotifyState::Stopping]);
    drain(&tasks, &cut, config.runner.shutdown_grace.0).await;
    http_stop.cancel();
    let _ = sidecar.await;
    store.close().await;
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT (or `shutdown`), then drains and returns.
pub async fn run(origin: ConfigOrigin, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let config = Arc::new(origin.load()?);
    let env = &origin.env;
    let password = config.database_password(env)?;
    let store = Store::open(&config.database, password.as_ref()).await?;
    let _sqlite_lock = lock_sqlite(&store)?;
    notify(&[sd_notify::NotifyState::Status("seeding catalogs")]);
    seed_catalogs(&store, &config, true).await?;

    let tasks = TaskTracker::new();
    let cut = CancellationToken::new();
    // The HTTP servers (sample product, sidecar) outlive the drain: running ticks still
    // reach the product, and health and metrics stay observable until the end.
    let http_stop = CancellationToken::new();

    // The sample product, when this is a first run on the defaults.
    let gateway_task = if config.serves_sample_gateway() {
        let seed = crate::auth::SeedSecret::resolve(&config, env)?;
        let gateway = crate::gateway::Gateway::new(crate::gateway::GatewayOptions {
            seed: seed.secret,
            token_ttl: Duration::from_secs(900),
            page_size: 8,
            require_space_header: false,
        });
        let addr = config.sample_gateway.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind {
                what: "the sample gateway",
                addr,
                source,
            })?;
        tracing::info!(%addr, "serving the bundled sample gateway (sample_gateway.enabled)");
        let stop = http_stop.clone();
        // Not in `tasks`: those are the ticks the drain waits for, and this server must
        // outlive them.
        Some(tokio::spawn(async move {
            let _ = axum::serve(listener, gateway.router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        }))
    } else {
        None
    };

    let engine = Arc::new(TickEngine::new(store.clone(), config.clone(), env)?);
    tracing::info!(driver = engine.driver_name(), "tick engine ready");
    let ticker = Arc::new(StoreTicker {
        store: store.clone(),
        engine: RwLock::new(engine),
        max_attempts: AtomicU64::new(u64::from(config.runner.max_attempts)),
    });

    let (commands, receiver) = mpsc::channel(16);

    // The sidecar: health, readiness, metrics, the admin and profile APIs, the dashboard.
    let sidecar_task = start_sidecar(
        &config,
        env,
        &store,
        Arc::new(Launcher {
            ticker: ticker.clone(),
            tasks: tasks.clone(),
            cut: cut.clone(),
            commands: Some(commands.clone()),
        }),
        http_stop.clone(),
    )
    .await?;

    // The scheduler, with a heartbeat the watchdog checks.
    let started = Instant::now();
    let beat = Arc::new(AtomicU64::new(0));
    let scheduler_stop = shutdown.child_token();
    let scheduler_task = {
        let (ticker, beat) = (ticker.clone(), beat.clone());
        let settings = settings(&config);
        tokio::spawn(async move {
            scheduler::run(
                ticker,
                settings,
                scheduler::Clock::system(),
                receiver,
                scheduler_stop,
                move || {
                    beat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                },
            )
            .await;
        })
    };
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let (beat, stop) = (beat.clone(), shutdown.child_token());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(interval / 2);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                // Ping only while the scheduler loop is alive.
                let last = Duration::from_millis(beat.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) < interval {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        });
    }

    let personas = store.schedulable_personas().await?.len();
    let status = format!("scheduling {personas} personas");
    notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&status)]);
    tracing::info!(personas, "persona-runner daemon running");

    signals(&origin, &store, &ticker, &commands, &shutdown).await;

    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining running ticks"),
    ]);
    tracing::info!("shutting down: no new ticks; running ticks get runner.shutdown_grace");
    let stopping = Instant::now();
    let _ = scheduler_task.await;
    // One-off ticks started through the API get the same grace, then are cut.
    // They share the scheduler's deadline: one grace in all, not one after the other.
    drain(
        &tasks,
        &cut,
        config.runner.shutdown_grace.0.saturating_sub(stopping.elapsed()),
    )
    .await;
    http_stop.cancel();
    let _ = sidecar_task.await;
    if let Some(gateway) = gateway_task {
        let _ = gateway.await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Handles signals until TERM/INT (or the token) asks to stop.
async fn signals(
    origin: &ConfigOrigin,
    store: &Store,
    ticker: &StoreTicker,
    commands: &mpsc::Sender<Command>,
    shutdown: &CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with the shutdown token only");
        shutdown.cancelled().await;
        return;
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = term.recv() => { tracing::info!("SIGTERM"); break }
            _ = int.recv() => { tracing::info!("SIGINT"); break }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: ticking every runnable persona now");
                let _ = commands.send(Command::TickAllNow).await;
            }
            _ = hup.recv() => reload(origin, store, ticker, commands).await,
        }
    }
    shutdown.cancel();
}

/// SIGHUP: reload and validate the config; keep the old one if the new one is invalid.
async fn reload(origin: &ConfigOrigin, store: &Store, ticker: &StoreTicker, commands: &mpsc::Sender<Command>) {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
    match origin.load() {
        Err(err) => tracing::error!(%err, "SIGHUP: the new config is invalid; keeping the running one"),
        Ok(config) => {
            let config = Arc::new(config);
            match TickEngine::new(store.clone(), config.clone(), &origin.env) {
                Err(err) => tracing::error!(%err, "SIGHUP: the new config cannot drive ticks; keeping the running one"),
                Ok(engine) => {
                    *ticker.engine.write().await = Arc::new(engine);
                    ticker
                        .max_attempts
                        .store(u64::from(config.runner.max_attempts), Ordering::Relaxed);
                    let _ = commands.send(Command::Reload(Box::new(settings(&config)))).await;
                    if let Err(err) = seed_catalogs(store, &config, false).await {
                        tracing::error!(%err, "SIGHUP: catalog sync failed; personas unchanged");
                    }
                    tracing::info!("SIGHUP: config reloaded (database.url and api.listen take effect on restart)");
                }
            }
        }
    }
    notify(&[sd_notify::NotifyState::Ready]);
}
