//! The default bundle loads and passes its own cases natively; broken
//! bundles are refused with problems that name file and line.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and benches stop at the first broken assumption"
)]

use portcullis_engine::error::ProblemKind;
use portcullis_engine::{Bundle, BundleProblem, MemoryStore};
use std::path::Path;

fn read_dir(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_dir(root, &path, out);
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            let name = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            out.push((name, text));
        }
    }
}

fn default_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files = Vec::new();
    read_dir(&root, &root, &mut files);
    files
}

fn replace(files: &mut [(String, String)], name: &str, from: &str, to: &str) {
    for (n, t) in files.iter_mut() {
        if n == name {
            assert!(t.contains(from), "{name} has no `{from}`");
            *t = t.replacen(from, to, 1);
        }
    }
}

fn problems(files: &[(String, String)]) -> Vec<BundleProblem> {
    match Bundle::load(files) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    }
}

#[test]
fn default_bundle_passes_its_cases() {
    let bundle = Bundle::load(&default_files()).map_err(|p| {
        p.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    });
    let bundle = match bundle {
        Ok(b) => b,
        Err(e) => panic!("default bundle refused:\n{e}"),
    };
    let report = bundle.run_cases();
    let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed).collect();
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
    assert!(report.passed >= 20, "only {} cases ran", report.passed);
    assert_eq!(bundle.info().namespace, "Crm");
    assert!(
        bundle
            .info()
            .policy_ids
            .contains(&"lockout.pair.hard-lock".to_string())
    );
}

#[test]
fn typo_in_a_context_attribute_names_file_and_line() {
    let mut files = default_files();
    replace(
        &mut files,
        "lockout.cedar",
        "context.lockout.failures >= 1",
        "context.lockout.failurs >= 1",
    );
    let p = problems(&files);
    let hit = p.iter().find(|p| p.kind == ProblemKind::PolicyValidation);
    let loc = hit.and_then(|p| p.location.clone());
    assert_eq!(
        loc.as_ref().map(|l| l.file.as_str()),
        Some("lockout.cedar"),
        "{p:#?}"
    );
    let text = files
        .iter()
        .find(|(n, _)| n == "lockout.cedar")
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let line = text
        .lines()
        .position(|l| l.contains("failurs"))
        .map(|i| i as u32 + 1);
    assert_eq!(loc.as_ref().map(|l| l.line), line);
    assert!(loc.is_some_and(|l| l.snippet.contains("failurs")));
    assert!(
        hit.is_some_and(|h| h.message.contains("failurs")),
        "{hit:?}"
    );
}

#[test]
fn unknown_entity_type_names_file_and_line() {
    let mut files = default_files();
    replace(
        &mut files,
        "access.cedar",
        "principal is Crm::Service",
        "principal is Crm::Servce",
    );
    let p = problems(&files);
    let hit = p.iter().find(|p| p.kind == ProblemKind::PolicyValidation);
    let loc = hit.and_then(|p| p.location.clone());
    assert_eq!(
        loc.as_ref().map(|l| l.file.as_str()),
        Some("access.cedar"),
        "{p:#?}"
    );
    assert!(
        loc.as_ref()
            .is_some_and(|l| l.snippet.contains("Crm::Servce")),
        "{loc:?}"
    );
    assert!(hit.is_some_and(|h| h.message.contains("Servce")), "{hit:?}");
}

#[test]
fn malformed_case_file_names_file_and_line() {
    let mut files = default_files();
    replace(
        &mut files,
        "tests/dlp/export.yaml",
        "expect: {outcome: allow, policies: [dlp.export]}",
        "expect: {outcome: alow}",
    );
    let p = problems(&files);
    let hit = p.iter().find(|p| p.kind == ProblemKind::CaseFile);
    let loc = hit.and_then(|p| p.location.clone());
    assert_eq!(
        loc.as_ref().map(|l| l.file.as_str()),
        Some("tests/dlp/export.yaml"),
        "{p:#?}"
    );
    assert!(
        loc.as_ref()
            .is_some_and(|l| l.line > 1 && l.snippet.contains("alow")),
        "{loc:?}"
    );
}

#[test]
fn annotation_mistakes_are_refused() {
    let mut files = default_files();
    replace(
        &mut files,
        "dlp.cedar",
        "@outcome(\"deny\")",
        "@outcom(\"deny\")",
    );
    let p = problems(&files);
    assert!(
        p.iter()
            .any(|p| p.message.contains("unknown annotation `@outcom`")
                && p.location
                    .as_ref()
                    .is_some_and(|l| l.file == "dlp.cedar" && l.line > 0)),
        "{p:#?}"
    );

    let mut files = default_files();
    replace(
        &mut files,
        "dlp.cedar",
        "@id(\"dlp.export\")\n@reason",
        "@id(\"dlp.export\")\n@outcome(\"lock\")\n@reason",
    );
    assert!(
        problems(&files)
            .iter()
            .any(|p| p.message.contains("a `permit` cannot carry"))
    );

    let mut files = default_files();
    replace(
        &mut files,
        "dlp.cedar",
        "@id(\"dlp.export\")",
        "@id(\"lockout.login\")",
    );
    let p = problems(&files);
    assert!(
        p.iter()
            .any(|p| p.message.contains("`lockout.login` is used twice")
                && p.location
                    .as_ref()
                    .is_some_and(|l| l.file == "lockout.cedar")
                && p.message.contains("dlp.cedar:")),
        "{p:#?}"
    );
}

#[test]
fn a_refused_bundle_lists_every_problem() {
    let mut files = default_files();
    replace(
        &mut files,
        "lockout.cedar",
        "context.lockout.failures >= 1",
        "context.lockout.failurs >= 1",
    );
    replace(
        &mut files,
        "access.cedar",
        "principal is Crm::Service",
        "principal is Crm::Servce",
    );
    let p = problems(&files);
    let files_named: std::collections::BTreeSet<_> = p
        .iter()
        .filter_map(|p| p.location.as_ref().map(|l| l.file.clone()))
        .collect();
    assert!(
        files_named.contains("lockout.cedar") && files_named.contains("access.cedar"),
        "{p:#?}"
    );
}

#[test]
fn decisions_fail_closed_on_store_faults() {
    struct Broken;
    impl portcullis_engine::Store for Broken {
        fn get(&mut self, _: &[String]) -> Result<Vec<portcullis_engine::Entry>, String> {
            Err("connection refused".into())
        }
        fn compare_and_set(
            &mut self,
            _: &[portcullis_engine::Write],
        ) -> Result<Vec<portcullis_engine::WriteResult>, String> {
            Err("connection refused".into())
        }
    }
    let Ok(bundle) = Bundle::load(&default_files()) else {
        panic!("default bundle refused")
    };
    let req = r#"{"principal":{"type":"User","id":"a"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"now":"2026-11-22T10:00:00Z"}"#;
    let d = bundle.decide(req, &mut Broken);
    assert_eq!(d.outcome, portcullis_engine::Outcome::Deny);
    assert_eq!(d.error.as_ref().map(|e| e.kind.as_str()), Some("store"));
    assert!(d.reasons.iter().any(|r| r.contains("connection refused")));
    // And the same request with a working store is allowed.
    assert!(bundle.decide(req, &mut MemoryStore::new()).allowed);
}

#[test]
fn no_token_reaches_the_decision_or_audit() {
    let Ok(bundle) = Bundle::load(&default_files()) else {
        panic!("default bundle refused")
    };
    // The trusted HS256 test issuer's token, and a forged one.
    let cases = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policies/tests/lockout/synthetic.yaml"),
    )
    .unwrap_or_default();
    let tokens: Vec<&str> = cases
        .split_whitespace()
        .filter(|w| w.starts_with("eyJ"))
        .map(|w| w.trim_end_matches(['}', ',']))
        .collect();
    assert!(tokens.len() >= 8, "tokens found: {}", tokens.len());
    for token in tokens {
        let req = serde_json::json!({
            "principal": {"type": "User", "id": "alice@example.com"}, "action": "login",
            "resource": {"type": "App", "id": "sales-cloud"},
            "context": {"ip": "203.0.113.7", "synthetic": {"marker": true, "provenance": token}},
            "event": "auth_failure", "now": "2026-11-22T10:00:00Z"
        });
        let out = bundle
            .decide(&req.to_string(), &mut MemoryStore::new())
            .to_json();
        let signature = token.rsplit('.').next().unwrap_or(token);
        let claims = token.split('.').nth(1).unwrap_or(token);
        assert!(
            !out.contains(token) && !out.contains(claims),
            "a token reached the decision: {out}"
        );
        assert!(
            signature.is_empty() || !out.contains(signature),
            "a signature reached the decision: {out}"
        );
    }
}

#[test]
fn packed_bundles_load_and_tampering_is_refused() {
    let files = default_files();
    let Ok(bundle) = Bundle::load(&files) else {
        panic!("default bundle refused")
    };
    let packed = portcullis_engine::bundle::Packed::new(bundle.info(), files);
    let text = serde_json::to_string(&packed).unwrap_or_default();
    let loaded = portcullis_engine::bundle::Packed::load(&text).map(|b| b.info().hash.clone());
    assert_eq!(loaded.as_deref().ok(), Some(bundle.info().hash.as_str()));
    let tampered = text
        .replace("ten failed", "eleven failed")
        .replace("login permitted", "login permitted!");
    let err = portcullis_engine::bundle::Packed::load(&tampered)
        .err()
        .unwrap_or_default();
    assert!(
        err.iter().any(|p| p.message.contains("does not match")),
        "{err:?}"
    );
    let wrong = text.replace("portcullis-bundle/1", "portcullis-bundle/9");
    assert!(portcullis_engine::bundle::Packed::load(&wrong).is_err());
}
