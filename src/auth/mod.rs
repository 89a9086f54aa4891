//! Persona identity: how the runner proves it is a persona to the product.
//!
//! The deterministic password derivation of the reference system (no stored
//! credentials), the policy for its seed secret, and the login flow with its
//! per-persona credential cache.

pub mod login;
pub mod password;
pub mod signup;
pub mod spaces;

pub use login::{AuthError, Authenticator, Credentials};
pub use password::{SeedSecret, SeedSecretError, derive_password};
pub use signup::{Provisioner, SignUp, SignUpError};
pub use spaces::{Provisioned, SpaceCalls, SpaceError, SpaceTally};

/// Bytes from the operating system's CSPRNG, for keys and session ids.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

/// Compares secrets without an early exit, so response timing does not reveal how much
/// of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
