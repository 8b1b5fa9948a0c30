"""Where the repository's artefacts are, and the native engine's decisions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = Path(os.environ.get("PORTCULLIS_BUNDLE", ROOT / "policies"))
NATIVE = Path(os.environ.get("PORTCULLIS_BIN", ROOT / "target/release/portcullis"))

LOGIN = {
    "principal": {"type": "User", "id": "alice@example.com"},
    "action": "login",
    "resource": {"type": "App", "id": "sales-cloud"},
    "context": {"ip": "203.0.113.7", "module": "sales_cloud"},
    "now": "2026-11-22T10:00:00Z",
}


def native_check(bundle: Path = BUNDLE) -> dict:
    """The native engine's run of the case plan: {accepted, cases, decisions: [{file, name, decisions}]}."""
    if not NATIVE.is_file():
        raise RuntimeError(f"{NATIVE} is missing: run `make build`")
    out = subprocess.run(
        [str(NATIVE), "--engine", "native", "--format", "json", "check", "--decisions", str(bundle)],
        capture_output=True,
        text=True,
        check=False,
    )
    if not out.stdout:
        raise RuntimeError(f"portcullis check failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)


def failure(now: str) -> dict:
    return dict(LOGIN, event="auth_failure", now=now)


@pytest.fixture(scope="session")
def bundle_files():
    import portcullis

    return portcullis.read_bundle_dir(BUNDLE)
