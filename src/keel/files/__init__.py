"""Files shared by concurrent agents: generations, three-way merges, atomic writes, each
write a signed ledger transaction by its author."""

from .files import DECLARATIONS, SharedFiles, resolve
from .merge import Clash, Merged, merge

__all__ = ["DECLARATIONS", "Clash", "Merged", "SharedFiles", "merge", "resolve"]
