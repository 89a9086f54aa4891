//! A rating as data: one 1–5 score with a note per module a persona used in a tick,
//! stored with that module's evidence in the tick so leniency can be seen. (The QA
//! report over ratings is called *feedback*, as is their table.)

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One rating of one module at the end of a tick, with that module's evidence.
#[derive(Clone, Debug)]
pub struct NewRating {
    pub tenant_id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub module: String,
    pub rating: i32,
    pub notes: Option<String>,
    pub evidence_calls: i32,
    pub evidence_errors: i32,
    pub evidence_mean_latency_ms: Option<f64>,
    /// The rating the evidence alone gives (the offline driver's rule), to show leniency.
    pub evidence_rating: Option<i32>,
    /// The simulator version that rated (driver, model, prompt, temperature).
    pub simulator: String,
    /// When it was given: now, unless an import or a fixture says otherwise.
    pub recorded_at: Option<DateTime<Utc>>,
}

/// A rating as read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Rating)]
pub struct Rating {
    pub module: String,
    pub rating: i32,
    pub notes: Option<String>,
    pub evidence_calls: i32,
    pub evidence_errors: i32,
    pub evidence_mean_latency_ms: Option<f64>,
    pub evidence_rating: Option<i32>,
    pub created_at: DateTime<Utc>,
}
