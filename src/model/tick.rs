//! A tick as data: what started it, how it ended, whether its rating was usable, the
//! claim that starts it, the finish that ends it, and the record the admin API lists.

use chrono::{DateTime, Utc};
use uuid::Uuid;

text_enum! {
    /// What started a tick (`check`: a trial of a goal, see `persona-runner check`).
    pub enum Trigger { Schedule => "schedule", Signal => "signal", Cli => "cli", Api => "api", Check => "check" }
}

text_enum! {
    /// How a tick ended (`skipped`: the spend cap was reached before it started, so no
    /// LLM request was made; `idle`: the model answered without using the app, so the
    /// tick is no evidence about the product).
    pub enum TickStatus {
        Running => "running",
        Ok => "ok",
        Failed => "failed",
        Timeout => "timeout",
        Abandoned => "abandoned",
        Skipped => "skipped",
        Idle => "idle",
    }
}

text_enum! {
    /// Whether a tick's self-rating was usable.
    pub enum RatingStatus { Valid => "valid", Invalid => "invalid", Skipped => "skipped" }
}

/// A tick to claim.
#[derive(Clone, Debug)]
pub struct NewTick {
    pub tenant_id: Uuid,
    pub persona_id: Uuid,
    pub trigger: Trigger,
    /// The schedule slot this tick serves (`None` for one-off ticks).
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub runner_id: String,
    pub lease: std::time::Duration,
    /// The target (product) it runs against; `None` is the default target.
    pub target: Option<String>,
    /// The shared space it works in; `None`: the persona's own.
    pub space: Option<String>,
}

/// A claimed (or finished) tick: who, why, when, and how it stands.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Tick {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub persona_id: Uuid,
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: TickStatus,
    pub error: Option<String>,
    pub runner_id: String,
    pub lease_expires_at: DateTime<Utc>,
    pub target: Option<String>,
    /// The shared space it worked in; `None`: the persona's own.
    pub space: Option<String>,
}

/// How a tick ended.
#[derive(Clone, Debug)]
pub struct TickFinish {
    pub status: TickStatus,
    pub error: Option<String>,
    pub turns: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub llm_model: Option<String>,
    /// Hash of the prompt templates the tick used.
    pub prompt_version: Option<String>,
    /// The simulator version: driver, model, prompt template hash, temperature.
    pub simulator: Option<String>,
    /// The MCP protocol version the gateway agreed to.
    pub protocol_version: Option<String>,
    pub rating_status: Option<RatingStatus>,
    /// The model's raw rating answer, kept when it could not be used.
    pub rating_raw: Option<String>,
    /// Rating answers the model gave: 0 (none asked), 1, or 2 (the first needed a repair).
    pub rating_attempts: i32,
    /// The conversation, as the model saw it (redacted, capped).
    pub transcript: Option<Transcript>,
    /// The tick's OpenTelemetry trace, when traces are exported.
    pub trace_id: Option<String>,
}

impl TickFinish {
    /// A finish with only a status and an error (counters zero, nothing rated).
    pub fn status(status: TickStatus, error: Option<String>) -> Self {
        Self {
            status,
            error,
            turns: 0,
            tokens_in: 0,
            tokens_out: 0,
            llm_model: None,
            prompt_version: None,
            simulator: None,
            protocol_version: None,
            rating_status: None,
            rating_raw: None,
            rating_attempts: 0,
            transcript: None,
            trace_id: None,
        }
    }
}

/// A tick's conversation: its entries (a JSON array), their size, and whether the cap cut
/// it short.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Transcript {
    #[schema(value_type = Vec<Object>)]
    pub entries: serde_json::Value,
    pub chars: i64,
    pub truncated: bool,
}

/// A tick as listed: its outcome and counters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct TickRecord {
    pub id: Uuid,
    pub persona_id: Uuid,
    pub persona: String,
    #[schema(value_type = String)]
    pub trigger: Trigger,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(value_type = String)]
    pub status: TickStatus,
    pub error: Option<String>,
    pub runner_id: String,
    pub llm_model: Option<String>,
    pub prompt_version: Option<String>,
    /// Driver, model, prompt template hash and temperature: what produced the ratings.
    pub simulator: Option<String>,
    /// The MCP protocol version the gateway agreed to.
    pub protocol_version: Option<String>,
    /// The target (product) it ran against; `null`: the default target.
    pub target: Option<String>,
    /// The shared space it worked in; `null`: the persona's own.
    pub space: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub turns: i32,
    pub tool_calls: i32,
    pub calls_ok: i32,
    pub calls_error: i32,
    pub calls_deduped: i32,
    pub calls_denied: i32,
    pub calls_unknown: i32,
    pub calls_not_sent: i32,
    #[schema(value_type = Option<String>)]
    pub rating_status: Option<RatingStatus>,
    /// The tick's OpenTelemetry trace id (32 hex digits), when traces were exported.
    pub trace_id: Option<String>,
}

/// How a tick's calls ended, counted from its audited rows when it finished (never
/// counted apart while it ran).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounts {
    pub tool_calls: i32,
    pub calls_ok: i32,
    pub calls_error: i32,
    pub calls_deduped: i32,
    pub calls_denied: i32,
    pub calls_unknown: i32,
    pub calls_not_sent: i32,
}
