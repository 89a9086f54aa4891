//! The product's shared spaces as a persona's session sees them: its organization list
//! (where a tick finds the id of the space it works in), and the calls that provision a
//! space (create it with the owner's session, invite each member, accept with the
//! member's). Every call is a `[spaces]` JSON template; 409 or a space already in the
//! list is fine, so provisioning can run again.

use std::time::Duration;

use serde_json::Value;

use crate::config::{Secret, SpaceEndpoints, SpacesConfig, fill_json};
use crate::http::RetryPolicy;
use crate::model::space::Space;

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("shared spaces are not configured for this product: set {0} (see [spaces] in config.toml)")]
    NotConfigured(&'static str),
    #[error("{step} failed: {url}: {reason}")]
    Failed { step: String, url: String, reason: String },
    #[error("logging in a member of the space failed: {0}")]
    Login(#[from] super::AuthError),
    #[error("{0}'s login gave no token: a shared space needs a session token")]
    NoToken(String),
}

/// What provisioning one space did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SpaceTally {
    pub created: usize,
    pub joined: usize,
    pub present: usize,
}

impl SpaceTally {
    pub fn add(&mut self, other: SpaceTally) {
        self.created += other.created;
        self.joined += other.joined;
        self.present += other.present;
    }
}

/// One entry of a persona's organization list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub id: String,
}

/// What a provisioning step found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioned {
    Done,
    AlreadyPresent,
}

/// The product's space calls for one product.
pub struct SpaceCalls {
    config: SpacesConfig,
    endpoints: SpaceEndpoints,
    http: reqwest::Client,
    retry: RetryPolicy,
}

impl SpaceCalls {
    pub fn new(config: &crate::config::Config, auth: &crate::config::AuthConfig) -> Result<Self, SpaceError> {
        let endpoints = config
            .spaces
            .endpoints(&auth.login_url)
            .map_err(SpaceError::NotConfigured)?;
        Ok(Self {
            config: config.spaces.clone(),
            endpoints,
            http: crate::http::client(Duration::from_secs(30)),
            retry: RetryPolicy::new(&config.retry),
        })
    }

    /// Where the organization list is read (credentials in the URL masked).
    pub fn list_url(&self) -> String {
        crate::http::display_url(&self.endpoints.list)
    }

    /// Where spaces are created, for the dry run's plan.
    pub fn create_url(&self) -> String {
        crate::http::display_url(&self.endpoints.create)
    }

    /// The persona's organization list.
    pub async fn list(&self, token: &Secret) -> Result<Vec<Entry>, SpaceError> {
        let url = &self.endpoints.list;
        let body = self.send("reading the organization list", url, token, None).await?.1;
        let items = body
            .pointer(&self.config.items)
            .and_then(Value::as_array)
            .ok_or_else(|| {
                self.failed(
                    "reading the organization list",
                    url,
                    format!("no list at `{}`", self.config.items),
                )
            })?;
        Ok(items
            .iter()
            .filter_map(|item| {
                Some(Entry {
                    name: scalar(item.pointer(&self.config.name_pointer)?)?,
                    id: scalar(item.pointer(&self.config.id_pointer)?)?,
                })
            })
            .collect())
    }

    /// The id of the space `name` in the persona's list (by name, or by its slug).
    pub async fn find(&self, token: &Secret, name: &str) -> Result<Option<String>, SpaceError> {
        let slug = crate::config::slug(name);
        Ok(self
            .list(token)
            .await?
            .into_iter()
            .find(|entry| entry.name == name || entry.name == slug)
            .map(|entry| entry.id))
    }

    /// Creates the space with the owner's session: its id, and whether it was there.
    pub async fn create(&self, owner: &Secret, name: &str, kind: &str) -> Result<(String, Provisioned), SpaceError> {
        if let Some(id) = self.find(owner, name).await? {
            return Ok((id, Provisioned::AlreadyPresent));
        }
        let slug = crate::config::slug(name);
        let body = fill_json(
            "spaces.create_body",
            &self.config.create_body,
            &[("name", name), ("slug", &slug), ("kind", kind)],
        )
        .map_err(|reason| self.failed("creating a space", &self.endpoints.create, reason))?;
        let (status, _) = self
            .send("creating a space", &self.endpoints.create, owner, Some(body))
            .await?;
        // A 409 is a space another session of the owner made meanwhile: the list has it.
        let id = self.find(owner, name).await?.ok_or_else(|| {
            self.failed(
                "creating a space",
                &self.endpoints.create,
                format!("the space `{name}` is not in the owner's organization list afterwards"),
            )
        })?;
        Ok((
            id,
            if status == 409 {
                Provisioned::AlreadyPresent
            } else {
                Provisioned::Done
            },
        ))
    }

    /// Makes `email` a member: the owner invites, the member accepts. Already a member
    /// (the space in its list, or a 409) is fine.
    pub async fn join(
        &self,
        owner: &Secret,
        member: &Secret,
        space_id: &str,
        email: &str,
        role: &str,
    ) -> Result<Provisioned, SpaceError> {
        if self.list(member).await?.iter().any(|entry| entry.id == space_id) {
            return Ok(Provisioned::AlreadyPresent);
        }
        let url = &self.endpoints.invite;
        let body = fill_json(
            "spaces.invite_body",
            &self.config.invite_body,
            &[("space_id", space_id), ("email", email), ("role", role)],
        )
        .map_err(|reason| self.failed("inviting a member", url, reason))?;
        let (status, answer) = self.send("inviting a member", url, owner, Some(body)).await?;
        if status == 409 {
            return Ok(Provisioned::AlreadyPresent);
        }
        let invitation = answer
            .pointer(&self.config.invitation_pointer)
            .and_then(scalar)
            .ok_or_else(|| {
                self.failed(
                    "inviting a member",
                    url,
                    format!("no invitation id at `{}` in the answer", self.config.invitation_pointer),
                )
            })?;
        let url = &self.endpoints.accept;
        let body = fill_json(
            "spaces.accept_body",
            &self.config.accept_body,
            &[("invitation_id", &invitation), ("space_id", space_id)],
        )
        .map_err(|reason| self.failed("accepting an invitation", url, reason))?;
        let (status, _) = self.send("accepting an invitation", url, member, Some(body)).await?;
        Ok(if status == 409 {
            Provisioned::AlreadyPresent
        } else {
            Provisioned::Done
        })
    }

    /// Creates `space` with its owner's session and has every other member join it,
    /// idempotently.
    pub async fn provision(&self, auth: &super::Authenticator, space: &Space) -> Result<SpaceTally, SpaceError> {
        let mut tally = SpaceTally::default();
        let owner = space.owner().ok_or_else(|| {
            self.failed(
                "creating a space",
                &self.endpoints.create,
                "the space has no owner".into(),
            )
        })?;
        let owner_login = auth.credentials(&owner.email).await?;
        let owner_token = owner_login
            .token
            .as_ref()
            .ok_or_else(|| SpaceError::NoToken(owner.email.clone()))?;
        let (id, created) = self.create(owner_token, &space.name, space.kind.as_str()).await?;
        match created {
            Provisioned::Done => tally.created += 1,
            Provisioned::AlreadyPresent => tally.present += 1,
        }
        for member in space.partners_of(&owner.email) {
            let login = auth.credentials(&member.email).await?;
            let token = login
                .token
                .as_ref()
                .ok_or_else(|| SpaceError::NoToken(member.email.clone()))?;
            match self
                .join(owner_token, token, &id, &member.email, member.role.as_str())
                .await?
            {
                Provisioned::Done => tally.joined += 1,
                Provisioned::AlreadyPresent => tally.present += 1,
            }
        }
        Ok(tally)
    }

    /// GET (no body) or POST `body` with `token`: the status (2xx or 409) and the JSON answer.
    async fn send(
        &self,
        step: &str,
        url: &str,
        token: &Secret,
        body: Option<Value>,
    ) -> Result<(u16, Value), SpaceError> {
        let response = self
            .retry
            .send(step, || match &body {
                Some(body) => self.http.post(url).bearer_auth(token.expose()).json(body),
                None => self.http.get(url).bearer_auth(token.expose()),
            })
            .await
            .map_err(|err| self.failed(step, url, crate::http::describe(&err)))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) && status != 409 {
            let text = crate::http::read_text(response, 4096).await.unwrap_or_default();
            let text = crate::redact::redact_truncate(&text, &[token.expose()], 300);
            return Err(self.failed(step, url, format!("HTTP {status}: {text}")));
        }
        let text = crate::http::read_text(response, crate::http::MAX_BODY_BYTES)
            .await
            .unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    fn failed(&self, step: &str, url: &str, reason: String) -> SpaceError {
        SpaceError::Failed {
            step: step.to_string(),
            url: crate::http::display_url(url),
            reason,
        }
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}
