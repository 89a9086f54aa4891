//! The ground floor: the domain as plain data, text enums and pure rules.

pub mod persona;
pub mod profile;
pub mod schedule;
