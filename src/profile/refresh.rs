//! Keeping a user's alignment current: the rescore after new evidence (a tick's calls, an
//! API interaction), the reassessment flag, and the suggestion of a better-fitting persona
//! among the tenant's candidates (read at most every few minutes per tenant).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::ProfileError;
use crate::model::persona::Persona;
use crate::model::profile::{
    Alignment, AlignmentUpdate, FORMULA, ProfileStatus, Shape, assess, components, score, window_start,
};
use crate::store::{Store, StoreError};

/// The personas a flagged user may be pointed to, per tenant, read from the store at most
/// every few minutes: a flagged tick must not list a large tenant's personas each time.
#[derive(Debug, Default)]
pub struct Candidates {
    cache: std::sync::Mutex<BTreeMap<Uuid, CachedShapes>>,
    /// One read at a time: flagged ticks that miss the cache together wait for the one
    /// read instead of each listing the tenant.
    reading: tokio::sync::Mutex<()>,
}

/// A tenant's candidates and when they were read.
type CachedShapes = (std::time::Instant, std::sync::Arc<Vec<Shape>>);

/// How long a tenant's candidates are reused.
const CANDIDATES_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Tenants whose candidates are kept at once (the oldest entry goes first).
const CANDIDATES_TENANTS: usize = 64;
/// Personas considered for a suggestion, role personas first.
pub const MAX_CANDIDATES: usize = 5000;

impl Candidates {
    async fn of(&self, store: &Store, tenant: Uuid) -> Result<std::sync::Arc<Vec<Shape>>, StoreError> {
        let cached = || {
            self.cache
                .lock()
                .expect("candidates lock")
                .get(&tenant)
                .filter(|(at, _)| at.elapsed() < CANDIDATES_TTL)
                .map(|(_, shapes)| shapes.clone())
        };
        if let Some(shapes) = cached() {
            return Ok(shapes);
        }
        let _reading = self.reading.lock().await;
        if let Some(shapes) = cached() {
            return Ok(shapes);
        }
        // Role personas (profile-only or with a flow) are the ones meant for assignment.
        let personas = store.candidate_personas(tenant, MAX_CANDIDATES as i64).await?;
        let shapes = std::sync::Arc::new(personas.iter().map(Shape::from).collect::<Vec<_>>());
        let mut cache = self.cache.lock().expect("candidates lock");
        if cache.len() >= CANDIDATES_TENANTS
            && let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(id, _)| *id)
        {
            cache.remove(&oldest);
        }
        cache.insert(tenant, (std::time::Instant::now(), shapes.clone()));
        Ok(shapes)
    }
}

/// Recomputes and stores the alignment of `user` in `tenant` from its evidence of the
/// last 30 days (at most 30 small rows), with a suggestion when it falls below
/// [`REASSESS_BELOW`]. A suggestion is looked for when the flag is newly raised (or none
/// was found yet), among `candidates`. `known` is a persona the caller already holds (the
/// ticked one, as it was defined for the tick): when it is the user's assigned persona it
/// is not read again.
pub async fn refresh_alignment(
    store: &Store,
    tenant: Uuid,
    user: Uuid,
    candidates: &Candidates,
    known: Option<&Persona>,
) -> Result<Alignment, ProfileError> {
    let profile = store
        .get_profile(tenant, user)
        .await?
        .ok_or(ProfileError::NoProfile(user))?;
    let observed = store
        .alignment_evidence(tenant, user, &window_start(crate::time::now()))
        .await?;
    let assigned = match profile.persona_id {
        Some(id) if known.is_some_and(|p| p.id == id) => known.map(Shape::from),
        Some(id) => store.get_persona(tenant, id).await?.map(|p| Shape::from(&p)),
        None => None,
    };
    let (parts, current, flagged) = assess(assigned.as_ref(), &observed, &profile.learned);
    let keep_suggestion =
        flagged && profile.status == ProfileStatus::PendingReassessment && profile.suggested_persona_id.is_some();
    let suggestion: Option<(Uuid, String, f64)> = if keep_suggestion {
        let id = profile.suggested_persona_id.expect("checked");
        store.get_persona(tenant, id).await?.map(|p| {
            let shape = Shape::from(&p);
            let score = score(&observed, &components(&shape, &observed, &profile.learned)).unwrap_or(0.0);
            (p.id, p.name, score)
        })
    } else if flagged {
        let shapes = candidates.of(store, tenant).await?;
        shapes
            .iter()
            .filter(|p| Some(p.id) != profile.persona_id)
            .filter_map(|p| score(&observed, &components(p, &observed, &profile.learned)).map(|s| (p, s)))
            .filter(|(_, s)| *s > current.unwrap_or(0.0))
            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.name.cmp(&a.0.name)))
            .map(|(p, s)| (p.id, p.name.clone(), s))
    } else {
        None
    };
    let status = if flagged {
        ProfileStatus::PendingReassessment
    } else {
        ProfileStatus::Active
    };
    let suggested_id = suggestion.as_ref().map(|(id, _, _)| *id);
    let update = AlignmentUpdate {
        score: current,
        reassessment_recommended: flagged,
        suggested_persona_id: suggested_id,
        status,
    };
    store.set_alignment(tenant, user, &update).await?;
    Ok(Alignment {
        persona_id: profile.persona_id,
        score: current,
        components: parts,
        interactions_considered: observed.interactions,
        reassessment_recommended: flagged,
        suggested_persona_id: suggested_id,
        suggested_persona_name: suggestion.as_ref().map(|(_, name, _)| name.clone()),
        suggested_score: suggestion.map(|(_, _, s)| s),
        status,
        formula: FORMULA,
    })
}
