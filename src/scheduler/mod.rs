//! The daemon's scheduler: which persona is due when, and running due ticks in a bounded
//! pool without overlap.

pub mod schedule;
