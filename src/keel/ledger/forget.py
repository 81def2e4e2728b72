"""Forgetting: erasing a value's bytes while the chain still verifies (docs/ledger-format.md §12).

A datom commits to a salted digest of its value, never the value (§3), so the value and its
salt can be erased from the store while every datom hash, root, transaction hash, signature
and Merkle root still recomputes. Erasure is never silent: it is recorded by a signed
*forgetting*, the entity `forget:<tx>` written in the same transaction, naming who (the
transaction's author), when (its time), why, and exactly which datoms lost their value.
Verification accepts an erased value only when a forgetting names its datom.

Reads never pretend the value is still there, nor that it never was:

- reads that *show* (`View.get_json`, `history`, `timeline`, and so the JSON of every
  surface) give the marker `{"forgotten": {"by", "tx", "time", "why"}}` in its place;
- reads that *compute* (`View.get`, `value`, `intervals`, `find`) see no value there.

Either way folding still counts the erased datom: a forgotten newer value still hides an
older one, and a forgotten retraction still retracts. Erased datoms that held equal values
fold as equal (the forgetting records which did, as a group number), without keeping
anything that could be matched against a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .errors import BadInput, Refused
from .instants import format_instant
from .schema import RESERVED_PREFIXES
from .stores import Store
from .stores.rows import Fact
from .transactions import TxResult

_F = "keel.forget/"
#: The erased datoms, as a JSON list of [tx, idx, group]; datoms of one group held one value.
DATOMS = f"{_F}datoms"
WHY = f"{_F}why"
ENTITY = f"{_F}entity"
ATTRIBUTE = f"{_F}attribute"
#: Entities that keep the ledger verifiable (or readable): never forgotten.
STRUCTURAL_ENTITIES = ("identity:", "branch:", "attr:", "forget:")
STRUCTURAL_ATTRS = ("db/", "keel.identity/", "keel.branch/", _F)
#: The storage flag of an erased row as reads see it: no store ever holds it (0 inline,
#: 1 in the blob store), so its value key never equals a real value's.
ERASED = 2
MAX_WHY = 2000


def entity(tx: int) -> str:
    """The forgetting recorded by transaction `tx`."""
    return f"forget:{tx}"


class Forgotten(dict):
    """A forgotten value as reads show it: `{"forgotten": {"by", "tx", "time", "why"}}`.

    A dict, so it is plain JSON wherever a value goes; its own type, so code can tell it
    from a JSON value that merely looks alike."""

    def __init__(self, by: str | None, tx: int | None, time: int | None, why: str | None):
        shown = format_instant(time) if time is not None else None
        super().__init__(forgotten={"by": by, "tx": tx, "time": shown, "why": why})

    @property
    def tx(self) -> int | None:
        return self["forgotten"]["tx"]


#: What reads show for an erased value that no forgetting names (verification fails on it).
UNRECORDED = Forgotten(None, None, None, None)


@dataclass
class Forgetting:
    """What one forgetting did."""

    result: TxResult
    entity: str
    attribute: str | None
    #: The entity's datoms erased, and the datoms elsewhere that quoted what they held.
    datoms: int
    quotes: int
    blobs: int
    #: Where bytes may still linger, and why (empty when the store scrubbed everything).
    notes: list[str] = field(default_factory=list)


def check_why(why: object) -> str:
    if not isinstance(why, str) or not why.strip():
        raise BadInput("say why it is forgotten: the reason is kept, signed, with the forgetting")
    if len(why) > MAX_WHY or "\x00" in why:
        raise BadInput(f"the reason must be at most {MAX_WHY} characters, without NUL")
    return why.strip()


def check_target(e: str, a: str | None) -> None:
    """Refuse what keel needs to verify and read the ledger itself."""
    if e.startswith(STRUCTURAL_ENTITIES):
        raise Refused(
            f"{e} is part of how the ledger verifies (identities, branches, the schema and "
            "forgettings are never forgotten)"
        )
    if a is not None and a.startswith(RESERVED_PREFIXES):
        raise Refused(f"{a} is keel's own bookkeeping; it cannot be forgotten")


def check_rows(e: str, rows: Iterable[Fact]) -> None:
    """Refuse an entity-wide forgetting that would reach keel's own attributes."""
    reserved = sorted({r.a for r in rows if r.a.startswith(RESERVED_PREFIXES)})
    if reserved:
        raise Refused(
            f"{e} holds keel's own bookkeeping ({', '.join(reserved[:3])}); forget its "
            "other attributes by name"
        )


def groups(rows: Sequence[Fact]) -> list[list[int]]:
    """[tx, idx, group] for each row: rows holding one stored value share a group."""
    seen: dict[tuple, int] = {}
    out = []
    for r in sorted(rows, key=lambda r: (r.tx, r.idx)):
        key = (r.a, bytes(r.v) if r.v is not None else None, r.big, r.vtype)
        out.append([r.tx, r.idx, seen.setdefault(key, len(seen))])
    return out


def record_ops(tx: int, e: str, a: str | None, why: str, erased: list[list[int]]) -> list[dict]:
    f = entity(tx)
    ops = [
        {"op": "add", "e": f, "a": ENTITY, "v": e},
        {"op": "add", "e": f, "a": WHY, "v": why},
        {"op": "add", "e": f, "a": DATOMS, "v": erased},
    ]
    if a is not None:
        ops.append({"op": "add", "e": f, "a": ATTRIBUTE, "v": a})
    return ops


def parse_datoms(value: object) -> list[tuple[int, int, int]]:
    """A forgetting's list of erased datoms; ValueError when it is not one."""
    if not isinstance(value, list):
        raise ValueError("not a list")
    out = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not all(type(x) is int and x >= 0 for x in item)
        ):
            raise ValueError(f"{item!r} is not [tx, idx, group]")
        out.append((item[0], item[1], item[2]))
    return out


Decode = Callable[[bytes | None, int, int], object]


class Erasures:
    """Which forgetting erased each datom, read from the ledger and cached: forgettings are
    only ever added, so an entry never goes stale, and the store is read again only when
    a read meets an erased datom this process has not seen named yet."""

    def __init__(self, store: Store, decode: Decode):
        self.store = store
        self.decode = decode
        self._by_datom: dict[tuple[int, int], tuple[int, int]] = {}
        self._markers: dict[int, Forgotten] = {}

    def load(self) -> None:
        facts: dict[str, dict] = {}
        for row in self.store.attr_datoms((DATOMS, WHY), None):
            if row.v is not None:
                value = self.decode(row.v, row.vtype, row.big)
                facts.setdefault(row.e, {})[row.a] = (row.tx, value)
        for found in facts.values():
            if DATOMS not in found:
                continue
            tx, listed = found[DATOMS]
            try:
                erased = parse_datoms(listed)
            except ValueError:
                continue  # a damaged record: verification names it
            if tx not in self._markers:
                (row,) = self.store.tx_rows(tx, tx)
                why = found.get(WHY, (tx, None))[1]
                self._markers[tx] = Forgotten(row.author, tx, row.time, why)
            for t, i, g in erased:
                self._by_datom[(t, i)] = (tx, g)

    def named(self, tx: int, idx: int) -> tuple[int, int] | None:
        """(forgetting tx, group) of an erased datom, or None when no forgetting names it."""
        found = self._by_datom.get((tx, idx))
        if found is None:
            self.load()
            found = self._by_datom.get((tx, idx))
        return found

    def row(self, r: Fact) -> Fact:
        """An erased row as reads fold it: its value a token of its forgetting and group."""
        found = self.named(r.tx, r.idx)
        token = b"%d:%d" % found if found else b"0:%d:%d" % (r.tx, r.idx)
        return tuple.__new__(Fact, (r.a, token, r.vtype, ERASED, r.op, r.vf, r.vt, r.tx, r.idx))

    def marker(self, token: bytes) -> Forgotten:
        tx = int(bytes(token).split(b":", 1)[0])
        return self._markers.get(tx, UNRECORDED)

    def marker_of(self, tx: int, idx: int) -> Forgotten:
        found = self.named(tx, idx)
        return self._markers.get(found[0], UNRECORDED) if found else UNRECORDED

    def positions(self) -> dict[tuple[int, int], int]:
        """Every erased datom named by a forgetting, with that forgetting's transaction."""
        self.load()
        return {k: tx for k, (tx, _g) in self._by_datom.items()}
