//! The command line: argument parsing, logging setup, and one function per command.
//! Errors are `anyhow` with context here; the library's typed errors end at this layer.

/// `println!` for command output, except that a closed pipe (`persona-runner … | head`)
/// ends the program quietly instead of panicking, and control characters other than line
/// breaks and tabs (a product's text may carry terminal escapes) are written escaped.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        if let Err(err) = writeln!(std::io::stdout().lock(), "{}", $crate::cli::terminal_safe(&text)) {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("cannot write to stdout: {err}");
        }
    }};
}

mod catalog;
mod check;
mod feedback;
mod gateway;
mod goals;
mod personas;
mod replay;
mod space_report;
mod spaces;
mod tick;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use persona_runner::config::{self, Config, Env, LoadedConfig};
use persona_runner::store::Store;
use persona_runner::telemetry::Telemetry;

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
    /// Run goals as check ticks, K trials each: pass@1, pass^k, JUnit; exit 1 when a goal fell short.
    Check(goals::CheckArgs),
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

/// `text` with control characters escaped, line breaks and tabs kept: what reaches the
/// terminal from outside (a product's error, a model's note) cannot move or recolour it.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| persona_runner::redact::is_control(c) && c != '\n' && c != '\t')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.split('\n')
            .map(|line| {
                line.split('\t')
                    .map(|part| persona_runner::redact::escape_controls(part).into_owned())
                    .collect::<Vec<_>>()
                    .join("\t")
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// `value` as pretty JSON for the terminal: the control characters JSON leaves raw (DEL,
/// C1 controls, U+2028/U+2029) written as `\uXXXX` escapes, so the text stays valid JSON
/// and reaches no terminal as a control.
pub fn json(value: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string_pretty(value)?;
    Ok(text
        .chars()
        .map(|c| {
            if c != '\n' && persona_runner::redact::is_control(c) {
                format!("\\u{:04x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect())
}

/// An error for stderr: control characters escaped; a list of problems keeps its lines,
/// each continuation indented, so no text inside it can pass for a line of its own.
pub fn error_line(err: &dyn std::fmt::Display) -> String {
    terminal_safe(&format!("{err:#}")).replace('\n', "\n  ")
}

/// What a command reports back to `main`: success, or "ran, but found problems" (exit 1).
pub enum Outcome {
    Success,
    Problems,
    /// The request itself was wrong (an unknown goal or persona): exit 2, as for bad flags.
    Usage,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: Env = std::env::vars().collect();
    let loaded = match config::load(cli.config.as_deref(), &env) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {}", error_line(&err));
            return ExitCode::from(2);
        }
    };
    persona_runner::logging::init(&loaded.config.log, &env);
    // Every secret the process holds is kept out of every log line from here on.
    persona_runner::tick::process_secrets(&loaded.config, &env);
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
        Ok(Outcome::Usage) => ExitCode::from(2),
        Err(err) => {
            eprintln!(
                "error: {}",
                persona_runner::redact::escape_controls(&format!("{err:#}"))
            );
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
    let traced = matches!(
        command,
        Command::Run | Command::Serve | Command::Tick(_) | Command::Check(_) | Command::Replay(_)
    );
    let telemetry = if traced {
        start_telemetry(&app)?
    } else {
        Telemetry::default()
    };
    let outcome = run_command(command, &app).await;
    telemetry.shutdown(app.config().scheduler.shutdown_grace.0).await;
    outcome
}

/// Trace export, when `[telemetry]` or the `OTEL_*` variables ask for it.
fn start_telemetry(app: &App) -> Result<Telemetry> {
    let settings = app
        .config()
        .telemetry
        .resolve(&app.env)
        .context("reading the trace export's settings")?;
    // The exporter's HTTP client takes the process's TLS provider.
    persona_runner::http::install_crypto_provider();
    Ok(Telemetry::init(settings.as_ref())?)
}

async fn run_command(command: Command, app: &App) -> Result<Outcome> {
    match command {
        Command::Run => run_daemon(app).await,
        Command::Serve => serve_sidecar(app).await,
        Command::Feedback(args) => feedback::run(args, app).await,
        Command::Tick(args) => tick::run(args, app).await,
        Command::Check(args) => goals::run(args, app).await,
        Command::Replay(args) => replay::run(args, app).await,
        Command::Catalog(command) => catalog::run(command, app).await,
        Command::Personas(command) => personas::run(command, app).await,
        Command::Migrate => migrate(app).await,
        Command::Password { email } => password(&email, app),
        Command::Config(ConfigCommand::Check) => check::config_check(app).await,
        Command::SampleGateway(args) => gateway::run(args, app).await,
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
