"""Decide per call and first load from Python (not part of the tests).

    python bench/bench.py [--calls N] [--runs R] [--json]

first load = import portcullis (and wasmtime) + load the compiled component
(from wasmtime's on-disk cache after the first run) + instantiate + load the
bundle, in a fresh process. `first_load_uncached` is the same with the
cache off: what the very first process on a machine pays (compiling ~7 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = os.environ.get("PORTCULLIS_BUNDLE", str(ROOT / "policies"))
LOGIN = '{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7","module":"sales_cloud"},"now":"2026-11-22T10:00:00Z"}'

CHILD = """
import time, json, sys
t0 = time.perf_counter()
import portcullis
t1 = time.perf_counter()
portcullis.load_dir(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "instantiate_load_ms": (t2 - t1) * 1e3, "total_ms": (t2 - t0) * 1e3}))
"""


def first_load(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, BUNDLE], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    uncached = first_load(dict(os.environ, PORTCULLIS_WASMTIME_CACHE="0"))
    first_load(dict(os.environ))  # fill the cache
    firsts = [first_load(dict(os.environ)) for _ in range(args.runs)]

    import portcullis

    def per_call(p: portcullis.Portcullis, f) -> dict:
        for _ in range(1000):
            f()
        runs = []
        for _ in range(args.runs):
            t = time.perf_counter_ns()
            for _ in range(args.calls):
                f()
            runs.append((time.perf_counter_ns() - t) / 1e3 / args.calls)
        return {"median_us": statistics.median(runs), "runs_us": [round(x, 2) for x in runs]}

    from importlib.metadata import version

    result: dict = {
        "runtime": f"CPython {sys.version.split()[0]}, wasmtime-py {version('wasmtime')}",
        "calls": args.calls,
        "runs": args.runs,
    }
    req = json.loads(LOGIN)
    for fast in (True, False):
        p = portcullis.Portcullis(fast=fast)
        p.load_dir(BUNDLE)
        assert p.decide(LOGIN).outcome == "allow"
        name = "fast" if p.fast else "public_api"
        result[f"decide_json_{name}"] = per_call(p, lambda: p.decide_json(LOGIN))
        result[f"decide_typed_{name}"] = per_call(p, lambda: p.decide(req))
    result["first_load_ms"] = {
        "median_total": statistics.median(f["total_ms"] for f in firsts),
        "median_import": statistics.median(f["import_ms"] for f in firsts),
        "median_instantiate_load": statistics.median(f["instantiate_load_ms"] for f in firsts),
    }
    result["first_load_uncached_ms"] = uncached["total_ms"]
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
