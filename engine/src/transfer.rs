//! Residency and cross-border transfers (GDPR Chapter V).
//!
//! The manifest maps regions to jurisdictions; the bundle's `adequacy.json`
//! is the adequacy list as data, with its date. For a flow from an origin to
//! a destination the engine derives the legal basis, in the order of
//! Chapter V: no transfer (same place, or within the EEA), an adequacy
//! decision (Art. 45; the EU–US decision only for recipients certified
//! under the Data Privacy Framework), an appropriate safeguard the request
//! declares (Art. 46: SCCs, BCRs …), or a derogation (Art. 49). Nothing
//! found: `basis == "none"`, and policies refuse.

use crate::error::RequestError;
use crate::manifest::Manifest;
use crate::request::Request;
use serde::{Deserialize, Serialize};

/// The bundle file holding the adequacy list.
pub const ADEQUACY_FILE: &str = "adequacy.json";

/// Art. 46 safeguards a request may declare in `legal_basis`.
pub const ART46: [&str; 6] = [
    "scc",
    "bcr",
    "code-of-conduct",
    "certification",
    "ad-hoc-clauses",
    "public-authority-instrument",
];
/// Art. 49 derogations a request may declare in `legal_basis`.
pub const ART49: [&str; 7] = [
    "explicit-consent",
    "contract-performance",
    "contract-in-interest",
    "public-interest",
    "legal-claims",
    "vital-interests",
    "public-register",
];

/// `adequacy.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adequacy {
    /// Date of the list (YYYY-MM-DD).
    pub as_of: String,
    /// Where it comes from.
    #[serde(default)]
    pub source: String,
    /// EEA member countries.
    pub eea: Vec<String>,
    /// Adequate countries and organisations.
    pub adequate: Vec<AdequateEntry>,
}

/// One adequacy decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdequateEntry {
    /// Country code, or an organisation's code (`EPO`).
    pub code: String,
    /// Name.
    pub name: String,
    /// What the decision covers, when partial.
    #[serde(default)]
    pub scope: Option<String>,
    /// A condition on the recipient: `dpf-certified`.
    #[serde(default)]
    pub condition: Option<String>,
    /// The decision, as cited (`Commission Implementing Decision (EU) 2021/1772`).
    #[serde(default)]
    pub reference: Option<String>,
    /// When it was adopted (YYYY-MM-DD).
    #[serde(default)]
    pub adopted: Option<String>,
}

impl Adequacy {
    /// Parse `adequacy.json`.
    pub fn parse(text: &str) -> Result<Adequacy, String> {
        let a: Adequacy = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if parse_date(&a.as_of).is_none() {
            return Err(format!(
                "`as_of` is `{}`, expected a date like 2026-09-01",
                a.as_of
            ));
        }
        for e in &a.adequate {
            if let Some(d) = &e.adopted
                && parse_date(d).is_none()
            {
                return Err(format!(
                    "adequacy entry `{}`: `adopted` is `{d}`, expected a date like 2026-01-27",
                    e.code
                ));
            }
            if let Some(c) = &e.condition
                && c != "dpf-certified"
            {
                return Err(format!(
                    "adequacy entry `{}`: unknown condition `{c}` (expected dpf-certified)",
                    e.code
                ));
            }
        }
        Ok(a)
    }

    /// The adequacy entry for a jurisdiction code.
    pub fn entry(&self, code: &str) -> Option<&AdequateEntry> {
        self.adequate.iter().find(|a| a.code == code)
    }
}

/// A calendar date written `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<time::Date> {
    let shape = text.len() == 10
        && text.chars().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|s| s.parse::<u16>().ok());
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    time::Date::from_calendar_date(
        i32::from(num(0..4)?),
        month,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()
}

/// Is the adequacy data due for review on `today` (YYYY-MM-DD)? The
/// manifest's `[transfer] adequacy_review_after` (a date) and
/// `adequacy_max_age` (a duration since the data's `as_of`) say when;
/// the answer is the warning to show, or `None` when the data is current.
pub fn staleness(manifest: &Manifest, adequacy: &Adequacy, today: &str) -> Option<String> {
    let today_date = parse_date(today)?;
    let t = &manifest.transfer;
    let mut why = Vec::new();
    if let Some(review) = t.adequacy_review_after.as_deref()
        && let Some(r) = parse_date(review)
        && today_date > r
    {
        why.push(format!(
            "it was due for review after {review} ([transfer] adequacy_review_after)"
        ));
    }
    if let (Some(max), Some(as_of)) = (t.adequacy_max_age.as_deref(), parse_date(&adequacy.as_of))
        && let Ok(max_d) = humantime::parse_duration(max)
    {
        let age_days = (today_date - as_of).whole_days();
        let max_days = (max_d.as_secs() / 86_400) as i64;
        if age_days > max_days {
            why.push(format!(
                "it is {age_days} days old, over the {max} of [transfer] adequacy_max_age"
            ));
        }
    }
    if adequacy.as_of.is_empty() {
        return Some(format!(
            "the bundle has no {ADEQUACY_FILE}: every transfer out of the EEA lacks adequacy"
        ));
    }
    (!why.is_empty()).then(|| {
        format!(
            "adequacy data in {ADEQUACY_FILE} is stale (as of {}): {}; check the Commission's list and update it",
            adequacy.as_of,
            why.join("; ")
        )
    })
}

/// What the engine derived about a transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferFacts {
    /// A destination is named and lies in another jurisdiction.
    pub cross_border: bool,
    /// Origin jurisdiction code ("" when unknown).
    pub origin: String,
    /// Destination jurisdiction code ("" when none).
    pub destination: String,
    /// The origin is in the EEA.
    pub origin_eea: bool,
    /// The destination is in the EEA.
    pub destination_eea: bool,
    /// `not-a-transfer`, `within-eea`, `outside-scope`, `adequacy`, `art46`, `art49`, `none`.
    pub basis: String,
    /// The instrument: `adequacy-decision`, `eu-us-dpf`, or the declared safeguard/derogation.
    pub mechanism: String,
    /// A basis was found.
    pub allowed: bool,
    /// The recipient id, when named.
    pub recipient: String,
    /// Date of the adequacy data used.
    pub adequacy_as_of: String,
}

fn jurisdiction(manifest: &Manifest, field: &str, region: &str) -> Result<String, RequestError> {
    manifest
        .residency
        .regions
        .get(region)
        .cloned()
        .ok_or_else(|| {
            let known: Vec<&str> = manifest
                .residency
                .regions
                .keys()
                .map(String::as_str)
                .collect();
            RequestError::field(
                field,
                format!(
                    "unknown region `{}` (expected one of {})",
                    crate::request::truncate(region),
                    known.join(", ")
                ),
            )
        })
}

/// Derive the transfer facts of a request.
pub fn derive(
    manifest: &Manifest,
    adequacy: &Adequacy,
    req: &Request,
) -> Result<TransferFacts, RequestError> {
    let c = &req.context;
    let mut f = TransferFacts {
        adequacy_as_of: adequacy.as_of.clone(),
        ..TransferFacts::default()
    };
    if let Some(r) = &c.region {
        f.origin = jurisdiction(manifest, "context.region", r)?;
    }
    let recipient = match &c.recipient {
        Some(id) => Some(manifest.transfer.recipients.get(id).ok_or_else(|| {
            let known: Vec<&str> = manifest
                .transfer
                .recipients
                .keys()
                .map(String::as_str)
                .collect();
            RequestError::field(
                "context.recipient",
                format!(
                    "unknown recipient `{}` (expected one of {})",
                    crate::request::truncate(id),
                    known.join(", ")
                ),
            )
        })?),
        None => None,
    };
    f.recipient = c.recipient.clone().unwrap_or_default();
    if let Some(d) = &c.destination_region {
        f.destination = jurisdiction(manifest, "context.destination_region", d)?;
    } else if let Some(r) = recipient {
        f.destination = r.country.clone();
    }
    if let Some(lb) = &c.legal_basis
        && !ART46.contains(&lb.as_str())
        && !ART49.contains(&lb.as_str())
    {
        return Err(RequestError::field(
            "context.legal_basis",
            format!(
                "unknown legal basis `{}` (Art. 46: {}; Art. 49: {})",
                crate::request::truncate(lb),
                ART46.join(", "),
                ART49.join(", ")
            ),
        ));
    }
    let in_eea = |code: &str| adequacy.eea.iter().any(|e| e == code);
    f.origin_eea = in_eea(&f.origin);
    f.destination_eea = in_eea(&f.destination);
    let (basis, mechanism) = if f.destination.is_empty() || f.destination == f.origin {
        ("not-a-transfer", "")
    } else if f.destination_eea && (f.origin_eea || f.origin.is_empty()) {
        ("within-eea", "")
    } else if !f.origin_eea && !f.origin.is_empty() {
        // Chapter V governs data leaving the EEA; other regimes are out of scope here.
        ("outside-scope", "")
    } else {
        let adequate = adequacy.adequate.iter().find(|a| a.code == f.destination);
        match adequate {
            Some(a) if a.condition.is_none() => ("adequacy", "adequacy-decision"),
            Some(_) if recipient.is_some_and(|r| r.dpf_certified && r.country == f.destination) => {
                ("adequacy", "eu-us-dpf")
            }
            _ => match c.legal_basis.as_deref() {
                Some(lb) if ART46.contains(&lb) => ("art46", lb),
                Some(lb) => ("art49", lb),
                None => ("none", ""),
            },
        }
    };
    f.cross_border = !f.destination.is_empty() && f.destination != f.origin;
    f.basis = basis.to_string();
    f.mechanism = mechanism.to_string();
    f.allowed = basis != "none";
    Ok(f)
}
