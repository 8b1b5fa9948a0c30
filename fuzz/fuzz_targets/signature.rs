//! Bundle signatures through the host's verifier (host/src/signing.rs compiled into the fuzz crate,
//! `TrustedKeys::verify`), with one trusted key (the test key
//! engine/tests/keys/synthetic-test-ed25519).
//!
//! Mode 0: the input is a `bundle.sig` document (or the `signature` of a
//! packed bundle), checked against the default bundle's hash: it may only
//! verify if it is the genuine signature.
//! Mode 1: the input is a content hash text the target signs: the signature
//! verifies for that text and for no other (one byte changed).
//! Mode 2: the input is XORed into the genuine signature: it verifies only
//! when nothing changed (no malleability).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_engine::bundle::BundleSignature;
use portcullis_fuzz::signing::{self, TrustedKeys};
use std::path::Path;
use std::sync::OnceLock;

struct Fixture {
    keys: TrustedKeys,
    key: ed25519_dalek::SigningKey,
    hash: String,
    genuine: BundleSignature,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/keys");
        let keys = match TrustedKeys::load(&[dir.join("synthetic-test-ed25519.pub.pem")]) {
            Ok(k) => k,
            Err(e) => panic!("trusted key: {e:#}"),
        };
        let key = match signing::read_signing_key(&dir.join("synthetic-test-ed25519.pem")) {
            Ok(k) => k,
            Err(e) => panic!("signing key: {e:#}"),
        };
        let hash = portcullis_fuzz::default_bundle().info().hash.clone();
        let genuine = signing::sign_hash(&key, &hash);
        Fixture {
            keys,
            key,
            hash,
            genuine,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let sig: BundleSignature = match serde_json::from_str::<BundleSignature>(text) {
                Ok(s) => s,
                Err(_) => match serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| serde_json::from_value(v["signature"].clone()).ok())
                {
                    Some(s) => s,
                    None => return,
                },
            };
            if f.keys.verify(&f.hash, &sig).is_ok() {
                assert_eq!(sig.key_id, f.genuine.key_id);
                assert_eq!(
                    sig.signature.trim(),
                    f.genuine.signature,
                    "a signature other than the genuine one verified"
                );
            }
        }
        1 => {
            let Ok(hash) = std::str::from_utf8(rest) else {
                return;
            };
            let sig = signing::sign_hash(&f.key, hash);
            assert!(
                f.keys.verify(hash, &sig).is_ok(),
                "a genuine signature failed"
            );
            let mut other = hash.as_bytes().to_vec();
            match other.first_mut() {
                Some(b) => *b ^= 1,
                None => other.push(b'0'),
            }
            if let Ok(other) = String::from_utf8(other) {
                assert!(
                    f.keys.verify(&other, &sig).is_err(),
                    "a signature verified for another hash"
                );
            }
        }
        _ => {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD;
            let Ok(mut bytes) = b64.decode(&f.genuine.signature) else {
                return;
            };
            let mut changed = false;
            for (b, x) in bytes.iter_mut().zip(rest) {
                *b ^= x;
                changed |= *x != 0;
            }
            let sig = BundleSignature {
                signature: b64.encode(&bytes),
                ..f.genuine.clone()
            };
            assert_eq!(
                f.keys.verify(&f.hash, &sig).is_ok(),
                !changed,
                "a changed signature verified, or the genuine one did not"
            );
        }
    }
});
