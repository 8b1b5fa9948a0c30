//! Request JSON through the engine's `decide` on the default bundle.
//!
//! Input: one or more request documents separated by a NUL byte, decided in
//! order against one in-memory store (so event sequences climb ladders and
//! fill buckets). Every decision must keep the invariants of
//! `portcullis_fuzz::check_decision`; the same text decided twice from
//! fresh stores must give the same decision (determinism).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_engine::MemoryStore;
use portcullis_fuzz::{check_decision, default_bundle};

fuzz_target!(|data: &[u8]| {
    let bundle = default_bundle();
    let mut store = MemoryStore::new();
    let mut first = None;
    for part in data.split(|b| *b == 0).take(16) {
        let text = String::from_utf8_lossy(part);
        let d = bundle.decide(&text, &mut store);
        check_decision(&d);
        if first.is_none() {
            first = Some((text.into_owned(), d));
        }
    }
    if let Some((text, d)) = first {
        // A request that names its `now` decides the same from the same state.
        if text.contains("\"now\"") {
            let again = bundle.decide(&text, &mut MemoryStore::new());
            assert_eq!(d.outcome, again.outcome, "not deterministic: {text}");
            assert_eq!(d.policies, again.policies, "not deterministic: {text}");
        }
    }
});
