//! JSON Web Token verification against keys a bundle trusts.
//!
//! Shared by the synthetic-provenance check and OAuth access tokens. The
//! rules that matter for security are here, once:
//! - the algorithm comes from the trusted key, never from the token header
//!   (no `alg: none`, no HS256-signed token accepted against an RSA or
//!   EdDSA key: algorithm confusion);
//! - the key is chosen by issuer (and `kid` when the key names one);
//! - expiry and not-before are checked against the request's `now` with a
//!   bounded leeway, not the host clock, so decisions replay exactly.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A key the bundle trusts for one issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// The `iss` this key signs for.
    pub issuer: String,
    /// `HS256`, `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
    /// Key id; when set, the token's `kid` must equal it.
    #[serde(default)]
    pub kid: Option<String>,
    /// HS256 shared secret, base64 (test setups).
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key (RS256, ES256, EdDSA).
    #[serde(default)]
    pub public_key: Option<String>,
    /// A JWK (JSON text) instead of PEM.
    #[serde(default)]
    pub jwk: Option<String>,
    /// A JWK Set (JSON text): one verifier per key, each by its `kid`; the
    /// algorithm comes from each key's `alg`, else from `algorithm`.
    #[serde(default)]
    pub jwks: Option<String>,
}

/// A trusted key ready to verify with.
#[derive(Clone)]
pub struct Verifier {
    issuer: String,
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
    /// Identifies the key material, for the signature cache.
    fingerprint: [u8; 32],
    /// Revoked by the bundle (`[[revocations]]`): a token it signed fails
    /// with `revoked-key`.
    revoked: bool,
}

impl Verifier {
    /// The key's id, when it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Stop trusting this key: tokens it signed fail with `revoked-key`.
    pub fn revoke(&mut self) {
        self.revoked = true;
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("revoked", &self.revoked)
            .finish()
    }
}

impl TrustedKey {
    /// Every verifier this entry stands for (one, or one per JWKS key).
    pub fn verifiers(&self) -> Result<Vec<Verifier>, String> {
        let Some(set) = &self.jwks else {
            return self.verifier().map(|v| vec![v]);
        };
        if self.secret.is_some() || self.public_key.is_some() || self.jwk.is_some() {
            return Err("`jwks` stands alone: drop `secret`, `public_key` and `jwk`".into());
        }
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(set).map_err(|e| format!("`jwks` is not a JWK Set: {e}"))?;
        if set.keys.is_empty() {
            return Err("`jwks` holds no key".into());
        }
        set.keys
            .iter()
            .map(|jwk| {
                let algorithm = match jwk.common.key_algorithm {
                    Some(a) => format!("{a:?}"),
                    None => self.algorithm.clone(),
                };
                let one = TrustedKey {
                    issuer: self.issuer.clone(),
                    algorithm,
                    kid: jwk.common.key_id.clone().or_else(|| self.kid.clone()),
                    secret: None,
                    public_key: None,
                    jwk: Some(serde_json::to_string(jwk).map_err(|e| e.to_string())?),
                    jwks: None,
                };
                one.verifier()
            })
            .collect()
    }

    /// Parse the key material; the message names what is wrong.
    pub fn verifier(&self) -> Result<Verifier, String> {
        let algorithm = match self.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            other => {
                return Err(format!(
                    "algorithm `{other}` is not supported (expected HS256, RS256, ES256 or EdDSA)"
                ));
            }
        };
        let key = match (algorithm, &self.secret, &self.public_key, &self.jwk) {
            (Algorithm::HS256, Some(s), None, None) => DecodingKey::from_base64_secret(s)
                .map_err(|e| format!("`secret` is not base64: {e}"))?,
            (Algorithm::HS256, _, _, _) => {
                return Err("an HS256 key needs `secret` (base64) and nothing else".into());
            }
            (_, Some(_), _, _) => {
                return Err(format!(
                    "a {} key takes `public_key` or `jwk`, not `secret`",
                    self.algorithm
                ));
            }
            (alg, None, Some(pem), None) => {
                let bytes = pem.as_bytes();
                match alg {
                    Algorithm::RS256 => DecodingKey::from_rsa_pem(bytes),
                    Algorithm::ES256 => DecodingKey::from_ec_pem(bytes),
                    _ => DecodingKey::from_ed_pem(bytes),
                }
                .map_err(|e| {
                    format!(
                        "`public_key` is not a {} PEM public key: {e}",
                        self.algorithm
                    )
                })?
            }
            (_, None, None, Some(jwk)) => {
                let jwk: jsonwebtoken::jwk::Jwk =
                    serde_json::from_str(jwk).map_err(|e| format!("`jwk` is not a JWK: {e}"))?;
                DecodingKey::from_jwk(&jwk).map_err(|e| format!("`jwk` cannot be used: {e}"))?
            }
            _ => {
                return Err(format!(
                    "a {} key needs exactly one of `public_key` or `jwk`",
                    self.algorithm
                ));
            }
        };
        let fingerprint = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            for part in [
                self.issuer.as_str(),
                self.algorithm.as_str(),
                self.kid.as_deref().unwrap_or(""),
                self.secret.as_deref().unwrap_or(""),
                self.public_key.as_deref().unwrap_or(""),
                self.jwk.as_deref().unwrap_or(""),
            ] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            h.finalize().into()
        };
        Ok(Verifier {
            issuer: self.issuer.clone(),
            kid: self.kid.clone(),
            algorithm,
            key,
            fingerprint,
            revoked: false,
        })
    }
}

/// Why a token was not accepted. Stable names reach policies and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not three base64url parts with JSON header and claims.
    Malformed,
    /// `alg: none` (or an unsigned token).
    AlgNone,
    /// The header names another algorithm than the issuer's key.
    AlgorithmMismatch,
    /// No trusted key for the token's issuer (or `kid`).
    UnknownIssuer,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is past (beyond the leeway), or missing.
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `aud` does not include the expected audience.
    WrongAudience,
    /// A required claim is missing.
    MissingClaim,
    /// The signature verifies under a key the bundle revoked.
    RevokedKey,
    /// Longer than [`crate::limits::MAX_TOKEN_BYTES`]: not decoded.
    Oversized,
}

impl Failure {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed",
            Failure::AlgNone => "alg-none",
            Failure::AlgorithmMismatch => "algorithm-mismatch",
            Failure::UnknownIssuer => "unknown-issuer",
            Failure::BadSignature => "bad-signature",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not-yet-valid",
            Failure::WrongAudience => "wrong-audience",
            Failure::MissingClaim => "missing-claim",
            Failure::RevokedKey => "revoked-key",
            Failure::Oversized => "oversized",
        }
    }
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Required audience (`aud` must equal or contain it).
    pub audience: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: i64,
    /// Allowed clock skew, seconds.
    pub leeway: i64,
    /// Claims that must be present.
    pub required: &'a [String],
}

/// Most (key, token) signature results kept per thread.
const SIGNATURE_CACHE: usize = 4096;

/// Signature results by (key digest, token digest).
type SignatureCache = std::collections::HashMap<([u8; 32], [u8; 32]), bool>;

thread_local! {
    static SIGNATURES: std::cell::RefCell<SignatureCache> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Does the signature of `token` hold under `key`? A client presents the
/// same token many times (a load test, a session), and an EdDSA check costs
/// tens of µs (more in wasm), so the answer is kept per (key material,
/// exact token text). Only the signature is cached: time and audience are
/// checked on every request.
fn signature_holds(token: &str, key: &Verifier, validation: &Validation) -> bool {
    // Keyed by the token's digest: the cache holds 64 bytes per entry
    // whatever the tokens' size.
    let cache_key = (key.fingerprint, {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    });
    if let Some(hit) = SIGNATURES.with(|c| c.borrow().get(&cache_key).copied()) {
        return hit;
    }
    let holds =
        jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, validation).is_ok();
    SIGNATURES.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= SIGNATURE_CACHE {
            c.clear();
        }
        c.insert(cache_key, holds);
    });
    holds
}

/// A header or claim set: JSON with no key twice (a duplicate `exp` or
/// `alg` would mean one thing here and another to the next reader) and no
/// deep nesting.
fn strict_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let text = std::str::from_utf8(bytes).ok()?;
    crate::guard::check(text, 16).ok()?;
    serde_json::from_str(text).ok()
}

/// Verify `token` against `keys`; the verified claims, or why not.
pub fn verify(
    token: &str,
    keys: &[Verifier],
    expect: &Expect<'_>,
) -> Result<serde_json::Map<String, Value>, Failure> {
    verify_key(token, keys, expect).1
}

/// As [`verify`], with the `kid` of the trusted key whose signature held
/// (set for a valid token and for one refused after its signature held:
/// expired, revoked key …; `None` when no signature held or the key has no
/// id). The id is the trusted key's, never taken from the header alone.
pub fn verify_key(
    token: &str,
    keys: &[Verifier],
    expect: &Expect<'_>,
) -> (
    Option<String>,
    Result<serde_json::Map<String, Value>, Failure>,
) {
    let mut signed_by = None;
    let result = check(token, keys, expect, &mut signed_by);
    (signed_by, result)
}

fn check(
    token: &str,
    keys: &[Verifier],
    expect: &Expect<'_>,
    signed_by: &mut Option<String>,
) -> Result<serde_json::Map<String, Value>, Failure> {
    use base64::Engine as _;
    if token.len() > crate::limits::MAX_TOKEN_BYTES {
        return Err(Failure::Oversized);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, claims_b64, _sig] = parts.as_slice() else {
        return Err(Failure::Malformed);
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = b64
        .decode(header_b64.trim_end_matches('='))
        .ok()
        .and_then(|b| strict_json(&b))
        .ok_or(Failure::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(Failure::Malformed)?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(Failure::AlgNone);
    }
    let claims: serde_json::Map<String, Value> = b64
        .decode(claims_b64.trim_end_matches('='))
        .ok()
        .and_then(|b| strict_json(&b))
        .ok_or(Failure::Malformed)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(Failure::UnknownIssuer)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let mut candidates = keys.iter().filter(|k| k.issuer == issuer).peekable();
    if candidates.peek().is_none() {
        return Err(Failure::UnknownIssuer);
    }
    let candidates: Vec<&Verifier> = candidates
        .filter(|k| k.kid.is_none() || k.kid.as_deref() == kid)
        .collect();
    let Some(key) = candidates.first() else {
        return Err(Failure::UnknownIssuer);
    };
    // The key decides the algorithm; a header that says otherwise is refused
    // before any signature check (algorithm confusion).
    let alg_name = match key.algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "EdDSA",
    };
    if alg != alg_name {
        return Err(Failure::AlgorithmMismatch);
    }
    let mut validation = Validation::new(key.algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.set_issuer(&[issuer]);
    if !signature_holds(token, key, &validation) {
        return Err(Failure::BadSignature);
    }
    signed_by.clone_from(&key.kid);
    if key.revoked {
        return Err(Failure::RevokedKey);
    }
    // Time and audience against the request, after the signature holds.
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(Failure::Expired)?;
    if exp.saturating_add(expect.leeway) <= expect.now {
        return Err(Failure::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
        && nbf.saturating_sub(expect.leeway) > expect.now
    {
        return Err(Failure::NotYetValid);
    }
    if let Some(aud) = expect.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => s == aud,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(Failure::WrongAudience);
        }
    }
    if expect.required.iter().any(|c| !claims.contains_key(c)) {
        return Err(Failure::MissingClaim);
    }
    Ok(claims)
}
