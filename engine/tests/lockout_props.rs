//! Properties of the lockout ladder over random event orders:
//! - a key's stage never decreases without a success or an expiry (its
//!   lock ended, or time passed so failures can leave the window); a hard
//!   lock never decreases;
//! - verified synthetic events never change authentic state.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests"
)]

use portcullis_engine::{Bundle, MemoryStore};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::Path;

/// A provenance token from the default bundle's trusted CI issuer (HS256),
/// valid until 2027-01-01.
const SYNTHETIC_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJzeW50aGV0aWMtY2kiLCJhdWQiOiJwb3J0Y3VsbGlzIiwiZXhwIjoxNzk4NzYxNjAwLCJkYXRhc2V0IjoiY2ktZml4dHVyZXMiLCJnZW5lcmF0b3IiOiJmYWtlciJ9.YCyMqbypY7_9nc9sXpr6t_9hR9g7jExi-r-6woDgt20";
const START: i64 = 1_795_341_600; // 2026-11-22T10:00:00Z

fn bundle() -> Bundle {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files = Vec::new();
    for name in [
        "portcullis.toml",
        "schema.cedarschema",
        "lockout.cedar",
        "access.cedar",
        "dlp.cedar",
        "entities.json",
    ] {
        files.push((
            name.to_string(),
            std::fs::read_to_string(root.join(name)).unwrap(),
        ));
    }
    Bundle::load(&files).unwrap_or_else(|p| panic!("{p:?}"))
}

#[derive(Debug, Clone)]
struct Step {
    kind: u8, // 0 failure, 1 success, 2 plain request
    synthetic: bool,
    ip: u8,
    advance: i64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 3 => Just(2u8)],
        any::<bool>(),
        0u8..3,
        prop_oneof![3 => Just(0i64), 2 => 1i64..120, 1 => 120i64..2000],
    )
        .prop_map(|(kind, synthetic, ip, advance)| Step {
            kind,
            synthetic,
            ip,
            advance,
        })
}

fn rank(stage: &str) -> u8 {
    match stage {
        "none" => 0,
        "challenge" => 1,
        "throttle" => 2,
        "temporary_lock" => 3,
        _ => 4,
    }
}

fn time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn stages_only_fall_by_success_or_expiry_and_synthetic_never_touches_authentic(steps in proptest::collection::vec(step(), 1..160)) {
        let bundle = bundle();
        let mut store = MemoryStore::new();
        let mut now = START;
        // Last observation per (pathway, key name): (stage, locked_until, time, successes seen).
        let mut seen: std::collections::HashMap<String, (String, i64, i64, u32)> = Default::default();
        let mut successes: std::collections::HashMap<String, u32> = Default::default();
        for s in steps {
            now += s.advance;
            let ip = ["203.0.113.7", "198.51.100.66", "192.0.2.10"][s.ip as usize];
            let mut req = json!({
                "principal": {"type": "User", "id": "alice@example.com"},
                "action": "login",
                "resource": {"type": "App", "id": "sales-cloud"},
                "context": {"ip": ip},
                "now": time(now),
            });
            match s.kind {
                0 => req["event"] = json!("auth_failure"),
                1 => req["event"] = json!("auth_success"),
                _ => {}
            }
            if s.synthetic {
                req["context"]["synthetic"] = json!({"marker": true, "provenance": SYNTHETIC_TOKEN});
            }
            let before = store.snapshot("lk2:authentic:");
            let d = bundle.decide(&req.to_string(), &mut store);
            prop_assert!(d.error.is_none(), "{:?}", d.error);
            let pathway = d.pathway.clone();
            prop_assert_eq!(&pathway, if s.synthetic { "synthetic" } else { "authentic" });
            if s.synthetic {
                prop_assert_eq!(before, store.snapshot("lk2:authentic:"), "a synthetic event changed authentic state");
            }
            if s.kind == 1 {
                *successes.entry(pathway.clone()).or_default() += 1;
            }
            let facts: Value = d.audit.facts.value();
            for key in ["account", "account_ip", "ip"] {
                let k = &facts["lockout"][key];
                let stage = k["stage"].as_str().unwrap().to_string();
                let locked_until = k["locked_until"].as_i64().unwrap();
                // account_ip and ip observations are per address.
                let id = if key == "account" { format!("{pathway}/{key}") } else { format!("{pathway}/{key}/{ip}") };
                let succ = successes.get(&pathway).copied().unwrap_or(0);
                if let Some((prev, prev_lu, prev_t, prev_succ)) = seen.get(&id)
                    && rank(&stage) < rank(prev)
                {
                    let explained = *prev_succ != succ
                        || (prev == "temporary_lock" && now >= *prev_lu)
                        || ((prev == "challenge" || prev == "throttle") && now > *prev_t);
                    prop_assert!(prev != "hard_lock", "{id}: a hard lock fell to {stage}");
                    prop_assert!(explained, "{id}: {prev} fell to {stage} at +{}s with no success or expiry", now - prev_t);
                }
                seen.insert(id, (stage, locked_until, now, succ));
            }
        }
    }
}
