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
const CAS_RETRIES: usize = 16;

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
    pub facts: serde_json::Value,
    /// Bundle name, version and hash.
    pub bundle: String,
    /// Engine version.
    pub engine: String,
    /// Fault, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// The audit record.
    pub audit: AuditRecord,
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
        request_text: &str,
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
            audit: AuditRecord {
                time: String::new(),
                request_digest: digest(request_text),
                principal: String::new(),
                action: String::new(),
                resource: String::new(),
                event: None,
                outcome: Outcome::Deny,
                policies: Vec::new(),
                reasons: Vec::new(),
                pathway: Pathway::Authentic.as_str().to_string(),
                facts: serde_json::Value::Null,
                bundle: String::new(),
                engine: crate::ENGINE_VERSION.to_string(),
                error: Some(format!("{kind}: {message}")),
            },
        }
    }

    /// A fail-closed deny for a request that cannot be parsed.
    pub fn invalid(err: RequestError, request_text: &str) -> Decision {
        let field = (!err.field.is_empty()).then(|| err.field.clone());
        Decision::fault("invalid-request", err.to_string(), field, request_text)
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
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
struct Qualified {
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

        // Derive: record vocabulary, provenance, pathway.
        let record = match normalise::record(&self.manifest, req) {
            Ok(r) => r,
            Err(e) => return Decision::invalid(e, request_text),
        };
        let provenance = synthetic::derive(
            &self.manifest.synthetic,
            &self.synthetic_keys,
            req,
            &record,
            now,
        );
        let pathway = if provenance.status == synthetic::Status::Verified {
            Pathway::Synthetic
        } else {
            Pathway::Authentic
        };
        let cfg = self.manifest.pathway(pathway);
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
        match self.body_bytes(req) {
            Ok(Some(body)) if self.manifest.dlp.enabled => {
                facts.dlp = Some(crate::dlp::scan(&self.manifest.dlp, &body))
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
        let mut slots: Vec<(Slot, String)> = lockout::keys(ns, pathway, req)
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
        let mut entries = match store.get(&names) {
            Ok(e) if e.len() == names.len() => e,
            Ok(e) => {
                return self.store_fault(
                    req,
                    &q,
                    facts,
                    request_text,
                    format!(
                        "store answered {} entries for {} keys",
                        e.len(),
                        names.len()
                    ),
                );
            }
            Err(e) => {
                return self.store_fault(
                    req,
                    &q,
                    facts,
                    request_text,
                    format!("store read failed: {e}"),
                );
            }
        };
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
        let mut pending = vec![true; slots.len()];
        let mut observed: Vec<Observed> = vec![Observed::None; slots.len()];
        for round in 0..=CAS_RETRIES {
            let mut writes = Vec::new();
            let mut at = Vec::new();
            for (i, ((slot, _), entry)) in slots.iter().zip(&entries).enumerate() {
                if !pending.get(i).copied().unwrap_or(false) {
                    continue;
                }
                let (write, seen) = self.step(*slot, req, entry, cfg, now);
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
        let decision = self.evaluate(req, &q, &facts, request_text);
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
        use base64::Engine as _;
        match (&req.body, &req.body_base64) {
            (Some(t), _) => Ok(Some(t.as_bytes().to_vec())),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map(Some)
                .map_err(|e| RequestError::field("body_base64", format!("not base64: {e}"))),
            (None, None) => Ok(None),
        }
    }

    /// The body with the findings masked per the manifest.
    fn redacted(&self, req: &Request, facts: &Facts) -> Option<String> {
        use base64::Engine as _;
        let d = facts.dlp.as_ref()?;
        let body = self.body_bytes(req).ok().flatten()?;
        let out = crate::dlp::redact(&self.manifest.dlp, &body, &d.findings);
        if req.body.is_some() {
            Some(String::from_utf8_lossy(&out).into_owned())
        } else {
            Some(base64::engine::general_purpose::STANDARD.encode(out))
        }
    }

    /// Advance one slot from its current entry: the write (if any) and
    /// what the request sees.
    fn step(
        &self,
        slot: Slot,
        req: &Request,
        entry: &Entry,
        cfg: &crate::manifest::PathwayLockout,
        now: i64,
    ) -> (Option<crate::store::Write>, Observed) {
        let rate = &self.manifest.rate;
        match slot {
            Slot::Lock(kind) => {
                let current = Record::at(entry, cfg, now);
                let next = current.apply(req.event, cfg.ladder(kind), cfg, now);
                let state = next.state(cfg.ladder(kind), cfg, now);
                (
                    lockout::write(entry, &current, &next),
                    Observed::Lock(state),
                )
            }
            Slot::Bucket => match crate::rate::class_of(rate, &req.action) {
                Some((name, class)) => {
                    let (w, f) =
                        crate::rate::bucket_step(name, class, entry, now, req.event.is_none());
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

    fn qualify(&self, req: &Request) -> Result<Qualified, RequestError> {
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

    fn evaluate(
        &self,
        req: &Request,
        q: &Qualified,
        facts: &Facts,
        request_text: &str,
    ) -> Decision {
        let context = match context::build(req, facts)
            .and_then(|p| Context::from_pairs(p).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                let message = format!("cannot build context: {e}");
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
        };
        // Types were checked in `qualify`, the context's shape at load.
        let request = match cedar_policy::Request::new(
            q.principal.clone(),
            q.action.clone(),
            q.resource.clone(),
            context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => {
                return self.conclude_fault(
                    req,
                    q,
                    facts,
                    request_text,
                    "engine-fault",
                    lower(&e.to_string()),
                    None,
                );
            }
        };
        let set = self.by_action.get(&req.action).unwrap_or(&self.policies);
        let response = Authorizer::new().is_authorized(&request, set, &self.entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| lower(&e.to_string()))
            .collect();
        if !errors.is_empty() {
            // Fail closed: a policy that errored might have forbidden this.
            return self.conclude_fault(
                req,
                q,
                facts,
                request_text,
                "evaluation",
                errors.join("; "),
                None,
            );
        }
        let mut ids: Vec<&PolicyId> = response.diagnostics().reason().collect();
        ids.sort_by_key(|id| id.to_string());
        let (mut outcome, mut reasons, mut policies) = if ids.is_empty() {
            // Cedar allows only with a determining permit, so this is a deny.
            (Outcome::Deny, vec!["no-permit".to_string()], Vec::new())
        } else {
            let default = if response.decision() == CedarDecision::Allow {
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
        request_text: &str,
        outcome: Outcome,
        policies: Vec<String>,
        reasons: Vec<String>,
        escalation: Option<String>,
        retry_after: Option<u64>,
        error: Option<DecisionError>,
    ) -> Decision {
        let audit = AuditRecord {
            time: timefmt::format(facts.now),
            request_digest: digest(request_text),
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
            let p = &self.manifest.pathway(facts.pathway).retry;
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
        request_text: &str,
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
        request_text: &str,
        message: String,
    ) -> Decision {
        self.conclude_fault(req, q, &facts, request_text, "store", message, None)
    }
}

fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
