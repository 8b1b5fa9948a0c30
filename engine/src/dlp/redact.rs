//! Redaction of findings: JSON-aware when the body is JSON, bytes
//! otherwise.

use super::config::{DlpConfig, RedactionMode};
use super::json::{self, Tok, Token};
use super::{Finding, digest16};

/// One finding, clamped to the body, with its mode.
#[derive(Debug, Clone)]
struct Span<'a> {
    start: usize,
    end: usize,
    mode: RedactionMode,
    kind: &'a str,
}

fn severity(mode: RedactionMode) -> u8 {
    match mode {
        RedactionMode::Mask => 0,
        RedactionMode::Hash => 1,
        RedactionMode::Drop => 2,
    }
}

fn tag(kind: &str, bytes: &[u8]) -> Vec<u8> {
    format!("[{kind}:{}]", digest16(bytes)).into_bytes()
}

pub(crate) fn redact(cfg: &DlpConfig, body: &[u8], findings: &[Finding]) -> Vec<u8> {
    let mut spans: Vec<Span<'_>> = findings
        .iter()
        .filter_map(|f| {
            let end = f.offset.checked_add(f.length)?.min(body.len());
            (f.offset < end).then(|| Span {
                start: f.offset,
                end,
                mode: cfg.mode_for(&f.kind),
                kind: f.kind.as_str(),
            })
        })
        .collect();
    if spans.is_empty() {
        return body.to_vec();
    }
    match other_occurrences(body, &spans) {
        Some(more) => spans.extend(more),
        // Never expected (patterns are bounded); fail closed.
        None if json::valid(body) => return b"null".to_vec(),
        None => return vec![b'*'; body.len()],
    }
    spans.sort_by_key(|s| (s.start, s.end));
    spans.dedup_by_key(|s| (s.start, s.end));
    if json::valid(body) {
        match redact_json(body, &spans) {
            Some(out) if json::valid(&out) => out,
            // Never expected; fail closed rather than leak or break JSON.
            _ => b"null".to_vec(),
        }
    } else {
        redact_text(body, &spans)
    }
}

/// Longest finding whose other occurrences are looked for.
const MAX_ECHO: usize = 4096;

/// Every other place the bytes of a finding occur: the same value may be
/// a finding in one place (with a context word) and not in another, and
/// no byte sequence of a finding may survive redaction.
fn other_occurrences<'a>(body: &[u8], spans: &[Span<'a>]) -> Option<Vec<Span<'a>>> {
    let mut texts: Vec<(&[u8], &Span<'a>)> = spans
        .iter()
        .filter(|s| s.end - s.start <= MAX_ECHO)
        .filter_map(|s| Some((body.get(s.start..s.end)?, s)))
        .collect();
    texts.sort_by(|a, b| a.0.cmp(b.0));
    texts.dedup_by(|a, b| a.0 == b.0);
    if texts.is_empty() {
        return Some(Vec::new());
    }
    let ac = aho_corasick::AhoCorasick::new(texts.iter().map(|(t, _)| *t)).ok()?;
    let mut seen: std::collections::HashSet<(usize, usize)> =
        spans.iter().map(|s| (s.start, s.end)).collect();
    let mut more = Vec::new();
    for m in ac.find_overlapping_iter(body) {
        let (_, of) = texts.get(m.pattern().as_usize())?;
        if seen.insert((m.start(), m.end())) {
            more.push(Span {
                start: m.start(),
                end: m.end(),
                mode: of.mode,
                kind: of.kind,
            });
        }
    }
    Some(more)
}

/// Merge overlapping spans (sorted by start); the most severe mode wins,
/// the first kind names the merged span.
fn merge<'a>(spans: &[Span<'a>]) -> Vec<Span<'a>> {
    let mut out: Vec<Span<'a>> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start < last.end => {
                last.end = last.end.max(s.end);
                if severity(s.mode) > severity(last.mode) {
                    last.mode = s.mode;
                }
            }
            _ => out.push(s.clone()),
        }
    }
    out
}

fn redact_text(body: &[u8], spans: &[Span<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for s in merge(spans) {
        out.extend_from_slice(body.get(at..s.start).unwrap_or_default());
        let original = body.get(s.start..s.end).unwrap_or_default();
        match s.mode {
            RedactionMode::Mask => out.resize(out.len() + original.len(), b'*'),
            RedactionMode::Hash => out.extend(tag(s.kind, original)),
            RedactionMode::Drop => {}
        }
        at = s.end;
    }
    out.extend_from_slice(body.get(at..).unwrap_or_default());
    out
}

/// A replacement of a whole JSON value (or a whole string's content).
#[derive(Debug)]
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

fn redact_json(body: &[u8], spans: &[Span<'_>]) -> Option<Vec<u8>> {
    let toks = json::tokens(body).ok()?;
    // Container spans (in start order) with their parents, for findings
    // that cross tokens.
    let mut containers: Vec<Container> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for t in &toks {
        match t.kind {
            Tok::Open => {
                stack.push(containers.len());
                containers.push(Container {
                    start: t.start,
                    end: body.len(),
                    parent: stack
                        .len()
                        .checked_sub(2)
                        .and_then(|i| stack.get(i))
                        .copied(),
                });
            }
            Tok::Close => containers.get_mut(stack.pop()?)?.end = t.end,
            _ => {}
        }
    }
    // Findings inside one string's content, per token index.
    let mut in_string: std::collections::BTreeMap<usize, Vec<&Span<'_>>> = Default::default();
    let mut whole: Vec<(usize, usize, &Span<'_>, bool)> = Vec::new();
    for s in spans {
        let idx = toks.partition_point(|t| t.end <= s.start);
        match toks.get(idx) {
            Some(t) if t.start <= s.start && s.end <= t.end && t.kind == Tok::Str => {
                if s.start > t.start && s.end < t.end {
                    in_string.entry(idx).or_default().push(s);
                } else {
                    whole.push((t.start, t.end, s, true));
                }
            }
            Some(t) if t.start <= s.start && s.end <= t.end && t.kind == Tok::Scalar => {
                whole.push((t.start, t.end, s, false));
            }
            _ => {
                let (cs, ce) = innermost(&containers, s.start, s.end).unwrap_or((0, body.len()));
                whole.push((cs, ce, s, false));
            }
        }
    }
    let mut edits: Vec<Edit> = Vec::new();
    for (start, end, s, is_string) in &whole {
        let original = body.get(*start..*end)?;
        let with = match s.mode {
            RedactionMode::Mask => {
                let inner = if *is_string {
                    end - start - 2
                } else if original.first().is_some_and(|c| matches!(c, b'[' | b'{')) {
                    (end - start).saturating_sub(2)
                } else {
                    end - start
                };
                let mut w = vec![b'"'];
                w.resize(inner + 1, b'*');
                w.push(b'"');
                w
            }
            RedactionMode::Hash => {
                let mut w = vec![b'"'];
                w.extend(tag(s.kind, body.get(s.start..s.end)?));
                w.push(b'"');
                w
            }
            RedactionMode::Drop if *is_string => b"\"\"".to_vec(),
            RedactionMode::Drop => b"null".to_vec(),
        };
        edits.push(Edit {
            start: *start,
            end: *end,
            with,
        });
    }
    for (idx, found) in &in_string {
        let t: &Token = toks.get(*idx)?;
        let (cs, ce) = (t.start + 1, t.end - 1);
        let with = redact_string(body.get(cs..ce)?, cs, found)?;
        edits.push(Edit {
            start: cs,
            end: ce,
            with,
        });
    }
    // Outer edits win over edits inside them.
    edits.sort_by_key(|e| (e.start, std::cmp::Reverse(e.end)));
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for e in edits {
        if e.start < at {
            continue;
        }
        out.extend_from_slice(body.get(at..e.start)?);
        out.extend(e.with);
        at = e.end;
    }
    out.extend_from_slice(body.get(at..)?);
    Some(out)
}

/// A JSON array or object: its span and the index of its parent.
#[derive(Debug, Clone, Copy)]
struct Container {
    start: usize,
    end: usize,
    parent: Option<usize>,
}

/// The innermost container holding `[start, end)`: the last one opening
/// at or before `start`, then up its parents (nesting depth is bounded by
/// the JSON parser's limit).
fn innermost(containers: &[Container], start: usize, end: usize) -> Option<(usize, usize)> {
    let mut i = containers
        .partition_point(|c| c.start <= start)
        .checked_sub(1)?;
    loop {
        let c = containers.get(i)?;
        if c.start <= start && end <= c.end {
            return Some((c.start, c.end));
        }
        i = c.parent?;
    }
}

/// Redact findings inside one string's raw content (which starts at
/// `base` in the body). Escape sequences are replaced whole.
fn redact_string(content: &[u8], base: usize, found: &[&Span<'_>]) -> Option<Vec<u8>> {
    if found.iter().any(|s| s.mode == RedactionMode::Drop) {
        return Some(Vec::new());
    }
    let units = json::unit_starts(content);
    let unit_start = |p: usize| -> usize {
        let i = units.partition_point(|&u| u <= p);
        units.get(i.saturating_sub(1)).copied().unwrap_or(0)
    };
    let unit_end = |p: usize| -> usize {
        // p is exclusive; the unit holding byte p-1 ends where the next starts.
        let i = units.partition_point(|&u| u < p);
        units.get(i).copied().unwrap_or(content.len())
    };
    let mut spans: Vec<Span<'_>> = found
        .iter()
        .map(|s| Span {
            start: unit_start(s.start - base),
            end: unit_end(s.end - base),
            mode: s.mode,
            kind: s.kind,
        })
        .collect();
    spans.sort_by_key(|s| (s.start, s.end));
    Some(redact_text(content, &spans))
}

#[cfg(test)]
mod tests {
    use super::super::{DlpConfig, Finding, RedactionMode};
    use super::*;

    fn finding(kind: &str, body: &[u8], needle: &[u8]) -> Finding {
        let offset = body
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        Finding {
            kind: kind.into(),
            offset,
            length: needle.len(),
            confidence: 90,
            digest: digest16(needle),
        }
    }

    fn cfg(kind: &str, mode: RedactionMode) -> DlpConfig {
        let mut cfg = DlpConfig::default();
        cfg.redaction.insert(kind.into(), mode);
        cfg
    }

    #[test]
    fn masks_inside_json_strings_byte_for_byte() {
        let body = br#"{"note": "card 4111 1111 1111 1111 ok", "n": 1}"#;
        let f = finding("card", body, b"4111 1111 1111 1111");
        let out = redact(&DlpConfig::default(), body, &[f]);
        assert_eq!(
            out,
            br#"{"note": "card ******************* ok", "n": 1}"#.to_vec()
        );
    }

    #[test]
    fn hashes_and_drops() {
        let body = br#"{"email": "ann@example.com", "x": "a ann@example.com b"}"#;
        let f1 = finding("email", body, b"ann@example.com");
        let mut f2 = f1.clone();
        f2.offset = body
            .windows(15)
            .rposition(|w| w == b"ann@example.com")
            .unwrap();
        let hash = cfg("email", RedactionMode::Hash);
        let out = redact(&hash, body, &[f1.clone(), f2.clone()]);
        let d = digest16(b"ann@example.com");
        let expected = format!(r#"{{"email": "[email:{d}]", "x": "a [email:{d}] b"}}"#);
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let drop = cfg("email", RedactionMode::Drop);
        let out = redact(&drop, body, &[f1, f2]);
        assert_eq!(out, br#"{"email": "", "x": ""}"#.to_vec());
    }

    #[test]
    fn numbers_and_arrays_become_strings() {
        let body = br#"{"pan": 4111111111111111, "w": [0.5, 1.5]}"#;
        let f = finding("card", body, b"4111111111111111");
        let out = redact(&DlpConfig::default(), body, std::slice::from_ref(&f));
        assert_eq!(
            out,
            br#"{"pan": "****************", "w": [0.5, 1.5]}"#.to_vec()
        );
        let out = redact(&cfg("card", RedactionMode::Drop), body, &[f]);
        assert_eq!(out, br#"{"pan": null, "w": [0.5, 1.5]}"#.to_vec());
        let w = finding("model_weights.float_array", body, b"[0.5, 1.5]");
        let out = redact(&DlpConfig::default(), body, std::slice::from_ref(&w));
        assert_eq!(
            out,
            br#"{"pan": 4111111111111111, "w": "********"}"#.to_vec()
        );
        let out = redact(&cfg("model_weights", RedactionMode::Drop), body, &[w]);
        assert_eq!(out, br#"{"pan": 4111111111111111, "w": null}"#.to_vec());
    }

    #[test]
    fn escapes_are_replaced_whole() {
        // A finding that starts right after a backslash would otherwise
        // leave a dangling escape.
        let body = br#"{"k": "a\nSECRETSECRET\u0041b"}"#;
        let start = body.windows(2).position(|w| w == b"nS").unwrap();
        let f = Finding {
            kind: "generic_secret".into(),
            offset: start,
            length: 16,
            confidence: 80,
            digest: String::new(),
        };
        let out = redact(&DlpConfig::default(), body, &[f]);
        assert_eq!(out, br#"{"k": "a********************b"}"#.to_vec());
        assert!(json::valid(&out));
    }

    #[test]
    fn multibyte_characters_are_replaced_whole() {
        let body = r#"{"n": "Zoë 4111111111111111"}"#.as_bytes();
        // A finding that starts inside "ë" (two bytes in UTF-8).
        let start = body.iter().position(|&b| b == 0xc3).unwrap() + 1;
        let f = Finding {
            kind: "card".into(),
            offset: start,
            length: 18,
            confidence: 90,
            digest: String::new(),
        };
        let out = redact(&DlpConfig::default(), body, &[f]);
        assert_eq!(out, br#"{"n": "Zo*******************"}"#.to_vec());
    }

    #[test]
    fn structural_findings_take_the_innermost_container() {
        let body = br#"{"a": [1, 2], "b": {"c": [[0.5, 1.5], [2.5]], "d": "x"}}"#;
        let f = finding("model_weights.float_array", body, b"[0.5, 1.5], [2.5]");
        let out = redact(&DlpConfig::default(), body, &[f]);
        assert_eq!(
            out,
            br#"{"a": [1, 2], "b": {"c": "*****************", "d": "x"}}"#.to_vec()
        );
    }

    #[test]
    fn text_redaction() {
        let body = b"call +44 20 7946 0958 now";
        let f = finding("phone", body, b"+44 20 7946 0958");
        assert_eq!(
            redact(&DlpConfig::default(), body, std::slice::from_ref(&f)),
            b"call **************** now".to_vec()
        );
        assert_eq!(
            redact(
                &cfg("phone", RedactionMode::Drop),
                body,
                std::slice::from_ref(&f)
            ),
            b"call  now".to_vec()
        );
        let d = digest16(b"+44 20 7946 0958");
        assert_eq!(
            redact(&cfg("phone", RedactionMode::Hash), body, &[f]),
            format!("call [phone:{d}] now").into_bytes()
        );
    }

    #[test]
    fn overlapping_and_out_of_range_findings() {
        let body = b"abcdefghij";
        let mk = |offset, length, kind: &str| Finding {
            kind: kind.into(),
            offset,
            length,
            confidence: 90,
            digest: String::new(),
        };
        let out = redact(
            &DlpConfig::default(),
            body,
            &[
                mk(1, 3, "card"),
                mk(2, 4, "email"),
                mk(50, 3, "card"),
                mk(8, 100, "jwt"),
            ],
        );
        assert_eq!(out, b"a*****gh**".to_vec());
    }
}
