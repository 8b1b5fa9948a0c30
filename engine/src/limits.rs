//! Every input limit of the engine, in one place (README.md "Limits").
//!
//! Each is enforced where the input is read, and exceeding it is a `deny`
//! (requests) or a refusal (bundles) whose message names the limit, never
//! a crash, a hang or an allow. Hosts add the limits of their own
//! resources (guest memory, call deadline) on top.

/// Largest request document, in bytes (a `deny` naming the limit).
pub use crate::request::MAX_REQUEST_BYTES;

/// Deepest nesting of objects and arrays in a request or a bundle's JSON
/// file; duplicate keys are refused alongside (`crate::guard`).
pub use crate::guard::MAX_JSON_DEPTH;

/// Largest bundle (all file names and texts together), in bytes.
pub use crate::bundle::MAX_BUNDLE_BYTES;

/// Most policies in a bundle.
pub use crate::bundle::MAX_POLICIES;

/// Longest chain of parents in `entities.json` (an entity, its parent,
/// the parent's parent …); cycles are refused at any length.
pub const MAX_ENTITY_DEPTH: usize = 64;

/// Longest JWT accepted (provenance or access token), in bytes; a longer
/// one fails as `oversized` without being decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Deepest bracket nesting in a policy or schema file, and the largest
/// estimated expression depth of one policy (`crate::guard::cedar`).
pub use crate::guard::{MAX_CEDAR_DEPTH, MAX_CEDAR_NESTING};

/// Deepest flow nesting in a YAML case file (`crate::guard::yaml`).
pub use crate::guard::MAX_YAML_NESTING;

/// Most entries in `context.forwarded_for`.
pub use crate::network::MAX_FORWARDED_HOPS;

/// How many times a conflicting compare-and-set round is recomputed
/// before the decision is a `deny` naming the store.
pub const CAS_RETRIES: usize = 16;
