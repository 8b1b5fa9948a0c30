//! The data-flow inventory (`flows.yaml` in a bundle) and its verdicts.
//!
//! The inventory is the record of where CRM data goes: per flow, the
//! source system, module and region, the destination system, region and
//! country, the recipient, the data categories, the purpose, the transfer
//! mechanism the organisation declares, and the fields sent. It is checked
//! strictly at load against the manifest (regions, modules, recipients,
//! minimisation rules), every problem naming file and line.
//!
//! Responsible for: turning each flow into the decision request that stands
//! for it ([`crate::Bundle::flow_requests`]), and turning the decision a
//! host obtained for it (from the guest or the native engine) into a
//! verdict: allowed or not, the legal basis found with its article and
//! reference, or what is missing, and the fields minimisation drops
//! ([`crate::Bundle::flow_report`]). Not responsible for reading files or
//! rendering reports (the host does both).

use crate::cases::Report;
use crate::controls::ControlStatus;
use crate::error::{BundleProblem, Location, ProblemKind};
use crate::manifest::Manifest;
use crate::transfer::{ART46, ART49};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The bundle file holding the inventory.
pub const FLOWS_FILE: &str = "flows.yaml";

/// Mechanisms a flow may declare besides the Art. 46 safeguards and the
/// Art. 49 derogations: nothing, reliance on an adequacy decision, or the
/// recipient's certification under the EU–US Data Privacy Framework.
pub const OTHER_MECHANISMS: [&str; 3] = ["none", "adequacy", "dpf"];

/// Context fields the inventory fills from each flow (a request template
/// must not set them).
const FILLED: [&str; 7] = [
    "region",
    "destination_region",
    "module",
    "fields",
    "recipient",
    "legal_basis",
    "flow",
];

/// Where a flow's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The system (`Sales Cloud EU`).
    pub system: String,
    /// The CRM module, as in the manifest's `[modules]` (`sales_cloud`).
    pub module: String,
    /// The region, as in `[residency.regions]` (`eu-central`).
    pub region: String,
}

/// Where a flow's data goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// The system (`Snowflake analytics`).
    pub system: String,
    /// The region, as in `[residency.regions]`.
    pub region: String,
    /// The country (ISO 3166 alpha-2, or `EPO`): must be the region's.
    pub country: String,
}

/// One data flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Unique id (`marketing-analytics-us`).
    pub id: String,
    /// What it is, for people.
    #[serde(default)]
    pub description: String,
    /// Where the data comes from.
    pub source: Source,
    /// Where it goes.
    pub destination: Destination,
    /// Who receives it: an id of `[transfer.recipients]` when the manifest
    /// knows the recipient (then its DPF certification counts), else a name.
    pub recipient: String,
    /// Categories of data (`contact`, `support-case` …).
    pub data_categories: Vec<String>,
    /// Why.
    pub purpose: String,
    /// The transfer mechanism declared: `none`, `adequacy`, `dpf`, an
    /// Art. 46 safeguard (`scc`, `bcr` …) or an Art. 49 derogation
    /// (`explicit-consent`, `legal-claims` …).
    pub mechanism: String,
    /// The record fields sent.
    pub fields: Vec<String>,
    /// The `[dlp.flows]` rule that limits its fields, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimisation: Option<String>,
    /// The flow carries synthetic (generated) data.
    #[serde(default)]
    pub synthetic: bool,
    /// Overrides of the inventory's request template for this flow
    /// (`principal`, `action`, `resource`, other context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default)]
    request: Option<Value>,
    flows: Vec<Flow>,
}

/// A parsed inventory.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    /// File name in the bundle.
    pub file: String,
    /// The request template every flow's decision request starts from.
    pub request: Value,
    /// The flows, in file order.
    pub flows: Vec<Flow>,
    /// Byte offset where each flow starts in the text.
    starts: Vec<usize>,
    text: String,
}

impl Inventory {
    /// Parse the inventory; the message of a malformed file names its line.
    pub fn parse(file: &str, text: &str) -> Result<Inventory, BundleProblem> {
        // The same bound on flow-collection nesting as case files.
        if let Err((off, message)) = crate::guard::yaml(text) {
            return Err(BundleProblem::at(
                ProblemKind::Limit,
                Location::at_offset(file, text, off),
                message,
            ));
        }
        let raw: RawInventory = serde_norway::from_str(text).map_err(|e| {
            let loc = match e.location() {
                Some(l) => Location::at_line(file, text, l.line() as u32, l.column() as u32),
                None => Location::file(file),
            };
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            BundleProblem::at(ProblemKind::Manifest, loc, msg)
        })?;
        let mut starts = Vec::new();
        let mut from = 0;
        for f in &raw.flows {
            let off = find_id(text, &f.id, from).unwrap_or(from);
            starts.push(off);
            from = off + 1;
        }
        let request = raw.request.unwrap_or_else(|| json!({}));
        Ok(Inventory {
            file: file.to_string(),
            request,
            flows: raw.flows,
            starts,
            text: text.to_string(),
        })
    }

    /// The location of `needle` inside flow `i` (its `id:` line if absent).
    fn at(&self, i: usize, needle: &str) -> Location {
        let start = self.starts.get(i).copied().unwrap_or(0);
        let end = self
            .starts
            .get(i + 1)
            .copied()
            .unwrap_or(self.text.len())
            .max(start);
        let off = self
            .text
            .get(start..end)
            .and_then(|s| s.find(needle))
            .map(|o| start + o)
            .unwrap_or(start);
        Location::at_offset(&self.file, &self.text, off)
    }

    /// The line where flow `id` starts (0 when unknown).
    pub fn line_of(&self, id: &str) -> u32 {
        self.flows
            .iter()
            .position(|f| f.id == id)
            .map(|i| self.at(i, "").line)
            .unwrap_or(0)
    }

    /// Check the inventory against the manifest: every problem, located.
    pub fn validate(&self, manifest: &Manifest) -> Vec<BundleProblem> {
        let mut out = Vec::new();
        let mut problem = |loc: Location, msg: String| {
            out.push(BundleProblem::at(ProblemKind::Manifest, loc, msg))
        };
        if self.flows.is_empty() {
            problem(
                Location::at_offset(&self.file, &self.text, self.text.find("flows").unwrap_or(0)),
                "the inventory lists no flows".into(),
            );
        }
        if let Some(obj) = self.request.get("context").and_then(Value::as_object) {
            for key in FILLED {
                if obj.contains_key(key) {
                    let off = self.text.find(key).unwrap_or(0);
                    problem(
                        Location::at_offset(&self.file, &self.text, off),
                        format!(
                            "the request template sets `context.{key}`, which each flow fills in itself; remove it"
                        ),
                    );
                }
            }
        }
        let regions = &manifest.residency.regions;
        let known_regions = || regions.keys().cloned().collect::<Vec<_>>().join(", ");
        let mut seen = std::collections::HashSet::new();
        for (i, f) in self.flows.iter().enumerate() {
            let id = &f.id;
            let at = |needle: &str| self.at(i, needle);
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                problem(
                    at(""),
                    format!("flow id `{id}` must be letters, digits, `-`, `_` or `.`"),
                );
            }
            if !seen.insert(id.as_str()) {
                problem(at(""), format!("flow id `{id}` is used twice"));
            }
            for (what, v) in [
                ("source.system", &f.source.system),
                ("destination.system", &f.destination.system),
                ("recipient", &f.recipient),
                ("purpose", &f.purpose),
            ] {
                if v.trim().is_empty() {
                    let key = what.rsplit('.').next().unwrap_or(what);
                    problem(
                        at(&format!("{key}:")),
                        format!("flow `{id}`: `{what}` must not be empty"),
                    );
                }
            }
            if f.data_categories.is_empty() {
                problem(
                    at("data_categories"),
                    format!("flow `{id}`: `data_categories` lists nothing"),
                );
            }
            if f.fields.is_empty() {
                problem(at("fields"), format!("flow `{id}`: `fields` lists nothing"));
            }
            if !regions.contains_key(&f.source.region) {
                problem(
                    at(&f.source.region),
                    format!(
                        "flow `{id}`: unknown source region `{}` (expected one of {})",
                        f.source.region,
                        known_regions()
                    ),
                );
            }
            match regions.get(&f.destination.region) {
                None => problem(
                    at(&f.destination.region),
                    format!(
                        "flow `{id}`: unknown destination region `{}` (expected one of {})",
                        f.destination.region,
                        known_regions()
                    ),
                ),
                Some(country) if country != &f.destination.country => problem(
                    at(&format!("country: {}", f.destination.country)),
                    format!(
                        "flow `{id}`: destination country `{}` is not where region `{}` is (`{country}` in [residency.regions])",
                        f.destination.country, f.destination.region
                    ),
                ),
                Some(_) => {}
            }
            if !manifest.modules.is_empty() && !manifest.modules.contains_key(&f.source.module) {
                problem(
                    at(&f.source.module),
                    format!(
                        "flow `{id}`: unknown module `{}` (expected one of {})",
                        f.source.module,
                        manifest
                            .modules
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            let m = f.mechanism.as_str();
            if !OTHER_MECHANISMS.contains(&m) && !ART46.contains(&m) && !ART49.contains(&m) {
                problem(
                    at("mechanism"),
                    format!(
                        "flow `{id}`: unknown mechanism `{m}` (expected {}; Art. 46: {}; Art. 49: {})",
                        OTHER_MECHANISMS.join(", "),
                        ART46.join(", "),
                        ART49.join(", ")
                    ),
                );
            }
            if let Some(r) = manifest.transfer.recipients.get(&f.recipient)
                && r.country != f.destination.country
            {
                problem(
                    at("recipient"),
                    format!(
                        "flow `{id}`: recipient `{}` processes in `{}` ([transfer.recipients]), not in the destination country `{}`",
                        f.recipient, r.country, f.destination.country
                    ),
                );
            }
            if let Some(rule) = &f.minimisation
                && !manifest.dlp.flows.contains_key(rule)
            {
                problem(
                    at("minimisation"),
                    format!(
                        "flow `{id}`: unknown minimisation rule `{rule}` (expected one of [dlp.flows]: {})",
                        manifest
                            .dlp
                            .flows
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            if let Some(over) = &f.request {
                if !over.is_object() {
                    problem(
                        at("request"),
                        format!("flow `{id}`: `request` must be a mapping"),
                    );
                } else if let Some(obj) = over.get("context").and_then(Value::as_object) {
                    for key in FILLED {
                        if obj.contains_key(key) {
                            problem(
                                at(key),
                                format!(
                                    "flow `{id}`: `request` sets `context.{key}`, which the flow fills in itself"
                                ),
                            );
                        }
                    }
                }
            }
        }
        out
    }
}

/// The offset of `id: <id>` (quoted or not) at or after `from`.
fn find_id(text: &str, id: &str, from: usize) -> Option<usize> {
    let rest = text.get(from..)?;
    for pattern in [
        format!("id: {id}"),
        format!("id: \"{id}\""),
        format!("id: '{id}'"),
    ] {
        let mut search = 0;
        while let Some(i) = rest.get(search..).and_then(|r| r.find(&pattern)) {
            let at = search + i;
            let after = rest
                .get(at + pattern.len()..)
                .and_then(|r| r.chars().next());
            let before = rest.get(..at).and_then(|r| r.chars().last());
            let whole_after = after.is_none_or(|c| c == '\n' || c == '\r' || c == ' ' || c == '#');
            let whole_before = before.is_none_or(|c| c == ' ' || c == '-' || c == '\n');
            if whole_after && whole_before {
                return Some(from + at);
            }
            search = at + 1;
        }
    }
    None
}

/// Template under flow: top-level keys of `over` win; `context` merges.
fn merge(base: &Value, over: &Value) -> Value {
    let (Some(b), Some(o)) = (base.as_object(), over.as_object()) else {
        return base.clone();
    };
    let mut out = b.clone();
    for (k, v) in o {
        match (k.as_str(), out.get_mut(k)) {
            ("context", Some(Value::Object(bc))) if v.is_object() => {
                if let Some(oc) = v.as_object() {
                    for (ck, cv) in oc {
                        bc.insert(ck.clone(), cv.clone());
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

/// The legal basis found for a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basis {
    /// The engine's `transfer.basis`: `not-a-transfer`, `within-eea`,
    /// `outside-scope`, `adequacy`, `art46`, `art49` or `none`.
    pub kind: String,
    /// The engine's `transfer.mechanism` (`adequacy-decision`, `eu-us-dpf`,
    /// `scc` …), "" when none applies.
    pub mechanism: String,
    /// The GDPR provision (`Art. 45`, `Art. 46(2)(c)`, `Art. 49(1)(e)`), ""
    /// when Chapter V does not apply or nothing was found.
    pub article: String,
    /// For people: `adequacy decision: United Kingdom`.
    pub label: String,
    /// The instrument as cited (`Commission Implementing Decision (EU) 2021/1772`).
    pub reference: String,
}

/// The verdict on one flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowVerdict {
    /// The flow as the inventory gives it.
    pub flow: Flow,
    /// Line of the flow in the inventory.
    pub line: u32,
    /// The decision's outcome for the flow's request.
    pub outcome: String,
    /// The decision allows the flow.
    pub allowed: bool,
    /// Determining policies.
    pub policies: Vec<String>,
    /// Their reasons.
    pub reasons: Vec<String>,
    /// Who the decision escalates to.
    pub escalation: Option<String>,
    /// Origin and destination jurisdictions as the engine derived them.
    pub origin: String,
    /// Destination jurisdiction.
    pub destination: String,
    /// A legal basis was found (or none is needed).
    pub has_basis: bool,
    /// The basis.
    pub basis: Basis,
    /// What is missing, when there is no basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// Remarks: declared vs found mechanism, derogations used for a
    /// systematic flow, no minimisation rule, policies that disagree.
    pub notes: Vec<String>,
    /// Fields minimisation drops from what the flow sends.
    pub dropped_fields: Vec<String>,
    /// The decision was a fault (then `allowed` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Totals of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Flows in the inventory.
    pub flows: usize,
    /// Flows the policies allow.
    pub allowed: usize,
    /// Flows the policies refuse.
    pub denied: usize,
    /// Flows without a legal basis.
    pub without_basis: usize,
    /// Flows sending fields minimisation drops.
    pub with_dropped_fields: usize,
    /// Flows whose decision was a fault.
    pub errors: usize,
    /// Control measures with evidence.
    pub measures_evidenced: usize,
    /// Applicable control measures without evidence (or failing evidence).
    pub measures_without_evidence: usize,
}

/// What `portcullis flows check` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowReport {
    /// Bundle name.
    pub bundle: String,
    /// Bundle version.
    pub version: String,
    /// Bundle hash.
    pub hash: String,
    /// The date the check was made for (YYYY-MM-DD).
    pub checked_on: String,
    /// Date of the adequacy data.
    pub adequacy_as_of: String,
    /// Where the adequacy data comes from.
    pub adequacy_source: String,
    /// Warnings: stale adequacy data, cases that fail.
    pub warnings: Vec<String>,
    /// One verdict per flow, in inventory order.
    pub flows: Vec<FlowVerdict>,
    /// Each control measure with its evidence.
    pub controls: Vec<ControlStatus>,
    /// Totals.
    pub summary: Summary,
}

impl FlowReport {
    /// The exit code: 2 when a flow's decision was a fault, 1 when a flow
    /// has no legal basis, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.summary.errors > 0 {
            2
        } else if self.summary.without_basis > 0 {
            1
        } else {
            0
        }
    }
}

fn art46(m: &str) -> (&'static str, &'static str, &'static str) {
    match m {
        "scc" => (
            "Art. 46(2)(c)",
            "standard data protection clauses adopted by the Commission (SCCs)",
            "Commission Implementing Decision (EU) 2021/914",
        ),
        "bcr" => ("Art. 46(2)(b), Art. 47", "binding corporate rules", ""),
        "code-of-conduct" => (
            "Art. 46(2)(e)",
            "approved code of conduct with binding commitments of the recipient",
            "",
        ),
        "certification" => (
            "Art. 46(2)(f)",
            "approved certification mechanism with binding commitments of the recipient",
            "",
        ),
        "ad-hoc-clauses" => (
            "Art. 46(3)(a)",
            "contractual clauses authorised by the competent supervisory authority",
            "",
        ),
        _ => (
            "Art. 46(2)(a)",
            "legally binding and enforceable instrument between public authorities",
            "",
        ),
    }
}

fn art49(m: &str) -> (&'static str, &'static str) {
    match m {
        "explicit-consent" => (
            "Art. 49(1)(a)",
            "explicit consent of the data subject, informed of the risks",
        ),
        "contract-performance" => (
            "Art. 49(1)(b)",
            "necessary for the performance of a contract with the data subject",
        ),
        "contract-in-interest" => (
            "Art. 49(1)(c)",
            "necessary for a contract concluded in the interest of the data subject",
        ),
        "public-interest" => (
            "Art. 49(1)(d)",
            "necessary for important reasons of public interest",
        ),
        "legal-claims" => (
            "Art. 49(1)(e)",
            "necessary for the establishment, exercise or defence of legal claims",
        ),
        "vital-interests" => (
            "Art. 49(1)(f)",
            "necessary to protect the vital interests of the data subject or others",
        ),
        _ => ("Art. 49(1)(g)", "transfer from a public register"),
    }
}

impl crate::Bundle {
    /// The inventory, when the bundle has one.
    pub fn inventory(&self) -> Option<&Inventory> {
        self.inventory.as_ref()
    }

    /// The adequacy data.
    pub fn adequacy(&self) -> &crate::transfer::Adequacy {
        &self.adequacy
    }

    /// Each flow with the decision request (JSON text) that stands for it
    /// at `now` (RFC 3339): the inventory's template, the flow's overrides,
    /// and the context the flow fills in (regions, module, fields, the
    /// recipient when the manifest knows it, the declared Art. 46 or 49
    /// basis, the minimisation rule).
    pub fn flow_requests(&self, now: &str) -> Vec<(String, String)> {
        let Some(inv) = &self.inventory else {
            return Vec::new();
        };
        inv.flows
            .iter()
            .map(|f| {
                (
                    f.id.clone(),
                    flow_request(&self.manifest, inv, f, now).to_string(),
                )
            })
            .collect()
    }

    /// The report on every flow, from the decision (JSON text) obtained for
    /// each request of [`Self::flow_requests`], in the same order; `today`
    /// (YYYY-MM-DD) for staleness; the case results, when the host ran the
    /// cases, so control evidence says whether its cases pass.
    pub fn flow_report(
        &self,
        decisions: &[String],
        today: &str,
        cases: Option<&Report>,
    ) -> FlowReport {
        let flows: Vec<FlowVerdict> = match &self.inventory {
            Some(inv) => inv
                .flows
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let d = decisions.get(i).map(String::as_str).unwrap_or("");
                    self.verdict(f, inv.line_of(&f.id), d)
                })
                .collect(),
            None => Vec::new(),
        };
        let mut warnings = Vec::new();
        if self.inventory.is_none() {
            warnings.push(format!(
                "the bundle has no {FLOWS_FILE}: no data flow is inventoried"
            ));
        }
        if let Some(w) = crate::transfer::staleness(&self.manifest, &self.adequacy, today) {
            warnings.push(w);
        }
        if self.cases.is_empty() && self.manifest.controls.values().any(|e| !e.cases.is_empty()) {
            warnings.push(
                "the bundle has no case files: the cases the control map cites cannot be shown"
                    .into(),
            );
        }
        if let Some(r) = cases
            && r.failed > 0
        {
            warnings.push(format!(
                "{} case(s) of the bundle fail: the bundle would be refused",
                r.failed
            ));
        }
        let synthetic = flows.iter().any(|f| f.flow.synthetic);
        let controls = self.control_report(cases, synthetic);
        let summary = Summary {
            flows: flows.len(),
            allowed: flows.iter().filter(|f| f.allowed).count(),
            denied: flows
                .iter()
                .filter(|f| !f.allowed && f.error.is_none())
                .count(),
            without_basis: flows.iter().filter(|f| !f.has_basis).count(),
            with_dropped_fields: flows
                .iter()
                .filter(|f| !f.dropped_fields.is_empty())
                .count(),
            errors: flows.iter().filter(|f| f.error.is_some()).count(),
            measures_evidenced: controls.iter().filter(|c| c.status == "evidenced").count(),
            measures_without_evidence: controls
                .iter()
                .filter(|c| c.applicable && c.status != "evidenced")
                .count(),
        };
        FlowReport {
            bundle: self.info.name.clone(),
            version: self.info.version.clone(),
            hash: self.info.hash.clone(),
            checked_on: today.to_string(),
            adequacy_as_of: self.adequacy.as_of.clone(),
            adequacy_source: self.adequacy.source.clone(),
            warnings,
            flows,
            controls,
            summary,
        }
    }

    /// Each flow's decision request must be one the engine can decide:
    /// it parses, and its types and action are the schema's.
    pub(crate) fn check_flow_requests(&self) -> Vec<BundleProblem> {
        let Some(inv) = &self.inventory else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, f) in inv.flows.iter().enumerate() {
            let req = flow_request(&self.manifest, inv, f, "2026-01-01T00:00:00Z");
            let checked =
                crate::request::Request::from_value(req).and_then(|r| self.qualify(&r).map(|_| ()));
            if let Err(e) = checked {
                out.push(BundleProblem::at(
                    ProblemKind::Manifest,
                    inv.at(i, if f.request.is_some() { "request" } else { "" }),
                    format!(
                        "flow `{}`: its decision request cannot be decided: {e}",
                        f.id
                    ),
                ));
            }
        }
        out
    }

    fn verdict(&self, f: &Flow, line: u32, decision: &str) -> FlowVerdict {
        let d: Value = serde_json::from_str(decision).unwrap_or(Value::Null);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let t = &d["audit"]["facts"]["transfer"];
        let text = |k: &str| t[k].as_str().unwrap_or("").to_string();
        let mut v = FlowVerdict {
            flow: f.clone(),
            line,
            outcome: d["outcome"].as_str().unwrap_or("deny").to_string(),
            allowed: d["allowed"].as_bool().unwrap_or(false),
            policies: strings(&d["policies"]),
            reasons: strings(&d["reasons"]),
            escalation: d["escalation"].as_str().map(str::to_string),
            origin: text("origin"),
            destination: text("destination"),
            has_basis: t["allowed"].as_bool().unwrap_or(false),
            basis: Basis {
                kind: text("basis"),
                mechanism: text("mechanism"),
                article: String::new(),
                label: String::new(),
                reference: String::new(),
            },
            missing: None,
            notes: Vec::new(),
            dropped_fields: strings(&d["dropped_fields"]),
            error: None,
        };
        if d.is_null() {
            v.error = Some("the host returned no decision for this flow".into());
        } else if !d["error"].is_null() {
            v.error = Some(
                d["error"]["message"]
                    .as_str()
                    .unwrap_or("engine fault")
                    .to_string(),
            );
        }
        if v.error.is_some() {
            v.allowed = false;
            v.has_basis = false;
            v.missing = Some("the flow could not be decided (see the error)".into());
            return v;
        }
        self.describe_basis(f, &mut v);
        v
    }

    fn describe_basis(&self, f: &Flow, v: &mut FlowVerdict) {
        let country = |code: &str| {
            self.adequacy
                .entry(code)
                .map(|e| format!("{} ({code})", e.name))
                .unwrap_or_else(|| code.to_string())
        };
        let dest_name = match self.adequacy.entry(&v.destination) {
            Some(e) => format!("{} ({})", e.name, v.destination),
            None => v.destination.clone(),
        };
        let as_of = &self.adequacy.as_of;
        let mech = v.basis.mechanism.clone();
        match v.basis.kind.as_str() {
            "not-a-transfer" => {
                v.basis.label = format!("no transfer: the data stays in {}", v.origin);
            }
            "within-eea" => {
                v.basis.label = format!(
                    "no Chapter V transfer: {} and {} are both in the EEA",
                    v.origin, v.destination
                );
            }
            "outside-scope" => {
                v.basis.label = format!(
                    "outside GDPR Chapter V: the origin {} is not in the EEA",
                    v.origin
                );
            }
            "adequacy" => {
                let entry = self.adequacy.entry(&v.destination);
                v.basis.article = "Art. 45".into();
                v.basis.reference = entry.and_then(|e| e.reference.clone()).unwrap_or_default();
                v.basis.label = if mech == "eu-us-dpf" {
                    format!(
                        "adequacy decision: EU–US Data Privacy Framework, recipient `{}` certified",
                        f.recipient
                    )
                } else {
                    let scope = entry
                        .and_then(|e| e.scope.clone())
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default();
                    format!("adequacy decision: {dest_name}{scope}")
                };
                if ART46.contains(&f.mechanism.as_str()) || ART49.contains(&f.mechanism.as_str()) {
                    v.notes.push(format!(
                        "declared `{}`, but the transfer already rests on the adequacy decision",
                        f.mechanism
                    ));
                }
            }
            "art46" => {
                let (article, label, reference) = art46(&mech);
                v.basis.article = article.into();
                v.basis.label = format!("appropriate safeguard: {label}");
                v.basis.reference = reference.into();
                v.notes.push(format!(
                    "Art. 46 safeguards need a transfer impact assessment and supplementary measures where the law of {} undermines them (CJEU C-311/18, Schrems II)",
                    dest_name
                ));
            }
            "art49" => {
                let (article, label) = art49(&mech);
                v.basis.article = article.into();
                v.basis.label = format!("derogation: {label}");
                v.notes.push(
                    "Art. 49 derogations are for occasional, non-repetitive transfers (EDPB Guidelines 2/2018); not a basis for a systematic flow".into(),
                );
            }
            _ => {
                let entry = self.adequacy.entry(&v.destination);
                let known = self.manifest.transfer.recipients.get(&f.recipient);
                v.missing = Some(match (f.mechanism.as_str(), entry) {
                    (_, Some(e)) if e.condition.is_some() => match known {
                        None => format!(
                            "the {} adequacy decision covers only recipients certified under the EU–US Data Privacy Framework, and `{}` is not a recipient of [transfer.recipients] with dpf_certified = true; certify it, or declare SCCs (Art. 46) or an Art. 49 derogation",
                            e.name, f.recipient
                        ),
                        Some(_) => format!(
                            "the {} adequacy decision covers only recipients certified under the EU–US Data Privacy Framework, and `{}` is not certified ([transfer.recipients]); declare SCCs (Art. 46) or an Art. 49 derogation",
                            e.name, f.recipient
                        ),
                    },
                    ("adequacy", None) => format!(
                        "declared adequacy, but there is no adequacy decision for {} in {} (as of {as_of})",
                        country(&v.destination),
                        crate::transfer::ADEQUACY_FILE
                    ),
                    _ => format!(
                        "no adequacy decision for {} ({} as of {as_of}), no Art. 46 safeguard and no Art. 49 derogation declared",
                        country(&v.destination),
                        crate::transfer::ADEQUACY_FILE
                    ),
                });
                v.basis.label = "no legal basis".into();
            }
        }
        if f.mechanism == "dpf" && mech != "eu-us-dpf" && v.has_basis && v.basis.kind != "none" {
            v.notes.push(format!(
                "declared DPF certification, but the basis found is {}",
                if v.basis.kind == "adequacy" {
                    "another adequacy decision"
                } else {
                    v.basis.kind.as_str()
                }
            ));
        }
        if f.minimisation.is_none() {
            v.notes
                .push("no minimisation rule ([dlp.flows]): every listed field is sent".into());
        }
        if !v.has_basis && v.allowed {
            v.notes.push(
                "the bundle's policies allow this flow although no legal basis was found".into(),
            );
        }
    }
}

fn flow_request(manifest: &Manifest, inv: &Inventory, f: &Flow, now: &str) -> Value {
    let mut req = match &f.request {
        Some(over) => merge(&inv.request, over),
        None => inv.request.clone(),
    };
    let Some(obj) = req.as_object_mut() else {
        return req;
    };
    obj.insert("now".into(), Value::String(now.to_string()));
    let ctx = obj
        .entry("context")
        .or_insert_with(|| Value::Object(Default::default()));
    if !ctx.is_object() {
        *ctx = Value::Object(Default::default());
    }
    if let Some(c) = ctx.as_object_mut() {
        c.insert("region".into(), json!(f.source.region));
        c.insert("destination_region".into(), json!(f.destination.region));
        c.insert("module".into(), json!(f.source.module));
        c.insert("fields".into(), json!(f.fields));
        if manifest.transfer.recipients.contains_key(&f.recipient) {
            c.insert("recipient".into(), json!(f.recipient));
        }
        let m = f.mechanism.as_str();
        if ART46.contains(&m) || ART49.contains(&m) {
            c.insert("legal_basis".into(), json!(m));
        }
        if let Some(rule) = &f.minimisation {
            c.insert("flow".into(), json!(rule));
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "request:\n  principal: {type: Service, id: sync}\n  action: export\n  resource: {type: App, id: sales-cloud}\nflows:\n  - id: a\n    source: {system: S, module: sales_cloud, region: eu-central}\n    destination: {system: D, region: eu-west, country: IE}\n    recipient: r\n    data_categories: [contact]\n    purpose: p\n    mechanism: none\n    fields: [Id]\n  - id: ab\n    source: {system: S, module: sales_cloud, region: eu-central}\n    destination: {system: D, region: mars, country: IE}\n    recipient: r\n    data_categories: [contact]\n    purpose: p\n    mechanism: pinky\n    fields: [Id]\n";

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let bad = TEXT.replace(
            "    purpose: p\n    mechanism: none",
            "    purpos: p\n    mechanism: none",
        );
        let e = Inventory::parse("flows.yaml", &bad).err();
        let e = e.map(|e| (e.message.contains("purpos"), e.location.map(|l| l.line)));
        assert_eq!(e.map(|(m, _)| m), Some(true));
    }

    #[test]
    fn adequacy_data_goes_stale_by_review_date_or_age() -> Result<(), BundleProblem> {
        let manifest = |extra: &str| {
            Manifest::parse(
                "portcullis.toml",
                &format!(
                    "[bundle]\nname = \"x\"\nversion = \"1\"\nnamespace = \"Crm\"\n[transfer]\n{extra}"
                ),
            )
        };
        let adequacy = crate::transfer::Adequacy {
            as_of: "2026-09-01".into(),
            ..Default::default()
        };
        let m = manifest("adequacy_review_after = \"2027-03-01\"\n")?;
        assert_eq!(
            crate::transfer::staleness(&m, &adequacy, "2027-03-01"),
            None
        );
        let w = crate::transfer::staleness(&m, &adequacy, "2027-03-02").unwrap_or_default();
        assert!(w.contains("due for review after 2027-03-01"), "{w}");
        let m = manifest("adequacy_max_age = \"90d\"\n")?;
        assert_eq!(
            crate::transfer::staleness(&m, &adequacy, "2026-11-30"),
            None
        );
        let w = crate::transfer::staleness(&m, &adequacy, "2026-12-01").unwrap_or_default();
        assert!(w.contains("91 days old"), "{w}");
        assert!(manifest("adequacy_review_after = \"2027-02-30\"\n").is_err());
        assert!(manifest("adequacy_max_age = \"soon\"\n").is_err());
        Ok(())
    }

    #[test]
    fn deeply_nested_yaml_is_refused_before_parsing() {
        let deep = format!("flows: {}{}\n", "[".repeat(200), "]".repeat(200));
        let e = Inventory::parse("flows.yaml", &deep).err();
        assert_eq!(e.map(|e| e.kind), Some(ProblemKind::Limit));
    }

    #[test]
    fn flows_are_found_by_id_not_by_prefix() -> Result<(), BundleProblem> {
        let inv = Inventory::parse("flows.yaml", TEXT)?;
        assert_eq!(inv.line_of("a"), 6);
        assert_eq!(inv.line_of("ab"), 14);
        Ok(())
    }

    #[test]
    fn semantic_problems_name_the_flow_line() -> Result<(), BundleProblem> {
        let inv = Inventory::parse("flows.yaml", TEXT)?;
        let manifest = Manifest::parse(
            "portcullis.toml",
            "[bundle]\nname = \"x\"\nversion = \"1\"\nnamespace = \"Crm\"\n[residency.regions]\neu-central = \"DE\"\neu-west = \"IE\"\n[modules.sales_cloud]\nfields = {}\n",
        )?;
        let problems = inv.validate(&manifest);
        let lines: Vec<(u32, bool)> = problems
            .iter()
            .map(|p| {
                (
                    p.location.as_ref().map(|l| l.line).unwrap_or(0),
                    p.message.contains("`ab`"),
                )
            })
            .collect();
        assert_eq!(lines, [(16, true), (20, true)], "{problems:?}");
        Ok(())
    }
}
