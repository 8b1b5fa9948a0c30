//! The plugin configuration: a packed bundle, optionally wrapped with the
//! filter's settings.
//!
//! Two shapes are accepted:
//!
//! ```json
//! {"format": "portcullis-bundle/1", "name": …, "files": {…}}          // packed alone: default settings
//! {"bundle": {"format": "portcullis-bundle/1", …}, "settings": {…}}  // packed + settings
//! ```
//!
//! Everything here is parsed once per `on_configure`; a request only looks
//! things up.

use crate::net::Cidr;
use portcullis_engine::bundle::Packed;
use portcullis_engine::request::RequestContext;
use portcullis_engine::{Bundle, BundleProblem};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// How the filter maps HTTP onto portcullis requests, and what it answers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Request header naming the principal as `Type:id`
    /// (`User:alice@example.com`). It must be set by something the gateway
    /// trusts (an authentication filter before this one), never passed
    /// through from clients.
    pub principal_header: String,
    /// When the principal header is absent and the peer presented a verified
    /// mTLS certificate, the principal is its URI SAN as this entity type.
    pub san_principal: Option<SanPrincipal>,
    /// Peers (IP or CIDR) whose `x-forwarded-for` is believed: the client
    /// address is the right-most address in it that is not itself trusted.
    /// Empty: the downstream peer address is the client address.
    pub trusted_proxies: Vec<String>,
    /// Route rules, first match wins.
    pub routes: Vec<Route>,
    /// What to do with a request no route matches.
    pub unmatched: Unmatched,
    /// Request headers copied into the request's `context`.
    pub context_headers: BTreeMap<String, HeaderTarget>,
    /// Read the peer's mTLS state (`connection.mtls`,
    /// `connection.uri_san_peer_certificate`) into `context.mtls`.
    pub mtls: bool,
    /// Test/trust mode, off by default: a request header
    /// `x-portcullis-request` carries the whole request JSON (base64) and the
    /// decision is returned in the response header `x-portcullis-decision`
    /// (base64). Never enable it where clients reach the gateway directly.
    pub trust_mode: bool,
    /// Realm named in the `www-authenticate` challenge of a 401.
    pub realm: String,
    /// Run the bundle's own cases at configure time and refuse the bundle if
    /// any fails (a bundle is accepted only whole).
    pub run_cases: bool,
    /// Which decisions are logged with their audit record.
    pub log: LogDecisions,
    /// Largest request body buffered for routes with `body: true`; a larger
    /// body is refused (413) rather than decided on a part of it.
    pub max_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            principal_header: "x-portcullis-principal".into(),
            san_principal: None,
            trusted_proxies: Vec::new(),
            routes: Vec::new(),
            unmatched: Unmatched::Deny,
            context_headers: BTreeMap::new(),
            mtls: true,
            trust_mode: false,
            realm: "portcullis".into(),
            run_cases: true,
            log: LogDecisions::Refused,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The principal taken from an mTLS peer certificate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanPrincipal {
    /// Entity type, e.g. `Service`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Prefix removed from the SAN to form the id
    /// (`spiffe://crm/` turns `spiffe://crm/etl` into `etl`).
    #[serde(default)]
    pub strip_prefix: String,
}

/// What happens to a request no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// 403: nothing passes that the policies were not asked about.
    Deny,
    /// Pass through undecided (routes the bundle does not govern).
    Allow,
}

/// Which decisions are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogDecisions {
    /// None.
    None,
    /// Refused decisions (not allowed), with their audit record.
    Refused,
    /// Every decision, with its audit record.
    All,
}

/// One route rule: path prefix and methods → action and resource.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Path prefix (`/api/records/`); the query string is ignored.
    pub prefix: String,
    /// Methods this rule applies to; empty: any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The portcullis action (`login`, `read` …).
    pub action: String,
    /// The resource.
    pub resource: ResourceRule,
    /// A login route: the upstream's answer is an authentication event for
    /// the principal (401/403 → `auth_failure`, 2xx → `auth_success`).
    #[serde(default)]
    pub login: bool,
    /// Buffer the request body and decide with it (DLP).
    #[serde(default)]
    pub body: bool,
    /// Fixed context fields for this route (`{"module": "sales_cloud"}`).
    #[serde(default)]
    pub context: serde_json::Map<String, Value>,
}

/// How a route names its resource.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRule {
    /// Entity type (`Record`, `App` …).
    #[serde(rename = "type")]
    pub kind: String,
    /// A fixed id.
    #[serde(default)]
    pub id: Option<String>,
    /// The id is this path segment (0-based over the non-empty segments:
    /// in `/api/records/001x`, segment 2 is `001x`). A path without it does
    /// not match the rule.
    #[serde(default)]
    pub id_segment: Option<usize>,
}

/// Where a header's value goes in the request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum HeaderTarget {
    /// A dotted path under `context` (`context.module`), as a string.
    Path(String),
    /// A dotted path with a conversion.
    Full {
        /// Dotted path under `context`.
        to: String,
        /// How the header value is read.
        #[serde(default, rename = "as")]
        kind: HeaderKind,
    },
}

/// How a header value is converted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderKind {
    /// As given.
    #[default]
    String,
    /// Comma-separated list of strings.
    List,
    /// `true`/`1`/`yes` → true, anything else false.
    Bool,
    /// `Bearer <token>` → `<token>` (anything else is ignored).
    Bearer,
}

impl HeaderTarget {
    /// Dotted path and conversion.
    pub fn parts(&self) -> (&str, HeaderKind) {
        match self {
            HeaderTarget::Path(p) => (p, HeaderKind::String),
            HeaderTarget::Full { to, kind } => (to, *kind),
        }
    }
}

/// Where a header's value lands in the request context: the fields the
/// filter sets directly, or any other path (set through the context's JSON
/// form, checked at configure time to fit the request contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// `context.module`, `region`, `destination_region`, `legal_basis`,
    /// `flow`, `recipient` or `token` (a string).
    Text(TextField),
    /// `context.fields` (a list).
    Fields,
    /// `context.synthetic.marker` (a bool).
    SyntheticMarker,
    /// `context.synthetic.provenance` (a string).
    SyntheticProvenance,
    /// Any other path under `context` (segments after `context`).
    Path(Vec<String>),
}

/// The string fields of the request context a header can set directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextField {
    /// `context.module`.
    Module,
    /// `context.region`.
    Region,
    /// `context.destination_region`.
    DestinationRegion,
    /// `context.legal_basis`.
    LegalBasis,
    /// `context.flow`.
    Flow,
    /// `context.recipient`.
    Recipient,
    /// `context.token`.
    Token,
}

impl TextField {
    /// The field of `c` this names.
    pub fn of(self, c: &mut RequestContext) -> &mut Option<String> {
        match self {
            TextField::Module => &mut c.module,
            TextField::Region => &mut c.region,
            TextField::DestinationRegion => &mut c.destination_region,
            TextField::LegalBasis => &mut c.legal_basis,
            TextField::Flow => &mut c.flow,
            TextField::Recipient => &mut c.recipient,
            TextField::Token => &mut c.token,
        }
    }
}

impl Slot {
    fn of(segs: &[String], kind: HeaderKind) -> Slot {
        let text = matches!(kind, HeaderKind::String | HeaderKind::Bearer);
        let segs_str: Vec<&str> = segs.iter().map(String::as_str).collect();
        match (segs_str.as_slice(), text) {
            (["module"], true) => Slot::Text(TextField::Module),
            (["region"], true) => Slot::Text(TextField::Region),
            (["destination_region"], true) => Slot::Text(TextField::DestinationRegion),
            (["legal_basis"], true) => Slot::Text(TextField::LegalBasis),
            (["flow"], true) => Slot::Text(TextField::Flow),
            (["recipient"], true) => Slot::Text(TextField::Recipient),
            (["token"], true) => Slot::Text(TextField::Token),
            (["fields"], false) if kind == HeaderKind::List => Slot::Fields,
            (["synthetic", "marker"], false) if kind == HeaderKind::Bool => Slot::SyntheticMarker,
            (["synthetic", "provenance"], true) => Slot::SyntheticProvenance,
            _ => Slot::Path(segs.to_vec()),
        }
    }
}

/// One `context_headers` entry, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// Lower-case header name.
    pub name: String,
    /// Where it goes.
    pub slot: Slot,
    /// How its value is read.
    pub kind: HeaderKind,
}

/// Settings checked and compiled for lookups per request.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The settings as given.
    pub settings: Settings,
    /// Parsed `trusted_proxies`.
    pub trusted: Vec<Cidr>,
    /// `context_headers`, compiled.
    pub headers: Vec<HeaderRule>,
    /// Routes' methods upper-cased.
    pub routes: Vec<Route>,
    /// Each route's fixed `context` as a request context (same order as
    /// `routes`).
    pub route_context: Vec<RequestContext>,
    /// Lower-cased principal header.
    pub principal_header: String,
}

/// A configuration ready to serve: the bundle and compiled settings.
#[derive(Debug)]
pub struct Loaded {
    /// The checked bundle.
    pub bundle: Bundle,
    /// The settings.
    pub config: Compiled,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The configuration document itself (not JSON, unknown keys, bad settings).
    Config(String),
    /// The bundle was refused by the engine.
    Bundle(Vec<BundleProblem>),
    /// Cases of the bundle fail.
    Cases(Vec<String>),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Config(m) => write!(f, "configuration refused: {m}"),
            ConfigError::Bundle(problems) => {
                write!(f, "bundle refused ({} problem(s))", problems.len())?;
                for p in problems.iter().take(20) {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
            ConfigError::Cases(failures) => {
                write!(f, "bundle refused: {} case failure(s)", failures.len())?;
                for c in failures.iter().take(20) {
                    write!(f, "\n  {c}")?;
                }
                Ok(())
            }
        }
    }
}

/// Context fields a header may not set: facts the engine derives, or the
/// filter's own.
const RESERVED_CONTEXT: [&str; 2] = ["ip", "mtls"];

impl Settings {
    /// Check the settings and compile them for per-request lookups.
    pub fn compile(self) -> Result<Compiled, ConfigError> {
        let mut trusted = Vec::new();
        for p in &self.trusted_proxies {
            trusted.push(Cidr::parse(p).ok_or_else(|| {
                ConfigError::Config(format!(
                    "settings.trusted_proxies: `{p}` is not an IP address or CIDR"
                ))
            })?);
        }
        let mut headers = Vec::new();
        for (name, target) in &self.context_headers {
            let (path, kind) = target.parts();
            let mut segs = path.split('.');
            let (Some("context"), Some(first)) = (segs.next(), segs.clone().next()) else {
                return Err(ConfigError::Config(format!(
                    "settings.context_headers.{name}: target `{path}` must be a path under `context` (e.g. `context.module`)"
                )));
            };
            if RESERVED_CONTEXT.contains(&first) {
                return Err(ConfigError::Config(format!(
                    "settings.context_headers.{name}: `context.{first}` is set by the filter from the connection, not from a header"
                )));
            }
            let segs: Vec<String> = segs.map(str::to_string).collect();
            if segs.iter().any(String::is_empty) {
                return Err(ConfigError::Config(format!(
                    "settings.context_headers.{name}: empty segment in `{path}`"
                )));
            }
            // The path must fit the request contract for values of its kind,
            // so no request can fail for it later.
            let probe = match kind {
                HeaderKind::String | HeaderKind::Bearer => Value::String("x".into()),
                HeaderKind::List => Value::Array(vec![Value::String("x".into())]),
                HeaderKind::Bool => Value::Bool(true),
            };
            let mut doc = serde_json::Map::new();
            insert_path(&mut doc, &segs, probe);
            if let Err(e) = serde_json::from_value::<RequestContext>(Value::Object(doc)) {
                return Err(ConfigError::Config(format!(
                    "settings.context_headers.{name}: `{path}` does not take a {kind:?} value in the request contract: {e}"
                )));
            }
            headers.push(HeaderRule {
                name: name.to_ascii_lowercase(),
                slot: Slot::of(&segs, kind),
                kind,
            });
        }
        let mut routes = self.routes.clone();
        for (i, r) in routes.iter_mut().enumerate() {
            if !r.prefix.starts_with('/') {
                return Err(ConfigError::Config(format!(
                    "settings.routes[{i}].prefix `{}` must start with `/`",
                    r.prefix
                )));
            }
            if r.resource.id.is_some() == r.resource.id_segment.is_some() {
                return Err(ConfigError::Config(format!(
                    "settings.routes[{i}].resource: give exactly one of `id` and `id_segment`"
                )));
            }
            for k in r.context.keys() {
                if RESERVED_CONTEXT.contains(&k.as_str()) {
                    return Err(ConfigError::Config(format!(
                        "settings.routes[{i}].context.{k} is set by the filter from the connection"
                    )));
                }
            }
            for m in r.methods.iter_mut() {
                *m = m.to_ascii_uppercase();
            }
        }
        let mut route_context = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            route_context.push(
                serde_json::from_value::<RequestContext>(Value::Object(r.context.clone()))
                    .map_err(|e| {
                        ConfigError::Config(format!(
                            "settings.routes[{i}].context does not fit the request contract: {e}"
                        ))
                    })?,
            );
        }
        if self.principal_header.is_empty() {
            return Err(ConfigError::Config(
                "settings.principal_header is empty".into(),
            ));
        }
        let principal_header = self.principal_header.to_ascii_lowercase();
        Ok(Compiled {
            settings: self,
            trusted,
            headers,
            routes,
            route_context,
            principal_header,
        })
    }
}

/// Parse a plugin configuration, load its bundle and run its cases (when
/// `run_cases`): [`load_unchecked`] then [`check_cases`].
pub fn load(config: &[u8]) -> Result<Loaded, ConfigError> {
    let loaded = load_unchecked(config)?;
    if loaded.config.settings.run_cases {
        check_cases(&loaded.bundle)?;
    }
    Ok(loaded)
}

/// Parse a plugin configuration and load (parse, validate) its bundle,
/// without running its cases. Once per configure, never per request.
pub fn load_unchecked(config: &[u8]) -> Result<Loaded, ConfigError> {
    let text =
        std::str::from_utf8(config).map_err(|e| ConfigError::Config(format!("not UTF-8: {e}")))?;
    let doc: Value =
        serde_json::from_str(text).map_err(|e| ConfigError::Config(format!("not JSON: {e}")))?;
    let Value::Object(mut top) = doc else {
        return Err(ConfigError::Config(
            "expected a JSON object (a packed bundle, or {\"bundle\": …, \"settings\": …})".into(),
        ));
    };
    let (bundle_text, settings) = if top.contains_key("format") {
        (text.to_string(), Settings::default())
    } else {
        if let Some(k) = top.keys().find(|k| *k != "bundle" && *k != "settings") {
            return Err(ConfigError::Config(format!(
                "unknown key `{k}` (expected `bundle` and `settings`)"
            )));
        }
        let bundle = top
            .remove("bundle")
            .ok_or_else(|| ConfigError::Config("no `bundle`".into()))?;
        let settings = match top.remove("settings") {
            None => Settings::default(),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| ConfigError::Config(format!("settings: {e}")))?,
        };
        let text = match bundle {
            // A bundle given as a JSON string holding the packed document.
            Value::String(s) => s,
            other => other.to_string(),
        };
        (text, settings)
    };
    let config = settings.compile()?;
    let bundle = Packed::load(&bundle_text).map_err(ConfigError::Bundle)?;
    Ok(Loaded { bundle, config })
}

/// Run the bundle's own cases (each from empty memory state); any failure
/// refuses the bundle.
pub fn check_cases(bundle: &Bundle) -> Result<(), ConfigError> {
    let report = bundle.run_cases();
    if report.failed == 0 {
        return Ok(());
    }
    let failures = report
        .cases
        .iter()
        .filter(|c| !c.passed)
        .flat_map(|c| {
            c.failures
                .iter()
                .map(move |f| format!("{} :: {} step {}: {}", c.file, c.name, f.step, f.message))
        })
        .collect();
    Err(ConfigError::Cases(failures))
}

/// Set `value` at `segs` under `map`, creating (or replacing non-object)
/// intermediate objects.
pub fn insert_path(map: &mut serde_json::Map<String, Value>, segs: &[String], value: Value) {
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = map;
    for s in parents {
        let slot = cur
            .entry(s.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(serde_json::Map::new());
        }
        let Value::Object(next) = slot else { return };
        cur = next;
    }
    cur.insert(last.clone(), value);
}
