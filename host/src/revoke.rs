//! `portcullis revoke`: the incident playbook for a leaked model, a
//! compromised principal or a leaked signing key, as one command.
//!
//! From the current bundle it makes a new one that denies the subject:
//! a generated Cedar `forbid` in `revoked.cedar` with
//! `@reason("revoked-<kind>: <reason>")` and `@escalate`, a
//! `[[revocations]]` record in the manifest (for a key the engine then
//! also stops trusting it: tokens it signed fail with `revoked-key`), the
//! version bumped, and a case file under `tests/revoked/` proving it: a
//! request the current bundle allows is denied citing the revocation, and
//! another (a different model, principal or key) is still allowed. The new
//! bundle must load and pass every case (native and, by default, in the
//! guest) before it is written, as a directory or a packed file, signed
//! with `--sign` (host/src/signing.rs). Installing it through the normal
//! hot swap (`POST /v1/bundle`, Envoy's ECDS) revokes fleet-wide.
//!
//! Not responsible for installing the bundle anywhere.

use super::{Cli, Format};
use crate::flows::{Decider, now_and_today, read_bundle, report_problems};
use anyhow::{Context, Result, bail};
use clap::Args;
use portcullis_engine::bundle::Packed;
use portcullis_engine::{Bundle, MemoryStore};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// `portcullis revoke`
#[derive(Args)]
pub struct RevokeArgs {
    /// The current bundle: a directory or a packed file.
    #[arg(long)]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub subject: Subject,
    /// Why: an incident reference, cited by the policy's @reason and the manifest.
    #[arg(long, default_value = "revoked by incident response")]
    pub reason: String,
    /// Who is told when the revocation denies [default: ml-security/{resource}
    /// for a model, security-operations otherwise].
    #[arg(long)]
    pub escalate: Option<String>,
    /// A request (JSON file) the current bundle allows for the subject, to
    /// prove the revocation with (default: found among the bundle's cases).
    #[arg(long)]
    pub witness: Option<PathBuf>,
    /// The new bundle's version [default: the current one, last number + 1].
    #[arg(long)]
    pub version: Option<String>,
    /// Sign the new bundle with this Ed25519 private key (PKCS#8 PEM, from `keygen`).
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// When the revocation is made (RFC 3339) [default: now].
    #[arg(long)]
    pub now: Option<String>,
    /// Where to write the new bundle: a directory (new or empty), or a file
    /// ending in `.json` (packed).
    #[arg(short, long, value_name = "OUTDIR|FILE")]
    pub output: PathBuf,
}

/// What to revoke (exactly one).
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Subject {
    /// A model id: every action on `Model::"ID"` is denied.
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    /// A principal, `Type:id` (the type may be left out when the bundle's
    /// entities or schema make it unique).
    #[arg(long, value_name = "ID")]
    pub principal: Option<String>,
    /// A signing key's `kid` (OAuth access tokens or synthetic provenance):
    /// tokens it signed are refused.
    #[arg(long, value_name = "KID")]
    pub key: Option<String>,
}

/// What is revoked, resolved against the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Model { ty: String, id: String },
    Principal { ty: String, id: String },
    Key { kid: String },
}

impl Target {
    fn kind(&self) -> &'static str {
        match self {
            Target::Model { .. } => "model",
            Target::Principal { .. } => "principal",
            Target::Key { .. } => "key",
        }
    }

    /// The id recorded in the manifest.
    fn record_id(&self) -> String {
        match self {
            Target::Model { id, .. } => id.clone(),
            Target::Principal { ty, id } => format!("{ty}:{id}"),
            Target::Key { kid } => kid.clone(),
        }
    }

    fn policy_id(&self) -> String {
        match self {
            Target::Model { id, .. } => format!("revoked.model.{id}"),
            Target::Principal { ty, id } => format!("revoked.principal.{ty}.{id}"),
            Target::Key { kid } => format!("revoked.key.{kid}"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Model { id, .. } => format!("model `{id}`"),
            Target::Principal { ty, id } => format!("principal {ty} `{id}`"),
            Target::Key { kid } => format!("key `{kid}`"),
        }
    }

    fn default_escalation(&self) -> &'static str {
        match self {
            Target::Model { .. } => "ml-security/{resource}",
            _ => "security-operations",
        }
    }

    /// Does this request concern the subject?
    fn matches(&self, req: &Value) -> bool {
        match self {
            Target::Model { ty, id } => {
                req["resource"]["type"].as_str() == Some(ty)
                    && req["resource"]["id"].as_str() == Some(id)
            }
            Target::Principal { ty, id } => {
                req["principal"]["type"].as_str() == Some(ty)
                    && req["principal"]["id"].as_str() == Some(id)
            }
            Target::Key { kid } => token_kids(req).iter().any(|k| k == kid),
        }
    }

    /// A request of the same shape aimed at the subject (not for keys).
    fn retarget(&self, req: &Value) -> Option<Value> {
        let (slot, ty, id) = match self {
            Target::Model { ty, id } => ("resource", ty, id),
            Target::Principal { ty, id } => ("principal", ty, id),
            Target::Key { .. } => return None,
        };
        if req[slot]["type"].as_str() != Some(ty) {
            return None;
        }
        let mut out = req.clone();
        out[slot]["id"] = Value::String(id.clone());
        Some(out)
    }
}

/// The `kid`s in the headers of the request's access token and provenance token.
fn token_kids(req: &Value) -> Vec<String> {
    use base64::Engine as _;
    let ctx = &req["context"];
    [
        ctx["token"].as_str(),
        ctx["synthetic"]["provenance"].as_str(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|t| {
        let t = t.strip_prefix("Bearer ").unwrap_or(t);
        let header = t.split('.').next()?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        v["kid"].as_str().map(str::to_string)
    })
    .collect()
}

fn has_token(req: &Value) -> bool {
    req["context"]["token"].is_string() || req["context"]["synthetic"]["provenance"].is_string()
}

/// A request and where it came from.
#[derive(Debug, Clone)]
struct Witness {
    request: Value,
    origin: String,
    outcome: String,
}

/// Run `portcullis revoke`.
pub fn run(cli: &Cli, args: &RevokeArgs) -> Result<u8> {
    let files = read_bundle(&args.bundle)?;
    let old = match Bundle::load(&files) {
        Ok(b) => b,
        Err(p) => {
            report_problems(&args.bundle, &p);
            return Ok(2);
        }
    };
    let target = resolve(&old, &files, &args.subject)?;
    let policy_id = target.policy_id();
    if old.has_policy(&policy_id) {
        bail!(
            "{} is already revoked in this bundle (policy `{policy_id}`)",
            target.describe()
        );
    }
    let (at, _) = now_and_today(args.now.as_deref())?;
    let escalate = args
        .escalate
        .clone()
        .unwrap_or_else(|| target.default_escalation().to_string());
    let reason = format!("revoked-{}: {}", target.kind(), args.reason.trim());

    // Prove it: a request allowed now for the subject, and one for another.
    let (witness, control) = witnesses(&old, &target, args.witness.as_deref())?;

    // The new bundle's files.
    let old_version = old.info().version.clone();
    let version = match &args.version {
        Some(v) => v.clone(),
        None => bump(&old_version),
    };
    let mut new_files = files.clone();
    let manifest = new_files
        .iter_mut()
        .find(|(n, _)| n == portcullis_engine::bundle::MANIFEST_FILE)
        .context("the bundle has no manifest")?;
    manifest.1 = edit_manifest(
        &manifest.1,
        &version,
        &target,
        &policy_id,
        &args.reason,
        &escalate,
        &at,
    )?;
    let policy = policy_text(
        &old.info().namespace,
        &target,
        &policy_id,
        &reason,
        &escalate,
        &at,
    );
    match new_files.iter_mut().find(|(n, _)| n == "revoked.cedar") {
        Some((_, text)) => {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push('\n');
            text.push_str(&policy);
        }
        None => new_files.push((
            "revoked.cedar".into(),
            format!(
                "// Revocations made by `portcullis revoke` during incidents. Each\n\
                 // forbid cites its revocation (@reason \"revoked-…\") and escalates;\n\
                 // the manifest's [[revocations]] records who, why and when.\n\n{policy}"
            ),
        )),
    }
    let escalation = escalate
        .replace(
            "{resource}",
            witness.request["resource"]["id"].as_str().unwrap_or(""),
        )
        .replace(
            "{principal}",
            witness.request["principal"]["id"].as_str().unwrap_or(""),
        );
    let case_file = case_path(&new_files, &target);
    new_files.push((
        case_file.clone(),
        cases_text(
            &target,
            &policy_id,
            &reason,
            &escalation,
            &witness,
            &control,
            &at,
            &[],
        ),
    ));
    new_files.sort();

    // Cases that described the subject as allowed now contradict the
    // revocation: each moves into the revocation's case file, the steps the
    // revocation changed expecting its denial. Any other failure refuses.
    let superseded = superseded_cases(&load_checked(&new_files)?, &policy_id, &reason)?;
    if !superseded.is_empty() {
        for s in &superseded {
            remove_case(&mut new_files, &s.file, &s.name)?;
            // Control evidence follows the case to its new place.
            let moved = format!("{case_file} :: superseded by the revocation: {}", s.name);
            if let Some(m) = new_files
                .iter_mut()
                .find(|(n, _)| n == portcullis_engine::bundle::MANIFEST_FILE)
            {
                for old in [
                    quoted(&s.name),
                    quoted(&format!("{} :: {}", s.file, s.name)),
                ] {
                    m.1 = m.1.replace(&old, &quoted(&moved));
                }
            }
        }
        let extra: Vec<Value> = superseded.iter().map(|s| s.case.clone()).collect();
        if let Some(f) = new_files.iter_mut().find(|(n, _)| n == &case_file) {
            f.1 = cases_text(
                &target,
                &policy_id,
                &reason,
                &escalation,
                &witness,
                &control,
                &at,
                &extra,
            );
        }
    }

    // Accepted whole, or not written.
    let new = load_checked(&new_files)?;
    let native = new.run_cases();
    let mut failures: Vec<String> = native
        .cases
        .iter()
        .filter(|c| !c.passed)
        .flat_map(|c| {
            c.failures
                .iter()
                .map(move |f| format!("{} :: {} step {}: {}", c.file, c.name, f.step, f.message))
        })
        .collect();
    if failures.is_empty() && matches!(cli.engine, super::EngineKind::Guest) {
        let report = Decider::new(cli, new_files.clone())?.run_cases()?;
        failures.extend(
            report
                .cases
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("(guest) {} :: {}", c.file, c.name)),
        );
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        bail!(
            "the revoked bundle fails {} case(s); nothing written",
            failures.len()
        );
    }

    let packed = args
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if packed {
        let doc = Packed::new(new.info(), new_files.clone());
        std::fs::write(&args.output, serde_json::to_string(&doc)? + "\n")
            .with_context(|| format!("cannot write `{}`", args.output.display()))?;
    } else {
        write_dir(&args.output, &new_files)?;
    }
    let signed = match &args.sign {
        Some(key) => Some(portcullis_host::signing::sign_target(key, &args.output)?),
        None => {
            if old.manifest().bundle.require_signature {
                eprintln!(
                    "warning: the bundle requires a signature; sign it (`portcullis sign --key KEY {}`) before installing",
                    args.output.display()
                );
            }
            None
        }
    };
    let info = new.info();
    match cli.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "revoked": {"kind": target.kind(), "id": target.record_id()},
                "policy": policy_id,
                "reason": reason,
                "escalation": escalation,
                "at": at,
                "bundle": info.name,
                "previous_version": old_version,
                "version": info.version,
                "hash": info.hash,
                "case_file": case_file,
                "witness": witness.origin,
                "control": control.origin,
                "superseded": superseded.iter().map(|s| format!("{} :: {}", s.file, s.name)).collect::<Vec<_>>(),
                "output": args.output,
                "signed": signed,
            }))?
        ),
        _ => {
            println!(
                "revoked {}: policy {policy_id} (revoked.cedar), escalates to {escalation}",
                target.describe()
            );
            println!(
                "proved by {case_file}: denied ({}), still allowed ({})",
                witness.origin, control.origin
            );
            println!(
                "bundle {} {} -> {} (hash {}), {} cases pass, written to {}",
                info.name,
                old_version,
                info.version,
                info.hash,
                native.passed,
                args.output.display()
            );
            for s in &superseded {
                println!(
                    "superseded {} :: {} (it touches what is now revoked): moved to {case_file}",
                    s.file, s.name
                );
            }
            if let Some(s) = signed {
                println!("{s}");
            }
        }
    }
    Ok(0)
}

/// What `--model`, `--principal` or `--key` names, checked against the bundle.
fn resolve(b: &Bundle, files: &[(String, String)], s: &Subject) -> Result<Target> {
    if let Some(id) = &s.model {
        let id = nonempty("--model", id)?;
        let types = b.entity_types();
        let ty = types.iter().find(|t| t.as_str() == "Model").context(
            "the bundle's schema has no `Model` entity type: nothing to revoke a model in",
        )?;
        return Ok(Target::Model { ty: ty.clone(), id });
    }
    if let Some(p) = &s.principal {
        let p = nonempty("--principal", p)?;
        let types = b.principal_types();
        if let Some((ty, id)) = p.split_once(':')
            && types.iter().any(|t| t == ty)
        {
            return Ok(Target::Principal {
                ty: ty.to_string(),
                id: nonempty("--principal", id)?,
            });
        }
        // The type from the bundle's entities, else from a unique principal type.
        let mut found: Vec<String> = Vec::new();
        if let Some((_, text)) = files
            .iter()
            .find(|(n, _)| n == portcullis_engine::bundle::ENTITIES_FILE)
            && let Ok(Value::Array(list)) = serde_json::from_str::<Value>(text)
        {
            let ns = format!("{}::", b.info().namespace);
            for e in list {
                let ty = e["uid"]["type"].as_str().unwrap_or("");
                let short = ty.strip_prefix(&ns).unwrap_or(ty);
                if e["uid"]["id"].as_str() == Some(p.as_str()) && types.iter().any(|t| t == short) {
                    found.push(short.to_string());
                }
            }
        }
        found.dedup();
        return match (found.as_slice(), types.as_slice()) {
            ([ty], _) | ([], [ty]) => Ok(Target::Principal {
                ty: ty.clone(),
                id: p,
            }),
            _ => bail!(
                "give the principal's type: --principal TYPE:{p} (principal types: {})",
                types.join(", ")
            ),
        };
    }
    if let Some(kid) = &s.key {
        let kid = nonempty("--key", kid)?;
        let kids = b.trusted_kids();
        if !kids.contains(&kid) {
            bail!(
                "no trusted key has kid `{kid}` (trusted kids: {}); a key without a kid is revoked by removing it from the manifest",
                if kids.is_empty() {
                    "none".to_string()
                } else {
                    kids.join(", ")
                }
            );
        }
        return Ok(Target::Key { kid });
    }
    bail!("give one of --model, --principal or --key")
}

fn nonempty(flag: &str, v: &str) -> Result<String> {
    let v = v.trim();
    if v.is_empty() {
        bail!("{flag} must not be empty");
    }
    if v.chars().any(|c| c.is_control()) {
        bail!("{flag} must not hold control characters");
    }
    Ok(v.to_string())
}

/// Decide `req` with the current bundle from empty state: its outcome if allowed.
fn allowed_now(b: &Bundle, req: &Value) -> Option<String> {
    let d = b.decide(&req.to_string(), &mut MemoryStore::new());
    (d.allowed && d.error.is_none()).then(|| d.outcome.as_str().to_string())
}

/// A request the current bundle allows for the subject (the witness, to be
/// denied), and one it allows for something else (the control, to stay
/// allowed), each checked against the current bundle.
fn witnesses(b: &Bundle, target: &Target, given: Option<&Path>) -> Result<(Witness, Witness)> {
    let mut candidates: Vec<(String, Value)> = Vec::new();
    for case in b.plan() {
        let [step] = case.steps.as_slice() else {
            continue;
        };
        let allowed = step
            .expect
            .as_ref()
            .and_then(|e| e.outcome)
            .is_some_and(|o| o.is_allowed());
        if !allowed {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&step.request) {
            candidates.push((format!("{} :: {}", case.file, case.name), v));
        }
    }
    let witness = match given {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            let request: Value = serde_json::from_str(&text)
                .with_context(|| format!("`{}` is not a JSON request", path.display()))?;
            let Some(outcome) = allowed_now(b, &request) else {
                bail!(
                    "the witness `{}` is not allowed by the current bundle: it cannot prove a revocation",
                    path.display()
                );
            };
            if !target.matches(&request) {
                bail!(
                    "the witness `{}` does not concern {}",
                    path.display(),
                    target.describe()
                );
            }
            Witness {
                request,
                origin: path.display().to_string(),
                outcome,
            }
        }
        None => {
            let direct = candidates.iter().filter(|(_, r)| target.matches(r));
            let shaped = candidates
                .iter()
                .filter_map(|(o, r)| target.retarget(r).map(|r| (format!("{o}, aimed at it"), r)));
            let mut found = None;
            for (origin, request) in direct.cloned().chain(shaped) {
                if let Some(outcome) = allowed_now(b, &request) {
                    found = Some(Witness {
                        request,
                        origin,
                        outcome,
                    });
                    break;
                }
            }
            match found {
                Some(w) => w,
                None => bail!(
                    "no case of the bundle gives a request it allows for {}{}; pass one with --witness FILE",
                    target.describe(),
                    if matches!(target, Target::Key { .. }) {
                        " (a token signed by that key)"
                    } else {
                        ""
                    }
                ),
            }
        }
    };
    // The control: allowed, and not about the subject. For a key, prefer a
    // request that carries another key's token.
    let mut controls: Vec<&(String, Value)> = candidates
        .iter()
        .filter(|(_, r)| !target.matches(r))
        .collect();
    let same_kind = |r: &Value| match target {
        Target::Model { ty, .. } => r["resource"]["type"].as_str() == Some(ty),
        Target::Principal { .. } => true,
        Target::Key { .. } => has_token(r),
    };
    controls.sort_by_key(|(_, r)| !same_kind(r));
    if matches!(target, Target::Model { .. }) {
        // "Others keep working" means other models.
        controls.retain(|(_, r)| same_kind(r));
    }
    let mut control = None;
    for (origin, request) in controls {
        if let Some(outcome) = allowed_now(b, request) {
            control = Some(Witness {
                request: request.clone(),
                origin: origin.clone(),
                outcome,
            });
            break;
        }
    }
    let control = match (control, target) {
        (Some(c), _) => c,
        // Another model of the same shape, when no case names one.
        (None, Target::Model { id, .. }) => {
            let mut request = witness.request.clone();
            let other = if id == "other-model" {
                "another-model"
            } else {
                "other-model"
            };
            request["resource"]["id"] = Value::String(other.to_string());
            let outcome = allowed_now(b, &request)
                .context("no request for another model is allowed by the current bundle")?;
            Witness {
                request,
                origin: format!("{}, aimed at another model", witness.origin),
                outcome,
            }
        }
        (None, _) => bail!(
            "no case of the bundle gives an allowed request that does not concern {}",
            target.describe()
        ),
    };
    Ok((witness, control))
}

/// `0.2.0` → `0.2.1`; `v7` → `v8`; `beta` → `beta.1`.
fn bump(version: &str) -> String {
    let digits = version
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let (head, tail) = version.split_at(version.len() - digits);
    match tail.parse::<u64>() {
        Ok(n) => format!("{head}{}", n + 1),
        Err(_) => format!("{version}.1"),
    }
}

/// A TOML or JSON string literal (JSON escapes are valid TOML basic strings).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A Cedar string literal.
fn cedar_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn edit_manifest(
    text: &str,
    version: &str,
    target: &Target,
    policy: &str,
    reason: &str,
    escalate: &str,
    at: &str,
) -> Result<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "[bundle]")
        .context("the manifest has no [bundle] table")?;
    let end = lines
        .iter()
        .skip(start + 1)
        .position(|l| l.trim_start().starts_with('['))
        .map(|i| start + 1 + i)
        .unwrap_or(lines.len());
    let line = lines
        .iter_mut()
        .take(end)
        .skip(start + 1)
        .find(|l| {
            l.trim_start()
                .strip_prefix("version")
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .context("the manifest's [bundle] has no `version`")?;
    *line = format!("version = {}", quoted(version));
    let mut out = lines.join("\n");
    out.push('\n');
    if !out.contains("[[revocations]]") {
        out.push_str(
            "\n# ------------------------------------------------------------ revocations --\n\
             # Written by `portcullis revoke`: each names the policy that enforces it.\n",
        );
    }
    out.push_str(&format!(
        "\n[[revocations]]\nkind = {}\nid = {}\npolicy = {}\nreason = {}\nescalate = {}\nat = {}\n",
        quoted(target.kind()),
        quoted(&target.record_id()),
        quoted(policy),
        quoted(reason.trim()),
        quoted(escalate),
        quoted(at)
    ));
    Ok(out)
}

fn policy_text(
    ns: &str,
    target: &Target,
    policy: &str,
    reason: &str,
    escalate: &str,
    at: &str,
) -> String {
    let scope = match target {
        Target::Model { ty, id } => format!(
            "forbid (principal, action, resource == {ns}::{ty}::{});",
            cedar_str(id)
        ),
        Target::Principal { ty, id } => format!(
            "forbid (principal == {ns}::{ty}::{}, action, resource);",
            cedar_str(id)
        ),
        Target::Key { kid } => format!(
            "forbid (principal, action, resource)\nwhen {{ context.token.kid == {k} || context.synthetic.kid == {k} }};",
            k = cedar_str(kid)
        ),
    };
    format!(
        "// {} revoked at {at}.\n@id({})\n@outcome(\"deny\")\n@reason({})\n@escalate({})\n{scope}\n",
        target.describe(),
        cedar_str(policy),
        cedar_str(reason),
        cedar_str(escalate)
    )
}

fn case_path(files: &[(String, String)], target: &Target) -> String {
    let slug: String = target
        .record_id()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let base = format!("tests/revoked/{}-{}", target.kind(), slug.trim_matches('-'));
    let mut name = format!("{base}.yaml");
    let mut n = 2;
    while files.iter().any(|(f, _)| f == &name) {
        name = format!("{base}-{n}.yaml");
        n += 1;
    }
    name
}

#[expect(
    clippy::too_many_arguments,
    reason = "everything the generated case file says"
)]
fn cases_text(
    target: &Target,
    policy: &str,
    reason: &str,
    escalation: &str,
    witness: &Witness,
    control: &Witness,
    at: &str,
    superseded: &[Value],
) -> String {
    // For a key the token itself no longer verifies, so other policies that
    // read `context.token` may join: the reason pins the revocation.
    let deny = match target {
        Target::Key { .. } => json!({"outcome": "deny", "reason": reason}),
        _ => json!({
            "outcome": "deny",
            "policies": [policy],
            "reason": reason,
            "escalation": escalation,
        }),
    };
    let allow = json!({"outcome": control.outcome});
    let other = match target {
        Target::Model { .. } => "another model",
        Target::Principal { .. } => "another principal",
        Target::Key { .. } => "a request not signed by that key",
    };
    format!(
        "# Written by `portcullis revoke` at {at}: {} is revoked.\n\
         # The first request was allowed before ({}); now it is denied, citing\n\
         # the revocation. The second ({}) is still allowed.\n\
         cases:\n  - name: {}\n    request: {}\n    expect: {}\n  - name: {}\n    request: {}\n    expect: {}\n{}",
        target.describe(),
        witness.origin.replace('\n', " "),
        control.origin.replace('\n', " "),
        quoted(&format!("revoked {} is denied", target.describe())),
        witness.request,
        deny,
        quoted(&format!(
            "{other} is still allowed after revoking {}",
            target.describe()
        )),
        control.request,
        allow,
        superseded_text(superseded)
    )
}

fn superseded_text(cases: &[Value]) -> String {
    if cases.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n  # Cases that allowed what is now revoked, moved here from their files:\n  # the steps the revocation changes expect its denial.\n",
    );
    for c in cases {
        out.push_str(&format!("  - {c}\n"));
    }
    out
}

fn load_checked(files: &[(String, String)]) -> Result<Bundle> {
    Bundle::load(files).map_err(|p| {
        let list: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        anyhow::anyhow!("the revoked bundle would be refused: {}", list.join("; "))
    })
}

/// A case the revocation contradicts, rewritten.
struct Superseded {
    file: String,
    name: String,
    case: Value,
}

/// The cases of `b` (the bundle with the revocation) that fail, each only
/// at steps whose decision cites `policy`; rewritten so those steps expect
/// the revocation's outcome and reason. Any other failure is an error.
fn superseded_cases(b: &Bundle, policy: &str, reason: &str) -> Result<Vec<Superseded>> {
    use portcullis_engine::cases::{Expect, expand, run_case};
    let mut out = Vec::new();
    for file in b.case_files() {
        for case in &file.cases {
            let mut store = MemoryStore::new();
            let (result, decisions) =
                run_case(&file.file, case, &mut |r| b.decide(r, &mut store).to_json());
            if result.passed {
                continue;
            }
            let mut last: std::collections::BTreeMap<usize, Value> = Default::default();
            for ((step, _, _), d) in expand(case).iter().zip(&decisions) {
                last.insert(*step, serde_json::from_str(d).unwrap_or(Value::Null));
            }
            let cites = |d: &Value| {
                d["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x.as_str() == Some(policy)))
            };
            // Only a case that touches the subject may be superseded.
            if !decisions
                .iter()
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .any(|d| cites(&d))
            {
                let why: Vec<String> = result
                    .failures
                    .iter()
                    .map(|f| format!("step {}: {}", f.step, f.message))
                    .collect();
                bail!(
                    "{} :: {} fails in the revoked bundle, and not because of the revocation: {}",
                    file.file,
                    case.name,
                    why.join("; ")
                );
            }
            let mut rewritten = case.clone();
            let failing: std::collections::BTreeSet<usize> =
                result.failures.iter().map(|f| f.step).collect();
            for step in failing {
                let d = last.get(&step).cloned().unwrap_or(Value::Null);
                let outcome = d["outcome"]
                    .as_str()
                    .unwrap_or("deny")
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!(e))?;
                // A step the revocation decides cites it; a later step whose
                // state the revoked steps changed keeps only its outcome.
                if let Some(s) = step.checked_sub(1).and_then(|i| rewritten.steps.get_mut(i)) {
                    s.expect = Some(Expect {
                        outcome: Some(outcome),
                        reason: cites(&d).then(|| reason.to_string()),
                        ..Expect::default()
                    });
                }
            }
            rewritten.name = format!("superseded by the revocation: {}", case.name);
            let mut v = serde_json::to_value(&rewritten)?;
            if let Some(o) = v.as_object_mut() {
                o.retain(|_, x| !x.is_null());
                if let Some(Value::Array(steps)) = o.get_mut("steps") {
                    for st in steps {
                        if let Some(so) = st.as_object_mut() {
                            so.retain(|_, x| !x.is_null());
                        }
                    }
                }
            }
            out.push(Superseded {
                file: file.file.clone(),
                name: case.name.clone(),
                case: v,
            });
        }
    }
    Ok(out)
}

/// Remove case `name` from case file `file` (text surgery on its list item,
/// checked by parsing the result); a file left without cases is dropped.
fn remove_case(files: &mut Vec<(String, String)>, file: &str, name: &str) -> Result<()> {
    use portcullis_engine::cases::CaseFile;
    let Some(i) = files.iter().position(|(n, _)| n == file) else {
        bail!("no case file `{file}`");
    };
    let text = files[i].1.clone();
    let before = CaseFile::parse(file, &text).map_err(|p| anyhow::anyhow!("{p}"))?;
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    // The list item whose `name:` is this case's.
    let quoted_name = quoted(name);
    let single = format!("'{}'", name.replace('\'', "''"));
    let at = lines
        .iter()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.strip_prefix("name:").is_some_and(|v| {
                let v = v.trim();
                v == name || v == quoted_name || v == single
            })
        })
        .with_context(|| format!("cannot find case `{name}` in `{file}`"))?;
    let start = (0..=at)
        .rev()
        .find(|&j| {
            lines
                .get(j)
                .is_some_and(|l| l.trim_start().starts_with("- "))
        })
        .with_context(|| format!("cannot find the list item of case `{name}` in `{file}`"))?;
    let item_indent = indent(lines.get(start).copied().unwrap_or(""));
    let end = (start + 1..lines.len())
        .find(|&j| {
            lines.get(j).is_some_and(|l| {
                !l.trim().is_empty() && indent(l) <= item_indent && !l.trim_start().starts_with('#')
            })
        })
        .unwrap_or(lines.len());
    let mut kept: Vec<&str> = lines.get(..start).unwrap_or(&[]).to_vec();
    kept.extend(lines.get(end..).unwrap_or(&[]));
    let new_text = kept.join("\n") + "\n";
    if before.cases.len() == 1 {
        files.remove(i);
        return Ok(());
    }
    let after = CaseFile::parse(file, &new_text).map_err(|p| {
        anyhow::anyhow!("removing case `{name}` from `{file}` left it malformed: {p}")
    })?;
    let names = |f: &CaseFile| -> Vec<String> { f.cases.iter().map(|c| c.name.clone()).collect() };
    let mut expected = names(&before);
    expected.retain(|n| n != name);
    if names(&after) != expected {
        bail!("removing case `{name}` from `{file}` would change other cases; edit it by hand");
    }
    files[i].1 = new_text;
    Ok(())
}

fn write_dir(dir: &Path, files: &[(String, String)]) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read `{}`", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "`{}` exists and is not empty; give a new directory",
                dir.display()
            );
        }
    }
    for (name, text) in files {
        if name.split('/').any(|p| p == ".." || p.is_empty()) {
            bail!("refusing to write the bundle file `{name}`");
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create `{}`", parent.display()))?;
        }
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_bump_their_last_number() {
        assert_eq!(bump("0.2.0"), "0.2.1");
        assert_eq!(bump("v9"), "v10");
        assert_eq!(bump("beta"), "beta.1");
    }

    #[test]
    fn cedar_strings_are_escaped() {
        assert_eq!(cedar_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }

    #[test]
    fn the_manifest_gets_a_version_and_a_record() -> Result<()> {
        let text = "[bundle]\nname = \"x\"\nversion = \"1.4\"  # comment\nnamespace = \"Crm\"\n\n[other]\nversion = \"keep\"\n";
        let t = Target::Model {
            ty: "Model".into(),
            id: "m\"1".into(),
        };
        let out = edit_manifest(
            text,
            "1.5",
            &t,
            "revoked.model.m\"1",
            "why",
            "ml",
            "2026-11-23T00:00:00Z",
        )?;
        assert!(out.contains("version = \"1.5\"\nnamespace"), "{out}");
        assert!(out.contains("version = \"keep\""), "{out}");
        assert!(out.contains("id = \"m\\\"1\""), "{out}");
        Ok(())
    }
}
