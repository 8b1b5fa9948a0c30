//! DLP through a whole decision, natively and in the guest: every document
//! of the 10 MB corpus of `scripts/gen_dlp_corpus.py` (generated into
//! `target/dlp/` on first run, seed 42) sent as the body of a `write`
//! decide on the default bundle (text as `body`, raw weight files as
//! `body_base64`). Both paths parse the same request JSON, scan, evaluate
//! Cedar and answer JSON; the ratio guest/native is the cost of running
//! it all in wasmtime. The same bundle with `[dlp] enabled = false` gives
//! the rest of the decision's cost, so the difference is the scan's, on
//! each path. Wall and on-CPU time (this thread's
//! `/proc/thread-self/schedstat`; the guest runs on the calling thread).
//! See BENCHMARKS.md ("DLP").

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benches stop at the first broken assumption"
)]

use base64::Engine as _;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis_engine::{Bundle, MemoryStore};
use portcullis_host::{GuestRuntime, RuntimeOptions, bundle_dir};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn corpus() -> Vec<(String, Vec<u8>)> {
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
    let bytes = std::fs::read(&path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let nl = at + bytes[at..].iter().position(|&b| b == b'\n').unwrap();
        let header = std::str::from_utf8(&bytes[at..nl]).unwrap().to_string();
        let mut parts = header.split(' ').skip(1);
        let kind = parts.next().unwrap().to_string();
        let len: usize = parts.next().unwrap().parse().unwrap();
        out.push((kind, bytes[nl + 1..nl + 1 + len].to_vec()));
        at = nl + 1 + len + 1;
    }
    out
}

fn cpu_now() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

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
    let files =
        bundle_dir::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")).unwrap();
    let bundle_files = files.clone();
    let bundle = Bundle::load(&bundle_files).unwrap_or_else(|p| panic!("{p:?}"));
    let runtime = GuestRuntime::new(RuntimeOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    let mut guest = runtime
        .instantiate(Box::new(MemoryStore::new()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    guest
        .load(bundle_files.clone())
        .unwrap_or_else(|e| panic!("{e:?}"));
    // The same bundle with DLP off: the difference is the scan's cost on
    // each path (request parsing, Cedar and the answer are the same).
    let off_files: Vec<(String, String)> = bundle_files
        .iter()
        .map(|(name, text)| {
            let text = if name == "portcullis.toml" {
                text.replacen("[dlp]\nenabled = true", "[dlp]\nenabled = false", 1)
            } else {
                text.clone()
            };
            (name.clone(), text)
        })
        .collect();
    assert_ne!(off_files, bundle_files, "[dlp] enabled = true not found");
    let bundle_off = Bundle::load(&off_files).unwrap_or_else(|p| panic!("{p:?}"));
    let mut guest_off = runtime
        .instantiate(Box::new(MemoryStore::new()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    guest_off
        .load(off_files)
        .unwrap_or_else(|e| panic!("{e:?}"));

    let docs = corpus();
    let total: usize = docs.iter().map(|(_, d)| d.len()).sum();
    let requests: Vec<String> = docs
        .iter()
        .map(|(_, d)| {
            let mut req = serde_json::json!({
                "principal": {"type": "User", "id": "alice@example.com"},
                "action": "write",
                "resource": {"type": "Record", "id": "0015g00000AbCdEAAV"},
                "context": {"ip": "203.0.113.7"},
                "now": "2026-11-22T10:00:00Z",
            });
            match std::str::from_utf8(d) {
                Ok(text) => req["body"] = text.into(),
                Err(_) => {
                    req["body_base64"] = base64::engine::general_purpose::STANDARD.encode(d).into()
                }
            }
            req.to_string()
        })
        .collect();
    // Both paths must scan and agree before anything is timed.
    for r in requests.iter().take(20) {
        let native: serde_json::Value =
            serde_json::from_str(&bundle.decide(r, &mut MemoryStore::new()).to_json()).unwrap();
        let inside: serde_json::Value = serde_json::from_str(&guest.decide(r)).unwrap();
        assert_eq!(native["findings"], inside["findings"]);
        assert!(native["error"].is_null(), "{}", native["error"]);
    }

    let mut store = MemoryStore::new();
    let mut native = |_: ()| {
        for r in &requests {
            black_box(bundle.decide(black_box(r), &mut store).to_json());
        }
    };
    let mut g = c.benchmark_group("dlp-decide");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("native", |b| b.iter(|| native(())));
    g.bench_function("native/on-cpu", |b| {
        b.iter_custom(|n| on_cpu(n, || native(())))
    });
    g.bench_function("guest", |b| {
        b.iter(|| {
            for r in &requests {
                black_box(guest.decide(black_box(r)));
            }
        })
    });
    g.bench_function("guest/on-cpu", |b| {
        b.iter_custom(|n| {
            on_cpu(n, || {
                for r in &requests {
                    black_box(guest.decide(black_box(r)));
                }
            })
        })
    });
    let mut store_off = MemoryStore::new();
    g.bench_function("native-dlp-off/on-cpu", |b| {
        b.iter_custom(|n| {
            on_cpu(n, || {
                for r in &requests {
                    black_box(bundle_off.decide(black_box(r), &mut store_off).to_json());
                }
            })
        })
    });
    g.bench_function("guest-dlp-off/on-cpu", |b| {
        b.iter_custom(|n| {
            on_cpu(n, || {
                for r in &requests {
                    black_box(guest_off.decide(black_box(r)));
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
