"""Durable approvals: a call that a rule holds back, kept in the ledger until a person
answers it.

A request is the entity `approval:<id>`: the exact action (operation, validated input,
requester, surface), a digest binding them, what the action depends on (its *basis*,
re-checked before it runs), the rule's reason and an expiry. Its state moves forward
only:

    pending ─► approved ─► done | failed
        └────► denied | expired

Each move is a signed transaction that expects the state before it (`expect`), so of two
approvers — or two daemons — racing, exactly one moves a request out of `pending`, and
only that one runs the action: once. A request nobody answers expires into a denial,
never into an approval; the requester can neither approve nor deny its own request.
Because requests are facts in the ledger, they survive restarts and every move is
evidence (`keel audit`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..ledger import View
from ..ledger.instants import format_instant

_A = "keel.approval/"
SCHEMA = [
    {"attribute": f"{_A}operation", "type": "string", "doc": "the operation held back"},
    {"attribute": f"{_A}input", "type": "json", "doc": "its validated input, exactly"},
    {"attribute": f"{_A}requester", "type": "string", "doc": "who asked"},
    {"attribute": f"{_A}surface", "type": "string", "doc": "where it asked"},
    {"attribute": f"{_A}capability", "type": "string", "doc": "the capability it used"},
    {"attribute": f"{_A}digest", "type": "string", "doc": "binds operation, input, requester"},
    {"attribute": f"{_A}basis", "type": "json", "doc": "what the action depends on"},
    {"attribute": f"{_A}rule", "type": "string", "doc": "why it needs approval"},
    {"attribute": f"{_A}expires", "type": "instant", "doc": "when it expires unanswered"},
    {"attribute": f"{_A}state", "type": "string", "doc": "pending approved denied ..."},
    {"attribute": f"{_A}decided-by", "type": "string", "doc": "who approved or denied it"},
    {"attribute": f"{_A}reason", "type": "string", "doc": "the approver's reason"},
    {"attribute": f"{_A}result", "type": "json", "doc": "what the action returned"},
    {"attribute": f"{_A}error", "type": "string", "doc": "why the action failed"},
]
STATES = ("pending", "approved", "denied", "expired", "done", "failed")


def entity(approval_id: str) -> str:
    return f"approval:{approval_id}"


def new_id() -> str:
    return secrets.token_hex(5)


def digest(operation: str, arguments: Any, requester: str) -> str:
    """What an approval is bound to: this operation, with exactly this input, by this
    identity (canonical JSON, so the same action always has the same digest)."""
    canonical = json.dumps([operation, arguments, requester], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Approval:
    id: str
    operation: str
    input: Any
    requester: str
    surface: str
    capability: str
    digest: str
    basis: Any
    rule: str
    expires: int
    state: str
    decided_by: str | None = None
    reason: str | None = None
    result: Any = None
    error: str | None = None

    def bound(self) -> bool:
        """Whether the stored action is the one its digest was made for."""
        return digest(self.operation, self.input, self.requester) == self.digest

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "operation": self.operation,
            "input": self.input,
            "requester": self.requester,
            "surface": self.surface,
            "capability": self.capability,
            "digest": self.digest,
            "rule": self.rule,
            "expires": format_instant(self.expires),
            "state": self.state,
            "decided_by": self.decided_by,
            "reason": self.reason,
            "result": self.result,
            "error": self.error,
        }


def request_ops(
    approval_id: str,
    operation: str,
    arguments: Any,
    requester: str,
    surface: str,
    capability: str,
    basis: Any,
    rule: str,
    expires: int,
) -> list[dict]:
    e = entity(approval_id)
    facts = {
        "operation": operation,
        "input": arguments,
        "requester": requester,
        "surface": surface,
        "capability": capability,
        "digest": digest(operation, arguments, requester),
        "basis": basis,
        "rule": rule,
        "expires": expires,
        "state": "pending",
    }
    return [{"op": "add", "e": e, "a": _A + k, "v": v} for k, v in facts.items()]


def move_ops(approval: Approval, state: str, **facts: Any) -> tuple[list[dict], list[dict]]:
    """The ops that move `approval` to `state` (with `facts`: decided-by, reason, result,
    error), and the expectation that it is still where it was (the race's referee)."""
    e = entity(approval.id)
    ops = [{"op": "add", "e": e, "a": f"{_A}state", "v": state}]
    ops += [
        {"op": "add", "e": e, "a": _A + k.replace("_", "-"), "v": v}
        for k, v in facts.items()
        if v is not None
    ]
    return ops, [{"e": e, "a": f"{_A}state", "v": approval.state}]


def read(view: View, approval_id: str) -> Approval | None:
    found = view.get(entity(approval_id))
    if not found or f"{_A}operation" not in found:
        return None
    return _approval(approval_id, found)


def listing(view: View, state: str | None = None) -> list[Approval]:
    """Every approval (or those in `state`), newest request first."""
    out = []
    for e in view.find(f"{_A}operation"):
        found = view.get(e) or {}
        a = _approval(e.removeprefix("approval:"), found)
        if state is None or a.state == state:
            out.append(a)
    return sorted(out, key=lambda a: a.expires, reverse=True)


def _approval(approval_id: str, found: dict) -> Approval:
    def get(k: str) -> Any:
        return found.get(_A + k)

    return Approval(
        id=approval_id,
        operation=get("operation"),
        input=get("input"),
        requester=get("requester"),
        surface=get("surface") or "",
        capability=get("capability") or "",
        digest=get("digest") or "",
        basis=get("basis"),
        rule=get("rule") or "",
        expires=get("expires"),
        state=get("state"),
        decided_by=get("decided-by"),
        reason=get("reason"),
        result=get("result"),
        error=get("error"),
    )


def changed(before: Any, now: Any) -> list[str]:
    """The parts of an action's basis that differ now (its keys, when it is a mapping)."""
    if before == now:
        return []
    if isinstance(before, dict) and isinstance(now, dict):
        return sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return ["what it depends on"]
