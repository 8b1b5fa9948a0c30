//! Shadow mode: a candidate bundle decides beside the live one, with its
//! own state, and what it would have decided differently is recorded; it
//! never enforces anything.
//!
//! Responsible for: loading the candidate (a directory or a packed file)
//! into its own guest instance and store, deciding every request the live
//! bundle decided (off the request path, in order of arrival, on one
//! thread), and recording each disagreement, a different outcome, as a
//! JSONL line (digests, ids, outcomes and policies: never the request) and
//! in `portcullis_shadow_disagreements_total{live_outcome,shadow_outcome}`.
//! Not responsible for the live decision (returned unchanged) nor for
//! installing the candidate (that is `POST /v1/bundle`).
//!
//! Requests arrive faster than one instance can follow only under heavy
//! load: then the oldest are not shadowed (counted in
//! `portcullis_shadow_skipped_total`), so shadowing never slows the service.

use crate::{GuestRuntime, bundle_dir};
use anyhow::{Context, Result};
use portcullis_engine::MemoryStore;
use portcullis_engine::bundle::Packed;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

/// Requests waiting to be shadowed before new ones are skipped.
const QUEUE: usize = 4096;

/// `portcullis serve` flags for shadow mode.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShadowArgs {
    /// A candidate bundle (directory or packed file) to evaluate beside the
    /// live one, with its own state, without enforcing it.
    #[arg(long, value_name = "BUNDLE")]
    pub shadow: Option<PathBuf>,
    /// Where disagreements are written (JSONL) [default: shadow-disagreements.jsonl].
    #[arg(long, value_name = "FILE", requires = "shadow")]
    pub shadow_log: Option<PathBuf>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcomes {
    live_outcome: String,
    shadow_outcome: String,
}

/// The shadow evaluator.
pub struct Shadow {
    tx: SyncSender<(String, String)>,
    skipped: Counter,
}

impl Shadow {
    /// Load the candidate, register its metrics and start its thread.
    pub fn start(
        args: &ShadowArgs,
        runtime: &GuestRuntime,
        registry: &mut Registry,
    ) -> Result<Option<Shadow>> {
        let Some(path) = &args.shadow else {
            return Ok(None);
        };
        let files = read_candidate(path)?;
        let mut instance = runtime
            .instantiate(Box::new(MemoryStore::new()))
            .context("cannot start the shadow instance")?;
        let info = instance.load(files).map_err(|e| match e {
            crate::LoadError::Refused(problems) => anyhow::anyhow!(
                "shadow bundle `{}` refused: {}",
                path.display(),
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            crate::LoadError::Fault(e) => e.context("cannot load the shadow bundle"),
        })?;
        let log_path = args
            .shadow_log
            .clone()
            .unwrap_or_else(|| PathBuf::from("shadow-disagreements.jsonl"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open the shadow log `{}`", log_path.display()))?;
        let disagreements = Family::<Outcomes, Counter>::default();
        registry.register(
            "portcullis_shadow_disagreements",
            "Decisions where the shadow bundle's outcome differs from the live one, by both outcomes",
            disagreements.clone(),
        );
        let skipped = Counter::default();
        registry.register(
            "portcullis_shadow_skipped",
            "Decisions not shadowed because the shadow fell behind",
            skipped.clone(),
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let shadow_hash = info.hash.clone();
        std::thread::Builder::new()
            .name("portcullis-shadow".into())
            .spawn(move || run(rx, &mut instance, log, &shadow_hash, &disagreements))
            .context("cannot start the shadow thread")?;
        tracing::info!(bundle = %path.display(), hash = %info.hash, log = %log_path.display(), "shadow bundle loaded");
        Ok(Some(Shadow { tx, skipped }))
    }

    /// The hook the service calls after each live decision. Never blocks.
    pub fn observe(&self, request: &str, live_decision: &str) {
        match self
            .tx
            .try_send((request.to_string(), live_decision.to_string()))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.skipped.inc();
            }
        }
    }
}

fn read_candidate(path: &Path) -> Result<Vec<(String, String)>> {
    if path.is_dir() {
        let mut files = bundle_dir::read(path)?;
        // A signature beside the files is the service's business, not the engine's.
        files.retain(|(n, _)| n != "bundle.sig");
        Ok(files)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the shadow bundle `{}`", path.display()))?;
        let packed: Packed = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|mut v| {
                // A signed packed file carries its signature beside the files.
                if let Some(o) = v.as_object_mut() {
                    o.retain(|k, _| {
                        ["format", "name", "version", "hash", "files"].contains(&k.as_str())
                    });
                }
                serde_json::from_value(v).ok()
            })
            .with_context(|| {
                format!(
                    "`{}` is not a bundle directory or packed bundle",
                    path.display()
                )
            })?;
        Ok(packed.files.into_iter().collect())
    }
}

fn run(
    rx: Receiver<(String, String)>,
    instance: &mut crate::GuestInstance,
    mut log: std::fs::File,
    shadow_hash: &str,
    disagreements: &Family<Outcomes, Counter>,
) {
    while let Ok((request, live)) = rx.recv() {
        let shadow = instance.decide(&request);
        let (Ok(l), Ok(s)) = (
            serde_json::from_str::<Value>(&live),
            serde_json::from_str::<Value>(&shadow),
        ) else {
            continue;
        };
        let (lo, so) = (
            l["outcome"].as_str().unwrap_or("?"),
            s["outcome"].as_str().unwrap_or("?"),
        );
        if lo == so {
            continue;
        }
        disagreements
            .get_or_create(&Outcomes {
                live_outcome: lo.to_string(),
                shadow_outcome: so.to_string(),
            })
            .inc();
        let line = json!({
            "time": l["audit"]["time"],
            "request_digest": l["audit"]["request_digest"],
            "principal": l["audit"]["principal"],
            "action": l["audit"]["action"],
            "resource": l["audit"]["resource"],
            "event": l["audit"]["event"],
            "live": {"outcome": lo, "policies": l["policies"], "reasons": l["reasons"], "pathway": l["pathway"], "bundle": l["audit"]["bundle"]},
            "shadow": {"outcome": so, "policies": s["policies"], "reasons": s["reasons"], "pathway": s["pathway"], "bundle": s["audit"]["bundle"], "hash": shadow_hash},
        });
        if writeln!(log, "{line}").and_then(|_| log.flush()).is_err() {
            tracing::error!("cannot write the shadow log");
        }
    }
}
