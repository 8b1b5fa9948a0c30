//! Failure counting in the store.
//!
//! One counter per (pathway, principal): failures inside a window that
//! starts at the first failure; a success clears it when the manifest says
//! so. The value carries its own expiry (the store has no TTL).

use crate::context::Pathway;
use crate::manifest::LockoutSection;
use crate::request::{Event, Request};
use crate::store::{Entry, Write};
use serde::{Deserialize, Serialize};

/// A counter as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Failures inside the window.
    pub n: i64,
    /// When the window ends (seconds since the epoch).
    pub until: i64,
}

impl Counter {
    /// The counter as seen at `now`: an expired window counts nothing.
    pub fn at(entry: &Entry, now: i64) -> Counter {
        entry
            .value
            .as_deref()
            .and_then(|v| serde_json::from_str::<Counter>(v).ok())
            .filter(|c| c.until > now)
            .unwrap_or_default()
    }
}

/// The store key of the counter for this request's principal on `pathway`.
///
/// Ids are lowercased so that `Alice@x` and `alice@x` share one counter.
pub fn key(namespace: &str, pathway: Pathway, req: &Request) -> String {
    format!(
        "lk1:{}:{namespace}:{}:{}",
        pathway.as_str(),
        req.principal.kind,
        req.principal.id.to_lowercase()
    )
}

/// The counter after this request, and the write that records it (if any).
pub fn step(
    cfg: &LockoutSection,
    req: &Request,
    entry: &Entry,
    now: i64,
) -> (Counter, Option<Write>) {
    let current = Counter::at(entry, now);
    let next = match req.event {
        Some(Event::AuthFailure) => {
            let until = if current.n == 0 {
                now.saturating_add(cfg.window.as_secs() as i64)
            } else {
                current.until
            };
            Counter {
                n: current.n.saturating_add(1),
                until,
            }
        }
        Some(Event::AuthSuccess) if cfg.reset_on_success => Counter::default(),
        _ => return (current, None),
    };
    let value = (next.n > 0).then(|| serde_json::to_string(&next).unwrap_or_default());
    if value.is_none() && entry.version == 0 {
        return (next, None);
    }
    (
        next,
        Some(Write {
            key: entry.key.clone(),
            value,
            expected_version: entry.version,
        }),
    )
}
