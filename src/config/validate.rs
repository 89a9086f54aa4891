//! Validation of a loaded config: every rule names the key it checks.

use super::*;

/// Checks the values serde cannot: returns the key and what is wrong with it.
pub(super) fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    database(config)?;
    signup(config)?;
    catalog(config)?;
    api(config)?;
    limits(config)?;
    mcp(config)?;
    durations(config)?;
    scale(config)?;
    pool(config)?;
    pointers(config)?;
    oauth(config)?;
    checks(config)?;
    config.spaces.validate()?;
    telemetry::validate(&config.telemetry)?;
    rest(config)
}

/// `[checks]` and `[judge]`.
fn checks(config: &Config) -> Result<(), (&'static str, String)> {
    let checks = &config.checks;
    if !checks.cadence.trim().is_empty() {
        <croner::Cron as std::str::FromStr>::from_str(checks.cadence.trim()).map_err(|err| {
            (
                "checks.cadence",
                format!(
                    "`{}` is not a cron expression ({err}); e.g. \"0 6 * * *\"",
                    checks.cadence
                ),
            )
        })?;
    }
    if checks.trials == 0 {
        return Err(("checks.trials", "must be at least 1".into()));
    }
    if checks.min_pass > checks.trials {
        return Err((
            "checks.min_pass",
            format!("{} is more than checks.trials = {}", checks.min_pass, checks.trials),
        ));
    }
    if let Some(own) = OWN_REQUEST_KEYS
        .iter()
        .find(|k| config.judge.extra_body.contains_key(**k))
    {
        return Err(("judge.extra_body", format!("`{own}` is set by the runner itself")));
    }
    if !(0.0..=2.0).contains(&config.judge.temperature) {
        return Err(("judge.temperature", "must be between 0 and 2".into()));
    }
    Ok(())
}

/// `[database]`.
fn database(config: &Config) -> Result<(), (&'static str, String)> {
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
    Ok(())
}

/// Provisioning's sign-up endpoint and body template.
fn signup(config: &Config) -> Result<(), (&'static str, String)> {
    if !config.auth.signup_url.is_empty() {
        if !(config.auth.signup_url.starts_with("http://") || config.auth.signup_url.starts_with("https://")) {
            return Err((
                "auth.signup_url",
                "must be an http:// or https:// URL (or empty)".into(),
            ));
        }
        super::signup_body(&config.auth.signup_body, "a@b.test", "p", "n")
            .map_err(|message| ("auth.signup_body", message))?;
    }
    Ok(())
}

/// `[catalog]`'s email domains.
fn catalog(config: &Config) -> Result<(), (&'static str, String)> {
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
    Ok(())
}

/// `[api]`, with its JWT verification.
fn api(config: &Config) -> Result<(), (&'static str, String)> {
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
    Ok(())
}

/// The feedback report's thresholds, the scheduler's and the retry policy's counts.
fn limits(config: &Config) -> Result<(), (&'static str, String)> {
    if !(config.feedback.regression_drop > 0.0 && config.feedback.regression_drop <= 4.0) {
        return Err((
            "feedback.regression_drop",
            "must be above 0 and at most 4 (ratings are 1..5)".into(),
        ));
    }
    if config.feedback.regression_min_ratings < 1 {
        return Err(("feedback.regression_min_ratings", "must be at least 1".into()));
    }
    if config.scheduler.concurrency == 0 {
        return Err(("scheduler.concurrency", "must be at least 1".into()));
    }
    if config.scheduler.max_attempts == 0 {
        return Err((
            "scheduler.max_attempts",
            "must be at least 1 (the first attempt)".into(),
        ));
    }
    if config.retry.max_attempts == 0 {
        return Err(("retry.max_attempts", "must be at least 1 (the first attempt)".into()));
    }
    Ok(())
}

/// `[mcp]`: the module separator, the stdio command and the policy's globs.
fn mcp(config: &Config) -> Result<(), (&'static str, String)> {
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
    Ok(())
}

/// How many ticks at once, and what spend costs.
fn scale(config: &Config) -> Result<(), (&'static str, String)> {
    if config.scheduler.concurrency > MAX_CONCURRENCY {
        return Err((
            "scheduler.concurrency",
            format!(
                "{} is more ticks at once than any gateway or LLM endpoint takes; at most {MAX_CONCURRENCY}",
                config.scheduler.concurrency
            ),
        ));
    }
    for (key, price) in [
        ("budget.price_in_per_1k", config.budget.price_in_per_1k),
        ("budget.price_out_per_1k", config.budget.price_out_per_1k),
    ] {
        if !(price.is_finite() && (0.0..=1000.0).contains(&price)) {
            return Err((
                key,
                format!("must be a price from 0 to 1000 per 1,000 tokens, got {price}"),
            ));
        }
    }
    Ok(())
}

/// The pool's upper bound.
fn pool(config: &Config) -> Result<(), (&'static str, String)> {
    if config.database.max_connections > 1000 {
        return Err(("database.max_connections", "must be at most 1000".into()));
    }
    Ok(())
}

/// Keys of a chat request the runner writes itself: `llm.extra_body` may not set them.
const OWN_REQUEST_KEYS: [&str; 4] = ["model", "messages", "tools", "stream"];

/// The roots offered, the temperature, the catalog's default zone, the log filter.
fn rest(config: &Config) -> Result<(), (&'static str, String)> {
    if let Some(own) = OWN_REQUEST_KEYS
        .iter()
        .find(|k| config.llm.extra_body.contains_key(**k))
    {
        return Err((
            "llm.extra_body",
            format!(
                "`{own}` is set by the runner itself; extra_body adds what a server needs besides (e.g. top_k, seed)"
            ),
        ));
    }
    for root in &config.mcp.roots {
        if !root.uri.contains("://") {
            return Err((
                "mcp.roots",
                format!("`{}` is not a URI; write e.g. file:///home/persona/notes", root.uri),
            ));
        }
    }
    if !(0.0..=2.0).contains(&config.llm.temperature) {
        return Err(("llm.temperature", "must be between 0 and 2".into()));
    }
    crate::model::persona::parse_time_zone(&config.catalog.default_time_zone)
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

/// Ticks at once, at most: far above what one runner process can drive.
const MAX_CONCURRENCY: usize = 10_000;

/// Durations that break operation when zero: every tick would time out, a loop would spin.
fn durations(config: &Config) -> Result<(), (&'static str, String)> {
    for (key, value) in [
        ("tick.tick_timeout", config.tick.tick_timeout),
        ("tick.lease", config.tick.lease),
        ("mcp.call_timeout", config.mcp.call_timeout),
        ("mcp.connect_timeout", config.mcp.connect_timeout),
        ("scheduler.reload_every", config.scheduler.reload_every),
        ("scheduler.sweep_every", config.scheduler.sweep_every),
        ("auth.token_ttl", config.auth.token_ttl),
        ("retention.every", config.retention.every),
    ] {
        if value.0.is_zero() {
            return Err((key, "must be longer than 0s".into()));
        }
    }
    if config.scheduler.reload_every.0 < std::time::Duration::from_secs(1) {
        return Err((
            "scheduler.reload_every",
            "must be at least 1s (each reload reads the changed personas)".into(),
        ));
    }
    if config.scheduler.sweep_every.0 < std::time::Duration::from_secs(1) {
        return Err(("scheduler.sweep_every", "must be at least 1s".into()));
    }
    Ok(())
}

/// JSON pointers start with `/` (RFC 6901); `token` instead of `/token` finds nothing.
fn pointers(config: &Config) -> Result<(), (&'static str, String)> {
    let pointer = |key: &'static str, value: &str, may_be_empty: bool| {
        if (value.is_empty() && may_be_empty) || value.starts_with('/') {
            Ok(())
        } else if value.is_empty() {
            Err((key, "must not be empty; e.g. \"/token\"".to_string()))
        } else {
            Err((
                key,
                format!("`{value}` is not a JSON pointer: it starts with `/`, e.g. \"/{value}\""),
            ))
        }
    };
    pointer("auth.token_pointer", &config.auth.token_pointer, false)?;
    pointer("auth.user_id_pointer", &config.auth.user_id_pointer, true)?;
    for lookup in config.auth.lookups.values() {
        pointer("auth.lookups.items", &lookup.items, true)?;
        pointer("auth.lookups.value", &lookup.value, false)?;
        for key in lookup.filter.keys() {
            pointer("auth.lookups.where", key, false)?;
        }
    }
    Ok(())
}

fn oauth(config: &Config) -> Result<(), (&'static str, String)> {
    let oauth = &config.auth.oauth;
    if config.auth.mode != AuthMode::Oauth {
        return Ok(());
    }
    if config.mcp.transport == McpTransport::Stdio {
        return Err((
            "auth.mode",
            "\"oauth\" authorizes HTTP requests; a stdio server gets no token (use \"none\")".into(),
        ));
    }
    reqwest::Url::parse(&oauth.redirect_uri).map_err(|err| {
        (
            "auth.oauth.redirect_uri",
            format!("`{}` is not an absolute URL ({err})", oauth.redirect_uri),
        )
    })?;
    if !oauth.client_metadata_url.is_empty() {
        let parsed = reqwest::Url::parse(&oauth.client_metadata_url).ok();
        if !parsed.is_some_and(|u| u.scheme() == "https" && u.path() != "/") {
            return Err((
                "auth.oauth.client_metadata_url",
                "must be an https URL with a path (the document that is the client id)".into(),
            ));
        }
    }
    const ALGORITHMS: &[&str] = &[
        "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
    ];
    if !ALGORITHMS.contains(&oauth.signing_algorithm.as_str()) {
        return Err((
            "auth.oauth.signing_algorithm",
            format!("`{}` is not one of {}", oauth.signing_algorithm, ALGORITHMS.join(", ")),
        ));
    }
    match oauth.grant {
        OAuthGrant::ClientCredentials if oauth.client_id.is_empty() => Err((
            "auth.oauth.client_id",
            "grant = \"client_credentials\" needs the registered client id".into(),
        )),
        OAuthGrant::CrossApp if oauth.client_id.is_empty() => Err((
            "auth.oauth.client_id",
            "grant = \"cross_app\" needs the client id registered at the resource's authorization server".into(),
        )),
        OAuthGrant::CrossApp
            if oauth.idp_issuer.is_empty() || oauth.idp_token_endpoint.is_empty() || oauth.idp_client_id.is_empty() =>
        {
            Err((
                "auth.oauth.idp_token_endpoint",
                "grant = \"cross_app\" needs idp_issuer, idp_token_endpoint and idp_client_id".into(),
            ))
        }
        _ if oauth.authorize_with != AuthorizeWith::None && config.auth.login_url.is_empty() => Err((
            "auth.oauth.authorize_with",
            "carrying the persona's product login needs auth.login_url".into(),
        )),
        _ => Ok(()),
    }
}
