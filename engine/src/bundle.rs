//! A bundle: manifest, schema, policies, entities and cases, checked whole.
//!
//! [`Bundle::load`] accepts a bundle only if every file parses, every policy
//! validates strictly against the schema, and the annotations make sense;
//! otherwise it returns every problem it found, each with file and line.
//! Everything parsed here is built once and shared by all decisions.

use crate::cases::CaseFile;
use crate::context::PORTCULLIS_SCHEMA;
use crate::error::{BundleProblem, Location, ProblemKind};
use crate::manifest::Manifest;
use crate::outcome::Outcome;
use cedar_policy::{
    Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Schema, SchemaFragment,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

/// Largest bundle accepted (all files together), in bytes.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// Most policies a bundle may hold.
pub const MAX_POLICIES: usize = 20_000;

/// The manifest file name.
pub const MANIFEST_FILE: &str = "portcullis.toml";
/// The static entities file name.
pub const ENTITIES_FILE: &str = "entities.json";

/// Annotations a policy may carry.
pub const ANNOTATIONS: [&str; 6] = [
    "id",
    "outcome",
    "reason",
    "escalate",
    "retry_after",
    "description",
];

/// What a loaded bundle is (mirrors `bundle-info` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Cedar namespace.
    pub namespace: String,
    /// SHA-256 over every file, hex.
    pub hash: String,
    /// Every policy id, sorted.
    pub policy_ids: Vec<String>,
    /// Number of cases under `tests/`.
    pub case_count: u32,
}

/// A bundle packed into one document: what `portcullis pack` writes, the
/// Envoy filter takes as its plugin configuration, and services accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packed {
    /// Always `portcullis-bundle/1`.
    pub format: String,
    /// Bundle name (informative; the files are the truth).
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// SHA-256 over the files, as `BundleInfo::hash`; checked on unpack.
    pub hash: String,
    /// The files, by name.
    pub files: BTreeMap<String, String>,
    /// A detached signature over `hash`, added by `portcullis sign` or
    /// `portcullis pack --sign` (checked by the host that installs the
    /// bundle, never by the engine; not part of the hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<BundleSignature>,
}

/// A signature over a bundle's content hash: the `bundle.sig` file of a
/// bundle directory, or the `signature` member of a packed bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSignature {
    /// Always `ed25519`.
    pub alg: String,
    /// First 16 hex digits of the SHA-256 of the signer's raw public key.
    pub key_id: String,
    /// The signature over the 64 ASCII hex digits of the content hash, base64.
    pub signature: String,
}

/// The name of a bundle directory's signature file. Hosts read bundle
/// files by extension (`.toml`, `.cedar` …), so it is never one of the
/// files passed to `load` nor part of the content hash.
pub const SIGNATURE_FILE: &str = "bundle.sig";

/// The format tag of packed bundles.
pub const PACKED_FORMAT: &str = "portcullis-bundle/1";

impl Packed {
    /// Pack loaded files.
    pub fn new(info: &BundleInfo, files: Vec<(String, String)>) -> Packed {
        Packed {
            format: PACKED_FORMAT.to_string(),
            name: info.name.clone(),
            version: info.version.clone(),
            hash: info.hash.clone(),
            files: files.into_iter().collect(),
            signature: None,
        }
    }

    /// Read a packed document and load it, checking format and hash.
    pub fn load(text: &str) -> Result<Bundle, Vec<BundleProblem>> {
        if text.len() > MAX_BUNDLE_BYTES.saturating_mul(2) {
            // JSON escaping at most doubles typical text; the files' own
            // total is checked against MAX_BUNDLE_BYTES by `Bundle::load`.
            return Err(vec![BundleProblem::new(
                ProblemKind::Limit,
                format!(
                    "packed bundle is {} bytes, over the limit of {}",
                    text.len(),
                    MAX_BUNDLE_BYTES.saturating_mul(2)
                ),
            )]);
        }
        if let Err(p) = crate::guard::check(text, crate::limits::MAX_JSON_DEPTH) {
            let kind = if p.limit {
                ProblemKind::Limit
            } else {
                ProblemKind::MissingFile
            };
            return Err(vec![BundleProblem::new(
                kind,
                format!("not a packed bundle: at `{}`: {}", p.path, p.message),
            )]);
        }
        let packed: Packed = serde_json::from_str(text).map_err(|e| {
            vec![BundleProblem::new(
                ProblemKind::MissingFile,
                format!("not a packed bundle: {e}"),
            )]
        })?;
        if packed.format != PACKED_FORMAT {
            return Err(vec![BundleProblem::new(
                ProblemKind::MissingFile,
                format!(
                    "packed format `{}` (expected `{PACKED_FORMAT}`)",
                    packed.format
                ),
            )]);
        }
        let files: Vec<(String, String)> = packed.files.into_iter().collect();
        let bundle = Bundle::load(&files)?;
        if bundle.info.hash != packed.hash {
            return Err(vec![BundleProblem::new(
                ProblemKind::MissingFile,
                format!(
                    "packed hash `{}` does not match the files (`{}`): the bundle was altered",
                    packed.hash, bundle.info.hash
                ),
            )]);
        }
        Ok(bundle)
    }
}

/// How a policy's `@retry_after` is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// A fixed number of seconds.
    Seconds(u64),
    /// Until the lockout window of the principal ends.
    Lockout,
    /// Until the rate bucket has a token again.
    Rate,
}

/// What the engine reads from one policy's annotations, once at load.
#[derive(Debug, Clone)]
pub struct PolicyMeta {
    /// The graduated outcome when this policy determines a decision.
    pub outcome: Outcome,
    /// Why, for people.
    pub reason: Option<String>,
    /// Who to escalate to.
    pub escalate: Option<String>,
    /// Retry advice.
    pub retry_after: Option<RetryAfter>,
    /// File the policy came from.
    pub file: String,
}

/// A loaded, checked bundle.
#[derive(Debug)]
pub struct Bundle {
    pub(crate) manifest: Manifest,
    pub(crate) policies: PolicySet,
    pub(crate) meta: HashMap<PolicyId, PolicyMeta>,
    pub(crate) entities: Entities,
    pub(crate) cases: Vec<CaseFile>,
    pub(crate) info: BundleInfo,
    /// Qualified names of entity types, by unqualified request name.
    pub(crate) types: HashMap<String, EntityTypeName>,
    /// Action uids by request name, with the principal and resource types
    /// each applies to (checked per request instead of a schema-validated
    /// `cedar_policy::Request`, whose context check is redundant: the engine
    /// builds the context, and its shape is checked once here at load).
    pub(crate) actions: HashMap<String, ActionInfo>,
    /// Keys trusted for synthetic provenance, parsed once.
    pub(crate) synthetic_keys: Vec<crate::jwt::Verifier>,
    /// Keys trusted for OAuth access tokens, parsed once.
    pub(crate) oauth_keys: Vec<crate::jwt::Verifier>,
    /// The adequacy list (`adequacy.json`), empty when absent.
    pub(crate) adequacy: crate::transfer::Adequacy,
    /// The data-flow inventory (`flows.yaml`), when the bundle has one.
    pub(crate) inventory: Option<crate::flows::Inventory>,
    /// Per action, only the policies whose action scope can match it. Cedar
    /// evaluates every policy it is given; a policy whose scope excludes the
    /// action cannot be satisfied (nor err), so the decision is the same
    /// and cost follows the policies of one action, not the whole bundle.
    /// Empty when the schema has action groups (then the whole set is used).
    pub(crate) by_action: HashMap<String, PolicySet>,
    /// Per action, what its policies read of the context (the whole set's
    /// needs in `needs_all` when `by_action` is empty).
    pub(crate) needs: HashMap<String, crate::context::Needs>,
    pub(crate) needs_all: crate::context::Needs,
    /// Cedar's answers for requests seen before (see [`crate::memo`]).
    pub(crate) memo: crate::memo::Memo,
    /// The manifest's trusted proxies, parsed once (checked at load).
    pub(crate) trusted_proxies: Vec<crate::network::Cidr>,
}

/// An action and what it applies to.
#[derive(Debug, Clone)]
pub(crate) struct ActionInfo {
    pub(crate) uid: EntityUid,
    pub(crate) principals: Vec<EntityTypeName>,
    pub(crate) resources: Vec<EntityTypeName>,
}

impl Bundle {
    /// Parse and check a bundle given as (file name, text) pairs.
    pub fn load(files: &[(String, String)]) -> Result<Bundle, Vec<BundleProblem>> {
        let mut problems = Vec::new();
        let total: usize = files.iter().map(|(n, t)| n.len() + t.len()).sum();
        if total > MAX_BUNDLE_BYTES {
            return Err(vec![BundleProblem::new(
                ProblemKind::Limit,
                format!("bundle is {total} bytes, over the limit of {MAX_BUNDLE_BYTES}"),
            )]);
        }

        let mut manifest_file = None;
        let mut schema_files = Vec::new();
        let mut policy_files = Vec::new();
        let mut entities_file = None;
        let mut adequacy_file = None;
        let mut flows_file = None;
        let mut case_files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (name, text) in files {
            if !seen.insert(name.as_str()) {
                problems.push(BundleProblem::at(
                    ProblemKind::MissingFile,
                    Location::file(name),
                    "file given twice",
                ));
                continue;
            }
            if name == MANIFEST_FILE {
                manifest_file = Some((name, text));
            } else if name == ENTITIES_FILE {
                entities_file = Some((name, text));
            } else if name == crate::transfer::ADEQUACY_FILE {
                adequacy_file = Some((name, text));
            } else if name == crate::flows::FLOWS_FILE {
                flows_file = Some((name, text));
            } else if name.starts_with("tests/")
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
            {
                case_files.push((name, text));
            } else if name.ends_with(".cedarschema") && !name.contains('/') {
                schema_files.push((name, text));
            } else if name.ends_with(".cedar") && !name.contains('/') {
                policy_files.push((name, text));
            } else {
                problems.push(BundleProblem::at(
                    ProblemKind::MissingFile,
                    Location::file(name),
                    format!(
                        "unexpected file `{name}` (a bundle holds {MANIFEST_FILE}, *.cedarschema, *.cedar, {ENTITIES_FILE}, {}, {} and tests/*.yaml)", crate::transfer::ADEQUACY_FILE, crate::flows::FLOWS_FILE
                    ),
                ));
            }
        }
        // Stable order whatever order the host listed the files in.
        schema_files.sort();
        policy_files.sort();
        case_files.sort();

        let Some((mname, mtext)) = manifest_file else {
            problems.push(BundleProblem::new(
                ProblemKind::MissingFile,
                format!("no `{MANIFEST_FILE}` in the bundle"),
            ));
            return Err(problems);
        };
        let manifest = match Manifest::parse(mname, mtext) {
            Ok(m) => m,
            Err(p) => {
                problems.push(p);
                return Err(problems);
            }
        };
        let ns = manifest.bundle.namespace.clone();

        // Schema: the engine's fragment plus the bundle's.
        let mut fragments = Vec::new();
        match SchemaFragment::from_cedarschema_str(PORTCULLIS_SCHEMA) {
            Ok((f, _)) => fragments.push(f),
            Err(e) => problems.push(BundleProblem::new(
                ProblemKind::Schema,
                format!("engine schema: {e}"),
            )),
        }
        if schema_files.is_empty() {
            problems.push(BundleProblem::new(
                ProblemKind::MissingFile,
                "no `*.cedarschema` file in the bundle",
            ));
        }
        for (name, text) in &schema_files {
            if let Err((off, message)) = crate::guard::cedar(text, true) {
                problems.push(BundleProblem::at(
                    ProblemKind::Limit,
                    Location::at_offset(name, text, off),
                    message,
                ));
                continue;
            }
            match SchemaFragment::from_cedarschema_str(text) {
                Ok((f, _warnings)) => fragments.push(f),
                Err(e) => problems.push(diagnostic_problem(ProblemKind::Schema, name, text, &e)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let schema = match Schema::from_schema_fragments(fragments) {
            Ok(s) => s,
            Err(e) => {
                let (name, text) = schema_files
                    .first()
                    .map(|(n, t)| (n.as_str(), t.as_str()))
                    .unwrap_or(("", ""));
                problems.push(diagnostic_problem(ProblemKind::Schema, name, text, &e));
                return Err(problems);
            }
        };
        let schema_name = schema_files
            .first()
            .map(|(n, _)| n.as_str())
            .unwrap_or("schema.cedarschema");
        let schema_text = schema_files.first().map(|(_, t)| t.as_str()).unwrap_or("");
        let (types, actions) = match vocabulary(&schema, &ns, schema_name, schema_text) {
            Ok(v) => v,
            Err(mut p) => {
                problems.append(&mut p);
                return Err(problems);
            }
        };

        // Policies: each file on its own, so every error knows its file.
        let mut policies = PolicySet::new();
        let mut meta = HashMap::new();
        let mut origin: HashMap<PolicyId, (&str, &str, usize)> = HashMap::new();
        if policy_files.is_empty() {
            problems.push(BundleProblem::new(
                ProblemKind::MissingFile,
                "no `*.cedar` policy file in the bundle",
            ));
        }
        for (name, text) in &policy_files {
            // Text too deep for Cedar's recursion is refused before it
            // reaches Cedar (crate::guard::cedar).
            if let Err((off, message)) = crate::guard::cedar(text, false) {
                problems.push(BundleProblem::at(
                    ProblemKind::Limit,
                    Location::at_offset(name, text, off),
                    message,
                ));
                continue;
            }
            let set = match PolicySet::from_str(text) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(diagnostic_problem(ProblemKind::PolicyParse, name, text, &e));
                    continue;
                }
            };
            let starts = policy_starts(text);
            let mut parsed: Vec<&Policy> = set.policies().collect();
            // Cedar numbers a file's policies policy0, policy1 … in order.
            parsed.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(0)
            });
            for (index, policy) in parsed.into_iter().enumerate() {
                let start = starts.get(index).copied().unwrap_or(0);
                let at = |needle: &str| {
                    let off = text
                        .get(start..)
                        .and_then(|rest| rest.find(needle))
                        .map(|i| start + i)
                        .unwrap_or(start);
                    Location::at_offset(name, text, off)
                };
                if policy.is_static() {
                    // fine
                } else {
                    problems.push(BundleProblem::at(
                        ProblemKind::PolicyParse,
                        at(""),
                        "templates are not supported in bundles",
                    ));
                    continue;
                }
                for (key, _) in policy.annotations() {
                    if !ANNOTATIONS.contains(&key) {
                        problems.push(BundleProblem::at(
                            ProblemKind::PolicyParse,
                            at(&format!("@{key}")),
                            format!(
                                "unknown annotation `@{key}` (expected one of {})",
                                ANNOTATIONS.map(|a| format!("@{a}")).join(", ")
                            ),
                        ));
                    }
                }
                let Some(id) = policy.annotation("id").map(str::to_string) else {
                    problems.push(BundleProblem::at(
                        ProblemKind::PolicyParse,
                        at(""),
                        "policy has no `@id(\"…\")` annotation; every policy needs a unique id",
                    ));
                    continue;
                };
                let pid = PolicyId::new(&id);
                if let Some((other, otext, ooff)) = origin.get(&pid) {
                    let first = Location::at_offset(other, otext, *ooff);
                    problems.push(BundleProblem::at(
                        ProblemKind::PolicyParse,
                        at("@id"),
                        format!("policy id `{id}` is used twice (first at {first})"),
                    ));
                    continue;
                }
                let effect_forbid = policy.effect() == cedar_policy::Effect::Forbid;
                let outcome = match policy.annotation("outcome") {
                    None => {
                        if effect_forbid {
                            Outcome::Deny
                        } else {
                            Outcome::Allow
                        }
                    }
                    Some(text_outcome) => match text_outcome.parse::<Outcome>() {
                        Ok(o) => o,
                        Err(msg) => {
                            problems.push(BundleProblem::at(
                                ProblemKind::PolicyParse,
                                at("@outcome"),
                                msg,
                            ));
                            continue;
                        }
                    },
                };
                if effect_forbid == outcome.fits_permit() {
                    problems.push(BundleProblem::at(
                        ProblemKind::PolicyParse,
                        at("@outcome"),
                        if effect_forbid {
                            format!("a `forbid` cannot carry `@outcome(\"{outcome}\")` (expected challenge, throttle, deny or lock)")
                        } else {
                            format!("a `permit` cannot carry `@outcome(\"{outcome}\")` (expected allow or redact)")
                        },
                    ));
                    continue;
                }
                let retry_after = match policy.annotation("retry_after") {
                    None => None,
                    Some("lockout") => Some(RetryAfter::Lockout),
                    Some("rate") => Some(RetryAfter::Rate),
                    Some(v) => match v.parse::<u64>() {
                        Ok(n) => Some(RetryAfter::Seconds(n)),
                        Err(_) => {
                            problems.push(BundleProblem::at(
                                ProblemKind::PolicyParse,
                                at("@retry_after"),
                                format!("`@retry_after(\"{v}\")` is not a number of seconds, \"lockout\" or \"rate\""),
                            ));
                            continue;
                        }
                    },
                };
                let m = PolicyMeta {
                    outcome,
                    reason: policy.annotation("reason").map(str::to_string),
                    escalate: policy.annotation("escalate").map(str::to_string),
                    retry_after,
                    file: name.to_string(),
                };
                if let Err(e) = policies.add(policy.new_id(pid.clone())) {
                    problems.push(BundleProblem::at(
                        ProblemKind::PolicyParse,
                        at(""),
                        e.to_string(),
                    ));
                    continue;
                }
                origin.insert(pid.clone(), (name, text, start));
                meta.insert(pid, m);
            }
        }
        if meta.len() > MAX_POLICIES {
            problems.push(BundleProblem::new(
                ProblemKind::Limit,
                format!(
                    "bundle has {} policies, over the limit of {MAX_POLICIES}",
                    meta.len()
                ),
            ));
        }
        if problems.is_empty() {
            let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
            for err in result.validation_errors() {
                let (name, text) = origin
                    .get(err.policy_id())
                    .map(|(n, t, _)| (*n, *t))
                    .unwrap_or(("", ""));
                problems.push(diagnostic_problem(
                    ProblemKind::PolicyValidation,
                    name,
                    text,
                    err,
                ));
            }
        }

        // Static entities.
        let entities = match entities_file {
            None => Entities::empty(),
            Some((name, text)) => match crate::guard::check(text, crate::limits::MAX_JSON_DEPTH)
                .and_then(|()| {
                    crate::guard::entity_hierarchy(text, crate::limits::MAX_ENTITY_DEPTH)
                }) {
                // Duplicate keys, deep nesting, deep or cyclic hierarchies
                // are refused before Cedar reads the file.
                Err(p) => {
                    problems.push(guard_problem(ProblemKind::Entities, name, text, &p));
                    Entities::empty()
                }
                Ok(()) => match Entities::from_json_str(text, Some(&schema)) {
                    Ok(e) => e,
                    Err(e) => {
                        problems.push(entity_problem(name, text, &e));
                        Entities::empty()
                    }
                },
            },
        };

        // Every `context.record.<name>` a policy reads must be mapped by every module.
        for (name, text) in &policy_files {
            for (module, field, off) in crate::normalise::unmapped(&manifest, text) {
                problems.push(BundleProblem::at(
                    ProblemKind::PolicyValidation,
                    Location::at_offset(name, text, off),
                    format!("policies read `context.record.{field}` but module `{module}` maps no field to it (add it to [modules.{module}.fields] in {MANIFEST_FILE})"),
                ));
            }
        }
        let synthetic_keys: Vec<crate::jwt::Verifier> = manifest
            .synthetic
            .issuers
            .iter()
            .filter_map(|k| k.verifiers().ok())
            .flatten()
            .collect();
        let oauth_keys: Vec<crate::jwt::Verifier> = manifest
            .oauth
            .issuers
            .iter()
            .filter_map(|k| k.verifiers().ok())
            .flatten()
            .collect();

        let by_action = index_by_action(&schema, &policies, &actions);
        let needs: HashMap<String, crate::context::Needs> = by_action
            .iter()
            .map(|(name, set)| (name.clone(), crate::context::Needs::of(set.policies())))
            .collect();
        let needs_all = crate::context::Needs::of(policies.policies());
        let adequacy = match adequacy_file {
            None => crate::transfer::Adequacy::default(),
            Some((name, text))
                if let Err(p) = crate::guard::check(text, crate::limits::MAX_JSON_DEPTH) =>
            {
                problems.push(guard_problem(ProblemKind::Manifest, name, text, &p));
                crate::transfer::Adequacy::default()
            }
            Some((name, text)) => crate::transfer::Adequacy::parse(text).unwrap_or_else(|e| {
                problems.push(BundleProblem::at(
                    ProblemKind::Manifest,
                    Location::file(name),
                    e,
                ));
                crate::transfer::Adequacy::default()
            }),
        };

        // Cases.
        let mut cases = Vec::new();
        for (name, text) in &case_files {
            if let Err((off, message)) = crate::guard::yaml(text) {
                problems.push(BundleProblem::at(
                    ProblemKind::Limit,
                    Location::at_offset(name, text, off),
                    message,
                ));
                continue;
            }
            match CaseFile::parse(name, text) {
                Ok(c) => cases.push(c),
                Err(p) => problems.push(p),
            }
        }

        // The inventory, the control map and revocations: each reference
        // must resolve (policy ids, cases, regions, keys).
        let inventory = match flows_file {
            None => None,
            Some((name, text)) => match crate::flows::Inventory::parse(name, text) {
                Ok(inv) => {
                    problems.extend(inv.validate(&manifest));
                    Some(inv)
                }
                Err(p) => {
                    problems.push(p);
                    None
                }
            },
        };
        let has_policy = |id: &str| meta.contains_key(&PolicyId::new(id));
        problems.extend(crate::controls::validate(
            &manifest.controls,
            &has_policy,
            &cases,
            mname,
            mtext,
        ));
        let mut synthetic_keys = synthetic_keys;
        let mut oauth_keys = oauth_keys;
        let kids: Vec<String> = synthetic_keys
            .iter()
            .chain(oauth_keys.iter())
            .filter_map(|k| k.kid().map(str::to_string))
            .collect();
        problems.extend(crate::revocation::validate(
            &manifest.revocations,
            &has_policy,
            &kids,
            mname,
            mtext,
        ));
        for key in synthetic_keys.iter_mut().chain(oauth_keys.iter_mut()) {
            let revoked = manifest
                .revocations
                .iter()
                .any(|r| r.kind == "key" && key.kid() == Some(r.id.as_str()));
            if revoked {
                key.revoke();
            }
        }

        if !problems.is_empty() {
            return Err(problems);
        }

        let trusted_proxies = manifest.network.validate().unwrap_or_default();
        let mut hasher = Sha256::new();
        let sorted: BTreeMap<&str, &str> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        for (n, t) in sorted {
            hasher.update((n.len() as u64).to_le_bytes());
            hasher.update(n.as_bytes());
            hasher.update((t.len() as u64).to_le_bytes());
            hasher.update(t.as_bytes());
        }
        let mut policy_ids: Vec<String> = meta.keys().map(|p| p.to_string()).collect();
        policy_ids.sort();
        let info = BundleInfo {
            name: manifest.bundle.name.clone(),
            version: manifest.bundle.version.clone(),
            namespace: ns,
            hash: hex::encode(hasher.finalize()),
            policy_ids,
            case_count: cases.iter().map(|c| c.cases.len() as u32).sum(),
        };
        let bundle = Bundle {
            manifest,
            policies,
            meta,
            entities,
            cases,
            info,
            types,
            actions,
            synthetic_keys,
            oauth_keys,
            adequacy,
            by_action,
            needs,
            needs_all,
            memo: crate::memo::Memo::default(),
            trusted_proxies,
            inventory,
        };
        let problems = bundle.check_flow_requests();
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(bundle)
    }

    /// What this bundle is.
    pub fn info(&self) -> &BundleInfo {
        &self.info
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The case files.
    pub fn case_files(&self) -> &[CaseFile] {
        &self.cases
    }

    /// Turn the memory of Cedar's answers on (the default) or off (to
    /// measure what evaluating costs), and how it has done so far.
    #[doc(hidden)]
    pub fn set_memo(&self, on: bool) {
        self.memo.set_enabled(on);
    }

    /// Build the whole context for every decision (off) instead of only
    /// what the action's policies read (on, the default): to test that
    /// both decide alike.
    #[doc(hidden)]
    pub fn set_projection(&self, on: bool) {
        self.memo.set_projection(on);
    }

    /// What each action's policies read of the context, as dotted paths.
    #[doc(hidden)]
    pub fn context_reads(&self) -> BTreeMap<String, Vec<String>> {
        self.actions
            .keys()
            .map(|a| {
                let n = self.needs.get(a).unwrap_or(&self.needs_all);
                (a.clone(), n.paths())
            })
            .collect()
    }

    /// Hits and misses of the memory of Cedar's answers.
    #[doc(hidden)]
    pub fn memo_stats(&self) -> crate::memo::MemoStats {
        self.memo.stats()
    }

    /// The parsed policies and entities, for benchmarks that compare with
    /// bare Cedar.
    #[doc(hidden)]
    pub fn cedar_parts(&self) -> (&PolicySet, &Entities) {
        (&self.policies, &self.entities)
    }
}

/// The policies each action can match (see `Bundle::by_action`).
fn index_by_action(
    schema: &Schema,
    policies: &PolicySet,
    actions: &HashMap<String, ActionInfo>,
) -> HashMap<String, PolicySet> {
    use cedar_policy::ActionConstraint;
    if schema.action_groups().next().is_some() {
        return HashMap::new();
    }
    let mut out = HashMap::new();
    for (name, info) in actions {
        let mut set = PolicySet::new();
        for p in policies.policies() {
            let applies = match p.action_constraint() {
                ActionConstraint::Eq(a) => a == info.uid,
                ActionConstraint::In(list) => list.contains(&info.uid),
                _ => true,
            };
            if applies && set.add(p.clone()).is_err() {
                // Cannot happen (ids are unique); fall back to the whole set.
                return HashMap::new();
            }
        }
        out.insert(name.clone(), set);
    }
    out
}

/// Entity types and actions of the bundle namespace, by request name; and a
/// check that each action declares the engine's context.
#[expect(clippy::type_complexity, reason = "two lookup maps returned together")]
fn vocabulary(
    schema: &Schema,
    ns: &str,
    file: &str,
    text: &str,
) -> Result<(HashMap<String, EntityTypeName>, HashMap<String, ActionInfo>), Vec<BundleProblem>> {
    let mut problems = Vec::new();
    let prefix = format!("{ns}::");
    let mut types = HashMap::new();
    for t in schema.entity_types() {
        let full = t.to_string();
        if let Some(short) = full.strip_prefix(&prefix).filter(|s| !s.contains("::")) {
            types.insert(short.to_string(), t.clone());
        }
    }
    let mut actions = HashMap::new();
    let probe = crate::context::probe_context();
    for a in schema.actions() {
        if a.type_name().to_string() != format!("{ns}::Action") {
            continue;
        }
        let name = a.id().unescaped().to_string();
        if let Err(e) = cedar_policy::Context::from_pairs(probe.clone())
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate(schema, a).map_err(|e| e.to_string()))
        {
            let off = text
                .find(&format!("\"{name}\""))
                .or_else(|| text.find(&format!("action {name}")))
                .unwrap_or(0);
            problems.push(BundleProblem::at(
                ProblemKind::Schema,
                Location::at_offset(file, text, off),
                format!("action `{name}` must declare `context: Portcullis::Context` (the context the engine supplies): {e}"),
            ));
        }
        let principals = schema
            .principals_for_action(a)
            .map(|i| i.cloned().collect())
            .unwrap_or_default();
        let resources = schema
            .resources_for_action(a)
            .map(|i| i.cloned().collect())
            .unwrap_or_default();
        actions.insert(
            name,
            ActionInfo {
                uid: a.clone(),
                principals,
                resources,
            },
        );
    }
    if types.is_empty() || actions.is_empty() {
        problems.push(BundleProblem::at(
            ProblemKind::Schema,
            Location::file(file),
            format!("the schema declares no entity types or no actions in the manifest's namespace `{ns}`"),
        ));
    }
    if problems.is_empty() {
        Ok((types, actions))
    } else {
        Err(problems)
    }
}

/// Byte offsets where each policy of a file starts (its first annotation
/// or its `permit`/`forbid`), in order; strings and comments skipped.
fn policy_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut depth = 0i32;
    let mut at_statement_start = true;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(b' ');
        match b {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes.get(i) != Some(&b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                if at_statement_start && depth == 0 {
                    at_statement_start = false;
                }
                i += 1;
                while i < bytes.len() {
                    match bytes.get(i) {
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        _ => i += 1,
                    }
                }
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b';' if depth == 0 => at_statement_start = true,
            c if c.is_ascii_whitespace() => {}
            _ => {
                if at_statement_start && depth == 0 {
                    starts.push(i);
                    at_statement_start = false;
                }
            }
        }
        i += 1;
    }
    starts
}

/// A problem from a cedar diagnostic, located by its first label.
fn diagnostic_problem(
    kind: ProblemKind,
    file: &str,
    text: &str,
    err: &dyn Diagnostic,
) -> BundleProblem {
    let offset = err.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let mut message = lowercase_first(&err.to_string());
    if let Some(help) = err.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    match offset {
        Some(off) if !file.is_empty() => {
            BundleProblem::at(kind, Location::at_offset(file, text, off), message)
        }
        _ if !file.is_empty() => BundleProblem::at(kind, Location::file(file), message),
        _ => BundleProblem::new(kind, message),
    }
}

/// A problem the JSON guard found in a bundle file, located at the first
/// occurrence of the key or entity it names.
fn guard_problem(
    kind: ProblemKind,
    file: &str,
    text: &str,
    p: &crate::guard::Problem,
) -> BundleProblem {
    let kind = if p.limit { ProblemKind::Limit } else { kind };
    let needle = p
        .path
        .rsplit(['.', ':'])
        .next()
        .unwrap_or("")
        .trim_matches('"');
    let off = (!needle.is_empty())
        .then(|| text.find(&format!("\"{needle}\"")))
        .flatten()
        .unwrap_or(0);
    let message = if p.path.is_empty() {
        p.message.clone()
    } else {
        format!("at `{}`: {}", p.path, p.message)
    };
    BundleProblem::at(kind, Location::at_offset(file, text, off), message)
}

/// Entity errors carry no span: find the entity's uid in the text.
fn entity_problem(
    file: &str,
    text: &str,
    err: &cedar_policy::entities_errors::EntitiesError,
) -> BundleProblem {
    let message = lowercase_first(&err.to_string());
    // The message quotes the entity (`Crm::Role::"admin"`); find its id.
    let off = message
        .split('"')
        .nth(1)
        .and_then(|id| text.find(&format!("\"{id}\"")))
        .unwrap_or(0);
    BundleProblem::at(
        ProblemKind::Entities,
        Location::at_offset(file, text, off),
        message,
    )
}

fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_policy_starts_past_strings_and_comments() {
        let text = "// a; b\n@id(\"x;\")\npermit(principal, action, resource) when { \"}\" == \"}\" };\n\nforbid(principal, action, resource);\n";
        let starts = policy_starts(text);
        assert_eq!(starts.len(), 2);
        assert!(text.get(starts[0]..).is_some_and(|s| s.starts_with("@id")));
        assert!(
            text.get(starts[1]..)
                .is_some_and(|s| s.starts_with("forbid"))
        );
    }
}
