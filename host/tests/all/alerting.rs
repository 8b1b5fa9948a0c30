//! Operations end to end: a real Prometheus on loopback scrapes a running
//! `portcullis serve` with the rules of examples/prometheus (short `for:`),
//! a brute force drives the authentic lockout alert to firing, and its
//! escalation reaches a loopback receiver once per incident; and a shadow
//! bundle records its disagreements while the live decisions are returned.

use crate::notify::{Receiver, config, verified};
use portcullis_host::serve::client;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portcullis-ops-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A child process stopped (by its pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `portcullis serve` on a free loopback port: (process, host:port).
fn serve(dir: &Path, args: &[&str]) -> (Proc, String) {
    let err = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--no-watch",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("cannot start portcullis serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(a) = line.strip_prefix("portcullis serve listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let proc = Proc(child);
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| {
            panic!(
                "serve printed no address:\n{}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            )
        });
    wait_until(Duration::from_secs(60), || {
        get(&addr, "/readyz").is_some_and(|r| r.status == 200)
    });
    (proc, addr)
}

fn get(addr: &str, path: &str) -> Option<client::Response> {
    client::request(addr, "GET", path, &[], b"", Duration::from_secs(10)).ok()
}

fn post(addr: &str, path: &str, body: &str) -> client::Response {
    client::request(
        addr,
        "POST",
        path,
        &[],
        body.as_bytes(),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("POST {path}: {e:#}"))
}

fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn login(who: &str, ip: &str, event: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "principal": {"type": "User", "id": who}, "action": "login",
        "resource": {"type": "App", "id": "sales-cloud"}, "context": {"ip": ip},
    });
    if let Some(e) = event {
        v["event"] = e.into();
    }
    v.to_string()
}

fn decide_batch(addr: &str, items: &[String]) -> Vec<Value> {
    let r = post(addr, "/v1/decide/batch", &format!("[{}]", items.join(",")));
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// Alerts in a state, by name, from Prometheus's API.
fn alerts(prom: &str, state: &str) -> BTreeSet<String> {
    let Some(r) = get(prom, "/api/v1/alerts") else {
        return BTreeSet::new();
    };
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == state)
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_real_prometheus_fires_the_authentic_lockout_alert_and_the_escalation_is_delivered_once() {
    let Ok(prometheus) = which("prometheus") else {
        panic!(
            "the `prometheus` binary is missing: run `make prometheus` (Debian package `prometheus`)"
        );
    };
    let dir = scratch("alert");
    let hook = Receiver::start(vec![]);
    let notify = config("live", &hook.addr, &hook.addr, "10m");
    let policies = crate::root().join("policies");
    let (service, addr) = serve(
        &dir,
        &[
            "--bundle",
            &policies.to_string_lossy(),
            "--notify-config",
            &notify.to_string_lossy(),
        ],
    );

    // The example rules with short `for:`; scrape and evaluate every second.
    let rules =
        std::fs::read_to_string(crate::root().join("examples/prometheus/rules.yml")).unwrap();
    let fast: String = rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(fast.matches("for: 1s").count() >= 12);
    std::fs::write(dir.join("rules.yml"), fast).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nscrape_configs:\n  - job_name: portcullis\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let prom_proc = Proc(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("cannot start prometheus"),
    );
    assert!(
        wait_until(Duration::from_secs(60), || get(&prom, "/-/ready")
            .is_some_and(|r| r.status == 200)),
        "prometheus never became ready:\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );

    // Brute force against alice from one address: ten failures lock the pair.
    let attacker = "198.51.100.23";
    let mut wave: Vec<String> = (0..10)
        .map(|_| login("alice@example.com", attacker, Some("auth_failure")))
        .collect();
    wave.extend((0..5).map(|_| login("alice@example.com", attacker, None)));
    let first = decide_batch(&addr, &wave);
    assert_eq!(first.last().unwrap()["outcome"], "lock");
    // Prometheus must have seen the lock series before the surge (an
    // increase needs two samples of it).
    let seen = "/api/v1/query?query=".to_string()
        + &encode(r#"portcullis_decisions_total{pathway="authentic",outcome="lock"}"#);
    assert!(
        wait_until(Duration::from_secs(30), || get(&prom, &seen)
            .is_some_and(|r| r.body.contains("\"result\":[{"))),
        "prometheus never scraped the lock series"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let surge: Vec<String> = (0..40)
        .map(|_| login("alice@example.com", attacker, None))
        .collect();
    assert!(
        decide_batch(&addr, &surge)
            .iter()
            .all(|d| d["outcome"] == "lock")
    );

    let fired = wait_until(Duration::from_secs(60), || {
        alerts(&prom, "firing").contains("PortcullisAuthenticLockoutSurge")
    });
    assert!(
        fired,
        "alert never fired; alerts: {:?}\nprometheus log:\n{}",
        get(&prom, "/api/v1/alerts").map(|r| r.body),
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    // Authentic trouble pages security, never the synthetic owners.
    let active: BTreeSet<String> = alerts(&prom, "firing")
        .union(&alerts(&prom, "pending"))
        .cloned()
        .collect();
    assert!(
        !active.iter().any(|a| a.starts_with("PortcullisSynthetic")),
        "{active:?}"
    );

    // Every dashboard query is valid PromQL for this Prometheus.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::root().join("examples/prometheus/grafana-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let q = t["expr"].as_str().unwrap();
            let r = get(&prom, &format!("/api/v1/query?query={}", encode(q))).unwrap();
            assert_eq!(r.status, 200, "dashboard query `{q}`: {}", r.body);
            checked += 1;
        }
    }
    assert!(checked >= 20);

    // The escalation of the lock decisions reached its receiver signed, and
    // once per incident (role, first reason, principal) although 46
    // decisions carried it.
    let got = hook.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let got = if got.len() < hook.received().len() {
        hook.received()
    } else {
        got
    };
    assert!(got.iter().all(verified), "{got:?}");
    let bodies: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let secops: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["escalation"] == "security-operations")
        .collect();
    assert_eq!(secops.len(), 1, "{bodies:?}");
    assert_eq!(secops[0]["outcome"], "lock");
    assert_eq!(secops[0]["principal"], "Crm::User::\"alice@example.com\"");
    let incidents: BTreeSet<String> = bodies
        .iter()
        .map(|b| format!("{}|{}|{}", b["escalation"], b["reasons"][0], b["principal"]))
        .collect();
    assert_eq!(
        incidents.len(),
        bodies.len(),
        "no incident twice: {bodies:?}"
    );
    drop(prom_proc);
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(notify.parent().unwrap());
}

#[test]
fn a_shadow_bundle_records_disagreements_and_enforces_nothing() {
    let dir = scratch("shadow");
    let policies = crate::root().join("policies");
    // The candidate locks the pair after 6 failures instead of 10.
    let candidate = dir.join("candidate");
    for (name, body) in crate::default_files() {
        let body = if name == "portcullis.toml" {
            assert!(body.contains("throttle_after = 5\nlock_after = 10\n"));
            body.replacen(
                "throttle_after = 5\nlock_after = 10\n",
                "throttle_after = 5\nlock_after = 6\n",
                1,
            )
        } else {
            body
        };
        let p = candidate.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let log = dir.join("shadow.jsonl");
    let (service, addr) = serve(
        &dir,
        &[
            "--bundle",
            &policies.to_string_lossy(),
            "--shadow",
            &candidate.to_string_lossy(),
            "--shadow-log",
            &log.to_string_lossy(),
        ],
    );
    let mut requests: Vec<String> = (0..10)
        .map(|_| login("bob@example.com", "198.51.100.40", Some("auth_failure")))
        .collect();
    requests.push(login("bob@example.com", "198.51.100.40", None));
    requests.push(login("carol@example.com", "192.0.2.5", None));
    let returned = decide_batch(&addr, &requests);

    // What the live bundle alone decides, natively, from empty state.
    let trace = dir.join("trace.jsonl");
    std::fs::write(&trace, requests.join("\n") + "\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--engine", "native", "--format", "json", "replay", "--bundle",
        ])
        .arg(&policies)
        .arg(&trace)
        .output()
        .unwrap();
    let live: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shape = |v: &Value| (v["outcome"].clone(), v["policies"].clone());
    assert_eq!(
        returned.iter().map(shape).collect::<Vec<_>>(),
        live.iter().map(shape).collect::<Vec<_>>(),
        "the service returns the live bundle's decisions"
    );
    // The candidate would have locked from the sixth failure on; the live
    // bundle throttles failures 5-9 and locks at the tenth.
    let outcomes: Vec<&str> = returned
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        &outcomes[5..10],
        ["throttle", "throttle", "throttle", "throttle", "lock"]
    );

    assert!(
        wait_until(Duration::from_secs(30), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.lines().count() >= 4)),
        "no disagreements recorded"
    );
    std::thread::sleep(Duration::from_millis(300));
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pairs: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["live"]["outcome"].as_str().unwrap().to_string(),
                l["shadow"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![("throttle".to_string(), "lock".to_string()); 4],
        "failures 6-9: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["request_digest"].as_str().is_some_and(|d| d.len() == 64))
    );
    assert!(lines.iter().all(|l| {
        l["shadow"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "lockout.pair.lock")
    }));
    let metrics = get(&addr, "/metrics").unwrap().body;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("portcullis_shadow_disagreements_total{"))
        .unwrap_or_else(|| panic!("no shadow metric:\n{metrics}"));
    assert!(
        line.contains("live_outcome=\"throttle\"")
            && line.contains("shadow_outcome=\"lock\"")
            && line.ends_with(" 4"),
        "{line}"
    );
    drop(service);
    let _ = std::fs::remove_dir_all(&dir);
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
