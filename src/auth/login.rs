//! Logging personas in: the login request, session lookups, and a per-persona cache of
//! credentials until shortly before the token expires.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::password::{SeedSecret, SeedSecretError, derive_password};
use crate::config::{AuthConfig, AuthMode, AuthorizeWith, Config, ConfigError, Env, LookupConfig, Secret};
use crate::http::RetryPolicy;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("login of {email} failed: {url} answered HTTP {status}{hint}")]
    Rejected {
        email: String,
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("login of {email} failed: cannot reach {url}: {reason}")]
    Unreachable { email: String, url: String, reason: String },
    #[error("login of {email} failed: {url}: {reason}")]
    Redirect { email: String, url: String, reason: String },
    #[error(
        "login of {email} failed: {url} answered HTTP {status}, but {reason} (is auth.login_url the \
         product's JSON login API rather than a web page?)"
    )]
    NotJson {
        email: String,
        url: String,
        status: u16,
        reason: String,
    },
    #[error("login of {email}: the response has no {what} at JSON pointer `{pointer}` (see auth.{key})")]
    MissingField {
        email: String,
        what: &'static str,
        pointer: String,
        key: &'static str,
    },
    #[error("session lookup `{name}` for {email} failed: {reason}")]
    Lookup {
        name: String,
        email: String,
        reason: String,
    },
    #[error("auth.mode = \"static\" needs a token: set {env_var} or auth.static_token_file")]
    NoStaticToken { env_var: String },
    #[error(transparent)]
    Seed(#[from] SeedSecretError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl AuthError {
    /// The class of the failure, as a span's `error.type` (never the email or URL).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rejected { .. } => "rejected",
            Self::Unreachable { .. } => "unreachable",
            Self::Redirect { .. } => "redirect",
            Self::NotJson { .. } => "not_json",
            Self::MissingField { .. } => "missing_field",
            Self::Lookup { .. } => "lookup_failed",
            Self::NoStaticToken { .. } => "no_static_token",
            Self::Seed(_) => "seed_secret",
            Self::Config(_) => "config",
        }
    }
}

/// What a logged-in persona presents to the gateway.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Bearer token; `None` with `auth.mode = "none"`.
    pub token: Option<Secret>,
    pub user_id: Option<String>,
    /// Values for `{placeholders}` in `mcp.headers`: `email`, `user_id`, every lookup.
    pub values: BTreeMap<String, String>,
    /// When to log in again (the token's `exp` minus the refresh margin).
    pub refresh_at: DateTime<Utc>,
    /// The derived password it logged in with (kept to redact it wherever it appears).
    pub password: Option<Secret>,
    /// With `auth.mode = "oauth"`: the persona's product login, carried to the
    /// authorization endpoint (`auth.oauth.authorize_with`), never sent to the gateway.
    pub session: Option<Secret>,
}

impl Credentials {
    /// Every secret value these credentials hold, for the redactor.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.token
            .iter()
            .chain(self.password.iter())
            .chain(self.session.iter())
            .map(Secret::expose)
    }
}

/// Logs personas in and caches their credentials.
pub struct Authenticator {
    config: AuthConfig,
    seed: Option<SeedSecret>,
    static_token: Option<Secret>,
    http: reqwest::Client,
    retry: RetryPolicy,
    cache: Mutex<HashMap<String, Arc<Credentials>>>,
}

impl Authenticator {
    pub fn new(config: &Config, env: &Env) -> Result<Self, AuthError> {
        let seed = match config.auth.mode {
            AuthMode::Login => Some(SeedSecret::resolve(config, env)?),
            AuthMode::Oauth if config.auth.oauth.authorize_with != AuthorizeWith::None => {
                Some(SeedSecret::resolve(config, env)?)
            }
            _ => None,
        };
        let static_token = match config.auth.mode {
            AuthMode::Static => Some(config.static_token(env)?.ok_or_else(|| AuthError::NoStaticToken {
                env_var: config.auth.static_token_env.clone(),
            })?),
            _ => None,
        };
        Ok(Self {
            config: config.auth.clone(),
            seed,
            static_token,
            http: crate::http::client(Duration::from_secs(30)),
            retry: RetryPolicy::new(&config.retry),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Cached credentials of `email`, logging in when there are none or they are due
    /// for refresh.
    pub async fn credentials(&self, email: &str) -> Result<Arc<Credentials>, AuthError> {
        if let Some(cached) = self.cache.lock().expect("auth cache lock").get(email)
            && cached.refresh_at > Utc::now()
        {
            return Ok(cached.clone());
        }
        let fresh = Arc::new(self.log_in(email).await?);
        self.cache
            .lock()
            .expect("auth cache lock")
            .insert(email.to_string(), fresh.clone());
        Ok(fresh)
    }

    /// Forgets the cached credentials of `email` (after the gateway rejected them).
    pub fn invalidate(&self, email: &str) {
        self.cache.lock().expect("auth cache lock").remove(email);
    }

    /// Drops cached credentials that are due for refresh anyway (the cache is bounded by
    /// the personas that logged in recently, not by all that ever did).
    pub fn prune(&self) {
        let now = Utc::now();
        self.cache
            .lock()
            .expect("auth cache lock")
            .retain(|_, credentials| credentials.refresh_at > now);
    }

    async fn log_in(&self, email: &str) -> Result<Credentials, AuthError> {
        let mut values = BTreeMap::from([("email".to_string(), email.to_string())]);
        let far_future = crate::time::after(Utc::now(), Duration::from_secs(3650 * 86_400));
        let (token, user_id, refresh_at, password) = match self.config.mode {
            AuthMode::None => (None, None, far_future, None),
            AuthMode::Oauth if self.config.oauth.authorize_with == AuthorizeWith::None => {
                (None, None, far_future, None)
            }
            AuthMode::Static => (self.static_token.clone(), None, far_future, None),
            AuthMode::Login | AuthMode::Oauth => {
                let (token, user_id, password) = self.post_login(email).await?;
                let expires = jwt_expiry(token.expose())
                    .unwrap_or_else(|| crate::time::after(Utc::now(), self.config.token_ttl.0));
                (
                    Some(token),
                    user_id,
                    crate::time::before(expires, self.config.refresh_margin.0),
                    Some(password),
                )
            }
        };
        if let Some(user_id) = &user_id {
            values.insert("user_id".into(), user_id.clone());
        }
        if let Some(token) = &token {
            for (name, lookup) in &self.config.lookups {
                let value = self.lookup(email, name, lookup, token).await?;
                values.insert(name.clone(), value);
            }
        }
        tracing::debug!(email, "persona logged in");
        // Under OAuth the login only proves the persona to the authorization server; the
        // gateway gets OAuth tokens.
        let (token, session) = match self.config.mode {
            AuthMode::Oauth => (None, token),
            _ => (token, None),
        };
        Ok(Credentials {
            token,
            user_id,
            values,
            refresh_at,
            password,
            session,
        })
    }

    async fn post_login(&self, email: &str) -> Result<(Secret, Option<String>, Secret), AuthError> {
        let seed = self.seed.as_ref().expect("login mode resolves the seed secret");
        let password = derive_password(&seed.secret, email);
        let url = &self.config.login_url;
        let response = self
            .retry
            .send("login", || {
                self.http
                    .post(url)
                    .json(&serde_json::json!({"email": email, "password": password.expose()}))
            })
            .await
            .map_err(|err| {
                let (email, url, reason) = (email.into(), crate::http::display_url(url), crate::http::describe(&err));
                if err.is_redirect() {
                    AuthError::Redirect { email, url, reason }
                } else {
                    AuthError::Unreachable { email, url, reason }
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => {
                    " (wrong password: is the persona seeded in the product with the same seed \
                     secret?)"
                }
                404 => " (is auth.login_url right?)",
                _ => "",
            };
            return Err(AuthError::Rejected {
                email: email.into(),
                url: crate::http::display_url(url),
                status: status.as_u16(),
                hint,
            });
        }
        let html = is_html(response.headers());
        let body: Value = crate::http::read_json(response, crate::http::MAX_BODY_BYTES)
            .await
            .map_err(|reason| AuthError::NotJson {
                email: email.into(),
                url: crate::http::display_url(url),
                status: status.as_u16(),
                reason: if html {
                    "with an HTML page, not JSON".into()
                } else {
                    reason
                },
            })?;
        let token = body
            .pointer(&self.config.token_pointer)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::MissingField {
                email: email.into(),
                what: "token",
                pointer: self.config.token_pointer.clone(),
                key: "token_pointer",
            })?;
        let user_id = if self.config.user_id_pointer.is_empty() {
            None
        } else {
            Some(
                scalar(body.pointer(&self.config.user_id_pointer)).ok_or_else(|| AuthError::MissingField {
                    email: email.into(),
                    what: "user id",
                    pointer: self.config.user_id_pointer.clone(),
                    key: "user_id_pointer",
                })?,
            )
        };
        Ok((Secret::new(token), user_id, password))
    }

    async fn lookup(
        &self,
        email: &str,
        name: &str,
        lookup: &LookupConfig,
        token: &Secret,
    ) -> Result<String, AuthError> {
        let fail = |reason: String| AuthError::Lookup {
            name: name.into(),
            email: email.into(),
            reason,
        };
        let response = self
            .retry
            .send("session lookup", || {
                self.http.get(&lookup.url).bearer_auth(token.expose())
            })
            .await
            .map_err(|err| fail(crate::http::describe(&err)))?;
        if !response.status().is_success() {
            return Err(fail(format!(
                "{} answered HTTP {}",
                crate::http::display_url(&lookup.url),
                response.status().as_u16()
            )));
        }
        let body: Value = crate::http::read_json(response, crate::http::MAX_BODY_BYTES)
            .await
            .map_err(fail)?;
        pick(&body, lookup).ok_or_else(|| {
            fail(format!(
                "no value at `{}` in the items at `{}` of {}",
                lookup.value,
                lookup.items,
                crate::http::display_url(&lookup.url)
            ))
        })
    }
}

/// Applies a lookup to a response body: items, filter (first match, else first), value.
pub fn pick(body: &Value, lookup: &LookupConfig) -> Option<String> {
    let items = body.pointer(&lookup.items)?;
    let item = match items {
        Value::Array(list) => list
            .iter()
            .find(|item| {
                lookup
                    .filter
                    .iter()
                    .all(|(pointer, want)| scalar(item.pointer(pointer)).as_deref() == Some(want))
            })
            .or_else(|| list.first())?,
        single => single,
    };
    scalar(item.pointer(&lookup.value))
}

fn is_html(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("text/html"))
}

fn scalar(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `exp` claim of a JWT, read without verifying it: the token is the gateway's to
/// check; we only need to know when to fetch a new one.
pub fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?).ok()?;
    DateTime::from_timestamp(claims.get("exp")?.as_i64()?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exp_from_a_jwt() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"u1","exp":1900000000}"#);
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig");
        assert_eq!(jwt_expiry(&token).unwrap().timestamp(), 1_900_000_000);
        assert_eq!(jwt_expiry("opaque-token"), None);
    }

    #[test]
    fn lookups_pick_the_first_match_or_the_first_item() {
        let body = serde_json::json!([
            {"id": "org-1", "metadata": {"type": "team"}},
            {"id": "org-2", "metadata": {"type": "personal"}}
        ]);
        let lookup = LookupConfig {
            url: String::new(),
            items: String::new(),
            filter: BTreeMap::from([("/metadata/type".into(), "personal".into())]),
            value: "/id".into(),
        };
        assert_eq!(pick(&body, &lookup).as_deref(), Some("org-2"));
        let no_match = LookupConfig {
            filter: BTreeMap::from([("/metadata/type".into(), "family".into())]),
            ..lookup.clone()
        };
        assert_eq!(pick(&body, &no_match).as_deref(), Some("org-1"));
        assert_eq!(
            pick(
                &serde_json::json!({"x": []}),
                &LookupConfig {
                    items: "/x".into(),
                    ..lookup
                }
            ),
            None
        );
    }
}
