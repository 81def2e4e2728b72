"""Evidence: what each write was for, what was refused, and the trail that reads them back.

Every transaction a call through the door writes carries a stamp — entity `call:<tx>`
with the operation, the capability it used and the surface it came through — inside the
same signed transaction, so the author (who), the time (when) and the stamp (what, by
which right) can never be separated. A refusal is recorded too, as `denial:<id>`: who
asked, for what, through which surface, and why it was refused. `trail` reads both, and
approvals and secret uses once they are recorded, back as one list for `keel audit`.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..ledger import Ledger

_C = "keel.call/"
_D = "keel.denial/"
_P = "keel.approval/"
_U = "keel.secret-use/"
SCHEMA = [
    {"attribute": f"{_C}operation", "type": "string", "doc": "the operation that wrote a tx"},
    {"attribute": f"{_C}capability", "type": "string", "doc": "the capability it used"},
    {"attribute": f"{_C}surface", "type": "string", "doc": "cli, http, mcp, python, ..."},
    {"attribute": f"{_C}approval", "type": "string", "doc": "the approval it ran under"},
    {"attribute": f"{_D}identity", "type": "string", "doc": "who was refused"},
    {"attribute": f"{_D}operation", "type": "string", "doc": "what it asked for"},
    {"attribute": f"{_D}capability", "type": "string", "doc": "the capability it lacked"},
    {"attribute": f"{_D}surface", "type": "string", "doc": "where it asked"},
    {"attribute": f"{_D}reason", "type": "string", "doc": "why it was refused"},
]
#: Namespaces of evidence: written even while keel is read-only, and quiet on the bus.
EVIDENCE = ("keel.call", "keel.denial")


def call_entity(tx: int) -> str:
    return f"call:{tx}"


def stamp_ops(tx: int, operation: str, capability: str, surface: str, approval: str = "") -> list:
    e = call_entity(tx)
    ops = [
        {"op": "add", "e": e, "a": f"{_C}operation", "v": operation},
        {"op": "add", "e": e, "a": f"{_C}capability", "v": capability},
        {"op": "add", "e": e, "a": f"{_C}surface", "v": surface},
    ]
    if approval:
        ops.append({"op": "add", "e": e, "a": f"{_C}approval", "v": approval})
    return ops


def denial_ops(identity: str, operation: str, capability: str, surface: str, reason: str):
    e = f"denial:{_secrets.token_hex(8)}"
    return [
        {"op": "add", "e": e, "a": f"{_D}identity", "v": identity},
        {"op": "add", "e": e, "a": f"{_D}operation", "v": operation},
        {"op": "add", "e": e, "a": f"{_D}capability", "v": capability},
        {"op": "add", "e": e, "a": f"{_D}surface", "v": surface},
        {"op": "add", "e": e, "a": f"{_D}reason", "v": reason},
    ]


@dataclass
class Entry:
    """One line of the trail."""

    tx: int
    time: int
    kind: str  # write, denial, approval (a request or a move of one), secret
    identity: str
    outcome: str  # committed, denied, ...
    operation: str = ""
    capability: str = ""
    surface: str = ""
    reason: str = ""
    detail: dict = field(default_factory=dict)


def trail(ledger: Ledger, since: int = 0) -> Iterator[Entry]:
    """Every write, refusal and approval move after transaction `since`, oldest first.

    A write made below the door (a library caller, the scheduler) has no stamp; it is
    listed with its author and reason and an empty operation."""
    view = ledger.view()
    for record in ledger.tx_range(since):
        tx = record.tx
        stamp: dict[str, str] = {}
        denials: dict[str, dict[str, str]] = {}
        moves: dict[str, dict[str, object]] = {}
        uses: dict[str, dict[str, str]] = {}
        plain = False
        for d in record.datoms:
            if d.a.startswith(_C):
                stamp[d.a.removeprefix(_C)] = ledger.decode(d)
            elif d.a.startswith(_D):
                denials.setdefault(d.e, {})[d.a.removeprefix(_D)] = ledger.decode(d)
            elif d.a.startswith(_P):
                moves.setdefault(d.e, {})[d.a.removeprefix(_P)] = ledger.decode(d)
            elif d.a.startswith(_U):
                uses.setdefault(d.e, {})[d.a.removeprefix(_U)] = ledger.decode(d)
            else:
                plain = True
        for e, move in moves.items():
            if "state" in move:
                for fact in ("operation", "capability", "surface"):  # named at the request
                    move.setdefault(fact, view.value(e, _P + fact) or "")
                yield Entry(
                    tx.id,
                    tx.time,
                    "approval",
                    tx.author,
                    str(move["state"]),
                    str(move.get("operation", "")),
                    str(move.get("capability", "")),
                    str(move.get("surface", "")),
                    tx.reason,
                    {"approval": e.removeprefix("approval:")},
                )
        for use in uses.values():
            yield Entry(
                tx.id,
                tx.time,
                "secret",
                use.get("identity", ""),
                use.get("outcome", ""),
                "",
                "secret.use",
                "cadence",
                use.get("reason", ""),
                {k: use.get(k, "") for k in ("secret", "job", "run")},
            )
        if plain or (stamp and not moves and not uses):
            yield Entry(
                tx.id,
                tx.time,
                "write",
                tx.author,
                "committed",
                stamp.get("operation", ""),
                stamp.get("capability", ""),
                stamp.get("surface", ""),
                tx.reason,
                {"approval": stamp["approval"]} if "approval" in stamp else {},
            )
        for denial in denials.values():
            yield Entry(
                tx.id,
                tx.time,
                "denial",
                denial.get("identity", ""),
                "denied",
                denial.get("operation", ""),
                denial.get("capability", ""),
                denial.get("surface", ""),
                denial.get("reason", ""),
            )
