"""Branches: what-if lines of history forked from a transaction (docs/ledger-format.md §10).

A branch is registered by `keel.branch/*` facts on the entity `branch:<name>`, written on
main. The registry reads them back and says which (branch id, last tx) segments a view of
a branch may see; the functions below build the ops that create, close and merge one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import fold
from .encoding import ASSERT
from .errors import BadInput, Conflict, NotFound
from .stores import Store
from .stores.rows import Fact

if TYPE_CHECKING:
    from .view import View

MAIN = "main"
ATTRS = (
    "keel.branch/name",
    "keel.branch/id",
    "keel.branch/parent",
    "keel.branch/base",
    "keel.branch/state",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Turns a stored value (bytes, tag, big flag) into a Python value.
Decode = Callable[[bytes | None, int, int], Any]


@dataclass(frozen=True)
class Branch:
    name: str
    id: int
    parent: int
    base: int
    state: str


MAIN_BRANCH = Branch(MAIN, 0, 0, 0, "open")


def branch_entity(name: str) -> str:
    return f"branch:{name}"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name == MAIN:
        raise BadInput(f"{name!r} is not a usable branch name (letters, digits, _ . -)")
    return name


class BranchRegistry:
    """The registered branches, read from the ledger and cached until asked to refresh."""

    def __init__(self, store: Store, decode: Decode):
        self.store = store
        self.decode = decode
        self._by_name: dict[str, Branch] = {}

    def load(self) -> None:
        """Re-read every branch's facts (on all branches, at the end of valid time)."""
        by_entity: dict[str, list[Fact]] = {}
        for row in self.store.attr_datoms(ATTRS, None):
            by_entity.setdefault(row.e, []).append(row.fact)
        found = {}
        for facts in by_entity.values():
            v = {}
            for a, group in fold.group_by_attr(facts).items():
                row = fold.fold_one(group, fold.LATEST)
                if row is not None:
                    v[a] = self.decode(row.v, row.vtype, row.big)
            found[v["keel.branch/name"]] = Branch(
                v["keel.branch/name"],
                v["keel.branch/id"],
                v["keel.branch/parent"],
                v["keel.branch/base"],
                v.get("keel.branch/state", "open"),
            )
        self._by_name = found

    def get(self, name: str, refresh: bool = True) -> Branch:
        if name == MAIN:
            return MAIN_BRANCH
        if refresh or name not in self._by_name:
            self.load()
        found = self._by_name.get(name)
        if found is None:
            raise NotFound(f"there is no branch named {name!r}")
        return found

    def all(self) -> list[Branch]:
        self.load()
        return self.cached()

    def cached(self) -> list[Branch]:
        """The branches as last loaded, by id, without reading the store."""
        return sorted(self._by_name.values(), key=lambda b: b.id)

    def by_id(self, bid: int) -> Branch:
        """The branch numbered `bid`, from the cache when it is there."""
        if bid == 0:
            return MAIN_BRANCH
        found = self._find(bid)
        if found is None:
            self.load()
            found = self._find(bid)
        if found is None:
            raise NotFound(f"there is no branch number {bid}")
        return found

    def _find(self, bid: int) -> Branch | None:
        return next((b for b in self._by_name.values() if b.id == bid), None)

    def segments(self, branch: Branch, upto: int) -> list[tuple[int, int]]:
        """The (branch id, last tx) ranges a view of `branch` as of `upto` can see: its
        own transactions, and its parent's up to the fork, recursively."""
        if branch.id == 0:
            return [(0, upto)]
        parent = self.by_id(branch.parent)
        return [*self.segments(parent, min(upto, branch.base)), (branch.id, upto)]


def creation_ops(registry: BranchRegistry, view: View, name: str, at: int | None) -> list[dict]:
    """The facts registering branch `name`, forked at tx `at` (default: main's newest)."""
    known = registry.all()
    if any(b.name == name for b in known):
        raise Conflict(f"a branch named {name!r} already exists")
    store = registry.store
    base = store.last_tx_on(0) if at is None else at
    if not 1 <= base <= view.as_of:
        raise NotFound(f"there is no transaction {at}")
    (row,) = store.tx_rows(base, base)
    parent = registry.by_id(row.branch)
    if parent.state == "dropped":
        raise BadInput(f"transaction {base} is on dropped branch {parent.name!r}")
    new_id = max([b.id for b in known], default=0) + 1
    facts = [
        ("keel.branch/name", name),
        ("keel.branch/id", new_id),
        ("keel.branch/parent", parent.id),
        ("keel.branch/base", base),
        ("keel.branch/state", "open"),
    ]
    return [{"op": "add", "e": branch_entity(name), "a": a, "v": v} for a, v in facts]


def closing_op(registry: BranchRegistry, name: str, state: str) -> dict:
    """The fact that closes an open branch as `merged` or `dropped`. Main is the trunk
    every branch forks from: it is never closed."""
    if name == MAIN:
        verb = "merged" if state == "merged" else "dropped"
        raise BadInput(f"{MAIN} is the trunk every branch forks from; it cannot be {verb}")
    b = registry.get(name)
    if b.state != "open":
        raise Conflict(f"branch {name!r} is already {b.state}")
    return {"op": "add", "e": branch_entity(name), "a": "keel.branch/state", "v": state}


def replay_ops(registry: BranchRegistry, source: Branch, parent: Branch) -> list[dict]:
    """A branch's datoms as ops for its parent, or a Conflict naming each clash: an
    entity-attribute the parent changed too since the fork.

    The branch registry (keel.branch/*) is bookkeeping about branches, read from every
    branch; it is never replayed and never clashes. A forgotten value is not replayed
    either: it is gone, and a merge must not bring it back."""
    store = registry.store
    ours = store.branch_datoms(source.id, "keel.branch/")
    theirs = store.changed_since(parent.id, source.base, "keel.branch/")
    touched = {(r.e, r.a) for r in ours}
    clashes = sorted((e, a, tx) for e, a, tx in theirs if (e, a) in touched)
    if clashes:
        listing = "; ".join(
            f"{e} {a} (changed on {parent.name} in tx {tx})" for e, a, tx in clashes
        )
        raise Conflict(f"cannot merge {source.name!r}: {len(clashes)} clash(es): {listing}")
    return [
        {
            "op": "add" if r.op == ASSERT else "retract",
            "e": r.e,
            "a": r.a,
            "v": registry.decode(r.v, r.vtype, r.big),
            "valid_from": r.vf,
            "valid_to": r.vt,
        }
        for r in ours
        if r.v is not None
    ]
