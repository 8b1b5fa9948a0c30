//! Field minimisation: a data flow carries only the fields its purpose
//! allows.

use super::config::DlpConfig;
use super::json::{self, Node};

/// What to do with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Allowed whole.
    Keep,
    /// Only some of its sub-fields are allowed (`Account.Name`).
    Descend,
    /// Not allowed.
    Drop,
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len()
        && s.as_bytes()
            .get(..prefix.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// `path` is a field name, dotted for related records (`Account.Name`).
fn verdict(allowed: &[String], path: &str) -> Verdict {
    let mut descend = false;
    let below = |pattern: &str| {
        pattern.len() > path.len()
            && starts_with_ci(pattern, path)
            && pattern.as_bytes().get(path.len()) == Some(&b'.')
    };
    for pattern in allowed {
        let pattern = pattern.trim();
        if pattern == "*" {
            return Verdict::Keep;
        }
        if let Some(prefix) = pattern.strip_suffix('*') {
            if starts_with_ci(path, prefix) {
                return Verdict::Keep;
            }
            descend |= below(prefix.trim_end_matches('.'));
            continue;
        }
        if pattern.eq_ignore_ascii_case(path) {
            return Verdict::Keep;
        }
        descend |= below(pattern);
    }
    if descend {
        Verdict::Descend
    } else {
        Verdict::Drop
    }
}

/// The allowed fields of `flow` (for `module`, if the flow overrides it).
fn allowed<'a>(
    cfg: &'a DlpConfig,
    flow: &str,
    module: Option<&str>,
) -> Result<&'a [String], String> {
    let Some(rule) = cfg.flows.get(flow) else {
        let known: Vec<&str> = cfg.flows.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "(none configured)".to_string()
        } else {
            known.join(", ")
        };
        return Err(format!("unknown DLP flow `{flow}`; known flows: {known}"));
    };
    Ok(module
        .and_then(|m| rule.modules.get(m))
        .unwrap_or(&rule.allowed_fields))
}

pub(crate) fn minimise(
    cfg: &DlpConfig,
    flow: &str,
    module: Option<&str>,
    fields: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    let allowed = allowed(cfg, flow, module)?;
    Ok(fields
        .iter()
        .cloned()
        .partition(|f| verdict(allowed, f) == Verdict::Keep))
}

pub(crate) fn minimise_json(
    cfg: &DlpConfig,
    flow: &str,
    module: Option<&str>,
    body: &str,
) -> Result<String, String> {
    let allowed = allowed(cfg, flow, module)?;
    serde_json::from_str::<serde::de::IgnoredAny>(body)
        .map_err(|e| format!("body is not JSON: {e}"))?;
    let b = body.as_bytes();
    let root = json::parse(b)?;
    let mut w = Writer {
        b,
        allowed,
        out: Vec::with_capacity(b.len()),
    };
    match &root {
        Node::Object { .. } if envelope(b, &root) => w.envelope(&root, ""),
        Node::Object { .. } => w.record(&root, ""),
        Node::Array { items, .. } => w.records(items, ""),
        Node::Scalar { .. } => w.raw(&root),
    }
    String::from_utf8(w.out).map_err(|e| format!("minimised body is not UTF-8: {e}"))
}

/// A key's name, unescaped.
fn key_name(b: &[u8], span: (usize, usize)) -> String {
    let raw = b.get(span.0..span.1).unwrap_or_default();
    serde_json::from_slice::<String>(raw)
        .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned())
}

/// A query envelope: `records` (an array) with `totalSize` or `done`.
fn envelope(b: &[u8], node: &Node) -> bool {
    let Node::Object { members, .. } = node else {
        return false;
    };
    let names: Vec<String> = members.iter().map(|(k, _)| key_name(b, *k)).collect();
    let records = members
        .iter()
        .zip(&names)
        .any(|((_, v), n)| n == "records" && matches!(v, Node::Array { .. }));
    records && names.iter().any(|n| n == "totalSize" || n == "done")
}

/// How a kept member is written.
enum Action<'n> {
    Raw,
    Envelope,
    Record,
    Records(&'n [Node]),
}

struct Writer<'a> {
    b: &'a [u8],
    allowed: &'a [String],
    out: Vec<u8>,
}

impl Writer<'_> {
    fn raw(&mut self, node: &Node) {
        let (s, e) = node.span();
        self.out
            .extend_from_slice(self.b.get(s..e).unwrap_or_default());
    }

    fn raw_span(&mut self, span: (usize, usize)) {
        self.out
            .extend_from_slice(self.b.get(span.0..span.1).unwrap_or_default());
    }

    /// An array whose object items are records.
    fn records(&mut self, items: &[Node], prefix: &str) {
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            match item {
                Node::Object { .. } => self.record(item, prefix),
                _ => self.raw(item),
            }
        }
        self.out.push(b']');
    }

    fn envelope(&mut self, node: &Node, prefix: &str) {
        let Node::Object { members, .. } = node else {
            return self.raw(node);
        };
        self.out.push(b'{');
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.raw_span(*key);
            self.out.push(b':');
            match value {
                Node::Array { items, .. } if key_name(self.b, *key) == "records" => {
                    self.records(items, prefix)
                }
                _ => self.raw(value),
            }
        }
        self.out.push(b'}');
    }

    fn record(&mut self, node: &Node, prefix: &str) {
        let Node::Object { members, .. } = node else {
            return self.raw(node);
        };
        self.out.push(b'{');
        let mut first = true;
        for (key, value) in members {
            let name = key_name(self.b, *key);
            let path = format!("{prefix}{name}");
            let verdict = if name == "attributes" {
                Verdict::Keep
            } else {
                verdict(self.allowed, &path)
            };
            let action = match (verdict, value) {
                (Verdict::Keep, _) => Action::Raw,
                (Verdict::Descend, Node::Object { .. }) if envelope(self.b, value) => {
                    Action::Envelope
                }
                (Verdict::Descend, Node::Object { .. }) => Action::Record,
                (Verdict::Descend, Node::Array { items, .. }) => Action::Records(items),
                _ => continue,
            };
            if !first {
                self.out.push(b',');
            }
            first = false;
            self.raw_span(*key);
            self.out.push(b':');
            let nested = format!("{path}.");
            match action {
                Action::Raw => self.raw(value),
                Action::Envelope => self.envelope(value, &nested),
                Action::Record => self.record(value, &nested),
                Action::Records(items) => self.records(items, &nested),
            }
        }
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DlpConfig, FlowRule};
    use super::*;

    fn cfg() -> DlpConfig {
        let mut cfg = DlpConfig::default();
        cfg.flows.insert(
            "marketing_sync".into(),
            FlowRule {
                allowed_fields: vec![
                    "Id".into(),
                    "Email".into(),
                    "Account.Name".into(),
                    "Billing*".into(),
                ],
                modules: [("service_cloud".to_string(), vec!["Id".to_string()])].into(),
            },
        );
        cfg.flows.insert(
            "support".into(),
            FlowRule {
                allowed_fields: vec!["*".into()],
                modules: Default::default(),
            },
        );
        cfg
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_fields_per_flow_and_module() {
        let fields = strings(&[
            "Id",
            "email",
            "Phone",
            "BillingCity",
            "Account.Name",
            "Account",
        ]);
        let (kept, dropped) = minimise(&cfg(), "marketing_sync", None, &fields).unwrap();
        assert_eq!(
            kept,
            strings(&["Id", "email", "BillingCity", "Account.Name"])
        );
        assert_eq!(dropped, strings(&["Phone", "Account"]));
        let (kept, dropped) =
            minimise(&cfg(), "marketing_sync", Some("service_cloud"), &fields).unwrap();
        assert_eq!(kept, strings(&["Id"]));
        assert_eq!(dropped.len(), 5);
        let (kept, _) = minimise(&cfg(), "marketing_sync", Some("sales_cloud"), &fields).unwrap();
        assert_eq!(kept.len(), 4);
        let (kept, dropped) = minimise(&cfg(), "support", None, &fields).unwrap();
        assert_eq!((kept.len(), dropped.len()), (6, 0));
    }

    #[test]
    fn unknown_flow_names_the_known_ones() {
        let err = minimise(&cfg(), "exfil", None, &[]).unwrap_err();
        assert!(
            err.contains("`exfil`") && err.contains("marketing_sync, support"),
            "{err}"
        );
        let err = minimise(&DlpConfig::default(), "x", None, &[]).unwrap_err();
        assert!(err.contains("none configured"));
    }

    #[test]
    fn minimises_records_keeping_order_and_text() {
        let body = r#"{"attributes": {"type": "Contact"}, "Id": "003x", "Phone": "+44 20 7946 0958", "Email": "a@b.co", "Account": {"Name": "Acme", "Phone": "1"}, "Owner": {"Name": "x"}, "BillingCity": "Leeds", "Amount": 1.50}"#;
        let out = minimise_json(&cfg(), "marketing_sync", None, body).unwrap();
        assert_eq!(
            out,
            r#"{"attributes":{"type": "Contact"},"Id":"003x","Email":"a@b.co","Account":{"Name":"Acme"},"BillingCity":"Leeds"}"#
        );
    }

    #[test]
    fn minimises_arrays_and_envelopes() {
        let body = r#"{"totalSize": 2, "done": true, "records": [{"Id": "1", "Phone": "x"}, {"Id": "2", "Email": "e"}]}"#;
        let out = minimise_json(&cfg(), "marketing_sync", None, body).unwrap();
        assert_eq!(
            out,
            r#"{"totalSize":2,"done":true,"records":[{"Id":"1"},{"Id":"2","Email":"e"}]}"#
        );
        let body = r#"[{"Id": "1", "Phone": "x"}, 3]"#;
        let out = minimise_json(&cfg(), "marketing_sync", Some("service_cloud"), body).unwrap();
        assert_eq!(out, r#"[{"Id":"1"},3]"#);
        assert!(minimise_json(&cfg(), "marketing_sync", None, "{nope").is_err());
        assert!(minimise_json(&cfg(), "nope", None, "{}").is_err());
    }
}
