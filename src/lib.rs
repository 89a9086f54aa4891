//! persona-runner: keeps synthetic users ("personas") using a product through its MCP
//! tool gateway on a schedule, audits every call, and collects per-module ratings.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library. See ARCHITECTURE.md for
//! the data flow and the invariants that hold between modules.
#![forbid(unsafe_code)]

#[macro_use]
mod macros;

pub mod api;
pub mod auth;
pub mod catalog;
pub mod check;
pub mod config;
pub mod daemon;
pub mod feedback;
pub mod gateway;
pub mod http;
pub mod llm;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod profile;
pub mod redact;
pub mod retention;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod tick;
pub mod time;

pub use model::persona;
