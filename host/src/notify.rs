//! Escalation notifications: a decision that names an escalation target is
//! delivered to that target, as the service's configuration says.
//!
//! Responsible for: mapping the decision's escalation (a role of the
//! bundle's escalation matrix or a policy's `@escalate`: `security-operations`,
//! `compliance`, `engineering`, `operations`, `ml-security/<model>` …) to a
//! configured target, deduplicating per incident (role + first reason +
//! principal) within a window, and delivering off the request path with
//! retries and exponential backoff, either as a signed webhook or to
//! Alertmanager (`POST /api/v2/alerts`). Not responsible for deciding who
//! is told (the bundle did) nor for paging policy (the receiver's).
//!
//! A webhook delivery is a `POST` of a JSON body with headers
//! `X-Portcullis-Timestamp` (seconds since the epoch),
//! `X-Portcullis-Signature` (`sha256=` and the hex HMAC-SHA256, under the
//! target's secret, of the timestamp, a `.`, and the body) and
//! `Idempotency-Key` (the same for every retry of one incident's
//! notification). A receiver verifies the signature in constant time and
//! refuses old timestamps. The body carries ids, outcome, reasons and
//! digests: never a token, a body, or the secret.
//!
//! Targets speak plain `http://` (a receiver or relay on the host's own
//! network); the secret is read from a file named in the configuration.
//!
//! ```toml
//! window = "10m"        # one notification per incident in this window
//! max_attempts = 5      # per notification
//! backoff = "500ms"     # first wait; doubles, capped at max_backoff
//! max_backoff = "30s"
//! timeout = "5s"        # per attempt
//!
//! [targets.security-operations]
//! url = "http://127.0.0.1:9000/hooks/portcullis"
//! secret_file = "/etc/portcullis/secops-hook.key"
//!
//! [targets.engineering]
//! alertmanager = "http://127.0.0.1:9093"
//!
//! [targets."*"]          # any other role
//! url = "http://127.0.0.1:9000/hooks/other"
//! secret_file = "/etc/portcullis/other-hook.key"
//! ```

use crate::serve::client;
use anyhow::{Context, Result, bail};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Notifications waiting for delivery before new ones are dropped (and counted).
const QUEUE: usize = 1024;

/// `portcullis serve` flags for notifications.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NotifyArgs {
    /// Escalation targets (TOML: `[targets.ROLE] url` + `secret_file`, or
    /// `alertmanager`; `window`, `max_attempts`, `backoff`): decisions that
    /// carry an escalation are delivered there, once per incident per window.
    #[arg(long, value_name = "FILE")]
    pub notify_config: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_window", with = "humantime_serde_compat")]
    window: Duration,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_backoff", with = "humantime_serde_compat")]
    backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde_compat")]
    max_backoff: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    timeout: Duration,
    targets: BTreeMap<String, RawTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    alertmanager: Option<String>,
}

fn default_window() -> Duration {
    Duration::from_secs(600)
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"10m\": {e}"))
        })
    }
}

/// Where one role's notifications go.
#[derive(Clone)]
enum Sink {
    /// A signed webhook: (host:port, path, secret).
    Webhook {
        authority: String,
        path: String,
        secret: Vec<u8>,
    },
    /// Alertmanager's API v2: (host:port, base path).
    Alertmanager { authority: String, base: String },
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Webhook {
                authority, path, ..
            } => write!(f, "webhook http://{authority}{path}"),
            Sink::Alertmanager { authority, base } => {
                write!(f, "alertmanager http://{authority}{base}")
            }
        }
    }
}

/// The configuration, read and checked.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    window: Duration,
    max_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
    timeout: Duration,
    targets: BTreeMap<String, Sink>,
}

impl NotifyConfig {
    /// Read a configuration file (secrets from the files it names,
    /// relative to its own directory).
    pub fn load(path: &Path) -> Result<NotifyConfig> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the notify configuration `{}`", path.display())
        })?;
        let raw: RawConfig = toml::from_str(&text)
            .with_context(|| format!("notify configuration `{}`", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut targets = BTreeMap::new();
        for (role, t) in raw.targets {
            let sink = match (t.url, t.alertmanager) {
                (Some(url), None) => {
                    let (authority, path_) =
                        client::split_url(&url).with_context(|| format!("targets.{role}.url"))?;
                    let Some(file) = t.secret_file else {
                        bail!("targets.{role}: a webhook needs `secret_file` (its HMAC key)");
                    };
                    let file = dir.join(file);
                    let secret = std::fs::read_to_string(&file)
                        .with_context(|| {
                            format!("targets.{role}: cannot read `{}`", file.display())
                        })?
                        .trim()
                        .as_bytes()
                        .to_vec();
                    if secret.len() < 16 {
                        bail!(
                            "targets.{role}: the secret in `{}` is {} bytes; use at least 16",
                            file.display(),
                            secret.len()
                        );
                    }
                    Sink::Webhook {
                        authority,
                        path: if path_.is_empty() { "/".into() } else { path_ },
                        secret,
                    }
                }
                (None, Some(am)) => {
                    let (authority, base) = client::split_url(&am)
                        .with_context(|| format!("targets.{role}.alertmanager"))?;
                    Sink::Alertmanager { authority, base }
                }
                _ => bail!(
                    "targets.{role}: give either `url` (with `secret_file`) or `alertmanager`"
                ),
            };
            targets.insert(role, sink);
        }
        if raw.max_attempts == 0 {
            bail!("max_attempts must be at least 1");
        }
        Ok(NotifyConfig {
            window: raw.window,
            max_attempts: raw.max_attempts,
            backoff: raw.backoff,
            max_backoff: raw.max_backoff,
            timeout: raw.timeout,
            targets,
        })
    }

    /// The sink of an escalation: the exact role, else its part before `/`
    /// (`ml-security/churn-model` → `ml-security`), else `*`.
    fn sink(&self, escalation: &str) -> Option<(&str, &Sink)> {
        let base = escalation.split('/').next().unwrap_or(escalation);
        [escalation, base, "*"]
            .into_iter()
            .find_map(|k| self.targets.get_key_value(k).map(|(k, s)| (k.as_str(), s)))
    }
}

/// One notification on its way.
struct Job {
    sink: Sink,
    key: String,
    body: Value,
}

/// What happened to notifications so far (for tests and logs).
#[derive(Debug, Default)]
pub struct NotifyCounts {
    /// Delivered (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Given up after every attempt, or refused with a 4xx.
    pub failed: AtomicU64,
    /// Suppressed as duplicates of an incident inside the window.
    pub deduplicated: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// The notifier: called after every decision; delivers on its own thread.
pub struct Notifier {
    config: NotifyConfig,
    seen: Mutex<HashMap<String, u64>>,
    tx: SyncSender<Job>,
    counts: std::sync::Arc<NotifyCounts>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Notifier {
    /// Start the delivery thread.
    pub fn start(config: NotifyConfig) -> Result<Notifier> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let counts = std::sync::Arc::new(NotifyCounts::default());
        let worker = Worker {
            config: config.clone(),
            counts: counts.clone(),
        };
        std::thread::Builder::new()
            .name("portcullis-notify".into())
            .spawn(move || worker.run(rx))
            .context("cannot start the notification thread")?;
        Ok(Notifier {
            config,
            seen: Mutex::new(HashMap::new()),
            tx,
            counts,
        })
    }

    /// The counters.
    pub fn counts(&self) -> &NotifyCounts {
        &self.counts
    }

    /// The hook the service calls after each decision (JSON text): if it
    /// carries an escalation with a configured target and its incident was
    /// not notified inside the window, queue a notification. Never blocks.
    pub fn after_decision(&self, decision: &str) {
        let Ok(d) = serde_json::from_str::<Value>(decision) else {
            return;
        };
        let Some(escalation) = d["escalation"].as_str() else {
            return;
        };
        let Some((role, sink)) = self.config.sink(escalation) else {
            return;
        };
        let reason = d["reasons"][0].as_str().unwrap_or("");
        let principal = d["audit"]["principal"].as_str().unwrap_or("");
        let now = now_secs();
        let window = self.config.window.as_secs().max(1);
        let incident = hex::encode(Sha256::digest(
            format!("{escalation}\u{1f}{reason}\u{1f}{principal}").as_bytes(),
        ));
        {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            match seen.get(&incident) {
                Some(first) if now < first.saturating_add(window) => {
                    self.counts.deduplicated.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => {
                    seen.insert(incident.clone(), now);
                }
            }
            if seen.len() > 100_000 {
                seen.retain(|_, first| now < first.saturating_add(window));
            }
        }
        // One key per incident and window: retries (and a receiver that
        // sees the same incident twice) can tell.
        let key = hex::encode(
            Sha256::digest(format!("{incident}:{}", now / window).as_bytes())
                .get(..16)
                .unwrap_or(&[]),
        );
        let body = json!({
            "id": key,
            "escalation": escalation,
            "target": role,
            "outcome": d["outcome"],
            "pathway": d["pathway"],
            "stage": d["stage"],
            "reasons": d["reasons"],
            "policies": d["policies"],
            "principal": principal,
            "action": d["audit"]["action"],
            "resource": d["audit"]["resource"],
            "request_digest": d["audit"]["request_digest"],
            "time": d["audit"]["time"],
            "bundle": d["audit"]["bundle"],
            "alert_threshold": d["alert_threshold"],
            "window_seconds": window,
        });
        let job = Job {
            sink: sink.clone(),
            key,
            body,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    escalation,
                    "notification queue full: a notification was dropped"
                );
            }
        }
    }
}

struct Worker {
    config: NotifyConfig,
    counts: std::sync::Arc<NotifyCounts>,
}

impl Worker {
    fn run(self, rx: Receiver<Job>) {
        while let Ok(job) = rx.recv() {
            self.deliver(&job);
        }
    }

    fn deliver(&self, job: &Job) {
        let mut wait = self.config.backoff;
        for attempt in 1..=self.config.max_attempts {
            match self.attempt(job) {
                Ok(status) if (200..300).contains(&status) => {
                    self.counts.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // A 4xx other than 408/429 will not get better by retrying.
                Ok(status) if (400..500).contains(&status) && status != 408 && status != 429 => {
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(status, sink = ?job.sink, "escalation notification refused");
                    return;
                }
                Ok(status) => {
                    tracing::warn!(status, attempt, sink = ?job.sink, "escalation notification failed; retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), attempt, sink = ?job.sink, "escalation notification failed; retrying");
                }
            }
            if attempt < self.config.max_attempts {
                self.counts.retried.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(wait);
                wait = (wait * 2).min(self.config.max_backoff);
            }
        }
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        tracing::error!(sink = ?job.sink, "escalation notification given up");
    }

    fn attempt(&self, job: &Job) -> Result<u16> {
        match &job.sink {
            Sink::Webhook {
                authority,
                path,
                secret,
            } => {
                let body = job.body.to_string();
                let ts = now_secs().to_string();
                let sig = sign(secret, &ts, body.as_bytes());
                let r = client::request(
                    authority,
                    "POST",
                    path,
                    &[
                        ("Content-Type", "application/json"),
                        ("X-Portcullis-Timestamp", &ts),
                        ("X-Portcullis-Signature", &sig),
                        ("Idempotency-Key", &job.key),
                    ],
                    body.as_bytes(),
                    self.config.timeout,
                )?;
                Ok(r.status)
            }
            Sink::Alertmanager { authority, base } => {
                let b = &job.body;
                let ends = SystemTime::now() + self.config.window;
                let alert = json!([{
                    "labels": {
                        "alertname": "PortcullisEscalation",
                        "escalation": b["escalation"],
                        "target": b["target"],
                        "pathway": b["pathway"],
                        "outcome": b["outcome"],
                        "reason": b["reasons"][0],
                        "principal": b["principal"],
                    },
                    "annotations": {
                        "summary": format!("portcullis escalated a {} decision to {}", b["outcome"].as_str().unwrap_or("?"), b["escalation"].as_str().unwrap_or("?")),
                        "policies": b["policies"].to_string(),
                        "request_digest": b["request_digest"],
                        "idempotency_key": job.key,
                    },
                    "endsAt": humantime::format_rfc3339_seconds(ends).to_string(),
                }]);
                let r = client::request(
                    authority,
                    "POST",
                    &format!("{base}/api/v2/alerts"),
                    &[("Content-Type", "application/json")],
                    alert.to_string().as_bytes(),
                    self.config.timeout,
                )?;
                Ok(r.status)
            }
        }
    }
}

/// `sha256=` + hex HMAC-SHA256(secret, timestamp + "." + body).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Check a signature as a receiver would (constant time).
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hexsig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hexsig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let s = sign(b"0123456789abcdef", "1700000000", b"{}");
        assert!(verify(b"0123456789abcdef", "1700000000", b"{}", &s));
        assert!(!verify(b"0123456789abcdef", "1700000001", b"{}", &s));
        assert!(!verify(b"0123456789abcdef", "1700000000", b"{ }", &s));
        assert!(!verify(b"another-secret-16", "1700000000", b"{}", &s));
    }
}
