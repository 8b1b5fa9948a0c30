//! The hash-chained audit log: written by `portcullis replay --audit-log`,
//! rotated across files, checked by `portcullis audit verify`, which names
//! the first edited, deleted or reordered line; and what it never holds.

use portcullis_host::audit::{self, AuditWriter};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Run the `portcullis` binary.
pub fn portcullis(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot run portcullis");
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        let _ = pipe.write_all(text.as_bytes());
    }
    child.wait_with_output().expect("portcullis did not finish")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A fresh, empty directory for one test.
pub fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create a scratch directory");
    dir
}

fn policies() -> String {
    crate::root().join("policies").to_string_lossy().to_string()
}

/// examples/traffic.jsonl and every request of the default bundle's cases
/// (tokens, provenance tokens, bodies with PII and secrets), one per line.
fn traffic() -> Vec<String> {
    let examples = std::fs::read_to_string(crate::root().join("examples/traffic.jsonl"))
        .expect("examples/traffic.jsonl");
    let mut lines: Vec<String> = examples
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect();
    let bundle = match portcullis_engine::Bundle::load(&crate::default_files()) {
        Ok(b) => b,
        Err(p) => panic!("the default bundle is refused: {p:?}"),
    };
    for case in bundle.plan() {
        for step in case.steps {
            lines.push(step.request);
        }
    }
    lines
}

/// Replay `lines` with an audit log in `dir`; the decisions printed.
fn replay_logged(dir: &Path, lines: &[String], rotate: u64) -> Vec<Value> {
    let input = dir.join("traffic.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write traffic");
    let log = dir.join("audit.jsonl");
    let out = portcullis(
        &[
            "--format",
            "json",
            "replay",
            "--bundle",
            &policies(),
            "--audit-log",
            log.to_str().expect("utf-8 path"),
            "--audit-rotate-bytes",
            &rotate.to_string(),
            input.to_str().expect("utf-8 path"),
        ],
        None,
    );
    // Some case requests are invalid on purpose: those lines exit 2.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        text(&out.stderr)
    );
    let decisions: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a decision per line"))
        .collect();
    assert_eq!(decisions.len(), lines.len(), "{}", text(&out.stderr));
    decisions
}

fn verify_cli(args: &[&Path]) -> Output {
    let mut a = vec!["audit", "verify"];
    let paths: Vec<String> = args.iter().map(|p| p.display().to_string()).collect();
    a.extend(paths.iter().map(String::as_str));
    portcullis(&a, None)
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read log")
        .lines()
        .map(str::to_string)
        .collect()
}

/// A log of the whole traffic, rotated at 32 KiB, and its decisions.
fn rotated_log(tag: &str) -> (PathBuf, Vec<Value>) {
    let dir = scratch(tag);
    let decisions = replay_logged(&dir, &traffic(), 32 * 1024);
    (dir, decisions)
}

/// A copy of `from`'s log files in a fresh directory.
fn copy_log(from: &Path, tag: &str) -> PathBuf {
    let dir = scratch(tag);
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("audit.jsonl") && !name.ends_with(".lock") {
            std::fs::copy(e.path(), dir.join(&name)).expect("copy");
        }
    }
    dir
}

#[test]
fn a_replayed_log_rotates_across_files_and_verifies_intact() {
    let (dir, decisions) = rotated_log("audit-intact");
    let current = dir.join("audit.jsonl");
    let files = audit::chain_files(&current).expect("chain files");
    assert!(files.len() >= 3, "expected ≥3 files, got {files:?}");
    for (i, f) in files.iter().enumerate().take(files.len() - 1) {
        assert_eq!(f, &dir.join(format!("audit.jsonl.{}", i + 1)));
        assert!(std::fs::metadata(f).expect("stat").len() <= 32 * 1024);
    }
    // Every line is ASCII JSON; seq runs 1..N across files; each file's
    // first line carries the previous file's last hash.
    let mut seq = 0;
    let mut prev = audit::GENESIS.to_string();
    for f in &files {
        for l in lines_of(f) {
            assert!(l.is_ascii());
            let v: Value = serde_json::from_str(&l).expect("JSON line");
            seq += 1;
            assert_eq!(v["seq"], seq);
            assert_eq!(v["prev"], prev.as_str(), "{}:{seq}", f.display());
            assert_eq!(v["kind"], "decision");
            prev = v["hash"].as_str().expect("hash").to_string();
        }
    }
    assert_eq!(seq as usize, decisions.len());
    // The recorded fields follow the decisions.
    let all: Vec<Value> = files
        .iter()
        .flat_map(|f| lines_of(f))
        .map(|l| serde_json::from_str(&l).expect("JSON"))
        .collect();
    for (line, d) in all.iter().zip(&decisions) {
        assert_eq!(line["outcome"], d["outcome"]);
        assert_eq!(line["pathway"], d["pathway"]);
        assert_eq!(line["policies"], d["policies"]);
        assert_eq!(line["principal"], d["audit"]["principal"]);
        assert_eq!(line["request_digest"], d["audit"]["request_digest"]);
        assert_eq!(line["bundle_hash"].as_str().map(str::len), Some(64));
        if d["error"].is_null() {
            assert_eq!(line["reasons"], d["reasons"]);
        }
    }

    let out = verify_cli(&[&current]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains(&format!(
            "intact: {} line(s) in {} file(s), seq 1..{}, head {prev}",
            decisions.len(),
            files.len(),
            decisions.len()
        )),
        "{}",
        text(&out.stdout)
    );
    // The same files named one by one, oldest first.
    let explicit: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    assert_eq!(verify_cli(&explicit).status.code(), Some(0));
    // In the wrong order they are not a chain.
    let mut swapped = explicit.clone();
    swapped.swap(0, 1);
    let out = verify_cli(&swapped);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains(&format!("BROKEN {}:1:", files[1].display())));

    // A second run resumes the chain where it stopped.
    let more = replay_logged(&dir, &traffic()[..20], 32 * 1024);
    let report = audit::verify(std::slice::from_ref(&current));
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.last_seq, Some((decisions.len() + more.len()) as u64));
}

/// Verify the copy in `dir` and expect a break at `file:line` whose reason
/// contains `why`.
fn expect_broken(dir: &Path, file: &str, line: usize, why: &str) {
    let out = verify_cli(&[&dir.join("audit.jsonl")]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let at = format!("BROKEN {}:{line}: ", dir.join(file).display());
    assert!(stdout.contains(&at), "expected `{at}` in\n{stdout}");
    assert!(stdout.contains(why), "expected `{why}` in\n{stdout}");
}

#[test]
fn verify_names_the_line_of_an_edit_a_deletion_and_a_reordering() {
    let (base, _) = rotated_log("audit-tamper");
    let middle = "audit.jsonl.2";

    // Edited: one outcome changed in the middle of a rotated file.
    let dir = copy_log(&base, "audit-edited");
    let mut lines = lines_of(&dir.join(middle));
    let v: Value = serde_json::from_str(&lines[2]).expect("JSON");
    let outcome = v["outcome"].as_str().expect("outcome");
    let forged = if outcome == "allow" { "deny" } else { "allow" };
    lines[2] = lines[2].replacen(
        &format!("\"outcome\":\"{outcome}\""),
        &format!("\"outcome\":\"{forged}\""),
        1,
    );
    std::fs::write(dir.join(middle), lines.join("\n") + "\n").expect("write");
    expect_broken(&dir, middle, 3, "hash mismatch: the line was edited");

    // Deleted: the third line of the middle file.
    let dir = copy_log(&base, "audit-deleted");
    let mut lines = lines_of(&dir.join(middle));
    lines.remove(2);
    std::fs::write(dir.join(middle), lines.join("\n") + "\n").expect("write");
    expect_broken(
        &dir,
        middle,
        3,
        "1 line(s) missing before this one (deleted)",
    );

    // Reordered: lines 3 and 4 swapped.
    let dir = copy_log(&base, "audit-reordered");
    let mut lines = lines_of(&dir.join(middle));
    lines.swap(2, 3);
    std::fs::write(dir.join(middle), lines.join("\n") + "\n").expect("write");
    expect_broken(&dir, middle, 3, "lines reordered");

    // A whole middle file removed: the next file's first line breaks.
    let dir = copy_log(&base, "audit-no-middle");
    std::fs::remove_file(dir.join(middle)).expect("remove");
    expect_broken(&dir, "audit.jsonl.3", 1, "(deleted)");

    // A line appended by hand with a made-up hash.
    let dir = copy_log(&base, "audit-appended");
    let mut lines = lines_of(&dir.join("audit.jsonl"));
    let n = lines.len();
    let mut fake: Value = serde_json::from_str(&lines[n - 1]).expect("JSON");
    fake["seq"] = Value::from(fake["seq"].as_u64().expect("seq") + 1);
    fake["prev"] = fake["hash"].clone();
    fake["hash"] = Value::from("ab".repeat(32));
    lines.push(fake.to_string());
    std::fs::write(dir.join("audit.jsonl"), lines.join("\n") + "\n").expect("write");
    let out = verify_cli(&[&dir.join("audit.jsonl")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains(&format!("audit.jsonl:{}: ", n + 1)));

    // The oldest file removed (retention): strict verification refuses,
    // `--partial` checks what is left.
    let dir = copy_log(&base, "audit-partial");
    std::fs::remove_file(dir.join("audit.jsonl.1")).expect("remove");
    expect_broken(&dir, "audit.jsonl.2", 1, "does not start at its beginning");
    let current = dir.join("audit.jsonl");
    let out = portcullis(
        &[
            "audit",
            "verify",
            "--partial",
            current.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Unreadable input is exit 2, naming it.
    let missing = base.join("no-such-log.jsonl");
    let out = verify_cli(&[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no-such-log.jsonl"));

    // Machine-readable report.
    let out = portcullis(
        &[
            "--format",
            "json",
            "audit",
            "verify",
            base.join("audit.jsonl").to_str().expect("utf-8"),
        ],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(report["broken"].is_null());
    assert!(report["lines"].as_u64().is_some_and(|n| n > 100));
}

/// Every secret-looking string in `request`: tokens, provenance tokens,
/// bodies, and JWT signatures alone.
fn secrets_in(request: &Value, out: &mut Vec<String>) {
    let ctx = &request["context"];
    let mut push = |v: &Value| {
        if let Some(s) = v.as_str().filter(|s| s.len() >= 8) {
            out.push(s.to_string());
            if let Some(sig) = s.rsplit('.').next().filter(|sig| sig.len() >= 16) {
                out.push(sig.to_string());
            }
        }
    };
    push(&ctx["token"]);
    push(&ctx["synthetic"]["provenance"]);
    push(&request["body"]);
    push(&request["body_base64"]);
}

#[test]
fn no_token_password_body_or_match_text_reaches_the_log() {
    let password = "hunter2-Very-S3cret-Passw0rd";
    let mut lines = traffic();
    let req = |ctx: &str, extra: &str| {
        format!(
            r#"{{"principal":{{"type":"User","id":"alice@example.com"}},"action":"login","resource":{{"type":"App","id":"sales-cloud"}},"context":{ctx}{extra},"now":"2026-11-22T10:00:00Z"}}"#
        )
    };
    // A password in an ill-typed field: the engine's error message quotes it.
    lines.push(req(
        &format!(r#"{{"ip":"203.0.113.7","mtls":{{"verified":"{password}"}}}}"#),
        "",
    ));
    // A password as an unknown field, and in the body.
    lines.push(req(
        &format!(r#"{{"ip":"203.0.113.7","password":"{password}"}}"#),
        "",
    ));
    lines.push(req(
        r#"{"ip":"203.0.113.7"}"#,
        &format!(r#","body":"user=alice&password={password}""#),
    ));
    let dir = scratch("audit-secrets");
    let decisions = replay_logged(&dir, &lines, 0);
    let log = std::fs::read_to_string(dir.join("audit.jsonl")).expect("log");

    let mut secrets = vec![password.to_string()];
    let mut findings = 0;
    for (line, d) in lines.iter().zip(&decisions) {
        // A few case requests are malformed on purpose (nesting, syntax).
        let Ok(request) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        secrets_in(&request, &mut secrets);
        // The matched text of every DLP finding, and its digest.
        let body = request["body"].as_str().unwrap_or("");
        for f in d["findings"].as_array().into_iter().flatten() {
            findings += 1;
            let (at, len) = (
                f["offset"].as_u64().unwrap_or(0) as usize,
                f["length"].as_u64().unwrap_or(0) as usize,
            );
            if let Some(m) = body.get(at..at + len).filter(|m| m.len() >= 6) {
                secrets.push(m.to_string());
            }
            if let Some(digest) = f["digest"].as_str() {
                secrets.push(digest.to_string());
            }
        }
    }
    assert!(findings >= 5, "the traffic carries DLP findings");
    assert!(secrets.len() >= 40, "the traffic carries tokens and bodies");
    // The trap is live: the decision itself quotes the ill-typed password.
    let quoted = decisions.iter().any(|d| d.to_string().contains(password));
    assert!(
        quoted,
        "the engine no longer quotes ill-typed values: keep this test honest"
    );
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "the audit log holds `{s}`");
    }
    // Kinds and counts only, and the chain is intact.
    assert!(log.contains(r#""findings":{"card":1}"#), "{log}");
    assert!(log.contains(r#""error":{"kind":"invalid-request","field":"context.mtls.verified"}"#));
    assert!(audit::verify(&[dir.join("audit.jsonl")]).is_intact());
}

#[test]
fn a_field_cannot_forge_a_line() {
    let ids = [
        "mallory\r\n{\"seq\":1,\"kind\":\"decision\",\"outcome\":\"allow\"}",
        "mallory\u{2028}{\"seq\":2}",
        "mallory\u{85}\u{2029}\n",
    ];
    let lines: Vec<String> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "principal": {"type": "User", "id": id},
                "action": "login",
                "resource": {"type": "App", "id": "sales-cloud"},
                "context": {"ip": "203.0.113.7"},
                "now": "2026-11-22T10:00:00Z"
            })
            .to_string()
        })
        .collect();
    let dir = scratch("audit-forge");
    replay_logged(&dir, &lines, 0);
    let raw = std::fs::read(dir.join("audit.jsonl")).expect("log");
    assert!(raw.is_ascii(), "every line is pure ASCII");
    assert!(!raw.contains(&b'\r'));
    let log = String::from_utf8(raw).expect("text");
    assert_eq!(log.lines().count(), ids.len());
    for line in log.lines() {
        // The engine refuses ids with control characters, or Cedar escapes them.
        let v: Value = serde_json::from_str(line).expect("JSON");
        let principal = v["principal"].as_str().expect("principal");
        assert!(
            principal.is_empty() || principal.starts_with("Crm::User::\"mallory"),
            "{principal}"
        );
    }
    assert!(audit::verify(&[dir.join("audit.jsonl")]).is_intact());

    // Whatever a host or engine puts in a decision, the writer keeps it to
    // one line: fields with CR, LF and Unicode separators, given directly.
    let mut w = AuditWriter::open(&dir.join("audit.jsonl"), 0).expect("open");
    for id in ids {
        let decision = serde_json::json!({
            "outcome": "allow", "allowed": true, "policies": ["p"],
            "reasons": [format!("because\n{id}")], "pathway": "authentic",
            "audit": {"principal": id, "action": "login\r\n", "resource": "r\u{2028}"}
        });
        w.append_decision("{}", &decision.to_string(), &"d".repeat(64))
            .expect("append");
    }
    drop(w);
    let log = std::fs::read_to_string(dir.join("audit.jsonl")).expect("log");
    assert!(log.is_ascii());
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2 * ids.len());
    for (line, id) in lines[ids.len()..].iter().zip(ids) {
        let v: Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(v["principal"], id, "kept exactly, escaped");
        assert_eq!(v["reasons"][0], format!("because\n{id}"));
    }
    assert!(audit::verify(&[dir.join("audit.jsonl")]).is_intact());

    // A swap reason with line breaks stays one line too.
    let mut w = AuditWriter::open(&dir.join("audit.jsonl"), 0).expect("open");
    w.append_swap(
        "refused",
        Some(&"a".repeat(64)),
        Some(&"b".repeat(64)),
        Some("bad\nline\r\n{\"seq\":99}"),
    )
    .expect("append");
    drop(w);
    let log = std::fs::read_to_string(dir.join("audit.jsonl")).expect("log");
    assert_eq!(log.lines().count(), 2 * ids.len() + 1);
    let last: Value = serde_json::from_str(log.lines().last().expect("line")).expect("JSON");
    assert_eq!(last["kind"], "swap");
    assert_eq!(last["reason"], "bad\nline\r\n{\"seq\":99}");
    assert!(audit::verify(&[dir.join("audit.jsonl")]).is_intact());
}

#[test]
fn the_writer_resumes_refuses_a_second_writer_and_a_torn_tail() {
    let dir = scratch("audit-writer");
    let path = dir.join("audit.jsonl");
    let mut w = AuditWriter::open(&path, 400).expect("open");
    assert_eq!(w.head(), (0, audit::GENESIS));
    // A second writer on the same chain is refused while the first lives.
    let second = AuditWriter::open(&path, 400);
    assert!(
        second
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("another process is writing")),
        "{second:?}"
    );
    for i in 0..6 {
        w.append_swap(
            "accepted",
            Some(&format!("{i:064}")),
            Some(&format!("{:064}", i + 1)),
            None,
        )
        .expect("append");
    }
    w.flush().expect("flush");
    let (seq, head) = (w.head().0, w.head().1.to_string());
    assert_eq!(seq, 6);
    drop(w);
    // Rotated at 400 bytes: several files, and the chain resumes on reopen.
    assert!(audit::rotated(&path).expect("rotated").len() >= 2);
    let mut w = AuditWriter::open(&path, 400).expect("reopen");
    assert_eq!(w.head(), (6, head.as_str()));
    w.append_decision("{}", "not json", "c".repeat(64).as_str())
        .expect("append");
    drop(w);
    let report = audit::verify(std::slice::from_ref(&path));
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.last_seq, Some(7));
    let last = lines_of(&path).pop().expect("line");
    assert!(
        last.contains(r#""error":{"kind":"malformed-decision"}"#),
        "{last}"
    );

    // A torn last line: the writer will not guess, verify names it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"{\"seq\":8,\"ti").expect("write");
    drop(f);
    let err = AuditWriter::open(&path, 400).expect_err("torn tail");
    assert!(format!("{err:#}").contains("incomplete"), "{err:#}");
    let report = audit::verify(std::slice::from_ref(&path));
    let broken = report.broken.expect("broken");
    assert_eq!(broken.file, path);
    assert!(broken.reason.contains("incomplete last line"));
}
