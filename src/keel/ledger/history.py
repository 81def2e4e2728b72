"""The one typed reader of committed history: transactions with their datoms, in id order.

Everything that follows the ledger from outside a view reads through here: the event bus,
the recall indexer (via `Ledger.committed`), export and verify. They see named rows and
never write SQL of their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .stores import Store
from .stores.rows import DatomRow, TxRow

#: Transactions fetched per pair of queries.
BATCH = 2000


@dataclass(frozen=True, slots=True)
class TxRecord:
    """A committed transaction as stored: its row and its datoms in index order."""

    tx: TxRow
    datoms: list[DatomRow]


def tx_range(store: Store, after: int = 0, until: int | None = None) -> Iterator[TxRecord]:
    """Transactions after `after` up to and including `until` (None: the newest now).

    Datoms whose transaction row is missing are not yielded: with ids running 1..n
    without a gap there are none, and `verify` checks that first.
    """
    if until is None:
        head = store.head()
        until = head.id if head else 0
    for lo in range(after + 1, until + 1, BATCH):
        hi = min(lo + BATCH - 1, until)
        by_tx: dict[int, list[DatomRow]] = {}
        for d in store.datom_rows(lo, hi):
            by_tx.setdefault(d.tx, []).append(d)
        for tx in store.tx_rows(lo, hi):
            yield TxRecord(tx, by_tx.get(tx.id, []))
