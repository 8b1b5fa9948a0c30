#!/usr/bin/env python3
"""Check the Grafana dashboard: valid JSON, an authentic row and a synthetic
row, no authentic panel reading synthetic traffic (or the reverse), and only
the metric names the service exports.

usage: check_dashboard.py grafana-dashboard.json
"""
import json
import re
import sys

METRICS = {"portcullis_decisions_total", "portcullis_policy_decisions_total",
           "portcullis_decide_duration_seconds_bucket", "portcullis_bundle_swaps_total",
           "portcullis_store_errors_total", "portcullis_escalations_total", "portcullis_bundle_info"}


def main():
    dash = json.load(open(sys.argv[1]))
    row, seen = None, {}
    problems = []
    for p in dash["panels"]:
        if p["type"] == "row":
            row = p["title"].split()[0].lower()
            seen[row] = 0
            continue
        for t in p.get("targets", []):
            expr = t["expr"]
            for m in re.findall(r"portcullis_[a-z_]+", expr):
                if m not in METRICS:
                    problems.append(f"panel `{p['title']}`: unknown metric `{m}`")
            if row == "authentic" and 'pathway="synthetic"' in expr:
                problems.append(f"authentic panel `{p['title']}` reads synthetic traffic")
            if row == "synthetic" and 'pathway="synthetic"' not in expr and "synthetic" not in expr + p["title"].lower():
                problems.append(f"synthetic panel `{p['title']}` does not read synthetic traffic")
        seen[row] = seen.get(row, 0) + 1
    for need in ("authentic", "synthetic"):
        if not seen.get(need):
            problems.append(f"no `{need}` row with panels")
    for p in problems:
        print(p, file=sys.stderr)
    print(f"dashboard: {sum(seen.values())} panels in rows {sorted(seen)}; {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
