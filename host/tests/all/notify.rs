//! Escalation notifications against a loopback receiver: delivery, the
//! receiver's signature check, retry after a 500, one notification per
//! incident inside the window, and Alertmanager's API.

use portcullis_host::notify::{Notifier, NotifyConfig, verify};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP receiver on loopback: answers each request with the next
/// scripted status (then 200), and keeps what it got.
pub struct Receiver {
    pub addr: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(script: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Some(r) = read_request(&conn) {
                    let status = script.next().unwrap_or(200);
                    g.lock().unwrap().push(r);
                    let mut c = conn;
                    let _ = write!(
                        c,
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        });
        Receiver { addr, got, stop }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until `n` requests arrived (or time out).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.received().len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn read_request(conn: &TcpStream) -> Option<Received> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub const SECRET: &str = "receiver-shared-secret-0123456789";

/// A notify configuration in a fresh directory: `security-operations` and
/// `*` go to the webhook receiver, `engineering` to an Alertmanager URL.
pub fn config(tag: &str, webhook: &str, alertmanager: &str, window: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-notify-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hook.key"), format!("{SECRET}\n")).unwrap();
    let path = dir.join("notify.toml");
    std::fs::write(
        &path,
        format!(
            r#"window = "{window}"
max_attempts = 4
backoff = "50ms"
max_backoff = "200ms"
timeout = "2s"

[targets.security-operations]
url = "http://{webhook}/hooks/secops"
secret_file = "hook.key"

[targets.engineering]
alertmanager = "http://{alertmanager}"

[targets."*"]
url = "http://{webhook}/hooks/other"
secret_file = "hook.key"
"#
        ),
    )
    .unwrap();
    path
}

fn decision(escalation: &str, principal: &str, reason: &str) -> String {
    serde_json::json!({
        "outcome": "lock", "allowed": false, "policies": ["lockout.pair.hard-lock"],
        "reasons": [reason], "escalation": escalation, "pathway": "authentic",
        "stage": "hard_lock", "alert_threshold": 1,
        "audit": {"principal": principal, "action": "Crm::Action::\"login\"",
                  "resource": "Crm::App::\"sales-cloud\"", "request_digest": "ab12",
                  "time": "2026-11-22T10:00:00Z", "bundle": "portcullis-default@0.2.0#x"}
    })
    .to_string()
}

/// The receiver's check: signature over timestamp + body, fresh timestamp.
pub fn verified(r: &Received) -> bool {
    let (Some(ts), Some(sig)) = (
        r.header("X-Portcullis-Timestamp"),
        r.header("X-Portcullis-Signature"),
    ) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = ts.parse::<u64>().is_ok_and(|t| now.abs_diff(t) < 300);
    fresh && verify(SECRET.as_bytes(), ts, r.body.as_bytes(), sig)
}

#[test]
fn escalations_are_delivered_signed_retried_and_deduplicated() {
    // The first attempt fails with a 500; the retry succeeds.
    let hook = Receiver::start(vec![500]);
    let am = Receiver::start(vec![]);
    let cfg = NotifyConfig::load(&config("main", &hook.addr, &am.addr, "10m")).unwrap();
    let n = Notifier::start(cfg).unwrap();

    let alice = "Crm::User::\"alice@example.com\"";
    let reason = "account hard-locked for this address: an operator must clear it";
    n.after_decision(&decision("security-operations", alice, reason));
    let got = hook.wait_for(2, Duration::from_secs(10));
    assert_eq!(got.len(), 2, "one failed attempt and one retry: {got:?}");
    let (first, retry) = (&got[0], &got[1]);
    assert_eq!(first.path, "/hooks/secops");
    assert!(
        verified(first) && verified(retry),
        "the receiver verifies the signature"
    );
    let key = first.header("Idempotency-Key").unwrap().to_string();
    assert_eq!(
        retry.header("Idempotency-Key"),
        Some(key.as_str()),
        "a retry keeps its key"
    );
    let body: Value = serde_json::from_str(&retry.body).unwrap();
    assert_eq!(body["escalation"], "security-operations");
    assert_eq!(body["principal"], alice);
    assert_eq!(body["reasons"][0], reason);
    assert_eq!(body["id"], key.as_str());
    // A body altered in transit, or signed with another key, fails the check.
    let mut forged = retry.clone();
    forged.body = forged.body.replace("alice", "mallory");
    assert!(!verified(&forged));

    // The same incident again inside the window: nothing new.
    for _ in 0..5 {
        n.after_decision(&decision("security-operations", alice, reason));
    }
    // Another principal is another incident.
    n.after_decision(&decision(
        "security-operations",
        "Crm::User::\"bob@example.com\"",
        reason,
    ));
    let got = hook.wait_for(3, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let got_after = hook.received();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got_after.len(),
        3,
        "no duplicate of alice's incident: {got_after:?}"
    );
    let bob: Value = serde_json::from_str(&got_after[2].body).unwrap();
    assert_eq!(bob["principal"], "Crm::User::\"bob@example.com\"");
    assert_ne!(got_after[2].header("Idempotency-Key"), Some(key.as_str()));
    assert_eq!(n.counts().deduplicated.load(Ordering::Relaxed), 5);
    assert_eq!(n.counts().delivered.load(Ordering::Relaxed), 2);
    assert_eq!(n.counts().retried.load(Ordering::Relaxed), 1);

    // `ml-security/<model>` falls back to `*`; engineering goes to Alertmanager.
    n.after_decision(&decision(
        "ml-security/churn-model",
        alice,
        "sustained model-extraction pattern",
    ));
    n.after_decision(&decision("engineering", alice, "synthetic lock"));
    let got = hook.wait_for(4, Duration::from_secs(10));
    assert_eq!(got[3].path, "/hooks/other");
    assert!(verified(&got[3]));
    let alerts = am.wait_for(1, Duration::from_secs(10));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].path, "/api/v2/alerts");
    let a: Value = serde_json::from_str(&alerts[0].body).unwrap();
    assert_eq!(a[0]["labels"]["alertname"], "PortcullisEscalation");
    assert_eq!(a[0]["labels"]["escalation"], "engineering");
    assert_eq!(a[0]["labels"]["pathway"], "authentic");
    // A decision without an escalation is never sent.
    n.after_decision(&decision("security-operations", alice, reason).replace(
        "\"escalation\":\"security-operations\"",
        "\"escalation\":null",
    ));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hook.received().len(), 4);
}

#[test]
fn a_target_that_keeps_failing_is_given_up_after_max_attempts() {
    let hook = Receiver::start(vec![503, 503, 503, 503, 503]);
    let cfg = NotifyConfig::load(&config("fail", &hook.addr, &hook.addr, "1s")).unwrap();
    let n = Notifier::start(cfg).unwrap();
    n.after_decision(&decision("security-operations", "Crm::User::\"c\"", "r"));
    let got = hook.wait_for(4, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(hook.received().len(), 4, "max_attempts = 4: {got:?}");
    assert_eq!(n.counts().failed.load(Ordering::Relaxed), 1);
    // After the window, the same incident is notified again.
    std::thread::sleep(Duration::from_millis(1100));
    n.after_decision(&decision("security-operations", "Crm::User::\"c\"", "r"));
    assert_eq!(hook.wait_for(5, Duration::from_secs(10)).len(), 5);
}

#[test]
fn bad_configurations_are_refused_naming_the_target() {
    let dir = std::env::temp_dir().join(format!("portcullis-notify-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("n.toml");
    std::fs::write(
        &p,
        "[targets.security-operations]\nurl = \"http://127.0.0.1:1/x\"\n",
    )
    .unwrap();
    let e = format!("{:#}", NotifyConfig::load(&p).err().unwrap());
    assert!(
        e.contains("targets.security-operations") && e.contains("secret_file"),
        "{e}"
    );
    std::fs::write(
        &p,
        "[targets.x]\nurl = \"https://example.invalid/\"\nsecret_file = \"k\"\n",
    )
    .unwrap();
    let e = format!("{:#}", NotifyConfig::load(&p).err().unwrap());
    assert!(e.contains("targets.x.url"), "{e}");
}
