//! Synthetic-data provenance: a claim (request marker, the module's record
//! flag, or a token) must be proven by a JWT from an issuer the bundle
//! trusts. Proven traffic takes the synthetic pathway; a claim that is not
//! proven stays on the authentic pathway (it may be an attacker hiding
//! behind "test data") and is marked `unverified` with the reason, so
//! policies can challenge or lock it sooner.

use crate::jwt::{self, Failure, Verifier};
use crate::manifest::SyntheticSection;
use crate::normalise::Record;
use crate::request::Request;
use serde_json::Value;

/// Synthetic status derived from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No claim.
    None,
    /// Claimed and proven.
    Verified,
    /// Claimed, not proven.
    Unverified,
}

impl Status {
    /// Name used in the context and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Verified => "verified",
            Status::Unverified => "unverified",
        }
    }
}

/// What the engine concluded about a synthetic claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The status.
    pub status: Status,
    /// Why an unproven claim failed (`missing-token`, `bad-signature`, `expired` …).
    pub failure: Option<&'static str>,
    /// Verified issuer.
    pub issuer: Option<String>,
    /// Verified `dataset` claim.
    pub dataset: Option<String>,
    /// Verified `generator` claim.
    pub generator: Option<String>,
    /// The `kid` of the trusted key whose signature held, also when the
    /// claim failed after it (expired, `revoked-key` …).
    pub kid: Option<String>,
}

impl Provenance {
    fn status(status: Status, failure: Option<&'static str>) -> Self {
        Provenance {
            status,
            failure,
            issuer: None,
            dataset: None,
            generator: None,
            kid: None,
        }
    }
}

/// Derive the provenance of a request.
pub fn derive(
    section: &SyntheticSection,
    keys: &[Verifier],
    req: &Request,
    record: &Record,
    now: i64,
) -> Provenance {
    let claim = req.context.synthetic.as_ref();
    let token = claim.and_then(|c| c.provenance.as_deref());
    let claimed =
        claim.is_some_and(|c| c.marker) || token.is_some() || record.synthetic == Some(true);
    if !claimed {
        return Provenance::status(Status::None, None);
    }
    let Some(token) = token else {
        return Provenance::status(Status::Unverified, Some("missing-token"));
    };
    let expect = jwt::Expect {
        audience: Some(section.audience.as_str()),
        now,
        leeway: section.leeway.as_secs() as i64,
        required: &section.required_claims,
    };
    let (kid, verified) = jwt::verify_key(token, keys, &expect);
    match verified {
        Ok(claims) => {
            let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
            Provenance {
                status: Status::Verified,
                failure: None,
                issuer: text("iss"),
                dataset: text("dataset"),
                generator: text("generator"),
                kid,
            }
        }
        Err(f) => Provenance {
            kid,
            ..Provenance::status(Status::Unverified, Some(Failure::as_str(f)))
        },
    }
}
