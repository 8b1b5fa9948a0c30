//! Normalisation: one vocabulary whatever the CRM module, and one form of
//! an account id whatever its case.
//!
//! Sales Cloud and Service Cloud name the same facts differently (the
//! synthetic flag is `Synthetic__c` in one and `Is_Test_Data__c` in the
//! other; owners and record id prefixes differ too). The manifest maps each
//! module's fields to the vocabulary (`synthetic`, `owner`, `id`,
//! `country`); `object` follows from the id prefix.

use crate::error::RequestError;
use crate::manifest::Manifest;
use crate::request::Request;
use serde_json::Value;

/// A record in the common vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The record is flagged as synthetic data.
    pub synthetic: Option<bool>,
    /// Owner id.
    pub owner: Option<String>,
    /// Record id.
    pub id: Option<String>,
    /// Object name from the id prefix (`Account`, `Case` …).
    pub object: Option<String>,
    /// Country.
    pub country: Option<String>,
}

/// The request's record in the common vocabulary.
pub fn record(manifest: &Manifest, req: &Request) -> Result<Record, RequestError> {
    let Some(fields) = &req.context.record else {
        return Ok(Record::default());
    };
    let known = || {
        manifest
            .modules
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(module) = &req.context.module else {
        return Err(RequestError::field(
            "context.module",
            format!("a `context.record` needs its module (one of {})", known()),
        ));
    };
    let Some(map) = manifest.modules.get(module) else {
        return Err(RequestError::field(
            "context.module",
            format!(
                "unknown module `{}` (expected one of {})",
                crate::request::truncate(module),
                known()
            ),
        ));
    };
    let mut out = Record::default();
    for (vocab, field) in &map.fields {
        let Some(value) = fields.get(field) else {
            continue;
        };
        let path = format!("context.record.{field}");
        match vocab.as_str() {
            "synthetic" => match value {
                Value::Bool(b) => out.synthetic = Some(*b),
                Value::Null => {}
                other => {
                    return Err(RequestError::field(
                        path,
                        format!("expected a boolean, found {other}"),
                    ));
                }
            },
            _ => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => {
                        return Err(RequestError::field(
                            path,
                            format!("expected a string, found {other}"),
                        ));
                    }
                };
                match vocab.as_str() {
                    "owner" => out.owner = Some(text),
                    "id" => out.id = Some(text),
                    _ => out.country = Some(text),
                }
            }
        }
    }
    out.object = out
        .id
        .as_deref()
        .and_then(|id| id.get(..3))
        .and_then(|prefix| map.id_prefixes.get(prefix).cloned());
    Ok(out)
}

/// The form of an account id used for counting: NFKC, invisible
/// characters removed, lowercase, trimmed (see [`crate::identity`]).
pub fn account_id(id: &str) -> String {
    crate::identity::canonical(id)
}

/// Check at load that every `context.record.<name>` a policy reads is mapped
/// by every module (a policy must not silently see nothing for one module).
pub fn unmapped(manifest: &Manifest, policy_text: &str) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    let mut search = 0;
    while let Some(pos) = policy_text
        .get(search..)
        .and_then(|t| t.find("context.record."))
    {
        let start = search + pos;
        let rest = policy_text
            .get(start + "context.record.".len()..)
            .unwrap_or("");
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        search = start + 1;
        let needed = match name.as_str() {
            "object" => "id",
            other => other,
        };
        for (module, map) in &manifest.modules {
            if !map.fields.contains_key(needed) {
                out.push((module.clone(), name.clone(), start));
            }
        }
    }
    out
}
