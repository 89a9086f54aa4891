//! The profile store's service (seed 004): recording interactions and keeping alignments
//! current. Transitional: its rules are moving to `model::profile`.

mod refresh;

pub use crate::model::profile::*;
pub(crate) use refresh::window_start;
pub use refresh::{Candidates, MAX_CANDIDATES, refresh_alignment, settled_alignment};
