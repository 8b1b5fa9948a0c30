//! The tamper-evident audit log: one JSON line per decision or bundle swap,
//! each carrying the hash of the line before it, rotated by size without
//! breaking the chain; and `portcullis audit verify`, which finds the first
//! edited, removed or reordered line and names it.
//!
//! Responsible for: choosing what of a decision is written (an allow-list:
//! never a token, password, body, raw finding or free text a caller sent),
//! the line format and its hash, rotation, resuming a chain after a
//! restart, and verification. Not responsible for deciding anything (the
//! engine did) nor for when to write (the CLI and the service call it).
//!
//! # Line format
//!
//! Every line is one JSON object in pure ASCII (every non-ASCII character
//! and every control character is a `\u` escape, so no field can hold a
//! line break of any kind, `\r`, `\n`, U+2028 …). Members, in order:
//! `seq` (1, 2, … across all files), `time` (RFC 3339 UTC, when written),
//! `kind` (`decision` | `swap`), then the kind's own members, then `prev`
//! (the `hash` of the line before, as hex; 64 zeros for the first line of a
//! chain) and last `hash`: SHA-256, hex, over the line's exact bytes with
//! its trailing `,"hash":"…"` member removed (that is, over `{…,"prev":"…"}`).
//!
//! A decision line holds `request_digest` (SHA-256 of the request JSON as
//! received), `request_time`, `principal`, `action`, `resource`, `event`,
//! `outcome`, `allowed`, `policies`, `reasons`, `pathway`, `stage`,
//! `escalation`, `retry_after`, `findings` (detector kind → count, nothing
//! else), `error` (kind and field only), `store` (`degraded` when the
//! decision was counted in a local fallback store), `bundle`, `bundle_hash`
//! and `engine`. Principal and resource are kept as the engine's audit
//! record has them (qualified uids such as `Crm::User::"alice@example.com"`):
//! an audit log must say who did what, so treat the file as you treat an
//! access log. Reasons are the bundle's own `@reason` texts (and engine
//! codes such as `no-permit`, `invalid-token: expired`); for a fault only
//! `error: KIND` is written, plus the message for `store` and `no-bundle`
//! faults (written by the host, never echoing request input).
//!
//! A swap line holds `result` (`accepted` | `refused` | `rollback` …),
//! `from_hash`, `to_hash` and `reason`.
//!
//! # Rotation and durability
//!
//! With `rotate_bytes > 0`, a line that would take `FILE` past that size is
//! written to a fresh `FILE` after the full one is renamed `FILE.N`, N one
//! more than the highest number present: `FILE.1` is the oldest, then
//! `FILE.2` …, and `FILE` is always the newest. Files are never renumbered,
//! so a missing middle file shows as a gap in the chain. The first line of
//! each new file carries the previous file's last hash as `prev`.
//!
//! Each line is written with one `write(2)` to a file opened for append, so
//! a process crash loses no line already appended. `fdatasync` runs on
//! [`AuditWriter::flush`], before a rotation's rename (and the directory is
//! synced after it), when the writer is dropped, and every N lines with
//! [`AuditWriter::set_sync_every`] (0, the default: not per line). A writer
//! holds an exclusive lock on `FILE.lock`, so two processes cannot fork one
//! chain. [`AuditWriter::open`] resumes from the last line of `FILE` (or of
//! the newest `FILE.N` when `FILE` is empty or absent); it refuses a file
//! whose last line is incomplete (a torn write) rather than guess.
//!
//! # What verification proves
//!
//! Any edited, removed, inserted or reordered line, and any removed middle
//! file, breaks the chain at a line that `verify` names. Lines cut from the
//! very end, or a whole chain rewritten with fresh hashes, are only caught
//! against a head hash kept elsewhere (`verify` prints the head it reached).

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest principal, resource or action kept; longer ones are cut with `…`.
const MAX_ID: usize = 512;
/// Longest reason, escalation or swap reason kept.
const MAX_TEXT: usize = 512;
/// Most policies, reasons or finding kinds kept per line.
const MAX_ITEMS: usize = 64;

/// Appends hash-chained audit lines to a file, rotating it by size.
pub struct AuditWriter {
    path: PathBuf,
    rotate_bytes: u64,
    file: File,
    size: u64,
    seq: u64,
    prev: String,
    sync_every: u64,
    since_sync: u64,
    /// Held for the writer's life: one writer per chain.
    _lock: File,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("head", &self.prev)
            .finish()
    }
}

/// The members common to every line, before the kind's own.
#[derive(Serialize)]
struct Head<'a> {
    seq: u64,
    time: String,
    kind: &'a str,
}

/// What of a decision is written: only these fields, each checked.
#[derive(Serialize, Default)]
struct DecisionLine {
    request_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_time: Option<String>,
    principal: String,
    action: String,
    resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    outcome: &'static str,
    allowed: bool,
    policies: Vec<String>,
    reasons: Vec<String>,
    pathway: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    escalation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    findings: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<String>,
    bundle_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<String>,
}

#[derive(Serialize)]
struct ErrorLine {
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

#[derive(Serialize)]
struct SwapLine {
    result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl AuditWriter {
    /// Open (or create) the log at `path` and continue its chain from its
    /// last line; `rotate_bytes` 0 never rotates.
    pub fn open(path: &Path, rotate_bytes: u64) -> Result<AuditWriter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        let lock_path = sibling(path, "lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open `{}`", lock_path.display()))?;
        lock.try_lock().map_err(|e| {
            anyhow!(
                "cannot lock `{}` ({e}): another process is writing this audit log",
                lock_path.display()
            )
        })?;
        let file = open_append(path)?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot stat `{}`", path.display()))?
            .len();
        // The newest line: in FILE, or in the newest FILE.N when FILE is empty.
        let mut last = None;
        if size > 0 {
            last = Some((path.to_path_buf(), last_line(path)?));
        } else if let Some(newest) = rotated(path)?.pop() {
            last = Some((newest.clone(), last_line(&newest)?));
        }
        let (seq, prev) = match last {
            None => (0, GENESIS.to_string()),
            Some((file, line)) => resume_point(&line).with_context(|| {
                format!("cannot resume the audit chain of `{}`", file.display())
            })?,
        };
        Ok(AuditWriter {
            path: path.to_path_buf(),
            rotate_bytes,
            file,
            size,
            seq,
            prev,
            sync_every: 0,
            since_sync: 0,
            _lock: lock,
        })
    }

    /// Also fsync after every `n` lines (0: only on flush, rotation and drop).
    pub fn set_sync_every(&mut self, n: u64) {
        self.sync_every = n;
    }

    /// The sequence number and hash of the last line written (0 and
    /// [`GENESIS`] for an empty chain): keep it elsewhere to anchor the chain.
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.prev)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record one decision. `request_json` is only digested; of
    /// `decision_json` only the allow-listed fields are kept.
    pub fn append_decision(
        &mut self,
        request_json: &str,
        decision_json: &str,
        bundle_hash: &str,
    ) -> Result<()> {
        let line = decision_line(request_json, decision_json, bundle_hash);
        self.append("decision", &line)
    }

    /// Record a bundle swap: `result` (`accepted`, `refused`, `rollback` …),
    /// the hashes involved and why (for a refusal).
    pub fn append_swap(
        &mut self,
        result: &str,
        from_hash: Option<&str>,
        to_hash: Option<&str>,
        reason: Option<&str>,
    ) -> Result<()> {
        let line = SwapLine {
            result: token(result, 32).unwrap_or_else(|| "unknown".into()),
            from_hash: from_hash.map(|h| token(h, 128).unwrap_or_else(|| "invalid".into())),
            to_hash: to_hash.map(|h| token(h, 128).unwrap_or_else(|| "invalid".into())),
            reason: reason.map(|r| clip(r, MAX_TEXT)),
        };
        self.append("swap", &line)
    }

    /// Make everything written so far durable (fdatasync).
    pub fn flush(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("cannot sync `{}`", self.path.display()))?;
        self.since_sync = 0;
        Ok(())
    }

    fn append<T: Serialize>(&mut self, kind: &str, body: &T) -> Result<()> {
        let seq = self.seq + 1;
        let line = encode(seq, kind, body, &self.prev)?;
        let bytes = line.text.as_bytes();
        if self.rotate_bytes > 0
            && self.size > 0
            && self.size + bytes.len() as u64 > self.rotate_bytes
        {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(bytes) {
            // Take back a partial line so the file still ends on a whole one.
            let _ = self.file.set_len(self.size);
            return Err(e).with_context(|| format!("cannot append to `{}`", self.path.display()));
        }
        self.size += bytes.len() as u64;
        self.seq = seq;
        self.prev = line.hash;
        self.since_sync += 1;
        if self.sync_every > 0 && self.since_sync >= self.sync_every {
            self.flush()?;
        }
        Ok(())
    }

    /// FILE → FILE.N (N one past the highest), then a fresh FILE.
    fn rotate(&mut self) -> Result<()> {
        self.flush()?;
        let n = rotated(&self.path)?
            .last()
            .and_then(|p| rotation_number(&self.path, p))
            .unwrap_or(0)
            + 1;
        let target = sibling(&self.path, &n.to_string());
        if target.exists() {
            bail!(
                "cannot rotate `{}`: `{}` already exists",
                self.path.display(),
                target.display()
            );
        }
        std::fs::rename(&self.path, &target).with_context(|| {
            format!(
                "cannot rotate `{}` to `{}`",
                self.path.display(),
                target.display()
            )
        })?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        sync_dir(&self.path);
        Ok(())
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        let _ = self.file.sync_data();
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the audit log `{}`", path.display()))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// `FILE.suffix`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

/// N of `FILE.N`, for a sibling of `current`.
fn rotation_number(current: &Path, candidate: &Path) -> Option<u64> {
    let base = current.file_name()?.to_str()?;
    let name = candidate.file_name()?.to_str()?;
    let digits = name.strip_prefix(base)?.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The rotated predecessors of `current` (`FILE.1`, `FILE.2` …), oldest first.
pub fn rotated(current: &Path) -> Result<Vec<PathBuf>> {
    let dir = match current.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list `{}`", dir.display())),
    };
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list `{}`", dir.display()))?;
        let candidate = current.with_file_name(entry.file_name());
        if let Some(n) = rotation_number(current, &candidate) {
            found.push((n, candidate));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The whole chain that ends in `current`: its rotated predecessors, oldest
/// first, then `current` itself.
pub fn chain_files(current: &Path) -> Result<Vec<PathBuf>> {
    let mut files = rotated(current)?;
    files.push(current.to_path_buf());
    Ok(files)
}

/// The last line of a non-empty file (without its newline).
fn last_line(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot stat `{}`", path.display()))?
        .len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start))
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let Some(body) = buf.strip_suffix(b"\n") else {
            bail!(
                "the last line of `{}` is incomplete (no newline: a torn write?); \
                 run `portcullis audit verify` and move the file aside to start a new chain",
                path.display()
            );
        };
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => {
                return String::from_utf8(body.get(i + 1..).unwrap_or_default().to_vec())
                    .with_context(|| format!("the last line of `{}` is not text", path.display()));
            }
            None if start == 0 => {
                return String::from_utf8(body.to_vec())
                    .with_context(|| format!("the last line of `{}` is not text", path.display()));
            }
            None => window *= 4,
        }
    }
}

/// `seq` and `hash` of an existing line, checked.
fn resume_point(line: &str) -> Result<(u64, String)> {
    let v: Value = serde_json::from_str(line).context("its last line is not JSON")?;
    let seq = v["seq"]
        .as_u64()
        .ok_or_else(|| anyhow!("its last line has no `seq`"))?;
    let hash = v["hash"]
        .as_str()
        .filter(|h| is_hex64(h))
        .ok_or_else(|| anyhow!("its last line has no valid `hash`"))?;
    Ok((seq, hash.to_string()))
}

/// One encoded line: text (with its newline) and hash.
struct Encoded {
    text: String,
    hash: String,
}

/// The canonical line for `body`: head, body members, prev, then the hash
/// over everything before it.
fn encode<T: Serialize>(seq: u64, kind: &str, body: &T, prev: &str) -> Result<Encoded> {
    let head = serde_json::to_string(&Head {
        seq,
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        kind,
    })?;
    let body = serde_json::to_string(body)?;
    let head = head
        .strip_suffix('}')
        .ok_or_else(|| anyhow!("line head is not an object"))?;
    let body = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| anyhow!("line body is not an object"))?;
    let mut unhashed = String::with_capacity(head.len() + body.len() + 100);
    unhashed.push_str(head);
    if !body.is_empty() {
        unhashed.push(',');
        unhashed.push_str(body);
    }
    unhashed.push_str(",\"prev\":");
    unhashed.push_str(&serde_json::to_string(prev)?);
    unhashed.push('}');
    let unhashed = ascii_only(&unhashed);
    let hash = hex::encode(Sha256::digest(unhashed.as_bytes()));
    let mut text = unhashed;
    text.pop();
    text.push_str(",\"hash\":\"");
    text.push_str(&hash);
    text.push_str("\"}\n");
    Ok(Encoded { text, hash })
}

/// JSON text with every non-ASCII character as a `\u` escape (they can only
/// occur inside strings), so a line holds no Unicode line separator either.
fn ascii_only(json: &str) -> String {
    if json.is_ascii() {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut units = [0u16; 2];
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// At most `max` characters, marked `…` when cut.
fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A short identifier (policy id, detector kind, hash, stage): letters,
/// digits and `._:/@#-` only, else `None`.
fn token(s: &str, max: usize) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/@#-".contains(&b));
    ok.then(|| s.to_string())
}

fn one_of(v: &Value, allowed: &[&'static str]) -> Option<&'static str> {
    let s = v.as_str()?;
    allowed.iter().copied().find(|a| *a == s)
}

const OUTCOMES: &[&str] = &["allow", "redact", "challenge", "throttle", "deny", "lock"];
const PATHWAYS: &[&str] = &["authentic", "synthetic"];
const EVENTS: &[&str] = &["auth_failure", "auth_success"];
const ERROR_KINDS: &[&str] = &[
    "invalid-request",
    "no-bundle",
    "store",
    "evaluation",
    "engine-fault",
];
/// Faults whose message is written by the host or engine alone (never an
/// echo of request input), so it may be logged.
const ERROR_KINDS_WITH_MESSAGE: &[&str] = &["store", "no-bundle"];

/// The allow-listed record of one decision.
fn decision_line(request_json: &str, decision_json: &str, bundle_hash: &str) -> DecisionLine {
    let mut line = DecisionLine {
        request_digest: hex::encode(Sha256::digest(request_json.as_bytes())),
        bundle_hash: token(bundle_hash, 128).unwrap_or_else(|| "invalid".into()),
        outcome: "deny",
        pathway: "authentic",
        ..DecisionLine::default()
    };
    let d: Value = match serde_json::from_str(decision_json) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            line.reasons = vec!["error: malformed-decision".into()];
            line.error = Some(ErrorLine {
                kind: "malformed-decision".into(),
                field: None,
            });
            return line;
        }
    };
    let audit = &d["audit"];
    line.request_time = audit["time"].as_str().and_then(|t| {
        let ok = !t.is_empty()
            && t.len() <= 40
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b"TZ:.+-".contains(&b));
        ok.then(|| t.to_string())
    });
    line.principal = clip(audit["principal"].as_str().unwrap_or(""), MAX_ID);
    line.action = clip(audit["action"].as_str().unwrap_or(""), MAX_ID);
    line.resource = clip(audit["resource"].as_str().unwrap_or(""), MAX_ID);
    line.event = one_of(&audit["event"], EVENTS);
    line.outcome = one_of(&d["outcome"], OUTCOMES).unwrap_or("unknown");
    line.allowed =
        d["allowed"].as_bool() == Some(true) && matches!(line.outcome, "allow" | "redact");
    line.pathway = one_of(&d["pathway"], PATHWAYS).unwrap_or("unknown");
    line.stage = d["stage"].as_str().and_then(|s| token(s, 32));
    line.policies = strings(&d["policies"])
        .map(|p| token(p, 128).unwrap_or_else(|| "invalid".into()))
        .collect();
    line.escalation = d["escalation"].as_str().map(|e| clip(e, MAX_TEXT));
    line.retry_after = d["retry_after"].as_u64();
    for f in d["findings"].as_array().into_iter().flatten() {
        let kind = f["kind"]
            .as_str()
            .and_then(|k| token(k, 64))
            .unwrap_or_else(|| "other".into());
        if line.findings.len() < MAX_ITEMS || line.findings.contains_key(&kind) {
            *line.findings.entry(kind).or_default() += 1;
        }
    }
    let error = &d["error"];
    if error.is_object() {
        let kind = one_of(&error["kind"], ERROR_KINDS).unwrap_or("engine-fault");
        let message = error["message"].as_str().unwrap_or("");
        line.reasons = vec![
            if ERROR_KINDS_WITH_MESSAGE.contains(&kind) && !message.is_empty() {
                clip(&format!("error: {kind}: {message}"), MAX_TEXT)
            } else {
                format!("error: {kind}")
            },
        ];
        line.error = Some(ErrorLine {
            kind: kind.to_string(),
            field: error["field"].as_str().and_then(|f| {
                let ok = !f.is_empty()
                    && f.len() <= 64
                    && f.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._[]-".contains(&b));
                ok.then(|| f.to_string())
            }),
        });
    } else {
        line.reasons = strings(&d["reasons"]).map(|r| clip(r, MAX_TEXT)).collect();
    }
    if d["store"]["health"].as_str() == Some("degraded") {
        line.store = Some("degraded");
    }
    line.bundle = audit["bundle"].as_str().map(|b| clip(b, 200));
    line.engine = audit["engine"].as_str().and_then(|e| token(e, 32));
    line
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(MAX_ITEMS)
}

// ---------------------------------------------------------------- verify --

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The file holding the first bad line.
    pub file: PathBuf,
    /// Its line number (1-based).
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The files checked, in chain order.
    pub files: Vec<PathBuf>,
    /// Lines checked and found good (before any break).
    pub lines: u64,
    /// `seq` of the first line.
    pub first_seq: Option<u64>,
    /// `seq` of the last good line.
    pub last_seq: Option<u64>,
    /// Hash of the last good line: compare with a head kept elsewhere.
    pub head: Option<String>,
    /// The first broken line, if any.
    pub broken: Option<Break>,
    /// Input that could not be read, if any.
    pub unreadable: Option<String>,
}

impl VerifyReport {
    /// True when every line checked out.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none() && self.unreadable.is_none()
    }

    /// 0 intact, 1 broken, 2 unreadable.
    pub fn exit_code(&self) -> u8 {
        if self.unreadable.is_some() {
            2
        } else if self.broken.is_some() {
            1
        } else {
            0
        }
    }
}

/// How to verify.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Accept a chain that starts mid-way (its oldest files removed by
    /// retention): the first line's `seq` and `prev` are then taken as given.
    pub partial: bool,
}

/// Verify a chain strictly from its first line. One path that is not itself
/// `FILE.N` is the current file: its rotated predecessors are found next to
/// it. Several paths are taken as the whole chain, in the order given.
pub fn verify(paths: &[PathBuf]) -> VerifyReport {
    verify_with(paths, VerifyOptions::default())
}

/// [`verify`] with options.
pub fn verify_with(paths: &[PathBuf], options: VerifyOptions) -> VerifyReport {
    let mut report = VerifyReport {
        files: Vec::new(),
        lines: 0,
        first_seq: None,
        last_seq: None,
        head: None,
        broken: None,
        unreadable: None,
    };
    let files = match paths {
        [] => {
            report.unreadable = Some("no audit log given".into());
            return report;
        }
        [one] if !looks_rotated(one) => match chain_files(one) {
            Ok(f) => f,
            Err(e) => {
                report.unreadable = Some(format!("{e:#}"));
                return report;
            }
        },
        many => many.to_vec(),
    };
    report.files = files.clone();
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        match std::fs::read(f) {
            Ok(b) => texts.push(b),
            Err(e) => {
                report.unreadable = Some(format!("cannot read `{}`: {e}", f.display()));
                return report;
            }
        }
    }
    let mut state = Chain {
        seq: if options.partial { None } else { Some(0) },
        prev: if options.partial {
            None
        } else {
            Some(GENESIS.to_string())
        },
    };
    for (i, (file, bytes)) in files.iter().zip(&texts).enumerate() {
        if bytes.is_empty() {
            continue;
        }
        let body = match bytes.strip_suffix(b"\n") {
            Some(b) => b,
            None => {
                let line = bytes.iter().filter(|b| **b == b'\n').count() as u64 + 1;
                report.broken = Some(Break {
                    file: file.clone(),
                    line,
                    reason: "incomplete last line (no newline): cut or torn".into(),
                });
                return report;
            }
        };
        for (n, raw) in body.split(|b| *b == b'\n').enumerate() {
            let line_no = n as u64 + 1;
            match state.check(raw) {
                Ok((seq, hash)) => {
                    report.lines += 1;
                    report.first_seq.get_or_insert(seq);
                    report.last_seq = Some(seq);
                    report.head = Some(hash);
                }
                Err(Problem::Text(reason)) => {
                    report.broken = Some(Break {
                        file: file.clone(),
                        line: line_no,
                        reason,
                    });
                    return report;
                }
                Err(Problem::Seq { expected, found }) => {
                    let later = find_seq(&files, &texts, i, line_no, expected);
                    let reason = match (found > expected, later) {
                        (_, Some((f, l))) => format!(
                            "out of order: seq {found} where {expected} was expected, \
                             and seq {expected} is at {}:{l} (lines reordered)",
                            f.display()
                        ),
                        (true, None) => format!(
                            "seq {found} where {expected} was expected: {} line(s) missing \
                             before this one (deleted)",
                            found - expected
                        ),
                        (false, None) => format!(
                            "seq {found} where {expected} was expected: a repeated or \
                             reordered line"
                        ),
                    };
                    report.broken = Some(Break {
                        file: file.clone(),
                        line: line_no,
                        reason,
                    });
                    return report;
                }
            }
        }
    }
    if report.lines == 0 && report.unreadable.is_none() {
        // An empty chain is intact, but say so plainly.
        report.head = Some(GENESIS.to_string());
    }
    report
}

fn looks_rotated(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
}

/// Where `seq` occurs after (file `from`, line `after`), if anywhere.
fn find_seq(
    files: &[PathBuf],
    texts: &[Vec<u8>],
    from: usize,
    after: u64,
    seq: u64,
) -> Option<(PathBuf, u64)> {
    for (i, (file, bytes)) in files.iter().zip(texts).enumerate().skip(from) {
        for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
            let line_no = n as u64 + 1;
            if i == from && line_no <= after {
                continue;
            }
            let found = serde_json::from_slice::<Value>(raw)
                .ok()
                .and_then(|v| v["seq"].as_u64());
            if found == Some(seq) {
                return Some((file.clone(), line_no));
            }
        }
    }
    None
}

enum Problem {
    Text(String),
    Seq { expected: u64, found: u64 },
}

/// The chain so far: last seq and hash (`None` before the first line of a
/// partial verification).
struct Chain {
    seq: Option<u64>,
    prev: Option<String>,
}

const HASH_SUFFIX_LEN: usize = ",\"hash\":\"\"}".len() + 64;

impl Chain {
    fn check(&mut self, raw: &[u8]) -> Result<(u64, String), Problem> {
        let text = std::str::from_utf8(raw).map_err(|_| Problem::Text("not UTF-8 text".into()))?;
        if text.is_empty() {
            return Err(Problem::Text("empty line".into()));
        }
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Problem::Text(format!("not a JSON object: {e}")))?;
        let cut = text
            .len()
            .checked_sub(HASH_SUFFIX_LEN)
            .ok_or_else(|| Problem::Text("no `hash` member at the end of the line".into()))?;
        let (body, suffix) = (text.get(..cut), text.get(cut..));
        let recorded = suffix
            .and_then(|s| s.strip_prefix(",\"hash\":\""))
            .and_then(|s| s.strip_suffix("\"}"))
            .filter(|h| is_hex64(h))
            .ok_or_else(|| Problem::Text("no `hash` member at the end of the line".into()))?;
        if v["hash"].as_str() != Some(recorded) {
            return Err(Problem::Text("more than one `hash` member".into()));
        }
        let mut hashed = body.unwrap_or_default().to_string();
        hashed.push('}');
        let computed = hex::encode(Sha256::digest(hashed.as_bytes()));
        if computed != recorded {
            return Err(Problem::Text(format!(
                "hash mismatch: the line was edited (it records {}…, its content hashes to {}…)",
                recorded.get(..12).unwrap_or(""),
                computed.get(..12).unwrap_or("")
            )));
        }
        let seq = v["seq"]
            .as_u64()
            .ok_or_else(|| Problem::Text("no numeric `seq`".into()))?;
        let prev = v["prev"]
            .as_str()
            .ok_or_else(|| Problem::Text("no `prev`".into()))?;
        match self.seq {
            Some(0) if seq != 1 => {
                return Err(Problem::Text(format!(
                    "the chain does not start at its beginning: the first line has seq {seq} \
                     (earlier files missing? `--partial` verifies from here)"
                )));
            }
            Some(last) if seq != last + 1 => {
                return Err(Problem::Seq {
                    expected: last + 1,
                    found: seq,
                });
            }
            _ => {}
        }
        if let Some(expected) = &self.prev
            && prev != expected
        {
            return Err(Problem::Text(format!(
                "prev {}… does not match the hash of the line before ({}…): a line before \
                 it was removed, replaced or reordered",
                prev.get(..12).unwrap_or(prev),
                expected.get(..12).unwrap_or("")
            )));
        }
        self.seq = Some(seq);
        self.prev = Some(recorded.to_string());
        Ok((seq, recorded.to_string()))
    }
}

// ------------------------------------------------------------------- CLI --

/// `--audit-log FILE [--audit-rotate-bytes N]` of the CLI commands that decide.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// Append one hash-chained audit line per decision to FILE (check it
    /// with `portcullis audit verify FILE`).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit log when it would pass this many bytes (FILE.1,
    /// FILE.2 … oldest first); 0 never rotates.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub audit_rotate_bytes: u64,
}

impl AuditArgs {
    /// The writer, when `--audit-log` was given.
    pub fn open(&self) -> Result<Option<AuditWriter>> {
        self.audit_log
            .as_deref()
            .map(|p| AuditWriter::open(p, self.audit_rotate_bytes))
            .transpose()
    }
}

/// `portcullis audit …`
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check a hash-chained audit log: exit 0 intact, 1 broken (naming the
    /// first bad file:line and why), 2 unreadable.
    ///
    /// One FILE (the current log) also checks its rotated predecessors
    /// FILE.1, FILE.2 … found beside it, oldest first; several FILEs are
    /// checked as one chain in the order given.
    Verify {
        /// The current log file, or every file of the chain, oldest first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Accept a chain whose oldest files were removed (it need not start at seq 1).
        #[arg(long)]
        partial: bool,
    },
}

/// Run an `audit` subcommand; answers the exit code.
pub fn run_cli(command: &AuditCommand, json: bool) -> Result<u8> {
    match command {
        AuditCommand::Verify { files, partial } => {
            let report = verify_with(files, VerifyOptions { partial: *partial });
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else if let Some(u) = &report.unreadable {
                eprintln!("error: {u}");
            } else if let Some(b) = &report.broken {
                println!("BROKEN {}:{}: {}", b.file.display(), b.line, b.reason);
                println!(
                    "  {} line(s) good before it, in {} file(s)",
                    report.lines,
                    report.files.len()
                );
            } else {
                println!(
                    "intact: {} line(s) in {} file(s), seq {}..{}, head {}",
                    report.lines,
                    report.files.len(),
                    report.first_seq.unwrap_or(0),
                    report.last_seq.unwrap_or(0),
                    report.head.as_deref().unwrap_or(GENESIS)
                );
            }
            Ok(report.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_escaped_and_still_the_same_json() {
        let s = serde_json::to_string("a\u{2028}b\r\nc😀").unwrap_or_default();
        let a = ascii_only(&s);
        assert!(a.is_ascii() && !a.contains('\n') && !a.contains('\r'));
        let back: String = serde_json::from_str(&a).unwrap_or_default();
        assert_eq!(back, "a\u{2028}b\r\nc😀");
    }

    #[test]
    fn a_line_hashes_over_its_bytes_without_the_hash() -> Result<()> {
        let e = encode(
            1,
            "swap",
            &serde_json::json!({"result": "accepted"}),
            GENESIS,
        )?;
        let line = e.text.trim_end();
        let mut chain = Chain {
            seq: Some(0),
            prev: Some(GENESIS.into()),
        };
        assert!(chain.check(line.as_bytes()).is_ok());
        let edited = line.replace("accepted", "refused!");
        let mut chain = Chain {
            seq: Some(0),
            prev: Some(GENESIS.into()),
        };
        assert!(
            matches!(chain.check(edited.as_bytes()), Err(Problem::Text(r)) if r.starts_with("hash mismatch"))
        );
        Ok(())
    }
}
