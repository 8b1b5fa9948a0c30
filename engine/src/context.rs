//! Builds the Cedar context of one decision from the request and the facts
//! the engine derived. The shape is `Portcullis::Context` in
//! `portcullis.cedarschema`; both change together.

use crate::request::Request;
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

/// Synthetic-data status derived from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticStatus {
    /// No claim.
    None,
    /// Claimed and proven.
    Verified,
    /// Claimed, not proven.
    Unverified,
}

impl SyntheticStatus {
    fn as_str(self) -> &'static str {
        match self {
            SyntheticStatus::None => "none",
            SyntheticStatus::Verified => "verified",
            SyntheticStatus::Unverified => "unverified",
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
    /// Synthetic status.
    pub synthetic: SyntheticStatus,
    /// Failures on the pathway inside the window (including this event).
    pub failures: i64,
    /// When the failure window ends, seconds since the epoch (0: no window).
    pub window_ends: i64,
}

impl Facts {
    /// Derived facts as JSON, for the audit record (no secrets: counts only).
    pub fn audit_json(&self) -> Value {
        json!({
            "synthetic": self.synthetic.as_str(),
            "lockout": { "failures": self.failures },
        })
    }
}

/// Does the request claim synthetic data (marker, or a record flag)?
pub fn claims_synthetic(req: &Request) -> bool {
    req.context
        .synthetic
        .as_ref()
        .is_some_and(|s| s.marker || s.provenance.is_some())
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
        record([
            ("verified", Rx::new_bool(mtls.verified)),
            ("san", Rx::new_string(mtls.san.unwrap_or_default())),
        ])?,
    ));
    pairs.push((
        "synthetic".to_string(),
        record([
            (
                "claimed",
                Rx::new_bool(facts.synthetic != SyntheticStatus::None),
            ),
            (
                "verified",
                Rx::new_bool(facts.synthetic == SyntheticStatus::Verified),
            ),
            (
                "status",
                Rx::new_string(facts.synthetic.as_str().to_string()),
            ),
        ])?,
    ));
    pairs.push((
        "lockout".to_string(),
        record([("failures", Rx::new_long(facts.failures))])?,
    ));
    Ok(pairs)
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

fn record<const N: usize>(fields: [(&str, Rx); N]) -> Result<Rx, String> {
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
    let facts = Facts {
        now: 0,
        pathway: Pathway::Authentic,
        synthetic: SyntheticStatus::None,
        failures: 0,
        window_ends: 0,
    };
    build(&req, &facts).unwrap_or_default()
}
