//! Loading: finding the file, reading TOML, applying `PERSONA_RUNNER__…` overrides.

use std::fmt;
use std::path::{Path, PathBuf};

use super::validate::validate;
use super::{CONFIG_PATH_ENV, Config, ConfigError, ENV_PREFIX, Env};

/// Where the effective config came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Defaults => f.write_str("built-in defaults (no config file found)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub source: ConfigSource,
    /// Environment variables that overrode keys, for `config check`.
    pub overrides: Vec<String>,
    /// Old keys that still load, each with what to write instead (logged as warnings and
    /// shown by `config check`).
    pub deprecations: Vec<String>,
}

/// Finds and loads the config: `explicit` (`--config`), else `$PERSONA_RUNNER_CONFIG`,
/// else `./config.toml` if it exists, else defaults. A named file that is missing is an
/// error; only the implicit `./config.toml` may be absent.
pub fn load(explicit: Option<&Path>, env: &Env) -> Result<LoadedConfig, ConfigError> {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.get(CONFIG_PATH_ENV).filter(|p| !p.is_empty()).map(PathBuf::from));
    let (table, source) = match named {
        Some(path) => (read_table(&path)?, ConfigSource::File(path)),
        None => {
            let path = PathBuf::from("config.toml");
            if path.is_file() {
                (read_table(&path)?, ConfigSource::File(path))
            } else {
                (toml::Table::new(), ConfigSource::Defaults)
            }
        }
    };
    let (config, overrides, deprecations) = load_table(table, env)?;
    Ok(LoadedConfig {
        config,
        source,
        overrides,
        deprecations,
    })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|err| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: err.to_string().trim_end().to_string(),
    })
}

/// Sections that were renamed: the old name still loads, into the new one, with a warning.
const RENAMED_SECTIONS: [(&str, &str, &str); 1] = [("runner", "scheduler", "it configures the scheduler")];

/// Applies environment overrides to `table`, then deserializes and validates it.
pub fn from_table(table: toml::Table, env: &Env) -> Result<(Config, Vec<String>), ConfigError> {
    load_table(table, env).map(|(config, overrides, _)| (config, overrides))
}

/// Moves the keys of renamed sections to their new names, saying so for each. A key set
/// under both names keeps the new name's value.
fn rename_sections(table: &mut toml::Table, deprecations: &mut Vec<String>) {
    for (old, new, why) in RENAMED_SECTIONS {
        let Some(toml::Value::Table(moved)) = table.remove(old) else {
            continue;
        };
        deprecations.push(format!(
            "the section [{old}] is deprecated ({why}): rename it to [{new}]"
        ));
        let target = table
            .entry(new)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(target) = target {
            for (key, value) in moved {
                target.entry(key).or_insert(value);
            }
        }
    }
}

/// The dotted key an override names, renamed sections moved to their new names.
fn current_key(mut key: Vec<String>, var: &str, deprecations: &mut Vec<String>) -> Vec<String> {
    if let Some((old, new, why)) = RENAMED_SECTIONS
        .iter()
        .find(|(old, ..)| key.first().is_some_and(|k| k == old))
    {
        let upper = new.to_uppercase();
        deprecations.push(format!(
            "{var}: the section `{old}` is deprecated ({why}): use {ENV_PREFIX}{upper}__{}",
            key[1..].join("__").to_uppercase()
        ));
        key[0] = new.to_string();
    }
    key
}

/// `llm.response_format = true/false` (a boolean) became `llm.structured_output`.
fn rename_keys(table: &mut toml::Table, deprecations: &mut Vec<String>) {
    let Some(toml::Value::Table(llm)) = table.get_mut("llm") else {
        return;
    };
    let Some(old) = llm.remove("response_format") else {
        return;
    };
    let new = match old {
        toml::Value::Boolean(true) => "json_schema",
        _ => "off",
    };
    deprecations.push(format!(
        "llm.response_format is deprecated: write llm.structured_output = \"{new}\" (or \"auto\")"
    ));
    llm.entry("structured_output")
        .or_insert_with(|| toml::Value::String(new.to_string()));
}

/// [`from_table`], and the deprecated keys it met.
fn load_table(mut table: toml::Table, env: &Env) -> Result<(Config, Vec<String>, Vec<String>), ConfigError> {
    let mut deprecations = Vec::new();
    rename_sections(&mut table, &mut deprecations);
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut vars: Vec<_> = env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    for (var, raw) in vars {
        let key: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
        let key = current_key(key, var, &mut deprecations);
        let dotted = key.join(".");
        if key.iter().any(String::is_empty) {
            return Err(invalid(
                &dotted,
                Some(var),
                "malformed override name; use PERSONA_RUNNER__SECTION__KEY",
            ));
        }
        set_path(&mut table, &key, env_value(raw)).map_err(|message| invalid(&dotted, Some(var), &message))?;
        overrides.push((dotted, var.clone()));
    }

    let origin_of = |key: &str| {
        overrides
            .iter()
            .find(|(dotted, _)| {
                dotted == key || key.starts_with(&format!("{dotted}.")) || dotted.starts_with(&format!("{key}."))
            })
            .map(|(_, var)| var.as_str())
    };
    rename_keys(&mut table, &mut deprecations);
    judge_defaults(&mut table);
    let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
        let key = err.path().to_string();
        // toml adds an "in `section`" line that repeats the key; the first line says it all.
        let message = err.inner().to_string();
        let message = message.lines().next().unwrap_or_default().to_string();
        invalid(&key, origin_of(&key), &message)
    })?;
    validate(&config).map_err(|(key, message)| invalid(key, origin_of(key), &message))?;
    Ok((
        config,
        overrides.into_iter().map(|(_, var)| var).collect(),
        deprecations,
    ))
}

/// A `[judge]` table starts from the `[llm]` defaults, except that a judge reads at
/// temperature 0 and has a key of its own: what the table leaves out is filled in here.
fn judge_defaults(table: &mut toml::Table) {
    let Some(toml::Value::Table(judge)) = table.get_mut("judge") else {
        return;
    };
    let defaults = super::checks::no_judge();
    judge
        .entry("temperature")
        .or_insert_with(|| toml::Value::Float(f64::from(defaults.temperature)));
    judge
        .entry("api_key_env")
        .or_insert_with(|| toml::Value::String(defaults.api_key_env.clone()));
}

fn invalid(key: &str, var: Option<&str>, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        origin: var.map(|v| format!(" (from {v})")).unwrap_or_default(),
        message: message.to_string(),
    }
}

/// An override's text becomes a TOML number, boolean or array when it reads as one
/// (`8`, `true`, `["a", "b"]`), otherwise a string, so `…__URL=sqlite://x` needs no quotes.
fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut parsed) => match parsed.remove("v") {
            Some(
                value @ (toml::Value::Integer(_)
                | toml::Value::Float(_)
                | toml::Value::Boolean(_)
                | toml::Value::Array(_)),
            ) => value,
            _ => toml::Value::String(raw.to_string()),
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, key: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = key.split_last().ok_or("empty key")?;
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is a value, not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, vars: &[(&str, &str)]) -> (Config, Vec<String>) {
        let env: Env = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (config, _, deprecations) = load_table(text.parse().unwrap(), &env).unwrap();
        (config, deprecations)
    }

    #[test]
    fn the_old_runner_section_still_loads_into_the_scheduler_with_a_warning() {
        let (config, deprecations) = load("[runner]\nconcurrency = 7\njitter = \"5s\"\n", &[]);
        assert_eq!(config.scheduler.concurrency, 7);
        assert_eq!(config.scheduler.jitter.0, std::time::Duration::from_secs(5));
        assert_eq!(
            deprecations,
            ["the section [runner] is deprecated (it configures the scheduler): rename it to [scheduler]"]
        );
        // Both names: the new one wins where both set a key.
        let (config, _) = load(
            "[runner]\nconcurrency = 7\npaused = true\n[scheduler]\nconcurrency = 2\n",
            &[],
        );
        assert_eq!((config.scheduler.concurrency, config.scheduler.paused), (2, true));
        let (config, deprecations) = load("", &[("PERSONA_RUNNER__RUNNER__MAX_ATTEMPTS", "5")]);
        assert_eq!(config.scheduler.max_attempts, 5);
        assert!(
            deprecations[0].contains("use PERSONA_RUNNER__SCHEDULER__MAX_ATTEMPTS"),
            "{deprecations:?}"
        );
        assert!(load("[scheduler]\nconcurrency = 3\n", &[]).1.is_empty());
    }
}
