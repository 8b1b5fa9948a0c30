//! Revocations: a model, a principal or a signing key taken out of service
//! in an incident (`portcullis revoke` writes them).
//!
//! The manifest's `[[revocations]]` records each one (kind, id, reason,
//! escalation, time) and names the policy that enforces it: a generated
//! Cedar `forbid` with `@reason("revoked-…")` and `@escalate`, so the
//! decision, its audit record and the metrics cite the revocation. For a
//! key the engine also stops trusting it: a token whose signature verifies
//! under a revoked key fails with `revoked-key` (never valid, never
//! verified provenance), and `context.token.kid` / `context.synthetic.kid`
//! name the key, whatever the token's header claims.
//!
//! Checked at load: the kind is known, the policy exists, a revoked key id
//! is the `kid` of a trusted key (OAuth or synthetic provenance).

use crate::error::{BundleProblem, Location, ProblemKind};
use serde::{Deserialize, Serialize};

/// Kinds of revocation.
pub const KINDS: [&str; 3] = ["model", "principal", "key"];

/// One `[[revocations]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// `model`, `principal` or `key`.
    pub kind: String,
    /// The model id, the principal (`Type:id`), or the key's `kid`.
    pub id: String,
    /// The policy that enforces it.
    pub policy: String,
    /// Why (incident reference, for people).
    pub reason: String,
    /// Who is told when it denies.
    #[serde(default)]
    pub escalate: Option<String>,
    /// When it was revoked (RFC 3339).
    #[serde(default)]
    pub at: Option<String>,
}

/// Check the revocations: kinds, policies, key ids.
pub fn validate(
    revocations: &[Revocation],
    policy_ids: &dyn Fn(&str) -> bool,
    kids: &[String],
    file: &str,
    text: &str,
) -> Vec<BundleProblem> {
    let mut out = Vec::new();
    let mut from = 0;
    for (i, r) in revocations.iter().enumerate() {
        // The i-th `[[revocations]]` header, then the entry's own lines.
        let header = text
            .get(from..)
            .and_then(|t| t.find("[[revocations]]"))
            .map(|o| from + o)
            .unwrap_or(0);
        from = header + 1;
        let at = |needle: &str| {
            let off = text
                .get(header..)
                .and_then(|t| t.find(needle))
                .map(|o| header + o)
                .unwrap_or(header);
            Location::at_offset(file, text, off)
        };
        let mut problem = |loc: Location, msg: String| {
            out.push(BundleProblem::at(ProblemKind::Manifest, loc, msg))
        };
        if !KINDS.contains(&r.kind.as_str()) {
            problem(
                at("kind"),
                format!(
                    "revocations[{i}]: unknown kind `{}` (expected {})",
                    r.kind,
                    KINDS.join(", ")
                ),
            );
        }
        if r.id.trim().is_empty() {
            problem(
                at("id"),
                format!("revocations[{i}]: `id` must not be empty"),
            );
        }
        if !policy_ids(&r.policy) {
            problem(
                at("policy"),
                format!(
                    "revocations[{i}]: no policy with id `{}` in the bundle enforces it",
                    r.policy
                ),
            );
        }
        if r.kind == "key" && !kids.iter().any(|k| k == &r.id) {
            problem(
                at("id"),
                format!(
                    "revocations[{i}]: no trusted key has kid `{}` (known: {})",
                    r.id,
                    if kids.is_empty() {
                        "none".to_string()
                    } else {
                        kids.join(", ")
                    }
                ),
            );
        }
        if let Some(t) = &r.at
            && crate::timefmt::parse_now(t).is_err()
        {
            problem(
                at("at"),
                format!("revocations[{i}]: `at` is `{t}`, not an RFC 3339 time"),
            );
        }
    }
    out
}

impl crate::Bundle {
    /// The entity types of the bundle's namespace, unqualified, sorted.
    pub fn entity_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self.types.keys().cloned().collect();
        t.sort();
        t
    }

    /// The entity types some action takes as its principal, unqualified, sorted.
    pub fn principal_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .actions
            .values()
            .flat_map(|a| a.principals.iter().map(|p| p.basename().to_string()))
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// The `kid` of every trusted key (OAuth and synthetic provenance).
    pub fn trusted_kids(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .synthetic_keys
            .iter()
            .chain(self.oauth_keys.iter())
            .filter_map(|v| v.kid().map(str::to_string))
            .collect();
        k.sort();
        k.dedup();
        k
    }

    /// The ids of the bundle's policies.
    pub fn has_policy(&self, id: &str) -> bool {
        self.meta.contains_key(&cedar_policy::PolicyId::new(id))
    }
}
