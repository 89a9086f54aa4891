//! The ground floor: the domain as plain data, text enums and pure rules, with no I/O.
//! Every other module builds on these types; this module imports nothing of the crate
//! but `time`, so nothing low depends on anything high.
//!
//! - [`persona`]: what a persona is (its definition, as stored) and its profile enums;
//! - [`tick`]: a tick's claim, status, trigger, finish, transcript and listed record;
//! - [`call`]: one audited call (the one record of the audit), its kind and result, and
//!   the input hash that dedup compares;
//! - [`rating`]: a module's 1–5 rating with its evidence;
//! - [`goal`]: goals with their checks and criteria, and the verdict of a trial;
//! - [`profile`]: learned preferences, interactions and the alignment formula;
//! - [`schedule`]: cadence rules, slots, jitter and catch-up;
//! - [`space`]: shared spaces (households, teams), their members and shares.

pub mod call;
pub mod goal;
pub mod persona;
pub mod profile;
pub mod rating;
pub mod schedule;
pub mod space;
pub mod tick;
