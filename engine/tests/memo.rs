//! Faster decisions decide the same: the context cut down to what an
//! action's policies read, Cedar's answers remembered, and requests built
//! by a host without JSON text (`decide_with`) give the very decisions the
//! plain path gives, for every case of the default bundle.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    reason = "tests stop at the first broken assumption"
)]

use portcullis_engine::decision::Audit;
use portcullis_engine::request::Request;
use portcullis_engine::{Bundle, MemoryStore};
use serde_json::Value;
use std::path::Path;

fn read_dir(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            read_dir(root, &p, out);
        } else if ["toml", "cedarschema", "cedar", "json", "yaml", "yml"]
            .contains(&p.extension().and_then(|e| e.to_str()).unwrap_or(""))
        {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

fn bundle() -> Bundle {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files = Vec::new();
    read_dir(&root, &root, &mut files);
    Bundle::load(&files).unwrap_or_else(|p| panic!("{p:?}"))
}

/// Every case step's decision, each case from empty state, as JSON (the
/// audit time blanked for steps decided on the clock).
fn run(b: &Bundle, how: &dyn Fn(&Bundle, &str, &mut MemoryStore) -> String) -> Vec<Value> {
    let mut out = Vec::new();
    for case in b.plan() {
        let mut store = MemoryStore::new();
        for step in &case.steps {
            let mut d: Value = serde_json::from_str(&how(b, &step.request, &mut store)).unwrap();
            if !step.request.contains("\"now\"") {
                d["audit"]["time"] = Value::Null;
            }
            out.push(d);
        }
    }
    out
}

fn plain(b: &Bundle, text: &str, store: &mut MemoryStore) -> String {
    b.decide(text, store).to_json()
}

#[test]
fn projection_and_memory_decide_alike() {
    let full = bundle();
    full.set_projection(false);
    full.set_memo(false);
    let reference = run(&full, &plain);
    assert!(reference.len() > 100, "{} steps", reference.len());

    let fast = bundle();
    let first = run(&fast, &plain);
    // The second pass finds most of Cedar's answers remembered.
    let second = run(&fast, &plain);
    let stats = fast.memo_stats();
    for (i, ((r, a), b)) in reference.iter().zip(&first).zip(&second).enumerate() {
        assert_eq!(r, a, "step {i}: projected context decides differently");
        assert_eq!(r, b, "step {i}: a remembered answer decides differently");
    }
    assert!(stats.hits as usize >= reference.len() / 2, "{stats:?}");
    assert!(stats.misses > 0, "{stats:?}");

    // Memory on, projection off (whole contexts remembered) agrees too.
    let whole = bundle();
    whole.set_projection(false);
    assert_eq!(run(&whole, &plain), reference);
}

#[test]
fn what_the_default_bundle_reads() {
    let reads = bundle().context_reads();
    let login = &reads["login"];
    assert!(login.iter().any(|p| p.starts_with("lockout.")), "{login:?}");
    assert!(
        !login
            .iter()
            .any(|p| p == "*" || p.starts_with("transfer") || p.starts_with("jit")),
        "login policies read neither the whole context nor transfer or JIT facts: {login:?}"
    );
}

#[test]
fn requests_built_by_a_host_decide_like_text() {
    let b = bundle();
    let texts = run(&b, &plain);
    let built = run(&b, &|b, text, store| {
        // Requests that break the contract never become a `Request`.
        match Request::from_json(text) {
            Ok(req) => b.decide_with(&req, store, Audit::All).to_json(),
            Err(_) => b.decide(text, store).to_json(),
        }
    });
    for (i, (t, h)) in texts.iter().zip(&built).enumerate() {
        let (mut t, mut h) = (t.clone(), h.clone());
        // The digest is over the request's own JSON form, not the case text.
        t["audit"]["request_digest"] = Value::Null;
        h["audit"]["request_digest"] = Value::Null;
        assert_eq!(t, h, "step {i}");
    }
}

#[test]
fn audit_records_only_when_asked() {
    let b = bundle();
    let allow = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7"}}"#;
    let deny = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"admin","resource":{"type":"App","id":"admin-console"}}"#;
    let mut store = MemoryStore::new();
    for (text, allowed) in [(allow, true), (deny, false)] {
        let req = Request::from_json(text).unwrap();
        let full = b.decide_with(&req, &mut store, Audit::All);
        assert_eq!(full.allowed, allowed);
        assert!(!full.audit.request_digest.is_empty() && full.audit.facts.value().is_object());
        let none = b.decide_with(&req, &mut store, Audit::None);
        assert!(none.audit.request_digest.is_empty() && none.audit.facts.is_null());
        assert_eq!(
            (none.outcome, &none.policies, &none.reasons),
            (full.outcome, &full.policies, &full.reasons)
        );
        let refused = b.decide_with(&req, &mut store, Audit::Refused);
        assert_eq!(refused.audit.request_digest.is_empty(), allowed);
        if !allowed {
            assert_eq!(
                refused.audit.request_digest, full.audit.request_digest,
                "the digest is over the request's JSON form either way"
            );
        }
    }
    // A request a host built that breaks the contract is refused like text.
    let mut bad = Request::from_json(allow).unwrap();
    bad.context.ip = Some("not an address".into());
    let d = b.decide_with(&bad, &mut store, Audit::None);
    assert_eq!(
        d.error.map(|e| (e.kind, e.field)),
        Some(("invalid-request".into(), Some("context.ip".into())))
    );
}
