#!/usr/bin/env python3
"""Run every fuzz target for a bounded time and report what it did (`make fuzz`).

For each target: libFuzzer's own statistics (executions, peak RSS), the
CPU time the run took (user + system of the fuzzing process tree, from
getrusage), the working corpus size after the run (files in
fuzz/work/corpus/<target>) and the crash inputs left in
fuzz/artifacts/<target>/. Prints a Markdown table (the one FUZZING.md
keeps) and writes it to fuzz/work/report.md. Exit 1 if any target crashed.

Environment: FUZZ_SECONDS (per target, default 600), FUZZ_JOBS (targets run
at once, default 1: use 2 on 2 idle cores), FUZZ_TARGETS (space separated),
CARGO_FUZZ, FUZZ_BUILD_FLAGS, FUZZ_RUN_FLAGS (as the Makefile sets them).
The targets must already be built (`make fuzz-build`).
"""

import concurrent.futures
import datetime
import os
import re
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
SECONDS = int(os.environ.get("FUZZ_SECONDS", "600"))
JOBS = int(os.environ.get("FUZZ_JOBS", "1"))
TARGETS = os.environ.get("FUZZ_TARGETS", "request bundle dlp jwt packed signature audit").split()
CARGO_FUZZ = os.environ.get("CARGO_FUZZ", os.path.join(ROOT, ".tools/cargo-fuzz/bin/cargo-fuzz"))
BUILD_FLAGS = os.environ.get("FUZZ_BUILD_FLAGS", "--release --codegen-units 16").split()
RUN_FLAGS = os.environ.get(
    "FUZZ_RUN_FLAGS", "-timeout=10 -rss_limit_mb=3072 -detect_leaks=0 -print_final_stats=1"
).split()


def files(d):
    try:
        return [f for f in os.listdir(d) if not f.startswith(".")]
    except FileNotFoundError:
        return []


def run(target):
    corpus = os.path.join("work", "corpus", target)
    os.makedirs(os.path.join(FUZZ, corpus), exist_ok=True)
    dirs = [corpus, os.path.join("work", "seeds", target)]
    if os.path.isdir(os.path.join(FUZZ, "regressions", target)):
        dirs.append(os.path.join("regressions", target))
    crashes_before = set(files(os.path.join(FUZZ, "artifacts", target)))
    log_path = os.path.join(FUZZ, "work", f"{target}.log")
    cmd = [CARGO_FUZZ, "fuzz", "run", *BUILD_FLAGS, target, *dirs, "--", *RUN_FLAGS,
           f"-max_total_time={SECONDS}"]
    started = time.monotonic()
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, cwd=FUZZ, stdout=log, stderr=subprocess.STDOUT)
        # wait4 gives this child's own resource use (with its waited-for
        # descendants), so parallel runs do not mix their CPU time.
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    text = open(log_path, errors="replace").read()

    def stat(name):
        m = re.findall(rf"^stat::{name}:\s+(\d+)", text, re.M)
        return int(m[-1]) if m else None

    new_crashes = sorted(set(files(os.path.join(FUZZ, "artifacts", target))) - crashes_before)
    return {
        "target": target,
        "exit": p.returncode,
        "wall_s": round(wall),
        "cpu_s": round(usage.ru_utime + usage.ru_stime),
        "executions": stat("number_of_executed_units"),
        "peak_rss_mb": stat("peak_rss_mb"),
        "corpus": len(files(os.path.join(FUZZ, corpus))),
        "crashes": new_crashes,
    }


def main():
    print(f"fuzzing {len(TARGETS)} targets for {SECONDS} s each, {JOBS} at a time", flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        rows = list(pool.map(run, TARGETS))
    day = datetime.date.today().isoformat()
    lines = [
        f"Run of {day}: `FUZZ_SECONDS={SECONDS} FUZZ_JOBS={JOBS} make fuzz` on {os.cpu_count()} cores.",
        "",
        "| target | wall s | CPU s | executions | exec/s (CPU) | corpus files | peak RSS MB | crashes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate = r["executions"] / r["cpu_s"] if r["executions"] and r["cpu_s"] else 0
        crashes = ", ".join(r["crashes"]) if r["crashes"] else ("0" if r["exit"] == 0 else f"exit {r['exit']}")
        lines.append(
            f"| {r['target']} | {r['wall_s']} | {r['cpu_s']} | {r['executions'] or 0:,} | {rate:,.0f} "
            f"| {r['corpus']} | {r['peak_rss_mb'] or 0} | {crashes} |"
        )
    report = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(FUZZ, "work"), exist_ok=True)
    with open(os.path.join(FUZZ, "work", "report.md"), "w") as f:
        f.write(report)
    print(report)
    failed = [r["target"] for r in rows if r["exit"] != 0]
    if failed:
        print(f"crashed: {' '.join(failed)} (inputs in fuzz/artifacts/<target>/, logs in fuzz/work/)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
