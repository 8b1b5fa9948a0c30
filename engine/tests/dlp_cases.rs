//! The DLP case files under `policies/tests/dlp/` that
//! `scripts/gen_dlp_cases.py` writes are current: regenerating them gives
//! the committed bytes. (The cases themselves run with every other case:
//! `default_bundle_passes_its_cases` natively, `portcullis check` in the
//! guest, and the equality test across both.)

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests stop at the first broken assumption"
)]

use std::path::Path;
use std::process::Command;

#[test]
fn generated_case_files_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("scripts/gen_dlp_cases.py"))
        .arg("--check")
        .output()
        .expect("python3 runs scripts/gen_dlp_cases.py (it needs only the standard library)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_generated_file_has_cases_and_weights_come_as_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/tests/dlp");
    for name in [
        "detectors.yaml",
        "weights.yaml",
        "redaction.yaml",
        "minimise.yaml",
        "streaming.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.starts_with("# GENERATED"), "{name}");
        let file = portcullis_engine::cases::CaseFile::parse(name, &text).unwrap();
        assert!(file.cases.len() >= 7, "{name}: {}", file.cases.len());
    }
    let weights = std::fs::read_to_string(dir.join("weights.yaml")).unwrap();
    assert!(weights.matches("\"body_base64\"").count() >= 20);
    let streaming = std::fs::read_to_string(dir.join("streaming.yaml")).unwrap();
    assert!(streaming.matches("\"body_chunks\"").count() >= 5);
}
