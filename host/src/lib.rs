//! The portcullis Rust host: loads the guest component with wasmtime and
//! drives it.
//!
//! Responsible for: precompiling the guest once and caching the result
//! (`.cwasm`) so a restart does not recompile; bounding every guest call in
//! memory and time; supplying the `store` import; recovering from a guest
//! trap (the decision is a deny naming the fault, and the instance is
//! rebuilt with its bundle). Not responsible for any decision rule: those
//! are in `portcullis-engine`, inside the guest.

mod bindings {
    #![allow(missing_docs)]
    wasmtime::component::bindgen!({
        world: "guest",
        path: "../wit",
    });
}

pub mod audit;
pub mod bundle_dir;
pub mod notify;
pub mod redis_store;
mod runtime;
pub mod serve;
pub mod shadow;
pub mod signing;

pub use runtime::{GuestInstance, GuestRuntime, LoadError, RuntimeOptions};

/// The guest component embedded at build time.
pub const GUEST_WASM: &[u8] = include_bytes!(env!("PORTCULLIS_GUEST_WASM_PATH"));

/// SHA-256 of [`GUEST_WASM`] (hex), computed when the host was built.
pub const GUEST_WASM_SHA256: &str = env!("PORTCULLIS_GUEST_WASM_SHA256");
