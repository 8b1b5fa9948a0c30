//! Bundle files through the loader.
//!
//! The first byte picks which file of the default bundle the rest of the
//! input replaces (manifest, schema, a policy file, entities, adequacy, a
//! case file, or an extra policy file); the others stay as they are, so the
//! fuzzed file is parsed in a bundle that is otherwise valid and gets past
//! the early checks. A bundle that loads must then decide a few requests
//! keeping the decision invariants, and its info must be consistent.
//!
//! A whole load costs about a third of a second under the sanitizer, so
//! with the high bit of the first byte set the file goes only through its
//! own checks and parser, as the loader runs them (the JSON, Cedar and YAML
//! guards first), thousands of times a second.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_engine::{Bundle, MemoryStore};
use portcullis_fuzz::{base_files, check_decision};

const SLOTS: [&str; 7] = [
    "portcullis.toml",
    "schema.cedarschema",
    "access.cedar",
    "entities.json",
    "adequacy.json",
    "tests/fuzz.yaml",
    "extra.cedar",
];

const REQUESTS: [&str; 3] = [
    r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#,
    r#"{"principal":{"type":"User","id":"root@example.com"},"action":"admin","resource":{"type":"App","id":"admin-console"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#,
    r#"{"principal":{"type":"Service","id":"etl"},"action":"read","resource":{"type":"Record","id":"001A"},"context":{"ip":"10.1.2.3","mtls":{"verified":true,"san":"spiffe://crm/etl"}},"body":"card 4111 1111 1111 1111","now":"2026-11-22T10:00:00Z"}"#,
];

/// One file through the checks and the parser the loader gives it.
fn parse_alone(slot: &str, text: &str) {
    use portcullis_engine::{cases::CaseFile, guard, manifest::Manifest, transfer::Adequacy};
    use std::str::FromStr;
    match slot {
        "portcullis.toml" => {
            let _ = Manifest::parse(slot, text);
        }
        "schema.cedarschema" => {
            if guard::cedar(text, true).is_ok() {
                let _ = cedar_policy::SchemaFragment::from_cedarschema_str(text);
            }
        }
        "access.cedar" | "extra.cedar" => {
            if guard::cedar(text, false).is_ok() {
                let _ = cedar_policy::PolicySet::from_str(text);
            }
        }
        "entities.json" => {
            if guard::check(text, guard::MAX_JSON_DEPTH).is_ok()
                && guard::entity_hierarchy(text, portcullis_engine::limits::MAX_ENTITY_DEPTH)
                    .is_ok()
            {
                let _ = cedar_policy::Entities::from_json_str(text, None);
            }
        }
        "adequacy.json" => {
            if guard::check(text, guard::MAX_JSON_DEPTH).is_ok() {
                let _ = Adequacy::parse(text);
            }
        }
        _ => {
            if guard::yaml(text).is_ok() {
                let _ = CaseFile::parse(slot, text);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let slot = SLOTS[usize::from(selector & 0x7f) % SLOTS.len()];
    if selector & 0x80 != 0 {
        parse_alone(slot, text);
        return;
    }
    // The default bundle without its cases (the case slot brings its
    // own), with the fuzzed file in its slot.
    let mut files: Vec<(String, String)> = base_files()
        .iter()
        .filter(|(n, _)| n != slot)
        .cloned()
        .collect();
    files.push((slot.to_string(), text.to_string()));
    let Ok(bundle) = Bundle::load(&files) else {
        return;
    };
    let info = bundle.info();
    assert_eq!(info.hash.len(), 64);
    let mut ids = info.policy_ids.clone();
    ids.dedup();
    assert_eq!(ids.len(), info.policy_ids.len(), "policy ids repeat");
    let mut store = MemoryStore::new();
    for r in REQUESTS {
        let d = bundle.decide(r, &mut store);
        check_decision(&d);
        for p in &d.policies {
            assert!(
                info.policy_ids.contains(p),
                "unknown determining policy {p}"
            );
        }
    }
    // The cases of a fuzzed case file run without panicking.
    if slot.starts_with("tests/") {
        let report = bundle.run_cases();
        assert_eq!(report.passed + report.failed, report.cases.len());
    }
});
