"""The scheduler loop: turns schedules into runs, and never lets a fire vanish.

Each tick, for every job, the fires between the job's `last-fire` and now are dealt with in
one transaction that moves `last-fire` (compare-and-set) and claims every run it creates
(each run must not exist yet). So a fire is handled exactly once even with several daemons
on one ledger, and a fire that fell while no daemon ran is recorded as `missed`, with the
catch-up policy that applied. Runs execute in a thread pool; their outcome, artifact and
any retry are recorded when they end.

Leases: a running run is held by one node under a lease (`lease-until`, `lease-gen`) that
the node's heartbeat renews every third of the lease period, each renewal a compare-and-set
on the generation. A node that dies, is cut off or is paused stops renewing, and once the
lease lapses any live node's tick reclaims the run — whichever host held it — as
`interrupted`, retried per the job's policy, in one transaction expecting the generation it
saw, so two reclaimers never both do it. Only runs under a live lease count as busy for the
overlap rule, so a dead node no longer blocks its jobs forever. A holder that wakes up after
losing its lease is fenced: its final record expects its own generation and is refused, and
its failed renewal kills its command and records nothing. At start-up, runs of this host's
dead daemons are reclaimed at once, without waiting for their leases.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..ledger import BadInput, Conflict, Ledger, NotFound
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


def _say(message: str) -> None:
    print(f"keel: {message}", file=sys.stderr, flush=True)


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
#: Real seconds a node's lease on a run lasts unless renewed (`lease` overrides it).
LEASE = 30.0


def still_held(key: str, gen: int | None) -> list[dict]:
    """What a write about a running run expects: the run still running, under the lease
    generation the writer holds (or read) — so a holder whose lease was taken, or the
    second of two reclaimers, writes nothing."""
    return [
        {"e": run_entity(key), "a": "keel.run/outcome", "v": "running"},
        {"e": run_entity(key), "a": "keel.run/lease-gen", "v": gen},
    ]


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
        lease: float = LEASE,
    ):
        if not lease > 0:
            raise BadInput(f"a run's lease must be longer than 0 seconds, not {lease:g}")
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
        #: The lease in real seconds (the heartbeat renews every third of it) and in the
        #: clock's microseconds (what `lease-until` is written in).
        self.lease = lease
        self.lease_us = int(lease * speed * US)
        self.grace = grace
        self.tick_seconds = tick
        self.stop_event = threading.Event()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="run")
        self.in_flight: dict[str, set[str]] = {}
        #: run key -> the lease generation this node holds it under.
        self.leases: dict[str, int] = {}
        self._contexts: dict[str, RunContext] = {}  # run key -> its context, while it runs
        self.futures: set[Future] = set()
        self._lock = threading.Lock()
        # Serialises renewals with final records, so a record never races its own
        # renewal's move of the generation (and is fenced by mistake).
        self._lease_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._beat_thread: threading.Thread | None = None
        self._beat_stop = threading.Event()  # set once the last run ended, after `stop`
        self._deferred: dict[str, int] = {}  # job -> latest missed fire awaiting its catch-up
        self.ticks = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        with self.open_ledger() as ledger:
            ensure_schema(ledger)
            self.recover(ledger)
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()
        self._beat_thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._beat_thread.start()

    def stop(self) -> None:
        """Stop firing; let runs finish within the grace period (then they are killed and
        recorded as interrupted)."""
        self.stop_event.set()
        with self._lock:
            for ctx in self._contexts.values():
                ctx.stop.set()
        if self._thread is not None:
            self._thread.join(30)
        deadline = time.monotonic() + self.grace + 5
        for fut in list(self.futures):
            fut.exception(max(0.1, deadline - time.monotonic()))
        self.pool.shutdown(wait=True)
        # Leases are renewed through the grace period: runs still finishing stay ours.
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(30)

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
        self.reclaim(ledger, now)
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
                extra.update(started=now, node=self.node, **self._lease(now, 1))
                starting.append((key, f))
            elif outcome == "pending":
                extra.update(not_before=now)
            ops += new_run(key, spec.name, f, outcome, trigger, **extra)
            expect.append(claim_expectation(key))
            if outcome == "running":
                self._mark(spec.name, key)
        try:
            ledger.transact(ops, expect=expect, reason=f"fire {spec.name}")
        except Conflict:
            for key, _ in starting:  # another node dealt with these fires
                self._unmark(spec.name, key)
            return upcoming
        for key, f in starting:
            self._submit(spec, key, 1, f, gen=1)
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
        """Whether a run of `job` runs here, or under a live lease anywhere: a run whose
        holder stopped renewing does not block its job (the next tick reclaims it)."""
        with self._lock:
            if self.in_flight.get(job):
                return True
        now = self.clock.now()
        return any(
            r.get("keel.run/job") == job and r.get("keel.run/lease-until", 0) >= now
            for r in runs_mod.runs_of(ledger, outcome="running")
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
            gen = values.get("keel.run/lease-gen", 0) + 1
            try:
                ledger.transact(
                    facts(key, outcome="running", started=now, node=self.node)
                    + facts(key, **self._lease(now, gen)),
                    expect=[{"e": run_entity(key), "a": "keel.run/outcome", "v": "pending"}],
                    reason=f"start {key}",
                )
            except Conflict:
                continue
            self._mark(name, key)
            self._submit(
                spec, key, values.get("keel.run/attempt", 1), values["keel.run/scheduled"], gen
            )

    # -- running --------------------------------------------------------------------------
    def _lease(self, now: int, gen: int) -> dict:
        return {"lease_until": now + self.lease_us, "lease_gen": gen}

    def _mark(self, job: str, key: str) -> None:
        with self._lock:
            self.in_flight.setdefault(job, set()).add(key)

    def _unmark(self, job: str, key: str) -> None:
        with self._lease_lock:
            self.leases.pop(key, None)
        with self._lock:
            self.in_flight.get(job, set()).discard(key)
            self._contexts.pop(key, None)

    def _submit(self, spec: JobSpec, key: str, attempt: int, scheduled: int, gen: int) -> Future:
        """Run a claimed run. Its lease is held from here, after the claim committed: a
        heartbeat must never renew a claim that may yet fail (and fence a run that then
        never records)."""
        with self._lease_lock:
            self.leases[key] = gen
        fut = self.pool.submit(self._execute, spec, key, attempt, scheduled)
        self.futures.add(fut)
        fut.add_done_callback(self.futures.discard)
        return fut

    def _execute(self, spec: JobSpec, key: str, attempt: int, scheduled: int) -> Outcome:
        # Each run has its own stop event: the daemon's stop sets them all, a lost lease
        # only its own run's.
        ctx = RunContext(
            self.open_ledger,
            self.home,
            threading.Event(),
            self.grace,
            self.probes,
            run=key,
            scheduled=scheduled,
            attempt=attempt,
        )
        with self._lock:
            self._contexts[key] = ctx
            if self.stop_event.is_set():
                ctx.stop.set()
        with self._lease_lock:
            lost = key not in self.leases  # lost while it waited for a worker: never start
        if lost:
            self._unmark(spec.name, key)
            return Outcome("interrupted", error=f"{self.node} lost the run's lease")
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
    ) -> bool:
        """Record a run's outcome (and any retry) under this node's lease. Returns False,
        writing nothing, when the lease was lost: another node reclaimed the run, and
        its record stands."""
        with self._lease_lock:
            gen = self.leases.pop(key, None)
            if gen is None:
                return False
            ended = self.clock.now()
            ops = facts(
                key,
                outcome=result.outcome,
                ended=ended,
                artifact=result.artifact or None,
                error=result.error or None,
            )
            ops += self._retry_ops(ledger, spec, key, attempt, result.outcome, ended)
            try:
                ledger.transact(
                    ops,
                    expect=still_held(key, gen),
                    reason=f"{key}: {result.outcome}",
                )
            except Conflict:
                _say(f"{key}: not recorded ({result.outcome}): {self.node} lost its lease")
                return False
            return True

    # -- leases ---------------------------------------------------------------------------
    def _beat(self) -> None:
        with self.open_ledger() as ledger:
            while not self._beat_stop.wait(self.lease / 3):
                try:
                    self.heartbeat(ledger)
                except Exception:  # keep beating; the error is visible in the log
                    traceback.print_exc()

    def heartbeat(self, ledger: Ledger) -> list[str]:
        """Renew the lease of every run this node holds, in one transaction; returns the
        runs whose lease was lost (another node reclaimed them). Those are fenced: their
        commands are killed at once and their outcomes never recorded."""
        with self._lease_lock:
            held = dict(self.leases)
            if not held:
                return []
            now = self.clock.now()
            try:
                self._renew(ledger, held, now)
                lost = []
            except Conflict:  # one run at a time, to learn which were lost
                lost = [key for key in held if not self._renew_one(ledger, key, held[key], now)]
            for key in held:
                if key in lost:
                    self.leases.pop(key, None)
                elif key in self.leases:
                    self.leases[key] = held[key] + 1
        for key in lost:
            with self._lock:
                ctx = self._contexts.get(key)
            if ctx is not None:
                ctx.lost.set()
                ctx.stop.set()
            _say(f"{key}: {self.node} lost its lease to another node; the run was stopped")
        return lost

    def _renew_one(self, ledger: Ledger, key: str, gen: int, now: int) -> bool:
        try:
            self._renew(ledger, {key: gen}, now)
        except Conflict:
            return False
        return True

    def _renew(self, ledger: Ledger, held: dict[str, int], now: int) -> None:
        ops, expect = [], []
        for key, gen in held.items():
            ops += facts(key, **self._lease(now, gen + 1))
            expect += still_held(key, gen)
        ledger.transact(ops, expect=expect, reason=f"{self.node}: renew {len(held)} lease(s)")

    def reclaim(self, ledger: Ledger, now: int | None = None) -> list[str]:
        """Reclaim every run whose lease lapsed, whichever node held it: record it as
        `interrupted`, naming the holder, and retry it per the job's policy."""
        now = self.clock.now() if now is None else now
        with self._lock:
            mine = set().union(*self.in_flight.values())
        reclaimed = []
        for values in runs_mod.runs_of(ledger, outcome="running"):
            key = values["keel.run/key"]
            until = values.get("keel.run/lease-until")
            if key in mine or (until is not None and until >= now):
                continue
            node = values.get("keel.run/node", "an unknown node")
            lapsed = f"at {format_instant(until)}" if until is not None else "(it had none)"
            error = f"the lease of {node} lapsed {lapsed}; reclaimed by {self.node}"
            if self._interrupt(ledger, values, now, error):
                reclaimed.append(key)
        return reclaimed

    def _interrupt(self, ledger: Ledger, values: dict, now: int, error: str) -> bool:
        """One transaction: the run `interrupted` (its lease generation moved on, fencing
        its holder) and any retry, expecting the run still running under the generation
        read — so of two nodes reclaiming it, one does."""
        key = values["keel.run/key"]
        gen = values.get("keel.run/lease-gen")
        ops = facts(key, outcome="interrupted", ended=now, error=error, lease_gen=(gen or 0) + 1)
        try:
            spec, _ = jobs_mod.get_job(ledger, values["keel.run/job"])
        except NotFound:
            pass  # the job is gone: nothing to retry
        else:
            ops += self._retry_ops(
                ledger, spec, key, values.get("keel.run/attempt", 1), "interrupted", now
            )
        try:
            ledger.transact(
                ops,
                expect=still_held(key, gen),
                reason=f"reclaim {key}",
            )
        except Conflict:
            return False
        return True

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
        """At start-up, reclaim at once the runs of this host's dead daemons: their pids
        say they are gone, so there is no lease to wait out. Other hosts' runs are
        reclaimed by any node's tick once their leases lapse."""
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
            error = f"the daemon ({node}) stopped during the run"
            if self._interrupt(ledger, values, self.clock.now(), error):
                recovered.append(values["keel.run/key"])
        return recovered

    # -- on demand ------------------------------------------------------------------------
    def run_now(self, ledger: Ledger, name: str) -> tuple[str, Future | None]:
        """Fire a job now (trigger `manual`), by its overlap policy."""
        spec, _ = jobs_mod.get_job(ledger, name)
        now = self.clock.now()
        key = run_key(name, now, "~manual")
        outcome = self._admit(ledger, spec)
        extra = {"started": now, "node": self.node} if outcome == "running" else {}
        if outcome == "running":
            extra.update(self._lease(now, 1))
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
        return key, self._submit(spec, key, 1, now, gen=1)

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
