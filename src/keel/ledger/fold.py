"""Folding datoms into what was true: at one valid instant, or as a timeline over valid time.

Rows are ordered oldest first by (tx, idx). Each datom says its value holds (assert) or
does not hold (retract) during [valid_from, valid_to); where datoms overlap, the later one
wins. For a cardinality-one attribute the newest assertion covering an instant is the
value, unless a later retraction of that value covers the instant too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .encoding import ASSERT
from .instants import FOREVER
from .stores.rows import Fact

#: The valid instant keel reads its own registries at (the schema, signer keys,
#: branches): the end of valid time, so clock skew between hosts never hides a fact.
LATEST = FOREVER - 1

# Fact fields by position. Every read folds every row of an entity, and on this path a
# constant index costs a third of a named tuple's attribute lookup (CPython 3.11).
_A, _V, _VTYPE, _BIG, _OP, _VF, _VT = map(
    Fact._fields.index, ("a", "v", "vtype", "big", "op", "vf", "vt")
)


def value_key(row: Fact) -> tuple:
    v = row[_V]
    return (bytes(v) if v is not None else None, row[_BIG], row[_VTYPE])


def fold_one(rows: Sequence[Fact], at: int) -> Fact | None:
    """The row that supplies a cardinality-one attribute's value at `at`, if any."""
    retracted = set()
    for row in reversed(rows):
        if not row[_VF] <= at < row[_VT]:
            continue
        key = value_key(row)
        if row[_OP] != ASSERT:
            retracted.add(key)
        else:
            return None if key in retracted else row
    return None


def fold_many(rows: Sequence[Fact], at: int) -> list[Fact]:
    """The rows that supply a cardinality-many attribute's values at `at`, oldest first."""
    decided: dict[tuple, Fact | None] = {}
    for row in reversed(rows):
        if not row[_VF] <= at < row[_VT]:
            continue
        key = value_key(row)
        if key not in decided:
            decided[key] = row if row[_OP] == ASSERT else None
    return [r for r in reversed(list(decided.values())) if r is not None]


def group_by_attr(rows: Iterable[Fact]) -> dict[str, list[Fact]]:
    groups: dict[str, list[Fact]] = {}
    for row in rows:
        groups.setdefault(row[_A], []).append(row)
    return groups


class Segment(NamedTuple):
    """A maximal stretch of valid time over which one value held, and the row saying so."""

    key: tuple
    valid_from: int
    valid_to: int
    row: Fact


def timeline(rows: Sequence[Fact], many: bool) -> list[Segment]:
    """Maximal segments, oldest value first, over all of valid time."""
    points = sorted({r.vf for r in rows} | {r.vt for r in rows})
    open_segments: dict[tuple, list] = {}
    out: list[list] = []
    for start, end in itertools.pairwise(points):
        live = fold_many(rows, start) if many else [r] if (r := fold_one(rows, start)) else []
        keys = set()
        for row in live:
            key = value_key(row)
            keys.add(key)
            seg = open_segments.get(key)
            if seg is not None and seg[2] == start:
                seg[2] = end
            else:
                seg = [key, start, end, row]
                open_segments[key] = seg
                out.append(seg)
        for key in list(open_segments):
            if key not in keys:
                del open_segments[key]
    return [Segment(*s) for s in out]
