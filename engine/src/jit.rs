//! Just-in-time admin access: grants requested, approved by someone else,
//! used until they expire, all through the engine and the store.
//!
//! A grant is identified by (requester, role). `request` stores it pending;
//! `approve` (by another principal: policies see `self_approval`) starts its
//! clock; admin actions see `active`, `expires` and the grant id, which also
//! goes into the audit record of every command run under it. Writes happen
//! only when the decision allows them.

use crate::error::RequestError;
use crate::request::Request;
use crate::store::{Entry, Write};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[jit]` in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JitSection {
    /// The action that requests a grant.
    pub request_action: String,
    /// The action that approves one.
    pub approve_action: String,
    /// Actions run under a grant (they see `context.jit.active`).
    pub admin_actions: Vec<String>,
    /// Longest grant that may be requested.
    #[serde(with = "crate::manifest::duration")]
    pub max_duration: Duration,
}

impl Default for JitSection {
    fn default() -> Self {
        JitSection {
            request_action: "jit_request".into(),
            approve_action: "jit_approve".into(),
            admin_actions: vec!["admin".into()],
            max_duration: Duration::from_secs(4 * 3600),
        }
    }
}

/// A grant as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Grant id (digest of requester, role, time).
    pub id: String,
    /// Who asked.
    pub requester: String,
    /// Role granted.
    pub role: String,
    /// Why (kept for the audit trail of the grant itself).
    pub reason: String,
    /// Scope of the grant.
    pub scope: String,
    /// Requested length, seconds.
    pub duration: i64,
    /// `pending` or `approved`.
    pub status: String,
    /// Who approved.
    pub approver: String,
    /// End of the grant (seconds since the epoch), 0 while pending.
    pub expires: i64,
}

/// What policies see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JitFacts {
    /// `none`, `request`, `approve`, `use`.
    pub phase: String,
    /// Grant id ("" when none).
    pub grant_id: String,
    /// Role requested or granted.
    pub role: String,
    /// The grant exists.
    pub found: bool,
    /// `pending`, `approved`, or "".
    pub status: String,
    /// The approver is the requester.
    pub self_approval: bool,
    /// An approved grant, not expired (for admin actions).
    pub active: bool,
    /// End of the grant, 0 if none.
    pub expires: i64,
    /// Requested duration in seconds.
    pub duration: i64,
}

/// Which phase a request is in, and the store keys it needs: the grant
/// (request); the grant and the requester's active pointer (approve); the
/// principal's active pointer (admin actions).
pub fn keys(
    section: &JitSection,
    ns: &str,
    req: &Request,
    principal: &str,
) -> Result<Option<(&'static str, Vec<String>)>, RequestError> {
    let jit = req.context.jit.as_ref();
    let role = || {
        jit.and_then(|j| j.role.clone())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| RequestError::field("context.jit.role", "a role is required"))
    };
    if req.action == section.request_action {
        let role = role()?;
        Ok(Some((
            "request",
            vec![format!("jit1:{ns}:grant:{principal}|{role}")],
        )))
    } else if req.action == section.approve_action {
        let role = role()?;
        let requester = jit.and_then(|j| j.requester.clone()).ok_or_else(|| {
            RequestError::field(
                "context.jit.requester",
                "the requester of the grant to approve is required",
            )
        })?;
        let requester = format!(
            "{}:{}",
            req.principal.kind,
            crate::normalise::account_id(&requester)
        );
        Ok(Some((
            "approve",
            vec![
                format!("jit1:{ns}:grant:{requester}|{role}"),
                format!("jit1:{ns}:active:{requester}"),
            ],
        )))
    } else if section.admin_actions.iter().any(|a| a == &req.action) {
        Ok(Some(("use", vec![format!("jit1:{ns}:active:{principal}")])))
    } else {
        Ok(None)
    }
}

/// Facts from the entries, and the writes to make if the decision allows.
pub fn derive(
    section: &JitSection,
    phase: &str,
    entries: &[Entry],
    req: &Request,
    principal: &str,
    now: i64,
) -> Result<(JitFacts, Vec<Write>), RequestError> {
    let jit = req.context.jit.clone().unwrap_or_default();
    let grant = |e: Option<&Entry>| -> Option<Grant> {
        e.and_then(|e| e.value.as_deref())
            .and_then(|v| serde_json::from_str(v).ok())
    };
    let mut f = JitFacts {
        phase: phase.to_string(),
        ..JitFacts::default()
    };
    match phase {
        "request" => {
            let Some(entry) = entries.first() else {
                return Ok((f, Vec::new()));
            };
            let duration = match jit.duration.as_deref() {
                Some(d) => humantime::parse_duration(d).map_err(|e| {
                    RequestError::field(
                        "context.jit.duration",
                        format!("`{d}` is not a duration like \"1h\": {e}"),
                    )
                })?,
                None => {
                    return Err(RequestError::field(
                        "context.jit.duration",
                        "a duration is required",
                    ));
                }
            };
            if jit.reason.as_deref().is_none_or(str::is_empty) {
                return Err(RequestError::field(
                    "context.jit.reason",
                    "a reason is required",
                ));
            }
            let role = jit.role.clone().unwrap_or_default();
            let id = {
                use sha2::Digest as _;
                let d = sha2::Sha256::digest(format!("{principal}|{role}|{now}").as_bytes());
                format!("jit-{}", hex::encode(d.get(..6).unwrap_or(&[])))
            };
            f.grant_id = id.clone();
            f.role = role.clone();
            f.duration = duration.as_secs() as i64;
            f.status = "pending".into();
            f.found = grant(Some(entry)).is_some();
            let g = Grant {
                id,
                requester: principal.to_string(),
                role,
                reason: jit.reason.unwrap_or_default(),
                scope: jit.scope.unwrap_or_default(),
                duration: f.duration.min(section.max_duration.as_secs() as i64),
                status: "pending".into(),
                approver: String::new(),
                expires: 0,
            };
            let w = Write {
                key: entry.key.clone(),
                value: serde_json::to_string(&g).ok(),
                expected_version: entry.version,
            };
            Ok((f, vec![w]))
        }
        "approve" => {
            let (Some(ge), Some(ae)) = (entries.first(), entries.get(1)) else {
                return Ok((f, Vec::new()));
            };
            f.role = jit.role.unwrap_or_default();
            let Some(mut g) = grant(Some(ge)) else {
                return Ok((f, Vec::new()));
            };
            f.found = true;
            f.grant_id = g.id.clone();
            f.role = g.role.clone();
            f.status = g.status.clone();
            f.duration = g.duration;
            f.self_approval = g.requester == principal;
            if g.status != "pending" {
                return Ok((f, Vec::new()));
            }
            g.status = "approved".into();
            g.approver = principal.to_string();
            g.expires = now.saturating_add(g.duration);
            f.expires = g.expires;
            let value = serde_json::to_string(&g).ok();
            Ok((
                f,
                vec![
                    Write {
                        key: ge.key.clone(),
                        value: value.clone(),
                        expected_version: ge.version,
                    },
                    Write {
                        key: ae.key.clone(),
                        value,
                        expected_version: ae.version,
                    },
                ],
            ))
        }
        _ => {
            if let Some(g) = grant(entries.first()) {
                f.found = true;
                f.grant_id = g.id;
                f.role = g.role;
                f.status = g.status;
                f.expires = g.expires;
                f.duration = g.duration;
                f.active = f.status == "approved" && g.expires > now;
            }
            Ok((f, Vec::new()))
        }
    }
}
