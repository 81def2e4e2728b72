"""Approval operations: list and show requests, wait for an answer, approve or deny.

Approving runs the exact action that was requested, once, as the requester — through the
door again, so the requester's pins are checked as they are now — after checking that
nothing it depends on changed since the request. Whoever approves or denies holds
`approval.decide` (the operator always does) and is never the requester.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import BadInput, Conflict, Forbidden, KeelError, NotFound
from ..govern import approvals
from ..govern.approvals import Approval
from ..ledger.instants import format_instant
from . import registry
from .call import Call
from .models import Input, Limit, Output
from .registry import operation

ApprovalId = Annotated[str, Field(pattern=r"^[0-9a-f]{10}$", description="An approval's id.")]


class ApprovalOut(Output):
    id: str
    operation: str
    input: Any
    requester: str
    surface: str
    capability: str
    digest: str = Field(description="Binds the operation, its exact input and the requester.")
    rule: str = Field(description="Why it needs approval.")
    expires: str
    state: Literal["pending", "approved", "denied", "expired", "done", "failed"]
    decided_by: str | None
    reason: str | None
    result: Any = Field(description="What the action returned, once done.")
    error: str | None = Field(description="Why the action failed, if it did.")


class ListIn(Input):
    state: Literal["pending", "approved", "denied", "expired", "done", "failed"] | None = None
    limit: Limit = 100


@operation("approval.list", capability="approval.read", writes=False)
def approval_list(call: Call, p: ListIn) -> list[ApprovalOut]:
    """Requests for approval, newest first (a request past its expiry reads as expired)."""
    found = approvals.listing(call.ledger.view())
    out = [_out(call, a) for a in found]
    return [a for a in out if p.state is None or a.state == p.state][: p.limit]


class ApprovalShowIn(Input):
    id: ApprovalId
    wait: Annotated[float, Field(ge=0, le=300)] = Field(
        0, description="Seconds to wait for an answer while it is pending."
    )


@operation("approval.show", capability="approval.own.read", writes=False)
def approval_show(call: Call, p: ApprovalShowIn) -> ApprovalOut:
    """One request: its action, state and outcome. A requester may read its own; reading
    anyone's needs `approval.read`. With `wait`, answers when it leaves `pending`."""
    deadline = time.monotonic() + p.wait
    while True:
        found = _find(call, p.id)
        if found.requester != call.identity and not _holds(call, "approval.read"):
            raise Forbidden(
                f"{call.identity!r} may not read approval {p.id}: it is not its request and "
                "it does not hold 'approval.read'",
                "approval.read",
                "approval.show",
            )
        shown = _out(call, found)
        if shown.state != "pending" or time.monotonic() >= deadline:
            return shown
        time.sleep(0.2)


class ApprovalDecideIn(Input):
    id: ApprovalId
    why: Annotated[str | None, Field(max_length=2000)] = Field(None, description="A reason.")


@operation("approval.approve", capability="approval.decide", writes=True)
def approval_approve(call: Call, p: ApprovalDecideIn) -> ApprovalOut:
    """Approve a request: its exact action then runs, once, as the requester."""
    found = _decidable(call, p.id)
    ledger = call.ledger
    ops, expect = approvals.move_ops(found, "approved", decided_by=call.identity, reason=p.why)
    try:
        ledger.transact(ops, f"approve {found.operation} ({p.id})", expect=expect)
    except Conflict:
        raise Conflict(f"approval {p.id} was answered meanwhile; nothing ran twice") from None
    approved = approvals.read(ledger.view(), p.id)
    assert approved is not None
    state, facts = _run(call, approved)
    ops, expect = approvals.move_ops(approved, state, **facts)
    ledger.transact(ops, f"{found.operation} under approval {p.id}: {state}", expect=expect)
    return _out(call, _find(call, p.id))


@operation("approval.deny", capability="approval.decide", writes=True)
def approval_deny(call: Call, p: ApprovalDecideIn) -> ApprovalOut:
    """Deny a request: its action never runs."""
    found = _decidable(call, p.id)
    ops, expect = approvals.move_ops(found, "denied", decided_by=call.identity, reason=p.why)
    try:
        call.ledger.transact(ops, f"deny {found.operation} ({p.id})", expect=expect)
    except Conflict:
        raise Conflict(f"approval {p.id} was answered meanwhile") from None
    return _out(call, _find(call, p.id))


# -- helpers ------------------------------------------------------------------------------
def _find(call: Call, approval_id: str) -> Approval:
    found = approvals.read(call.ledger.view(), approval_id)
    if found is None:
        raise NotFound(f"there is no approval {approval_id!r}")
    return found


def _expired(call: Call, found: Approval) -> bool:
    return found.state == "pending" and call.ledger.clock() >= found.expires


def _out(call: Call, found: Approval) -> ApprovalOut:
    data = found.to_json()
    if _expired(call, found):
        data["state"] = "expired"  # unanswered in time: a denial, never an approval
    return ApprovalOut.model_validate(data)


def _decidable(call: Call, approval_id: str) -> Approval:
    """The request, if the caller may answer it now; else why not, in one sentence."""
    found = _find(call, approval_id)
    if found.requester == call.identity:
        reason = "it may not answer its own request"
        call.services.record_denial(
            call.identity, call.operation, "approval.decide", call.caller.surface, reason
        )
        raise Forbidden(
            f"{call.identity!r} may not answer its own request {approval_id}",
            "approval.decide",
            call.operation,
        )
    if _expired(call, found):
        ops, expect = approvals.move_ops(found, "expired")
        call.ledger.transact(ops, f"approval {approval_id} expired", expect=expect)
        raise Conflict(
            f"approval {approval_id} expired unanswered at {format_instant(found.expires)}"
        )
    if found.state != "pending":
        raise Conflict(f"approval {approval_id} is already {found.state}")
    if not found.bound():
        raise BadInput(f"approval {approval_id} does not match its digest; it cannot run")
    return found


def _run(call: Call, found: Approval) -> tuple[str, dict]:
    """Run the approved action once, as its requester; returns its end state and facts."""
    op = registry.get(found.operation)
    assert call.door is not None
    if op.basis is not None:
        params = op.input.model_validate(found.input)
        moved = approvals.changed(found.basis, op.basis(call, params))
        if moved:
            return "failed", {
                "error": f"{found.operation} no longer applies: {', '.join(moved)} changed "
                "since it was requested (ask again)"
            }
    from .door import Caller

    try:
        result = call.door.call(
            found.operation, found.input, Caller(found.requester, found.surface), approval=found.id
        )
    except KeelError as exc:
        return "failed", {"error": str(exc)}
    return "done", {"result": op.dump(result)}


def _holds(call: Call, capability: str) -> bool:
    if call.tier == "T0":
        return True
    if call.policy is None:
        return False
    return call.policy.decide(call.identity, call.services.home.operator, capability).allowed
