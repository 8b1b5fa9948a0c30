//! `portcullis revoke` on the CLI: the new bundle denies the revoked model,
//! principal or key (citing the revocation, escalating), keeps the others
//! working, bumps the version, passes all its cases, and is signed when
//! asked.

use crate::flows::{policies, portcullis, text};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-revoke-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `portcullis decide` on a bundle: exit code and decision.
fn decide(bundle: &Path, request: &Value) -> (Option<i32>, Value) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let file = std::env::temp_dir().join(format!(
        "portcullis-revoke-request-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&file, request.to_string()).unwrap();
    let out = portcullis(&[
        "--format",
        "json",
        "decide",
        "--bundle",
        &bundle.to_string_lossy(),
        &file.to_string_lossy(),
    ]);
    let _ = std::fs::remove_file(&file);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no decision ({e}): {}", text(&out.stderr)));
    (out.status.code(), v)
}

fn version_of(bundle: &Path) -> String {
    let out = portcullis(&["--engine", "native", "describe", &bundle.to_string_lossy()]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["version"].as_str().unwrap_or("").to_string()
}

fn infer(model: &str) -> Value {
    json!({
        "principal": {"type": "Service", "id": "etl"}, "action": "infer",
        "resource": {"type": "Model", "id": model},
        "context": {"ip": "10.0.0.5", "mtls": {"verified": true, "san": "spiffe://crm/etl"}},
        "now": "2026-11-22T10:00:00Z"
    })
}

fn revoke(out_dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["revoke", "--bundle"];
    let p = policies();
    all.push(&p);
    all.extend_from_slice(args);
    let o = out_dir.to_string_lossy().to_string();
    all.extend_from_slice(&["-o", &o]);
    portcullis(&all)
}

#[test]
fn a_revoked_model_is_denied_and_other_models_keep_working() {
    let dir = scratch("model");
    let out_dir = dir.join("bundle");
    // churn-v3 is the model the default cases use: those cases are
    // superseded, moved into the revocation's case file.
    let out = revoke(
        &out_dir,
        &[
            "--model",
            "churn-v3",
            "--reason",
            "weights leaked (INC-2041)",
            "--now",
            "2026-11-23T09:00:00Z",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let said = text(&out.stdout);
    assert!(
        said.contains("superseded tests/access/mtls.yaml :: a verified service may infer"),
        "{said}"
    );

    // The new bundle is accepted whole, in the guest and natively.
    for engine in ["guest", "native"] {
        let check = portcullis(&["--engine", engine, "check", &out_dir.to_string_lossy()]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{engine}: {}",
            text(&check.stdout)
        );
        assert!(text(&check.stdout).contains("revoked model `churn-v3` is denied"));
    }
    let before = version_of(Path::new(&policies()));
    let after = version_of(&out_dir);
    let (head, last) = before.rsplit_once('.').unwrap();
    assert_eq!(
        after,
        format!("{head}.{}", last.parse::<u64>().unwrap() + 1)
    );

    let (code, d) = decide(&out_dir, &infer("churn-v3"));
    assert_eq!(code, Some(1));
    assert_eq!(d["policies"], json!(["revoked.model.churn-v3"]));
    assert_eq!(
        d["reasons"],
        json!(["revoked-model: weights leaked (INC-2041)"])
    );
    assert_eq!(d["escalation"], "ml-security/churn-v3");
    let (code, d) = decide(&out_dir, &infer("forecast-v7"));
    assert_eq!(
        (code, d["policies"].clone()),
        (Some(0), json!(["access.infer"]))
    );
    // The original bundle still allows it: only the new one revokes.
    assert_eq!(
        decide(Path::new(&policies()), &infer("churn-v3")).0,
        Some(0)
    );

    let manifest = std::fs::read_to_string(out_dir.join("portcullis.toml")).unwrap();
    assert!(manifest.contains("[[revocations]]\nkind = \"model\"\nid = \"churn-v3\"\npolicy = \"revoked.model.churn-v3\"\nreason = \"weights leaked (INC-2041)\""), "{manifest}");
    assert!(manifest.contains("at = \"2026-11-23T09:00:00Z\""));
    // Revoking it again is refused.
    let again = portcullis(&[
        "revoke",
        "--bundle",
        &out_dir.to_string_lossy(),
        "--model",
        "churn-v3",
        "-o",
        &dir.join("again").to_string_lossy(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("already revoked"),
        "{}",
        text(&again.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_revoked_principal_is_denied_everywhere_and_others_are_not() {
    let dir = scratch("principal");
    let out_dir = dir.join("bundle");
    // `etl` is a Service in entities.json: the type is found there.
    let out = revoke(
        &out_dir,
        &[
            "--engine",
            "native",
            "--principal",
            "etl",
            "--reason",
            "INC-7: client secret in a public repo",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let read = |svc: &str| {
        json!({
            "principal": {"type": "Service", "id": svc}, "action": "read",
            "resource": {"type": "Record", "id": "001000000000001AAA"},
            "context": {"ip": "10.0.0.5", "mtls": {"verified": true, "san": format!("spiffe://crm/{svc}")}},
            "now": "2026-11-22T10:00:00Z"
        })
    };
    let (code, d) = decide(&out_dir, &read("etl"));
    assert_eq!(code, Some(1));
    assert_eq!(d["policies"], json!(["revoked.principal.Service.etl"]));
    assert_eq!(d["escalation"], "security-operations");
    let (code, d) = decide(&out_dir, &read("sync"));
    assert_eq!((code, d["outcome"].clone()), (Some(0), json!("allow")));
    assert_eq!(
        portcullis(&["--engine", "native", "check", &out_dir.to_string_lossy()])
            .status
            .code(),
        Some(0)
    );
    // A principal whose type the bundle cannot tell is refused with a hint.
    let out = revoke(
        &dir.join("ambiguous"),
        &["--principal", "alice@example.com"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--principal TYPE:alice@example.com"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The access token of a case of tests/access/token.yaml.
fn token_of(case: &str) -> String {
    let name = "tests/access/token.yaml";
    let text = std::fs::read_to_string(crate::root().join("policies").join(name)).unwrap();
    let file = portcullis_engine::cases::CaseFile::parse(name, &text).unwrap();
    let case = file.cases.iter().find(|c| c.name == case).unwrap();
    case.steps[0].request["context"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn tokens_signed_by_a_revoked_key_are_refused_and_other_keys_still_verify() {
    let dir = scratch("key");
    let out_dir = dir.join("bundle");
    let out = revoke(
        &out_dir,
        &[
            "--key",
            "rsa-2026",
            "--reason",
            "INC-9: IdP signing key exfiltrated",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let read = |token: &str| {
        json!({
            "principal": {"type": "User", "id": "alice@example.com"}, "action": "read",
            "resource": {"type": "Record", "id": "001000000000001AAA"},
            "context": {"ip": "203.0.113.7", "token": token},
            "now": "2026-11-22T10:00:00Z"
        })
    };
    let token = token_of("a valid RS256 token with the api scope");
    assert_eq!(
        decide(Path::new(&policies()), &read(&token)).0,
        Some(0),
        "allowed before"
    );
    let (code, d) = decide(&out_dir, &read(&token));
    assert_eq!(code, Some(1));
    assert_eq!(d["policies"], json!(["revoked.key.rsa-2026"]));
    assert_eq!(
        d["reasons"],
        json!(["revoked-key: INC-9: IdP signing key exfiltrated"])
    );
    let t = &d["audit"]["facts"]["token"];
    assert_eq!(
        (t["valid"].clone(), t["failure"].clone(), t["kid"].clone()),
        (json!(false), json!("revoked-key"), json!("rsa-2026"))
    );
    // A token whose header claims another kid does not pick the revoked key.
    let forged = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[0] = b64.encode(br#"{"typ":"JWT","alg":"RS256","kid":"rsa-2027"}"#);
        parts.join(".")
    };
    let (code, d) = decide(&out_dir, &read(&forged));
    assert_eq!(code, Some(1));
    assert_ne!(d["audit"]["facts"]["token"]["valid"], json!(true));
    // The ES256 partner issuer's token still verifies.
    let es256 = token_of("a valid ES256 token from the partner issuer");
    let (code, d) = decide(&out_dir, &read(&es256));
    assert_eq!(
        (code, d["audit"]["facts"]["token"]["valid"].clone()),
        (Some(0), json!(true))
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_revoked_bundle_can_be_packed_and_signed() {
    let dir = scratch("signed");
    let keygen = portcullis(&["keygen", "--out", &dir.join("ir").to_string_lossy()]);
    assert_eq!(keygen.status.code(), Some(0), "{}", text(&keygen.stderr));
    let key_id = portcullis_host::signing::key_id(
        &portcullis_host::signing::read_verifying_key(&dir.join("ir.pub")).unwrap(),
    );
    let packed = dir.join("revoked.json");
    let out = revoke(
        &packed,
        &[
            "--engine",
            "native",
            "--model",
            "gpt-summariser",
            "--sign",
            &dir.join("ir.key").to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&packed).unwrap()).unwrap();
    assert_eq!(doc["signature"]["key_id"], key_id);
    assert_eq!(doc["signature"]["alg"], "ed25519");
    let bundle = portcullis_engine::bundle::Packed::load(&doc.to_string()).unwrap();
    assert!(
        bundle
            .info()
            .policy_ids
            .contains(&"revoked.model.gpt-summariser".to_string())
    );
    let report = bundle.run_cases();
    assert_eq!(report.failed, 0);
    assert!(
        report
            .cases
            .iter()
            .any(|c| c.file == "tests/revoked/model-gpt-summariser.yaml")
    );
    // flows check reads the packed bundle too: the revocation changes no flow.
    let flows = portcullis(&[
        "--engine",
        "native",
        "flows",
        "check",
        &packed.to_string_lossy(),
        "--now",
        "2026-11-23",
    ]);
    assert_eq!(flows.status.code(), Some(1), "{}", text(&flows.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_subjects_are_refused_without_writing_anything() {
    let dir = scratch("unknown");
    let out_dir = dir.join("bundle");
    let out = revoke(&out_dir, &["--key", "no-such-kid"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no trusted key has kid `no-such-kid`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_dir.exists());
    let out = portcullis(&[
        "revoke",
        "--bundle",
        &policies(),
        "--model",
        "m",
        "--key",
        "k",
        "-o",
        &out_dir.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(2), "exactly one subject");
    let _ = std::fs::remove_dir_all(dir);
}
