#!/usr/bin/env bash
# Decide per call and first load: Node binding, Python binding and the Rust
# host, same guest component, same bundle, same login request, same machine.
# Run by `make bench-bindings` (after the bindings are built). Not a test.
#   CALLS=20000 RUNS=5 scripts/bindings-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${CALLS:-20000}
RUNS=${RUNS:-5}
BUNDLE=${PORTCULLIS_BUNDLE:-policies}
PORTCULLIS=${PORTCULLIS_BIN:-target/release/portcullis}
PY=${VENV_PY:-.venv/bin/python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

LOGIN='{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7","module":"sales_cloud"},"now":"2026-11-22T10:00:00Z"}'

echo "== Rust host: portcullis replay (guest engine), $CALLS copies of the login request, $RUNS runs =="
echo "$LOGIN" > "$out/one.jsonl"
for _ in $(seq "$CALLS"); do echo "$LOGIN"; done > "$out/many.jsonl"
"$PORTCULLIS" replay --bundle "$BUNDLE" --summary-only "$out/one.jsonl" > /dev/null # warm the precompiled-guest cache
PORTCULLIS="$PORTCULLIS" BUNDLE="$BUNDLE" OUT="$out" CALLS="$CALLS" RUNS="$RUNS" "$PY" - > "$out/rust.json" <<'PYEOF'
import json, os, statistics, subprocess, time
exe, bundle, out, calls, runs = os.environ["PORTCULLIS"], os.environ["BUNDLE"], os.environ["OUT"], int(os.environ["CALLS"]), int(os.environ["RUNS"])
def run(f):
    t = time.perf_counter()
    subprocess.run([exe, "replay", "--bundle", bundle, "--summary-only", f], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t
per_call, first = [], []
for _ in range(runs):
    one = run(f"{out}/one.jsonl")
    many = run(f"{out}/many.jsonl")
    first.append(one * 1e3)
    per_call.append((many - one) / (calls - 1) * 1e6)
print(json.dumps({"decide_us": statistics.median(per_call), "runs_us": [round(x, 2) for x in per_call],
                  "process_one_decision_ms": statistics.median(first)}))
PYEOF
cat "$out/rust.json"; echo

echo "== Node binding (jco) =="
PORTCULLIS_BUNDLE="$BUNDLE" node bindings/node/bench/bench.mjs --calls "$CALLS" --runs "$RUNS" --json | tee "$out/node.json"

echo "== Python binding (wasmtime-py) =="
PORTCULLIS_BUNDLE="$BUNDLE" "$PY" bindings/python/bench/bench.py --calls "$((CALLS / 4))" --runs "$RUNS" --json | tee "$out/python.json"

echo
OUT="$out" "$PY" - <<'PYEOF'
import json, os
out = os.environ["OUT"]
r, n, p = (json.load(open(f"{out}/{x}.json")) for x in ("rust", "node", "python"))
base = r["decide_us"]
rows = [
    ("Rust host (replay, guest)", base, "-", f'{r["process_one_decision_ms"]:.0f} ms (whole process, one decision)'),
    ("Node: decideJson (text)", n["decide_json"]["median_us"], None, f'{n["first_load_ms"]["median_total"]:.0f} ms (import {n["first_load_ms"]["median_import"]:.0f} + instantiate/load {n["first_load_ms"]["median_instantiate_load"]:.0f})'),
    ("Node: decide (object)", n["decide_object"]["median_us"], None, ""),
    ("Python: decide_json, fast path", p["decide_json_fast"]["median_us"], None, f'{p["first_load_ms"]["median_total"]:.0f} ms cached (import {p["first_load_ms"]["median_import"]:.0f} + instantiate/load {p["first_load_ms"]["median_instantiate_load"]:.0f}); {p["first_load_uncached_ms"]:.0f} ms uncached'),
    ("Python: decide (typed), fast path", p["decide_typed_fast"]["median_us"], None, ""),
    ("Python: decide_json, public API", p["decide_json_public_api"]["median_us"], None, ""),
]
print(f'{"caller":36} {"decide µs":>10} {"vs Rust":>8}  first load')
for name, us, _, first in rows:
    print(f"{name:36} {us:10.1f} {us / base:7.2f}x  {first}")
PYEOF
