"""The bundle's shared cases, run through THIS binding's own store and
decide calls, must give exactly the native engine's decisions."""

from __future__ import annotations

import pytest

import portcullis
from portcullis import MemoryStore, Portcullis
from portcullis._abi import FAST_AVAILABLE

from conftest import BUNDLE, native_check

NATIVE = native_check()
FILES = portcullis.read_bundle_dir(BUNDLE)
PATHS = [True, False] if FAST_AVAILABLE else [False]


class SwappableStore:
    """Delegates to a fresh MemoryStore per case, through the pluggable-store interface."""

    def __init__(self) -> None:
        self.current = MemoryStore()

    def get(self, keys):
        return self.current.get(keys)

    def compare_and_set(self, writes):
        return self.current.compare_and_set(writes)


ENGINES: dict[bool, tuple[Portcullis, SwappableStore]] = {}


def engine(fast: bool) -> tuple[Portcullis, SwappableStore]:
    if fast not in ENGINES:
        store = SwappableStore()
        p = Portcullis(store, fast=fast)
        p.load(FILES)
        ENGINES[fast] = (p, store)
    return ENGINES[fast]


PLAN = engine(PATHS[0])[0].case_plan()


def test_native_and_binding_ran_the_same_bundle_and_cases():
    p, _ = engine(PATHS[0])
    info = p.describe()
    assert NATIVE["accepted"] is True
    assert NATIVE["bundle"]["hash"] == info.hash
    assert info.case_count == len(PLAN) > 0
    assert [(c["file"], c["name"]) for c in PLAN] == [(c["file"], c["name"]) for c in NATIVE["decisions"]]


@pytest.mark.parametrize("fast", PATHS, ids=lambda f: "fast" if f else "public-api")
@pytest.mark.parametrize("index", range(len(PLAN)), ids=[f"{c['file']} › {c['name']}" for c in PLAN])
def test_case_decisions_equal_native(index: int, fast: bool):
    case = PLAN[index]
    want = NATIVE["decisions"][index]
    assert (want["file"], want["name"]) == (case["file"], case["name"])
    assert len(want["decisions"]) == len(case["steps"])
    p, store = engine(fast)
    store.current = MemoryStore()
    for j, step in enumerate(case["steps"]):
        got = p.decide(step["request"])
        assert got.to_dict() == want["decisions"][j], f"step {step['step']} (request {j + 1}) differs from native"
        # the typed view loses nothing either
        assert portcullis.Decision.from_dict(got.to_dict()) == got
        if "expect" in step:
            failures = p.check_decision(step["expect"], got)
            assert failures == [], f"step {step['step']}: {failures}"


def test_at_most_one_get_and_one_compare_and_set_per_decision():
    store = SwappableStore()
    p = Portcullis(store)
    p.load(FILES)
    decisions = 0
    for case in PLAN:
        store.current = MemoryStore()
        for step in case["steps"]:
            p.decide_json(step["request"])
            decisions += 1
    gets, cases = p.crossings
    assert 0 < gets <= decisions
    assert 0 < cases <= decisions


def test_check_in_the_guest_agrees_with_the_native_report():
    p, _ = engine(PATHS[0])
    report = p.check()
    assert report.ok, [c for c in report.cases if not c.passed]
    assert report.to_dict() == NATIVE["cases"]
