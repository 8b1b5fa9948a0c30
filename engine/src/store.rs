//! The state interface the engine imports, and an in-memory implementation.
//!
//! Mirrors the `store` interface of `wit/portcullis.wit`: a batched get of
//! values with versions, and a batched compare-and-set. The host supplies
//! it (memory, proxy-wasm shared data, Redis); the engine owns every rule
//! that reads and writes it, and keeps expiry inside the values.

use std::collections::HashMap;

/// One key as read; `version` 0 means absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Its value, if present.
    pub value: Option<String>,
    /// Its version (0: absent).
    pub version: u64,
}

/// One conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key.
    pub key: String,
    /// New value; `None` deletes.
    pub value: Option<String>,
    /// Applied only if the key is still at this version (0: absent).
    pub expected_version: u64,
}

/// What became of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
    /// Written, with the key's new version.
    Written(u64),
    /// The key had moved on: its current entry.
    Conflict(Entry),
}

/// Key-value state with versions. An `Err` is a failure of the store
/// itself (unreachable, timed out); the engine then fails closed.
pub trait Store {
    /// Read `keys`, answering in the same order.
    fn get(&mut self, keys: &[String]) -> Result<Vec<Entry>, String>;
    /// Apply each write with its own compare-and-set, in order.
    fn compare_and_set(&mut self, writes: &[Write]) -> Result<Vec<WriteResult>, String>;
    /// Called before retry `round` (1, 2, …) of writes that conflicted:
    /// a store shared by concurrent writers waits a bounded, randomised
    /// while here so they stop colliding in lockstep, and answers `true`;
    /// the engine then reads the pending keys again (what the conflict
    /// answered is stale after a wait). The default (stores without
    /// concurrent writers) returns `false` at once: the entries the
    /// conflict answered are current.
    fn backoff(&mut self, round: u32) -> bool {
        let _ = round;
        false
    }
}

/// State kept in process memory: the CLI, the bindings and the case runner.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    map: HashMap<String, (String, u64)>,
    next_version: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every key starting with `prefix` and its value, sorted (tests and
    /// diagnostics).
    pub fn snapshot(&self, prefix: &str) -> std::collections::BTreeMap<String, String> {
        self.map
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    fn entry(&self, key: &str) -> Entry {
        match self.map.get(key) {
            Some((v, ver)) => Entry {
                key: key.to_string(),
                value: Some(v.clone()),
                version: *ver,
            },
            None => Entry {
                key: key.to_string(),
                value: None,
                version: 0,
            },
        }
    }
}

impl Store for MemoryStore {
    fn get(&mut self, keys: &[String]) -> Result<Vec<Entry>, String> {
        Ok(keys.iter().map(|k| self.entry(k)).collect())
    }

    fn compare_and_set(&mut self, writes: &[Write]) -> Result<Vec<WriteResult>, String> {
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let current = self.map.get(&w.key).map(|(_, v)| *v).unwrap_or(0);
            if current != w.expected_version {
                out.push(WriteResult::Conflict(self.entry(&w.key)));
                continue;
            }
            match &w.value {
                Some(value) => {
                    // Versions only grow, across deletes too, so a deleted and
                    // re-created key never repeats a version (no ABA).
                    self.next_version += 1;
                    self.map
                        .insert(w.key.clone(), (value.clone(), self.next_version));
                    out.push(WriteResult::Written(self.next_version));
                }
                None => {
                    self.map.remove(&w.key);
                    out.push(WriteResult::Written(0));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, value: Option<&str>, expected_version: u64) -> Write {
        Write {
            key: key.into(),
            value: value.map(str::to_string),
            expected_version,
        }
    }

    #[test]
    fn cas_applies_only_at_the_expected_version() -> Result<(), String> {
        let mut s = MemoryStore::new();
        let r = s.compare_and_set(&[w("a", Some("1"), 0)])?;
        let WriteResult::Written(v1) = r[0] else {
            return Err("not written".into());
        };
        // A stale writer that still thinks `a` is absent loses and sees the value.
        let r = s.compare_and_set(&[w("a", Some("2"), 0), w("b", Some("x"), 0)])?;
        assert!(
            matches!(&r[0], WriteResult::Conflict(e) if e.value.as_deref() == Some("1") && e.version == v1)
        );
        assert!(
            matches!(r[1], WriteResult::Written(_)),
            "writes are independent"
        );
        let got = s.get(&["a".into(), "zz".into()])?;
        assert_eq!(got[0].value.as_deref(), Some("1"));
        assert_eq!(got[1].version, 0);
        // Delete then re-create: a fresh version, never the old one.
        s.compare_and_set(&[w("a", None, v1)])?;
        let r = s.compare_and_set(&[w("a", Some("3"), 0)])?;
        assert!(matches!(r[0], WriteResult::Written(v) if v > v1));
        Ok(())
    }
}
