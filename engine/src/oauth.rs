//! OAuth access tokens: verified by the engine, so no host has to.
//!
//! Signature (RS256, ES256, EdDSA, HS256 for tests) against the manifest's
//! keys (PEM, JWK or JWKS), with the algorithm taken from the key (no
//! `alg: none`, no algorithm confusion), issuer, audience, expiry and
//! not-before against the request's `now` with a bounded leeway. Verified
//! scopes are expanded through the manifest's hierarchy (e.g. `full` ⊇
//! everything, `api` ⊇ `chatter_api`) before policies see them. A token
//! that does not verify is never an anonymous allow: the engine refuses any
//! allow for a request carrying one.

use crate::jwt::{self, Verifier};
use crate::manifest::OauthSection;
use serde_json::Value;
use std::collections::BTreeSet;

/// What the engine concluded about the access token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFacts {
    /// A token was presented.
    pub present: bool,
    /// It verified.
    pub valid: bool,
    /// Why not (`expired`, `bad-signature` …), "" when valid or absent.
    pub failure: String,
    /// Verified issuer.
    pub issuer: String,
    /// Verified subject.
    pub subject: String,
    /// Verified client id (`client_id`, else `azp`).
    pub client_id: String,
    /// Verified scopes, expanded.
    pub scopes: BTreeSet<String>,
    /// Expiry (seconds since the epoch), 0 when not valid.
    pub expires: i64,
    /// The `kid` of the trusted key whose signature held ("" when none
    /// held or the key has no id): set for a valid token and for one
    /// refused after its signature held (expired, `revoked-key` …).
    pub kid: String,
}

/// Verify the request's token, if any.
pub fn derive(
    section: &OauthSection,
    keys: &[Verifier],
    token: Option<&str>,
    now: i64,
) -> TokenFacts {
    let Some(token) = token else {
        return TokenFacts::default();
    };
    let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    let expect = jwt::Expect {
        audience: (!section.audience.is_empty()).then_some(section.audience.as_str()),
        now,
        leeway: section.leeway.as_secs() as i64,
        required: &[],
    };
    let (kid, verified) = jwt::verify_key(token, keys, &expect);
    let kid = kid.unwrap_or_default();
    match verified {
        Ok(claims) => {
            let text = |k: &str| {
                claims
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let granted: Vec<String> = match claims.get(&section.scope_claim) {
                Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            };
            let client_id = match text("client_id") {
                c if c.is_empty() => text("azp"),
                c => c,
            };
            TokenFacts {
                present: true,
                valid: true,
                failure: String::new(),
                issuer: text("iss"),
                subject: text("sub"),
                client_id,
                scopes: expand(section, granted),
                expires: claims.get("exp").and_then(Value::as_i64).unwrap_or(0),
                kid,
            }
        }
        Err(f) => TokenFacts {
            present: true,
            failure: f.as_str().to_string(),
            kid,
            ..TokenFacts::default()
        },
    }
}

/// Expand scopes through the hierarchy, transitively (cycles are harmless).
pub fn expand(section: &OauthSection, granted: Vec<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = granted;
    while let Some(s) = todo.pop() {
        if out.insert(s.clone())
            && let Some(more) = section.scopes.get(&s)
        {
            todo.extend(more.iter().cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_expand_transitively() {
        let mut s = OauthSection::default();
        s.scopes
            .insert("full".into(), vec!["api".into(), "web".into()]);
        s.scopes
            .insert("api".into(), vec!["chatter_api".into(), "full".into()]);
        let got: Vec<String> = expand(&s, vec!["full".into()]).into_iter().collect();
        assert_eq!(got, ["api", "chatter_api", "full", "web"]);
        let got: Vec<String> = expand(&s, vec!["web".into()]).into_iter().collect();
        assert_eq!(got, ["web"]);
    }
}
