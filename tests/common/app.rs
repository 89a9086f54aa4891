//! `spawn_app`: the real sidecar (`persona_runner::daemon::serve`) on a free port with a
//! fresh database and a real sample gateway behind its tick engine, plus a client that
//! checks every response against the served OpenAPI document.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use persona_runner::store::Store;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Backend, TEST_SEED, TestDb, TestGateway, free_port};

pub const ADMIN_TOKEN: &str = "test-admin-token-for-the-api-suite";
pub const JWT_SECRET: &str = "test-jwt-secret-for-the-api-suite";

pub struct TestApp {
    pub base: String,
    pub store: Store,
    pub client: reqwest::Client,
    pub openapi: Value,
    pub db: TestDb,
    pub gateway: TestGateway,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How a test request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Admin,
    Bearer(String),
}

/// Options of [`spawn_app_with`].
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub admin_token: bool,
    pub jwt_secret: bool,
    /// Extra TOML appended to the config (inside `[api.jwt]`); `{gateway}` stands for the
    /// sample gateway's address.
    pub extra_toml: String,
    /// Extra environment (e.g. `PERSONA_RUNNER__API__…` overrides).
    pub extra_env: Vec<(String, String)>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            admin_token: true,
            jwt_secret: true,
            extra_toml: String::new(),
            extra_env: Vec::new(),
        }
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: AppOptions) -> TestApp {
    let db = TestDb::new(backend).await;
    let gateway = TestGateway::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "[database]\nurl = \"{db_url}\"\n\
         [auth]\nlogin_url = \"{login}\"\nsignup_url = \"{signup}\"\nseed_secret_env = \"TEST_SEED_SECRET\"\n\
         [mcp]\nurl = \"{mcp}\"\n\
         [retry]\ninitial_delay = \"10ms\"\n\
         [runner]\nshutdown_grace = \"2s\"\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\nadmin_token_env = \"TEST_ADMIN_TOKEN\"\n\
         [api.jwt]\nsecret_env = \"TEST_JWT_SECRET\"\n{extra}\n",
        db_url = db.url(),
        login = gateway.login_url(),
        signup = gateway.signup_url(),
        mcp = gateway.mcp_url(),
        extra = options.extra_toml.replace("{gateway}", &gateway.addr.to_string()),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut env: persona_runner::config::Env = [("TEST_SEED_SECRET".to_string(), TEST_SEED.to_string())]
        .into_iter()
        .collect();
    if options.admin_token {
        env.insert("TEST_ADMIN_TOKEN".into(), ADMIN_TOKEN.into());
    }
    if options.jwt_secret {
        env.insert("TEST_JWT_SECRET".into(), JWT_SECRET.into());
    }
    env.extend(options.extra_env);
    let origin = persona_runner::daemon::ConfigOrigin {
        explicit: Some(path),
        env,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        persona_runner::daemon::serve(origin, stop).await.expect("serve runs");
    });
    let base = format!("http://127.0.0.1:{port}");
    persona_runner::http::install_crypto_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{base}/health")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the sidecar did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let openapi: Value = client
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let store = db.store().await;
    TestApp {
        base,
        store,
        client,
        openapi,
        db,
        gateway,
        dir,
        shutdown,
        task: Some(task),
    }
}

/// A user JWT signed with the suite's HS256 secret.
pub fn user_token(user: Uuid, tenant: Uuid, roles: &[&str]) -> String {
    token_with(json!({
        "sub": user.to_string(),
        "tenant_id": tenant.to_string(),
        "email": format!("user-{}@example.test", &user.simple().to_string()[..8]),
        "roles": roles,
        "iss": "persona-runner",
        "aud": "persona-runner",
        "exp": chrono::Utc::now().timestamp() + 600,
    }))
}

pub fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

impl TestApp {
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the sidecar stops within 10 s")
                .expect("the sidecar stops cleanly");
        }
    }

    /// Sends a request and checks the answer against the OpenAPI document: the status
    /// must be documented for the operation and a JSON body must match its schema.
    /// A dashboard page's HTML, read with the admin token.
    pub async fn page(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn call(&self, method: &str, path: &str, auth: Auth, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        request = match &auth {
            Auth::None => request,
            Auth::Admin => request.bearer_auth(ADMIN_TOKEN),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = response.text().await.unwrap();
        let value = if json {
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err}): {text}"))
        } else {
            Value::String(text)
        };
        self.check(method, path, status, &value);
        (status, value)
    }

    /// The operation of `method` on `path` in the OpenAPI document.
    pub fn operation(&self, method: &str, path: &str) -> (String, Value) {
        let path = path.split('?').next().unwrap();
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.openapi["paths"].as_object().expect("paths");
        let mut best: Option<(usize, &String, &Value)> = None;
        for (template, item) in paths {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let fits = parts.iter().zip(&segments).all(|(t, s)| {
                if t.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    t == s
                }
            });
            if fits
                && let Some(op) = item.get(method.to_lowercase())
                && best.is_none_or(|(n, _, _)| literal > n)
            {
                best = Some((literal, template, op));
            }
        }
        let (_, template, op) = best.unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI document"));
        (template.clone(), op.clone())
    }

    fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let (template, op) = self.operation(method, path);
        let response = op["responses"].get(status.to_string()).unwrap_or_else(|| {
            panic!("{method} {template} answered {status}, which the OpenAPI document does not list: {body}")
        });
        let Some(schema) = response.pointer("/content/application~1json/schema") else {
            return;
        };
        let document = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": self.openapi["components"].clone(),
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&document)
            .unwrap_or_else(|err| panic!("the schema of {method} {template} {status} does not compile: {err}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: the body does not match the OpenAPI schema:\n{}\nbody: {body}",
            errors.join("\n")
        );
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
