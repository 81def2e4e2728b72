"""Recovery as a forward transaction: the ops that make an entity read as it once did.

Both axes are restored: every attribute's whole valid-time timeline as known at the
target transaction is put back, and what was added since is retracted over all of valid
time. Nothing is rewritten; the restore is one more signed transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import fold
from .errors import NotFound, Refused
from .forget import Forgotten
from .instants import FOREVER, SINCE_ALWAYS

if TYPE_CHECKING:
    from .ledger import Ledger
    from .stores.rows import Fact
    from .view import View


def restore_ops(ledger: Ledger, view: View, e: str, then: list[tuple[int, int]]) -> list[dict]:
    """Ops that turn `e` as `view` sees it into `e` as the segments `then` saw it;
    none when the two already match."""
    old_rows = ledger._readable(ledger.store.entity_datoms(e, then))
    new_rows = ledger._readable(ledger.store.entity_datoms(e, view.segments))
    if not new_rows:
        raise NotFound(f"there is no entity {e!r}")

    def value(row: Fact) -> Any:
        found = ledger._decode(row.v, row.vtype, row.big)
        if isinstance(found, Forgotten):
            raise Refused(
                f"cannot restore {e}: a value of its {row.a} was forgotten in tx {found.tx}, "
                "and a forgotten value cannot be written back"
            )
        return found

    old, new = fold.group_by_attr(old_rows), fold.group_by_attr(new_rows)
    ops: list[dict] = []
    for a in sorted(set(old) | set(new)):
        many = ledger.attribute(a).many
        before = fold.timeline(old.get(a, []), many)
        after = fold.timeline(new.get(a, []), many)
        if [s[:3] for s in before] == [s[:3] for s in after]:
            continue  # the same values over the same stretches of valid time
        for key in {s.key for s in after}:
            row = next(s.row for s in after if s.key == key)
            ops.append(
                {
                    "op": "retract",
                    "e": e,
                    "a": a,
                    "v": value(row),
                    "valid_from": SINCE_ALWAYS,
                    "valid_to": FOREVER,
                }
            )
        for s in before:
            ops.append(
                {
                    "op": "add",
                    "e": e,
                    "a": a,
                    "v": value(s.row),
                    "valid_from": s.valid_from,
                    "valid_to": s.valid_to,
                }
            )
    return ops
