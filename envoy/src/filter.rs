//! The proxy-wasm glue: Envoy callbacks → mapping → engine → reply.
//!
//! Only host calls live here; everything they feed is in the pure modules.
//! Per request: one call for all request headers, two property reads (peer
//! address; mTLS state when configured, and the peer's SAN when it is
//! mTLS), one shared-data read per state key the request touches, one
//! counter, and on refusal one local reply. The request is built as the
//! engine's `Request` (no JSON text in between) and decided without an
//! audit record unless it is logged.

use crate::mapping::{self, Mapped, Peer, Unmapped};
use crate::respond::{self, Reply};
use crate::settings::{self, Loaded, LogDecisions, Unmatched};
use crate::store::{self, SharedData, SharedStore};
use crate::{DECISION_HEADER, REQUEST_HEADER, STATE_HEADER};
use base64::Engine as _;
use portcullis_engine::decision::Audit;
use portcullis_engine::request::{Event, Request};
use portcullis_engine::{Decision, Outcome, RequestError};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Shared data through the host.
struct Host;

impl SharedData for Host {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, u32), String> {
        hostcalls::get_shared_data(key)
            .map(|(v, cas)| (v, cas.unwrap_or(0)))
            .map_err(|s| format!("shared data get: {s:?}"))
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, String> {
        match hostcalls::set_shared_data(key, Some(value), (cas != 0).then_some(cas)) {
            Ok(()) => Ok(true),
            Err(Status::CasMismatch) => Ok(false),
            Err(s) => Err(format!("shared data set: {s:?}")),
        }
    }

    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn seed(&self) -> u64 {
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Two worker VMs asking in the same nanosecond still differ.
        nanos ^ (std::ptr::from_ref(self) as usize as u64).rotate_left(32)
    }
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Counters `portcullis.decisions.<outcome>.<pathway>` and
/// `portcullis.events.<event>` (Envoy prefixes them with `wasmcustom.`).
/// Decisions are counted in the VM and added to Envoy's counters once a
/// second (the root context's tick) or every [`FLUSH_EVERY`] decisions,
/// which saves a host call per request; events are added at once.
#[derive(Default)]
struct Metrics {
    decisions: Vec<((Outcome, bool), u32, Cell<u64>)>,
    events: Vec<(&'static str, u32)>,
    pending: Cell<u64>,
}

/// Decisions counted in the VM before they are added to Envoy's counters.
const FLUSH_EVERY: u64 = 1024;
/// How often the root context adds the decisions counted so far.
const FLUSH_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

const OUTCOMES: [Outcome; 6] = [
    Outcome::Allow,
    Outcome::Redact,
    Outcome::Challenge,
    Outcome::Throttle,
    Outcome::Deny,
    Outcome::Lock,
];

impl Metrics {
    fn define() -> Metrics {
        let mut m = Metrics::default();
        for o in OUTCOMES {
            for (synthetic, p) in [(false, "authentic"), (true, "synthetic")] {
                let name = format!("portcullis.decisions.{}.{p}", o.as_str());
                if let Ok(id) = hostcalls::define_metric(MetricType::Counter, &name) {
                    m.decisions.push(((o, synthetic), id, Cell::new(0)));
                }
            }
        }
        for e in ["auth_failure", "auth_success", "refused_config"] {
            if let Ok(id) =
                hostcalls::define_metric(MetricType::Counter, &format!("portcullis.events.{e}"))
            {
                m.events.push((e, id));
            }
        }
        m
    }

    fn decision(&self, d: &Decision) {
        let key = (d.outcome, d.pathway == "synthetic");
        if let Some((_, _, n)) = self.decisions.iter().find(|(k, _, _)| *k == key) {
            n.set(n.get() + 1);
            self.pending.set(self.pending.get() + 1);
            if self.pending.get() >= FLUSH_EVERY {
                self.flush();
            }
        }
    }

    /// Add the decisions counted so far to Envoy's counters.
    fn flush(&self) {
        for (_, id, n) in &self.decisions {
            let count = n.replace(0);
            if count > 0 {
                let _ = hostcalls::increment_metric(*id, count as i64);
            }
        }
        self.pending.set(0);
    }

    fn event(&self, e: &str) {
        if let Some((_, id)) = self.events.iter().find(|(k, _)| *k == e) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

/// One plugin configuration (one per bundle swap) in this VM.
#[derive(Default)]
struct Root {
    loaded: Option<Rc<Loaded>>,
    metrics: Rc<Metrics>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        if let Err(e) = store::ensure_lock(&Host) {
            log(
                LogLevel::Error,
                &format!("portcullis: cannot prepare shared data: {e}"),
            );
            return false;
        }
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(c)) => c,
            Ok(None) => {
                log(
                    LogLevel::Error,
                    "portcullis: no plugin configuration (expected a packed bundle)",
                );
                return false;
            }
            Err(s) => {
                log(
                    LogLevel::Error,
                    &format!("portcullis: cannot read the plugin configuration: {s:?}"),
                );
                return false;
            }
        };
        // One set of counters for the VM's life (their ids do not change
        // between configurations); decisions counted under the previous
        // configuration are flushed with the next tick.
        if self.metrics.decisions.is_empty() {
            self.metrics = Rc::new(Metrics::define());
            let _ = hostcalls::set_tick_period(FLUSH_PERIOD);
        }
        let metrics = Rc::clone(&self.metrics);
        let started = Host.now_ms();
        let loaded = match settings::load_unchecked(&config) {
            Ok(l) => l,
            Err(e) => return refuse(&metrics, &e),
        };
        let parsed = Host.now_ms();
        // The cases run once per bundle, in the first VM that loads it (the
        // main thread's, before any worker's); the others find its mark.
        let info = loaded.bundle.info();
        let mark = format!("{}{}", store::CASES_PASSED_PREFIX, info.hash);
        let cases = if !loaded.config.settings.run_cases {
            "not run"
        } else if Host.get(&mark).is_ok_and(|(_, cas)| cas != 0) {
            "passed in another VM"
        } else {
            if let Err(e) = settings::check_cases(&loaded.bundle) {
                return refuse(&metrics, &e);
            }
            let _ = Host.set(&mark, b"1", 0);
            "passed"
        };
        let done = Host.now_ms();
        log(
            LogLevel::Info,
            &format!(
                "portcullis: bundle {}@{} #{} loaded in {} ms ({} policies; {} cases {cases}, {} ms){}",
                info.name,
                info.version,
                info.hash.get(..16).unwrap_or(""),
                parsed.saturating_sub(started),
                info.policy_ids.len(),
                info.case_count,
                done.saturating_sub(parsed),
                if loaded.config.settings.trust_mode {
                    "; TRUST MODE: requests may carry their own JSON"
                } else {
                    ""
                }
            ),
        );
        self.loaded = Some(Rc::new(loaded));
        true
    }

    fn on_tick(&mut self) {
        self.metrics.flush();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            loaded: self.loaded.clone(),
            metrics: Rc::clone(&self.metrics),
            pending: None,
            login: None,
            login_clean: false,
            decision_header: None,
            replied: false,
            namespace: String::new(),
            body: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Replace the buffered request body with the engine's redacted one (the
/// route removed content-length when it started buffering).
fn rewrite_body(decision: &Decision, size: usize, was_text: bool) -> Result<(), String> {
    let bytes = mapping::redacted_body(decision, was_text)?;
    hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, &bytes)
        .map_err(|s| format!("set body: {s:?}"))
}

fn refuse(metrics: &Metrics, e: &settings::ConfigError) -> bool {
    metrics.event("refused_config");
    log(LogLevel::Error, &format!("portcullis: {e}"));
    false
}

/// What a decision is made on.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// Trust mode: the request's JSON text as the test sent it.
    Text(&'a str),
    /// A request mapped from HTTP.
    Built(&'a Request),
}

/// One HTTP stream.
struct Filter {
    loaded: Option<Rc<Loaded>>,
    metrics: Rc<Metrics>,
    /// A mapped request waiting for its body.
    pending: Option<Mapped>,
    /// An allowed login request, whose answer is an authentication event.
    login: Option<Request>,
    /// The login's decision read no state at all (every key empty): a
    /// success then has nothing to reset, and its event is not sent to the
    /// store. (A failure recorded by another request in between stays
    /// counted: the safe side.)
    login_clean: bool,
    /// Trust mode: the decision, for the response header.
    decision_header: Option<String>,
    /// The filter answered the request itself.
    replied: bool,
    /// Trust mode: the state namespace the test asked for.
    namespace: String,
    /// A buffered body that went into the request: its size, and whether it
    /// went as text (else base64).
    body: Option<(usize, bool)>,
}

impl Context for Filter {}

impl Filter {
    fn send(&mut self, reply: Reply, extra: Option<String>) -> Action {
        let mut headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(h) = extra.as_deref() {
            headers.push((DECISION_HEADER, h));
        }
        self.replied = true;
        if let Err(s) =
            hostcalls::send_http_response(reply.status, headers, Some(reply.body.as_bytes()))
        {
            log(
                LogLevel::Error,
                &format!("portcullis: cannot send the local reply: {s:?}"),
            );
        }
        Action::Pause
    }

    fn decide(&mut self, loaded: &Loaded, input: Input<'_>) -> Decision {
        let mut store = SharedStore::new(&Host, &self.namespace);
        let settings = &loaded.config.settings;
        let decision = match input {
            Input::Text(text) => loaded.bundle.decide(text, &mut store),
            Input::Built(req) => {
                // Trust mode hands the whole decision back: keep its record.
                let audit = match (settings.trust_mode, settings.log) {
                    (true, _) | (false, LogDecisions::All) => Audit::All,
                    (false, LogDecisions::Refused) => Audit::Refused,
                    (false, LogDecisions::None) => Audit::None,
                };
                loaded.bundle.decide_with(req, &mut store, audit)
            }
        };
        self.login_clean = store.all_absent;
        self.metrics.decision(&decision);
        let log_it = match settings.log {
            LogDecisions::None => false,
            LogDecisions::Refused => !decision.allowed,
            LogDecisions::All => true,
        };
        if log_it {
            let audit = serde_json::to_string(&decision.audit).unwrap_or_default();
            log(LogLevel::Info, &format!("portcullis decision: {audit}"));
        }
        decision
    }

    /// Decide and act on the outcome: continue (redacting the body), or
    /// answer here.
    fn act(&mut self, loaded: &Loaded, input: Input<'_>) -> Action {
        let decision = self.decide(loaded, input);
        let header = loaded
            .config
            .settings
            .trust_mode
            .then(|| base64::engine::general_purpose::STANDARD.encode(decision.to_json()));
        match respond::reply(&decision, &loaded.config.settings.realm) {
            None => {
                if decision.outcome == Outcome::Redact
                    && let Some((size, was_text)) = self.body
                    && let Err(e) = rewrite_body(&decision, size, was_text)
                {
                    log(
                        LogLevel::Error,
                        &format!("portcullis: cannot redact the body: {e}"),
                    );
                    return self.send(respond::refusal("error: redaction"), header);
                }
                self.decision_header = header;
                Action::Continue
            }
            Some(reply) => self.send(reply, header),
        }
    }

    fn trusted_request(
        &mut self,
        loaded: &Loaded,
        raw: &[u8],
        headers: &[(String, Vec<u8>)],
    ) -> Action {
        if let Some(ns) = mapping::header(headers, STATE_HEADER) {
            self.namespace = crate::state_namespace(ns);
        }
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, REQUEST_HEADER);
        match crate::decode_request_header(raw) {
            Ok(text) => self.act(loaded, Input::Text(&text)),
            Err(message) => {
                let decision =
                    Decision::fault("invalid-request", message, Some(REQUEST_HEADER.into()), "");
                self.metrics.decision(&decision);
                let header = base64::engine::general_purpose::STANDARD.encode(decision.to_json());
                match respond::reply(&decision, &loaded.config.settings.realm) {
                    Some(reply) => self.send(reply, Some(header)),
                    None => Action::Continue,
                }
            }
        }
    }

    fn peer(&self, loaded: &Loaded) -> Peer {
        let prop = |path: Vec<&str>| hostcalls::get_property(path).ok().flatten();
        let source_address =
            prop(vec!["source", "address"]).and_then(|b| String::from_utf8(b).ok());
        let (mut mtls, mut san) = (false, None);
        if loaded.config.settings.mtls {
            mtls = prop(vec!["connection", "mtls"])
                .is_some_and(|b| b.first().is_some_and(|x| *x != 0));
            if mtls {
                let text = |b: Vec<u8>| String::from_utf8(b).ok().filter(|s| !s.is_empty());
                san = prop(vec!["connection", "uri_san_peer_certificate"])
                    .and_then(text)
                    .or_else(|| {
                        prop(vec!["connection", "dns_san_peer_certificate"]).and_then(text)
                    });
            }
        }
        Peer {
            source_address,
            mtls,
            san,
        }
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return self.send(respond::refusal("error: no-bundle"), None);
        };
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(_) => return self.send(respond::refusal("error: engine-fault"), None),
        };
        // Test builds only (`--features crash-test`): trap the VM on demand,
        // to show that Envoy's FAIL_RELOAD brings a fresh one.
        #[cfg(feature = "crash-test")]
        if mapping::header(&headers, crate::CRASH_HEADER).is_some() {
            log(
                LogLevel::Warn,
                "portcullis: crash requested (crash-test build)",
            );
            core::arch::wasm32::unreachable();
        }
        #[cfg(feature = "bench-stages")]
        let stop = crate::stages::stop_at(&headers);
        #[cfg(feature = "bench-stages")]
        if stop == Some(crate::stages::Stage::Headers) {
            return Action::Continue;
        }
        if loaded.config.settings.trust_mode
            && let Some(raw) = mapping::header(&headers, REQUEST_HEADER)
        {
            let raw = raw.to_vec();
            return self.trusted_request(&loaded, &raw, &headers);
        }
        let peer = self.peer(&loaded);
        #[cfg(feature = "bench-stages")]
        if stop == Some(crate::stages::Stage::Peer) {
            return Action::Continue;
        }
        let mapped = mapping::map(&loaded.config, &headers, &peer);
        #[cfg(feature = "bench-stages")]
        if let Some(stage) = stop {
            return crate::stages::finish(stage, &loaded, mapped.as_ref().ok(), &Host);
        }
        match mapped {
            Err(Unmapped::NoRoute) => match loaded.config.settings.unmatched {
                Unmatched::Allow => Action::Continue,
                Unmatched::Deny => {
                    self.send(respond::refusal("no route rule for this request"), None)
                }
            },
            Err(Unmapped::NoPrincipal) => {
                let mut reply = respond::refusal("no principal");
                reply.status = 401;
                reply.headers.push((
                    "www-authenticate".into(),
                    format!(
                        "Portcullis realm=\"{}\"",
                        loaded.config.settings.realm.replace(['"', '\\'], "")
                    ),
                ));
                self.send(reply, None)
            }
            Err(Unmapped::BadPrincipal) => self.send(respond::refusal("malformed principal"), None),
            Err(Unmapped::BadContext(field, message)) => {
                let decision =
                    Decision::invalid(RequestError::field(field, message), "(mapped request)");
                self.metrics.decision(&decision);
                match respond::reply(&decision, &loaded.config.settings.realm) {
                    Some(reply) => self.send(reply, None),
                    None => Action::Continue,
                }
            }
            Ok(mapped) if mapped.body && !end_of_stream => {
                // Pausing here would stop the body from reaching this filter
                // (proxy-wasm's Pause on headers is Envoy's
                // StopAllIterationAndWatermark). So the headers go on, and
                // the body is held in on_http_request_body until decided: no
                // body byte reaches the upstream before the decision, and a
                // refusal resets the upstream request. The body may be
                // rewritten (redact), so its length is not announced.
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "content-length");
                self.pending = Some(mapped);
                Action::Continue
            }
            Ok(mapped) => {
                let action = self.act(&loaded, Input::Built(&mapped.request));
                if mapped.login && !self.replied {
                    self.login = Some(mapped.request);
                }
                action
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(loaded) = self.loaded.clone() else {
            return Action::Continue;
        };
        if self.pending.is_none() {
            return Action::Continue;
        }
        if body_size > loaded.config.settings.max_body_bytes {
            self.pending = None;
            let mut reply = respond::refusal("request body over the inspection limit");
            reply.status = 413;
            return self.send(reply, None);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let Some(mut mapped) = self.pending.take() else {
            return Action::Continue;
        };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => return self.send(respond::refusal("error: engine-fault"), None),
        };
        self.body = Some((body.len(), mapping::add_body(&mut mapped.request, &body)));
        let action = self.act(&loaded, Input::Built(&mapped.request));
        if mapped.login && !self.replied {
            self.login = Some(mapped.request);
        }
        action
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body still waiting for its decision must not slip through
        // behind trailers: refuse rather than pass it undecided.
        if self.pending.take().is_some() {
            return self.send(
                respond::refusal("error: request trailers after an inspected body"),
                None,
            );
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Continue;
        }
        if let Some(h) = self.decision_header.take() {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, DECISION_HEADER, &h);
        }
        if let (Some(request), Some(loaded)) = (self.login.take(), self.loaded.clone()) {
            let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten()
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0);
            let event = match status {
                401 | 403 => Some(Event::AuthFailure),
                200..=299 => Some(Event::AuthSuccess),
                _ => None,
            };
            if let Some(event) = event {
                self.metrics.event(event.as_str());
                let nothing_to_reset = event == Event::AuthSuccess
                    && self.login_clean
                    && loaded.config.settings.log != LogDecisions::All;
                if !nothing_to_reset {
                    let _ = self.decide(&loaded, Input::Built(&mapping::as_event(&request, event)));
                }
            }
        }
        Action::Continue
    }
}
