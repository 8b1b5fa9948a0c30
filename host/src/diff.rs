//! `portcullis diff --from OLD --to NEW TRAFFIC`: change review by replay.
//!
//! Replays recorded traffic through two bundles, each with its own state
//! (lockout counters, buckets and grants evolve per bundle, as they would in
//! production), and reports every decision that changes, grouped by outcome
//! and determining policies (from → to), as text or JSON.
//!
//! Accepted traffic: a JSONL trace of requests and events, one per line, as
//! `replay` takes (blank lines and `#` comments skipped). The audit log is
//! not accepted: it keeps request digests, never the requests, so there is
//! nothing to replay; a line that looks like an audit record is an error
//! naming it.
//!
//! A decision *changes* when its outcome, its determining policies, its
//! pathway or its fault kind differ between the bundles.
//!
//! A changed decision is *covered* when every policy that determines it in
//! the new bundle is exercised by at least one case of the new bundle whose
//! expected outcome equals the new outcome: a case step with `expect.outcome`
//! equal to that outcome, whose decision (run from empty state, as `check`
//! runs it) has that outcome and lists that policy. A decision with no
//! determining policy (`no-permit`) stands for the pseudo-policy
//! `(no-permit)`, and a fault for `(error:KIND)`; they are covered by a case
//! step expecting the same outcome whose decision has no policy (or the same
//! fault). Exit codes: 0 nothing changed that is not covered, 1 a change is
//! not covered, 2 an error (unreadable traffic, an audit log, a refused
//! bundle).

use crate::{Backend, Cli, Format, load_or_report};
use anyhow::{Context, Result, bail};
use portcullis_engine::cases::PlannedCase;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

/// How many line numbers a group lists in text.
const TEXT_LINES: usize = 10;

/// What of a decision is compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Shape {
    outcome: String,
    policies: Vec<String>,
    pathway: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Shape {
    fn of(v: &Value) -> Shape {
        let mut policies: Vec<String> = v["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        policies.sort();
        Shape {
            outcome: v["outcome"].as_str().unwrap_or("?").to_string(),
            policies,
            pathway: v["pathway"].as_str().unwrap_or("?").to_string(),
            error: v["error"]["kind"].as_str().map(str::to_string),
        }
    }

    /// The policies a coverage check needs: the determining ones, or the
    /// pseudo-policy of a decision without any.
    fn coverage_keys(&self) -> Vec<String> {
        match (&self.error, self.policies.is_empty()) {
            (Some(kind), _) => vec![format!("(error:{kind})")],
            (None, true) => vec!["(no-permit)".to_string()],
            (None, false) => self.policies.clone(),
        }
    }
}

/// One changed decision.
#[derive(Debug, Serialize)]
struct Change {
    line: usize,
    from: Shape,
    to: Shape,
    reasons: Vec<String>,
    covered: bool,
    /// Policies of the new decision no case of the new bundle exercises
    /// with this outcome.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    uncovered_policies: Vec<String>,
}

/// Changes with the same from → to.
#[derive(Debug, Serialize)]
struct Group {
    from_outcome: String,
    to_outcome: String,
    from_policies: Vec<String>,
    to_policies: Vec<String>,
    from_pathway: String,
    to_pathway: String,
    count: usize,
    covered: bool,
    uncovered_policies: Vec<String>,
    lines: Vec<usize>,
}

/// (policy, outcome) pairs the new bundle's cases exercise, and how its
/// cases fared.
struct Coverage {
    exercised: BTreeSet<(String, String)>,
    passed: usize,
    failed: usize,
}

/// Run `diff`.
pub(crate) fn run(cli: &Cli, from: &Path, to: &Path, traffic: &Path) -> Result<u8> {
    let mut old = Backend::new(cli)?;
    let Some(old_info) = load_or_report(cli, &mut old, from)? else {
        return Ok(2);
    };
    let mut new = Backend::new(cli)?;
    let Some(new_info) = load_or_report(cli, &mut new, to)? else {
        return Ok(2);
    };
    let coverage = coverage(&mut new)?;
    // Cases ran from empty state each; the replay starts from empty state too.
    let mut new = Backend::new(cli)?;
    if load_or_report(cli, &mut new, to)?.is_none() {
        return Ok(2);
    }

    let reader: Box<dyn BufRead> = if traffic == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(traffic)
                .with_context(|| format!("cannot open `{}`", traffic.display()))?,
        ))
    };
    let mut total = 0usize;
    let mut changes = Vec::new();
    let mut batch: Vec<(usize, String)> = Vec::new();
    let mut flush = |batch: &mut Vec<(usize, String)>, changes: &mut Vec<Change>| -> Result<()> {
        let requests: Vec<String> = batch.iter().map(|(_, r)| r.clone()).collect();
        let a = old.decide_batch(&requests);
        let b = new.decide_batch(&requests);
        for (((line, _), a), b) in batch.iter().zip(a).zip(b) {
            let va: Value = serde_json::from_str(&a).with_context(|| {
                format!("line {line}: the engine returned a malformed decision")
            })?;
            let vb: Value = serde_json::from_str(&b).with_context(|| {
                format!("line {line}: the engine returned a malformed decision")
            })?;
            let (sa, sb) = (Shape::of(&va), Shape::of(&vb));
            if sa != sb {
                let uncovered: Vec<String> = sb
                    .coverage_keys()
                    .into_iter()
                    .filter(|p| {
                        !coverage
                            .exercised
                            .contains(&(p.clone(), sb.outcome.clone()))
                    })
                    .collect();
                changes.push(Change {
                    line: *line,
                    reasons: vb["reasons"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect(),
                    from: sa,
                    to: sb,
                    covered: uncovered.is_empty(),
                    uncovered_policies: uncovered,
                });
            }
        }
        batch.clear();
        Ok(())
    };
    for (i, line) in reader.lines().enumerate() {
        let line =
            line.with_context(|| format!("cannot read line {} of `{}`", i + 1, traffic.display()))?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if looks_like_audit(trimmed) {
            bail!(
                "line {} of `{}` is an audit record: the audit log keeps request digests, not requests, so it cannot be replayed; give a JSONL trace of requests (as `replay` takes)",
                i + 1,
                traffic.display()
            );
        }
        total += 1;
        batch.push((i + 1, line));
        if batch.len() >= 256 {
            flush(&mut batch, &mut changes)?;
        }
    }
    flush(&mut batch, &mut changes)?;

    let groups = group(&changes);
    let uncovered = changes.iter().filter(|c| !c.covered).count();
    let mut by_policy: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for c in &changes {
        for p in c
            .from
            .policies
            .iter()
            .filter(|p| !c.to.policies.contains(p))
        {
            by_policy.entry(p.clone()).or_default().1 += 1;
        }
        for p in
            c.to.policies
                .iter()
                .filter(|p| !c.from.policies.contains(p))
        {
            by_policy.entry(p.clone()).or_default().0 += 1;
        }
    }
    match cli.format {
        Format::Json => {
            let policies: BTreeMap<&String, Value> = by_policy
                .iter()
                .map(|(p, (gained, lost))| (p, json!({"gained": gained, "lost": lost})))
                .collect();
            println!(
                "{}",
                json!({
                    "from": {"name": old_info.name, "version": old_info.version, "hash": old_info.hash},
                    "to": {"name": new_info.name, "version": new_info.version, "hash": new_info.hash},
                    "new_cases": {"passed": coverage.passed, "failed": coverage.failed},
                    "decisions": total,
                    "changed": changes.len(),
                    "uncovered": uncovered,
                    "groups": groups,
                    "policies": policies,
                    "changes": changes,
                })
            );
        }
        _ => {
            println!(
                "{} {} -> {} {}: {} decisions replayed, {} changed, {} not covered by the new bundle's cases",
                old_info.name,
                old_info.version,
                new_info.name,
                new_info.version,
                total,
                changes.len(),
                uncovered
            );
            if coverage.failed > 0 {
                println!(
                    "warning: the new bundle fails {} of its own cases (`portcullis check {}`)",
                    coverage.failed,
                    to.display()
                );
            }
            for g in &groups {
                let path = if g.from_pathway == g.to_pathway {
                    String::new()
                } else {
                    format!(" (pathway {} -> {})", g.from_pathway, g.to_pathway)
                };
                println!();
                println!(
                    "{} -> {}{}: {}  [{}] -> [{}]  {}",
                    g.from_outcome,
                    g.to_outcome,
                    path,
                    g.count,
                    g.from_policies.join(", "),
                    g.to_policies.join(", "),
                    if g.covered {
                        "covered".to_string()
                    } else {
                        format!(
                            "NOT COVERED: no case of the new bundle expects {} from {}",
                            g.to_outcome,
                            g.uncovered_policies.join(", ")
                        )
                    }
                );
                let shown: Vec<String> = g
                    .lines
                    .iter()
                    .take(TEXT_LINES)
                    .map(|l| l.to_string())
                    .collect();
                let more = g.lines.len().saturating_sub(TEXT_LINES);
                println!(
                    "    lines {}{}",
                    shown.join(", "),
                    if more > 0 {
                        format!(" … and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
            if !by_policy.is_empty() {
                println!();
                println!("by policy (decisions it now determines / no longer determines):");
                for (p, (gained, lost)) in &by_policy {
                    println!("  {p}: +{gained} -{lost}");
                }
            }
        }
    }
    Ok(if uncovered > 0 { 1 } else { 0 })
}

/// An audit line: `seq`, `kind` and `request_digest`, no request.
fn looks_like_audit(line: &str) -> bool {
    match serde_json::from_str::<Value>(line) {
        Ok(v) => {
            v.get("request_digest").is_some()
                && v.get("seq").is_some()
                && v.get("principal").is_some_and(|p| !p.is_object())
        }
        Err(_) => false,
    }
}

fn group(changes: &[Change]) -> Vec<Group> {
    let mut groups: BTreeMap<(Shape, Shape), Group> = BTreeMap::new();
    for c in changes {
        let g = groups
            .entry((c.from.clone(), c.to.clone()))
            .or_insert_with(|| Group {
                from_outcome: c.from.outcome.clone(),
                to_outcome: c.to.outcome.clone(),
                from_policies: c.from.coverage_keys(),
                to_policies: c.to.coverage_keys(),
                from_pathway: c.from.pathway.clone(),
                to_pathway: c.to.pathway.clone(),
                count: 0,
                covered: c.covered,
                uncovered_policies: c.uncovered_policies.clone(),
                lines: Vec::new(),
            });
        g.count += 1;
        g.lines.push(c.line);
    }
    let mut out: Vec<Group> = groups.into_values().collect();
    // Uncovered first, then the largest.
    out.sort_by(|a, b| {
        a.covered
            .cmp(&b.covered)
            .then(b.count.cmp(&a.count))
            .then(a.to_policies.cmp(&b.to_policies))
    });
    out
}

/// Which (policy, outcome) pairs the loaded bundle's cases exercise.
fn coverage(backend: &mut Backend) -> Result<Coverage> {
    let plan: Vec<PlannedCase> = match backend {
        Backend::Guest(g) => g.case_plan()?,
        Backend::Native(Some(b), _) => b.plan(),
        Backend::Native(None, _) => bail!("no bundle is loaded"),
    };
    let decisions = backend.case_decisions()?;
    let mut exercised = BTreeSet::new();
    let (mut passed, mut failed) = (0, 0);
    for (case, ran) in plan.iter().zip(&decisions) {
        let ran = ran["decisions"].as_array().cloned().unwrap_or_default();
        let mut ok = true;
        for (step, d) in case.steps.iter().zip(&ran) {
            let Some(expect) = &step.expect else {
                continue;
            };
            let text = d.to_string();
            if !portcullis_engine::cases::check_decision(step.step, expect, &text).is_empty() {
                ok = false;
            }
            let Some(want) = expect.outcome else {
                continue;
            };
            let shape = Shape::of(d);
            if shape.outcome != want.as_str() {
                continue;
            }
            for p in shape.coverage_keys() {
                exercised.insert((p, shape.outcome.clone()));
            }
        }
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    Ok(Coverage {
        exercised,
        passed,
        failed,
    })
}
