"""The scheduler loop: turns schedules into runs, and never lets a fire vanish.

Each tick, for every job, the fires between the job's `last-fire` and now are dealt with in
one transaction that moves `last-fire` (compare-and-set) and claims every run it creates
(each run must not exist yet). So a fire is handled exactly once even with several daemons
on one ledger, and a fire that fell while no daemon ran is recorded as `missed`, with the
catch-up policy that applied. Runs execute in a thread pool; their outcome, artifact and
any retry are recorded when they end. A run found `running` at start-up whose daemon died
is marked `interrupted` and retried per policy.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..ledger import Conflict, Ledger
from ..ledger.instants import format_instant
from . import jobs as jobs_mod
from . import runs as runs_mod
from .clock import SystemClock
from .jobs import JobSpec, job_entity, load_jobs
from .kinds import KINDS, PROBES, Kind, Outcome, Probe, RunContext
from .runs import claim_expectation, facts, new_run, run_entity, run_key

US = 1_000_000
MAX_FIRES_PER_TICK = 500


def ensure_schema(ledger: Ledger) -> None:
    ledger.declare(jobs_mod.SCHEMA + runs_mod.SCHEMA, system=True)


def this_node() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stagger_offset(spec: JobSpec) -> int:
    """A stable per-job delay within the stagger window, so jobs do not all fire at once."""
    if spec.stagger <= 0:
        return 0
    digest = int.from_bytes(hashlib.sha256(spec.name.encode()).digest()[:8], "big")
    return digest % int(spec.stagger * US)


def _due_fires(schedule, last: int, now: int, offset: int) -> tuple[list[int], int | None]:
    """Fires after `last` that are due by `now` (at most a tick's worth), and the next one."""
    fires, t = [], last
    while len(fires) < MAX_FIRES_PER_TICK:
        nxt = schedule.next_after(t)
        if nxt is None or nxt + offset > now:
            break
        fires.append(nxt)
        t = nxt
    upcoming = schedule.next_after(t)
    return fires, None if upcoming is None else upcoming + offset


#: Real seconds a busy machine may take to wake the scheduler: never counted as a miss.
JITTER = 0.5


class Scheduler:
    def __init__(
        self,
        open_ledger,
        clock=None,
        node: str | None = None,
        kinds: dict[str, Kind] | None = None,
        home: Path | None = None,
        probes: dict[str, Probe] | None = None,
        workers: int = 4,
        late_after: float = 60.0,
        grace: float = 10.0,
        tick: float = 1.0,
        hold: Callable[[], str | None] | None = None,
    ):
        self.open_ledger = open_ledger
        #: Why nothing may fire now (keel is read-only), or None; fires due meanwhile are
        #: dealt with by each job's catch-up policy once it returns None.
        self.hold = hold or (lambda: None)
        self.clock = clock or SystemClock()
        self.node = node or this_node()
        self.kinds = kinds if kinds is not None else KINDS
        self.probes = probes if probes is not None else PROBES
        self.home = home
        # A fire is late once it is `late_after` past due in the clock's time, but never
        # sooner than the machine's own scheduling jitter allows: a clock running 3600x
        # compresses the schedule, not the milliseconds a busy machine takes to wake a thread.
        speed = getattr(self.clock, "speed", 1.0)
        self.late_after = int(max(late_after, JITTER * speed) * US)
        self.grace = grace
        self.tick_seconds = tick
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="run")
        self.in_flight: dict[str, set[str]] = {}
        self.futures: set[Future] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._deferred: dict[str, int] = {}  # job -> latest missed fire awaiting its catch-up
        self.ticks = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        with self.open_ledger() as ledger:
            ensure_schema(ledger)
            self.recover(ledger)
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop firing; let runs finish within the grace period (then they are killed and
        recorded as interrupted)."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(30)
        deadline = time.monotonic() + self.grace + 5
        for fut in list(self.futures):
            fut.exception(max(0.1, deadline - time.monotonic()))
        self.pool.shutdown(wait=True)

    def _loop(self) -> None:
        with self.open_ledger() as ledger:
            while not self.stop_event.is_set():
                try:
                    soonest = self.tick(ledger)
                except Exception:  # keep scheduling; the error is visible in the log
                    traceback.print_exc()
                    soonest = None
                now = self.clock.now()
                delay = self.tick_seconds
                if soonest is not None:
                    delay = min(delay, max(0.0, (soonest - now) / US))
                self.clock.sleep(delay, self.stop_event)

    # -- the tick -------------------------------------------------------------------------
    def tick(self, ledger: Ledger) -> int | None:
        """Deal with every due fire; returns the soonest next fire (µs), if any."""
        if self.hold():
            return None
        now = self.clock.now()
        soonest = None
        for spec, values in load_jobs(ledger).values():
            if values.get("keel.job/paused"):
                self._pass_paused(ledger, spec, values, now)
                continue
            nxt = self._fire_job(ledger, spec, values, now)
            if nxt is not None and (soonest is None or nxt < soonest):
                soonest = nxt
        self._start_pending(ledger, now)
        self.ticks += 1
        return soonest

    def _fire_job(self, ledger: Ledger, spec: JobSpec, values: dict, now: int) -> int | None:
        schedule = spec.parsed_schedule()
        offset = stagger_offset(spec)
        last = values.get("keel.job/last-fire")
        e = job_entity(spec.name)
        if last is None:
            # A new job: fires count from the moment the scheduler first sees it.
            with contextlib.suppress(Conflict):  # another node started it first
                ledger.transact(
                    [{"op": "add", "e": e, "a": "keel.job/last-fire", "v": now}],
                    expect=[{"e": e, "a": "keel.job/last-fire", "v": None}],
                    reason=f"start scheduling {spec.name}",
                )
            nxt = schedule.next_after(now)
            return None if nxt is None else nxt + offset
        fires, upcoming = _due_fires(schedule, last, now, offset)
        if not fires:
            return upcoming
        cut = upcoming is not None and upcoming <= now  # more due fires than one tick takes
        ops = [{"op": "add", "e": e, "a": "keel.job/last-fire", "v": fires[-1]}]
        expect = [{"e": e, "a": "keel.job/last-fire", "v": last}]
        late = [f for f in fires if now - (f + offset) > self.late_after]
        on_time = [f for f in fires if now - (f + offset) <= self.late_after]
        for f in late:
            ops += new_run(
                run_key(spec.name, f), spec.name, f, "missed", "schedule", catch_up=spec.catch_up
            )
            expect.append(claim_expectation(run_key(spec.name, f)))
        catch = [
            f for f in late if now - f <= spec.catch_up_window * US and spec.in_active_hours(f)
        ]
        if spec.catch_up == "once":
            # One catch-up for the whole outage, even when it spans several ticks.
            if catch:
                self._deferred[spec.name] = catch[-1]
            catch = (
                []
                if cut
                else [self._deferred.pop(spec.name)]
                if spec.name in (self._deferred)
                else []
            )
        elif spec.catch_up == "skip":
            catch = []
        # On-time fires are admitted first, so a stale catch-up never pushes them out.
        launches = [
            (run_key(spec.name, f), f, "schedule") for f in on_time if spec.in_active_hours(f)
        ]
        launches += [(run_key(spec.name, f, "~catch-up"), f, "catch-up") for f in catch]
        starting = []
        for key, f, trigger in launches:
            outcome = self._admit(ledger, spec)
            if outcome == "skipped-overlap" and trigger == "catch-up":
                outcome = "pending"  # catch-up runs wait their turn rather than vanish
            extra = {"catch_up": spec.catch_up} if trigger == "catch-up" else {}
            if outcome == "running":
                extra.update(started=now, node=self.node)
                starting.append(key)
            elif outcome == "pending":
                extra.update(not_before=now)
            ops += new_run(key, spec.name, f, outcome, trigger, **extra)
            expect.append(claim_expectation(key))
            if outcome == "running":
                self._mark(spec.name, key)
        try:
            ledger.transact(ops, expect=expect, reason=f"fire {spec.name}")
        except Conflict:
            for key in starting:  # another node dealt with these fires
                self._unmark(spec.name, key)
            return upcoming
        for key in starting:
            self._submit(spec, key, 1)
        return upcoming

    def _pass_paused(self, ledger: Ledger, spec: JobSpec, values: dict, now: int) -> None:
        """Fires while a job is paused are neither run nor missed: move past them."""
        last = values.get("keel.job/last-fire")
        fires, _ = _due_fires(spec.parsed_schedule(), last or now, now, stagger_offset(spec))
        if last is None or fires:
            e = job_entity(spec.name)
            with contextlib.suppress(Conflict):
                ledger.transact(
                    [
                        {
                            "op": "add",
                            "e": e,
                            "a": "keel.job/last-fire",
                            "v": fires[-1] if fires else now,
                        }
                    ],
                    expect=[{"e": e, "a": "keel.job/last-fire", "v": last}],
                    reason=f"{spec.name} is paused: pass {len(fires)} fire(s)",
                )

    def _admit(self, ledger: Ledger, spec: JobSpec) -> str:
        """running, skipped-overlap or pending (queued), by the job's overlap policy."""
        if spec.overlap == "allow" or not self._busy(ledger, spec.name):
            return "running"
        return "skipped-overlap" if spec.overlap == "skip" else "pending"

    def _busy(self, ledger: Ledger, job: str) -> bool:
        with self._lock:
            if self.in_flight.get(job):
                return True
        return any(
            r.get("keel.run/job") == job for r in runs_mod.runs_of(ledger, outcome="running")
        )

    def _start_pending(self, ledger: Ledger, now: int) -> None:
        """Start queued runs and retries whose time has come."""
        for values in runs_mod.runs_of(ledger, outcome="pending"):
            if values.get("keel.run/not-before", 0) > now:
                continue
            name, key = values["keel.run/job"], values["keel.run/key"]
            try:
                spec, _ = jobs_mod.get_job(ledger, name)
            except Exception:
                continue
            if spec.overlap != "allow" and self._busy(ledger, name):
                continue
            try:
                ledger.transact(
                    facts(key, outcome="running", started=now, node=self.node),
                    expect=[{"e": run_entity(key), "a": "keel.run/outcome", "v": "pending"}],
                    reason=f"start {key}",
                )
            except Conflict:
                continue
            self._mark(name, key)
            self._submit(spec, key, values.get("keel.run/attempt", 1))

    # -- running --------------------------------------------------------------------------
    def _mark(self, job: str, key: str) -> None:
        with self._lock:
            self.in_flight.setdefault(job, set()).add(key)

    def _unmark(self, job: str, key: str) -> None:
        with self._lock:
            self.in_flight.get(job, set()).discard(key)

    def _submit(self, spec: JobSpec, key: str, attempt: int) -> Future:
        fut = self.pool.submit(self._execute, spec, key, attempt)
        self.futures.add(fut)
        fut.add_done_callback(self.futures.discard)
        return fut

    def _execute(self, spec: JobSpec, key: str, attempt: int) -> Outcome:
        ctx = RunContext(
            self.open_ledger, self.home, self.stop_event, self.grace, self.probes, run=key
        )
        kind = self.kinds.get(spec.kind)
        try:
            if kind is None:
                result = Outcome("failed", error=f"unknown kind {spec.kind!r}")
            else:
                result = kind(spec, ctx)
        except Exception as exc:
            result = Outcome("failed", error="".join(traceback.format_exception_only(exc)).strip())
        try:
            with self.open_ledger() as ledger:
                self.record(ledger, spec, key, attempt, result)
        finally:
            self._unmark(spec.name, key)
        return result

    def record(
        self, ledger: Ledger, spec: JobSpec, key: str, attempt: int, result: Outcome
    ) -> None:
        ended = self.clock.now()
        ops = facts(
            key,
            outcome=result.outcome,
            ended=ended,
            artifact=result.artifact or None,
            error=result.error or None,
        )
        ops += self._retry_ops(ledger, spec, key, attempt, result.outcome, ended)
        ledger.transact(
            ops,
            expect=[{"e": run_entity(key), "a": "keel.run/outcome", "v": "running"}],
            reason=f"{key}: {result.outcome}",
        )

    def _retry_ops(
        self, ledger: Ledger, spec: JobSpec, key: str, attempt: int, outcome: str, ended: int
    ) -> list[dict]:
        if outcome not in ("failed", "timed-out", "interrupted") or attempt > spec.retries:
            return []
        values = ledger.view().get(run_entity(key)) or {}
        base = key.split("#", 1)[0]
        retry = f"{base}#{attempt + 1}"
        delay = int(spec.backoff * 2 ** (attempt - 1) * US) if outcome != "interrupted" else 0
        return new_run(
            retry,
            spec.name,
            values.get("keel.run/scheduled", ended),
            "pending",
            "retry",
            attempt + 1,
            not_before=ended + delay,
        )

    def recover(self, ledger: Ledger) -> list[str]:
        """Mark runs whose daemon on this host died as interrupted, and retry them."""
        host = socket.gethostname()
        recovered = []
        for values in runs_mod.runs_of(ledger, outcome="running"):
            node = values.get("keel.run/node", "")
            node_host, _, pid = node.rpartition(":")
            if (
                node_host != host
                or not pid.isdigit()
                or (int(pid) != os.getpid() and _pid_alive(int(pid)))
            ):
                continue
            key = values["keel.run/key"]
            try:
                spec, _ = jobs_mod.get_job(ledger, values["keel.run/job"])
            except Exception:
                continue
            now = self.clock.now()
            ops = facts(
                key,
                outcome="interrupted",
                ended=now,
                error=f"the daemon ({node}) stopped during the run",
            )
            ops += self._retry_ops(
                ledger, spec, key, values.get("keel.run/attempt", 1), "interrupted", now
            )
            try:
                ledger.transact(
                    ops,
                    expect=[{"e": run_entity(key), "a": "keel.run/outcome", "v": "running"}],
                    reason=f"recover {key}",
                )
                recovered.append(key)
            except Conflict:
                continue
        return recovered

    # -- on demand ------------------------------------------------------------------------
    def run_now(self, ledger: Ledger, name: str) -> tuple[str, Future | None]:
        """Fire a job now (trigger `manual`), by its overlap policy."""
        spec, _ = jobs_mod.get_job(ledger, name)
        now = self.clock.now()
        key = run_key(name, now, "~manual")
        outcome = self._admit(ledger, spec)
        extra = {"started": now, "node": self.node} if outcome == "running" else {}
        if outcome == "pending":
            extra["not_before"] = now
        ledger.transact(
            new_run(key, name, now, outcome, "manual", **extra),
            expect=[claim_expectation(key)],
            reason=f"run {name} now",
        )
        if outcome != "running":
            return key, None
        self._mark(name, key)
        return key, self._submit(spec, key, 1)

    def next_fires(self, ledger: Ledger) -> list[dict]:
        now = self.clock.now()
        out = []
        for spec, values in load_jobs(ledger).values():
            last = values.get("keel.job/last-fire") or now
            nxt = spec.parsed_schedule().next_after(max(last, now))
            out.append(
                {
                    "job": spec.name,
                    "paused": bool(values.get("keel.job/paused")),
                    "next": format_instant(nxt + stagger_offset(spec)) if nxt else None,
                }
            )
        return sorted(out, key=lambda j: j["next"] or "~")
