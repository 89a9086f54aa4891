//! Who may call what: the admin token (bearer, or a server-side dashboard session's
//! cookie on safe methods) and user JWTs of the profile API (HS256 secret or JWKS keys, issuer,
//! audience, expiry, not-before and algorithm checked; tenant and user taken from the
//! claims). Unknown key ids refetch the JWKS at most once per `jwks_min_refetch`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::RwLock;
use uuid::Uuid;

use super::{ApiError, ApiState};
use crate::auth::constant_time_eq;
use crate::config::{JwtConfig, Secret};
use crate::model::persona::DEFAULT_TENANT;

/// Name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "persona_runner_session";
/// Header naming the tenant an admin request acts on (the default tenant without it).
pub const TENANT_HEADER: &str = "x-persona-runner-tenant";

/// What a session is bound to: an HMAC of a fixed label keyed by the admin token, so a
/// rotated token ends every session without keeping the token itself.
fn token_fingerprint(admin_token: &Secret) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(admin_token.expose().as_bytes()).expect("any key length");
    mac.update(b"persona-runner dashboard session v2");
    mac.finalize().into_bytes().into()
}

/// Sessions kept at most (the oldest is dropped beyond it): sign-ins cannot grow memory.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    expires: Instant,
    token: [u8; 32],
}

/// The dashboard's sessions, held server-side: the cookie carries a random id (32 bytes
/// from the OS CSPRNG), the server keeps its SHA-256 with an expiry and the admin token's
/// fingerprint. `/logout` removes it; a rotated admin token invalidates all of them.
/// Sessions live in this process: a restart signs everyone out.
#[derive(Default)]
pub struct Sessions {
    open: std::sync::Mutex<std::collections::HashMap<[u8; 32], Session>>,
}

fn session_key(id: &str) -> [u8; 32] {
    use sha2::Digest as _;
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for the holder of `admin_token`; the cookie value.
    pub fn open(&self, admin_token: &Secret, ttl: Duration) -> String {
        let id: String = crate::auth::random_bytes::<32>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut open = self.open.lock().expect("sessions lock");
        let now = Instant::now();
        open.retain(|_, session| session.expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            open.remove(&oldest);
        }
        open.insert(
            session_key(&id),
            Session {
                expires: now + ttl,
                token: token_fingerprint(admin_token),
            },
        );
        id
    }

    /// Whether `id` is an open, unexpired session of the current admin token.
    pub fn check(&self, id: &str, admin_token: &Secret) -> bool {
        let key = session_key(id);
        let mut open = self.open.lock().expect("sessions lock");
        let valid = open
            .get(&key)
            .is_some_and(|s| s.expires > Instant::now() && constant_time_eq(&s.token, &token_fingerprint(admin_token)));
        if !valid {
            open.remove(&key);
        }
        valid
    }

    /// Ends the session `id` (sign-out).
    pub fn close(&self, id: &str) {
        self.open.lock().expect("sessions lock").remove(&session_key(id));
    }
}

/// The session id a request's cookie carries.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}

/// Whether the request carries the admin token (or, on a safe method, the cookie of an
/// open dashboard session). Cookies are not accepted on writes: no cross-site request
/// forgery.
pub fn is_admin(headers: &HeaderMap, method: &Method, token: &Secret, sessions: &Sessions) -> bool {
    if let Some(given) = bearer(headers) {
        return constant_time_eq(given.as_bytes(), token.expose().as_bytes());
    }
    let safe = matches!(*method, Method::GET | Method::HEAD);
    safe && session_cookie(headers).is_some_and(|id| sessions.check(id, token))
}

/// A request made with the admin token, acting on `tenant`.
#[derive(Clone, Copy, Debug)]
pub struct Admin {
    pub tenant: Uuid,
}

impl FromRequestParts<ApiState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let Some(token) = state.admin_token() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "admin routes are disabled: no admin token configured (set PERSONA_RUNNER_ADMIN_TOKEN or api.admin_token_file)",
            ));
        };
        if !is_admin(&parts.headers, &parts.method, &token, state.sessions()) {
            return Err(ApiError::unauthorized(
                "missing or wrong admin token (Authorization: Bearer <admin token>)",
            ));
        }
        let tenant = match parts.headers.get(TENANT_HEADER) {
            None => DEFAULT_TENANT,
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| Uuid::parse_str(v.trim()).ok())
                .ok_or_else(|| ApiError::field("X-Persona-Runner-Tenant", "must be a tenant id (a UUID)"))?,
        };
        Ok(Self { tenant })
    }
}

/// The caller of a profile route, from a verified JWT.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: Uuid,
    pub tenant: Uuid,
    pub email: Option<String>,
    pub name: Option<String>,
    pub is_admin: bool,
}

impl FromRequestParts<ApiState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let Some(verifier) = state.jwt() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "profile routes are disabled: no JWT key configured (set PERSONA_RUNNER_JWT_SECRET, api.jwt.secret_file or api.jwt.jwks_url)",
            ));
        };
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token (Authorization: Bearer <JWT>)"))?;
        verifier.verify(token).await.map_err(ApiError::unauthorized)
    }
}

/// A profile-API caller holding the admin role.
#[derive(Clone, Debug)]
pub struct ProfileAdmin(pub User);

impl FromRequestParts<ApiState> for ProfileAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let user = User::from_request_parts(parts, state).await?;
        if !user.is_admin {
            let role = state.jwt().map(|v| v.config.admin_role.clone()).unwrap_or_default();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this route needs the `{role}` role in the token"),
            ));
        }
        Ok(Self(user))
    }
}

enum Keys {
    Secret(DecodingKey),
    Jwks {
        url: String,
        client: reqwest::Client,
        cache: RwLock<Option<(Instant, JwkSet)>>,
        /// When the keys were last fetched (or tried): one fetch at a time, at most one
        /// per `jwks_min_refetch` for key ids the cached set lacks.
        fetched: tokio::sync::Mutex<Option<Instant>>,
    },
}

/// Verifies user JWTs against the configured key source and claims.
pub struct JwtVerifier {
    keys: Keys,
    algorithms: Vec<Algorithm>,
    config: JwtConfig,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl JwtVerifier {
    /// `None` when neither a JWKS URL nor a secret is configured (profile routes off).
    /// A JWKS source accepts only asymmetric algorithms and a secret only HMAC ones, so a
    /// public key can never be abused as an HMAC secret.
    pub fn new(config: &JwtConfig, secret: Option<&Secret>) -> Option<Self> {
        let algorithms = |keep: fn(Algorithm) -> bool| -> Vec<Algorithm> {
            config
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_str(a).ok())
                .filter(|a| keep(*a))
                .collect()
        };
        if let Some(url) = &config.jwks_url {
            return Some(Self {
                keys: Keys::Jwks {
                    url: url.clone(),
                    client: crate::http::client(Duration::from_secs(10)),
                    cache: RwLock::new(None),
                    fetched: tokio::sync::Mutex::new(None),
                },
                algorithms: algorithms(|a| !is_hmac(a)),
                config: config.clone(),
            });
        }
        secret.map(|secret| Self {
            keys: Keys::Secret(DecodingKey::from_secret(secret.expose().as_bytes())),
            algorithms: algorithms(is_hmac),
            config: config.clone(),
        })
    }

    async fn jwks_key(&self, kid: Option<&str>) -> Result<DecodingKey, String> {
        let Keys::Jwks {
            url,
            client,
            cache,
            fetched,
        } = &self.keys
        else {
            unreachable!("only called for JWKS sources")
        };
        let pick = |set: &JwkSet| -> Option<DecodingKey> {
            let jwk = match kid {
                Some(kid) => set.find(kid)?,
                None if set.keys.len() == 1 => &set.keys[0],
                None => return None,
            };
            DecodingKey::from_jwk(jwk).ok()
        };
        let unknown = || match kid {
            Some(kid) => format!("no key `{kid}` in the JWKS document"),
            None => "the token names no key id (kid) and the JWKS holds several keys".to_string(),
        };
        let cached = |cache: &Option<(Instant, JwkSet)>| -> Option<DecodingKey> {
            cache
                .as_ref()
                .filter(|(at, _)| at.elapsed() < self.config.jwks_refresh.0)
                .and_then(|(_, set)| pick(set))
        };
        if let Some(key) = cached(&*cache.read().await) {
            return Ok(key);
        }
        // Stale, or a key id we have not seen (the provider rotated keys): fetch again,
        // one request at a time and, for unknown ids, not sooner than jwks_min_refetch.
        let mut last = fetched.lock().await;
        if let Some(key) = cached(&*cache.read().await) {
            return Ok(key);
        }
        if last.is_some_and(|at| at.elapsed() < self.config.jwks_min_refetch.0) {
            // Fetched (or tried) moments ago: answer from what we have, even if stale.
            return match cache.read().await.as_ref() {
                Some((_, set)) => pick(set).ok_or_else(unknown),
                None => Err("the JWKS keys could not be fetched; try again shortly".to_string()),
            };
        }
        *last = Some(Instant::now());
        let response = client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| format!("cannot fetch the JWKS keys: {}", crate::http::describe(&err)))?;
        let set: JwkSet = crate::http::read_json(response, crate::http::MAX_BODY_BYTES)
            .await
            .map_err(|err| format!("the JWKS document is not valid: {err}"))?;
        let key = pick(&set).ok_or_else(unknown);
        *cache.write().await = Some((Instant::now(), set));
        key
    }

    /// Checks signature, algorithm, issuer, audience, expiry and the user and tenant
    /// claims. The error says which check failed, never the token.
    pub async fn verify(&self, token: &str) -> Result<User, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the bearer token is not a JWT".to_string())?;
        if !self.algorithms.contains(&header.alg) {
            return Err(format!(
                "tokens signed with {:?} are not accepted (api.jwt.algorithms)",
                header.alg
            ));
        }
        let key = match &self.keys {
            Keys::Secret(key) => key.clone(),
            Keys::Jwks { .. } => self.jwks_key(header.kid.as_deref()).await?,
        };
        let mut validation = Validation::new(header.alg);
        validation.algorithms = self.algorithms.clone();
        validation.leeway = self.config.leeway.0.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|err| match err.kind() {
            ErrorKind::ExpiredSignature => "the token has expired".to_string(),
            ErrorKind::InvalidAudience => format!(
                "the token is not meant for this service (audience must be `{}`)",
                self.config.audience
            ),
            ErrorKind::InvalidIssuer => format!("the token was not issued by `{}`", self.config.issuer),
            ErrorKind::InvalidSignature => "the token signature does not verify".to_string(),
            ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
            ErrorKind::MissingRequiredClaim(claim) => format!("the token lacks the `{claim}` claim"),
            ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".to_string(),
            _ => "the token is not valid".to_string(),
        })?;
        let claims = data.claims;
        let uuid_claim = |name: &str| -> Result<Uuid, String> {
            claims
                .get(name)
                .and_then(Value::as_str)
                .and_then(|v| Uuid::parse_str(v).ok())
                .ok_or_else(|| format!("the token's `{name}` claim must be a UUID"))
        };
        let user_id = uuid_claim("sub")?;
        let tenant = uuid_claim(&self.config.tenant_claim)?;
        let has_role = match claims.get(&self.config.roles_claim) {
            Some(Value::String(role)) => role.split_whitespace().any(|r| r == self.config.admin_role),
            Some(Value::Array(roles)) => roles.iter().any(|r| r.as_str() == Some(&self.config.admin_role)),
            _ => false,
        };
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        Ok(User {
            user_id,
            tenant,
            email: text("email"),
            name: text("name"),
            is_admin: has_role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_end_on_close_expire_and_die_with_the_token() {
        let sessions = Sessions::default();
        let token = Secret::new("the admin token, long enough to be real");
        let a = sessions.open(&token, Duration::from_secs(60));
        let b = sessions.open(&token, Duration::from_secs(60));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sessions.check(&a, &token) && sessions.check(&b, &token));
        assert!(!sessions.check("not-a-session", &token));
        sessions.close(&a);
        assert!(!sessions.check(&a, &token), "closed");
        let rotated = Secret::new("a new admin token after rotation, also long");
        assert!(!sessions.check(&b, &rotated), "a new token ends every session");
        let short = sessions.open(&token, Duration::ZERO);
        assert!(!sessions.check(&short, &token), "expired");
    }
}
