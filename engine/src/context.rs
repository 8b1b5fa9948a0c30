//! Builds the Cedar context of one decision from the request and the facts
//! the engine derived. The shape is `Portcullis::Context` in
//! `portcullis.cedarschema`; both change together.

use crate::lockout::{KeyKind, KeyState};
use crate::normalise;
use crate::request::Request;
use crate::synthetic::{Provenance, Status};
use cedar_policy::RestrictedExpression as Rx;
use serde_json::{Value, json};

/// The engine's own schema fragment.
pub const PORTCULLIS_SCHEMA: &str = include_str!("portcullis.cedarschema");

/// Which counters and thresholds apply to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pathway {
    /// Real customers' traffic, and any claim that is not proven.
    Authentic,
    /// Traffic whose synthetic provenance is verified.
    Synthetic,
}

impl Pathway {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Pathway::Authentic => "authentic",
            Pathway::Synthetic => "synthetic",
        }
    }
}

/// Everything derived for one decision, before Cedar sees it.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Request time, seconds since the epoch.
    pub now: i64,
    /// Which pathway the decision takes.
    pub pathway: Pathway,
    /// Synthetic provenance.
    pub synthetic: Provenance,
    /// Lockout state per key the request has.
    pub keys: Vec<(KeyKind, KeyState)>,
    /// The record in the common vocabulary.
    pub record: normalise::Record,
    /// The access token.
    pub token: crate::oauth::TokenFacts,
    /// The transfer.
    pub transfer: crate::transfer::TransferFacts,
    /// Rate bucket.
    pub bucket: crate::rate::BucketFacts,
    /// Scraping shape.
    pub scrape: crate::rate::ScrapeFacts,
    /// Model-extraction shape.
    pub inference: crate::rate::InferFacts,
    /// Just-in-time access.
    pub jit: crate::jit::JitFacts,
    /// DLP scan of the body (None: no body).
    pub dlp: Option<crate::dlp::ScanResult>,
    /// Fields the flow's minimisation drops.
    pub dropped_fields: Vec<String>,
}

impl Facts {
    /// Facts before anything is known (faults).
    pub fn empty(now: i64) -> Facts {
        Facts {
            now,
            pathway: Pathway::Authentic,
            synthetic: Provenance {
                status: Status::None,
                failure: None,
                issuer: None,
                dataset: None,
                generator: None,
            },
            keys: Vec::new(),
            record: normalise::Record::default(),
            token: Default::default(),
            transfer: Default::default(),
            bucket: Default::default(),
            scrape: Default::default(),
            inference: Default::default(),
            jit: Default::default(),
            dlp: None,
            dropped_fields: Vec::new(),
        }
    }

    /// The state of one key (all zero when the request lacks it).
    pub fn key(&self, kind: KeyKind) -> KeyState {
        self.keys
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    /// The key that leads the top-level `lockout.*`: the (account, address)
    /// pair when the request has an address, else the account.
    pub fn leading(&self) -> KeyState {
        if self.keys.iter().any(|(k, _)| *k == KeyKind::AccountIp) {
            self.key(KeyKind::AccountIp)
        } else {
            self.key(KeyKind::Account)
        }
    }

    /// Derived facts as JSON, for the audit record: counts and statuses,
    /// never a token, password or body.
    pub fn audit_json(&self) -> Value {
        let keys: serde_json::Map<String, Value> = self
            .keys
            .iter()
            .map(|(k, s)| {
                (k.as_str().to_string(), json!({"failures": s.failures, "stage": s.stage.as_str(), "locked_until": s.locked_until, "repeat": s.repeat}))
            })
            .collect();
        json!({
            "synthetic": {
                "status": self.synthetic.status.as_str(),
                "failure": self.synthetic.failure,
                "issuer": self.synthetic.issuer,
                "dataset": self.synthetic.dataset,
            },
            "lockout": keys,
            "token": {
                "present": self.token.present,
                "valid": self.token.valid,
                "failure": self.token.failure,
                "issuer": self.token.issuer,
                "subject": self.token.subject,
                "client_id": self.token.client_id,
                "scopes": self.token.scopes,
            },
            "transfer": {
                "origin": self.transfer.origin,
                "destination": self.transfer.destination,
                "basis": self.transfer.basis,
                "mechanism": self.transfer.mechanism,
                "allowed": self.transfer.allowed,
                "recipient": self.transfer.recipient,
                "adequacy_as_of": self.transfer.adequacy_as_of,
            },
            "rate": {
                "class": self.bucket.class,
                "remaining": self.bucket.remaining,
                "exhausted": self.bucket.exhausted,
                "distinct_records": self.scrape.distinct_records,
                "walk_length": self.scrape.walk_length,
            },
            "jit": {
                "phase": self.jit.phase,
                "grant_id": self.jit.grant_id,
                "role": self.jit.role,
                "active": self.jit.active,
                "expires": self.jit.expires,
                "self_approval": self.jit.self_approval,
            },
            "dlp": self.dlp.as_ref().map(|d| json!({
                "kinds": d.kinds(),
                "count": d.count(),
                "max_confidence": d.max_confidence(),
                "model_weights": d.model_weights(),
                "oversize": d.oversize,
            })),
            "dropped_fields": self.dropped_fields,
            "inference": {
                "queries": self.inference.queries,
                "distinct_inputs": self.inference.distinct_inputs,
                "probes": self.inference.probes,
                "probe_ratio": self.inference.probe_ratio,
            },
        })
    }
}

/// The Cedar context pairs.
pub fn build(req: &Request, facts: &Facts) -> Result<Vec<(String, Rx)>, String> {
    let c = &req.context;
    let mut pairs = vec![
        (
            "event".to_string(),
            Rx::new_string(req.event.map(|e| e.as_str()).unwrap_or("none").to_string()),
        ),
        (
            "pathway".to_string(),
            Rx::new_string(facts.pathway.as_str().to_string()),
        ),
        ("now".to_string(), Rx::new_long(facts.now)),
        (
            "fields".to_string(),
            Rx::new_set(c.fields.iter().flatten().map(|f| Rx::new_string(f.clone()))),
        ),
    ];
    if let Some(ip) = &c.ip {
        pairs.push(("ip".to_string(), ip_expr(ip)));
    }
    for (name, value) in [
        ("module", &c.module),
        ("region", &c.region),
        ("destination_region", &c.destination_region),
        ("legal_basis", &c.legal_basis),
        ("flow", &c.flow),
    ] {
        if let Some(v) = value {
            pairs.push((name.to_string(), Rx::new_string(v.clone())));
        }
    }
    let mtls = c.mtls.clone().unwrap_or_default();
    pairs.push((
        "mtls".to_string(),
        record(vec![
            ("verified", Rx::new_bool(mtls.verified)),
            ("san", Rx::new_string(mtls.san.unwrap_or_default())),
        ])?,
    ));
    let s = &facts.synthetic;
    let text = |v: &Option<String>| Rx::new_string(v.clone().unwrap_or_default());
    pairs.push((
        "synthetic".to_string(),
        record(vec![
            ("claimed", Rx::new_bool(s.status != Status::None)),
            ("verified", Rx::new_bool(s.status == Status::Verified)),
            ("status", Rx::new_string(s.status.as_str().to_string())),
            (
                "failure",
                Rx::new_string(s.failure.unwrap_or("").to_string()),
            ),
            ("issuer", text(&s.issuer)),
            ("dataset", text(&s.dataset)),
            ("generator", text(&s.generator)),
        ])?,
    ));
    let lead = facts.leading();
    let mut lockout = key_fields(&lead);
    for kind in [KeyKind::Account, KeyKind::AccountIp, KeyKind::Ip] {
        lockout.push((kind.as_str(), record(key_fields(&facts.key(kind)))?));
    }
    pairs.push(("lockout".to_string(), record(lockout)?));
    let r = &facts.record;
    let mut rec = Vec::new();
    if let Some(b) = r.synthetic {
        rec.push(("synthetic", Rx::new_bool(b)));
    }
    for (name, v) in [
        ("owner", &r.owner),
        ("id", &r.id),
        ("object", &r.object),
        ("country", &r.country),
    ] {
        if let Some(v) = v {
            rec.push((name, Rx::new_string(v.clone())));
        }
    }
    pairs.push(("record".to_string(), record(rec)?));
    let t = &facts.token;
    pairs.push((
        "token".to_string(),
        record(vec![
            ("present", Rx::new_bool(t.present)),
            ("valid", Rx::new_bool(t.valid)),
            ("failure", Rx::new_string(t.failure.clone())),
            ("issuer", Rx::new_string(t.issuer.clone())),
            ("subject", Rx::new_string(t.subject.clone())),
            ("client_id", Rx::new_string(t.client_id.clone())),
            (
                "scopes",
                Rx::new_set(t.scopes.iter().map(|s| Rx::new_string(s.clone()))),
            ),
            ("expires", Rx::new_long(t.expires)),
        ])?,
    ));
    let x = &facts.transfer;
    pairs.push((
        "transfer".to_string(),
        record(vec![
            ("cross_border", Rx::new_bool(x.cross_border)),
            ("origin", Rx::new_string(x.origin.clone())),
            ("destination", Rx::new_string(x.destination.clone())),
            ("origin_eea", Rx::new_bool(x.origin_eea)),
            ("destination_eea", Rx::new_bool(x.destination_eea)),
            ("basis", Rx::new_string(x.basis.clone())),
            ("mechanism", Rx::new_string(x.mechanism.clone())),
            ("allowed", Rx::new_bool(x.allowed)),
            ("recipient", Rx::new_string(x.recipient.clone())),
        ])?,
    ));
    let (b, sc) = (&facts.bucket, &facts.scrape);
    pairs.push((
        "rate".to_string(),
        record(vec![
            ("class", Rx::new_string(b.class.clone())),
            ("remaining", Rx::new_long(b.remaining)),
            ("exhausted", Rx::new_bool(b.exhausted)),
            ("distinct_records", Rx::new_long(sc.distinct_records)),
            ("walk_length", Rx::new_long(sc.walk_length)),
        ])?,
    ));
    let i = &facts.inference;
    pairs.push((
        "inference".to_string(),
        record(vec![
            ("queries", Rx::new_long(i.queries)),
            ("distinct_inputs", Rx::new_long(i.distinct_inputs)),
            ("probes", Rx::new_long(i.probes)),
            ("probe_ratio", Rx::new_long(i.probe_ratio)),
        ])?,
    ));
    let empty = crate::dlp::ScanResult::default();
    let d = facts.dlp.as_ref().unwrap_or(&empty);
    pairs.push((
        "dlp".to_string(),
        record(vec![
            ("scanned", Rx::new_bool(facts.dlp.is_some())),
            (
                "kinds",
                Rx::new_set(d.kinds().into_iter().map(Rx::new_string)),
            ),
            ("count", Rx::new_long(d.count() as i64)),
            (
                "max_confidence",
                Rx::new_long(i64::from(d.max_confidence())),
            ),
            ("model_weights", Rx::new_bool(d.model_weights())),
            ("oversize", Rx::new_bool(d.oversize)),
            (
                "dropped_fields",
                Rx::new_set(
                    facts
                        .dropped_fields
                        .iter()
                        .map(|f| Rx::new_string(f.clone())),
                ),
            ),
        ])?,
    ));
    let j = &facts.jit;
    pairs.push((
        "jit".to_string(),
        record(vec![
            (
                "phase",
                Rx::new_string(if j.phase.is_empty() {
                    "none".into()
                } else {
                    j.phase.clone()
                }),
            ),
            ("grant_id", Rx::new_string(j.grant_id.clone())),
            ("role", Rx::new_string(j.role.clone())),
            ("found", Rx::new_bool(j.found)),
            ("status", Rx::new_string(j.status.clone())),
            ("self_approval", Rx::new_bool(j.self_approval)),
            ("active", Rx::new_bool(j.active)),
            ("expires", Rx::new_long(j.expires)),
            ("duration", Rx::new_long(j.duration)),
        ])?,
    ));
    Ok(pairs)
}

fn key_fields(k: &KeyState) -> Vec<(&'static str, Rx)> {
    vec![
        ("failures", Rx::new_long(k.failures)),
        ("stage", Rx::new_string(k.stage.as_str().to_string())),
        ("locked_until", Rx::new_long(k.locked_until)),
        ("repeat", Rx::new_long(k.repeat)),
    ]
}

/// Most distinct addresses whose expressions are kept per thread.
const IP_CACHE: usize = 1024;

thread_local! {
    static IPS: std::cell::RefCell<std::collections::HashMap<String, Rx>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `ip("…")` as a Cedar expression. Building one parses the extension's
/// name with Cedar's parser (microseconds, more than the rest of the
/// context), so recent addresses are kept per thread; the cache only saves
/// time, the expression is the same either way.
fn ip_expr(ip: &str) -> Rx {
    IPS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(x) = cache.get(ip) {
            return x.clone();
        }
        if cache.len() >= IP_CACHE {
            cache.clear();
        }
        let x = Rx::new_ip(ip);
        cache.insert(ip.to_string(), x.clone());
        x
    })
}

fn record(fields: Vec<(&str, Rx)>) -> Result<Rx, String> {
    Rx::new_record(fields.into_iter().map(|(k, v)| (k.to_string(), v))).map_err(|e| e.to_string())
}

/// A context with every attribute present, to check at load that each
/// action of a bundle schema declares what the engine supplies.
pub fn probe_context() -> Vec<(String, Rx)> {
    let req = Request {
        principal: crate::request::EntityRef {
            kind: "P".into(),
            id: "p".into(),
        },
        action: "a".into(),
        resource: crate::request::EntityRef {
            kind: "R".into(),
            id: "r".into(),
        },
        context: crate::request::RequestContext {
            ip: Some("192.0.2.1".into()),
            module: Some(String::new()),
            region: Some(String::new()),
            destination_region: Some(String::new()),
            legal_basis: Some(String::new()),
            flow: Some(String::new()),
            fields: Some(vec![String::new()]),
            ..Default::default()
        },
        body: None,
        body_base64: None,
        now: None,
        event: None,
    };
    let mut facts = Facts::empty(0);
    facts.record = normalise::Record {
        synthetic: Some(false),
        owner: Some(String::new()),
        id: Some(String::new()),
        object: Some(String::new()),
        country: Some(String::new()),
    };
    build(&req, &facts).unwrap_or_default()
}
