//! Fault injection at the runtime level (issue 12): a store that errors,
//! outlasts the call deadline, panics, answers a conflict to every
//! compare-and-set, or answers more than the guest can hold; bundle loads
//! racing decisions; two instances racing on one store. Each shows the
//! declared behaviour: a deny that names the fault (never an allow, never a
//! hang), bounded retries, and an instance that recovers with its bundle
//! and its state, so the next decision is the right one.

use portcullis_engine::{Entry, MemoryStore, Store, Write, WriteResult};
use portcullis_host::{GuestInstance, GuestRuntime, LoadError, RuntimeOptions};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOGIN: &str = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#;

fn failure() -> String {
    LOGIN.replace("\"now\"", "\"event\":\"auth_failure\",\"now\"")
}

/// What the injected store does on its next calls.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Healthy,
    ReadError,
    WriteError,
    /// Sleep this long in every call, then answer.
    Slow(Duration),
    Panic,
    /// Every compare-and-set conflicts, answering the current entry.
    ConflictStorm,
    /// Every read answers a value of this many bytes.
    Huge(usize),
}

/// A memory store with a switchable fault, shared with the test.
#[derive(Clone)]
struct FaultStore {
    inner: Arc<Mutex<MemoryStore>>,
    mode: Arc<Mutex<Mode>>,
    cas_calls: Arc<AtomicUsize>,
}

impl FaultStore {
    fn new() -> Self {
        FaultStore {
            inner: Arc::new(Mutex::new(MemoryStore::new())),
            mode: Arc::new(Mutex::new(Mode::Healthy)),
            cas_calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn mode(&self) -> Mode {
        self.mode.lock().unwrap().clone()
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.inner
            .lock()
            .unwrap()
            .snapshot("")
            .into_iter()
            .collect()
    }
}

impl Store for FaultStore {
    fn get(&mut self, keys: &[String]) -> Result<Vec<Entry>, String> {
        match self.mode() {
            Mode::ReadError => return Err("connection refused (injected)".into()),
            Mode::Slow(d) => std::thread::sleep(d),
            Mode::Panic => panic!("the store fell over (injected)"),
            Mode::Huge(n) => {
                return Ok(keys
                    .iter()
                    .map(|k| Entry {
                        key: k.clone(),
                        value: Some("x".repeat(n)),
                        version: 1,
                    })
                    .collect());
            }
            _ => {}
        }
        self.inner.lock().unwrap().get(keys)
    }

    fn compare_and_set(&mut self, writes: &[Write]) -> Result<Vec<WriteResult>, String> {
        self.cas_calls.fetch_add(1, Ordering::SeqCst);
        match self.mode() {
            Mode::WriteError => return Err("write timed out (injected)".into()),
            Mode::ConflictStorm => {
                // Someone else always got there first: the current entry
                // comes back with a version that moved on.
                let mut inner = self.inner.lock().unwrap();
                let keys: Vec<String> = writes.iter().map(|w| w.key.clone()).collect();
                let current = inner.get(&keys)?;
                return Ok(current
                    .into_iter()
                    .map(|mut e| {
                        e.version += 1_000;
                        WriteResult::Conflict(e)
                    })
                    .collect());
            }
            _ => {}
        }
        self.inner.lock().unwrap().compare_and_set(writes)
    }
}

fn decision(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn outcome(d: &Value) -> (&str, Option<&str>) {
    (
        d["outcome"].as_str().unwrap_or(""),
        d["error"]["kind"].as_str(),
    )
}

fn instance(rt: &GuestRuntime, store: &FaultStore) -> GuestInstance {
    let mut g = rt.instantiate(Box::new(store.clone())).unwrap();
    assert!(g.load(crate::default_files()).is_ok());
    g
}

fn pair_failures(d: &Value) -> i64 {
    d["audit"]["facts"]["lockout"]["account_ip"]["failures"]
        .as_i64()
        .unwrap_or(-1)
}

#[test]
fn a_store_that_errors_denies_naming_the_store_and_the_next_decision_is_right() {
    let store = FaultStore::new();
    let mut g = instance(crate::runtime(), &store);
    g.decide(&failure());
    store.set(Mode::ReadError);
    let d = decision(&g.decide(&failure()));
    assert_eq!(outcome(&d), ("deny", Some("store")));
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("store read failed")
    );
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
    store.set(Mode::WriteError);
    let d = decision(&g.decide(&failure()));
    assert_eq!(outcome(&d), ("deny", Some("store")));
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("store write failed")
    );
    // Healthy again: only the one failure that was written counts.
    store.set(Mode::Healthy);
    let d = decision(&g.decide(LOGIN));
    assert_eq!(outcome(&d), ("allow", None));
    assert_eq!(pair_failures(&d), 1);
}

#[test]
fn a_conflict_storm_ends_after_bounded_retries_in_a_deny() {
    let store = FaultStore::new();
    let mut g = instance(crate::runtime(), &store);
    store.set(Mode::ConflictStorm);
    let before = store.snapshot();
    let d = decision(&g.decide(&failure()));
    assert_eq!(outcome(&d), ("deny", Some("store")));
    assert!(
        d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("compare-and-set conflicts in a row"),
        "{d}"
    );
    assert_eq!(
        store.cas_calls.load(Ordering::SeqCst),
        portcullis_engine::limits::CAS_RETRIES,
        "one compare-and-set per retry, no more"
    );
    assert_eq!(store.snapshot(), before, "nothing was written");
    // Healthy again: the next decision is the right one.
    store.set(Mode::Healthy);
    let d = decision(&g.decide(LOGIN));
    assert_eq!(outcome(&d), ("allow", None));
}

#[test]
fn a_panicking_store_is_a_deny_and_the_host_survives() {
    let store = FaultStore::new();
    let mut g = instance(crate::runtime(), &store);
    store.set(Mode::Panic);
    let d = decision(&g.decide(LOGIN));
    assert_eq!(outcome(&d), ("deny", Some("store")));
    assert!(d["error"]["message"].as_str().unwrap().contains("panicked"));
    store.set(Mode::Healthy);
    assert_eq!(outcome(&decision(&g.decide(LOGIN))), ("allow", None));
}

#[test]
fn a_store_slower_than_the_deadline_is_a_deny_naming_the_store_and_the_instance_recovers() {
    let store = FaultStore::new();
    let mut g = instance(crate::runtime(), &store);
    g.decide(&failure());
    g.set_call_timeout(Duration::from_millis(100));
    store.set(Mode::Slow(Duration::from_millis(400)));
    let d = decision(&g.decide(&failure()));
    assert_eq!(outcome(&d), ("deny", Some("store")), "{d}");
    let msg = d["error"]["message"].as_str().unwrap();
    assert!(msg.contains("past the call deadline"), "{msg}");
    // The instance recovers with its bundle and its state: the next
    // decision sees the first failure (the slow one was refused).
    store.set(Mode::Healthy);
    g.set_call_timeout(Duration::from_secs(5));
    let d = decision(&g.decide(LOGIN));
    assert_eq!(outcome(&d), ("allow", None));
    assert_eq!(pair_failures(&d), 1);
}

#[test]
fn a_guest_trap_mid_decision_denies_and_the_next_decision_is_right() {
    // A store answering more than the guest may hold traps the guest in the
    // middle of a decision (its memory limit).
    let rt = GuestRuntime::new(RuntimeOptions {
        max_memory: 64 * 1024 * 1024,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let store = FaultStore::new();
    let mut g = instance(&rt, &store);
    for _ in 0..2 {
        g.decide(&failure());
    }
    store.set(Mode::Huge(80 * 1024 * 1024));
    let d = decision(&g.decide(&failure()));
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["allowed"], false);
    assert!(
        d["error"]["message"].as_str().unwrap().contains("trapped"),
        "{d}"
    );
    // Rebuilt with its bundle and state: two failures, then a third.
    store.set(Mode::Healthy);
    let d = decision(&g.decide(LOGIN));
    assert_eq!((outcome(&d), pair_failures(&d)), (("allow", None), 2));
    g.decide(&failure());
    let d = decision(&g.decide(LOGIN));
    assert_eq!(outcome(&d).0, "challenge", "three failures: challenged");
}

/// The default bundle with one more policy that forbids every login, as
/// version `swapped`.
fn forbidding_bundle() -> Vec<(String, String)> {
    let mut files = crate::default_files();
    for (name, text) in files.iter_mut() {
        if name == "portcullis.toml" {
            *text = text.replacen("version = \"", "version = \"swapped-", 1);
        }
    }
    files.push((
        "swap.cedar".into(),
        "@id(\"swap.forbid\")\n@reason(\"swapped in\")\nforbid (principal, action == Crm::Action::\"login\", resource);\n".into(),
    ));
    files
}

#[test]
fn bundle_loads_racing_decisions_swap_whole_or_not_at_all() {
    let rt = crate::runtime();
    let store = FaultStore::new();
    let g = Arc::new(Mutex::new(instance(rt, &store)));
    let swapped = forbidding_bundle();
    let mut broken = forbidding_bundle();
    broken.push((
        "broken.cedar".into(),
        "permit (principal, action, resource".into(),
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let (g, stop) = (g.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut loads = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut g = g.lock().unwrap();
                match loads % 4 {
                    0 => assert!(g.load(swapped.clone()).is_ok()),
                    1 => assert!(matches!(g.load(broken.clone()), Err(LoadError::Refused(_)))),
                    2 => assert!(g.load(crate::default_files()).is_ok()),
                    _ => {
                        // Interrupted mid-load: the previous bundle stays.
                        g.set_call_timeout(Duration::from_millis(1));
                        let r = g.load(swapped.clone());
                        g.set_call_timeout(Duration::from_secs(5));
                        assert!(r.is_ok() || matches!(r, Err(LoadError::Fault(_))));
                    }
                }
                loads += 1;
            }
            loads
        })
    };
    let deciders: Vec<_> = (0..2)
        .map(|_| {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeMap::new();
                for _ in 0..150 {
                    let text = g.lock().unwrap().decide(LOGIN);
                    let d = decision(&text);
                    assert!(d["error"].is_null(), "a decision failed during swaps: {d}");
                    let bundle = d["audit"]["bundle"].as_str().unwrap().to_string();
                    // Each decision is wholly one bundle's.
                    if bundle.contains("@swapped-") {
                        assert_eq!(d["outcome"], "deny");
                        assert_eq!(d["policies"][0], "swap.forbid");
                    } else {
                        assert_eq!(d["outcome"], "allow", "{d}");
                    }
                    *seen.entry(bundle).or_insert(0) += 1;
                }
                seen
            })
        })
        .collect();
    let mut seen = std::collections::BTreeMap::new();
    for d in deciders {
        for (k, v) in d.join().unwrap() {
            *seen.entry(k).or_insert(0) += v;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let loads = loader.join().unwrap();
    assert!(loads >= 2, "only {loads} loads raced");
    assert_eq!(seen.values().sum::<i32>(), 300, "no decision lost");
}

#[test]
fn two_instances_racing_on_one_store_lose_no_failure() {
    // Two guest instances (two threads) share one store; each reports 40
    // failures of the same account. Compare-and-set retries mean every one
    // is counted exactly once.
    let store = FaultStore::new();
    let no_ip = failure().replace(r#""context":{"ip":"203.0.113.7"},"#, "");
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (store, no_ip) = (store.clone(), no_ip.clone());
            std::thread::spawn(move || {
                let mut g = instance(crate::runtime(), &store);
                for _ in 0..40 {
                    let d = decision(&g.decide(&no_ip));
                    assert!(d["error"].is_null(), "{d}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut g = instance(crate::runtime(), &store);
    let d = decision(&g.decide(&LOGIN.replace(r#""context":{"ip":"203.0.113.7"},"#, "")));
    assert_eq!(
        d["audit"]["facts"]["lockout"]["account"]["failures"].as_i64(),
        Some(80),
        "{d}"
    );
}
