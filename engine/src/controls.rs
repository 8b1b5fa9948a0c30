//! The control map: which policies and cases evidence which regulatory
//! measure.
//!
//! The catalogue is fixed here: the ten cybersecurity risk-management
//! measures of NIS2 (Directive (EU) 2022/2555) Art. 21(2)(a)–(j), with the
//! Directive's own titles, and the marking of synthetic content of the AI
//! Act (Regulation (EU) 2024/1689) Art. 50(2), which applies where a flow
//! carries synthetic data. The manifest's `[controls.<measure>]` tables
//! name the evidence: policy ids and case names (`NAME`, or `FILE :: NAME`
//! when a name is in several files). Every reference is checked at load.
//!
//! Responsible for: the catalogue, checking references, and each measure's
//! status (evidenced, no evidence, failing evidence, not applicable). Not
//! responsible for judging whether the evidence is enough: that stays with
//! people; the report says what there is.

use crate::cases::{CaseFile, Report};
use crate::error::{BundleProblem, Location, ProblemKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A measure of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    /// Key in `[controls.<id>]`.
    pub id: &'static str,
    /// `NIS2` or `AI Act`.
    pub framework: &'static str,
    /// The provision.
    pub article: &'static str,
    /// Its title, as the act words it.
    pub title: &'static str,
    /// Applies only where synthetic data is produced or carried.
    pub synthetic_only: bool,
}

const fn nis2(id: &'static str, article: &'static str, title: &'static str) -> Measure {
    Measure {
        id,
        framework: "NIS2",
        article,
        title,
        synthetic_only: false,
    }
}

/// The catalogue, in the order of the acts.
pub const MEASURES: [Measure; 11] = [
    nis2(
        "nis2-21-2-a",
        "Art. 21(2)(a)",
        "policies on risk analysis and information system security",
    ),
    nis2("nis2-21-2-b", "Art. 21(2)(b)", "incident handling"),
    nis2(
        "nis2-21-2-c",
        "Art. 21(2)(c)",
        "business continuity, such as backup management and disaster recovery, and crisis management",
    ),
    nis2(
        "nis2-21-2-d",
        "Art. 21(2)(d)",
        "supply chain security, including security-related aspects concerning the relationships between each entity and its direct suppliers or service providers",
    ),
    nis2(
        "nis2-21-2-e",
        "Art. 21(2)(e)",
        "security in network and information systems acquisition, development and maintenance, including vulnerability handling and disclosure",
    ),
    nis2(
        "nis2-21-2-f",
        "Art. 21(2)(f)",
        "policies and procedures to assess the effectiveness of cybersecurity risk-management measures",
    ),
    nis2(
        "nis2-21-2-g",
        "Art. 21(2)(g)",
        "basic cyber hygiene practices and cybersecurity training",
    ),
    nis2(
        "nis2-21-2-h",
        "Art. 21(2)(h)",
        "policies and procedures regarding the use of cryptography and, where appropriate, encryption",
    ),
    nis2(
        "nis2-21-2-i",
        "Art. 21(2)(i)",
        "human resources security, access control policies and asset management",
    ),
    nis2(
        "nis2-21-2-j",
        "Art. 21(2)(j)",
        "the use of multi-factor authentication or continuous authentication solutions, secured voice, video and text communications and secured emergency communication systems within the entity, where appropriate",
    ),
    Measure {
        id: "ai-act-50",
        framework: "AI Act",
        article: "Art. 50(2)",
        title: "synthetic content marked in a machine-readable format and detectable as artificially generated",
        synthetic_only: true,
    },
];

/// `[controls.<measure>]` in the manifest: the evidence of one measure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Policy ids.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Case names (`NAME` or `FILE :: NAME`).
    #[serde(default)]
    pub cases: Vec<String>,
    /// What else evidences it, or why the bundle cannot, for people.
    #[serde(default)]
    pub note: Option<String>,
}

/// A policy cited as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEvidence {
    /// Policy id.
    pub id: String,
    /// Its `@reason`.
    pub reason: String,
    /// The file it is in.
    pub file: String,
}

/// A case cited as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseEvidence {
    /// Case file.
    pub file: String,
    /// Case name.
    pub name: String,
    /// Whether it passed, when the cases were run.
    pub passed: Option<bool>,
}

/// One measure of the catalogue, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// Measure id.
    pub id: String,
    /// `NIS2` or `AI Act`.
    pub framework: String,
    /// The provision.
    pub article: String,
    /// Its title.
    pub title: String,
    /// The measure applies to this bundle (AI Act Art. 50 only where a flow
    /// carries synthetic data).
    pub applicable: bool,
    /// `evidenced`, `no evidence`, `failing evidence` (a cited case fails)
    /// or `not applicable`.
    pub status: String,
    /// Policies cited.
    pub policies: Vec<PolicyEvidence>,
    /// Cases cited.
    pub cases: Vec<CaseEvidence>,
    /// The manifest's note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A case reference resolved to (file, name), or why it cannot be.
pub fn resolve_case(cases: &[CaseFile], reference: &str) -> Result<(String, String), String> {
    if let Some((file, name)) = reference.split_once(" :: ") {
        let (file, name) = (file.trim(), name.trim());
        return cases
            .iter()
            .find(|f| f.file == file)
            .ok_or_else(|| format!("no case file `{file}`"))?
            .cases
            .iter()
            .find(|c| c.name == name)
            .map(|c| (file.to_string(), c.name.clone()))
            .ok_or_else(|| format!("no case `{name}` in `{file}`"));
    }
    let found: Vec<&str> = cases
        .iter()
        .filter(|f| f.cases.iter().any(|c| c.name == reference))
        .map(|f| f.file.as_str())
        .collect();
    match found.as_slice() {
        [file] => Ok((file.to_string(), reference.to_string())),
        [] => Err(format!("no case named `{reference}`")),
        files => Err(format!(
            "case name `{reference}` is in {}; write `FILE :: NAME`",
            files.join(", ")
        )),
    }
}

/// Check the manifest's control map against the catalogue, the policy ids
/// and the cases; every problem located in the manifest text. A bundle
/// loaded without its `tests/` (an embedder that ships only what decides)
/// has no cases to check references against: they are checked whenever
/// case files are present.
pub fn validate(
    controls: &BTreeMap<String, Evidence>,
    policy_ids: &dyn Fn(&str) -> bool,
    cases: &[CaseFile],
    file: &str,
    text: &str,
) -> Vec<BundleProblem> {
    let mut out = Vec::new();
    for (id, ev) in controls {
        let header = text
            .find(&format!("[controls.{id}]"))
            .or_else(|| text.find(&format!("[controls.\"{id}\"]")))
            .or_else(|| text.find(id.as_str()))
            .unwrap_or(0);
        let at = |needle: &str| {
            let off = text
                .get(header..)
                .and_then(|r| r.find(needle))
                .map(|o| header + o)
                .unwrap_or(header);
            Location::at_offset(file, text, off)
        };
        if !MEASURES.iter().any(|m| m.id == id) {
            out.push(BundleProblem::at(
                ProblemKind::Manifest,
                at(""),
                format!(
                    "controls: unknown measure `{id}` (expected one of {})",
                    MEASURES.map(|m| m.id).join(", ")
                ),
            ));
            continue;
        }
        for p in &ev.policies {
            if !policy_ids(p) {
                out.push(BundleProblem::at(
                    ProblemKind::Manifest,
                    at(&format!("\"{p}\"")),
                    format!("controls.{id}: no policy with id `{p}` in the bundle"),
                ));
            }
        }
        for c in ev.cases.iter().filter(|_| !cases.is_empty()) {
            if let Err(e) = resolve_case(cases, c) {
                out.push(BundleProblem::at(
                    ProblemKind::Manifest,
                    at(&format!("\"{}", c.split(" :: ").next().unwrap_or(c))),
                    format!("controls.{id}: {e}"),
                ));
            }
        }
    }
    out
}

impl crate::Bundle {
    /// Every measure of the catalogue with the evidence the manifest cites;
    /// `cases` (when run) tells whether cited cases pass; `synthetic`: a
    /// flow carries synthetic data (AI Act Art. 50 applies).
    pub fn control_report(&self, cases: Option<&Report>, synthetic: bool) -> Vec<ControlStatus> {
        MEASURES
            .iter()
            .map(|m| {
                let ev = self
                    .manifest
                    .controls
                    .get(m.id)
                    .cloned()
                    .unwrap_or_default();
                let policies: Vec<PolicyEvidence> = ev
                    .policies
                    .iter()
                    .map(|p| {
                        let meta = self.meta.get(&cedar_policy::PolicyId::new(p));
                        PolicyEvidence {
                            id: p.clone(),
                            reason: meta.and_then(|m| m.reason.clone()).unwrap_or_default(),
                            file: meta.map(|m| m.file.clone()).unwrap_or_default(),
                        }
                    })
                    .collect();
                let case_ev: Vec<CaseEvidence> = ev
                    .cases
                    .iter()
                    .filter_map(|c| resolve_case(&self.cases, c).ok())
                    .map(|(file, name)| {
                        let passed = cases.map(|r| {
                            r.cases
                                .iter()
                                .any(|c| c.file == file && c.name == name && c.passed)
                        });
                        CaseEvidence { file, name, passed }
                    })
                    .collect();
                let applicable = !m.synthetic_only || synthetic;
                let status = if !applicable {
                    "not applicable"
                } else if policies.is_empty() && case_ev.is_empty() {
                    "no evidence"
                } else if case_ev.iter().any(|c| c.passed == Some(false)) {
                    "failing evidence"
                } else {
                    "evidenced"
                };
                ControlStatus {
                    id: m.id.to_string(),
                    framework: m.framework.to_string(),
                    article: m.article.to_string(),
                    title: m.title.to_string(),
                    applicable,
                    status: status.to_string(),
                    policies,
                    cases: case_ev,
                    note: ev.note.clone(),
                }
            })
            .collect()
    }
}
