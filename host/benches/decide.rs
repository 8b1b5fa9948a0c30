//! decide on the default bundle, side by side: bare Cedar on a prebuilt
//! request, the native engine, and the guest in wasmtime; cold start of the
//! host from the cached precompiled guest; and how cost grows with the
//! number of policies. See BENCHMARKS.md.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests and benches stop at the first broken assumption"
)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portcullis_engine::{Bundle, MemoryStore};
use portcullis_host::{GuestRuntime, RuntimeOptions, bundle_dir};
use std::hint::black_box;
use std::path::Path;

const LOGIN: &str = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7","module":"sales_cloud"},"now":"2026-11-22T10:00:00Z"}"#;
const READ: &str = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":"read","resource":{"type":"Record","id":"0015g00000AbCdEAAV"},"context":{"ip":"203.0.113.7","region":"eu-central","destination_region":"us-east","legal_basis":"scc"},"now":"2026-11-22T10:00:00Z"}"#;

fn files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    bundle_dir::read(&dir).unwrap_or_default()
}

fn with_generated(n: usize) -> Vec<(String, String)> {
    let mut f: Vec<_> = files()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("tests/"))
        .collect();
    let mut text = String::new();
    for i in 0..n {
        // Realistic shapes: per-principal forbids and per-app permits.
        if i % 2 == 0 {
            text.push_str(&format!(
                "@id(\"gen.{i}\")\n@outcome(\"lock\")\nforbid (principal == Crm::User::\"user{i}@example.com\", action == Crm::Action::\"login\", resource) when {{ context.lockout.failures > {} }};\n",
                i % 20
            ));
        } else {
            text.push_str(&format!(
                "@id(\"gen.{i}\")\npermit (principal, action == Crm::Action::\"read\", resource == Crm::Record::\"rec{i}\") when {{ context has ip }};\n"
            ));
        }
    }
    f.push(("generated.cedar".into(), text));
    f
}

fn decide(c: &mut Criterion) {
    let files = files();
    let bundle = Bundle::load(&files).unwrap_or_else(|p| panic!("{p:?}"));
    let no_memo = Bundle::load(&files).unwrap_or_else(|p| panic!("{p:?}"));
    no_memo.set_memo(false);
    // `PORTCULLIS_BENCH_GUEST=path.wasm`: bench another build of the guest
    // (a profile or flag tried) against the same native engine.
    let runtime = match std::env::var_os("PORTCULLIS_BENCH_GUEST") {
        Some(p) => {
            let wasm = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            GuestRuntime::with_wasm(&wasm, RuntimeOptions::default())
        }
        None => GuestRuntime::new(RuntimeOptions::default()),
    }
    .unwrap_or_else(|e| panic!("{e:#}"));
    let mut guest = runtime
        .instantiate(Box::new(MemoryStore::new()))
        .unwrap_or_else(|e| panic!("{e:#}"));
    guest
        .load(files.clone())
        .unwrap_or_else(|e| panic!("{e:?}"));

    for (name, req) in [("login", LOGIN), ("read", READ)] {
        let mut g = c.benchmark_group(format!("decide/{name}"));
        let (policies, entities) = bundle.cedar_parts();
        let prebuilt = bundle.cedar_request(req).unwrap_or_else(|e| panic!("{e}"));
        let authorizer = cedar_policy::Authorizer::new();
        g.bench_function("bare-cedar", |b| {
            b.iter(|| black_box(authorizer.is_authorized(black_box(&prebuilt), policies, entities)))
        });
        // What any Cedar embedding pays per request: parse the JSON, build
        // the context and the request, authorize.
        g.bench_function("cedar-with-request-building", |b| {
            b.iter(|| {
                let r = bundle
                    .cedar_request(black_box(req))
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(authorizer.is_authorized(&r, policies, entities))
            })
        });
        let mut store = MemoryStore::new();
        g.bench_function("native", |b| {
            b.iter(|| black_box(bundle.decide(black_box(req), &mut store).to_json()))
        });
        // Every decision evaluates Cedar (the memory of Cedar's answers off):
        // what a request never seen before costs.
        let mut store = MemoryStore::new();
        g.bench_function("native-no-memo", |b| {
            b.iter(|| black_box(no_memo.decide(black_box(req), &mut store).to_json()))
        });
        g.bench_function("guest", |b| {
            b.iter(|| black_box(guest.decide(black_box(req))))
        });
        g.finish();
    }

    // An access token verified by the engine (RS256), against the same read
    // without one. The signature check is cached per (key, token) after the
    // first; `first-verify` pays it every time (a fresh bundle per batch).
    let token = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/tests/access/token.yaml"),
    )
    .unwrap_or_default()
    .split_whitespace()
    .find(|w| w.starts_with("eyJ"))
    .map(|w| w.trim_end_matches(['}', ',']).to_string())
    .unwrap_or_default();
    let with_token = READ.replace(
        "\"context\":{",
        &format!("\"context\":{{\"token\":\"{token}\","),
    );
    let mut g = c.benchmark_group("decide/read-with-rs256-token");
    let mut store = MemoryStore::new();
    g.bench_function("native", |b| {
        b.iter(|| black_box(bundle.decide(black_box(&with_token), &mut store).to_json()))
    });
    g.bench_function("guest", |b| {
        b.iter(|| black_box(guest.decide(black_box(&with_token))))
    });
    g.bench_function("native-first-verify", |b| {
        b.iter_batched(
            || std::thread::spawn(|| ()).join(),
            |_| {
                // A new thread has an empty signature cache.
                let (bundle, req) = (&bundle, &with_token);
                std::thread::scope(|s| {
                    s.spawn(|| black_box(bundle.decide(req, &mut MemoryStore::new()).to_json()))
                        .join()
                        .ok()
                })
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();

    // The fixed cost of a call: a request refused at its first field (no
    // store, no Cedar), so what remains is crossing into the guest and back.
    let invalid = r#"{"principal":{"type":"User","id":"alice@example.com"},"action":7}"#;
    let mut g = c.benchmark_group("decide/invalid-request");
    let mut store = MemoryStore::new();
    g.bench_function("native", |b| {
        b.iter(|| black_box(bundle.decide(black_box(invalid), &mut store).to_json()))
    });
    g.bench_function("guest", |b| {
        b.iter(|| black_box(guest.decide(black_box(invalid))))
    });
    g.finish();

    // A failure event: one read and one compare-and-set through the store.
    let failure = LOGIN.replace("\"now\"", "\"event\":\"auth_failure\",\"now\"");
    let mut g = c.benchmark_group("decide/auth_failure");
    let mut store = MemoryStore::new();
    g.bench_function("native", |b| {
        b.iter(|| black_box(bundle.decide(black_box(&failure), &mut store).to_json()))
    });
    g.bench_function("guest", |b| {
        b.iter(|| black_box(guest.decide(black_box(&failure))))
    });
    g.finish();
}

fn cold_start(c: &mut Criterion) {
    let files = files();
    // Make sure the cache is warm, then measure a restart from it.
    drop(GuestRuntime::new(RuntimeOptions::default()));
    let mut g = c.benchmark_group("cold-start");
    g.sample_size(20);
    g.bench_function("runtime-from-cache+instantiate", |b| {
        b.iter(|| {
            let rt =
                GuestRuntime::new(RuntimeOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(rt.cached_from().is_some());
            black_box(
                rt.instantiate(Box::new(MemoryStore::new()))
                    .unwrap_or_else(|e| panic!("{e:#}")),
            );
        })
    });
    g.bench_function("runtime-from-cache+instantiate+load-bundle", |b| {
        b.iter(|| {
            let rt =
                GuestRuntime::new(RuntimeOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
            let mut i = rt
                .instantiate(Box::new(MemoryStore::new()))
                .unwrap_or_else(|e| panic!("{e:#}"));
            black_box(i.load(files.clone()).is_ok());
        })
    });
    g.bench_function("native-load-bundle", |b| {
        b.iter(|| black_box(Bundle::load(&files).is_ok()))
    });
    g.finish();
}

fn scale(c: &mut Criterion) {
    let runtime = GuestRuntime::new(RuntimeOptions::default()).unwrap_or_else(|e| panic!("{e:#}"));
    let mut g = c.benchmark_group("scale");
    g.sample_size(20);
    for n in [10usize, 100, 1_000, 10_000] {
        let files = with_generated(n);
        let bundle = Bundle::load(&files).unwrap_or_else(|p| panic!("{p:?}"));
        let mut guest = runtime
            .instantiate(Box::new(MemoryStore::new()))
            .unwrap_or_else(|e| panic!("{e:#}"));
        guest.set_call_timeout(std::time::Duration::from_secs(60));
        guest.load(files).unwrap_or_else(|e| panic!("{e:?}"));
        let (policies, entities) = bundle.cedar_parts();
        let prebuilt = bundle.cedar_request(READ).unwrap_or_else(|e| panic!("{e}"));
        let authorizer = cedar_policy::Authorizer::new();
        let mut store = MemoryStore::new();
        g.bench_with_input(BenchmarkId::new("bare-cedar", n), &n, |b, _| {
            b.iter(|| black_box(authorizer.is_authorized(&prebuilt, policies, entities)))
        });
        g.bench_with_input(BenchmarkId::new("native", n), &n, |b, _| {
            b.iter(|| black_box(bundle.decide(READ, &mut store).to_json()))
        });
        g.bench_with_input(BenchmarkId::new("guest", n), &n, |b, _| {
            b.iter(|| black_box(guest.decide(READ)))
        });
    }
    g.finish();
}

criterion_group!(benches, decide, cold_start, scale);
criterion_main!(benches);
