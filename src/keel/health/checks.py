"""Operational silence: checks that turn quiet failures into findings, and the doctor.

Each check is a pure function of a ledger view and `now` (µs) returning the findings that
hold; `record` then opens, keeps or resolves them. A check names its findings
`<check>:<subject>`, with the job or subscription as subject:

- `silence`   a job with `max_silence` has had no `ok` run end within it (counted from
              when the job was created or last resumed, if it never succeeded since).
              Paused jobs are silent on purpose and are not checked.
- `artifact`  a job with `expect_artifact` whose latest `ok` run produced nothing.
- `missed`    fires recorded as `missed` with no `ok` run of that job for them or after.
- `dead`      events dead-lettered for a subscription and still open.
- `lag`       a subscription whose lag grew at every one of the last N samples (the
              samples live in memory, in a `LagWatch` fed with `Bus.status`).
- `canon`     a node whose canon cadence file and the ledger's canon both changed.
- `thread`    a subscription whose thread ended on an error (the daemon's bus only).

`doctor(ledger)` runs them all and records the findings (what `keel doctor` calls; it exits
non-zero while any finding is open); `doctor_probe` is the cadence probe the `doctor.sweep`
job runs; `install(runtime)` wires the probe and the `health` section of `keel status` into
a daemon runtime.
"""

from __future__ import annotations

import functools
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise

from ..bus import Bus
from ..cadence.jobs import JobSpec, job_entity
from ..cadence.kinds import Outcome, RunContext
from ..daemon.runtime import Runtime
from ..ledger import Ledger, View
from ..ledger.instants import format_instant, parse_instant
from .findings import Finding, declared, ensure_schema, findings_in, open_findings, record

US = 1_000_000

Check = Callable[[View, int], list[Finding]]


def duration(seconds: float) -> str:
    """90 -> 1m30s, 93600 -> 1d2h: the short form people read."""
    left = round(seconds)
    if left <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            out += f"{left // size}{unit}"
            left %= size
    return out


# -- what the checks read -----------------------------------------------------------------
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _memo(view: View, name: str, load: Callable[[View], object]) -> object:
    """Load once per view: the checks of one doctor run share a view and its reads."""
    memo = _cache.setdefault(view, {})
    if name not in memo:
        memo[name] = load(view)
    return memo[name]


def _load_jobs(view: View) -> dict[str, tuple[JobSpec, dict]]:
    if not declared(view, "keel.job/name"):
        return {}
    out = {}
    for e in view.find("keel.job/name"):
        values = view.get(e) or {}
        if "keel.job/spec" not in values:
            continue
        try:
            spec = JobSpec.model_validate(values["keel.job/spec"])
        except ValueError:
            continue  # an unreadable spec is the registry's problem, not silence's
        out[spec.name] = (spec, values)
    return out


def _load_runs(view: View) -> dict[str, list[dict]]:
    """Runs by job, oldest scheduled first."""
    if not declared(view, "keel.run/key"):
        return {}
    by_job: dict[str, list[dict]] = {}
    for e in view.find("keel.run/key"):
        values = view.get(e)
        if values and "keel.run/job" in values:
            by_job.setdefault(values["keel.run/job"], []).append(values)
    for runs in by_job.values():
        runs.sort(
            key=lambda v: (
                v.get("keel.run/scheduled", 0),
                v.get("keel.run/attempt", 0),
                v.get("keel.run/key", ""),
            )
        )
    return by_job


def jobs(view: View) -> dict[str, tuple[JobSpec, dict]]:
    return _memo(view, "jobs", _load_jobs)  # type: ignore[return-value]


def runs_by_job(view: View) -> dict[str, list[dict]]:
    return _memo(view, "runs", _load_runs)  # type: ignore[return-value]


def _ok_runs(runs: Iterable[dict]) -> list[dict]:
    return [r for r in runs if r.get("keel.run/outcome") == "ok"]


def _active_since(view: View, name: str) -> tuple[int, str] | None:
    """When a job started counting, and why: its creation, or its last resume."""
    # Only the name and paused datoms: last-fire changes at every fire, and reading its
    # whole history would cost one lookup per fire.
    e = job_entity(name)
    named = view.history(e, "keel.job/name")
    paused = view.history(e, "keel.job/paused")
    if not named and not paused:
        return None
    created = min(parse_instant(h["tx_time"]) for h in named + paused)
    resumed = [parse_instant(h["tx_time"]) for h in paused if h["op"] == "add" and h["v"] is False]
    if resumed and max(resumed) > created:
        return max(resumed), "resumed"
    return created, "created"


# -- the checks ---------------------------------------------------------------------------
def check_silence(view: View, now: int) -> list[Finding]:
    out = []
    runs = runs_by_job(view)
    for name, (spec, values) in sorted(jobs(view).items()):
        if spec.max_silence is None or values.get("keel.job/paused"):
            continue
        ended = [r["keel.run/ended"] for r in _ok_runs(runs.get(name, ())) if "keel.run/ended" in r]
        last_ok = max(ended) if ended else None
        active = _active_since(view, name)
        if last_ok is not None and (active is None or last_ok >= active[0]):
            start, why = last_ok, ""
        elif active is not None:
            start, why = active
        else:
            continue
        if now - start <= spec.max_silence * US:
            continue
        allowed = duration(spec.max_silence)
        if not why:
            message = f"no ok run since {format_instant(start)}"
        else:
            message = f"no ok run since it was {why} at {format_instant(start)}"
            if last_ok is not None:
                message += f" (last ok {format_instant(last_ok)})"
        message += f"; it may be silent at most {allowed}"
        out.append(Finding("silence", name, message, "error"))
    return out


def _empty(artifact: object) -> bool:
    if artifact is None:
        return True
    if isinstance(artifact, bytes | bytearray):
        return not bytes(artifact).strip()
    return not str(artifact).strip()


def check_artifact(view: View, now: int) -> list[Finding]:
    out = []
    runs = runs_by_job(view)
    for name, (spec, _values) in sorted(jobs(view).items()):
        if not spec.expect_artifact:
            continue
        ok = _ok_runs(runs.get(name, ()))
        if not ok:
            continue  # nothing ran yet: silence speaks for that
        latest = max(ok, key=lambda r: (r.get("keel.run/ended", 0), r.get("keel.run/scheduled", 0)))
        if _empty(latest.get("keel.run/artifact")):
            key = latest.get("keel.run/key", "?")
            out.append(
                Finding(
                    "artifact",
                    name,
                    f"its latest ok run {key} produced no artifact, and it must produce one",
                    "error",
                )
            )
    return out


def check_missed(view: View, now: int) -> list[Finding]:
    out = []
    for name, runs in sorted(runs_by_job(view).items()):
        missed = [r for r in runs if r.get("keel.run/outcome") == "missed"]
        if not missed:
            continue
        ok = [r.get("keel.run/scheduled", 0) for r in _ok_runs(runs)]
        # An ok run for the same fire (a catch-up) or a later one makes up for it.
        last_ok = max(ok) if ok else None
        open_ = [r for r in missed if last_ok is None or r.get("keel.run/scheduled", 0) > last_ok]
        if not open_:
            continue
        latest = open_[-1]
        policy = latest.get("keel.run/catch-up")
        tail = f" (catch-up: {policy})" if policy else ""
        count = len(open_)
        fires = "fire was" if count == 1 else "fires were"
        out.append(
            Finding(
                "missed",
                name,
                f"{count} {fires} missed with no ok run since, latest "
                f"{format_instant(latest.get('keel.run/scheduled', 0))}{tail}",
                "warning",
            )
        )
    return out


def check_dead_letters(view: View, now: int) -> list[Finding]:
    if not declared(view, "keel.dead/state"):
        return []
    by_sub: dict[str, list[dict]] = {}
    for e in view.find("keel.dead/state", "open"):
        values = view.get(e) or {}
        by_sub.setdefault(values.get("keel.dead/subscription", "?"), []).append(values)
    out = []
    for sub, dead in sorted(by_sub.items()):

        def position(v: dict) -> tuple[int, int]:
            tx, _, n = str(v.get("keel.dead/event", "0.0")).partition(".")
            return (int(tx) if tx.isdigit() else 0, int(n) if n.isdigit() else 0)

        latest = max(dead, key=position)
        error = str(latest.get("keel.dead/error", "")).strip().splitlines()
        count = len(dead)
        events = "event is" if count == 1 else "events are"
        out.append(
            Finding(
                "dead",
                sub,
                f"{count} dead-lettered {events} open, latest "
                f"{latest.get('keel.dead/event', '?')} ({latest.get('keel.dead/type', '?')})"
                + (f": {error[-1][:200]}" if error else ""),
                "error",
            )
        )
    return out


class LagWatch:
    """The last `samples` lags of each subscription, fed with `Bus.status(head)`.

    Samples live in memory only; the finding they lead to is what the ledger keeps. A
    subscription's lag is *growing* when it rose at every step of a full window; with fewer
    samples than that it is unknown (an open finding stays as it is), and a lag of 0 is
    never growing.
    """

    def __init__(self, samples: int = 5):
        if samples < 2:
            raise ValueError("a lag watch needs at least two samples to see growth")
        self.size = samples
        self._lags: dict[str, deque[int]] = {}
        self._lock = threading.Lock()

    def feed(self, status: Iterable[dict]) -> None:
        """Take one sample of each subscription in `status` (`Bus.status(head)` rows);
        subscriptions no longer listed are forgotten."""
        with self._lock:
            seen = set()
            for row in status:
                name = row["name"]
                seen.add(name)
                self._lags.setdefault(name, deque(maxlen=self.size)).append(int(row["lag"]))
            for name in set(self._lags) - seen:
                del self._lags[name]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._lags)

    def samples(self, name: str) -> list[int]:
        with self._lock:
            return list(self._lags.get(name, ()))

    def growing(self, name: str) -> bool | None:
        window = self.samples(name)
        if window and window[-1] == 0:
            return False
        if len(window) < self.size:
            return None
        return all(b > a for a, b in pairwise(window))


def check_lag(view: View, now: int, watch: LagWatch) -> list[Finding]:
    out = []
    still_open = {f.subject: f for f in findings_in(view) if f.check == "lag"}
    for name in watch.names():
        verdict = watch.growing(name)
        if verdict is None and name in still_open:
            out.append(still_open[name])  # not enough samples yet: keep it as it is
        elif verdict:
            window = watch.samples(name)
            out.append(
                Finding(
                    "lag",
                    name,
                    f"its lag grew at each of the last {len(window)} samples, "
                    f"from {window[0]} to {window[-1]} transactions behind",
                    "warning",
                )
            )
    return out


def check_canon(view: View, now: int) -> list[Finding]:
    """A node whose canon cadence file and the ledger's canon both changed since they last
    agreed: neither was overwritten, and the node's file says something the ledger does
    not until someone settles it."""
    if not declared(view, "keel.canon-sync/state"):
        return []
    return [
        Finding(
            "canon",
            str(view.value(e, "keel.canon-sync/node")),
            "its canon/cadence.toml and the ledger's canon both changed since they last "
            "agreed; nothing was overwritten: edit the file to match ('keel canon status'), "
            "or run 'keel cadence sync' on that node to make its file the canon",
            "warning",
        )
        for e in view.find("keel.canon-sync/state", "conflict")
    ]


def check_threads(view: View, now: int, bus: Bus) -> list[Finding]:
    """A subscription whose thread ended on an error follows the ledger no more (its
    derived state, such as the recall index, goes stale): an error until it runs again."""
    return [
        Finding("thread", row["name"], f"its thread stopped: {row['stopped']}", "error")
        for row in bus.status(0)
        if row.get("stopped")
    ]


#: The checks that need nothing but the ledger, in the order doctor runs them.
CHECKS: dict[str, Check] = {
    "silence": check_silence,
    "artifact": check_artifact,
    "missed": check_missed,
    "dead": check_dead_letters,
    "canon": check_canon,
}


# -- the doctor ------------------------------------------------------------------------------
class ChecksFailed(Exception):
    """Some checks crashed. What the others found was still recorded (`report`)."""

    def __init__(self, report: Report):
        self.report = report
        names = ", ".join(sorted(report.errors))
        super().__init__(f"health checks crashed: {names}")


@dataclass
class Report:
    now: int
    checks: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # open after this run
    opened: list[Finding] = field(default_factory=list)
    updated: list[Finding] = field(default_factory=list)
    resolved: list[Finding] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # check -> what went wrong
    tx: int | None = None

    @property
    def ok(self) -> bool:
        return not self.findings and not self.errors

    def to_json(self) -> dict:
        return {
            "now": format_instant(self.now),
            "checks": self.checks,
            "count": len(self.findings),
            "open": [f.to_json() for f in self.findings],
            "opened": [f.key for f in self.opened],
            "resolved": [f.key for f in self.resolved],
            "errors": self.errors,
            "tx": self.tx,
        }

    def text(self) -> str:
        lines = [
            f"keel doctor at {format_instant(self.now)}: "
            f"{len(self.findings)} open finding{'' if len(self.findings) == 1 else 's'}"
        ]
        lines += [f"  {f.line()}" for f in self.findings]
        if self.opened:
            lines.append("opened: " + ", ".join(f.key for f in self.opened))
        if self.resolved:
            lines.append("resolved: " + ", ".join(f.key for f in self.resolved))
        for name, error in sorted(self.errors.items()):
            lines.append(f"check {name} crashed: {error}")
        lines.append("checks: " + ", ".join(self.checks))
        return "\n".join(lines) + "\n"


def examine(
    ledger: Ledger,
    now: int | None = None,
    lag_watch: LagWatch | None = None,
    extra: dict[str, Check] | None = None,
    bus: Bus | None = None,
) -> Report:
    """Run every check on one view of the ledger and record what they found.

    A check that crashes is reported in `errors`; its findings are left as they were. The
    lag check runs only with a `lag_watch` (its samples live in the daemon's memory), the
    thread check only with the daemon's `bus`;
    `extra` adds checks that need more than the ledger (governance's, which reads a file).
    """
    ensure_schema(ledger)
    now = ledger.clock() if now is None else now
    view = ledger.view()
    report = Report(now)
    found: list[Finding] = []
    runs = {**CHECKS, **(extra or {})}
    if lag_watch is not None:
        runs["lag"] = functools.partial(check_lag, watch=lag_watch)
    if bus is not None:
        runs["thread"] = functools.partial(check_threads, bus=bus)
    for name, check in runs.items():
        try:
            found += check(view, now)
        except Exception as exc:
            report.errors[name] = "".join(traceback.format_exception_only(exc)).strip()
            continue
        report.checks.append(name)
    changes = record(ledger, found, report.checks, now)
    report.findings = open_findings(ledger)
    report.opened, report.updated, report.resolved = (
        changes.opened,
        changes.updated,
        changes.resolved,
    )
    report.tx = changes.tx
    return report


def doctor(
    ledger: Ledger, now: int | None = None, lag_watch: LagWatch | None = None
) -> list[Finding]:
    """Run and record every check; returns the findings open afterwards (including those
    of other checks still open). Raises `ChecksFailed` if a check crashed."""
    report = examine(ledger, now, lag_watch)
    if report.errors:
        raise ChecksFailed(report)
    return report.findings


def doctor_probe(
    ctx: RunContext, lag_watch: LagWatch | None = None, bus: Bus | None = None
) -> Outcome:
    """The `doctor` probe: ok when the checks ran (findings are the signal, not the run's
    outcome), failed when they could not. The artifact is the text report.

    With a `bus` and a `lag_watch`, it first samples each subscription's lag.
    """
    lag_watch = lag_watch if lag_watch is not None else ctx.extra.get("lag_watch")
    bus = bus if bus is not None else ctx.extra.get("bus")
    try:
        with ctx.open_ledger() as ledger:
            if lag_watch is not None and bus is not None:
                lag_watch.feed(bus.status(ledger.head().id))
            report = examine(ledger, lag_watch=lag_watch, bus=bus)
    except Exception as exc:
        return Outcome("failed", error="".join(traceback.format_exception_only(exc)).strip())
    artifact = report.text().encode()
    if report.errors:
        names = ", ".join(sorted(report.errors))
        return Outcome("failed", artifact, f"health checks crashed: {names}")
    return Outcome("ok", artifact)


def install(runtime: Runtime, samples: int = 5) -> LagWatch:
    """Register the `doctor` probe on a runtime. The probe samples the runtime's bus lag
    each time it runs; returns the LagWatch it keeps."""
    watch = LagWatch(samples)
    runtime.probes["doctor"] = functools.partial(doctor_probe, lag_watch=watch, bus=runtime.bus)
    return watch
