"""A line-based three-way merge (over `merge3`): base, theirs (the file now) and ours (the
new content). Edits that do not touch the same lines of the base merge; edits that do are
conflicts, each named by its line ranges."""

from __future__ import annotations

from dataclasses import dataclass, field

from merge3 import Merge3


@dataclass(frozen=True)
class Clash:
    """One conflicting region: 1-based inclusive line ranges in base, theirs and ours (an
    empty range, an insertion, is (n + 1, n): before line n + 1)."""

    base: tuple[int, int]
    theirs: tuple[int, int]
    ours: tuple[int, int]


@dataclass(frozen=True)
class Merged:
    text: str | None  # None when there are conflicts
    conflicts: list[Clash] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.conflicts


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _span(start: int, end: int) -> tuple[int, int]:
    return (start + 1, end)


def describe(span: tuple[int, int]) -> str:
    start, end = span
    if end < start:
        return f"before line {start}" if start > 1 else "at the start"
    return f"line {start}" if start == end else f"lines {start}-{end}"


def merge(base: str, theirs: str, ours: str) -> Merged:
    """Merge `ours` into `theirs`, both edits of `base`."""
    if theirs in (base, ours):
        return Merged(ours)
    if ours == base:
        return Merged(theirs)
    b, t, o = lines(base), lines(theirs), lines(ours)
    m = Merge3(b, t, o)
    out: list[str] = []
    clashes: list[Clash] = []
    for region in m.merge_regions():
        kind = region[0]
        if kind == "unchanged":
            out += b[region[1] : region[2]]
        elif kind in ("same", "a"):
            out += t[region[1] : region[2]]
        elif kind == "b":
            out += o[region[1] : region[2]]
        else:
            zs, ze, ts, te, os_, oe = region[1:]
            clashes.append(Clash(_span(zs, ze), _span(ts, te), _span(os_, oe)))
    if clashes:
        return Merged(None, clashes)
    return Merged("".join(out))
