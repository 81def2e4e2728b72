"""What `keel up` runs in one process: the ledger, the bus and the scheduler.

Upper layers compose more onto it (health registers its probe and status section, the
HTTP API serves it) through `probes`, `kinds` and `status_sections`, so this layer never
imports them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..bus import Bus
from ..cadence import jobs as jobs_mod
from ..cadence.clock import clock_from_env
from ..cadence.kinds import KINDS, PROBES
from ..cadence.runs import run_json, runs_of
from ..cadence.scheduler import Scheduler, ensure_schema, this_node
from ..govern.home import Home
from ..ledger import Ledger
from ..ledger.instants import format_instant
from ..memory.recall import Recall

DEFAULT_CADENCE = """\
# keel's cadence: recurring jobs. Edit freely; `keel up` and `keel cadence sync` load it.
# A schedule is a 5-field cron line (with tz), "every 30m", or "at 2026-12-01T09:00".

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


class Runtime:
    def __init__(
        self,
        home: Home,
        clock=None,
        tick: float = 1.0,
        late_after: float = 60.0,
        grace: float = 10.0,
    ):
        self.home = home
        self.clock = clock or clock_from_env()
        self.node = this_node()
        self.kinds = dict(KINDS)
        self.probes = dict(PROBES)
        self.status_sections: dict[str, Callable[[Ledger], object]] = {}
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
        )
        self.started_at: float | None = None
        self._recall: Recall | None = None
        self._recall_lock = threading.Lock()

    @property
    def cadence_file(self) -> Path:
        return self.home.path / "canon" / "cadence.toml"

    def open_ledger(self, as_name: str | None = None) -> Ledger:
        ledger = self.home.ledger(as_name, clock=self.clock.now)
        ledger.on_commit(self.bus.notify)
        return ledger

    def recall(self) -> Recall:
        """The recall index, shared by every surface of this process (it locks itself)."""
        with self._recall_lock:
            if self._recall is None:
                embedder = self.home.config().get("recall", {}).get("embedder")
                self._recall = Recall(self.open_ledger(), embedder)
            return self._recall

    def prepare(self) -> list[str]:
        """Declare the runtime's schema and load the canon cadence (writing the default
        cadence on a fresh home). Returns the jobs that changed."""
        if not self.cadence_file.exists():
            self.cadence_file.parent.mkdir(parents=True, exist_ok=True)
            self.cadence_file.write_text(DEFAULT_CADENCE)
        with self.open_ledger() as ledger:
            ensure_schema(ledger)
            return jobs_mod.sync_canon(ledger, self.cadence_file, set(self.kinds))

    def start(self) -> None:
        self.prepare()
        # The index follows the ledger: one catch-up per transaction, resumable from the
        # cursor the index keeps with its rows.
        self.bus.subscribe("recall-index", lambda _event: self.recall().catch_up(), ["tx"])
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

    def status(self) -> dict:
        with self.open_ledger() as ledger:
            head = ledger.store.head()
            size = head[0] if head else 0
            jobs = []
            nexts = {j["job"]: j for j in self.scheduler.next_fires(ledger)}
            for spec, values in jobs_mod.load_jobs(ledger).values():
                last = runs_of(ledger, job=spec.name, limit=1)
                jobs.append(
                    {
                        "name": spec.name,
                        "schedule": spec.schedule,
                        "tz": spec.tz,
                        "kind": spec.kind,
                        "paused": bool(values.get("keel.job/paused")),
                        "next": nexts.get(spec.name, {}).get("next"),
                        "last": run_json(last[-1]) if last else None,
                    }
                )
            out = {
                "running": self.started_at is not None,
                "node": self.node,
                "uptime": round(time.time() - self.started_at, 1) if self.started_at else 0,
                "now": format_instant(self.clock.now()),
                "ledger": {"location": redact(str(ledger.store.location)), "transactions": size},
                "jobs": sorted(jobs, key=lambda j: j["name"]),
                "subscriptions": self.bus.status(size),
            }
            if self._recall is not None:
                out["recall"] = self._recall.status()
            for name, section in self.status_sections.items():
                out[name] = section(ledger)
        return out
