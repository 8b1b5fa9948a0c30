//! `portcullis diff`: change review by replay. The set of changed decisions
//! is checked against one computed independently, from per-line `replay`
//! output of each bundle; exit codes follow case coverage.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn portcullis(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run portcullis: {e}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A copy of the default bundle with edits (file, from, to) and extra files.
fn bundle_copy(tag: &str, edits: &[(&str, &str, &str)], extra: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-diff-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut files = crate::default_files();
    files.extend(extra.iter().map(|(n, b)| (n.to_string(), b.to_string())));
    for (name, body) in files {
        let mut body = body;
        for (file, from, to) in edits {
            if *file == name {
                assert!(body.contains(from), "{name} lacks `{from}`");
                body = body.replacen(from, to, 1);
            }
        }
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, body).unwrap();
    }
    dir
}

/// What `diff` compares, from one decision.
fn shape(v: &Value) -> (String, Vec<String>, String, Option<String>) {
    let mut policies: Vec<String> = v["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    policies.sort();
    (
        v["outcome"].as_str().unwrap_or("").to_string(),
        policies,
        v["pathway"].as_str().unwrap_or("").to_string(),
        v["error"]["kind"].as_str().map(str::to_string),
    )
}

/// Every decision of a replay, in line order (native engine, fresh state).
fn replay(bundle: &Path, trace: &Path) -> Vec<Value> {
    let out = portcullis(&[
        "--engine",
        "native",
        "--format",
        "json",
        "replay",
        "--bundle",
        &bundle.to_string_lossy(),
        &trace.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn diff(from: &Path, to: &Path, trace: &Path) -> (Option<i32>, Value, String) {
    let out = portcullis(&[
        "--format",
        "json",
        "diff",
        "--from",
        &from.to_string_lossy(),
        "--to",
        &to.to_string_lossy(),
        &trace.to_string_lossy(),
    ]);
    let v = serde_json::from_str(&text(&out.stdout)).unwrap_or(Value::Null);
    (out.status.code(), v, text(&out.stderr))
}

#[test]
fn a_changed_lockout_threshold_shows_exactly_the_decisions_it_changes() {
    let policies = crate::root().join("policies");
    let new = bundle_copy(
        "threshold",
        &[(
            "portcullis.toml",
            "throttle_after = 5\nlock_after = 10\n",
            "throttle_after = 5\nlock_after = 6\n",
        )],
        &[],
    );
    let trace = std::env::temp_dir().join(format!(
        "portcullis-diff-trace-{}.jsonl",
        std::process::id()
    ));
    let generated = Command::new("python3")
        .arg(crate::root().join("scripts/gen_trace.py"))
        .args(["20000", "11"])
        .output()
        .expect("python3 runs scripts/gen_trace.py");
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    std::fs::write(&trace, &generated.stdout).unwrap();

    // Independently: replay each bundle line by line and compare.
    let old_d = replay(&policies, &trace);
    let new_d = replay(&new, &trace);
    assert_eq!(old_d.len(), 20_000);
    assert_eq!(old_d.len(), new_d.len());
    let expected: BTreeSet<u64> = old_d
        .iter()
        .zip(&new_d)
        .enumerate()
        .filter(|(_, (a, b))| shape(a) != shape(b))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert!(
        expected.len() > 50,
        "the trace should exercise the threshold"
    );
    // Only the pair's ladder moved.
    for (a, b) in old_d.iter().zip(&new_d) {
        let (sa, sb) = (shape(a), shape(b));
        if sa != sb {
            let moved: BTreeSet<&String> =
                sa.1.iter()
                    .chain(&sb.1)
                    .filter(|p| !(sa.1.contains(p) && sb.1.contains(p)))
                    .collect();
            assert!(
                moved.iter().all(|p| p.starts_with("lockout.pair.")),
                "{moved:?}"
            );
        }
    }

    // diff (in the guest) reports exactly those lines, grouped.
    let (code, report, stderr) = diff(&policies, &new, &trace);
    assert!(code == Some(0) || code == Some(1), "{stderr}");
    assert_eq!(report["decisions"], 20_000);
    let got: BTreeSet<u64> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["line"].as_u64().unwrap())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(report["changed"].as_u64(), Some(expected.len() as u64));
    let grouped: u64 = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    assert_eq!(grouped, expected.len() as u64);
    for c in report["changes"].as_array().unwrap() {
        let line = c["line"].as_u64().unwrap() as usize;
        let (o, p, _, _) = shape(&new_d[line - 1]);
        assert_eq!(c["to"]["outcome"].as_str(), Some(o.as_str()), "line {line}");
        assert_eq!(c["to"]["policies"], serde_json::json!(p), "line {line}");
    }
    // Earlier locks are the point of the change: pair.lock gains decisions.
    assert!(
        report["policies"]["lockout.pair.lock"]["gained"]
            .as_u64()
            .unwrap()
            > 0
    );
    let uncovered = report["uncovered"].as_u64().unwrap();
    assert_eq!(code, Some(if uncovered > 0 { 1 } else { 0 }));
    let _ = std::fs::remove_dir_all(&new);
    let _ = std::fs::remove_file(&trace);
}

const BLOCK: &str = r#"@id("extra.benchmark-net")
@outcome("deny")
@reason("logins from the benchmarking network are refused")
forbid (principal, action == Crm::Action::"login", resource)
when { context has ip && context.ip.isInRange(ip("198.18.0.0/15")) };
"#;

const BLOCK_CASE: &str = r#"cases:
  - name: the benchmarking network is refused
    request:
      principal: {type: User, id: carol@example.com}
      action: login
      resource: {type: App, id: sales-cloud}
      context: {ip: 198.18.0.9}
      now: "2026-11-22T10:00:00Z"
    expect: {outcome: deny, policies: [extra.benchmark-net]}
"#;

#[test]
fn exit_codes_follow_the_new_bundles_case_coverage() {
    let policies = crate::root().join("policies");
    let trace = std::env::temp_dir().join(format!(
        "portcullis-diff-small-{}.jsonl",
        std::process::id()
    ));
    let line = |who: &str, ip: &str| {
        format!(
            r#"{{"principal":{{"type":"User","id":"{who}"}},"action":"login","resource":{{"type":"App","id":"sales-cloud"}},"context":{{"ip":"{ip}"}},"now":"2026-11-22T10:00:00Z"}}"#
        )
    };
    let body = [
        line("alice@example.com", "192.0.2.1"),
        "# a comment".to_string(),
        line("bob@example.com", "198.18.0.5"),
        line("dave@example.com", "192.0.2.2"),
    ]
    .join("\n");
    std::fs::write(&trace, body + "\n").unwrap();

    // Nothing changes between a bundle and itself.
    let (code, report, stderr) = diff(&policies, &policies, &trace);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        (report["decisions"].as_u64(), report["changed"].as_u64()),
        (Some(3), Some(0))
    );

    // A new policy without a case: the change is reported, uncovered, exit 1.
    let uncovered = bundle_copy("uncovered", &[], &[("extra.cedar", BLOCK)]);
    let (code, report, stderr) = diff(&policies, &uncovered, &trace);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["changed"], 1);
    let change = &report["changes"][0];
    assert_eq!(change["line"], 3, "comments keep their line numbers");
    assert_eq!(change["from"]["outcome"], "allow");
    assert_eq!(change["to"]["outcome"], "deny");
    assert_eq!(
        change["to"]["policies"],
        serde_json::json!(["extra.benchmark-net"])
    );
    assert_eq!(change["covered"], false);
    assert_eq!(
        change["uncovered_policies"],
        serde_json::json!(["extra.benchmark-net"])
    );
    assert_eq!(report["groups"][0]["lines"], serde_json::json!([3]));

    // The same policy with a case expecting its outcome: covered, exit 0.
    let covered = bundle_copy(
        "covered",
        &[],
        &[("extra.cedar", BLOCK), ("tests/extra.yaml", BLOCK_CASE)],
    );
    let (code, report, stderr) = diff(&policies, &covered, &trace);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        (report["changed"].as_u64(), report["uncovered"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(report["changes"][0]["covered"], true);

    // Text output names the group and says it is not covered.
    let out = portcullis(&[
        "diff",
        "--from",
        &policies.to_string_lossy(),
        "--to",
        &uncovered.to_string_lossy(),
        &trace.to_string_lossy(),
    ]);
    let t = text(&out.stdout);
    assert!(t.contains("allow -> deny: 1"), "{t}");
    assert!(t.contains("NOT COVERED"), "{t}");

    // An audit log cannot be replayed: exit 2, naming the line.
    let audit = std::env::temp_dir().join(format!(
        "portcullis-diff-audit-{}.jsonl",
        std::process::id()
    ));
    std::fs::write(
        &audit,
        r#"{"seq":1,"time":"2026-11-22T10:00:00Z","kind":"decision","request_digest":"ab","principal":"Crm::User::\"alice\"","outcome":"allow"}"#.to_string() + "\n",
    )
    .unwrap();
    let (code, _, stderr) = diff(&policies, &covered, &audit);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("line 1") && stderr.contains("audit record"),
        "{stderr}"
    );
    for d in [uncovered, covered] {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(&trace);
    let _ = std::fs::remove_file(&audit);
}
