//! `portcullis`: check a bundle, decide on requests, replay traffic.
//!
//! Exit codes: 0 allowed (or: every case passed, every line decided),
//! 1 not allowed (or: a case failed), 2 error (bad input, refused bundle,
//! engine fault).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use portcullis_engine::cases::Report;
use portcullis_engine::{Bundle, BundleInfo, BundleProblem, MemoryStore, Store};
use portcullis_host::{GuestInstance, GuestRuntime, LoadError, RuntimeOptions, bundle_dir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod diff;
mod flows;
mod revoke;

const AFTER_HELP: &str = "\
REQUEST FORMAT (JSON, the same in every host):
  {\"principal\": {\"type\": \"User\", \"id\": \"alice@example.com\"},
   \"action\": \"login\", \"resource\": {\"type\": \"App\", \"id\": \"sales-cloud\"},
   \"context\": {\"ip\": \"203.0.113.7\", \"module\": \"sales_cloud\", \"region\": \"eu-central\",
               \"destination_region\": \"us-east\", \"token\": \"<JWT>\",
               \"mtls\": {\"verified\": true, \"san\": \"spiffe://crm/etl\"},
               \"synthetic\": {\"marker\": true, \"provenance\": \"<JWT>\"},
               \"record\": {\"Synthetic__c\": true}, \"fields\": [\"Email\"], \"legal_basis\": \"scc\", \"recipient\": \"acme-analytics\", \"flow\": \"nightly-sync\"},
   \"body\": \"optional text\", \"now\": \"2026-11-22T10:00:00Z\"}
  The body may also be \"body_base64\" (bytes) or \"body_chunks\" (a streamed body: a list
  of text strings or {\"base64\": ...}); DLP scans it and findings reach context.dlp.
  An observed event is the same shape with \"event\": \"auth_failure\" or \"auth_success\".
  Behind proxies, give \"peer\" (the connection's address) and \"forwarded_for\" (the
  X-Forwarded-For header) instead of \"ip\": the engine believes only hops written by the
  manifest's [network] trusted_proxies. A key may appear once in an object; JSON nests
  at most 64 levels; a request is at most 4 MiB (README.md \"Limits\").
  A webhook delivery: principal {\"type\": \"EventSource\", \"id\": SOURCE}, action \"deliver\",
  \"context\": {\"webhook\": {\"kind\": \"outbound_message|platform_event|cdc\", \"signature\": \"sha256=<hex>\"}},
  and the raw delivery as \"body\" (README.md \"Webhook deliveries\").
  Types and actions are named without the bundle namespace. Unknown or ill-typed
  fields are an error naming the field.

BUNDLE LAYOUT (a directory):
  portcullis.toml        manifest: [bundle], [lockout.*], [synthetic], [modules.*], [[escalation]]
  *.cedarschema          entities and actions; actions use `context: Portcullis::Context`
  *.cedar                policies, each with @id and optionally @outcome, @reason,
                         @escalate, @retry_after
  entities.json          static entities (roles, apps …)
  adequacy.json          EU adequacy list with its date (transfers)
  flows.yaml             data-flow inventory (`flows check`)
  tests/**/*.yaml        cases: a request (or steps) and the expected outcome

EXIT CODES: 0 allowed / all cases passed, 1 not allowed / a case failed, 2 error.";

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Policy engine for the security edge of CRM integrations", after_long_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Output format (`html`: `flows check` only).
    #[arg(long, global = true, default_value = "text", value_parser = flows::format_parser())]
    format: Format,
    /// Where decisions are made: the wasm guest (as in production) or the native engine.
    #[arg(long, global = true, value_enum, default_value_t = EngineKind::Guest)]
    engine: EngineKind,
    /// Cache directory for the precompiled guest [default: $PORTCULLIS_CACHE_DIR or ~/.cache/portcullis].
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// Longest a single guest call may run, in milliseconds, before it is a deny.
    #[arg(long, global = true, default_value_t = 2000)]
    timeout_ms: u64,
    /// Most memory the guest may use, in MiB.
    #[arg(long, global = true, default_value_t = 256)]
    max_memory_mib: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and strictly validate a bundle, then run every case it holds.
    Check {
        /// Bundle directory.
        dir: PathBuf,
        /// With --format json: also every decision of every case, in order
        /// (what the bindings compare with, byte for byte).
        #[arg(long)]
        decisions: bool,
    },
    /// Decide on one request and print the decision.
    Decide {
        /// Bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// Request JSON file, or `-` for standard input.
        #[arg(default_value = "-")]
        request: PathBuf,
        #[command(flatten)]
        store: portcullis_host::redis_store::StoreArgs,
    },
    /// Decide on every line of a JSONL stream of requests and events, state carried between lines.
    Replay {
        /// Bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// JSONL file (one request or event per line), or `-` for standard input.
        traffic: PathBuf,
        /// Print only the per-pathway summary, not each decision.
        #[arg(long)]
        summary_only: bool,
        #[command(flatten)]
        store: portcullis_host::redis_store::StoreArgs,
        #[command(flatten)]
        audit: portcullis_host::audit::AuditArgs,
    },
    /// Check the hash-chained audit log (`replay --audit-log`, `serve`).
    #[command(subcommand)]
    Audit(portcullis_host::audit::AuditCommand),
    /// Pack a bundle directory into one JSON document (the Envoy plugin
    /// configuration, and what `serve` accepts): checked first, refused if
    /// any problem or failing case.
    Pack {
        /// Bundle directory.
        dir: PathBuf,
        /// Output file, or `-` for standard output.
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
        /// Sign the packed bundle with this private key (PKCS#8 PEM, from `keygen`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
    },
    /// Run the decision service: HTTP JSON API over a pool of guest
    /// instances, hot-swapped signed bundles, Prometheus metrics.
    Serve(Box<portcullis_host::serve::ServeArgs>),
    /// Ask a running service to serve its previous bundle again.
    Rollback(portcullis_host::serve::RollbackArgs),
    /// Make an Ed25519 key pair for signing bundles: PREFIX.key (PKCS#8
    /// PEM, mode 0600) and PREFIX.pub (SPKI PEM).
    Keygen {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a bundle's content hash: writes DIR/bundle.sig, or adds the
    /// signature to a packed file.
    Sign {
        /// Private key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Bundle directory or packed bundle file.
        target: PathBuf,
    },
    /// Change review: replay a JSONL trace through two bundles (each with
    /// its own state) and report every decision that changes, grouped by
    /// outcome and policy. Exit 1 when a change is not covered by the new
    /// bundle's cases (a case expecting the new outcome from each of its
    /// determining policies), 2 on errors. Audit logs keep digests only and
    /// are refused.
    Diff {
        /// The bundle now in force (directory).
        #[arg(long)]
        from: PathBuf,
        /// The candidate bundle (directory).
        #[arg(long)]
        to: PathBuf,
        /// JSONL trace (one request or event per line), or `-` for standard input.
        traffic: PathBuf,
    },
    /// Data-flow inventory and control evidence: `flows check BUNDLE`.
    #[command(subcommand)]
    Flows(flows::FlowsCommand),
    /// Incident playbook: a new bundle (from the current one) that denies a
    /// model, a principal or tokens signed by a key, with cases proving it.
    Revoke(revoke::RevokeArgs),
    /// Print what a bundle is: name, version, namespace, hash, policy ids.
    Describe {
        /// Bundle directory.
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    Guest,
    Native,
}

/// The guest or the native engine, behind one face.
#[allow(
    clippy::large_enum_variant,
    reason = "one backend per process; the store is boxed"
)]
enum Backend {
    Guest(GuestInstance),
    Native(Option<Box<Bundle>>, Box<dyn Store + Send>),
}

impl Backend {
    fn new(cli: &Cli) -> Result<Backend> {
        Backend::with_store(cli, Box::new(MemoryStore::new()))
    }

    fn with_store(cli: &Cli, state: Box<dyn Store + Send>) -> Result<Backend> {
        Ok(match cli.engine {
            EngineKind::Native => Backend::Native(None, state),
            EngineKind::Guest => {
                let mut options = RuntimeOptions {
                    call_timeout: Duration::from_millis(cli.timeout_ms),
                    max_memory: cli.max_memory_mib * 1024 * 1024,
                    ..RuntimeOptions::default()
                };
                if cli.cache_dir.is_some() {
                    options.cache_dir = cli.cache_dir.clone();
                }
                let runtime = GuestRuntime::new(options)?;
                Backend::Guest(runtime.instantiate(state)?)
            }
        })
    }

    fn load(
        &mut self,
        files: Vec<(String, String)>,
    ) -> Result<std::result::Result<BundleInfo, Vec<BundleProblem>>> {
        match self {
            Backend::Guest(g) => match g.load(files) {
                Ok(info) => Ok(Ok(info)),
                Err(LoadError::Refused(p)) => Ok(Err(p)),
                Err(LoadError::Fault(e)) => Err(e),
            },
            Backend::Native(slot, _) => match Bundle::load(&files) {
                Ok(b) => {
                    let info = b.info().clone();
                    *slot = Some(Box::new(b));
                    Ok(Ok(info))
                }
                Err(p) => Ok(Err(p)),
            },
        }
    }

    fn decide_batch(&mut self, requests: &[String]) -> Vec<String> {
        match self {
            Backend::Guest(g) => g.decide_batch(requests),
            Backend::Native(Some(b), store) => requests
                .iter()
                .map(|r| b.decide(r, store.as_mut()).to_json())
                .collect(),
            Backend::Native(None, _) => requests
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
                .collect(),
        }
    }

    /// Every case's decisions, in order, each case from empty state.
    fn case_decisions(&mut self) -> Result<Vec<Value>> {
        let plan = match self {
            Backend::Guest(g) => g.case_plan()?,
            Backend::Native(Some(b), _) => b.plan(),
            Backend::Native(None, _) => bail!("no bundle is loaded"),
        };
        let mut out = Vec::new();
        for case in plan {
            let decisions: Vec<Value> = match self {
                Backend::Guest(g) => {
                    g.replace_store(Box::new(MemoryStore::new()))?;
                    case.steps
                        .iter()
                        .map(|s| g.decide(&s.request))
                        .map(|d| serde_json::from_str(&d).unwrap_or(Value::Null))
                        .collect()
                }
                Backend::Native(b, store) => {
                    *store = Box::new(MemoryStore::new());
                    let Some(b) = b else {
                        bail!("no bundle is loaded")
                    };
                    case.steps
                        .iter()
                        .map(|s| {
                            serde_json::to_value(b.decide(&s.request, store.as_mut()))
                                .unwrap_or(Value::Null)
                        })
                        .collect()
                }
            };
            out.push(
                serde_json::json!({ "file": case.file, "name": case.name, "decisions": decisions }),
            );
        }
        Ok(out)
    }

    fn run_cases(&mut self) -> Result<Report> {
        match self {
            Backend::Guest(g) => g.run_cases(),
            Backend::Native(Some(b), _) => Ok(b.run_cases()),
            Backend::Native(None, _) => bail!("no bundle is loaded"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<u8> {
    if flows::html_requested() && !matches!(cli.command, Command::Flows(_)) {
        bail!("--format html is only for `flows check`");
    }
    match &cli.command {
        Command::Check { dir, decisions } => check(cli, dir, *decisions),
        Command::Decide {
            bundle,
            request,
            store,
        } => decide(cli, bundle, request, store),
        Command::Replay {
            bundle,
            traffic,
            summary_only,
            store,
            audit,
        } => replay(cli, bundle, traffic, *summary_only, store, audit),
        Command::Audit(command) => {
            portcullis_host::audit::run_cli(command, cli.format == Format::Json)
        }
        Command::Pack { dir, output, sign } => pack(cli, dir, output, sign.as_deref()),
        Command::Serve(args) => portcullis_host::serve::run(
            args.as_ref().clone(),
            RuntimeOptions {
                call_timeout: Duration::from_millis(cli.timeout_ms),
                max_memory: cli.max_memory_mib * 1024 * 1024,
                cache_dir: cli
                    .cache_dir
                    .clone()
                    .or_else(|| RuntimeOptions::default().cache_dir),
            },
        ),
        Command::Rollback(args) => portcullis_host::serve::rollback(args),
        Command::Keygen { out } => {
            let (private, public, id) = portcullis_host::signing::keygen(out)?;
            println!(
                "key {id}: private {} (keep secret), public {}",
                private.display(),
                public.display()
            );
            Ok(0)
        }
        Command::Sign { key, target } => {
            println!("{}", portcullis_host::signing::sign_target(key, target)?);
            Ok(0)
        }
        Command::Diff { from, to, traffic } => diff::run(cli, from, to, traffic),
        Command::Flows(command) => flows::run(cli, command),
        Command::Revoke(args) => revoke::run(cli, args),
        Command::Describe { dir } => {
            let mut backend = Backend::new(cli)?;
            let info = load_or_report(cli, &mut backend, dir)?;
            match info {
                Some(info) => {
                    println!("{}", serde_json::to_string_pretty(&info)?);
                    Ok(0)
                }
                None => Ok(2),
            }
        }
    }
}

/// Load a bundle; on problems print them and answer `None`.
fn load_or_report(cli: &Cli, backend: &mut Backend, dir: &Path) -> Result<Option<BundleInfo>> {
    let files = bundle_dir::read(dir)?;
    match backend.load(files)? {
        Ok(info) => Ok(Some(info)),
        Err(problems) => {
            match cli.format {
                Format::Json => println!(
                    "{}",
                    serde_json::json!({ "accepted": false, "problems": problems })
                ),
                Format::Text => {
                    eprintln!(
                        "bundle `{}` refused: {} problem(s)",
                        dir.display(),
                        problems.len()
                    );
                    for p in &problems {
                        eprintln!("{p}");
                    }
                }
            }
            Ok(None)
        }
    }
}

fn check(cli: &Cli, dir: &Path, with_decisions: bool) -> Result<u8> {
    let mut backend = Backend::new(cli)?;
    let Some(info) = load_or_report(cli, &mut backend, dir)? else {
        return Ok(2);
    };
    let report = backend.run_cases()?;
    match cli.format {
        Format::Json => {
            let mut v = serde_json::json!({ "accepted": report.failed == 0, "bundle": info, "cases": report });
            if with_decisions {
                v["decisions"] = Value::Array(backend.case_decisions()?);
            }
            println!("{v}");
        }
        Format::Text => {
            println!(
                "bundle {} {} ({} policies, hash {}): parsed and validated",
                info.name,
                info.version,
                info.policy_ids.len(),
                info.hash.get(..16).unwrap_or("")
            );
            for c in &report.cases {
                println!(
                    "{} {} :: {}",
                    if c.passed { "PASS" } else { "FAIL" },
                    c.file,
                    c.name
                );
                for f in &c.failures {
                    println!("     step {}: {}", f.step, f.message);
                }
            }
            println!("cases: {} passed, {} failed", report.passed, report.failed);
        }
    }
    Ok(if report.failed == 0 { 0 } else { 1 })
}

fn pack(cli: &Cli, dir: &Path, output: &Path, sign: Option<&Path>) -> Result<u8> {
    let mut backend = Backend::new(cli)?;
    let files = bundle_dir::read(dir)?;
    let Some(info) = load_or_report(cli, &mut backend, dir)? else {
        return Ok(2);
    };
    let report = backend.run_cases()?;
    if report.failed > 0 {
        for c in report.cases.iter().filter(|c| !c.passed) {
            for f in &c.failures {
                eprintln!(
                    "FAIL {} :: {} step {}: {}",
                    c.file, c.name, f.step, f.message
                );
            }
        }
        eprintln!("not packed: {} case(s) fail", report.failed);
        return Ok(1);
    }
    let mut doc = portcullis_engine::bundle::Packed::new(&info, files);
    if let Some(key) = sign {
        let key = portcullis_host::signing::read_signing_key(key)?;
        doc.signature = Some(portcullis_host::signing::sign_hash(&key, &info.hash));
    }
    let text = serde_json::to_string(&doc)?;
    if output == Path::new("-") {
        println!("{text}");
    } else {
        std::fs::write(output, text + "\n")
            .with_context(|| format!("cannot write `{}`", output.display()))?;
        eprintln!(
            "packed {} {} ({} files, hash {}) into {}",
            info.name,
            info.version,
            doc.files.len(),
            info.hash,
            output.display()
        );
    }
    Ok(0)
}

fn read_input(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the request from standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))
    }
}

fn decide(
    cli: &Cli,
    bundle: &Path,
    request: &Path,
    store: &portcullis_host::redis_store::StoreArgs,
) -> Result<u8> {
    let (state, monitor) = store.open()?;
    let mut backend = Backend::with_store(cli, state)?;
    if load_or_report(cli, &mut backend, bundle)?.is_none() {
        return Ok(2);
    }
    let text = read_input(request)?;
    let decision = backend
        .decide_batch(&[text])
        .into_iter()
        .next()
        .unwrap_or_default();
    let decision = match &monitor {
        Some(m) => m.annotate(decision),
        None => decision,
    };
    let v: Value =
        serde_json::from_str(&decision).context("the engine returned a malformed decision")?;
    match cli.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Format::Text => println!("{}", render(&v)),
    }
    if !v["error"].is_null() {
        if cli.format == Format::Text {
            eprintln!(
                "error: {}",
                v["error"]["message"].as_str().unwrap_or("engine fault")
            );
        }
        return Ok(2);
    }
    Ok(if v["allowed"].as_bool() == Some(true) {
        0
    } else {
        1
    })
}

/// One decision as a line of text.
fn render(v: &Value) -> String {
    let list = |k: &str| {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut line = format!(
        "{:<9} {}",
        v["outcome"].as_str().unwrap_or("?"),
        v["audit"]["principal"].as_str().unwrap_or("")
    );
    if let Some(a) = v["audit"]["action"].as_str() {
        line.push_str(&format!(" {a}"));
    }
    if let Some(e) = v["audit"]["event"].as_str() {
        line.push_str(&format!(" [{e}]"));
    }
    line.push_str(&format!(
        " | pathway {}",
        v["pathway"].as_str().unwrap_or("?")
    ));
    let policies = list("policies");
    if !policies.is_empty() {
        line.push_str(&format!(" | policies {policies}"));
    }
    line.push_str(&format!(" | reason {}", list("reasons")));
    if let Some(e) = v["escalation"].as_str() {
        line.push_str(&format!(" | escalate {e}"));
    }
    if let Some(r) = v["retry_after"].as_u64() {
        line.push_str(&format!(" | retry after {r}s"));
    }
    if let Some(h) = v["store"]["health"].as_str() {
        let fallback = v["store"]["fallback"].as_str().unwrap_or("");
        line.push_str(&format!(" | store {h} ({fallback})"));
    }
    line
}

fn replay(
    cli: &Cli,
    bundle: &Path,
    traffic: &Path,
    summary_only: bool,
    store: &portcullis_host::redis_store::StoreArgs,
    audit: &portcullis_host::audit::AuditArgs,
) -> Result<u8> {
    let (state, monitor) = store.open()?;
    // With a shared store, decide line by line (and answer each at once), so
    // processes sharing it interleave as their input does.
    let batch_size = if monitor.is_some() { 1 } else { 256 };
    let mut backend = Backend::with_store(cli, state)?;
    let Some(info) = load_or_report(cli, &mut backend, bundle)? else {
        return Ok(2);
    };
    let mut audit_log = audit.open()?;
    let reader: Box<dyn BufRead> = if traffic == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(traffic)
                .with_context(|| format!("cannot open `{}`", traffic.display()))?,
        ))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // pathway -> outcome -> count
    let mut summary: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut errors = 0u64;
    let mut batch: Vec<(usize, String)> = Vec::new();
    let mut flush = |batch: &mut Vec<(usize, String)>,
                     out: &mut dyn Write,
                     summary: &mut BTreeMap<String, BTreeMap<String, u64>>,
                     errors: &mut u64|
     -> Result<()> {
        let requests: Vec<String> = batch.iter().map(|(_, r)| r.clone()).collect();
        for ((line_no, request), d) in batch.iter().zip(backend.decide_batch(&requests)) {
            let d = match &monitor {
                Some(m) => m.annotate(d),
                None => d,
            };
            if let Some(log) = audit_log.as_mut() {
                log.append_decision(request, &d, &info.hash)?;
            }
            let v: Value =
                serde_json::from_str(&d).context("the engine returned a malformed decision")?;
            let pathway = v["pathway"].as_str().unwrap_or("?").to_string();
            let outcome = v["outcome"].as_str().unwrap_or("?").to_string();
            *summary
                .entry(pathway)
                .or_default()
                .entry(outcome)
                .or_default() += 1;
            if !v["error"].is_null() {
                *errors += 1;
            }
            if !summary_only {
                match cli.format {
                    Format::Json => writeln!(out, "{d}")?,
                    Format::Text => writeln!(out, "{line_no:>6}: {}", render(&v))?,
                }
            }
        }
        batch.clear();
        out.flush()?;
        Ok(())
    };
    for (i, line) in reader.lines().enumerate() {
        let line =
            line.with_context(|| format!("cannot read line {} of `{}`", i + 1, traffic.display()))?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        batch.push((i + 1, line));
        if batch.len() >= batch_size {
            flush(&mut batch, &mut out, &mut summary, &mut errors)?;
        }
    }
    flush(&mut batch, &mut out, &mut summary, &mut errors)?;
    out.flush()?;
    drop(out);
    if let Some(log) = audit_log.as_mut() {
        log.flush()?;
    }
    match cli.format {
        Format::Json => eprintln!(
            "{}",
            serde_json::json!({ "summary": summary, "errors": errors })
        ),
        Format::Text => {
            println!("summary (pathway: outcome count …):");
            for (pathway, outcomes) in &summary {
                let parts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
                println!("  {pathway}: {}", parts.join(", "));
            }
            if errors > 0 {
                println!("  lines with errors: {errors}");
            }
        }
    }
    Ok(if errors > 0 { 2 } else { 0 })
}
