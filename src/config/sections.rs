//! The config sections of the runner itself, one struct per `[section]`, with its defaults
//! (a product's `[auth]` and `[mcp]` are in `config::product`).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};

use crate::time::HumanDuration;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded) or `postgres://USER@HOST/DB` (production, replicas).
    pub url: DatabaseUrl,
    pub max_connections: u32,
    pub connect_timeout: HumanDuration,
    /// SQLite only: how long a writer waits for a lock before failing.
    pub busy_timeout: HumanDuration,
    /// Apply pending migrations when any command opens the store.
    pub migrate_on_start: bool,
    /// PostgreSQL password, kept out of the URL: environment variable to read.
    pub password_env: Option<String>,
    /// PostgreSQL password from a file (relative names resolve in `$CREDENTIALS_DIRECTORY`).
    pub password_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DatabaseUrl("sqlite://data/persona-runner.db".into()),
            max_connections: 8,
            connect_timeout: HumanDuration::from_secs(10),
            busy_timeout: HumanDuration::from_secs(5),
            migrate_on_start: true,
            password_env: None,
            password_file: None,
        }
    }
}

/// A database URL. It may carry a password, so `Debug`, `Display` and `Serialize` mask it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, password included: only for opening the connection.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.split_once("://").map_or("", |(scheme, _)| scheme)
    }

    /// The URL with any password replaced by `***`: in the user info, and in a
    /// `password=` query parameter (both may be present).
    pub fn redacted(&self) -> String {
        mask_url(&self.0, true)
    }
}

/// Query parameters whose values are credentials.
const SECRET_PARAMS: [&str; 12] = [
    "password",
    "pass",
    "token",
    "access_token",
    "key",
    "api_key",
    "apikey",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "auth",
];

/// `url` with its credentials replaced by `***`: the password of the user info (and, unless
/// `keep_user`, a user name alone, which may be a token), and the values of query
/// parameters named like credentials. What `config check` and error messages print.
pub fn mask_url(url: &str, keep_user: bool) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (location, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    // The last `@` ends the user info, so a password holding `/` or `@` is masked whole
    // (an `@` in a path over-masks, which is the safe side).
    let location = match location.rfind('@') {
        Some(at) => match location[..at].split_once(':') {
            Some((user, _password)) => format!("{user}:***{}", &location[at..]),
            None if keep_user => location.to_string(),
            None => format!("***{}", &location[at..]),
        },
        None => location.to_string(),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|part| {
            let (lead, pair) = part.split_at(usize::from(part.starts_with('?')));
            match pair.split_once('=') {
                Some((key, _)) if SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p)) => {
                    format!("{lead}{key}=***")
                }
                _ => part.to_string(),
            }
        })
        .collect();
    format!("{scheme}://{location}{}", query.join("&"))
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// How far back a repeated call counts as a duplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DedupWindow {
    /// Only within the same tick.
    Tick,
    /// Within this long before now, across ticks (looked up in the store).
    Last(HumanDuration),
}

impl Serialize for DedupWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Tick => serializer.serialize_str("tick"),
            Self::Last(duration) => duration.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for DedupWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "tick" {
            return Ok(Self::Tick);
        }
        text.parse()
            .map(Self::Last)
            .map_err(|e| serde::de::Error::custom(format!("expected \"tick\" or a duration: {e}")))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TickConfig {
    /// Model turns per tick.
    pub max_turns: u32,
    /// Reminders sent when the model answers with text before it used the app at all.
    pub nudges: u32,
    /// Tool calls per tick.
    pub max_tool_calls: u32,
    /// Prompt + completion tokens per tick.
    pub max_tokens_per_tick: u64,
    /// Wall time of one tick, rating included.
    pub tick_timeout: HumanDuration,
    /// `tick`, or a duration (`24h`) to also skip repeats of earlier ticks.
    pub dedup_window: DedupWindow,
    /// Lease of a running tick; renewed while it runs, expired means abandoned.
    pub lease: HumanDuration,
    /// Longest tool output kept in the audit and fed back to the model, in characters.
    pub max_output_chars: usize,
    /// Earlier actions summarized in the prompt's "story so far".
    pub story_actions: usize,
    /// Longest transcript kept per tick, in characters (0 keeps none).
    pub transcript_chars: usize,
}

impl Default for TickConfig {
    fn default() -> Self {
        Self {
            max_turns: 12,
            nudges: 1,
            max_tool_calls: 20,
            max_tokens_per_tick: 60_000,
            tick_timeout: HumanDuration::from_secs(300),
            dedup_window: DedupWindow::Tick,
            lease: HumanDuration::from_secs(120),
            max_output_chars: 4000,
            story_actions: 10,
            transcript_chars: 100_000,
        }
    }
}

/// The daemon's scheduler (`persona-runner run`), `[scheduler]` (it was `[runner]`, which
/// still loads with a deprecation warning).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Ticks running at once (the daemon's pool, and `tick --all`).
    pub concurrency: usize,
    /// Personas sharing a slot start spread over this much (a stable offset per persona).
    pub jitter: HumanDuration,
    /// Kill switch: schedule nothing (running ticks finish).
    pub paused: bool,
    /// Missed slots (downtime, long ticks): "one" runs once for the latest, "none" skips.
    pub catch_up: crate::model::schedule::CatchUp,
    /// A missed slot older than this is skipped even with catch_up = "one".
    pub starting_deadline: HumanDuration,
    /// Attempts per slot (a failed tick is retried with backoff within its slot).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_backoff: HumanDuration,
    /// After SIGTERM, running ticks get this long to finish before they are cut.
    pub shutdown_grace: HumanDuration,
    /// How often personas are reloaded from the store (new, paused, other replicas).
    pub reload_every: HumanDuration,
    /// How often ticks with expired leases (dead runners) are marked abandoned.
    pub sweep_every: HumanDuration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            jitter: HumanDuration::from_secs(60),
            paused: false,
            catch_up: crate::model::schedule::CatchUp::One,
            starting_deadline: HumanDuration::from_secs(6 * 3600),
            max_attempts: 3,
            retry_backoff: HumanDuration::from_secs(30),
            shutdown_grace: HumanDuration::from_secs(30),
            reload_every: HumanDuration::from_secs(15),
            sweep_every: HumanDuration::from_secs(30),
        }
    }
}

/// The HTTP sidecar: health, readiness, metrics (and the admin API).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: std::net::SocketAddr,
    /// Environment variable with the admin token (admin routes answer 503 without one).
    pub admin_token_env: String,
    /// File with the admin token (wins over the variable). Credential: admin-token.
    pub admin_token_file: Option<PathBuf>,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// How long a dashboard sign-in lasts.
    pub session_ttl: HumanDuration,
    /// Mark the dashboard's cookie `Secure` (set when clients reach the sidecar over TLS,
    /// e.g. behind a reverse proxy).
    pub secure_cookie: bool,
    /// Connections open at once at most (also held below a quarter of the process's open
    /// file limit, so ticks keep their descriptors).
    pub max_connections: usize,
    /// The longest wait for a request's headers, and for the next request on an idle
    /// keep-alive connection.
    pub header_timeout: HumanDuration,
    /// User tokens of the profile API.
    pub jwt: JwtConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 3070)),
            admin_token_env: "PERSONA_RUNNER_ADMIN_TOKEN".into(),
            admin_token_file: None,
            max_body_bytes: 64 * 1024,
            session_ttl: HumanDuration::from_secs(12 * 3600),
            secure_cookie: false,
            max_connections: 1024,
            header_timeout: HumanDuration::from_secs(10),
            jwt: JwtConfig::default(),
        }
    }
}

/// How the profile API verifies user JWTs: an HS256 secret or a JWKS URL, with the
/// issuer and audience always checked. Profile routes answer 503 while neither is set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Environment variable with the HS256 secret. Credential: jwt-secret.
    pub secret_env: String,
    /// File with the HS256 secret (wins over the variable).
    pub secret_file: Option<PathBuf>,
    /// JWKS document of the identity provider (RS256/ES256/EdDSA keys); wins over the secret.
    pub jwks_url: Option<String>,
    /// How long fetched keys are trusted before they are fetched again.
    pub jwks_refresh: HumanDuration,
    /// An unknown key id refetches the JWKS at most this often (anyone can send one).
    pub jwks_min_refetch: HumanDuration,
    pub issuer: String,
    pub audience: String,
    /// Accepted algorithms; a token signed otherwise is refused.
    pub algorithms: Vec<String>,
    /// Claim holding the tenant id (a UUID); `sub` holds the user id (a UUID).
    pub tenant_claim: String,
    /// Claim holding the user's roles (a string or a list).
    pub roles_claim: String,
    /// Role that may use the profile API's admin routes (update persona, init-personas).
    pub admin_role: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: HumanDuration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret_env: "PERSONA_RUNNER_JWT_SECRET".into(),
            secret_file: None,
            jwks_url: None,
            jwks_refresh: HumanDuration::from_secs(600),
            jwks_min_refetch: HumanDuration::from_secs(30),
            issuer: "persona-runner".into(),
            audience: "persona-runner".into(),
            algorithms: vec!["HS256".into()],
            tenant_claim: "tenant_id".into(),
            roles_claim: "roles".into(),
            admin_role: "admin".into(),
            leeway: HumanDuration::from_secs(30),
        }
    }
}

/// The QA feedback report: its default window and when a drop counts as a regression.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Window of reports that name none (`feedback`, the admin API; the dashboard uses
    /// `?days=`).
    pub window: HumanDuration,
    /// A module (persona, archetype) regressed when its average fell by at least this
    /// much against the previous window of the same length…
    pub regression_drop: f64,
    /// …and both windows hold at least this many ratings.
    pub regression_min_ratings: i64,
    /// Lowest-rated notes listed.
    pub lowest_notes: i64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            window: HumanDuration::from_secs(7 * 86_400),
            regression_drop: 0.5,
            regression_min_ratings: 5,
            lowest_notes: 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleGatewaySwitch {
    /// On in development when auth.login_url and mcp.url point at `listen` (the defaults).
    Auto,
    On,
    Off,
}

/// The bundled sample product, served in-process by `run` for a first run anywhere.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SampleGatewayConfig {
    pub enabled: SampleGatewaySwitch,
    pub listen: std::net::SocketAddr,
}

impl Default for SampleGatewayConfig {
    fn default() -> Self {
        Self {
            enabled: SampleGatewaySwitch::Auto,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 3071)),
        }
    }
}

/// The one retry policy of every outbound call of ours (login, lookups, LLM): exponential
/// backoff with jitter, capped; `Retry-After` honoured; only 429, 5xx and connection
/// failures or timeouts are retried. Tool calls are never retried (they may have run).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_delay: HumanDuration,
    /// Longest wait between attempts (a longer `Retry-After` is capped to it).
    pub max_delay: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_delay: HumanDuration(std::time::Duration::from_millis(500)),
            max_delay: HumanDuration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Catalog files used when a `catalog` command names none (and by the daemon).
    pub files: Vec<PathBuf>,
    /// The daemon re-seeds these files at start and on SIGHUP. Without it, it seeds them
    /// only into an empty store (the first start).
    pub sync: bool,
    /// Email domain suffixes personas may use (`test` allows any `*.test`).
    pub allowed_email_domains: Vec<String>,
    /// Shortest acceptable system prompt, in characters.
    pub min_prompt_chars: usize,
    /// Time zone of personas whose entry has no `timeZone`.
    pub default_time_zone: String,
    /// Largest catalog file read, in bytes: a bigger one is refused before it is read.
    pub max_file_bytes: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            files: vec![
                PathBuf::from("catalog/consumer-app.json"),
                PathBuf::from("catalog/sop-finance.json"),
            ],
            sync: false,
            allowed_email_domains: vec!["test".into()],
            min_prompt_chars: 80,
            default_time_zone: "UTC".into(),
            max_file_bytes: 64 * 1024 * 1024,
        }
    }
}

/// How long the record is kept. Old rows are deleted in small batches by the daemon;
/// daily rating roll-ups stay, so the QA report keeps its history.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Audited calls.
    pub actions: HumanDuration,
    /// Profile-store interactions.
    pub interactions: HumanDuration,
    /// Ticks (with their ratings, transcripts and remaining calls).
    pub ticks: HumanDuration,
    /// How often old rows are deleted.
    pub every: HumanDuration,
    /// Rows deleted per statement (small batches keep writers unblocked).
    pub batch: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            actions: HumanDuration::from_secs(90 * 86_400),
            interactions: HumanDuration::from_secs(90 * 86_400),
            ticks: HumanDuration::from_secs(180 * 86_400),
            every: HumanDuration::from_secs(3600),
            batch: 1000,
        }
    }
}

/// The LLM spend cap: tokens (prompt + completion) per UTC day. A tick that would start
/// with the cap spent is recorded `skipped` and makes no LLM request. 0 = no cap.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Across every persona of the store.
    pub tokens_per_day: u64,
    /// For each persona.
    pub tokens_per_day_per_persona: u64,
    /// Price of 1,000 prompt tokens, to show the spend as money (0 = tokens only).
    pub price_in_per_1k: f64,
    /// Price of 1,000 completion tokens.
    pub price_out_per_1k: f64,
    /// The prices' currency, as shown.
    pub currency: String,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            tokens_per_day: 0,
            tokens_per_day_per_persona: 0,
            price_in_per_1k: 0.0,
            price_out_per_1k: 0.0,
            currency: "USD".into(),
        }
    }
}

impl BudgetConfig {
    /// What `tokens_in` prompt and `tokens_out` completion tokens cost, when prices are set.
    pub fn cost(&self, tokens_in: i64, tokens_out: i64) -> Option<f64> {
        (self.price_in_per_1k > 0.0 || self.price_out_per_1k > 0.0).then(|| {
            tokens_in as f64 / 1000.0 * self.price_in_per_1k + tokens_out as f64 / 1000.0 * self.price_out_per_1k
        })
    }
}

/// Outbound HTTP (login, MCP, the LLM).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Reuse connections (with TCP_NODELAY). Off: one connection per request.
    pub keep_alive: bool,
    /// Follow redirects within the first URL's origin (at most 10); off: follow none.
    /// A redirect to another origin is never followed: a login's password, a token or a
    /// key would go with it.
    pub follow_redirects: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            keep_alive: true,
            follow_redirects: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `persona_runner=debug,sqlx=warn`. `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info,rmcp=warn".into(),
            format: LogFormat::Text,
        }
    }
}
