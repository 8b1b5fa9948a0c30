//! HTTP → portcullis request: route rules, principal, client address, mTLS
//! peer, headers copied into the context, and the buffered body.
//!
//! Pure functions over what the filter fetched from Envoy (all request
//! headers in one host call, and a few connection properties), so they are
//! tested natively.

use crate::net;
use crate::settings::{Compiled, HeaderKind, Route, Slot};
use base64::Engine as _;
use portcullis_engine::request::{EntityRef, Event, Mtls, Request, SyntheticClaim};
use serde_json::Value;

/// The peer as the connection shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// Envoy's `source.address` (`ip:port`).
    pub source_address: Option<String>,
    /// `connection.mtls`: the peer presented a certificate the listener
    /// verified.
    pub mtls: bool,
    /// The peer certificate's URI SAN (`connection.uri_san_peer_certificate`),
    /// else its DNS SAN (`connection.dns_san_peer_certificate`).
    pub san: Option<String>,
}

/// A request mapped from HTTP, ready to be decided (after the body, if the
/// route wants it).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The request, built directly (no JSON text in between).
    pub request: Request,
    /// Whether the upstream's answer is an authentication event.
    pub login: bool,
    /// Whether the body must be buffered and added before deciding.
    pub body: bool,
}

/// Why no request could be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmapped {
    /// No route rule matches.
    NoRoute,
    /// A route matched but the request names no principal.
    NoPrincipal,
    /// The principal header is not `Type:id`.
    BadPrincipal,
    /// A header's value does not fit where the settings put it (field,
    /// message).
    BadContext(String, String),
}

/// The value of header `name` (lower case), as Envoy delivered the map.
pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

fn header_str<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    header(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// The first route rule matching `method` and `path` (query ignored), with
/// its index and the resource id it names.
pub fn route<'a>(
    config: &'a Compiled,
    method: &str,
    path: &str,
) -> Option<(usize, &'a Route, String)> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    config.routes.iter().enumerate().find_map(|(i, r)| {
        if !path.starts_with(&r.prefix) {
            return None;
        }
        if !r.methods.is_empty() && !r.methods.iter().any(|m| m == method) {
            return None;
        }
        let id = match (&r.resource.id, r.resource.id_segment) {
            (Some(id), _) => id.clone(),
            (None, Some(n)) => percent_decode(path.split('/').filter(|s| !s.is_empty()).nth(n)?),
            (None, None) => return None,
        };
        Some((i, r, id))
    })
}

/// A header value read as its rule says; None: ignore it (a non-bearer
/// `authorization`).
fn convert(raw: &str, kind: HeaderKind) -> Option<Value> {
    Some(match kind {
        HeaderKind::String => Value::String(raw.to_string()),
        HeaderKind::List => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        HeaderKind::Bool => Value::Bool(matches!(
            raw.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes"
        )),
        HeaderKind::Bearer => match raw.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Value::String(token.trim().to_string())
            }
            _ => return None,
        },
    })
}

/// Build the request for an HTTP request (headers fetched in one call).
pub fn map(
    config: &Compiled,
    headers: &[(String, Vec<u8>)],
    peer: &Peer,
) -> Result<Mapped, Unmapped> {
    let method = header_str(headers, ":method").unwrap_or("");
    let path = header_str(headers, ":path").unwrap_or("/");
    let (index, route, resource_id) = route(config, method, path).ok_or(Unmapped::NoRoute)?;

    let principal = match header_str(headers, &config.principal_header) {
        Some(p) => {
            let (kind, id) = p.split_once(':').ok_or(Unmapped::BadPrincipal)?;
            let (kind, id) = (kind.trim(), id.trim());
            if kind.is_empty() || id.is_empty() {
                return Err(Unmapped::BadPrincipal);
            }
            EntityRef {
                kind: kind.to_string(),
                id: id.to_string(),
            }
        }
        None => match (&config.settings.san_principal, peer.mtls, &peer.san) {
            (Some(rule), true, Some(san)) => EntityRef {
                kind: rule.kind.clone(),
                id: san
                    .strip_prefix(rule.strip_prefix.as_str())
                    .unwrap_or(san)
                    .to_string(),
            },
            _ => return Err(Unmapped::NoPrincipal),
        },
    };

    let mut context = config.route_context.get(index).cloned().unwrap_or_default();
    // Paths the filter does not set directly go through the context's JSON
    // form, after the direct ones (settings order, like the direct ones).
    let mut other: Vec<(&[String], Value)> = Vec::new();
    for rule in &config.headers {
        let Some(raw) = header_str(headers, &rule.name) else {
            continue;
        };
        let Some(value) = convert(raw, rule.kind) else {
            continue;
        };
        match (&rule.slot, value) {
            (Slot::Text(f), Value::String(v)) => *f.of(&mut context) = Some(v),
            (Slot::Fields, Value::Array(items)) => {
                context.fields = Some(
                    items
                        .into_iter()
                        .filter_map(|v| match v {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect(),
                )
            }
            (Slot::SyntheticMarker, Value::Bool(b)) => {
                context
                    .synthetic
                    .get_or_insert_with(SyntheticClaim::default)
                    .marker = b
            }
            (Slot::SyntheticProvenance, Value::String(v)) => {
                context
                    .synthetic
                    .get_or_insert_with(SyntheticClaim::default)
                    .provenance = Some(v)
            }
            (Slot::Path(segs), value) => other.push((segs, value)),
            (_, value) => {
                return Err(Unmapped::BadContext(
                    rule.name.clone(),
                    format!("unexpected value {value}"),
                ));
            }
        }
    }
    if !other.is_empty() {
        let mut doc = match serde_json::to_value(&context) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        doc.retain(|_, v| !v.is_null());
        for (segs, value) in other {
            crate::settings::insert_path(&mut doc, segs, value);
        }
        context = serde_json::from_value(Value::Object(doc))
            .map_err(|e| Unmapped::BadContext("context".into(), e.to_string()))?;
    }
    let peer_ip = peer.source_address.as_deref().and_then(net::peer_ip);
    if let Some(ip) = net::client_ip(
        peer_ip,
        header_str(headers, "x-forwarded-for"),
        &config.trusted,
    ) {
        context.ip = Some(ip.to_string());
    }
    if config.settings.mtls && peer.mtls {
        context.mtls = Some(Mtls {
            verified: true,
            san: peer.san.clone(),
        });
    }

    let request = Request {
        principal,
        action: route.action.clone(),
        resource: EntityRef {
            kind: route.resource.kind.clone(),
            id: resource_id,
        },
        context,
        body: None,
        body_base64: None,
        body_chunks: None,
        now: None,
        event: None,
    };
    Ok(Mapped {
        request,
        login: route.login,
        body: route.body,
    })
}

/// Add the buffered body: text when it is UTF-8, else base64. Returns
/// whether it went as text.
pub fn add_body(request: &mut Request, body: &[u8]) -> bool {
    match std::str::from_utf8(body) {
        Ok(text) => {
            request.body = Some(text.to_string());
            request.body_base64 = None;
            true
        }
        Err(_) => {
            request.body = None;
            request.body_base64 = Some(base64::engine::general_purpose::STANDARD.encode(body));
            false
        }
    }
}

/// The body to send upstream for a `redact` decision: the engine's redacted
/// body (text, or base64 when the body went as `body_base64`). An error
/// means the body cannot be rewritten, and the request must not pass.
pub fn redacted_body(
    decision: &portcullis_engine::Decision,
    body_was_text: bool,
) -> Result<Vec<u8>, String> {
    let Some(redacted) = &decision.redacted_body else {
        return Err("the decision is redact but carries no redacted body".into());
    };
    if body_was_text {
        Ok(redacted.clone().into_bytes())
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(redacted)
            .map_err(|_| "the redacted body is not base64".to_string())
    }
}

/// The same request as an observed event (for a login route's answer).
pub fn as_event(request: &Request, event: Event) -> Request {
    let mut r = request.clone();
    r.body = None;
    r.body_base64 = None;
    r.event = Some(event);
    r
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(0);
        if b == b'%'
            && let Some(h) = bytes.get(i + 1..i + 3)
            && let Ok(h) = std::str::from_utf8(h)
            && let Ok(v) = u8::from_str_radix(h, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use serde_json::json;

    /// The request's JSON form without nulls.
    fn doc(r: &Request) -> Value {
        fn strip(v: Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k, strip(v)))
                        .collect(),
                ),
                other => other,
            }
        }
        strip(serde_json::to_value(r).unwrap())
    }

    fn config() -> Compiled {
        let s: Settings = serde_json::from_value(json!({
            "principal_header": "X-Portcullis-Principal",
            "san_principal": {"type": "Service", "strip_prefix": "spiffe://crm/"},
            "trusted_proxies": ["10.0.0.0/8"],
            "routes": [
                {"prefix": "/login", "methods": ["post"], "action": "login",
                 "resource": {"type": "App", "id": "sales-cloud"}, "login": true,
                 "context": {"module": "sales_cloud"}},
                {"prefix": "/api/records/", "methods": ["GET"], "action": "read",
                 "resource": {"type": "Record", "id_segment": 2}},
                {"prefix": "/api/export", "action": "export",
                 "resource": {"type": "App", "id": "sales-cloud"}, "body": true}
            ],
            "context_headers": {
                "x-crm-region": "context.region",
                "x-crm-fields": {"to": "context.fields", "as": "list"},
                "authorization": {"to": "context.token", "as": "bearer"},
                "x-synthetic": {"to": "context.synthetic.marker", "as": "bool"}
            }
        }))
        .unwrap();
        s.compile().unwrap()
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn peer(addr: &str) -> Peer {
        Peer {
            source_address: Some(addr.into()),
            ..Peer::default()
        }
    }

    #[test]
    fn maps_a_login() {
        let c = config();
        let headers = h(&[
            (":method", "POST"),
            (":path", "/login?next=/"),
            (":authority", "crm.example"),
            ("x-portcullis-principal", "User:alice@example.com"),
            ("x-crm-region", "eu-central"),
            ("authorization", "Bearer abc.def.ghi"),
            ("x-synthetic", "yes"),
        ]);
        let m = map(&c, &headers, &peer("203.0.113.7:4444")).unwrap();
        assert!(m.login && !m.body);
        assert_eq!(
            doc(&m.request),
            json!({
                "principal": {"type": "User", "id": "alice@example.com"},
                "action": "login",
                "resource": {"type": "App", "id": "sales-cloud"},
                "context": {"module": "sales_cloud", "region": "eu-central", "token": "abc.def.ghi",
                            "synthetic": {"marker": true}, "ip": "203.0.113.7"}
            })
        );
    }

    #[test]
    fn resource_from_a_segment_and_methods() {
        let c = config();
        let base = [("x-portcullis-principal", "User:bob"), (":method", "GET")];
        let mut hs = h(&base);
        hs.extend(h(&[(":path", "/api/records/001%41BC?x=1")]));
        let m = map(&c, &hs, &peer("10.0.0.1:1")).unwrap();
        assert_eq!(
            doc(&m.request)["resource"],
            json!({"type": "Record", "id": "001ABC"})
        );
        // The wrong method, or no id segment, matches no rule.
        let hs = h(&[
            (":method", "DELETE"),
            (":path", "/api/records/1"),
            ("x-portcullis-principal", "User:bob"),
        ]);
        assert_eq!(map(&c, &hs, &peer("10.0.0.1:1")), Err(Unmapped::NoRoute));
        let hs = h(&[
            (":method", "GET"),
            (":path", "/api/records/"),
            ("x-portcullis-principal", "User:bob"),
        ]);
        assert_eq!(map(&c, &hs, &peer("10.0.0.1:1")), Err(Unmapped::NoRoute));
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let c = config();
        let hs = h(&[
            (":method", "GET"),
            (":path", "/api/records/1"),
            ("x-portcullis-principal", "User:bob"),
            ("x-forwarded-for", "6.6.6.6, 198.51.100.9"),
        ]);
        let m = map(&c, &hs, &peer("10.0.0.1:1")).unwrap();
        assert_eq!(doc(&m.request)["context"]["ip"], "198.51.100.9");
        let m = map(&c, &hs, &peer("192.0.2.1:1")).unwrap();
        assert_eq!(
            doc(&m.request)["context"]["ip"],
            "192.0.2.1",
            "an untrusted peer's header is ignored"
        );
    }

    #[test]
    fn principal_from_the_mtls_peer_and_lists() {
        let c = config();
        let hs = h(&[
            (":method", "POST"),
            (":path", "/api/export"),
            ("x-crm-fields", "Name, SSN__c,,"),
        ]);
        assert_eq!(
            map(&c, &hs, &peer("10.0.0.1:1")),
            Err(Unmapped::NoPrincipal)
        );
        let p = Peer {
            source_address: Some("[::1]:9".into()),
            mtls: true,
            san: Some("spiffe://crm/etl".into()),
        };
        let mut m = map(&c, &hs, &p).unwrap();
        assert!(m.body);
        assert_eq!(
            doc(&m.request)["principal"],
            json!({"type": "Service", "id": "etl"})
        );
        assert_eq!(
            doc(&m.request)["context"]["fields"],
            json!(["Name", "SSN__c"])
        );
        assert_eq!(
            doc(&m.request)["context"]["mtls"],
            json!({"verified": true, "san": "spiffe://crm/etl"})
        );
        assert_eq!(doc(&m.request)["context"]["ip"], "::1");
        assert!(add_body(&mut m.request, b"hello"));
        assert_eq!(doc(&m.request)["body"], "hello");
        assert!(!add_body(&mut m.request, &[0xff, 0x00]));
        assert_eq!(doc(&m.request)["body_base64"], "/wA=");
        let e = doc(&as_event(&m.request, Event::AuthFailure));
        assert_eq!(e["event"], "auth_failure");
        assert!(e.get("body").is_none() && e.get("body_base64").is_none());
        let hs = h(&[
            (":method", "POST"),
            (":path", "/api/export"),
            ("x-portcullis-principal", "nocolon"),
        ]);
        assert_eq!(map(&c, &hs, &p), Err(Unmapped::BadPrincipal));
    }

    #[test]
    fn redacted_bodies() {
        let mut d = portcullis_engine::Decision::fault("x", String::new(), None, "");
        assert!(
            redacted_body(&d, true).is_err(),
            "redact without a body to send fails closed"
        );
        d.redacted_body = Some("a ***".into());
        assert_eq!(redacted_body(&d, true).unwrap(), b"a ***");
        d.redacted_body = Some("/wA=".into());
        assert_eq!(redacted_body(&d, false).unwrap(), [0xff, 0x00]);
        d.redacted_body = Some("%%".into());
        assert!(redacted_body(&d, false).is_err());
    }

    #[test]
    fn settings_refuse_headers_that_forge_connection_facts() {
        let bad: Settings =
            serde_json::from_value(json!({"context_headers": {"x-ip": "context.ip"}})).unwrap();
        assert!(bad.compile().is_err());
        let bad: Settings =
            serde_json::from_value(json!({"context_headers": {"x-p": "principal.id"}})).unwrap();
        assert!(bad.compile().is_err());
        let bad: Settings = serde_json::from_value(
            json!({"routes": [{"prefix": "/", "action": "read", "resource": {"type": "Record"}}]}),
        )
        .unwrap();
        assert!(bad.compile().is_err());
        assert!(
            serde_json::from_value::<Settings>(json!({"trust_mod": true})).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn other_context_paths_and_their_checks() {
        let s: Settings = serde_json::from_value(json!({
            "routes": [{"prefix": "/r/", "action": "read",
                        "resource": {"type": "Record", "id_segment": 1},
                        "context": {"module": "sales_cloud", "jit": {"role": "admin"}}}],
            "context_headers": {
                "x-owner": "context.record.OwnerId",
                "x-jit-reason": "context.jit.reason",
                "x-crm-module": "context.module"
            }
        }))
        .unwrap();
        let c = s.compile().unwrap();
        let hs = h(&[
            (":method", "GET"),
            (":path", "/r/001"),
            ("x-portcullis-principal", "User:bob"),
            ("x-owner", "005A"),
            ("x-jit-reason", "incident 7"),
            ("x-crm-module", "service_cloud"),
        ]);
        let m = map(&c, &hs, &peer("192.0.2.1:1")).unwrap();
        assert_eq!(
            doc(&m.request)["context"],
            json!({"module": "service_cloud", "record": {"OwnerId": "005A"},
                   "jit": {"role": "admin", "reason": "incident 7"}, "ip": "192.0.2.1"})
        );
        // Paths that do not fit the request contract are refused at configure time.
        for bad in [
            json!({"context_headers": {"x-f": "context.fields"}}),
            json!({"context_headers": {"x-f": "context.nonsense"}}),
            json!({"context_headers": {"x-f": {"to": "context.module", "as": "bool"}}}),
            json!({"routes": [{"prefix": "/", "action": "read",
                               "resource": {"type": "App", "id": "a"}, "context": {"modul": "x"}}]}),
        ] {
            let s: Settings = serde_json::from_value(bad.clone()).unwrap();
            assert!(s.compile().is_err(), "{bad}");
        }
    }
}
