//! Webhook deliveries: inbound CRM events decided like any other request.
//!
//! A delivery is a request whose principal is the event source (its id is
//! a name in the manifest's `[webhooks.sources]`), whose action is one of
//! `[webhooks] actions`, whose `context.webhook` says what kind of event it
//! is and carries the signature, and whose `body` is the raw delivery,
//! byte for byte as received:
//!
//! - `outbound_message`: a Salesforce-style Outbound Message (SOAP/XML
//!   `notifications` with `OrganizationId`, `ActionId` and one or more
//!   `Notification`s, each with an `Id` and an `sObject`);
//! - `platform_event`: a Platform Event as streamed (`{"channel",
//!   "data": {"payload": {…}, "event": {"replayId": …}}}`, or the bare
//!   `data` object);
//! - `cdc`: a Change Data Capture event in the same envelope, whose payload
//!   holds a `ChangeEventHeader` (`entityName`, `changeType`,
//!   `transactionKey`, `commitNumber`, `changedFields`, `recordIds` …).
//!
//! Responsible for: the credential check (HMAC-SHA256 over the raw body
//! with one of the source's named secrets, compared in constant time; the
//! organization id of an Outbound Message; the client certificate's SAN),
//! reading the event's fields *from the signed bytes* (never from a copy the
//! caller could alter) into a record that the module's map normalises like
//! any other, and the store keys of redelivery recognition and per-source
//! lockout. A synthetic flag in the event's fields is proven like any
//! other claim, by a provenance token the host passes beside the delivery
//! (`context.synthetic.provenance`, from a header): a token inside the
//! body would be a credential in the body, which DLP refuses. Decisions
//! and counting stay in `decision.rs`; what each fact leads to is policy.
//!
//! Redelivery: the same notification ids (Outbound Messages) or replay id
//! on the same channel (events) within `redelivery_window`, after it was
//! accepted, is recognised; it takes no rate token and is not counted in
//! lockout. Only an accepted delivery is remembered (the mark is written
//! when the decision allows it), so one that was refused, say throttled, is
//! new when the sender retries it. A delivery that fails its credential
//! check is claimed at once under the digest of its bytes and signature: an
//! identical retry of a misconfigured sender counts once, while every new
//! forgery counts.
//!
//! Secrets are read from the manifest by name and never reach a context,
//! decision, audit record or error message.

use crate::error::RequestError;
use crate::manifest::{Growth, Ladder, Manifest, PathwayLockout, RetryPolicy};
use crate::request::Request;
use crate::store::{Entry, Write};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The kinds of delivery the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// SOAP/XML Outbound Message.
    OutboundMessage,
    /// Platform Event (JSON).
    PlatformEvent,
    /// Change Data Capture event (JSON).
    Cdc,
}

impl Kind {
    /// snake_case name, as in JSON and the context.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OutboundMessage => "outbound_message",
            Kind::PlatformEvent => "platform_event",
            Kind::Cdc => "cdc",
        }
    }
}

/// `context.webhook` of a request: what the receiving host knows besides
/// the raw body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// What kind of delivery the body is.
    pub kind: Kind,
    /// The signature header as received: `sha256=<hex>`, `<hex>` or base64
    /// of HMAC-SHA256 over the raw body.
    #[serde(default)]
    pub signature: Option<String>,
}

/// A secret as kept in the manifest: never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl Secret {
    /// The key bytes (base64 in the manifest).
    fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(self.0.trim())
            .map_err(|_| "is not base64".to_string())
    }
}

/// `[webhooks]` in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// Actions that are webhook deliveries (requests must carry `context.webhook`).
    pub actions: Vec<String>,
    /// A delivery seen again within this window is a redelivery ("24h":
    /// Salesforce retries Outbound Messages for a day).
    #[serde(with = "crate::manifest::duration")]
    pub redelivery_window: Duration,
    /// The lockout ladder of sources (bad credentials are failures):
    /// `account` is the source from any address, `account_ip` the source from
    /// one address, `ip` one address across sources.
    #[serde(deserialize_with = "crate::manifest::overlay")]
    pub lockout: WebhookLockout,
    /// Named HMAC secrets (base64), referenced by sources.
    pub secrets: BTreeMap<String, Secret>,
    /// Known sources, by the principal id their deliveries use.
    pub sources: BTreeMap<String, Source>,
}

impl Default for WebhookSection {
    fn default() -> Self {
        WebhookSection {
            actions: vec!["deliver".into()],
            redelivery_window: Duration::from_secs(24 * 3600),
            lockout: WebhookLockout::default(),
            secrets: BTreeMap::new(),
            sources: BTreeMap::new(),
        }
    }
}

/// The lockout settings of sources, with their own defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookLockout(pub PathwayLockout);

impl Default for WebhookLockout {
    /// A source from one address locks after five bad credentials; the
    /// source from everywhere only throttles its bad deliveries (a forger
    /// must not lock a real source out); one address failing across sources
    /// locks after twenty.
    fn default() -> Self {
        WebhookLockout(PathwayLockout {
            window: Duration::from_secs(15 * 60),
            reset_on_success: false,
            reset_after: Duration::from_secs(24 * 3600),
            max_tracked: 100,
            account: Ladder {
                challenge_after: 0,
                throttle_after: 10,
                lock_after: 0,
                ..Ladder::default()
            },
            account_ip: Ladder {
                challenge_after: 0,
                throttle_after: 3,
                lock_after: 5,
                lock_duration: Duration::from_secs(15 * 60),
                lock_growth: Growth::Exponential,
                max_lock: Duration::from_secs(4 * 3600),
                hard_lock_after: 3,
                ..Ladder::default()
            },
            ip: Ladder {
                challenge_after: 0,
                throttle_after: 10,
                lock_after: 20,
                lock_duration: Duration::from_secs(3600),
                lock_growth: Growth::Linear,
                lock_increment: Duration::from_secs(3600),
                max_lock: Duration::from_secs(6 * 3600),
                hard_lock_after: 0,
            },
            retry: RetryPolicy {
                max_attempts: 10,
                base: Duration::from_secs(30),
                max: Duration::from_secs(3600),
                backoff: Growth::Exponential,
            },
        })
    }
}

/// One known event source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The CRM module whose field names its events use (`sales_cloud` …).
    pub module: String,
    /// The kinds of delivery it sends.
    pub kinds: Vec<Kind>,
    /// Names in `[webhooks.secrets]`; a delivery must be signed with one of
    /// them (several during a rotation).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The organization id its Outbound Messages must carry.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// The SAN of the client certificate it must present (verified mTLS).
    #[serde(default)]
    pub mtls_san: Option<String>,
}

impl WebhookSection {
    /// Check at load: sources name known modules and secrets, secrets are
    /// base64 of at least 16 bytes, and every source has a credential that
    /// is a secret (an organization id is not one).
    pub fn validate(
        &self,
        modules: &BTreeMap<String, crate::manifest::ModuleMap>,
    ) -> Result<(), String> {
        for (name, secret) in &self.secrets {
            match secret.bytes() {
                Ok(b) if b.len() >= 16 => {}
                Ok(b) => {
                    return Err(format!(
                        "webhooks.secrets.{name}: {} bytes, at least 16 expected",
                        b.len()
                    ));
                }
                Err(e) => return Err(format!("webhooks.secrets.{name}: {e}")),
            }
        }
        for (name, s) in &self.sources {
            if !modules.contains_key(&s.module) {
                return Err(format!(
                    "webhooks.sources.{name}: unknown module `{}` (expected one of {})",
                    s.module,
                    modules.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            if s.kinds.is_empty() {
                return Err(format!("webhooks.sources.{name}: `kinds` is empty"));
            }
            for secret in &s.secrets {
                if !self.secrets.contains_key(secret) {
                    return Err(format!(
                        "webhooks.sources.{name}: secret `{secret}` is not in [webhooks.secrets]"
                    ));
                }
            }
            if s.secrets.is_empty() && s.mtls_san.is_none() {
                return Err(format!(
                    "webhooks.sources.{name}: needs `secrets` or `mtls_san` (an organization id alone is not a credential)"
                ));
            }
        }
        Ok(())
    }
}

/// What a delivery contributes to the context and the audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookFacts {
    /// The request is a webhook delivery.
    pub present: bool,
    /// Source name.
    pub source: String,
    /// Kind of delivery.
    pub kind: String,
    /// Notification id (the first, for several) or replay id.
    pub id: String,
    /// Channel (`/event/Order_Event__e`, `/data/AccountChangeEvent`), or
    /// the Outbound Message's action id.
    pub channel: String,
    /// sObject type, event name or CDC entity name.
    pub entity: String,
    /// `valid` or `invalid` (`none` when not a delivery).
    pub credential: String,
    /// Checks applied, joined with `+` (`hmac`, `organization-id`, `mtls`).
    pub method: String,
    /// Why the credential is invalid (`missing-signature`,
    /// `malformed-signature`, `bad-signature`, `wrong-organization`,
    /// `mtls-required`, `wrong-san`), "" when valid.
    pub failure: String,
    /// Seen before within the window.
    pub redelivery: bool,
    /// Times seen within the window, this one included.
    pub deliveries: i64,
    /// Notifications in an Outbound Message (1 for events).
    pub notifications: i64,
    /// Some notifications of one message are flagged synthetic, others not.
    pub mixed_synthetic: bool,
    /// Organization id of an Outbound Message.
    pub organization_id: String,
    /// CDC `changeType` (`CREATE`, `UPDATE`, `DELETE`, `UNDELETE`, `GAP_*` …).
    pub change_type: String,
    /// CDC `transactionKey`.
    pub transaction_key: String,
    /// CDC `commitNumber`.
    pub commit_number: i64,
    /// CDC `changedFields`.
    pub changed_fields: Vec<String>,
}

impl WebhookFacts {
    /// Facts of a request that is not a delivery.
    pub fn none() -> Self {
        WebhookFacts {
            credential: "none".into(),
            ..Default::default()
        }
    }

    /// The credential held.
    pub fn valid(&self) -> bool {
        self.credential == "valid"
    }
}

/// A delivery read and checked, before the store is consulted.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The facts so far (`redelivery`/`deliveries` are filled in by [`claim`]).
    pub facts: WebhookFacts,
    /// The source's module.
    pub module: String,
    /// The event's fields as a record in the module's names (valid
    /// deliveries only: nothing unauthenticated drives a decision).
    pub record: Option<BTreeMap<String, Value>>,
    /// The store key that recognises this delivery again.
    pub key: String,
}

/// What the body said, by kind.
#[derive(Debug, Default)]
struct Parsed {
    id: String,
    channel: String,
    entity: String,
    organization_id: String,
    notifications: i64,
    change_type: String,
    transaction_key: String,
    commit_number: i64,
    changed_fields: Vec<String>,
    records: Vec<Map<String, Value>>,
    /// CDC: the first of `recordIds`.
    record_id: String,
    /// The identity recognised on redelivery.
    identity: String,
}

/// Is `action` a webhook action of this manifest?
pub fn is_webhook_action(m: &Manifest, action: &str) -> bool {
    m.webhooks.actions.iter().any(|a| a == action)
}

/// Read and check a delivery. `body` is the raw delivery.
pub fn prepare(
    m: &Manifest,
    namespace: &str,
    req: &Request,
    claim: &WebhookRequest,
    body: Option<&[u8]>,
) -> Result<Prepared, RequestError> {
    let section = &m.webhooks;
    if !is_webhook_action(m, &req.action) {
        return Err(RequestError::field(
            "context.webhook",
            format!(
                "`context.webhook` is for webhook actions ({}), not `{}`",
                section.actions.join(", "),
                crate::request::truncate(&req.action)
            ),
        ));
    }
    let name = req.principal.id.as_str();
    let Some(source) = section.sources.get(name) else {
        return Err(RequestError::field(
            "principal.id",
            format!(
                "unknown webhook source `{}` (expected one of {})",
                crate::request::truncate(name),
                section
                    .sources
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    if !source.kinds.contains(&claim.kind) {
        return Err(RequestError::field(
            "context.webhook.kind",
            format!(
                "source `{name}` does not send `{}` deliveries (it sends {})",
                claim.kind.as_str(),
                source
                    .kinds
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if req.event.is_some() {
        return Err(RequestError::field(
            "event",
            "a webhook delivery is decided, not an observed event; bad credentials are counted by the engine",
        ));
    }
    if let Some(module) = &req.context.module
        && module != &source.module
    {
        return Err(RequestError::field(
            "context.module",
            format!(
                "source `{name}` sends `{}` events, not `{}`",
                source.module,
                crate::request::truncate(module)
            ),
        ));
    }
    if req.context.record.is_some() {
        return Err(RequestError::field(
            "context.record",
            "a delivery's record is read from its signed body; give no `context.record`",
        ));
    }
    let Some(body) = body else {
        return Err(RequestError::field(
            "body",
            "a webhook delivery needs its raw body (`body` or `body_base64`), byte for byte",
        ));
    };

    let mut methods = Vec::new();
    let mut failure: Option<&'static str> = None;
    if !source.secrets.is_empty() {
        methods.push("hmac");
        failure = check_signature(section, source, claim.signature.as_deref(), body).err();
    }
    let parsed = match parse(claim.kind, body) {
        Ok(p) => Some(p),
        // A body that does not parse under a valid signature is the
        // sender's bug: say so. Under a bad one it is only counted.
        Err(e) if failure.is_none() => return Err(RequestError::field("body", e)),
        Err(_) => None,
    };
    if let (Some(org), Kind::OutboundMessage) = (&source.organization_id, claim.kind) {
        methods.push("organization-id");
        let got = parsed.as_ref().map(|p| p.organization_id.as_str());
        // Salesforce ids compare on their 15-character case-sensitive form.
        if failure.is_none() && got.map(id15) != Some(id15(org)) {
            failure = Some("wrong-organization");
        }
    }
    if let Some(san) = &source.mtls_san {
        methods.push("mtls");
        let mtls = req.context.mtls.clone().unwrap_or_default();
        if failure.is_none() {
            if !mtls.verified {
                failure = Some("mtls-required");
            } else if mtls.san.as_deref() != Some(san.as_str()) {
                failure = Some("wrong-san");
            }
        }
    }

    let parsed = parsed.unwrap_or_default();
    let valid = failure.is_none();
    let key = if valid {
        format!(
            "wh1:{namespace}:seen:{name}:{}",
            short_digest(&[claim.kind.as_str().as_bytes(), parsed.identity.as_bytes()])
        )
    } else {
        let sig = claim.signature.as_deref().unwrap_or("");
        format!(
            "wh1:{namespace}:bad:{name}:{}",
            short_digest(&[sig.as_bytes(), body])
        )
    };
    let mut facts = WebhookFacts {
        present: true,
        source: name.to_string(),
        kind: claim.kind.as_str().to_string(),
        id: parsed.id.clone(),
        channel: parsed.channel.clone(),
        entity: parsed.entity.clone(),
        credential: if valid { "valid" } else { "invalid" }.into(),
        method: methods.join("+"),
        failure: failure.unwrap_or("").to_string(),
        redelivery: false,
        deliveries: 0,
        notifications: parsed.notifications,
        mixed_synthetic: false,
        organization_id: parsed.organization_id.clone(),
        change_type: parsed.change_type.clone(),
        transaction_key: parsed.transaction_key.clone(),
        commit_number: parsed.commit_number,
        changed_fields: parsed.changed_fields.clone(),
    };
    let record = if valid {
        let map = m.modules.get(&source.module);
        let flag = map.and_then(|mm| mm.fields.get("synthetic"));
        let id_field = map.and_then(|mm| mm.fields.get("id"));
        let (record, mixed) = merge_records(parsed.records, flag.map(String::as_str));
        facts.mixed_synthetic = mixed;
        let mut record: BTreeMap<String, Value> = record.into_iter().collect();
        // CDC names its records in the header, not among the fields.
        if let (Some(idf), false) = (id_field, parsed.record_id.is_empty()) {
            record
                .entry(idf.clone())
                .or_insert(Value::String(parsed.record_id.clone()));
        }
        Some(record)
    } else {
        None
    };
    Ok(Prepared {
        facts,
        module: source.module.clone(),
        record,
        key,
    })
}

/// One record for normalisation: the first, with the synthetic flag set
/// when any notification carries it; and whether the flags disagree.
fn merge_records(
    records: Vec<Map<String, Value>>,
    flag: Option<&str>,
) -> (Map<String, Value>, bool) {
    let total = records.len();
    let flagged = flag
        .map(|f| {
            records
                .iter()
                .filter(|r| r.get(f) == Some(&Value::Bool(true)))
                .count()
        })
        .unwrap_or(0);
    let mut first = records.into_iter().next().unwrap_or_default();
    if let (Some(f), true) = (flag, flagged > 0) {
        first.insert(f.to_string(), Value::Bool(true));
    }
    (first, flagged > 0 && flagged < total)
}

/// The 15-character form of a Salesforce id (18-character ids add a
/// case-insensitivity suffix).
fn id15(id: &str) -> &str {
    let id = id.trim();
    if id.len() == 18 && id.is_ascii() {
        id.get(..15).unwrap_or(id)
    } else {
        id
    }
}

fn short_digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize().get(..16).unwrap_or(&[]))
}

/// HMAC-SHA256 over the raw body with any of the source's secrets.
fn check_signature(
    section: &WebhookSection,
    source: &Source,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), &'static str> {
    use hmac::{Hmac, Mac};
    let Some(sig) = signature else {
        return Err("missing-signature");
    };
    let sig = decode_signature(sig).ok_or("malformed-signature")?;
    for name in &source.secrets {
        let Some(key) = section.secrets.get(name).and_then(|s| s.bytes().ok()) else {
            continue;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
            continue;
        };
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err("bad-signature")
}

/// `sha256=<hex>`, `<hex>` or base64 (standard or URL-safe) of 32 bytes.
fn decode_signature(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let s = s.trim();
    let s = s.strip_prefix("sha256=").unwrap_or(s);
    let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(s).ok()?
    } else {
        let t = s.trim_end_matches('=');
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
            .ok()?
    };
    (bytes.len() == 32).then_some(bytes)
}

fn parse(kind: Kind, body: &[u8]) -> Result<Parsed, String> {
    let text =
        std::str::from_utf8(body).map_err(|_| "the delivery is not UTF-8 text".to_string())?;
    match kind {
        Kind::OutboundMessage => parse_outbound(text),
        Kind::PlatformEvent | Kind::Cdc => parse_event(kind, text),
    }
}

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Most XML nodes read from one Outbound Message.
const MAX_XML_NODES: u32 = 100_000;

fn parse_outbound(text: &str) -> Result<Parsed, String> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
    };
    let doc = roxmltree::Document::parse_with_options(text, opts)
        .map_err(|e| format!("not an Outbound Message: malformed XML: {e}"))?;
    let Some(n) = doc
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "notifications")
    else {
        return Err("not an Outbound Message: no `notifications` element".into());
    };
    let child_text = |parent: roxmltree::Node, name: &str| {
        parent
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
            .and_then(|c| c.text())
            .map(|t| t.trim().to_string())
    };
    let org =
        child_text(n, "OrganizationId").ok_or("not an Outbound Message: no `OrganizationId`")?;
    let action = child_text(n, "ActionId").unwrap_or_default();
    let mut ids = Vec::new();
    let mut records = Vec::new();
    let mut entity = String::new();
    for note in n
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "Notification")
    {
        let id = child_text(note, "Id").ok_or("a `Notification` has no `Id`")?;
        ids.push(id);
        let mut record = Map::new();
        if let Some(obj) = note
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == "sObject")
        {
            if entity.is_empty()
                && let Some(t) = obj.attribute((XSI, "type"))
            {
                entity = t.rsplit(':').next().unwrap_or(t).to_string();
            }
            for f in obj.children().filter(|c| c.is_element()) {
                let nil = f.attribute((XSI, "nil")) == Some("true");
                let v = match (nil, f.text().map(str::trim)) {
                    (true, _) | (false, None) => Value::Null,
                    (false, Some("true")) => Value::Bool(true),
                    (false, Some("false")) => Value::Bool(false),
                    (false, Some(t)) => Value::String(t.to_string()),
                };
                record.insert(f.tag_name().name().to_string(), v);
            }
        }
        records.push(record);
    }
    if ids.is_empty() {
        return Err("not an Outbound Message: no `Notification`".into());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    Ok(Parsed {
        id: ids.first().cloned().unwrap_or_default(),
        channel: action,
        entity,
        organization_id: org,
        notifications: ids.len() as i64,
        identity: sorted.join(","),
        records,
        ..Parsed::default()
    })
}

fn parse_event(kind: Kind, text: &str) -> Result<Parsed, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("not a {} event: malformed JSON: {e}", kind.as_str()))?;
    let channel = v
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let data = v.get("data").unwrap_or(&v);
    let replay = match data.pointer("/event/replayId") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("an event needs `data.event.replayId` (a number)".into()),
    };
    let Some(Value::Object(payload)) = data.get("payload") else {
        return Err("an event needs `data.payload` (an object)".into());
    };
    let mut record = payload.clone();
    let mut parsed = Parsed {
        id: replay.clone(),
        channel: channel.clone(),
        notifications: 1,
        ..Parsed::default()
    };
    if kind == Kind::Cdc {
        let Some(Value::Object(h)) = record.remove("ChangeEventHeader") else {
            return Err("a CDC event needs `data.payload.ChangeEventHeader`".into());
        };
        let text = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        parsed.entity = text("entityName");
        parsed.change_type = text("changeType");
        parsed.transaction_key = text("transactionKey");
        parsed.commit_number = h.get("commitNumber").and_then(Value::as_i64).unwrap_or(0);
        parsed.changed_fields = h
            .get("changedFields")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if parsed.entity.is_empty() || parsed.change_type.is_empty() {
            return Err("a `ChangeEventHeader` needs `entityName` and `changeType`".into());
        }
        parsed.record_id = h
            .get("recordIds")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    } else {
        parsed.entity = channel.rsplit('/').next().unwrap_or("").to_string();
    }
    // Replay ids are per channel: the channel (or entity) is part of the identity.
    let scope = if channel.is_empty() {
        parsed.entity.clone()
    } else {
        channel
    };
    parsed.identity = format!("{scope}\u{1f}{replay}");
    parsed.records = vec![record];
    Ok(parsed)
}

/// A delivery's record in the store: how often it was seen, and until when
/// it is remembered (expiry kept in the value).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Seen {
    /// Times seen.
    n: i64,
    /// First seen.
    first: i64,
    /// Forgotten from (seconds since the epoch).
    exp: i64,
}

/// Record one more sighting of a delivery: the write (compare-and-set on
/// the entry's version), whether it is a redelivery, and how often it has
/// now been seen.
pub fn claim(entry: &Entry, window: Duration, now: i64) -> (Write, bool, i64) {
    let current = entry
        .value
        .as_deref()
        .and_then(|v| serde_json::from_str::<Seen>(v).ok())
        .filter(|s| s.exp > now);
    let (next, redelivery) = match current {
        Some(s) => (
            Seen {
                n: s.n.saturating_add(1),
                ..s
            },
            true,
        ),
        None => (
            Seen {
                n: 1,
                first: now,
                exp: now.saturating_add(window.as_secs() as i64),
            },
            false,
        ),
    };
    (
        Write {
            key: entry.key.clone(),
            value: serde_json::to_string(&next).ok(),
            expected_version: entry.version,
        },
        redelivery,
        next.n,
    )
}

/// The lockout keys of a delivery: the source, the source from this
/// address, and the address across sources (apart from login keys).
pub fn lock_keys(
    namespace: &str,
    pathway: crate::context::Pathway,
    source: &str,
    ip: Option<&str>,
) -> Vec<(crate::lockout::KeyKind, String)> {
    use crate::lockout::KeyKind;
    let p = pathway.as_str();
    let mut keys = vec![(
        KeyKind::Account,
        format!("wl1:{p}:{namespace}:src:{source}"),
    )];
    if let Some(ip) = ip.and_then(|i| i.parse::<std::net::IpAddr>().ok()) {
        keys.push((
            KeyKind::AccountIp,
            format!("wl1:{p}:{namespace}:srcip:{source}|{ip}"),
        ));
        keys.push((KeyKind::Ip, format!("wl1:{p}:{namespace}:ip:{ip}")));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000062EAA</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <Notification>
    <Id>04l000000000002AAA</Id>
    <sObject xsi:type="sf:Case" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>500000000000001AAA</sf:Id>
     <sf:Is_Test_Data__c>true</sf:Is_Test_Data__c>
     <sf:Subject>Printer &amp; scanner</sf:Subject>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Case" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>500000000000002AAA</sf:Id>
     <sf:Is_Test_Data__c>false</sf:Is_Test_Data__c>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

    #[test]
    fn outbound_messages_are_read_with_their_ids_and_fields() -> Result<(), String> {
        let p = parse_outbound(OM)?;
        assert_eq!(p.organization_id, "00D000000000062EAA");
        assert_eq!(p.entity, "Case");
        assert_eq!(p.notifications, 2);
        assert_eq!(p.id, "04l000000000002AAA");
        assert_eq!(p.identity, "04l000000000001AAA,04l000000000002AAA");
        let r = p.records.first().cloned().unwrap_or_default();
        assert_eq!(r.get("Is_Test_Data__c"), Some(&Value::Bool(true)));
        assert_eq!(
            r.get("Subject"),
            Some(&Value::String("Printer & scanner".into()))
        );
        let (merged, mixed) = merge_records(p.records, Some("Is_Test_Data__c"));
        assert!(mixed);
        assert_eq!(merged.get("Is_Test_Data__c"), Some(&Value::Bool(true)));
        Ok(())
    }

    #[test]
    fn doctypes_are_refused() {
        let evil = "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaa\">]><notifications><OrganizationId>&a;</OrganizationId></notifications>";
        assert!(parse_outbound(evil).is_err());
    }

    #[test]
    fn cdc_events_carry_their_header() -> Result<(), String> {
        let body = r#"{"channel":"/data/AccountChangeEvent","data":{"schema":"x","payload":{"ChangeEventHeader":{"entityName":"Account","recordIds":["001000000000001AAA"],"changeType":"UPDATE","transactionKey":"0002-aa","commitNumber":10714449473350,"changedFields":["Name","LastModifiedDate"]},"Name":"Acme"},"event":{"replayId":4711}}}"#;
        let p = parse_event(Kind::Cdc, body)?;
        assert_eq!(
            (p.id.as_str(), p.entity.as_str(), p.change_type.as_str()),
            ("4711", "Account", "UPDATE")
        );
        assert_eq!(p.commit_number, 10714449473350);
        assert_eq!(p.changed_fields, ["Name", "LastModifiedDate"]);
        assert!(
            p.records
                .first()
                .is_some_and(|r| !r.contains_key("ChangeEventHeader"))
        );
        assert!(
            parse_event(
                Kind::Cdc,
                r#"{"data":{"payload":{},"event":{"replayId":1}}}"#
            )
            .is_err()
        );
        assert!(parse_event(Kind::PlatformEvent, r#"{"data":{"payload":{}}}"#).is_err());
        Ok(())
    }

    #[test]
    fn signatures_decode_in_three_spellings() {
        let raw = [7u8; 32];
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        for s in [
            format!("sha256={}", hex::encode(raw)),
            hex::encode(raw),
            b64,
        ] {
            assert_eq!(decode_signature(&s), Some(raw.to_vec()), "{s}");
        }
        assert_eq!(decode_signature("sha256=abcd"), None);
    }

    #[test]
    fn a_claim_is_remembered_until_it_expires() {
        let e = |v: Option<String>| Entry {
            key: "k".into(),
            value: v,
            version: 3,
        };
        let (w, again, n) = claim(&e(None), Duration::from_secs(60), 1000);
        assert!(!again && n == 1 && w.expected_version == 3);
        let (w2, again, n) = claim(&e(w.value.clone()), Duration::from_secs(60), 1059);
        assert!(again && n == 2);
        let (_, again, n) = claim(&e(w2.value), Duration::from_secs(60), 1060);
        assert!(!again && n == 1, "forgotten once the window has passed");
    }
}
