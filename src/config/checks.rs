//! `[checks]` (goals run on a cadence by the daemon, and the defaults of `check`) and the
//! `[judge]` model's defaults: a judge is off until a `[judge]` table names one.

use serde::{Deserialize, Serialize};

use super::llm::{LlmConfig, LlmProvider};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChecksConfig {
    /// When the daemon runs the goals (a 5- or 6-field cron expression in UTC); "" = never.
    pub cadence: String,
    /// Trials per goal and persona.
    pub trials: u32,
    /// Trials that must pass for a goal to hold (0 = all of them).
    pub min_pass: u32,
    /// Goal names to run ([] = every goal).
    pub goals: Vec<String>,
    /// Personas (ids or emails) whose goals run ([] = every persona with goals).
    pub personas: Vec<String>,
    /// Where reports link tick pages from ("" = the sidecar's own address, api.listen).
    pub links_base: String,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        Self {
            cadence: String::new(),
            trials: 1,
            min_pass: 0,
            goals: Vec::new(),
            personas: Vec::new(),
            links_base: String::new(),
        }
    }
}

/// The judge when no `[judge]` table is given: none. A `[judge]` table starts from the
/// `[llm]` defaults (its provider `auto`: on when its API key is set).
pub fn no_judge() -> LlmConfig {
    LlmConfig {
        provider: LlmProvider::Offline,
        api_key_env: "PERSONA_RUNNER_JUDGE_API_KEY".into(),
        temperature: 0.0,
        ..LlmConfig::default()
    }
}
