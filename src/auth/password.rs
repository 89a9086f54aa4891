//! Deterministic persona passwords: `HMAC-SHA256(seed secret, email)`, standard base64,
//! keep `[A-Za-z0-9]`, first 32 characters (DESIGN.md §2, compatible with the reference
//! system, so personas it created can still log in).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::secret::{self, SecretLookup};
use crate::config::{Config, ConfigError, Env, Environment, Secret, SecretOrigin};

/// The reference system's development fallback. Refused in production.
pub const DEV_SEED_SECRET: &str = "dev-persona-seed-secret-rotate-in-prod";

/// Derives the login password of the persona with `email`.
pub fn derive_password(seed: &Secret, email: &str) -> Secret {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(seed.expose().as_bytes()).expect("HMAC takes keys of any length");
    mac.update(email.as_bytes());
    let encoded = STANDARD.encode(mac.finalize().into_bytes());
    Secret::new(
        encoded
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(32)
            .collect::<String>(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SeedSecretError {
    #[error(
        "no seed secret is set and environment = \"production\": set {env_var} (or \
         auth.seed_secret_file, or a systemd credential named seed-secret)"
    )]
    MissingInProduction { env_var: String },
    #[error(
        "the seed secret from {origin} is the development fallback, which production refuses: \
         generate a new one (e.g. `openssl rand -base64 48`) and re-seed the personas"
    )]
    DevelopmentSecretInProduction { origin: SecretOrigin },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The seed secret with where it came from.
#[derive(Clone, Debug)]
pub struct SeedSecret {
    pub secret: Secret,
    pub origin: SecretOrigin,
}

impl SeedSecret {
    /// Resolves the seed secret per `[auth]`. Development falls back to the reference
    /// system's development secret; production refuses a missing or development secret.
    pub fn resolve(config: &Config, env: &Env) -> Result<Self, SeedSecretError> {
        let lookup = SecretLookup {
            key: "auth.seed_secret",
            file: config.auth.seed_secret_file.as_deref(),
            env_var: Some(&config.auth.seed_secret_env),
            credential: "seed-secret",
        };
        let production = config.environment == Environment::Production;
        match secret::resolve(&lookup, env)? {
            Some((secret, origin)) if production && secret.expose() == DEV_SEED_SECRET => {
                Err(SeedSecretError::DevelopmentSecretInProduction { origin })
            }
            Some((secret, origin)) => Ok(Self { secret, origin }),
            None if production => Err(SeedSecretError::MissingInProduction {
                env_var: config.auth.seed_secret_env.clone(),
            }),
            None => Ok(Self {
                secret: Secret::new(DEV_SEED_SECRET),
                origin: SecretOrigin::DevelopmentFallback,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        let dev = Secret::new(DEV_SEED_SECRET);
        // The vector of DESIGN.md §2, plus two computed independently (Python hmac/base64).
        assert_eq!(
            derive_password(&dev, "persona.anna@mana.test").expose(),
            "1FJ7w8KbjK5CWVa8NqfobexAFNuQKxiA"
        );
        assert_eq!(
            derive_password(&dev, "persona.ben@mana.test").expose(),
            "UQ4j64WupivIkoy7XxwPFgA9cQVKXKsW"
        );
        let other = Secret::new("another-secret");
        assert_eq!(
            derive_password(&other, "persona.anna@mana.test").expose(),
            "9khDhY1LiUCiJv9Sdqa4m56ZnrZrU12f"
        );
    }

    fn config(environment: Environment) -> Config {
        Config {
            environment,
            ..Config::default()
        }
    }

    #[test]
    fn development_falls_back_production_refuses() {
        let env = Env::new();
        let seed = SeedSecret::resolve(&config(Environment::Development), &env).unwrap();
        assert_eq!(seed.origin, SecretOrigin::DevelopmentFallback);
        let err = SeedSecret::resolve(&config(Environment::Production), &env).unwrap_err();
        assert!(matches!(err, SeedSecretError::MissingInProduction { .. }), "{err}");

        let mut env = Env::new();
        env.insert("PERSONA_SEED_SECRET".into(), DEV_SEED_SECRET.into());
        let err = SeedSecret::resolve(&config(Environment::Production), &env).unwrap_err();
        assert!(err.to_string().contains("development fallback"), "{err}");
        assert!(!err.to_string().contains(DEV_SEED_SECRET), "{err}");

        env.insert("PERSONA_SEED_SECRET".into(), "a-real-production-secret".into());
        let seed = SeedSecret::resolve(&config(Environment::Production), &env).unwrap();
        assert_eq!(seed.origin, SecretOrigin::Env("PERSONA_SEED_SECRET".into()));
    }
}
