//! The secret values of the process: every tick's redactor starts with them, and the log
//! redacts them from every line.

use crate::config::{Config, Env};

/// The secret values of the process, for the redactor of every tick (and registered with
/// the log's, see `redact::register`).
pub fn process_secrets(config: &Config, env: &Env) -> Vec<String> {
    let mut secrets = product_secrets(config, env);
    for name in config.targets.keys() {
        if let Some(target) = config.for_target(name) {
            secrets.extend(product_secrets(&target, env));
        }
    }
    secrets.retain(|s| !s.trim().is_empty());
    secrets.sort_unstable();
    secrets.dedup();
    secrets.iter().for_each(|secret| crate::redact::register(secret));
    secrets
}

/// The secrets of the process as one product's config names them.
fn product_secrets(config: &Config, env: &Env) -> Vec<String> {
    let mut secrets: Vec<String> = [
        config.llm_api_key(env),
        config.judge_api_key(env),
        config.admin_token(env),
        config.jwt_secret(env),
        config.database_password(env),
        config.static_token(env),
        config.oauth_client_secret(env),
        config.oauth_private_key(env),
        config.oauth_id_token(env),
    ]
    .into_iter()
    .filter_map(|found| found.ok().flatten())
    .map(|secret| secret.expose().to_string())
    .collect();
    if let Ok(seed) = crate::auth::SeedSecret::resolve(config, env) {
        secrets.push(seed.secret.expose().to_string());
    }
    secrets
}
