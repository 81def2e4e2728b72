"""Memory and knowledge: surfaces with their own rules over the ledger, and recall.

`Memory(ledger)` writes and reads the surfaces; `Recall(ledger)` is the hybrid index.
Recall (and numpy under it) loads on first use: a command that does not recall does not
pay for it.
"""

from typing import TYPE_CHECKING, Any

from .memory import Memory

if TYPE_CHECKING:
    from .recall import Recall

__all__ = ["Memory", "Recall"]


def __getattr__(name: str) -> Any:
    if name == "Recall":
        from .recall import Recall

        return Recall
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
