//! What a finished tick reports: the CLI's table and `--json`, the API's answer, the
//! check's input.

use uuid::Uuid;

use super::rating;
use crate::model::tick::{RatingStatus, TickStatus, Trigger};

/// The end of a tick, as the CLI and API report it (read back from the store).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TickSummary {
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub persona: String,
    pub trigger: Trigger,
    /// The shared space the tick worked in, or `personal`.
    pub space: String,
    pub status: TickStatus,
    pub error: Option<String>,
    pub calls_ok: u32,
    pub calls_error: u32,
    pub calls_deduped: u32,
    pub calls_denied: u32,
    /// Calls sent whose answer was never recorded (the tick ended in between).
    pub calls_unknown: u32,
    /// Calls the runner could not build (never sent).
    pub calls_not_sent: u32,
    pub modules: Vec<String>,
    pub ratings: Vec<rating::ModuleRating>,
    pub rating_status: Option<RatingStatus>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub turns: i32,
    /// Driver, model, prompt template hash and temperature.
    pub simulator: String,
    pub duration_ms: u128,
    /// A check tick's reads of the product's state after play.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<crate::model::goal::StateAnswer>,
    /// The tick's trace id, when traces are exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The tick's root span, as the parent of what follows it (a check's judge).
    #[serde(skip)]
    pub trace: opentelemetry::Context,
}
