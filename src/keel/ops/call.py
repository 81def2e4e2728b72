"""What an operation's handler works with: the home's services and who is calling.

A `Call` is made by the door for one call. Reads use this thread's ledger connection;
writes are signed with the caller's own key, so the ledger says who did what whichever
surface the call came through.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from ..errors import NotFound
from ..ledger import Ledger, Signer
from ..memory import Memory

if TYPE_CHECKING:
    from ..memory import Recall
    from .door import Caller
    from .services import Services


#: Told (done, total) as long work goes on, for a surface to show progress.
Progress = Callable[[int, int], None]


class Call:
    def __init__(
        self,
        services: Services,
        caller: Caller,
        role: str,
        progress: Progress | None = None,
    ):
        self.services = services
        self.caller = caller
        self.identity = caller.identity
        self.role = role
        self.progress = progress

    @property
    def ledger(self) -> Ledger:
        """This thread's ledger connection (its guards installed), signing as the caller:
        whatever an operation writes is the caller's act, whichever subsystem writes it."""
        ledger = self.services.ledger()
        ledger.signer = self._own_key
        return ledger

    @cached_property
    def _own_key(self) -> Signer | None:
        """The caller's key if this home holds it (reads need none; a write without one is
        refused by the ledger, which signs nothing unsigned)."""
        try:
            return self.services.signer(self.identity)
        except NotFound:
            return None

    @cached_property
    def signer(self) -> Signer:
        """The caller's key: every write of this call is signed with it."""
        return self.services.signer(self.identity)

    @cached_property
    def memory(self) -> Memory:
        return Memory(self.ledger, self.signer)

    def recall(self) -> Recall:
        return self.services.recall()
