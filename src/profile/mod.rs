//! The profile store as a service (seed 004): recording interactions with the learning
//! they cause, keeping a user's alignment current (`refresh`), and what a tick's end
//! records for its persona user ([`TickInteractions`], run by the store inside the end's
//! transaction). The rules themselves are plain data and functions in `model::profile`.

mod refresh;

use uuid::Uuid;

pub use refresh::{Candidates, MAX_CANDIDATES, refresh_alignment};

use crate::model::call::Call;
use crate::model::persona::Persona;
use crate::model::profile::{
    AlignmentUpdate, Interaction, Learned, NewInteraction, Observed, Profile, learn, settled_alignment,
    tick_interactions, window_start,
};
use crate::store::{Store, StoreError, TickProfile};

/// Why the profile side of a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("user {0} has no profile yet: assign a persona first (PUT /api/my-persona/reassign)")]
    NoProfile(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records an interaction and moves the user's learned preferences with it.
pub async fn record(store: &Store, interaction: &NewInteraction) -> Result<Interaction, StoreError> {
    let delta = Observed::of(interaction.interaction_type, &interaction.metadata);
    let mut recorded = store
        .record_interactions(
            interaction.tenant_id,
            interaction.user_id,
            std::slice::from_ref(interaction),
            learn,
            &delta,
        )
        .await?;
    recorded
        .pop()
        .ok_or_else(|| StoreError::NotFound("the recorded interaction".into()))
}

/// What a finished tick records in its persona user's profile, inside the tick's end
/// transaction (`Store::end_tick`): its calls as `action_taken` interactions, the learned
/// preferences and the day's evidence moved with them, and the alignment when it is
/// settled without reading another persona (`model::profile::settled_alignment`).
pub struct TickInteractions<'a> {
    pub persona: &'a Persona,
    pub user_id: Uuid,
    pub tick_id: Uuid,
    /// When the window of evidence starts (`YYYY-MM-DD`).
    window_from: String,
}

impl<'a> TickInteractions<'a> {
    /// The record of `persona`'s tick `tick_id`; `None` when the persona has no user.
    pub fn of(persona: &'a Persona, tick_id: Uuid) -> Option<Self> {
        Some(Self {
            persona,
            user_id: persona.user_id?,
            tick_id,
            window_from: window_start(crate::time::now()),
        })
    }
}

impl TickProfile for TickInteractions<'_> {
    fn tenant(&self) -> Uuid {
        self.persona.tenant_id
    }

    fn user(&self) -> Uuid {
        self.user_id
    }

    fn interactions(&self, calls: &[Call]) -> (Vec<NewInteraction>, Observed) {
        tick_interactions(self.persona, self.user_id, self.tick_id, calls)
    }

    fn learn(&self, learned: &mut Learned, interaction: &NewInteraction) {
        learn(learned, interaction);
    }

    fn evidence_from(&self) -> &str {
        &self.window_from
    }

    fn alignment(&self, profile: &Profile, observed: &Observed) -> Option<AlignmentUpdate> {
        settled_alignment(profile, observed, self.persona)
    }
}
