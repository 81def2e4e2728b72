"""What `keel up` runs in one process: the ledger, the bus and the scheduler.

Upper layers compose more onto it (health registers its probe and status section, the
HTTP API serves it) through `probes` and `kinds`, so this layer never imports them.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..bus import Bus
from ..cadence import canon
from ..cadence import jobs as jobs_mod
from ..cadence.clock import clock_from_env
from ..cadence.kinds import KINDS, PROBES
from ..cadence.scheduler import LEASE, Scheduler, ensure_schema, this_node
from ..govern.home import Home
from ..ledger import BadInput, Ledger
from ..ledger.instants import parse_duration
from ..memory import rules

if TYPE_CHECKING:
    from ..memory.recall import Recall

DEFAULT_CADENCE = """\
# keel's cadence: recurring jobs. Edit freely; `keel up` and `keel cadence sync` load it.
# A schedule is a 5-field cron line or @daily-style macro, "every 30m", or
# "at 2026-12-01T09:00". Times are in the job's `tz`, by default the home's time zone.

[[job]]
name = "probe.daily"
schedule = "0 8 * * *"
kind = "probe"
run = "ledger"
max_silence = "26h"

[[job]]
name = "doctor.sweep"
schedule = "every 1h"
kind = "probe"
run = "doctor"
max_silence = "3h"
"""


def redact(location: str) -> str:
    """A store location fit to show: a DSN's password replaced by ***."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", location)


def configured_lease(home: Home) -> float:
    """The lease on a run, in real seconds: `[cadence] lease` in config.toml (e.g. "30s"),
    or 30 s. Shorter means a dead node's runs are taken over sooner, at the cost of more
    renewals (one transaction per node every third of it while runs are in flight)."""
    cadence = home.config().get("cadence", {})
    text = cadence.get("lease", LEASE) if isinstance(cadence, dict) else LEASE
    try:
        lease = parse_duration(text)
    except BadInput as exc:
        raise BadInput(f"config cadence.lease: {exc}") from None
    if lease <= 0:
        raise BadInput(f"config cadence.lease must be longer than 0 seconds, not {text!r}")
    return lease


def guarded_ledgers(home: Home) -> Callable[..., Ledger]:
    """Ledger connections of `home` with memory's rules installed: the default for a
    runtime built on its own (tests); keel's services pass their own factory."""

    def open_ledger(as_name: str | None = None, **kw) -> Ledger:
        ledger = home.ledger(as_name, **kw)
        rules.install(ledger)
        return ledger

    return open_ledger


class Runtime:
    def __init__(
        self,
        home: Home,
        clock=None,
        tick: float = 1.0,
        late_after: float = 60.0,
        grace: float = 10.0,
        ledgers: Callable[..., Ledger] | None = None,
        hold: Callable[[], str | None] | None = None,
        lease: float | None = None,
    ):
        self.home = home
        #: How this node's cadence file stood with the ledger's canon at the last sync.
        self.canon_state: str | None = None
        self.clock = clock or clock_from_env()
        #: Opens a connection with every write guard installed (`ledgers(as_name)`).
        self._ledgers = ledgers or guarded_ledgers(home)
        self.node = this_node()
        self.kinds = dict(KINDS)
        self.probes = dict(PROBES)
        self.bus = Bus(self.open_ledger)
        self.scheduler = Scheduler(
            self.open_ledger,
            clock=self.clock,
            node=self.node,
            kinds=self.kinds,
            probes=self.probes,
            home=home.path,
            tick=tick,
            late_after=late_after,
            grace=grace,
            hold=hold,
            lease=configured_lease(home) if lease is None else lease,
        )
        self.started_at: float | None = None
        self._recall: Recall | None = None
        self._recall_lock = threading.Lock()

    @property
    def cadence_file(self) -> Path:
        return self.home.path / "canon" / "cadence.toml"

    def open_ledger(self, as_name: str | None = None) -> Ledger:
        ledger = self._ledgers(as_name, clock=self.clock.now)
        ledger.on_commit(self.bus.notify)
        return ledger

    def recall(self) -> Recall:
        """The recall index, shared by every surface of this process (it locks itself)."""
        with self._recall_lock:
            if self._recall is None:
                from ..memory.recall import Recall

                self._recall = Recall(
                    self.open_ledger(), self.home.embedder(), configured=self.home.embedder
                )
            return self._recall

    def prepare(self, on_purpose: bool = False) -> list[str]:
        """Declare the runtime's schema and bring the canon cadence file and the ledger's
        canon together (`keel.cadence.canon`): a fresh home's file is the ledger's accepted
        text, or the default cadence on a new ledger. `on_purpose` (`keel cadence sync`)
        applies this node's file whatever the ledger holds. Returns the jobs that changed."""
        with self.open_ledger() as ledger:
            ensure_schema(ledger)
            ledger.declare(canon.SCHEMA, system=True)
            if not self.cadence_file.exists():
                text = canon.accepted_text(ledger) or DEFAULT_CADENCE
                self.cadence_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(self.cadence_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
            zone = self.home.timezone().key  # jobs that name no zone keep the home's time

            def apply() -> list[str]:
                return jobs_mod.sync_canon(ledger, self.cadence_file, set(self.kinds), zone)

            synced = canon.sync(ledger, self.cadence_file, self.home.node, apply, on_purpose)
            self.canon_state = synced.state
            return synced.changed

    def start(self) -> None:
        self.prepare()
        # The index follows the ledger: one catch-up per transaction, resumable from the
        # cursor the index keeps with its rows. It is this node's own state, so each node
        # sharing the ledger follows it under a subscription of its own.
        self.bus.subscribe(
            f"recall-index@{self.home.node}", lambda _event: self.recall().catch_up(), ["tx"]
        )
        self.bus.start()
        self.scheduler.start()
        self.started_at = time.time()

    def stop(self) -> None:
        self.scheduler.stop()
        self.bus.stop()
        with self._recall_lock:
            if self._recall is not None:
                self._recall.ledger.close()
                self._recall.close()
                self._recall = None

    def recall_status(self) -> dict | None:
        """The recall index's status, if this process has loaded it."""
        with self._recall_lock:
            return self._recall.status() if self._recall is not None else None
