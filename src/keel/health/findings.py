"""Findings: what the health checks found, kept as facts in the ledger.

A finding is entity `finding:<check>:<subject>` (its key is `<check>:<subject>`), with
`keel.finding/state` open or resolved. Recording is idempotent: a finding that is still
true stays open and costs no transaction (unless its message or severity changed, which is
written as a change of that attribute); one no longer true is resolved; a new one is
opened, and one that comes back after being resolved is reopened on the same entity. The
ledger keeps every earlier state, so a finding's history is `view.history(entity)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from ..ledger import Conflict, Ledger, SchemaError, View
from ..ledger.instants import format_instant

SCHEMA = [
    {
        "attribute": "keel.finding/key",
        "type": "string",
        "unique": "identity",
        "doc": "check:subject, a finding's identity",
    },
    {"attribute": "keel.finding/check", "type": "string", "doc": "the check that found it"},
    {"attribute": "keel.finding/subject", "type": "string", "doc": "what it is about"},
    {"attribute": "keel.finding/message", "type": "string", "doc": "what is wrong, in a line"},
    {"attribute": "keel.finding/state", "type": "string", "doc": "open or resolved"},
    {"attribute": "keel.finding/opened", "type": "instant", "doc": "when it was (re)opened"},
    {"attribute": "keel.finding/resolved", "type": "instant", "doc": "when it was resolved"},
    {"attribute": "keel.finding/severity", "type": "string", "doc": "warning or error"},
]

SEVERITIES = ("warning", "error")
_P = "keel.finding/"


def finding_key(check: str, subject: str) -> str:
    return f"{check}:{subject}"


def finding_entity(key: str) -> str:
    return f"finding:{key}"


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    message: str
    severity: str = "warning"
    state: str = "open"
    opened: int | None = None
    resolved: int | None = None

    @property
    def key(self) -> str:
        return finding_key(self.check, self.subject)

    @property
    def entity(self) -> str:
        return finding_entity(self.key)

    def to_json(self) -> dict:
        out = {
            "key": self.key,
            "check": self.check,
            "subject": self.subject,
            "message": self.message,
            "severity": self.severity,
            "state": self.state,
            "opened": format_instant(self.opened) if self.opened is not None else None,
        }
        if self.resolved is not None:
            out["resolved"] = format_instant(self.resolved)
        return out

    def line(self) -> str:
        since = f" (open since {format_instant(self.opened)})" if self.opened else ""
        return f"[{self.severity}] {self.check} {self.subject}: {self.message}{since}"

    @classmethod
    def from_values(cls, values: dict) -> Finding:
        return cls(
            check=values.get(_P + "check", ""),
            subject=values.get(_P + "subject", ""),
            message=values.get(_P + "message", ""),
            severity=values.get(_P + "severity", "warning"),
            state=values.get(_P + "state", "open"),
            opened=values.get(_P + "opened"),
            resolved=values.get(_P + "resolved"),
        )


@dataclass
class Changes:
    """What one recording did: findings opened (or reopened), updated, resolved, and the
    transaction it took (None when nothing changed)."""

    opened: list[Finding] = field(default_factory=list)
    updated: list[Finding] = field(default_factory=list)
    resolved: list[Finding] = field(default_factory=list)
    open: list[Finding] = field(default_factory=list)
    tx: int | None = None


def declared(view_or_ledger: View | Ledger, attribute: str) -> bool:
    ledger = view_or_ledger.ledger if isinstance(view_or_ledger, View) else view_or_ledger
    try:
        ledger.attribute(attribute)
    except SchemaError:
        return False
    return True


def ensure_schema(ledger: Ledger) -> None:
    current = ledger.schema
    if any(d["attribute"] not in current for d in SCHEMA):
        ledger.declare(SCHEMA, system=True)


def findings_in(view: View, state: str | None = "open") -> list[Finding]:
    """Findings in a view (open ones by default; state=None for all), ordered by key."""
    if not declared(view, _P + "key"):
        return []
    ids = view.find(_P + "state", state) if state else view.find(_P + "key")
    out = []
    for e in ids:
        values = view.get(e)
        if values and _P + "key" in values:
            out.append(Finding.from_values(values))
    return sorted(out, key=lambda f: f.key)


def open_findings(ledger: Ledger) -> list[Finding]:
    """The findings open now, ordered by key."""
    return findings_in(ledger.view())


def all_findings(ledger: Ledger) -> list[Finding]:
    """Every finding ever recorded, open or resolved, with its current state."""
    return findings_in(ledger.view(), state=None)


def finding_history(ledger: Ledger, key: str) -> list[dict]:
    """Every datom about one finding: when it opened, changed and resolved, and by whom."""
    return ledger.view().history(finding_entity(key))


def _plan(
    view: View, found: Sequence[Finding], checks: set[str], now: int
) -> tuple[list[dict], list[dict], Changes]:
    ops: list[dict] = []
    expect: list[dict] = []
    changes = Changes()
    seen: set[str] = set()

    def add(e: str, attr: str, v: object) -> None:
        ops.append({"op": "add", "e": e, "a": _P + attr, "v": v})

    for f in found:
        if f.key in seen:
            continue
        seen.add(f.key)
        e = f.entity
        current = view.get(e) or {}
        state = current.get(_P + "state")
        if state == "open":
            kept = replace(f, state="open", opened=current.get(_P + "opened"), resolved=None)
            changed = False
            if current.get(_P + "message") != f.message:
                add(e, "message", f.message)
                changed = True
            if current.get(_P + "severity") != f.severity:
                add(e, "severity", f.severity)
                changed = True
            if changed:
                expect.append({"e": e, "a": _P + "state", "v": "open"})
                changes.updated.append(kept)
            changes.open.append(kept)
            continue
        # New, or back after being resolved: (re)open it on the same entity.
        add(e, "key", f.key)
        add(e, "check", f.check)
        add(e, "subject", f.subject)
        add(e, "message", f.message)
        add(e, "severity", f.severity)
        add(e, "state", "open")
        add(e, "opened", now)
        if current.get(_P + "resolved") is not None:
            ops.append(
                {"op": "retract", "e": e, "a": _P + "resolved", "v": current[_P + "resolved"]}
            )
        expect.append({"e": e, "a": _P + "state", "v": state})
        opened = replace(f, state="open", opened=now, resolved=None)
        changes.opened.append(opened)
        changes.open.append(opened)

    for f in findings_in(view):
        if f.check in checks and f.key not in seen:
            add(f.entity, "state", "resolved")
            add(f.entity, "resolved", now)
            expect.append({"e": f.entity, "a": _P + "state", "v": "open"})
            changes.resolved.append(replace(f, state="resolved", resolved=now))
    for items in (changes.opened, changes.updated, changes.resolved, changes.open):
        items.sort(key=lambda f: f.key)
    return ops, expect, changes


def _reason(changes: Changes) -> str:
    parts = []
    for verb, items in (
        ("open", changes.opened),
        ("update", changes.updated),
        ("resolve", changes.resolved),
    ):
        if items:
            parts.append(f"{verb} " + ", ".join(f.key for f in items[:5]))
            if len(items) > 5:
                parts[-1] += f" and {len(items) - 5} more"
    return "health: " + "; ".join(parts)


def record(
    ledger: Ledger,
    found: Iterable[Finding],
    checks: Iterable[str],
    now: int | None = None,
    attempts: int = 5,
) -> Changes:
    """Bring the ledger's findings in line with what the checks in `checks` found.

    Open findings of those checks that were not found again are resolved; findings of other
    checks (say, a check that could not run) are left as they are. Writes one transaction,
    or none when nothing changed. Concurrent recorders (several daemons on one ledger) are
    handled by compare-and-set on each finding's state, re-planned on conflict.
    """
    ensure_schema(ledger)
    found = list(found)
    checks = set(checks)
    for f in found:
        if f.severity not in SEVERITIES:
            raise ValueError(f"finding {f.key}: severity must be one of {SEVERITIES}")
        if f.check not in checks:
            raise ValueError(f"finding {f.key} comes from {f.check!r}, not a check that ran")
    now = ledger.clock() if now is None else now
    for attempt in range(attempts):
        ops, expect, changes = _plan(ledger.view(), found, checks, now)
        if not ops:
            return changes
        try:
            changes.tx = ledger.transact(ops, reason=_reason(changes), expect=expect).tx
            return changes
        except Conflict:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
