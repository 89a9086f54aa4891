//! The command line: argument parsing, logging setup, and one function per command.
//! Errors are `anyhow` with context here; the library's typed errors end at this layer.

/// `println!` for command output, except that a closed pipe (`persona-runner … | head`)
/// ends the program quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("cannot write to stdout: {err}");
        }
    }};
}

mod catalog;
mod feedback;
mod gateway;
mod personas;
mod replay;
mod tick;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use persona_runner::config::{self, Config, Env, LoadedConfig};
use persona_runner::store::{Inspection, Store};

#[derive(Parser)]
#[command(
    name = "persona-runner",
    version,
    about = "Keeps synthetic users (personas) using a product through its MCP gateway, on a schedule, \
             and reports how each product module feels to them."
)]
struct Cli {
    /// Config file (default: $PERSONA_RUNNER_CONFIG, else ./config.toml, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: scheduler, ticks, signals, and the sidecar (APIs, dashboard, metrics).
    Run,
    /// Serve the HTTP sidecar only: admin API, profile API, dashboard, one-off ticks.
    Serve,
    /// Run one-off ticks for some or all personas, in this process.
    Tick(tick::TickArgs),
    /// Send the recorded calls of ticks again (no LLM) and report what changed; exit 1 if anything did.
    Replay(replay::ReplayArgs),
    /// Validate, seed or clean up persona catalogs.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// QA report: per module, the average rating, how many, and the lowest notes.
    Feedback(feedback::FeedbackArgs),
    /// List or show the personas in the store.
    #[command(subcommand)]
    Personas(personas::PersonasCommand),
    /// Apply pending database migrations.
    Migrate,
    /// Print the derived login password of a persona.
    Password {
        /// The persona's email, exactly as it logs in.
        email: String,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve the bundled sample product (a personal organizer): login + MCP gateway.
    SampleGateway(gateway::GatewayArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the config, print it (secrets redacted) and check the database is reachable.
    Check,
}

/// What a command reports back to `main`: success, or "ran, but found problems" (exit 1).
pub enum Outcome {
    Success,
    Problems,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: Env = std::env::vars().collect();
    let loaded = match config::load(cli.config.as_deref(), &env) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    init_logging(&loaded.config, &env);
    for deprecated in &loaded.deprecations {
        tracing::warn!("{deprecated}");
    }
    persona_runner::http::configure(&loaded.config.http);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, loaded, env, cli.config)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(
    command: Command,
    loaded: LoadedConfig,
    env: Env,
    explicit_config: Option<PathBuf>,
) -> Result<Outcome> {
    let app = App {
        loaded,
        env,
        explicit_config,
    };
    match command {
        Command::Run => run_daemon(&app).await,
        Command::Serve => serve_sidecar(&app).await,
        Command::Feedback(args) => feedback::run(args, &app).await,
        Command::Tick(args) => tick::run(args, &app).await,
        Command::Replay(args) => replay::run(args, &app).await,
        Command::Catalog(command) => catalog::run(command, &app).await,
        Command::Personas(command) => personas::run(command, &app).await,
        Command::Migrate => migrate(&app).await,
        Command::Password { email } => password(&email, &app),
        Command::Config(ConfigCommand::Check) => config_check(&app).await,
        Command::SampleGateway(args) => gateway::run(args, &app).await,
    }
}

/// What every command gets: the loaded config and the environment snapshot.
pub struct App {
    pub loaded: LoadedConfig,
    pub env: Env,
    /// `--config`, to reload the same file on SIGHUP.
    pub explicit_config: Option<PathBuf>,
}

impl App {
    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    /// Opens the store (migrating when `database.migrate_on_start`).
    pub async fn store(&self) -> Result<Store> {
        let password = self.config().database_password(&self.env)?;
        Store::open(&self.config().database, password.as_ref())
            .await
            .with_context(|| format!("opening the store at {}", self.config().database.url))
    }
}

/// A table in the CLI's one style: borders only, columns as wide as their content.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

async fn serve_sidecar(app: &App) -> Result<Outcome> {
    let origin = persona_runner::daemon::ConfigOrigin {
        explicit: app.explicit_config.clone(),
        env: app.env.clone(),
    };
    persona_runner::daemon::serve(origin, tokio_util::sync::CancellationToken::new())
        .await
        .context("serving the sidecar")?;
    Ok(Outcome::Success)
}

async fn run_daemon(app: &App) -> Result<Outcome> {
    let origin = persona_runner::daemon::ConfigOrigin {
        explicit: app.explicit_config.clone(),
        env: app.env.clone(),
    };
    persona_runner::daemon::run(origin, tokio_util::sync::CancellationToken::new())
        .await
        .context("running the daemon")?;
    Ok(Outcome::Success)
}

/// Log targets of dependencies that print request or response bodies, and the most they
/// may say.
const BODY_PRINTING_TARGETS: [(&str, tracing::Level); 3] = [
    ("rmcp", tracing::Level::INFO),
    ("async_openai", tracing::Level::ERROR),
    ("sqlx::query", tracing::Level::INFO),
];

fn init_logging(config: &Config, env: &Env) {
    use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = env
        .get("RUST_LOG")
        .and_then(|directive| EnvFilter::try_new(directive).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log.level));
    // Dependencies that print message bodies (tool results a product may echo secrets
    // into, error bodies that echo request headers) are capped, whatever the filter says:
    // no secret reaches a log line through them. The caps only ever lower a level: both
    // filters must pass (a cap added as a directive would raise `rmcp` to info under
    // `level = "warn"`, and formatting those lines cost a tenth of a tick's CPU).
    let caps = BODY_PRINTING_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |caps, (target, level)| caps.with_target(*target, *level),
    );
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    match config.log.format {
        config::LogFormat::Json => registry.with(layer.json().with_filter(filter.and(caps))).init(),
        config::LogFormat::Text => registry.with(layer.with_filter(filter.and(caps))).init(),
    }
}

async fn migrate(app: &App) -> Result<Outcome> {
    let password = app.config().database_password(&app.env)?;
    let store = Store::connect(&app.config().database, password.as_ref())
        .await
        .with_context(|| format!("opening the store at {}", app.config().database.url))?;
    let (before, _) = store.migration_status().await?;
    store.migrate().await.context("applying migrations")?;
    let (after, known) = store.migration_status().await?;
    out!(
        "{}: {after} of {known} migrations applied ({} new)",
        store.url(),
        after - before
    );
    store.close().await;
    Ok(Outcome::Success)
}

fn password(email: &str, app: &App) -> Result<Outcome> {
    let seed = persona_runner::auth::SeedSecret::resolve(app.config(), &app.env)?;
    if seed.origin == config::SecretOrigin::DevelopmentFallback {
        eprintln!(
            "warning: no seed secret set ({}); using the development fallback",
            app.config().auth.seed_secret_env
        );
    }
    out!(
        "{}",
        persona_runner::auth::derive_password(&seed.secret, email).expose()
    );
    Ok(Outcome::Success)
}

async fn config_check(app: &App) -> Result<Outcome> {
    let loaded = &app.loaded;
    out!("# config: {}", loaded.source);
    for var in &loaded.overrides {
        out!("# overridden by {var}");
    }
    for deprecated in &loaded.deprecations {
        out!("# deprecated: {deprecated}");
    }
    out!("{}", loaded.config.to_redacted_toml());
    let mut ok = true;
    match persona_runner::auth::SeedSecret::resolve(&loaded.config, &app.env) {
        Ok(seed) => out!("# seed secret: set, from {}", seed.origin),
        Err(err) => {
            ok = false;
            out!("# seed secret: ERROR: {err}");
        }
    }
    // Every secret the configured modes need, looked up as `run` would.
    let mode = app.config().auth.mode;
    if mode == config::AuthMode::Static {
        match app.config().static_token(&app.env) {
            Ok(Some(_)) => out!("# gateway token: set"),
            Ok(None) => {
                ok = false;
                out!(
                    "# gateway token: ERROR: auth.mode = \"static\" needs a token: set ${} or auth.static_token_file",
                    app.config().auth.static_token_env
                );
            }
            Err(err) => {
                ok = false;
                out!("# gateway token: ERROR: {err}");
            }
        }
    }
    match app.config().database_password(&app.env) {
        Ok(Some(_)) => out!("# database password: set"),
        Ok(None) => {}
        Err(err) => {
            ok = false;
            out!("# database password: ERROR: {err}");
        }
    }
    let sidecar_keys = [
        (
            "admin token",
            app.config().admin_token(&app.env),
            "admin API and dashboard answer 503",
        ),
        (
            "JWT secret",
            app.config().jwt_secret(&app.env),
            "profile API answers 503 unless api.jwt.jwks_url is set",
        ),
    ];
    for (name, lookup, without) in sidecar_keys {
        match lookup {
            Ok(Some(_)) => out!("# {name}: set"),
            Ok(None) => out!("# {name}: not set ({without})"),
            Err(err) => {
                ok = false;
                out!("# {name}: ERROR: {err}");
            }
        }
    }
    // Nothing is created or migrated here: checking a config changes nothing.
    let password = app.config().database_password(&app.env).ok().flatten();
    match persona_runner::store::Store::inspect(&app.config().database, password.as_ref()).await {
        Ok(Inspection::Reachable { applied, known }) => {
            out!("# database: reachable ({applied} of {known} migrations applied)")
        }
        Ok(Inspection::Missing(file)) => out!(
            "# database: {} does not exist yet (created and migrated on the first start)",
            file.display()
        ),
        Err(err) => {
            ok = false;
            out!("# database: ERROR: {err}");
        }
    }
    Ok(if ok { Outcome::Success } else { Outcome::Problems })
}
