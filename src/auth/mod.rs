//! Persona identity: how the runner proves it is a persona to the product.
//!
//! For now: the deterministic password derivation of the reference system (no stored
//! credentials) and the policy for its seed secret. The login flow builds on this.

pub mod password;

pub use password::{SeedSecret, SeedSecretError, derive_password};
