//! The one case format, and the runner every host shares.
//!
//! A case file (`tests/**/*.yaml` in a bundle) holds optional `defaults`
//! merged into every request, and a list of `cases`. A case is a single
//! `request` with its `expect`, or a sequence of `steps`, each a request or
//! event with an optional `repeat` (and `advance` of `now` between repeats)
//! and an optional `expect`. Each case starts from empty state.
//!
//! The runner takes a decider (`request JSON -> decision JSON`), so the very
//! same cases run against the native engine, the guest in wasmtime, the
//! Envoy filter and the Node and Python bindings.

use crate::error::{BundleProblem, Location, ProblemKind};
use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a step must produce. Absent fields are not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The determining policy ids, exactly (any order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    /// One of the reasons equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The escalation target (`null`: none).
    #[serde(
        default,
        deserialize_with = "some_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub escalation: Option<Option<String>>,
    /// Retry advice in seconds (`null`: none).
    #[serde(
        default,
        deserialize_with = "some_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<Option<u64>>,
    /// The pathway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pathway: Option<String>,
    /// The lockout stage of the leading key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// A subset of the audit record's derived facts, e.g.
    /// `{synthetic: {status: unverified, failure: expired}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Value>,
    /// The kinds of the DLP findings, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<String>>,
    /// The DLP findings with where they are, in order: each
    /// `{kind, offset, length}` (offsets count from the body's start, also
    /// for `body_chunks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding_spans: Option<Vec<FindingSpan>>,
    /// The redacted body, byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_body: Option<String>,
    /// The fields minimisation drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_fields: Option<Vec<String>>,
    /// The decision is a fault whose error names this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_field: Option<String>,
    /// The decision is a fault of this kind (`invalid-request` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

/// A finding's kind and place, as a case expects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingSpan {
    /// Detector kind.
    pub kind: String,
    /// Byte offset in the body.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

fn some_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The request or event (merged over the file's `defaults`).
    pub request: Value,
    /// Send it this many times (default 1); `expect` applies to the last.
    #[serde(default = "one")]
    pub repeat: u32,
    /// Move `now` forward by this much between repeats ("30s").
    #[serde(default)]
    pub advance: Option<String>,
    /// What the (last) decision must be.
    #[serde(default)]
    pub expect: Option<Expect>,
}

fn one() -> u32 {
    1
}

/// One case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Its name, unique in the file.
    pub name: String,
    /// A single request (with `expect`) …
    #[serde(default)]
    pub request: Option<Value>,
    /// … and what it must produce.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// … or a sequence.
    #[serde(default)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Option<Value>,
    cases: Vec<Case>,
}

/// One case file, parsed and expanded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseFile {
    /// File name in the bundle.
    pub file: String,
    /// Its cases, with `request`/`expect` turned into one step and
    /// `defaults` merged into every request.
    pub cases: Vec<Case>,
}

impl CaseFile {
    /// Parse a case file.
    pub fn parse(file: &str, text: &str) -> Result<CaseFile, BundleProblem> {
        let raw: RawFile = serde_norway::from_str(text).map_err(|e| {
            let loc = match e.location() {
                Some(l) => Location::at_line(file, text, l.line() as u32, l.column() as u32),
                None => Location::file(file),
            };
            let msg = e.to_string();
            // serde_norway appends " at line N column M"; the location says it.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            BundleProblem::at(ProblemKind::CaseFile, loc, msg)
        })?;
        let at_name = |name: &str| {
            let off = text
                .find(&format!("name: {name}"))
                .or_else(|| text.find(name))
                .unwrap_or(0);
            Location::at_offset(file, text, off)
        };
        let mut names = std::collections::HashSet::new();
        let mut cases = Vec::new();
        for mut case in raw.cases {
            if !names.insert(case.name.clone()) {
                return Err(BundleProblem::at(
                    ProblemKind::CaseFile,
                    at_name(&case.name),
                    format!("case name `{}` is used twice", case.name),
                ));
            }
            match (case.request.take(), case.steps.is_empty()) {
                (Some(request), true) => {
                    case.steps.push(Step {
                        request,
                        repeat: 1,
                        advance: None,
                        expect: case.expect.take(),
                    });
                }
                (None, false) if case.expect.is_none() => {}
                _ => {
                    return Err(BundleProblem::at(
                        ProblemKind::CaseFile,
                        at_name(&case.name),
                        format!(
                            "case `{}` must have either `request` with `expect`, or `steps`",
                            case.name
                        ),
                    ));
                }
            }
            for step in &mut case.steps {
                if let Some(defaults) = &raw.defaults {
                    step.request = merge(defaults, &step.request);
                }
                if let Some(a) = &step.advance
                    && humantime::parse_duration(a).is_err()
                {
                    return Err(BundleProblem::at(
                        ProblemKind::CaseFile,
                        at_name(&case.name),
                        format!(
                            "case `{}`: `advance: {a}` is not a duration like \"30s\"",
                            case.name
                        ),
                    ));
                }
                if !(step.request.is_object() || step.request.is_string()) {
                    return Err(BundleProblem::at(
                        ProblemKind::CaseFile,
                        at_name(&case.name),
                        format!(
                            "case `{}`: a request must be a mapping (or a string: its JSON text as sent)",
                            case.name
                        ),
                    ));
                }
            }
            if !case.steps.iter().any(|s| s.expect.is_some()) {
                return Err(BundleProblem::at(
                    ProblemKind::CaseFile,
                    at_name(&case.name),
                    format!(
                        "case `{}` expects nothing; give at least one `expect`",
                        case.name
                    ),
                ));
            }
            cases.push(case);
        }
        Ok(CaseFile {
            file: file.to_string(),
            cases,
        })
    }
}

/// Defaults under a request: top-level keys of the request win, and
/// `context` is merged key by key.
fn merge(defaults: &Value, request: &Value) -> Value {
    let (Some(d), Some(r)) = (defaults.as_object(), request.as_object()) else {
        return request.clone();
    };
    let mut out = d.clone();
    for (k, v) in r {
        match (k.as_str(), out.get_mut(k)) {
            ("context", Some(Value::Object(dc))) if v.is_object() => {
                if let Some(rc) = v.as_object() {
                    for (ck, cv) in rc {
                        dc.insert(ck.clone(), cv.clone());
                    }
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The text a host sends for a step's request: a mapping as JSON, a
/// string as it is (malformed or hostile JSON that a mapping cannot
/// express: duplicate keys, deep nesting, numbers beyond 64 bits).
pub fn request_text(request: &Value) -> String {
    match request {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// One failed expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// 1-based step.
    pub step: usize,
    /// What differed.
    pub message: String,
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Case file.
    pub file: String,
    /// Case name.
    pub name: String,
    /// True when every expectation held.
    pub passed: bool,
    /// What did not.
    pub failures: Vec<Failure>,
}

/// The result of running cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// Every case.
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// Add one case's result.
    pub fn push(&mut self, r: CaseResult) {
        if r.passed {
            self.passed += 1
        } else {
            self.failed += 1
        }
        self.cases.push(r);
    }
}

/// The requests a case sends, in order (repeats expanded, `now` advanced),
/// each with the expectation that applies to it.
pub fn expand(case: &Case) -> Vec<(usize, Value, Option<&Expect>)> {
    let mut out = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let advance = step
            .advance
            .as_deref()
            .and_then(|a| humantime::parse_duration(a).ok())
            .map(|d| d.as_secs() as i64);
        let start = step
            .request
            .get("now")
            .and_then(Value::as_str)
            .and_then(|t| crate::timefmt::parse_now(t).ok());
        for n in 0..step.repeat.max(1) {
            let mut request = step.request.clone();
            if let (Some(adv), Some(start), Some(obj)) = (advance, start, request.as_object_mut()) {
                obj.insert(
                    "now".into(),
                    Value::String(crate::timefmt::format(start + adv * n as i64)),
                );
            }
            let last = n + 1 == step.repeat.max(1);
            out.push((
                i + 1,
                request,
                if last { step.expect.as_ref() } else { None },
            ));
        }
    }
    out
}

/// Run one case through `decide` (request JSON → decision JSON), which must
/// start from empty state. Returns the result and every decision text.
pub fn run_case(
    file: &str,
    case: &Case,
    decide: &mut dyn FnMut(&str) -> String,
) -> (CaseResult, Vec<String>) {
    let mut failures = Vec::new();
    let mut decisions = Vec::new();
    for (step, request, expect) in expand(case) {
        let text = request_text(&request);
        let decision = decide(&text);
        if let Some(expect) = expect {
            check(step, expect, &decision, &mut failures);
        }
        decisions.push(decision);
    }
    let result = CaseResult {
        file: file.to_string(),
        name: case.name.clone(),
        passed: failures.is_empty(),
        failures,
    };
    (result, decisions)
}

fn check(step: usize, e: &Expect, decision: &str, failures: &mut Vec<Failure>) {
    let mut fail = |message: String| failures.push(Failure { step, message });
    let d: Value = match serde_json::from_str(decision) {
        Ok(v) => v,
        Err(err) => return fail(format!("decision is not JSON: {err}")),
    };
    let summary = || {
        format!(
            "(outcome {}, policies {}, reasons {})",
            d["outcome"], d["policies"], d["reasons"]
        )
    };
    if let Some(o) = e.outcome
        && d["outcome"].as_str() != Some(o.as_str())
    {
        fail(format!("expected outcome {o}, got {}", summary()));
    }
    if let Some(want) = &e.policies {
        let mut want = want.clone();
        want.sort();
        let got: Vec<String> = d["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if got != want {
            fail(format!("expected policies {want:?}, got {}", summary()));
        }
    }
    if let Some(r) = &e.reason {
        let found = d["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v.as_str() == Some(r));
        if !found {
            fail(format!("expected reason `{r}`, got {}", summary()));
        }
    }
    if let Some(want) = &e.escalation {
        let got = d["escalation"].as_str().map(str::to_string);
        if &got != want {
            fail(format!("expected escalation {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &e.retry_after {
        let got = d["retry_after"].as_u64();
        if &got != want {
            fail(format!("expected retry_after {want:?}, got {got:?}"));
        }
    }
    if let Some(p) = &e.pathway
        && d["pathway"].as_str() != Some(p)
    {
        fail(format!("expected pathway {p}, got {}", d["pathway"]));
    }
    if let Some(want) = &e.findings {
        let got: Vec<&str> = d["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["kind"].as_str())
            .collect();
        if got != want.iter().map(String::as_str).collect::<Vec<_>>() {
            fail(format!("expected findings {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &e.finding_spans {
        let got: Vec<FindingSpan> = d["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| FindingSpan {
                kind: f["kind"].as_str().unwrap_or("").to_string(),
                offset: f["offset"].as_u64().unwrap_or(u64::MAX),
                length: f["length"].as_u64().unwrap_or(u64::MAX),
            })
            .collect();
        if &got != want {
            fail(format!("expected finding spans {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &e.redacted_body
        && d["redacted_body"].as_str() != Some(want.as_str())
    {
        fail(format!(
            "expected redacted body {want:?}, got {}",
            d["redacted_body"]
        ));
    }
    if let Some(want) = &e.dropped_fields {
        let got: Vec<&str> = d["dropped_fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .collect();
        if got != want.iter().map(String::as_str).collect::<Vec<_>>() {
            fail(format!("expected dropped fields {want:?}, got {got:?}"));
        }
    }
    if let Some(st) = &e.stage
        && d["stage"].as_str() != Some(st)
    {
        fail(format!("expected stage {st}, got {}", d["stage"]));
    }
    if let Some(want) = &e.facts
        && !subset(want, &d["audit"]["facts"])
    {
        fail(format!(
            "expected facts {want}, got {}",
            d["audit"]["facts"]
        ));
    }
    if let Some(f) = &e.error_field
        && d["error"]["field"].as_str() != Some(f)
    {
        fail(format!(
            "expected an error naming field `{f}`, got {}",
            d["error"]
        ));
    }
    if let Some(k) = &e.error_kind
        && d["error"]["kind"].as_str() != Some(k)
    {
        fail(format!(
            "expected an error of kind `{k}`, got {}",
            d["error"]
        ));
    }
}

/// One request of a planned case, as any host sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// 1-based step of the case this request belongs to.
    pub step: usize,
    /// The request JSON text to decide.
    pub request: String,
    /// What its decision must be, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// A case expanded into the requests a host sends, in order, from empty state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCase {
    /// Case file.
    pub file: String,
    /// Case name.
    pub name: String,
    /// The requests.
    pub steps: Vec<PlannedStep>,
}

/// Check one decision (JSON text) against an expectation: the failures.
pub fn check_decision(step: usize, expect: &Expect, decision: &str) -> Vec<Failure> {
    let mut failures = Vec::new();
    check(step, expect, decision, &mut failures);
    failures
}

/// Every key of `want` is in `got` with an equal (or, for objects, a
/// matching) value.
fn subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| subset(v, gv))),
        _ => want == got,
    }
}

impl crate::Bundle {
    /// Every case expanded into the requests to send: what a binding needs
    /// to run the shared cases through its own store and calls.
    pub fn plan(&self) -> Vec<PlannedCase> {
        self.cases
            .iter()
            .flat_map(|f| {
                f.cases.iter().map(|c| PlannedCase {
                    file: f.file.clone(),
                    name: c.name.clone(),
                    steps: expand(c)
                        .into_iter()
                        .map(|(step, request, expect)| PlannedStep {
                            step,
                            request: request_text(&request),
                            expect: expect.cloned(),
                        })
                        .collect(),
                })
            })
            .collect()
    }

    /// Run every case of this bundle natively, each from a fresh
    /// [`crate::MemoryStore`].
    pub fn run_cases(&self) -> Report {
        let mut report = Report::default();
        for file in &self.cases {
            for case in &file.cases {
                let mut store = crate::MemoryStore::new();
                let (result, _) = run_case(&file.file, case, &mut |req| {
                    self.decide(req, &mut store).to_json()
                });
                report.push(result);
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_case_file_names_the_line() {
        let text =
            "cases:\n  - name: a\n    request: {principal: 1}\n    expect:\n      outcom: allow\n";
        let e = CaseFile::parse("tests/x.yaml", text).err();
        let e = e.map(|e| (e.location.map(|l| l.line), e.message.contains("outcom")));
        assert_eq!(e, Some((Some(5), true)));
    }

    #[test]
    fn repeats_advance_now() -> Result<(), BundleProblem> {
        let text = "cases:\n  - name: a\n    steps:\n      - request: {now: '2026-01-01T00:00:00Z'}\n        repeat: 3\n        advance: 10s\n        expect: {outcome: allow}\n";
        let f = CaseFile::parse("t.yaml", text)?;
        let c = f.cases.first().map(expand).unwrap_or_default();
        let nows: Vec<_> = c
            .iter()
            .map(|(_, r, _)| r["now"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            nows,
            [
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:20Z"
            ]
        );
        assert_eq!(c.iter().filter(|(_, _, e)| e.is_some()).count(), 1);
        Ok(())
    }
}
