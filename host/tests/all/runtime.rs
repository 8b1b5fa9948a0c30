//! The guest is bounded: a call that runs too long or asks for too much
//! memory is a deny naming the fault, never a hang or a crash, and the
//! instance recovers with its bundle.

use portcullis_engine::MemoryStore;
use portcullis_host::{GuestRuntime, LoadError, RuntimeOptions};
use serde_json::Value;
use std::time::Duration;

const LOGIN: &str = r#"{"principal":{"type":"User","id":"alice"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"now":"2026-11-22T10:00:00Z"}"#;

fn outcome(decision: &str) -> (String, Option<String>) {
    let v: Value = serde_json::from_str(decision).unwrap_or(Value::Null);
    (
        v["outcome"].as_str().unwrap_or("").to_string(),
        v["error"]["kind"].as_str().map(str::to_string),
    )
}

/// The default bundle with `n` more generated policies.
fn big_bundle(n: usize) -> Vec<(String, String)> {
    let mut files = crate::default_files();
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "@id(\"gen.{i}\")\nforbid (principal == Crm::User::\"u{i}\", action == Crm::Action::\"login\", resource) when {{ context.lockout.failures > {i} }};\n"
        ));
    }
    files.push(("generated.cedar".into(), text));
    files
}

#[test]
fn a_call_past_its_deadline_is_interrupted_and_the_old_bundle_keeps_serving() {
    let mut g = match crate::runtime().instantiate(Box::new(MemoryStore::new())) {
        Ok(g) => g,
        Err(e) => panic!("{e:#}"),
    };
    assert!(g.load(crate::default_files()).is_ok());
    g.set_call_timeout(Duration::from_millis(1));
    match g.load(big_bundle(4000)) {
        Err(LoadError::Fault(e)) => assert!(format!("{e:#}").contains("trapped"), "{e:#}"),
        other => panic!("expected an interrupted load, got {other:?}"),
    }
    g.set_call_timeout(Duration::from_secs(5));
    assert_eq!(
        outcome(&g.decide(LOGIN)),
        ("allow".to_string(), None),
        "old bundle must keep serving"
    );
    let info = g.describe().ok().flatten().map(|i| i.policy_ids.len());
    let expected = portcullis_engine::Bundle::load(&crate::default_files())
        .map(|b| b.info().policy_ids.len())
        .ok();
    assert_eq!(
        info, expected,
        "the refused bundle's policies must not be installed"
    );
}

#[test]
fn running_out_of_guest_memory_denies_and_recovers() {
    let options = RuntimeOptions {
        max_memory: 48 * 1024 * 1024,
        ..RuntimeOptions::default()
    };
    let rt = match GuestRuntime::new(options) {
        Ok(r) => r,
        Err(e) => panic!("{e:#}"),
    };
    let mut g = match rt.instantiate(Box::new(MemoryStore::new())) {
        Ok(g) => g,
        Err(e) => panic!("{e:#}"),
    };
    assert!(g.load(crate::default_files()).is_ok());
    // 64 requests of 1 MiB each cannot be lowered into 48 MiB of memory.
    let big = LOGIN.replace(
        "\"now\"",
        &format!("\"body\":\"{}\",\"now\"", "x".repeat(1024 * 1024)),
    );
    let batch = vec![big; 64];
    let decisions = g.decide_batch(&batch);
    assert_eq!(decisions.len(), 64);
    for d in &decisions {
        assert_eq!(
            outcome(d),
            ("deny".to_string(), Some("engine-fault".to_string()))
        );
    }
    assert_eq!(outcome(&g.decide(LOGIN)), ("allow".to_string(), None));
}

#[test]
fn the_precompiled_guest_is_cached_and_reused() {
    let dir = std::env::temp_dir().join(format!("portcullis-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = RuntimeOptions {
        cache_dir: Some(dir.clone()),
        ..RuntimeOptions::default()
    };
    let first =
        GuestRuntime::new(options.clone()).map(|r| r.cached_from().map(|p| p.to_path_buf()));
    let second = GuestRuntime::new(options).map(|r| r.cached_from().map(|p| p.to_path_buf()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(first, Ok(None)), "first start compiles");
    assert!(
        matches!(second, Ok(Some(p)) if p.starts_with(&dir)),
        "second start reads the cache"
    );
}

#[test]
fn state_survives_between_decisions_and_instances_do_not_share_it() {
    let mut a = match crate::runtime().instantiate(Box::new(MemoryStore::new())) {
        Ok(g) => g,
        Err(e) => panic!("{e:#}"),
    };
    let mut b = match crate::runtime().instantiate(Box::new(MemoryStore::new())) {
        Ok(g) => g,
        Err(e) => panic!("{e:#}"),
    };
    assert!(a.load(crate::default_files()).is_ok() && b.load(crate::default_files()).is_ok());
    let failure = LOGIN.replace("\"now\"", "\"event\":\"auth_failure\",\"now\"");
    // No address in the request: the account key alone, challenged from 5.
    for _ in 0..5 {
        a.decide(&failure);
    }
    assert_eq!(outcome(&a.decide(LOGIN)).0, "challenge");
    assert_eq!(outcome(&b.decide(LOGIN)).0, "allow");
}
