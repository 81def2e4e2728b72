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
from ..govern import audit
from ..ledger import Ledger, Signer
from ..memory import Memory

if TYPE_CHECKING:
    from ..govern.policy import Policy
    from ..memory import Recall
    from .door import Caller, Door
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
        *,
        operation: str = "",
        capability: str = "",
        tier: str = "T0",
        policy: Policy | None = None,
        approval: str = "",
        door: Door | None = None,
    ):
        self.services = services
        self.caller = caller
        self.identity = caller.identity
        self.role = role
        self.progress = progress
        self.operation, self.capability, self.approval = operation, capability, approval
        #: The caller's governance tier and the policy it was judged by.
        self.tier, self.policy = tier, policy
        #: The door this call came through (an approved action goes through it again).
        self.door = door
        self._borrowed: tuple[Ledger, Signer | None, object] | None = None

    @property
    def ledger(self) -> Ledger:
        """This thread's ledger connection (its guards installed), signing as the caller
        and stamping each transaction with this call's operation: whatever an operation
        writes is the caller's act, whichever subsystem writes it."""
        ledger = self.services.ledger()
        if self._borrowed is None:
            self._borrowed = (ledger, ledger.signer, ledger.stamp)
        ledger.signer = self._own_key
        ledger.stamp = self._stamp
        return ledger

    def _stamp(self, tx: int) -> list[dict]:
        return audit.stamp_ops(
            tx, self.operation, self.capability, self.caller.surface, self.approval
        )

    def close(self) -> None:
        """Give the thread's connection back as it was (the next call stamps its own)."""
        if self._borrowed is not None:
            ledger, ledger.signer, ledger.stamp = self._borrowed
            self._borrowed = None

    def may_see_scope(self, scope: str | None) -> bool:
        """Whether this caller may read working memory of `scope` (its own, or one its
        pins grant; the operator sees every scope)."""
        if self.tier == "T0" or self.policy is None:
            return self.tier == "T0"
        operator = self.services.home.operator
        decision = self.policy.decide(
            self.identity, operator, "memory.read", {"scope": [scope or ""]}
        )
        return decision.allowed

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
