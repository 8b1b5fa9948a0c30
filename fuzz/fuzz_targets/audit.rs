//! Audit log lines through `audit verify` (host/src/audit.rs).
//!
//! A genuine hash-chained log of a few decisions and a swap is written once
//! by the host's own writer. Mode 0: the input is a whole log file: verify
//! answers (intact, broken at a line, or unreadable) and never panics.
//! Mode 1: the input is a list of (position, byte) edits applied to the
//! genuine log: if verify still calls the chain intact, every line must
//! read as the same JSON as before (no tampering goes unnoticed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_engine::MemoryStore;
use portcullis_fuzz::audit::{self, AuditWriter};
use std::path::PathBuf;
use std::sync::OnceLock;

struct Fixture {
    dir: PathBuf,
    genuine: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("portcullis-fuzz-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("genuine/audit.log");
        let bundle = portcullis_fuzz::default_bundle();
        let hash = bundle.info().hash.clone();
        let mut w = match AuditWriter::open(&path, 0) {
            Ok(w) => w,
            Err(e) => panic!("audit writer: {e:#}"),
        };
        let mut store = MemoryStore::new();
        for r in [
            r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#,
            r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7"},"event":"auth_failure","now":"2026-11-22T10:00:01Z"}"#,
            r#"{"principal":{"type":"Service","id":"etl"},"action":"read","resource":{"type":"Record","id":"001A"},"context":{"ip":"10.1.2.3","mtls":{"verified":true,"san":"spiffe://crm/etl"}},"body":"card 4111 1111 1111 1111","now":"2026-11-22T10:00:02Z"}"#,
            r#"{"principal":{"type":"User"},"action":"login"}"#,
        ] {
            let d = bundle.decide(r, &mut store).to_json();
            if let Err(e) = w.append_decision(r, &d, &hash) {
                panic!("audit append: {e:#}");
            }
        }
        if let Err(e) = w.append_swap("accepted", Some(&hash), Some(&hash), None) {
            panic!("audit swap: {e:#}");
        }
        if let Err(e) = w.flush() {
            panic!("audit flush: {e:#}");
        }
        drop(w);
        let genuine = std::fs::read(&path).unwrap_or_default();
        assert!(audit::verify(&[path]).is_intact(), "the genuine log verifies");
        Fixture { dir, genuine }
    })
}

fn lines(b: &[u8]) -> Vec<Option<serde_json::Value>> {
    b.split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).ok())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let log = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut log = f.genuine.clone();
        for e in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % log.len().max(1);
            if let Some(b) = log.get_mut(at) {
                *b = e[2];
            }
        }
        log
    };
    let path = f.dir.join("audit.log");
    if std::fs::write(&path, &log).is_err() {
        return;
    }
    let report = audit::verify(&[path]);
    // Lines are numbered as an editor shows them: blank ones count.
    let physical = log.split(|c| *c == b'\n').count() as u64;
    assert!(
        report.lines <= lines(&log).len() as u64,
        "more lines checked than there are"
    );
    if let Some(b) = &report.broken {
        assert!(
            b.line >= 1 && b.line <= physical,
            "a break outside the file: {b:?}"
        );
    }
    if mode % 2 == 1 && report.is_intact() && log != f.genuine {
        assert_eq!(
            lines(&log),
            lines(&f.genuine),
            "an edited log verified as intact"
        );
    }
});
