"""One guest instance with its own store, run by wasmtime-py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import weakref
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import wasmtime
from wasmtime import component as wc

from . import _abi
from ._store import MemoryStore
from ._types import (
    BundleInfo,
    BundleProblem,
    CaseReport,
    Decision,
    Location,
    PortcullisError,
)

BUNDLE_EXTENSIONS = ("toml", "cedarschema", "cedar", "json", "yaml", "yml")
MAX_FILE_BYTES = 8 * 1024 * 1024
# The engine's limits (engine/src/limits.rs), checked here too so that an
# oversized input is refused by name without being copied into the guest.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_BUNDLE_BYTES = 16 * 1024 * 1024

BundleFiles = Union[Mapping[str, str], Iterable[tuple[str, str]]]
RequestLike = Union[str, bytes, Mapping[str, Any]]

# ---------------------------------------------------------------- the runtime

_TICK_S = 0.01


class _Runtime:
    """The wasmtime engine and the compiled component, once per process.
    Compiled code is cached on disk by wasmtime, so later processes load in
    milliseconds instead of compiling the ~7 MB guest again."""

    def __init__(self, wasm: Path) -> None:
        cfg = wasmtime.Config()
        cfg.epoch_interruption = True
        if os.environ.get("PORTCULLIS_WASMTIME_CACHE", "1") != "0":
            try:
                cfg.cache = True
            except wasmtime.WasmtimeError:
                pass
        self.engine = wasmtime.Engine(cfg)
        self.component = wc.Component.from_file(self.engine, str(wasm))
        self.wasm = wasm
        # Deadlines count engine epochs; one daemon thread advances them.
        ticker = threading.Thread(target=self._tick, name="portcullis-epoch", daemon=True)
        ticker.start()

    def _tick(self) -> None:
        engine = weakref.ref(self.engine)
        while True:
            time.sleep(_TICK_S)
            e = engine()
            if e is None:
                return
            e.increment_epoch()
            del e


_runtime: Optional[_Runtime] = None
_runtime_lock = threading.Lock()


def guest_path() -> Path:
    """The guest component: $PORTCULLIS_WASM, else the copy inside this package."""
    env = os.environ.get("PORTCULLIS_WASM")
    if env:
        return Path(env)
    return Path(str(resources.files(__package__).joinpath("portcullis_guest.wasm")))


def _get_runtime() -> _Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            wasm = guest_path()
            if not wasm.is_file():
                raise PortcullisError(
                    f"the guest component is missing ({wasm}); build it with `make bindings-python` "
                    "(or set PORTCULLIS_WASM to target/wasm32-wasip2/guest/portcullis_guest.wasm)"
                )
            _runtime = _Runtime(wasm)
        return _runtime


# ---------------------------------------------------------------- helpers


def read_bundle_dir(path: Union[str, os.PathLike[str]]) -> list[tuple[str, str]]:
    """A bundle directory as (relative name, text) pairs, exactly as the Rust
    host reads it: .toml .cedarschema .cedar .json .yaml .yml files, hidden
    files and folders skipped, names with `/`, sorted."""
    root = Path(path)
    if not root.is_dir():
        raise PortcullisError(f"bundle `{root}` is not a directory")
    out: list[tuple[str, str]] = []

    def walk(d: Path) -> None:
        for p in d.iterdir():
            if p.name.startswith("."):
                continue
            if p.is_dir():
                walk(p)
                continue
            if p.suffix[1:] not in BUNDLE_EXTENSIONS or p.suffix == p.name:
                continue
            size = p.stat().st_size
            if size > MAX_FILE_BYTES:
                raise PortcullisError(f"`{p}` is {size} bytes, over the limit of {MAX_FILE_BYTES}")
            try:
                text = p.read_bytes().decode("utf-8")
            except UnicodeDecodeError as e:
                raise PortcullisError(f"`{p}` is not UTF-8 text: {e}") from None
            out.append(("/".join(p.relative_to(root).parts), text))

    walk(root)
    out.sort()
    return out


def _files(bundle: BundleFiles) -> list[tuple[str, str]]:
    items = list(bundle.items()) if isinstance(bundle, Mapping) else list(bundle)
    out = []
    for item in items:
        if not (isinstance(item, tuple) or isinstance(item, list)) or len(item) != 2:
            raise PortcullisError("bundle files must be (name, text) pairs or a mapping of name -> text")
        name, text = item
        if not isinstance(name, str) or not isinstance(text, str):
            raise PortcullisError("every bundle file must be a (name, text) pair of str")
        out.append((name, text))
    return out


def request_text(request: RequestLike) -> str:
    """A request as JSON text. Mappings are written compactly, as
    JavaScript's JSON.stringify writes them, so that the same request has
    the same audit digest from every language."""
    if isinstance(request, str):
        return request
    if isinstance(request, (bytes, bytearray)):
        return bytes(request).decode("utf-8")
    return json.dumps(request, separators=(",", ":"), ensure_ascii=False)


def _info(r: Any) -> BundleInfo:
    return BundleInfo(
        name=r.name,
        version=r.version,
        namespace=r.namespace,
        hash=r.hash,
        policy_ids=tuple(getattr(r, "policy-ids")),
        case_count=int(getattr(r, "case-count")),
    )


def _problem(p: Any) -> BundleProblem:
    loc = p.location
    return BundleProblem(
        kind=p.kind,
        message=p.message,
        location=Location(loc.file, loc.line, loc.column, loc.snippet) if loc is not None else None,
    )


_ENGINE_VERSION = re.compile(r'"engine":"([^"]*)"')

# ---------------------------------------------------------------- the engine


class Portcullis:
    """One guest instance with its own store.

    Calls are synchronous and serialised per instance (a lock), so one
    instance may be shared by threads; use one per thread for parallelism.

    `store`: anything with `get(keys)` and `compare_and_set(writes)` (see
    `portcullis.Store`); default a new MemoryStore. `timeout_ms`: longest
    guest call before it is interrupted (fail closed). `max_memory_mib`:
    cap on the guest's linear memory.
    """

    def __init__(
        self,
        store: Any = None,
        *,
        timeout_ms: int = 2000,
        max_memory_mib: int = 256,
        fast: Optional[bool] = None,
    ) -> None:
        self._store = store if store is not None else MemoryStore()
        if not callable(getattr(self._store, "get", None)) or not callable(getattr(self._store, "compare_and_set", None)):
            raise PortcullisError("a store needs get(keys) and compare_and_set(writes)")
        self._rt = _get_runtime()
        self._fast = _abi.fast_enabled() if fast is None else (fast and _abi.FAST_AVAILABLE)
        self._ticks = max(1, int(timeout_ms / 1000 / _TICK_S + 0.999))
        self._memory = max_memory_mib * 1024 * 1024
        self._bridge = _abi.StoreBridge(self._store)
        self._lock = threading.RLock()
        self._files: Optional[list[tuple[str, str]]] = None
        self._engine_version = ""
        self._ident: Optional[int] = None
        self._instantiate()

    # -- instance lifecycle

    def _instantiate(self) -> None:
        rt = self._rt
        linker = wc.Linker(rt.engine)
        linker.add_wasip2()
        if self._fast:
            if self._ident is not None:
                _abi.release_store(self._ident)
            self._ident = _abi.add_store_fast(linker, self._bridge)
            weakref.finalize(self, _abi.release_store, self._ident)
        else:
            _abi.add_store_generic(linker, self._bridge)
        wstore = wasmtime.Store(rt.engine)
        wasi = wasmtime.WasiConfig()  # no environment, arguments or files
        wasi.inherit_stderr()  # a guest panic message is worth seeing
        wstore.set_wasi(wasi)
        wstore.set_limits(memory_size=self._memory)
        wstore.set_epoch_deadline(self._ticks)
        instance = linker.instantiate(wstore, rt.component)
        iface = instance.get_export_index(wstore, _abi.ENGINE_INTERFACE)
        if iface is None:
            raise PortcullisError(f"the guest does not export {_abi.ENGINE_INTERFACE}")

        def func(name: str) -> wc.Func:
            idx = instance.get_export_index(wstore, name, iface)
            f = instance.get_func(wstore, idx) if idx is not None else None
            if f is None:
                raise PortcullisError(f"the guest does not export `{name}` (an older guest? rebuild it)")
            return f

        self._linker = linker
        self._wstore = wstore
        self._f = {n: func(n) for n in ("load", "decide", "decide-batch", "run-cases", "case-plan", "check-decision", "describe")}

    def _recover(self) -> None:
        """After a trap the instance cannot be re-entered: a new one on the
        same store, with the last accepted bundle loaded again."""
        self._instantiate()
        if self._files is not None:
            try:
                self._wstore.set_epoch_deadline(self._ticks)
                self._f["load"](self._wstore, self._files)
            except Exception:  # noqa: BLE001 - then calls answer no-bundle denies: fail closed
                pass

    def _call(self, what: str, f: Any) -> Any:
        with self._lock:
            self._wstore.set_epoch_deadline(self._ticks)
            try:
                return f()
            except Exception as e:  # a trap, a deadline, an out-of-memory
                try:
                    self._recover()
                except Exception as r:  # noqa: BLE001 - the next call tries again
                    raise PortcullisError(
                        f"guest trapped in {what}: {e}; restarting it failed: {r}", kind="guest-trap"
                    ) from e
                raise PortcullisError(f"guest trapped in {what}: {e}", kind="guest-trap") from e

    # -- the calls

    @property
    def store(self) -> Any:
        """The store this instance reads and writes."""
        return self._store

    @property
    def fast(self) -> bool:
        """True when the hot calls use the direct ctypes path."""
        return self._fast

    @property
    def crossings(self) -> tuple[int, int]:
        """(gets, compare-and-sets) made by the guest into the store so far."""
        return self._bridge.gets, self._bridge.cases

    def load(self, files: BundleFiles) -> BundleInfo:
        """Parse, validate strictly and install a bundle. Atomic: on any
        problem the previous bundle stays and PortcullisError (kind
        `refused`, with `problems`) is raised."""
        pairs = _files(files)
        total = sum(len(n.encode("utf-8")) + len(t.encode("utf-8")) for n, t in pairs)
        if total > MAX_BUNDLE_BYTES:
            problem = BundleProblem(kind="limit", message=f"bundle is {total} bytes, over the limit of {MAX_BUNDLE_BYTES}")
            raise PortcullisError(f"bundle refused: {problem}", kind="refused", problems=[problem])
        r = self._call("load", lambda: self._f["load"](self._wstore, pairs))
        ok, value = _abi.unwrap_result(r, wc.Record)
        if not ok:
            problems = [_problem(p) for p in value]
            summary = "; ".join(str(p) for p in problems) or "no details"
            raise PortcullisError(f"bundle refused: {summary}", kind="refused", problems=problems)
        self._files = pairs
        return _info(value)

    def load_dir(self, path: Union[str, os.PathLike[str]]) -> BundleInfo:
        """Read a bundle directory (see read_bundle_dir) and load it."""
        return self.load(read_bundle_dir(path))

    def decide_json(self, request: str) -> str:
        """decide() on JSON text, answering JSON text."""
        size = len(request.encode("utf-8"))
        if size > MAX_REQUEST_BYTES:
            return json.dumps(self._oversized(size, request), separators=(",", ":"))
        try:
            if self._fast:
                d = self._call("decide", lambda: _abi.call_str(self._f["decide"], self._wstore, request))
            else:
                d = self._call("decide", lambda: self._f["decide"](self._wstore, request))
        except PortcullisError as e:
            return json.dumps(self._fault(str(e), request), separators=(",", ":"))
        if not self._engine_version:
            m = _ENGINE_VERSION.search(d)
            if m:
                self._engine_version = m.group(1)
        return d

    def decide(self, request: RequestLike) -> Decision:
        """Decide on one request (a mapping or JSON text). Always a
        decision; faults are a `deny` whose `error` names the fault."""
        return Decision.from_dict(json.loads(self.decide_json(request_text(request))))

    def decide_batch(self, requests: Sequence[RequestLike]) -> list[Decision]:
        """Decide many in order, state carried between them."""
        texts = [request_text(r) for r in requests]
        sizes = [len(t.encode("utf-8")) for t in texts]
        if any(n > MAX_REQUEST_BYTES for n in sizes):
            # Oversized ones are denied here; the rest cross, in order.
            fit = [t for t, n in zip(texts, sizes) if n <= MAX_REQUEST_BYTES]
            decided = iter(self.decide_batch(fit))
            return [
                Decision.from_dict(self._oversized(n, t)) if n > MAX_REQUEST_BYTES else next(decided)
                for t, n in zip(texts, sizes)
            ]
        try:
            if self._fast:
                out = self._call("decide-batch", lambda: _abi.call_strs(self._f["decide-batch"], self._wstore, texts))
            else:
                out = self._call("decide-batch", lambda: self._f["decide-batch"](self._wstore, texts))
        except PortcullisError as e:
            return [Decision.from_dict(self._fault(str(e), t)) for t in texts]
        return [Decision.from_dict(json.loads(d)) for d in out]

    def check(self) -> CaseReport:
        """Run the bundle's own cases inside the guest, each from a fresh
        in-memory store (never this instance's store)."""
        r = self._call("run-cases", lambda: self._f["run-cases"](self._wstore))
        return CaseReport.from_dict(json.loads(self._ok_string(r)))

    def case_plan(self) -> list[dict[str, Any]]:
        """Every case expanded into the requests to send:
        [{file, name, steps: [{step, request, expect?}]}]."""
        r = self._call("case-plan", lambda: self._f["case-plan"](self._wstore))
        return json.loads(self._ok_string(r))

    def check_decision(self, expect: Union[str, Mapping[str, Any]], decision: Union[str, Decision, Mapping[str, Any]]) -> list[str]:
        """The failures of a decision against an expectation; empty when it holds."""
        e = expect if isinstance(expect, str) else json.dumps(expect, separators=(",", ":"))
        if isinstance(decision, Decision):
            decision = decision.to_dict()
        d = decision if isinstance(decision, str) else json.dumps(decision, separators=(",", ":"))
        r = self._call("check-decision", lambda: self._f["check-decision"](self._wstore, e, d))
        if isinstance(r, wc.Variant):
            ok, value = r.tag == "ok", r.payload
        else:
            ok, value = isinstance(r, list), r
        if not ok:
            raise PortcullisError(str(value))
        return list(value)

    def describe(self) -> Optional[BundleInfo]:
        """The loaded bundle, or None."""
        r = self._call("describe", lambda: self._f["describe"](self._wstore))
        return _info(r) if r is not None else None

    @staticmethod
    def _ok_string(r: Any) -> str:
        # result<string, string>: both sides are str, so wasmtime-py tags it.
        if isinstance(r, wc.Variant):
            if r.tag == "ok":
                return r.payload
            msg = str(r.payload)
            raise PortcullisError(msg, kind="no-bundle" if "no bundle" in msg else "error")
        return r

    def _oversized(self, size: int, request: str) -> dict[str, Any]:
        """The deny for a request over the size limit (as the engine words it)."""
        return self._fault(
            f"request is {size} bytes, over the limit of {MAX_REQUEST_BYTES}", request, kind="invalid-request"
        )

    def _fault(self, message: str, request: str, kind: str = "engine-fault") -> dict[str, Any]:
        """The fail-closed deny the engine writes for a fault
        (Decision::fault), for a guest that trapped."""
        return {
            "outcome": "deny",
            "allowed": False,
            "policies": [],
            "reasons": [f"error: {message}"],
            "escalation": None,
            "retry_after": None,
            "pathway": "authentic",
            "error": {"kind": kind, "message": message},
            "audit": {
                "time": "",
                "request_digest": hashlib.sha256(request.encode("utf-8")).hexdigest(),
                "principal": "",
                "action": "",
                "resource": "",
                "outcome": "deny",
                "policies": [],
                "reasons": [],
                "pathway": "authentic",
                "facts": None,
                "bundle": "",
                "engine": self._engine_version,
                "error": f"{kind}: {message}",
            },
        }
