//! The engine's state store backed by Redis, so several processes (CLI
//! runs, `serve` instances) share lockout counters, rate buckets and
//! grants exactly.
//!
//! Responsible for: the [`Store`] contract over Redis (one round trip per
//! batched get, one per batched compare-and-set, each write checked against
//! its key's version atomically), timeouts, reconnecting, and what happens
//! while Redis is unreachable ([`Fallback`]). Not responsible for what the
//! values mean: the engine owns every rule and keeps expiry inside values.
//!
//! # Layout in Redis
//!
//! Each engine key `K` is the hash `PREFIX k:K` with fields `v` (the value)
//! and `n` (its version). Versions come from one counter, `PREFIX version`
//! (INCR), so they only grow, across deletes too (no ABA), as in the
//! engine's `MemoryStore`. Keys carry no TTL: expiry lives in the values,
//! and a hard lock must outlive any timer. Reads are one pipeline of HMGET;
//! writes are one Lua script (EVALSHA) that, per write in order, compares
//! the key's version with the expected one and either sets value and a new
//! version or answers the current entry: atomic per key, as the contract
//! says, and atomic as a whole since Redis runs a script alone.
//!
//! # When Redis is unreachable
//!
//! Connection errors, timeouts and refused connections mark the store down
//! for every clone (shared state); a clone tries to reconnect at most every
//! [`PROBE_INTERVAL`] while down, and the first success marks it up again.
//! - [`Fallback::FailClosed`]: every operation answers `Err`; the engine
//!   denies with error kind `store` and the reason
//!   `error: store read failed: redis … unreachable … (fail-closed)`.
//! - [`Fallback::Local`]: operations go to one in-process store shared by
//!   every clone ([`StoreHealth::Degraded`]), bounded to `max_keys` keys: a
//!   write that would create more fails closed as above. Counting is then
//!   per process, not per fleet. On recovery the local counts are dropped,
//!   not merged back (the engine alone knows how to merge its values): the
//!   shared counters resume from where Redis had them. Local versions have
//!   bit 62 set, so a version read from one side never matches the other.
//!
//! Other Redis errors (a wrong type under a key, a script error) are
//! failures of the store, not of the network: they answer `Err` (the engine
//! fails closed) in both modes and are counted, without marking the store
//! down.

use anyhow::{Context, Result, bail};
use portcullis_engine::{Entry, MemoryStore, Store, Write, WriteResult};
use redis::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// While Redis is down, how often one clone tries to reconnect.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Versions of the local fallback store carry this bit.
const LOCAL_BIT: u64 = 1 << 62;

/// What to do while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Fail every store operation: decisions deny, naming the store.
    FailClosed,
    /// Count in a bounded in-process store; beyond `max_keys` keys, fail closed.
    Local {
        /// Most keys the local store may hold.
        max_keys: usize,
    },
}

impl std::str::FromStr for Fallback {
    type Err = anyhow::Error;

    /// `fail-closed` or `local:N`.
    fn from_str(s: &str) -> Result<Fallback> {
        if s == "fail-closed" {
            return Ok(Fallback::FailClosed);
        }
        if let Some(n) = s.strip_prefix("local:") {
            let max_keys: usize = n.parse().with_context(|| {
                format!("`{s}`: the bound of `local:N` must be a number of keys")
            })?;
            if max_keys == 0 {
                bail!("`{s}`: the bound of `local:N` must be at least 1");
            }
            return Ok(Fallback::Local { max_keys });
        }
        bail!("unknown store fallback `{s}` (expected `fail-closed` or `local:N`)")
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fallback::FailClosed => write!(f, "fail-closed"),
            Fallback::Local { max_keys } => write!(f, "local:{max_keys}"),
        }
    }
}

/// How to reach Redis and what to do without it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Prepended to every Redis key (default `portcullis:`): one Redis can
    /// serve several fleets or bundles apart.
    pub key_prefix: String,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for one reply.
    pub op_timeout: Duration,
    /// While Redis is unreachable.
    pub fallback: Fallback,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "portcullis:".into(),
            connect_timeout: Duration::from_millis(500),
            op_timeout: Duration::from_millis(500),
            fallback: Fallback::FailClosed,
        }
    }
}

/// Whether the store is serving from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    /// Redis answers.
    Ok,
    /// Redis is unreachable; counting locally within the bound.
    Degraded,
    /// Redis is unreachable; failing closed.
    Down,
}

impl StoreHealth {
    /// `ok`, `degraded` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreHealth::Ok => "ok",
            StoreHealth::Degraded => "degraded",
            StoreHealth::Down => "down",
        }
    }
}

/// Kinds of store errors, as counted (`portcullis_store_errors_total{kind}`).
pub const ERROR_KINDS: [&str; 7] = [
    "connect",
    "io",
    "timeout",
    "server",
    "protocol",
    "unavailable",
    "local_full",
];

#[derive(Clone, Copy)]
enum ErrorKind {
    Connect = 0,
    Io = 1,
    Timeout = 2,
    Server = 3,
    Protocol = 4,
    /// An operation refused because Redis is known to be down (fail-closed).
    Unavailable = 5,
    LocalFull = 6,
}

/// State every clone shares.
struct Shared {
    addr: String,
    fallback: Fallback,
    health: AtomicU8,
    /// When down: the earliest next reconnect attempt.
    probe: Mutex<Option<Instant>>,
    errors: [AtomicU64; 7],
    fallback_ops: AtomicU64,
    local: Mutex<MemoryStore>,
    /// Why Redis was last found unreachable (no URL, no password).
    last_error: Mutex<String>,
}

impl Shared {
    fn health(&self) -> StoreHealth {
        match self.health.load(Ordering::Relaxed) {
            0 => StoreHealth::Ok,
            1 => StoreHealth::Degraded,
            _ => StoreHealth::Down,
        }
    }

    fn count(&self, kind: ErrorKind) {
        if let Some(c) = self.errors.get(kind as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn probe(&self) -> MutexGuard<'_, Option<Instant>> {
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn local(&self) -> MutexGuard<'_, MemoryStore> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a clone without a connection try to connect now?
    fn may_connect(&self) -> bool {
        let mut probe = self.probe();
        match *probe {
            None => true,
            Some(at) if Instant::now() >= at => {
                // This clone probes; the others wait for the next interval.
                *probe = Some(Instant::now() + PROBE_INTERVAL);
                true
            }
            Some(_) => false,
        }
    }

    fn mark_down(&self, why: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            why.clone_into(&mut last);
        }
        let mut probe = self.probe();
        if probe.is_none() {
            *probe = Some(Instant::now() + PROBE_INTERVAL);
        }
        let h = match self.fallback {
            Fallback::FailClosed => 2,
            Fallback::Local { .. } => 1,
        };
        self.health.store(h, Ordering::Relaxed);
    }

    fn mark_up(&self) {
        if self.health.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut probe = self.probe();
        probe.take();
        if self.health.swap(0, Ordering::Relaxed) != 0 {
            drop(probe);
            // Degraded counts are not merged back: drop them (deleting,
            // so local versions keep growing and never repeat).
            let mut local = self.local();
            let keys: Vec<String> = local.snapshot("").into_keys().collect();
            if let Ok(entries) = local.get(&keys) {
                let deletes: Vec<Write> = entries
                    .into_iter()
                    .map(|e| Write {
                        key: e.key,
                        value: None,
                        expected_version: e.version,
                    })
                    .collect();
                let _ = local.compare_and_set(&deletes);
            }
        }
    }
}

/// A failed Redis call: whether it means Redis is unreachable, and why.
struct Failure {
    unavailable: bool,
    message: String,
}

/// The engine's [`Store`] over Redis. Clones share the health, the error
/// counters and the local fallback store; each has its own connection
/// (opened on first use), so give each guest instance its own clone.
pub struct RedisStore {
    client: redis::Client,
    conn: Option<redis::Connection>,
    shared: Arc<Shared>,
    prefix: String,
    counter: String,
    connect_timeout: Duration,
    op_timeout: Duration,
    script: redis::Script,
    /// Operations this clone served from the local fallback.
    fallback_ops: Arc<AtomicU64>,
}

impl Clone for RedisStore {
    fn clone(&self) -> Self {
        RedisStore {
            client: self.client.clone(),
            conn: None,
            shared: self.shared.clone(),
            prefix: self.prefix.clone(),
            counter: self.counter.clone(),
            connect_timeout: self.connect_timeout,
            op_timeout: self.op_timeout,
            script: self.script.clone(),
            fallback_ops: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.shared.addr)
            .field("prefix", &self.prefix)
            .field("health", &self.shared.health())
            .finish()
    }
}

/// Per write, in order: compare the key's version (field `n`, absent: 0)
/// with the expected one; equal: set (`s`) with a fresh version from the
/// counter, or delete (`d`); else answer the current entry. Four reply
/// items per write: written (1/0), version, present (1/0), value.
const CAS_SCRIPT: &str = r"
local out = {}
for i = 2, #KEYS do
  local a = (i - 2) * 3
  local expected = tonumber(ARGV[a + 1])
  local cur = redis.call('HMGET', KEYS[i], 'v', 'n')
  local ver = tonumber(cur[2]) or 0
  if ver ~= expected then
    if cur[1] then
      out[#out + 1] = 0; out[#out + 1] = ver; out[#out + 1] = 1; out[#out + 1] = cur[1]
    else
      out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = ''
    end
  elseif ARGV[a + 2] == 's' then
    local nv = redis.call('INCR', KEYS[1])
    redis.call('HSET', KEYS[i], 'v', ARGV[a + 3], 'n', nv)
    out[#out + 1] = 1; out[#out + 1] = nv; out[#out + 1] = 1; out[#out + 1] = ''
  else
    redis.call('DEL', KEYS[i])
    out[#out + 1] = 1; out[#out + 1] = 0; out[#out + 1] = 0; out[#out + 1] = ''
  end
end
return out
";

impl RedisStore {
    /// A store for `url` (`redis://HOST:PORT[/DB]`). Fails only on a bad
    /// URL: an unreachable Redis is the declared fallback, from the start
    /// (one connection is tried now, so [`RedisStore::health`] tells at once).
    pub fn connect(url: &str, options: RedisOptions) -> Result<RedisStore> {
        if !url.starts_with("redis://") {
            bail!("store `{url}`: expected `redis://HOST:PORT`");
        }
        let client = redis::Client::open(url).with_context(|| {
            // The URL may hold a password: name only the scheme.
            "the Redis URL is not valid (expected `redis://HOST:PORT[/DB]`)".to_string()
        })?;
        let addr = client.get_connection_info().addr().to_string();
        let shared = Arc::new(Shared {
            addr,
            fallback: options.fallback,
            health: AtomicU8::new(0),
            probe: Mutex::new(None),
            errors: Default::default(),
            fallback_ops: AtomicU64::new(0),
            local: Mutex::new(MemoryStore::new()),
            last_error: Mutex::new(String::new()),
        });
        let mut store = RedisStore {
            client,
            conn: None,
            shared,
            counter: format!("{}version", options.key_prefix),
            prefix: format!("{}k:", options.key_prefix),
            connect_timeout: options.connect_timeout,
            op_timeout: options.op_timeout,
            script: redis::Script::new(CAS_SCRIPT),
            fallback_ops: Arc::new(AtomicU64::new(0)),
        };
        let _ = store.ping();
        Ok(store)
    }

    /// PING Redis through this clone's connection (reconnecting if needed).
    pub fn ping(&mut self) -> std::result::Result<(), String> {
        self.call(|c, _| redis::cmd("PING").query::<String>(c).map(|_| ()))
            .map_err(|f| f.message)
    }

    /// Health shared by every clone.
    pub fn health(&self) -> StoreHealth {
        self.shared.health()
    }

    /// A handle for the service: health, counters, and whether this clone
    /// served from the local fallback. Keep it beside the instance the
    /// store is boxed into.
    pub fn monitor(&self) -> StoreMonitor {
        StoreMonitor {
            shared: self.shared.clone(),
            fallback_ops: self.fallback_ops.clone(),
        }
    }

    /// `host:port` of Redis (never the password).
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Run `f` on this clone's connection; track health and errors.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection, &Self) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Failure> {
        if self.conn.is_none() {
            if !self.shared.may_connect() {
                self.shared.count(ErrorKind::Unavailable);
                let why = self
                    .shared
                    .last_error
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or_default();
                return Err(Failure {
                    unavailable: true,
                    message: format!("redis at {} is unreachable: {why}", self.shared.addr),
                });
            }
            match self
                .client
                .get_connection_with_timeout(self.connect_timeout)
            {
                Ok(c) => {
                    let timeout = Some(self.op_timeout.max(Duration::from_millis(1)));
                    if c.set_read_timeout(timeout).is_err() || c.set_write_timeout(timeout).is_err()
                    {
                        self.shared.count(ErrorKind::Connect);
                        self.shared.mark_down("cannot set timeouts");
                        return Err(Failure {
                            unavailable: true,
                            message: format!(
                                "redis at {} is unreachable: cannot set timeouts",
                                self.shared.addr
                            ),
                        });
                    }
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.shared.count(ErrorKind::Connect);
                    self.shared.mark_down(&short(&e));
                    return Err(Failure {
                        unavailable: true,
                        message: format!(
                            "redis at {} is unreachable: {}",
                            self.shared.addr,
                            short(&e)
                        ),
                    });
                }
            }
        }
        let Some(mut conn) = self.conn.take() else {
            return Err(Failure {
                unavailable: true,
                message: "no redis connection".into(),
            });
        };
        match f(&mut conn, self) {
            Ok(v) => {
                self.conn = Some(conn);
                self.shared.mark_up();
                Ok(v)
            }
            Err(e) => {
                let connection_level = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error();
                if connection_level {
                    // The connection is dropped: a late reply would desync it.
                    self.shared.count(if e.is_timeout() {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Io
                    });
                    self.shared.mark_down(&short(&e));
                } else {
                    self.conn = Some(conn);
                    self.shared.count(ErrorKind::Server);
                }
                let what = if connection_level {
                    " is unreachable"
                } else {
                    ""
                };
                Err(Failure {
                    unavailable: connection_level,
                    message: format!("redis at {}{what}: {}", self.shared.addr, short(&e)),
                })
            }
        }
    }

    fn redis_get(&mut self, keys: &[String]) -> std::result::Result<Vec<Entry>, Failure> {
        let replies: Vec<Value> = self.call(|c, s| {
            let mut p = redis::pipe();
            for k in keys {
                p.cmd("HMGET")
                    .arg(format!("{}{k}", s.prefix))
                    .arg("v")
                    .arg("n");
            }
            p.query(c)
        })?;
        if replies.len() != keys.len() {
            return Err(self.protocol(format!(
                "{} replies for {} keys",
                replies.len(),
                keys.len()
            )));
        }
        let mut out = Vec::with_capacity(keys.len());
        for (key, reply) in keys.iter().zip(replies) {
            let (value, version) = match reply {
                Value::Array(items) if items.len() == 2 => {
                    let mut it = items.into_iter();
                    let v = it.next().unwrap_or(Value::Nil);
                    let n = it.next().unwrap_or(Value::Nil);
                    (text(v), number(&n))
                }
                other => {
                    return Err(self.protocol(format!("unexpected HMGET reply {other:?}")));
                }
            };
            match (value, version) {
                (Ok(None), Some(0) | None) => out.push(Entry {
                    key: key.clone(),
                    value: None,
                    version: 0,
                }),
                (Ok(Some(v)), Some(n)) if n > 0 => out.push(Entry {
                    key: key.clone(),
                    value: Some(v),
                    version: n,
                }),
                _ => {
                    return Err(
                        self.protocol(format!("key `{key}` does not hold a value and a version"))
                    );
                }
            }
        }
        Ok(out)
    }

    fn redis_cas(&mut self, writes: &[Write]) -> std::result::Result<Vec<WriteResult>, Failure> {
        let reply: Vec<Value> = self.call(|c, s| {
            let mut inv = s.script.prepare_invoke();
            inv.key(&s.counter);
            for w in writes {
                inv.key(format!("{}{}", s.prefix, w.key));
                inv.arg(w.expected_version);
                match &w.value {
                    Some(v) => inv.arg("s").arg(v.as_str()),
                    None => inv.arg("d").arg(""),
                };
            }
            inv.invoke(c)
        })?;
        if reply.len() != writes.len() * 4 {
            return Err(self.protocol(format!(
                "{} reply items for {} writes",
                reply.len(),
                writes.len()
            )));
        }
        let mut out = Vec::with_capacity(writes.len());
        for (w, item) in writes.iter().zip(reply.chunks(4)) {
            let [written, version, present, value] = item else {
                return Err(self.protocol("short reply".into()));
            };
            let (Some(written), Some(version), Some(present)) =
                (number(written), number(version), number(present))
            else {
                return Err(self.protocol("non-numeric reply".into()));
            };
            if written == 1 {
                out.push(WriteResult::Written(version));
                continue;
            }
            let value = if present == 1 {
                match text(value.clone()) {
                    Ok(Some(v)) => Some(v),
                    _ => return Err(self.protocol("non-text value".into())),
                }
            } else {
                None
            };
            out.push(WriteResult::Conflict(Entry {
                key: w.key.clone(),
                value,
                version,
            }));
        }
        Ok(out)
    }

    fn protocol(&self, what: String) -> Failure {
        self.shared.count(ErrorKind::Protocol);
        Failure {
            unavailable: false,
            message: format!("redis at {}: {what}", self.shared.addr),
        }
    }

    /// The answer when Redis failed: the fallback, or the error.
    fn fallback_or<T>(
        &self,
        failure: Failure,
        local: impl FnOnce(&mut MemoryStore, usize) -> std::result::Result<T, String>,
    ) -> std::result::Result<T, String> {
        match (self.shared.fallback, failure.unavailable) {
            (Fallback::Local { max_keys }, true) => {
                self.fallback_ops.fetch_add(1, Ordering::Relaxed);
                self.shared.fallback_ops.fetch_add(1, Ordering::Relaxed);
                let mut store = self.shared.local();
                local(&mut store, max_keys).inspect_err(|_| {
                    self.shared.count(ErrorKind::LocalFull);
                })
            }
            (Fallback::FailClosed, true) => Err(format!("{} (fail-closed)", failure.message)),
            (_, false) => Err(failure.message),
        }
    }
}

/// The local fallback: versions marked with [`LOCAL_BIT`].
fn local_get(store: &mut MemoryStore, keys: &[String]) -> std::result::Result<Vec<Entry>, String> {
    Ok(store
        .get(keys)?
        .into_iter()
        .map(|mut e| {
            if e.version > 0 {
                e.version |= LOCAL_BIT;
            }
            e
        })
        .collect())
}

fn local_cas(
    store: &mut MemoryStore,
    max_keys: usize,
    writes: &[Write],
) -> std::result::Result<Vec<WriteResult>, String> {
    let keys: Vec<String> = writes.iter().map(|w| w.key.clone()).collect();
    let present = store.get(&keys)?;
    let new: HashSet<&str> = writes
        .iter()
        .zip(&present)
        .filter(|(w, e)| w.value.is_some() && e.version == 0)
        .map(|(w, _)| w.key.as_str())
        .collect();
    if store.len() + new.len() > max_keys {
        return Err(format!(
            "redis is unreachable and the local fallback store is full ({max_keys} keys) (fail-closed)"
        ));
    }
    let translated: Vec<Write> = writes
        .iter()
        .map(|w| Write {
            key: w.key.clone(),
            value: w.value.clone(),
            expected_version: match w.expected_version {
                0 => 0,
                v if v & LOCAL_BIT != 0 => v & !LOCAL_BIT,
                // A version read from Redis never matches a local one.
                _ => LOCAL_BIT - 1,
            },
        })
        .collect();
    Ok(store
        .compare_and_set(&translated)?
        .into_iter()
        .map(|r| match r {
            WriteResult::Written(v) if v > 0 => WriteResult::Written(v | LOCAL_BIT),
            WriteResult::Written(v) => WriteResult::Written(v),
            WriteResult::Conflict(mut e) => {
                if e.version > 0 {
                    e.version |= LOCAL_BIT;
                }
                WriteResult::Conflict(e)
            }
        })
        .collect())
}

impl Store for RedisStore {
    fn get(&mut self, keys: &[String]) -> std::result::Result<Vec<Entry>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self.redis_get(keys) {
            Ok(e) => Ok(e),
            Err(f) => self.fallback_or(f, |s, _| local_get(s, keys)),
        }
    }

    fn compare_and_set(
        &mut self,
        writes: &[Write],
    ) -> std::result::Result<Vec<WriteResult>, String> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        match self.redis_cas(writes) {
            Ok(r) => Ok(r),
            Err(f) => self.fallback_or(f, |s, max| local_cas(s, max, writes)),
        }
    }

    /// Writers in other processes collide on the same keys: wait a
    /// randomised 0..=round×100 µs (at most 1 ms) before a retry.
    fn backoff(&mut self, round: u32) -> bool {
        let nanos = Instant::now().elapsed().as_nanos() as u64
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0);
        let cap = u64::from(round.min(10)) * 100;
        if cap > 0 {
            std::thread::sleep(Duration::from_micros(nanos % (cap + 1)));
        }
        cap > 0
    }
}

/// Health, counters and the degraded mark, readable from outside the
/// guest instance a [`RedisStore`] clone was boxed into.
#[derive(Clone)]
pub struct StoreMonitor {
    shared: Arc<Shared>,
    fallback_ops: Arc<AtomicU64>,
}

impl std::fmt::Debug for StoreMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMonitor")
            .field("addr", &self.shared.addr)
            .field("health", &self.shared.health())
            .finish()
    }
}

impl StoreMonitor {
    /// Health shared by every clone.
    pub fn health(&self) -> StoreHealth {
        self.shared.health()
    }

    /// The declared fallback.
    pub fn fallback(&self) -> Fallback {
        self.shared.fallback
    }

    /// Errors so far by kind (every kind of [`ERROR_KINDS`], zeros included),
    /// across every clone.
    pub fn error_counts(&self) -> BTreeMap<&'static str, u64> {
        ERROR_KINDS
            .iter()
            .zip(&self.shared.errors)
            .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// All errors so far, across every clone.
    pub fn errors_total(&self) -> u64 {
        self.shared
            .errors
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Operations served by the local fallback, across every clone.
    pub fn fallback_ops_total(&self) -> u64 {
        self.shared.fallback_ops.load(Ordering::Relaxed)
    }

    /// Keys held by the local fallback store now.
    pub fn local_keys(&self) -> usize {
        self.shared.local().len()
    }

    /// Operations this clone served from the local fallback since the last
    /// call (then zero again).
    pub fn take_fallback_ops(&self) -> u64 {
        self.fallback_ops.swap(0, Ordering::Relaxed)
    }

    /// `decision_json` with `"store":{"health":"degraded","fallback":"local:N"}`
    /// added first when this clone served from the local fallback since the
    /// last call, else unchanged. Call after each decide (for a batch: the
    /// mark applies to the whole batch).
    pub fn annotate(&self, decision_json: String) -> String {
        if self.take_fallback_ops() == 0 {
            return decision_json;
        }
        mark_degraded(&decision_json, self.shared.fallback)
    }
}

/// Add the degraded-store mark to a decision's JSON text (first member, the
/// rest unchanged byte for byte).
pub fn mark_degraded(decision_json: &str, fallback: Fallback) -> String {
    match decision_json.strip_prefix('{') {
        Some(rest) => {
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!(
                "{{\"store\":{{\"health\":\"degraded\",\"fallback\":\"{fallback}\"}}{sep}{rest}"
            )
        }
        None => decision_json.to_string(),
    }
}

fn short(e: &redis::RedisError) -> String {
    let s = e.to_string();
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn text(v: Value) -> std::result::Result<Option<String>, ()> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => String::from_utf8(b).map(Some).map_err(|_| ()),
        Value::SimpleString(s) => Ok(Some(s)),
        _ => Err(()),
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Nil => None,
        _ => None,
    }
}

/// `--store` and `--store-fallback` of the CLI commands that decide.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Where lockout counters, rate buckets and grants live: `memory` (this
    /// process only) or `redis://HOST:PORT` (shared by every process using it).
    #[arg(
        long,
        value_name = "memory|redis://HOST:PORT",
        default_value = "memory"
    )]
    pub store: String,
    /// While Redis is unreachable: `fail-closed` (decisions deny, naming the
    /// store) or `local:N` (count in this process, at most N keys, marked
    /// degraded; beyond N keys, fail closed).
    #[arg(
        long,
        value_name = "fail-closed|local:N",
        default_value = "fail-closed"
    )]
    pub store_fallback: String,
}

impl StoreArgs {
    /// The store, and for Redis its monitor (health, the degraded mark).
    pub fn open(&self) -> Result<(Box<dyn Store + Send>, Option<StoreMonitor>)> {
        let fallback: Fallback = self.store_fallback.parse().context("--store-fallback")?;
        if self.store == "memory" {
            return Ok((Box::new(MemoryStore::new()), None));
        }
        if self.store.starts_with("redis://") {
            let options = RedisOptions {
                fallback,
                ..RedisOptions::default()
            };
            let store = RedisStore::connect(&self.store, options).context("--store")?;
            let monitor = store.monitor();
            return Ok((Box::new(store), Some(monitor)));
        }
        bail!(
            "--store: unknown store `{}` (expected `memory` or `redis://HOST:PORT`)",
            self.store
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_flags_parse_or_name_the_problem() {
        assert!(matches!(
            "fail-closed".parse::<Fallback>(),
            Ok(Fallback::FailClosed)
        ));
        assert!(matches!(
            "local:5".parse::<Fallback>(),
            Ok(Fallback::Local { max_keys: 5 })
        ));
        for bad in ["local:", "local:x", "local:0", "open"] {
            let e = bad.parse::<Fallback>().err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains(bad)), "{bad}");
        }
    }

    #[test]
    fn local_versions_never_match_redis_versions() -> std::result::Result<(), String> {
        let mut s = MemoryStore::new();
        let w = |v: Option<&str>, expected| Write {
            key: "a".into(),
            value: v.map(str::to_string),
            expected_version: expected,
        };
        let r = local_cas(&mut s, 10, &[w(Some("1"), 0)])?;
        let Some(WriteResult::Written(v)) = r.first().cloned() else {
            return Err("not written".into());
        };
        assert!(v & LOCAL_BIT != 0);
        // The same small number read from Redis must conflict.
        let r = local_cas(&mut s, 10, &[w(Some("2"), v & !LOCAL_BIT)])?;
        assert!(matches!(r.first(), Some(WriteResult::Conflict(e)) if e.version == v));
        let r = local_cas(&mut s, 10, &[w(Some("2"), v)])?;
        assert!(matches!(r.first(), Some(WriteResult::Written(_))));
        // The bound: a second key does not fit in one.
        let mut one = MemoryStore::new();
        local_cas(&mut one, 1, &[w(Some("1"), 0)])?;
        let full = local_cas(
            &mut one,
            1,
            &[Write {
                key: "b".into(),
                value: Some("x".into()),
                expected_version: 0,
            }],
        );
        assert!(full.is_err_and(|e| e.contains("full (1 keys)")));
        Ok(())
    }

    #[test]
    fn the_degraded_mark_keeps_the_decision_intact() {
        let d = r#"{"outcome":"allow","allowed":true}"#;
        let m = mark_degraded(d, Fallback::Local { max_keys: 3 });
        let v: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
        assert_eq!(v["store"]["health"], "degraded");
        assert_eq!(v["store"]["fallback"], "local:3");
        assert_eq!(v["outcome"], "allow");
    }
}
