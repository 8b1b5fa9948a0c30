"""The binding's own surface: errors, stores, isolation, batch, trap safety."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import portcullis
from portcullis import (
    Conflict,
    Decision,
    Entry,
    MemoryStore,
    Portcullis,
    PortcullisError,
    Write,
    Written,
)
from portcullis._abi import FAST_AVAILABLE

from conftest import BUNDLE, LOGIN, failure

PATHS = [True, False] if FAST_AVAILABLE else [False]


def at(second: int) -> str:
    t = 10 * 3600 + second
    return f"2026-11-22T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}Z"


def lock_out(p: Portcullis, limit: int = 200) -> Decision:
    """Report failures (one a second) until the login is locked; the locking decision."""
    for i in range(limit):
        d = p.decide(failure(at(i)))
        if d.outcome == "lock":
            return d
    raise AssertionError(f"no lock after {limit} failures")


def test_module_level_load_decide_check_describe(bundle_files):
    info = portcullis.load(bundle_files)
    assert info.name == "portcullis-default"
    assert portcullis.describe() == info
    d = portcullis.decide(LOGIN)
    assert isinstance(d, Decision)
    assert d.outcome == "allow" and d.allowed
    assert d.reasons == ("login permitted",)
    report = portcullis.check()
    assert report.ok and report.passed == info.case_count
    assert portcullis.load_dir(BUNDLE) == info
    assert portcullis.load(dict(bundle_files)) == info


@pytest.mark.parametrize("fast", PATHS)
def test_a_decision_keeps_every_field(fast):
    p = Portcullis(fast=fast)
    p.load_dir(BUNDLE)
    text = p.decide_json(json.dumps(LOGIN))
    assert p.decide(json.dumps(LOGIN)).to_dict() == json.loads(text)
    locked = lock_out(p)
    assert locked.outcome == "lock" and not locked.allowed
    assert locked.policies and locked.reasons
    assert locked.escalation is None or isinstance(locked.escalation, str)
    assert locked.retry_after is None or isinstance(locked.retry_after, int)
    assert locked.audit["outcome"] == "lock"
    raw = locked.to_dict()
    for key in ("outcome", "allowed", "policies", "reasons", "escalation", "retry_after", "pathway", "audit"):
        assert key in raw


def test_request_mappings_are_written_like_json_stringify():
    assert portcullis.request_text({"a": 1, "b": ["é"]}) == '{"a":1,"b":["é"]}'


def test_a_refused_bundle_raises_with_located_problems_and_keeps_the_old_one(bundle_files):
    p = Portcullis()
    before = p.load(bundle_files)
    broken = [(n, t + "\npermit (principal, action, resource) when { context.nope };" if n == "access.cedar" else t) for n, t in bundle_files]
    with pytest.raises(PortcullisError) as info:
        p.load(broken)
    e = info.value
    assert e.kind == "refused"
    assert e.problems, "no problems reported"
    pr = e.problems[0]
    assert pr.location is not None and pr.location.file == "access.cedar" and pr.location.line > 0
    assert pr.message in str(e)
    assert p.describe() == before
    assert p.decide(LOGIN).outcome == "allow"


def test_bad_bundle_arguments_are_portcullis_errors():
    with pytest.raises(PortcullisError):
        Portcullis().load([("only-a-name",)])
    with pytest.raises(PortcullisError):
        Portcullis().load([("a.cedar", b"bytes")])
    with pytest.raises(PortcullisError):
        portcullis.read_bundle_dir(BUNDLE / "absent")


def test_without_a_bundle_decide_fails_closed_and_check_raises():
    p = Portcullis()
    assert p.describe() is None
    d = p.decide(LOGIN)
    assert d.outcome == "deny" and not d.allowed
    assert d.error is not None and d.error.kind == "no-bundle"
    with pytest.raises(PortcullisError) as e:
        p.check()
    assert e.value.kind == "no-bundle"
    with pytest.raises(PortcullisError):
        p.case_plan()


def test_a_malformed_request_is_a_deny_naming_the_field():
    p = Portcullis()
    p.load_dir(BUNDLE)
    d = p.decide(dict(LOGIN, action="logon"))
    assert d.outcome == "deny"
    assert d.error.kind == "invalid-request" and d.error.field == "action"
    assert p.decide("{not json").error.kind == "invalid-request"
    assert p.decide(b'{"x": 1}').error.field == "x"


class Flaky:
    def __init__(self):
        self.mem = MemoryStore()
        self.broken = True

    def get(self, keys):
        if self.broken:
            raise ConnectionError("redis unreachable")
        return self.mem.get(keys)

    def compare_and_set(self, writes):
        return self.mem.compare_and_set(writes)


@pytest.mark.parametrize("fast", PATHS)
def test_a_failing_store_fails_closed_and_the_instance_keeps_working(fast):
    store = Flaky()
    p = Portcullis(store, fast=fast)
    p.load_dir(BUNDLE)
    d = p.decide(LOGIN)
    assert d.outcome == "deny"
    assert d.error.kind == "store"
    assert "redis unreachable" in d.error.message
    store.broken = False
    assert p.decide(LOGIN).outcome == "allow"


class Shape:
    def __init__(self, get=None, cas=None):
        self.mem = MemoryStore()
        self._get = get
        self._cas = cas

    def get(self, keys):
        return self._get(keys) if self._get else self.mem.get(keys)

    def compare_and_set(self, writes):
        return self._cas(writes) if self._cas else self.mem.compare_and_set(writes)


BAD_SHAPES = [
    Shape(get=lambda keys: "nope"),
    Shape(get=lambda keys: []),
    Shape(get=lambda keys: [Entry("other", None, 0) for _ in keys]),
    Shape(get=lambda keys: [Entry(k, 5, 1) for k in keys]),  # type: ignore[arg-type]
    Shape(get=lambda keys: [Entry(k, None, -1) for k in keys]),
    Shape(get=lambda keys: [object() for _ in keys]),
]


@pytest.mark.parametrize("fast", PATHS)
@pytest.mark.parametrize("store", BAD_SHAPES, ids=range(len(BAD_SHAPES)))
def test_a_store_answering_out_of_shape_is_a_store_failure(store, fast):
    p = Portcullis(store, fast=fast)
    p.load_dir(BUNDLE)
    d = p.decide(LOGIN)
    assert d.outcome == "deny"
    assert d.error.kind == "store", d.error


@pytest.mark.parametrize("fast", PATHS)
def test_a_failing_compare_and_set_fails_closed(fast):
    def boom(writes):
        raise TimeoutError("cas timed out")

    p = Portcullis(Shape(cas=boom), fast=fast)
    p.load_dir(BUNDLE)
    d = p.decide(failure(at(0)))
    assert d.outcome == "deny" and d.error.kind == "store"
    assert "cas timed out" in d.error.message
    assert Portcullis(Shape(cas=lambda w: [Written(1), Written(2), Written(3)][: len(w) + 1]), fast=fast).store


def test_tuples_are_accepted_as_entries():
    mem = MemoryStore()
    store = Shape(get=lambda keys: [(e.key, e.value, e.version) for e in mem.get(keys)], cas=mem.compare_and_set)
    a, b = Portcullis(store), Portcullis()
    a.load_dir(BUNDLE)
    b.load_dir(BUNDLE)
    for i in range(30):
        assert a.decide(failure(at(i))).to_dict() == b.decide(failure(at(i))).to_dict()
    assert len(mem) > 0


def test_memory_store_compare_and_set_per_key_versions_only_grow():
    s = MemoryStore()
    [w1] = s.compare_and_set([Write("a", "1", 0)])
    assert isinstance(w1, Written) and w1.version > 0
    [stale] = s.compare_and_set([Write("a", "2", 0)])
    assert stale == Conflict(Entry("a", "1", w1.version))
    [deleted] = s.compare_and_set([Write("a", None, w1.version)])
    assert deleted == Written(0)
    assert s.get(["a"]) == [Entry("a", None, 0)]
    [w2] = s.compare_and_set([Write("a", "3", 0)])
    assert w2.version > w1.version, "a re-created key never repeats a version"
    r = s.compare_and_set([Write("b", "x", 5), Write("c", "y", 0)])
    assert isinstance(r[0], Conflict) and isinstance(r[1], Written)
    assert len(s) == 2
    assert isinstance(s, portcullis.Store)


def test_instances_are_isolated():
    a, b = Portcullis(), Portcullis()
    a.load_dir(BUNDLE)
    b.load_dir(BUNDLE)
    lock_out(a)
    assert b.decide(LOGIN).outcome == "allow"
    assert len(a.store) > 0 and len(b.store) == 0


@pytest.mark.parametrize("fast", PATHS)
def test_decide_batch_carries_state_like_sequential_decides(fast):
    reqs = [failure(at(i)) for i in range(30)] + [dict(LOGIN, now=at(31))]
    a, b = Portcullis(fast=fast), Portcullis(fast=fast)
    a.load_dir(BUNDLE)
    b.load_dir(BUNDLE)
    assert [d.to_dict() for d in a.decide_batch(reqs)] == [b.decide(r).to_dict() for r in reqs]


def test_read_bundle_dir_keeps_bundle_files_only(tmp_path: Path):
    (tmp_path / "tests/sub").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    for name, text in {
        "portcullis.toml": "a",
        "README.md": "no",
        ".hidden.cedar": "no",
        ".git/x.json": "no",
        "tests/sub/c.yml": "c",
        "tests/b.yaml": "b",
        "a.cedar": "p",
    }.items():
        (tmp_path / name).write_text(text)
    assert portcullis.read_bundle_dir(tmp_path) == [
        ("a.cedar", "p"),
        ("portcullis.toml", "a"),
        ("tests/b.yaml", "b"),
        ("tests/sub/c.yml", "c"),
    ]
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(PortcullisError, match="not UTF-8"):
        portcullis.read_bundle_dir(tmp_path)


def _deadline_once(p: Portcullis, ticks: int) -> None:
    """The next call gets `ticks` epochs (10 ms each); the instance rebuilt
    after its trap gets the normal deadline back."""
    normal = p._ticks
    p._ticks = ticks
    rebuild = p._instantiate

    def once() -> None:
        p._ticks = normal
        rebuild()

    p._instantiate = once  # type: ignore[method-assign]


@pytest.mark.parametrize("fast", PATHS)
def test_a_call_past_its_deadline_is_interrupted_fails_closed_and_recovers(bundle_files, fast):
    p = Portcullis(fast=fast)
    info = p.load(bundle_files)
    _deadline_once(p, 1)
    batch = [failure(at(i % 600)) for i in range(20000)]  # far longer than one 10 ms epoch
    out = p.decide_batch(batch)
    assert len(out) == len(batch)
    assert all(d.outcome == "deny" and d.error.kind == "engine-fault" for d in out)
    assert "interrupt" in out[0].error.message
    assert p.describe() == info, "the bundle was reloaded into the new instance"
    assert p.decide(LOGIN).outcome == "allow"


def test_a_trap_in_decide_is_a_fail_closed_deny_then_recovery(bundle_files):
    p = Portcullis(timeout_ms=2000)
    info = p.load(bundle_files)
    _deadline_once(p, 0)  # the next call is interrupted at once
    d = p.decide(LOGIN)
    assert d.outcome == "deny" and not d.allowed
    assert d.error.kind == "engine-fault"
    assert "guest trapped in decide" in d.error.message
    assert len(d.audit["request_digest"]) == 64
    assert p.describe() == info, "the bundle was reloaded into the new instance"
    assert p.decide(LOGIN).outcome == "allow"


class Racy(MemoryStore):
    """Another writer gets in first on the first compare-and-set: the
    engine sees a Conflict (with the current entry) and retries."""

    def __init__(self):
        super().__init__()
        self.cas_calls = 0
        self.conflicts = 0

    def compare_and_set(self, writes):
        self.cas_calls += 1
        if self.cas_calls == 1:
            for w in writes:
                if w.value is not None:
                    cur = self.get([w.key])[0]
                    super().compare_and_set([Write(w.key, w.value, cur.version)])
        out = super().compare_and_set(writes)
        self.conflicts += sum(isinstance(r, Conflict) for r in out)
        return out


@pytest.mark.parametrize("fast", PATHS)
def test_a_conflicting_write_is_retried_by_the_engine(fast):
    store = Racy()
    p = Portcullis(store, fast=fast)
    p.load_dir(BUNDLE)
    d = p.decide(failure(at(0)))
    assert store.conflicts > 0, "the race did not happen"
    assert store.cas_calls >= 2, "the engine did not retry after the conflict"
    assert d.error is None, d.error
