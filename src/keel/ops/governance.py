"""Governance operations: read the file's verdict, compare it with what was signed, sign
it, restore it — and the audit trail, the evidence governance leaves.

Signing and restoring run while the file may not be acted on (`repairs`): they are how
keel leaves that state. Only the operator (T0) holds `governance.*`.
"""

from __future__ import annotations

import difflib
from typing import Annotated

from pydantic import Field

from ..errors import BadInput, Conflict, NotFound
from ..govern import audit, governance
from ..govern.policy import Policy
from ..ledger.instants import format_instant
from . import registry
from .call import Call
from .models import AsOf, Input, Limit, NoArguments, Output
from .registry import operation


class IdentityRules(Output):
    name: str
    tier: str
    pins: list[str]


class GovernanceState(Output):
    path: str
    ok: bool = Field(description="Whether keel acts on the file (false: keel is read-only).")
    problem: str | None
    digest: str | None = Field(description="The file's SHA-256.")
    signed_digest: str | None = Field(description="The SHA-256 of the newest signed version.")
    signer: str | None
    signed_tx: int | None
    signed_time: str | None
    text: str | None = Field(description="The file as it is on disk.")
    identities: list[IdentityRules] = Field(
        description="Each registered identity's tier and pins under the file as it is."
    )


class GovernanceShowIn(Input):
    signed: bool = Field(False, description="Show the newest signed version, not the file.")


@operation("governance.show", capability="governance.read", writes=False, repairs=True)
def show(call: Call, p: GovernanceShowIn) -> GovernanceState:
    """The governance file, whether keel acts on it, and each identity's tier and pins."""
    services, ledger = call.services, call.ledger
    view = ledger.view()
    verdict = services.verdict()
    data = services.governance.read()
    signed = governance.accepted(view)
    text = data.decode(errors="replace") if data is not None else None
    if p.signed:
        if signed is None:
            raise NotFound("no governance file was ever signed in this ledger")
        text = signed["text"]
    signed_tx = _signed_tx(call)
    policy = verdict.policy or _parse_or_none(text, services.home.operator)
    operator = services.home.operator
    rules = []
    for found in ledger.identities():
        r = policy.rules_for(found["name"], operator, found["role"]) if policy else None
        rules.append(
            IdentityRules(name=found["name"], tier=r.tier if r else "?", pins=r.pins if r else [])
        )
    return GovernanceState(
        path=str(services.governance.path),
        ok=verdict.problem is None,
        problem=verdict.problem,
        digest=governance.digest(data) if data is not None else None,
        signed_digest=signed["digest"] if signed else None,
        signer=signed["signer"] if signed else None,
        signed_tx=signed_tx[0] if signed_tx else None,
        signed_time=signed_tx[1] if signed_tx else None,
        text=text,
        identities=rules,
    )


class Diff(Output):
    changed: bool
    diff: str = Field(description="A unified diff from the signed version to the file.")


@operation("governance.diff", capability="governance.read", writes=False, repairs=True)
def diff(call: Call, p: NoArguments) -> Diff:
    """What changed in the file since it was last signed (a unified diff)."""
    signed = governance.accepted(call.ledger.view())
    data = call.services.governance.read()
    before = signed["text"] if signed else ""
    after = data.decode(errors="replace") if data is not None else ""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        "signed",
        str(governance.FILE),
    )
    text = "".join(lines)
    return Diff(changed=bool(text), diff=text)


class GovernanceCheck(Output):
    ok: bool
    problems: list[str] = Field(description="Why keel would not act on the file, if it would not.")
    warnings: list[str] = Field(description="Capabilities it names that no operation needs.")


@operation("governance.check", capability="governance.read", writes=False, repairs=True)
def check(call: Call, p: NoArguments) -> GovernanceCheck:
    """Whether keel acts on the file: it parses, it is signed, the signature verifies under
    an operator's key; and which capabilities it names that nothing needs (typos)."""
    services = call.services
    verdict = services.verdict()
    problems = [verdict.problem] if verdict.problem else []
    data = services.governance.read()
    policy = _parse_or_none(data.decode(errors="replace") if data else None, call.identity)
    warnings = []
    if policy is not None:
        unknown = policy.unknown_capabilities(_known_capabilities())
        warnings = [f"no operation needs {c!r}" for c in unknown]
    return GovernanceCheck(ok=not problems, problems=problems, warnings=warnings)


class Signed(Output):
    digest: str
    tx: int | None = Field(description="The transaction, or null when it was already signed.")


@operation("governance.sign", capability="governance.write", writes=True, repairs=True)
def sign(call: Call, p: NoArguments) -> Signed:
    """Accept the file as it is: record it, its digest and the caller's signature in the
    ledger. A file that does not parse, or whose pins grant capabilities nothing needs, is
    refused."""
    services = call.services
    data = services.governance.read()
    if data is None:
        raise NotFound(f"there is no {governance.FILE} to sign")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadInput(f"{governance.FILE} is not UTF-8 text") from None
    policy = Policy.parse(text, services.home.operator)
    unknown = policy.unknown_capabilities(_known_capabilities(), pins_only=True)
    if unknown:
        raise BadInput(
            f"{governance.FILE} grants capabilities no operation needs: {', '.join(unknown)} "
            "(a typo would grant nothing; fix them first)"
        )
    if call.role != "operator":
        raise Conflict(f"{call.identity!r} is not an operator; only an operator signs")
    ledger = call.ledger
    d = governance.digest(data)
    signed = governance.accepted(ledger.view())
    if signed is not None and signed["digest"] == d:
        services.governance.forget()
        return Signed(digest=d, tx=None)
    result = ledger.transact(governance.sign_ops(text, call.signer), "sign the governance file")
    services.governance.forget()
    return Signed(digest=d, tx=result.tx)


class Restored(Output):
    restored: bool
    path: str


@operation("governance.restore", capability="governance.write", writes=False, repairs=True)
def restore(call: Call, p: NoArguments) -> Restored:
    """Write back the newest signed version if the file is missing."""
    services = call.services
    if services.governance.path.exists():
        raise Conflict(f"{governance.FILE} exists; 'keel governance diff' shows its changes")
    done = services.governance.restore(call.ledger.view())
    if not done:
        raise NotFound("no governance file was ever signed in this ledger")
    return Restored(restored=True, path=str(services.governance.path))


# -- the audit trail ----------------------------------------------------------------------------
class AuditIn(Input):
    who: Annotated[str | None, Field(max_length=64)] = Field(None, description="One identity.")
    capability: Annotated[str | None, Field(max_length=100)] = Field(
        None, description="One capability (or a pattern like memory.*)."
    )
    since: AsOf = Field(0, description="After this transaction (number, hash or instant).")
    limit: Limit = 1000


class AuditEntry(Output):
    tx: int
    time: str
    kind: str = Field(description="write or denial.")
    identity: str
    outcome: str
    operation: str
    capability: str
    surface: str
    reason: str
    detail: dict


@operation("audit.list", capability="audit.read", writes=False)
def audit_list(call: Call, p: AuditIn) -> list[AuditEntry]:
    """Every write and refusal, oldest first, with who, what, by which right and how it
    ended: the evidence governance leaves."""
    import fnmatch

    ledger = call.ledger
    since = ledger.resolve_tx(p.since) if p.since not in (None, 0, "0") else 0
    out: list[AuditEntry] = []
    for e in audit.trail(ledger, since):
        if p.who and e.identity != p.who:
            continue
        if p.capability and not fnmatch.fnmatchcase(e.capability, p.capability):
            continue
        out.append(
            AuditEntry(
                tx=e.tx,
                time=format_instant(e.time),
                kind=e.kind,
                identity=e.identity,
                outcome=e.outcome,
                operation=e.operation,
                capability=e.capability,
                surface=e.surface,
                reason=e.reason,
                detail=e.detail,
            )
        )
        if len(out) >= p.limit:
            break
    return out


def _known_capabilities() -> set[str]:
    known = {c for op in registry.load().values() for c in op.capabilities}
    return known | {"public.read"}


def _parse_or_none(text: str | None, operator: str) -> Policy | None:
    if text is None:
        return None
    try:
        return Policy.parse(text, operator)
    except BadInput:
        return None


def _signed_tx(call: Call) -> tuple[int, str] | None:
    """The transaction that signed the newest accepted version, and its time."""
    history = call.ledger.view().history(governance.ENTITY, "keel.governance/digest")
    adds = [h for h in history if h["op"] == "add"]
    return (int(adds[-1]["tx"]), adds[-1]["tx_time"]) if adds else None
