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

lint: guest
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --exclude portcullis-guest --all-targets -- -D warnings
	$(CARGO) clippy --release -p portcullis-guest --target wasm32-wasip2 -- -D warnings

bench: build
	$(CARGO) bench -p portcullis --bench decide

clean:
	$(CARGO) clean
