//! Configuration: built-in defaults, then `config.toml`, then `PERSONA_RUNNER__SECTION__KEY`
//! environment overrides; secrets resolved separately (see [`secret`]).
//!
//! Every key is known: an unknown key or a bad value is an error that names the key (and
//! the environment variable, when it came from one) and the expected form. The documented
//! default file is `config.toml` at the repository root; keep it in step with this module.

pub mod secret;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::time::HumanDuration;
pub use secret::{Secret, SecretOrigin, redact};

/// A snapshot of the process environment. Config loading reads only this, so tests can
/// pass their own without touching the real (process-global) environment.
pub type Env = HashMap<String, String>;

/// Prefix of per-key environment overrides: `PERSONA_RUNNER__DATABASE__URL`.
pub const ENV_PREFIX: &str = "PERSONA_RUNNER__";
/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "PERSONA_RUNNER_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`{origin}: {message}")]
    Invalid {
        key: String,
        origin: String,
        message: String,
    },
    #[error("secret `{key}`: {message}")]
    Secret { key: String, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `development` allows the built-in seed secret; `production` refuses it.
    pub environment: Environment,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub mcp: McpConfig,
    pub llm: LlmConfig,
    pub tick: TickConfig,
    pub retry: RetryConfig,
    pub runner: RunnerConfig,
    pub api: ApiConfig,
    pub feedback: FeedbackConfig,
    pub sample_gateway: SampleGatewayConfig,
    pub catalog: CatalogConfig,
    pub retention: RetentionConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// Named products besides the default one (the top-level `[auth]` and `[mcp]`): each
    /// with its own `auth` and `mcp` sections, which inherit every key they do not set.
    pub targets: std::collections::BTreeMap<String, TargetConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            environment: Environment::Development,
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            mcp: McpConfig::default(),
            llm: LlmConfig::default(),
            tick: TickConfig::default(),
            retry: RetryConfig::default(),
            runner: RunnerConfig::default(),
            api: ApiConfig::default(),
            feedback: FeedbackConfig::default(),
            sample_gateway: SampleGatewayConfig::default(),
            catalog: CatalogConfig::default(),
            retention: RetentionConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            targets: Default::default(),
        }
    }
}

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
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let (location, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
        // The last `@` before the query ends the user info, so a password holding `/`
        // or `@` is masked whole.
        let location = match location.rfind('@') {
            Some(at) => match location[..at].split_once(':') {
                Some((user, _password)) => format!("{user}:***{}", &location[at..]),
                None => location.to_string(),
            },
            None => location.to_string(),
        };
        let query: Vec<String> = query
            .split('&')
            .map(|part| {
                let (lead, pair) = part.split_at(usize::from(part.starts_with('?')));
                match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{lead}{key}=***"),
                    _ => part.to_string(),
                }
            })
            .collect();
        format!("{scheme}://{location}{}", query.join("&"))
    }
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// POST email + derived password to `login_url`; read token and user id by pointer.
    Login,
    /// One bearer token for every persona, from `static_token_env`/`static_token_file`.
    Static,
    /// No credentials (a gateway on a trusted network, or a stdio server).
    None,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Login endpoint (mode = "login").
    pub login_url: String,
    /// JSON pointer to the bearer token in the login response.
    pub token_pointer: String,
    /// JSON pointer to the user id in the login response ("" to skip).
    pub user_id_pointer: String,
    /// Lifetime assumed for tokens that carry no `exp` claim.
    pub token_ttl: HumanDuration,
    /// Log in again this long before a token's `exp`.
    pub refresh_margin: HumanDuration,
    /// Environment variable holding the bearer token (mode = "static").
    pub static_token_env: String,
    /// File holding the bearer token (mode = "static"; wins over the variable).
    pub static_token_file: Option<PathBuf>,
    /// Environment variable holding the seed secret for password derivation.
    pub seed_secret_env: String,
    /// File holding the seed secret (wins over the environment variable).
    pub seed_secret_file: Option<PathBuf>,
    /// Values fetched after login with the token, usable as `{name}` in `mcp.headers`.
    pub lookups: std::collections::BTreeMap<String, LookupConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Login,
            login_url: "http://127.0.0.1:3071/api/v1/auth/login".into(),
            token_pointer: "/token".into(),
            user_id_pointer: "/user/id".into(),
            token_ttl: HumanDuration::from_secs(900),
            refresh_margin: HumanDuration::from_secs(60),
            static_token_env: "PERSONA_RUNNER_GATEWAY_TOKEN".into(),
            static_token_file: None,
            seed_secret_env: "PERSONA_SEED_SECRET".into(),
            seed_secret_file: None,
            lookups: Default::default(),
        }
    }
}

/// A value looked up after login: GET `url` with the token, take the array at `items`,
/// the first element whose fields (by pointer) equal `where`, else the first element,
/// and read `value` (a pointer) from it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupConfig {
    pub url: String,
    #[serde(default)]
    pub items: String,
    #[serde(default, rename = "where")]
    pub filter: std::collections::BTreeMap<String, String>,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpTransport {
    Http,
    Stdio,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    pub transport: McpTransport,
    /// Streamable HTTP endpoint (transport = "http").
    pub url: String,
    /// Extra request headers; values may use `{placeholders}` from the login session
    /// (`{user_id}`, `{email}` and every `auth.lookups` name).
    pub headers: std::collections::BTreeMap<String, String>,
    /// The server to start (transport = "stdio"): program and arguments.
    pub command: Vec<String>,
    /// Extra environment of the stdio server.
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory of the stdio server.
    pub working_dir: Option<PathBuf>,
    /// Tool-name globs offered to the persona.
    pub allow: Vec<String>,
    /// Tool-name globs never offered (wins over `allow`).
    pub deny: Vec<String>,
    /// Globs of tools annotated `destructiveHint: true` that may still be offered.
    pub allow_destructive: Vec<String>,
    /// Timeout of one tool call.
    pub call_timeout: HumanDuration,
    /// The module of `todo.create` is the part before this separator.
    pub module_separator: String,
    /// Tool-name glob → module, overriding the separator rule.
    pub modules: std::collections::BTreeMap<String, String>,
    /// Tool calls per minute across all personas (0 = unlimited).
    pub tool_calls_per_minute: u32,
    /// Tool calls per minute of one persona (0 = unlimited).
    pub tool_calls_per_minute_per_persona: u32,
}

/// Values of `mcp.headers` and `mcp.env` as shown: a literal header value or an
/// environment value may be a gateway key, so only `{placeholder}` templates are shown.
fn masked(map: &std::collections::BTreeMap<String, String>) -> std::collections::BTreeMap<&str, &str> {
    map.iter()
        .map(|(key, value)| {
            let template = value.contains('{');
            (key.as_str(), if template { value.as_str() } else { "[redacted]" })
        })
        .collect()
}

impl fmt::Debug for McpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpConfig")
            .field("transport", &self.transport)
            .field("url", &self.url)
            .field("headers", &masked(&self.headers))
            .field("command", &self.command)
            .field("env", &masked(&self.env))
            .field("working_dir", &self.working_dir)
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("allow_destructive", &self.allow_destructive)
            .field("call_timeout", &self.call_timeout)
            .field("module_separator", &self.module_separator)
            .field("modules", &self.modules)
            .field("tool_calls_per_minute", &self.tool_calls_per_minute)
            .field(
                "tool_calls_per_minute_per_persona",
                &self.tool_calls_per_minute_per_persona,
            )
            .finish()
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            transport: McpTransport::Http,
            url: "http://127.0.0.1:3071/mcp".into(),
            headers: Default::default(),
            command: Vec::new(),
            env: Default::default(),
            working_dir: None,
            allow: vec!["*".into()],
            deny: Vec::new(),
            allow_destructive: Vec::new(),
            call_timeout: HumanDuration::from_secs(30),
            module_separator: ".".into(),
            modules: Default::default(),
            tool_calls_per_minute: 600,
            tool_calls_per_minute_per_persona: 60,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmProvider {
    /// `openai` when an API key is configured, else `offline`.
    Auto,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
    /// No LLM: tools and arguments chosen from the module mix and the tools' schemas.
    Offline,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    /// Base URL of the chat-completions API (…/v1).
    pub base_url: String,
    pub model: String,
    /// Environment variable holding the API key. systemd credential name: llm-api-key.
    pub api_key_env: String,
    /// File holding the API key (wins over the variable).
    pub api_key_file: Option<PathBuf>,
    pub temperature: f32,
    /// Completion tokens per model turn.
    pub max_tokens: u32,
    /// The endpoint supports `response_format: json_schema` (structured output).
    pub response_format: bool,
    /// Chat requests per minute across all personas (0 = unlimited).
    pub requests_per_minute: u32,
    /// Timeout of one chat request.
    pub request_timeout: HumanDuration,
    /// Offline driver: seed of its choices (each tick mixes in the persona and time).
    pub seed: u64,
    /// Offline driver: send edge cases on purpose (marked `chaos` in the audit).
    pub chaos: bool,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: LlmProvider::Auto,
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            api_key_file: None,
            temperature: 0.7,
            max_tokens: 1024,
            response_format: false,
            requests_per_minute: 60,
            request_timeout: HumanDuration::from_secs(120),
            seed: 0,
            chaos: false,
        }
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

/// The daemon's scheduler (`persona-runner run`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// Ticks running at once (the daemon's pool, and `tick --all`).
    pub concurrency: usize,
    /// Personas sharing a slot start spread over this much (a stable offset per persona).
    pub jitter: HumanDuration,
    /// Kill switch: schedule nothing (running ticks finish).
    pub paused: bool,
    /// Missed slots (downtime, long ticks): "one" runs once for the latest, "none" skips.
    pub catch_up: crate::scheduler::CatchUp,
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

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            jitter: HumanDuration::from_secs(60),
            paused: false,
            catch_up: crate::scheduler::CatchUp::One,
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

impl Config {
    /// Whether personas of `target` can be ticked with this config (`None` is the default
    /// target; a named one needs its `[targets.NAME]` section).
    pub fn runs_target(&self, target: Option<&str>) -> bool {
        target.is_none_or(|name| self.targets.contains_key(name))
    }

    /// Whether `run` serves the sample gateway itself.
    pub fn serves_sample_gateway(&self) -> bool {
        match self.sample_gateway.enabled {
            SampleGatewaySwitch::On => true,
            SampleGatewaySwitch::Off => false,
            SampleGatewaySwitch::Auto => {
                let at = format!("http://{}/", self.sample_gateway.listen);
                self.environment == Environment::Development
                    && self.mcp.transport == McpTransport::Http
                    && self.mcp.url.starts_with(&at)
                    && (self.auth.mode != AuthMode::Login || self.auth.login_url.starts_with(&at))
            }
        }
    }

    /// The admin token, if one is configured.
    /// The HS256 secret of user JWTs, if one is configured.
    pub fn jwt_secret(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "api.jwt.secret",
            file: self.api.jwt.secret_file.as_deref(),
            env_var: Some(&self.api.jwt.secret_env),
            credential: "jwt-secret",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    pub fn admin_token(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "api.admin_token",
            file: self.api.admin_token_file.as_deref(),
            env_var: Some(&self.api.admin_token_env),
            credential: "admin-token",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
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

/// Outbound HTTP (login, MCP, the LLM).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Reuse connections (with TCP_NODELAY). Off: one connection per request.
    pub keep_alive: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { keep_alive: true }
    }
}

/// A named product: its own login and MCP gateway.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    pub auth: AuthConfig,
    pub mcp: McpConfig,
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

/// Where the effective config came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Defaults => f.write_str("built-in defaults (no config file found)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub source: ConfigSource,
    /// Environment variables that overrode keys, for `config check`.
    pub overrides: Vec<String>,
}

/// Finds and loads the config: `explicit` (`--config`), else `$PERSONA_RUNNER_CONFIG`,
/// else `./config.toml` if it exists, else defaults. A named file that is missing is an
/// error; only the implicit `./config.toml` may be absent.
pub fn load(explicit: Option<&Path>, env: &Env) -> Result<LoadedConfig, ConfigError> {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.get(CONFIG_PATH_ENV).filter(|p| !p.is_empty()).map(PathBuf::from));
    let (table, source) = match named {
        Some(path) => (read_table(&path)?, ConfigSource::File(path)),
        None => {
            let path = PathBuf::from("config.toml");
            if path.is_file() {
                (read_table(&path)?, ConfigSource::File(path))
            } else {
                (toml::Table::new(), ConfigSource::Defaults)
            }
        }
    };
    let (config, overrides) = from_table(table, env)?;
    Ok(LoadedConfig {
        config,
        source,
        overrides,
    })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|err| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: err.to_string().trim_end().to_string(),
    })
}

/// Applies environment overrides to `table`, then deserializes and validates it.
pub fn from_table(mut table: toml::Table, env: &Env) -> Result<(Config, Vec<String>), ConfigError> {
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut vars: Vec<_> = env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    for (var, raw) in vars {
        let key: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
        let dotted = key.join(".");
        if key.iter().any(String::is_empty) {
            return Err(invalid(
                &dotted,
                Some(var),
                "malformed override name; use PERSONA_RUNNER__SECTION__KEY",
            ));
        }
        set_path(&mut table, &key, env_value(raw)).map_err(|message| invalid(&dotted, Some(var), &message))?;
        overrides.push((dotted, var.clone()));
    }

    let origin_of = |key: &str| {
        overrides
            .iter()
            .find(|(dotted, _)| {
                dotted == key || key.starts_with(&format!("{dotted}.")) || dotted.starts_with(&format!("{key}."))
            })
            .map(|(_, var)| var.as_str())
    };
    let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
        let key = err.path().to_string();
        // toml adds an "in `section`" line that repeats the key; the first line says it all.
        let message = err.inner().to_string();
        let message = message.lines().next().unwrap_or_default().to_string();
        invalid(&key, origin_of(&key), &message)
    })?;
    validate(&config).map_err(|(key, message)| invalid(key, origin_of(key), &message))?;
    Ok((config, overrides.into_iter().map(|(_, var)| var).collect()))
}

fn invalid(key: &str, var: Option<&str>, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        origin: var.map(|v| format!(" (from {v})")).unwrap_or_default(),
        message: message.to_string(),
    }
}

/// An override's text becomes a TOML number, boolean or array when it reads as one
/// (`8`, `true`, `["a", "b"]`), otherwise a string, so `…__URL=sqlite://x` needs no quotes.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut parsed) => match parsed.remove("v") {
            Some(
                value @ (toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Array(_)),
            ) => value,
            _ => toml::Value::String(raw.to_string()),
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, key: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = key.split_last().ok_or("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is a value, not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// Checks the values serde cannot: returns the key and what is wrong with it.
fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    match config.database.url.scheme() {
        "sqlite" | "postgres" | "postgresql" => {}
        other => {
            return Err((
                "database.url",
                format!("unsupported scheme `{other}`; expected sqlite://PATH or postgres://USER@HOST/DB"),
            ));
        }
    }
    if config.database.max_connections == 0 {
        return Err(("database.max_connections", "must be at least 1".into()));
    }
    if config.catalog.allowed_email_domains.is_empty() {
        return Err((
            "catalog.allowed_email_domains",
            "must list at least one domain suffix, e.g. [\"test\"]".into(),
        ));
    }
    if let Some(bad) = config
        .catalog
        .allowed_email_domains
        .iter()
        .find(|d| d.is_empty() || d.contains('@') || d.starts_with('.') || d.contains(char::is_whitespace))
    {
        return Err((
            "catalog.allowed_email_domains",
            format!("`{bad}` is not a domain suffix; write `test` or `mana.test`, without `@` or a leading dot"),
        ));
    }
    if config.api.max_body_bytes < 1024 {
        return Err(("api.max_body_bytes", "must be at least 1024".into()));
    }
    const JWT_ALGORITHMS: &[&str] = &[
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ];
    if config.api.jwt.algorithms.is_empty() {
        return Err((
            "api.jwt.algorithms",
            "must list at least one algorithm, e.g. [\"HS256\"]".into(),
        ));
    }
    if let Some(bad) = config
        .api
        .jwt
        .algorithms
        .iter()
        .find(|a| !JWT_ALGORITHMS.contains(&a.as_str()))
    {
        return Err((
            "api.jwt.algorithms",
            format!(
                "`{bad}` is not a supported algorithm; use one of {}",
                JWT_ALGORITHMS.join(", ")
            ),
        ));
    }
    if config.api.jwt.issuer.trim().is_empty() || config.api.jwt.audience.trim().is_empty() {
        return Err((
            "api.jwt",
            "issuer and audience must not be empty: every token is checked against both".into(),
        ));
    }
    if !(config.feedback.regression_drop > 0.0 && config.feedback.regression_drop <= 4.0) {
        return Err((
            "feedback.regression_drop",
            "must be above 0 and at most 4 (ratings are 1..5)".into(),
        ));
    }
    if config.feedback.regression_min_ratings < 1 {
        return Err(("feedback.regression_min_ratings", "must be at least 1".into()));
    }
    if config.runner.concurrency == 0 {
        return Err(("runner.concurrency", "must be at least 1".into()));
    }
    if config.runner.max_attempts == 0 {
        return Err(("runner.max_attempts", "must be at least 1 (the first attempt)".into()));
    }
    if config.retry.max_attempts == 0 {
        return Err(("retry.max_attempts", "must be at least 1 (the first attempt)".into()));
    }
    if config.mcp.module_separator.is_empty() {
        return Err(("mcp.module_separator", "must not be empty; e.g. \".\"".into()));
    }
    if config.mcp.transport == McpTransport::Stdio && config.mcp.command.is_empty() {
        return Err((
            "mcp.command",
            "transport = \"stdio\" needs the server command, e.g. [\"my-mcp-server\", \"--stdio\"]".into(),
        ));
    }
    for (key, globs) in [
        ("mcp.allow", &config.mcp.allow),
        ("mcp.deny", &config.mcp.deny),
        ("mcp.allow_destructive", &config.mcp.allow_destructive),
    ] {
        for glob in globs {
            globset::Glob::new(glob).map_err(|err| (key, format!("`{glob}` is not a glob: {err}")))?;
        }
    }
    for glob in config.mcp.modules.keys() {
        globset::Glob::new(glob).map_err(|err| ("mcp.modules", format!("`{glob}` is not a glob: {err}")))?;
    }
    if !(0.0..=2.0).contains(&config.llm.temperature) {
        return Err(("llm.temperature", "must be between 0 and 2".into()));
    }
    crate::persona::parse_time_zone(&config.catalog.default_time_zone)
        .map_err(|message| ("catalog.default_time_zone", message))?;
    tracing_subscriber::EnvFilter::try_new(&config.log.level).map_err(|err| {
        (
            "log.level",
            format!(
                "`{}` is not a log filter ({err}); expected e.g. info or persona_runner=debug",
                config.log.level
            ),
        )
    })?;
    Ok(())
}

impl Config {
    /// Resolves the database password (if configured) from its file or variable.
    pub fn database_password(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "database.password",
            file: self.database.password_file.as_deref(),
            env_var: self.database.password_env.as_deref(),
            credential: "database-password",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// The LLM API key, if one is configured.
    pub fn llm_api_key(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "llm.api_key",
            file: self.llm.api_key_file.as_deref(),
            env_var: Some(&self.llm.api_key_env),
            credential: "llm-api-key",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// The static gateway token (auth.mode = "static").
    pub fn static_token(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "auth.static_token",
            file: self.auth.static_token_file.as_deref(),
            env_var: Some(&self.auth.static_token_env),
            credential: "gateway-token",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// The effective config as TOML, secrets (the database URL's password) masked.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        for map in [&mut shown.mcp.headers, &mut shown.mcp.env] {
            *map = masked(map)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|err| format!("# cannot render config: {err}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        from_table(text.parse().unwrap(), &env(vars)).map(|(config, _)| config)
    }

    #[test]
    fn defaults_without_a_file() {
        let config = parse("", &[]).unwrap();
        assert_eq!(config.database.url.expose(), "sqlite://data/persona-runner.db");
        assert_eq!(config.environment, Environment::Development);
    }

    #[test]
    fn the_documented_config_file_is_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let documented = parse(&text, &[]).unwrap();
        assert_eq!(documented.to_redacted_toml(), Config::default().to_redacted_toml());
    }

    #[test]
    fn env_overrides_win_and_are_typed() {
        let config = parse(
            "[database]\nmax_connections = 2\n",
            &[
                ("PERSONA_RUNNER__DATABASE__URL", "postgres://u@localhost/db"),
                ("PERSONA_RUNNER__DATABASE__MAX_CONNECTIONS", "16"),
                (
                    "PERSONA_RUNNER__CATALOG__ALLOWED_EMAIL_DOMAINS",
                    "[\"test\", \"example\"]",
                ),
                ("PERSONA_RUNNER__ENVIRONMENT", "production"),
            ],
        )
        .unwrap();
        assert_eq!(config.database.url.expose(), "postgres://u@localhost/db");
        assert_eq!(config.database.max_connections, 16);
        assert_eq!(config.catalog.allowed_email_domains, ["test", "example"]);
        assert_eq!(config.environment, Environment::Production);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[database]\nurll = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `database.urll`"), "{err}");
        let err = parse("verbose = true\n", &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `verbose`"), "{err}");
        let err = parse("", &[("PERSONA_RUNNER__DATABSE__URL", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`databse`") && err.contains("PERSONA_RUNNER__DATABSE__URL"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_expected_form() {
        let err = parse("[database]\nmax_connections = \"many\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`database.max_connections`") && err.contains("u32"),
            "{err}"
        );
        let err = parse("environment = \"staging\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("`environment`") && err.contains("production"), "{err}");
        let err = parse("[database]\nbusy_timeout = \"5\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`database.busy_timeout`") && err.contains("30s"), "{err}");
        let err = parse("[database]\nurl = \"mysql://x\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("`database.url`") && err.contains("sqlite://"), "{err}");
        let err = parse("[catalog]\ndefault_time_zone = \"Berlin\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`catalog.default_time_zone`") && err.contains("IANA"),
            "{err}"
        );
        let err = parse("[catalog]\nallowed_email_domains = [\"@test\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`catalog.allowed_email_domains`"), "{err}");
    }

    #[test]
    fn database_url_password_is_masked_everywhere() {
        let url = DatabaseUrl::new("postgres://runner:s3cr3t@db:5432/persona?sslmode=require");
        assert_eq!(url.redacted(), "postgres://runner:***@db:5432/persona?sslmode=require");
        let query = DatabaseUrl::new("postgres://db/persona?user=r&password=s3cr3t&x=1");
        assert_eq!(query.redacted(), "postgres://db/persona?user=r&password=***&x=1");
        let both = DatabaseUrl::new("postgres://runner@db/persona?password=s3cr3t");
        assert_eq!(both.redacted(), "postgres://runner@db/persona?password=***");
        let slash = DatabaseUrl::new("postgres://runner:pa/ss@db/persona");
        assert_eq!(slash.redacted(), "postgres://runner:***@db/persona");
        let config = parse(
            "[database]\nurl = \"postgres://runner:s3cr3t@db/p\"\n\
             [mcp.headers]\nX-Api-Key = \"s3cr3t-header\"\nX-Mana-Space = \"{space_id}\"\n\
             [mcp.env]\nGATEWAY_KEY = \"s3cr3t-env\"\n",
            &[],
        )
        .unwrap();
        for rendered in [format!("{config:?}"), config.to_redacted_toml()] {
            assert!(!rendered.contains("s3cr3t"), "{rendered}");
            assert!(rendered.contains("{space_id}"), "templates stay readable: {rendered}");
        }
    }

    #[test]
    fn missing_named_file_is_an_error_but_missing_default_is_not() {
        let err = load(Some(Path::new("/nonexistent/config.toml")), &Env::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/config.toml"));
        let err = load(None, &env(&[(CONFIG_PATH_ENV, "/nonexistent/c.toml")])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.toml"));
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[database\nurl = 1").unwrap();
        let err = load(Some(&path), &Env::new()).unwrap_err().to_string();
        assert!(
            err.contains("is not valid TOML") && err.contains("config.toml"),
            "{err}"
        );
    }
}
