//! portcullis as an Envoy proxy-wasm HTTP filter (`wasm32-wasip1`).
//!
//! Glue only: the plugin configuration is a packed bundle (optionally with
//! the filter's settings, see [`settings`]), loaded once per configure; each
//! request is mapped from its headers, peer and (for routes that want it)
//! body into the portcullis request contract ([`mapping`]), decided by
//! `portcullis-engine` over proxy-wasm shared data ([`store`]), and the
//! outcome becomes continue or a local reply ([`respond`]). No decision
//! logic lives here.
//!
//! The modules other than the proxy-wasm callbacks are plain Rust and are
//! tested natively; the callbacks exist only in the wasm build.

pub mod mapping;
pub mod net;
#[cfg(not(target_arch = "wasm32"))]
pub mod resource;
pub mod respond;
pub mod settings;
#[cfg(all(target_arch = "wasm32", feature = "bench-stages"))]
pub mod stages;
pub mod store;

#[cfg(target_arch = "wasm32")]
mod filter;

use base64::Engine as _;

/// Trust mode: the request header carrying the whole request JSON (base64).
pub const REQUEST_HEADER: &str = "x-portcullis-request";
/// Trust mode: the response header carrying the decision JSON (base64).
pub const DECISION_HEADER: &str = "x-portcullis-decision";
/// Trust mode: the request header naming a state namespace, so a test case
/// starts from empty state (`[A-Za-z0-9._-]`, at most 64 characters).
pub const STATE_HEADER: &str = "x-portcullis-state";
/// Test builds only (`--features crash-test`): a request carrying this
/// header traps the VM (to test Envoy's `FAIL_RELOAD`).
pub const CRASH_HEADER: &str = "x-portcullis-crash";

/// The request JSON carried by [`REQUEST_HEADER`] (standard or URL-safe
/// base64, padded or not).
pub fn decode_request_header(raw: &[u8]) -> Result<String, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let raw = raw.trim_ascii();
    let bytes = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(raw).ok())
        .ok_or_else(|| format!("`{REQUEST_HEADER}` is not base64"))?;
    String::from_utf8(bytes).map_err(|_| format!("`{REQUEST_HEADER}` does not hold UTF-8 text"))
}

/// The shared-data namespace a trust-mode request asked for.
pub fn state_namespace(raw: &[u8]) -> String {
    let clean: String = raw
        .iter()
        .map(|b| char::from(*b))
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if clean.is_empty() {
        String::new()
    } else {
        format!("t/{clean}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fake::Fake;
    use crate::store::{SharedStore, ensure_lock};
    use portcullis_engine::bundle::Packed;
    use portcullis_engine::{Bundle, MemoryStore};
    use std::path::Path;
    use std::sync::Arc;

    /// The default bundle's files, read as the CLI reads them.
    pub(crate) fn policy_files() -> Vec<(String, String)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(root, &p, out);
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
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files.sort();
        files
    }

    fn packed() -> String {
        let files = policy_files();
        let bundle = Bundle::load(&files).unwrap();
        serde_json::to_string(&Packed::new(bundle.info(), files)).unwrap()
    }

    #[test]
    fn request_header_decoding() {
        let b = base64::engine::general_purpose::STANDARD.encode("{\"a\":\"é?>\"}");
        assert_eq!(
            decode_request_header(b.as_bytes()).unwrap(),
            "{\"a\":\"é?>\"}"
        );
        let u = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{\"a\":\"é?>\"}");
        assert_eq!(
            decode_request_header(u.as_bytes()).unwrap(),
            "{\"a\":\"é?>\"}"
        );
        assert!(decode_request_header(b"not base64!").is_err());
        assert_eq!(state_namespace(b"case 1/../x"), "t/case1..x/");
        assert_eq!(state_namespace(b"///"), "");
    }

    #[test]
    fn configuration_shapes() {
        let p = packed();
        // The packed document alone: default settings.
        let l = settings::load(p.as_bytes()).unwrap();
        assert!(!l.config.settings.trust_mode);
        // Wrapped with settings.
        let wrapped = format!(r#"{{"bundle": {p}, "settings": {{"trust_mode": true}}}}"#);
        assert!(
            settings::load(wrapped.as_bytes())
                .unwrap()
                .config
                .settings
                .trust_mode
        );
        // Refusals: unknown keys, bad settings, altered bundle, not JSON.
        assert!(matches!(
            settings::load(br#"{"bundle": {}, "extra": 1}"#),
            Err(settings::ConfigError::Config(_))
        ));
        let bad = format!(r#"{{"bundle": {p}, "settings": {{"trust_mod": true}}}}"#);
        assert!(matches!(
            settings::load(bad.as_bytes()),
            Err(settings::ConfigError::Config(_))
        ));
        let altered = p
            .replacen("no-permit", "no-permits", 1)
            .replacen("permit (", "permit(", 1);
        assert!(matches!(
            settings::load(altered.as_bytes()),
            Err(settings::ConfigError::Bundle(_))
        ));
        assert!(settings::load(b"\xff").is_err());
        assert!(settings::load(b"[]").is_err());
    }

    /// Every case of the default bundle decides the same over shared data
    /// (each in its own namespace) as over a fresh memory store.
    #[test]
    fn shared_data_store_decides_like_memory() {
        let bundle = Bundle::load(&policy_files()).unwrap();
        let data = Fake::default();
        ensure_lock(&data).unwrap();
        for (n, case) in bundle.plan().iter().enumerate() {
            let ns = state_namespace(format!("case-{n}").as_bytes());
            let mut mem = MemoryStore::new();
            for step in &case.steps {
                let a = bundle.decide(&step.request, &mut mem).to_json();
                let b = bundle
                    .decide(&step.request, &mut SharedStore::new(&data, &ns))
                    .to_json();
                let (a, b): (serde_json::Value, serde_json::Value) = (
                    serde_json::from_str(&a).unwrap(),
                    serde_json::from_str(&b).unwrap(),
                );
                if step.request.contains("\"now\"") {
                    assert_eq!(a, b, "{} :: {} step {}", case.file, case.name, step.step);
                } else {
                    assert_eq!(a["outcome"], b["outcome"], "{} :: {}", case.file, case.name);
                }
            }
        }
    }

    /// What lets the filter skip a login success's event: the login's
    /// decision read no record at all. After one failure it reads one, so
    /// the success is sent and resets it; after that reset nothing is left.
    #[test]
    fn a_clean_login_reads_no_record_and_a_failed_one_does() {
        let bundle = Bundle::load(&policy_files()).unwrap();
        let data = Fake::default();
        ensure_lock(&data).unwrap();
        let login = r#"{"principal":{"type":"User","id":"carol@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.9","module":"sales_cloud"},"now":"2026-11-22T10:00:00Z"}"#;
        let event = |e: &str| login.replace("\"now\"", &format!("\"event\":\"{e}\",\"now\""));
        let clean = |text: &str| {
            let mut store = SharedStore::new(&data, "");
            let d = bundle.decide(text, &mut store);
            assert!(d.error.is_none(), "{d:?}");
            store.all_absent
        };
        assert!(clean(login), "fresh state holds no record");
        clean(&event("auth_failure"));
        assert!(!clean(login), "a failure is on record: the success must be sent");
        clean(&event("auth_success"));
        assert!(clean(login), "the success reset every key");
    }

    /// Failures reported by four threads (as worker VMs: twice the cores of
    /// the CI machine) at once on one account are each counted exactly
    /// once, and none fails: conflicting compare-and-set rounds back off
    /// (randomised, bounded) and read again instead of colliding in
    /// lockstep until the engine's retries run out.
    #[test]
    fn concurrent_failures_are_exact() {
        const THREADS: usize = 4;
        const EACH: usize = 24;
        let bundle = Arc::new(Bundle::load(&policy_files()).unwrap());
        let data = Arc::new(Fake::default());
        ensure_lock(&*data).unwrap();
        let event = r#"{"principal":{"type":"User","id":"race@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"event":"auth_failure","now":"2026-11-22T10:00:00Z"}"#;
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (bundle, data) = (Arc::clone(&bundle), Arc::clone(&data));
                std::thread::spawn(move || {
                    let mut spun = 0;
                    for _ in 0..EACH {
                        let mut store = SharedStore::new(&*data, "");
                        let d = bundle.decide(event, &mut store);
                        assert!(d.error.is_none(), "{:?}", d.error);
                        spun += store.spun;
                    }
                    spun
                })
            })
            .collect();
        let spun: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let probe = event.replace(r#","event":"auth_failure""#, "");
        let d = bundle.decide(&probe, &mut SharedStore::new(&*data, ""));
        assert_eq!(
            d.audit.facts.value()["lockout"]["account"]["failures"],
            THREADS * EACH,
            "{}",
            d.audit.facts.as_str()
        );
        assert!(spun > 0, "no conflict ever backed off");
    }

    /// The backoff is random, grows with the round, and stays bounded.
    #[test]
    fn backoff_is_bounded_and_grows() {
        use crate::store::{BACKOFF_BASE_SPINS, BACKOFF_MAX_SPINS};
        let data = Fake::default();
        let mut s = SharedStore::new(&data, "");
        for round in 1..40 {
            let ceiling = (BACKOFF_BASE_SPINS << (round - 1).min(20)).min(BACKOFF_MAX_SPINS);
            let draws: Vec<u64> = (0..64).map(|_| s.backoff_spins(round)).collect();
            assert!(draws.iter().all(|d| *d < ceiling), "round {round}");
            let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
            assert!(distinct.len() > 16, "round {round}: {draws:?}");
        }
    }
}
