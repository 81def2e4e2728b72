"""The rows a store hands up, named: one type per shape, so no caller counts columns.

Named tuples still index and unpack like the plain tuples they replace, so code written
against positions keeps working while new code reads `row.vf` instead of `row[5]`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import NamedTuple, TypeVar

Row = TypeVar("Row", bound=tuple)


def named(cls: type[Row], rows: Iterable[tuple]) -> list[Row]:
    """Result tuples, already in `cls`'s field order, as `cls` rows. `tuple.__new__` does
    it without a Python call per row: this sits on every read's path."""
    return list(map(partial(tuple.__new__, cls), rows))


class Head(NamedTuple):
    """The newest transaction: where the next one links to."""

    id: int
    hash: bytes
    time: int


class TxRow(NamedTuple):
    """A transaction as stored (docs/ledger-format.md §6)."""

    id: int
    hash: bytes
    prev: bytes
    branch: int
    time: int
    author: str
    key: bytes
    reason: str
    root: bytes
    n: int
    sig: bytes
    schema: int


class DatomRow(NamedTuple):
    """A datom as stored: its place (tx, idx, branch), the fact, and its salted digest."""

    tx: int
    idx: int
    branch: int
    e: str
    a: str
    v: bytes | None
    vtype: int
    big: int
    op: int
    vf: int
    vt: int
    salt: bytes | None
    vdigest: bytes


class Fact(NamedTuple):
    """A datom of one known entity, in the shape folding needs (oldest first by tx, idx)."""

    a: str
    v: bytes | None
    vtype: int
    big: int
    op: int
    vf: int
    vt: int
    tx: int
    idx: int


class EntityFact(NamedTuple):
    """A datom of some attributes across entities: its entity, then the Fact fields."""

    e: str
    a: str
    v: bytes | None
    vtype: int
    big: int
    op: int
    vf: int
    vt: int
    tx: int
    idx: int

    @property
    def fact(self) -> Fact:
        return tuple.__new__(Fact, self[1:])


class CheckpointRow(NamedTuple):
    """A signed (size, root, time) of the Merkle log (docs/ledger-format.md §8)."""

    size: int
    root: bytes
    time: int
    key: bytes
    sig: bytes


class WriteStart(NamedTuple):
    """What a commit reads first, under the write lock, in one round trip."""

    head: Head | None
    schema_version: int
    author_keys: list[Fact]


TX_COLUMNS = ", ".join(TxRow._fields)
DATOM_COLUMNS = ", ".join(DatomRow._fields)
FACT_COLUMNS = ", ".join(Fact._fields)
