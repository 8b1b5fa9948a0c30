"""The state behind the engine: the `store` interface of wit/portcullis.wit.

A store reads many keys with one `get` and applies many conditional writes
with one `compare_and_set` (crossings are dear in Python: one of each per
decision at most). Versions: 0 means absent; they only grow, across deletes
too, so a re-created key never repeats a version. Values are strings the
engine writes (with any expiry inside), so no TTL is needed.

An exception raised by a store is a store failure: the engine fails closed
(a `deny` whose error kind is `store`) and the instance keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Union, runtime_checkable


@dataclass(frozen=True)
class Entry:
    """One key as read: version 0 means absent (and value None)."""

    key: str
    value: Optional[str]
    version: int


@dataclass(frozen=True)
class Write:
    """Applied only if the key is still at `expected_version` (0: absent).
    A value of None deletes the key."""

    key: str
    value: Optional[str]
    expected_version: int


@dataclass(frozen=True)
class Written:
    """Written; the key's new version (0 after a delete)."""

    version: int


@dataclass(frozen=True)
class Conflict:
    """The version had moved on: the current entry."""

    entry: Entry


WriteResult = Union[Written, Conflict]


@runtime_checkable
class Store(Protocol):
    """What a store provides (Redis, a database, shared memory ...)."""

    def get(self, keys: Sequence[str]) -> Sequence[Entry]:
        """The entries of `keys`, in the same order."""
        ...

    def compare_and_set(self, writes: Sequence[Write]) -> Sequence[WriteResult]:
        """Apply each write with its own compare-and-set, in order; a
        conflict on one does not undo the others."""
        ...


class MemoryStore:
    """State in process memory (the default, as in the CLI)."""

    def __init__(self) -> None:
        self._map: dict[str, tuple[str, int]] = {}
        self._next = 0

    def _entry(self, key: str) -> Entry:
        e = self._map.get(key)
        return Entry(key, e[0], e[1]) if e else Entry(key, None, 0)

    def get(self, keys: Sequence[str]) -> list[Entry]:
        return [self._entry(k) for k in keys]

    def compare_and_set(self, writes: Sequence[Write]) -> list[WriteResult]:
        out: list[WriteResult] = []
        for w in writes:
            cur = self._map.get(w.key)
            if (cur[1] if cur else 0) != w.expected_version:
                out.append(Conflict(self._entry(w.key)))
            elif w.value is None:
                self._map.pop(w.key, None)
                out.append(Written(0))
            else:
                self._next += 1
                self._map[w.key] = (w.value, self._next)
                out.append(Written(self._next))
        return out

    def __len__(self) -> int:
        return len(self._map)

    def clear(self) -> None:
        """Forget every key (versions keep growing)."""
        self._map.clear()


U64_MAX = (1 << 64) - 1


def check_version(v: object, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= U64_MAX:
        raise ValueError(f"{what}: version must be an int in u64 range, got {v!r}")
    return v


def check_entry(e: object, what: str) -> tuple[str, Optional[str], int]:
    if isinstance(e, tuple) and len(e) == 3:
        key, value, version = e
    else:
        try:
            key, value, version = e.key, e.value, e.version  # type: ignore[attr-defined]
        except AttributeError:
            raise ValueError(f"{what}: expected Entry(key, value, version), got {type(e).__name__}") from None
    if not isinstance(key, str):
        raise ValueError(f"{what}: key must be a str")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what}: value of `{key}` must be a str or None")
    version = check_version(version, what)
    return key, (value if version else None), version
