//! One decision: how a request becomes an outcome, and what is recorded.
//!
//! The flow is: parse → qualify → derive (one batched store read) →
//! evaluate Cedar → conclude from annotations → account (one batched
//! compare-and-set, retried from the conflicting entries) → audit record.
//! Every fault on the way is a `deny` whose `error` names it.

use crate::bundle::{Bundle, RetryAfter};
use crate::context::{self, Facts, Pathway};
use crate::error::RequestError;
use crate::lockout;
use crate::lockout::{Record, Stage};
use crate::normalise;
use crate::outcome::Outcome;
use crate::request::Request;
use crate::store::{Entry, Store, WriteResult};
use crate::synthetic;
use crate::timefmt;
use cedar_policy::{Authorizer, Context, Decision as CedarDecision, EntityId, EntityUid, PolicyId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How many times a conflicting compare-and-set is recomputed and retried.
use crate::limits::CAS_RETRIES;

/// Why a decision could not be made normally (it is then a `deny`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionError {
    /// `invalid-request`, `no-bundle`, `store`, `evaluation`, `engine-fault`.
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// The request field at fault, for `invalid-request`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The audit record of one decision: why, without secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Request time (RFC 3339).
    pub time: String,
    /// SHA-256 of the request text, hex: ties the record to the request
    /// without keeping tokens, bodies or passwords.
    pub request_digest: String,
    /// Qualified principal uid, e.g. `Crm::User::"alice@example.com"`.
    pub principal: String,
    /// Qualified action uid.
    pub action: String,
    /// Qualified resource uid.
    pub resource: String,
    /// `auth_failure` / `auth_success` for events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The outcome.
    pub outcome: Outcome,
    /// Determining policy ids.
    pub policies: Vec<String>,
    /// Reasons given.
    pub reasons: Vec<String>,
    /// Pathway taken.
    pub pathway: String,
    /// Counts and statuses that drove the decision.
    pub facts: FactsJson,
    /// Bundle name, version and hash.
    pub bundle: String,
    /// Engine version.
    pub engine: String,
    /// Fault, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The audit record's facts: a JSON object kept as its text, written once
/// when the decision is made and copied out as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FactsJson(Box<serde_json::value::RawValue>);

impl FactsJson {
    /// `null`: a record without facts (omitted, or a fault before any).
    pub fn null() -> FactsJson {
        FactsJson(serde_json::value::RawValue::NULL.to_owned())
    }

    /// Any serialisable value as facts (`null` if it cannot be written).
    pub fn of(value: &impl Serialize) -> FactsJson {
        serde_json::value::to_raw_value(value)
            .map(FactsJson)
            .unwrap_or_else(|_| FactsJson::null())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The facts as a JSON value (to look into).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }

    /// True when there are no facts.
    pub fn is_null(&self) -> bool {
        self.0.get().trim() == "null"
    }
}

/// Equal when the JSON values are equal (whatever the spacing).
impl PartialEq for FactsJson {
    fn eq(&self, other: &FactsJson) -> bool {
        self.as_str() == other.as_str() || self.value() == other.value()
    }
}

/// How a refused client should retry (the pathway's retry policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryAdvice {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// `exponential` or `linear`.
    pub backoff: String,
    /// First wait, seconds.
    pub base_seconds: u64,
    /// Longest wait, seconds.
    pub max_seconds: u64,
}

/// A decision, as every host returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The graduated outcome.
    pub outcome: Outcome,
    /// True for `allow` and `redact`.
    pub allowed: bool,
    /// Determining policy ids, sorted.
    pub policies: Vec<String>,
    /// Reasons, in the order of `policies` (or `no-permit`, or the fault).
    pub reasons: Vec<String>,
    /// Escalation target of the most severe determining policy.
    pub escalation: Option<String>,
    /// Seconds the caller should wait before retrying.
    pub retry_after: Option<u64>,
    /// `authentic` or `synthetic`.
    pub pathway: String,
    /// Lockout stage of the leading key (`none`, `challenge`, `throttle`,
    /// `temporary_lock`, `hard_lock`).
    pub stage: String,
    /// How often such decisions may occur before alerting the escalation
    /// target (from the manifest's escalation matrix).
    pub alert_threshold: Option<u32>,
    /// Retry advice for clients, on decisions that are not allowed.
    pub retry: Option<RetryAdvice>,
    /// DLP findings: kind, offset, length, confidence, digest (never the text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<crate::dlp::Finding>,
    /// The body with findings masked, when the outcome is `redact` (text,
    /// or base64 when the request gave `body_base64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_body: Option<String>,
    /// Fields the flow's minimisation drops from what is sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_fields: Vec<String>,
    /// The fault that forced a deny, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DecisionError>,
    /// For a webhook delivery: which one, whether its credential held, and
    /// whether it is a redelivery (acknowledge it; do not process it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<DeliverySummary>,
    /// The audit record.
    pub audit: AuditRecord,
}

/// What a decision says of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySummary {
    /// Source name.
    pub source: String,
    /// `outbound_message`, `platform_event` or `cdc`.
    pub kind: String,
    /// Notification id (the first) or replay id.
    pub id: String,
    /// `valid` or `invalid`.
    pub credential: String,
    /// Seen before within the redelivery window.
    pub redelivery: bool,
}

impl Decision {
    /// The decision as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"outcome":"deny","allowed":false,"policies":[],"reasons":["error: cannot serialise decision: {e}"],"escalation":null,"retry_after":null,"pathway":"authentic","error":{{"kind":"engine-fault","message":"cannot serialise decision"}}}}"#)
        })
    }

    /// A fail-closed deny for a fault before a request could be read.
    pub fn fault(
        kind: &str,
        message: String,
        field: Option<String>,
        request_text: impl RequestText,
    ) -> Decision {
        let reason = format!("error: {message}");
        Decision {
            outcome: Outcome::Deny,
            allowed: false,
            policies: Vec::new(),
            reasons: vec![reason],
            escalation: None,
            retry_after: None,
            pathway: Pathway::Authentic.as_str().to_string(),
            stage: Stage::None.as_str().to_string(),
            alert_threshold: None,
            retry: None,
            findings: Vec::new(),
            redacted_body: None,
            dropped_fields: Vec::new(),
            error: Some(DecisionError {
                kind: kind.to_string(),
                message: message.clone(),
                field,
            }),
            webhook: None,
            audit: AuditRecord {
                time: String::new(),
                request_digest: request_text.digest(),
                principal: String::new(),
                action: String::new(),
                resource: String::new(),
                event: None,
                outcome: Outcome::Deny,
                policies: Vec::new(),
                reasons: Vec::new(),
                pathway: Pathway::Authentic.as_str().to_string(),
                facts: FactsJson::null(),
                bundle: String::new(),
                engine: crate::ENGINE_VERSION.to_string(),
                error: Some(format!("{kind}: {message}")),
            },
        }
    }

    /// A fail-closed deny for a request that cannot be parsed.
    pub fn invalid(err: RequestError, request_text: impl RequestText) -> Decision {
        let field = (!err.field.is_empty()).then(|| err.field.clone());
        Decision::fault("invalid-request", err.to_string(), field, request_text)
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Which decisions carry their audit record. Building one (a SHA-256 of the
/// request, the derived facts as JSON, the qualified names) is a large part
/// of a cheap decision; a host that does not keep every record can skip it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Audit {
    /// Every decision (what [`Bundle::decide`] does).
    #[default]
    All,
    /// Decisions that are not allowed; allowed ones carry
    /// [`AuditRecord::omitted`].
    Refused,
    /// No decision: each carries [`AuditRecord::omitted`] (faults still
    /// carry theirs).
    None,
}

impl Audit {
    fn wants(self, outcome: Outcome) -> bool {
        match self {
            Audit::All => true,
            Audit::Refused => !outcome.is_allowed(),
            Audit::None => false,
        }
    }
}

impl AuditRecord {
    /// The record of a decision whose host asked for none: empty but for
    /// the outcome and the engine version.
    pub fn omitted(outcome: Outcome) -> AuditRecord {
        AuditRecord {
            time: String::new(),
            request_digest: String::new(),
            principal: String::new(),
            action: String::new(),
            resource: String::new(),
            event: None,
            outcome,
            policies: Vec::new(),
            reasons: Vec::new(),
            pathway: String::new(),
            facts: FactsJson::null(),
            bundle: String::new(),
            engine: crate::ENGINE_VERSION.to_string(),
            error: None,
        }
    }
}

/// What an audit record's `request_digest` is computed over.
#[doc(hidden)]
pub trait RequestText: Copy {
    /// SHA-256 of the request text, hex.
    fn digest(&self) -> String;
}

impl RequestText for &str {
    fn digest(&self) -> String {
        digest(self)
    }
}

/// The request of one decision as the audit record sees it: the text it
/// came as, or (a request the host built) its JSON form; and which records
/// to build.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Rec<'t> {
    text: Option<&'t str>,
    req: &'t Request,
    audit: Audit,
}

impl RequestText for Rec<'_> {
    fn digest(&self) -> String {
        match self.text {
            Some(t) => digest(t),
            None => digest(&serde_json::to_string(self.req).unwrap_or_default()),
        }
    }
}

/// One piece of state a request reads (and may write).
#[derive(Debug, Clone, Copy)]
enum Slot {
    Lock(lockout::KeyKind),
    Bucket,
    Scrape,
    Infer,
}

/// What a slot's step saw, for the context.
#[derive(Debug, Clone)]
enum Observed {
    None,
    Lock(lockout::KeyState),
    Bucket(crate::rate::BucketFacts),
    Scrape(crate::rate::ScrapeFacts),
    Infer(crate::rate::InferFacts),
}

/// A request qualified into the bundle's namespace.
pub(crate) struct Qualified {
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
}

impl Bundle {
    /// Decide on one request given as JSON text. Never fails: faults are a
    /// `deny` naming the fault.
    pub fn decide(&self, request_text: &str, store: &mut dyn Store) -> Decision {
        match Request::from_json(request_text) {
            Ok(req) => self.decide_request(&req, request_text, store),
            Err(e) => Decision::invalid(e, request_text),
        }
    }

    /// Decide on a parsed request. `request_text` feeds the audit digest.
    pub fn decide_request(
        &self,
        req: &Request,
        request_text: &str,
        store: &mut dyn Store,
    ) -> Decision {
        let rec = Rec {
            text: Some(request_text),
            req,
            audit: Audit::All,
        };
        self.decide_inner(req, rec, store)
    }

    /// Decide on a request the host built (no JSON text), building the
    /// audit record only for the decisions `audit` names. A record's
    /// `request_digest` is then over the request's JSON form
    /// (`serde_json::to_string(req)`). Everything else is what
    /// [`Bundle::decide`] gives for the same request.
    pub fn decide_with(&self, req: &Request, store: &mut dyn Store, audit: Audit) -> Decision {
        if let Err(e) = req.check() {
            return Decision::invalid(
                e,
                Rec {
                    text: None,
                    req,
                    audit,
                },
            );
        }
        let rec = Rec {
            text: None,
            req,
            audit,
        };
        self.decide_inner(req, rec, store)
    }

    fn decide_inner(
        &self,
        req: &Request,
        request_text: Rec<'_>,
        store: &mut dyn Store,
    ) -> Decision {
        let now = match &req.now {
            Some(t) => match timefmt::parse_now(t) {
                Ok(n) => n,
                Err(e) => return Decision::invalid(e, request_text),
            },
            None => timefmt::clock_now(),
        };
        let q = match self.qualify(req) {
            Ok(q) => q,
            Err(e) => return Decision::invalid(e, request_text),
        };
        // The client address: as the host gave it, or resolved here from
        // the connection's peer and the trusted proxies it came through
        // (crate::network); from then on `context.ip` is that address.
        let resolved;
        let req: &Request = if req.context.peer.is_some() || req.context.forwarded_for.is_some() {
            match crate::network::resolve(&self.trusted_proxies, &req.context) {
                Ok(client) => {
                    let mut r = req.clone();
                    r.context.ip = client.ip;
                    r.context.peer = None;
                    r.context.forwarded_for = None;
                    resolved = r;
                    &resolved
                }
                Err(e) => return Decision::invalid(e, request_text),
            }
        } else {
            req
        };

        // A webhook delivery: its credential is checked and its fields are
        // read from the signed body first; the record is then normalised
        // like any other (the source's module names its fields).
        let hook = match &req.context.webhook {
            Some(claim) => {
                let body = match self.body_bytes(req) {
                    Ok(b) => b,
                    Err(e) => return Decision::invalid(e, request_text),
                };
                match crate::webhook::prepare(
                    &self.manifest,
                    &self.info.namespace,
                    req,
                    claim,
                    body.as_deref(),
                ) {
                    Ok(p) => Some(p),
                    Err(e) => return Decision::invalid(e, request_text),
                }
            }
            None if crate::webhook::is_webhook_action(&self.manifest, &req.action) => {
                return Decision::invalid(
                    RequestError::field(
                        "context.webhook",
                        format!(
                            "action `{}` is a webhook delivery: give `context.webhook` with its `kind`",
                            req.action
                        ),
                    ),
                    request_text,
                );
            }
            None => None,
        };
        let delivered;
        let req: &Request = match &hook {
            Some(p) => {
                let mut r = req.clone();
                r.context.module = Some(p.module.clone());
                r.context.record = p.record.clone();
                delivered = r;
                &delivered
            }
            None => req,
        };

        // Derive: record vocabulary, provenance, pathway.
        let record = match normalise::record(&self.manifest, req) {
            Ok(r) => r,
            Err(mut e) => {
                // A delivery's fields live in its body.
                if hook.is_some()
                    && let Some(rest) = e.field.strip_prefix("context.record.")
                {
                    e.field = format!("body.{rest}");
                }
                return Decision::invalid(e, request_text);
            }
        };
        let mut provenance = synthetic::derive(
            &self.manifest.synthetic,
            &self.synthetic_keys,
            req,
            &record,
            now,
        );
        // An unauthenticated delivery proves nothing, whatever token it shows.
        if hook.as_ref().is_some_and(|p| !p.facts.valid())
            && provenance.status != synthetic::Status::None
        {
            provenance = synthetic::Provenance {
                status: synthetic::Status::Unverified,
                failure: Some("unauthenticated-delivery"),
                issuer: None,
                dataset: None,
                generator: None,
                kid: None,
            };
        }
        let pathway = if provenance.status == synthetic::Status::Verified {
            Pathway::Synthetic
        } else {
            Pathway::Authentic
        };
        let cfg = match &hook {
            Some(_) => &self.manifest.webhooks.lockout.0,
            None => self.manifest.pathway(pathway),
        };
        let transfer = match crate::transfer::derive(&self.manifest, &self.adequacy, req) {
            Ok(t) => t,
            Err(e) => return Decision::invalid(e, request_text),
        };
        let token = crate::oauth::derive(
            &self.manifest.oauth,
            &self.oauth_keys,
            req.context.token.as_deref(),
            now,
        );
        let mut facts = Facts {
            pathway,
            synthetic: provenance,
            record,
            token,
            transfer,
            ..Facts::empty(now)
        };
        if let Some(p) = &hook {
            facts.webhook = p.facts.clone();
        }
        match req.body_parts() {
            // Chunks are scanned as a stream, as a streaming host would.
            Ok(Some((parts, _))) if self.manifest.dlp.enabled => {
                facts.dlp = Some(match parts.as_slice() {
                    [one] => crate::dlp::scan(&self.manifest.dlp, one),
                    _ => {
                        crate::dlp::scan_chunks(&self.manifest.dlp, parts.iter().map(Vec::as_slice))
                    }
                })
            }
            Ok(_) => {}
            Err(e) => return Decision::invalid(e, request_text),
        }
        if let (Some(flow), Some(fields)) = (&req.context.flow, &req.context.fields) {
            match crate::dlp::minimise(
                &self.manifest.dlp,
                flow,
                req.context.module.as_deref(),
                fields,
            ) {
                Ok((_, dropped)) => facts.dropped_fields = dropped,
                Err(e) => {
                    return Decision::invalid(RequestError::field("context.flow", e), request_text);
                }
            }
        }

        // State: one batched read of every key the request needs; then one
        // batched compare-and-set per round, retried from the conflicting
        // entries only (a written slot is never applied twice).
        let ns = &self.info.namespace;
        let principal = format!(
            "{}:{}",
            req.principal.kind,
            normalise::account_id(&req.principal.id)
        );
        let lock_keys = match &hook {
            Some(p) => {
                crate::webhook::lock_keys(ns, pathway, &p.facts.source, req.context.ip.as_deref())
            }
            None => lockout::keys(ns, pathway, req),
        };
        let mut slots: Vec<(Slot, String)> = lock_keys
            .into_iter()
            .map(|(k, key)| (Slot::Lock(k), key))
            .collect();
        let rate = &self.manifest.rate;
        if let Some((name, _)) = crate::rate::class_of(rate, &req.action) {
            slots.push((
                Slot::Bucket,
                format!("rl1:{}:{ns}:{name}:{principal}", pathway.as_str()),
            ));
        }
        if crate::rate::scraped_record(&rate.scraping, req) {
            slots.push((Slot::Scrape, format!("sc1:{ns}:{principal}")));
        }
        if req.event.is_none() && rate.extraction.actions.iter().any(|a| a == &req.action) {
            slots.push((
                Slot::Infer,
                format!(
                    "ex1:{ns}:{principal}|{}:{}",
                    req.resource.kind, req.resource.id
                ),
            ));
        }
        // JIT keys ride in the same batched read; their writes wait for the decision.
        let jit = match crate::jit::keys(&self.manifest.jit, ns, req, &principal) {
            Ok(j) => j,
            Err(e) => return Decision::invalid(e, request_text),
        };
        let mut names: Vec<String> = slots.iter().map(|(_, k)| k.clone()).collect();
        names.extend(jit.iter().flat_map(|(_, keys)| keys.iter().cloned()));
        // The delivery's own key rides last.
        if let Some(p) = &hook {
            names.push(p.key.clone());
        }
        let mut entries = match read_all(store, &names) {
            Ok(e) => e,
            Err(message) => return self.store_fault(req, &q, facts, request_text, message),
        };
        let delivery_entry = if hook.is_some() { entries.pop() } else { None };
        let jit_entries = entries.split_off(slots.len());
        let mut jit_writes = Vec::new();
        if let Some((phase, _)) = &jit {
            match crate::jit::derive(
                &self.manifest.jit,
                phase,
                &jit_entries,
                req,
                &principal,
                now,
            ) {
                Ok((f, w)) => {
                    facts.jit = f;
                    jit_writes = w;
                }
                Err(e) => return Decision::invalid(e, request_text),
            }
        }
        // A delivery with a valid credential is a redelivery when it was
        // accepted before (its mark is written below, only if this decision
        // allows it: a delivery refused, say throttled, is new again when it
        // is retried). One with a bad credential is claimed first, on its
        // own, so an identical retry, even racing, is counted once.
        let mut lock_event = req.event;
        let mut take = req.event.is_none();
        let window = self.manifest.webhooks.redelivery_window;
        let mut acceptance = None;
        if let (Some(entry), true) = (&delivery_entry, facts.webhook.valid()) {
            let (write, again, seen) = crate::webhook::claim(entry, window, now);
            facts.webhook.redelivery = again;
            facts.webhook.deliveries = seen;
            lock_event = None;
            take = !again;
            acceptance = Some(write);
        } else if let Some(mut entry) = delivery_entry {
            let mut claimed = None;
            for _ in 0..=CAS_RETRIES {
                let (write, again, seen) = crate::webhook::claim(&entry, window, now);
                match store.compare_and_set(std::slice::from_ref(&write)) {
                    Ok(r) => match r.into_iter().next() {
                        Some(WriteResult::Written(_)) => {
                            claimed = Some((again, seen));
                            break;
                        }
                        Some(WriteResult::Conflict(current)) => entry = current,
                        None => {
                            return self.store_fault(
                                req,
                                &q,
                                facts,
                                request_text,
                                "store answered 0 results for 1 write".into(),
                            );
                        }
                    },
                    Err(e) => {
                        return self.store_fault(
                            req,
                            &q,
                            facts,
                            request_text,
                            format!("store write failed: {e}"),
                        );
                    }
                }
            }
            let Some((again, seen)) = claimed else {
                return self.store_fault(
                    req,
                    &q,
                    facts,
                    request_text,
                    format!(
                        "state kept changing: {CAS_RETRIES} compare-and-set conflicts in a row"
                    ),
                );
            };
            facts.webhook.redelivery = again;
            facts.webhook.deliveries = seen;
            let valid = facts.webhook.valid();
            // Bad credentials are the source's failures; a valid delivery
            // takes a rate token. A redelivery does neither again.
            lock_event = (!valid && !again).then_some(crate::request::Event::AuthFailure);
            take = valid && !again;
        }
        let mut pending = vec![true; slots.len()];
        let mut observed: Vec<Observed> = vec![Observed::None; slots.len()];
        for round in 0..=CAS_RETRIES {
            if round > 0 && store.backoff(round as u32) {
                // Others are writing the same keys and the store stepped
                // aside for a while: what the conflict answered is stale
                // by now, so read the keys still pending again and write
                // right after computing (a write computed before the wait
                // would conflict again whenever anyone wrote meanwhile).
                let stale: Vec<usize> = (0..entries.len())
                    .filter(|i| pending.get(*i).copied().unwrap_or(false))
                    .collect();
                let keys: Vec<String> = stale
                    .iter()
                    .filter_map(|i| entries.get(*i).map(|e| e.key.clone()))
                    .collect();
                match read_all(store, &keys) {
                    Ok(fresh) => {
                        for (i, e) in stale.into_iter().zip(fresh) {
                            if let Some(entry) = entries.get_mut(i) {
                                *entry = e;
                            }
                        }
                    }
                    Err(message) => {
                        return self.store_fault(req, &q, facts, request_text, message);
                    }
                }
            }
            let mut writes = Vec::new();
            let mut at = Vec::new();
            for (i, ((slot, _), entry)) in slots.iter().zip(&entries).enumerate() {
                if !pending.get(i).copied().unwrap_or(false) {
                    continue;
                }
                let (write, seen) = self.step(*slot, req, entry, cfg, now, lock_event, take);
                if let Some(o) = observed.get_mut(i) {
                    *o = seen;
                }
                match write {
                    Some(w) => {
                        writes.push(w);
                        at.push(i);
                    }
                    None => {
                        if let Some(p) = pending.get_mut(i) {
                            *p = false;
                        }
                    }
                }
            }
            if writes.is_empty() {
                break;
            }
            if round == CAS_RETRIES {
                return self.store_fault(
                    req,
                    &q,
                    facts,
                    request_text,
                    format!(
                        "state kept changing: {CAS_RETRIES} compare-and-set conflicts in a row"
                    ),
                );
            }
            let results = match store.compare_and_set(&writes) {
                Ok(r) if r.len() == writes.len() => r,
                Ok(r) => {
                    return self.store_fault(
                        req,
                        &q,
                        facts,
                        request_text,
                        format!(
                            "store answered {} results for {} writes",
                            r.len(),
                            writes.len()
                        ),
                    );
                }
                Err(e) => {
                    return self.store_fault(
                        req,
                        &q,
                        facts,
                        request_text,
                        format!("store write failed: {e}"),
                    );
                }
            };
            for ((i, write), result) in at.into_iter().zip(writes).zip(results) {
                let (Some(entry), Some(flag)) = (entries.get_mut(i), pending.get_mut(i)) else {
                    continue;
                };
                match result {
                    WriteResult::Written(version) => {
                        *entry = Entry {
                            key: write.key,
                            value: write.value,
                            version,
                        };
                        *flag = false;
                    }
                    WriteResult::Conflict(current) => *entry = current,
                }
            }
        }
        for ((slot, _), seen) in slots.iter().zip(observed) {
            match (slot, seen) {
                (Slot::Lock(kind), Observed::Lock(state)) => facts.keys.push((*kind, state)),
                (Slot::Bucket, Observed::Bucket(b)) => facts.bucket = b,
                (Slot::Scrape, Observed::Scrape(sc)) => facts.scrape = sc,
                (Slot::Infer, Observed::Infer(i)) => facts.inference = i,
                _ => {}
            }
        }
        let mut decision = self.evaluate(req, &q, &facts, request_text);
        if let (true, Some(mut write)) = (decision.allowed, acceptance) {
            // Mark the delivery accepted. A conflict means a copy was
            // accepted meanwhile: this one is then a redelivery.
            for round in 0..=CAS_RETRIES {
                let result = match store.compare_and_set(std::slice::from_ref(&write)) {
                    Ok(r) => r.into_iter().next(),
                    Err(e) => {
                        return self.store_fault(
                            req,
                            &q,
                            facts,
                            request_text,
                            format!("store write failed: {e}"),
                        );
                    }
                };
                match result {
                    Some(WriteResult::Written(_)) => break,
                    Some(WriteResult::Conflict(current)) if round < CAS_RETRIES => {
                        let (next, again, seen) = crate::webhook::claim(&current, window, now);
                        if again && !facts.webhook.redelivery {
                            facts.webhook.redelivery = true;
                            facts.webhook.deliveries = seen;
                            decision = self.evaluate(req, &q, &facts, request_text);
                            if !decision.allowed {
                                break;
                            }
                        }
                        write = next;
                    }
                    _ => {
                        return self.store_fault(
                            req,
                            &q,
                            facts,
                            request_text,
                            "the delivery's mark kept changing; retry".into(),
                        );
                    }
                }
            }
        }
        if decision.allowed && !jit_writes.is_empty() {
            // A grant is created or approved only when the decision allows it.
            match store.compare_and_set(&jit_writes) {
                Ok(r) if r.iter().all(|w| matches!(w, WriteResult::Written(_))) => {}
                Ok(_) => {
                    return self.store_fault(
                        req,
                        &q,
                        facts,
                        request_text,
                        "the grant changed concurrently; retry".into(),
                    );
                }
                Err(e) => {
                    return self.store_fault(
                        req,
                        &q,
                        facts,
                        request_text,
                        format!("store write failed: {e}"),
                    );
                }
            }
        }
        decision
    }

    /// The Cedar request the engine would evaluate for `request_text` with
    /// no prior state, for benchmarks that compare with bare Cedar.
    #[doc(hidden)]
    pub fn cedar_request(&self, request_text: &str) -> Result<cedar_policy::Request, String> {
        let req = Request::from_json(request_text).map_err(|e| e.to_string())?;
        let q = self.qualify(&req).map_err(|e| e.to_string())?;
        let now = req
            .now
            .as_deref()
            .map(timefmt::parse_now)
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let mut facts = Facts::empty(now);
        facts.keys = lockout::keys(&self.info.namespace, Pathway::Authentic, &req)
            .into_iter()
            .map(|(k, _)| (k, lockout::KeyState::default()))
            .collect();
        let context =
            Context::from_pairs(context::build(&req, &facts)?).map_err(|e| e.to_string())?;
        cedar_policy::Request::new(q.principal, q.action, q.resource, context, None)
            .map_err(|e| e.to_string())
    }

    fn body_bytes(&self, req: &Request) -> Result<Option<Vec<u8>>, RequestError> {
        Ok(req.body_parts()?.map(|(parts, _)| parts.concat()))
    }

    /// The body with the findings masked per the manifest.
    fn redacted(&self, req: &Request, facts: &Facts) -> Option<String> {
        use base64::Engine as _;
        let d = facts.dlp.as_ref()?;
        let body = self.body_bytes(req).ok().flatten()?;
        let out = crate::dlp::redact(&self.manifest.dlp, &body, &d.findings);
        if req
            .body_parts()
            .ok()
            .flatten()
            .is_some_and(|(_, text)| text)
        {
            Some(String::from_utf8_lossy(&out).into_owned())
        } else {
            Some(base64::engine::general_purpose::STANDARD.encode(out))
        }
    }

    /// Advance one slot from its current entry: the write (if any) and
    /// what the request sees.
    #[expect(
        clippy::too_many_arguments,
        reason = "a slot's step sees the request and what was derived for it"
    )]
    fn step(
        &self,
        slot: Slot,
        req: &Request,
        entry: &Entry,
        cfg: &crate::manifest::PathwayLockout,
        now: i64,
        event: Option<crate::request::Event>,
        take: bool,
    ) -> (Option<crate::store::Write>, Observed) {
        let rate = &self.manifest.rate;
        match slot {
            Slot::Lock(kind) => {
                let current = Record::at(entry, cfg, now);
                let next = current.apply(event, cfg.ladder(kind), cfg, now);
                let state = next.state(cfg.ladder(kind), cfg, now);
                (
                    lockout::write(entry, &current, &next),
                    Observed::Lock(state),
                )
            }
            Slot::Bucket => match crate::rate::class_of(rate, &req.action) {
                Some((name, class)) => {
                    let (w, f) = crate::rate::bucket_step(name, class, entry, now, take);
                    (w, Observed::Bucket(f))
                }
                None => (None, Observed::None),
            },
            Slot::Scrape => {
                let (w, f) = crate::rate::scrape_step(&rate.scraping, entry, &req.resource.id, now);
                (w, Observed::Scrape(f))
            }
            Slot::Infer => {
                let (w, f) = crate::rate::infer_step(
                    &rate.extraction,
                    entry,
                    req.body.as_deref().unwrap_or(""),
                    now,
                );
                (w, Observed::Infer(f))
            }
        }
    }

    pub(crate) fn qualify(&self, req: &Request) -> Result<Qualified, RequestError> {
        let ty = |field: &str, name: &str| {
            self.types.get(name).cloned().ok_or_else(|| {
                let mut known: Vec<&str> = self.types.keys().map(String::as_str).collect();
                known.sort();
                RequestError::field(
                    field,
                    format!(
                        "unknown entity type `{}` (expected one of {})",
                        crate::request::truncate(name),
                        known.join(", ")
                    ),
                )
            })
        };
        let principal = EntityUid::from_type_name_and_id(
            ty("principal.type", &req.principal.kind)?,
            EntityId::new(&req.principal.id),
        );
        let resource = EntityUid::from_type_name_and_id(
            ty("resource.type", &req.resource.kind)?,
            EntityId::new(&req.resource.id),
        );
        let info = self.actions.get(&req.action).ok_or_else(|| {
            let mut known: Vec<&str> = self.actions.keys().map(String::as_str).collect();
            known.sort();
            RequestError::field(
                "action",
                format!(
                    "unknown action `{}` (expected one of {})",
                    crate::request::truncate(&req.action),
                    known.join(", ")
                ),
            )
        })?;
        let applies =
            |field: &str, what: &str, uid: &EntityUid, allowed: &[cedar_policy::EntityTypeName]| {
                if allowed.contains(uid.type_name()) {
                    Ok(())
                } else {
                    let names: Vec<String> =
                        allowed.iter().map(|t| t.basename().to_string()).collect();
                    Err(RequestError::field(
                        field,
                        format!(
                            "action `{}` does not apply to {what} type `{}` (expected one of {})",
                            req.action,
                            uid.type_name().basename(),
                            names.join(", ")
                        ),
                    ))
                }
            };
        applies("principal.type", "principal", &principal, &info.principals)?;
        applies("resource.type", "resource", &resource, &info.resources)?;
        Ok(Qualified {
            principal,
            action: info.uid.clone(),
            resource,
        })
    }

    /// Build the Cedar request from the context values and evaluate the
    /// action's policies. `Err`: the context or request could not be built.
    fn ask_cedar(
        &self,
        q: &Qualified,
        action: &str,
        values: &[(&'static str, context::Val<'_>)],
    ) -> Result<crate::memo::Answer, String> {
        let pairs = values
            .iter()
            .map(|(k, v)| Ok((k.to_string(), v.to_rx()?)))
            .collect::<Result<Vec<_>, String>>();
        let context = pairs
            .and_then(|p| Context::from_pairs(p).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot build context: {e}"))?;
        // Types were checked in `qualify`, the context's shape at load.
        let request = cedar_policy::Request::new(
            q.principal.clone(),
            q.action.clone(),
            q.resource.clone(),
            context,
            None,
        )
        .map_err(|e| lower(&e.to_string()))?;
        let set = self.by_action.get(action).unwrap_or(&self.policies);
        let response = Authorizer::new().is_authorized(&request, set, &self.entities);
        let mut reasons: Vec<PolicyId> = response.diagnostics().reason().cloned().collect();
        reasons.sort_by_key(|id| id.to_string());
        Ok(crate::memo::Answer {
            allow: response.decision() == CedarDecision::Allow,
            reasons,
            errors: response
                .diagnostics()
                .errors()
                .map(|e| lower(&e.to_string()))
                .collect(),
        })
    }

    fn evaluate(
        &self,
        req: &Request,
        q: &Qualified,
        facts: &Facts,
        request_text: Rec<'_>,
    ) -> Decision {
        // Only what the action's policies read goes into the context; the
        // principal, action, resource and that context are the whole input
        // of Cedar's answer, so an answer seen before is reused.
        let whole = context::Needs::all();
        let needs = if self.memo.projecting() {
            self.needs.get(&req.action).unwrap_or(&self.needs_all)
        } else {
            &whole
        };
        let values = context::values(req, facts, needs);
        let mut key = Vec::with_capacity(256);
        for part in [
            &req.principal.kind,
            &req.principal.id,
            &req.action,
            &req.resource.kind,
            &req.resource.id,
        ] {
            context::encode_str(part, &mut key);
        }
        for (name, value) in &values {
            context::encode_str(name, &mut key);
            value.encode(&mut key);
        }
        let answer = match self.memo.get(&key) {
            Some(a) => a,
            None => match self.ask_cedar(q, &req.action, &values) {
                Ok(a) => {
                    let a = std::sync::Arc::new(a);
                    self.memo.put(key, std::sync::Arc::clone(&a));
                    a
                }
                Err(message) => {
                    return self.conclude_fault(
                        req,
                        q,
                        facts,
                        request_text,
                        "engine-fault",
                        message,
                        None,
                    );
                }
            },
        };
        if !answer.errors.is_empty() {
            // Fail closed: a policy that errored might have forbidden this.
            return self.conclude_fault(
                req,
                q,
                facts,
                request_text,
                "evaluation",
                answer.errors.join("; "),
                None,
            );
        }
        let mut ids: Vec<&PolicyId> = answer.reasons.iter().collect();
        let (mut outcome, mut reasons, mut policies) = if ids.is_empty() {
            // Cedar allows only with a determining permit, so this is a deny.
            (Outcome::Deny, vec!["no-permit".to_string()], Vec::new())
        } else {
            let default = if answer.allow {
                Outcome::Allow
            } else {
                Outcome::Deny
            };
            let outcome = ids
                .iter()
                .filter_map(|id| self.meta.get(*id))
                .map(|m| m.outcome)
                .max()
                .unwrap_or(default);
            let reasons = ids
                .iter()
                .map(|id| {
                    self.meta
                        .get(*id)
                        .and_then(|m| m.reason.clone())
                        .unwrap_or_else(|| format!("policy {id}"))
                })
                .collect();
            (
                outcome,
                reasons,
                ids.iter().map(|id| id.to_string()).collect(),
            )
        };
        // A presented token that does not verify is never an anonymous allow,
        // whatever the policies permitted.
        if outcome.is_allowed() && facts.token.present && !facts.token.valid {
            outcome = Outcome::Deny;
            policies = Vec::new();
            reasons = vec![format!("invalid-token: {}", facts.token.failure)];
            ids.clear();
        }
        // A body over the DLP limit was not scanned: whatever the policies
        // say, it is never allowed through unscanned.
        if outcome.is_allowed() && facts.dlp.as_ref().is_some_and(|d| d.oversize) {
            outcome = Outcome::Deny;
            policies = Vec::new();
            reasons = vec![format!(
                "limit: the body is over dlp.max_body_bytes ({} bytes) and was not scanned",
                self.manifest.dlp.max_body_bytes
            )];
            ids.clear();
        }
        // Escalation and retry advice come from the most severe policies first.
        let mut ranked: Vec<_> = ids.iter().filter_map(|id| self.meta.get(*id)).collect();
        ranked.sort_by_key(|m| std::cmp::Reverse(m.outcome));
        // `{resource}` / `{principal}` in @escalate name the subject (e.g. the model).
        let escalation = ranked.iter().find_map(|m| m.escalate.clone()).map(|e| {
            e.replace("{resource}", &req.resource.id)
                .replace("{principal}", &req.principal.id)
        });
        let retry_after = ranked.iter().find_map(|m| m.retry_after).map(|r| match r {
            RetryAfter::Seconds(s) => s,
            // Until the most constraining key eases: its lock ends, or
            // enough failures leave the window.
            RetryAfter::Lockout => facts
                .keys
                .iter()
                .filter_map(|(_, k)| k.retry_after)
                .max()
                .unwrap_or(0)
                .max(0) as u64,
            RetryAfter::Rate => facts.bucket.retry_after.max(0) as u64,
        });
        self.finish(
            req,
            q,
            facts,
            request_text,
            outcome,
            policies,
            reasons,
            escalation,
            retry_after,
            None,
        )
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one constructor for every way a decision ends"
    )]
    fn finish(
        &self,
        req: &Request,
        q: &Qualified,
        facts: &Facts,
        request_text: Rec<'_>,
        outcome: Outcome,
        policies: Vec<String>,
        reasons: Vec<String>,
        escalation: Option<String>,
        retry_after: Option<u64>,
        error: Option<DecisionError>,
    ) -> Decision {
        let audit = if !request_text.audit.wants(outcome) && error.is_none() {
            AuditRecord::omitted(outcome)
        } else {
            AuditRecord {
                time: timefmt::format(facts.now),
                request_digest: request_text.digest(),
                principal: q.principal.to_string(),
                action: q.action.to_string(),
                resource: q.resource.to_string(),
                event: req.event.map(|e| e.as_str().to_string()),
                outcome,
                policies: policies.clone(),
                reasons: reasons.clone(),
                pathway: facts.pathway.as_str().to_string(),
                facts: facts.audit_json(),
                bundle: format!(
                    "{}@{}#{}",
                    self.info.name,
                    self.info.version,
                    self.info.hash.get(..16).unwrap_or("")
                ),
                engine: crate::ENGINE_VERSION.to_string(),
                error: error.as_ref().map(|e| format!("{}: {}", e.kind, e.message)),
            }
        };
        let pathway = facts.pathway.as_str();
        let stage = facts.leading().stage;
        // The matrix fills in who is told when no policy named someone,
        // and says when to alert.
        let rule = if outcome.is_allowed() {
            None
        } else {
            let key_stage = facts
                .keys
                .iter()
                .map(|(_, k)| k.stage)
                .max()
                .unwrap_or(Stage::None);
            self.manifest.escalation_for(pathway, key_stage.as_str())
        };
        let escalation = escalation.or_else(|| rule.map(|r| r.target.clone()));
        let retry = (!outcome.is_allowed() && error.is_none()).then(|| {
            let p = if facts.webhook.present {
                &self.manifest.webhooks.lockout.0.retry
            } else {
                &self.manifest.pathway(facts.pathway).retry
            };
            RetryAdvice {
                max_attempts: p.max_attempts,
                backoff: match p.backoff {
                    crate::manifest::Growth::Linear => "linear".into(),
                    crate::manifest::Growth::Exponential => "exponential".into(),
                },
                base_seconds: p.base.as_secs(),
                max_seconds: p.max.as_secs(),
            }
        });
        Decision {
            outcome,
            allowed: outcome.is_allowed(),
            policies,
            reasons,
            escalation,
            retry_after,
            pathway: pathway.to_string(),
            stage: stage.as_str().to_string(),
            alert_threshold: rule.map(|r| r.alert_threshold),
            retry,
            findings: facts
                .dlp
                .as_ref()
                .map(|d| d.findings.clone())
                .unwrap_or_default(),
            redacted_body: if outcome == Outcome::Redact {
                self.redacted(req, facts)
            } else {
                None
            },
            dropped_fields: facts.dropped_fields.clone(),
            error,
            webhook: facts.webhook.present.then(|| DeliverySummary {
                source: facts.webhook.source.clone(),
                kind: facts.webhook.kind.clone(),
                id: facts.webhook.id.clone(),
                credential: facts.webhook.credential.clone(),
                redelivery: facts.webhook.redelivery,
            }),
            audit,
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the context of a fault, kept for the audit record"
    )]
    fn conclude_fault(
        &self,
        req: &Request,
        q: &Qualified,
        facts: &Facts,
        request_text: Rec<'_>,
        kind: &str,
        message: String,
        field: Option<String>,
    ) -> Decision {
        let reasons = vec![format!("error: {message}")];
        let error = Some(DecisionError {
            kind: kind.to_string(),
            message,
            field,
        });
        self.finish(
            req,
            q,
            facts,
            request_text,
            Outcome::Deny,
            Vec::new(),
            reasons,
            None,
            None,
            error,
        )
    }

    fn store_fault(
        &self,
        req: &Request,
        q: &Qualified,
        facts: Facts,
        request_text: Rec<'_>,
        message: String,
    ) -> Decision {
        self.conclude_fault(req, q, &facts, request_text, "store", message, None)
    }
}

/// Read `keys`: exactly one entry per key, or the store fault's message.
fn read_all(store: &mut dyn Store, keys: &[String]) -> Result<Vec<Entry>, String> {
    match store.get(keys) {
        Ok(e) if e.len() == keys.len() => Ok(e),
        Ok(e) => Err(format!(
            "store answered {} entries for {} keys",
            e.len(),
            keys.len()
        )),
        Err(e) => Err(format!("store read failed: {e}")),
    }
}

fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
