//! `persona-runner run`: the daemon. It owns the one shutdown tree:
//! - a root cancellation token for the process;
//! - a child token per task (scheduler, sidecar, sample gateway, watchdog);
//! - awaiting every task before returning.
//!
//! It wires the scheduler to the store and the tick engine, serves the sidecar (health,
//! readiness, metrics, one-off ticks), handles signals (TERM/INT drain, HUP reload, USR1
//! tick everyone), and speaks systemd's notify protocol.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{RwLock, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::auth::constant_time_eq;
use crate::config::{self, Config, Env, Secret};
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

/// Shared state of the sidecar's handlers.
#[derive(Clone)]
struct Sidecar {
    store: Store,
    ticker: Arc<StoreTicker>,
    admin_token: Option<Secret>,
    tasks: TaskTracker,
    cut: CancellationToken,
    commands: mpsc::Sender<Command>,
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(sidecar): State<Sidecar>) -> Response {
    match sidecar.store.migration_status().await {
        Ok((applied, known)) if applied == known => Json(json!({"ready": true, "migrations": applied})).into_response(),
        Ok((applied, known)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": format!("{applied} of {known} migrations applied: run `persona-runner migrate`")})),
        )
            .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": format!("the store is not reachable: {err}")})),
        )
            .into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::global().render(),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Admin routes need `Authorization: Bearer <admin token>`; without a configured token
/// they are closed (503), never open. `Some` is the refusal to send.
fn refuse_non_admin(sidecar: &Sidecar, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = &sidecar.admin_token else {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "admin routes are disabled: no admin token configured (set PERSONA_RUNNER_ADMIN_TOKEN or api.admin_token_file)",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => None,
        _ => Some(error(StatusCode::UNAUTHORIZED, "missing or wrong admin token")),
    }
}

/// `POST /api/v1/admin/personas/{id or email}/tick`: 202 with the tick id; 409 when the
/// persona has a running tick.
async fn trigger_tick(State(sidecar): State<Sidecar>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_non_admin(&sidecar, &headers) {
        return refusal;
    }
    let persona = match sidecar.store.find_persona(DEFAULT_TENANT, &id).await {
        Ok(Some(persona)) => persona,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no persona `{id}`")),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    let engine = sidecar.ticker.engine.read().await.clone();
    let request = TickRequest {
        persona,
        trigger: TickTrigger::Api,
        scheduled_for: None,
        attempt: 1,
    };
    let tick = match engine.claim(&request).await {
        Ok(tick) => tick,
        Err(TickError::AlreadyRunning(who)) => {
            return error(StatusCode::CONFLICT, format!("{who} already has a running tick"));
        }
        Err(TickError::NotRunnable(who)) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, format!("{who} has no login identity"));
        }
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    let tick_id = tick.id;
    let (ticker, cut) = (sidecar.ticker.clone(), sidecar.cut.clone());
    sidecar.tasks.spawn(async move {
        ticker.run_claimed(engine, tick, request, cut).await;
    });
    (
        StatusCode::ACCEPTED,
        Json(json!({"tick_id": tick_id, "status": "running"})),
    )
        .into_response()
}

/// `POST /api/v1/admin/ticks`: tick every runnable persona now (as SIGUSR1 does).
async fn trigger_all(State(sidecar): State<Sidecar>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refuse_non_admin(&sidecar, &headers) {
        return refusal;
    }
    match sidecar.commands.send(Command::TickAllNow).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"status": "every runnable persona is being ticked"})),
        )
            .into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the scheduler is stopping"),
    }
}

fn sidecar_router(sidecar: Sidecar) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/admin/personas/{id}/tick", post(trigger_tick))
        .route("/api/v1/admin/ticks", post(trigger_all))
        .with_state(sidecar)
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
    let empty = store.row_counts(DEFAULT_TENANT).await?.personas == 0;
    if !(config.catalog.sync || (first_start && empty)) {
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

    // The sample product, when this is a first run on the defaults.
    if config.serves_sample_gateway() {
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
        let stop = shutdown.child_token();
        tasks.spawn(async move {
            let _ = axum::serve(listener, gateway.router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }

    let engine = Arc::new(TickEngine::new(store.clone(), config.clone(), env)?);
    tracing::info!(driver = engine.driver_name(), "tick engine ready");
    let ticker = Arc::new(StoreTicker {
        store: store.clone(),
        engine: RwLock::new(engine),
        max_attempts: AtomicU64::new(u64::from(config.runner.max_attempts)),
    });

    let (commands, receiver) = mpsc::channel(16);

    // The sidecar: health, readiness, metrics, one-off ticks.
    let addr = config.api.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind {
            what: "the sidecar",
            addr,
            source,
        })?;
    let sidecar = Sidecar {
        store: store.clone(),
        ticker: ticker.clone(),
        admin_token: config.admin_token(env)?,
        tasks: tasks.clone(),
        cut: cut.clone(),
        commands: commands.clone(),
    };
    let sidecar_stop = shutdown.child_token();
    let sidecar_task = tokio::spawn(async move {
        let _ = axum::serve(listener, sidecar_router(sidecar))
            .with_graceful_shutdown(sidecar_stop.cancelled_owned())
            .await;
    });
    tracing::info!(%addr, "sidecar listening (/health, /ready, /metrics)");

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
    let _ = scheduler_task.await;
    // One-off ticks started through the API get the same grace, then are cut.
    tasks.close();
    if tokio::time::timeout(config.runner.shutdown_grace.0, tasks.wait())
        .await
        .is_err()
    {
        cut.cancel();
        tasks.wait().await;
    }
    let _ = sidecar_task.await;
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
