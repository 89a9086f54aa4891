//! The sidecar's HTTP surface (DESIGN.md §6), served by `run` beside the scheduler and
//! alone by `serve`: health, readiness and metrics; the admin API (admin token); the
//! profile API (user JWTs, every query scoped by the token's tenant); the QA dashboard;
//! and the OpenAPI document that describes all of it.
//!
//! Only this module knows axum and HTTP status codes. Handlers are thin: they parse and
//! validate, call the store or a domain module (`feedback`, `profile`), and map errors.

mod admin;
pub mod auth;
mod checks;
mod dashboard;
mod dashboard_views;
mod error;
mod goals_view;
mod history;
mod html;
mod params;
mod profile;
pub mod server;
mod spaces;
mod spaces_view;
mod tick_page;
mod timeline;
mod views;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub use auth::JwtVerifier;
pub use error::{ApiError, ErrorBody, FieldError};

use crate::config::{Config, Secret};
use crate::model::persona::Persona;
use crate::store::Store;
use crate::tick::TickError;

/// A boxed future, for the object-safe [`TickPort`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts one-off ticks for the API, in the process's one tick pool: `run` hands over its
/// engine and scheduler, `serve` an engine of its own.
pub trait TickPort: Send + Sync + 'static {
    /// Claims a tick for `persona` and runs it in the pool; the tick's id.
    fn start(&self, persona: Persona) -> BoxFuture<'_, Result<Uuid, TickError>>;
    /// Ticks every runnable persona now (as SIGUSR1 does); what was started.
    fn start_all(&self) -> BoxFuture<'_, Result<String, TickError>>;
    /// Records a check run of `selection` and runs its trials in the pool; the run's id.
    fn start_check(
        &self,
        tenant: Uuid,
        trigger: crate::model::tick::Trigger,
        selection: crate::check::Selection,
    ) -> BoxFuture<'_, Result<Uuid, crate::check::CheckError>>;
}

/// What a SIGHUP may change: the config and the secrets it names.
pub struct ApiSettings {
    pub config: Arc<Config>,
    admin_token: Option<Secret>,
    jwt: Option<Arc<JwtVerifier>>,
    /// Sign-up per target (`None`: the default), for the upsert's `provision=true`.
    provisioners: std::collections::BTreeMap<Option<String>, Arc<crate::auth::Provisioner>>,
    /// Space provisioning per target (its calls and its members' logins), likewise.
    space_provisioners: std::collections::BTreeMap<Option<String>, Arc<SpaceProvisioner>>,
}

/// What the upsert's `provision=true` provisions a persona's spaces with.
pub(crate) struct SpaceProvisioner {
    pub calls: crate::auth::SpaceCalls,
    pub auth: crate::auth::Authenticator,
}

impl ApiSettings {
    pub fn new(config: Arc<Config>, admin_token: Option<Secret>, jwt_secret: Option<Secret>) -> Self {
        let jwt = JwtVerifier::new(&config.api.jwt, jwt_secret.as_ref()).map(Arc::new);
        Self {
            config,
            admin_token,
            jwt,
            provisioners: Default::default(),
            space_provisioners: Default::default(),
        }
    }

    /// Lets the admin upsert sign personas up: one provisioner per product that has an
    /// `auth.signup_url` (the seed secrets come from `env`). Others are left out.
    pub fn with_provisioning(mut self, env: &crate::config::Env) -> Self {
        let config = self.config.clone();
        let products = std::iter::once((None, Some((*config).clone()))).chain(
            config
                .targets
                .keys()
                .map(|name| (Some(name.clone()), config.for_target(name))),
        );
        for (target, product) in products {
            let Some(product) = product.filter(|p| p.auth.signup_endpoint().is_some()) else {
                continue;
            };
            let Ok(seed) = crate::auth::SeedSecret::resolve(&product, env) else {
                continue;
            };
            if let Ok(provisioner) = crate::auth::Provisioner::new(&product, seed.secret) {
                self.provisioners.insert(target.clone(), Arc::new(provisioner));
            }
            if let (Ok(calls), Ok(auth)) = (
                crate::auth::SpaceCalls::new(&product, &product.auth),
                crate::auth::Authenticator::new(&product, env),
            ) {
                self.space_provisioners
                    .insert(target, Arc::new(SpaceProvisioner { calls, auth }));
            }
        }
        self
    }
}

struct Inner {
    store: Store,
    settings: std::sync::RwLock<Arc<ApiSettings>>,
    ticks: Option<Arc<dyn TickPort>>,
    scheduler: Option<Arc<crate::scheduler::Status>>,
    candidates: crate::profile::Candidates,
    sessions: auth::Sessions,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct ApiState(Arc<Inner>);

impl ApiState {
    pub fn new(
        store: Store,
        settings: ApiSettings,
        ticks: Option<Arc<dyn TickPort>>,
        scheduler: Option<Arc<crate::scheduler::Status>>,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            settings: std::sync::RwLock::new(Arc::new(settings)),
            ticks,
            scheduler,
            candidates: crate::profile::Candidates::default(),
            sessions: auth::Sessions::default(),
        }))
    }

    fn sessions(&self) -> &auth::Sessions {
        &self.0.sessions
    }

    fn candidates(&self) -> &crate::profile::Candidates {
        &self.0.candidates
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    fn settings(&self) -> Arc<ApiSettings> {
        self.0.settings.read().expect("settings lock").clone()
    }

    pub fn config(&self) -> Arc<Config> {
        self.settings().config.clone()
    }

    /// New settings (SIGHUP). The listen address and the body limit stay until a restart.
    pub fn reload(&self, settings: ApiSettings) {
        *self.0.settings.write().expect("settings lock") = Arc::new(settings);
    }

    fn admin_token(&self) -> Option<Secret> {
        self.settings().admin_token.clone()
    }

    fn jwt(&self) -> Option<Arc<JwtVerifier>> {
        self.settings().jwt.clone()
    }

    fn provisioner(&self, target: Option<&str>) -> Option<Arc<crate::auth::Provisioner>> {
        self.settings().provisioners.get(&target.map(str::to_string)).cloned()
    }

    fn space_provisioner(&self, target: Option<&str>) -> Option<Arc<SpaceProvisioner>> {
        self.settings()
            .space_provisioners
            .get(&target.map(str::to_string))
            .cloned()
    }

    fn ticks(&self) -> Option<&Arc<dyn TickPort>> {
        self.0.ticks.as_ref()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "persona-runner sidecar",
        description = "Admin API (admin token), profile API (user JWT, tenant-scoped), QA feedback aggregates and dashboard of persona-runner. Errors are `{\"error\": …, \"details\": [{\"field\", \"message\"}]}`.",
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "ops", description = "Health, readiness, metrics"),
        (name = "admin", description = "Admin API: `Authorization: Bearer <admin token>`; optional `X-Persona-Runner-Tenant`"),
        (name = "profile", description = "Profile store API: `Authorization: Bearer <user JWT>`"),
        (name = "dashboard", description = "The QA dashboard page"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "user_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "dashboard_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(auth::SESSION_COOKIE))),
        );
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    ready: bool,
    migrations: Option<i64>,
    reason: Option<String>,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
async fn health() -> &'static str {
    "ok\n"
}

/// Readiness: the truth about whether ticks can be recorded. The store takes writes and
/// is migrated, and the scheduler (in `run`) has loaded the personas.
#[utoipa::path(get, path = "/ready", tag = "ops", responses(
    (status = 200, description = "ready", body = Readiness),
    (status = 503, description = "not ready, with the reason", body = Readiness),
))]
async fn ready(State(state): State<ApiState>) -> Response {
    let not_ready = |migrations: Option<i64>, reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                migrations,
                reason: Some(reason),
            }),
        )
            .into_response()
    };
    if let Some((outage, since)) = state.store().health().outage() {
        return not_ready(
            None,
            format!("the store is not taking writes since {since}: {outage}; no tick is claimed until it recovers"),
        );
    }
    let applied = match state.store().migration_status().await {
        Ok((applied, known)) if applied == known => applied,
        Ok((applied, known)) => {
            return not_ready(
                Some(applied),
                format!("{applied} of {known} migrations applied: run `persona-runner migrate`"),
            );
        }
        Err(err) => {
            let reason = match err.outage() {
                Some(outage) => outage.to_string(),
                None => format!("the store is not reachable: {err}"),
            };
            return not_ready(None, reason);
        }
    };
    if let Some(scheduler) = &state.0.scheduler
        && !scheduler.loaded()
    {
        return not_ready(Some(applied), "the scheduler has not loaded the personas yet".into());
    }
    (
        StatusCode::OK,
        Json(Readiness {
            ready: true,
            migrations: Some(applied),
            reason: None,
        }),
    )
        .into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<ApiState>) -> Response {
    // Today's spend is the store's (every runner's), read at scrape time.
    let day = crate::time::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    match state.store().token_spend(None, day).await {
        Ok((tokens_in, tokens_out)) => {
            let budget = &state.config().budget;
            crate::metrics::global().spend_today(
                tokens_in,
                tokens_out,
                budget.tokens_per_day,
                budget.cost(tokens_in, tokens_out),
            );
        }
        Err(err) => tracing::debug!(%err, "today's spend is not readable for /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::global().render(),
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops", responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_text().to_string()).into_response()
}

/// The OpenAPI document of every route, as served (rendered once, from the same table
/// the router is built from).
pub fn openapi_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let mut document = serde_json::to_value(build().1).expect("the OpenAPI document serializes");
        params::document(&mut document);
        persona_bodies(&mut document);
        serde_json::to_string_pretty(&document).expect("the OpenAPI document serializes")
    })
}

/// The persona bodies are documented by the catalog schema that checks them.
fn persona_bodies(document: &mut serde_json::Value) {
    use serde_json::json;
    let schemas = &mut document["components"]["schemas"];
    for (name, schema) in crate::catalog::openapi_schemas() {
        schemas[name] = schema;
    }
    for (path, method, schema) in [
        ("/api/v1/admin/personas", "post", "PersonaDefinition"),
        ("/api/personas/{id}", "put", "PersonaEdit"),
    ] {
        let body = &mut document["paths"][path][method]["requestBody"]["content"]["application/json"];
        assert!(body.is_object(), "{method} {path} has a JSON body");
        body["schema"] = json!({"$ref": format!("#/components/schemas/{schema}")});
    }
}

/// The router of the whole sidecar.
pub fn router(state: ApiState) -> Router {
    let limit = state.config().api.max_body_bytes;
    let (router, _) = build();
    router
        .layer(DefaultBodyLimit::max(limit))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route (see /api/openapi.json)") })
        .with_state(state)
}

fn build() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::login))
        .routes(routes!(dashboard::logout))
        .routes(routes!(tick_page::page))
        .routes(routes!(admin::list_personas, admin::upsert_persona))
        .routes(routes!(admin::get_persona, admin::delete_persona))
        .routes(routes!(admin::pause))
        .routes(routes!(admin::resume))
        .routes(routes!(admin::tick))
        .routes(routes!(admin::tick_all, history::list_ticks))
        .routes(routes!(history::get_tick))
        .routes(routes!(history::list_actions))
        .routes(routes!(history::feedback))
        .routes(routes!(spaces::list))
        .routes(routes!(checks::start))
        .routes(routes!(checks::get))
        .routes(routes!(checks::verdicts))
        .routes(routes!(profile::list_personas))
        .routes(routes!(profile::get_persona, profile::update_persona))
        .routes(routes!(profile::persona_stats))
        .routes(routes!(profile::my_persona))
        .routes(routes!(profile::record_interaction, profile::list_interactions))
        .routes(routes!(profile::alignment))
        .routes(routes!(profile::reassign))
        .routes(routes!(profile::init_personas))
        .split_for_parts()
}

/// Serves `router` on `listener` until `stop` is cancelled, then finishes open requests,
/// within `limits` (see `api::server`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    stop: tokio_util::sync::CancellationToken,
    limits: server::Limits,
) -> std::io::Result<()> {
    server::serve(listener, router(state), stop, limits).await
}
