//! The wasmtime embedding: one [`GuestRuntime`] per process (engine,
//! precompiled component, linker), many [`GuestInstance`]s (one store each).

use crate::bindings::Guest;
use crate::bindings::exports::portcullis::engine::engine as wit;
use crate::bindings::portcullis::engine::store as wit_store;
use anyhow::{Context, Result, anyhow};
use portcullis_engine::error::ProblemKind;
use portcullis_engine::limits::{MAX_BUNDLE_BYTES, MAX_REQUEST_BYTES};
use portcullis_engine::{
    BundleInfo, BundleProblem, Decision, Location, Store as EngineStore, Write,
};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Limits and caching of a runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where precompiled guests are cached; `None`: compile in memory each start.
    pub cache_dir: Option<PathBuf>,
    /// Most linear memory one guest instance may grow to, in bytes.
    pub max_memory: usize,
    /// Longest one guest call may run before it is interrupted (a deny).
    pub call_timeout: Duration,
}

/// Granularity of the call deadline.
const TICK: Duration = Duration::from_millis(5);

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: default_cache_dir(),
            max_memory: 256 * 1024 * 1024,
            call_timeout: Duration::from_secs(2),
        }
    }
}

/// `$PORTCULLIS_CACHE_DIR`, else `$XDG_CACHE_HOME/portcullis`, else `~/.cache/portcullis`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PORTCULLIS_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("portcullis"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/portcullis"))
}

/// The compiled guest, ready to instantiate. Cheap to clone (shared).
#[derive(Clone)]
pub struct GuestRuntime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    component: Component,
    linker: Linker<HostState>,
    options: RuntimeOptions,
    ticker_stop: Arc<AtomicBool>,
    cached_from: Option<PathBuf>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl GuestRuntime {
    /// Compile (or load from the cache) the embedded guest.
    pub fn new(options: RuntimeOptions) -> Result<Self> {
        Self::build(crate::GUEST_WASM, Some(crate::GUEST_WASM_SHA256), options)
    }

    /// Compile (or load from the cache) a given guest component.
    pub fn with_wasm(wasm: &[u8], options: RuntimeOptions) -> Result<Self> {
        Self::build(wasm, None, options)
    }

    /// `digest`: the component's SHA-256 in hex when already known.
    fn build(wasm: &[u8], digest: Option<&str>, options: RuntimeOptions) -> Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // `PORTCULLIS_PERFMAP=1`: name the guest's compiled functions for
        // `perf` (/tmp/perf-PID.map), to see where a guest call spends its time.
        if std::env::var_os("PORTCULLIS_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow!("cannot start wasmtime: {e}"))?;

        let (component, cached_from) =
            load_component(&engine, wasm, digest, options.cache_dir.as_deref())?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow!("cannot link WASI: {e}"))?;
        Guest::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("cannot link the store import: {e}"))?;

        // The deadline clock: every guest call gets `call_timeout` worth of ticks.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (e, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .context("cannot start the deadline thread")?;

        Ok(GuestRuntime {
            inner: Arc::new(RuntimeInner {
                engine,
                component,
                linker,
                options,
                ticker_stop,
                cached_from,
            }),
        })
    }

    /// Where the precompiled guest was read from, or `None` if compiled now.
    pub fn cached_from(&self) -> Option<&std::path::Path> {
        self.inner.cached_from.as_deref()
    }

    /// A new instance with its own state store.
    pub fn instantiate(&self, store: Box<dyn EngineStore + Send>) -> Result<GuestInstance> {
        let (wstore, guest) = self.fresh(store)?;
        Ok(GuestInstance {
            runtime: self.clone(),
            store: Some(wstore),
            guest,
            files: None,
            deadline: None,
            trap_store_fault: None,
        })
    }

    fn fresh(&self, state: Box<dyn EngineStore + Send>) -> Result<(Store<HostState>, Guest)> {
        let inner = &self.inner;
        let limits = StoreLimitsBuilder::new()
            .memory_size(inner.options.max_memory)
            .trap_on_grow_failure(true)
            .build();
        let host = HostState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits,
            state,
            call_deadline: None,
            store_fault: None,
        };
        let mut store = Store::new(&inner.engine, host);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let guest = Guest::instantiate(&mut store, &inner.component, &inner.linker)
            .map_err(|e| anyhow!("cannot instantiate the guest: {e:#}"))?;
        Ok((store, guest))
    }

    fn deadline_ticks(&self) -> u64 {
        (self.inner.options.call_timeout.as_millis() / TICK.as_millis()).max(1) as u64 + 1
    }
}

/// Load the precompiled component from the cache, or compile and cache it.
fn load_component(
    engine: &Engine,
    wasm: &[u8],
    digest: Option<&str>,
    cache: Option<&std::path::Path>,
) -> Result<(Component, Option<PathBuf>)> {
    let Some(dir) = cache else {
        let c =
            Component::new(engine, wasm).map_err(|e| anyhow!("cannot compile the guest: {e:#}"))?;
        return Ok((c, None));
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let key = format!(
        "{}-{:016x}",
        digest
            .map(str::to_string)
            .unwrap_or_else(|| hex::encode(Sha256::digest(wasm)))
            .get(..32)
            .unwrap_or(""),
        h.finish()
    );
    let path = dir.join(format!("portcullis-guest-{key}.cwasm"));
    if path.is_file() {
        // SAFETY: the file is one this function wrote for this exact guest
        // and engine configuration (both are in its name), in a directory
        // created for this user only. wasmtime still checks its header.
        #[expect(unsafe_code, reason = "deserialising our own precompiled guest")]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        if let Ok(c) = loaded {
            return Ok((c, Some(path)));
        }
    }
    let bytes = engine
        .precompile_component(wasm)
        .map_err(|e| anyhow!("cannot compile the guest: {e:#}"))?;
    #[expect(unsafe_code, reason = "deserialising bytes wasmtime produced just now")]
    let component = unsafe { Component::deserialize(engine, &bytes) }
        .map_err(|e| anyhow!("cannot load the compiled guest: {e:#}"))?;
    // Caching is best effort: a read-only home only costs a recompile.
    if create_private_dir(dir).is_ok() {
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok((component, None))
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// What each wasmtime store holds.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    state: Box<dyn EngineStore + Send>,
    /// When the current guest call must end (the epoch deadline, as a time).
    call_deadline: Option<Instant>,
    /// The last store fault of the current call, to name it if the call
    /// then traps (a store that outlasts the deadline ends in a trap).
    store_fault: Option<String>,
}

impl HostState {
    /// One store call, guarded: a panicking store is an error (never an
    /// unwind through the guest's frames), a call made after the deadline is
    /// not attempted, and one that returns after it is an error naming the
    /// time it took. A call cannot be pre-empted: stores bound their own
    /// I/O (the Redis store has connect and operation timeouts).
    fn guarded<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut dyn EngineStore) -> Result<T, String>,
    ) -> Result<T, String> {
        let started = Instant::now();
        let result = match self.call_deadline {
            Some(d) if started >= d => Err(format!(
                "store {what} not attempted: the call deadline has passed"
            )),
            _ => {
                let state: &mut dyn EngineStore = &mut *self.state;
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(state))) {
                    Ok(r) => r,
                    Err(panic) => Err(format!(
                        "store {what} panicked: {}",
                        panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into())
                    )),
                }
            }
        };
        let result = match (result, self.call_deadline) {
            (Ok(_), Some(d)) if Instant::now() > d => Err(format!(
                "store {what} took {} ms, past the call deadline",
                started.elapsed().as_millis()
            )),
            (r, _) => r,
        };
        if let Err(e) = &result {
            self.store_fault = Some(e.clone());
        }
        result
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit_store::Host for HostState {
    fn get(&mut self, keys: Vec<String>) -> Result<Vec<wit_store::Entry>, String> {
        self.guarded("read", |s| s.get(&keys)).map(|es| {
            es.into_iter()
                .map(|e| wit_store::Entry {
                    key: e.key,
                    value: e.value,
                    version: e.version,
                })
                .collect()
        })
    }

    fn compare_and_set(
        &mut self,
        writes: Vec<wit_store::Write>,
    ) -> Result<Vec<wit_store::WriteResult>, String> {
        let writes: Vec<Write> = writes
            .into_iter()
            .map(|w| Write {
                key: w.key,
                value: w.value,
                expected_version: w.expected_version,
            })
            .collect();
        self.guarded("write", |s| s.compare_and_set(&writes))
            .map(|rs| {
                rs.into_iter()
                    .map(|r| match r {
                        portcullis_engine::WriteResult::Written(v) => {
                            wit_store::WriteResult::Written(v)
                        }
                        portcullis_engine::WriteResult::Conflict(e) => {
                            wit_store::WriteResult::Conflict(wit_store::Entry {
                                key: e.key,
                                value: e.value,
                                version: e.version,
                            })
                        }
                    })
                    .collect()
            })
    }
}

/// Why a bundle was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bundle has problems; the previous bundle (if any) stays loaded.
    #[error("bundle refused: {} problem(s)", .0.len())]
    Refused(Vec<BundleProblem>),
    /// The guest itself failed.
    #[error("guest fault: {0:#}")]
    Fault(anyhow::Error),
}

/// One guest instance with its own state.
pub struct GuestInstance {
    runtime: GuestRuntime,
    store: Option<Store<HostState>>,
    guest: Guest,
    /// The files of the loaded bundle, to reload after a trap.
    files: Option<Vec<(String, String)>>,
    /// Per-instance call deadline in ticks, overriding the runtime's.
    deadline: Option<u64>,
    /// The store fault that led to the last trap, if one did.
    trap_store_fault: Option<String>,
}

/// The deny for a request over the size limit, decided by the host without
/// crossing into the guest (the engine would say the same).
fn oversized(request: &str) -> Option<String> {
    (request.len() > MAX_REQUEST_BYTES).then(|| {
        Decision::fault(
            "invalid-request",
            format!(
                "request is {} bytes, over the limit of {MAX_REQUEST_BYTES}",
                request.len()
            ),
            None,
            request,
        )
        .to_json()
    })
}

impl GuestInstance {
    fn call<R>(
        &mut self,
        f: impl FnOnce(&Guest, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        let store = self
            .store
            .as_mut()
            .ok_or_else(|| anyhow!("guest instance lost"))?;
        let ticks = self
            .deadline
            .unwrap_or_else(|| self.runtime.deadline_ticks());
        store.set_epoch_deadline(ticks);
        let data = store.data_mut();
        data.call_deadline = Some(Instant::now() + TICK * (ticks.saturating_sub(1) as u32));
        data.store_fault = None;
        self.trap_store_fault = None;
        match f(&self.guest, store) {
            Ok(r) => Ok(r),
            Err(e) => {
                let err = anyhow!("guest trapped: {e:#}");
                let fault = store.data_mut().store_fault.take();
                self.recover();
                // After the recovery's own calls, which reset it.
                self.trap_store_fault = fault;
                Err(err)
            }
        }
    }

    /// After a trap the instance cannot be re-entered: build a new one with
    /// the same state store and reload the bundle.
    fn recover(&mut self) {
        let Some(old) = self.store.take() else { return };
        let state = old.into_data().state;
        if let Ok((store, guest)) = self.runtime.fresh(state) {
            self.store = Some(store);
            self.guest = guest;
            if let Some(files) = self.files.clone() {
                let saved = self.deadline.take();
                let _ = self.load_inner(&files);
                self.deadline = saved;
            }
        }
    }

    fn load_inner(
        &mut self,
        files: &[(String, String)],
    ) -> Result<Result<wit::BundleInfo, Vec<wit::BundleProblem>>> {
        self.call(|g, s| g.portcullis_engine_engine().call_load(s, files))
    }

    /// Change how long one call of this instance may run.
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.deadline = Some((timeout.as_millis() / TICK.as_millis()).max(1) as u64 + 1);
    }

    /// Load a bundle: atomic, the previous one stays on any problem.
    pub fn load(&mut self, files: Vec<(String, String)>) -> Result<BundleInfo, LoadError> {
        // Over the size limit: refused here, without copying it into the guest.
        let total: usize = files.iter().map(|(n, t)| n.len() + t.len()).sum();
        if total > MAX_BUNDLE_BYTES {
            return Err(LoadError::Refused(vec![BundleProblem::new(
                ProblemKind::Limit,
                format!("bundle is {total} bytes, over the limit of {MAX_BUNDLE_BYTES}"),
            )]));
        }
        match self.load_inner(&files) {
            Ok(Ok(info)) => {
                self.files = Some(files);
                Ok(bundle_info(info))
            }
            Ok(Err(problems)) => Err(LoadError::Refused(
                problems.into_iter().map(problem).collect(),
            )),
            Err(e) => Err(LoadError::Fault(e)),
        }
    }

    /// Decide: always a decision (JSON); a guest fault is a deny naming it.
    pub fn decide(&mut self, request: &str) -> String {
        if let Some(d) = oversized(request) {
            return d;
        }
        match self.call(|g, s| g.portcullis_engine_engine().call_decide(s, request)) {
            Ok(d) => d,
            Err(e) => self.trap_decision(&e, request),
        }
    }

    /// The deny for a call that trapped: named after the store when a
    /// store fault led to it (a store that outlasted the deadline), else an
    /// engine fault.
    fn trap_decision(&self, e: &anyhow::Error, request: &str) -> String {
        match &self.trap_store_fault {
            Some(fault) => Decision::fault(
                "store",
                format!("{fault} (the guest call was interrupted: {e:#})"),
                None,
                request,
            )
            .to_json(),
            None => Decision::fault("engine-fault", format!("{e:#}"), None, request).to_json(),
        }
    }

    /// Decide many in order; a guest fault denies the whole batch.
    pub fn decide_batch(&mut self, requests: &[String]) -> Vec<String> {
        // Requests over the size limit are denied here, without crossing.
        if requests.iter().any(|r| r.len() > MAX_REQUEST_BYTES) {
            let mut out: Vec<Option<String>> = requests.iter().map(|r| oversized(r)).collect();
            let fit: Vec<String> = requests
                .iter()
                .zip(&out)
                .filter(|(_, d)| d.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            let mut decided = self.decide_batch(&fit).into_iter();
            for slot in out.iter_mut().filter(|d| d.is_none()) {
                *slot = decided.next();
            }
            return out.into_iter().map(Option::unwrap_or_default).collect();
        }
        match self.call(|g, s| g.portcullis_engine_engine().call_decide_batch(s, requests)) {
            Ok(d) => d,
            Err(e) => requests.iter().map(|r| self.trap_decision(&e, r)).collect(),
        }
    }

    /// Run the loaded bundle's cases inside the guest.
    pub fn run_cases(&mut self) -> Result<portcullis_engine::cases::Report> {
        let json = self
            .call(|g, s| g.portcullis_engine_engine().call_run_cases(s))?
            .map_err(|e| anyhow!(e))?;
        serde_json::from_str(&json).context("guest returned a malformed case report")
    }

    /// The loaded bundle's cases, expanded into the requests to send.
    pub fn case_plan(&mut self) -> Result<Vec<portcullis_engine::cases::PlannedCase>> {
        let json = self
            .call(|g, s| g.portcullis_engine_engine().call_case_plan(s))?
            .map_err(|e| anyhow!(e))?;
        serde_json::from_str(&json).context("guest returned a malformed case plan")
    }

    /// Swap the state store (e.g. a fresh one per case); answers the old one.
    pub fn replace_store(
        &mut self,
        state: Box<dyn EngineStore + Send>,
    ) -> Result<Box<dyn EngineStore + Send>> {
        let store = self
            .store
            .as_mut()
            .ok_or_else(|| anyhow!("guest instance lost"))?;
        Ok(std::mem::replace(&mut store.data_mut().state, state))
    }

    /// The loaded bundle.
    pub fn describe(&mut self) -> Result<Option<BundleInfo>> {
        Ok(self
            .call(|g, s| g.portcullis_engine_engine().call_describe(s))?
            .map(bundle_info))
    }
}

fn bundle_info(i: wit::BundleInfo) -> BundleInfo {
    BundleInfo {
        name: i.name,
        version: i.version,
        namespace: i.namespace,
        hash: i.hash,
        policy_ids: i.policy_ids,
        case_count: i.case_count,
    }
}

fn problem(p: wit::BundleProblem) -> BundleProblem {
    let kind = match p.kind.as_str() {
        "manifest" => ProblemKind::Manifest,
        "schema" => ProblemKind::Schema,
        "policy-parse" => ProblemKind::PolicyParse,
        "policy-validation" => ProblemKind::PolicyValidation,
        "entities" => ProblemKind::Entities,
        "case-file" => ProblemKind::CaseFile,
        "limit" => ProblemKind::Limit,
        _ => ProblemKind::MissingFile,
    };
    BundleProblem {
        kind,
        message: p.message,
        location: p.location.map(|l| Location {
            file: l.file,
            line: l.line,
            column: l.column,
            snippet: l.snippet,
        }),
    }
}
