//! Every input limit (README.md "Limits"), in the native engine and in the
//! guest: exceeding one is a deny (requests) or a refusal (bundles) that
//! names the limit; never a crash, a hang or an allow. Each test is built
//! so that it fails when its protection is removed (the comment says how).

use portcullis_engine::error::ProblemKind;
use portcullis_engine::limits::{
    MAX_BUNDLE_BYTES, MAX_ENTITY_DEPTH, MAX_JSON_DEPTH, MAX_POLICIES, MAX_REQUEST_BYTES,
};
use portcullis_engine::{Bundle, MemoryStore};
use portcullis_host::{GuestInstance, GuestRuntime, LoadError, RuntimeOptions};
use serde_json::Value;
use std::time::Duration;

const LOGIN: &str = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#;

fn guest() -> GuestInstance {
    let mut g = crate::runtime()
        .instantiate(Box::new(MemoryStore::new()))
        .unwrap();
    assert!(g.load(crate::default_files()).is_ok());
    g
}

fn native() -> Bundle {
    Bundle::load(&crate::default_files()).unwrap()
}

/// Both engines' decisions on `request`, parsed.
fn both(request: &str) -> [Value; 2] {
    let n = native().decide(request, &mut MemoryStore::new()).to_json();
    let g = guest().decide(request);
    [
        serde_json::from_str(&n).unwrap(),
        serde_json::from_str(&g).unwrap(),
    ]
}

fn with_body(len: usize) -> String {
    LOGIN.replace(
        "\"now\"",
        &format!("\"body\":\"{}\",\"now\"", "a".repeat(len)),
    )
}

#[test]
fn a_request_over_the_size_limit_is_denied_naming_the_limit() {
    // Removing the check in Request::from_json makes this a plain decision.
    let over = with_body(MAX_REQUEST_BYTES);
    for d in both(&over) {
        assert_eq!(d["outcome"], "deny");
        assert_eq!(d["error"]["kind"], "invalid-request");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("over the limit of {MAX_REQUEST_BYTES}")),
            "{msg}"
        );
    }
    // Just under: decided normally.
    let under = with_body(MAX_REQUEST_BYTES - LOGIN.len() - 64);
    for d in both(&under) {
        assert!(d["error"].is_null(), "{d}");
    }
}

#[test]
fn the_guest_host_refuses_a_huge_request_without_crossing() {
    // 80 MiB cannot be copied into a 64 MiB guest: without the host's own
    // check this is a trap (engine-fault), with it a deny naming the limit.
    let rt = GuestRuntime::new(RuntimeOptions {
        max_memory: 64 * 1024 * 1024,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let mut g = rt.instantiate(Box::new(MemoryStore::new())).unwrap();
    assert!(g.load(crate::default_files()).is_ok());
    let huge = with_body(80 * 1024 * 1024);
    let d: Value = serde_json::from_str(&g.decide(&huge)).unwrap();
    assert_eq!(d["error"]["kind"], "invalid-request", "{}", d["error"]);
    let batch = g.decide_batch(&[huge, LOGIN.to_string()]);
    let kinds: Vec<Value> = batch
        .iter()
        .map(|t| serde_json::from_str::<Value>(t).unwrap()["error"]["kind"].clone())
        .collect();
    assert_eq!(kinds, [Value::from("invalid-request"), Value::Null]);
    // The instance was never disturbed.
    let d: Value = serde_json::from_str(&g.decide(LOGIN)).unwrap();
    assert_eq!(d["outcome"], "allow");
}

#[test]
fn deep_json_is_refused_naming_the_depth_limit_without_recursion() {
    // A million levels: an iterative check refuses it (native and guest);
    // without crate::guard serde_json's own limit answers, with another
    // message (and its recursion is what the limit keeps bounded).
    let deep = format!(
        r#"{{"principal":{{"type":"User","id":"a"}},"action":"login","resource":{{"type":"App","id":"x"}},"context":{{"record":{{"x":{}{}}}}}}}"#,
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    for d in both(&deep) {
        assert_eq!(d["outcome"], "deny");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("limit of {MAX_JSON_DEPTH} levels")),
            "{msg}"
        );
        assert_eq!(d["error"]["field"], "context.record.x");
    }
}

/// The default bundle with `n` generated policies more.
fn with_policies(n: usize) -> Vec<(String, String)> {
    let mut files = crate::default_files();
    let mut text = String::with_capacity(n * 120);
    for i in 0..n {
        text.push_str(&format!(
            "@id(\"gen.{i}\")\nforbid (principal == Crm::User::\"u{i}\", action == Crm::Action::\"login\", resource);\n"
        ));
    }
    files.push(("generated.cedar".into(), text));
    files
}

#[test]
fn a_bundle_over_the_policy_count_is_refused_naming_the_limit() {
    let base = native().info().policy_ids.len();
    let files = with_policies(MAX_POLICIES + 1 - base);
    let native = Bundle::load(&files).err().unwrap_or_default();
    assert!(
        native
            .iter()
            .any(|p| p.kind == ProblemKind::Limit && p.message.contains("over the limit of")),
        "{native:?}"
    );
    // Exactly at the limit: accepted (only the count is refused).
    assert!(Bundle::load(&with_policies(MAX_POLICIES - base)).is_ok());
    // The guest says the same (given the time to parse 20 000 policies).
    let mut g = guest();
    g.set_call_timeout(Duration::from_secs(120));
    match g.load(files) {
        Err(LoadError::Refused(p)) => assert!(p.iter().any(|p| p.kind == ProblemKind::Limit)),
        other => panic!("expected a refusal naming the limit, got {other:?}"),
    }
}

#[test]
fn a_bundle_over_the_size_limit_is_refused_by_engine_and_host() {
    let mut files = crate::default_files();
    files.push((
        "padding.cedar".into(),
        format!("// {}\n", "x".repeat(MAX_BUNDLE_BYTES)),
    ));
    let p = Bundle::load(&files).err().unwrap_or_default();
    assert!(p.iter().any(|p| p.kind == ProblemKind::Limit), "{p:?}");
    // 100 MiB into a 64 MiB guest: without the host's check a trap (a
    // fault), with it a refusal naming the limit.
    let rt = GuestRuntime::new(RuntimeOptions {
        max_memory: 64 * 1024 * 1024,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let mut g = rt.instantiate(Box::new(MemoryStore::new())).unwrap();
    let mut huge = crate::default_files();
    huge.push(("padding.cedar".into(), "x".repeat(100 * 1024 * 1024)));
    match g.load(huge) {
        Err(LoadError::Refused(p)) => assert!(
            p.iter()
                .any(|p| p.kind == ProblemKind::Limit && p.message.contains("over the limit")),
            "{p:?}"
        ),
        other => panic!("expected a refusal naming the limit, got {other:?}"),
    }
}

/// The default bundle with a chain of `depth` roles above one user, the
/// top role allowed to export, and optionally a cycle closing the chain.
fn chain_bundle(depth: usize, cycle: bool) -> Vec<(String, String)> {
    let mut files = crate::default_files();
    let mut ents = Vec::new();
    ents.push(
        r#"{"uid":{"type":"Crm::User","id":"deep@example.com"},"attrs":{},"parents":[{"type":"Crm::Role","id":"r1"}]}"#
            .to_string(),
    );
    for i in 1..depth {
        let parent = if i + 1 < depth {
            format!(r#"[{{"type":"Crm::Role","id":"r{}"}}]"#, i + 1)
        } else if cycle {
            r#"[{"type":"Crm::Role","id":"r1"}]"#.to_string()
        } else {
            "[]".to_string()
        };
        ents.push(format!(
            r#"{{"uid":{{"type":"Crm::Role","id":"r{i}"}},"attrs":{{}},"parents":{parent}}}"#
        ));
    }
    for (name, text) in files.iter_mut() {
        if name == "schema.cedarschema" {
            assert!(text.contains("entity Role;"));
            *text = text.replacen("entity Role;", "entity Role in [Role];", 1);
        }
        if name == "entities.json" {
            let mut list: Vec<Value> = serde_json::from_str(text).unwrap();
            for e in &ents {
                list.push(serde_json::from_str(e).unwrap());
            }
            *text = serde_json::to_string(&list).unwrap();
        }
    }
    files.push((
        "deep.cedar".into(),
        format!(
            "@id(\"deep.top\")\n@reason(\"the top of the chain\")\npermit (principal in Crm::Role::\"r{}\", action == Crm::Action::\"admin\", resource);\n",
            depth - 1
        ),
    ));
    files
}

const DEEP_ADMIN: &str = r#"{"principal":{"type":"User","id":"deep@example.com"},"action":"admin","resource":{"type":"App","id":"admin-console"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#;

#[test]
fn a_hierarchy_at_the_depth_limit_evaluates_through_every_level() {
    // The user, then MAX_ENTITY_DEPTH - 1 roles: the longest chain allowed.
    let files = chain_bundle(MAX_ENTITY_DEPTH, false);
    let b = Bundle::load(&files).unwrap();
    let d = b.decide(DEEP_ADMIN, &mut MemoryStore::new());
    assert_eq!(
        (d.outcome.as_str(), d.policies.clone()),
        ("allow", vec!["deep.top".to_string()])
    );
    let mut g = guest();
    assert!(g.load(files).is_ok());
    let d: Value = serde_json::from_str(&g.decide(DEEP_ADMIN)).unwrap();
    assert_eq!(
        (d["outcome"].clone(), d["policies"][0].clone()),
        ("allow".into(), "deep.top".into())
    );
    // One level short of the top role: no permit.
    let short = chain_bundle(MAX_ENTITY_DEPTH, false)
        .into_iter()
        .map(|(n, t)| {
            let t = if n == "deep.cedar" {
                t.replace(&format!("r{}", MAX_ENTITY_DEPTH - 1), "nobody")
            } else {
                t
            };
            (n, t)
        })
        .collect::<Vec<_>>();
    let d = Bundle::load(&short)
        .map(|b| b.decide(DEEP_ADMIN, &mut MemoryStore::new()).outcome)
        .ok();
    assert!(d.is_some_and(|o| !o.is_allowed()));
}

#[test]
fn a_hierarchy_over_the_depth_limit_is_refused_not_overflowed() {
    // 100 000 levels: Cedar's closure recurses once per level and overflows
    // the stack (natively: an abort; in the guest: a trap) without the
    // engine's iterative check before it.
    for depth in [MAX_ENTITY_DEPTH + 1, 100_000] {
        let files = chain_bundle(depth, false);
        let p = Bundle::load(&files).err().unwrap_or_default();
        assert!(
            p.iter().any(|p| p.kind == ProblemKind::Limit
                && p.message.contains(&format!("limit of {MAX_ENTITY_DEPTH}"))),
            "{p:?}"
        );
        let mut g = guest();
        g.set_call_timeout(Duration::from_secs(60));
        match g.load(files) {
            Err(LoadError::Refused(p)) => {
                assert!(p.iter().any(|p| p.kind == ProblemKind::Limit), "{p:?}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_cycle_in_the_hierarchy_is_refused_naming_it() {
    let files = chain_bundle(5, true);
    let p = Bundle::load(&files).err().unwrap_or_default();
    assert!(
        p.iter()
            .any(|p| p.kind == ProblemKind::Entities && p.message.contains("cycle")),
        "{p:?}"
    );
    let mut g = guest();
    match g.load(files) {
        Err(LoadError::Refused(p)) => assert!(p.iter().any(|p| p.message.contains("cycle"))),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn duplicate_keys_in_bundle_json_are_refused_naming_file_and_key() {
    let mut files = crate::default_files();
    for (name, text) in files.iter_mut() {
        if name == "entities.json" {
            *text = text.replacen(
                r#""attrs": { "console": false }"#,
                r#""attrs": { "console": false, "console": true }"#,
                1,
            );
            assert!(text.contains(r#""console": false, "console": true"#));
        }
    }
    let p = Bundle::load(&files).err().unwrap_or_default();
    assert!(
        p.iter().any(|p| p.kind == ProblemKind::Entities
            && p.message.contains("duplicate key `console`")
            && p.location
                .as_ref()
                .is_some_and(|l| l.file == "entities.json")),
        "{p:?}"
    );
}

/// A copy of the default bundle whose DLP limit is `limit` bytes, without
/// the policy that forbids oversized bodies (the engine alone must hold).
fn small_dlp_limit(limit: usize) -> Vec<(String, String)> {
    crate::default_files()
        .into_iter()
        .map(|(n, t)| {
            let t = match n.as_str() {
                "portcullis.toml" => {
                    let re = t
                        .lines()
                        .find(|l| l.starts_with("max_body_bytes"))
                        .unwrap()
                        .to_string();
                    t.replacen(&re, &format!("max_body_bytes = {limit}"), 1)
                }
                "dlp.cedar" => {
                    let start = t.find("@id(\"dlp.body.oversize\")").unwrap();
                    let end = start + t[start..].find(";").unwrap() + 1;
                    format!("{}{}", &t[..start], &t[end..])
                }
                _ => t,
            };
            (n, t)
        })
        .collect()
}

#[test]
fn a_body_over_the_dlp_limit_is_never_allowed_unscanned() {
    // Without the oversize policy and without the engine's own rule, this
    // is an allow of a body nobody scanned.
    let files = small_dlp_limit(1024);
    let read = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"read","resource":{"type":"Record","id":"001000000000001AAA"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#;
    let big = read.replace(
        "\"now\"",
        &format!("\"body\":\"{}\",\"now\"", "a".repeat(2048)),
    );
    let small = read.replace("\"now\"", "\"body\":\"hello\",\"now\"");
    let b = Bundle::load(&files).unwrap();
    let mut g = guest();
    assert!(g.load(files).is_ok());
    for d in [
        serde_json::to_value(b.decide(&big, &mut MemoryStore::new())).unwrap(),
        serde_json::from_str::<Value>(&g.decide(&big)).unwrap(),
    ] {
        assert_eq!(d["outcome"], "deny", "{d}");
        assert!(
            d["reasons"][0]
                .as_str()
                .unwrap()
                .contains("over dlp.max_body_bytes (1024 bytes)"),
            "{d}"
        );
        assert_eq!(d["audit"]["facts"]["dlp"]["oversize"], true);
    }
    let d = b.decide(&small, &mut MemoryStore::new());
    assert_eq!(d.outcome.as_str(), "allow");
}

#[test]
fn control_characters_never_reach_a_line_of_output_raw() {
    // CR LF in a field that reaches the audit record: the decision is one
    // line of JSON, and the value reads back unchanged.
    let req = r#"{"principal":{"type":"Service","id":"etl"},"action":"read","resource":{"type":"Record","id":"003000000000001AAA"},"context":{"ip":"10.1.2.3","mtls":{"verified":true,"san":"spiffe://crm/etl"},"flow":"marketing-sync","fields":["Email","Phone\r\n{\"outcome\":\"allow\"}"]},"now":"2026-11-22T10:00:00Z"}"#;
    let [n, g] = both(req);
    assert_eq!(n, g);
    assert_eq!(
        n["audit"]["facts"]["dropped_fields"][0],
        "Phone\r\n{\"outcome\":\"allow\"}"
    );
    let text = guest().decide(req);
    assert!(!text.bytes().any(|b| b == b'\r' || b == b'\n'), "{text}");
    // A refused id is quoted escaped in the message.
    let bad = LOGIN.replace("sales-cloud", "sales-cloud\\r\\nX-Forged: 1");
    let d: Value = serde_json::from_str(&guest().decide(&bad)).unwrap();
    assert_eq!(d["error"]["field"], "resource.id");
    let module = LOGIN.replace(
        r#""ip":"203.0.113.7""#,
        r#""ip":"203.0.113.7","module":"x\r\nforged","record":{}"#,
    );
    for d in both(&module) {
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("x\\r\\nforged") && !msg.contains('\r'),
            "{msg}"
        );
    }
}

#[test]
fn policy_text_too_deep_for_cedar_is_refused_not_overflowed() {
    // Natively 2 000 nested parentheses abort the process (a stack
    // overflow in Cedar's parser) and in the guest 200 trap; with
    // crate::guard::cedar both are a refusal naming the limit and the line.
    let shapes = [
        format!("{}true{}", "(".repeat(200_000), ")".repeat(200_000)),
        format!("{}true{}", "(".repeat(200), ")".repeat(200)),
        vec!["true"; 20_000].join(" && "),
        format!("context{} == 1", ".x".repeat(20_000)),
        format!("{} == 1", vec!["1"; 500].join(" + ")),
    ];
    for body in &shapes {
        let mut files = crate::default_files();
        files.push((
            "deep.cedar".into(),
            format!("@id(\"deep\")\npermit (principal, action, resource)\nwhen {{ {body} }};\n"),
        ));
        let p = Bundle::load(&files).err().unwrap_or_default();
        assert!(
            p.iter().any(|p| p.kind == ProblemKind::Limit
                && p.location
                    .as_ref()
                    .is_some_and(|l| l.file == "deep.cedar" && l.line == 3)),
            "{:?}",
            p.first()
        );
        let mut g = guest();
        match g.load(files) {
            Err(LoadError::Refused(p)) => assert!(p.iter().any(|p| p.kind == ProblemKind::Limit)),
            other => panic!("expected a refusal naming the limit, got {other:?}"),
        }
    }
    // A deep type in a schema is refused the same way.
    let mut files = crate::default_files();
    files.push((
        "deep.cedarschema".into(),
        format!(
            "namespace Crm {{ entity Deep = {{ a: {}Long{} }}; }}",
            "Set<".repeat(5000),
            ">".repeat(5000)
        ),
    ));
    let p = Bundle::load(&files).err().unwrap_or_default();
    assert!(
        p.iter().any(|p| p.kind == ProblemKind::Limit),
        "{:?}",
        p.first()
    );
}

#[test]
fn a_case_file_nested_too_deep_is_refused_before_the_yaml_parser() {
    // 100 000 nested flow sequences: the YAML parser spends its time in the
    // square of the depth (21 s natively, a deadline trap in the guest);
    // crate::guard::yaml refuses it at once, naming the limit and the line.
    let mut files = crate::default_files();
    files.push((
        "tests/deep.yaml".into(),
        format!(
            "cases:\n  - name: deep\n    request: {}{}\n    expect: {{outcome: allow}}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    ));
    let p = Bundle::load(&files).err().unwrap_or_default();
    assert!(
        p.iter().any(|p| p.kind == ProblemKind::Limit
            && p.location
                .as_ref()
                .is_some_and(|l| l.file == "tests/deep.yaml" && l.line == 3)),
        "{:?}",
        p.first()
    );
    let mut g = guest();
    match g.load(files) {
        Err(LoadError::Refused(p)) => assert!(p.iter().any(|p| p.kind == ProblemKind::Limit)),
        other => panic!("expected a refusal naming the limit, got {other:?}"),
    }
}
