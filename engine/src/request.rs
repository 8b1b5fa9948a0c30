//! The request contract: one JSON document per decision, the same in every
//! language (README.md "The request format").
//!
//! Parsing is strict: an unknown field, a wrong type or a missing required
//! field is a [`RequestError`] naming the field by its dotted path. Nothing
//! is guessed.

use crate::error::RequestError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A reference to an entity, named without the bundle namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRef {
    /// Entity type, e.g. `User` (the engine qualifies it: `Crm::User`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Entity id, e.g. `alice@example.com`.
    pub id: String,
}

/// An observed event reported by the caller instead of a request to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The caller saw an authentication failure for this principal.
    AuthFailure,
    /// The caller saw a successful authentication.
    AuthSuccess,
}

impl Event {
    /// The snake_case name used in JSON and in the Cedar context.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::AuthFailure => "auth_failure",
            Event::AuthSuccess => "auth_success",
        }
    }
}

/// Peer identity established by mutual TLS, as the host saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mtls {
    /// The peer presented a certificate that the host verified.
    pub verified: bool,
    /// Subject alternative name (URI SAN / SPIFFE id, or DNS name).
    #[serde(default)]
    pub san: Option<String>,
}

/// A claim that the request carries synthetic (test, generated) data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticClaim {
    /// The caller marks the request as synthetic.
    #[serde(default)]
    pub marker: bool,
    /// The provenance token (a JWT signed by an issuer the bundle trusts).
    #[serde(default)]
    pub provenance: Option<String>,
}

/// A just-in-time access request or approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitRequest {
    /// Role requested (or whose grant is approved).
    #[serde(default)]
    pub role: Option<String>,
    /// Why (request).
    #[serde(default)]
    pub reason: Option<String>,
    /// How long ("1h") (request).
    #[serde(default)]
    pub duration: Option<String>,
    /// What it covers (request).
    #[serde(default)]
    pub scope: Option<String>,
    /// Whose grant (approve).
    #[serde(default)]
    pub requester: Option<String>,
}

/// Facts the caller supplies about the request. Every field is optional;
/// derived facts (lockout state, verified token, findings …) are computed by
/// the engine, never taken from here.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestContext {
    /// Client IP address (IPv4 or IPv6) as the host determined it.
    #[serde(default)]
    pub ip: Option<String>,
    /// CRM module the request concerns (`sales_cloud`, `service_cloud` …).
    #[serde(default)]
    pub module: Option<String>,
    /// Region of the origin (where the data is).
    #[serde(default)]
    pub region: Option<String>,
    /// Region of the destination, for transfers.
    #[serde(default)]
    pub destination_region: Option<String>,
    /// OAuth access token (JWT) as presented.
    #[serde(default)]
    pub token: Option<String>,
    /// Mutual-TLS peer identity.
    #[serde(default)]
    pub mtls: Option<Mtls>,
    /// Synthetic-data claim.
    #[serde(default)]
    pub synthetic: Option<SyntheticClaim>,
    /// The CRM record concerned, with its module-specific field names.
    #[serde(default)]
    pub record: Option<BTreeMap<String, serde_json::Value>>,
    /// Record fields the request reads or sends.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Declared legal basis for a cross-border transfer (`scc`, `bcr` …).
    #[serde(default)]
    pub legal_basis: Option<String>,
    /// Recipient of a transfer, by its id in the manifest's
    /// `[transfer.recipients]`.
    #[serde(default)]
    pub recipient: Option<String>,
    /// Just-in-time access: what is requested or approved.
    #[serde(default)]
    pub jit: Option<JitRequest>,
    /// Data-sync flow id, for field minimisation.
    #[serde(default)]
    pub flow: Option<String>,
    /// A webhook delivery: its kind and signature (the raw delivery is the
    /// `body`; the source is the principal).
    #[serde(default)]
    pub webhook: Option<crate::webhook::WebhookRequest>,
    /// The address the connection came from, as the host saw it; with
    /// `forwarded_for`, the engine resolves the client address (trusted
    /// proxies in the manifest's `[network]`). Give this or `ip`, not both.
    #[serde(default)]
    pub peer: Option<String>,
    /// The `X-Forwarded-For` header as received (several joined with `,`);
    /// believed only as far as trusted proxies wrote it.
    #[serde(default)]
    pub forwarded_for: Option<String>,
}

/// A request's body as its chunks (bytes), and whether all were text.
pub type BodyParts = (Vec<Vec<u8>>, bool);

/// One chunk of a body given as `body_chunks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BodyChunk {
    /// Text.
    Text(String),
    /// Bytes as base64.
    Bytes {
        /// The chunk, base64 (standard alphabet).
        base64: String,
    },
}

/// One request to decide (or one observed event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Who acts.
    pub principal: EntityRef,
    /// What they do, without the namespace (`login`, `read` …).
    pub action: String,
    /// On what.
    pub resource: EntityRef,
    /// Facts the caller supplies.
    #[serde(default)]
    pub context: RequestContext,
    /// Body as text, for DLP.
    #[serde(default)]
    pub body: Option<String>,
    /// Body as base64, for bytes that are not text.
    #[serde(default)]
    pub body_base64: Option<String>,
    /// Body as it arrived in chunks (a streaming host's view): each a text
    /// string or `{"base64": "…"}`. DLP scans them as a stream; findings
    /// and the redacted body are those of the concatenation.
    #[serde(default)]
    pub body_chunks: Option<Vec<BodyChunk>>,
    /// The time of the request (RFC 3339). Absent: the engine's clock.
    #[serde(default)]
    pub now: Option<String>,
    /// An observed event instead of a request.
    #[serde(default)]
    pub event: Option<Event>,
}

/// Largest request document accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

impl Request {
    /// Parse one request document, naming the offending field on error.
    pub fn from_json(text: &str) -> Result<Request, RequestError> {
        if text.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::field(
                "",
                format!(
                    "request is {} bytes, over the limit of {MAX_REQUEST_BYTES}",
                    text.len()
                ),
            ));
        }
        // Duplicate keys and deep nesting are refused before any parser
        // sees the text (crate::guard).
        if let Err(p) = crate::guard::check(text, crate::guard::MAX_JSON_DEPTH) {
            return Err(RequestError::field(p.path, p.message));
        }
        // The fast path parses plainly; only a failure pays for tracking
        // the path to the offending field.
        let req: Request = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(_) => {
                let de = &mut serde_json::Deserializer::from_str(text);
                match serde_path_to_error::deserialize::<_, Request>(de) {
                    Ok(r) => r,
                    Err(e) => return Err(path_error(e)),
                }
            }
        };
        req.check()?;
        Ok(req)
    }

    /// Parse a request from a JSON value (case files).
    pub fn from_value(value: serde_json::Value) -> Result<Request, RequestError> {
        let req: Request = serde_path_to_error::deserialize(value).map_err(path_error)?;
        req.check()?;
        Ok(req)
    }

    pub(crate) fn check(&self) -> Result<(), RequestError> {
        nonempty("principal.type", &self.principal.kind)?;
        nonempty("principal.id", &self.principal.id)?;
        nonempty("action", &self.action)?;
        nonempty("resource.type", &self.resource.kind)?;
        nonempty("resource.id", &self.resource.id)?;
        if self.body.is_some() && self.body_base64.is_some() {
            return Err(RequestError::field(
                "body_base64",
                "give `body` or `body_base64`, not both",
            ));
        }
        if self.body_chunks.is_some() && (self.body.is_some() || self.body_base64.is_some()) {
            return Err(RequestError::field(
                "body_chunks",
                "give `body`, `body_base64` or `body_chunks`, not more than one",
            ));
        }
        if let Some(ip) = &self.context.ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(RequestError::field(
                "context.ip",
                format!("`{}` is not an IPv4 or IPv6 address", truncate(ip)),
            ));
        }
        crate::identity::check_request(self)
    }
}

impl Request {
    /// The body's chunks as bytes, in order (one chunk for `body` or
    /// `body_base64`), and whether every chunk is text. None: no body.
    pub fn body_parts(&self) -> Result<Option<BodyParts>, RequestError> {
        use base64::Engine as _;
        let decode = |field: String, b: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| RequestError::field(&field, format!("not base64: {e}")))
        };
        if let Some(text) = &self.body {
            return Ok(Some((vec![text.as_bytes().to_vec()], true)));
        }
        if let Some(b) = &self.body_base64 {
            return Ok(Some((vec![decode("body_base64".into(), b)?], false)));
        }
        let Some(chunks) = &self.body_chunks else {
            return Ok(None);
        };
        let mut parts = Vec::with_capacity(chunks.len());
        let mut text = true;
        for (i, chunk) in chunks.iter().enumerate() {
            match chunk {
                BodyChunk::Text(t) => parts.push(t.as_bytes().to_vec()),
                BodyChunk::Bytes { base64 } => {
                    text = false;
                    parts.push(decode(format!("body_chunks[{i}].base64"), base64)?);
                }
            }
        }
        Ok(Some((parts, text)))
    }
}

fn nonempty(field: &str, value: &str) -> Result<(), RequestError> {
    if value.trim().is_empty() {
        Err(RequestError::field(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// At most 64 characters of `s` for a message, control characters escaped
/// (a quoted value never breaks a line of a text log).
pub(crate) fn truncate(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(64));
    let mut chars = s.chars();
    for c in chars.by_ref().take(64) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Turn a serde error with its path into an error naming the field.
fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> RequestError {
    if err.inner().is_syntax() || err.inner().is_eof() {
        return RequestError::field("", format!("malformed request JSON: {}", err.inner()));
    }
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = err.inner().to_string();
    // `missing field `x`` names a child of `path`; `unknown field` is in it.
    let child = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let field = match child {
        Some(name) if path.is_empty() => name,
        Some(name) => format!("{path}.{name}"),
        None => path,
    };
    // serde_json appends " at line 1 column 80": the field says where.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    RequestError { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"principal":{"type":"User","id":"alice"},"action":"login",
        "resource":{"type":"App","id":"crm"},"context":{"ip":"203.0.113.7"}}"#;

    #[test]
    fn parses_the_contract() {
        let r = Request::from_json(OK).map_err(|e| e.to_string());
        let r = r.as_ref().map(|r| (&r.principal.id[..], &r.action[..]));
        assert_eq!(r, Ok(("alice", "login")));
    }

    #[test]
    fn malformed_json_is_named() {
        let e = Request::from_json("{\"principal\": ")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("malformed request JSON"), "{e}");
    }

    #[test]
    fn missing_principal_is_named() {
        let e =
            Request::from_json(r#"{"action":"login","resource":{"type":"App","id":"x"}}"#).err();
        assert_eq!(e.map(|e| e.field), Some("principal".to_string()));
    }

    #[test]
    fn wrong_type_is_named_by_path() {
        let bad = OK.replace(r#""ip":"203.0.113.7""#, r#""mtls":{"verified":"yes"}"#);
        let e = Request::from_json(&bad).err();
        let e = e.map(|e| (e.field.clone(), e.message.contains("boolean")));
        assert_eq!(e, Some(("context.mtls.verified".to_string(), true)));
    }

    #[test]
    fn unknown_field_is_named_with_the_expected_ones() {
        let bad = OK.replace(r#""ip":"#, r#""destination_regoin":"#);
        let e = Request::from_json(&bad).err();
        let field = e.as_ref().map(|e| e.field.as_str());
        assert_eq!(field, Some("context.destination_regoin"));
        assert!(
            e.map(|e| e.message.contains("destination_region"))
                .unwrap_or(false)
        );
    }

    #[test]
    fn bad_ip_is_named() {
        let bad = OK.replace("203.0.113.7", "203.0.113");
        assert_eq!(
            Request::from_json(&bad).err().map(|e| e.field),
            Some("context.ip".into())
        );
    }
}
