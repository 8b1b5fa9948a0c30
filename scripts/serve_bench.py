#!/usr/bin/env python3
"""Load run of `portcullis serve` on loopback (issue 8). Not a test.

Measured, in one run on one machine:
  * decisions/s, p50 and p99 with wrk at concurrency 1 and 16, with a pool
    of 1 guest instance and of N (one per core), and the service's RSS;
  * the CLI as the baseline: `portcullis decide` per request (a process per
    decision) and `portcullis replay` throughput (one process, many lines);
  * a bounded load with 20 bundle swaps during it (one deliberately broken
    bundle, refused): the run fails unless 0 requests failed.

Every load is bounded (wrk -d) and goes to 127.0.0.1 only. Medians of RUNS
runs, interleaved. Environment: PORTCULLIS_BIN, PORTCULLIS_BUNDLE, DURATION
(seconds per wrk run, default 6), RUNS (default 3), OUT (JSON result file).
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
EXE = os.environ.get("PORTCULLIS_BIN", "target/release/portcullis")
BUNDLE = os.environ.get("PORTCULLIS_BUNDLE", "policies")
DURATION = int(os.environ.get("DURATION", "6"))
RUNS = int(os.environ.get("RUNS", "3"))
CORES = os.cpu_count() or 2
OUT = os.environ.get("OUT", "target/bench/serve.json")
# Length of the load under which the 20 swaps happen (they must all land in it).
SWAP_SECONDS = int(os.environ.get("SWAP_SECONDS", "25"))

LOGIN = json.dumps(
    {
        "principal": {"type": "User", "id": "alice@example.com"},
        "action": "login",
        "resource": {"type": "App", "id": "sales-cloud"},
        "context": {"ip": "203.0.113.7", "module": "sales_cloud"},
        "now": "2026-11-22T10:00:00Z",
    },
    separators=(",", ":"),
)

tmp = tempfile.mkdtemp(prefix="portcullis-serve-bench-")
services = []


def cleanup():
    for p in services:
        if p.poll() is None:
            p.kill()
            p.wait()
    if os.environ.get("KEEP_LOGS"):
        keep = os.path.join(os.path.dirname(OUT), "serve-logs")
        os.makedirs(keep, exist_ok=True)
        for name in os.listdir(tmp):
            if name.endswith(".log"):
                shutil.copy(os.path.join(tmp, name), keep)
    shutil.rmtree(tmp, ignore_errors=True)


def start(*args):
    """Start `portcullis serve` on a free loopback port; wait until ready."""
    log = open(os.path.join(tmp, f"serve-{len(services)}.log"), "w")
    p = subprocess.Popen(
        [EXE, "serve", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PORTCULLIS_LOG": os.environ.get("SERVE_LOG", "warn")},
    )
    services.append(p)
    deadline = time.time() + 120
    addr = None
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        m = re.match(r"portcullis serve listening on http://(\S+)", line)
        if m:
            addr = m.group(1)
            break
    if addr is None:
        raise SystemExit(f"serve did not start: see {log.name}")
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://{addr}/readyz", timeout=2) as r:
                if r.status == 200:
                    return p, addr
        except Exception:
            time.sleep(0.05)
    raise SystemExit("serve never became ready")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)


def rss_kib(p):
    fields = {}
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0])
    return fields


def seconds(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def wrk(addr, conc, duration, path="/v1/decide"):
    script = os.path.join(tmp, "login.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(LOGIN)}\n")
    threads = 1 if conc == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conc}", f"-d{duration}s", "--latency", "-s", script, f"http://{addr}{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {
        "rps": rps,
        "p50_ms": seconds(pct["50"]) * 1e3,
        "p99_ms": seconds(pct["99"]) * 1e3,
        "requests": total,
        "failed": failed,
    }


def median(rows, key):
    return statistics.median(r[key] for r in rows)


def service_runs():
    results = {}
    for workers in (1, CORES):
        p, addr = start("--bundle", BUNDLE, "--workers", str(workers))
        idle = rss_kib(p)
        wrk(addr, 16, 2)  # warm every instance
        rows = {1: [], 16: []}
        for _ in range(RUNS):
            for conc in (1, 16):
                rows[conc].append(wrk(addr, conc, DURATION))
        loaded = rss_kib(p)
        stop(p)
        results[f"workers={workers}"] = {
            "rss_idle_mib": idle["VmRSS"] / 1024,
            "rss_peak_mib": loaded["VmHWM"] / 1024,
            **{
                f"c{conc}": {
                    "rps": median(rs, "rps"),
                    "p50_ms": median(rs, "p50_ms"),
                    "p99_ms": median(rs, "p99_ms"),
                    "failed": sum(r["failed"] for r in rs),
                    "runs_rps": [round(r["rps"]) for r in rs],
                }
                for conc, rs in rows.items()
            },
        }
        print(f"  workers={workers}: {json.dumps(results[f'workers={workers}'])}", flush=True)
    return results


def cli_runs():
    one = os.path.join(tmp, "one.json")
    with open(one, "w") as f:
        f.write(LOGIN)
    many = os.path.join(tmp, "many.jsonl")
    lines = 20000
    with open(many, "w") as f:
        for _ in range(lines):
            f.write(LOGIN + "\n")
    subprocess.run([EXE, "decide", "--bundle", BUNDLE, one], stdout=subprocess.DEVNULL)  # warm the cache
    per_decide = []
    for _ in range(RUNS * 7):
        t = time.perf_counter()
        subprocess.run([EXE, "decide", "--bundle", BUNDLE, one], stdout=subprocess.DEVNULL)
        per_decide.append(time.perf_counter() - t)
    replay = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run([EXE, "replay", "--bundle", BUNDLE, "--summary-only", many], check=True, stdout=subprocess.DEVNULL)
        replay.append(time.perf_counter() - t)
    d = statistics.median(per_decide)
    r = statistics.median(replay)
    return {
        "decide_process_ms": d * 1e3,
        "decide_process_per_s": 1 / d,
        "replay_lines": lines,
        "replay_s": r,
        "replay_per_s": lines / r,
    }


def swap_run():
    """20 swaps through the watched packed file under load; #10 is broken."""
    variants = []
    with open(os.path.join(BUNDLE, "portcullis.toml")) as f:
        manifest = f.read()
    version = re.search(r'^version = "([^"]+)"', manifest, re.M).group(1)
    for n in range(1, 21):
        d = os.path.join(tmp, f"v{n}")
        shutil.copytree(BUNDLE, d)
        tag = "broken" if n == 10 else f"swap{n}"
        with open(os.path.join(d, "portcullis.toml"), "w") as f:
            f.write(manifest.replace(f'version = "{version}"', f'version = "{version}-{tag}"', 1))
        packed = os.path.join(tmp, f"v{n}.json")
        if n == 10:
            # Valid files, one failing case: `pack` refuses it, so pack by hand.
            with open(os.path.join(d, "tests", "zz_broken.yaml"), "w") as f:
                f.write(
                    "cases:\n  - name: wrong on purpose\n    request: {principal: {type: User, id: a@example.com},"
                    " action: login, resource: {type: App, id: sales-cloud}, context: {ip: 203.0.113.7},"
                    ' now: "2026-11-22T10:00:00Z"}\n    expect: {outcome: lock}\n'
                )
            info = json.loads(subprocess.run([EXE, "describe", d], check=True, capture_output=True, text=True).stdout)
            files = {}
            for base, _, names in os.walk(d):
                for name in names:
                    if name.rsplit(".", 1)[-1] in ("toml", "cedarschema", "cedar", "json", "yaml", "yml"):
                        full = os.path.join(base, name)
                        files[os.path.relpath(full, d)] = open(full).read()
            doc = {"format": "portcullis-bundle/1", "name": info["name"], "version": info["version"], "hash": info["hash"], "files": files}
            with open(packed, "w") as f:
                json.dump(doc, f)
        else:
            subprocess.run([EXE, "pack", "-o", packed, d], check=True, capture_output=True)
        variants.append(packed)
    live = os.path.join(tmp, "live.json")
    subprocess.run([EXE, "pack", "-o", live, BUNDLE], check=True, capture_output=True)
    p, addr = start("--bundle", live, "--watch-interval-ms", "50")
    duration = SWAP_SECONDS
    result = {}

    def run_load():
        result.update(wrk(addr, 16, duration))

    t = threading.Thread(target=run_load)
    t.start()
    time.sleep(1.0)
    began = time.perf_counter()
    seen = []
    visible = []

    def status():
        with urllib.request.urlopen(f"http://{addr}/v1/bundle", timeout=5) as r:
            return json.load(r)

    # One swap at a time: the next file lands once the last one is served
    # (or, for the broken one, refused), so each is checked on its own.
    for n, path in enumerate(variants, 1):
        want = f"{version}-swap{n}"
        staging = live + ".tmp"
        shutil.copyfile(path, staging)
        t0 = time.perf_counter()
        os.replace(staging, live)
        while time.perf_counter() - t0 < 30:
            st = status()
            seen.append(st["version"])
            if n == 10 and st.get("last_error"):
                break
            if st["version"] == want:
                visible.append(time.perf_counter() - t0)
                break
            time.sleep(0.01)
        time.sleep(0.2)
    swaps_s = time.perf_counter() - began
    t.join()
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    stop(p)

    def count(result_label):
        m = re.search(r'^portcullis_bundle_swaps_total\{result="%s"\} (\d+)' % result_label, metrics, re.M)
        return int(m.group(1)) if m else 0

    return {
        "requests": result["requests"],
        "failed": result["failed"],
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "swaps_accepted": count("accepted") - 1,  # the first load counts too
        "swaps_refused": count("refused"),
        "broken_ever_served": any("broken" in v for v in seen),
        "final_version": seen[-1],
        "swaps_within_load": swaps_s < duration - 1.0,
        "swap_visible_ms_median": statistics.median(visible) * 1e3 if visible else None,
        "swap_visible_ms_max": max(visible) * 1e3 if visible else None,
    }


def main():
    try:
        print(f"== portcullis serve on loopback: {CORES} cores, wrk {DURATION}s x {RUNS} runs per point ==", flush=True)
        if "swaps-only" in sys.argv:
            print("-- 20 swaps under load (c16), #10 broken", flush=True)
            s = swap_run()
            print(f"  {json.dumps(s)}", flush=True)
            return check_swaps(s)
        print("-- service (pool of 1 and of one instance per core)", flush=True)
        svc = service_runs()
        print("-- CLI baseline", flush=True)
        c = cli_runs()
        print(f"  {json.dumps(c)}", flush=True)
        print("-- 20 swaps under load (c16), #10 broken", flush=True)
        s = swap_run()
        print(f"  {json.dumps(s)}", flush=True)
    finally:
        cleanup()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"service": svc, "cli": c, "swaps": s}, f, indent=2)
    n = f"workers={CORES}"
    print()
    print(f"{'configuration':34} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'peak RSS MiB':>13}")
    for key, row in svc.items():
        for conc in ("c1", "c16"):
            r = row[conc]
            print(f"{'serve ' + key + ', ' + conc:34} {r['rps']:12.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {row['rss_peak_mib']:13.1f}")
    print(f"{'CLI decide (process per request)':34} {c['decide_process_per_s']:12.1f} {c['decide_process_ms']:8.1f}")
    print(f"{'CLI replay (one process)':34} {c['replay_per_s']:12.0f}")
    best = svc[n]["c16"]["rps"]
    print(
        f"ratios: serve {n} c16 / workers=1 c16 = {best / svc['workers=1']['c16']['rps']:.2f}x; "
        f"serve c1 / CLI decide = {svc[n]['c1']['rps'] / c['decide_process_per_s']:.0f}x; "
        f"serve {n} c16 / CLI replay = {best / c['replay_per_s']:.2f}x"
    )
    check_swaps(s)


def check_swaps(s):
    print(
        f"swaps: {s['swaps_accepted']} accepted, {s['swaps_refused']} refused, {s['requests']} requests, "
        f"{s['failed']} failed, broken ever served: {s['broken_ever_served']}; a swap served "
        f"{s['swap_visible_ms_median']:.0f} ms (median, max {s['swap_visible_ms_max']:.0f}) after its file landed"
    )
    if (
        s["failed"]
        or s["swaps_accepted"] != 19
        or s["swaps_refused"] != 1
        or s["broken_ever_served"]
        or not s["swaps_within_load"]
    ):
        print("FAIL: the swap run must have 19 accepted, 1 refused, all under load, 0 failed requests", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
