//! Configuration: built-in defaults, then `config.toml`, then `PERSONA_RUNNER__SECTION__KEY`
//! environment overrides; secrets resolved separately (see [`secret`]).
//!
//! Every key is known: an unknown key or a bad value is an error that names the key (and
//! the environment variable, when it came from one) and the expected form. The documented
//! default file is `config.toml` at the repository root; keep it in step with this module.

mod checks;
mod llm;
mod load;
mod product;
pub mod secret;
mod sections;
mod spaces;
mod telemetry;
mod template;
mod validate;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::redact::redact;
pub use checks::ChecksConfig;
pub use llm::*;
pub use load::{ConfigSource, LoadedConfig, from_table, load};
pub use product::*;
pub use secret::{Secret, SecretOrigin};
pub use sections::*;
pub use spaces::{SpaceEndpoints, SpacesConfig, slug};
pub use telemetry::{OtlpProtocol, SamplerSetting, TelemetryConfig, TelemetrySettings};
pub use template::{fill_json, signup_body};

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
    /// The model that judges goals' criteria, apart from the persona's (`provider =
    /// "offline"`: no judge, the default).
    pub judge: LlmConfig,
    /// Goals run by the daemon on a cadence, and `check`'s defaults.
    pub checks: ChecksConfig,
    pub tick: TickConfig,
    pub retry: RetryConfig,
    pub scheduler: SchedulerConfig,
    pub api: ApiConfig,
    pub feedback: FeedbackConfig,
    pub sample_gateway: SampleGatewayConfig,
    pub catalog: CatalogConfig,
    pub retention: RetentionConfig,
    pub budget: BudgetConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    /// Traces over OTLP (the `OTEL_*` variables; this section overrides them).
    pub telemetry: TelemetryConfig,
    /// Shared spaces: the product's calls that create and join them, the header that
    /// names a tick's space, and the daemon's rounds.
    pub spaces: SpacesConfig,
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
            judge: checks::no_judge(),
            checks: ChecksConfig::default(),
            tick: TickConfig::default(),
            retry: RetryConfig::default(),
            scheduler: SchedulerConfig::default(),
            api: ApiConfig::default(),
            feedback: FeedbackConfig::default(),
            sample_gateway: SampleGatewayConfig::default(),
            catalog: CatalogConfig::default(),
            retention: RetentionConfig::default(),
            budget: BudgetConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
            spaces: SpacesConfig::default(),
            targets: Default::default(),
        }
    }
}

/// Shortest admin token or JWT secret `environment = "production"` accepts.
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

impl Config {
    /// Whether personas of `target` can be ticked with this config (`None` is the default
    /// target; a named one needs its `[targets.NAME]` section).
    pub fn runs_target(&self, target: Option<&str>) -> bool {
        target.is_none_or(|name| self.targets.contains_key(name))
    }

    /// This config with a target's `[auth]` and `[mcp]` in place of the top-level ones
    /// (`None` when no `[targets.NAME]` is configured).
    pub fn for_target(&self, name: &str) -> Option<Config> {
        let target = self.targets.get(name)?;
        let mut config = self.clone();
        config.auth = target.auth.clone();
        config.mcp = target.mcp.clone();
        Some(config)
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

    /// The HS256 secret of user JWTs, if one is configured (in production, at least
    /// [`MIN_PRODUCTION_SECRET_BYTES`]).
    pub fn jwt_secret(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "api.jwt.secret",
            file: self.api.jwt.secret_file.as_deref(),
            env_var: Some(&self.api.jwt.secret_env),
            credential: "jwt-secret",
        };
        self.strong(lookup.key, secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// The admin token, if one is configured (in production, at least
    /// [`MIN_PRODUCTION_SECRET_BYTES`]).
    pub fn admin_token(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "api.admin_token",
            file: self.api.admin_token_file.as_deref(),
            env_var: Some(&self.api.admin_token_env),
            credential: "admin-token",
        };
        self.strong(lookup.key, secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// A guessable admin token or JWT secret opens everything: production refuses short ones.
    fn strong(&self, key: &str, secret: Option<Secret>) -> Result<Option<Secret>, ConfigError> {
        match secret {
            Some(s)
                if self.environment == Environment::Production && s.expose().len() < MIN_PRODUCTION_SECRET_BYTES =>
            {
                Err(ConfigError::Secret {
                    key: key.to_string(),
                    message: format!(
                        "is {} bytes long; production needs at least {MIN_PRODUCTION_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                        s.expose().len()
                    ),
                })
            }
            other => Ok(other),
        }
    }
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

    /// The judge's API key, if one is configured.
    pub fn judge_api_key(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let lookup = secret::SecretLookup {
            key: "judge.api_key",
            file: self.judge.api_key_file.as_deref(),
            env_var: Some(&self.judge.api_key_env),
            credential: "judge-api-key",
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

    /// The OAuth client secret (pre-registered or client credentials), if configured.
    pub fn oauth_client_secret(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let oauth = &self.auth.oauth;
        let lookup = secret::SecretLookup {
            key: "auth.oauth.client_secret",
            file: oauth.client_secret_file.as_deref(),
            env_var: Some(&oauth.client_secret_env),
            credential: "oauth-client-secret",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// The PKCS#8 PEM key of private_key_jwt client authentication, if configured.
    pub fn oauth_private_key(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let oauth = &self.auth.oauth;
        let lookup = secret::SecretLookup {
            key: "auth.oauth.private_key",
            file: oauth.private_key_file.as_deref(),
            env_var: Some(&oauth.private_key_env),
            credential: "oauth-private-key",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// The IdP ID token of cross-app access, if configured.
    pub fn oauth_id_token(&self, env: &Env) -> Result<Option<Secret>, ConfigError> {
        let oauth = &self.auth.oauth;
        let lookup = secret::SecretLookup {
            key: "auth.oauth.id_token",
            file: oauth.id_token_file.as_deref(),
            env_var: Some(&oauth.id_token_env),
            credential: "oauth-id-token",
        };
        Ok(secret::resolve(&lookup, env)?.map(|(secret, _)| secret))
    }

    /// The effective config as TOML, secrets (the database URL's password) masked.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        let mask = |url: &mut String| *url = sections::mask_url(url, false);
        let products = std::iter::once((&mut shown.auth, &mut shown.mcp))
            .chain(shown.targets.values_mut().map(|t| (&mut t.auth, &mut t.mcp)));
        for (auth, mcp) in products {
            for map in [&mut mcp.headers, &mut mcp.env] {
                *map = product::masked(map)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            }
            mask(&mut mcp.url);
            mask(&mut auth.login_url);
            mask(&mut auth.signup_url);
            mask(&mut auth.oauth.client_metadata_url);
            mask(&mut auth.oauth.idp_token_endpoint);
            auth.lookups.values_mut().for_each(|lookup| mask(&mut lookup.url));
        }
        mask(&mut shown.llm.base_url);
        for url in [&mut shown.telemetry.endpoint, &mut shown.telemetry.traces_endpoint]
            .into_iter()
            .flatten()
        {
            mask(url);
        }
        if let Some(url) = &mut shown.api.jwt.jwks_url {
            mask(url);
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|err| format!("# cannot render config: {err}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
    fn production_refuses_short_admin_tokens_and_jwt_secrets() {
        let vars = [
            ("PERSONA_RUNNER_ADMIN_TOKEN", "x"),
            ("PERSONA_RUNNER_JWT_SECRET", "short-secret"),
        ];
        let dev = parse("", &vars).unwrap();
        assert!(
            dev.admin_token(&env(&vars)).unwrap().is_some(),
            "development allows any"
        );
        let prod = parse("environment = \"production\"\n", &vars).unwrap();
        let err = prod.admin_token(&env(&vars)).unwrap_err().to_string();
        assert!(
            err.contains("`api.admin_token`") && err.contains("at least 32"),
            "{err}"
        );
        let err = prod.jwt_secret(&env(&vars)).unwrap_err().to_string();
        assert!(err.contains("`api.jwt.secret`") && err.contains("12 bytes"), "{err}");
        let long = "0123456789abcdef0123456789abcdef";
        let ok = [("PERSONA_RUNNER_ADMIN_TOKEN", long)];
        assert!(prod.admin_token(&env(&ok)).unwrap().is_some());
    }

    #[test]
    fn config_check_masks_credentials_in_every_url() {
        let config = parse(
            "[auth]\nlogin_url = \"https://bot:hunter2@login.test/in?token=abc&x=1\"\n\
             [mcp]\nurl = \"https://ghp_secretvalue@mcp.test/mcp?api_key=k1\"\n\
             [llm]\nbase_url = \"https://llm.test/v1?key=k2\"\n\
             [api.jwt]\njwks_url = \"https://idp.test/jwks?sig=k3\"\n\
             [targets.other.mcp]\nurl = \"https://u:p4ss@other.test/mcp\"\n",
            &[],
        )
        .unwrap();
        let shown = config.to_redacted_toml();
        for secret in ["hunter2", "abc", "ghp_secretvalue", "k1", "k2", "k3", "p4ss"] {
            assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        }
        assert!(shown.contains("https://bot:***@login.test/in?token=***&x=1"), "{shown}");
        assert!(shown.contains("https://***@mcp.test/mcp?api_key=***"), "{shown}");
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
