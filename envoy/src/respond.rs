//! Decision → what Envoy does: continue, or a local reply.
//!
//! | outcome | reply |
//! |---|---|
//! | `allow` | continue upstream |
//! | `redact` | continue upstream (the body rewrite arrives with the engine's redacted body) |
//! | `challenge` | 401, `www-authenticate: Portcullis realm="…"` |
//! | `throttle` | 429, `retry-after` |
//! | `deny`, `lock` | 403 (`retry-after` too when the decision gives one) |
//!
//! Bodies are small JSON naming the outcome and the policies' reasons; a
//! fault is named by its kind only (no messages, no internals).

use portcullis_engine::{Decision, Outcome};
use serde_json::json;

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u32,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: String,
}

/// `None`: let the request continue. `Some`: answer it here.
pub fn reply(decision: &Decision, realm: &str) -> Option<Reply> {
    let (status, mut headers) = match decision.outcome {
        Outcome::Allow | Outcome::Redact => return None,
        Outcome::Challenge => (
            401,
            vec![(
                "www-authenticate".to_string(),
                format!("Portcullis realm=\"{}\"", quote(realm)),
            )],
        ),
        Outcome::Throttle => (429, Vec::new()),
        Outcome::Deny | Outcome::Lock => (403, Vec::new()),
    };
    // A throttle always says when to come back; a lock when it will end.
    let retry = match (decision.outcome, decision.retry_after) {
        (_, Some(s)) => Some(s.max(1)),
        (Outcome::Throttle, None) => Some(
            decision
                .retry
                .as_ref()
                .map(|r| r.base_seconds)
                .unwrap_or(1)
                .max(1),
        ),
        _ => None,
    };
    if let Some(s) = retry {
        headers.push(("retry-after".to_string(), s.to_string()));
    }
    headers.push(("content-type".to_string(), "application/json".to_string()));
    headers.push(("cache-control".to_string(), "no-store".to_string()));
    let reasons: Vec<String> = match &decision.error {
        Some(e) => vec![format!("error: {}", e.kind)],
        None => decision.reasons.clone(),
    };
    let body = json!({"outcome": decision.outcome.as_str(), "reasons": reasons}).to_string();
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// A refusal made by the filter itself before any decision (no route, no
/// principal): 403 with the same body shape.
pub fn refusal(reason: &str) -> Reply {
    Reply {
        status: 403,
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("cache-control".to_string(), "no-store".to_string()),
        ],
        body: json!({"outcome": "deny", "reasons": [reason]}).to_string(),
    }
}

fn quote(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_engine::decision::{DecisionError, RetryAdvice};

    fn decision(outcome: Outcome, retry_after: Option<u64>) -> Decision {
        let mut d = Decision::fault("x", String::new(), None, "");
        d.outcome = outcome;
        d.allowed = outcome.is_allowed();
        d.policies = vec!["p".into()];
        d.reasons = vec!["because".into()];
        d.escalation = Some("secops".into());
        d.retry_after = retry_after;
        d.retry = Some(RetryAdvice {
            max_attempts: 5,
            backoff: "exponential".into(),
            base_seconds: 2,
            max_seconds: 300,
        });
        d.error = None;
        d
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn outcomes_map_to_statuses() {
        assert_eq!(reply(&decision(Outcome::Allow, None), "r"), None);
        assert_eq!(reply(&decision(Outcome::Redact, None), "r"), None);
        let c = reply(&decision(Outcome::Challenge, None), "crm \"x\"").unwrap();
        assert_eq!(
            (c.status, header(&c, "www-authenticate")),
            (401, Some("Portcullis realm=\"crm x\""))
        );
        let t = reply(&decision(Outcome::Throttle, Some(42)), "r").unwrap();
        assert_eq!((t.status, header(&t, "retry-after")), (429, Some("42")));
        let t = reply(&decision(Outcome::Throttle, None), "r").unwrap();
        assert_eq!(
            header(&t, "retry-after"),
            Some("2"),
            "a throttle always says when"
        );
        let d = reply(&decision(Outcome::Deny, None), "r").unwrap();
        assert_eq!((d.status, header(&d, "retry-after")), (403, None));
        let l = reply(&decision(Outcome::Lock, Some(300)), "r").unwrap();
        assert_eq!((l.status, header(&l, "retry-after")), (403, Some("300")));
        let body: serde_json::Value = serde_json::from_str(&l.body).unwrap();
        assert_eq!(
            body,
            json!({"outcome": "lock", "reasons": ["because"]}),
            "no escalation, policies or audit"
        );
    }

    #[test]
    fn faults_name_only_their_kind() {
        let mut d = decision(Outcome::Deny, None);
        d.reasons = vec!["error: store read failed: secret detail".into()];
        d.error = Some(DecisionError {
            kind: "store".into(),
            message: "secret detail".into(),
            field: None,
        });
        let r = reply(&d, "r").unwrap();
        assert_eq!(r.status, 403);
        assert!(!r.body.contains("secret"), "{}", r.body);
        assert!(r.body.contains("error: store"));
    }
}
