//! Shared spaces as data: a household or a team whose members act on the same product
//! data (a family's shopping list, a team's tasks), how often a member's tick works there
//! rather than in its personal space, and which space a tick chose.

use serde::{Deserialize, Serialize};

text_enum! {
    /// What kind of shared space it is (the product's organization type).
    pub enum SpaceKind {
        Family => "family",
        Household => "household",
        Team => "team",
        Practice => "practice",
        Club => "club",
    }
}

text_enum! {
    /// A member's role in its space: the owner creates it and invites the others.
    pub enum SpaceRole { Owner => "owner", Member => "member" }
}

text_enum! {
    /// The order in which a space round runs its members: as declared, or shuffled per round.
    pub enum RoundOrder { Fixed => "fixed", Shuffled => "shuffled" }
}

/// The space name a tick in its persona's own space records (and that no shared space may take).
pub const PERSONAL: &str = "personal";

/// How a tick's or a call's space is stored: its name, or [`PERSONAL`].
pub fn stored(space: Option<&str>) -> &str {
    space.unwrap_or(PERSONAL)
}

/// A stored space back: `None` for the persona's own.
pub fn from_stored(text: String) -> Option<String> {
    (text != PERSONAL).then_some(text)
}

/// The default share of a member's ticks that work in the shared space.
pub const DEFAULT_SHARE: f64 = 0.5;

/// One member of a space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub email: String,
    pub role: SpaceRole,
}

/// A shared space as the catalog declares it and the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Space {
    pub name: String,
    pub kind: SpaceKind,
    /// In declared order; exactly one is the owner.
    pub members: Vec<Member>,
    /// How often a member's tick works here rather than in its personal space (0–1).
    pub share: f64,
    /// The cadence of the daemon's rounds of this space (members one after another), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cadence: Option<String>,
    /// The target (product) its members use; `None` is the default target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// When provisioning last made every member join it in the product: until then a
    /// member's ticks by share stay personal (a space the product lacks fails every call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Space {
    /// The member who creates the space and invites the others.
    pub fn owner(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.role == SpaceRole::Owner)
    }

    pub fn has_member(&self, email: &str) -> bool {
        self.members.iter().any(|m| m.email.eq_ignore_ascii_case(email))
    }

    /// The other members of `email`'s space.
    pub fn partners_of<'a>(&'a self, email: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.members
            .iter()
            .filter(move |m| !m.email.eq_ignore_ascii_case(email))
    }
}

/// A member's tick in a space, for the QA view's links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SpaceTick {
    pub tick_id: uuid::Uuid,
    pub email: String,
    pub persona_name: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub status: super::tick::TickStatus,
}

/// A rating a member gave at the end of a tick in a space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SpaceRating {
    pub tick_id: uuid::Uuid,
    pub email: String,
    pub module: String,
    pub rating: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The keys whose text says what an entry is about (a call's "gist" in stories and reports).
pub const TEXT_KEYS: [&str; 5] = ["title", "text", "name", "content", "query"];

/// The first text argument of a call's arguments, by [`TEXT_KEYS`].
pub fn first_text(arguments: &serde_json::Value) -> Option<&str> {
    TEXT_KEYS
        .iter()
        .find_map(|key| arguments.get(*key).and_then(serde_json::Value::as_str))
}

/// Which space a tick works in: its persona's own, or a shared one (by name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SpaceChoice {
    /// Choose by the shares of the persona's spaces.
    #[default]
    ByShare,
    Personal,
    Shared(String),
}

/// The space a tick chose by the shares of its persona's spaces: `roll` is uniform in
/// [0, 1). Each space takes its share of the rest, in order, so two spaces of 0.5 give
/// 0.5, 0.25 and a personal 0.25: a persona is never only in shared spaces unless a share is 1.
pub fn choose(spaces: &[Space], roll: f64) -> Option<&Space> {
    let mut rest = 1.0;
    let mut edge = 0.0;
    for space in spaces {
        edge += rest * space.share.clamp(0.0, 1.0);
        if roll < edge {
            return Some(space);
        }
        rest *= 1.0 - space.share.clamp(0.0, 1.0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(name: &str, share: f64) -> Space {
        Space {
            name: name.into(),
            kind: SpaceKind::Family,
            members: vec![],
            share,
            cadence: None,
            target: None,
            provisioned_at: None,
        }
    }

    #[test]
    fn shares_split_the_ticks_and_leave_the_rest_personal() {
        let spaces = [space("a", 0.5), space("b", 0.5)];
        let pick = |roll| choose(&spaces, roll).map(|s| s.name.as_str());
        assert_eq!(pick(0.0), Some("a"));
        assert_eq!(pick(0.49), Some("a"));
        assert_eq!(pick(0.5), Some("b"));
        assert_eq!(pick(0.74), Some("b"));
        assert_eq!(pick(0.75), None);
        assert_eq!(choose(&[space("a", 0.0)], 0.0), None);
        assert_eq!(choose(&[space("a", 1.0)], 0.999).map(|s| s.share), Some(1.0));
    }
}
