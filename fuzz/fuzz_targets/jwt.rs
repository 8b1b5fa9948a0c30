//! JWTs through the provenance and access-token verifiers, with the
//! default bundle's trusted keys.
//!
//! Mode 0 (first byte even): the rest is a token as presented. A token
//! that verifies obeys every claim rule; one that does not never takes the
//! synthetic pathway and never allows an access decision.
//! Mode 1 (odd): the rest is a claim set, signed with the CI issuer's
//! HS256 secret, so the claim checks (exp, nbf, aud, required claims,
//! numbers at their limits) are reached past the signature; a token that
//! verifies must hold exactly the claims the checks require.
#![no_main]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use portcullis_engine::MemoryStore;
use portcullis_engine::jwt::{self, Expect, Verifier};
use portcullis_fuzz::{check_decision, default_bundle};
use serde_json::Value;
use std::sync::OnceLock;

const NOW: i64 = 1_795_341_600; // 2026-11-22T10:00:00Z
const CI_SECRET: &str = "RqOQnZ31YJrPRyvfE88wvhCp/RlBhVWjjXXjqblGW5E=";

fn keys() -> &'static (Vec<Verifier>, Vec<Verifier>) {
    static KEYS: OnceLock<(Vec<Verifier>, Vec<Verifier>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let m = default_bundle().manifest();
        let all = |ks: &[jwt::TrustedKey]| -> Vec<Verifier> {
            ks.iter()
                .filter_map(|k| k.verifiers().ok())
                .flatten()
                .collect()
        };
        (all(&m.synthetic.issuers), all(&m.oauth.issuers))
    })
}

fn request(token_field: Value) -> String {
    let mut ctx = serde_json::json!({"ip": "203.0.113.7"});
    if let (Some(c), Some(t)) = (ctx.as_object_mut(), token_field.as_object()) {
        c.extend(t.clone());
    }
    serde_json::json!({
        "principal": {"type": "User", "id": "alice@example.com"},
        "action": "read",
        "resource": {"type": "Record", "id": "001A"},
        "context": ctx,
        "now": "2026-11-22T10:00:00Z"
    })
    .to_string()
}

/// What every verified claim set satisfies, whatever the token.
fn claims_hold(got: &serde_json::Map<String, Value>, expect: &Expect<'_>) {
    let exp = got.get("exp").and_then(Value::as_i64);
    assert!(
        exp.is_some_and(|e| e.saturating_add(expect.leeway) > expect.now),
        "an expired token verified"
    );
    if let Some(nbf) = got.get("nbf").and_then(Value::as_i64) {
        assert!(
            nbf.saturating_sub(expect.leeway) <= expect.now,
            "a not-yet-valid token verified"
        );
    }
    if let Some(want) = expect.audience {
        let aud_ok = match got.get("aud") {
            Some(Value::String(s)) => s == want,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
            _ => false,
        };
        assert!(aud_ok, "a token for another audience verified");
    }
    for c in expect.required {
        assert!(got.contains_key(c), "a token without {c} verified");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (synthetic, oauth) = keys();
    let m = default_bundle().manifest();
    let expect_syn = Expect {
        audience: Some(m.synthetic.audience.as_str()),
        now: NOW,
        leeway: m.synthetic.leeway.as_secs() as i64,
        required: &m.synthetic.required_claims,
    };
    let expect_oauth = Expect {
        audience: Some(m.oauth.audience.as_str()),
        now: NOW,
        leeway: m.oauth.leeway.as_secs() as i64,
        required: &[],
    };
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(rest);
        let syn = jwt::verify(&token, synthetic, &expect_syn);
        // As presented: the engine takes an access token with or without
        // its `Bearer ` prefix (oauth::derive).
        let bare = token.strip_prefix("Bearer ").unwrap_or(&token).trim();
        let acc = jwt::verify(bare, oauth, &expect_oauth);
        // A token that verifies (a seed is a real one) obeys the claim rules.
        if let Ok(claims) = &syn {
            claims_hold(claims, &expect_syn);
        }
        if let Ok(claims) = &acc {
            claims_hold(claims, &expect_oauth);
        }
        let bundle = default_bundle();
        let d = bundle.decide(
            &request(serde_json::json!({"synthetic": {"marker": true, "provenance": token}})),
            &mut MemoryStore::new(),
        );
        check_decision(&d);
        if syn.is_err() {
            assert_eq!(
                d.pathway, "authentic",
                "an unverified claim took the synthetic pathway"
            );
        }
        let d = bundle.decide(
            &request(serde_json::json!({"token": token})),
            &mut MemoryStore::new(),
        );
        check_decision(&d);
        if acc.is_err() {
            assert!(
                !d.allowed,
                "an unverifiable access token was allowed: {:?}",
                d.reasons
            );
        }
        return;
    }
    // Signed claims: the signature holds, the claim checks decide.
    let Ok(claims) = serde_json::from_slice::<serde_json::Map<String, Value>>(rest) else {
        return;
    };
    let Ok(key) = EncodingKey::from_base64_secret(CI_SECRET) else {
        return;
    };
    let Ok(token) = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key) else {
        return;
    };
    if let Ok(got) = jwt::verify(&token, synthetic, &expect_syn) {
        assert_eq!(got.get("iss").and_then(Value::as_str), Some("synthetic-ci"));
        claims_hold(&got, &expect_syn);
    }
    let d = default_bundle().decide(
        &request(serde_json::json!({"synthetic": {"marker": true, "provenance": token}})),
        &mut MemoryStore::new(),
    );
    check_decision(&d);
});
