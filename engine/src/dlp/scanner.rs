//! The one-pass scanner: one alternation regex for candidate shapes,
//! validators on candidates, chunks with overlap.

use super::config::{Kind, KindSet};
use super::context::{Class, Ctx, Hotwords};
use super::validators as v;
use super::weights::{self, Markers};
use super::{CHUNK_BYTES, OVERLAP_BYTES};
use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use regex::bytes::{Regex, RegexBuilder};
use std::sync::OnceLock;

/// A validated finding before the confidence filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) confidence: u8,
}

/// Which alternative of the candidate regex matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alt {
    PrivateKey,
    Magic,
    Base64,
    FloatArray,
    Email,
    Jwt,
    Aws,
    SfSession,
    SfConsumer,
    SfRefresh,
    Iban,
    Nie,
    Nif,
    Ipv4,
    Ipv6,
    Num,
    Keyword,
}

/// Candidate shapes, in priority order (leftmost match wins; at the same
/// start the earlier alternative wins). ASCII only: no Unicode classes or
/// word boundaries, so the lazy DFA never falls back on non-ASCII input.
/// Shapes are anchors, kept short so the DFA stays small and fast:
/// validators extend them (long tails, base64 strings, an e-mail's local
/// part before its `@`, an IPv6 address around its `::`). The alternatives
/// start differently enough that [`classify`] tells them apart from the
/// matched bytes alone, so no capture groups are resolved per match (that
/// was a third of the scan time).
const ALTS: &[(Alt, &str)] = &[
    (
        Alt::PrivateKey,
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
    ),
    (
        Alt::Magic,
        r"GGUF[\x01-\x03]\x00\x00\x00|\x93NUMPY[\x01-\x03]\x00|\x89HDF\r\n\x1a\n|PK\x03\x04|PK\x01\x02",
    ),
    (
        Alt::Base64,
        r#""(?:data:[A-Za-z0-9.+/-]{1,64};base64,)?[A-Za-z0-9+/_\\-]{24}"#,
    ),
    (
        Alt::FloatArray,
        r"\[[ \t\r\n]*-?[0-9][0-9.eE+-]*[ \t\r\n]*,",
    ),
    (
        Alt::Email,
        r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b",
    ),
    (
        Alt::Jwt,
        r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*",
    ),
    (Alt::Aws, r"\b(?:AKIA|ASIA)[A-Z2-7]{16}\b"),
    (Alt::SfSession, r"\b00[A-Za-z0-9]{13}(?:[A-Za-z0-9]{3})?!"),
    (Alt::SfConsumer, r"\b3MVG9[A-Za-z0-9._]{16}"),
    (Alt::SfRefresh, r"\b5A(?:ep|EP)861[A-Za-z0-9._]{16}"),
    (Alt::Iban, r"\b[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}"),
    (Alt::Nie, r"\b[XYZxyz]-?[0-9]{7}-?[A-Za-z]\b"),
    (Alt::Nif, r"\b[0-9]{8}-?[A-Za-z]\b"),
    (
        Alt::Ipv4,
        r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b",
    ),
    (
        Alt::Ipv6,
        r"::|\b[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:",
    ),
    (
        Alt::Num,
        concat!(
            // One digit run: NHS, national phones (7..=12), or a card (a
            // brand starts with 2..6; epoch millis and micros do not).
            r"\b[0-9]{7,12}\b|\b[2-6][0-9]{12,18}\b",
            // Cards printed 4-4-4-4(-x), Amex/Diners 4-6-5/4-6-4.
            r"|\b[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{1,4}",
            r"|\b[0-9]{4}[ -][0-9]{6}[ -][0-9]{4}",
            // NHS and North American phones 3-3-4.
            r"|\b[0-9]{3}[ -][0-9]{3}[ -][0-9]{4}",
            // E.164 with separators and an optional (area).
            r"|\+[1-9][0-9]{0,3}(?:[ -]?\(?[0-9]{1,5}\)?){2,6}",
            // National: (area) or a trunk 0, then groups. ISO dates do
            // not fit any of these shapes.
            r"|\(0?[0-9]{2,4}\)[ -]?[0-9]{3,4}[ -]?[0-9]{3,4}",
            r"|\b0[0-9]{1,4}[ -][0-9]{2,4}[ -]?[0-9]{2,4}",
        ),
    ),
    (
        Alt::Keyword,
        r"(?i:secret|token|passw(?:or)?d|pwd|api[_-]?key|apikey|credential|auth|bearer|key)",
    ),
];

/// Which alternative produced a match, from its bytes (see [`ALTS`]).
fn classify(m: &[u8]) -> Alt {
    let first = m.first().copied().unwrap_or(0);
    let last = m.last().copied().unwrap_or(0);
    match first {
        b'-' => return Alt::PrivateKey,
        b'"' => return Alt::Base64,
        b'[' => return Alt::FloatArray,
        b'@' => return Alt::Email,
        b':' => return Alt::Ipv6,
        b'+' | b'(' => return Alt::Num,
        0x93 | 0x89 => return Alt::Magic,
        _ => {}
    }
    if (m.starts_with(b"GGUF") && m.len() == 8)
        || (m.len() == 4 && (m.starts_with(b"PK\x03\x04") || m.starts_with(b"PK\x01\x02")))
    {
        return Alt::Magic;
    }
    if last == b'!' {
        return Alt::SfSession;
    }
    if m.starts_with(b"eyJ") && m.contains(&b'.') {
        return Alt::Jwt;
    }
    if m.starts_with(b"3MVG9") && m.len() > 8 {
        return Alt::SfConsumer;
    }
    if (m.starts_with(b"5Aep861") || m.starts_with(b"5AEP861")) && m.len() > 8 {
        return Alt::SfRefresh;
    }
    if m.contains(&b':') {
        return Alt::Ipv6;
    }
    if m.contains(&b'.') {
        return Alt::Ipv4;
    }
    if m.len() == 20 && (m.starts_with(b"AKIA") || m.starts_with(b"ASIA")) {
        return Alt::Aws;
    }
    if first.is_ascii_digit() {
        return if last.is_ascii_alphabetic() {
            Alt::Nif
        } else {
            Alt::Num
        };
    }
    if !m.iter().any(u8::is_ascii_digit) {
        return Alt::Keyword;
    }
    let second = m.get(1).copied().unwrap_or(0);
    if matches!(first, b'X' | b'Y' | b'Z' | b'x' | b'y' | b'z')
        && (second.is_ascii_digit() || second == b'-')
        && last.is_ascii_alphabetic()
    {
        return Alt::Nie;
    }
    Alt::Iban
}

/// Compiled detectors, built once.
pub(crate) struct Engine {
    re: Regex,
    hot: Hotwords,
    markers: Markers,
    pem_end: AhoCorasick,
    b64: GeneralPurpose,
    b64url: GeneralPurpose,
}

static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

/// The compiled detectors (built on first use).
pub(crate) fn engine() -> Result<&'static Engine, String> {
    ENGINE
        .get_or_init(Engine::build)
        .as_ref()
        .map_err(Clone::clone)
}

impl Engine {
    fn build() -> Result<Engine, String> {
        let pattern = ALTS
            .iter()
            .map(|(_, p)| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|");
        let re = RegexBuilder::new(&pattern)
            .unicode(false)
            .dfa_size_limit(8 << 20)
            .build()
            .map_err(|e| format!("dlp candidate regex: {e}"))?;
        let config = GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true);
        Ok(Engine {
            re,
            hot: Hotwords::new()?,
            markers: Markers::new()?,
            pem_end: AhoCorasick::new(["-----END "])
                .map_err(|e| format!("dlp private key end: {e}"))?,
            b64: GeneralPurpose::new(&alphabet::STANDARD, config),
            b64url: GeneralPurpose::new(&alphabet::URL_SAFE, config),
        })
    }
}

/// Scan `body` for every enabled kind; all confidences, by offset.
pub(crate) fn scan_raw(engine: &Engine, body: &[u8], enabled: KindSet) -> Vec<Raw> {
    let mut scan = Scan {
        eng: engine,
        body,
        en: enabled,
        out: Vec::new(),
        first_zip: None,
        pem_next: None,
        pem_searched: 0,
    };
    if enabled.any_weights()
        && let Some(hit) = weights::detect_start(&engine.markers, body, false)
    {
        scan.push(hit.kind, 0, body.len(), hit.confidence);
        return scan.out;
    }
    scan.run();
    finish(scan.out)
}

struct Scan<'a> {
    eng: &'a Engine,
    body: &'a [u8],
    en: KindSet,
    out: Vec<Raw>,
    /// First zip local header seen (a PyTorch archive found by its
    /// central directory starts there).
    first_zip: Option<usize>,
    /// Private-key END lines: known next one, and how far none was found.
    pem_next: Option<usize>,
    pem_searched: usize,
}

/// Base64 (standard and url-safe) characters and `=`.
const B64_TABLE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'-' | b'=');
        c += 1;
    }
    t
};

/// Length of the run of base64 characters (and `=`) at the start of
/// `hay`: 32 bytes at a time without early exit, so the loop is cheap on
/// the long blobs it exists for.
fn b64_run(hay: &[u8]) -> usize {
    let mut n = 0;
    let mut chunks = hay.chunks_exact(32);
    for chunk in &mut chunks {
        if !chunk
            .iter()
            .fold(true, |ok, &c| ok & B64_TABLE[usize::from(c)])
        {
            break;
        }
        n += 32;
    }
    n + hay
        .get(n..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&c| B64_TABLE[usize::from(c)])
        .count()
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn is_sf(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'_'
}

fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'+' | b'/' | b'=' | b'_' | b'.' | b'~' | b'-' | b'!' | b'$' | b'%' | b'*'
        )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Scan<'_> {
    fn push(&mut self, kind: Kind, start: usize, end: usize, confidence: u8) {
        if self.en.has(kind) && start < end && end <= self.body.len() {
            self.out.push(Raw {
                kind,
                start,
                end,
                confidence,
            });
        }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.body.get(at).copied()
    }

    fn prev(&self, at: usize) -> Option<u8> {
        at.checked_sub(1).and_then(|i| self.byte(i))
    }

    fn ctx(&self, at: usize) -> Ctx {
        self.eng.hot.before(self.body, at)
    }

    fn run(&mut self) {
        let len = self.body.len();
        let mut pos = 0;
        let mut chunk = 0;
        while chunk < len {
            let chunk_end = (chunk + CHUNK_BYTES).min(len);
            let window_end = (chunk_end + OVERLAP_BYTES).min(len);
            let Some(hay) = self.body.get(..window_end) else {
                return;
            };
            pos = pos.max(chunk);
            while pos < chunk_end {
                let Some(m) = self.eng.re.find_at(hay, pos) else {
                    break;
                };
                let (start, end) = (m.start(), m.end());
                if start >= chunk_end {
                    break;
                }
                let resume = self.candidate(classify(m.as_bytes()), start, end);
                pos = resume.max(start + 1);
            }
            chunk = chunk_end;
        }
    }

    /// Validate one candidate; answer where the search resumes.
    fn candidate(&mut self, alt: Alt, s: usize, e: usize) -> usize {
        match alt {
            Alt::PrivateKey => self.private_key(s, e),
            Alt::Magic => self.magic(s, e),
            Alt::Base64 => self.base64(s),
            Alt::FloatArray => self.float_array(s),
            Alt::Email => self.email(s, e),
            Alt::Jwt => self.jwt(s, e),
            Alt::Aws => {
                let confidence = if self.ctx(s).has(Class::Aws) { 99 } else { 90 };
                self.push(Kind::Aws, s, e, confidence);
                e
            }
            Alt::SfSession => {
                let tail = self.run_of(e, is_sf, 4096);
                if tail >= 80 {
                    self.push(Kind::SfSession, s, e + tail, 95);
                    return e + tail;
                }
                e
            }
            Alt::SfConsumer => self.sf_tail(s, e, Kind::SfConsumerKey, 5, 60),
            Alt::SfRefresh => self.sf_tail(s, e, Kind::SfRefreshToken, 7, 70),
            Alt::Iban => self.iban(s),
            Alt::Nie | Alt::Nif => self.nif(s, e),
            Alt::Ipv4 => self.ipv4(s, e),
            Alt::Ipv6 => self.ipv6(s, e),
            Alt::Num => self.numeric(s, e),
            Alt::Keyword => self.keyword(e),
        }
    }

    /// Length of the run of `class` bytes at `at`, at most `max`.
    fn run_of(&self, at: usize, class: fn(u8) -> bool, max: usize) -> usize {
        self.body
            .get(at..)
            .unwrap_or_default()
            .iter()
            .take(max)
            .take_while(|&&c| class(c))
            .count()
    }

    fn sf_tail(&mut self, s: usize, e: usize, kind: Kind, prefix: usize, min: usize) -> usize {
        let tail = self.run_of(s + prefix, is_sf, 4096);
        if tail >= min {
            let end = s + prefix + tail;
            self.push(kind, s, end, 95);
            return end;
        }
        e
    }

    /// Start of the next `-----END ` at or after `from` and before `limit`.
    /// Remembers what it searched, so many headers without an END line do
    /// not search the same bytes again.
    fn pem_end(&mut self, from: usize, limit: usize) -> Option<usize> {
        if let Some(p) = self.pem_next
            && p >= from
        {
            return (p < limit).then_some(p);
        }
        let start = from.max(self.pem_searched);
        if start >= limit {
            return None;
        }
        let found = self
            .eng
            .pem_end
            .find(self.body.get(start..limit).unwrap_or_default())
            .map(|m| start + m.start());
        match found {
            Some(p) => self.pem_next = Some(p),
            None => self.pem_searched = limit,
        }
        found
    }

    fn private_key(&mut self, s: usize, e: usize) -> usize {
        let len = self.body.len();
        let limit = (e + (64 << 10)).min(len);
        if let Some(p) = self.pem_end(e, limit) {
            let after = p + b"-----END ".len();
            let rest = self
                .body
                .get(after..(after + 80).min(len))
                .unwrap_or_default();
            if let Some(p) = find(rest, b"-----") {
                let end = after + p + 5;
                self.push(Kind::PrivateKey, s, end, 99);
                return end;
            }
        }
        let body = self.run_of(
            e,
            |c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, b'+' | b'/' | b'=' | b'\r' | b'\n' | b' ' | b'\t' | b'\\')
            },
            64 << 10,
        );
        self.push(Kind::PrivateKey, s, e + body, 90);
        e + body
    }

    fn magic(&mut self, s: usize, e: usize) -> usize {
        let len = self.body.len();
        let Some(at) = self.body.get(s..) else {
            return e;
        };
        let found = match at.first() {
            Some(b'G') => weights::gguf(at).map(|h| (h, s)),
            Some(0x93) => weights::npy(at).map(|h| (h, s)),
            Some(0x89) if weights::hdf5_offset_ok(s) => weights::hdf5(at, s).map(|h| (h, 0)),
            Some(b'P') if at.get(2) == Some(&3) => {
                self.first_zip.get_or_insert(s);
                weights::zip_local(at).then_some((
                    weights::Hit {
                        kind: Kind::WPytorchZip,
                        confidence: 95,
                    },
                    s,
                ))
            }
            Some(b'P') => weights::zip_central(at).then_some((
                weights::Hit {
                    kind: Kind::WPytorchZip,
                    confidence: 95,
                },
                self.first_zip.unwrap_or(s),
            )),
            _ => None,
        };
        match found {
            Some((hit, start)) if self.en.has(hit.kind) => {
                self.push(hit.kind, start, len, hit.confidence);
                len
            }
            _ => e,
        }
    }

    /// A JSON string of ≥ 1 KiB of base64 (standard or url-safe, `\/`
    /// escapes allowed, optionally a `data:` URL): decode its start and
    /// look for a weight format. Shorter strings are rescanned from inside.
    fn base64(&mut self, s: usize) -> usize {
        if !self.en.any_weights() {
            return s + 1;
        }
        let body = self.body;
        let mut start = s + 1;
        if body.get(start..).is_some_and(|r| r.starts_with(b"data:"))
            && let Some(p) = find(
                body.get(start..(start + 100).min(body.len()))
                    .unwrap_or_default(),
                b";base64,",
            )
        {
            start += p + 8;
        }
        let mut i = start;
        let mut escaped = false;
        loop {
            i += b64_run(body.get(i..).unwrap_or_default());
            if self.byte(i) == Some(b'\\') && self.byte(i + 1) == Some(b'/') {
                escaped = true;
                i += 2;
            } else {
                break;
            }
        }
        if self.byte(i) != Some(b'"') || i - start < 1024 {
            return s + 1;
        }
        let run = body.get(start..i).unwrap_or_default();
        if let Some(decoded) = self.decode_prefix(run, escaped)
            && let Some(hit) = weights::detect_start(&self.eng.markers, &decoded, true)
        {
            self.push(hit.kind, start, i, hit.confidence.saturating_sub(5));
        }
        i
    }

    fn decode_prefix(&self, run: &[u8], escaped: bool) -> Option<Vec<u8>> {
        const PREFIX: usize = 8192;
        let mut text: Vec<u8> = if escaped {
            run.iter()
                .copied()
                .filter(|&c| c != b'\\')
                .take(PREFIX)
                .collect()
        } else {
            run.get(..run.len().min(PREFIX))?.to_vec()
        };
        while text.last() == Some(&b'=') {
            text.pop();
        }
        text.truncate(text.len() / 4 * 4);
        let url = text.iter().any(|&c| c == b'-' || c == b'_');
        let engine = if url { &self.eng.b64url } else { &self.eng.b64 };
        engine.decode(&text).ok()
    }

    /// A JSON array of ≥ 256 numbers, at least half with a fraction or
    /// exponent: a tensor in disguise.
    fn float_array(&mut self, s: usize) -> usize {
        if !self.en.has(Kind::WFloatArray) {
            return s + 1;
        }
        let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
        let mut i = s + 1;
        let (mut count, mut fractional) = (0usize, 0usize);
        loop {
            while self.byte(i).is_some_and(ws) {
                i += 1;
            }
            if self.byte(i) == Some(b'-') {
                i += 1;
            }
            let digits = self.run_of(i, |c| c.is_ascii_digit(), usize::MAX);
            if digits == 0 {
                return s + 1;
            }
            i += digits;
            let mut frac = false;
            if self.byte(i) == Some(b'.') {
                let d = self.run_of(i + 1, |c| c.is_ascii_digit(), usize::MAX);
                if d == 0 {
                    return s + 1;
                }
                i += 1 + d;
                frac = true;
            }
            if matches!(self.byte(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(self.byte(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                let d = self.run_of(i, |c| c.is_ascii_digit(), usize::MAX);
                if d == 0 {
                    return s + 1;
                }
                i += d;
                frac = true;
            }
            count += 1;
            fractional += usize::from(frac);
            while self.byte(i).is_some_and(ws) {
                i += 1;
            }
            match self.byte(i) {
                Some(b',') => i += 1,
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return s + 1,
            }
        }
        if count >= 256 && fractional * 2 >= count {
            self.push(Kind::WFloatArray, s, i, 60);
            return i;
        }
        s + 1
    }

    /// `s` is the `@`: the local part is read backwards from it.
    fn email(&mut self, s: usize, e: usize) -> usize {
        if !self.en.has(Kind::Email) {
            return e;
        }
        let local =
            |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
        let floor = s.saturating_sub(64);
        let mut start = s;
        while start > floor && self.prev(start).is_some_and(local) {
            start -= 1;
        }
        if start == floor && self.prev(start).is_some_and(local) {
            return e;
        }
        while start < s && self.byte(start) == Some(b'.') {
            start += 1;
        }
        if start < s && self.body.get(start..e).is_some_and(v::email_ok) {
            self.push(Kind::Email, start, e, 90);
        }
        e
    }

    fn jwt(&mut self, s: usize, e: usize) -> usize {
        let body = self.body;
        let span = body.get(s..e).unwrap_or_default();
        let Some(d1) = span.iter().position(|&c| c == b'.') else {
            return e;
        };
        let Some(d2) = span
            .get(d1 + 1..)
            .and_then(|r| r.iter().position(|&c| c == b'.'))
        else {
            return e;
        };
        let end = s + d1 + 1 + d2 + 1;
        let end = end + self.run_of(end, is_b64url, 64 << 10);
        let header = span.get(..d1).unwrap_or_default();
        let ok = self
            .eng
            .b64url
            .decode(header)
            .ok()
            .and_then(|h| {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok()
            })
            .is_some_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string));
        if !ok {
            return e;
        }
        let confidence = if self.ctx(s).has(Class::Bearer) {
            99
        } else {
            95
        };
        self.push(Kind::Jwt, s, end, confidence);
        end
    }

    fn iban(&mut self, s: usize) -> usize {
        if !self.en.has(Kind::Iban) {
            return s + 1;
        }
        match v::iban_at(self.body, s) {
            Some(end) => {
                let confidence = if self.ctx(s).has(Class::Iban) { 98 } else { 85 };
                self.push(Kind::Iban, s, end, confidence);
                end
            }
            None => s + 1,
        }
    }

    fn nif(&mut self, s: usize, e: usize) -> usize {
        let mut id = [0u8; 12];
        let mut n = 0;
        for &c in self.body.get(s..e).unwrap_or_default() {
            if c == b'-' {
                continue;
            }
            let Some(slot) = id.get_mut(n) else {
                return e;
            };
            *slot = c.to_ascii_uppercase();
            n += 1;
        }
        if id.get(..n).is_some_and(v::es_nif) {
            let confidence = if self.ctx(s).has(Class::Nif) { 98 } else { 75 };
            self.push(Kind::EsNif, s, e, confidence);
        }
        e
    }

    fn ipv4(&mut self, s: usize, e: usize) -> usize {
        if self.prev(s) == Some(b'.')
            || (self.byte(e) == Some(b'.') && self.byte(e + 1).is_some_and(|c| c.is_ascii_digit()))
        {
            return e;
        }
        let Some(ip) = std::str::from_utf8(self.body.get(s..e).unwrap_or_default())
            .ok()
            .and_then(|t| t.parse::<std::net::Ipv4Addr>().ok())
        else {
            return e;
        };
        let ctx = self.ctx(s);
        let confidence = if ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast() {
            40
        } else if ctx.has(Class::Version) && ctx.wins_over(Class::Version, Class::Ip) {
            20
        } else if ctx.has(Class::Ip) {
            90
        } else {
            70
        };
        self.push(Kind::Ipv4, s, e, confidence);
        e
    }

    /// `s` is a `::` (the address may start before it) or the start of
    /// four colon-separated hex groups.
    fn ipv6(&mut self, s: usize, e: usize) -> usize {
        if !self.en.has(Kind::Ipv6) {
            return e;
        }
        let mut start = s;
        if self.byte(s) == Some(b':') {
            let floor = s.saturating_sub(40);
            while start > floor
                && self
                    .prev(start)
                    .is_some_and(|c| c.is_ascii_hexdigit() || c == b':')
            {
                start -= 1;
            }
        }
        if self
            .prev(start)
            .is_some_and(|p| p.is_ascii_alphanumeric() || matches!(p, b':' | b'.' | b'_'))
        {
            return e;
        }
        let ext = self.run_of(
            start,
            |c| c.is_ascii_hexdigit() || c == b':' || c == b'.',
            64,
        );
        let parse = |end: usize| -> Option<(std::net::Ipv6Addr, usize)> {
            let mut end = end;
            let bytes = self.body.get(start..end)?;
            let mut text = std::str::from_utf8(bytes).ok()?;
            while text.ends_with('.') || (text.ends_with(':') && !text.ends_with("::")) {
                text = text.get(..text.len() - 1)?;
                end -= 1;
            }
            if text.matches(':').count() < 2 || !text.bytes().any(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            if self
                .byte(end)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
            {
                return None;
            }
            text.parse().ok().map(|ip| (ip, end))
        };
        let Some((ip, end)) = parse(start + ext).or_else(|| parse(e)) else {
            return e;
        };
        let confidence = if ip.is_loopback() || ip.is_unspecified() {
            40
        } else if self.ctx(start).has(Class::Ip) {
            90
        } else {
            70
        };
        self.push(Kind::Ipv6, start, end, confidence);
        end.max(e)
    }

    /// A run of digits with single separators: a card, an NHS number or a
    /// phone, tried on the longest prefix of its digit groups first. The
    /// regex matched a shape; the run is re-read here to its real end.
    fn numeric(&mut self, s: usize, e: usize) -> usize {
        if !(self.en.has(Kind::Card) || self.en.has(Kind::Phone) || self.en.has(Kind::Nhs)) {
            return e;
        }
        if let Some(p) = self.prev(s) {
            if p.is_ascii_alphanumeric() || p == b'_' {
                return e;
            }
            if p == b'.' && s >= 2 && self.prev(s - 1).is_some_and(|c| c.is_ascii_digit()) {
                return e;
            }
        }
        let digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
        let plus = self.byte(s) == Some(b'+');
        let mut groups = [(0usize, 0usize); MAX_GROUPS];
        let mut ng = 0;
        let mut i = s + usize::from(plus);
        if self.byte(i) == Some(b'(') {
            i += 1;
        }
        let limit = s + 48;
        while i < limit && ng < MAX_GROUPS {
            let run = self.run_of(i, |c| c.is_ascii_digit(), limit - i);
            if run == 0 {
                break;
            }
            groups[ng] = (i, i + run);
            ng += 1;
            i += run;
            // One separator (space or dash), optionally opening a paren,
            // or a closing paren optionally followed by one.
            let skip = match (self.byte(i), self.byte(i + 1), self.byte(i + 2)) {
                (Some(b' ' | b'-'), n, _) if digit(n) => 1,
                (Some(b' ' | b'-'), Some(b'('), n) if digit(n) => 2,
                (Some(b')'), n, _) if digit(n) => 1,
                (Some(b')'), Some(b' ' | b'-'), n) if digit(n) => 2,
                _ => 0,
            };
            if skip == 0 {
                break;
            }
            i += skip;
        }
        let Some(&(_, run_end)) = groups.get(ng.wrapping_sub(1)) else {
            return e;
        };
        let next = self.byte(run_end);
        let glued = next.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            || (next == Some(b'.') && digit(self.byte(run_end + 1)));
        let usable = if glued { ng - 1 } else { ng };
        let mut ctx: Option<Ctx> = None;
        for k in (1..=usable).rev() {
            let Some(gs) = groups.get(..k) else {
                continue;
            };
            if let Some((kind, start, confidence)) = self.digits(s, gs, plus, &mut ctx) {
                let end = gs.last().map_or(e, |g| g.1);
                self.push(kind, start, end, confidence);
                return end;
            }
        }
        if glued && ng <= 1 {
            run_end.max(e)
        } else {
            groups[0].1
        }
    }

    fn digits(
        &self,
        s: usize,
        groups: &[(usize, usize)],
        plus: bool,
        ctx: &mut Option<Ctx>,
    ) -> Option<(Kind, usize, u8)> {
        let mut buf = [0u8; 20];
        let mut n = 0;
        let mut lens = [0usize; MAX_GROUPS];
        for (slot, &(a, b)) in lens.iter_mut().zip(groups) {
            *slot = b - a;
            for &c in self.body.get(a..b)? {
                *buf.get_mut(n)? = c;
                n += 1;
            }
        }
        let digits = buf.get(..n)?;
        let lens = lens.get(..groups.len())?;
        // The separator between groups when every gap is that one byte.
        let mut sep: Option<u8> = None;
        let mut simple = true;
        for w in groups.windows(2) {
            let gap = self.body.get(w[0].1..w[1].0)?;
            match (gap, sep) {
                ([c @ (b' ' | b'-')], None) => sep = Some(*c),
                ([c], Some(x)) if *c == x => {}
                _ => simple = false,
            }
        }
        let first = groups.first()?.0;
        let mut context = |this: &Self| *ctx.get_or_insert_with(|| this.ctx(s));

        if !plus {
            if (13..=19).contains(&n)
                && (groups.len() == 1 || (simple && card_grouping(lens)))
                && v::card_brand(digits).is_some()
                && v::luhn(digits)
            {
                let c = context(self);
                let confidence = if c.wins_over(Class::Card, Class::IdLike) {
                    95
                } else if c.has(Class::IdLike) {
                    30
                } else if groups.len() == 1 && v::epoch_like(digits) {
                    20
                } else if groups.len() > 1 {
                    70
                } else {
                    60
                };
                return Some((Kind::Card, first, confidence));
            }
            if n == 10 && (groups.len() == 1 || (simple && lens == [3, 3, 4])) && v::nhs(digits) {
                let c = context(self);
                if c.has(Class::Nhs) {
                    return Some((Kind::Nhs, first, 95));
                }
                if !c.has(Class::Phone) {
                    return Some((Kind::Nhs, first, 40));
                }
            }
        }
        if !self.en.has(Kind::Phone) {
            return None;
        }
        if plus {
            if (8..=15).contains(&n) && digits.first() != Some(&b'0') {
                let confidence = if context(self).has(Class::Phone) {
                    90
                } else {
                    70
                };
                return Some((Kind::Phone, s, confidence));
            }
            return None;
        }
        let date = sep == Some(b'-') && simple && (lens == [4, 2, 2] || lens == [2, 2, 4]);
        if (7..=13).contains(&n) && !date && context(self).has(Class::Phone) {
            return Some((Kind::Phone, s, 75));
        }
        None
    }

    /// `secret=…`, `"password": "…"`, `Authorization: Bearer …`: a keyword,
    /// its identifier tail, separators, then a high-entropy token starting
    /// within 30 bytes.
    fn keyword(&mut self, e: usize) -> usize {
        if !self.en.has(Kind::GenericSecret) {
            return e;
        }
        let mut i = e + self.run_of(
            e,
            |c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-',
            32,
        );
        let seps = self.run_of(
            i,
            |c| matches!(c, b'"' | b'\'' | b' ' | b'\t' | b':' | b'='),
            8,
        );
        if seps == 0 {
            return e;
        }
        i += seps;
        for scheme in [&b"bearer "[..], b"basic ", b"token "] {
            if self
                .body
                .get(i..i + scheme.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(scheme))
            {
                i += scheme.len();
                break;
            }
        }
        if i - e > 30 {
            return e;
        }
        let len = self.run_of(i, is_token, 4096);
        let Some(token) = self.body.get(i..i + len) else {
            return e;
        };
        if len < 20 || token.first() == Some(&b'/') || find(token, b"//").is_some() {
            return e;
        }
        if v::entropy(token) < 3.5 {
            return e;
        }
        let confidence = if v::uuid_shaped(token) {
            40
        } else if v::char_classes(token) >= 3 {
            85
        } else {
            75
        };
        self.push(Kind::GenericSecret, i, i + len, confidence);
        e
    }
}

/// Most digit groups one numeric candidate is split into.
const MAX_GROUPS: usize = 12;

/// Card print groupings: 4-4-4-4(-3), 4-4-4-1.., Amex 4-6-5, Diners 4-6-4.
fn card_grouping(lens: &[usize]) -> bool {
    if lens == [4, 6, 5] || lens == [4, 6, 4] {
        return true;
    }
    match lens.split_last() {
        Some((last, rest)) => {
            rest.len() >= 3 && rest.iter().all(|&l| l == 4) && (1..=4).contains(last)
        }
        None => false,
    }
}

/// Order by offset; drop a `generic_secret` that overlaps a more specific
/// finding or an earlier generic one; drop exact duplicates.
fn finish(mut out: Vec<Raw>) -> Vec<Raw> {
    out.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end), r.kind));
    out.dedup_by_key(|r| (r.kind, r.start));
    if out.iter().all(|r| r.kind != Kind::GenericSecret) {
        return out;
    }
    let specific: Vec<&Raw> = out
        .iter()
        .filter(|r| r.kind != Kind::GenericSecret)
        .collect();
    let mut max_end = Vec::with_capacity(specific.len());
    let mut m = 0;
    for r in &specific {
        m = m.max(r.end);
        max_end.push(m);
    }
    let overlaps_specific = |g: &Raw| {
        let upper = specific.partition_point(|r| r.start < g.end);
        upper > 0 && max_end.get(upper - 1).is_some_and(|&end| end > g.start)
    };
    let keep: Vec<bool> = {
        let mut last_generic_end = 0;
        out.iter()
            .map(|r| {
                if r.kind != Kind::GenericSecret {
                    return true;
                }
                if overlaps_specific(r) || r.start < last_generic_end {
                    return false;
                }
                last_generic_end = r.end;
                true
            })
            .collect()
    };
    out.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alternative_is_told_apart_by_its_bytes() {
        let eng = engine().unwrap();
        let b64 = format!("\"{}", "QUJD".repeat(10));
        let cases: Vec<(&[u8], Alt)> = vec![
            (b"-----BEGIN EC PRIVATE KEY-----", Alt::PrivateKey),
            (b"GGUF\x03\x00\x00\x00", Alt::Magic),
            (b"\x93NUMPY\x01\x00", Alt::Magic),
            (b"\x89HDF\r\n\x1a\n", Alt::Magic),
            (b"PK\x03\x04", Alt::Magic),
            (b"PK\x01\x02", Alt::Magic),
            (b64.as_bytes(), Alt::Base64),
            (b"[0.5, 1]", Alt::FloatArray),
            (b"ann@example.com", Alt::Email),
            (b"eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", Alt::Jwt),
            (b"AKIAIOSFODNN7EXAMPLE", Alt::Aws),
            (b"00D5g000004XyZ1!AQ", Alt::SfSession),
            (b"3MVG9lKcPoNINVBIPJjdw1J9LLM82Hn", Alt::SfConsumer),
            (b"5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJ", Alt::SfRefresh),
            (b"GB82 WEST 1234", Alt::Iban),
            (b"X1234567L", Alt::Nie),
            (b"x-1234567-l", Alt::Nie),
            (b"12345678Z", Alt::Nif),
            (b"203.0.113.7", Alt::Ipv4),
            (b"2001:db8::1", Alt::Ipv6),
            (b"2001:0db8:85a3:0000:0000", Alt::Ipv6),
            (b"4111111111111111", Alt::Num),
            (b"4111 1111 1111 1111", Alt::Num),
            (b"+44 20 7946 0958", Alt::Num),
            (b"(020) 7946 0958", Alt::Num),
            (b"020 7946 0958", Alt::Num),
            (b"943 476 5919", Alt::Num),
            (b"password", Alt::Keyword),
            (b"Api-Key", Alt::Keyword),
        ];
        for (text, alt) in cases {
            let m = eng.re.find(text).unwrap_or_else(|| panic!("{text:?}"));
            assert_eq!(
                classify(m.as_bytes()),
                alt,
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        // Shapes that are not candidates at all.
        for text in [
            &b"2024-01-15"[..],
            b"10:00:00",
            b"1700000000123",
            b"gw[9935]",
            b"+0000",
        ] {
            assert!(
                eng.re.find(text).is_none(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn base64_runs() {
        assert_eq!(b64_run(b"QUJD=\"x"), 5);
        let long = "QUJD".repeat(100) + "\"";
        assert_eq!(b64_run(long.as_bytes()), 400);
        assert_eq!(b64_run(b""), 0);
    }
}
