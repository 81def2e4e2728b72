"""Folding datoms into what was true: at one valid instant, or as a timeline over valid time.

Rows are ordered oldest first by (tx, idx). Each datom says its value holds (assert) or
does not hold (retract) during [valid_from, valid_to); where datoms overlap, the later one
wins. For a cardinality-one attribute the newest assertion covering an instant is the
value, unless a later retraction of that value covers the instant too.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from .encoding import ASSERT

# Row layout shared with Store.entity_datoms: (a, v, vtype, big, op, vf, vt, tx, idx).
A, V, VTYPE, BIG, OP, VF, VT, TX = range(8)


def value_key(row: Sequence) -> tuple:
    return (bytes(row[V]) if row[V] is not None else None, row[BIG], row[VTYPE])


def fold_one(rows: Sequence[Sequence], at: int) -> Sequence | None:
    """The row that supplies a cardinality-one attribute's value at `at`, if any."""
    retracted = set()
    for row in reversed(rows):
        if not row[VF] <= at < row[VT]:
            continue
        key = value_key(row)
        if row[OP] != ASSERT:
            retracted.add(key)
        else:
            return None if key in retracted else row
    return None


def fold_many(rows: Sequence[Sequence], at: int) -> list[Sequence]:
    """The rows that supply a cardinality-many attribute's values at `at`, oldest first."""
    decided: dict[tuple, Sequence | None] = {}
    for row in reversed(rows):
        if not row[VF] <= at < row[VT]:
            continue
        key = value_key(row)
        if key not in decided:
            decided[key] = row if row[OP] == ASSERT else None
    return [r for r in reversed(list(decided.values())) if r is not None]


def group_by_attr(rows: Iterable[Sequence]) -> dict[str, list[Sequence]]:
    groups: dict[str, list[Sequence]] = {}
    for row in rows:
        groups.setdefault(row[A], []).append(row)
    return groups


def timeline(rows: Sequence[Sequence], many: bool) -> list[tuple[tuple, int, int, Sequence]]:
    """Maximal (value key, valid_from, valid_to, row) segments over all of valid time."""
    points = sorted({r[VF] for r in rows} | {r[VT] for r in rows})
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
    return [tuple(s) for s in out]  # type: ignore[misc]
