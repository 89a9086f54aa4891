//! The persona domain: what a persona *is*, independent of where it is loaded from
//! (catalog files, the admin API) or stored (`store`).
//!
//! A persona has runner fields (how the runner role-plays it: archetype, prompt,
//! module mix, cadence, time zone) and profile-store fields (how the profile store
//! describes the role: flow, key metrics, detail level, …). Both halves live in one
//! [`PersonaSpec`], the unit that catalogs seed and the admin API upserts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The tenant every single-tenant install uses (created by the first migration).
pub const DEFAULT_TENANT: Uuid = Uuid::from_u128(1);

text_enum! {
    /// Who a user account belongs to. Only `persona` users are ever driven or deleted by
    /// the runner.
    pub enum UserKind { Human => "human", Persona => "persona", System => "system" }
}

/// How often a persona wants to be ticked.
///
/// `hourly`, `daily` and `weekdays` keep the reference system's meaning (due when last
/// active at least 1 h / 24 h ago; `weekdays` only Mon–Fri in the persona's zone). Any
/// other value is a 5- or 6-field cron expression evaluated in the persona's zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cadence {
    Hourly,
    Daily,
    Weekdays,
    Cron(String),
}

impl Cadence {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekdays => "weekdays",
            Self::Cron(expr) => expr,
        }
    }
}

impl FromStr for Cadence {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "hourly" => Ok(Self::Hourly),
            "daily" => Ok(Self::Daily),
            "weekdays" => Ok(Self::Weekdays),
            expr => {
                let fields = expr.split_whitespace().count();
                if !(5..=6).contains(&fields) {
                    return Err(format!(
                        "`{expr}` is not a cadence: expected hourly, daily, weekdays or a 5- or \
                         6-field cron expression"
                    ));
                }
                croner::Cron::from_str(expr)
                    .map_err(|err| format!("`{expr}` is not a valid cron expression: {err}"))?;
                Ok(Self::Cron(expr.split_whitespace().collect::<Vec<_>>().join(" ")))
            }
        }
    }
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Cadence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Cadence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Emails are stored lower-case and trimmed, so uniqueness per tenant is
/// case-insensitive; every comparison goes through this.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Parses an IANA time zone name (`Europe/Berlin`), with a message that says what is
/// expected.
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name)
        .map_err(|_| format!("`{name}` is not an IANA time zone name (e.g. Europe/Berlin, UTC)"))
}

/// Relative weights of the product modules a persona prefers (`{"todo": 3, "journal": 1}`).
/// Weights are non-negative and at least one is positive.
pub type ModuleMix = BTreeMap<String, f64>;

text_enum! {
    /// The decision flow of a profile-store role persona.
    pub enum Flow { SalesAndOperations => "S&OP", Financial => "Financial" }
}

text_enum! {
    pub enum DetailLevel { Executive => "executive", Medium => "medium", High => "high" }
}

text_enum! {
    pub enum HeadlineType {
        Impact => "impact",
        Variance => "variance",
        Forecast => "forecast",
        Anomaly => "anomaly",
    }
}

/// One weighted metric a role persona watches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyMetric {
    pub id: String,
    pub weight: f64,
}

/// Everything that defines a persona: what a catalog entry or an admin API body says.
///
/// The JSON form (camelCase) is a superset of the reference catalog format
/// (`name`, `email`, `archetype`, `systemPrompt`, `moduleMix`, `tickCadence`); every
/// other field is optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersonaSpec {
    pub name: String,
    pub email: String,
    pub archetype: String,
    pub system_prompt: String,
    pub module_mix: ModuleMix,
    /// `hourly`, `daily`, `weekdays` or a cron expression in the persona's zone.
    #[schema(value_type = String)]
    pub tick_cadence: Cadence,
    /// IANA zone the cadence and the prompt's local time use; the config's
    /// `catalog.default_time_zone` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Absent means "leave as it is": seeding never un-pauses a persona an operator paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    pub role_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_focus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_dashboard: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_metrics: Vec<KeyMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail_level: Option<DetailLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline_type: Option<HeadlineType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hero_chart_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_factors: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_data_sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub default_profile: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub page_templates: Vec<serde_json::Value>,
    /// The product (a `[targets.NAME]` of the config) this persona uses; absent: the
    /// default target. A persona whose target is not configured is never ticked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What the persona sets out to do in check ticks (its own and its archetype's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub goals: Vec<super::goal::Goal>,
}

/// An optional whole number written as an integer or as a number without a fraction
/// (`3.0`): JSON Schema's `integer` admits both, so the API must too.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX))
                .map(|f| f as i64)
        })
        .and_then(|value| i32::try_from(value).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{number}` is not a whole number from {} to {}",
                i32::MIN,
                i32::MAX
            ))
        })
}

/// A persona as stored: its definition plus identity and runtime state.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Persona {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The login identity; `None` for a profile-only role persona (not runnable).
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub name: String,
    pub archetype: String,
    pub system_prompt: String,
    pub module_mix: ModuleMix,
    /// `hourly`, `daily`, `weekdays` or a cron expression in the persona's zone.
    #[schema(value_type = String)]
    pub tick_cadence: Cadence,
    pub time_zone: String,
    pub locale: Option<String>,
    pub paused: bool,
    pub last_active_at: Option<DateTime<Utc>>,
    pub next_due_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
    pub flow: Option<Flow>,
    pub role_index: Option<i32>,
    pub primary_authority: Option<String>,
    pub decision_focus: Option<String>,
    pub primary_dashboard: Option<String>,
    pub key_metrics: Vec<KeyMetric>,
    pub detail_level: Option<DetailLevel>,
    pub headline_type: Option<HeadlineType>,
    pub hero_chart_type: Option<String>,
    pub context_factors: Vec<String>,
    pub required_data_sources: Vec<String>,
    pub actions: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub default_profile: Option<serde_json::Value>,
    #[schema(value_type = Vec<Object>)]
    pub page_templates: Vec<serde_json::Value>,
    /// The target (product) the persona uses; `null`: the default target.
    pub target: Option<String>,
    /// What the persona sets out to do in check ticks.
    #[schema(value_type = Vec<Object>)]
    pub goals: Vec<super::goal::Goal>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Persona {
    /// Whether storing `spec` (with `time_zone` resolved) would change this persona.
    pub fn matches_spec(&self, spec: &PersonaSpec, time_zone: &str) -> bool {
        self.email.as_deref() == Some(normalize_email(&spec.email).as_str())
            && self.name == spec.name
            && self.archetype == spec.archetype
            && self.system_prompt == spec.system_prompt
            && self.module_mix == spec.module_mix
            && self.tick_cadence == spec.tick_cadence
            && self.time_zone == time_zone
            && self.locale == spec.locale
            && spec.paused.is_none_or(|paused| paused == self.paused)
            && self.description == spec.description
            && self.flow == spec.flow
            && self.role_index == spec.role_index
            && self.primary_authority == spec.primary_authority
            && self.decision_focus == spec.decision_focus
            && self.primary_dashboard == spec.primary_dashboard
            && self.key_metrics == spec.key_metrics
            && self.detail_level == spec.detail_level
            && self.headline_type == spec.headline_type
            && self.hero_chart_type == spec.hero_chart_type
            && self.context_factors == spec.context_factors
            && self.required_data_sources == spec.required_data_sources
            && self.actions == spec.actions
            && self.default_profile == spec.default_profile
            && self.page_templates == spec.page_templates
            && self.target == spec.target
            && self.goals == spec.goals
    }

    /// The definition part of a stored persona (its email empty for a profile-only one).
    pub fn to_spec(&self) -> PersonaSpec {
        PersonaSpec {
            name: self.name.clone(),
            email: self.email.clone().unwrap_or_default(),
            archetype: self.archetype.clone(),
            system_prompt: self.system_prompt.clone(),
            module_mix: self.module_mix.clone(),
            tick_cadence: self.tick_cadence.clone(),
            time_zone: Some(self.time_zone.clone()),
            locale: self.locale.clone(),
            paused: None,
            description: self.description.clone(),
            flow: self.flow,
            role_index: self.role_index,
            primary_authority: self.primary_authority.clone(),
            decision_focus: self.decision_focus.clone(),
            primary_dashboard: self.primary_dashboard.clone(),
            key_metrics: self.key_metrics.clone(),
            detail_level: self.detail_level,
            headline_type: self.headline_type,
            hero_chart_type: self.hero_chart_type.clone(),
            context_factors: self.context_factors.clone(),
            required_data_sources: self.required_data_sources.clone(),
            actions: self.actions.clone(),
            default_profile: self.default_profile.clone(),
            page_templates: self.page_templates.clone(),
            target: self.target.clone(),
            goals: self.goals.clone(),
        }
    }

    /// How logs and reports name the persona: its email, or its name without one.
    pub fn label(&self) -> String {
        self.email.clone().unwrap_or_else(|| self.name.clone())
    }

    /// The persona's time zone (validated when stored; UTC if it ever is not).
    pub fn zone(&self) -> chrono_tz::Tz {
        parse_time_zone(&self.time_zone).unwrap_or(chrono_tz::UTC)
    }

    /// Runnable personas have a login identity and are not paused.
    pub fn is_runnable(&self) -> bool {
        self.user_id.is_some() && !self.paused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence_keywords_and_cron() {
        assert_eq!("daily".parse::<Cadence>().unwrap(), Cadence::Daily);
        assert_eq!(
            "0  9 * * MON-FRI".parse::<Cadence>().unwrap(),
            Cadence::Cron("0 9 * * MON-FRI".into())
        );
        assert_eq!(
            "*/2 * * * * *".parse::<Cadence>().unwrap(),
            Cadence::Cron("*/2 * * * * *".into())
        );
    }

    #[test]
    fn cadence_rejects_nonsense_with_the_expected_form() {
        let err = "fortnightly".parse::<Cadence>().unwrap_err();
        assert!(err.contains("expected hourly, daily, weekdays"), "{err}");
        let err = "61 * * * *".parse::<Cadence>().unwrap_err();
        assert!(err.contains("not a valid cron expression"), "{err}");
    }

    #[test]
    fn time_zones_are_checked() {
        assert!(parse_time_zone("Europe/Berlin").is_ok());
        assert!(parse_time_zone("Mars/Olympus").unwrap_err().contains("IANA"));
    }
}
