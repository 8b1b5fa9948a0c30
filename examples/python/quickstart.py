"""Quickstart: load the default bundle, decide one request, print the outcome.

Run from the repository: `make bindings-python && .venv/bin/python examples/python/quickstart.py`
(elsewhere: `pip install path/to/portcullis/bindings/python`).
"""

from pathlib import Path

import portcullis

bundle = portcullis.load_dir(Path(__file__).resolve().parents[2] / "policies")
print(f"bundle: {bundle.name} {bundle.version}, {len(bundle.policy_ids)} policies")

decision = portcullis.decide({
    "principal": {"type": "User", "id": "alice@example.com"},
    "action": "login",
    "resource": {"type": "App", "id": "sales-cloud"},
    "context": {"ip": "203.0.113.7", "module": "sales_cloud"},
    "now": "2026-11-22T10:00:00Z",
})
print(f"outcome: {decision.outcome}")
print(f"reasons: {'; '.join(decision.reasons)}")
