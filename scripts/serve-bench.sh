#!/usr/bin/env bash
# Load run of `portcullis serve` on loopback (issue 8): decisions/s, p50/p99
# at concurrency 1 and 16, RSS with a pool of 1 and of N instances, the CLI
# as baseline, and 20 bundle swaps under load (one broken, refused) with 0
# failed requests. Run by `make bench-serve` (after `make build`). Not a test.
#   DURATION=6 RUNS=3 scripts/serve-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required (make bench-serve installs it)" >&2; exit 2; }
exec python3 scripts/serve_bench.py "$@"
