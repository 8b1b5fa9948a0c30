//! The engine's [`Store`] over proxy-wasm shared data, so every worker
//! thread's VM reads and writes the same counters.
//!
//! Shared data gives `get → (bytes, cas)` and `set(key, bytes, cas)` that
//! fails with a CAS mismatch when the key moved on. Two gaps are closed here:
//!
//! * **No delete.** A delete writes an empty value; an empty value reads as
//!   absent (`value: None`) but keeps its real cas as the version, so a later
//!   compare-and-set against it is still exact.
//! * **No create-if-absent.** `set` with cas 0 writes unconditionally, so two
//!   workers that both saw a key absent would both "create" it and one
//!   update would be lost. Creations therefore take a small lock (itself a
//!   shared-data key updated only by compare-and-set) and re-check that the
//!   key is still absent before writing it. Updates of existing keys need no
//!   lock: their cas is exact. A lock left by a VM that died holding it is
//!   taken over after [`STALE_LOCK_MS`].
//!
//! Keys are the engine's keys under a prefix (`pc1/`; in trust mode a test
//! may add its own namespace so each case starts from empty state).

use portcullis_engine::{Entry, Store, Write, WriteResult};

/// Shared-data operations, as the proxy-wasm host offers them.
pub trait SharedData {
    /// The value and its cas; cas 0 means absent.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), String>;
    /// Write `value` if the key is still at `cas` (0: unconditionally).
    /// `Ok(false)`: CAS mismatch.
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, String>;
    /// Milliseconds on a clock shared by the VMs (wall clock).
    fn now_ms(&self) -> u64;
    /// A seed for the backoff's jitter (differs between VMs and calls).
    fn seed(&self) -> u64 {
        self.now_ms()
    }
}

/// The key every creation locks.
pub const CREATE_LOCK: &str = "pc1!create-lock";
/// Marks a bundle (by hash) whose cases passed in some VM, so the other
/// VMs loading the same bundle need not run them again.
pub const CASES_PASSED_PREFIX: &str = "pc1!cases-passed/";
/// Prefix of every engine key.
pub const KEY_PREFIX: &str = "pc1/";
/// A creation lock held longer than this was left by a VM that died.
pub const STALE_LOCK_MS: u64 = 100;
/// Spin iterations of the first backoff round (doubling per round).
pub const BACKOFF_BASE_SPINS: u64 = 256;
/// Most spin iterations of one backoff round (about 50–200 µs in V8).
pub const BACKOFF_MAX_SPINS: u64 = 1 << 16;
/// Longest a creation waits for the lock before the store reports a fault.
const LOCK_WAIT_MS: u64 = 2 * STALE_LOCK_MS;
const FREE: &[u8] = b"free";

/// Make sure the creation lock exists. Called when a VM starts: Envoy
/// starts (and configures) the main thread's VM before any worker's, so
/// the first creation of the lock is not raced.
pub fn ensure_lock<S: SharedData + ?Sized>(data: &S) -> Result<(), String> {
    let (_, cas) = data.get(CREATE_LOCK)?;
    if cas == 0 {
        data.set(CREATE_LOCK, FREE, 0)?;
    }
    Ok(())
}

/// The engine's store over shared data, for one decision.
pub struct SharedStore<'a, S: SharedData + ?Sized> {
    data: &'a S,
    prefix: String,
    /// Jitter state (xorshift), seeded on the first backoff.
    rng: u64,
    /// Spin iterations spent backing off (tests).
    pub spun: u64,
    /// Every key read so far held nothing (no record).
    pub all_absent: bool,
}

impl<'a, S: SharedData + ?Sized> SharedStore<'a, S> {
    /// Keys under `pc1/` plus `namespace` (empty in production).
    pub fn new(data: &'a S, namespace: &str) -> Self {
        SharedStore {
            data,
            prefix: format!("{KEY_PREFIX}{namespace}"),
            rng: 0,
            spun: 0,
            all_absent: true,
        }
    }

    /// How long round `round` of a conflicting write waits: a uniformly
    /// random number of spins below `BACKOFF_BASE_SPINS · 2^(round-1)`,
    /// capped at [`BACKOFF_MAX_SPINS`] (proxy-wasm has no sleep; the other
    /// worker threads run meanwhile, on their own cores).
    pub fn backoff_spins(&mut self, round: u32) -> u64 {
        if self.rng == 0 {
            self.rng = self.data.seed() | 1;
        }
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ceiling = BACKOFF_BASE_SPINS
            .saturating_mul(1u64 << round.saturating_sub(1).min(20))
            .min(BACKOFF_MAX_SPINS);
        self.rng % ceiling
    }

    fn entry(&self, key: &str) -> Result<Entry, String> {
        let (value, cas) = self.data.get(&format!("{}{key}", self.prefix))?;
        let value = match value {
            Some(v) if !v.is_empty() => Some(
                String::from_utf8(v)
                    .map_err(|_| format!("shared data under `{key}` is not UTF-8"))?,
            ),
            _ => None,
        };
        Ok(Entry {
            key: key.to_string(),
            value,
            version: u64::from(cas),
        })
    }

    fn lock(&self) -> Result<(), String> {
        let start = self.data.now_ms();
        let mut spins: u64 = 0;
        loop {
            let (value, cas) = self.data.get(CREATE_LOCK)?;
            if cas == 0 {
                ensure_lock(self.data)?;
                continue;
            }
            let value = value.unwrap_or_default();
            let now = self.data.now_ms();
            let held_since = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.strip_prefix("held "))
                .and_then(|t| t.parse::<u64>().ok());
            let takeable = match held_since {
                None => true,
                Some(t) => now.saturating_sub(t) > STALE_LOCK_MS,
            };
            if takeable
                && self
                    .data
                    .set(CREATE_LOCK, format!("held {now}").as_bytes(), cas)?
            {
                return Ok(());
            }
            spins += 1;
            if now.saturating_sub(start) > LOCK_WAIT_MS {
                return Err(format!("creation lock not acquired after {spins} tries"));
            }
        }
    }

    fn unlock(&self) -> Result<(), String> {
        let (_, cas) = self.data.get(CREATE_LOCK)?;
        // Only a VM that found our hold stale could have moved it; then it
        // is theirs and stays as it is.
        self.data.set(CREATE_LOCK, FREE, cas).map(|_| ())
    }

    fn write(&self, w: &Write) -> Result<WriteResult, String> {
        let key = format!("{}{}", self.prefix, w.key);
        let bytes = w.value.as_deref().unwrap_or("").as_bytes();
        if w.expected_version == 0 {
            self.lock()?;
            let result = self.create(&key, &w.key, bytes);
            let unlocked = self.unlock();
            let result = result?;
            unlocked?;
            return Ok(result);
        }
        let Ok(cas) = u32::try_from(w.expected_version) else {
            return Ok(WriteResult::Conflict(self.entry(&w.key)?));
        };
        if self.data.set(&key, bytes, cas)? {
            Ok(WriteResult::Written(u64::from(self.data.get(&key)?.1)))
        } else {
            Ok(WriteResult::Conflict(self.entry(&w.key)?))
        }
    }

    /// Under the lock: create `key` only if it is still absent.
    fn create(&self, key: &str, engine_key: &str, bytes: &[u8]) -> Result<WriteResult, String> {
        let current = self.entry(engine_key)?;
        if current.version != 0 {
            return Ok(WriteResult::Conflict(current));
        }
        self.data.set(key, bytes, 0)?;
        Ok(WriteResult::Written(u64::from(self.data.get(key)?.1)))
    }
}

impl<S: SharedData + ?Sized> Store for SharedStore<'_, S> {
    fn get(&mut self, keys: &[String]) -> Result<Vec<Entry>, String> {
        let entries: Vec<Entry> = keys.iter().map(|k| self.entry(k)).collect::<Result<_, _>>()?;
        self.all_absent &= entries.iter().all(|e| e.value.is_none());
        Ok(entries)
    }

    fn compare_and_set(&mut self, writes: &[Write]) -> Result<Vec<WriteResult>, String> {
        writes.iter().map(|w| self.write(w)).collect()
    }

    fn backoff(&mut self, round: u32) -> bool {
        let spins = self.backoff_spins(round);
        self.spun += spins;
        // Natively (the unit tests, which run more threads than cores) the
        // thread that would let this one through may be waiting for a core:
        // sleep about as long as the spins take in V8 instead of holding
        // the core. Envoy runs each worker VM on a thread of its own, where
        // spinning is the only wait proxy-wasm offers.
        #[cfg(not(target_arch = "wasm32"))]
        std::thread::sleep(std::time::Duration::from_nanos(spins.saturating_mul(3)));
        #[cfg(target_arch = "wasm32")]
        {
            let mut acc = 0u64;
            for i in 0..spins {
                std::hint::spin_loop();
                // Opaque to the optimiser, so the wait is not removed.
                acc = std::hint::black_box(acc.wrapping_add(i));
            }
        }
        true
    }
}

/// An in-process stand-in with Envoy's semantics (one global cas counter,
/// cas 0 writes unconditionally, no delete), for tests.
#[cfg(test)]
pub mod fake {
    use super::SharedData;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Shared data as Envoy keeps it.
    #[derive(Default)]
    pub struct Fake {
        map: Mutex<HashMap<String, (Vec<u8>, u32)>>,
        next: Mutex<u32>,
        /// Calls made (to show how many host crossings a decision costs).
        pub calls: AtomicU64,
    }

    impl SharedData for Fake {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), String> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            std::thread::yield_now();
            let map = self.map.lock().map_err(|e| e.to_string())?;
            Ok(map
                .get(key)
                .map(|(v, c)| (Some(v.clone()), *c))
                .unwrap_or((None, 0)))
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            std::thread::yield_now();
            let mut map = self.map.lock().map_err(|e| e.to_string())?;
            if let Some((_, current)) = map.get(key)
                && cas != 0
                && cas != *current
            {
                return Ok(false);
            }
            let mut next = self.next.lock().map_err(|e| e.to_string())?;
            *next += 1;
            map.insert(key.to_string(), (value.to_vec(), *next));
            Ok(true)
        }

        fn now_ms(&self) -> u64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::Fake;
    use super::*;
    use std::sync::Arc;

    fn w(key: &str, value: Option<&str>, expected_version: u64) -> Write {
        Write {
            key: key.into(),
            value: value.map(str::to_string),
            expected_version,
        }
    }

    #[test]
    fn cas_semantics_match_the_engine_store() {
        let data = Fake::default();
        ensure_lock(&data).unwrap();
        let mut s = SharedStore::new(&data, "");
        let r = s.compare_and_set(&[w("a", Some("1"), 0)]).unwrap();
        let WriteResult::Written(v1) = r[0] else {
            panic!("{r:?}")
        };
        assert!(v1 > 0);
        // A stale creator loses and sees the value.
        let r = s
            .compare_and_set(&[w("a", Some("2"), 0), w("b", Some("x"), 0)])
            .unwrap();
        assert!(
            matches!(&r[0], WriteResult::Conflict(e) if e.value.as_deref() == Some("1") && e.version == v1)
        );
        assert!(matches!(r[1], WriteResult::Written(_)));
        // A stale updater too.
        let r = s.compare_and_set(&[w("a", Some("3"), v1 + 100)]).unwrap();
        assert!(matches!(&r[0], WriteResult::Conflict(e) if e.version == v1));
        // Delete: reads as absent, with a real version to compare against.
        let r = s.compare_and_set(&[w("a", None, v1)]).unwrap();
        let WriteResult::Written(v2) = r[0] else {
            panic!("{r:?}")
        };
        let got = s.get(&["a".into(), "zz".into()]).unwrap();
        assert_eq!((got[0].value.as_deref(), got[0].version), (None, v2));
        assert_eq!((got[1].value.as_deref(), got[1].version), (None, 0));
        // Re-creating a deleted key is an update at its version, never a blind write.
        let r = s.compare_and_set(&[w("a", Some("4"), 0)]).unwrap();
        assert!(matches!(&r[0], WriteResult::Conflict(e) if e.version == v2 && e.value.is_none()));
        let r = s.compare_and_set(&[w("a", Some("4"), v2)]).unwrap();
        assert!(matches!(r[0], WriteResult::Written(v) if v > v2));
        // The lock is free again.
        assert_eq!(data.get(CREATE_LOCK).unwrap().0.as_deref(), Some(FREE));
    }

    #[test]
    fn namespaces_isolate_state() {
        let data = Fake::default();
        let mut a = SharedStore::new(&data, "t/case-1/");
        let mut b = SharedStore::new(&data, "t/case-2/");
        a.compare_and_set(&[w("k", Some("1"), 0)]).unwrap();
        assert_eq!(b.get(&["k".into()]).unwrap()[0].version, 0);
        assert_eq!(
            data.get("pc1/t/case-1/k").unwrap().0.as_deref(),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn a_stale_lock_is_taken_over() {
        let data = Fake::default();
        data.set(
            CREATE_LOCK,
            format!("held {}", data.now_ms() - 10 * STALE_LOCK_MS).as_bytes(),
            0,
        )
        .unwrap();
        let mut s = SharedStore::new(&data, "");
        assert!(matches!(
            s.compare_and_set(&[w("a", Some("1"), 0)]).unwrap()[0],
            WriteResult::Written(_)
        ));
        // A fresh hold is waited for, then reported as a store fault.
        data.set(
            CREATE_LOCK,
            format!("held {}", data.now_ms() + 60_000).as_bytes(),
            0,
        )
        .unwrap();
        assert!(s.compare_and_set(&[w("b", Some("1"), 0)]).is_err());
    }

    /// Concurrent creators and updaters lose no update: N increments from
    /// several threads (each its own store, like worker VMs) make exactly N.
    #[test]
    fn concurrent_increments_are_exact() {
        let data = Arc::new(Fake::default());
        ensure_lock(&*data).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let data = Arc::clone(&data);
                std::thread::spawn(move || {
                    let mut s = SharedStore::new(&*data, "");
                    for _ in 0..50 {
                        loop {
                            let e = s.get(&["n".into()]).unwrap().remove(0);
                            let n: u64 =
                                e.value.as_deref().map(|v| v.parse().unwrap()).unwrap_or(0);
                            let r = s
                                .compare_and_set(&[w("n", Some(&(n + 1).to_string()), e.version)])
                                .unwrap();
                            if matches!(r[0], WriteResult::Written(_)) {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut s = SharedStore::new(&*data, "");
        assert_eq!(
            s.get(&["n".into()]).unwrap()[0].value.as_deref(),
            Some("200")
        );
    }
}
