//! `[spaces]`: how the product keeps shared spaces (households, teams) and how the runner
//! reaches them. The product calls that provision a space are JSON templates, like the
//! sign-up; the defaults are the sample gateway's, which follow Better Auth's
//! organization plugin (`/api/auth/organization/create`, `invite-member`,
//! `accept-invitation`, `list`).

use serde::{Deserialize, Serialize};

use crate::model::space::RoundOrder;
use crate::time::HumanDuration;

/// The sample gateway's origin (its login is `SAMPLE_LOGIN_URL`).
const SAMPLE_ORIGIN: &str = "http://127.0.0.1:3071";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpacesConfig {
    /// The daemon's rounds of every space without a cadence of its own (members one
    /// after another); empty: spaces have no rounds of their own.
    pub cadence: String,
    /// The order of a round's members: `fixed` (as declared) or `shuffled`.
    pub order: RoundOrder,
    /// Pause between two members of a round.
    pub pause: HumanDuration,
    /// The request header that names the tick's space (its id in the organization list).
    pub header: String,
    /// Also (or instead, with `header = ""`) give every tool call the space id as this
    /// argument, for gateways that take the space as a tool argument.
    pub argument: String,
    /// The persona's organization list (GET with its token); empty: the sample gateway's
    /// while `auth.login_url` is the sample login.
    pub list_url: String,
    /// JSON pointer to the list in the answer ("" = the body).
    pub items: String,
    /// Pointers into an entry: the name the catalog's space has, and the id to send.
    pub name_pointer: String,
    pub id_pointer: String,
    /// Create the space (POST, the owner's token): `{name}`, `{slug}`, `{kind}`.
    pub create_url: String,
    pub create_body: String,
    /// Invite a member (POST, the owner's token): `{space_id}`, `{email}`, `{role}`.
    pub invite_url: String,
    pub invite_body: String,
    /// Pointer to the invitation's id in the invite's answer.
    pub invitation_pointer: String,
    /// Accept it (POST, the member's token): `{invitation_id}`, `{space_id}`.
    pub accept_url: String,
    pub accept_body: String,
}

impl Default for SpacesConfig {
    fn default() -> Self {
        Self {
            cadence: String::new(),
            order: RoundOrder::Fixed,
            pause: HumanDuration::from_secs(0),
            header: "X-Mana-Space".into(),
            argument: String::new(),
            list_url: String::new(),
            items: String::new(),
            name_pointer: "/name".into(),
            id_pointer: "/id".into(),
            create_url: String::new(),
            create_body: r#"{"name": "{name}", "slug": "{slug}", "metadata": {"type": "{kind}"}}"#.into(),
            invite_url: String::new(),
            invite_body: r#"{"organizationId": "{space_id}", "email": "{email}", "role": "{role}"}"#.into(),
            invitation_pointer: "/id".into(),
            accept_url: String::new(),
            accept_body: r#"{"invitationId": "{invitation_id}"}"#.into(),
        }
    }
}

/// The product's space endpoints, each resolved (empty: the sample gateway's while the
/// login is the sample login; else none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceEndpoints {
    pub list: String,
    pub create: String,
    pub invite: String,
    pub accept: String,
}

impl SpacesConfig {
    /// The endpoints against `login_url`'s product; `None` names the first key missing.
    pub fn endpoints(&self, login_url: &str) -> Result<SpaceEndpoints, &'static str> {
        let sample = login_url.trim() == super::SAMPLE_LOGIN_URL;
        let pick = |given: &str, path: &str, key: &'static str| match given.trim() {
            "" if sample => Ok(format!("{SAMPLE_ORIGIN}/api/auth/organization/{path}")),
            "" => Err(key),
            url => Ok(url.to_string()),
        };
        Ok(SpaceEndpoints {
            list: pick(&self.list_url, "list", "spaces.list_url")?,
            create: pick(&self.create_url, "create", "spaces.create_url")?,
            invite: pick(&self.invite_url, "invite-member", "spaces.invite_url")?,
            accept: pick(&self.accept_url, "accept-invitation", "spaces.accept_url")?,
        })
    }
}

impl SpacesConfig {
    /// The values serde cannot check, each with its key.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let cadence = self.cadence.trim();
        if !cadence.is_empty() {
            cadence
                .parse::<crate::model::persona::Cadence>()
                .map_err(|err| ("spaces.cadence", err))?;
        }
        let header = self.header.trim();
        if !header.is_empty() && reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(("spaces.header", format!("`{header}` is not an HTTP header name")));
        }
        for (key, pointer) in [
            ("spaces.items", &self.items),
            ("spaces.name_pointer", &self.name_pointer),
            ("spaces.id_pointer", &self.id_pointer),
            ("spaces.invitation_pointer", &self.invitation_pointer),
        ] {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err((
                    key,
                    format!("`{pointer}` is not a JSON pointer: start it with `/` (or leave it empty)"),
                ));
            }
        }
        Ok(())
    }
}

/// A space name as a URL slug: lower-case letters and digits, the rest one dash.
pub fn slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'ä' => 'a',
            'ö' => 'o',
            'ü' => 'u',
            'ß' => 's',
            c => c,
        };
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_login_gets_the_sample_endpoints_and_another_product_none() {
        let config = SpacesConfig::default();
        let sample = config.endpoints(super::super::SAMPLE_LOGIN_URL).unwrap();
        assert_eq!(sample.create, "http://127.0.0.1:3071/api/auth/organization/create");
        assert_eq!(config.endpoints("https://app.example/login"), Err("spaces.list_url"));
        assert_eq!(slug("Familie Schubert"), "familie-schubert");
        assert_eq!(slug("Lerngruppe: Prüfungen!"), "lerngruppe-prufungen");
    }
}
