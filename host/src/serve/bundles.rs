//! Bundles in the service: reading a candidate (a directory with its
//! `bundle.sig`, or a packed document with its `signature`), accepting it
//! only whole, and the immutable generations that requests are decided on.
//!
//! A candidate is accepted when, in a fresh guest instance (never one that
//! serves), it loads (parses, validates strictly), its packed hash (if any)
//! matches its files, its signature verifies when one is present or
//! required, and every one of its cases passes. The reason of a refusal is
//! one line, e.g. `schema invalid: schema.cedarschema:3:1: …`,
//! `signature missing …`, `signature by untrusted key …`, `case failed: …`.

use crate::GuestRuntime;
use crate::signing::{SignatureError, TrustedKeys};
use portcullis_engine::bundle::{BundleSignature, MANIFEST_FILE, Packed};
use portcullis_engine::error::ProblemKind;
use portcullis_engine::manifest::Manifest;
use portcullis_engine::{BundleInfo, BundleProblem, MemoryStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One accepted bundle, immutable: what a request is decided on.
#[derive(Debug)]
pub struct Loaded {
    /// Generation number (1, 2, …); pool instances compare it.
    pub id: u64,
    /// The bundle files.
    pub files: Arc<Vec<(String, String)>>,
    /// The signature it came with, kept so a rollback re-serves it as is.
    pub signature: Option<BundleSignature>,
    /// What the guest said it is.
    pub info: BundleInfo,
    /// Key id of the signer, when signed.
    pub signer: Option<String>,
    /// The manifest asks for signed bundles.
    pub require_signature: bool,
    /// When it was installed (RFC 3339).
    pub loaded_at: String,
    /// Where it came from (`file`, `api`, `rollback`).
    pub origin: String,
}

/// A bundle offered for installation.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The files.
    pub files: Vec<(String, String)>,
    /// Its signature, if it has one.
    pub signature: Option<BundleSignature>,
    /// The hash a packed document claims.
    pub claimed_hash: Option<String>,
}

impl Candidate {
    /// Same content and signature as another candidate or generation.
    pub fn same_as(&self, files: &[(String, String)], sig: &Option<BundleSignature>) -> bool {
        self.files == files && self.signature == *sig
    }
}

/// Read a bundle path: a directory (and its `bundle.sig`), or a packed file.
pub fn read_source(path: &Path) -> Result<Candidate, String> {
    if path.is_dir() {
        let files = crate::bundle_dir::read(path).map_err(|e| format!("cannot read: {e:#}"))?;
        let signature = crate::signing::read_dir_signature(path).map_err(|e| format!("{e:#}"))?;
        Ok(Candidate {
            files,
            signature,
            claimed_hash: None,
        })
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        from_packed(&text)
    }
}

/// A packed bundle document (`portcullis pack`, optionally signed).
pub fn from_packed(text: &str) -> Result<Candidate, String> {
    let packed: Packed =
        serde_json::from_str(text).map_err(|e| format!("not a packed bundle: {e}"))?;
    if packed.format != portcullis_engine::bundle::PACKED_FORMAT {
        return Err(format!(
            "not a packed bundle: format `{}` (expected `{}`)",
            packed.format,
            portcullis_engine::bundle::PACKED_FORMAT
        ));
    }
    Ok(Candidate {
        files: packed.files.into_iter().collect(),
        signature: packed.signature,
        claimed_hash: Some(packed.hash),
    })
}

/// Who must sign.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignaturePolicy {
    /// `--require-signature`.
    pub service: bool,
    /// The bundle serving now asks for signed bundles (no silent downgrade).
    pub current: bool,
}

/// What a check found in an accepted candidate.
pub struct Accepted {
    /// The instance that checked it, still loaded with it (its state store
    /// is a throwaway: replace it before serving from it).
    pub instance: crate::GuestInstance,
    /// The candidate.
    pub candidate: Candidate,
    /// What it is.
    pub info: BundleInfo,
    /// Key id of the signer.
    pub signer: Option<String>,
    /// The manifest asks for signed bundles.
    pub require_signature: bool,
}

/// A refused candidate: why, and its hash when it got that far.
#[derive(Debug, Clone)]
pub struct Refused {
    /// One-line reason.
    pub reason: String,
    /// Content hash, when the candidate loaded.
    pub hash: Option<String>,
}

/// Check a candidate in a fresh guest instance.
pub fn check(
    runtime: &GuestRuntime,
    candidate: Candidate,
    trusted: &TrustedKeys,
    policy: SignaturePolicy,
) -> Result<Accepted, Refused> {
    let refuse = |reason: String, hash: Option<&str>| Refused {
        reason,
        hash: hash.map(str::to_string),
    };
    let mut instance = runtime
        .instantiate(Box::new(MemoryStore::new()))
        .map_err(|e| refuse(format!("engine fault: {}", one_line(&e)), None))?;
    // Loading and running every case is one call each: allow more than a decision.
    instance.set_call_timeout(Duration::from_secs(60));
    let info = match instance.load(candidate.files.clone()) {
        Ok(info) => info,
        Err(crate::LoadError::Refused(problems)) => {
            return Err(refuse(describe_problems(&problems), None));
        }
        Err(crate::LoadError::Fault(e)) => {
            return Err(refuse(format!("engine fault: {}", one_line(&e)), None));
        }
    };
    let hash = Some(info.hash.as_str());
    if let Some(claimed) = &candidate.claimed_hash
        && *claimed != info.hash
    {
        return Err(refuse(
            format!(
                "hash mismatch: the packed bundle claims `{claimed}` but its files hash to `{}` (altered after packing)",
                info.hash
            ),
            hash,
        ));
    }
    let require_signature = candidate
        .files
        .iter()
        .find(|(n, _)| n == MANIFEST_FILE)
        .and_then(|(n, t)| Manifest::parse(n, t).ok())
        .is_some_and(|m| m.bundle.require_signature);
    let required = policy.service || policy.current || require_signature;
    let signer = match &candidate.signature {
        None if required => {
            return Err(refuse(SignatureError::Missing.to_string(), hash));
        }
        None => None,
        Some(sig) => Some(
            trusted
                .verify(&info.hash, sig)
                .map_err(|e| refuse(e.to_string(), hash))?,
        ),
    };
    let report = instance.run_cases().map_err(|e| {
        refuse(
            format!("engine fault running cases: {}", one_line(&e)),
            hash,
        )
    })?;
    if report.failed > 0 {
        let mut failing = report.cases.iter().filter(|c| !c.passed);
        let first = failing.next();
        let more = failing.count();
        let mut reason = match first {
            Some(c) => {
                let step = c
                    .failures
                    .first()
                    .map(|f| format!(" (step {}: {})", f.step, f.message))
                    .unwrap_or_default();
                format!("case failed: {} :: {}{step}", c.file, c.name)
            }
            None => format!("case failed: {} case(s)", report.failed),
        };
        if more > 0 {
            reason.push_str(&format!(" (and {more} more)"));
        }
        return Err(refuse(reason, hash));
    }
    Ok(Accepted {
        instance,
        candidate,
        info,
        signer,
        require_signature,
    })
}

/// An error chain as one line: a guest trap's message spans a backtrace;
/// keep its first and last lines.
fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    match lines.next_back() {
        Some(last) => format!("{first} … {last}"),
        None => first.to_string(),
    }
}

/// The first problem as one line, naming its kind, file and line.
pub fn describe_problems(problems: &[BundleProblem]) -> String {
    let Some(p) = problems.first() else {
        return "bundle invalid".into();
    };
    let what = match p.kind {
        ProblemKind::Manifest => "manifest invalid",
        ProblemKind::Schema => "schema invalid",
        ProblemKind::PolicyParse => "policy invalid",
        ProblemKind::PolicyValidation => "policy fails validation",
        ProblemKind::Entities => "entities invalid",
        ProblemKind::CaseFile => "case file invalid",
        ProblemKind::MissingFile => "bundle invalid",
        ProblemKind::Limit => "bundle over a limit",
    };
    let mut line = match &p.location {
        Some(l) => format!("{what}: {l}: {}", p.message),
        None => format!("{what}: {}", p.message),
    };
    if problems.len() > 1 {
        line.push_str(&format!(" (and {} more problem(s))", problems.len() - 1));
    }
    line.replace('\n', " ")
}

/// What a bundle path looks like on disk: every file's name, size and
/// modification time. A change means "read it again".
pub fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                walk(&p, out);
            } else {
                out.push((p, m.len(), m.modified().ok()));
            }
        }
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => walk(path, &mut out),
        Ok(m) => out.push((path.to_path_buf(), m.len(), m.modified().ok())),
        Err(_) => {}
    }
    out.sort();
    out
}

/// Now, RFC 3339 (UTC).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
