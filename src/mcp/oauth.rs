//! OAuth 2.1 for MCP gateways (`auth.mode = "oauth"`), per persona and headless.
//!
//! rmcp's `auth` module does the protocol work: discovery from the 401's
//! `WWW-Authenticate` (RFC 9728 protected resource metadata, RFC 8414 and OpenID
//! discovery, the 2025-03-26 fallbacks), client identity (pre-registered, Client ID
//! Metadata Document, or RFC 7591 registration), PKCE S256, resource indicators, scope
//! selection and upgrade, refresh. This module adds what a persona without a browser
//! needs: it follows the authorization redirects itself (carrying the persona's product
//! login where the product wants one) and reads the code from the redirect to
//! `redirect_uri`, which is never contacted. It also does client credentials with
//! private_key_jwt (rmcp's needs a second crypto backend) and cross-app access.
//!
//! Tokens live in memory per persona, refreshed before expiry, and never logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::transport::auth::{
    AuthError, AuthorizationManager, AuthorizationRequest, AuthorizationSession, ClientCredentialsConfig,
    WWWAuthenticateParams,
};
use serde_json::Value;

use crate::config::{AuthorizeWith, Config, ConfigError, Env, OAuthConfig, OAuthGrant, Secret};

/// Authorizations (each a trip to the authorization endpoint or a token grant) one
/// session may start; a server that keeps refusing is not asked forever.
const MAX_AUTHORIZATIONS: u32 = 3;
/// Redirects followed from the authorization endpoint back to `redirect_uri`.
const MAX_REDIRECTS: usize = 10;
/// Personas whose tokens are kept (the oldest go first beyond it).
const MAX_GRANTS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OAuthError(String);

impl From<AuthError> for OAuthError {
    fn from(err: AuthError) -> Self {
        Self(err.to_string())
    }
}

/// The OAuth side of a runner: its settings and secrets, and every persona's grant.
pub struct OAuth {
    config: OAuthConfig,
    client_secret: Option<Secret>,
    private_key: Option<Secret>,
    id_token: Option<Secret>,
    /// For the authorization redirects and our own token requests: never follows a
    /// redirect by itself.
    http: reqwest::Client,
    grants: Mutex<HashMap<String, Arc<Grant>>>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("grant", &self.config.grant)
            .finish_non_exhaustive()
    }
}

/// One persona's tokens at one gateway.
#[derive(Default)]
pub struct Grant {
    state: tokio::sync::Mutex<GrantState>,
    used: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct GrantState {
    /// Authorization code and client-secret grants: rmcp's manager holds the tokens.
    manager: Option<AuthorizationManager>,
    /// Grants minted here (private_key_jwt, cross-app): the token and when it expires.
    minted: Option<(Secret, Instant)>,
}

impl OAuth {
    pub fn new(config: &Config, env: &Env) -> Result<Self, ConfigError> {
        let http = crate::http::builder(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client with static settings builds");
        Ok(Self {
            config: config.auth.oauth.clone(),
            client_secret: config.oauth_client_secret(env)?,
            private_key: config.oauth_private_key(env)?,
            id_token: config.oauth_id_token(env)?,
            http,
            grants: Mutex::new(HashMap::new()),
        })
    }

    /// The grant of `persona` (an email) at the gateway `server`.
    pub fn grant(&self, persona: &str, server: &str) -> Arc<Grant> {
        let key = format!("{persona}\n{server}");
        let mut grants = self.grants.lock().expect("oauth grants lock");
        if grants.len() >= MAX_GRANTS && !grants.contains_key(&key) {
            // Evict the one used longest ago.
            if let Some(oldest) = grants
                .iter()
                .min_by_key(|(_, g)| *g.used.lock().expect("grant lock"))
                .map(|(k, _)| k.clone())
            {
                grants.remove(&oldest);
            }
        }
        let grant = grants.entry(key).or_default().clone();
        *grant.used.lock().expect("grant lock") = Some(Instant::now());
        grant
    }

    /// Secrets of the configuration, for the redactor.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        [&self.client_secret, &self.private_key, &self.id_token]
            .into_iter()
            .flatten()
            .map(Secret::expose)
    }
}

/// What a session authorizes with: the persona's grant, its product login, and how many
/// authorizations this session has started.
pub struct Authorizer {
    oauth: Arc<OAuth>,
    grant: Arc<Grant>,
    server: String,
    /// The persona's product login, carried to the authorization endpoint.
    login: Option<Secret>,
    authorizations: AtomicU32,
    /// Every token handed out, for the tick's redactor.
    issued: Mutex<Vec<String>>,
}

impl Authorizer {
    pub fn new(oauth: Arc<OAuth>, persona: &str, server: &str, login: Option<Secret>) -> Self {
        Self {
            grant: oauth.grant(persona, server),
            oauth,
            server: server.to_string(),
            login,
            authorizations: AtomicU32::new(0),
            issued: Mutex::new(Vec::new()),
        }
    }

    /// Tokens this session used so far.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().expect("issued lock").clone()
    }

    fn hand_out(&self, token: String) -> String {
        let mut issued = self.issued.lock().expect("issued lock");
        if !issued.contains(&token) {
            issued.push(token.clone());
        }
        token
    }

    fn count_authorization(&self) -> Result<(), OAuthError> {
        let done = self.authorizations.fetch_add(1, Ordering::Relaxed);
        if done >= MAX_AUTHORIZATIONS {
            return Err(OAuthError(format!(
                "gave up after {MAX_AUTHORIZATIONS} authorizations in one session: the server keeps refusing the \
                 tokens it grants"
            )));
        }
        Ok(())
    }

    /// The current token, refreshed when it is about to expire; `None` before the first
    /// authorization (the request goes out without one and the 401 starts it).
    pub async fn token(&self) -> Result<Option<String>, OAuthError> {
        let state = self.grant.state.lock().await;
        if let Some((token, expires)) = &state.minted
            && *expires > crate::time::instant_after(Instant::now(), Duration::from_secs(30))
        {
            return Ok(Some(self.hand_out(token.expose().to_string())));
        }
        match &state.manager {
            Some(manager) => match manager.get_access_token().await {
                Ok(token) => Ok(Some(self.hand_out(token))),
                Err(AuthError::AuthorizationRequired | AuthError::TokenExpired) => Ok(None),
                Err(err) => Err(err.into()),
            },
            None => Ok(None),
        }
    }

    /// After a 401: a rejected token is refreshed once; otherwise (or if that fails) the
    /// grant starts over from the challenge.
    pub async fn unauthorized(&self, challenge: &str, sent: Option<&str>) -> Result<String, OAuthError> {
        let mut state = self.grant.state.lock().await;
        if sent.is_some()
            && let Some(manager) = &state.manager
            && let Ok(fresh) = manager.refresh_token().await
        {
            let token = fresh_token(&fresh);
            if Some(token.as_str()) != sent {
                return Ok(self.hand_out(token));
            }
        }
        state.manager = None;
        state.minted = None;
        self.count_authorization()?;
        let token = match self.oauth.config.grant {
            OAuthGrant::AuthorizationCode => self.authorization_code(&mut state, challenge).await?,
            OAuthGrant::ClientCredentials => self.client_credentials(&mut state, challenge).await?,
            OAuthGrant::CrossApp => self.cross_app(&mut state, challenge).await?,
        };
        Ok(self.hand_out(token))
    }

    /// After a 403 `insufficient_scope`: authorize again for the scopes the challenge
    /// names (with those already granted).
    pub async fn insufficient_scope(&self, challenge: &str) -> Result<String, OAuthError> {
        let base = reqwest::Url::parse(&self.server).map_err(|e| OAuthError(e.to_string()))?;
        let params = WWWAuthenticateParams::parse(challenge, &base);
        let Some(scope) = params.scope.filter(|s| !s.trim().is_empty()) else {
            return Err(OAuthError(format!(
                "HTTP 403 without a scope to ask for (WWW-Authenticate: {challenge})"
            )));
        };
        let mut state = self.grant.state.lock().await;
        self.count_authorization()?;
        if self.oauth.config.grant != OAuthGrant::AuthorizationCode {
            // Other grants ask for the scopes afresh.
            state.manager = None;
            state.minted = None;
            let token = match self.oauth.config.grant {
                OAuthGrant::ClientCredentials => self.client_credentials(&mut state, challenge).await?,
                _ => self.cross_app(&mut state, challenge).await?,
            };
            return Ok(self.hand_out(token));
        }
        let Some(manager) = state.manager.take() else {
            drop(state);
            return self.unauthorized(challenge, None).await;
        };
        let url = match manager.request_scope_upgrade(&scope).await {
            Ok(url) => url,
            Err(err) => {
                state.manager = Some(manager);
                return Err(err.into());
            }
        };
        let session = AuthorizationSession::for_scope_upgrade(manager, url, &self.oauth.config.redirect_uri);
        let token = self.complete(session).await;
        match token {
            Ok((manager, token)) => {
                state.manager = Some(manager);
                Ok(self.hand_out(token))
            }
            Err(err) => Err(err),
        }
    }

    async fn authorization_code(&self, state: &mut GrantState, challenge: &str) -> Result<String, OAuthError> {
        let config = &self.oauth.config;
        let mut manager = AuthorizationManager::new(self.server.as_str()).await?;
        let challenge = (!challenge.is_empty()).then_some(challenge);
        let resolution = manager.resolve_metadata_from_challenge(challenge).await?;
        manager.set_metadata(resolution.metadata);
        let mut request =
            AuthorizationRequest::new(config.redirect_uri.clone()).with_client_name(config.client_name.clone());
        request = if config.scopes.is_empty() {
            request.with_initial_scope_selection()
        } else {
            request.with_scopes(config.scopes.iter().cloned())
        };
        if !config.client_id.is_empty() {
            request = request.with_preregistered_client(config.client_id.clone());
            if let Some(secret) = &self.oauth.client_secret {
                request = request.with_client_secret(secret.expose().to_string());
            }
        }
        if !config.client_metadata_url.is_empty() {
            request = request.with_client_metadata_url(config.client_metadata_url.clone());
        }
        let session = AuthorizationSession::new(manager, request)
            .await
            .map_err(|(_, err)| err)?;
        let (manager, token) = self.complete(session).await?;
        state.manager = Some(manager);
        Ok(token)
    }

    /// Walks the authorization URL to the redirect back and exchanges the code.
    async fn complete(&self, session: AuthorizationSession) -> Result<(AuthorizationManager, String), OAuthError> {
        let callback = self.follow(session.get_authorization_url()).await?;
        let tokens = session.handle_callback_url(&callback).await?;
        Ok((session.auth_manager, fresh_token(&tokens)))
    }

    /// Follows the authorization endpoint's redirects (the persona's product login
    /// carried to its origin) until one points at `redirect_uri`; that URL carries the
    /// code.
    async fn follow(&self, authorize_url: &str) -> Result<String, OAuthError> {
        let config = &self.oauth.config;
        let redirect = config.redirect_uri.as_str();
        let start = reqwest::Url::parse(authorize_url).map_err(|e| OAuthError(format!("authorization URL: {e}")))?;
        let mut current = start.clone();
        for _ in 0..MAX_REDIRECTS {
            let mut request = self.oauth.http.get(current.clone());
            if let Some(login) = &self.login
                && current.origin() == start.origin()
            {
                request = match config.authorize_with {
                    AuthorizeWith::None => request,
                    AuthorizeWith::Bearer => request.bearer_auth(login.expose()),
                    AuthorizeWith::Cookie => request.header(
                        reqwest::header::COOKIE,
                        format!("{}={}", config.authorize_cookie, login.expose()),
                    ),
                };
            }
            let response = request
                .send()
                .await
                .map_err(|e| OAuthError(format!("the authorization endpoint: {}", crate::http::describe(&e))))?;
            let status = response.status();
            if !status.is_redirection() {
                return Err(OAuthError(format!(
                    "the authorization endpoint answered HTTP {status} instead of redirecting back to {redirect}: it \
                     probably shows a login or consent page, which a persona cannot fill in. Let it accept the \
                     persona's product login (auth.oauth.authorize_with) or pre-approve the client"
                )));
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    OAuthError(format!(
                        "HTTP {status} from the authorization endpoint without a Location"
                    ))
                })?;
            let next = current
                .join(location)
                .map_err(|e| OAuthError(format!("redirect to `{location}`: {e}")))?;
            if next.as_str().starts_with(redirect) {
                return Ok(next.to_string());
            }
            current = next;
        }
        Err(OAuthError(format!(
            "more than {MAX_REDIRECTS} redirects without reaching {redirect}"
        )))
    }

    async fn client_credentials(&self, state: &mut GrantState, challenge: &str) -> Result<String, OAuthError> {
        let config = &self.oauth.config;
        let mut manager = AuthorizationManager::new(self.server.as_str()).await?;
        let challenge = (!challenge.is_empty()).then_some(challenge);
        let metadata = manager.resolve_metadata_from_challenge(challenge).await?.metadata;
        if let Some(key) = &self.oauth.private_key {
            let (token, expires) = self.private_key_jwt(key, &metadata).await?;
            state.minted = Some((Secret::new(token.clone()), expires));
            return Ok(token);
        }
        let Some(secret) = &self.oauth.client_secret else {
            return Err(OAuthError(format!(
                "grant = \"client_credentials\" needs a client secret ({} or auth.oauth.client_secret_file) or a \
                 private key ({} or auth.oauth.private_key_file)",
                config.client_secret_env, config.private_key_env
            )));
        };
        manager.set_metadata(metadata);
        let credentials = ClientCredentialsConfig::ClientSecret {
            client_id: config.client_id.clone(),
            client_secret: secret.expose().to_string(),
            scopes: config.scopes.clone(),
            resource: Some(self.server.clone()),
        };
        manager.validate_client_credentials_metadata(&credentials)?;
        manager.configure_client_credentials(&credentials)?;
        let tokens = manager.exchange_client_credentials(&credentials).await?;
        state.manager = Some(manager);
        Ok(fresh_token(&tokens))
    }

    /// Client credentials with a signed assertion (RFC 7523 client authentication).
    async fn private_key_jwt(
        &self,
        key: &Secret,
        metadata: &rmcp::transport::auth::AuthorizationMetadata,
    ) -> Result<(String, Instant), OAuthError> {
        let config = &self.oauth.config;
        let audience = metadata
            .issuer
            .clone()
            .unwrap_or_else(|| metadata.token_endpoint.clone());
        let assertion = sign_assertion(&config.client_id, &audience, &config.signing_algorithm, key)?;
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", assertion),
            ("resource", self.server.clone()),
        ];
        if !config.scopes.is_empty() {
            form.push(("scope", config.scopes.join(" ")));
        }
        self.token_request(&metadata.token_endpoint, &form).await
    }

    async fn cross_app(&self, state: &mut GrantState, challenge: &str) -> Result<String, OAuthError> {
        use rmcp::transport::auth::enterprise::{EmaAuthorizationServer, EmaClientAuthentication, EmaExchangeRequest};
        let config = &self.oauth.config;
        let Some(id_token) = &self.oauth.id_token else {
            return Err(OAuthError(format!(
                "grant = \"cross_app\" needs the persona's ID token ({} or auth.oauth.id_token_file)",
                config.id_token_env
            )));
        };
        let manager = AuthorizationManager::new(self.server.as_str()).await?;
        let challenge = (!challenge.is_empty()).then_some(challenge);
        let metadata = manager.resolve_metadata_from_challenge(challenge).await?.metadata;
        let issuer = metadata
            .issuer
            .clone()
            .ok_or_else(|| OAuthError("the authorization server's metadata names no issuer".into()))?;
        let idp = EmaAuthorizationServer::new(&config.idp_issuer, &config.idp_token_endpoint, &config.idp_client_id);
        let mut resource_as = EmaAuthorizationServer::new(issuer, &metadata.token_endpoint, &config.client_id);
        if let Some(secret) = &self.oauth.client_secret {
            resource_as = resource_as.with_client_authentication(EmaClientAuthentication::ClientSecretBasic(
                oauth2::ClientSecret::new(secret.expose().to_string()),
            ));
        }
        let mut exchange = EmaExchangeRequest::new_with_id_token(idp, resource_as, &self.server, id_token.expose());
        if !config.scopes.is_empty() {
            exchange = exchange.with_scopes(config.scopes.iter().cloned());
        }
        let http = rmcp::transport::auth::default_oauth_http_client()?;
        let token = exchange
            .exchange(&http, &http)
            .await
            .map_err(|e| OAuthError(format!("cross-app access: {e}")))?;
        let secret = token.access_token.secret().to_string();
        let expires = crate::time::instant_after(Instant::now(), token.expires_in.unwrap_or(Duration::from_secs(300)));
        state.minted = Some((Secret::new(secret.clone()), expires));
        Ok(secret)
    }

    /// POSTs a token request and reads `access_token` and `expires_in`.
    async fn token_request(&self, endpoint: &str, form: &[(&str, String)]) -> Result<(String, Instant), OAuthError> {
        let response = self
            .oauth
            .http
            .post(endpoint)
            .form(form)
            .send()
            .await
            .map_err(|e| OAuthError(format!("the token endpoint: {}", crate::http::describe(&e))))?;
        let status = response.status();
        let body: Value = crate::http::read_json(response, crate::http::MAX_BODY_BYTES)
            .await
            .map_err(|e| OAuthError(format!("the token endpoint's answer (HTTP {status}): {e}")))?;
        if !status.is_success() {
            let error = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
            let description = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(OAuthError(format!(
                "the token endpoint refused (HTTP {status}): {error} {description}"
            )));
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError("the token endpoint's answer has no access_token".into()))?;
        let lifetime = body.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        Ok((
            token.to_string(),
            crate::time::instant_after(Instant::now(), Duration::from_secs(lifetime)),
        ))
    }
}

fn fresh_token(tokens: &rmcp::transport::auth::OAuthTokenResponse) -> String {
    use oauth2::TokenResponse as _;
    tokens.access_token().secret().to_string()
}

/// The label and DER bytes of a PEM block.
fn pem_der(pem: &str) -> Option<(String, Vec<u8>)> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let label_end = start + pem[start..].find("-----")?;
    let label = pem[start..label_end].to_string();
    let body_start = label_end + "-----".len();
    let end = body_start + pem[body_start..].find("-----END ")?;
    let body: String = pem[body_start..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).ok()?;
    Some((label, der))
}

/// A client assertion JWT: `iss` = `sub` = the client id, `aud` = the authorization
/// server, five minutes, a fresh `jti`.
fn sign_assertion(client_id: &str, audience: &str, algorithm: &str, key: &Secret) -> Result<String, OAuthError> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let algorithm: Algorithm = algorithm
        .parse()
        .map_err(|_| OAuthError(format!("auth.oauth.signing_algorithm `{algorithm}` is unknown")))?;
    let (label, der) = pem_der(key.expose())
        .ok_or_else(|| OAuthError("the private key (auth.oauth.private_key) is not a PEM key".into()))?;
    let encoding = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 if label == "PRIVATE KEY" => EncodingKey::from_ec_der(&der),
        Algorithm::EdDSA if label == "PRIVATE KEY" => EncodingKey::from_ed_der(&der),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512
            if label == "RSA PRIVATE KEY" =>
        {
            EncodingKey::from_rsa_der(&der)
        }
        _ => {
            return Err(OAuthError(format!(
                "the private key (auth.oauth.private_key) is a `{label}` PEM; {algorithm:?} needs PKCS#8 \
                 (BEGIN PRIVATE KEY) for EC and Ed25519 keys, PKCS#1 (BEGIN RSA PRIVATE KEY) for RSA keys"
            )));
        }
    };
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 300,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &encoding)
        .map_err(|e| OAuthError(format!("signing the client assertion failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key in PKCS#8 PEM, made for this test only.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVKOs6uux38LWclT0
iEokrIF8A0Saj77aFndofG4qY9WhRANCAARw4d0k0z8eixQgjAwCz0hEtnHDCQk0
UsUfcjVyVrlLXfjiDJa7MmlMlba8sH/s9SRoPtFagHDd4MaWNBMcI+7S
-----END PRIVATE KEY-----";

    #[test]
    fn client_assertions_carry_the_claims_the_authorization_server_checks() {
        let jwt = sign_assertion("client-1", "http://as.test", "ES256", &Secret::new(KEY)).unwrap();
        let mut parts = jwt.split('.');
        let decode = |part: &str| -> Value {
            use base64::Engine as _;
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        let header = decode(parts.next().unwrap());
        let claims = decode(parts.next().unwrap());
        assert_eq!(header["alg"], "ES256");
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["aud"], "http://as.test");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() == 36));
        let err = sign_assertion("c", "a", "ES256", &Secret::new("not a key")).unwrap_err();
        assert!(err.to_string().contains("auth.oauth.private_key"), "{err}");
        let err = sign_assertion("c", "a", "RS256", &Secret::new(KEY)).unwrap_err();
        assert!(err.to_string().contains("BEGIN RSA PRIVATE KEY"), "{err}");
    }
}
