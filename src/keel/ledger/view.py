"""Reading one branch as of a transaction, at one valid instant: values, lookups, history.

A view is fixed when it is made: the transactions it sees (its segments) and the valid
instant it folds at never move, so an as-of view reads the same forever.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import fold, values
from .encoding import ASSERT
from .errors import BadInput, Conflict, NotFound, SchemaError
from .forget import Forgotten
from .instants import format_instant
from .prepare import check_id
from .schema import Attribute
from .stores.base import INLINE_LIMIT

if TYPE_CHECKING:
    from .branches import Branch
    from .ledger import Ledger


class View:
    """What a branch looked like as of a transaction, at one valid instant."""

    def __init__(
        self,
        ledger: Ledger,
        branch: Branch,
        as_of: int,
        valid_at: int,
        segments: list[tuple[int, int]],
    ):
        self.ledger = ledger
        self.branch = branch
        self.as_of = as_of
        self.valid_at = valid_at
        self.segments = segments

    def _many(self, attr: Attribute) -> bool:
        return attr.many and self.as_of >= self.ledger._many_since.get(attr.ident, 0)

    def get(self, e: str) -> dict[str, Any] | None:
        """Current attribute values of `e`, or None when it has none."""
        rows = self.ledger.store.entity_datoms(check_id(e), self.segments)
        found = self.ledger._fold_entity(rows, self.valid_at, self.as_of)
        return found or None

    def value(self, e: str, a: str) -> Any:
        rows = self.ledger.store.entity_datoms(check_id(e), self.segments, a)
        return self.ledger._fold_entity(rows, self.valid_at, self.as_of).get(a)

    def get_json(self, e: str) -> dict[str, Any] | None:
        """`get` as JSON, for showing: a forgotten value is its marker, not absent."""
        rows = self.ledger.store.entity_datoms(check_id(e), self.segments)
        entity = self.ledger._fold_entity(rows, self.valid_at, self.as_of, marked=True)
        if not entity:
            return None
        out: dict[str, Any] = {"db/id": e}
        for a, v in entity.items():
            tag = self.ledger.attribute(a).tag
            out[a] = (
                [values.to_json(tag, x) for x in v]
                if isinstance(v, list)
                else values.to_json(tag, v)
            )
        return out

    def find(
        self, a: str, v: Any = None, *, limit: int | None = None, after: str = ""
    ) -> list[str]:
        """Entities whose current `a` is `v` (or who have `a` at all), in id order, paged."""
        attr = self.ledger.attribute(a)
        key, big = None, 0
        if v is not None:
            value = values.coerce(attr.type, v, a, self.ledger.default_tz)
            if attr.type == "ref":
                value = self.resolve_entity(value)
            key = values.encode(attr.tag, value)
            if len(key) > INLINE_LIMIT:
                key, big = hashlib.sha256(key).digest(), 1
        out: list[str] = []
        batch = 256
        while limit is None or len(out) < limit:
            ids = self.ledger.store.entities_with(a, key, big, self.segments, after, batch)
            for e in ids:
                current = self.value(e, a)
                if current is None:
                    continue
                if v is not None:
                    have = current if self._many(attr) else [current]
                    if value not in have:
                        continue
                out.append(e)
                if limit is not None and len(out) >= limit:
                    break
            if len(ids) < batch:
                break
            after = ids[-1]
        return out

    def refs(self, e: str) -> list[tuple[str, str]]:
        """(entity, attribute) pairs that currently refer to `e`."""
        out = []
        for src, a in self.ledger.store.referrers(e, values.REF, self.segments):
            current = self.value(src, a)
            have = current if isinstance(current, list) else [current]
            if e in have:
                out.append((src, a))
        return out

    def history(self, e: str, a: str | None = None) -> list[dict]:
        """Every datom about `e` (or `e`/`a`) visible to this view, with both time axes."""
        rows = self.ledger.store.entity_datoms(e, self.segments, a)
        txs = {}
        out = []
        for r in rows:
            if r.tx not in txs:
                txs[r.tx] = self.ledger.store.tx_rows(r.tx, r.tx)[0]
            t = txs[r.tx]
            out.append(
                {
                    "e": e,
                    "a": r.a,
                    "v": values.to_json(
                        r.vtype, self.ledger._shown(r.tx, r.idx, r.v, r.vtype, r.big)
                    ),
                    "op": "add" if r.op == ASSERT else "retract",
                    "valid_from": format_instant(r.vf),
                    "valid_to": format_instant(r.vt),
                    "tx": r.tx,
                    "tx_time": format_instant(t.time),
                    "author": t.author,
                    "reason": t.reason,
                }
            )
        return out

    def timeline(self, e: str, a: str) -> list[dict]:
        """What `e`/`a` was over valid time, as known in this view."""
        attr = self.ledger.attribute(a)
        rows = self.ledger._readable(self.ledger.store.entity_datoms(e, self.segments, a))
        return [
            {
                "v": values.to_json(attr.tag, self.ledger._decode(r.v, r.vtype, r.big)),
                "valid_from": format_instant(vf),
                "valid_to": format_instant(vt),
                "tx": r.tx,
            }
            for _k, vf, vt, r in fold.timeline(rows, self._many(attr))
        ]

    def intervals(self, e: str, a: str) -> list[tuple[Any, int, int]]:
        """`timeline` as (value, valid_from, valid_to) in microseconds, for code that
        computes with the intervals rather than showing them (so without the stretches a
        forgotten value held)."""
        attr = self.ledger.attribute(a)
        rows = self.ledger._readable(self.ledger.store.entity_datoms(e, self.segments, a))
        decoded = [
            (self.ledger._decode(r.v, r.vtype, r.big), vf, vt)
            for _k, vf, vt, r in fold.timeline(rows, self._many(attr))
        ]
        return [d for d in decoded if not isinstance(d[0], Forgotten)]

    def resolve_entity(self, ref: Any) -> str:
        """An entity id from an id or a lookup ref `[unique-attr, value]`."""
        if isinstance(ref, list | tuple):
            if len(ref) != 2 or not isinstance(ref[0], str):
                raise BadInput(f"a lookup ref is [attribute, value], got {ref!r}")
            attr = self.ledger.attribute(ref[0])
            if attr.unique is None:
                raise SchemaError(f"{ref[0]} is not unique, so it cannot look an entity up")
            found = self.find(ref[0], ref[1], limit=1)
            if not found:
                raise NotFound(f"no entity has {ref[0]} = {ref[1]!r}")
            return found[0]
        return check_id(ref)

    def check_expectations(self, expect: Sequence[dict]) -> None:
        for i, exp in enumerate(expect):
            if not isinstance(exp, dict) or "e" not in exp or not isinstance(exp.get("a"), str):
                raise BadInput(f"expectation {i + 1} must be an object with 'e', 'a' and 'v'")
            attr = self.ledger.attribute(exp["a"])
            try:
                e = self.resolve_entity(exp["e"])
            except NotFound:
                e = None
            current = self.value(e, exp["a"]) if e else None
            wanted = exp.get("v")
            if wanted is not None:
                wanted = values.coerce(attr.type, wanted, exp["a"], self.ledger.default_tz)
            ok = (
                wanted in current
                if attr.many and wanted is not None and current
                else current == wanted
            )
            if not ok:
                shown = values.to_json(attr.tag, current) if not attr.many else current
                raise Conflict(
                    f"expectation failed: {exp['e']} {exp['a']} is {shown!r}, "
                    f"not {exp.get('v')!r} (re-read and retry)"
                )
