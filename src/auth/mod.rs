//! Persona identity: how the runner proves it is a persona to the product.
//!
//! The deterministic password derivation of the reference system (no stored
//! credentials), the policy for its seed secret, and the login flow with its
//! per-persona credential cache.

pub mod login;
pub mod password;

pub use login::{AuthError, Authenticator, Credentials};
pub use password::{SeedSecret, SeedSecretError, derive_password};
