//! The naive way to scan, kept only as the benchmark's baseline: every
//! detector's regex on its own over the whole body, one after another,
//! then the same validators on each match. Same checksums, same header
//! parsers, same ASCII-only regex settings as the real scanner; what
//! differs is N passes instead of one and no shared candidate search.
//! It is not used to decide anything.

use super::context::{Class, Hotwords};
use super::validators as v;
use super::weights::{self, Markers};
use base64::Engine as _;
use regex::bytes::{Regex, RegexBuilder};
use std::sync::OnceLock;

/// What validates one match: (detectors, body, start, end).
type Check = fn(&Naive, &[u8], usize, usize) -> bool;

/// One detector: its regex and what validates a match.
struct Detector {
    re: Regex,
    check: Check,
}

/// The compiled detectors.
pub struct Naive {
    detectors: Vec<Detector>,
    hot: Hotwords,
    markers: Markers,
}

fn digits_of(m: &[u8]) -> Vec<u8> {
    m.iter().copied().filter(u8::is_ascii_digit).collect()
}

fn card(n: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    let d = digits_of(body.get(s..e).unwrap_or_default());
    v::card_brand(&d).is_some()
        && v::luhn(&d)
        && !n.hot.before(body, s).wins_over(Class::IdLike, Class::Card)
}

fn iban(_: &Naive, body: &[u8], s: usize, _: usize) -> bool {
    v::iban_at(body, s).is_some()
}

fn email(_: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    v::email_ok(body.get(s..e).unwrap_or_default())
}

fn phone(n: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    let d = digits_of(body.get(s..e).unwrap_or_default());
    (8..=15).contains(&d.len()) || n.hot.before(body, s).has(Class::Phone)
}

fn nhs(n: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    v::nhs(&digits_of(body.get(s..e).unwrap_or_default())) && n.hot.before(body, s).has(Class::Nhs)
}

fn nif(_: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    let id: Vec<u8> = body
        .get(s..e)
        .unwrap_or_default()
        .iter()
        .filter(|c| **c != b'-')
        .map(u8::to_ascii_uppercase)
        .collect();
    v::es_nif(&id)
}

fn ip(_: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    std::str::from_utf8(body.get(s..e).unwrap_or_default())
        .ok()
        .is_some_and(|t| t.parse::<std::net::IpAddr>().is_ok())
}

fn always(_: &Naive, _: &[u8], _: usize, _: usize) -> bool {
    true
}

fn jwt(_: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    let m = body.get(s..e).unwrap_or_default();
    let head = m.split(|c| *c == b'.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|h| h.get("alg").is_some())
}

fn secret(_: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    let m = body.get(s..e).unwrap_or_default();
    let token = m
        .rsplit(|c| b"\"' :=".contains(c))
        .next()
        .unwrap_or_default();
    token.len() >= 20 && v::entropy(token) >= 3.5
}

fn magic(n: &Naive, body: &[u8], s: usize, _: usize) -> bool {
    weights::detect_start(&n.markers, body.get(s..).unwrap_or_default(), true).is_some()
}

fn blob(n: &Naive, body: &[u8], s: usize, e: usize) -> bool {
    let run = body.get(s + 1..e.saturating_sub(1)).unwrap_or_default();
    let text = run.get(..run.len().min(8192) / 4 * 4).unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .is_some_and(|d| weights::detect_start(&n.markers, &d, true).is_some())
}

const PATTERNS: &[(&str, Check)] = &[
    (r"\b(?:[0-9][ -]?){12,18}[0-9]\b", card),
    (
        r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        iban,
    ),
    (
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b",
        email,
    ),
    (
        r"\+[1-9][0-9]{0,3}(?:[ -]?\(?[0-9]{1,5}\)?){2,6}|\(0?[0-9]{2,4}\)[ -]?[0-9]{3,4}[ -]?[0-9]{3,4}",
        phone,
    ),
    (r"\b[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}\b", nhs),
    (r"\b[XYZxyz]?-?[0-9]{7,8}-?[A-Za-z]\b", nif),
    (r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b", ip),
    (
        r"\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4}|::(?:[0-9A-Fa-f]{1,4}:?){1,7}",
        ip,
    ),
    (r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", always),
    (
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        always,
    ),
    (
        r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
        jwt,
    ),
    (
        r#"(?i:secret|token|passw(?:or)?d|pwd|api[_-]?key|credential|auth|bearer|key)[A-Za-z0-9_-]{0,32}["' \t:=]{1,8}(?:bearer |basic )?[A-Za-z0-9+/=_.~!$%*-]{20,}"#,
        secret,
    ),
    (
        r"\b00[A-Za-z0-9]{13}(?:[A-Za-z0-9]{3})?![A-Za-z0-9._]{80,}",
        always,
    ),
    (r"\b3MVG9[A-Za-z0-9._]{60,}", always),
    (r"\b5A(?:ep|EP)861[A-Za-z0-9._]{70,}", always),
    (
        r"GGUF[\x01-\x03]\x00\x00\x00|\x93NUMPY|\x89HDF\r\n\x1a\n|PK\x03\x04",
        magic,
    ),
    (r#""[A-Za-z0-9+/=]{1024,}""#, blob),
    (
        r"\[\s*-?[0-9]+\.[0-9]+(?:\s*,\s*-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?){255,}\s*\]",
        always,
    ),
];

static NAIVE: OnceLock<Result<Naive, String>> = OnceLock::new();

impl Naive {
    /// The compiled detectors (built once).
    pub fn get() -> Result<&'static Naive, String> {
        NAIVE
            .get_or_init(|| {
                let mut detectors = Vec::new();
                for (pattern, check) in PATTERNS {
                    let re = RegexBuilder::new(pattern)
                        .unicode(false)
                        .dfa_size_limit(8 << 20)
                        .build()
                        .map_err(|e| format!("naive dlp regex: {e}"))?;
                    detectors.push(Detector { re, check: *check });
                }
                Ok(Naive {
                    detectors,
                    hot: Hotwords::new()?,
                    markers: Markers::new()?,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Validated matches in `body`, over all detectors (one pass each).
    pub fn count(&self, body: &[u8]) -> usize {
        let mut n = 0;
        for d in &self.detectors {
            for m in d.re.find_iter(body) {
                if (d.check)(self, body, m.start(), m.end()) {
                    n += 1;
                }
            }
        }
        n
    }
}

static CANDIDATES: OnceLock<Option<Regex>> = OnceLock::new();

/// The one-pass scanner's candidate search alone, with no validation: how
/// many candidates it yields. What the real scan cannot go below.
pub fn candidates_only(body: &[u8]) -> usize {
    let re = CANDIDATES.get_or_init(|| {
        RegexBuilder::new(&super::scanner::pattern())
            .unicode(false)
            .dfa_size_limit(8 << 20)
            .build()
            .ok()
    });
    let Some(re) = re else {
        return 0;
    };
    let mut n = 0;
    let mut pos = 0;
    while let Some(m) = re.find_at(body, pos) {
        n += 1;
        pos = m.end().max(m.start() + 1);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_finds_what_the_scanner_finds_on_plain_samples() {
        let naive = Naive::get().unwrap();
        let body =
            b"card 4111 1111 1111 1111, mail ann@example.com, IBAN GB82 WEST 1234 5698 7654 32, \
            key AKIAIOSFODNN7EXAMPLE, ip 203.0.113.7";
        // The five, plus the key id counted again as a keyword secret (the
        // real scanner drops a generic secret that overlaps a specific one).
        assert_eq!(naive.count(body), 6);
        assert_eq!(naive.count(b"nothing to see here"), 0);
    }
}
