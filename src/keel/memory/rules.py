"""Each surface's rules, enforced as a ledger guard so they hold on every path (CLI, API,
MCP, raw `transact`): a refused write raises and nothing of it is stored."""

from __future__ import annotations

from ..ledger import BadInput, Ledger, PendingTx, Refused
from ..ledger.instants import FOREVER
from ..ledger.ledger import identity_entity
from .model import MAX_TEXT, SURFACES

#: Surfaces whose items never change once written (new facts go in new items).
APPEND_ONLY = {"source": ("mem/text", "source/hash", "mem/surface"), "observation": None}
#: Labels on append-only items that may still be retracted (tag and topic spelling fixes).
RETRACTABLE = {"source": ("source/topics", "mem/tags")}


def install(ledger: Ledger) -> None:
    """Add the memory guard to `ledger` (adding it twice is harmless)."""
    ledger.add_guard(check)


def check(tx: PendingTx) -> None:
    touched: dict[str, list] = {}
    for d in tx.datoms:
        if d.a.startswith(("mem/", "canon/", "obs/", "source/")):
            touched.setdefault(d.e, []).append(d)
    for e, datoms in touched.items():
        before = tx.view.value(e, "mem/surface")
        after = next((d.value for d in datoms if d.a == "mem/surface" and d.op == 1), before)
        if after is not None and after not in SURFACES:
            raise BadInput(f"{after!r} is not a memory surface ({', '.join(SURFACES)})")
        for d in datoms:
            if isinstance(d.value, str) and len(d.value) > MAX_TEXT:
                raise BadInput(
                    f"{d.a} of {e} is {len(d.value):,} characters; memory takes at most "
                    f"{MAX_TEXT:,} (nothing was truncated or stored)"
                )
            if isinstance(d.value, str) and "\x00" in d.value:
                # Text search (PostgreSQL's above all) cannot hold it, and memory is text.
                raise BadInput(f"{d.a} of {e} holds a NUL character, which memory text cannot")
        if after == "canon" or any(d.a.startswith("canon/") for d in datoms):
            _operator_only(tx)
        if before in APPEND_ONLY:
            _append_only(e, before, datoms)
        if after == "working":
            _expiring(e, datoms)


def _operator_only(tx: PendingTx) -> None:
    role = tx.view.value(identity_entity(tx.author), "keel.identity/role")
    if role != "operator":
        raise Refused(f"only the operator may write canon; {tx.author!r} is {role or 'unknown'}")


def _append_only(e: str, surface: str, datoms: list) -> None:
    frozen = APPEND_ONLY[surface]
    for d in datoms:
        relabel = d.a in RETRACTABLE.get(surface, ())
        if (d.op != 1 and not relabel) or frozen is None or d.a in frozen:
            raise Refused(
                f"{e} is a{'n' if surface[0] in 'aeiou' else ''} {surface}, which never "
                f"changes once written; record a new one instead"
            )


def _expiring(e: str, datoms: list) -> None:
    for d in datoms:
        if d.op == 1 and d.vt == FOREVER:
            raise BadInput(f"working memory {e} needs an expiry (valid_to), and {d.a} has none")
