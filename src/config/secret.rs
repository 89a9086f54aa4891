//! Secrets: a redacting holder and the one way secrets are looked up (a file named in the
//! config, an environment variable, or a systemd credential).

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, Env};

/// A secret value. `Debug` and `Display` print `[redacted]`; the value is reachable only
/// through [`Secret::expose`], so every use is visible in review.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret came from, for `config check` and error messages (never the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretOrigin {
    File(PathBuf),
    Env(String),
    Credential(PathBuf),
    DevelopmentFallback,
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Credential(path) => write!(f, "systemd credential {}", path.display()),
            Self::DevelopmentFallback => f.write_str("built-in development fallback"),
        }
    }
}

/// Where to look for one secret.
pub struct SecretLookup<'a> {
    /// The config key prefix, e.g. `auth.seed_secret`, for error messages.
    pub key: &'a str,
    /// Config value of `<key>_file`, if set. A relative path is resolved against
    /// `$CREDENTIALS_DIRECTORY` when systemd provides one.
    pub file: Option<&'a Path>,
    /// Config value of `<key>_env`: the variable to read.
    pub env_var: Option<&'a str>,
    /// Name of the systemd credential (`LoadCredential=NAME:…`) tried last.
    pub credential: &'a str,
}

/// Resolves a secret: the configured file first, then the environment variable, then the
/// systemd credential of the same name. `Ok(None)` when none is set.
pub fn resolve(lookup: &SecretLookup<'_>, env: &Env) -> Result<Option<(Secret, SecretOrigin)>, ConfigError> {
    let credentials_dir = env.get("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    if let Some(file) = lookup.file {
        let path = match (&credentials_dir, file.is_relative()) {
            (Some(dir), true) => dir.join(file),
            _ => file.to_path_buf(),
        };
        let value = read_secret_file(&path).map_err(|reason| ConfigError::Secret {
            key: format!("{}_file", lookup.key),
            message: format!("cannot read {}: {reason}", path.display()),
        })?;
        return Ok(Some((value, SecretOrigin::File(path))));
    }
    if let Some(var) = lookup.env_var
        && let Some(value) = env.get(var).filter(|v| !v.is_empty())
    {
        return Ok(Some((Secret::new(value.clone()), SecretOrigin::Env(var.to_string()))));
    }
    if let Some(dir) = credentials_dir {
        let path = dir.join(lookup.credential);
        if path.is_file() {
            let value = read_secret_file(&path).map_err(|reason| ConfigError::Secret {
                key: lookup.key.to_string(),
                message: format!("cannot read credential {}: {reason}", path.display()),
            })?;
            return Ok(Some((value, SecretOrigin::Credential(path))));
        }
    }
    Ok(None)
}

fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|err| err.to_string())?;
    // Files written by editors and `echo` end in a newline that is not part of the secret.
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn file_beats_env_and_credentials_directory_is_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seed"), "from-credential\n").unwrap();
        std::fs::write(dir.path().join("other"), "from-file\n").unwrap();
        let mut env = Env::new();
        env.insert("CREDENTIALS_DIRECTORY".into(), dir.path().display().to_string());
        env.insert("SEED".into(), "from-env".into());

        let lookup = |file: Option<&'static str>, var: Option<&'static str>| SecretLookup {
            key: "auth.seed_secret",
            file: file.map(Path::new),
            env_var: var,
            credential: "seed",
        };
        let (value, origin) = resolve(&lookup(Some("other"), Some("SEED")), &env).unwrap().unwrap();
        assert_eq!(
            (value.expose(), origin),
            ("from-file", SecretOrigin::File(dir.path().join("other")))
        );
        let (value, _) = resolve(&lookup(None, Some("SEED")), &env).unwrap().unwrap();
        assert_eq!(value.expose(), "from-env");
        let (value, origin) = resolve(&lookup(None, Some("UNSET")), &env).unwrap().unwrap();
        assert_eq!(value.expose(), "from-credential");
        assert!(matches!(origin, SecretOrigin::Credential(_)));
    }

    #[test]
    fn unreadable_file_names_the_key_not_the_value() {
        let env = Env::new();
        let lookup = SecretLookup {
            key: "auth.seed_secret",
            file: Some(Path::new("/nonexistent/seed")),
            env_var: None,
            credential: "seed",
        };
        let err = resolve(&lookup, &env).unwrap_err().to_string();
        assert!(err.contains("auth.seed_secret_file"), "{err}");
        assert!(err.contains("/nonexistent/seed"), "{err}");
    }
}
