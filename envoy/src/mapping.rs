//! HTTP → portcullis request: route rules, principal, client address, mTLS
//! peer, headers copied into the context, and the buffered body.
//!
//! Pure functions over what the filter fetched from Envoy (all request
//! headers in one host call, and a few connection properties), so they are
//! tested natively.

use crate::net;
use crate::settings::{Compiled, HeaderKind, Route};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The peer as the connection shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// Envoy's `source.address` (`ip:port`).
    pub source_address: Option<String>,
    /// `connection.mtls`: the peer presented a certificate the listener
    /// verified.
    pub mtls: bool,
    /// `connection.uri_san_peer_certificate`.
    pub san: Option<String>,
}

/// A request mapped from HTTP, ready to be decided (after the body, if the
/// route wants it).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The request document (an object).
    pub request: Map<String, Value>,
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
/// the resource id it names.
pub fn route<'a>(config: &'a Compiled, method: &str, path: &str) -> Option<(&'a Route, String)> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    config.routes.iter().find_map(|r| {
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
        Some((r, id))
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
    let (route, resource_id) = route(config, method, path).ok_or(Unmapped::NoRoute)?;

    let principal = match header_str(headers, &config.principal_header) {
        Some(p) => {
            let (kind, id) = p.split_once(':').ok_or(Unmapped::BadPrincipal)?;
            let (kind, id) = (kind.trim(), id.trim());
            if kind.is_empty() || id.is_empty() {
                return Err(Unmapped::BadPrincipal);
            }
            json!({"type": kind, "id": id})
        }
        None => match (&config.settings.san_principal, peer.mtls, &peer.san) {
            (Some(rule), true, Some(san)) => {
                let id = san.strip_prefix(rule.strip_prefix.as_str()).unwrap_or(san);
                json!({"type": rule.kind, "id": id})
            }
            _ => return Err(Unmapped::NoPrincipal),
        },
    };

    let mut context = route.context.clone();
    for (name, segs, kind) in &config.headers {
        let Some(raw) = header_str(headers, name) else {
            continue;
        };
        let value = match kind {
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
                _ => continue,
            },
        };
        insert_path(&mut context, segs, value);
    }
    let peer_ip = peer.source_address.as_deref().and_then(net::peer_ip);
    if let Some(ip) = net::client_ip(
        peer_ip,
        header_str(headers, "x-forwarded-for"),
        &config.trusted,
    ) {
        context.insert("ip".into(), Value::String(ip.to_string()));
    }
    if config.settings.mtls && peer.mtls {
        let mut m = Map::new();
        m.insert("verified".into(), Value::Bool(true));
        if let Some(san) = &peer.san {
            m.insert("san".into(), Value::String(san.clone()));
        }
        context.insert("mtls".into(), Value::Object(m));
    }

    let mut request = Map::new();
    request.insert("principal".into(), principal);
    request.insert("action".into(), Value::String(route.action.clone()));
    request.insert(
        "resource".into(),
        json!({"type": route.resource.kind, "id": resource_id}),
    );
    if !context.is_empty() {
        request.insert("context".into(), Value::Object(context));
    }
    Ok(Mapped {
        request,
        login: route.login,
        body: route.body,
    })
}

/// Add the buffered body: text when it is UTF-8, else base64. Returns
/// whether it went as text.
pub fn add_body(request: &mut Map<String, Value>, body: &[u8]) -> bool {
    match std::str::from_utf8(body) {
        Ok(text) => {
            request.insert("body".into(), Value::String(text.to_string()));
            true
        }
        Err(_) => {
            request.insert(
                "body_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            );
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
pub fn as_event(request: &Map<String, Value>, event: &str) -> String {
    let mut r = request.clone();
    r.remove("body");
    r.remove("body_base64");
    r.insert("event".into(), Value::String(event.to_string()));
    Value::Object(r).to_string()
}

fn insert_path(map: &mut Map<String, Value>, segs: &[String], value: Value) {
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = map;
    for s in parents {
        let slot = cur
            .entry(s.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else { return };
        cur = next;
    }
    cur.insert(last.clone(), value);
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
            Value::Object(m.request),
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
            m.request["resource"],
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
        assert_eq!(m.request["context"]["ip"], "198.51.100.9");
        let m = map(&c, &hs, &peer("192.0.2.1:1")).unwrap();
        assert_eq!(
            m.request["context"]["ip"], "192.0.2.1",
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
            m.request["principal"],
            json!({"type": "Service", "id": "etl"})
        );
        assert_eq!(m.request["context"]["fields"], json!(["Name", "SSN__c"]));
        assert_eq!(
            m.request["context"]["mtls"],
            json!({"verified": true, "san": "spiffe://crm/etl"})
        );
        assert_eq!(m.request["context"]["ip"], "::1");
        assert!(add_body(&mut m.request, b"hello"));
        assert_eq!(m.request["body"], "hello");
        assert!(!add_body(&mut m.request, &[0xff, 0x00]));
        assert_eq!(m.request["body_base64"], "/wA=");
        let e: Value = serde_json::from_str(&as_event(&m.request, "auth_failure")).unwrap();
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
}
