//! Rate limits and abuse shapes, kept in the store.
//!
//! - Token buckets per (principal, action class) from `[rate.classes]`: a
//!   request takes one token; an empty bucket refuses without taking one and
//!   says when the next token comes.
//! - Scraping: per principal, the distinct records touched inside a window,
//!   and whether the ids walk sequentially (each a small step above the
//!   last), the shape of an enumeration.
//! - Model extraction: per (principal, model), inference queries inside a
//!   window, distinct inputs, and probes: inputs that differ from the
//!   previous one in exactly one field, the shape of a systematic sweep that
//!   reconstructs a model. Ordinary business queries are distinct too, but
//!   not perturbations of each other.

use crate::request::Request;
use crate::store::{Entry, Write};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[rate]` in the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateSection {
    /// Action classes and their buckets.
    pub classes: BTreeMap<String, RateClass>,
    /// Scraping detection.
    pub scraping: ScrapingConfig,
    /// Model-extraction detection (for `extraction.actions`).
    pub extraction: ExtractionConfig,
}

/// One action class.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateClass {
    /// Actions in the class (request names).
    pub actions: Vec<String>,
    /// Bucket size (the burst).
    pub capacity: u32,
    /// One token comes back every this long ("1s").
    #[serde(with = "crate::manifest::duration")]
    pub refill_every: Duration,
}

/// Scraping detection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapingConfig {
    /// Actions watched.
    pub actions: Vec<String>,
    /// Distinct records are counted inside this window.
    #[serde(with = "crate::manifest::duration")]
    pub window: Duration,
    /// Most record ids kept per principal.
    pub max_tracked: u32,
    /// Largest step between ids that still counts as a walk.
    pub walk_step: u64,
}

impl Default for ScrapingConfig {
    fn default() -> Self {
        ScrapingConfig {
            actions: vec!["read".into(), "export".into()],
            window: Duration::from_secs(600),
            max_tracked: 500,
            walk_step: 3,
        }
    }
}

/// Extraction detection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractionConfig {
    /// Actions watched (inference).
    pub actions: Vec<String>,
    /// Queries are counted inside this window.
    #[serde(with = "crate::manifest::duration")]
    pub window: Duration,
    /// Most queries kept per (principal, model).
    pub max_tracked: u32,
}

impl Default for ExtractionConfig {
    fn default() -> Self {
        ExtractionConfig {
            actions: vec!["infer".into()],
            window: Duration::from_secs(3600),
            max_tracked: 1000,
        }
    }
}

/// What a request learned from its bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketFacts {
    /// The class, "" when the action has none.
    pub class: String,
    /// Tokens left after this request.
    pub remaining: i64,
    /// The bucket was empty: refused, nothing taken.
    pub exhausted: bool,
    /// Seconds until the next token, when exhausted.
    pub retry_after: i64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Bucket {
    /// Tokens.
    n: i64,
    /// Time of the last refill.
    t: i64,
}

/// The write that stores `value` over `entry` (compare-and-set on its version).
fn put<T: Serialize>(entry: &Entry, value: &T) -> Write {
    Write {
        key: entry.key.clone(),
        value: serde_json::to_string(value).ok(),
        expected_version: entry.version,
    }
}

/// The bucket class of an action.
pub fn class_of<'a>(section: &'a RateSection, action: &str) -> Option<(&'a String, &'a RateClass)> {
    section
        .classes
        .iter()
        .find(|(_, c)| c.actions.iter().any(|a| a == action))
}

/// Take a token (requests only; events take none).
pub fn bucket_step(
    name: &str,
    class: &RateClass,
    entry: &Entry,
    now: i64,
    take: bool,
) -> (Option<Write>, BucketFacts) {
    let every = class.refill_every.as_secs().max(1) as i64;
    let cap = i64::from(class.capacity);
    let mut b = entry
        .value
        .as_deref()
        .and_then(|v| serde_json::from_str::<Bucket>(v).ok())
        .unwrap_or(Bucket { n: cap, t: now });
    if now > b.t {
        let gained = (now - b.t) / every;
        b.n = (b.n + gained).min(cap);
        b.t = if b.n >= cap {
            now
        } else {
            b.t + gained * every
        };
    }
    let mut facts = BucketFacts {
        class: name.to_string(),
        remaining: b.n,
        exhausted: false,
        retry_after: 0,
    };
    if !take {
        return (None, facts);
    }
    if b.n < 1 {
        facts.exhausted = true;
        facts.retry_after = (b.t + every - now).max(1);
        return (None, facts);
    }
    b.n -= 1;
    facts.remaining = b.n;
    (Some(put(entry, &b)), facts)
}

/// Scraping facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrapeFacts {
    /// Distinct records touched inside the window (this one included).
    pub distinct_records: i64,
    /// The longest current run of ids each a small step above the last.
    pub walk_length: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seen {
    /// (time, record id) oldest first.
    r: Vec<(i64, String)>,
    /// Current walk length.
    w: i64,
    /// Last id.
    last: String,
}

/// A record id as (prefix, number), to see walks: Salesforce ids by the
/// base-62 tail of their 15-character form, others by trailing digits.
fn id_number(id: &str) -> Option<(String, u64)> {
    let id = if id.len() == 18 && id.is_ascii() {
        id.get(..15)?
    } else {
        id
    };
    // After the last character that is not a digit (which may be wider
    // than one byte: found by fuzzing, fuzz/FUZZING.md).
    let digits_start = id
        .char_indices()
        .rev()
        .find(|(_, c)| !c.is_ascii_digit())
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    if id.len() == 15 && id.chars().all(|c| c.is_ascii_alphanumeric()) && digits_start > 9 {
        let (prefix, tail) = id.split_at(9);
        let mut n: u64 = 0;
        for c in tail.chars() {
            let d = match c {
                '0'..='9' => c as u64 - '0' as u64,
                'A'..='Z' => c as u64 - 'A' as u64 + 10,
                _ => c as u64 - 'a' as u64 + 36,
            };
            n = n.checked_mul(62)?.checked_add(d)?;
        }
        return Some((prefix.to_string(), n));
    }
    let (prefix, digits) = id.split_at(digits_start);
    digits.parse().ok().map(|n| (prefix.to_string(), n))
}

/// Record this request's record id.
pub fn scrape_step(
    cfg: &ScrapingConfig,
    entry: &Entry,
    record: &str,
    now: i64,
) -> (Option<Write>, ScrapeFacts) {
    let mut s = entry
        .value
        .as_deref()
        .and_then(|v| serde_json::from_str::<Seen>(v).ok())
        .unwrap_or_default();
    let since = now - cfg.window.as_secs() as i64;
    s.r.retain(|(t, _)| *t > since);
    let walk = match (id_number(&s.last), id_number(record)) {
        (Some((p1, a)), Some((p2, b))) if p1 == p2 && b > a && b - a <= cfg.walk_step => s.w + 1,
        _ => 1,
    };
    s.w = walk;
    s.last = record.to_string();
    if !s.r.iter().any(|(_, id)| id == record) {
        s.r.push((now, record.to_string()));
    }
    let keep = cfg.max_tracked.max(1) as usize;
    if s.r.len() > keep {
        let cut = s.r.len() - keep;
        s.r.drain(..cut);
    }
    let facts = ScrapeFacts {
        distinct_records: s.r.len() as i64,
        walk_length: walk,
    };
    (Some(put(entry, &s)), facts)
}

/// Model-extraction facts for (principal, model).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InferFacts {
    /// Queries inside the window (this one included).
    pub queries: i64,
    /// Distinct inputs among them.
    pub distinct_inputs: i64,
    /// Queries whose input differs from the previous one in exactly one field.
    pub probes: i64,
    /// probes × 100 / queries.
    pub probe_ratio: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Queries {
    /// (time, input digest, was a probe) oldest first.
    q: Vec<(i64, u64, bool)>,
    /// Field digests of the last input.
    last: Vec<u64>,
}

fn hash(bytes: &[u8]) -> u64 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(b)
}

/// Per-field digests of an input: `key=value` for each top-level field of a
/// JSON object, else one digest per whitespace-separated token.
fn fields(body: &str) -> Vec<u64> {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| hash(format!("{k}={v}").as_bytes()))
            .collect(),
        _ => body
            .split_whitespace()
            .map(|t| hash(t.as_bytes()))
            .collect(),
    }
}

/// Record this inference query.
pub fn infer_step(
    cfg: &ExtractionConfig,
    entry: &Entry,
    body: &str,
    now: i64,
) -> (Option<Write>, InferFacts) {
    let mut s = entry
        .value
        .as_deref()
        .and_then(|v| serde_json::from_str::<Queries>(v).ok())
        .unwrap_or_default();
    let since = now - cfg.window.as_secs() as i64;
    s.q.retain(|(t, _, _)| *t > since);
    let f = fields(body);
    let probe = !s.last.is_empty()
        && f.len() == s.last.len()
        && f.iter().zip(&s.last).filter(|(a, b)| a != b).count() == 1;
    s.q.push((now, hash(body.as_bytes()), probe));
    s.last = f;
    let keep = cfg.max_tracked.max(1) as usize;
    if s.q.len() > keep {
        let cut = s.q.len() - keep;
        s.q.drain(..cut);
    }
    let queries = s.q.len() as i64;
    let distinct: std::collections::HashSet<u64> = s.q.iter().map(|(_, h, _)| *h).collect();
    let probes = s.q.iter().filter(|(_, _, p)| *p).count() as i64;
    let facts = InferFacts {
        queries,
        distinct_inputs: distinct.len() as i64,
        probes,
        probe_ratio: probes * 100 / queries.max(1),
    };
    (Some(put(entry, &s)), facts)
}

/// Does this request touch a record (for scraping)?
pub fn scraped_record(cfg: &ScrapingConfig, req: &Request) -> bool {
    req.event.is_none() && cfg.actions.iter().any(|a| a == &req.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: Option<String>) -> Entry {
        Entry {
            key: "k".into(),
            value: v,
            version: 1,
        }
    }

    #[test]
    fn buckets_drain_refuse_and_refill() {
        let c = RateClass {
            actions: vec![],
            capacity: 3,
            refill_every: Duration::from_secs(10),
        };
        let mut v = None;
        let mut rem = vec![];
        for _ in 0..3 {
            let (w, f) = bucket_step("api", &c, &e(v.clone()), 100, true);
            v = w.and_then(|w| w.value);
            rem.push(f.remaining);
        }
        assert_eq!(rem, [2, 1, 0]);
        let (w, f) = bucket_step("api", &c, &e(v.clone()), 105, true);
        assert!(w.is_none() && f.exhausted && f.retry_after == 5, "{f:?}");
        let (_, f) = bucket_step("api", &c, &e(v.clone()), 110, true);
        assert!(!f.exhausted && f.remaining == 0);
        let (_, f) = bucket_step("api", &c, &e(v), 1000, true);
        assert_eq!(f.remaining, 2, "refills to capacity, no more");
    }

    #[test]
    fn salesforce_ids_walk() {
        let a = id_number("001000000000001AAA").map(|x| x.1);
        let b = id_number("001000000000002AAA").map(|x| x.1);
        assert_eq!(b.zip(a).map(|(b, a)| b - a), Some(1));
        assert_eq!(id_number("order-41").map(|x| x.1), Some(41));
    }

    #[test]
    fn probes_are_one_field_perturbations() {
        let cfg = ExtractionConfig::default();
        let mut v = None;
        let mut last = InferFacts::default();
        for i in 0..10 {
            let body = format!(r#"{{"age": {i}, "tenure": 5, "plan": "gold"}}"#);
            let (w, f) = infer_step(&cfg, &e(v.clone()), &body, 100 + i);
            v = w.and_then(|w| w.value);
            last = f;
        }
        assert_eq!(
            (last.queries, last.distinct_inputs, last.probes),
            (10, 10, 9)
        );
        let mut v = None;
        for (i, body) in [
            r#"{"q": "renewal risk for Acme"}"#,
            r#"{"q": "churn drivers in EMEA", "region": "emea"}"#,
            r#"{"account": "Globex", "horizon": 90}"#,
        ]
        .iter()
        .enumerate()
        {
            let (w, f) = infer_step(&cfg, &e(v.clone()), body, 100 + i as i64);
            v = w.and_then(|w| w.value);
            last = f;
        }
        assert_eq!(last.probes, 0);
    }
}
