//! How the API shows a call and a rating: the views of the one audited record
//! (`model::call::Call`) and of a stored rating (`model::rating::Rating`) under the names
//! the OpenAPI document gives them. Each serializes a subset of the record's fields, with
//! its kind and result as their text.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::call::Call;
use crate::model::rating::Rating;

/// An audited call as read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ActionRecord {
    pub seq: i32,
    /// `call`, `elicitation` or `sampling`.
    #[schema(value_type = String)]
    pub kind: crate::model::call::CallKind,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    /// `pending`, `ok`, `error`, `deduped`, `denied`, `unknown` or `not_sent`.
    #[schema(value_type = String)]
    pub result: crate::model::call::CallResult,
    pub error_message: Option<String>,
    pub chaos: bool,
    pub latency_ms: Option<i32>,
    /// The shared space it acted in; `null`: the persona's own.
    pub space: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Call> for ActionRecord {
    fn from(call: Call) -> Self {
        Self {
            seq: call.seq,
            kind: call.kind,
            tool_name: call.tool_name,
            module: call.module,
            input_hash: call.input_hash,
            result: call.result,
            error_message: call.error_message,
            chaos: call.chaos,
            latency_ms: call.latency_ms,
            space: call.space,
            created_at: call.created_at,
        }
    }
}

/// A call as it was sent and answered (redacted, capped): the tick page's evidence.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RecordedCall {
    pub seq: i32,
    #[schema(value_type = String)]
    pub kind: crate::model::call::CallKind,
    pub tool_name: String,
    pub module: String,
    #[schema(value_type = String)]
    pub result: crate::model::call::CallResult,
    pub arguments: Option<String>,
    pub output: Option<String>,
    pub error_message: Option<String>,
    pub chaos: bool,
    /// The shared space it acted in; `null`: the persona's own.
    pub space: Option<String>,
}

impl From<Call> for RecordedCall {
    fn from(call: Call) -> Self {
        Self {
            seq: call.seq,
            kind: call.kind,
            tool_name: call.tool_name,
            module: call.module,
            result: call.result,
            arguments: call.arguments,
            output: call.output,
            error_message: call.error_message,
            chaos: call.chaos,
            space: call.space,
        }
    }
}

/// An audited call as listed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ActionListing {
    pub id: Uuid,
    pub tick_id: Uuid,
    pub persona_id: Uuid,
    pub persona: String,
    pub seq: i32,
    /// `call`, `elicitation` or `sampling`.
    #[schema(value_type = String)]
    pub kind: crate::model::call::CallKind,
    pub tool_name: String,
    pub module: String,
    pub input_hash: String,
    #[schema(value_type = String)]
    pub result: crate::model::call::CallResult,
    pub error_message: Option<String>,
    pub chaos: bool,
    pub latency_ms: Option<i32>,
    /// The shared space it acted in; `null`: the persona's own.
    pub space: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl ActionListing {
    /// The listing of `call`, made by the persona named `persona`.
    pub fn of(call: Call, persona: String) -> Self {
        Self {
            id: call.id,
            tick_id: call.tick_id,
            persona_id: call.persona_id,
            persona,
            seq: call.seq,
            kind: call.kind,
            tool_name: call.tool_name,
            module: call.module,
            input_hash: call.input_hash,
            result: call.result,
            error_message: call.error_message,
            chaos: call.chaos,
            latency_ms: call.latency_ms,
            space: call.space,
            created_at: call.created_at,
        }
    }
}

/// A rating as read back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct FeedbackRecord {
    pub module: String,
    pub rating: i32,
    pub notes: Option<String>,
    pub evidence_calls: i32,
    pub evidence_errors: i32,
    pub evidence_mean_latency_ms: Option<f64>,
    pub evidence_rating: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl From<Rating> for FeedbackRecord {
    fn from(rating: Rating) -> Self {
        Self {
            module: rating.module,
            rating: rating.rating,
            notes: rating.notes,
            evidence_calls: rating.evidence_calls,
            evidence_errors: rating.evidence_errors,
            evidence_mean_latency_ms: rating.evidence_mean_latency_ms,
            evidence_rating: rating.evidence_rating,
            created_at: rating.created_at,
        }
    }
}
