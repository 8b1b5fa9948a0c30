//! `portcullis serve`: the decision service.
//!
//! Responsible for: the HTTP JSON API (decide, batch, events, bundle
//! status, install and rollback, health, readiness, metrics, the
//! playground's static files), a pool of guest instances over one shared
//! store, hot swap of the bundle (watched path or admin API) with strict
//! acceptance and atomic installation, and handing decisions and swaps to
//! the audit writer off the request path.
//!
//! Not responsible for: any decision rule (the guest decides), the audit
//! log's format and chain (`crate::audit`), Redis (`crate::redis_store`).
//!
//! Status codes of decide and events: 200 with the decision; 400 when the
//! decision's error is `invalid-request` (the body is the deny decision,
//! whose `error.field` names the field); 500 when it is `engine-fault` (a
//! guest trap, time-out or a failed reload: the body is still a deny
//! decision naming the fault); 503 before a bundle is loaded, or when no
//! instance was free within `--request-timeout-ms`; 413 over
//! `--max-request-bytes`. Other errors are `{"error": {kind, message,
//! field?}}`.

mod bundles;
pub mod client;
mod metrics;
mod pool;

use crate::audit::{AuditArgs, AuditWriter};
use crate::redis_store::{
    Fallback, RedisOptions, RedisStore, StoreArgs, StoreHealth, StoreMonitor, mark_degraded,
};
use crate::signing::TrustedKeys;
use crate::{GuestInstance, GuestRuntime, RuntimeOptions};
use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bundles::{Candidate, Loaded, Refused, SignaturePolicy};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use metrics::Metrics;
use pool::{Pool, SharedMemoryStore, StoreFactory, Worker};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Largest packed bundle accepted by `POST /v1/bundle`, in bytes (the
/// engine's bundle limit, with room for JSON escaping).
const MAX_PACKED_BYTES: usize = 3 * portcullis_engine::bundle::MAX_BUNDLE_BYTES;

/// `portcullis serve` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// The bundle: a directory (with an optional `bundle.sig`) or a packed
    /// file (`portcullis pack`). Watched: a change is checked and, if
    /// accepted, installed.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8181")]
    pub listen: SocketAddr,
    /// Guest instances deciding in parallel [default: number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Largest request body of decide, batch and events, in bytes (413 over it).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Most requests in one batch call.
    #[arg(long, default_value_t = 1000)]
    pub max_batch: usize,
    /// Longest a call may wait for a free instance and its decision, in ms (503 after).
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// File holding the bearer token of `POST /v1/bundle` and
    /// `POST /v1/bundle/rollback` (without it both are disabled).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Public key (SPKI PEM or raw base64) whose signatures are trusted; repeatable.
    #[arg(long = "trusted-key", value_name = "FILE")]
    pub trusted_keys: Vec<PathBuf>,
    /// Every bundle must be signed by a trusted key, whatever its manifest says.
    #[arg(long)]
    pub require_signature: bool,
    /// How often the bundle path is checked for changes, in ms.
    #[arg(long, default_value_t = 100)]
    pub watch_interval_ms: u64,
    /// Do not watch the bundle path (install only through the admin API).
    #[arg(long)]
    pub no_watch: bool,
    /// Directory served at /playground/ [default: playground/dist when it exists].
    #[arg(long)]
    pub playground: Option<PathBuf>,
    /// The audit log (`--audit-log`, `--audit-rotate-bytes`): every
    /// decision and every swap, written off the request path.
    #[command(flatten)]
    pub audit: AuditArgs,
    /// The state store (`--store`, `--store-fallback`), shared by every
    /// instance of the pool.
    #[command(flatten)]
    pub state: StoreArgs,
    /// Escalation notifications (`--notify-config`).
    #[command(flatten)]
    pub notify: crate::notify::NotifyArgs,
    /// Shadow mode (`--shadow`, `--shadow-log`).
    #[command(flatten)]
    pub shadow: crate::shadow::ShadowArgs,
}

/// A line for the audit writer thread.
enum AuditMsg {
    Decision {
        request: String,
        decision: String,
        hash: String,
    },
    Swap {
        result: &'static str,
        from: Option<String>,
        to: Option<String>,
        reason: Option<String>,
    },
}

/// The current and previous generations.
#[derive(Default)]
struct History {
    current: Option<Arc<Loaded>>,
    previous: Option<Arc<Loaded>>,
}

/// A refused swap, as `/v1/bundle` reports it.
#[derive(Clone)]
struct LastError {
    reason: String,
    at: String,
    hash: Option<String>,
    origin: String,
}

/// The service's state, shared by every handler.
struct App {
    runtime: GuestRuntime,
    pool: Arc<Pool>,
    store: StoreFactory,
    /// The Redis store's shared health and counters (none for `memory`).
    monitor: Option<StoreMonitor>,
    history: RwLock<History>,
    last_error: Mutex<Option<LastError>>,
    last_refused: Mutex<Option<String>>,
    next_id: AtomicU64,
    swap_lock: Mutex<()>,
    trusted: TrustedKeys,
    require_signature: bool,
    admin_token: Option<[u8; 32]>,
    metrics: Metrics,
    audit: RwLock<Option<SyncSender<AuditMsg>>>,
    max_request_bytes: usize,
    max_batch: usize,
    request_timeout: Duration,
    /// The longest guest call (`--timeout-ms`).
    call_timeout: Duration,
    source: PathBuf,
    notifier: Option<crate::notify::Notifier>,
    shadow: Option<crate::shadow::Shadow>,
}

/// Run the service until SIGTERM or ctrl-c.
pub fn run(args: ServeArgs, options: RuntimeOptions) -> Result<u8> {
    let level = match std::env::var("PORTCULLIS_LOG").ok().as_deref() {
        Some("error") => tracing::Level::ERROR,
        Some("warn") => tracing::Level::WARN,
        Some("debug") => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let trusted = TrustedKeys::load(&args.trusted_keys)?;
    if args.require_signature && trusted.is_empty() {
        bail!("--require-signature needs at least one --trusted-key");
    }
    let admin_token = match &args.admin_token_file {
        None => None,
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the admin token file `{}`", p.display()))?;
            let t = t.trim();
            if t.len() < 16 {
                bail!(
                    "the admin token in `{}` is {} characters; use at least 16",
                    p.display(),
                    t.len()
                );
            }
            Some(<[u8; 32]>::from(Sha256::digest(t.as_bytes())))
        }
    };
    let (store, monitor) = open_store(&args.state)?;
    let call_timeout = options.call_timeout;
    let runtime = GuestRuntime::new(options)?;
    let pool = Pool::new(&runtime, workers, &store)?;
    let (audit_tx, audit_thread) = match args.audit.open()? {
        None => (None, None),
        Some(writer) => {
            let (tx, thread) = start_audit(writer)?;
            (Some(tx), Some(thread))
        }
    };
    let mut metrics = Metrics::new();
    let shadow = crate::shadow::Shadow::start(&args.shadow, &runtime, metrics.registry_mut())?;
    let notifier = match &args.notify.notify_config {
        Some(p) => Some(crate::notify::Notifier::start(
            crate::notify::NotifyConfig::load(p)?,
        )?),
        None => None,
    };
    let playground = args.playground.clone().or_else(|| {
        let d = PathBuf::from("playground/dist");
        d.is_dir().then_some(d)
    });
    let app = Arc::new(App {
        runtime,
        pool,
        store,
        monitor,
        history: RwLock::new(History::default()),
        last_error: Mutex::new(None),
        last_refused: Mutex::new(None),
        next_id: AtomicU64::new(1),
        swap_lock: Mutex::new(()),
        trusted,
        require_signature: args.require_signature,
        admin_token,
        metrics,
        audit: RwLock::new(audit_tx),
        max_request_bytes: args.max_request_bytes,
        max_batch: args.max_batch,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        call_timeout,
        source: args.bundle.clone(),
        notifier,
        shadow,
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portcullis-serve")
        .build()
        .context("cannot start the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let result = rt.block_on(serve(app.clone(), &args, playground, stop.clone()));
    stop.store(true, Ordering::Relaxed);
    // Every leased instance has sent its audit lines before it is returned:
    // once all are idle, closing the channel loses nothing.
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(30), app.pool.drain()).await;
    });
    if let Ok(mut tx) = app.audit.write() {
        tx.take();
    }
    if let Some(t) = audit_thread {
        let _ = t.join();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    result?;
    tracing::info!("stopped");
    Ok(0)
}

async fn serve(
    app: Arc<App>,
    args: &ServeArgs,
    playground: Option<PathBuf>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "portcullis serve listening on http://{addr}");
        let _ = out.flush();
    }
    tracing::info!(%addr, workers = app.pool.size(), bundle = %app.source.display(), "listening");

    // The first bundle, then the watcher, off the async threads.
    let first = app.clone();
    let watch = !args.no_watch;
    let interval = Duration::from_millis(args.watch_interval_ms.max(10));
    let watcher_stop = stop.clone();
    std::thread::Builder::new()
        .name("portcullis-watch".into())
        .spawn(move || {
            let mut seen = bundles::fingerprint(&first.source);
            first.install_from_source();
            if watch {
                watch_loop(&first, &mut seen, interval, &watcher_stop);
            }
        })
        .context("cannot start the bundle watcher")?;

    let router = router(app, playground);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the server failed")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight, draining the audit log");
}

fn watch_loop(
    app: &Arc<App>,
    seen: &mut Vec<(PathBuf, u64, Option<std::time::SystemTime>)>,
    interval: Duration,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(interval);
        let now = bundles::fingerprint(&app.source);
        if now == *seen {
            continue;
        }
        // Let a writer finish: read only once two looks agree.
        std::thread::sleep(interval / 2);
        let settled = bundles::fingerprint(&app.source);
        if settled != now {
            continue;
        }
        *seen = settled;
        app.install_from_source();
    }
}

/// One store for the whole pool: a shared in-process store, or a Redis
/// store of which each instance gets its own clone (own connection, shared
/// health and fallback).
fn open_store(args: &StoreArgs) -> Result<(StoreFactory, Option<StoreMonitor>)> {
    let fallback: Fallback = args.store_fallback.parse().context("--store-fallback")?;
    if args.store == "memory" {
        let shared = SharedMemoryStore::new();
        let factory: StoreFactory = Arc::new(move || (Box::new(shared.clone()), None));
        return Ok((factory, None));
    }
    if !args.store.starts_with("redis://") {
        bail!(
            "--store: unknown store `{}` (expected `memory` or `redis://HOST:PORT`)",
            args.store
        );
    }
    let options = RedisOptions {
        fallback,
        ..RedisOptions::default()
    };
    let redis = RedisStore::connect(&args.store, options).context("--store")?;
    let monitor = redis.monitor();
    tracing::info!(redis = %redis.addr(), health = redis.health().as_str(), %fallback, "state store: redis");
    let factory: StoreFactory = Arc::new(move || {
        let clone = redis.clone();
        let m = clone.monitor();
        (Box::new(clone), Some(m))
    });
    Ok((factory, Some(monitor)))
}

/// The audit log's one writer, fed by a channel: requests never wait on
/// the disk (only on a full channel, 64 Ki lines). Ends when every sender
/// is gone, after writing every line sent.
fn start_audit(writer: AuditWriter) -> Result<(SyncSender<AuditMsg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<AuditMsg>(65_536);
    let thread = std::thread::Builder::new()
        .name("portcullis-audit".into())
        .spawn(move || audit_loop(writer, rx))
        .context("cannot start the audit writer")?;
    Ok((tx, thread))
}

fn audit_loop(mut writer: AuditWriter, rx: Receiver<AuditMsg>) {
    let mut failures = 0u64;
    for msg in rx {
        let written = match &msg {
            AuditMsg::Decision {
                request,
                decision,
                hash,
            } => writer.append_decision(request, decision, hash),
            AuditMsg::Swap {
                result,
                from,
                to,
                reason,
            } => writer.append_swap(result, from.as_deref(), to.as_deref(), reason.as_deref()),
        };
        if let Err(e) = written {
            failures += 1;
            // Log the first failures and then every thousandth.
            if failures <= 10 || failures.is_multiple_of(1000) {
                tracing::error!(error = %format!("{e:#}"), failures, "cannot append to the audit log");
            }
        }
    }
    if let Err(e) = writer.flush() {
        tracing::error!(error = %format!("{e:#}"), "cannot sync the audit log");
    }
}

impl App {
    fn current(&self) -> Option<Arc<Loaded>> {
        self.history.read().ok().and_then(|h| h.current.clone())
    }

    fn audit(&self, msg: AuditMsg) {
        if let Ok(tx) = self.audit.read()
            && let Some(tx) = tx.as_ref()
            && tx.send(msg).is_err()
        {
            tracing::error!("the audit writer has stopped; a line was not written");
        }
    }

    fn health(&self) -> StoreHealth {
        self.monitor
            .as_ref()
            .map_or(StoreHealth::Ok, |m| m.health())
    }

    /// Read the bundle path and try to install what is there (unless it is
    /// what serves now, or what was refused last time).
    fn install_from_source(self: &Arc<Self>) {
        let candidate = match bundles::read_source(&self.source) {
            Ok(c) => c,
            Err(reason) => {
                self.refused(Refused { reason, hash: None }, "file");
                return;
            }
        };
        if let Some(cur) = self.current()
            && candidate.same_as(&cur.files, &cur.signature)
        {
            return;
        }
        let digest = content_digest(&candidate);
        if self
            .last_refused
            .lock()
            .ok()
            .is_some_and(|l| l.as_deref() == Some(digest.as_str()))
        {
            return;
        }
        if let Err(r) = self.try_install(candidate, "file")
            && r.hash.is_some()
            && let Ok(mut l) = self.last_refused.lock()
        {
            *l = Some(digest);
        }
    }

    /// Check a candidate and install it whole, or refuse it and report why.
    fn try_install(
        self: &Arc<Self>,
        candidate: Candidate,
        origin: &str,
    ) -> Result<Arc<Loaded>, Refused> {
        let _one_at_a_time = self.swap_lock.lock();
        let current = self.current();
        let policy = SignaturePolicy {
            service: self.require_signature,
            current: current.as_ref().is_some_and(|c| c.require_signature),
        };
        match bundles::check(&self.runtime, candidate, &self.trusted, policy) {
            Ok(accepted) => {
                let generation = Arc::new(Loaded {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    files: Arc::new(accepted.candidate.files),
                    signature: accepted.candidate.signature,
                    info: accepted.info,
                    signer: accepted.signer,
                    require_signature: accepted.require_signature,
                    loaded_at: bundles::now_rfc3339(),
                    origin: origin.to_string(),
                });
                self.install(generation.clone(), "accepted", Some(accepted.instance));
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                Ok(generation)
            }
            Err(refused) => {
                self.refused(refused.clone(), origin);
                Err(refused)
            }
        }
    }

    /// Make `generation` the one new requests are decided on. The instance
    /// that checked it (or, for a rollback, one loaded now) is ready before
    /// the switch; the rest of a full set is loaded right after it, off the
    /// request path. Ready instances replace idle stale ones at once and
    /// busy ones as they come back; a stale one leased before its
    /// replacement is ready reloads first.
    fn install(
        &self,
        generation: Arc<Loaded>,
        result: &'static str,
        checked: Option<GuestInstance>,
    ) {
        let first = match checked {
            Some(mut instance) => {
                let (state, monitor) = (self.store)();
                instance.replace_store(state).ok().map(|_| {
                    instance.set_call_timeout(self.call_timeout);
                    Worker::loaded(instance, generation.id, monitor)
                })
            }
            None => Worker::build(&generation, &self.runtime, &self.store).ok(),
        };
        let ready = usize::from(first.is_some());
        let from = {
            let Ok(mut h) = self.history.write() else {
                return;
            };
            let old = h.current.replace(generation.clone());
            if old.is_some() {
                h.previous = old.clone();
            }
            // Under the same lock: calls that took an instance read the
            // generation only after an idle one holds the new bundle.
            self.pool.prepare(first.into_iter().collect());
            old
        };
        self.metrics.swap(result);
        self.metrics
            .bundle(&generation.info.version, &generation.info.hash);
        self.audit(AuditMsg::Swap {
            result,
            from: from.as_ref().map(|f| f.info.hash.clone()),
            to: Some(generation.info.hash.clone()),
            reason: None,
        });
        tracing::info!(
            result,
            origin = %generation.origin,
            name = %generation.info.name,
            version = %generation.info.version,
            hash = %generation.info.hash,
            signer = generation.signer.as_deref().unwrap_or("-"),
            previous = from.as_ref().map_or("-", |f| f.info.hash.as_str()),
            "bundle installed"
        );
        if from.is_none() {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "portcullis serve ready: bundle {} {} hash {}",
                generation.info.name, generation.info.version, generation.info.hash
            );
            let _ = out.flush();
        }
        for _ in ready..self.pool.size() {
            match Worker::build(&generation, &self.runtime, &self.store) {
                Ok(w) => self.pool.prepare(vec![w]),
                Err(e) => {
                    // Instances left stale reload when next leased.
                    tracing::error!(error = %format!("{e:#}"), "cannot load the new bundle into an instance");
                    break;
                }
            }
        }
    }

    fn refused(&self, refused: Refused, origin: &str) {
        self.metrics.swap("refused");
        let current = self.current();
        tracing::warn!(
            origin,
            reason = %refused.reason,
            candidate = refused.hash.as_deref().unwrap_or("-"),
            serving = current.as_ref().map_or("-", |c| c.info.hash.as_str()),
            "bundle refused; the previous bundle keeps serving"
        );
        self.audit(AuditMsg::Swap {
            result: "refused",
            from: current.as_ref().map(|c| c.info.hash.clone()),
            to: refused.hash.clone(),
            reason: Some(refused.reason.clone()),
        });
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(LastError {
                reason: refused.reason,
                at: bundles::now_rfc3339(),
                hash: refused.hash,
                origin: origin.to_string(),
            });
        }
    }

    /// Serve the previous generation again.
    fn rollback(&self) -> Result<Arc<Loaded>, String> {
        let _one_at_a_time = self.swap_lock.lock();
        let previous = self
            .history
            .read()
            .ok()
            .and_then(|h| h.previous.clone())
            .ok_or_else(|| "no previous bundle to roll back to".to_string())?;
        let generation = Arc::new(Loaded {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            files: previous.files.clone(),
            signature: previous.signature.clone(),
            info: previous.info.clone(),
            signer: previous.signer.clone(),
            require_signature: previous.require_signature,
            loaded_at: bundles::now_rfc3339(),
            origin: "rollback".into(),
        });
        self.install(generation.clone(), "rollback", None);
        Ok(generation)
    }

    fn status(&self) -> Value {
        let (current, previous) = self
            .history
            .read()
            .map(|h| (h.current.clone(), h.previous.clone()))
            .unwrap_or_default();
        let last_error =
            self.last_error.lock().ok().and_then(|e| e.clone()).map(
                |e| json!({"reason": e.reason, "at": e.at, "hash": e.hash, "origin": e.origin}),
            );
        let mut v = json!({
            "ready": current.is_some(),
            "source": self.source.display().to_string(),
            "previous_hash": previous.as_ref().map(|p| p.info.hash.clone()),
            "last_error": last_error,
            "workers": self.pool.size(),
            "require_signature": self.require_signature,
            "trusted_keys": self.trusted.ids(),
        });
        if let Some(c) = current {
            v["name"] = json!(c.info.name);
            v["version"] = json!(c.info.version);
            v["namespace"] = json!(c.info.namespace);
            v["hash"] = json!(c.info.hash);
            v["signer"] = json!(c.signer);
            v["loaded_at"] = json!(c.loaded_at);
            v["origin"] = json!(c.origin);
            v["policies"] = json!(c.info.policy_ids.len());
            v["cases"] = json!(c.info.case_count);
            v["manifest_requires_signature"] = json!(c.require_signature);
        }
        v
    }

    #[expect(
        clippy::result_large_err,
        reason = "the error is the HTTP answer itself, built once per refused call"
    )]
    fn authorised(&self, headers: &HeaderMap) -> Result<(), Response> {
        use subtle::ConstantTimeEq;
        let Some(expected) = &self.admin_token else {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the admin API is disabled: start the service with --admin-token-file",
                None,
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
        match given {
            Some(g) if bool::from(g.ct_eq(expected)) => Ok(()),
            _ => {
                let mut r = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong admin bearer token",
                    None,
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                Err(r)
            }
        }
    }
}

fn content_digest(c: &Candidate) -> String {
    let mut h = Sha256::new();
    for (n, t) in &c.files {
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    if let Some(s) = &c.signature {
        h.update(s.key_id.as_bytes());
        h.update(s.signature.as_bytes());
    }
    hex::encode(h.finalize())
}

fn router(app: Arc<App>, playground: Option<PathBuf>) -> Router {
    let mut r = Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/decide/batch", post(decide_batch))
        .route("/v1/events", post(events))
        .route("/v1/bundle", get(bundle_status).post(bundle_install))
        .route("/v1/bundle/rollback", post(bundle_rollback))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text));
    if let Some(dir) = playground {
        // `/playground` → `/playground/`, so the page's relative links resolve.
        r = r
            .route(
                "/playground",
                get(|| async { axum::response::Redirect::permanent("/playground/") }),
            )
            .nest_service(
                "/playground/",
                tower_http::services::ServeDir::new(dir).append_index_html_on_directories(true),
            );
    }
    r.fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app)
}

fn error(
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
    field: Option<&str>,
) -> Response {
    let mut e = json!({"kind": kind, "message": message.into()});
    if let Some(f) = field {
        e["field"] = json!(f);
    }
    (status, axum::Json(json!({ "error": e }))).into_response()
}

fn json_text(status: StatusCode, text: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn read_body(body: Body, limit: usize) -> Result<String, Response> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => String::from_utf8(c.to_bytes().to_vec()).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid-request",
                "the request body is not UTF-8 text",
                None,
            )
        }),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the request body is over the limit of {limit} bytes (--max-request-bytes)"),
            None,
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            format!("cannot read the request body: {e}"),
            None,
        )),
    }
}

/// Decide `requests` in order (state carried between them) on one
/// instance and one bundle generation; count, audit, mark degraded.
async fn decide_all(app: &Arc<App>, requests: Vec<String>) -> Result<Vec<String>, Response> {
    let started = Instant::now();
    if app.current().is_none() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "no bundle is loaded yet",
            None,
        ));
    };
    let work = {
        let app = app.clone();
        async move {
            let lease = app.pool.acquire().await;
            tokio::task::spawn_blocking(move || {
                // The generation serving when this call got its instance
                // (instances are refreshed to the newest one as they are
                // taken, so this is almost always the one it holds).
                let Some(generation) = app.current() else {
                    return requests
                        .iter()
                        .map(|r| {
                            portcullis_engine::Decision::fault(
                                "no-bundle",
                                "no bundle is loaded".into(),
                                None,
                                r.as_str(),
                            )
                            .to_json()
                        })
                        .collect();
                };
                let out = decide_on(&app, lease, &generation, requests);
                app.metrics.duration(started.elapsed().as_secs_f64());
                out
            })
            .await
        }
    };
    match tokio::time::timeout(app.request_timeout, work).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "engine-fault",
            format!("the decision task failed: {e}"),
            None,
        )),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "no decision within {} ms (--request-timeout-ms)",
                app.request_timeout.as_millis()
            ),
            None,
        )),
    }
}

fn decide_on(
    app: &Arc<App>,
    lease: Result<pool::Lease>,
    generation: &Arc<Loaded>,
    requests: Vec<String>,
) -> Vec<String> {
    let fault = |msg: String, requests: &[String]| -> Vec<String> {
        requests
            .iter()
            .map(|r| {
                portcullis_engine::Decision::fault("engine-fault", msg.clone(), None, r.as_str())
                    .to_json()
            })
            .collect()
    };
    let mut lease = match lease {
        Ok(l) => l,
        Err(e) => return fault(format!("{e:#}"), &requests),
    };
    let mut degraded = None;
    let decisions = match lease.worker().and_then(|w| {
        let decisions = {
            let instance = w.ensure(generation, &app.runtime, &app.store)?;
            if requests.len() == 1 {
                requests.iter().map(|r| instance.decide(r)).collect()
            } else {
                instance.decide_batch(&requests)
            }
        };
        if let Some(m) = w.monitor()
            && m.take_fallback_ops() > 0
        {
            degraded = Some(m.fallback());
        }
        Ok::<Vec<String>, anyhow::Error>(decisions)
    }) {
        Ok(decisions) => decisions,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "no instance could load the serving bundle");
            fault(format!("{e:#}"), &requests)
        }
    };
    let mut out = Vec::with_capacity(decisions.len());
    for (request, decision) in requests.into_iter().zip(decisions) {
        app.metrics.decision(&decision);
        if let Some(n) = &app.notifier {
            n.after_decision(&decision);
        }
        if let Some(s) = &app.shadow {
            s.observe(&request, &decision);
        }
        let decision = match degraded {
            Some(fallback) => {
                app.metrics.store_error("degraded");
                mark_degraded(&decision, fallback)
            }
            None => decision,
        };
        app.audit(AuditMsg::Decision {
            request,
            decision: decision.clone(),
            hash: generation.info.hash.clone(),
        });
        out.push(decision);
    }
    // The lease goes back only now: once every instance is idle, every
    // decision made has reached the audit channel.
    drop(lease);
    out
}

fn status_of(decision: &str) -> StatusCode {
    #[derive(serde::Deserialize)]
    struct Kind {
        error: Option<ErrKind>,
    }
    #[derive(serde::Deserialize)]
    struct ErrKind {
        kind: String,
    }
    match serde_json::from_str::<Kind>(decision)
        .ok()
        .and_then(|k| k.error)
        .map(|e| e.kind)
        .as_deref()
    {
        Some("invalid-request") => StatusCode::BAD_REQUEST,
        Some("engine-fault") => StatusCode::INTERNAL_SERVER_ERROR,
        Some("no-bundle") => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

async fn decide_one(app: &Arc<App>, text: String) -> Response {
    match decide_all(app, vec![text]).await {
        Ok(mut d) => {
            let d = d.pop().unwrap_or_default();
            json_text(status_of(&d), d)
        }
        Err(r) => r,
    }
}

async fn decide(State(app): State<Arc<App>>, req: Request) -> Response {
    match read_body(req.into_body(), app.max_request_bytes).await {
        Ok(text) => decide_one(&app, text).await,
        Err(r) => r,
    }
}

/// The elements of a JSON array, each as its own text.
#[expect(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, built once per refused call"
)]
fn split_array(text: &str, max: usize) -> Result<Vec<String>, Response> {
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            format!("the body must be a JSON array of requests: {e}"),
            None,
        )
    })?;
    if items.len() > max {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "{} requests in one batch, over the limit of {max} (--max-batch)",
                items.len()
            ),
            None,
        ));
    }
    Ok(items.into_iter().map(|r| r.get().to_string()).collect())
}

async fn decide_batch(State(app): State<Arc<App>>, req: Request) -> Response {
    let text = match read_body(req.into_body(), app.max_request_bytes).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let requests = match split_array(&text, app.max_batch) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if requests.is_empty() {
        return json_text(StatusCode::OK, "[]".into());
    }
    match decide_all(&app, requests).await {
        Ok(d) => json_text(StatusCode::OK, format!("[{}]", d.join(","))),
        Err(r) => r,
    }
}

/// An event must say which (`auth_failure` or `auth_success`); the engine
/// checks the value.
#[expect(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, built once per refused call"
)]
fn check_event(text: &str, at: Option<usize>) -> Result<(), Response> {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        // Malformed JSON: the engine names it in its decision.
        Err(_) => return Ok(()),
    };
    if v.get("event").is_some() {
        return Ok(());
    }
    let field = match at {
        Some(i) => format!("[{i}].event"),
        None => "event".into(),
    };
    Err(error(
        StatusCode::BAD_REQUEST,
        "invalid-request",
        format!("field `{field}`: an event needs `event`: `auth_failure` or `auth_success`"),
        Some(&field),
    ))
}

async fn events(State(app): State<Arc<App>>, req: Request) -> Response {
    let text = match read_body(req.into_body(), app.max_request_bytes).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if text.trim_start().starts_with('[') {
        let items = match split_array(&text, app.max_batch) {
            Ok(r) => r,
            Err(r) => return r,
        };
        for (i, item) in items.iter().enumerate() {
            if let Err(r) = check_event(item, Some(i)) {
                return r;
            }
        }
        if items.is_empty() {
            return json_text(StatusCode::OK, "[]".into());
        }
        return match decide_all(&app, items).await {
            Ok(d) => json_text(StatusCode::OK, format!("[{}]", d.join(","))),
            Err(r) => r,
        };
    }
    if let Err(r) = check_event(&text, None) {
        return r;
    }
    decide_one(&app, text).await
}

async fn bundle_status(State(app): State<Arc<App>>) -> Response {
    (StatusCode::OK, axum::Json(app.status())).into_response()
}

async fn bundle_install(State(app): State<Arc<App>>, req: Request) -> Response {
    if let Err(r) = app.authorised(req.headers()) {
        return r;
    }
    let text = match read_body(req.into_body(), MAX_PACKED_BYTES).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let app2 = app.clone();
    let result = tokio::task::spawn_blocking(move || match bundles::from_packed(&text) {
        Ok(c) => app2.try_install(c, "api").map(|_| ()),
        Err(reason) => {
            let r = Refused { reason, hash: None };
            app2.refused(r.clone(), "api");
            Err(r)
        }
    })
    .await;
    match result {
        Ok(Ok(())) => (
            StatusCode::OK,
            axum::Json(json!({"accepted": true, "bundle": app.status()})),
        )
            .into_response(),
        Ok(Err(r)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({
                "accepted": false,
                "error": {"kind": "bundle-refused", "message": r.reason, "hash": r.hash},
            })),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "engine-fault",
            format!("the install task failed: {e}"),
            None,
        ),
    }
}

async fn bundle_rollback(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = app.authorised(&headers) {
        return r;
    }
    let from = app.current().map(|c| c.info.hash.clone());
    let app2 = app.clone();
    match tokio::task::spawn_blocking(move || app2.rollback()).await {
        Ok(Ok(g)) => (
            StatusCode::OK,
            axum::Json(json!({
                "rolled_back": true,
                "from": from,
                "to": g.info.hash,
                "bundle": app.status(),
            })),
        )
            .into_response(),
        Ok(Err(msg)) => error(StatusCode::CONFLICT, "no-previous", msg, None),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "engine-fault",
            format!("the rollback task failed: {e}"),
            None,
        ),
    }
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let store = app.health().as_str();
    match app.current() {
        Some(c) => (
            StatusCode::OK,
            axum::Json(json!({"ready": true, "hash": c.info.hash, "store": store})),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"ready": false, "reason": "no bundle is loaded yet", "store": store}),
            ),
        )
            .into_response(),
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    if let Some(m) = &app.monitor {
        for (kind, total) in m.error_counts() {
            app.metrics.store_errors_seen(kind, total);
        }
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not-found", "no such endpoint", None)
}

/// `portcullis rollback --url URL --admin-token-file F`.
#[derive(clap::Args, Debug, Clone)]
pub struct RollbackArgs {
    /// Base URL of the service, e.g. http://127.0.0.1:8181.
    #[arg(long)]
    pub url: String,
    /// File holding the admin bearer token.
    #[arg(long)]
    pub admin_token_file: PathBuf,
}

/// Ask a running service to serve its previous bundle again.
pub fn rollback(args: &RollbackArgs) -> Result<u8> {
    let token = std::fs::read_to_string(&args.admin_token_file).with_context(|| {
        format!(
            "cannot read the admin token file `{}`",
            args.admin_token_file.display()
        )
    })?;
    let (authority, base) = client::split_url(&args.url)?;
    let auth = format!("Bearer {}", token.trim());
    let r = client::request(
        &authority,
        "POST",
        &format!("{base}/v1/bundle/rollback"),
        &[("Authorization", &auth)],
        b"",
        Duration::from_secs(60),
    )?;
    let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    if r.status == 200 {
        println!(
            "rolled back: now serving {} {} (hash {}), was {}",
            v["bundle"]["name"].as_str().unwrap_or("?"),
            v["bundle"]["version"].as_str().unwrap_or("?"),
            v["to"].as_str().unwrap_or("?"),
            v["from"].as_str().unwrap_or("?"),
        );
        Ok(0)
    } else {
        bail!(
            "rollback refused ({}): {}",
            r.status,
            v["error"]["message"].as_str().unwrap_or(r.body.trim())
        )
    }
}
