//! Data loss prevention: detectors for personal data, secrets and model
//! weights in request and response bodies, redaction of what they find,
//! and field minimisation per data flow.
//!
//! Everything here is pure computation over bytes: no I/O, no clocks, no
//! threads. It compiles natively and for `wasm32-wasip2` alike.
//!
//! # How a scan works
//!
//! One pass. A single alternation regex (`regex::bytes`, ASCII only, so
//! the lazy DFA never gives up on non-ASCII bytes) finds *candidate shapes*:
//! the `@` of an e-mail address, digit runs in card / NHS / phone shapes,
//! IBAN and id prefixes, secret anchors (`AKIA`, `eyJ…`, `3MVG9` …), secret
//! keywords, JSON strings that may hold large base64 blobs, JSON arrays of
//! numbers, and the magic bytes of weight formats. The alternatives start
//! differently, so the matched bytes alone say which one matched: the scan
//! uses `find_at` and never resolves capture groups (resolving them per
//! match cost a third of the scan time). Each candidate goes to its
//! validator (Luhn and brand tables, mod-97, mod-11, control letters,
//! `std::net` parsing, base64 and JSON decoding, header parsing); only
//! validated candidates become findings. Validators may extend a candidate
//! (an e-mail's local part before its `@`, a long token tail, a base64
//! string, a private-key block) and the search resumes after what they
//! consumed. Hotwords in the 40 bytes before a candidate are found with an
//! Aho-Corasick automaton and move its confidence; another one finds the
//! torch/numpy globals of pickles and the `onnx` marker. (An Aho-Corasick
//! pass over the whole body as a prefilter for keywords and magics was
//! measured and dropped: on CRM JSON it cost more than it took out of the
//! regex.)
//!
//! # Streaming
//!
//! Bodies often arrive in chunks (Envoy, streaming hosts). [`StreamScan`]
//! takes them one at a time and answers exactly what [`scan`] answers for
//! the whole body: the same findings, offsets counted from the body's
//! start, the same digests. It keeps only a window: [`LOOKBACK`] bytes
//! before where the search stands, plus what a pending candidate needs
//! ahead (at most [`LOOKAHEAD`]), plus the chunk being fed. Findings that
//! run for megabytes (a base64 blob, a float array, a weights file) are
//! decided on a bounded prefix and then followed chunk by chunk, hashed as
//! they pass. A match across a chunk edge is found once, whole. The
//! one-shot scan is the same machinery over one window that is known to
//! be the whole body; `tests/dlp_props.rs` checks random chunkings against
//! it.
//!
//! A body whose first 8 KiB show a weights file (safetensors, GGUF,
//! NumPy, HDF5, PyTorch zip, pickle, ONNX) is one finding covering the
//! whole body and is not scanned further for text; so is a weights file
//! that starts inside a body (after a multipart preamble), from its magic
//! to the end. Base64 strings inside JSON (32 characters or more) are
//! decoded only as far as needed to recognise a weight format or a raw
//! float32 tensor; the decoded bytes are not scanned for personal data.
//!
//! Throughput: see BENCHMARKS.md ("DLP"); `make bench` measures it on the
//! 10 MB corpus of `scripts/gen_dlp_corpus.py`.
//!
//! # Kinds
//!
//! `card`, `iban`, `email`, `phone`, `nhs_number`, `es_nif`, `ipv4`,
//! `ipv6`, `aws_access_key_id`, `private_key`, `jwt`, `generic_secret`,
//! `salesforce_session_id`, `salesforce_consumer_key`,
//! `salesforce_refresh_token`, and the weight formats
//! `model_weights.safetensors`, `model_weights.gguf`, `model_weights.npy`,
//! `model_weights.hdf5`, `model_weights.pytorch_zip`,
//! `model_weights.pickle`, `model_weights.onnx`,
//! `model_weights.float_array`. In [`DlpConfig::detectors`] and
//! [`DlpConfig::redaction`], `model_weights` stands for all of the latter.
//!
//! # Confidence rules (0..=100; [`DlpConfig::min_confidence`] drops below)
//!
//! "Context" is a hotword of the kind's class ending within 40 bytes
//! before the candidate, at a word start (camelCase counts). Where two
//! classes compete, the hotword nearest the candidate wins.
//!
//! | kind | without context | with context | not a finding at all |
//! |------|-----------------|--------------|----------------------|
//! | `card` | 60 one digit run, 70 grouped 4-4-4-4 / 4-6-5 style | 95 (card, visa, cc, payment, credit, debit, pan, cvv …) | Luhn fails; prefix/length not a brand (Visa 4: 13/16/19; MC 51-55, 2221-2720: 16; Amex 34/37: 15; Discover 6011/65/644-649: 16-19; JCB 3528-3589: 16-19; Diners 36/300-305/3095/38/39: 14-19; UnionPay 62, 8100-8171: 16-19) |
//! | `card`, nearest context is an id word (order, invoice, ref, #, id, tracking, ticket, sku, txn, timestamp …) | 30 | | |
//! | `card`, one digit run of 10/13/16/19 digits that reads as epoch s/ms/µs/ns in 2000..2038, no card context (defensive: no brand prefix overlaps such timestamps today) | 20 | | |
//! | `iban` | 85 | 98 (iban, account, bank, sepa, bic, swift …) | mod-97 ≠ 1, unknown country, wrong length |
//! | `email` | 90 | 90 | bad local part / domain labels |
//! | `phone` with `+` (country code, 8..=15 digits) | 70 | 90 (phone, tel, mobile, cell, call, fax, sms …) | |
//! | `phone` national (7..=13 digits, no `+`) | not reported | 75 | |
//! | `nhs_number` (10 digits, 3-3-4 allowed) | 40 | 95 (nhs, patient, health) | mod-11 fails |
//! | `es_nif` (DNI 8 digits + letter, NIE X/Y/Z) | 75 | 98 (dni, nif, nie, documento …) | wrong control letter |
//! | `ipv4` | 70; loopback/unspecified/broadcast 40; nearest context a version word (version, ver, build, release) 20 | 90 (ip, addr, client, remote, host, src, dst …) | part of a longer dotted number, glued to a word (`v1.2.3.4`), octet > 255 or with a leading zero |
//! | `ipv6` (needs `::` or 8 groups) | 70; loopback/unspecified 40 | 90 | `std::net` parse fails, or glued to an identifier (`Foo::bar`) |
//! | `aws_access_key_id` | 90 | 99 (aws, access) | |
//! | `private_key` | 99 with its END line; 90 header without one | | |
//! | `jwt` | 95 | 99 (bearer, authorization, jwt, token) | header is not base64url JSON with `alg` |
//! | `generic_secret` | 75; 85 with ≥ 3 character classes; 40 UUID-shaped | | no keyword (secret, token, password, passwd, pwd, api_key, apikey, credential, auth, bearer, key) in the 30 bytes before; < 20 chars; entropy < 3.5 bits/char; URL/path-like |
//! | `salesforce_session_id` (`00` + 13 or 16 alnum + `!` + ≥ 80 of `[A-Za-z0-9._]`) | 95 | | |
//! | `salesforce_consumer_key` (`3MVG9` + ≥ 60) / `salesforce_refresh_token` (`5Aep861`/`5AEP861` + ≥ 70) | 95 | | |
//! | `model_weights.safetensors` | 99 full header parsed, 90 header prefix | | |
//! | `model_weights.gguf` | 97 plausible counts, 90 magic + version only | | |
//! | `model_weights.npy` 99, `.hdf5` 95 at 0 / 90 at 512·2ⁿ (the finding starts at the signature), `.pytorch_zip` 95, `.pickle` 90, `.onnx` 85 (95 with an `onnx` string) | | | |
//! | weights inside a JSON base64 string (≥ 32 characters) | format − 5 | | |
//! | `model_weights.float_array` from a base64 string (≥ 1 KiB) that decodes to a raw float32 tensor (95% of values 0 or 1e-6..1e4) | 70 | | |
//! | `model_weights.float_array` (JSON array, nested up to 8 deep; of its first 256 numbers at least half with a fraction or exponent) | 60 | | |
//!
//! Overlaps: a `generic_secret` that overlaps a more specific finding (a
//! JWT, an AWS key …) is dropped.
//!
//! Findings never hold matched text: kind, offset, length, confidence and
//! a digest (first 16 hex chars of SHA-256 of the matched bytes; it is a
//! correlation handle, not anonymisation: low-entropy values such as card
//! numbers can be brute-forced from it).

mod config;
mod context;
mod json;
mod minimise;
/// The benchmark's baseline: one regex pass per detector. Not for use.
#[doc(hidden)]
pub mod naive;
mod redact;
mod scanner;
#[cfg(test)]
mod tests;
mod validators;
mod weights;

pub use config::{DlpConfig, FlowRule, KINDS, RedactionMode};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

pub use scanner::{LOOKAHEAD, LOOKBACK};

/// One thing found in a body. Never holds the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Finding {
    /// Detector kind, e.g. `card` or `model_weights.gguf`.
    pub kind: String,
    /// Byte offset of the match in the body.
    pub offset: usize,
    /// Length of the match in bytes.
    pub length: usize,
    /// 0..=100.
    pub confidence: u8,
    /// SHA-256 of the matched bytes, first 16 hex characters.
    pub digest: String,
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ScanResult {
    /// Findings at or above the configured confidence, by offset.
    pub findings: Vec<Finding>,
    /// The body was larger than `max_body_bytes` and was not scanned.
    pub oversize: bool,
    /// Bytes scanned (0 when disabled or oversize).
    pub scanned_bytes: usize,
    /// The detector set could not be built (never expected; callers
    /// should fail closed when it is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScanResult {
    /// The distinct kinds found.
    pub fn kinds(&self) -> BTreeSet<String> {
        self.findings.iter().map(|f| f.kind.clone()).collect()
    }

    /// Number of findings.
    pub fn count(&self) -> usize {
        self.findings.len()
    }

    /// Highest confidence among the findings (0 when none).
    pub fn max_confidence(&self) -> u8 {
        self.findings
            .iter()
            .map(|f| f.confidence)
            .max()
            .unwrap_or(0)
    }

    /// Whether any finding is model weights (`model_weights*`).
    pub fn model_weights(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.kind.starts_with("model_weights"))
    }
}

/// First 16 hex characters of SHA-256 of `bytes`.
pub(crate) fn digest16(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(16);
    for b in digest.iter().take(8) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// Scan `body` with the detectors `cfg` enables.
///
/// Disabled: empty result, nothing scanned. Larger than
/// `cfg.max_body_bytes`: `oversize` is set and nothing is scanned (policies
/// decide what an unscanned body means).
pub fn scan(cfg: &DlpConfig, body: &[u8]) -> ScanResult {
    if !cfg.enabled {
        return ScanResult::default();
    }
    if body.len() > cfg.max_body_bytes {
        return ScanResult {
            oversize: true,
            ..ScanResult::default()
        };
    }
    let engine = match scanner::engine() {
        Ok(engine) => engine,
        Err(message) => {
            return ScanResult {
                error: Some(message),
                ..ScanResult::default()
            };
        }
    };
    let enabled = config::KindSet::from_config(cfg);
    if enabled.is_empty() {
        return ScanResult {
            scanned_bytes: body.len(),
            ..ScanResult::default()
        };
    }
    let raw = scanner::scan_raw(engine, body, enabled, cfg.min_confidence);
    result(raw, cfg.min_confidence, body.len())
}

/// Findings at or above `min` confidence from the raw scan.
fn result(raw: Vec<scanner::Raw>, min: u8, len: usize) -> ScanResult {
    let findings = raw
        .into_iter()
        .filter(|r| r.confidence >= min)
        .filter_map(|r| {
            Some(Finding {
                kind: r.kind.name().to_string(),
                offset: r.start,
                length: r.end - r.start,
                confidence: r.confidence,
                digest: r.digest?,
            })
        })
        .collect();
    ScanResult {
        findings,
        oversize: false,
        scanned_bytes: len,
        error: None,
    }
}

/// A scan of a body that arrives in chunks: [`StreamScan::feed`] each
/// chunk in order, then [`StreamScan::finish`]. The result equals
/// [`scan`] of the concatenated chunks, whatever the chunking.
///
/// Memory stays bounded: what is kept between chunks is at most
/// [`LOOKBACK`] + [`LOOKAHEAD`] bytes (see [`StreamScan::retained`]), plus
/// the first 8 KiB while the body may still turn out to be a weights
/// file. A body over `max_body_bytes` stops being scanned as soon as it
/// passes the cap and finishes `oversize`, as [`scan`] would.
pub struct StreamScan {
    enabled: bool,
    kinds: config::KindSet,
    min: u8,
    max_body: usize,
    engine: Option<&'static scanner::Engine>,
    error: Option<String>,
    state: scanner::State,
    /// Retained bytes, `body[base..base + buf.len()]`.
    buf: Vec<u8>,
    base: usize,
    total: usize,
}

impl StreamScan {
    /// A new scan with the detectors `cfg` enables.
    pub fn new(cfg: &DlpConfig) -> StreamScan {
        let kinds = config::KindSet::from_config(cfg);
        let (engine, error) = match scanner::engine() {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(e)),
        };
        StreamScan {
            enabled: cfg.enabled,
            kinds,
            min: cfg.min_confidence,
            max_body: cfg.max_body_bytes,
            engine,
            error,
            state: scanner::State::new(kinds, cfg.min_confidence),
            buf: Vec::new(),
            base: 0,
            total: 0,
        }
    }

    fn scanning(&self) -> bool {
        self.enabled && self.engine.is_some() && !self.kinds.is_empty() && !self.oversize()
    }

    fn oversize(&self) -> bool {
        self.total > self.max_body
    }

    /// The next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.total = self.total.saturating_add(chunk.len());
        if !self.scanning() {
            self.buf = Vec::new();
            return;
        }
        let Some(engine) = self.engine else {
            return;
        };
        if self.buf.is_empty() {
            // Nothing retained: scan the chunk where it lies.
            self.state.process(engine, chunk, self.base, false);
            let keep = self.state.keep_from().max(self.base);
            self.buf
                .extend_from_slice(chunk.get(keep - self.base..).unwrap_or_default());
            self.base = keep;
        } else {
            self.buf.extend_from_slice(chunk);
            self.state.process(engine, &self.buf, self.base, false);
            let keep = self.state.keep_from().max(self.base);
            self.buf.drain(..(keep - self.base).min(self.buf.len()));
            self.base = keep;
        }
    }

    /// Bytes held between chunks right now.
    pub fn retained(&self) -> usize {
        self.buf.len()
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> usize {
        self.total
    }

    /// The body has ended: what was found.
    pub fn finish(mut self) -> ScanResult {
        if !self.enabled {
            return ScanResult::default();
        }
        if self.oversize() {
            return ScanResult {
                oversize: true,
                ..ScanResult::default()
            };
        }
        if let Some(message) = self.error {
            return ScanResult {
                error: Some(message),
                ..ScanResult::default()
            };
        }
        let Some(engine) = self.engine else {
            return ScanResult::default();
        };
        if self.kinds.is_empty() {
            return ScanResult {
                scanned_bytes: self.total,
                ..ScanResult::default()
            };
        }
        self.state.process(engine, &self.buf, self.base, true);
        result(self.state.into_raw(), self.min, self.total)
    }
}

/// Scan a body given as chunks (a streaming host's view of it).
pub fn scan_chunks<'a>(cfg: &DlpConfig, chunks: impl IntoIterator<Item = &'a [u8]>) -> ScanResult {
    let mut stream = StreamScan::new(cfg);
    for chunk in chunks {
        stream.feed(chunk);
    }
    stream.finish()
}

/// Redact `findings` from `body`, each as its kind's [`RedactionMode`].
///
/// A body that is valid JSON stays valid JSON: replacements happen inside
/// string values (a finding in a number or spanning a whole array turns
/// that value into a string, or `null` for `drop`), escape sequences are
/// replaced whole, the structure is kept. `mask` replaces each byte with
/// `*` (offsets stay put), `hash` writes `[kind:digest]`, `drop` empties
/// the JSON string that holds the finding (removes the bytes in text).
/// Any other body is treated as bytes. Every occurrence of a finding's
/// bytes is redacted, not only the one at its offset (the same value can
/// be a finding in one place, with a context word, and not in another), so
/// no byte sequence of a finding survives. Findings that lie outside the
/// body are ignored.
pub fn redact(cfg: &DlpConfig, body: &[u8], findings: &[Finding]) -> Vec<u8> {
    redact::redact(cfg, body, findings)
}

/// Field minimisation: split `fields` into those the flow (and module, if
/// the flow overrides it) allows and those it does not, keeping order.
///
/// Field names compare ASCII case-insensitively (CRM API names do); an
/// allowed entry may be `*`, a prefix glob (`Billing*`), or a dotted path
/// into a related record (`Account.Name`, `Account.*`). An unknown flow is
/// an error naming it and the known flows.
pub fn minimise(
    cfg: &DlpConfig,
    flow: &str,
    module: Option<&str>,
    fields: &[String],
) -> Result<(Vec<String>, Vec<String>), String> {
    minimise::minimise(cfg, flow, module, fields)
}

/// Drop the record fields a flow does not allow from a JSON body.
///
/// Records are: the top-level object, each object of a top-level array,
/// and each object under `records` of a query envelope (an object with
/// `records` and `totalSize` or `done`, as Salesforce answers); envelope
/// keys are kept. A related record (an object value) is kept whole when
/// its name is allowed, minimised when only dotted paths into it are, and
/// dropped otherwise; `attributes` (record metadata) is always kept. Key
/// order and the text of kept values are preserved.
pub fn minimise_json(
    cfg: &DlpConfig,
    flow: &str,
    module: Option<&str>,
    body: &str,
) -> Result<String, String> {
    minimise::minimise_json(cfg, flow, module, body)
}
