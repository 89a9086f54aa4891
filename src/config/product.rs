//! The config sections of a product (the default one and each `[targets.NAME]`): how a
//! persona logs in (`[auth]`, OAuth, session lookups) and the MCP gateway it talks to
//! (`[mcp]`, roots).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::time::HumanDuration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// POST email + derived password to `login_url`; read token and user id by pointer.
    Login,
    /// One bearer token for every persona, from `static_token_env`/`static_token_file`.
    Static,
    /// No credentials (a gateway on a trusted network, or a stdio server).
    None,
    /// OAuth 2.1 as the MCP authorization spec describes, per persona (`[auth.oauth]`).
    Oauth,
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
    /// OAuth 2.1 settings (mode = "oauth").
    pub oauth: OAuthConfig,
    /// The product's sign-up endpoint, for `catalog seed --provision`. Empty: the bundled
    /// sample product's sign-up when `login_url` is its login (the default), else none
    /// (see [`AuthConfig::signup_endpoint`]).
    pub signup_url: String,
    /// The sign-up body: JSON with `{email}`, `{password}` and `{name}` in its strings.
    pub signup_body: String,
}

/// The bundled sample product's login and sign-up at its default address.
pub const SAMPLE_LOGIN_URL: &str = "http://127.0.0.1:3071/api/v1/auth/login";
pub const SAMPLE_SIGNUP_URL: &str = "http://127.0.0.1:3071/api/v1/auth/signup";

impl AuthConfig {
    /// Where sign-ups go: `signup_url`, or the bundled product's sign-up while `login_url`
    /// is the bundled login. A product of one's own never inherits the bundled sign-up,
    /// which would send its personas' passwords to another origin.
    pub fn signup_endpoint(&self) -> Option<&str> {
        match self.signup_url.trim() {
            "" if self.login_url.trim() == SAMPLE_LOGIN_URL => Some(SAMPLE_SIGNUP_URL),
            "" => None,
            url => Some(url),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Login,
            login_url: SAMPLE_LOGIN_URL.into(),
            token_pointer: "/token".into(),
            user_id_pointer: "/user/id".into(),
            token_ttl: HumanDuration::from_secs(900),
            refresh_margin: HumanDuration::from_secs(60),
            static_token_env: "PERSONA_RUNNER_GATEWAY_TOKEN".into(),
            static_token_file: None,
            seed_secret_env: "PERSONA_SEED_SECRET".into(),
            seed_secret_file: None,
            lookups: Default::default(),
            oauth: OAuthConfig::default(),
            signup_url: String::new(),
            signup_body: r#"{"email": "{email}", "password": "{password}", "name": "{name}"}"#.into(),
        }
    }
}

/// The grant a persona gets its MCP access token with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthGrant {
    /// Authorization code with PKCE, completed headless (the persona has no browser).
    AuthorizationCode,
    /// Client credentials: `client_secret` (basic or post) or `private_key` (private_key_jwt).
    ClientCredentials,
    /// Enterprise-managed cross-app access: an IdP ID token exchanged for an ID-JAG
    /// (RFC 8693), then for an access token (RFC 7523 jwt-bearer).
    CrossApp,
}

/// What the persona carries to the authorization endpoint to prove who it is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizeWith {
    /// Nothing (the authorization server approves without a login).
    None,
    /// The persona's product login (`auth.login_url`) as `Authorization: Bearer`.
    Bearer,
    /// The persona's product login as the cookie `authorize_cookie`.
    Cookie,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    pub grant: OAuthGrant,
    /// Where the authorization server sends the code. Never contacted: the runner reads
    /// the code from the redirect itself.
    pub redirect_uri: String,
    /// The name dynamic client registration announces.
    pub client_name: String,
    /// A pre-registered client id ("" = Client ID Metadata Document or dynamic registration).
    pub client_id: String,
    /// Environment variable holding the pre-registered client's secret.
    pub client_secret_env: String,
    /// File holding the client secret (wins over the variable).
    pub client_secret_file: Option<PathBuf>,
    /// An HTTPS URL of this client's metadata document, used as client id where the
    /// authorization server supports it ("" = none).
    pub client_metadata_url: String,
    /// Scopes to ask for (empty: the challenge's, else the resource's `scopes_supported`).
    pub scopes: Vec<String>,
    /// Environment variable holding a PKCS#8 PEM private key (client credentials with
    /// private_key_jwt).
    pub private_key_env: String,
    /// File holding that key (wins over the variable).
    pub private_key_file: Option<PathBuf>,
    /// The JWT algorithm of the key: ES256, ES384, RS256, RS384, RS512, PS256, EdDSA.
    pub signing_algorithm: String,
    pub authorize_with: AuthorizeWith,
    /// Cookie name when `authorize_with = "cookie"`.
    pub authorize_cookie: String,
    /// Cross-app access: the identity provider's issuer, token endpoint and client id.
    pub idp_issuer: String,
    pub idp_token_endpoint: String,
    pub idp_client_id: String,
    /// Environment variable holding the persona's IdP ID token (cross-app access).
    pub id_token_env: String,
    /// File holding it (wins over the variable).
    pub id_token_file: Option<PathBuf>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            grant: OAuthGrant::AuthorizationCode,
            redirect_uri: "http://127.0.0.1:8976/oauth/callback".into(),
            client_name: "persona-runner".into(),
            client_id: String::new(),
            client_secret_env: "PERSONA_RUNNER_OAUTH_CLIENT_SECRET".into(),
            client_secret_file: None,
            client_metadata_url: String::new(),
            scopes: Vec::new(),
            private_key_env: "PERSONA_RUNNER_OAUTH_PRIVATE_KEY".into(),
            private_key_file: None,
            signing_algorithm: "ES256".into(),
            authorize_with: AuthorizeWith::None,
            authorize_cookie: "session".into(),
            idp_issuer: String::new(),
            idp_token_endpoint: String::new(),
            idp_client_id: String::new(),
            id_token_env: "PERSONA_RUNNER_OAUTH_ID_TOKEN".into(),
            id_token_file: None,
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
    /// Timeout of each step of opening a session: connecting, `initialize`, listing tools.
    pub connect_timeout: HumanDuration,
    /// Variables of the runner's environment a stdio server also gets, besides the
    /// allowlist (PATH, HOME, LANG, LC_*, TZ, TMPDIR) and `env`.
    pub inherit_env: Vec<String>,
    /// Answer the server's `elicitation/create` (form mode) as the persona.
    pub elicitation: bool,
    /// Serve the server's `sampling/createMessage` with the persona's LLM (not offered by
    /// the offline driver).
    pub sampling: bool,
    /// Roots offered to the server (none: the capability is not declared).
    pub roots: Vec<RootConfig>,
    /// The server's own requests (elicitation, sampling, roots) answered during one tool
    /// call, and during one tick; beyond either, they are declined with an error (and one
    /// audited row says how many were).
    pub max_server_requests_per_call: u32,
    pub max_server_requests_per_tick: u32,
}

/// A root the client offers (`roots/list`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    pub uri: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Values of `mcp.headers` and `mcp.env` as shown: a literal header value or an
/// environment value may be a gateway key, so only `{placeholder}` templates are shown.
pub(super) fn masked(map: &std::collections::BTreeMap<String, String>) -> std::collections::BTreeMap<&str, &str> {
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
            .field("connect_timeout", &self.connect_timeout)
            .field("inherit_env", &self.inherit_env)
            .field("elicitation", &self.elicitation)
            .field("sampling", &self.sampling)
            .field("roots", &self.roots)
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
            connect_timeout: HumanDuration::from_secs(15),
            inherit_env: Vec::new(),
            elicitation: true,
            sampling: true,
            roots: Vec::new(),
            max_server_requests_per_call: 10,
            max_server_requests_per_tick: 50,
        }
    }
}

/// A named product: its own login and MCP gateway.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    pub auth: AuthConfig,
    pub mcp: McpConfig,
}
