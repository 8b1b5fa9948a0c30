//! The one-pass scanner: one alternation regex for candidate shapes,
//! validators on candidates, and a window that can slide over a body
//! arriving in chunks.
//!
//! # Windows, and why a chunked scan equals a one-shot scan
//!
//! [`State::process`] scans a *window*: the bytes `body[base..end]`, with
//! `fin` telling whether anything follows. A one-shot scan is one window
//! holding the whole body with `fin` set. A streaming scan processes the
//! retained tail plus each new chunk, and the same code decides the same
//! way because of three rules:
//!
//! - Every alternative of the candidate regex is bounded
//!   ([`Engine::max_match`], computed from the pattern at build time), so a
//!   match that starts more than `max_match + 1` bytes before the window's
//!   end is the match the whole body would give; later starts wait.
//! - Validators read through accessors that know where the window ends.
//!   Reading past it while more may come marks the candidate *starved*:
//!   its pushes are undone and it is tried again once more bytes are
//!   there. Every validator reads a bounded distance ahead (the longest is
//!   a private-key block: 64 KiB to its END line), and at most
//!   [`LOOKBACK`] bytes behind its candidate (an e-mail's local part,
//!   hotwords, an IPv6 address before its `::`).
//! - Matches that may run for megabytes (a base64 blob in JSON, a float
//!   array, a weights file to the end of the body) are decided on a
//!   bounded prefix and then *continued*: a small state machine extends
//!   the finding chunk by chunk, hashing its bytes for the digest as they
//!   pass, without keeping them.
//!
//! The window is therefore never more than the longest lookahead plus
//! [`LOOKBACK`] plus the chunk being fed; `tests/dlp_props.rs` checks that
//! random chunkings of the corpus give exactly the one-shot findings.

use super::config::{Kind, KindSet};
use super::context::{Class, Ctx, Hotwords};
use super::validators as v;
use super::weights::{self, Markers};
use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use regex::bytes::{Regex, RegexBuilder};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::sync::OnceLock;

/// A validated finding before the confidence filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) kind: Kind,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) confidence: u8,
    /// First 16 hex chars of SHA-256 of the matched bytes; computed only
    /// for findings at or above the configured confidence.
    pub(crate) digest: Option<String>,
}

/// How far behind a candidate's start a validator may read.
pub const LOOKBACK: usize = 128;
/// The most any validator reads ahead of a candidate's start before it
/// decides (a private-key block's END line).
pub const LOOKAHEAD: usize = PEM_SPAN + 256;
/// Bytes at the start of a body that decide whether the body *is* a
/// weights file (every header check reads at most this much).
pub(crate) const START_SPAN: usize = 8 << 10;
/// How much of a weight-file header inside a body is read.
const MAGIC_AHEAD: usize = 8 << 10;
/// Shortest base64 string (characters) decoded to look for weights.
const B64_MIN: usize = 32;
/// A base64 string at least this long (characters) that holds no weights
/// is skipped as a blob; a shorter one is searched from inside.
const B64_BLOB: usize = 1024;
/// How many base64 characters are read and decoded before deciding.
const B64_PREFIX: usize = 8192;
/// Numbers read before a JSON array is judged a tensor.
const FLOAT_MIN: usize = 256;
/// Deepest nesting of a numeric array.
const FLOAT_DEPTH: u32 = 8;
/// Longest number token and whitespace run inside a numeric array.
const FLOAT_TOKEN: usize = 64;
/// How far a private key's END line is looked for.
const PEM_SPAN: usize = 64 << 10;

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
/// Every alternative is bounded in length (checked when the engine is
/// built). Shapes are anchors, kept short so the DFA stays small and fast:
/// validators extend them (an e-mail's domain and local part, a JWT's
/// segments, long tails, base64 strings, arrays). The alternatives start
/// differently enough that [`classify`] tells them apart from the matched
/// bytes alone, so no capture groups are resolved per match.
/// A word boundary, or a JSON escape (`\n`, `\r`, `\t`) right before:
/// inside JSON text `…\n4111…` the digits follow a line break. A match that
/// starts with the escape is handed on without it.
macro_rules! edge {
    () => {
        r"(?:\\[nrt]|\b)"
    };
}

const ALTS: &[(Alt, &str)] = &[
    (
        Alt::PrivateKey,
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
    ),
    (
        Alt::Magic,
        concat!(
            r"GGUF[\x01-\x03]\x00\x00\x00|GGUF\x00\x00\x00[\x02\x03]",
            r"|\x93NUMPY[\x01-\x03]\x00|\x89HDF\r\n\x1a\n|PK\x03\x04|PK\x01\x02"
        ),
    ),
    (
        Alt::Base64,
        r#""(?:data:[A-Za-z0-9.+/\\-]{1,64};base64,)?[A-Za-z0-9+/_\\-]{24}"#,
    ),
    (
        Alt::FloatArray,
        r"\[(?:[ \t\r\n]{0,64}\[){0,3}[ \t\r\n]{0,64}-?[0-9][0-9.eE+-]{0,30}[ \t\r\n]{0,64},",
    ),
    (Alt::Email, r"@[A-Za-z0-9]"),
    (Alt::Jwt, concat!(edge!(), r"eyJ[A-Za-z0-9_-]{8}")),
    (Alt::Aws, concat!(edge!(), r"(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    (
        Alt::SfSession,
        concat!(edge!(), r"00[A-Za-z0-9]{13}(?:[A-Za-z0-9]{3})?!"),
    ),
    (Alt::SfConsumer, concat!(edge!(), r"3MVG9[A-Za-z0-9._]{16}")),
    (
        Alt::SfRefresh,
        concat!(edge!(), r"5A(?:ep|EP)861[A-Za-z0-9._]{16}"),
    ),
    (
        Alt::Iban,
        concat!(edge!(), r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}"),
    ),
    (
        Alt::Nie,
        concat!(edge!(), r"[XYZxyz]-?[0-9]{7}-?[A-Za-z]\b"),
    ),
    (Alt::Nif, concat!(edge!(), r"[0-9]{8}-?[A-Za-z]\b")),
    (
        Alt::Ipv4,
        concat!(edge!(), r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b"),
    ),
    (
        Alt::Ipv6,
        concat!(
            r"::|",
            edge!(),
            r"[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"
        ),
    ),
    (
        Alt::Num,
        concat!(
            // One digit run: NHS, national phones (7..=12), or a card (a
            // brand starts with 2..6 or 8; epoch seconds, millis, micros
            // and nanos start with 1).
            edge!(),
            r"(?:[0-9]{7,12}\b|[2-68][0-9]{12,18}\b",
            // Cards printed 4-4-4-4(-x), Amex/Diners 4-6-5/4-6-4.
            r"|[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{1,4}",
            r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4}",
            // NHS and North American phones 3-3-4.
            r"|[0-9]{3}[ -][0-9]{3}[ -][0-9]{4}",
            // National with a trunk 0, then groups. ISO dates do not fit
            // any of these shapes.
            r"|0[0-9]{1,4}[ -][0-9]{2,4}[ -]?[0-9]{2,4})",
            // E.164 with separators and an optional (area).
            r"|\+[1-9][0-9]{0,3}(?:[ -]?\(?[0-9]{1,5}\)?){2,6}",
            // National: (area), then groups.
            r"|\(0?[0-9]{2,4}\)[ -]?[0-9]{3,4}[ -]?[0-9]{3,4}",
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
    if m.starts_with(b"eyJ") && m.len() == 11 {
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
    /// Longest possible match of `re`.
    max_match: usize,
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

/// The candidate pattern: every alternative, in order.
pub(crate) fn pattern() -> String {
    ALTS.iter()
        .map(|(_, p)| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|")
}

impl Engine {
    fn build() -> Result<Engine, String> {
        let pattern = pattern();
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(&pattern)
            .map_err(|e| format!("dlp candidate regex: {e}"))?;
        let max_match = hir
            .properties()
            .maximum_len()
            .ok_or("dlp candidate regex: an alternative is unbounded")?;
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
            max_match,
            hot: Hotwords::new()?,
            markers: Markers::new()?,
            pem_end: AhoCorasick::new(["-----END "])
                .map_err(|e| format!("dlp private key end: {e}"))?,
            b64: GeneralPurpose::new(&alphabet::STANDARD, config),
            b64url: GeneralPurpose::new(&alphabet::URL_SAFE, config),
        })
    }

    /// Longest possible candidate match, in bytes.
    #[cfg(test)]
    pub(crate) fn max_match(&self) -> usize {
        self.max_match
    }
}

/// How a long finding (or a skipped stretch) goes on past its decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cont {
    /// Base64 characters and `\/` escapes.
    B64,
    /// A numeric array: numbers, separators, brackets, to its close.
    Array { depth: u32 },
    /// To the end of the body (a weights file).
    ToEnd,
}

/// A finding (or a stretch to skip, when `finding` is none) whose end is
/// not known yet.
#[derive(Clone)]
struct Open {
    finding: Option<(Kind, usize, u8)>,
    /// Digest of the bytes so far (for reported findings only).
    hash: Option<Sha256>,
    /// Bytes before this are hashed.
    hashed_to: usize,
    /// The continuation's cursor: bytes before this belong to it.
    at: usize,
    cont: Cont,
}

/// What a validator decided.
enum Act {
    /// Search again from here.
    Resume(usize),
    /// A long finding (or skip) that goes on.
    Open(Open),
    /// A weights file from here to the end of the body.
    Terminal(Open),
}

/// Scanner state that lives across windows.
pub(crate) struct State {
    en: KindSet,
    min_conf: u8,
    /// Where the candidate search resumes.
    pos: usize,
    out: Vec<Raw>,
    /// The start of the body has been checked for a whole weights file.
    start_done: bool,
    first_zip: Option<usize>,
    /// Digest of the bytes from the first zip local header on (a PyTorch
    /// archive found by its central directory starts there).
    zip_hash: Option<(Sha256, usize)>,
    /// Private-key END lines: the next known one, and how far none was.
    pem_next: Option<usize>,
    pem_searched: usize,
    open: Option<Open>,
    terminal: Option<Open>,
    /// A starved candidate is retried once the window reaches this far.
    retry_at: usize,
}

impl State {
    pub(crate) fn new(en: KindSet, min_conf: u8) -> State {
        State {
            en,
            min_conf,
            pos: 0,
            out: Vec::new(),
            start_done: false,
            first_zip: None,
            zip_hash: None,
            pem_next: None,
            pem_searched: 0,
            open: None,
            terminal: None,
            retry_at: 0,
        }
    }

    /// Scan the window `data` = `body[base..base + data.len()]`; `fin`:
    /// nothing follows it.
    pub(crate) fn process(&mut self, eng: &Engine, data: &[u8], base: usize, fin: bool) {
        let end = base + data.len();
        if !fin && end < self.retry_at {
            return;
        }
        let mut scan = Scan {
            eng,
            data,
            base,
            end,
            fin,
            st: self,
            starved: Cell::new(false),
        };
        scan.run();
    }

    /// Where the retained window must start after [`State::process`].
    pub(crate) fn keep_from(&self) -> usize {
        if !self.start_done {
            return 0;
        }
        self.pos.saturating_sub(LOOKBACK)
    }

    /// Every finding, ordered, overlaps resolved.
    pub(crate) fn into_raw(self) -> Vec<Raw> {
        finish(self.out)
    }
}

/// Scan `body` in one window.
pub(crate) fn scan_raw(engine: &Engine, body: &[u8], enabled: KindSet, min_conf: u8) -> Vec<Raw> {
    let mut state = State::new(enabled, min_conf);
    state.process(engine, body, 0, true);
    state.into_raw()
}

/// One pass over one window.
struct Scan<'a, 's> {
    eng: &'a Engine,
    data: &'a [u8],
    base: usize,
    end: usize,
    fin: bool,
    st: &'s mut State,
    /// A validator wanted bytes the window does not have yet.
    starved: Cell<bool>,
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

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A JSON-style number token: whether it is one, and whether it has a
/// fraction or exponent.
fn number_token(t: &[u8]) -> Option<bool> {
    let mut i = usize::from(t.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let from = *i;
        while t.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > from
    };
    if !digits(&mut i) {
        return None;
    }
    let mut frac = false;
    if t.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return None;
        }
        frac = true;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
        frac = true;
    }
    (i == t.len()).then_some(frac)
}

impl<'a> Scan<'a, '_> {
    // ---- window access -------------------------------------------------

    /// Note that the window ended before a decision could be made.
    fn starve(&self) {
        if !self.fin {
            self.starved.set(true);
        }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        if at >= self.end {
            self.starve();
            return None;
        }
        self.data.get(at.checked_sub(self.base)?).copied()
    }

    /// The window's bytes, for the lifetime of the window.
    fn bytes(&self) -> &'a [u8] {
        self.data
    }

    fn prev(&self, at: usize) -> Option<u8> {
        at.checked_sub(1).and_then(|i| self.byte(i))
    }

    /// A JSON escape (`\n`, `\r`, `\t`) ends right before `at`.
    fn escape_before(&self, at: usize) -> bool {
        matches!(self.prev(at), Some(b'n' | b'r' | b't'))
            && at.checked_sub(1).and_then(|i| self.prev(i)) == Some(b'\\')
    }

    /// `body[a..b]`, or none (starving) when the window ends before `b`.
    fn get(&self, a: usize, b: usize) -> Option<&'a [u8]> {
        if b > self.end {
            self.starve();
            return None;
        }
        self.bytes()
            .get(a.checked_sub(self.base)?..b.checked_sub(self.base)?)
    }

    /// `body[a..b]` cut to the window, without starving.
    fn avail(&self, a: usize, b: usize) -> &'a [u8] {
        let a = a.clamp(self.base, self.end) - self.base;
        let b = b.clamp(self.base, self.end) - self.base;
        self.bytes().get(a..b.max(a)).unwrap_or_default()
    }

    /// Length of the run of `class` bytes at `at`, at most `max`. A run
    /// cut by the window's end starves.
    fn run_of(&self, at: usize, class: impl Fn(u8) -> bool, max: usize) -> usize {
        let hay = self.avail(at, at.saturating_add(max));
        let n = hay.iter().take_while(|&&c| class(c)).count();
        if n == hay.len() && n < max {
            self.starve();
        }
        n
    }

    fn ctx(&self, at: usize) -> Ctx {
        self.eng.hot.before(self.data, at.saturating_sub(self.base))
    }

    fn push(&mut self, kind: Kind, start: usize, end: usize, confidence: u8) {
        if self.st.en.has(kind) && start < end && end <= self.end && start >= self.base {
            let digest =
                (confidence >= self.st.min_conf).then(|| super::digest16(self.avail(start, end)));
            self.st.out.push(Raw {
                kind,
                start,
                end,
                confidence,
                digest,
            });
        }
    }

    /// A long finding (or skip, when `finding` is none) starting at
    /// `start`, whose continuation resumes at `at`.
    fn open(
        &self,
        finding: Option<(Kind, usize, u8)>,
        start: usize,
        at: usize,
        cont: Cont,
    ) -> Open {
        let finding = finding.filter(|(kind, _, _)| self.st.en.has(*kind));
        let hash = finding
            .filter(|(_, _, c)| *c >= self.st.min_conf)
            .map(|_| Sha256::new());
        Open {
            finding,
            hash,
            hashed_to: start,
            at,
            cont,
        }
    }

    /// Hash `[o.hashed_to, to)` into `o`'s digest.
    fn hash_into(&self, o: &mut Open, to: usize) {
        if let Some(h) = o.hash.as_mut() {
            h.update(self.avail(o.hashed_to, to));
        }
        o.hashed_to = o.hashed_to.max(to);
    }

    fn close(&mut self, o: Open, end: usize) {
        if let Some((kind, start, confidence)) = o.finding
            && start < end
        {
            let digest = o.hash.map(|h| {
                let d = h.finalize();
                hex::encode(d.get(..8).unwrap_or_default())
            });
            self.st.out.push(Raw {
                kind,
                start,
                end,
                confidence,
                digest,
            });
        }
    }

    // ---- the pass ------------------------------------------------------

    fn run(&mut self) {
        if !self.st.start_done {
            if !self.fin && self.end < START_SPAN {
                return;
            }
            self.st.start_done = true;
            if self.st.en.any_weights()
                && let Some(hit) =
                    weights::detect_start(&self.eng.markers, self.avail(0, START_SPAN), false)
                && self.st.en.has(hit.kind)
            {
                let o = self.open(Some((hit.kind, 0, hit.confidence)), 0, 0, Cont::ToEnd);
                self.st.terminal = Some(o);
            }
        }
        loop {
            if let Some(mut t) = self.st.terminal.take() {
                self.hash_into(&mut t, self.end);
                self.st.pos = self.end;
                if self.fin {
                    self.close(t, self.end);
                } else {
                    self.st.terminal = Some(t);
                }
                self.st.zip_hash = None;
                return;
            }
            if let Some(o) = self.st.open.take() {
                if self.advance(o) {
                    continue;
                }
                break;
            }
            let safe = if self.fin {
                self.end
            } else {
                self.end.saturating_sub(self.eng.max_match + 1)
            };
            let pos = self.st.pos;
            if pos >= safe {
                break;
            }
            let Some(m) = self.eng.re.find_at(self.data, pos - self.base) else {
                self.st.pos = safe;
                break;
            };
            let (s, e) = (self.base + m.start(), self.base + m.end());
            if s >= safe {
                self.st.pos = safe;
                break;
            }
            // A match led by a JSON escape starts after it.
            let (s, bytes) = match m.as_bytes() {
                [b'\\', _, rest @ ..] => (s + 2, rest),
                bytes => (s, bytes),
            };
            let mark = self.st.out.len();
            self.starved.set(false);
            let act = self.candidate(classify(bytes), bytes, s, e);
            if self.starved.get() {
                self.st.out.truncate(mark);
                self.st.pos = s;
                self.st.retry_at = self.end + (self.end - s).max(4096);
                break;
            }
            match act {
                Act::Resume(r) => self.st.pos = r.max(s + 1),
                Act::Open(o) => self.st.open = Some(o),
                Act::Terminal(t) => self.st.terminal = Some(t),
            }
        }
        if let Some((mut h, to)) = self.st.zip_hash.take() {
            h.update(self.avail(to, self.end));
            self.st.zip_hash = Some((h, to.max(self.end)));
        }
    }

    /// Extend an open finding through the window. True when it closed
    /// (the search goes on), false when the window ran out first.
    fn advance(&mut self, mut o: Open) -> bool {
        let (stop, done) = match o.cont {
            Cont::B64 => self.b64_cont(o.at),
            Cont::Array { depth } => {
                let (stop, done, depth) = self.array_cont(o.at, depth);
                o.cont = Cont::Array { depth };
                (stop, done)
            }
            Cont::ToEnd => (self.end, self.fin),
        };
        self.hash_into(&mut o, stop);
        o.at = stop;
        self.st.pos = stop;
        if done || self.fin {
            self.close(o, stop);
            true
        } else {
            self.st.open = Some(o);
            false
        }
    }

    /// Base64 characters and `\/` from `at`: where the run stops and
    /// whether that is known to be its end.
    fn b64_cont(&self, mut at: usize) -> (usize, bool) {
        loop {
            at += b64_run(self.avail(at, self.end));
            if at >= self.end {
                return (at, false);
            }
            if self.data.get(at - self.base) == Some(&b'\\') {
                match self.data.get(at + 1 - self.base) {
                    Some(b'/') => {
                        at += 2;
                        continue;
                    }
                    None => return (at, false),
                    Some(_) => {}
                }
            }
            return (at, true);
        }
    }

    /// The rest of a numeric array from `at` at nesting `depth`.
    fn array_cont(&self, mut at: usize, mut depth: u32) -> (usize, bool, u32) {
        for &c in self.avail(at, self.end) {
            match c {
                b'[' => depth += 1,
                b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return (at + 1, true, 0);
                    }
                }
                b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-' | b',' => {}
                c if is_ws(c) => {}
                _ => return (at, true, depth),
            }
            at += 1;
        }
        (at, false, depth)
    }

    /// Validate one candidate.
    fn candidate(&mut self, alt: Alt, m: &[u8], s: usize, e: usize) -> Act {
        let resume = match alt {
            Alt::PrivateKey => self.private_key(s, e),
            Alt::Magic => return self.magic(s, e),
            Alt::Base64 => return self.base64(s, m),
            Alt::FloatArray => return self.float_array(s),
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
                    e + tail
                } else {
                    e
                }
            }
            Alt::SfConsumer => self.sf_tail(s, e, Kind::SfConsumerKey, 5, 60),
            Alt::SfRefresh => self.sf_tail(s, e, Kind::SfRefreshToken, 7, 70),
            Alt::Iban => self.iban(s),
            Alt::Nie | Alt::Nif => self.nif(s, e),
            Alt::Ipv4 => self.ipv4(s, e),
            Alt::Ipv6 => self.ipv6(s, e),
            Alt::Num => self.numeric(s, e),
            Alt::Keyword => self.keyword(e),
        };
        Act::Resume(resume)
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

    /// Start of the first `-----END ` at or after `from` and before
    /// `limit`. Remembers what it searched, so many headers without an
    /// END line do not search the same bytes again.
    fn pem_end(&mut self, from: usize, limit: usize) -> Option<usize> {
        if let Some(p) = self.st.pem_next
            && p >= from
        {
            return (p < limit).then_some(p);
        }
        let start = from.max(self.st.pem_searched);
        let lim = limit.min(self.end);
        let found = self
            .eng
            .pem_end
            .find(self.avail(start, lim))
            .map(|m| start + m.start());
        match found {
            Some(p) => self.st.pem_next = Some(p),
            None => {
                // An END line may straddle `lim`: only what lies wholly
                // before it is known to be clear.
                self.st.pem_searched = lim.saturating_sub(8).max(self.st.pem_searched);
                if limit > self.end {
                    self.starve();
                }
            }
        }
        found
    }

    fn private_key(&mut self, s: usize, e: usize) -> usize {
        if let Some(p) = self.pem_end(e, e + PEM_SPAN) {
            let after = p + b"-----END ".len();
            let rest = self.avail(after, after + 80);
            if let Some(q) = find(rest, b"-----") {
                let end = after + q + 5;
                self.push(Kind::PrivateKey, s, end, 99);
                return end;
            }
            if after + 80 > self.end {
                self.starve();
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

    fn magic(&mut self, s: usize, e: usize) -> Act {
        if s + MAGIC_AHEAD > self.end {
            self.starve();
        }
        let at = self.avail(s, s + MAGIC_AHEAD);
        let pytorch = weights::Hit {
            kind: Kind::WPytorchZip,
            confidence: 95,
        };
        let found = match at.first() {
            Some(b'G') => weights::gguf(at).map(|h| (h, s)),
            Some(0x93) => weights::npy(at).map(|h| (h, s)),
            Some(0x89) if weights::hdf5_offset_ok(s) => weights::hdf5(at, s).map(|h| (h, s)),
            Some(b'P') if at.get(2) == Some(&3) => {
                if self.st.first_zip.is_none() {
                    self.st.first_zip = Some(s);
                    self.st.zip_hash = Some((Sha256::new(), s));
                }
                weights::zip_local(at).then_some((pytorch, s))
            }
            Some(b'P') => {
                weights::zip_central(at).then_some((pytorch, self.st.first_zip.unwrap_or(s)))
            }
            _ => None,
        };
        match found {
            Some((hit, start)) if self.st.en.has(hit.kind) => {
                let mut o = self.open(Some((hit.kind, start, hit.confidence)), s, s, Cont::ToEnd);
                if start < s {
                    // From the first zip header: its bytes are hashed already.
                    match (&self.st.zip_hash, o.hash.is_some()) {
                        (Some((h, to)), true) => {
                            o.hash = Some(h.clone());
                            o.hashed_to = *to;
                        }
                        _ => o.hashed_to = start,
                    }
                }
                Act::Terminal(o)
            }
            _ => Act::Resume(e),
        }
    }

    /// A JSON string of base64 (standard or url-safe, `\/` escapes
    /// allowed, optionally a `data:` URL): its decoded start is checked
    /// for a weight format or a raw float32 tensor. Up to [`B64_PREFIX`]
    /// characters are read to decide; a longer run is then followed to its
    /// end without keeping it (a finding when it held weights, skipped
    /// otherwise). Strings under [`B64_BLOB`] without weights are searched
    /// again from inside (a token, an id).
    fn base64(&mut self, s: usize, m: &[u8]) -> Act {
        if !self.st.en.any_weights() {
            return Act::Resume(s + 1);
        }
        let start = match find(m, b";base64,") {
            Some(p) => s + p + 8,
            None => s + 1,
        };
        let cap = start + B64_PREFIX;
        let mut i = start;
        let mut escaped = false;
        loop {
            i += self.run_of(i, |c| B64_TABLE[usize::from(c)], cap - i);
            if i >= cap {
                break;
            }
            if self.byte(i) == Some(b'\\') && self.byte(i + 1) == Some(b'/') {
                escaped = true;
                i += 2;
            } else {
                break;
            }
        }
        if self.starved.get() {
            return Act::Resume(s + 1);
        }
        let long = i >= cap;
        if !long && (self.byte(i) != Some(b'"') || i - start < B64_MIN) {
            return Act::Resume(s + 1);
        }
        let hit = self.weights_in_base64(self.avail(start, i), escaped);
        let finding = hit.map(|h| (h.kind, start, h.confidence.saturating_sub(5)));
        if long {
            return Act::Open(self.open(finding, start, i, Cont::B64));
        }
        match finding {
            Some((kind, start, confidence)) => self.push(kind, start, i, confidence),
            // A short string may be a token, not a blob: look inside it.
            None if i - start < B64_BLOB => return Act::Resume(s + 1),
            None => {}
        }
        Act::Resume(i)
    }

    /// A weight format, or a raw float32 tensor, at the start of what a
    /// base64 run decodes to.
    fn weights_in_base64(&self, run: &[u8], escaped: bool) -> Option<weights::Hit> {
        // Most short strings are not weights: decode 12 bytes first.
        let (format, floats) = if run.len() < 1024 {
            let head = self.decode_prefix(run, escaped, 16)?;
            let lead = head.first().copied()?;
            let safetensors = head.get(4..8) == Some(&[0, 0, 0, 0]) && head.get(8) == Some(&b'{');
            let format = matches!(lead, b'G' | 0x93 | 0x89 | b'P' | 0x80 | 0x08) || safetensors;
            (format, false)
        } else {
            (true, true)
        };
        if !format {
            return None;
        }
        let decoded = self.decode_prefix(run, escaped, B64_PREFIX)?;
        if format && let Some(hit) = weights::detect_start(&self.eng.markers, &decoded, true) {
            return Some(hit);
        }
        (floats && weights::f32_plausible(&decoded, 2048)).then_some(weights::Hit {
            kind: Kind::WFloatArray,
            confidence: 75,
        })
    }

    fn decode_prefix(&self, run: &[u8], escaped: bool, chars: usize) -> Option<Vec<u8>> {
        let mut text: Vec<u8> = if escaped {
            run.iter()
                .copied()
                .filter(|&c| c != b'\\')
                .take(chars)
                .collect()
        } else {
            run.get(..run.len().min(chars))?.to_vec()
        };
        while text.last() == Some(&b'=') {
            text.pop();
        }
        text.truncate(text.len() / 4 * 4);
        let url = run.iter().take(B64_PREFIX).any(|&c| c == b'-' || c == b'_');
        let engine = if url { &self.eng.b64url } else { &self.eng.b64 };
        engine.decode(&text).ok()
    }

    /// A JSON array (nested up to [`FLOAT_DEPTH`]) whose first
    /// [`FLOAT_MIN`] numbers are at least half fractional: a tensor in
    /// disguise. Decided on those numbers, then followed to its close.
    fn float_array(&mut self, s: usize) -> Act {
        if !self.st.en.has(Kind::WFloatArray) {
            return Act::Resume(s + 1);
        }
        let reject = Act::Resume(s + 1);
        let mut i = s;
        let (mut depth, mut count, mut fractional) = (0u32, 0usize, 0usize);
        loop {
            let Some(c) = self.byte(i) else {
                return reject;
            };
            match c {
                b'[' => {
                    depth += 1;
                    if depth > FLOAT_DEPTH {
                        return reject;
                    }
                    i += 1;
                }
                b']' => {
                    depth = depth.saturating_sub(1);
                    i += 1;
                    if depth == 0 {
                        // Closed before FLOAT_MIN numbers: not a tensor.
                        return reject;
                    }
                }
                b',' => i += 1,
                c if is_ws(c) => {
                    let n = self.run_of(i, is_ws, FLOAT_TOKEN + 1);
                    if n > FLOAT_TOKEN {
                        return reject;
                    }
                    i += n;
                }
                b'-' | b'0'..=b'9' => {
                    let n = self.run_of(
                        i,
                        |c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'),
                        FLOAT_TOKEN + 1,
                    );
                    let Some(frac) = self.get(i, i + n).and_then(number_token) else {
                        return reject;
                    };
                    if n > FLOAT_TOKEN {
                        return reject;
                    }
                    count += 1;
                    fractional += usize::from(frac);
                    i += n;
                    if count == FLOAT_MIN {
                        if fractional * 2 < count {
                            return reject;
                        }
                        let f = Some((Kind::WFloatArray, s, 60));
                        return Act::Open(self.open(f, s, i, Cont::Array { depth }));
                    }
                }
                _ => return reject,
            }
        }
    }

    /// `s` is the `@`: the domain is read forward (labels, then a final
    /// label of 2..=24 letters at a word boundary, the longest that fits,
    /// as the regex `@L(\.L)*\.[A-Za-z]{2,24}\b` would match) and the
    /// local part backwards.
    fn email(&mut self, s: usize, e: usize) -> usize {
        if !self.en_has(Kind::Email) {
            return e;
        }
        let d0 = s + 1;
        let n = self.run_of(
            d0,
            |c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.',
            255,
        );
        let next = self.byte(d0 + n);
        let text = self.avail(d0, d0 + n);
        // Labels up to the first empty one (a domain has at most 127).
        let mut labels = [(0usize, 0usize); 128];
        let mut nl = 0;
        let mut at = 0;
        for part in text.split(|&c| c == b'.') {
            let Some(slot) = labels.get_mut(nl) else {
                break;
            };
            if part.is_empty() {
                break;
            }
            *slot = (at, at + part.len());
            nl += 1;
            at += part.len() + 1;
        }
        let mut dend = None;
        for j in (1..nl).rev() {
            let Some(&(a, b)) = labels.get(j) else {
                continue;
            };
            let label = text.get(a..b).unwrap_or_default();
            let letters = label.iter().take_while(|c| c.is_ascii_alphabetic()).count();
            if !(2..=24).contains(&letters) {
                continue;
            }
            let after = if letters < label.len() {
                label.get(letters).copied()
            } else if b < text.len() {
                text.get(b).copied()
            } else {
                next
            };
            if after.is_none_or(|c| !is_word(c)) {
                dend = Some(d0 + a + letters);
                break;
            }
        }
        let Some(dend) = dend else {
            return e;
        };
        let local =
            |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
        let floor = s.saturating_sub(64);
        let mut start = s;
        while start > floor && self.prev(start).is_some_and(local) {
            start -= 1;
        }
        if start == floor && self.prev(start).is_some_and(local) {
            return dend;
        }
        if start < s && self.prev(start) == Some(b'\\') {
            // `\nann@…` in JSON text: the local part starts after the escape.
            start += 1;
        }
        while start < s && self.byte(start) == Some(b'.') {
            start += 1;
        }
        if start < s
            && self.avail(start, dend).len() == dend - start
            && v::email_ok(self.avail(start, dend))
        {
            self.push(Kind::Email, start, dend, 90);
        }
        dend
    }

    fn en_has(&self, kind: Kind) -> bool {
        self.st.en.has(kind)
    }

    /// `eyJ` + header `.` payload `.` signature; the header must decode to
    /// a JSON object with an `alg`.
    fn jwt(&mut self, s: usize, e: usize) -> usize {
        let h = self.run_of(s, is_b64url, 8192);
        if self.byte(s + h) != Some(b'.') {
            return e;
        }
        let p0 = s + h + 1;
        let p = self.run_of(p0, is_b64url, 64 << 10);
        if p == 0 || self.byte(p0 + p) != Some(b'.') {
            return e;
        }
        let g0 = p0 + p + 1;
        let end = g0 + self.run_of(g0, is_b64url, 64 << 10);
        let ok = self
            .eng
            .b64url
            .decode(self.avail(s, s + h))
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
        if !self.en_has(Kind::Iban) {
            return s + 1;
        }
        // Country, check digits, up to 30 characters in groups with a
        // space each, and the byte after: 48 bytes decide.
        if s + 48 > self.end {
            self.starve();
        }
        match v::iban_at(self.avail(s, s + 48), 0) {
            Some(len) => {
                let confidence = if self.ctx(s).has(Class::Iban) { 98 } else { 85 };
                self.push(Kind::Iban, s, s + len, confidence);
                s + len
            }
            None => s + 1,
        }
    }

    fn nif(&mut self, s: usize, e: usize) -> usize {
        let mut id = [0u8; 12];
        let mut n = 0;
        for &c in self.avail(s, e) {
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
        let Some(ip) = std::str::from_utf8(self.avail(s, e))
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
        if !self.en_has(Kind::Ipv6) {
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
        if !self.escape_before(start)
            && self
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
            let bytes = self.get(start, end)?;
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
        if !(self.en_has(Kind::Card) || self.en_has(Kind::Phone) || self.en_has(Kind::Nhs)) {
            return e;
        }
        if let Some(p) = self.prev(s)
            && !self.escape_before(s)
        {
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
            for &c in self.get(a, b)? {
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
            let gap = self.get(w[0].1, w[1].0)?;
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
        if !self.en_has(Kind::Phone) {
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
        if !self.en_has(Kind::GenericSecret) {
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
                .get(i, i + scheme.len())
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
        let token = self.avail(i, i + len);
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
        let floats = "[0.5, 1]";
        let cases: Vec<(&[u8], Alt)> = vec![
            (b"-----BEGIN EC PRIVATE KEY-----", Alt::PrivateKey),
            (b"GGUF\x03\x00\x00\x00", Alt::Magic),
            (b"GGUF\x00\x00\x00\x03", Alt::Magic),
            (b"\x93NUMPY\x01\x00", Alt::Magic),
            (b"\x89HDF\r\n\x1a\n", Alt::Magic),
            (b"PK\x03\x04", Alt::Magic),
            (b"PK\x01\x02", Alt::Magic),
            (b64.as_bytes(), Alt::Base64),
            (floats.as_bytes(), Alt::FloatArray),
            (b"[[0.5, 1], [2, 3]]", Alt::FloatArray),
            (b"ann@example.com", Alt::Email),
            (b"eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.c2ln", Alt::Jwt),
            (b"AKIAIOSFODNN7EXAMPLE", Alt::Aws),
            (b"AKIA1234567890ABCDEF", Alt::Aws),
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
            (b"8171999927660000", Alt::Num),
            (b"4111 1111 1111 1111", Alt::Num),
            (b"+44 20 7946 0958", Alt::Num),
            (b"(020) 7946 0958", Alt::Num),
            (b"020 7946 0958", Alt::Num),
            (b"943 476 5919", Alt::Num),
            (b"\\n4111111111111111", Alt::Num),
            (b"\\tAKIAIOSFODNN7EXAMPLE", Alt::Aws),
            (b"password", Alt::Keyword),
            (b"Api-Key", Alt::Keyword),
        ];
        for (text, alt) in cases {
            let m = eng.re.find(text).unwrap_or_else(|| panic!("{text:?}"));
            let bytes = match m.as_bytes() {
                [b'\\', _, rest @ ..] => rest,
                bytes => bytes,
            };
            assert_eq!(classify(bytes), alt, "{:?}", String::from_utf8_lossy(text));
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
    fn the_candidate_regex_is_bounded() {
        let eng = engine().unwrap();
        assert!(eng.max_match() > 0 && eng.max_match() < LOOKBACK * 4);
    }

    #[test]
    fn base64_runs() {
        assert_eq!(b64_run(b"QUJD=\"x"), 5);
        let long = "QUJD".repeat(100) + "\"";
        assert_eq!(b64_run(long.as_bytes()), 400);
        assert_eq!(b64_run(b""), 0);
    }

    #[test]
    fn number_tokens() {
        assert_eq!(number_token(b"-1.5e-3"), Some(true));
        assert_eq!(number_token(b"42"), Some(false));
        assert_eq!(number_token(b"1e5"), Some(true));
        assert_eq!(number_token(b"1."), None);
        assert_eq!(number_token(b"1-2"), None);
        assert_eq!(number_token(b"-"), None);
    }
}
