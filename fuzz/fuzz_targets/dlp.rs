//! Bodies through DLP: the scanner and redaction directly (bytes), the
//! whole decision path with `body` (text), `body_base64` (bytes) and
//! `body_chunks`, the streaming scanner, and field minimisation of JSON
//! bodies. The first byte picks the mode.
//!
//! Checked whatever the body: findings lie inside it and are ordered;
//! redaction keeps a JSON body JSON and leaves no finding's bytes behind;
//! a body fed in chunks (cut where the input says) gives exactly the
//! findings of the body scanned whole; minimisation keeps JSON JSON;
//! decisions keep their invariants.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis_engine::{MemoryStore, dlp};
use portcullis_fuzz::{check_decision, default_bundle};

fn is_json(b: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(b).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let bundle = default_bundle();
    let cfg = &bundle.manifest().dlp;
    match mode % 5 {
        0 => {
            let r = dlp::scan(cfg, body);
            assert!(r.error.is_none(), "scanner fault: {:?}", r.error);
            let mut last = 0;
            for f in &r.findings {
                assert!(f.offset >= last, "findings out of order");
                last = f.offset;
                assert!(
                    f.length > 0 && f.offset + f.length <= body.len(),
                    "finding outside the body: {f:?}"
                );
                assert!(f.confidence <= 100);
            }
            let out = dlp::redact(cfg, body, &r.findings);
            if is_json(body) {
                assert!(is_json(&out), "redaction broke JSON");
            }
            for f in &r.findings {
                let bytes = &body[f.offset..f.offset + f.length];
                if bytes.len() >= 4 && !bytes.iter().all(|b| *b == b'*') {
                    assert!(
                        !out.windows(bytes.len()).any(|w| w == bytes),
                        "a {} finding survived redaction",
                        f.kind
                    );
                }
            }
        }
        1 | 2 => {
            let body_field = if mode % 5 == 1 {
                serde_json::json!({ "body": String::from_utf8_lossy(body) })
            } else if body.len() % 2 == 0 {
                serde_json::json!({ "body_base64": base64::engine::general_purpose::STANDARD.encode(body) })
            } else {
                // Streamed: cut in three, text and bytes.
                let (a, rest) = body.split_at(body.len() / 3);
                let (b, c) = rest.split_at(rest.len() / 2);
                serde_json::json!({ "body_chunks": [
                    String::from_utf8_lossy(a),
                    {"base64": base64::engine::general_purpose::STANDARD.encode(b)},
                    String::from_utf8_lossy(c),
                ]})
            };
            let mut req = serde_json::json!({
                "principal": {"type": "Service", "id": "etl"},
                "action": "export",
                "resource": {"type": "Record", "id": "001A"},
                "context": {"ip": "10.1.2.3", "mtls": {"verified": true, "san": "spiffe://crm/etl"}},
                "now": "2026-11-22T10:00:00Z"
            });
            if let (Some(o), Some(b)) = (req.as_object_mut(), body_field.as_object()) {
                o.extend(b.clone());
            }
            let d = bundle.decide(&req.to_string(), &mut MemoryStore::new());
            check_decision(&d);
            if let Some(red) = &d.redacted_body {
                assert_eq!(d.outcome, portcullis_engine::Outcome::Redact);
                if mode % 5 == 2 && body.len() % 2 == 0 {
                    assert!(
                        base64::engine::general_purpose::STANDARD
                            .decode(red)
                            .is_ok()
                    );
                }
            }
        }
        3 => {
            // The first bytes say where to cut; the rest is the body.
            let Some((&cuts, body)) = body.split_first() else {
                return;
            };
            let whole = dlp::scan(cfg, body);
            let mut chunks = Vec::new();
            let mut rest = body;
            let mut step = usize::from(cuts % 64) + 1;
            while !rest.is_empty() {
                let (a, b) = rest.split_at(step.min(rest.len()));
                chunks.push(a);
                rest = b;
                step = step * 7 % 97 + 1;
            }
            let streamed = dlp::scan_chunks(cfg, chunks.iter().copied());
            assert_eq!(whole.findings, streamed.findings, "chunked scan differs");
            assert_eq!(whole.oversize, streamed.oversize);
        }
        _ => {
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            if let Ok(out) = dlp::minimise_json(cfg, "marketing-sync", None, text) {
                assert!(is_json(out.as_bytes()), "minimisation broke JSON");
            }
        }
    }
});
