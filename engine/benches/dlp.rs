//! DLP scan throughput on the mixed 10 MB corpus of
//! `scripts/gen_dlp_corpus.py` (JSON CRM records, logs, base64 blobs, raw
//! weight files; seed 42), generated into `target/dlp/` on first run:
//! the one-pass scanner (one-shot and streamed in 64 KiB chunks) against
//! the naive loop (each detector's regex over the whole body, then the same
//! validators). Each figure twice: wall time, and this thread's on-CPU
//! time (`/proc/thread-self/schedstat`), which holds on a shared machine.
//! See BENCHMARKS.md ("DLP").

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benches stop at the first broken assumption"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_engine::dlp::{self, DlpConfig, StreamScan};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The corpus file, generated when missing (deterministic for the seed).
pub fn corpus_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/dlp/corpus-10m-seed42.bin");
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let status = std::process::Command::new("python3")
            .arg(root.join("scripts/gen_dlp_corpus.py"))
            .arg(&path)
            .args(["--size", "10485760", "--seed", "42"])
            .status()
            .expect("python3 runs scripts/gen_dlp_corpus.py");
        assert!(status.success());
    }
    path
}

/// `#doc <kind> <len>\n<bytes>\n` documents.
fn docs(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let nl = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap();
        let header = std::str::from_utf8(&bytes[at..nl]).unwrap();
        let mut parts = header.split(' ');
        assert_eq!(parts.next(), Some("#doc"));
        let kind = parts.next().unwrap().to_string();
        let len: usize = parts.next().unwrap().parse().unwrap();
        out.push((kind, bytes[nl + 1..nl + 1 + len].to_vec()));
        at = nl + 1 + len + 1;
    }
    out
}

/// This thread's time on a CPU.
fn cpu_now() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Run `f` `iters` times; on-CPU time when the platform tells it, else wall.
fn on_cpu(iters: u64, mut f: impl FnMut()) -> Duration {
    let (cpu, wall) = (cpu_now(), Instant::now());
    for _ in 0..iters {
        f();
    }
    let spent = cpu_now().saturating_sub(cpu);
    if spent.is_zero() {
        wall.elapsed()
    } else {
        spent
    }
}

fn bench(c: &mut Criterion) {
    let corpus = docs(&std::fs::read(corpus_path()).unwrap());
    let total: usize = corpus.iter().map(|(_, d)| d.len()).sum();
    let cfg = DlpConfig {
        max_body_bytes: usize::MAX,
        ..DlpConfig::default()
    };
    let naive = dlp::naive::Naive::get().unwrap();
    let one_pass = || {
        for (_, d) in &corpus {
            black_box(dlp::scan(&cfg, black_box(d)));
        }
    };
    let streamed = || {
        for (_, d) in &corpus {
            let mut s = StreamScan::new(&cfg);
            for chunk in d.chunks(64 << 10) {
                s.feed(black_box(chunk));
            }
            black_box(s.finish());
        }
    };
    let naive_loop = || {
        for (_, d) in &corpus {
            black_box(naive.count(black_box(d)));
        }
    };
    let findings: usize = corpus.iter().map(|(_, d)| dlp::scan(&cfg, d).count()).sum();
    eprintln!(
        "dlp corpus: {} documents, {total} bytes, {findings} findings",
        corpus.len()
    );

    let mut g = c.benchmark_group("dlp-scan");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("one-pass", |b| b.iter(one_pass));
    g.bench_function("one-pass/on-cpu", |b| {
        b.iter_custom(|n| on_cpu(n, one_pass))
    });
    g.bench_function("streamed-64k", |b| b.iter(streamed));
    g.bench_function("streamed-64k/on-cpu", |b| {
        b.iter_custom(|n| on_cpu(n, streamed))
    });
    g.bench_function("candidate-search-only/on-cpu", |b| {
        b.iter_custom(|n| {
            on_cpu(n, || {
                for (_, d) in &corpus {
                    black_box(dlp::naive::candidates_only(black_box(d)));
                }
            })
        })
    });
    g.bench_function("naive-loop", |b| b.iter(naive_loop));
    g.bench_function("naive-loop/on-cpu", |b| {
        b.iter_custom(|n| on_cpu(n, naive_loop))
    });
    g.finish();

    // Per document kind, on-CPU.
    let mut g = c.benchmark_group("dlp-scan-by-kind");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    for kind in ["crm_json", "log", "base64_json", "weights"] {
        let docs: Vec<&Vec<u8>> = corpus
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, d)| d)
            .collect();
        let bytes: usize = docs.iter().map(|d| d.len()).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("{kind}/on-cpu"), |b| {
            b.iter_custom(|n| {
                on_cpu(n, || {
                    for d in &docs {
                        black_box(dlp::scan(&cfg, d));
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
