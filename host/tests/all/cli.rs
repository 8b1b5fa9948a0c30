//! The `portcullis` binary: exit codes, errors that name file, line and
//! field, and replay with state carried between lines.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run portcullis: {e}"),
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(text.as_bytes());
    }
    match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("portcullis did not finish: {e}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn policies() -> String {
    crate::root().join("policies").to_string_lossy().to_string()
}

/// A copy of the default bundle in a fresh directory, with edits.
fn broken_copy(tag: &str, edits: &[(&str, &str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, body) in crate::default_files() {
        let mut body = body;
        for (file, from, to) in edits {
            if *file == name {
                assert!(body.contains(from), "{name} lacks `{from}`");
                body = body.replacen(from, to, 1);
            }
        }
        let path = dir.join(&name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(path, body);
    }
    dir
}

fn line_of(dir: &Path, file: &str, needle: &str) -> usize {
    let body = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    body.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

#[test]
fn check_accepts_the_default_bundle() {
    let out = run(&["check", &policies()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains(" passed, 0 failed"));
}

#[test]
fn check_names_file_and_line_for_three_distinct_errors() {
    let dir = broken_copy(
        "three",
        &[
            (
                "lockout.cedar",
                "context.lockout.failures >= 1",
                "context.lockout.failurs >= 1",
            ),
            (
                "access.cedar",
                "principal is Crm::Service",
                "principal is Crm::Servce",
            ),
            (
                "tests/dlp/export.yaml",
                "expect: {outcome: allow, policies: [dlp.export]}",
                "expect: {outcome: alow}",
            ),
        ],
    );
    let out = run(&["check", &dir.to_string_lossy()], None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let typo = format!(
        "lockout.cedar:{}:",
        line_of(&dir, "lockout.cedar", "failurs")
    );
    let entity = format!("access.cedar:{}:", line_of(&dir, "access.cedar", "Servce"));
    let case = format!(
        "tests/dlp/export.yaml:{}:",
        line_of(&dir, "tests/dlp/export.yaml", "alow")
    );
    for (loc, what) in [
        (&typo, "failurs"),
        (&entity, "Crm::Servce"),
        (&case, "alow"),
    ] {
        let line = err.lines().find(|l| l.starts_with(loc.as_str()));
        assert!(
            line.is_some_and(|l| l.contains(what)),
            "no error at {loc} naming {what}:\n{err}"
        );
    }
    // The offending text is quoted under each.
    assert!(err.contains("| context.lockout.failurs >= 1"), "{err}");
    // JSON output carries the same, machine-readable.
    let out = run(&["--format", "json", "check", &dir.to_string_lossy()], None);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "policy-validation").count(),
        2,
        "{v}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "case-file").count(),
        1,
        "{v}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_exits_1_when_a_case_fails() {
    let dir = broken_copy(
        "casefail",
        &[(
            "tests/dlp/export.yaml",
            "expect: {outcome: allow, policies: [dlp.export]}",
            "expect: {outcome: deny}",
        )],
    );
    let out = run(&["check", &dir.to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout)
            .contains("FAIL tests/dlp/export.yaml :: exporting ordinary fields is allowed")
    );
    assert!(text(&out.stdout).contains("expected outcome deny"));
    let _ = std::fs::remove_dir_all(dir);
}

const LOGIN: &str = r#"{"principal":{"type":"User","id":"alice"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7"},"now":"2026-11-22T10:00:00Z"}"#;

#[test]
fn decide_exit_codes_follow_the_outcome() {
    let p = policies();
    let out = run(
        &["--format", "json", "decide", "--bundle", &p, "-"],
        Some(LOGIN),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(v["outcome"], "allow");
    assert_eq!(v["policies"][0], "lockout.login");
    assert_eq!(v["audit"]["principal"], "Crm::User::\"alice\"");

    let deny = LOGIN
        .replace("\"login\"", "\"admin\"")
        .replace("sales-cloud", "admin-console");
    let out = run(&["decide", "--bundle", &p], Some(&deny));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("no-permit"));
}

#[test]
fn decide_names_the_field_for_bad_requests() {
    let p = policies();
    let cases = [
        (
            "{\"principal\": {\"type\": \"User\"",
            "malformed request JSON",
            None,
        ),
        (
            r#"{"action":"login","resource":{"type":"App","id":"sales-cloud"}}"#,
            "missing field `principal`",
            Some("principal"),
        ),
        (
            &*LOGIN.replace("\"203.0.113.7\"", "{\"v4\": 1}"),
            "context.ip",
            Some("context.ip"),
        ),
        (
            &*LOGIN.replace("\"ip\":\"203.0.113.7\"", "\"mtls\":{\"verified\":\"yes\"}"),
            "expected a boolean",
            Some("context.mtls.verified"),
        ),
    ];
    for (request, message, field) in cases {
        let out = run(
            &["--format", "json", "decide", "--bundle", &p, "-"],
            Some(request),
        );
        assert_eq!(out.status.code(), Some(2), "{request}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(v["outcome"], "deny", "fails closed: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(message)),
            "{v}"
        );
        assert_eq!(v["error"]["field"].as_str(), field, "{v}");
        // Text mode says it on stderr.
        let out = run(&["decide", "--bundle", &p, "-"], Some(request));
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn decide_reads_a_file_and_reports_a_missing_one() {
    let p = policies();
    let path = std::env::temp_dir().join(format!("portcullis-req-{}.json", std::process::id()));
    let _ = std::fs::write(&path, LOGIN);
    let out = run(&["decide", "--bundle", &p, &path.to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(0));
    let _ = std::fs::remove_file(&path);
    let out = run(&["decide", "--bundle", &p, "/nonexistent/req.json"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/req.json"));
}

#[test]
fn replay_carries_state_and_counts_per_pathway() {
    let traffic = crate::root().join("examples/traffic.jsonl");
    let out = run(
        &[
            "--format",
            "json",
            "replay",
            "--bundle",
            &policies(),
            &traffic.to_string_lossy(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let decisions: Vec<Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let lines = std::fs::read_to_string(&traffic).unwrap_or_default();
    let n = lines
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(decisions.len(), n);
    // carol's ten failures lock her; the lock carries escalation and retry advice.
    let lock = decisions.iter().find(|d| d["outcome"] == "lock");
    assert!(lock.is_some_and(
        |d| d["escalation"] == "security-operations" && d["retry_after"].as_u64().is_some()
    ));
    let summary: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap_or(Value::Null);
    let total: u64 = summary["summary"]["authentic"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert_eq!(total as usize, n);
    // Native and guest replay agree line for line.
    let native = run(
        &[
            "--engine",
            "native",
            "--format",
            "json",
            "replay",
            "--bundle",
            &policies(),
            &traffic.to_string_lossy(),
        ],
        None,
    );
    assert_eq!(text(&native.stdout), text(&out.stdout));
}

#[test]
fn replay_reports_bad_lines_and_exits_2() {
    let traffic = format!("{LOGIN}\n{{\"principal\": 5}}\n{LOGIN}\n");
    let out = run(&["replay", "--bundle", &policies(), "-"], Some(&traffic));
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("2: deny") && l.contains("principal")),
        "{stdout}"
    );
    assert!(stdout.contains("lines with errors: 1"));
}

#[test]
fn help_names_commands_request_format_and_bundle_layout() {
    let out = run(&["--help"], None);
    let help = text(&out.stdout);
    for needle in [
        "check",
        "decide",
        "replay",
        "REQUEST FORMAT",
        "BUNDLE LAYOUT",
        "portcullis.toml",
        "auth_failure",
        "EXIT CODES",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}
