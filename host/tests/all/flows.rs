//! `portcullis flows check` on the default bundle's inventory: each flow's
//! verdict and legal basis, the control map, stale adequacy data, load
//! errors naming file and line, and the HTML report rendered by a real
//! headless Chromium (screenshot kept in target/flows-artifacts/).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A date when the shipped adequacy data is current.
const TODAY: &str = "2026-11-23";

pub(crate) fn portcullis(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run portcullis: {e}"),
    }
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

pub(crate) fn policies() -> String {
    crate::root().join("policies").to_string_lossy().to_string()
}

/// A fresh copy of the default bundle with edits `(file, from, to)`.
pub(crate) fn copy_with(tag: &str, edits: &[(&str, &str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-flows-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, mut body) in crate::default_files() {
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

fn line_of(dir: &Path, file: &str, needle: &str) -> usize {
    let body = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    body.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// `flows check --format json`: exit code and report.
fn report(bundle: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["--format", "json", "flows", "check", bundle];
    args.extend_from_slice(extra);
    let out = portcullis(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "flows check printed no JSON ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code(), v)
}

fn flow<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["flows"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["flow"]["id"] == id))
        .unwrap_or_else(|| panic!("no flow `{id}` in the report"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn each_flow_of_the_inventory_gets_its_verdict_and_basis() {
    let (code, r) = report(&policies(), &["--now", TODAY]);
    assert_eq!(code, Some(1), "two flows have no legal basis: exit 1");
    assert_eq!(r["flows"].as_array().map(Vec::len), Some(10));
    assert_eq!(r["adequacy_as_of"], "2026-09-01");
    assert_eq!(strings(&r["warnings"]), Vec::<&str>::new(), "current data");

    // (allowed, basis kind, mechanism, article, reference fragment)
    let expected: [(&str, bool, &str, &str, &str, &str); 10] = [
        ("crm-replica-eu", true, "within-eea", "", "", ""),
        (
            "support-desk-uk",
            true,
            "adequacy",
            "adequacy-decision",
            "Art. 45",
            "2021/1772",
        ),
        (
            "marketing-analytics-us",
            false,
            "adequacy",
            "eu-us-dpf",
            "Art. 45",
            "2023/1795",
        ),
        ("campaign-mailing-us", false, "none", "", "", ""),
        (
            "support-offshore-in",
            true,
            "art46",
            "scc",
            "Art. 46(2)(c)",
            "2021/914",
        ),
        ("billing-bpo-in", false, "none", "", "", ""),
        (
            "latam-sales-br",
            true,
            "adequacy",
            "adequacy-decision",
            "Art. 45",
            "Brazil",
        ),
        (
            "synthetic-load-fixtures",
            true,
            "adequacy",
            "adequacy-decision",
            "Art. 45",
            "2000/518/EC",
        ),
        (
            "patent-filings-epo",
            true,
            "adequacy",
            "adequacy-decision",
            "Art. 45",
            "European Patent Organisation",
        ),
        (
            "litigation-hold-us",
            true,
            "art49",
            "legal-claims",
            "Art. 49(1)(e)",
            "",
        ),
    ];
    for (id, allowed, kind, mechanism, article, reference) in expected {
        let f = flow(&r, id);
        assert_eq!(f["allowed"], allowed, "{id}: {f}");
        assert_eq!(f["basis"]["kind"], kind, "{id}");
        assert_eq!(f["basis"]["mechanism"], mechanism, "{id}");
        assert_eq!(f["basis"]["article"], article, "{id}");
        assert!(
            f["basis"]["reference"]
                .as_str()
                .is_some_and(|s| s.contains(reference)),
            "{id}: reference {}",
            f["basis"]["reference"]
        );
        assert_eq!(f["has_basis"], kind != "none", "{id}");
        assert!(f["error"].is_null(), "{id}: {}", f["error"]);
    }

    // Denied for different reasons, each named.
    let dpf = flow(&r, "marketing-analytics-us");
    assert_eq!(strings(&dpf["policies"]), ["dlp.minimise"]);
    assert_eq!(strings(&dpf["dropped_fields"]), ["Phone"]);
    assert!(
        dpf["basis"]["label"]
            .as_str()
            .unwrap_or("")
            .contains("acme-analytics")
    );
    let no_dpf = flow(&r, "campaign-mailing-us");
    assert_eq!(strings(&no_dpf["policies"]), ["access.transfer.no-basis"]);
    assert_eq!(no_dpf["escalation"], "compliance");
    let missing = no_dpf["missing"].as_str().unwrap_or("");
    assert!(
        missing.contains("Data Privacy Framework") && missing.contains("globex-marketing"),
        "{missing}"
    );
    let india = flow(&r, "billing-bpo-in");
    assert_eq!(strings(&india["policies"]), ["access.transfer.no-basis"]);
    let missing = india["missing"].as_str().unwrap_or("");
    assert!(
        missing.contains("no adequacy decision for IN") && missing.contains("2026-09-01"),
        "{missing}"
    );
    assert!(
        strings(&india["notes"])
            .iter()
            .any(|n| n.contains("no minimisation rule")),
        "{}",
        india["notes"]
    );
    assert!(
        strings(&flow(&r, "litigation-hold-us")["notes"])
            .iter()
            .any(|n| n.contains("occasional")),
        "an Art. 49 derogation is flagged for systematic use"
    );
    assert_eq!(
        flow(&r, "synthetic-load-fixtures")["flow"]["synthetic"],
        true
    );

    let s = &r["summary"];
    assert_eq!(
        (
            &s["flows"],
            &s["allowed"],
            &s["denied"],
            &s["without_basis"],
            &s["with_dropped_fields"]
        ),
        (&10.into(), &7.into(), &3.into(), &2.into(), &1.into())
    );
}

#[test]
fn controls_list_their_evidence_or_none() {
    let (_, r) = report(&policies(), &["--now", TODAY]);
    let controls = r["controls"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = controls.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "nis2-21-2-a",
            "nis2-21-2-b",
            "nis2-21-2-c",
            "nis2-21-2-d",
            "nis2-21-2-e",
            "nis2-21-2-f",
            "nis2-21-2-g",
            "nis2-21-2-h",
            "nis2-21-2-i",
            "nis2-21-2-j",
            "ai-act-50"
        ]
    );
    let by_id = |id: &str| {
        controls
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_id("nis2-21-2-b")["title"], "incident handling");
    for id in ["nis2-21-2-c", "nis2-21-2-e", "nis2-21-2-g"] {
        assert_eq!(by_id(id)["status"], "no evidence", "{id}");
    }
    let d = by_id("nis2-21-2-d");
    assert_eq!(d["status"], "evidenced");
    assert!(
        d["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["id"] == "access.transfer.no-basis" && p["file"] == "access.cedar"),
        "{d}"
    );
    assert!(
        d["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|c| c["passed"] == true
                && c["file"].as_str().is_some_and(|f| f.starts_with("tests/"))),
        "{d}"
    );
    let ai = by_id("ai-act-50");
    assert_eq!(
        (ai["applicable"].clone(), ai["status"].clone()),
        (true.into(), "evidenced".into())
    );

    // Without a synthetic flow the AI Act measure does not apply.
    let dir = copy_with("nosynth", &[("flows.yaml", "    synthetic: true\n", "")]);
    let (_, r) = report(
        &dir.to_string_lossy(),
        &["--now", TODAY, "--engine", "native"],
    );
    let ai = r["controls"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "ai-act-50"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (ai["applicable"].clone(), ai["status"].clone()),
        (false.into(), "not applicable".into())
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_evidence_case_is_reported_as_such() {
    let dir = copy_with(
        "failing",
        &[(
            "tests/access/mtls.yaml",
            "expect: {outcome: deny, policies: [access.service.mtls]}",
            "expect: {outcome: allow}",
        )],
    );
    let (_, r) = report(
        &dir.to_string_lossy(),
        &["--now", TODAY, "--engine", "native"],
    );
    let d = r["controls"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "nis2-21-2-d"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(d["status"], "failing evidence", "{d}");
    assert!(
        strings(&r["warnings"])
            .iter()
            .any(|w| w.contains("case(s) of the bundle fail")),
        "{}",
        r["warnings"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn guest_and_native_reports_are_the_same() {
    let (g_code, guest) = report(&policies(), &["--now", TODAY]);
    let (n_code, native) = report(&policies(), &["--now", TODAY, "--engine", "native"]);
    assert_eq!(g_code, n_code);
    assert_eq!(guest, native);
}

#[test]
fn stale_adequacy_data_is_a_warning_in_every_format() {
    let later = "2027-03-15";
    let (code, r) = report(&policies(), &["--now", later]);
    assert_eq!(
        code,
        Some(1),
        "staleness warns, it does not change the verdicts"
    );
    let w = strings(&r["warnings"]).join(" ");
    assert!(w.contains("stale") && w.contains("2027-03-01"), "{w}");

    let out = portcullis(&["flows", "check", &policies(), "--now", later]);
    let t = text(&out.stdout);
    assert!(
        t.contains("WARNING: adequacy data in adequacy.json is stale"),
        "{t}"
    );

    let out = portcullis(&[
        "--format",
        "html",
        "flows",
        "check",
        &policies(),
        "--now",
        later,
    ]);
    let h = text(&out.stdout);
    assert!(
        h.contains(
            "<div class=\"warning\" role=\"alert\">Warning: adequacy data in adequacy.json is stale"
        ),
        "{h}"
    );

    // Past the maximum age too: the date is in the manifest's max age.
    let (_, r) = report(&policies(), &["--now", "2027-09-02"]);
    let w = strings(&r["warnings"]).join(" ");
    assert!(w.contains("366 days old"), "{w}");
    let (_, r) = report(&policies(), &["--now", TODAY]);
    assert!(r["warnings"].as_array().is_some_and(Vec::is_empty));
}

#[test]
fn every_flow_with_a_basis_exits_zero() {
    let dir = copy_with(
        "allbasis",
        &[
            (
                "flows.yaml",
                "    recipient: globex-marketing\n    data_categories: [contact]\n    purpose: newsletter mailing\n    mechanism: none",
                "    recipient: globex-marketing\n    data_categories: [contact]\n    purpose: newsletter mailing\n    mechanism: scc",
            ),
            (
                "flows.yaml",
                "    purpose: invoice reconciliation\n    mechanism: none",
                "    purpose: invoice reconciliation\n    mechanism: bcr",
            ),
        ],
    );
    let (code, r) = report(&dir.to_string_lossy(), &["--now", TODAY]);
    assert_eq!(code, Some(0), "{}", r["summary"]);
    assert_eq!(flow(&r, "billing-bpo-in")["basis"]["mechanism"], "bcr");
    assert_eq!(r["summary"]["without_basis"], 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_inventory_or_control_map_is_refused_naming_file_and_line() {
    let cases: [(&str, &str, &str, &str, &str); 6] = [
        (
            "flows.yaml",
            "region: sa-east, country: BR",
            "region: sa-east, country: AR",
            "is not where region `sa-east` is",
            "country: AR",
        ),
        (
            "flows.yaml",
            "region: ap-south, country: IN}\n    recipient: mumbai",
            "region: ap-sout, country: IN}\n    recipient: mumbai",
            "unknown destination region `ap-sout`",
            "ap-sout,",
        ),
        (
            "flows.yaml",
            "mechanism: legal-claims",
            "mechanism: legitimate-interest",
            "unknown mechanism `legitimate-interest`",
            "legitimate-interest",
        ),
        (
            "flows.yaml",
            "    purpose: patent filing",
            "    purpose: patent filing\n    purpse: typo",
            "purpse",
            "purpse",
        ),
        (
            "portcullis.toml",
            "\"access.admin.jit\", ",
            "\"access.admin.jitt\", ",
            "no policy with id `access.admin.jitt`",
            "access.admin.jitt",
        ),
        (
            "portcullis.toml",
            "\"the grant lifecycle\"",
            "\"the grant life\"",
            "no case named `the grant life`",
            "the grant life",
        ),
    ];
    for (i, (file, from, to, message, needle)) in cases.into_iter().enumerate() {
        let dir = copy_with(&format!("bad{i}"), &[(file, from, to)]);
        let out = portcullis(&[
            "--engine",
            "native",
            "flows",
            "check",
            &dir.to_string_lossy(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        let line = line_of(&dir, file, needle);
        assert!(line > 0);
        assert!(
            err.contains(&format!("{file}:{line}:")) && err.contains(message),
            "expected `{file}:{line}:` and `{message}` in: {err}"
        );
        // The same problem refuses the bundle everywhere, in the guest too.
        let out = portcullis(&["check", &dir.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(&format!("{file}:{line}:")));
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Headless Debian Chromium (`make test` installs it).
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "{} is missing: `make test` installs it (apt-get install -y chromium), or set CHROMIUM",
        path.display()
    );
    path
}

#[test]
fn the_html_report_renders_in_a_headless_browser() {
    let artifacts = crate::root().join("target/flows-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let html = artifacts.join("report.html");
    let png = artifacts.join("report.png");
    let _ = std::fs::remove_file(&png);
    let out = portcullis(&[
        "--format",
        "html",
        "flows",
        "check",
        &policies(),
        "--now",
        TODAY,
        "-o",
        &html.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("<script"),
        "self-contained: no external asset, no script"
    );

    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let browser = chromium();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-gpu",
        "--hide-scrollbars",
    ];
    let dom = Command::new(&browser)
        .args(common)
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    assert!(dom.status.success(), "{}", text(&dom.stderr));
    let dom = text(&dom.stdout);
    // The table as the browser parsed it: one row per flow, in order, with
    // its verdict and basis; one per control measure.
    let rows: Vec<&str> = dom.split("<tr class=\"flow\"").skip(1).collect();
    assert_eq!(rows.len(), 10, "{dom}");
    let attr = |row: &str, name: &str| -> String {
        row.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    let seen: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                attr(r, "data-flow"),
                attr(r, "data-verdict"),
                attr(r, "data-basis"),
            )
        })
        .collect();
    let want = [
        ("crm-replica-eu", "allowed", "within-eea"),
        ("support-desk-uk", "allowed", "adequacy"),
        ("marketing-analytics-us", "denied", "adequacy"),
        ("campaign-mailing-us", "denied", "none"),
        ("support-offshore-in", "allowed", "art46"),
        ("billing-bpo-in", "denied", "none"),
        ("latam-sales-br", "allowed", "adequacy"),
        ("synthetic-load-fixtures", "allowed", "adequacy"),
        ("patent-filings-epo", "allowed", "adequacy"),
        ("litigation-hold-us", "allowed", "art49"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, want);
    let billing = rows.get(5).copied().unwrap_or("");
    assert!(
        billing.contains("no legal basis")
            && billing.contains("Missing: no adequacy decision for IN")
    );
    assert!(
        rows.get(2).copied().unwrap_or("").contains("Phone"),
        "dropped field shown"
    );
    assert_eq!(dom.matches("<tr class=\"control\"").count(), 11);
    assert!(dom.contains("data-measure=\"nis2-21-2-c\" data-status=\"no evidence\""));

    let shot = Command::new(&browser)
        .args(common)
        .args([
            "--window-size=1400,2600",
            &format!("--screenshot={}", png.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(shot.status.success(), "{}", text(&shot.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "a real screenshot"
    );
}
