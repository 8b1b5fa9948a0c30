//! A pool of guest instances that share one state store.
//!
//! Each instance decides one call at a time; the pool hands an idle one to
//! a request for the length of one guest call (on a blocking thread), so
//! concurrent requests run side by side up to the pool's size. Every
//! instance is built over the same store (one `Arc<Mutex<MemoryStore>>`,
//! or one Redis connection set), so lockout counters and buckets are exact
//! whichever instance a request lands on: the engine reads with one batched
//! get and writes with compare-and-set, retrying on conflict.
//!
//! An instance knows which bundle generation it holds; a lease on an
//! instance whose generation is stale reloads it first (see
//! `Worker::ensure`), so a request is decided wholly on the generation it
//! was given, never a mix. After a swap, instances already loaded with the
//! new generation off the request path ([`Pool::prepare`]) take the place
//! of stale ones as they come back (idle ones at once), so requests rarely
//! wait for a reload.

use super::bundles::Loaded;
use crate::redis_store::StoreMonitor;
use crate::{GuestInstance, GuestRuntime, LoadError};
use anyhow::{Result, anyhow};
use portcullis_engine::{Entry, MemoryStore, Store, Write, WriteResult};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The in-memory store shared by every instance of the pool.
#[derive(Clone, Default)]
pub struct SharedMemoryStore(Arc<Mutex<MemoryStore>>);

impl SharedMemoryStore {
    /// An empty shared store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for SharedMemoryStore {
    fn get(&mut self, keys: &[String]) -> Result<Vec<Entry>, String> {
        let mut s = self
            .0
            .lock()
            .map_err(|_| "store lock poisoned".to_string())?;
        s.get(keys)
    }

    fn compare_and_set(&mut self, writes: &[Write]) -> Result<Vec<WriteResult>, String> {
        let mut s = self
            .0
            .lock()
            .map_err(|_| "store lock poisoned".to_string())?;
        s.compare_and_set(writes)
    }
}

/// Makes a store handle for a new instance (all handles share state),
/// with the Redis monitor of that handle when the store is Redis.
pub type StoreFactory =
    Arc<dyn Fn() -> (Box<dyn Store + Send>, Option<StoreMonitor>) + Send + Sync>;

/// One guest instance and the bundle generation it holds (0: none).
pub struct Worker {
    instance: GuestInstance,
    generation: u64,
    monitor: Option<StoreMonitor>,
}

impl Worker {
    /// The instance, loaded with `gen` (reloaded first if it holds another).
    /// On a reload failure the instance is rebuilt once; if that fails too
    /// the call is an engine fault and the instance keeps no bundle.
    pub fn ensure(
        &mut self,
        generation: &Loaded,
        runtime: &GuestRuntime,
        store: &StoreFactory,
    ) -> Result<&mut GuestInstance> {
        if self.generation != generation.id {
            tracing::debug!(
                from = self.generation,
                to = generation.id,
                "reloading a pool instance on the request path"
            );
            self.generation = 0;
            let first = load(&mut self.instance, generation);
            if let Err(e) = first {
                tracing::warn!(error = %e, "reloading a pool instance failed; rebuilding it");
                let (state, monitor) = store();
                self.instance = runtime.instantiate(state)?;
                self.monitor = monitor;
                load(&mut self.instance, generation)?;
            }
            self.generation = generation.id;
        }
        Ok(&mut self.instance)
    }

    /// An instance already loaded with generation `generation`.
    pub fn loaded(
        instance: GuestInstance,
        generation: u64,
        monitor: Option<StoreMonitor>,
    ) -> Worker {
        Worker {
            instance,
            generation,
            monitor,
        }
    }

    /// A new instance over `store`, loaded with `generation`.
    pub fn build(
        generation: &Loaded,
        runtime: &GuestRuntime,
        store: &StoreFactory,
    ) -> Result<Worker> {
        let (state, monitor) = store();
        let mut instance = runtime.instantiate(state)?;
        load(&mut instance, generation)?;
        Ok(Worker::loaded(instance, generation.id, monitor))
    }

    /// The Redis monitor of this instance's store handle.
    pub fn monitor(&self) -> Option<&StoreMonitor> {
        self.monitor.as_ref()
    }
}

fn load(instance: &mut GuestInstance, generation: &Loaded) -> Result<()> {
    match instance.load(generation.files.as_ref().clone()) {
        Ok(info) if info.hash == generation.info.hash => Ok(()),
        Ok(info) => Err(anyhow!(
            "instance loaded hash {} for generation {}",
            info.hash,
            generation.info.hash
        )),
        Err(LoadError::Refused(p)) => Err(anyhow!(
            "an accepted bundle was refused on reload: {} problem(s)",
            p.len()
        )),
        Err(LoadError::Fault(e)) => Err(e),
    }
}

/// The pool.
pub struct Pool {
    idle: Mutex<VecDeque<Worker>>,
    /// Instances loaded with the newest generation, waiting to replace stale ones.
    prepared: Mutex<Vec<Worker>>,
    permits: Arc<Semaphore>,
    size: usize,
}

/// An instance held by one call; goes back to the pool when dropped.
pub struct Lease {
    pool: Arc<Pool>,
    worker: Option<Worker>,
    /// A stale instance this lease's worker replaced, dropped with the
    /// lease (on the blocking thread that used it, not the async one).
    replaced: Option<Worker>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// The leased worker.
    pub fn worker(&mut self) -> Result<&mut Worker> {
        self.worker
            .as_mut()
            .ok_or_else(|| anyhow!("pool lease holds no instance"))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut w) = self.worker.take() {
            let stale = self.pool.refresh(&mut w);
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.push_back(w);
            }
            drop(stale);
        }
        drop(self.replaced.take());
    }
}

impl Pool {
    /// `size` instances over stores from `store`.
    pub fn new(runtime: &GuestRuntime, size: usize, store: &StoreFactory) -> Result<Arc<Pool>> {
        let mut idle = VecDeque::with_capacity(size);
        for _ in 0..size {
            let (state, monitor) = store();
            idle.push_back(Worker {
                instance: runtime.instantiate(state)?,
                generation: 0,
                monitor,
            });
        }
        Ok(Arc::new(Pool {
            idle: Mutex::new(idle),
            prepared: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            size,
        }))
    }

    /// Number of instances.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Wait until every instance is idle (at shutdown).
    pub async fn drain(&self) {
        let _all = self.permits.acquire_many(self.size as u32).await;
    }

    /// Wait for an idle instance.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| anyhow!("the pool is closed"))?;
        // The idle instance with the newest bundle (the first of them):
        // a stale one is taken only when no up-to-date one is idle.
        let worker = {
            let mut idle = self
                .idle
                .lock()
                .map_err(|_| anyhow!("pool lock poisoned"))?;
            let newest = idle.iter().map(|w| w.generation).max().unwrap_or(0);
            let at = idle
                .iter()
                .position(|w| w.generation == newest)
                .unwrap_or(0);
            idle.remove(at)
        };
        match worker {
            Some(mut w) => {
                let replaced = self.refresh(&mut w);
                Ok(Lease {
                    pool: self.clone(),
                    worker: Some(w),
                    replaced,
                    _permit: permit,
                })
            }
            None => Err(anyhow!(
                "no idle instance under a permit (pool out of step)"
            )),
        }
    }

    /// Offer instances loaded with a new generation: they replace idle
    /// stale instances now, and busy ones when they come back. Instances
    /// prepared for an older generation are dropped.
    pub fn prepare(&self, workers: Vec<Worker>) {
        // Replaced instances are dropped after the locks are released.
        let mut old = Vec::new();
        {
            let Ok(mut prepared) = self.prepared.lock() else {
                return;
            };
            let newest = workers.iter().map(|w| w.generation).max().unwrap_or(0);
            let (keep, stale): (Vec<Worker>, Vec<Worker>) =
                prepared.drain(..).partition(|w| w.generation >= newest);
            *prepared = keep;
            old.extend(stale);
            prepared.extend(workers);
            if let Ok(mut idle) = self.idle.lock() {
                for w in idle.iter_mut() {
                    if let Some(i) = prepared.iter().position(|p| p.generation > w.generation) {
                        old.push(std::mem::replace(w, prepared.swap_remove(i)));
                    }
                }
            }
        }
        drop(old);
    }

    /// Swap a stale worker for a prepared newer one, if there is one
    /// (answers the stale one, to be dropped outside any lock).
    fn refresh(&self, w: &mut Worker) -> Option<Worker> {
        let mut prepared = self.prepared.lock().ok()?;
        let i = prepared.iter().position(|p| p.generation > w.generation)?;
        Some(std::mem::replace(w, prepared.swap_remove(i)))
    }
}
