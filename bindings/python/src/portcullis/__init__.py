"""portcullis for Python: the same WebAssembly guest component as every
other host (target/wasm32-wasip2/guest/portcullis_guest.wasm), run by
wasmtime. No decision logic lives here.

    import portcullis
    portcullis.load_dir("policies")
    d = portcullis.decide({"principal": {"type": "User", "id": "alice@example.com"},
                           "action": "login", "resource": {"type": "App", "id": "sales-cloud"},
                           "context": {"ip": "203.0.113.7"}, "now": "2026-11-22T10:00:00Z"})
    d.outcome, d.reasons

The module-level functions use one default instance with an in-memory
store; `Portcullis(store=...)` makes instances with their own store.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Sequence, Union

from ._engine import BUNDLE_EXTENSIONS, Portcullis, guest_path, read_bundle_dir, request_text
from ._store import Conflict, Entry, MemoryStore, Store, Write, Written, WriteResult
from ._types import (
    OUTCOMES,
    BundleInfo,
    BundleProblem,
    CaseFailure,
    CaseReport,
    CaseResult,
    Decision,
    DecisionError,
    Location,
    PortcullisError,
)

__version__ = "0.1.0"

__all__ = [
    "BUNDLE_EXTENSIONS",
    "OUTCOMES",
    "BundleInfo",
    "BundleProblem",
    "CaseFailure",
    "CaseReport",
    "CaseResult",
    "Conflict",
    "Decision",
    "DecisionError",
    "Entry",
    "Location",
    "MemoryStore",
    "Portcullis",
    "PortcullisError",
    "Store",
    "Write",
    "WriteResult",
    "Written",
    "check",
    "decide",
    "decide_batch",
    "default_instance",
    "describe",
    "guest_path",
    "load",
    "load_dir",
    "read_bundle_dir",
    "request_text",
]

_default: Optional[Portcullis] = None
_default_lock = threading.Lock()


def default_instance() -> Portcullis:
    """The module's default instance (in-memory store), made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Portcullis()
        return _default


def load(files: Any) -> BundleInfo:
    """Load a bundle ((name, text) pairs or a mapping) into the default instance."""
    return default_instance().load(files)


def load_dir(path: Union[str, "os.PathLike[str]"]) -> BundleInfo:
    """Load a bundle directory into the default instance."""
    return default_instance().load_dir(path)


def decide(request: Any) -> Decision:
    """Decide with the default instance."""
    return default_instance().decide(request)


def decide_batch(requests: Sequence[Any]) -> list[Decision]:
    """Decide many, in order, with the default instance."""
    return default_instance().decide_batch(requests)


def check() -> CaseReport:
    """Run the default instance's bundle cases."""
    return default_instance().check()


def describe() -> Optional[BundleInfo]:
    """The default instance's bundle, or None."""
    return default_instance().describe()
