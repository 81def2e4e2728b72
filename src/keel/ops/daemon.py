"""`keel up`, composed: one daemon per home, whose ledger is verified before it serves.

Before anything runs, the daemon takes the home's lock (another daemon holding it is exit
status 75, which the service unit does not restart on) and verifies what was written since
its last verified checkpoint (all of it, if an earlier check found damage). If the ledger
verifies, the daemon signs a new checkpoint (the next start verifies from there), clears
any read-only mark and starts the runtime: the bus,
the scheduler and the recall index. If it does not, keel turns read-only: the failure is
recorded in the home, a health finding names the first bad transaction, and nothing that
could change state is started — the API still answers, and every write is refused with the
reason.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass

from ..daemon.lock import DaemonLock
from ..errors import KeelError
from ..govern.join import started_ops
from ..govern.secrets import RedactingStream
from ..health.findings import Finding, record
from .services import Services, build_runtime

INTEGRITY = "integrity"


@dataclass
class Verified:
    ok: bool
    transactions: int
    seconds: float
    problem: str | None = None
    first_bad: int | None = None
    since: int = 0  # the checkpoint verification started after (0: from the first)


class Daemon:
    def __init__(self, services: Services):
        self.services = services
        self.lock = DaemonLock(services.home.path)
        self.verified: Verified | None = None
        self.started = False

    def redact_log(self) -> None:
        """Redact every secret's value from what this process prints from now on: the
        daemon's log (its stdout and stderr, kept by systemd or launchd)."""
        if not isinstance(sys.stdout, RedactingStream):
            sys.stdout = RedactingStream(sys.stdout, self.services.redact)
            sys.stderr = RedactingStream(sys.stderr, self.services.redact)

    def start(self) -> Verified:
        """Lock the home, verify the ledger, and start the runtime if it verified."""
        self.lock.acquire({"port": None})
        try:
            self.verified = self._verify()
            runtime = build_runtime(self.services)
            self.services.runtime = runtime
            if self.verified.ok:
                runtime.start()
                self.started = True
                self._announce_node()
            else:
                runtime.started_at = time.time()  # up and answering, running nothing
        except BaseException:
            self.lock.release()
            raise
        return self.verified

    def _announce_node(self) -> None:
        """Record which machine and version this node started (`keel node list`); a
        read-only ledger just goes without."""
        from . import version

        services = self.services
        with contextlib.suppress(KeelError), services.open_ledger() as ledger:
            process = services.runtime.node if services.runtime else ""
            ops = started_ops(services.home.identity, version(), ledger.clock(), process)
            ledger.transact(ops, f"node {services.home.identity} started")

    def _verify(self) -> Verified:
        home = self.services.home
        started = time.perf_counter()
        with self.services.open_guarded() as ledger:
            # What was written since the last checkpoint the ledger can still vouch for
            # (everything, when there is none) — or, when an earlier check found damage,
            # everything: only a full pass may lift the read-only mark.
            marked = home.integrity_problem() is not None
            report = ledger.verify() if marked else ledger.verify_incremental()
            seconds = round(time.perf_counter() - started, 3)
            if report.ok:
                home.set_integrity_problem(None)
                with contextlib.suppress(KeelError):
                    record(ledger, [], [INTEGRITY])  # resolve a finding of an earlier start
                    ledger.checkpoint()
                return Verified(True, report.transactions, seconds, since=report.since)
            problem = report.failure
            home.set_integrity_problem(problem, report.first_bad)
            message = f"the ledger failed verification: {problem}"
            # The finding goes on top of the damage; if even that cannot be written, the
            # read-only mark in the home still says why (status and every write show it).
            with contextlib.suppress(Exception):
                record(ledger, [Finding(INTEGRITY, "ledger", message, "error")], [INTEGRITY])
            return Verified(
                False, report.transactions, seconds, problem, report.first_bad, report.since
            )

    def announce(self, port: int, address: str) -> None:
        """Say where the API listens, for `keel status` and clients in other processes."""
        self.lock.update({"port": port, "address": address})

    def next_fires(self, limit: int = 10) -> list[dict]:
        runtime = self.services.runtime
        if runtime is None:
            return []
        with self.services.open_ledger() as ledger:
            return runtime.scheduler.next_fires(ledger)[:limit]

    def stop(self) -> None:
        """Let runs finish (within their grace), stop the bus, release the home."""
        try:
            if self.started and self.services.runtime is not None:
                self.services.runtime.stop()
        finally:
            self.services.runtime = None
            self.services.close()
            self.lock.release()
