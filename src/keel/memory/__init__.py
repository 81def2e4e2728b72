"""Memory and knowledge: surfaces with their own rules over the ledger, and recall.

`Memory(ledger)` writes and reads the surfaces; `Recall(ledger)` is the hybrid index.
"""

from .memory import Memory
from .recall import Recall

__all__ = ["Memory", "Recall"]
