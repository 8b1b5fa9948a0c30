//! Shared pieces of the fuzz targets: the default bundle (read and loaded
//! once per process), and the invariants every decision must keep whatever
//! the input.
//!
//! A target panics (libFuzzer records a crash) when an invariant breaks:
//! an allow that carries an error, an `allowed` flag that disagrees with
//! the outcome, a decision that does not serialise, a raw control
//! character in the decision text.

// The host's audit-log writer and verifier and its bundle signing, from
// their own source files: the `audit` and `signature` targets fuzz exactly
// the code `portcullis audit verify` and the signed hot swap run, without
// building the rest of the host (wasmtime) under the sanitizer.
#[path = "../../host/src/audit.rs"]
#[allow(dead_code)]
pub mod audit;
#[path = "../../host/src/bundle_dir.rs"]
#[allow(dead_code)]
pub mod bundle_dir;
#[path = "../../host/src/signing.rs"]
#[allow(dead_code)]
pub mod signing;

use portcullis_engine::{Bundle, Decision, Outcome};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository's default bundle directory.
pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Read a bundle directory as the hosts do: files ending in .toml,
/// .cedarschema, .cedar, .json, .yaml, .yml; hidden entries skipped;
/// names relative with `/`; sorted.
pub fn read_bundle(dir: &Path) -> Vec<(String, String)> {
    fn walk(abs: &Path, rel: &str, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(abs) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let p = e.path();
            if p.is_dir() {
                walk(&p, &r, out);
                continue;
            }
            let ext = name.rsplit('.').next().unwrap_or("");
            if ["toml", "cedarschema", "cedar", "json", "yaml", "yml"].contains(&ext)
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                out.push((r, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// The default bundle's files, read once.
pub fn default_files() -> &'static [(String, String)] {
    static FILES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    FILES.get_or_init(|| read_bundle(&policies_dir()))
}

/// The manifest without its `[controls.*]` tables (they name cases, and
/// the fuzzed bundles leave the cases out).
pub fn strip_controls(manifest: &str) -> String {
    let mut out = String::with_capacity(manifest.len());
    let mut skipping = false;
    for line in manifest.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            skipping = t.starts_with("[controls");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The default bundle without its cases (and so without the controls that
/// name them) and with one policy file (`access.cedar`; the others are
/// seeds of the `extra.cedar` slot): what the bundle target fuzzes one file
/// of. Loads in a fraction of the time of the whole bundle, which matters
/// under the sanitizer (about a second a load for the whole one).
pub fn base_files() -> &'static [(String, String)] {
    static FILES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    FILES.get_or_init(|| {
        default_files()
            .iter()
            .filter(|(n, _)| !n.starts_with("tests/"))
            .filter(|(n, _)| !n.ends_with(".cedar") || n == "access.cedar")
            .map(|(n, t)| {
                if n == "portcullis.toml" {
                    (n.clone(), strip_controls(t))
                } else {
                    (n.clone(), t.clone())
                }
            })
            .collect()
    })
}

/// The default bundle, loaded once.
pub fn default_bundle() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| match Bundle::load(default_files()) {
        Ok(b) => b,
        Err(p) => panic!("the default bundle is refused: {p:#?}"),
    })
}

/// Invariants of every decision, whatever the request.
pub fn check_decision(d: &Decision) {
    assert_eq!(
        d.allowed,
        d.outcome.is_allowed(),
        "`allowed` disagrees with the outcome"
    );
    if d.error.is_some() {
        assert_eq!(d.outcome, Outcome::Deny, "a fault must be a deny: {d:?}");
        assert!(d.policies.is_empty(), "a fault names no policy: {d:?}");
    }
    assert!(!d.reasons.is_empty(), "every decision gives a reason");
    assert_eq!(d.audit.outcome, d.outcome, "the audit record disagrees");
    let text = d.to_json();
    let back: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("decision JSON does not parse back: {e}"),
    };
    assert_eq!(back["outcome"].as_str(), Some(d.outcome.as_str()));
    assert!(
        !text.bytes().any(|b| b < 0x20),
        "raw control character in a decision"
    );
}
