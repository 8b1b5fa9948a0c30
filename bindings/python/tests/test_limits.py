"""Input limits in the Python host (issue 12): an oversized request or bundle
is refused by name here, before it is copied into the guest; the guest's
memory cap turns anything larger into a fail-closed deny, never a crash."""

from __future__ import annotations

import json

import pytest

from portcullis import Portcullis, PortcullisError
from portcullis._engine import MAX_BUNDLE_BYTES, MAX_REQUEST_BYTES

from conftest import LOGIN


def with_body(n: int) -> str:
    return json.dumps(dict(LOGIN, body="a" * n))


def test_a_request_over_the_size_limit_is_denied_naming_the_limit(bundle_files):
    # 80 MiB into a 64 MiB guest: without the host's check a trap
    # (engine-fault); with it a deny naming the limit.
    p = Portcullis(max_memory_mib=64)
    p.load(bundle_files)
    huge = with_body(80 * 1024 * 1024)
    d = p.decide(huge)
    assert (d.outcome, d.error.kind) == ("deny", "invalid-request")
    assert f"over the limit of {MAX_REQUEST_BYTES}" in d.error.message
    # In a batch, only the oversized one is refused; the others are decided.
    out = p.decide_batch([huge, LOGIN, with_body(MAX_REQUEST_BYTES)])
    assert [d.error.kind if d.error else None for d in out] == ["invalid-request", None, "invalid-request"]
    assert out[1].outcome == "allow"
    # Just under the limit crosses and is decided by the engine.
    d = p.decide(with_body(MAX_REQUEST_BYTES - 1024))
    assert d.error is None, d.error


def test_a_bundle_over_the_size_limit_is_refused_naming_the_limit(bundle_files):
    p = Portcullis(max_memory_mib=64)
    info = p.load(bundle_files)
    huge = list(bundle_files) + [("padding.cedar", "x" * (MAX_BUNDLE_BYTES * 6))]
    with pytest.raises(PortcullisError) as e:
        p.load(huge)
    assert e.value.kind == "refused"
    assert [x.kind for x in e.value.problems] == ["limit"]
    assert "over the limit" in e.value.problems[0].message
    assert p.describe() == info, "the old bundle stays"


def test_deep_json_and_duplicate_keys_are_refused_by_the_engine(bundle_files):
    p = Portcullis()
    p.load(bundle_files)
    deep = json.dumps(dict(LOGIN, context={"record": {"x": 0}})).replace("0", "[" * 100000 + "]" * 100000, 1)
    d = p.decide(deep)
    assert d.outcome == "deny" and "limit of 64 levels" in d.error.message
    dup = json.dumps(LOGIN).replace('"action": "login"', '"action": "login", "action": "admin"')
    d = p.decide(dup)
    assert (d.error.kind, d.error.field) == ("invalid-request", "action")
