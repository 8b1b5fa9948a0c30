//! `portcullis flows check`: every inventoried data flow through the
//! bundle's own policies, and each control measure with its evidence.
//!
//! Responsible for: reading the bundle (a directory or a packed file),
//! deciding each flow's request through the guest (or the native engine
//! with `--engine native`), each from empty state, running the cases (so
//! control evidence says whether it passes), and rendering the engine's
//! [`FlowReport`] as a text table, JSON, or one self-contained HTML page
//! (inline CSS, no script, no external asset). Not responsible for any
//! verdict: the engine builds the requests and reads the decisions
//! (`portcullis_engine::flows`).

use super::{Cli, EngineKind, Format};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use portcullis_engine::cases::Report;
use portcullis_engine::flows::{FlowReport, FlowVerdict};
use portcullis_engine::{Bundle, BundleProblem, MemoryStore};
use portcullis_host::{GuestInstance, GuestRuntime, LoadError, RuntimeOptions, bundle_dir};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `portcullis flows …`
#[derive(Subcommand)]
pub enum FlowsCommand {
    /// Evaluate every flow of the bundle's inventory (flows.yaml) against
    /// its transfer policies and adequacy data; list each NIS2 / AI Act
    /// measure with its evidence. Exit 0: every flow has a legal basis;
    /// 1: a flow has none; 2: error. `--format text|json|html`.
    Check(CheckArgs),
}

/// `portcullis flows check`
#[derive(Args)]
pub struct CheckArgs {
    /// Bundle directory, or a packed bundle file.
    pub bundle: PathBuf,
    /// Write the report here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The time of the check (RFC 3339, or a date YYYY-MM-DD) [default: now].
    #[arg(long)]
    pub now: Option<String>,
}

/// Run `portcullis flows …`.
pub fn run(cli: &Cli, command: &FlowsCommand) -> Result<u8> {
    match command {
        FlowsCommand::Check(args) => check(cli, args),
    }
}

fn check(cli: &Cli, args: &CheckArgs) -> Result<u8> {
    let files = read_bundle(&args.bundle)?;
    let native = match Bundle::load(&files) {
        Ok(b) => b,
        Err(problems) => {
            report_problems(&args.bundle, &problems);
            return Ok(2);
        }
    };
    let (now, today) = now_and_today(args.now.as_deref())?;
    let mut decider = Decider::new(cli, files)?;
    let requests = native.flow_requests(&now);
    let mut decisions = Vec::with_capacity(requests.len());
    for (_, request) in &requests {
        decisions.push(decider.decide_fresh(request)?);
    }
    let cases = decider.run_cases()?;
    let report = native.flow_report(&decisions, &today, Some(&cases));
    let text = match cli.format {
        _ if html_requested() => html(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        _ => text(&report),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            eprintln!(
                "flows check: {} flow(s), {} without a legal basis; report in {}",
                report.summary.flows,
                report.summary.without_basis,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    if args.output.is_some() || cli.format == Format::Json || html_requested() {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(report.exit_code())
}

/// A bundle directory's files, or a packed bundle's.
pub fn read_bundle(path: &Path) -> Result<Vec<(String, String)>> {
    if path.is_dir() {
        return bundle_dir::read(path);
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the bundle `{}`", path.display()))?;
    let packed: portcullis_engine::bundle::Packed =
        serde_json::from_str(&text).with_context(|| {
            format!(
                "`{}` is neither a bundle directory nor a packed bundle",
                path.display()
            )
        })?;
    Ok(packed.files.into_iter().collect())
}

/// Print a refused bundle's problems.
pub fn report_problems(path: &Path, problems: &[BundleProblem]) {
    eprintln!(
        "bundle `{}` refused: {} problem(s)",
        path.display(),
        problems.len()
    );
    for p in problems {
        eprintln!("{p}");
    }
}

/// `--now` as RFC 3339 and as a date; the host clock when absent.
pub fn now_and_today(now: Option<&str>) -> Result<(String, String)> {
    use time::format_description::well_known::Rfc3339;
    let t = match now {
        None => time::OffsetDateTime::now_utc(),
        Some(s) if s.len() == 10 => {
            time::OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339)
                .with_context(|| format!("`--now {s}` is not a date like 2026-11-23"))?
        }
        Some(s) => time::OffsetDateTime::parse(s, &Rfc3339)
            .with_context(|| format!("`--now {s}` is not an RFC 3339 time"))?,
    }
    .replace_nanosecond(0)
    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    .to_offset(time::UtcOffset::UTC);
    let rfc = t.format(&Rfc3339).context("cannot format the time")?;
    let today = rfc.get(..10).unwrap_or("").to_string();
    Ok((rfc, today))
}

/// Where decisions are made: the guest (as in production) or the native
/// engine; every request here starts from empty state.
pub enum Decider {
    /// The wasm guest in wasmtime.
    Guest(Box<GuestInstance>),
    /// The engine in-process.
    Native(Box<Bundle>),
}

impl Decider {
    /// Load `files` into the engine the command line chose.
    pub fn new(cli: &Cli, files: Vec<(String, String)>) -> Result<Decider> {
        Ok(match cli.engine {
            EngineKind::Native => match Bundle::load(&files) {
                Ok(b) => Decider::Native(Box::new(b)),
                Err(p) => bail!(
                    "the bundle is refused: {}",
                    p.first().map(|p| p.to_string()).unwrap_or_default()
                ),
            },
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
                let mut g = runtime.instantiate(Box::new(MemoryStore::new()))?;
                match g.load(files) {
                    Ok(_) => Decider::Guest(Box::new(g)),
                    Err(LoadError::Refused(p)) => bail!(
                        "the guest refused the bundle: {}",
                        p.first().map(|p| p.to_string()).unwrap_or_default()
                    ),
                    Err(LoadError::Fault(e)) => return Err(e),
                }
            }
        })
    }

    /// Decide one request from empty state.
    pub fn decide_fresh(&mut self, request: &str) -> Result<String> {
        Ok(match self {
            Decider::Guest(g) => {
                g.replace_store(Box::new(MemoryStore::new()))?;
                g.decide(request)
            }
            Decider::Native(b) => b.decide(request, &mut MemoryStore::new()).to_json(),
        })
    }

    /// Run the bundle's cases.
    pub fn run_cases(&mut self) -> Result<Report> {
        match self {
            Decider::Guest(g) => g.run_cases(),
            Decider::Native(b) => Ok(b.run_cases()),
        }
    }
}

// ------------------------------------------------------------------ text --

fn route(f: &FlowVerdict) -> String {
    format!(
        "{} → {}",
        f.origin_or(&f.flow.source.region),
        f.destination_or(&f.flow.destination.country)
    )
}

trait Codes {
    fn origin_or(&self, fallback: &str) -> String;
    fn destination_or(&self, fallback: &str) -> String;
}

impl Codes for FlowVerdict {
    fn origin_or(&self, fallback: &str) -> String {
        if self.origin.is_empty() {
            fallback.to_string()
        } else {
            self.origin.clone()
        }
    }
    fn destination_or(&self, fallback: &str) -> String {
        if self.destination.is_empty() {
            fallback.to_string()
        } else {
            self.destination.clone()
        }
    }
}

fn verdict_word(f: &FlowVerdict) -> &'static str {
    if f.error.is_some() {
        "ERROR"
    } else if f.allowed {
        "allowed"
    } else {
        "DENIED"
    }
}

fn basis_short(f: &FlowVerdict) -> String {
    if f.error.is_some() {
        return "undecided".into();
    }
    match f.basis.kind.as_str() {
        "none" => "NONE".into(),
        "not-a-transfer" => "no transfer".into(),
        "within-eea" => "within the EEA".into(),
        "outside-scope" => "outside Ch. V".into(),
        "adequacy" if f.basis.mechanism == "eu-us-dpf" => "Art. 45 (DPF)".into(),
        "adequacy" => "Art. 45 adequacy".into(),
        _ => format!("{} {}", f.basis.article, f.basis.mechanism),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The report as a text table and details.
pub fn text(r: &FlowReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "flows check: bundle {} {} (hash {}), for {}",
        r.bundle,
        r.version,
        r.hash.get(..16).unwrap_or(""),
        r.checked_on
    );
    let _ = writeln!(o, "adequacy data as of {}", r.adequacy_as_of);
    for w in &r.warnings {
        let _ = writeln!(o, "WARNING: {w}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<26} {:<9} {:<20} {:<8} {:<18} DROPPED",
        "FLOW", "ROUTE", "RECIPIENT", "VERDICT", "BASIS"
    );
    for f in &r.flows {
        let dropped = if f.dropped_fields.is_empty() {
            "-".to_string()
        } else {
            f.dropped_fields.join(",")
        };
        let _ = writeln!(
            o,
            "{:<26} {:<9} {:<20} {:<8} {:<18} {}",
            clip(&f.flow.id, 26),
            route(f),
            clip(&f.flow.recipient, 20),
            verdict_word(f),
            clip(&basis_short(f), 18),
            dropped
        );
    }
    let _ = writeln!(o);
    for f in &r.flows {
        let _ = writeln!(
            o,
            "{} ({}:{}) {} → {}, {}",
            f.flow.id,
            portcullis_engine::flows::FLOWS_FILE,
            f.line,
            f.flow.source.system,
            f.flow.destination.system,
            f.flow.purpose
        );
        let _ = writeln!(
            o,
            "  verdict:  {} ({}){}",
            verdict_word(f),
            f.outcome,
            if f.policies.is_empty() {
                String::new()
            } else {
                format!(" by {}", f.policies.join(", "))
            }
        );
        if !f.allowed && f.error.is_none() {
            let _ = writeln!(o, "  reasons:  {}", f.reasons.join("; "));
        }
        if let Some(e) = &f.error {
            let _ = writeln!(o, "  error:    {e}");
        }
        let mut basis = f.basis.label.clone();
        if !f.basis.article.is_empty() {
            basis = format!("{} {basis}", f.basis.article);
        }
        if !f.basis.reference.is_empty() {
            basis.push_str(&format!(" [{}]", f.basis.reference));
        }
        let _ = writeln!(o, "  basis:    {basis}");
        if let Some(m) = &f.missing {
            let _ = writeln!(o, "  MISSING:  {m}");
        }
        let _ = writeln!(
            o,
            "  declared: {}; sends {} ({}{})",
            f.flow.mechanism,
            f.flow.fields.join(", "),
            f.flow.data_categories.join(", "),
            if f.flow.synthetic {
                "; synthetic data"
            } else {
                ""
            }
        );
        if !f.dropped_fields.is_empty() {
            let _ = writeln!(
                o,
                "  minimisation ({}) drops: {}",
                f.flow.minimisation.as_deref().unwrap_or("?"),
                f.dropped_fields.join(", ")
            );
        }
        for n in &f.notes {
            let _ = writeln!(o, "  note:     {n}");
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "controls (NIS2 Art. 21(2), AI Act Art. 50):");
    for c in &r.controls {
        let _ = writeln!(
            o,
            "  {} {} {}: {}",
            c.framework,
            c.article,
            c.title,
            c.status.to_uppercase()
        );
        if !c.policies.is_empty() {
            let ids: Vec<&str> = c.policies.iter().map(|p| p.id.as_str()).collect();
            let _ = writeln!(o, "      policies: {}", ids.join(", "));
        }
        for case in &c.cases {
            let _ = writeln!(
                o,
                "      case: {} :: {}{}",
                case.file,
                case.name,
                match case.passed {
                    Some(true) => " (passes)",
                    Some(false) => " (FAILS)",
                    None => "",
                }
            );
        }
        if let Some(n) = &c.note {
            let _ = writeln!(o, "      note: {n}");
        }
    }
    let s = &r.summary;
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "summary: {} flows: {} allowed, {} denied, {} without a legal basis, {} with fields minimisation drops; controls: {} evidenced, {} without evidence",
        s.flows,
        s.allowed,
        s.denied,
        s.without_basis,
        s.with_dropped_fields,
        s.measures_evidenced,
        s.measures_without_evidence
    );
    o
}

// ------------------------------------------------------------------ html --

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem;color:#1d2327;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:2rem 0 .5rem}
.meta{color:#555;margin:0 0 1rem}
.warning{background:#fff4e5;border-left:4px solid #e67e00;padding:.6rem .9rem;margin:.5rem 0}
.summary{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.summary div{border:1px solid #ddd;border-radius:6px;padding:.5rem .9rem;min-width:7rem}
.summary b{display:block;font-size:1.3rem}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #e3e3e3;padding:.45rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f6f7;font-weight:600}
.tag{display:inline-block;border-radius:4px;padding:0 .4rem;font-weight:600}
.allowed{background:#e3f5e7;color:#146c2e}.denied{background:#fde8e8;color:#a4161a}
.nobasis{background:#a4161a;color:#fff}.error{background:#6c2e9c;color:#fff}
.evidenced{background:#e3f5e7;color:#146c2e}.noevidence,.failingevidence{background:#fde8e8;color:#a4161a}
.notapplicable{background:#eee;color:#555}.synthetic{background:#e8eefd;color:#1f3f99}
.small{color:#555;font-size:.85rem}code{font-size:.85rem}
ul{margin:.2rem 0;padding-left:1.1rem}
";

/// The report as one self-contained HTML page.
pub fn html(r: &FlowReport) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Data flows and controls: {} {}</title><style>{CSS}</style></head><body>\n",
        esc(&r.bundle),
        esc(&r.version)
    );
    let _ = writeln!(
        o,
        "<h1>Data flows and controls</h1><p class=\"meta\">Bundle <b>{}</b> {} \
         (hash <code>{}</code>), checked for {}. Adequacy data as of <b>{}</b>: {}</p>",
        esc(&r.bundle),
        esc(&r.version),
        esc(r.hash.get(..16).unwrap_or("")),
        esc(&r.checked_on),
        esc(&r.adequacy_as_of),
        esc(&r.adequacy_source),
    );
    for w in &r.warnings {
        let _ = writeln!(
            o,
            "<div class=\"warning\" role=\"alert\">Warning: {}</div>",
            esc(w)
        );
    }
    let s = &r.summary;
    let _ = writeln!(
        o,
        "<div class=\"summary\" id=\"summary\"><div><b>{}</b>flows</div><div><b>{}</b>allowed</div>\
         <div><b>{}</b>denied</div><div><b>{}</b>without a legal basis</div>\
         <div><b>{}</b>with fields dropped</div><div><b>{}</b>measures evidenced</div>\
         <div><b>{}</b>measures without evidence</div></div>",
        s.flows,
        s.allowed,
        s.denied,
        s.without_basis,
        s.with_dropped_fields,
        s.measures_evidenced,
        s.measures_without_evidence
    );
    o.push_str(
        "<h2>Flows</h2><table id=\"flows\"><thead><tr><th>Flow</th><th>Route</th>\
         <th>Recipient</th><th>Data</th><th>Verdict</th><th>Legal basis</th>\
         <th>Minimisation drops</th></tr></thead><tbody>\n",
    );
    for f in &r.flows {
        let verdict = if f.error.is_some() {
            "<span class=\"tag error\">error</span>".to_string()
        } else if f.allowed {
            "<span class=\"tag allowed\">allowed</span>".to_string()
        } else {
            format!(
                "<span class=\"tag denied\">denied</span><div class=\"small\">{}</div>",
                esc(&f.reasons.join("; "))
            )
        };
        let mut basis = String::new();
        if f.has_basis {
            if !f.basis.article.is_empty() {
                let _ = write!(basis, "<b>{}</b> ", esc(&f.basis.article));
            }
            basis.push_str(&esc(&f.basis.label));
            if !f.basis.reference.is_empty() {
                let _ = write!(
                    basis,
                    "<div class=\"small\">{}</div>",
                    esc(&f.basis.reference)
                );
            }
        } else {
            let _ = write!(
                basis,
                "<span class=\"tag nobasis\">no legal basis</span><div class=\"small\">Missing: {}</div>",
                esc(f.missing.as_deref().unwrap_or(""))
            );
        }
        if !f.notes.is_empty() {
            basis.push_str("<ul class=\"small\">");
            for n in &f.notes {
                let _ = write!(basis, "<li>{}</li>", esc(n));
            }
            basis.push_str("</ul>");
        }
        let dropped = if f.dropped_fields.is_empty() {
            "—".to_string()
        } else {
            format!(
                "{}<div class=\"small\">rule <code>{}</code></div>",
                esc(&f.dropped_fields.join(", ")),
                esc(f.flow.minimisation.as_deref().unwrap_or(""))
            )
        };
        let _ = writeln!(
            o,
            "<tr class=\"flow\" id=\"flow-{id}\" data-flow=\"{id}\" data-verdict=\"{v}\" data-basis=\"{b}\" data-mechanism=\"{m}\">\
             <td><b>{id}</b><div class=\"small\">{desc}</div><div class=\"small\">{src} → {dst}</div></td>\
             <td>{route}<div class=\"small\">{sr} → {dr}</div></td><td>{rec}</td>\
             <td>{cats}{synth}<div class=\"small\">{purpose}</div><div class=\"small\">declared: {decl}</div></td>\
             <td>{verdict}</td><td>{basis}</td><td>{dropped}</td></tr>",
            id = esc(&f.flow.id),
            v = if f.error.is_some() {
                "error"
            } else if f.allowed {
                "allowed"
            } else {
                "denied"
            },
            b = esc(&f.basis.kind),
            m = esc(&f.basis.mechanism),
            desc = esc(&f.flow.description),
            src = esc(&f.flow.source.system),
            dst = esc(&f.flow.destination.system),
            route = esc(&route(f)),
            sr = esc(&f.flow.source.region),
            dr = esc(&f.flow.destination.region),
            rec = esc(&f.flow.recipient),
            cats = esc(&f.flow.data_categories.join(", ")),
            purpose = esc(&f.flow.purpose),
            decl = esc(&f.flow.mechanism),
            synth = if f.flow.synthetic {
                " <span class=\"tag synthetic\">synthetic data</span>"
            } else {
                ""
            },
        );
    }
    o.push_str("</tbody></table>\n");
    o.push_str(
        "<h2>Controls</h2><table id=\"controls\"><thead><tr><th>Measure</th><th>Status</th>\
         <th>Policies</th><th>Cases</th></tr></thead><tbody>\n",
    );
    for c in &r.controls {
        let class: String = c.status.chars().filter(|ch| ch.is_alphanumeric()).collect();
        let mut policies = String::new();
        for p in &c.policies {
            let _ = write!(
                policies,
                "<div><code>{}</code> <span class=\"small\">{}</span></div>",
                esc(&p.id),
                esc(&p.reason)
            );
        }
        let mut cases = String::new();
        for k in &c.cases {
            let _ = write!(
                cases,
                "<div>{}{}</div>",
                esc(&k.name),
                match k.passed {
                    Some(true) => " <span class=\"small\">(passes)</span>",
                    Some(false) => " <span class=\"tag denied\">fails</span>",
                    None => "",
                }
            );
        }
        if let Some(n) = &c.note {
            let _ = write!(cases, "<div class=\"small\">{}</div>", esc(n));
        }
        let _ = writeln!(
            o,
            "<tr class=\"control\" data-measure=\"{id}\" data-status=\"{st}\"><td><b>{fw} {art}</b><div>{title}</div></td>\
             <td><span class=\"tag {class}\">{st}</span></td><td>{policies}</td><td>{cases}</td></tr>",
            id = esc(&c.id),
            st = esc(&c.status),
            fw = esc(&c.framework),
            art = esc(&c.article),
            title = esc(&c.title),
        );
    }
    o.push_str("</tbody></table>\n<p class=\"small\">Generated by <code>portcullis flows check</code>. Legal bases are derived by the engine from the bundle's adequacy data and the mechanisms declared; the assessment of each safeguard stays with the data protection officer.</p>\n</body></html>\n");
    o
}

// ------------------------------------------------------------ --format --

/// `--format html` was given (the global `--format` holds `text` then).
static HTML: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The global `--format` parser: `text`, `json`, or `html` (only `flows
/// check` renders HTML; the other commands refuse it).
pub fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["text", "json", "html"]).map(|s| match s.as_str() {
        "json" => Format::Json,
        "html" => {
            HTML.store(true, std::sync::atomic::Ordering::Relaxed);
            Format::Text
        }
        _ => Format::Text,
    })
}

/// Whether `--format html` was given.
pub fn html_requested() -> bool {
    HTML.load(std::sync::atomic::Ordering::Relaxed)
}
