//! Host integration tests, compiled into one binary (as wasmtime does) to
//! keep link time down.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and benches stop at the first broken assumption"
)]

mod alerting;
mod audit;
mod cli;
mod diff;
mod equality;
mod faults;
mod flows;
mod limits;
mod notify;
mod redis;
mod revoke;
mod runtime;
mod serve;

use portcullis_host::{GuestRuntime, RuntimeOptions, bundle_dir};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default bundle's files.
pub fn default_files() -> Vec<(String, String)> {
    match bundle_dir::read(&root().join("policies")) {
        Ok(f) => f,
        Err(e) => panic!("cannot read the default bundle: {e:#}"),
    }
}

/// One runtime shared by the tests (compiling the guest is the dear part).
pub fn runtime() -> &'static GuestRuntime {
    static RT: OnceLock<GuestRuntime> = OnceLock::new();
    RT.get_or_init(|| match GuestRuntime::new(RuntimeOptions::default()) {
        Ok(r) => r,
        Err(e) => panic!("cannot start the guest runtime: {e:#}"),
    })
}
