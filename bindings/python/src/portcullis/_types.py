"""Typed results: decisions, bundle info and problems, case reports, errors.

The shapes follow wit/portcullis.wit and the decision JSON the engine
writes. A Decision keeps the engine's JSON whole (`to_dict()`), so nothing
is lost even when the engine adds fields this module does not name yet.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

OUTCOMES = ("allow", "redact", "challenge", "throttle", "deny", "lock")
"""Every outcome, least severe first."""

_KNOWN = {
    "outcome",
    "allowed",
    "policies",
    "reasons",
    "escalation",
    "retry_after",
    "pathway",
    "error",
    "audit",
}


@dataclass(frozen=True)
class DecisionError:
    """The fault that forced a deny."""

    kind: str
    """`invalid-request`, `no-bundle`, `store`, `evaluation`, `engine-fault`."""
    message: str
    field: Optional[str] = None
    """The request field at fault, for `invalid-request`."""


@dataclass(frozen=True)
class Decision:
    """One decision, as the engine wrote it."""

    outcome: str
    allowed: bool
    policies: tuple[str, ...]
    reasons: tuple[str, ...]
    escalation: Optional[str]
    retry_after: Optional[int]
    pathway: str
    error: Optional[DecisionError]
    audit: Mapping[str, Any]
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Top-level fields this version does not name (kept, not dropped)."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Decision":
        err = d.get("error")
        return cls(
            outcome=d["outcome"],
            allowed=bool(d["allowed"]),
            policies=tuple(d.get("policies", ())),
            reasons=tuple(d.get("reasons", ())),
            escalation=d.get("escalation"),
            retry_after=d.get("retry_after"),
            pathway=d.get("pathway", ""),
            error=DecisionError(err["kind"], err["message"], err.get("field")) if err else None,
            audit=d.get("audit", {}),
            extra={k: v for k, v in d.items() if k not in _KNOWN},
            raw=d,
        )

    def to_dict(self) -> dict[str, Any]:
        """The engine's JSON, every field, as a new dict."""
        return copy.deepcopy(dict(self.raw))


@dataclass(frozen=True)
class Location:
    """Where a bundle problem is (1-based; 0 when unknown)."""

    file: str
    line: int
    column: int
    snippet: str


@dataclass(frozen=True)
class BundleProblem:
    """A reason a bundle cannot be accepted."""

    kind: str
    """`manifest`, `schema`, `policy-parse`, `policy-validation`, `entities`,
    `case-file`, `missing-file`, `limit`."""
    message: str
    location: Optional[Location] = None

    def __str__(self) -> str:
        loc = self.location
        where = ""
        if loc is not None:
            where = loc.file
            if loc.line:
                where += f":{loc.line}"
                if loc.column:
                    where += f":{loc.column}"
            where += ": "
        return f"{where}{self.kind}: {self.message}"


@dataclass(frozen=True)
class BundleInfo:
    """What a loaded bundle is."""

    name: str
    version: str
    namespace: str
    hash: str
    """SHA-256 over every file (name and text), lowercase hex."""
    policy_ids: tuple[str, ...]
    case_count: int


@dataclass(frozen=True)
class CaseFailure:
    step: int
    message: str


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    failures: tuple[CaseFailure, ...]


@dataclass(frozen=True)
class CaseReport:
    """The result of running a bundle's own cases."""

    passed: int
    failed: int
    cases: tuple[CaseResult, ...]

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CaseReport":
        return cls(
            passed=d["passed"],
            failed=d["failed"],
            cases=tuple(
                CaseResult(
                    c["file"],
                    c["name"],
                    c["passed"],
                    tuple(CaseFailure(f["step"], f["message"]) for f in c["failures"]),
                )
                for c in d["cases"]
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "cases": [
                {
                    "file": c.file,
                    "name": c.name,
                    "passed": c.passed,
                    "failures": [{"step": f.step, "message": f.message} for f in c.failures],
                }
                for c in self.cases
            ],
        }


class PortcullisError(Exception):
    """An error from portcullis, carrying the engine's own message.

    `kind` is `refused` (a bundle with `problems`), `no-bundle`,
    `guest-trap`, or `error`.
    """

    def __init__(self, message: str, *, kind: str = "error", problems: Optional[list[BundleProblem]] = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.problems: list[BundleProblem] = list(problems or [])
