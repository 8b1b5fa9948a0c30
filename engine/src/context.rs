//! Builds the Cedar context of one decision from the request and the facts
//! the engine derived. The shape is `Portcullis::Context` in
//! `portcullis.cedarschema`; both change together.

use crate::lockout::{KeyKind, KeyState};
use crate::normalise;
use crate::request::Request;
use crate::synthetic::{Provenance, Status};
use cedar_policy::RestrictedExpression as Rx;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

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
    /// A webhook delivery.
    pub webhook: crate::webhook::WebhookFacts,
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
                kid: None,
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
            webhook: crate::webhook::WebhookFacts::none(),
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
    /// never a token, password or body. Written straight to JSON text (no
    /// `Value` tree of maps in between: building one was a fifth of a
    /// guest decision).
    pub fn audit_json(&self) -> crate::decision::FactsJson {
        crate::decision::FactsJson::of(&AuditFacts(self))
    }
}

/// A JSON object of `"key" => value` entries over a borrowed `$t`.
macro_rules! json_object {
    ($name:ident < $t:ty > | $v:ident | { $($k:literal => $e:expr),* $(,)? }) => {
        struct $name<'a>(&'a $t);
        impl serde::Serialize for $name<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                let $v = self.0;
                let mut m = s.serialize_map(None)?;
                $( m.serialize_entry($k, &$e)?; )*
                m.end()
            }
        }
    };
}

json_object!(SyntheticAudit<Provenance> |p| {
    "status" => p.status.as_str(),
    "failure" => p.failure,
    "issuer" => p.issuer,
    "dataset" => p.dataset,
    "kid" => p.kid,
});
json_object!(KeyAudit<KeyState> |k| {
    "failures" => k.failures,
    "stage" => k.stage.as_str(),
    "locked_until" => k.locked_until,
    "repeat" => k.repeat,
});
json_object!(TokenAudit<crate::oauth::TokenFacts> |t| {
    "present" => t.present,
    "valid" => t.valid,
    "failure" => t.failure,
    "issuer" => t.issuer,
    "subject" => t.subject,
    "client_id" => t.client_id,
    "scopes" => t.scopes,
    "kid" => t.kid,
});
json_object!(TransferAudit<crate::transfer::TransferFacts> |t| {
    "origin" => t.origin,
    "destination" => t.destination,
    "basis" => t.basis,
    "mechanism" => t.mechanism,
    "allowed" => t.allowed,
    "recipient" => t.recipient,
    "adequacy_as_of" => t.adequacy_as_of,
});
json_object!(RateAudit<Facts> |f| {
    "class" => f.bucket.class,
    "remaining" => f.bucket.remaining,
    "exhausted" => f.bucket.exhausted,
    "distinct_records" => f.scrape.distinct_records,
    "walk_length" => f.scrape.walk_length,
});
json_object!(JitAudit<crate::jit::JitFacts> |j| {
    "phase" => j.phase,
    "grant_id" => j.grant_id,
    "role" => j.role,
    "active" => j.active,
    "expires" => j.expires,
    "self_approval" => j.self_approval,
});
json_object!(DlpAudit<crate::dlp::ScanResult> |d| {
    "kinds" => d.kinds(),
    "count" => d.count(),
    "max_confidence" => d.max_confidence(),
    "model_weights" => d.model_weights(),
    "oversize" => d.oversize,
});
json_object!(InferenceAudit<crate::rate::InferFacts> |i| {
    "queries" => i.queries,
    "distinct_inputs" => i.distinct_inputs,
    "probes" => i.probes,
    "probe_ratio" => i.probe_ratio,
});
// Ids, statuses and counts: never the body, signature or secret.
json_object!(WebhookAudit<crate::webhook::WebhookFacts> |w| {
    "source" => w.source,
    "kind" => w.kind,
    "id" => w.id,
    "channel" => w.channel,
    "entity" => w.entity,
    "credential" => w.credential,
    "method" => w.method,
    "failure" => w.failure,
    "redelivery" => w.redelivery,
    "deliveries" => w.deliveries,
    "notifications" => w.notifications,
    "mixed_synthetic" => w.mixed_synthetic,
    "change_type" => w.change_type,
    "transaction_key" => w.transaction_key,
    "commit_number" => w.commit_number,
});

/// The lockout keys as `{"account": {...}, "account_ip": {...}, ...}`.
struct KeysAudit<'a>(&'a [(KeyKind, KeyState)]);
impl serde::Serialize for KeysAudit<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, st)| (k.as_str(), KeyAudit(st))))
    }
}

/// The audit record's `facts` object.
struct AuditFacts<'a>(&'a Facts);
impl serde::Serialize for AuditFacts<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let f = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("synthetic", &SyntheticAudit(&f.synthetic))?;
        m.serialize_entry("lockout", &KeysAudit(&f.keys))?;
        m.serialize_entry("token", &TokenAudit(&f.token))?;
        m.serialize_entry("transfer", &TransferAudit(&f.transfer))?;
        m.serialize_entry("rate", &RateAudit(f))?;
        m.serialize_entry("jit", &JitAudit(&f.jit))?;
        m.serialize_entry("dlp", &f.dlp.as_ref().map(DlpAudit))?;
        m.serialize_entry("dropped_fields", &f.dropped_fields)?;
        m.serialize_entry("inference", &InferenceAudit(&f.inference))?;
        if f.webhook.present {
            m.serialize_entry("webhook", &WebhookAudit(&f.webhook))?;
        }
        m.end()
    }
}

/// The Cedar context pairs, every attribute (benchmarks, the load-time
/// shape check).
pub fn build(req: &Request, facts: &Facts) -> Result<Vec<(String, Rx)>, String> {
    values(req, facts, &Needs::all())
        .iter()
        .map(|(k, v)| Ok((k.to_string(), v.to_rx()?)))
        .collect()
}

/// A context value before Cedar sees it: cheap to build, compare and turn
/// into a cache key; made into a Cedar expression (which Cedar then
/// evaluates, the costly part) only when Cedar must evaluate it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Bool(bool),
    Long(i64),
    Str(Cow<'a, str>),
    Ip(&'a str),
    Set(Vec<Val<'a>>),
    Rec(Vec<(&'static str, Val<'a>)>),
}

fn s(v: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(v))
}

fn st(v: &'static str) -> Val<'static> {
    Val::Str(Cow::Borrowed(v))
}

impl Val<'_> {
    /// The Cedar expression.
    pub(crate) fn to_rx(&self) -> Result<Rx, String> {
        Ok(match self {
            Val::Bool(b) => Rx::new_bool(*b),
            Val::Long(n) => Rx::new_long(*n),
            Val::Str(t) => Rx::new_string(t.to_string()),
            Val::Ip(ip) => ip_expr(ip),
            Val::Set(items) => Rx::new_set(
                items
                    .iter()
                    .map(Val::to_rx)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Val::Rec(fields) => Rx::new_record(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.to_string(), v.to_rx()?)))
                    .collect::<Result<Vec<_>, String>>()?,
            )
            .map_err(|e| e.to_string())?,
        })
    }

    /// An unambiguous byte encoding (tag, lengths), for cache keys.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Val::Bool(b) => out.push(u8::from(*b)),
            Val::Long(n) => {
                out.push(2);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Val::Str(t) => {
                out.push(3);
                encode_str(t, out);
            }
            Val::Ip(ip) => {
                out.push(4);
                encode_str(ip, out);
            }
            Val::Set(items) => {
                out.push(5);
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for i in items {
                    i.encode(out);
                }
            }
            Val::Rec(fields) => {
                out.push(6);
                out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
                for (k, v) in fields {
                    encode_str(k, out);
                    v.encode(out);
                }
            }
        }
    }

    /// Only the parts `needs` reads (records lose the fields no policy
    /// reads; anything read as a whole stays whole).
    fn prune(self, needs: &Needs) -> Self {
        if needs.all {
            return self;
        }
        match self {
            Val::Rec(fields) => Val::Rec(
                fields
                    .into_iter()
                    .filter_map(|(k, v)| needs.children.get(k).map(|n| (k, v.prune(n))))
                    .collect(),
            ),
            other => other,
        }
    }
}

pub(crate) fn encode_str(t: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(t.len() as u32).to_le_bytes());
    out.extend_from_slice(t.as_bytes());
}

/// Which parts of the context a set of policies can read: a tree of
/// attribute paths, where `all` means the whole value at that path. Found
/// once at load from the policies' conditions (every `context.a.b…` and
/// `context has a`); any other use of `context` needs all of it.
///
/// Cedar reads only what a policy names, so evaluating a set of policies
/// over the context cut down to what they name gives the same answer
/// (including errors) as over the whole context, for less building.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    all: bool,
    children: BTreeMap<String, Needs>,
}

impl Needs {
    /// The whole context.
    pub fn all() -> Needs {
        Needs {
            all: true,
            children: BTreeMap::new(),
        }
    }

    /// What `policies` read of the context.
    pub fn of<'p>(policies: impl IntoIterator<Item = &'p cedar_policy::Policy>) -> Needs {
        let mut needs = Needs::default();
        for p in policies {
            match p.to_json() {
                Ok(Value::Object(mut est)) => {
                    est.remove("annotations");
                    needs.visit(&Value::Object(est));
                }
                _ => return Needs::all(),
            }
            if needs.all {
                break;
            }
        }
        needs
    }

    /// The paths read, dotted and sorted (`*`: the whole context).
    pub fn paths(&self) -> Vec<String> {
        fn walk(n: &Needs, at: &str, out: &mut Vec<String>) {
            if n.all {
                out.push(if at.is_empty() {
                    "*".into()
                } else {
                    at.to_string()
                });
                return;
            }
            for (k, child) in &n.children {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                walk(child, &p, out);
            }
        }
        let mut out = Vec::new();
        walk(self, "", &mut out);
        out
    }

    /// Whether the top-level attribute `name` is read, and how much of it.
    fn wants(&self, name: &str) -> Option<&Needs> {
        if self.all {
            Some(self)
        } else {
            self.children.get(name)
        }
    }

    fn mark(&mut self, path: &[String]) {
        if self.all {
            return;
        }
        match path.split_first() {
            None => {
                self.all = true;
                self.children.clear();
            }
            Some((head, rest)) => self.children.entry(head.clone()).or_default().mark(rest),
        }
    }

    /// Walk an expression of the policy's JSON form (EST).
    fn visit(&mut self, expr: &Value) {
        if let Some(path) = context_path(expr) {
            self.mark(&path);
            return;
        }
        match expr {
            Value::Object(map) => {
                if let Some(Value::Object(has)) = map.get("has")
                    && map.len() == 1
                    && let (Some(left), Some(Value::String(attr))) =
                        (has.get("left"), has.get("attr"))
                    && let Some(mut path) = context_path(left)
                {
                    path.push(attr.clone());
                    self.mark(&path);
                    return;
                }
                for v in map.values() {
                    self.visit(v);
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.visit(v);
                }
            }
            _ => {}
        }
    }
}

/// `context` → `[]`, `context.a.b` → `["a", "b"]`; else None.
fn context_path(expr: &Value) -> Option<Vec<String>> {
    let Value::Object(map) = expr else {
        return None;
    };
    if map.len() != 1 {
        return None;
    }
    if map.get("Var").and_then(Value::as_str) == Some("context") {
        return Some(Vec::new());
    }
    let dot = map.get(".")?.as_object()?;
    let attr = dot.get("attr")?.as_str()?;
    let mut path = context_path(dot.get("left")?)?;
    path.push(attr.to_string());
    Some(path)
}

/// The context values `needs` reads, by top-level attribute.
pub(crate) fn values<'a>(
    req: &'a Request,
    facts: &'a Facts,
    needs: &Needs,
) -> Vec<(&'static str, Val<'a>)> {
    let c = &req.context;
    let mut pairs: Vec<(&'static str, Val<'a>)> = Vec::new();
    let mut put = |name: &'static str, make: &dyn Fn() -> Option<Val<'a>>| {
        if let Some(n) = needs.wants(name)
            && let Some(v) = make()
        {
            pairs.push((name, v.prune(n)));
        }
    };
    put("event", &|| {
        Some(st(req.event.map(|e| e.as_str()).unwrap_or("none")))
    });
    put("pathway", &|| Some(st(facts.pathway.as_str())));
    put("now", &|| Some(Val::Long(facts.now)));
    put("fields", &|| {
        Some(Val::Set(c.fields.iter().flatten().map(|f| s(f)).collect()))
    });
    put("ip", &|| c.ip.as_deref().map(Val::Ip));
    put("module", &|| c.module.as_deref().map(s));
    put("region", &|| c.region.as_deref().map(s));
    put("destination_region", &|| {
        c.destination_region.as_deref().map(s)
    });
    put("legal_basis", &|| c.legal_basis.as_deref().map(s));
    put("flow", &|| c.flow.as_deref().map(s));
    put("mtls", &|| {
        let (verified, san) = match &c.mtls {
            Some(m) => (m.verified, m.san.as_deref().unwrap_or("")),
            None => (false, ""),
        };
        Some(Val::Rec(vec![
            ("verified", Val::Bool(verified)),
            ("san", s(san)),
        ]))
    });
    put("synthetic", &|| {
        let p = &facts.synthetic;
        let text = |v: &'a Option<String>| s(v.as_deref().unwrap_or(""));
        Some(Val::Rec(vec![
            ("claimed", Val::Bool(p.status != Status::None)),
            ("verified", Val::Bool(p.status == Status::Verified)),
            ("status", st(p.status.as_str())),
            ("failure", st(p.failure.unwrap_or(""))),
            ("issuer", text(&p.issuer)),
            ("dataset", text(&p.dataset)),
            ("generator", text(&p.generator)),
            ("kid", text(&p.kid)),
        ]))
    });
    put("lockout", &|| {
        let mut lockout = key_fields(&facts.leading());
        for kind in [KeyKind::Account, KeyKind::AccountIp, KeyKind::Ip] {
            lockout.push((kind.as_str(), Val::Rec(key_fields(&facts.key(kind)))));
        }
        Some(Val::Rec(lockout))
    });
    put("record", &|| {
        let r = &facts.record;
        let mut rec = Vec::new();
        if let Some(b) = r.synthetic {
            rec.push(("synthetic", Val::Bool(b)));
        }
        for (name, v) in [
            ("owner", &r.owner),
            ("id", &r.id),
            ("object", &r.object),
            ("country", &r.country),
        ] {
            if let Some(v) = v {
                rec.push((name, s(v)));
            }
        }
        Some(Val::Rec(rec))
    });
    put("token", &|| {
        let t = &facts.token;
        Some(Val::Rec(vec![
            ("present", Val::Bool(t.present)),
            ("valid", Val::Bool(t.valid)),
            ("failure", s(&t.failure)),
            ("issuer", s(&t.issuer)),
            ("subject", s(&t.subject)),
            ("client_id", s(&t.client_id)),
            ("scopes", Val::Set(t.scopes.iter().map(|x| s(x)).collect())),
            ("expires", Val::Long(t.expires)),
            ("kid", s(&t.kid)),
        ]))
    });
    put("transfer", &|| {
        let x = &facts.transfer;
        Some(Val::Rec(vec![
            ("cross_border", Val::Bool(x.cross_border)),
            ("origin", s(&x.origin)),
            ("destination", s(&x.destination)),
            ("origin_eea", Val::Bool(x.origin_eea)),
            ("destination_eea", Val::Bool(x.destination_eea)),
            ("basis", s(&x.basis)),
            ("mechanism", s(&x.mechanism)),
            ("allowed", Val::Bool(x.allowed)),
            ("recipient", s(&x.recipient)),
        ]))
    });
    put("rate", &|| {
        let (b, sc) = (&facts.bucket, &facts.scrape);
        Some(Val::Rec(vec![
            ("class", s(&b.class)),
            ("remaining", Val::Long(b.remaining)),
            ("exhausted", Val::Bool(b.exhausted)),
            ("distinct_records", Val::Long(sc.distinct_records)),
            ("walk_length", Val::Long(sc.walk_length)),
        ]))
    });
    put("inference", &|| {
        let i = &facts.inference;
        Some(Val::Rec(vec![
            ("queries", Val::Long(i.queries)),
            ("distinct_inputs", Val::Long(i.distinct_inputs)),
            ("probes", Val::Long(i.probes)),
            ("probe_ratio", Val::Long(i.probe_ratio)),
        ]))
    });
    put("dlp", &|| {
        let empty = crate::dlp::ScanResult::default();
        let d = facts.dlp.as_ref().unwrap_or(&empty);
        Some(Val::Rec(vec![
            ("scanned", Val::Bool(facts.dlp.is_some())),
            (
                "kinds",
                Val::Set(
                    d.kinds()
                        .into_iter()
                        .map(|k| Val::Str(Cow::Owned(k)))
                        .collect(),
                ),
            ),
            ("count", Val::Long(d.count() as i64)),
            ("max_confidence", Val::Long(i64::from(d.max_confidence()))),
            ("model_weights", Val::Bool(d.model_weights())),
            ("oversize", Val::Bool(d.oversize)),
            (
                "dropped_fields",
                Val::Set(facts.dropped_fields.iter().map(|f| s(f)).collect()),
            ),
        ]))
    });
    put("jit", &|| {
        let j = &facts.jit;
        Some(Val::Rec(vec![
            (
                "phase",
                if j.phase.is_empty() {
                    st("none")
                } else {
                    s(&j.phase)
                },
            ),
            ("grant_id", s(&j.grant_id)),
            ("role", s(&j.role)),
            ("found", Val::Bool(j.found)),
            ("status", s(&j.status)),
            ("self_approval", Val::Bool(j.self_approval)),
            ("active", Val::Bool(j.active)),
            ("expires", Val::Long(j.expires)),
            ("duration", Val::Long(j.duration)),
        ]))
    });
    put("webhook", &|| {
        let w = &facts.webhook;
        Some(Val::Rec(vec![
            ("present", Val::Bool(w.present)),
            ("source", s(&w.source)),
            ("kind", s(&w.kind)),
            ("id", s(&w.id)),
            ("channel", s(&w.channel)),
            ("entity", s(&w.entity)),
            ("credential", s(&w.credential)),
            ("method", s(&w.method)),
            ("failure", s(&w.failure)),
            ("redelivery", Val::Bool(w.redelivery)),
            ("deliveries", Val::Long(w.deliveries)),
            ("notifications", Val::Long(w.notifications)),
            ("mixed_synthetic", Val::Bool(w.mixed_synthetic)),
            ("organization_id", s(&w.organization_id)),
            ("change_type", s(&w.change_type)),
            ("transaction_key", s(&w.transaction_key)),
            ("commit_number", Val::Long(w.commit_number)),
            (
                "changed_fields",
                Val::Set(w.changed_fields.iter().map(|f| s(f)).collect()),
            ),
        ]))
    });
    pairs
}

fn key_fields(k: &KeyState) -> Vec<(&'static str, Val<'static>)> {
    vec![
        ("failures", Val::Long(k.failures)),
        ("stage", st(k.stage.as_str())),
        ("locked_until", Val::Long(k.locked_until)),
        ("repeat", Val::Long(k.repeat)),
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
        body_chunks: None,
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
