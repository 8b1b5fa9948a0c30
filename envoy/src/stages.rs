//! Benchmark builds only (`--features bench-stages`, never the production
//! filter): a request carrying `x-portcullis-bench-stop: <stage>` is let
//! through right after that stage of the filter, so a benchmark can take
//! the cost of each stage in V8 apart (see envoy/BENCHMARKS.md):
//!
//! | stage | what ran |
//! |---|---|
//! | `headers` | the callback, all request headers fetched (1 host call) |
//! | `peer` | + the connection properties (2 host calls) |
//! | `map` | + route, principal and context mapped into a `Request` |
//! | `state` | + the request's lockout keys read from shared data (3 host calls), as the engine's store read does |
//! | `engine` | `map`, then the engine's whole decision over an empty in-memory store (no host call): the engine's own cost in V8 |
//!
//! Without the header the request is decided as in production.

use crate::mapping::Mapped;
use crate::settings::Loaded;
use crate::store::{SharedData, SharedStore};
use portcullis_engine::decision::Audit;
use portcullis_engine::{MemoryStore, Store};
use proxy_wasm::types::Action;

/// The request header naming the stage to stop after.
pub const STAGE_HEADER: &str = "x-portcullis-bench-stop";

/// A stage of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Headers fetched.
    Headers,
    /// Connection properties read.
    Peer,
    /// Request mapped.
    Map,
    /// State read.
    State,
    /// Decided over memory.
    Engine,
}

/// The stage a request asks to stop after.
pub fn stop_at(headers: &[(String, Vec<u8>)]) -> Option<Stage> {
    match crate::mapping::header(headers, STAGE_HEADER)? {
        b"headers" => Some(Stage::Headers),
        b"peer" => Some(Stage::Peer),
        b"map" => Some(Stage::Map),
        b"state" => Some(Stage::State),
        b"engine" => Some(Stage::Engine),
        _ => None,
    }
}

/// Finish a request stopped after mapping (`map`), after reading its
/// state (`state`), or after deciding over memory (`engine`).
pub fn finish<S: SharedData>(
    stage: Stage,
    loaded: &Loaded,
    mapped: Option<&Mapped>,
    host: &S,
) -> Action {
    if stage == Stage::State
        && let Some(m) = mapped
    {
        let ns = &loaded.bundle.info().namespace;
        let r = &m.request;
        let account = format!("{}:{}", r.principal.kind, r.principal.id.to_lowercase());
        let mut keys = vec![format!("lk2:authentic:{ns}:acct:{account}")];
        if let Some(ip) = &r.context.ip {
            keys.push(format!("lk2:authentic:{ns}:acip:{account}|{ip}"));
            keys.push(format!("lk2:authentic:{ns}:ip:{ip}"));
        }
        let _ = SharedStore::new(host, "").get(&keys);
    }
    if stage == Stage::Engine
        && let Some(m) = mapped
    {
        let mut memory = MemoryStore::new();
        let _ = loaded
            .bundle
            .decide_with(&m.request, &mut memory, Audit::None);
    }
    Action::Continue
}
