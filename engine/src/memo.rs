//! Cedar's answers, remembered per bundle.
//!
//! Cedar's authorisation is a pure function of the request (principal,
//! action, resource, context), the policies and the entities; the last two
//! are fixed for a loaded bundle. So the answer for a request whose
//! principal, action, resource and context (as far as the action's
//! policies read it, see [`crate::context::Needs`]) were seen before is
//! the answer Cedar gave then: the decision is the same whether it comes
//! from here or from Cedar, only cheaper. Building the context and
//! evaluating the policies are most of a decision's cost.
//!
//! The key is the exact byte encoding of those inputs (no hash collisions
//! can mix two requests up). The table is bounded: when it is full it is
//! emptied and refilled (a miss costs only the evaluation it saves).

use cedar_policy::PolicyId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most answers kept per bundle.
pub const CAPACITY: usize = 4096;

/// What Cedar answered, as the engine uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Cedar's decision was Allow.
    pub(crate) allow: bool,
    /// Determining policies, sorted by id.
    pub(crate) reasons: Vec<PolicyId>,
    /// Evaluation errors, as the engine words them.
    pub(crate) errors: Vec<String>,
}

/// Hits and misses so far (tests, benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoStats {
    /// Answers found.
    pub hits: u64,
    /// Answers Cedar had to compute.
    pub misses: u64,
    /// Answers held now.
    pub held: usize,
}

/// The remembered answers of one bundle.
#[derive(Debug)]
pub(crate) struct Memo {
    map: Mutex<HashMap<Vec<u8>, Arc<Answer>>>,
    enabled: AtomicBool,
    /// Cut the context down to what the action's policies read.
    project: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for Memo {
    fn default() -> Self {
        Memo {
            map: Mutex::new(HashMap::new()),
            enabled: AtomicBool::new(true),
            project: AtomicBool::new(true),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

impl Memo {
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Answer>> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let found = self.map.lock().ok()?.get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(crate) fn put(&self, key: Vec<u8>, answer: Arc<Answer>) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(key, answer);
        }
    }

    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        if !on && let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }

    pub(crate) fn set_projection(&self, on: bool) {
        self.project.store(on, Ordering::Relaxed);
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }

    pub(crate) fn projecting(&self) -> bool {
        self.project.load(Ordering::Relaxed)
    }

    pub(crate) fn stats(&self) -> MemoStats {
        MemoStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            held: self.map.lock().map(|m| m.len()).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::context::Needs;
    use cedar_policy::PolicySet;
    use std::str::FromStr;

    fn needs(text: &str) -> Vec<String> {
        let set = PolicySet::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        Needs::of(set.policies()).paths()
    }

    #[test]
    fn what_policies_read_of_the_context() {
        assert_eq!(
            needs(
                r#"permit (principal, action, resource) when { context.lockout.ip.stage == "x" && context has ip };"#
            ),
            ["ip", "lockout.ip.stage"]
        );
        // A record read whole keeps all of it; a path under it adds nothing.
        assert_eq!(
            needs(
                r#"permit (principal, action, resource) when { context.mtls == {"verified": true, "san": ""} && context.mtls.san == "" };"#
            ),
            ["mtls"]
        );
        // `has` on a nested record names the child.
        assert_eq!(
            needs(
                r#"permit (principal, action, resource) when { context.record has synthetic && context.record.synthetic };"#
            ),
            ["record.synthetic"]
        );
        // Any other use of `context` needs all of it.
        assert_eq!(
            needs(r#"permit (principal, action, resource) when { context == {} };"#),
            ["*"]
        );
        assert_eq!(
            needs(r#"permit (principal, action, resource);"#),
            Vec::<String>::new()
        );
    }
}
