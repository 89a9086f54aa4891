//! `config check`: the effective config (secrets redacted), where each secret comes from,
//! whether the database, the LLM endpoint and the product answer, and whether a tick's
//! first request fits the model's context window. It changes nothing.

use anyhow::Result;
use persona_runner::config::{self, LlmProvider};
use persona_runner::llm::info::{self, TokenCount};
use persona_runner::store::Inspection;

use super::{App, Outcome};

pub async fn config_check(app: &App) -> Result<Outcome> {
    let loaded = &app.loaded;
    out!("# config: {}", loaded.source);
    for var in &loaded.overrides {
        out!("# overridden by {var}");
    }
    for deprecated in &loaded.deprecations {
        out!("# deprecated: {deprecated}");
    }
    out!("{}", loaded.config.to_redacted_toml());
    let mut ok = true;
    match persona_runner::auth::SeedSecret::resolve(&loaded.config, &app.env) {
        Ok(seed) => out!("# seed secret: set, from {}", seed.origin),
        Err(err) => {
            ok = false;
            out!("# seed secret: ERROR: {err}");
        }
    }
    // Every secret the configured modes need, looked up as `run` would.
    let mode = app.config().auth.mode;
    if mode == config::AuthMode::Static {
        match app.config().static_token(&app.env) {
            Ok(Some(_)) => out!("# gateway token: set"),
            Ok(None) => {
                ok = false;
                out!(
                    "# gateway token: ERROR: auth.mode = \"static\" needs a token: set ${} or auth.static_token_file",
                    app.config().auth.static_token_env
                );
            }
            Err(err) => {
                ok = false;
                out!("# gateway token: ERROR: {err}");
            }
        }
    }
    match app.config().database_password(&app.env) {
        Ok(Some(_)) => out!("# database password: set"),
        Ok(None) => {}
        Err(err) => {
            ok = false;
            out!("# database password: ERROR: {err}");
        }
    }
    let sidecar_keys = [
        (
            "admin token",
            app.config().admin_token(&app.env),
            "admin API and dashboard answer 503",
        ),
        (
            "JWT secret",
            app.config().jwt_secret(&app.env),
            "profile API answers 503 unless api.jwt.jwks_url is set",
        ),
    ];
    for (name, lookup, without) in sidecar_keys {
        match lookup {
            Ok(Some(_)) => out!("# {name}: set"),
            Ok(None) => out!("# {name}: not set ({without})"),
            Err(err) => {
                ok = false;
                out!("# {name}: ERROR: {err}");
            }
        }
    }
    ok &= traces_check(app);
    ok &= llm_check(app).await;
    // Nothing is created or migrated here: checking a config changes nothing.
    let password = app.config().database_password(&app.env).ok().flatten();
    match persona_runner::store::Store::inspect(&app.config().database, password.as_ref()).await {
        Ok(Inspection::Reachable { applied, known }) => {
            out!("# database: reachable ({applied} of {known} migrations applied)")
        }
        Ok(Inspection::Missing(file)) => out!(
            "# database: {} does not exist yet (created and migrated on the first start)",
            file.display()
        ),
        Err(err) => {
            ok = false;
            out!("# database: ERROR: {err}");
        }
    }
    Ok(if ok { Outcome::Success } else { Outcome::Problems })
}

/// Where traces go, if anywhere. `false` for settings that stop the process starting.
fn traces_check(app: &App) -> bool {
    let mut ok = true;
    match app.config().telemetry.resolve(&app.env) {
        Ok(Some(traces)) => out!(
            "# traces: exported to {} ({}, service {}{}{})",
            persona_runner::http::display_url(&traces.endpoint),
            match traces.protocol {
                persona_runner::config::OtlpProtocol::HttpProtobuf => "http/protobuf",
                persona_runner::config::OtlpProtocol::HttpJson => "http/json",
            },
            traces.service_name,
            if traces.headers.is_empty() {
                ""
            } else {
                ", with headers"
            },
            if traces.content { ", with message content" } else { "" },
        ),
        Ok(None) => out!("# traces: off (set OTEL_EXPORTER_OTLP_ENDPOINT or telemetry.endpoint to export them)"),
        Err(err) => {
            ok = false;
            out!("# traces: ERROR: {err}");
        }
    }
    ok
}

/// The LLM endpoint: what it serves, its context window, and whether the longest catalog
/// persona's first request (template, prompt, story, tools) fits it. `false` only for an
/// error that stops ticks (a missing key the provider needs).
async fn llm_check(app: &App) -> bool {
    let config = app.config();
    let key = match (config.llm.provider, config.llm_api_key(&app.env)) {
        (_, Err(err)) => {
            out!("# llm: ERROR: {err}");
            return false;
        }
        (LlmProvider::Offline, _) | (LlmProvider::Auto, Ok(None)) => {
            out!("# llm: the offline driver (no API key set for llm.provider = \"auto\")");
            return true;
        }
        (LlmProvider::Openai, Ok(None)) => {
            out!(
                "# llm: ERROR: llm.provider = \"openai\" needs an API key: set {}",
                config.llm.api_key_env
            );
            return false;
        }
        (_, Ok(Some(key))) => key,
    };
    let window = match info::model_info(&config.llm, &key).await {
        Ok(found) => {
            out!(
                "# llm: {} serves {}; context window {}",
                config.llm.base_url,
                if found.served.is_empty() {
                    "(no model list)".to_string()
                } else {
                    found.served.join(", ")
                },
                found
                    .context
                    .map_or("not said".to_string(), |(n, from)| format!("{n} tokens (from {from})"))
            );
            found.context.map(|(n, _)| n)
        }
        Err(err) => {
            out!("# llm: not reachable now: {err}");
            None
        }
    };
    let Some(window) = window else { return true };
    let rules = persona_runner::catalog::Rules::from(&config.catalog);
    let Ok(catalogs) = persona_runner::catalog::load(&config.catalog.files, &rules) else {
        return true;
    };
    let specs: Vec<_> = catalogs
        .iter()
        .flat_map(|c| &c.personas)
        .filter(|p| p.target.is_none())
        .collect();
    let Some(longest) = specs.iter().max_by_key(|p| p.system_prompt.len()) else {
        return true;
    };
    let tools = match persona_runner::tick::probe::offered_tools(config, &app.env, &specs[0].email).await {
        Ok(tools) => tools,
        Err(err) => {
            out!("# product: not reachable now ({err}); the estimate below leaves the tools out");
            Vec::new()
        }
    };
    let text =
        persona_runner::tick::probe::first_request_text(&longest.system_prompt, &tools, config.tick.story_actions);
    let count = info::count_tokens(&config.llm, &key, &text).await;
    let how = match count {
        TokenCount::Counted(_) => "counted by the server",
        TokenCount::Estimated(_) => "estimated",
    };
    let needed = count.tokens() as u64 + u64::from(config.llm.max_tokens);
    out!(
        "# llm: a first request of {} takes about {} tokens ({how}, {} tools) plus llm.max_tokens = {}",
        longest.email,
        count.tokens(),
        tools.len(),
        config.llm.max_tokens
    );
    if needed > window {
        out!(
            "# llm: WARNING: that is more than the model's context window of {window} tokens: the server will \
             refuse or cut it; serve the model with a larger context (llama.cpp -c, vLLM --max-model-len, Ollama \
             num_ctx) or lower llm.max_tokens"
        );
    }
    true
}
