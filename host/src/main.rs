//! `portcullis`: check a bundle, decide on requests, replay traffic.
//!
//! Exit codes: 0 allowed (or: every case passed, every line decided),
//! 1 not allowed (or: a case failed), 2 error (bad input, refused bundle,
//! engine fault).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use portcullis_engine::cases::Report;
use portcullis_engine::{Bundle, BundleInfo, BundleProblem, MemoryStore};
use portcullis_host::{GuestInstance, GuestRuntime, LoadError, RuntimeOptions, bundle_dir};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
  An observed event is the same shape with \"event\": \"auth_failure\" or \"auth_success\".
  Types and actions are named without the bundle namespace. Unknown or ill-typed
  fields are an error naming the field.

BUNDLE LAYOUT (a directory):
  portcullis.toml        manifest: [bundle], [lockout.*], [synthetic], [modules.*], [[escalation]]
  *.cedarschema          entities and actions; actions use `context: Portcullis::Context`
  *.cedar                policies, each with @id and optionally @outcome, @reason,
                         @escalate, @retry_after
  entities.json          static entities (roles, apps …)
  adequacy.json          EU adequacy list with its date (transfers)
  tests/**/*.yaml        cases: a request (or steps) and the expected outcome

EXIT CODES: 0 allowed / all cases passed, 1 not allowed / a case failed, 2 error.";

#[derive(Parser)]
#[command(name = "portcullis", version, about = "Policy engine for the security edge of CRM integrations", after_long_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
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
    },
    /// Pack a bundle directory into one JSON document (the Envoy plugin
    /// configuration, and what `serve` accepts): checked first, refused if
    /// any problem or failing case.
    Pack {
        /// Bundle directory.
        dir: PathBuf,
        /// Output file, or `-` for standard output.
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
    },
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
enum Backend {
    Guest(GuestInstance),
    Native(Option<Box<Bundle>>, MemoryStore),
}

impl Backend {
    fn new(cli: &Cli) -> Result<Backend> {
        Ok(match cli.engine {
            EngineKind::Native => Backend::Native(None, MemoryStore::new()),
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
                Backend::Guest(runtime.instantiate(Box::new(MemoryStore::new()))?)
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
                .map(|r| b.decide(r, store).to_json())
                .collect(),
            Backend::Native(None, _) => requests
                .iter()
                .map(|r| {
                    portcullis_engine::Decision::fault(
                        "no-bundle",
                        "no bundle is loaded".into(),
                        None,
                        r,
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
                    *store = MemoryStore::new();
                    let Some(b) = b else {
                        bail!("no bundle is loaded")
                    };
                    case.steps
                        .iter()
                        .map(|s| {
                            serde_json::to_value(b.decide(&s.request, store)).unwrap_or(Value::Null)
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
    match &cli.command {
        Command::Check { dir, decisions } => check(cli, dir, *decisions),
        Command::Decide { bundle, request } => decide(cli, bundle, request),
        Command::Replay {
            bundle,
            traffic,
            summary_only,
        } => replay(cli, bundle, traffic, *summary_only),
        Command::Pack { dir, output } => pack(cli, dir, output),
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

fn pack(cli: &Cli, dir: &Path, output: &Path) -> Result<u8> {
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
    let doc = portcullis_engine::bundle::Packed::new(&info, files);
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

fn decide(cli: &Cli, bundle: &Path, request: &Path) -> Result<u8> {
    let mut backend = Backend::new(cli)?;
    if load_or_report(cli, &mut backend, bundle)?.is_none() {
        return Ok(2);
    }
    let text = read_input(request)?;
    let decision = backend
        .decide_batch(&[text])
        .into_iter()
        .next()
        .unwrap_or_default();
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
    line
}

fn replay(cli: &Cli, bundle: &Path, traffic: &Path, summary_only: bool) -> Result<u8> {
    let mut backend = Backend::new(cli)?;
    if load_or_report(cli, &mut backend, bundle)?.is_none() {
        return Ok(2);
    }
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
        for ((line_no, _), d) in batch.iter().zip(backend.decide_batch(&requests)) {
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
        if batch.len() >= 256 {
            flush(&mut batch, &mut out, &mut summary, &mut errors)?;
        }
    }
    flush(&mut batch, &mut out, &mut summary, &mut errors)?;
    out.flush()?;
    drop(out);
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
