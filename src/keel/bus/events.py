"""Events are derived from transactions, never kept only in memory.

Each transaction yields one `tx` event, then one event per (attribute namespace, entity)
it touched, typed by the namespace (e.g. `task` for `task/status`). An event's position
is (tx, n); subscribers keep a cursor at a position. Transactions that only move
subscription cursors (`keel.sub/*`) or record dead letters (`keel.dead/*`) yield nothing,
so a subscriber never wakes itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..ledger import Ledger, TxRow
from ..ledger.instants import format_instant

#: Bookkeeping that wakes nobody: cursors, dead letters, and the stamp on each call's
#: transaction (what it is for is told by the facts beside it).
QUIET_NAMESPACES = frozenset({"keel.sub", "keel.dead", "keel.call"})
#: Attributes that wake nobody either: a running run's lease renewals (a heartbeat every
#: few seconds per run would otherwise wake every subscriber, the recall index first).
QUIET_ATTRIBUTES = frozenset({"keel.run/lease-until", "keel.run/lease-gen"})


class Position(NamedTuple):
    tx: int
    n: int

    def __str__(self) -> str:
        return f"{self.tx}.{self.n}"

    @classmethod
    def parse(cls, text: str | None) -> Position:
        if not text:
            return START
        tx, _, n = str(text).partition(".")
        return cls(int(tx), int(n or 0))


START = Position(0, 0)
#: The n of a cursor that has consumed every event of its transaction.
END_OF_TX = 2**31 - 1


@dataclass(frozen=True)
class Event:
    tx: int
    n: int
    type: str
    time: int
    author: str
    branch: int
    reason: str = ""
    entity: str | None = None
    attributes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def position(self) -> Position:
        return Position(self.tx, self.n)

    @property
    def id(self) -> str:
        return f"{self.tx}.{self.n}"

    def to_json(self) -> dict:
        out = {
            "id": self.id,
            "type": self.type,
            "tx": self.tx,
            "time": format_instant(self.time),
            "author": self.author,
            "branch": self.branch,
        }
        if self.entity is not None:
            out["entity"] = self.entity
            out["attributes"] = list(self.attributes)
        else:
            out["reason"] = self.reason
        return out


def namespace(attr: str) -> str:
    return attr.partition("/")[0]


def derive(tx: TxRow, touches: Iterable[tuple[str, str]]) -> list[Event]:
    """The events of one transaction, from its row and its (entity, attribute) pairs."""
    groups: dict[tuple[str, str], list[str]] = {}
    quiet = True
    for e, a in touches:
        ns = namespace(a)
        quiet = quiet and (ns in QUIET_NAMESPACES or a in QUIET_ATTRIBUTES)
        attrs = groups.setdefault((ns, e), [])
        if a not in attrs:
            attrs.append(a)
    if quiet:
        return []
    events = [Event(tx.id, 0, "tx", tx.time, tx.author, tx.branch, reason=tx.reason)]
    loud = [(key, attrs) for key, attrs in sorted(groups.items()) if key[0] not in QUIET_NAMESPACES]
    for n, ((ns, e), attrs) in enumerate(loud, start=1):
        events.append(
            Event(tx.id, n, ns, tx.time, tx.author, tx.branch, entity=e, attributes=tuple(attrs))
        )
    return events


class EventSource:
    """Reads events after a position, straight from the ledger."""

    def __init__(self, ledger: Ledger, batch_txs: int = 200):
        self.ledger = ledger
        self.batch_txs = batch_txs

    def head(self) -> int:
        return self.ledger.head().id

    def read(self, after: Position, upto: int | None = None) -> tuple[list[Event], Position]:
        """Events after `after` from at most `batch_txs` transactions, oldest first, and the
        position up to which the ledger was read (a cursor may move there once they are
        handled, even if the transactions in between yielded no matching event)."""
        head = self.head() if upto is None else upto
        lo = max(after.tx if after.n < END_OF_TX else after.tx + 1, 1)
        hi = min(head, lo + self.batch_txs - 1)
        if lo > hi:
            return [], after
        out = []
        for record in self.ledger.tx_range(lo - 1, hi):
            for event in derive(record.tx, [(d.e, d.a) for d in record.datoms]):
                if event.position > after:
                    out.append(event)
        return out, Position(hi, END_OF_TX)
