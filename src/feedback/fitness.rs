//! Whether a simulator version is fit to simulate, before its ratings are trusted: how
//! many of its ticks did nothing (`idle`), how many calls it had to have recovered from
//! its text, how often it called tools the product does not list or sent arguments the
//! tool's schema refused, and how its rating answers went.

use serde::Serialize;

use crate::store::FitnessRow;

/// One simulator version's fitness over the report's window.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SimulatorFitness {
    pub simulator: String,
    /// Finished ticks.
    pub ticks: i64,
    /// Ticks in which the persona never used the app.
    pub idle: i64,
    /// `idle` of `ticks`, 0–1.
    pub idle_rate: f64,
    /// Calls the persona asked for.
    pub calls: i64,
    /// Calls written as text and recovered from it.
    pub recovered: i64,
    /// Calls to tools the product does not list.
    pub unknown_tools: i64,
    /// Calls whose arguments were not JSON, not an object, or not what the schema asks.
    pub schema_refused: i64,
    /// Rating answers usable at once, usable after the one repair, and unusable.
    pub ratings_valid_first: i64,
    pub ratings_valid_repaired: i64,
    pub ratings_invalid: i64,
}

impl From<FitnessRow> for SimulatorFitness {
    fn from(row: FitnessRow) -> Self {
        Self {
            idle_rate: if row.ticks > 0 {
                row.idle as f64 / row.ticks as f64
            } else {
                0.0
            },
            simulator: row.simulator,
            ticks: row.ticks,
            idle: row.idle,
            calls: row.calls,
            recovered: row.recovered,
            unknown_tools: row.unknown_tools,
            schema_refused: row.schema_refused,
            ratings_valid_first: row.ratings_valid_first,
            ratings_valid_repaired: row.ratings_valid_repaired,
            ratings_invalid: row.ratings_invalid,
        }
    }
}
