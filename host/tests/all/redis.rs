//! The Redis store against a real `redis-server` (Debian's, from `make
//! redis`; `REDIS_SERVER` or PATH), started on a free loopback port and
//! stopped by pid: compare-and-set semantics, two processes sharing
//! lockout counters exactly, and what happens when Redis dies and returns.

use portcullis_engine::{Entry, Store, Write, WriteResult};
use portcullis_host::redis_store::{
    Fallback, PROBE_INTERVAL, RedisOptions, RedisStore, StoreHealth,
};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// A redis-server of our own on 127.0.0.1.
pub struct Redis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

fn redis_server() -> String {
    let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let found = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{bin}` not found: run `make redis` (installs Debian's redis-server) or set REDIS_SERVER"
    );
    bin
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Redis {
    /// Start on a free port.
    pub fn start(tag: &str) -> Redis {
        Redis::start_on(tag, free_port())
    }

    /// Start on `port` (again, after a kill), empty: no persistence.
    pub fn start_on(tag: &str, port: u16) -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-redis-{tag}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let child = Command::new(redis_server())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        let r = Redis {
            child: Some(child),
            port,
            dir,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (SIGKILL by pid) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn options(fallback: Fallback) -> RedisOptions {
    RedisOptions {
        key_prefix: "test:".into(),
        connect_timeout: Duration::from_millis(300),
        op_timeout: Duration::from_millis(500),
        fallback,
    }
}

fn w(key: &str, value: Option<&str>, expected_version: u64) -> Write {
    Write {
        key: key.into(),
        value: value.map(str::to_string),
        expected_version,
    }
}

fn written(r: &WriteResult) -> u64 {
    match r {
        WriteResult::Written(v) => *v,
        WriteResult::Conflict(e) => panic!("conflict: {e:?}"),
    }
}

#[test]
fn compare_and_set_keeps_the_store_contract() {
    let redis = Redis::start("cas");
    let mut s = RedisStore::connect(&redis.url(), options(Fallback::FailClosed)).expect("connect");
    assert_eq!(s.health(), StoreHealth::Ok);
    let got = s.get(&["a".into(), "b".into()]).expect("get");
    assert_eq!(
        got,
        vec![
            Entry {
                key: "a".into(),
                value: None,
                version: 0
            },
            Entry {
                key: "b".into(),
                value: None,
                version: 0
            }
        ]
    );
    let v1 = written(&s.compare_and_set(&[w("a", Some("1"), 0)]).expect("cas")[0]);
    assert!(v1 > 0);
    // A stale writer loses and is told the current entry; writes are independent.
    let r = s
        .compare_and_set(&[w("a", Some("2"), 0), w("b", Some("x"), 0)])
        .expect("cas");
    assert_eq!(
        r[0],
        WriteResult::Conflict(Entry {
            key: "a".into(),
            value: Some("1".into()),
            version: v1
        })
    );
    assert!(matches!(r[1], WriteResult::Written(_)));
    // In one batch, in order: the second write to a key sees the first.
    let r = s
        .compare_and_set(&[w("a", Some("3"), v1), w("a", Some("4"), v1)])
        .expect("cas");
    let v3 = written(&r[0]);
    assert!(
        matches!(&r[1], WriteResult::Conflict(e) if e.value.as_deref() == Some("3") && e.version == v3)
    );
    // Delete, then re-create: a fresh, larger version (no ABA).
    assert_eq!(
        written(&s.compare_and_set(&[w("a", None, v3)]).expect("cas")[0]),
        0
    );
    let got = s.get(&["a".into()]).expect("get");
    assert_eq!(got[0].version, 0);
    let v5 = written(&s.compare_and_set(&[w("a", Some("5"), 0)]).expect("cas")[0]);
    assert!(v5 > v3);
    // Values are kept byte for byte, and a deleted absent key conflicts.
    let odd = "ünïcode \"quoted\" \n line|pipe:colon";
    written(&s.compare_and_set(&[w("odd", Some(odd), 0)]).expect("cas")[0]);
    assert_eq!(
        s.get(&["odd".into()]).expect("get")[0].value.as_deref(),
        Some(odd)
    );
    assert!(matches!(
        s.compare_and_set(&[w("never", None, 7)]).expect("cas")[0],
        WriteResult::Conflict(Entry { version: 0, .. })
    ));
    // Another process's clone sees the same state.
    let mut other = s.clone();
    assert_eq!(other.get(&["a".into()]).expect("get")[0].version, v5);
    assert_eq!(s.monitor().errors_total(), 0);
}

#[test]
fn concurrent_compare_and_set_has_exactly_one_winner() {
    let redis = Redis::start("race");
    let store = RedisStore::connect(&redis.url(), options(Fallback::FailClosed)).expect("connect");
    let rounds = 100;
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let mut s = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut wins = 0;
                for i in 0..rounds {
                    let key = format!("race:{i}");
                    let seen = s.get(std::slice::from_ref(&key)).expect("get");
                    barrier.wait();
                    let r = s
                        .compare_and_set(&[w(&key, Some("mine"), seen[0].version)])
                        .expect("cas");
                    if matches!(r[0], WriteResult::Written(_)) {
                        wins += 1;
                    }
                }
                // Then a counter both increment with retries: nothing is lost.
                for _ in 0..200 {
                    loop {
                        let e = s.get(&["counter".into()]).expect("get").remove(0);
                        let n: u64 = e.value.as_deref().map_or(0, |v| v.parse().expect("n"));
                        let r = s
                            .compare_and_set(&[w("counter", Some(&(n + 1).to_string()), e.version)])
                            .expect("cas");
                        if matches!(r[0], WriteResult::Written(_)) {
                            break;
                        }
                    }
                }
                wins
            })
        })
        .collect();
    let wins: Vec<u32> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    assert_eq!(
        wins.iter().sum::<u32>(),
        rounds,
        "exactly one winner per round: {wins:?}"
    );
    let mut s = store.clone();
    let total = s.get(&["counter".into()]).expect("get").remove(0);
    assert_eq!(total.value.as_deref(), Some("400"));
}

#[test]
fn down_redis_fails_closed_or_counts_locally_within_the_bound() {
    let mut redis = Redis::start("down");
    let port = redis.port;
    // Fail closed.
    let mut closed =
        RedisStore::connect(&redis.url(), options(Fallback::FailClosed)).expect("connect");
    closed
        .compare_and_set(&[w("k", Some("1"), 0)])
        .expect("cas");
    // Local, bounded at 3 keys.
    let local = RedisStore::connect(&redis.url(), options(Fallback::Local { max_keys: 3 }))
        .expect("connect");
    let monitor = local.monitor();
    let mut local = local;
    assert!(local.get(&["k".into()]).expect("get")[0].version > 0);
    assert_eq!(monitor.take_fallback_ops(), 0);

    redis.kill();
    let err = closed.get(&["k".into()]).expect_err("fail closed");
    assert!(err.contains(&format!("redis at 127.0.0.1:{port}")), "{err}");
    assert!(err.ends_with("(fail-closed)"), "{err}");
    assert_eq!(closed.health(), StoreHealth::Down);
    assert!(closed.compare_and_set(&[w("k", Some("2"), 1)]).is_err());
    assert!(closed.monitor().errors_total() >= 2);

    // Degraded: Redis's value is not visible, counting starts afresh, bounded.
    let got = local.get(&["k".into()]).expect("served locally");
    assert_eq!(got[0].version, 0);
    assert_eq!(local.health(), StoreHealth::Degraded);
    assert!(monitor.take_fallback_ops() > 0);
    let r = local
        .compare_and_set(&[
            w("x1", Some("a"), 0),
            w("x2", Some("b"), 0),
            w("x3", Some("c"), 0),
        ])
        .expect("three keys fit");
    assert!(r.iter().all(|r| matches!(r, WriteResult::Written(_))));
    // Overwriting a held key still fits; a fourth key does not.
    let v = local.get(&["x1".into()]).expect("get")[0].version;
    written(
        &local
            .compare_and_set(&[w("x1", Some("a2"), v)])
            .expect("cas")[0],
    );
    let full = local
        .compare_and_set(&[w("x4", Some("d"), 0)])
        .expect_err("bound");
    assert!(
        full.contains("local fallback store is full (3 keys)"),
        "{full}"
    );
    assert_eq!(monitor.local_keys(), 3);
    assert_eq!(monitor.error_counts()["local_full"], 1);

    // Redis back (empty: no persistence): shared again, local counts dropped.
    let _redis = Redis::start_on("down-again", port);
    std::thread::sleep(PROBE_INTERVAL + Duration::from_millis(50));
    let got = local.get(&["x1".into()]).expect("get");
    assert_eq!(got[0].version, 0, "degraded counts are not merged back");
    assert_eq!(local.health(), StoreHealth::Ok);
    assert_eq!(monitor.local_keys(), 0);
    written(
        &local
            .compare_and_set(&[w("x4", Some("d"), 0)])
            .expect("cas")[0],
    );
    closed
        .get(&["x4".into()])
        .expect("fail-closed store is back too");
    assert_eq!(closed.health(), StoreHealth::Ok);
}

/// A `portcullis replay` process fed one line at a time.
struct Replay {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Replay {
    fn start(store: &str, fallback: &str) -> Replay {
        let policies = crate::root().join("policies");
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["--format", "json", "replay", "--bundle"])
            .arg(&policies)
            .args(["--store", store, "--store-fallback", fallback, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run portcullis replay");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Replay {
            stdin: child.stdin.take(),
            child,
            lines: rx,
        }
    }

    fn decide(&mut self, request: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{request}").expect("write request");
        stdin.flush().expect("flush");
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("a decision within a minute");
        serde_json::from_str(&line).expect("decision JSON")
    }

    /// Close the input; exit code and standard error.
    fn finish(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait().expect("wait");
        (status.code(), err)
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A login (or an observed failure) by `user` from `ip`, `at` seconds
/// after 10:00.
fn login(user: &str, ip: &str, at: u32, event: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "principal": {"type": "User", "id": user},
        "action": "login",
        "resource": {"type": "App", "id": "sales-cloud"},
        "context": {"ip": ip},
        "now": format!("2026-11-22T10:{:02}:{:02}Z", at / 60, at % 60),
    });
    if let Some(e) = event {
        v["event"] = Value::from(e);
    }
    v.to_string()
}

/// The (account, address) pair's lock threshold in the default bundle.
fn pair_threshold() -> u32 {
    let bundle = portcullis_engine::Bundle::load(&crate::default_files()).expect("bundle");
    let n = bundle.manifest().lockout.authentic.account_ip.lock_after;
    assert!(n >= 4, "the test interleaves at least four failures");
    n
}

/// Interleave `threshold` failures of one account over two processes;
/// answer the outcome of a login just before and just after the last one.
fn interleave(a: &mut Replay, b: &mut Replay, user: &str, threshold: u32) -> (Value, Value) {
    let ip = "198.51.100.23";
    let mut at = 0;
    for i in 0..threshold - 1 {
        let p = if i % 2 == 0 { &mut *a } else { &mut *b };
        p.decide(&login(user, ip, at, Some("auth_failure")));
        at += 1;
    }
    let before = b.decide(&login(user, ip, at, None));
    at += 1;
    a.decide(&login(user, ip, at, Some("auth_failure")));
    at += 1;
    let after = b.decide(&login(user, ip, at, None));
    (before, after)
}

#[test]
fn two_processes_sharing_redis_lock_an_account_after_the_combined_threshold() {
    let redis = Redis::start("fleet");
    let threshold = pair_threshold();
    let mut a = Replay::start(&redis.url(), "fail-closed");
    let mut b = Replay::start(&redis.url(), "fail-closed");
    let (before, after) = interleave(&mut a, &mut b, "bob@example.com", threshold);
    assert_ne!(before["outcome"], "lock", "{before}");
    assert_eq!(
        before["audit"]["facts"]["lockout"]["account_ip"]["failures"],
        threshold - 1
    );
    assert_eq!(after["outcome"], "lock", "{after}");
    assert!(
        after["policies"]
            .as_array()
            .expect("policies")
            .contains(&Value::from("lockout.pair.lock"))
    );
    assert_eq!(
        after["audit"]["facts"]["lockout"]["account_ip"]["stage"],
        "temporary_lock"
    );
    // The other process sees the lock too.
    let seen_by_a = a.decide(&login(
        "bob@example.com",
        "198.51.100.23",
        threshold + 5,
        None,
    ));
    assert_eq!(seen_by_a["outcome"], "lock");
    assert_eq!(a.finish().0, Some(0));
    assert_eq!(b.finish().0, Some(0));

    // Control: with per-process memory, B alone sees only its share of the
    // failures (interleaving cannot matter when nothing is shared).
    let ip = "198.51.100.23";
    let mut lines: Vec<String> = (0..threshold)
        .filter(|i| i % 2 == 1)
        .map(|i| login("bob@example.com", ip, i, Some("auth_failure")))
        .collect();
    lines.push(login("bob@example.com", ip, threshold + 1, None));
    let out = crate::audit::portcullis(
        &[
            "--format",
            "json",
            "replay",
            "--bundle",
            crate::root().join("policies").to_str().expect("utf-8"),
            "--store",
            "memory",
            "-",
        ],
        Some(&(lines.join("\n") + "\n")),
    );
    let last: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("decisions"),
    )
    .expect("JSON");
    assert_ne!(last["outcome"], "lock", "{last}");
    assert_eq!(
        last["audit"]["facts"]["lockout"]["account_ip"]["failures"],
        threshold / 2
    );
}

fn is_store_deny(d: &Value, port: u16) -> bool {
    let reason = d["reasons"][0].as_str().unwrap_or("");
    d["outcome"] == "deny"
        && d["error"]["kind"] == "store"
        && reason.starts_with("error: store ")
        && reason.contains(&format!("redis at 127.0.0.1:{port}"))
        && reason.ends_with("(fail-closed)")
}

#[test]
fn redis_killed_mid_run_fails_closed_naming_the_store_and_nothing_panics() {
    let mut redis = Redis::start("killed");
    let port = redis.port;
    let mut p = Replay::start(&redis.url(), "fail-closed");
    let d = p.decide(&login("carol@example.com", "192.0.2.200", 0, None));
    assert_eq!(d["outcome"], "allow", "{d}");
    redis.kill();
    for i in 1..=5 {
        let d = p.decide(&login("carol@example.com", "192.0.2.200", i, None));
        assert!(is_store_deny(&d, port), "{d}");
        let d = p.decide(&login(
            "carol@example.com",
            "192.0.2.200",
            i,
            Some("auth_failure"),
        ));
        assert!(is_store_deny(&d, port), "{d}");
    }
    // Back again: decisions resume without a restart of the process.
    let _redis = Redis::start_on("killed-again", port);
    std::thread::sleep(PROBE_INTERVAL + Duration::from_millis(50));
    let d = p.decide(&login("carol@example.com", "192.0.2.200", 30, None));
    assert_eq!(d["outcome"], "allow", "{d}");
    let (code, stderr) = p.finish();
    assert_eq!(code, Some(2), "lines with store errors exit 2: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn local_fallback_keeps_deciding_marked_degraded_within_its_bound_then_shares_again() {
    let mut redis = Redis::start("local");
    let port = redis.port;
    let threshold = pair_threshold();
    let bound = 12;
    let mut a = Replay::start(&redis.url(), &format!("local:{bound}"));
    let mut b = Replay::start(&redis.url(), &format!("local:{bound}"));
    let d = a.decide(&login("erin@example.com", "192.0.2.9", 0, None));
    assert_eq!(d["outcome"], "allow");
    assert!(
        d.get("store").is_none(),
        "not degraded while Redis answers: {d}"
    );
    redis.kill();

    // Degraded: decisions continue, marked, counted in this process only.
    for i in 0..threshold {
        let d = a.decide(&login(
            "erin@example.com",
            "192.0.2.9",
            1 + i,
            Some("auth_failure"),
        ));
        assert!(d["error"].is_null(), "{d}");
        assert_eq!(d["store"]["health"], "degraded", "{d}");
        assert_eq!(d["store"]["fallback"], format!("local:{bound}"));
    }
    let d = a.decide(&login("erin@example.com", "192.0.2.9", 100, None));
    assert_eq!(d["outcome"], "lock", "counted locally: {d}");
    let d = b.decide(&login("erin@example.com", "192.0.2.9", 100, None));
    assert_ne!(
        d["outcome"], "lock",
        "the other process did not see them: {d}"
    );
    assert_eq!(d["store"]["health"], "degraded");

    // The bound: new accounts add keys until the local store is full, then
    // decisions fail closed naming it; never a panic, never an allow past it.
    let mut full_at = None;
    for i in 0..bound {
        let user = format!("user{i}@example.com");
        let d = a.decide(&login(
            &user,
            "192.0.2.10",
            200 + i as u32,
            Some("auth_failure"),
        ));
        if d["error"]["kind"] == "store" {
            let reason = d["reasons"][0].as_str().unwrap_or("");
            assert!(
                reason.contains(&format!("local fallback store is full ({bound} keys)")),
                "{d}"
            );
            assert_eq!(d["outcome"], "deny");
            full_at = Some(i);
            break;
        }
        assert_eq!(d["store"]["health"], "degraded");
    }
    assert!(
        full_at.is_some_and(|i| i > 0),
        "the bound of {bound} keys was reached"
    );

    // Redis back: shared counting again, local counts dropped (declared).
    let _redis = Redis::start_on("local-again", port);
    std::thread::sleep(PROBE_INTERVAL + Duration::from_millis(50));
    let d = a.decide(&login("erin@example.com", "192.0.2.9", 300, None));
    assert!(d.get("store").is_none(), "{d}");
    assert_ne!(
        d["outcome"], "lock",
        "degraded counts are not merged back: {d}"
    );
    let (before, after) = interleave(&mut a, &mut b, "frank@example.com", threshold);
    assert!(before.get("store").is_none() && after.get("store").is_none());
    assert_eq!(after["outcome"], "lock", "shared again: {after}");
    let (code, stderr) = a.finish();
    assert_eq!(
        code,
        Some(2),
        "the full store's denials are errors: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(b.finish().0, Some(0));
}

// ------------------------------------------------ two real `serve` processes --

/// A `portcullis serve` on a free loopback port, killed on drop.
struct Service {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Service {
    fn start(tag: &str, store: &str, fallback: &str, audit_log: &std::path::Path) -> Service {
        let dir = crate::audit::scratch(&format!("redis-serve-{tag}"));
        let log = dir.join("serve.log");
        let err = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--no-watch",
            ])
            .arg("--bundle")
            .arg(crate::root().join("policies"))
            .args(["--store", store, "--store-fallback", fallback])
            .arg("--audit-log")
            .arg(audit_log)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("cannot start portcullis serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("portcullis serve listening on http://") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| {
                panic!(
                    "serve printed no address: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let s = Service { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.get("/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "serve never ready: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let r = portcullis_host::serve::client::request(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", self.log_text()));
        (r.status, r.body)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.call("GET", path, "")
    }

    /// POST a request (or event) and answer the decision.
    fn decide(&self, path: &str, request: &str) -> Value {
        let (status, body) = self.call("POST", path, request);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("decision JSON")
    }

    /// SIGTERM by pid; the exit code.
    fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn two_services_sharing_redis_lock_an_account_after_the_combined_threshold() {
    let redis = Redis::start("serve-fleet");
    let threshold = pair_threshold();
    let dir = crate::audit::scratch("redis-serve-fleet-audit");
    let a = Service::start("fleet-a", &redis.url(), "fail-closed", &dir.join("a.jsonl"));
    let b = Service::start("fleet-b", &redis.url(), "fail-closed", &dir.join("b.jsonl"));
    let (user, ip) = ("grace@example.com", "198.51.100.77");
    let mut at = 0;
    for i in 0..threshold - 1 {
        let s = if i % 2 == 0 { &a } else { &b };
        let d = s.decide("/v1/events", &login(user, ip, at, Some("auth_failure")));
        assert!(d["error"].is_null(), "{d}");
        at += 1;
    }
    let before = b.decide("/v1/decide", &login(user, ip, at, None));
    assert_ne!(before["outcome"], "lock", "{before}");
    assert_eq!(
        before["audit"]["facts"]["lockout"]["account_ip"]["failures"],
        threshold - 1
    );
    at += 1;
    a.decide("/v1/events", &login(user, ip, at, Some("auth_failure")));
    at += 1;
    for s in [&b, &a] {
        let d = s.decide("/v1/decide", &login(user, ip, at, None));
        assert_eq!(d["outcome"], "lock", "{d}");
        assert!(
            d["policies"]
                .as_array()
                .expect("policies")
                .contains(&Value::from("lockout.pair.lock"))
        );
    }
    let (_, ready) = a.get("/readyz");
    assert!(ready.contains(r#""store":"ok""#), "{ready}");
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
    // Each service's own audit chain is intact and holds its decisions.
    for (file, n) in [
        ("a.jsonl", threshold / 2 + 2),
        ("b.jsonl", threshold / 2 + 1),
    ] {
        let report = portcullis_host::audit::verify(&[dir.join(file)]);
        assert!(report.is_intact(), "{file}: {report:?}");
        assert!(report.lines >= u64::from(n), "{file}: {report:?}");
    }
}

#[test]
fn redis_killed_mid_run_the_services_keep_answering_as_declared() {
    let mut redis = Redis::start("serve-killed");
    let port = redis.port;
    let dir = crate::audit::scratch("redis-serve-killed-audit");
    let closed = Service::start("closed", &redis.url(), "fail-closed", &dir.join("c.jsonl"));
    let local = Service::start("local", &redis.url(), "local:1000", &dir.join("l.jsonl"));
    let req = |at| login("heidi@example.com", "192.0.2.44", at, None);
    assert_eq!(closed.decide("/v1/decide", &req(0))["outcome"], "allow");
    assert_eq!(local.decide("/v1/decide", &req(1))["outcome"], "allow");

    redis.kill();
    for at in 2..12 {
        let d = closed.decide("/v1/decide", &req(at));
        assert!(is_store_deny(&d, port), "{d}");
        // Decided and counted locally (the failures below climb its ladder).
        let d = local.decide("/v1/decide", &req(at));
        assert!(d["error"].is_null(), "{d}");
        assert_eq!(
            d["audit"]["facts"]["lockout"]["account_ip"]["failures"],
            at - 2
        );
        assert_eq!(d["store"]["health"], "degraded", "{d}");
        let e = local.decide(
            "/v1/events",
            &login("heidi@example.com", "192.0.2.44", at, Some("auth_failure")),
        );
        assert_eq!(e["store"]["health"], "degraded", "{e}");
    }
    let batch = format!("[{},{}]", req(20), req(21));
    let (status, body) = closed.call("POST", "/v1/decide/batch", &batch);
    assert_eq!(status, 200, "{body}");
    let decisions: Vec<Value> = serde_json::from_str(&body).expect("batch JSON");
    assert!(decisions.iter().all(|d| is_store_deny(d, port)), "{body}");
    let (_, ready) = closed.get("/readyz");
    assert!(ready.contains(r#""store":"down""#), "{ready}");
    let (_, ready) = local.get("/readyz");
    assert!(ready.contains(r#""store":"degraded""#), "{ready}");
    let (_, metrics) = closed.get("/metrics");
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("portcullis_store_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "{metrics}");

    // Redis back: both services share again without a restart.
    let _redis = Redis::start_on("serve-killed-again", port);
    std::thread::sleep(PROBE_INTERVAL + Duration::from_millis(100));
    let d = closed.decide("/v1/decide", &req(40));
    assert_eq!(d["outcome"], "allow", "{d}");
    let d = local.decide("/v1/decide", &req(41));
    assert!(d.get("store").is_none(), "{d}");
    for s in [&closed, &local] {
        assert!(!s.log_text().contains("panicked"), "{}", s.log_text());
    }
    assert_eq!(closed.stop(), Some(0));
    assert_eq!(local.stop(), Some(0));
    for f in ["c.jsonl", "l.jsonl"] {
        let report = portcullis_host::audit::verify(&[dir.join(f)]);
        assert!(report.is_intact(), "{f}: {report:?}");
    }
    let log = std::fs::read_to_string(dir.join("l.jsonl")).expect("audit");
    assert!(
        log.contains(r#""store":"degraded""#),
        "degraded decisions are marked in the audit log"
    );
}
