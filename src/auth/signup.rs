//! Provisioning: signing a persona up in the product (`auth.signup_url`), so its login
//! works without anyone creating accounts by hand. The password is the same derivation the
//! login uses; it goes into the request body only, never into a log or an error.

use std::time::Duration;

use super::derive_password;
use crate::config::{AuthConfig, Secret};
use crate::http::RetryPolicy;

/// What signing one persona up did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignUp {
    Created,
    /// The product already had the account (409): fine, provisioning is idempotent.
    Exists,
}

#[derive(Debug, thiserror::Error)]
pub enum SignUpError {
    #[error(
        "provisioning is not configured: set auth.signup_url (and auth.signup_body) to the product's sign-up endpoint"
    )]
    NotConfigured,
    #[error("signing up {email} failed: cannot reach {url}: {reason}")]
    Unreachable { email: String, url: String, reason: String },
    #[error("signing up {email} failed: {url} answered HTTP {status}: {body}")]
    Rejected {
        email: String,
        url: String,
        status: u16,
        body: String,
    },
}

use crate::config::signup_body;

/// Signs personas up in the product, one request each (retried like a login).
pub struct Provisioner {
    config: AuthConfig,
    seed: Secret,
    http: reqwest::Client,
    retry: RetryPolicy,
}

impl Provisioner {
    pub fn new(config: &crate::config::Config, seed: Secret) -> Result<Self, SignUpError> {
        let Some(endpoint) = config.auth.signup_endpoint() else {
            return Err(SignUpError::NotConfigured);
        };
        let mut auth = config.auth.clone();
        auth.signup_url = endpoint.to_string();
        Ok(Self {
            config: auth,
            seed,
            http: crate::http::client(Duration::from_secs(30)),
            retry: RetryPolicy::new(&config.retry),
        })
    }

    /// Where sign-ups go (credentials in the URL masked), for dry runs and reports.
    pub fn url(&self) -> String {
        crate::http::display_url(&self.config.signup_url)
    }

    pub async fn sign_up(&self, email: &str, name: &str) -> Result<SignUp, SignUpError> {
        let password = derive_password(&self.seed, email);
        let url = &self.config.signup_url;
        let body = signup_body(&self.config.signup_body, email, password.expose(), name).map_err(|reason| {
            SignUpError::Rejected {
                email: email.into(),
                url: self.url(),
                status: 0,
                body: reason,
            }
        })?;
        let response = self
            .retry
            .send("sign-up", || self.http.post(url).json(&body))
            .await
            .map_err(|err| SignUpError::Unreachable {
                email: email.into(),
                url: self.url(),
                reason: crate::http::describe(&err),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(SignUp::Created);
        }
        if status.as_u16() == 409 {
            return Ok(SignUp::Exists);
        }
        // The product may echo what it got: the password never reaches the message.
        let text = response.text().await.unwrap_or_default();
        let text: String = crate::config::redact(&text, &[password.expose(), self.seed.expose()])
            .chars()
            .take(300)
            .collect();
        Err(SignUpError::Rejected {
            email: email.into(),
            url: self.url(),
            status: status.as_u16(),
            body: text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_template_escapes_every_value() {
        let body = signup_body(
            r#"{"user": {"email": "{email}", "password": "{password}"}, "displayName": "{name}"}"#,
            "a@b.test",
            "p\"w\\x",
            "Anna \"A\"",
        )
        .unwrap();
        assert_eq!(body["user"]["password"], "p\"w\\x");
        assert_eq!(body["displayName"], "Anna \"A\"");
        assert!(
            signup_body(r#"{"email": "{email}"}"#, "a", "b", "c").is_err(),
            "no password"
        );
        assert!(signup_body("not json", "a", "b", "c").is_err());
    }
}
