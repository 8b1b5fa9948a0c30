"""Crossing the component boundary with wasmtime-py.

Two ways, giving the same values:

* the public API of `wasmtime.component` (Linker.add_func, Func.__call__):
  it re-reads every function's WIT type through ctypes on each crossing,
  which costs ~150 µs for the store's `get` alone;
* a fast path for the hot calls (`decide`, `decide-batch` and the two store
  imports), which knows their WIT types and builds wasmtime's C values
  directly with wasmtime-py's own ctypes bindings (`wasmtime._ffi`).

The fast path depends on wasmtime-py internals, so it is used only when
they are what this module expects (checked on import) and can be turned
off with PORTCULLIS_WASMTIME_FAST=0. Everything else (load, run-cases …)
always uses the public API: it runs once, not per decision.

A store's exception never crosses into the guest: it becomes the WIT
`err` of `get` / `compare-and-set`, and the engine fails closed.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from ctypes import POINTER, byref, c_char_p, string_at
from typing import Any, Optional, Sequence, Union

import wasmtime
from wasmtime import component as wc

from ._store import Conflict, Write, Written, check_entry, check_version

# ---------------------------------------------------------------- store bridge

GetAnswer = Union[list, str]  # list of (key, value, version), or an error message
CasAnswer = Union[list, str]  # list of ("written", v) | ("conflict", (key, value, version))


class StoreBridge:
    """A caller's store seen as the component's `store` import: plain
    tuples in, plain tuples or an error message out, never an exception."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.gets = 0
        self.cases = 0

    def get(self, keys: list[str]) -> GetAnswer:
        self.gets += 1
        try:
            out = list(self.store.get(keys))
            if len(out) != len(keys):
                raise ValueError(f"store.get answered {len(out)} entries for {len(keys)} keys")
            entries = []
            for want, e in zip(keys, out):
                key, value, version = check_entry(e, "store.get")
                if key != want:
                    raise ValueError(f"store.get answered key `{key}` where `{want}` was asked")
                entries.append((key, value, version))
            return entries
        except Exception as e:  # noqa: BLE001 - any store failure is reported, not raised
            return f"store get failed: {e}"

    def cas(self, writes: list[tuple[str, Optional[str], int]]) -> CasAnswer:
        self.cases += 1
        try:
            out = list(self.store.compare_and_set([Write(k, v, x) for k, v, x in writes]))
            if len(out) != len(writes):
                raise ValueError(f"store.compare_and_set answered {len(out)} results for {len(writes)} writes")
            results = []
            for r in out:
                if isinstance(r, Written):
                    results.append(("written", check_version(r.version, "store.compare_and_set")))
                elif isinstance(r, Conflict):
                    results.append(("conflict", check_entry(r.entry, "store.compare_and_set")))
                else:
                    raise ValueError(f"store.compare_and_set: each result must be Written or Conflict, got {type(r).__name__}")
            return results
        except Exception as e:  # noqa: BLE001
            return f"store compare-and-set failed: {e}"


STORE_INTERFACE = "portcullis:engine/store@0.1.0"
ENGINE_INTERFACE = "portcullis:engine/engine@0.1.0"

# ---------------------------------------------------------------- public API path


def _record(**fields: Any) -> wc.Record:
    r = wc.Record()
    for k, v in fields.items():
        setattr(r, k.replace("_", "-"), v)
    return r


def add_store_generic(linker: wc.Linker, bridge: StoreBridge) -> None:
    def entry(key: str, value: Optional[str], version: int) -> wc.Record:
        return _record(key=key, value=value, version=version)

    # result<list<entry>, string>: wasmtime-py tells ok from err by Python
    # type (list vs str); write-result: int (written) vs Record (conflict).
    def get(_store: Any, keys: list[str]) -> Any:
        ans = bridge.get(list(keys))
        if isinstance(ans, str):
            return ans
        return [entry(*e) for e in ans]

    def compare_and_set(_store: Any, writes: list[Any]) -> Any:
        ans = bridge.cas([(w.key, w.value, getattr(w, "expected-version")) for w in writes])
        if isinstance(ans, str):
            return ans
        return [v if tag == "written" else entry(*v) for tag, v in ans]

    with linker.root() as root:
        with root.add_instance(STORE_INTERFACE) as inst:
            inst.add_func("get", get)
            inst.add_func("compare-and-set", compare_and_set)


def unwrap_result(value: Any, ok_type: type) -> tuple[bool, Any]:
    """A WIT result as wasmtime-py lifts it: a tagged Variant when its two
    sides have the same Python type, else the bare value."""
    if isinstance(value, wc.Variant) and value.tag in ("ok", "err"):
        return value.tag == "ok", value.payload
    return isinstance(value, ok_type), value


# ---------------------------------------------------------------- fast path

try:
    from wasmtime import _ffi as ffi
    from wasmtime.component._enter import enter_wasm

    _VAL = ffi.wasmtime_component_val_t
    _K_STRING = ffi.WASMTIME_COMPONENT_STRING.value
    _K_LIST = ffi.WASMTIME_COMPONENT_LIST.value
    _K_RECORD = ffi.WASMTIME_COMPONENT_RECORD.value
    _K_OPTION = ffi.WASMTIME_COMPONENT_OPTION.value
    _K_RESULT = ffi.WASMTIME_COMPONENT_RESULT.value
    _K_VARIANT = ffi.WASMTIME_COMPONENT_VARIANT.value
    _K_U64 = ffi.WASMTIME_COMPONENT_U64.value
    # Our own prototypes of the C functions (not wasmtime-py's wrappers):
    # bytes go in as char* without a cast, and no Python wrapper runs.
    _P_VAL = POINTER(_VAL)
    _byte_vec_new = ctypes.CFUNCTYPE(None, POINTER(ffi.wasm_byte_vec_t), ctypes.c_size_t, c_char_p)(
        ("wasm_byte_vec_new", ffi.dll)
    )
    _val_new = ctypes.CFUNCTYPE(_P_VAL, _P_VAL)(("wasmtime_component_val_new", ffi.dll))
    _val_delete = ctypes.CFUNCTYPE(None, _P_VAL)(("wasmtime_component_val_delete", ffi.dll))
    _vallist_new_uninit = ctypes.CFUNCTYPE(None, POINTER(ffi.wasmtime_component_vallist_t), ctypes.c_size_t)(
        ("wasmtime_component_vallist_new_uninit", ffi.dll)
    )
    _valrecord_new_uninit = ctypes.CFUNCTYPE(None, POINTER(ffi.wasmtime_component_valrecord_t), ctypes.c_size_t)(
        ("wasmtime_component_valrecord_new_uninit", ffi.dll)
    )
    _func_call = ffi.wasmtime_component_func_call
    _callback_t = ffi.wasmtime_component_func_callback_t
    _add_func = ffi.wasmtime_component_linker_instance_add_func
    _ = wc.Func._from_raw  # the Func wrapper keeps the raw handle in `_func`
    FAST_AVAILABLE = wasmtime.__name__ == "wasmtime"
except (ImportError, AttributeError):  # pragma: no cover - other wasmtime-py layouts
    FAST_AVAILABLE = False


def fast_enabled() -> bool:
    return FAST_AVAILABLE and os.environ.get("PORTCULLIS_WASMTIME_FAST", "1") != "0"


def _set_str(v: Any, s: str) -> None:
    b = s.encode("utf-8")
    v.kind = _K_STRING
    _byte_vec_new(byref(v.of.string), len(b), b)


def _get_str(v: Any) -> str:
    s = v.of.string
    return string_at(s.data, s.size).decode("utf-8") if s.size else ""


def _set_name(name_vec: Any, b: bytes) -> None:
    _byte_vec_new(byref(name_vec), len(b), b)


def _set_entry(v: Any, key: str, value: Optional[str], version: int) -> None:
    v.kind = _K_RECORD
    rec = v.of.record
    _valrecord_new_uninit(byref(rec), 3)
    d = rec.data
    f0, f1, f2 = d[0], d[1], d[2]
    _byte_vec_new(byref(f0.name), 3, b"key")
    kv = f0.val
    kb = key.encode("utf-8")
    kv.kind = _K_STRING
    _byte_vec_new(byref(kv.of.string), len(kb), kb)
    _byte_vec_new(byref(f1.name), 5, b"value")
    opt = f1.val
    opt.kind = _K_OPTION
    if value is None:
        opt.of.option = None
    else:
        tmp = _VAL()
        _set_str(tmp, value)
        opt.of.option = _val_new(byref(tmp))
    _byte_vec_new(byref(f2.name), 7, b"version")
    ver = f2.val
    ver.kind = _K_U64
    ver.of.u64 = version


def _set_result(r: Any, ok: bool, payload: Any) -> None:
    r.kind = _K_RESULT
    r.of.result.is_ok = ok
    r.of.result.val = _val_new(byref(payload))


def _set_err(r: Any, message: str) -> None:
    tmp = _VAL()
    _set_str(tmp, message)
    _set_result(r, False, tmp)


# Store bridges by the id handed to wasmtime as the callback's data.
_BRIDGES: dict[int, StoreBridge] = {}
_IDS = itertools.count(1)


def _fast_get(data: Any, _ctx: Any, _ty: Any, args: Any, _nargs: int, results: Any, _nres: int) -> int:
    try:
        bridge = _BRIDGES[data]
        lst = args[0].of.list
        keys = [_get_str(lst.data[i]) for i in range(lst.size)]
        ans = bridge.get(keys)
        if isinstance(ans, str):
            _set_err(results[0], ans)
            return 0
        out = _VAL()
        out.kind = _K_LIST
        _vallist_new_uninit(byref(out.of.list), len(ans))
        items = out.of.list.data
        for i, (key, value, version) in enumerate(ans):
            _set_entry(items[i], key, value, version)
        _set_result(results[0], True, out)
    except Exception as e:  # noqa: BLE001 - never unwind through wasm
        _set_err(results[0], f"store get failed in the binding: {e}")
    return 0


def _fast_cas(data: Any, _ctx: Any, _ty: Any, args: Any, _nargs: int, results: Any, _nres: int) -> int:
    try:
        bridge = _BRIDGES[data]
        lst = args[0].of.list
        writes = []
        for i in range(lst.size):
            fields = lst.data[i].of.record.data
            opt = fields[1].val.of.option
            writes.append((_get_str(fields[0].val), _get_str(opt.contents) if opt else None, int(fields[2].val.of.u64)))
        ans = bridge.cas(writes)
        if isinstance(ans, str):
            _set_err(results[0], ans)
            return 0
        out = _VAL()
        out.kind = _K_LIST
        _vallist_new_uninit(byref(out.of.list), len(ans))
        items = out.of.list.data
        for i, (tag, v) in enumerate(ans):
            item = items[i]
            item.kind = _K_VARIANT
            tmp = _VAL()
            if tag == "written":
                _set_name(item.of.variant.discriminant, b"written")
                tmp.kind = _K_U64
                tmp.of.u64 = v
            else:
                _set_name(item.of.variant.discriminant, b"conflict")
                _set_entry(tmp, *v)
            item.of.variant.val = _val_new(byref(tmp))
        _set_result(results[0], True, out)
    except Exception as e:  # noqa: BLE001
        _set_err(results[0], f"store compare-and-set failed in the binding: {e}")
    return 0


if FAST_AVAILABLE:
    _GET_CB = _callback_t(_fast_get)
    _CAS_CB = _callback_t(_fast_cas)
    _NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _data: None)


def add_store_fast(linker: wc.Linker, bridge: StoreBridge) -> int:
    """Register the store import with the fast callbacks; returns the id to
    release with `release_store` when the instance goes away."""
    ident = next(_IDS)
    _BRIDGES[ident] = bridge
    with linker.root() as root:
        with root.add_instance(STORE_INTERFACE) as inst:
            for name, cb in ((b"get", _GET_CB), (b"compare-and-set", _CAS_CB)):
                err = _add_func(inst.ptr(), ctypes.create_string_buffer(name), len(name), cb, ident, _NO_FINALIZER)
                if err:
                    raise wasmtime.WasmtimeError._from_ptr(err)
    return ident


def release_store(ident: int) -> None:
    _BRIDGES.pop(ident, None)


def call_str(func: wc.Func, store: wasmtime.Store, arg: str) -> str:
    """Call an export `func(string) -> string`."""
    params = (_VAL * 1)()
    _set_str(params[0], arg)
    res = _VAL()
    try:
        enter_wasm(lambda: _func_call(byref(func._func), store._context(), params, 1, byref(res), 1))
        return _get_str(res)
    finally:
        _val_delete(byref(params[0]))
        _val_delete(byref(res))


def call_strs(func: wc.Func, store: wasmtime.Store, args: Sequence[str]) -> list[str]:
    """Call an export `func(list<string>) -> list<string>`."""
    params = (_VAL * 1)()
    params[0].kind = _K_LIST
    _vallist_new_uninit(byref(params[0].of.list), len(args))
    items = params[0].of.list.data
    for i, a in enumerate(args):
        _set_str(items[i], a)
    res = _VAL()
    try:
        enter_wasm(lambda: _func_call(byref(func._func), store._context(), params, 1, byref(res), 1))
        lst = res.of.list
        return [_get_str(lst.data[i]) for i in range(lst.size)]
    finally:
        _val_delete(byref(params[0]))
        _val_delete(byref(res))

