//! `persona-runner run`: the daemon. It owns the one shutdown tree:
//! - a root cancellation token for the process, cancelled on TERM/INT, with a child token
//!   per task that must stop dispatching at once (scheduler, watchdog);
//! - one token for the HTTP servers (sidecar, sample gateway), cancelled once running
//!   ticks have drained, so they still reach the product and health stays observable;
//! - awaiting every task before returning.
//!
//! It wires the scheduler to the store and the tick runner, serves the sidecar (`api`:
//! health, metrics, admin and profile APIs, dashboard, one-off ticks), handles signals
//! (TERM/INT drain, HUP reload, USR1 tick everyone), and speaks systemd's notify
//! protocol. `serve` runs the sidecar alone.

mod ports;
mod process;
mod rounds;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use ports::{ApiPort, SchedulerPort, record_metrics};

use crate::config::{self, Config, Env};
use crate::model::persona::DEFAULT_TENANT;
use crate::model::tick::Trigger;
use crate::scheduler::{self, Command, SchedulerSettings};
use crate::store::Store;
use crate::tick::{TickError, TickPool, TickRunner};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "another persona-runner daemon already runs on the SQLite database {0}: SQLite supports one \
         daemon; stop the other one, or use PostgreSQL (database.url = postgres://…) for replicas"
    )]
    SqliteInUse(String),
    // The io::Error is the message's last words, not a `#[source]`: a chain would repeat it.
    #[error("cannot open the SQLite daemon lock {path}: {reason}")]
    LockFile { path: String, reason: std::io::Error },
    #[error("cannot serve {what} on {addr}: {reason}{}", process::bind_hint(reason, key))]
    Bind {
        what: &'static str,
        key: &'static str,
        addr: std::net::SocketAddr,
        reason: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tick(#[from] TickError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
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

pub fn settings(config: &Config) -> SchedulerSettings {
    let section = &config.scheduler;
    SchedulerSettings {
        jitter: section.jitter.0,
        paused: section.paused,
        catch_up: section.catch_up,
        starting_deadline: section.starting_deadline.0,
        max_attempts: section.max_attempts,
        retry_backoff: section.retry_backoff.0,
        reload_every: section.reload_every.0,
        sweep_every: section.sweep_every.0,
        busy_recheck: config.tick.lease.0.saturating_add(section.sweep_every.0),
        shutdown_grace: section.shutdown_grace.0,
        heartbeat_every: Duration::from_secs(2),
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
    let report = crate::catalog::seed_files(
        store,
        DEFAULT_TENANT,
        &config.catalog.files,
        &rules,
        &config.catalog.default_time_zone,
    )
    .await?;
    tracing::info!(
        created = report.created,
        updated = report.updated,
        unchanged = report.unchanged,
        "catalogs seeded"
    );
    Ok(())
}

/// The sidecar's settings from a config (SIGHUP builds them again).
fn sidecar_settings(config: &Arc<Config>, env: &Env) -> Result<crate::api::ApiSettings, DaemonError> {
    Ok(
        crate::api::ApiSettings::new(config.clone(), config.admin_token(env)?, config.jwt_secret(env)?)
            .with_provisioning(env),
    )
}

/// Binds `api.listen` and serves the sidecar until `stop`.
async fn start_sidecar(
    config: &Config,
    state: crate::api::ApiState,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    let addr = config.api.listen;
    let listener = process::listen(addr).map_err(|reason| DaemonError::Bind {
        what: "the sidecar",
        key: "api.listen",
        addr,
        reason,
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, "sidecar listening (/, /api/v1/admin, /api, /api/openapi.json, /health, /ready, /metrics)");
    let limits = crate::api::server::Limits {
        max_connections: process::sidecar_connections(config.api.max_connections),
        header_timeout: config.api.header_timeout.0,
        drain: Duration::from_secs(10),
    };
    Ok(tokio::spawn(async move {
        if let Err(err) = crate::api::serve(listener, state, stop, limits).await {
            tracing::error!(%err, "the sidecar stopped serving");
        }
    }))
}

/// The daemon's `[checks] cadence`: at each cron slot (UTC) it starts a check run of
/// `[checks]`'s goals and personas, so the dashboard's grid stays fresh. A slot missed
/// while a run is still going is skipped, not queued.
fn checks_on_cadence(
    control: Arc<ApiPort>,
    config: &Config,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let cadence = config.checks.cadence.trim();
    if cadence.is_empty() {
        return None;
    }
    let cron: croner::Cron = cadence.parse().ok()?;
    let selection = crate::check::Selection::from_config(config);
    tracing::info!(%cadence, "goals are checked on a cadence ([checks] cadence)");
    Some(tokio::spawn(async move {
        use crate::api::TickPort as _;
        loop {
            let now = crate::time::now();
            let Ok(next) = cron.find_next_occurrence(&now, false) else {
                return;
            };
            let wait = (next - now).to_std().unwrap_or_default();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match control
                .start_check(DEFAULT_TENANT, Trigger::Schedule, selection.clone())
                .await
            {
                Ok(run) => tracing::info!(%run, "scheduled check run started"),
                Err(err) => tracing::warn!(%err, "the scheduled check run could not start"),
            }
        }
    }))
}

/// Waits for TERM or INT (or `shutdown`).
async fn terminated(shutdown: &CancellationToken) {
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

/// `persona-runner serve`: the sidecar alone (APIs, dashboard, one-off ticks), without
/// the scheduler, until SIGTERM/SIGINT (or `shutdown`); running one-off ticks get
/// `scheduler.shutdown_grace`.
pub async fn serve(origin: ConfigOrigin, shutdown: CancellationToken) -> Result<(), DaemonError> {
    process::survive_file_size_limits();
    let config = Arc::new(origin.load()?);
    let env = &origin.env;
    let password = config.database_password(env)?;
    let store = Store::open(&config.database, password.as_ref()).await?;
    let engine = Arc::new(TickRunner::new(store.clone(), config.clone(), env)?);
    let runner_id = engine.runner_id().to_string();
    ports::sweep_gone_runners(&store, &runner_id).await;
    let host = Arc::new(SchedulerPort::new(store.clone(), engine, config.clone()));
    let pool = TickPool::new(config.scheduler.concurrency);
    let control = Arc::new(ApiPort {
        host,
        pool: pool.clone(),
        commands: None,
        env: env.clone(),
    });
    let state = crate::api::ApiState::new(store.clone(), sidecar_settings(&config, env)?, Some(control), None);
    // Without a scheduler to do it, this task notices the end of a store outage.
    let watch = tokio::spawn(watch_store(store.clone(), runner_id, shutdown.child_token()));
    // The sidecar stays up while one-off ticks drain (health, metrics), then stops.
    let http_stop = CancellationToken::new();
    let sidecar = start_sidecar(&config, state, http_stop.clone()).await?;
    process::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving the sidecar"),
    ]);
    terminated(&shutdown).await;
    shutdown.cancel();
    process::notify(&[sd_notify::NotifyState::Stopping]);
    pool.drain(config.scheduler.shutdown_grace.0).await;
    http_stop.cancel();
    let _ = sidecar.await;
    let _ = watch.await;
    store.close().await;
    Ok(())
}

/// While the store takes no writes, probes it with backoff (1 s doubling to 30 s) until
/// a write succeeds, which ends the outage (one log line each way).
async fn watch_store(store: Store, runner_id: String, stop: CancellationToken) {
    let started_at = crate::time::now();
    let mut delay = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        if store.health().is_writable() {
            delay = Duration::from_secs(1);
        } else if store.probe_write(&runner_id, started_at).await.is_err() {
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

/// Serves the bundled sample product when this is a first run on the defaults.
async fn start_sample_gateway(
    config: &Config,
    env: &Env,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, DaemonError> {
    if !config.serves_sample_gateway() {
        return Ok(None);
    }
    let seed = crate::auth::SeedSecret::resolve(config, env)?;
    let gateway = crate::gateway::Gateway::new(crate::gateway::GatewayOptions {
        seed: seed.secret,
        token_ttl: Duration::from_secs(900),
        page_size: 8,
        require_space_header: false,
        call_delay: Duration::ZERO,
        lab: false,
        accounts: false,
    });
    let addr = config.sample_gateway.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|reason| DaemonError::Bind {
            what: "the sample gateway",
            key: "sample_gateway.listen",
            addr,
            reason,
        })?;
    tracing::info!(%addr, "serving the bundled sample gateway (sample_gateway.enabled)");
    Ok(Some(tokio::spawn(async move {
        let _ = gateway.serve(listener, stop.cancelled_owned()).await;
    })))
}

/// Runs the daemon until SIGTERM/SIGINT (or `shutdown`), then drains and returns.
pub async fn run(origin: ConfigOrigin, shutdown: CancellationToken) -> Result<(), DaemonError> {
    process::survive_file_size_limits();
    let config = Arc::new(origin.load()?);
    let env = &origin.env;
    let password = config.database_password(env)?;
    let store = Store::open(&config.database, password.as_ref()).await?;
    let _sqlite_lock = process::lock_sqlite(&store)?;
    process::notify(&[sd_notify::NotifyState::Status("seeding catalogs")]);
    seed_catalogs(&store, &config, true).await?;

    // The HTTP servers (sample product, sidecar) outlive the drain: running ticks still
    // reach the product, and health and metrics stay observable until the end.
    let http_stop = CancellationToken::new();
    let gateway_task = start_sample_gateway(&config, env, http_stop.clone()).await?;

    let engine = Arc::new(TickRunner::new(store.clone(), config.clone(), env)?);
    tracing::info!(
        driver = engine.driver_name(),
        simulator = engine.simulator(),
        "tick runner ready"
    );
    ports::sweep_gone_runners(&store, engine.runner_id()).await;
    let rounds = rounds::spawn(store.clone(), engine.clone(), config.clone(), shutdown.child_token());
    let host = Arc::new(SchedulerPort::new(store.clone(), engine, config.clone()));
    let pool = TickPool::new(config.scheduler.concurrency);
    let status = Arc::new(scheduler::Status::default());
    let (commands, receiver) = mpsc::channel(16);

    // The sidecar: health, readiness, metrics, the admin and profile APIs, the dashboard.
    let control = Arc::new(ApiPort {
        host: host.clone(),
        pool: pool.clone(),
        commands: Some(commands.clone()),
        env: env.clone(),
    });
    let checks_task = checks_on_cadence(control.clone(), &config, shutdown.child_token());
    let api = crate::api::ApiState::new(
        store.clone(),
        sidecar_settings(&config, env)?,
        Some(control),
        Some(status.clone()),
    );
    let sidecar_task = start_sidecar(&config, api.clone(), http_stop.clone()).await?;

    // The scheduler, with a heartbeat the watchdog checks.
    let started = Instant::now();
    let beat = Arc::new(AtomicU64::new(0));
    let wiring = scheduler::Wiring {
        host: host.clone(),
        pool: pool.clone(),
        settings: settings(&config),
        clock: scheduler::Clock::system(),
        commands: receiver,
        shutdown: shutdown.child_token(),
        status: status.clone(),
    };
    let tasks = Tasks {
        scheduler: spawn_scheduler(wiring, beat.clone(), started),
        watchdog: spawn_watchdog(beat, started, shutdown.child_token()),
        maintenance: {
            let (store, config, stop) = (store.clone(), config.clone(), shutdown.child_token());
            tokio::spawn(async move { crate::retention::run(store, config.retention.clone(), stop).await })
        },
        checks: checks_task,
        rounds,
        sidecar: sidecar_task,
        gateway: gateway_task,
    };

    process::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("scheduling personas"),
    ]);
    tracing::info!("persona-runner daemon running");

    let reload = Reload {
        origin: &origin,
        store: &store,
        host: &host,
        pool: &pool,
        api: &api,
        commands: &commands,
    };
    signals(&reload, &commands, &shutdown).await;

    process::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining running ticks"),
    ]);
    tracing::info!("shutting down: no new ticks; running ticks get scheduler.shutdown_grace");
    let grace = reload.current_config().scheduler.shutdown_grace.0;
    tasks.drain(&pool, grace, http_stop).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The daemon's tasks, ended in order at shutdown.
struct Tasks {
    scheduler: tokio::task::JoinHandle<()>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    maintenance: tokio::task::JoinHandle<()>,
    /// `[checks] cadence`, when set.
    checks: Option<tokio::task::JoinHandle<()>>,
    /// Space rounds, and the token that cuts a running member.
    rounds: (tokio::task::JoinHandle<()>, CancellationToken),
    sidecar: tokio::task::JoinHandle<()>,
    gateway: Option<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Waits for the scheduler's drain, gives one-off ticks what is left of the same
    /// grace (one grace in all, not one after the other), then stops the HTTP servers
    /// last, so draining ticks still reach the sample product and health stays visible.
    async fn drain(self, pool: &TickPool, grace: Duration, http_stop: CancellationToken) {
        let stopping = Instant::now();
        let _ = self.scheduler.await;
        if let Some(checks) = self.checks {
            let _ = checks.await;
        }
        pool.drain(grace.saturating_sub(stopping.elapsed())).await;
        let (mut rounds, cut) = self.rounds;
        if tokio::time::timeout(grace.saturating_sub(stopping.elapsed()), &mut rounds)
            .await
            .is_err()
        {
            cut.cancel();
            let _ = rounds.await;
        }
        if let Some(watchdog) = self.watchdog {
            let _ = watchdog.await;
        }
        let _ = self.maintenance.await;
        http_stop.cancel();
        let _ = self.sidecar.await;
        if let Some(gateway) = self.gateway {
            let _ = gateway.await;
        }
    }
}

/// The scheduler's loop as a task; each wake stores a heartbeat for the watchdog.
fn spawn_scheduler(
    wiring: scheduler::Wiring<SchedulerPort>,
    beat: Arc<AtomicU64>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        scheduler::run(wiring, move || {
            beat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        })
        .await;
    })
}

/// systemd's watchdog, pinged at half its interval while the scheduler loop is alive.
fn spawn_watchdog(
    beat: Arc<AtomicU64>,
    started: Instant,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let last = Duration::from_millis(beat.load(Ordering::Relaxed));
            if started.elapsed().saturating_sub(last) < interval {
                process::notify(&[sd_notify::NotifyState::Watchdog]);
            }
        }
    }))
}

/// Handles signals until TERM/INT (or the token) asks to stop.
async fn signals(reload: &Reload<'_>, commands: &mpsc::Sender<Command>, shutdown: &CancellationToken) {
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
                let _ = commands.send(Command::TickAllNow(Trigger::Signal)).await;
            }
            _ = hup.recv() => reload.apply().await,
        }
    }
    shutdown.cancel();
}

/// What SIGHUP reloads: the config, the tick runner, the scheduler's settings, the pool's
/// size, the sidecar's settings and secrets, and (with `catalog.sync`) the catalogs.
struct Reload<'a> {
    origin: &'a ConfigOrigin,
    store: &'a Store,
    host: &'a Arc<SchedulerPort>,
    pool: &'a Arc<TickPool>,
    api: &'a crate::api::ApiState,
    commands: &'a mpsc::Sender<Command>,
}

impl Reload<'_> {
    fn current_config(&self) -> Arc<Config> {
        self.host.config.read().expect("config lock").clone()
    }

    async fn apply(&self) {
        let mut states = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        process::notify(&states);
        match self.try_apply().await {
            Ok(restart) if restart.is_empty() => tracing::info!("SIGHUP: config reloaded"),
            Ok(restart) => tracing::warn!(
                keys = %restart.join(", "),
                "SIGHUP: config reloaded; these changed keys take effect only after a restart"
            ),
            Err(err) => tracing::error!(%err, "SIGHUP: the new config cannot be used; keeping the running one"),
        }
        process::notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Applies the new config everywhere, or nothing when any part of it is unusable.
    /// The keys that changed but need a restart.
    async fn try_apply(&self) -> Result<Vec<&'static str>, DaemonError> {
        let env = &self.origin.env;
        let loaded = config::load(self.origin.explicit.as_deref(), &self.origin.env)?;
        for deprecated in &loaded.deprecations {
            tracing::warn!("{deprecated}");
        }
        let config = Arc::new(loaded.config);
        let engine = TickRunner::new(self.store.clone(), config.clone(), env)?;
        let sidecar = sidecar_settings(&config, env)?;
        let old = self.current_config();
        *self.host.engine.write().await = Arc::new(engine);
        *self.host.config.write().expect("config lock") = config.clone();
        self.host
            .max_attempts
            .store(u64::from(config.scheduler.max_attempts), Ordering::Relaxed);
        self.pool.resize(config.scheduler.concurrency);
        let _ = self.commands.send(Command::Reload(Box::new(settings(&config)))).await;
        self.api.reload(sidecar);
        if let Err(err) = seed_catalogs(self.store, &config, false).await {
            tracing::error!(%err, "SIGHUP: catalog sync failed; personas unchanged");
        }
        Ok(restart_keys(&old, &config))
    }
}

/// Keys whose change needs a restart: the database, the listeners, the request body
/// limit (built into the router), logging.
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.database.url != new.database.url || old.database.max_connections != new.database.max_connections {
        keys.push("database.*");
    }
    if old.api.listen != new.api.listen {
        keys.push("api.listen");
    }
    if old.api.max_body_bytes != new.api.max_body_bytes {
        keys.push("api.max_body_bytes");
    }
    if old.sample_gateway.listen != new.sample_gateway.listen
        || old.sample_gateway.enabled != new.sample_gateway.enabled
    {
        keys.push("sample_gateway.*");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        keys.push("log.*");
    }
    keys
}
