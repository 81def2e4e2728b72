"""The input validator: a transaction's ops, as a caller wrote them, into checked datoms.

It resolves entity ids (temp ids, lookup refs, unique-identity upserts), coerces values
to their attribute's type, fills in valid-time intervals and enforces the schema
(cardinality and uniqueness, retractions of what was asserted) before anything is signed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import values
from .encoding import ASSERT, RETRACT
from .errors import BadInput, SchemaError
from .ids import new_ulids
from .instants import FOREVER, SINCE_ALWAYS, parse_instant
from .schema import BUILTIN, Attribute
from .stores.base import INLINE_LIMIT
from .transactions import Datom

if TYPE_CHECKING:
    from .ledger import Ledger
    from .view import View

#: The longest entity id both stores index alike.
MAX_ID = 512


@dataclass
class Prepared:
    datoms: list[Datom]
    tempids: dict[str, str]


class Preparer:
    """Turns user ops into checked datoms: resolves ids, coerces values, enforces schema."""

    def __init__(
        self,
        ledger: Ledger,
        view: View,
        time_us: int,
        system: bool,
        replay: bool,
        declared: dict[str, Attribute] | None = None,
        system_ops: int = 0,
    ):
        self.ledger, self.view, self.time, self.system = ledger, view, time_us, system
        # A replay (a merge) carries datoms from several transactions: later ones win,
        # as they did on the branch, so two values for one time are not a mistake there.
        self.replay = replay
        # Attributes this transaction declares itself, usable by its other ops; the first
        # `system_ops` ops are those declarations (db/* facts only keel may write).
        self.schema = {**ledger._schema, **declared} if declared else ledger._schema
        self.system_ops = system_ops
        self.tempids: dict[str, str] = {}

    def prepare(self, ops: Sequence[dict]) -> Prepared:
        parsed = [self._parse(i, op) for i, op in enumerate(ops)]
        self._upsert_tempids(parsed)
        self._mint_tempids(parsed)
        datoms = []
        entity, tempids, max_id, now = self._entity, self.tempids, MAX_ID, self.time
        for op, attr, e_raw, value in parsed:
            if type(e_raw) is str and 0 < len(e_raw) <= max_id and e_raw.isprintable():
                e = tempids[e_raw] if e_raw[0] == "#" else check_id(e_raw)
            else:
                e = entity(e_raw)
            if attr.type == "ref":
                value = entity(value)
            if "valid_from" in op or "valid_to" in op:
                vf, vt = self._interval(op)
            else:
                vf, vt = now, FOREVER
            datoms.append(Datom(e, attr.ident, value, _OPS[op.get("op", "add")], vf, vt, attr))
        self._check(datoms)
        return Prepared(datoms, dict(self.tempids))

    def _parse(self, i: int, op: Any) -> tuple[dict, Attribute, Any, Any]:
        if type(op) is not dict or not op.keys() <= _OP_FIELDS or not op.keys() >= _OP_NEEDS:
            raise _malformed(i, op)
        if not isinstance(op.get("op", "add"), str) or op.get("op", "add") not in _OPS:
            raise BadInput(f"op {i + 1}: 'op' must be add or retract, got {op.get('op')!r}")
        a = op["a"]
        attr = self.schema.get(a) if type(a) is str else None
        if attr is None:
            if not isinstance(a, str):
                raise BadInput(f"op {i + 1}: 'a' must be an attribute name")
            attr = self.ledger.attribute(a)
        if attr.ident in BUILTIN and not (self.system or i < self.system_ops):
            raise SchemaError(f"{a} is written by keel itself, not by a transaction")
        value = op["v"]
        if value is None:
            raise SchemaError(f"op {i + 1}: {a} needs a value (use retract to remove one)")
        vtype = attr.type
        if vtype == "string" and type(value) is str and value.isascii():
            pass  # the common case, already valid
        elif vtype != "ref":
            value = values.coerce(vtype, value, a, self.ledger.default_tz)
        return op, attr, op["e"], value

    def _upsert_tempids(self, parsed: list) -> None:
        """A temp id asserting a unique-identity value already held resolves to its holder."""
        for op, attr, e_raw, value in parsed:
            if not (_is_tempid(e_raw) and attr.unique == "identity" and op.get("op") != "retract"):
                continue
            if attr.ident not in self.ledger._schema:
                continue  # declared by this very transaction: nothing holds it yet
            holder = self.view.find(attr.ident, value, limit=1)
            if holder:
                bound = self.tempids.setdefault(e_raw, holder[0])
                if bound != holder[0]:
                    raise SchemaError(f"{e_raw} matches two existing entities by identity")

    def _mint_tempids(self, parsed: list) -> None:
        """Give every temp id not bound by identity a fresh ULID, in order of appearance."""
        fresh: dict[str, None] = {}
        for _op, attr, e_raw, value in parsed:
            for ref in (e_raw, value) if attr.type == "ref" else (e_raw,):
                if _is_tempid(ref) and ref not in self.tempids:
                    if len(ref) < 2:
                        raise BadInput("a temp id needs a name after '#'")
                    fresh[ref] = None
        self.tempids.update(zip(fresh, new_ulids(len(fresh), self.time), strict=True))

    def _entity(self, ref: Any) -> str:
        if isinstance(ref, str):
            # Every id is checked, whatever path it takes: a NUL, say, is refused on SQLite
            # as it must be on PostgreSQL, whose text cannot hold one.
            return self.tempids[ref] if ref[:1] == "#" else check_id(ref)
        return self.view.resolve_entity(ref)

    def _interval(self, op: dict) -> tuple[int, int]:
        def instant(key: str, default: int) -> int:
            raw = op.get(key)
            if raw is None:
                return default
            if isinstance(raw, int) and not isinstance(raw, bool):
                if not SINCE_ALWAYS <= raw <= FOREVER:
                    raise BadInput(f"{key} {raw} is outside 64-bit microseconds")
                return raw
            return parse_instant(raw, self.ledger.default_tz)

        vf = instant("valid_from", self.time)
        vt = instant("valid_to", FOREVER)
        if vf >= vt:
            raise BadInput(f"valid_from must be before valid_to in {op!r}")
        return vf, vt

    def _check(self, datoms: list[Datom]) -> None:
        asserted: dict[tuple[str, str], list[Datom]] = {}
        unique: list[Datom] = []
        released: set[tuple[str, str, Any]] = set()
        for d in datoms:
            attr = d.attr
            if d.op == ASSERT:
                if not attr.many and not self.replay:
                    for other in asserted.get((d.e, d.a), []):
                        if other.value != d.value and other.vf < d.vt and d.vf < other.vt:
                            raise SchemaError(
                                f"{d.a} has cardinality one, but this transaction gives {d.e} "
                                f"two values for the same time: {other.value!r} and {d.value!r}"
                            )
                asserted.setdefault((d.e, d.a), []).append(d)
                if attr.unique:
                    unique.append(d)
            else:
                released.add((d.e, d.a, _hashable(d.value)))
                same_tx = any(x.value == d.value for x in asserted.get((d.e, d.a), []))
                if not same_tx and not self._ever_asserted(d):
                    raise SchemaError(f"{d.e} has no {d.a} = {d.value!r} to retract")
        if unique:
            self._check_unique(unique, asserted, released)

    def _check_unique(self, unique: list[Datom], asserted: dict, released: set) -> None:
        """A unique value may have one holder, counting what this transaction releases:
        a retraction, or a cardinality-one holder moving on to another value."""
        seen: dict[tuple[str, Any], str] = {}
        for d in unique:
            key = _hashable(d.value)
            holder = seen.setdefault((d.a, key), d.e)
            if holder != d.e:
                raise SchemaError(
                    f"{d.a} is unique, but {holder} and {d.e} both take {d.value!r} "
                    "in this transaction"
                )
            if d.a not in self.ledger._schema:
                continue  # declared by this very transaction: no one else holds it
            for other in self.view.find(d.a, d.value, limit=2):
                moved = any(x.value != d.value for x in asserted.get((other, d.a), []))
                if other != d.e and (other, d.a, key) not in released and not moved:
                    raise SchemaError(f"{d.a} is unique and {other} already has {d.value!r}")

    def _ever_asserted(self, d: Datom) -> bool:
        data = values.encode(d.attr.tag, d.value)
        if len(data) > INLINE_LIMIT:
            data = hashlib.sha256(data).digest()
        rows = self.ledger.store.entity_datoms(d.e, self.view.segments, d.a)
        return any(r.op == ASSERT and r.v is not None and bytes(r.v) == data for r in rows)


_OP_FIELDS = frozenset({"op", "e", "a", "v", "valid_from", "valid_to"})
_OP_NEEDS = frozenset({"e", "a", "v"})
_OPS = {"add": ASSERT, "retract": RETRACT}


def _malformed(i: int, op: Any) -> BadInput:
    """Name what is wrong with a malformed op."""
    where = f"op {i + 1}"
    if not isinstance(op, dict):
        return BadInput(f"{where} must be an object, got {op!r}")
    unknown = set(op) - _OP_FIELDS
    if unknown:
        return BadInput(f"{where} has unknown field(s) {sorted(unknown)}")
    missing = sorted(_OP_NEEDS - set(op))
    return BadInput(f"{where} is missing {', '.join(map(repr, missing))}")


def check_id(ref: Any) -> str:
    """An entity id: a non-empty string of at most 512 characters, valid Unicode, no NUL
    (which PostgreSQL text cannot hold, so both stores refuse it alike)."""
    if not isinstance(ref, str) or not ref or len(ref) > MAX_ID:
        raise BadInput(f"an entity id must be a non-empty string of at most {MAX_ID} characters")
    if not ref.isascii():
        values.check_text(ref, "an entity id")
    if "\x00" in ref:
        raise BadInput("an entity id cannot contain a NUL character")
    return ref


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def _is_tempid(ref: Any) -> bool:
    return isinstance(ref, str) and ref.startswith("#")
