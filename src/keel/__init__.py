"""keel: a local-first operating layer for AI agents, built on a signed bitemporal ledger.

For Python programs, `keel.open(home)` gives every operation keel offers (see
`keel.ops.facade`); importing this package loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from .ops.facade import Keel


def open(home: str | Path | None = None, *, identity: str | None = None) -> Keel:
    """Open the keel home at `home` (default: KEEL_HOME, else ~/.keel) as `identity`
    (default: its operator). Opening writes nothing to the ledger."""
    from .ops.facade import open_keel

    return open_keel(home, identity)


def init(home: str | Path | None = None) -> Keel:
    """Create the keel home at `home` if needed (idempotent) and open it as its operator."""
    from .ops.facade import init_keel

    return init_keel(home)
