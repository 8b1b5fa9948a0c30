//! The portcullis engine: every decision rule, in plain Rust.
//!
//! Responsible for: parsing and checking a bundle (manifest, schema,
//! policies, entities, cases), parsing requests, deriving computed context
//! (state from the [`store::Store`]), evaluating Cedar, turning the
//! determining policies' annotations into a graduated [`Outcome`], and
//! writing the audit record of each decision.
//!
//! Not responsible for: any I/O, clocks of a host, wasm glue. The guest
//! (`guest/`), the Envoy filter and the Rust host wrap this crate; none of
//! them holds decision logic.

pub mod bundle;
pub mod cases;
mod context;
pub mod controls;
pub mod decision;
pub mod dlp;
pub mod error;
pub mod flows;
pub mod guard;
pub mod identity;
pub mod jit;
pub mod jwt;
pub mod limits;
pub mod lockout;
pub mod manifest;
pub mod memo;
pub mod network;
pub mod normalise;
pub mod oauth;
pub mod outcome;
pub mod rate;
pub mod request;
pub mod revocation;
pub mod store;
pub mod synthetic;
mod timefmt;
pub mod transfer;
pub mod webhook;

pub use bundle::{Bundle, BundleInfo};
pub use decision::{AuditRecord, Decision, DecisionError};
pub use error::{BundleProblem, Location, RequestError};
pub use outcome::Outcome;
pub use store::{Entry, MemoryStore, Store, Write, WriteResult};

/// The version of the engine, recorded in audit records.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
