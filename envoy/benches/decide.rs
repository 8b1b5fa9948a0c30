//! The filter's decision path natively, on the request `make bench-envoy`
//! sends (GET /login, one principal): headers → `Request`, then the
//! engine's decision with and without each of the savings the filter
//! relies on. See envoy/BENCHMARKS.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "a bench stops at the first broken assumption"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_engine::decision::Audit;
use portcullis_engine::{Bundle, MemoryStore};
use portcullis_envoy::mapping::{self, Peer};
use portcullis_envoy::settings::Settings;
use std::hint::black_box;
use std::path::Path;

fn bundle() -> Bundle {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let files = portcullis_envoy::resource::read_bundle_dir(&dir).unwrap();
    Bundle::load(&files).unwrap_or_else(|p| panic!("{p:?}"))
}

fn decide(c: &mut Criterion) {
    let settings: Settings = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/envoy/bench-settings.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let config = settings.compile().unwrap();
    let headers: Vec<(String, Vec<u8>)> = [
        (":method", "GET"),
        (":path", "/login"),
        (":authority", "127.0.0.1:10000"),
        (":scheme", "http"),
        ("x-portcullis-principal", "User:alice@example.com"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "9a0b7a3e-8c51-4a43-9a70-35b0d3a2c1a1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    let peer = Peer {
        source_address: Some("127.0.0.1:53122".into()),
        mtls: false,
        san: None,
    };
    let req = mapping::map(&config, &headers, &peer).unwrap().request;
    let text = serde_json::to_string(&req).unwrap();
    let b = bundle();
    let mut store = MemoryStore::new();

    let mut g = c.benchmark_group("envoy-login");
    g.bench_function("map-headers", |x| {
        x.iter(|| black_box(mapping::map(&config, black_box(&headers), &peer).unwrap()))
    });
    // What the filter did before: JSON text, whole context, every
    // decision evaluated by Cedar, audit record always.
    b.set_memo(false);
    b.set_projection(false);
    g.bench_function("before:text-whole-context-audit", |x| {
        x.iter(|| black_box(b.decide(black_box(&text), &mut store)))
    });
    g.bench_function("built-whole-context-no-audit", |x| {
        x.iter(|| black_box(b.decide_with(black_box(&req), &mut store, Audit::None)))
    });
    b.set_projection(true);
    g.bench_function("built-projected-no-audit (uncached)", |x| {
        x.iter(|| black_box(b.decide_with(black_box(&req), &mut store, Audit::None)))
    });
    b.set_memo(true);
    g.bench_function("now:built-projected-no-audit-remembered", |x| {
        x.iter(|| black_box(b.decide_with(black_box(&req), &mut store, Audit::None)))
    });
    g.bench_function("built-projected-audit-remembered", |x| {
        x.iter(|| black_box(b.decide_with(black_box(&req), &mut store, Audit::All)))
    });
    let mut n = 0u64;
    let mut other = req.clone();
    g.bench_function("now:new-principal-each (memo misses)", |x| {
        x.iter(|| {
            n += 1;
            other.principal.id = format!("u{n}@example.com");
            black_box(b.decide_with(&other, &mut store, Audit::None))
        })
    });
    g.finish();

    // The 4 KB POST of `make bench-envoy` (no findings): DLP scan and the
    // `api` rate bucket (memory store here).
    let mut records = Vec::new();
    let mut i = 0;
    while serde_json::to_string(&records).unwrap().len() < 4000 {
        records.push(serde_json::json!({"Id": format!("001000000000{i:03}AAA"),
            "Name": format!("Acme Widgets {i}"), "Industry": "Manufacturing",
            "Rating": "Warm", "Description": "Quarterly order of gaskets and fittings, net 30"}));
        i += 1;
    }
    let body = serde_json::to_string(&records).unwrap();
    let post: Vec<(String, Vec<u8>)> = [
        (":method", "POST"),
        (":path", "/api/export"),
        ("x-portcullis-principal", "User:alice@example.com"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    let mut export = mapping::map(&config, &post, &peer).unwrap().request;
    mapping::add_body(&mut export, body.as_bytes());
    let mut g = c.benchmark_group("envoy-export-4k");
    g.bench_function("dlp-scan-only", |x| {
        x.iter(|| {
            black_box(portcullis_engine::dlp::scan(
                &b.manifest().dlp,
                black_box(body.as_bytes()),
            ))
        })
    });
    g.bench_function("decide (fresh bucket each time)", |x| {
        x.iter(|| {
            let mut fresh = MemoryStore::new();
            black_box(b.decide_with(black_box(&export), &mut fresh, Audit::None))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    targets = decide
}
criterion_main!(benches);
