//! The profile store (seed 004) as a domain: interaction types, how learned preferences
//! move with each interaction, and the alignment score that compares a user's observed
//! behaviour with the definition of the persona they are assigned to.
//!
//! Pure functions over plain data: the store keeps the rows, and the profile service
//! (`crate::profile`) records interactions and keeps alignments current with these rules.
//!
//! # The alignment formula
//!
//! Over the user's interactions of the last [`ALIGNMENT_WINDOW_DAYS`] UTC days (today and
//! the 29 before; kept as per-day evidence rows, so a rescore never reads history), up to four
//! components are scored 0–100, each only when the persona defines it and the user's
//! interactions give evidence for it:
//!
//! | component | weight | persona side | observed side | score |
//! |---|---|---|---|---|
//! | modules | 0.4 | `module_mix`, normalized | module of each interaction (`metadata.module`, else the part of `metadata.action_id` before the first `.`) | histogram intersection Σ min(pᵢ, qᵢ) × 100 |
//! | metrics | 0.3 | `key_metrics` weights, normalized | `metric_focused` interactions by `metadata.metric_id` (or `metric_name`) | histogram intersection × 100 |
//! | actions | 0.2 | `actions` | `action_taken` interactions by `metadata.action_id` (or its verb after the first `.`) | share of them the persona lists × 100 |
//! | detail | 0.1 | `detail_level`: executive 20, medium 50, high 80 | the learned `detail_preference` (only once a `detail_expanded` or `headline_viewed` was seen) | 100 − \|preference − target\| |
//!
//! The score is the weighted mean of the components present, rounded to one decimal.
//! With fewer than [`MIN_INTERACTIONS`] interactions, or no component present, there is
//! no score (not enough evidence to judge). A score below [`REASSESS_BELOW`] sets the
//! reassessment flag and suggests the tenant's persona that scores best on the same
//! evidence, when one scores higher than the assigned one.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::persona::{DetailLevel, Persona};

/// Days of interactions the alignment score looks at.
pub const ALIGNMENT_WINDOW_DAYS: i64 = 30;
/// Interactions needed before a score is given.
pub const MIN_INTERACTIONS: usize = 5;
/// Below this the reassessment flag is set.
pub const REASSESS_BELOW: f64 = 60.0;

text_enum! {
    /// The interaction types of the profile store.
    pub enum InteractionType {
        HeadlineViewed => "headline_viewed",
        ChartInteracted => "chart_interacted",
        MetricFocused => "metric_focused",
        ExternalDataUsed => "external_data_used",
        ActionTaken => "action_taken",
        DetailExpanded => "detail_expanded",
        Collaborated => "collaborated",
        Shared => "shared",
        FeedbackGiven => "feedback_given",
    }
}

text_enum! {
    pub enum Sentiment { Positive => "positive", Neutral => "neutral", Negative => "negative" }
}

text_enum! {
    pub enum ProfileStatus {
        Active => "active",
        Inactive => "inactive",
        PendingReassessment => "pending_reassessment",
    }
}

/// What a user's interactions taught about them: 0–100 tendencies (50 = no evidence
/// yet) and per-item scores.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Learned {
    pub detail_preference: i32,
    pub external_data_usage: i32,
    pub decision_speed: i32,
    pub collaboration_frequency: i32,
    pub metric_preferences: BTreeMap<String, f64>,
    pub action_preferences: BTreeMap<String, f64>,
    pub data_source_preferences: BTreeMap<String, f64>,
    /// Interactions so far, by type.
    pub interaction_summary: BTreeMap<String, i64>,
}

/// One user's profile: assignment, learned preferences, alignment.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub persona_id: Option<Uuid>,
    #[serde(flatten)]
    pub learned: Learned,
    pub context_preferences: Vec<String>,
    pub total_interactions: i32,
    pub last_interaction_at: Option<DateTime<Utc>>,
    pub alignment_score: Option<f64>,
    pub reassessment_recommended: bool,
    pub suggested_persona_id: Option<Uuid>,
    #[schema(value_type = String)]
    pub status: ProfileStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One interaction to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewInteraction {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub persona_id: Option<Uuid>,
    /// Set when a tick's tool call produced it.
    pub tick_id: Option<Uuid>,
    pub interaction_type: InteractionType,
    pub page_type: Option<String>,
    pub page_id: Option<String>,
    pub element_id: Option<String>,
    pub element_type: Option<String>,
    pub metadata: Value,
    pub duration_seconds: Option<i32>,
    pub feedback_sentiment: Option<Sentiment>,
    pub feedback_comment: Option<String>,
}

/// A recorded interaction.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Interaction {
    pub id: Uuid,
    pub user_id: Uuid,
    pub persona_id: Option<Uuid>,
    pub tick_id: Option<Uuid>,
    #[schema(value_type = String)]
    pub interaction_type: InteractionType,
    pub page_type: Option<String>,
    pub page_id: Option<String>,
    pub element_id: Option<String>,
    pub element_type: Option<String>,
    pub metadata: Value,
    pub duration_seconds: Option<i32>,
    #[schema(value_type = Option<String>)]
    pub feedback_sentiment: Option<Sentiment>,
    pub feedback_comment: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Moves `value` a `rate` of the way toward `target`, within 0..=100.
fn nudge(value: i32, target: i32, rate: f64) -> i32 {
    let moved = f64::from(value) + f64::from(target - value) * rate;
    (moved.round() as i32).clamp(0, 100)
}

fn text_field<'a>(metadata: &'a Value, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| metadata.get(*name).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
}

/// How one interaction moves the learned preferences. Each tendency drifts toward 100
/// when the interaction shows it and slowly back toward 0 when another kind happens, so
/// a preference reflects recent behaviour rather than all-time totals.
pub fn learn(learned: &mut Learned, interaction: &NewInteraction) {
    use InteractionType as T;
    let kind = interaction.interaction_type;
    *learned
        .interaction_summary
        .entry(kind.as_str().to_string())
        .or_default() += 1;
    let metadata = &interaction.metadata;
    match kind {
        T::DetailExpanded => learned.detail_preference = nudge(learned.detail_preference, 100, 0.10),
        T::HeadlineViewed => learned.detail_preference = nudge(learned.detail_preference, 0, 0.05),
        _ => {}
    }
    if kind == T::ExternalDataUsed {
        learned.external_data_usage = nudge(learned.external_data_usage, 100, 0.10);
        if let Some(source) = text_field(metadata, &["data_source", "source"]) {
            *learned.data_source_preferences.entry(source.to_string()).or_default() += 1.0;
        }
    } else {
        learned.external_data_usage = nudge(learned.external_data_usage, 0, 0.02);
    }
    if matches!(kind, T::Collaborated | T::Shared) {
        learned.collaboration_frequency = nudge(learned.collaboration_frequency, 100, 0.10);
    } else {
        learned.collaboration_frequency = nudge(learned.collaboration_frequency, 0, 0.02);
    }
    if kind == T::ActionTaken {
        if let Some(action) = text_field(metadata, &["action_id", "action"]) {
            *learned.action_preferences.entry(action.to_string()).or_default() += 1.0;
        }
        // Fast decisions (≤ 30 s) pull toward 100, slow ones (≥ 5 min) toward 0.
        if let Some(seconds) = interaction.duration_seconds {
            let target = 100 - ((seconds.clamp(30, 300) - 30) * 100 / 270);
            learned.decision_speed = nudge(learned.decision_speed, target, 0.10);
        }
    }
    if kind == T::MetricFocused
        && let Some(metric) = text_field(metadata, &["metric_id", "metric_name", "metric"])
    {
        *learned.metric_preferences.entry(metric.to_string()).or_default() += 1.0;
    }
}

/// The module an interaction belongs to, if it says.
fn module_of(metadata: &Value) -> Option<String> {
    if let Some(module) = text_field(metadata, &["module"]) {
        return Some(module.to_string());
    }
    text_field(metadata, &["action_id"])
        .and_then(|action| action.split_once('.'))
        .map(|(module, _)| module.to_string())
}

/// What the alignment formula reads from a user's interactions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub interactions: usize,
    pub modules: BTreeMap<String, f64>,
    pub metrics: BTreeMap<String, f64>,
    pub actions: BTreeMap<String, f64>,
    pub detail_signals: usize,
}

impl Observed {
    /// The evidence of one interaction.
    pub fn of(kind: InteractionType, metadata: &Value) -> Self {
        let mut observed = Self::default();
        observed.add(kind, metadata);
        observed
    }

    /// Adds one interaction to the evidence.
    pub fn add(&mut self, kind: InteractionType, metadata: &Value) {
        self.interactions += 1;
        if let Some(module) = module_of(metadata) {
            *self.modules.entry(module).or_default() += 1.0;
        }
        match kind {
            InteractionType::MetricFocused => {
                if let Some(metric) = text_field(metadata, &["metric_id", "metric_name", "metric"]) {
                    *self.metrics.entry(metric.to_string()).or_default() += 1.0;
                }
            }
            InteractionType::ActionTaken => {
                if let Some(action) = text_field(metadata, &["action_id", "action"]) {
                    *self.actions.entry(action.to_string()).or_default() += 1.0;
                }
            }
            InteractionType::DetailExpanded | InteractionType::HeadlineViewed => self.detail_signals += 1,
            _ => {}
        }
    }

    /// Adds another day's (or interaction's) evidence to this one.
    pub fn merge(&mut self, other: &Observed) {
        self.interactions += other.interactions;
        self.detail_signals += other.detail_signals;
        for (into, from) in [
            (&mut self.modules, &other.modules),
            (&mut self.metrics, &other.metrics),
            (&mut self.actions, &other.actions),
        ] {
            for (key, count) in from {
                *into.entry(key.clone()).or_default() += count;
            }
        }
    }
}

/// One scored part of the alignment.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Component {
    pub name: String,
    pub weight: f64,
    pub score: f64,
}

/// Σ min(pᵢ, qᵢ) of two weight maps after normalizing each to sum 1 (1 = same shape).
fn intersection(expected: &BTreeMap<String, f64>, observed: &BTreeMap<String, f64>) -> Option<f64> {
    let total_expected: f64 = expected.values().filter(|w| **w > 0.0).sum();
    let total_observed: f64 = observed.values().sum();
    if total_expected <= 0.0 || total_observed <= 0.0 {
        return None;
    }
    Some(
        expected
            .iter()
            .filter(|(_, w)| **w > 0.0)
            .map(|(key, w)| (w / total_expected).min(observed.get(key).copied().unwrap_or(0.0) / total_observed))
            .sum(),
    )
}

/// What the alignment formula reads of a persona's definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub id: Uuid,
    pub name: String,
    pub module_mix: super::persona::ModuleMix,
    pub key_metrics: Vec<super::persona::KeyMetric>,
    pub actions: Vec<String>,
    pub detail_level: Option<DetailLevel>,
}

impl From<&Persona> for Shape {
    fn from(persona: &Persona) -> Self {
        Self {
            id: persona.id,
            name: persona.name.clone(),
            module_mix: persona.module_mix.clone(),
            key_metrics: persona.key_metrics.clone(),
            actions: persona.actions.clone(),
            detail_level: persona.detail_level,
        }
    }
}

/// The scored components of `persona` against the evidence (see the module docs).
pub fn components(persona: &Shape, observed: &Observed, learned: &Learned) -> Vec<Component> {
    let mut parts = Vec::new();
    let mut push = |name: &str, weight: f64, score: Option<f64>| {
        if let Some(score) = score {
            parts.push(Component {
                name: name.to_string(),
                weight,
                score: (score * 100.0).clamp(0.0, 100.0),
            });
        }
    };
    push("modules", 0.4, intersection(&persona.module_mix, &observed.modules));
    let metric_weights: BTreeMap<String, f64> = persona.key_metrics.iter().map(|m| (m.id.clone(), m.weight)).collect();
    push("metrics", 0.3, intersection(&metric_weights, &observed.metrics));
    let taken: f64 = observed.actions.values().sum();
    let listed = |action: &str| {
        persona.actions.iter().any(|a| a == action)
            || action
                .split_once('.')
                .is_some_and(|(_, verb)| persona.actions.iter().any(|a| a == verb))
    };
    let actions_score = (!persona.actions.is_empty() && taken > 0.0).then(|| {
        observed
            .actions
            .iter()
            .filter(|(action, _)| listed(action))
            .map(|(_, n)| n)
            .sum::<f64>()
            / taken
    });
    push("actions", 0.2, actions_score);
    let detail_score = persona
        .detail_level
        .filter(|_| observed.detail_signals > 0)
        .map(|level| {
            let target = match level {
                DetailLevel::Executive => 20,
                DetailLevel::Medium => 50,
                DetailLevel::High => 80,
            };
            1.0 - f64::from((learned.detail_preference - target).abs()) / 100.0
        });
    push("detail", 0.1, detail_score);
    parts
}

/// The weighted mean of `components`, rounded to one decimal; `None` without evidence.
pub fn score(observed: &Observed, components: &[Component]) -> Option<f64> {
    let weight: f64 = components.iter().map(|c| c.weight).sum();
    if observed.interactions < MIN_INTERACTIONS || weight <= 0.0 {
        return None;
    }
    let mean = components.iter().map(|c| c.weight * c.score).sum::<f64>() / weight;
    Some((mean * 10.0).round() / 10.0)
}

/// The alignment columns a rescore writes to a profile.
#[derive(Clone, Debug, PartialEq)]
pub struct AlignmentUpdate {
    pub score: Option<f64>,
    pub reassessment_recommended: bool,
    pub suggested_persona_id: Option<Uuid>,
    pub status: ProfileStatus,
}

/// A user's alignment with their persona, as computed now.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alignment {
    pub persona_id: Option<Uuid>,
    /// 0–100; `null` until there is enough evidence.
    pub score: Option<f64>,
    pub components: Vec<Component>,
    pub interactions_considered: usize,
    pub reassessment_recommended: bool,
    pub suggested_persona_id: Option<Uuid>,
    pub suggested_persona_name: Option<String>,
    pub suggested_score: Option<f64>,
    #[schema(value_type = String)]
    pub status: ProfileStatus,
    /// The formula, for readers of the API.
    pub formula: &'static str,
}

pub const FORMULA: &str = "weighted mean of the components present (modules 0.4: histogram intersection of the \
    module mix with the modules used; metrics 0.3: histogram intersection of key-metric weights with metric_focused; \
    actions 0.2: share of action_taken the persona lists; detail 0.1: 100 - |detail_preference - target|, \
    executive 20 / medium 50 / high 80) over the last 30 days; no score below 5 interactions; below 60 flags reassessment";

/// The first UTC day of the alignment window (`YYYY-MM-DD`): today and the 29 days before.
pub fn window_start(now: DateTime<Utc>) -> String {
    crate::time::before(
        now,
        std::time::Duration::from_secs((ALIGNMENT_WINDOW_DAYS as u64 - 1) * 86_400),
    )
    .format("%Y-%m-%d")
    .to_string()
}

/// The components, score and reassessment flag of a user's evidence against their
/// assigned persona (none: no score, no flag).
pub fn assess(assigned: Option<&Shape>, observed: &Observed, learned: &Learned) -> (Vec<Component>, Option<f64>, bool) {
    let Some(shape) = assigned else {
        return (Vec::new(), None, false);
    };
    let parts = components(shape, observed, learned);
    let current = score(observed, &parts);
    let flagged = current.is_some_and(|s| s < REASSESS_BELOW);
    (parts, current, flagged)
}

/// The alignment to store when deciding it reads no other persona: the user is assigned
/// `known` (or no persona) and the evidence does not flag a reassessment, so there is no
/// suggestion to look for. `None` otherwise; the profile service then reads what the
/// suggestion needs. The tick's end stores this in its own transaction.
pub fn settled_alignment(profile: &Profile, observed: &Observed, known: &Persona) -> Option<AlignmentUpdate> {
    let assigned = match profile.persona_id {
        Some(id) if id == known.id => Some(Shape::from(known)),
        Some(_) => return None,
        None => None,
    };
    let (_, current, flagged) = assess(assigned.as_ref(), observed, &profile.learned);
    (!flagged).then_some(AlignmentUpdate {
        score: current,
        reassessment_recommended: false,
        suggested_persona_id: None,
        status: ProfileStatus::Active,
    })
}

/// A tick's calls as its persona user's `action_taken` interactions, with the evidence
/// they add to the day. Calls the runner never built are not actions of the persona, and
/// a server's requests are not the persona's calls: both are left out.
pub fn tick_interactions(
    persona: &Persona,
    user_id: Uuid,
    tick_id: Uuid,
    calls: &[super::call::Call],
) -> (Vec<NewInteraction>, Observed) {
    let interactions: Vec<NewInteraction> = calls
        .iter()
        .filter(|call| call.is_persona_action())
        .map(|call| NewInteraction {
            tenant_id: persona.tenant_id,
            user_id,
            persona_id: Some(persona.id),
            tick_id: Some(tick_id),
            interaction_type: InteractionType::ActionTaken,
            page_type: Some("mcp".into()),
            page_id: None,
            element_id: Some(call.tool_name.clone()),
            element_type: Some("tool".into()),
            metadata: serde_json::json!({
                "action_id": call.tool_name, "module": call.module, "result": call.result, "chaos": call.chaos
            }),
            // The gateway's latency is not the persona's decision time.
            duration_seconds: None,
            feedback_sentiment: None,
            feedback_comment: None,
        })
        .collect();
    let mut delta = Observed::default();
    for interaction in &interactions {
        delta.add(interaction.interaction_type, &interaction.metadata);
    }
    (interactions, delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interaction(kind: InteractionType, metadata: Value, duration: Option<i32>) -> NewInteraction {
        NewInteraction {
            tenant_id: Uuid::nil(),
            user_id: Uuid::nil(),
            persona_id: None,
            tick_id: None,
            interaction_type: kind,
            page_type: None,
            page_id: None,
            element_id: None,
            element_type: None,
            metadata,
            duration_seconds: duration,
            feedback_sentiment: None,
            feedback_comment: None,
        }
    }

    fn neutral() -> Learned {
        Learned {
            detail_preference: 50,
            external_data_usage: 50,
            decision_speed: 50,
            collaboration_frequency: 50,
            ..Learned::default()
        }
    }

    #[test]
    fn preferences_move_toward_the_behaviour_shown() {
        let mut learned = neutral();
        let expand = interaction(InteractionType::DetailExpanded, Value::Null, None);
        learn(&mut learned, &expand);
        assert_eq!(learned.detail_preference, 55); // 50 + (100 - 50) * 0.1
        let fast = interaction(
            InteractionType::ActionTaken,
            serde_json::json!({"action_id": "approve_plan"}),
            Some(10),
        );
        learn(&mut learned, &fast);
        assert_eq!(learned.decision_speed, 55);
        assert_eq!(learned.action_preferences["approve_plan"], 1.0);
        // Neither collaborative: 50 → 49 → 48 (2 % of the way to 0, rounded).
        assert_eq!(learned.collaboration_frequency, 48);
        let source = interaction(
            InteractionType::ExternalDataUsed,
            serde_json::json!({"data_source": "weather"}),
            None,
        );
        learn(&mut learned, &source);
        assert_eq!(learned.data_source_preferences["weather"], 1.0);
        assert_eq!(learned.interaction_summary["action_taken"], 1);
        assert_eq!(learned.interaction_summary.values().sum::<i64>(), 3);
    }

    #[test]
    fn histogram_intersection_is_one_for_the_same_shape_and_zero_for_disjoint() {
        let expected = BTreeMap::from([("todo".to_string(), 3.0), ("journal".to_string(), 1.0)]);
        let same = BTreeMap::from([("todo".to_string(), 30.0), ("journal".to_string(), 10.0)]);
        let disjoint = BTreeMap::from([("calendar".to_string(), 5.0)]);
        let half = BTreeMap::from([("todo".to_string(), 1.0), ("calendar".to_string(), 1.0)]);
        assert!((intersection(&expected, &same).unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(intersection(&expected, &disjoint), Some(0.0));
        assert!((intersection(&expected, &half).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(intersection(&expected, &BTreeMap::new()), None);
    }
}
