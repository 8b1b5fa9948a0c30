//! `portcullis serve`, the real binary on a loopback port: decisions equal
//! the CLI's, status codes, hot swap (signed, refused with reasons while
//! decisions keep coming), rollback, metrics, and 20 watched swaps under
//! load with none failing.

use portcullis_engine::bundle::{PACKED_FORMAT, Packed};
use portcullis_host::bundle_dir;
use portcullis_host::serve::client::{self, Response};
use portcullis_host::signing;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running `portcullis serve`, stopped (SIGTERM, then kill) on drop.
struct Service {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Service {
    fn start(tag: &str, args: &[&str]) -> Service {
        let log = scratch(tag).join("serve.log");
        let _ = std::fs::create_dir_all(log.parent().unwrap());
        let err = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .expect("cannot start portcullis serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix("portcullis serve listening on http://") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "serve printed no address; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            }
        };
        let s = Service { child, addr, log };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            if self.get("/readyz").status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("serve never became ready; log:\n{}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
        client::request(&self.addr, method, path, headers, body.as_bytes(), TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    fn get(&self, path: &str) -> Response {
        match client::request(&self.addr, "GET", path, &[], b"", TIMEOUT) {
            Ok(r) => r,
            Err(e) => panic!("GET {path}: {e:#}"),
        }
    }

    fn post(&self, path: &str, body: &str) -> Response {
        self.call("POST", path, &[], body)
    }

    fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path).body).unwrap()
    }

    fn install(&self, token: &str, packed: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.call("POST", "/v1/bundle", &[("Authorization", &auth)], packed)
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
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

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("portcullis-serve-{tag}-{}", std::process::id()))
}

fn fresh(tag: &str) -> PathBuf {
    let d = scratch(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn policies() -> String {
    crate::root().join("policies").to_string_lossy().to_string()
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("cannot run portcullis")
}

/// A copy of the default bundle with edits (file, from, to; an empty
/// `from` appends `to`), in `dir`.
fn bundle_copy(dir: &Path, edits: &[(&str, &str, &str)]) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    let mut files = crate::default_files();
    for (file, from, to) in edits {
        match files.iter_mut().find(|(n, _)| n == file) {
            Some((_, body)) if from.is_empty() => body.push_str(to),
            Some((_, body)) => {
                assert!(body.contains(from), "{file} lacks `{from}`");
                *body = body.replacen(from, to, 1);
            }
            None => files.push((file.to_string(), to.to_string())),
        }
    }
    for (name, body) in files {
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir.to_path_buf()
}

/// The content hash of a bundle directory (the engine's), or a dummy for
/// a bundle that does not load.
fn hash_of(files: &[(String, String)]) -> String {
    portcullis_engine::Bundle::load(files)
        .map(|b| b.info().hash.clone())
        .unwrap_or_else(|_| "0".repeat(64))
}

/// A bundle directory packed by hand (any bundle, even one `pack` refuses),
/// with the signature in its `bundle.sig` if there is one.
fn packed(dir: &Path) -> String {
    let files = bundle_dir::read(dir).unwrap();
    let signature = signing::read_dir_signature(dir).unwrap();
    let doc = Packed {
        format: PACKED_FORMAT.into(),
        name: "portcullis-default".into(),
        version: "test".into(),
        hash: hash_of(&files),
        files: files.into_iter().collect(),
        signature,
    };
    serde_json::to_string(&doc).unwrap()
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let out = cli(&["keygen", "--out", &dir.join(name).to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let public = dir.join(format!("{name}.pub"));
    let id = signing::key_id(&signing::read_verifying_key(&public).unwrap());
    (dir.join(format!("{name}.key")), public, id)
}

fn sign_dir(key: &Path, dir: &Path) {
    let out = cli(&[
        "sign",
        "--key",
        &key.to_string_lossy(),
        &dir.to_string_lossy(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn token_file(dir: &Path) -> (PathBuf, String) {
    let token = "s3cret-admin-token-for-tests".to_string();
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    (path, token)
}

fn traffic() -> Vec<String> {
    std::fs::read_to_string(crate::root().join("examples/traffic.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// A one-policy bundle (logins allowed), with its one case.
fn tiny_bundle(version: &str) -> Vec<(String, String)> {
    vec![
        (
            "portcullis.toml".into(),
            format!("[bundle]\nname = \"swap-test\"\nversion = \"{version}\"\nnamespace = \"Crm\"\n"),
        ),
        (
            "schema.cedarschema".into(),
            "namespace Crm {\n  entity User;\n  entity App;\n  action login appliesTo { principal: [User], resource: [App], context: Portcullis::Context };\n}\n".into(),
        ),
        (
            "access.cedar".into(),
            "@id(\"login\")\n@reason(\"login permitted\")\npermit (principal, action == Crm::Action::\"login\", resource);\n".into(),
        ),
        (
            "tests/login.yaml".into(),
            "cases:\n  - name: a login is allowed\n    request: {principal: {type: User, id: a@example.com}, action: login, resource: {type: App, id: crm}, now: \"2026-11-22T10:00:00Z\"}\n    expect: {outcome: allow, policies: [login]}\n".into(),
        ),
    ]
}

/// A login for the one-policy bundle.
fn tiny_login(principal: &str) -> String {
    format!(
        r#"{{"principal":{{"type":"User","id":"{principal}"}},"action":"login","resource":{{"type":"App","id":"crm"}},"context":{{"ip":"203.0.113.7"}},"now":"2026-11-22T09:00:00Z"}}"#
    )
}

/// A plain login: allowed, and neither rate-limited nor counted as a failure.
fn login_req(principal: &str) -> String {
    format!(
        r#"{{"principal":{{"type":"User","id":"{principal}"}},"action":"login","resource":{{"type":"App","id":"sales-cloud"}},"context":{{"ip":"203.0.113.7","module":"sales_cloud"}},"now":"2026-11-22T09:00:00Z"}}"#
    )
}

fn read_req(principal: &str) -> String {
    format!(
        r#"{{"principal":{{"type":"User","id":"{principal}"}},"action":"read","resource":{{"type":"Record","id":"0015g00000AbCdEAAV"}},"context":{{"ip":"203.0.113.7","region":"eu-central"}},"now":"2026-11-22T09:00:05Z"}}"#
    )
}

/// The value of one series in a metrics exposition (0 when absent).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Clients deciding in a loop until stopped: counts, failures, and every
/// bundle a decision named.
struct Background {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    bundles: Arc<Mutex<std::collections::BTreeSet<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start(addr: &str, clients: usize, body: fn(&str) -> String) -> Background {
        let b = Background {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicU64::new(0)),
            failures: Arc::new(Mutex::new(Vec::new())),
            bundles: Arc::new(Mutex::new(Default::default())),
            threads: Vec::new(),
        };
        let mut threads = Vec::new();
        for i in 0..clients {
            let (stop, ok, failures, bundles) = (
                b.stop.clone(),
                b.ok.clone(),
                b.failures.clone(),
                b.bundles.clone(),
            );
            let addr = addr.to_string();
            threads.push(std::thread::spawn(move || {
                let body = body(&format!("bg{i}@example.com"));
                while !stop.load(Ordering::Relaxed) {
                    match client::request(
                        &addr,
                        "POST",
                        "/v1/decide",
                        &[],
                        body.as_bytes(),
                        TIMEOUT,
                    ) {
                        Ok(r) if r.status == 200 => {
                            let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                            if v["outcome"] != "allow" {
                                failures.lock().unwrap().push(r.body);
                                continue;
                            }
                            ok.fetch_add(1, Ordering::Relaxed);
                            let bundle = v["audit"]["bundle"].as_str().unwrap_or("").to_string();
                            bundles.lock().unwrap().insert(bundle);
                        }
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{}: {}", r.status, r.body)),
                        Err(e) => failures.lock().unwrap().push(format!("{e:#}")),
                    }
                }
            }));
        }
        Background { threads, ..b }
    }

    /// Stop; answers (decisions made, failures, bundles seen).
    fn finish(self) -> (u64, Vec<String>, std::collections::BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.lock().unwrap().clone(),
            self.bundles.lock().unwrap().clone(),
        )
    }
}

#[test]
fn serve_decides_like_the_cli_one_by_one_in_batches_and_as_events() {
    let lines = traffic();
    let out = cli(&[
        "--format",
        "json",
        "replay",
        "--bundle",
        &policies(),
        &crate::root()
            .join("examples/traffic.jsonl")
            .to_string_lossy(),
    ]);
    let replayed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replayed.len(), lines.len());

    // One by one: requests to /v1/decide, events to /v1/events.
    let svc = Service::start("decide", &["--bundle", &policies()]);
    let mut served = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap();
        let path = if v.get("event").is_some() {
            "/v1/events"
        } else {
            "/v1/decide"
        };
        let r = svc.post(path, line);
        assert_eq!(r.status, 200, "{path} {line}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"));
        served.push(serde_json::from_str::<Value>(&r.body).unwrap());
    }
    assert_eq!(served, replayed, "one by one over HTTP = CLI replay");
    // And the first request alone equals `portcullis decide`.
    let first = scratch("decide").join("first.json");
    std::fs::write(&first, &lines[0]).unwrap();
    let out = cli(&[
        "--format",
        "json",
        "decide",
        "--bundle",
        &policies(),
        &first.to_string_lossy(),
    ]);
    let decided: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decided, replayed[0]);
    assert_eq!(svc.stop(), Some(0), "SIGTERM is a clean stop");

    // The whole traffic as one batch on a fresh service.
    let svc = Service::start("batch", &["--bundle", &policies()]);
    let r = svc.post("/v1/decide/batch", &format!("[{}]", lines.join(",")));
    assert_eq!(r.status, 200, "{}", r.body);
    let batch: Vec<Value> = serde_json::from_str(&r.body).unwrap();
    assert_eq!(batch, replayed, "batch over HTTP = CLI replay");
    // Events in a batch of their own continue the same state.
    let events: Vec<&String> = lines.iter().filter(|l| l.contains("\"event\"")).collect();
    let r = svc.post(
        "/v1/events",
        &format!(
            "[{}]",
            events
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&r.body).unwrap().len(),
        events.len()
    );
}

#[test]
fn bad_requests_are_400_naming_the_field_and_oversize_is_413() {
    let site = fresh("site");
    std::fs::write(site.join("index.html"), "<h1>playground</h1>").unwrap();
    let svc = Service::start(
        "errors",
        &[
            "--bundle",
            &policies(),
            "--max-request-bytes",
            "4096",
            "--playground",
            &site.to_string_lossy(),
        ],
    );
    let typo = r#"{"principal":{"type":"User","id":"a@example.com"},"action":"read","resource":{"type":"Record","id":"r1"},"context":{"destination_regoin":"us-east"}}"#;
    let r = svc.post("/v1/decide", typo);
    assert_eq!(r.status, 400, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v["outcome"], "deny",
        "a 400 still carries the deny decision"
    );
    assert_eq!(v["error"]["kind"], "invalid-request");
    assert_eq!(v["error"]["field"], "context.destination_regoin");

    let r = svc.post("/v1/decide", r#"{"principal": {"type": "User", "id": 7}}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["field"], "principal.id", "{v}");

    let r = svc.post("/v1/decide", "{not json");
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["kind"], "invalid-request");

    // An event without `event` is named before the engine sees it.
    let r = svc.post("/v1/events", &read_req("a@example.com"));
    assert_eq!(r.status, 400);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["field"], "event");

    let r = svc.post("/v1/decide/batch", &read_req("a@example.com"));
    assert_eq!(r.status, 400, "a batch must be an array");

    // Over --max-request-bytes: 413 with a JSON error, the service unharmed.
    let big = format!(
        r#"{{"principal":{{"type":"User","id":"a"}},"body":"{}"}}"#,
        "x".repeat(8000)
    );
    let r = svc.post("/v1/decide", &big);
    assert_eq!(r.status, 413, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["kind"], "too-large");
    assert!(v["error"]["message"].as_str().unwrap().contains("4096"));
    assert_eq!(
        svc.post("/v1/decide", &read_req("a@example.com")).status,
        200
    );

    assert_eq!(svc.get("/nope").status, 404);
    assert_eq!(svc.get("/healthz").status, 200);
    let ready = svc.json("/readyz");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["store"], "ok");
    let b = svc.json("/v1/bundle");
    assert_eq!(b["name"], "portcullis-default");
    assert_eq!(b["hash"].as_str().unwrap().len(), 64);
    assert_eq!(b["signer"], Value::Null);
    assert!(b["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(b["last_error"], Value::Null);
    // The playground's static files.
    let page = svc.get("/playground/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<h1>playground</h1>"));
    assert_eq!(svc.get("/playground").status, 308);
    assert_eq!(svc.get("/playground/missing.js").status, 404);
    // The admin API is off without a token file.
    assert_eq!(svc.post("/v1/bundle", "{}").status, 403);
}

#[test]
fn swaps_are_signed_whole_or_refused_with_their_reason_while_decisions_continue() {
    let dir = fresh("swap");
    let (trusted_key, trusted_pub, trusted_id) = keygen(&dir, "trusted");
    let (rogue_key, _, rogue_id) = keygen(&dir, "rogue");
    let (token_path, token) = token_file(&dir);
    let require = (
        "portcullis.toml",
        "namespace = \"Crm\"\n",
        "namespace = \"Crm\"\nrequire_signature = true\n",
    );
    let base = bundle_copy(&dir.join("base"), &[require]);
    sign_dir(&trusted_key, &base);
    let base_hash = hash_of(&bundle_dir::read(&base).unwrap());

    let svc = Service::start(
        "swap",
        &[
            "--bundle",
            &base.to_string_lossy(),
            "--no-watch",
            "--trusted-key",
            &trusted_pub.to_string_lossy(),
            "--admin-token-file",
            &token_path.to_string_lossy(),
        ],
    );
    let status = svc.json("/v1/bundle");
    assert_eq!(status["hash"], base_hash.as_str());
    assert_eq!(status["signer"], trusted_id.as_str());
    assert_eq!(status["manifest_requires_signature"], true);

    let mallory = read_req("swapped-out@example.com");
    let decide =
        |body: &str| -> Value { serde_json::from_str(&svc.post("/v1/decide", body).body).unwrap() };
    assert_eq!(decide(&mallory)["outcome"], "allow");

    let bg = Background::start(&svc.addr, 2, login_req);
    let block = (
        "access.cedar",
        "",
        "\n@id(\"swap.block_mallory\")\n@outcome(\"deny\")\n@reason(\"blocked by the swapped bundle\")\nforbid (principal == Crm::User::\"swapped-out@example.com\", action, resource);\n",
    );
    let refused = |packed: &str, reason: &str| {
        let r = svc.install(&token, packed);
        assert_eq!(r.status, 422, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["accepted"], false);
        let got = v["error"]["message"].as_str().unwrap().to_string();
        assert!(got.contains(reason), "refusal `{got}` lacks `{reason}`");
        let status = svc.json("/v1/bundle");
        assert_eq!(
            status["hash"],
            base_hash.as_str(),
            "the old bundle serves on"
        );
        assert!(
            status["last_error"]["reason"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{status}"
        );
        assert_eq!(decide(&mallory)["outcome"], "allow");
    };

    // Unsigned: the serving bundle's manifest asks for signatures.
    let changed = bundle_copy(&dir.join("changed"), &[require, block]);
    refused(&packed(&changed), "signature missing");
    // Signed by a key the service does not trust.
    sign_dir(&rogue_key, &changed);
    refused(
        &packed(&changed),
        &format!("signature by untrusted key `{rogue_id}`"),
    );
    // Signed by the trusted key, then altered (hash recomputed to match).
    let signed_file = dir.join("changed.signed.json");
    let out = cli(&[
        "pack",
        "--sign",
        &trusted_key.to_string_lossy(),
        "-o",
        &signed_file.to_string_lossy(),
        &changed.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let good = std::fs::read_to_string(&signed_file).unwrap();
    let mut doc: Packed = serde_json::from_str(&good).unwrap();
    assert_eq!(doc.signature.as_ref().unwrap().key_id, trusted_id);
    let text = doc.files.get_mut("access.cedar").unwrap();
    *text = text.replace("blocked by the swapped bundle", "allowed after all");
    let untouched_hash = doc.hash.clone();
    let files: Vec<(String, String)> = doc.files.clone().into_iter().collect();
    doc.hash = hash_of(&files);
    refused(&serde_json::to_string(&doc).unwrap(), "signature invalid");
    // Altered without fixing the hash.
    doc.hash = untouched_hash;
    refused(&serde_json::to_string(&doc).unwrap(), "hash mismatch");
    // A schema that does not parse.
    let bad_schema = bundle_copy(
        &dir.join("schema"),
        &[
            require,
            ("schema.cedarschema", "", "\nentity Broken in [;\n"),
        ],
    );
    refused(&packed(&bad_schema), "schema invalid: schema.cedarschema:");
    // Signed properly, but one of its cases fails.
    let failing = bundle_copy(
        &dir.join("failing"),
        &[
            require,
            (
                "tests/zz_swap.yaml",
                "",
                "cases:\n  - name: mallory must be locked out\n    request: {principal: {type: User, id: swapped-out@example.com}, action: read, resource: {type: Record, id: r1}, context: {ip: 203.0.113.7}, now: \"2026-11-22T10:00:00Z\"}\n    expect: {outcome: lock}\n",
            ),
        ],
    );
    sign_dir(&trusted_key, &failing);
    refused(
        &packed(&failing),
        "case failed: tests/zz_swap.yaml :: mallory must be locked out",
    );
    // Not a packed bundle at all.
    refused("{\"format\": 1}", "not a packed bundle");

    // The admin API wants the token (checked before the body is read, so
    // a small body here: the service does not read what it refuses).
    assert_eq!(svc.post("/v1/bundle", "{}").status, 401);
    let r = svc.call(
        "POST",
        "/v1/bundle",
        &[("Authorization", "Bearer wrong-token-xxxxxxxx")],
        "{}",
    );
    assert_eq!(r.status, 401);

    // The good one: installed whole, visible at once.
    let r = svc.install(&token, &good);
    assert_eq!(r.status, 200, "{}", r.body);
    let status = svc.json("/v1/bundle");
    let new_hash = status["hash"].as_str().unwrap().to_string();
    assert_ne!(new_hash, base_hash);
    assert_eq!(status["signer"], trusted_id.as_str());
    assert_eq!(status["previous_hash"], base_hash.as_str());
    assert_eq!(
        status["last_error"],
        Value::Null,
        "cleared by an accepted swap"
    );
    let d = decide(&mallory);
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["policies"], serde_json::json!(["swap.block_mallory"]));
    assert_eq!(
        d["reasons"],
        serde_json::json!(["blocked by the swapped bundle"])
    );

    // Rollback is one command.
    let out = cli(&[
        "rollback",
        "--url",
        &svc.url(),
        "--admin-token-file",
        &token_path.to_string_lossy(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&base_hash));
    let status = svc.json("/v1/bundle");
    assert_eq!(status["hash"], base_hash.as_str());
    assert_eq!(status["origin"], "rollback");
    assert_eq!(decide(&mallory)["outcome"], "allow");

    let (made, failures, _) = bg.finish();
    assert!(made > 0, "the background clients decided");
    assert!(failures.is_empty(), "failed while swapping: {failures:?}");

    // Metrics: every decision by outcome, pathway and policy; every swap.
    let m = svc.get("/metrics").body;
    let total = metric(&m, "portcullis_decisions_total", &[]);
    assert_eq!(total as u64, made + 10, "{m}");
    assert_eq!(
        metric(
            &m,
            "portcullis_decisions_total",
            &[
                ("outcome", "deny"),
                ("pathway", "authentic"),
                ("reason", "blocked by the swapped bundle")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_policy_decisions_total",
            &[
                ("policy", "swap.block_mallory"),
                ("outcome", "deny"),
                ("pathway", "authentic")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "portcullis_decisions_total", &[("outcome", "allow")]) as u64,
        made + 9
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_bundle_swaps_total",
            &[("result", "refused")]
        ),
        7.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_bundle_swaps_total",
            &[("result", "accepted")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_bundle_swaps_total",
            &[("result", "rollback")]
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "portcullis_bundle_info", &[("hash", &base_hash)]),
        1.0
    );
    assert_eq!(
        metric(&m, "portcullis_bundle_info", &[("hash", &new_hash)]),
        0.0
    );
    assert!(metric(&m, "portcullis_decide_duration_seconds_count", &[]) >= total);
    // Refusals are logged with their reason.
    let log = svc.log_text();
    assert!(
        log.contains("bundle refused") && log.contains("signature missing"),
        "{log}"
    );
}

#[test]
fn twenty_watched_swaps_under_load_fail_no_request() {
    let dir = fresh("watch");
    let (key_path, public, _) = keygen(&dir, "k");
    let key = signing::read_signing_key(&key_path).unwrap();
    let live = dir.join("live.json");
    // Variant n: a one-policy bundle with version 1.0.0-swapN, signed; the
    // broken one is signed too but one of its cases fails. (Small on
    // purpose: every check runs all of a bundle's cases, ~0.2 s of CPU for
    // the default bundle's ~500, and this test is about the swap, on a
    // machine other tests load too.)
    let variant = |n: usize, broken: bool| -> String {
        let version = if broken {
            "1.0.0-broken".to_string()
        } else {
            format!("1.0.0-swap{n}")
        };
        let mut files = tiny_bundle(&version);
        if broken {
            files.push((
                "tests/zz_broken.yaml".into(),
                "cases:\n  - name: wrong on purpose\n    request: {principal: {type: User, id: a@example.com}, action: login, resource: {type: App, id: crm}, now: \"2026-11-22T10:00:00Z\"}\n    expect: {outcome: lock}\n".into(),
            ));
        }
        let hash = hash_of(&files);
        let doc = Packed {
            format: PACKED_FORMAT.into(),
            name: "swap-test".into(),
            version,
            hash: hash.clone(),
            files: files.into_iter().collect(),
            signature: Some(signing::sign_hash(&key, &hash)),
        };
        serde_json::to_string(&doc).unwrap()
    };
    let put = |text: &str| {
        let tmp = dir.join("staging.json");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &live).unwrap();
    };
    put(&variant(0, false));
    let svc = Service::start(
        "watch",
        &[
            "--bundle",
            &live.to_string_lossy(),
            "--require-signature",
            "--trusted-key",
            &public.to_string_lossy(),
            "--watch-interval-ms",
            "50",
        ],
    );
    let bg = Background::start(&svc.addr, 2, tiny_login);
    let probe = tiny_login("probe@example.com");
    let mut slowest = Duration::ZERO;
    for n in 1..=20 {
        let broken = n == 10;
        let text = variant(n, broken);
        let put_at = Instant::now();
        put(&text);
        if broken {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = svc.json("/v1/bundle");
                if let Some(reason) = status["last_error"]["reason"].as_str() {
                    assert!(
                        reason.contains("case failed: tests/zz_broken.yaml"),
                        "{reason}"
                    );
                    assert_eq!(status["version"], format!("1.0.0-swap{}", n - 1));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the broken bundle was never reported"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        }
        let want = format!("@1.0.0-swap{n}#");
        loop {
            let r = svc.post("/v1/decide", &probe);
            assert_eq!(r.status, 200);
            let v: Value = serde_json::from_str(&r.body).unwrap();
            if v["audit"]["bundle"].as_str().unwrap().contains(&want) {
                break;
            }
            assert!(
                put_at.elapsed() < Duration::from_secs(1),
                "swap {n} not visible within 1 s; log:\n{}",
                svc.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        slowest = slowest.max(put_at.elapsed());
    }
    let (made, failures, bundles) = bg.finish();
    assert!(failures.is_empty(), "failed while swapping: {failures:?}");
    assert!(made > 0);
    assert!(
        bundles.iter().all(|b| !b.contains("broken")),
        "the broken bundle served: {bundles:?}"
    );
    let m = svc.get("/metrics").body;
    assert_eq!(
        metric(
            &m,
            "portcullis_bundle_swaps_total",
            &[("result", "accepted")]
        ),
        20.0
    );
    assert_eq!(
        metric(
            &m,
            "portcullis_bundle_swaps_total",
            &[("result", "refused")]
        ),
        1.0
    );
    eprintln!("20 swaps, {made} background decisions, slowest swap visible after {slowest:?}");
    assert_eq!(svc.stop(), Some(0));
}

#[test]
fn the_audit_log_keeps_every_decision_and_swap_through_a_graceful_stop() {
    let dir = fresh("audit");
    let log = dir.join("audit.jsonl");
    let (token_path, token) = token_file(&dir);
    let svc = Service::start(
        "audit",
        &[
            "--bundle",
            &policies(),
            "--audit-log",
            &log.to_string_lossy(),
            "--admin-token-file",
            &token_path.to_string_lossy(),
        ],
    );
    // Concurrent batches and single calls, one of them with a provenance token.
    let batch = format!("[{}]", traffic().join(","));
    let per_batch = traffic().len();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (addr, batch) = (svc.addr.clone(), batch.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let r = client::request(
                        &addr,
                        "POST",
                        "/v1/decide/batch",
                        &[],
                        batch.as_bytes(),
                        TIMEOUT,
                    )
                    .unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    let token_text = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl";
    let synthetic = login_req("synthetic@example.com").replace(
        "\"module\":\"sales_cloud\"",
        &format!("\"module\":\"sales_cloud\",\"synthetic\":{{\"marker\":true,\"provenance\":\"{token_text}\"}}"),
    );
    for _ in 0..10 {
        assert_eq!(svc.post("/v1/decide", &synthetic).status, 200);
    }
    for t in threads {
        t.join().unwrap();
    }
    // A swap (same content, accepted) and a rollback are audited too.
    let packed_default = packed(Path::new(&policies()));
    assert_eq!(svc.install(&token, &packed_default).status, 200);
    let auth = format!("Bearer {token}");
    assert_eq!(
        svc.call(
            "POST",
            "/v1/bundle/rollback",
            &[("Authorization", &auth)],
            ""
        )
        .status,
        200
    );
    assert_eq!(svc.stop(), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions = lines.iter().filter(|l| l["kind"] == "decision").count();
    assert_eq!(
        decisions,
        4 * 5 * per_batch + 10,
        "no decision line lost at shutdown"
    );
    let swaps: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "swap").collect();
    let results: Vec<&str> = swaps
        .iter()
        .map(|s| s["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["accepted", "accepted", "rollback"]);
    assert!(
        !text.contains(token_text),
        "a provenance token reached the audit log"
    );
    let out = cli(&["audit", "verify", &log.to_string_lossy()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_services_sharing_redis_lock_together_and_keep_answering_when_it_dies() {
    let mut redis = crate::redis::Redis::start("serve");
    let url = redis.url();
    let a = Service::start("redis-a", &["--bundle", &policies(), "--store", &url]);
    let b = Service::start(
        "redis-b",
        &[
            "--bundle",
            &policies(),
            "--store",
            &url,
            "--store-fallback",
            "local:1000",
        ],
    );
    // Ten failures for one (account, address), alternating between the two
    // services: each sees five, together they reach the lock threshold.
    let failure = r#"{"principal":{"type":"User","id":"bob@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"198.51.100.23"},"event":"auth_failure","now":"2026-11-22T10:00:00Z"}"#;
    let mut outcomes = Vec::new();
    for i in 0..10 {
        let svc = if i % 2 == 0 { &a } else { &b };
        let r = svc.post("/v1/events", failure);
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        outcomes.push(v["outcome"].as_str().unwrap().to_string());
    }
    assert!(!outcomes[..9].contains(&"lock".to_string()), "{outcomes:?}");
    assert_eq!(
        outcomes[9], "lock",
        "the combined tenth failure locks: {outcomes:?}"
    );
    let login = r#"{"principal":{"type":"User","id":"bob@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"198.51.100.23"},"now":"2026-11-22T10:00:30Z"}"#;
    let v: Value = serde_json::from_str(&a.post("/v1/decide", login).body).unwrap();
    assert_eq!(v["outcome"], "lock");

    // Redis dies: A fails closed, B counts locally and says so; both answer.
    redis.kill();
    let carol = login_req("carol@example.com");
    let r = a.post("/v1/decide", &carol);
    assert_eq!(
        r.status, 200,
        "a fail-closed deny is a decision: {}",
        r.body
    );
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["outcome"], "deny");
    assert_eq!(v["error"]["kind"], "store");
    let r = b.post("/v1/decide", &carol);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["outcome"], "allow");
    assert_eq!(v["store"]["health"], "degraded", "{v}");
    assert_eq!(a.json("/readyz")["store"], "down");
    assert_eq!(b.json("/readyz")["store"], "degraded");
    let ma = a.get("/metrics").body;
    assert!(
        metric(
            &ma,
            "portcullis_store_errors_total",
            &[("kind", "fail_closed")]
        ) >= 1.0,
        "{ma}"
    );
    let mb = b.get("/metrics").body;
    assert!(
        metric(
            &mb,
            "portcullis_store_errors_total",
            &[("kind", "degraded")]
        ) >= 1.0,
        "{mb}"
    );
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
}

#[test]
fn signing_leaves_the_content_hash_alone_and_verifies_with_the_public_key() {
    let dir = fresh("sign");
    let (key, public, id) = keygen(&dir, "team");
    let bundle = bundle_copy(&dir.join("bundle"), &[]);
    let describe = |d: &Path| -> String {
        let out = cli(&["--format", "json", "describe", &d.to_string_lossy()]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["hash"].as_str().unwrap().to_string()
    };
    let before = describe(&bundle);
    sign_dir(&key, &bundle);
    assert!(bundle.join("bundle.sig").is_file());
    assert_eq!(
        describe(&bundle),
        before,
        "bundle.sig is not part of the hash"
    );
    let sig: portcullis_engine::bundle::BundleSignature =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("bundle.sig")).unwrap()).unwrap();
    assert_eq!(
        (sig.alg.as_str(), sig.key_id.as_str()),
        ("ed25519", id.as_str())
    );
    let trusted = signing::TrustedKeys::load(&[public]).unwrap();
    assert_eq!(trusted.verify(&before, &sig), Ok(id.clone()));
    assert!(trusted.verify(&"0".repeat(64), &sig).is_err());
    // A packed file signed in place: same hash, the signature embedded.
    let packed_path = dir.join("bundle.json");
    std::fs::write(&packed_path, packed(&bundle)).unwrap();
    let mut doc: Packed =
        serde_json::from_str(&std::fs::read_to_string(&packed_path).unwrap()).unwrap();
    doc.signature = None;
    std::fs::write(&packed_path, serde_json::to_string(&doc).unwrap()).unwrap();
    sign_dir(&key, &packed_path);
    let signed: Packed =
        serde_json::from_str(&std::fs::read_to_string(&packed_path).unwrap()).unwrap();
    assert_eq!(signed.hash, before);
    assert!(!signed.files.contains_key("bundle.sig"));
    assert_eq!(
        trusted.verify(&before, signed.signature.as_ref().unwrap()),
        Ok(id)
    );
    // Keys are never overwritten; a bad key file is named.
    let again = cli(&["keygen", "--out", &dir.join("team").to_string_lossy()]);
    assert_eq!(again.status.code(), Some(2));
    let bad = cli(&[
        "sign",
        "--key",
        &dir.join("team.pub").to_string_lossy(),
        &bundle.to_string_lossy(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("team.pub"));
}
