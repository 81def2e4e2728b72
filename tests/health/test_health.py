"""Health: each check opens a finding when it should, not when it should not, and resolves
it when the condition clears — on real ledgers (SQLite and PostgreSQL) with a manual clock,
the real scheduler and the real bus."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import wait_for
from keel.bus import Bus
from keel.bus.subscriptions import ensure_schema as ensure_bus_schema
from keel.cadence.clock import ManualClock
from keel.cadence.jobs import parse_job, save_job, set_paused
from keel.cadence.kinds import KINDS, PROBES, RunContext
from keel.cadence.runs import new_run, run_entity, run_key
from keel.cadence.scheduler import Scheduler
from keel.cadence.scheduler import ensure_schema as ensure_cadence_schema
from keel.daemon.runtime import Runtime
from keel.health import checks
from keel.health.checks import (
    ChecksFailed,
    LagWatch,
    doctor,
    doctor_probe,
    duration,
    examine,
    install,
)
from keel.health.findings import (
    Finding,
    all_findings,
    finding_history,
    open_findings,
    record,
)
from keel.ledger import Ledger
from keel.ledger.instants import format_instant, now_us, parse_instant

T0 = parse_instant("2026-03-07T00:00:00Z")
MIN = 60
HOUR = 3600


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def opener(target, operator, clock):
    def open_ledger() -> Ledger:
        return Ledger.open(target, signer=operator, clock=clock.now)

    return open_ledger


@pytest.fixture
def led(opener, operator):
    """A ledger on either store whose time is the manual clock, with cadence's schema."""
    ledger = opener()
    ledger.register_identity("operator", operator.public_key, "operator")
    ensure_cadence_schema(ledger)
    yield ledger
    ledger.close()


def head(ledger: Ledger) -> int:
    return ledger.store.head()[0]


def job(ledger: Ledger, name: str, **fields) -> None:
    save_job(ledger, parse_job({"name": name, "schedule": "every 1h", **fields}))


def run(
    ledger: Ledger,
    clock: ManualClock,
    name: str,
    outcome: str,
    scheduled: int | None = None,
    artifact: bytes | None = None,
    suffix: str = "",
) -> str:
    scheduled = clock.now() if scheduled is None else scheduled
    key = run_key(name, scheduled, suffix)
    extra = {"ended": clock.now()} if outcome not in ("missed", "pending", "running") else {}
    if artifact is not None:
        extra["artifact"] = artifact
    ledger.transact(new_run(key, name, scheduled, outcome, "schedule", **extra), reason=key)
    return key


def keys(found) -> list[str]:
    return [f.key for f in found]


def state(ledger: Ledger, key: str) -> dict:
    return ledger.view().get(f"finding:{key}") or {}


# -- recording ------------------------------------------------------------------------------
def test_recording_is_idempotent_and_keeps_history(led, clock):
    a = Finding("silence", "job.a", "quiet since noon", "error")
    b = Finding("missed", "job.b", "1 fire was missed", "warning")

    changes = record(led, [a, b], ["silence", "missed"])
    assert keys(changes.opened) == ["missed:job.b", "silence:job.a"]
    assert changes.tx == head(led)
    opened_at = clock.now()
    assert state(led, "silence:job.a") == {
        "keel.finding/key": "silence:job.a",
        "keel.finding/check": "silence",
        "keel.finding/subject": "job.a",
        "keel.finding/message": "quiet since noon",
        "keel.finding/severity": "error",
        "keel.finding/state": "open",
        "keel.finding/opened": opened_at,
    }
    assert keys(open_findings(led)) == ["missed:job.b", "silence:job.a"]

    # Still true, unchanged: no transaction at all.
    clock.advance(MIN)
    before = head(led)
    changes = record(led, [a, b], ["silence", "missed"])
    assert changes.tx is None and not changes.opened and not changes.resolved
    assert head(led) == before
    assert [f.opened for f in changes.open] == [opened_at, opened_at]

    # Still open, message changed: written, but it stays open since it first opened.
    b2 = Finding("missed", "job.b", "2 fires were missed", "warning")
    changes = record(led, [a, b2], ["silence", "missed"])
    assert keys(changes.updated) == ["missed:job.b"] and head(led) == before + 1
    assert state(led, "missed:job.b")["keel.finding/opened"] == opened_at
    assert state(led, "missed:job.b")["keel.finding/message"] == "2 fires were missed"

    # A check that did not run leaves its findings alone; one that ran resolves the absent.
    clock.advance(MIN)
    changes = record(led, [], ["missed"])
    assert keys(changes.resolved) == ["missed:job.b"]
    assert state(led, "missed:job.b")["keel.finding/state"] == "resolved"
    assert state(led, "missed:job.b")["keel.finding/resolved"] == clock.now()
    assert keys(open_findings(led)) == ["silence:job.a"]
    assert keys(all_findings(led)) == ["missed:job.b", "silence:job.a"]

    # Back again: reopened on the same entity, with a new opening time.
    clock.advance(MIN)
    record(led, [b], ["missed"])
    now = state(led, "missed:job.b")
    assert now["keel.finding/state"] == "open" and now["keel.finding/opened"] == clock.now()
    assert "keel.finding/resolved" not in now
    states = [
        h["v"]
        for h in finding_history(led, "missed:job.b")
        if h["a"] == "keel.finding/state" and h["op"] == "add"
    ]
    assert states == ["open", "resolved", "open"]
    # What was known earlier is still readable.
    earlier = led.view(as_of=before + 2).get("finding:missed:job.b")
    assert earlier["keel.finding/state"] == "resolved"

    with pytest.raises(ValueError):
        record(led, [Finding("lag", "x", "m")], ["silence"])
    with pytest.raises(ValueError):
        record(led, [Finding("lag", "x", "m", "fatal")], ["lag"])


def test_open_findings_on_a_ledger_without_health_schema(ledger):
    assert open_findings(ledger) == []


# -- silence --------------------------------------------------------------------------------
def test_silence(led, clock):
    job(led, "sweep", kind="probe", run="ok", max_silence="1h")
    job(led, "loose", kind="probe", run="ok")  # no expectation: never silent
    created = clock.now()
    assert doctor(led) == []

    clock.advance(HOUR)  # exactly the allowed silence
    assert doctor(led) == []
    clock.advance(1)
    found = doctor(led)
    assert keys(found) == ["silence:sweep"]
    assert found[0].severity == "error" and found[0].opened == clock.now()
    assert f"created at {format_instant(created)}" in found[0].message
    assert "at most 1h" in found[0].message

    # Still silent: it stays open, no new transaction.
    clock.advance(10 * MIN)
    before = head(led)
    assert keys(doctor(led)) == ["silence:sweep"] and head(led) == before

    # A failed run is no success; an ok one ends the silence.
    run(led, clock, "sweep", "failed")
    assert keys(doctor(led)) == ["silence:sweep"]
    run(led, clock, "sweep", "ok", artifact=b"fine")
    ok_at = clock.now()
    assert doctor(led) == []
    assert state(led, "silence:sweep")["keel.finding/state"] == "resolved"

    # Silent again after the last ok run: reopened, naming when it last succeeded.
    clock.advance(HOUR + 1)
    found = doctor(led)
    assert keys(found) == ["silence:sweep"]
    assert found[0].message.startswith(f"no ok run since {format_instant(ok_at)}")


def test_silence_skips_paused_jobs_and_counts_from_resume(led, clock):
    job(led, "nightly", kind="probe", run="ok", max_silence="2h")
    set_paused(led, "nightly", True)
    clock.advance(5 * HOUR)
    assert doctor(led) == []

    set_paused(led, "nightly", False)
    resumed = clock.now()
    clock.advance(HOUR)
    assert doctor(led) == []  # silence counts from the resume, not from creation
    clock.advance(HOUR + 1)
    found = doctor(led)
    assert keys(found) == ["silence:nightly"]
    assert f"resumed at {format_instant(resumed)}" in found[0].message

    # Pausing a silent job resolves its finding.
    set_paused(led, "nightly", True)
    assert doctor(led) == []


# -- missing artifact -----------------------------------------------------------------------
def test_missing_artifact(led, clock):
    job(led, "brief", kind="command", run="echo hi", expect_artifact=True)
    job(led, "chore", kind="command", run="true")  # no artifact expected
    assert doctor(led) == []  # never ran: nothing to say about artifacts

    run(led, clock, "brief", "ok", artifact=b"the brief\n")
    run(led, clock, "chore", "ok")
    assert doctor(led) == []

    clock.advance(HOUR)
    empty = run(led, clock, "brief", "ok")  # ran, and produced nothing
    found = doctor(led)
    assert keys(found) == ["artifact:brief"]
    assert empty in found[0].message

    # A failed run with output changes nothing: the latest ok run is still empty.
    clock.advance(HOUR)
    run(led, clock, "brief", "failed", artifact=b"traceback")
    assert keys(doctor(led)) == ["artifact:brief"]

    # Whitespace is no artifact either.
    clock.advance(HOUR)
    blank = run(led, clock, "brief", "ok", artifact=b" \n\t\n")
    found = doctor(led)
    assert keys(found) == ["artifact:brief"] and blank in found[0].message

    clock.advance(HOUR)
    run(led, clock, "brief", "ok", artifact=b"a real brief\n")
    assert doctor(led) == []
    assert state(led, "artifact:brief")["keel.finding/state"] == "resolved"


# -- missed fires ---------------------------------------------------------------------------
def test_missed_fires(led, clock):
    job(led, "hourly", kind="probe", run="ok")
    job(led, "fine", kind="probe", run="ok")
    t1, t2, t3 = T0 + HOUR * 1_000_000, T0 + 2 * HOUR * 1_000_000, T0 + 3 * HOUR * 1_000_000
    clock.set(t3 + 5 * MIN * 1_000_000)
    run(led, clock, "fine", "ok", scheduled=t1)
    assert doctor(led) == []

    run(led, clock, "hourly", "missed", scheduled=t1)
    found = doctor(led)
    assert keys(found) == ["missed:hourly"]
    assert found[0].message.startswith("1 fire was missed") and format_instant(t1) in (
        found[0].message
    )
    opened = found[0].opened

    # More missed fires: the same finding, naming the count and the latest.
    run(led, clock, "hourly", "missed", scheduled=t2)
    run(led, clock, "hourly", "missed", scheduled=t3)
    found = doctor(led)
    assert found[0].message.startswith("3 fires were missed")
    assert format_instant(t3) in found[0].message and found[0].opened == opened

    # A failed catch-up does not make up for them; an ok one for the latest fire does.
    run(led, clock, "hourly", "failed", scheduled=t3, suffix="~catch-up")
    assert keys(doctor(led)) == ["missed:hourly"]
    run(led, clock, "hourly", "ok", scheduled=t3, suffix="~catch-up#2")
    assert doctor(led) == []
    assert state(led, "missed:hourly")["keel.finding/state"] == "resolved"

    # A new missed fire after that ok run opens it again, counting only the new one.
    t4 = t3 + HOUR * 1_000_000
    clock.set(t4 + 5 * MIN * 1_000_000)
    run(led, clock, "hourly", "missed", scheduled=t4)
    found = doctor(led)
    assert keys(found) == ["missed:hourly"] and found[0].message.startswith("1 fire was")


def test_missed_fires_with_the_real_scheduler(led, clock, opener):
    job(led, "tick", kind="probe", run="ok", catch_up="skip")
    scheduler = Scheduler(opener, clock=clock, kinds=KINDS, tick=0.05)
    try:
        scheduler.tick(led)  # the job starts counting now
        clock.advance(3 * HOUR + 30 * MIN)  # the daemon was "down" for three fires
        scheduler.tick(led)
        assert not scheduler.futures  # catch-up skip: nothing ran
        found = doctor(led)
        assert keys(found) == ["missed:tick"]
        assert "3 fires were missed" in found[0].message and "catch-up: skip" in found[0].message

        clock.set(T0 + 4 * HOUR * 1_000_000)  # the next fire, on time
        scheduler.tick(led)
        for fut in list(scheduler.futures):
            assert fut.result(20).outcome == "ok"
        deadline = time.monotonic() + 20
        while scheduler.in_flight.get("tick") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert doctor(led) == []
        assert state(led, "missed:tick")["keel.finding/state"] == "resolved"
    finally:
        scheduler.stop()


# -- dead letters ---------------------------------------------------------------------------


def test_dead_letters(led, clock, opener):
    led.declare([{"attribute": "task/title", "type": "string"}])
    bus = Bus(opener, poll=0.02, flush_every=0.05)

    def flaky(event):
        if event.type == "task":
            raise RuntimeError("cannot handle tasks")

    bus.subscribe("flaky", flaky, max_failures=2, backoff=0.001)
    bus.subscribe("steady", lambda event: None)
    bus.start()
    try:
        assert doctor(led) == []
        for title in ("plumber", "dentist"):
            led.transact([{"e": "#t", "a": "task/title", "v": title}], reason=title)
        assert wait_for(lambda: bus.subscriptions["flaky"].dead == 2)
    finally:
        bus.stop()

    found = doctor(led)
    assert keys(found) == ["dead:flaky"]  # one per subscription; none for "steady"
    assert found[0].severity == "error"
    assert found[0].message.startswith("2 dead-lettered events are open")
    assert "RuntimeError: cannot handle tasks" in found[0].message

    # Dealing with one leaves the other open; dealing with both resolves the finding.
    dead = sorted(led.view().find("keel.dead/state", "open"))
    led.transact([{"e": dead[0], "a": "keel.dead/state", "v": "resolved"}], reason="retried")
    found = doctor(led)
    assert found[0].message.startswith("1 dead-lettered event is open")
    led.transact([{"e": dead[1], "a": "keel.dead/state", "v": "resolved"}], reason="retried")
    assert doctor(led) == []
    assert state(led, "dead:flaky")["keel.finding/state"] == "resolved"


# -- growing lag ----------------------------------------------------------------------------
def status(**lags: int) -> list[dict]:
    return [{"name": name, "lag": lag} for name, lag in lags.items()]


def test_lag_watch_verdicts():
    watch = LagWatch(samples=3)
    watch.feed(status(a=1, b=5, c=0))
    watch.feed(status(a=2, b=5, c=0))
    assert watch.growing("a") is None  # not enough samples yet
    assert watch.growing("c") is False  # zero is never growing
    watch.feed(status(a=3, b=5, c=0))
    assert watch.growing("a") is True
    assert watch.growing("b") is False  # behind, but not falling further behind
    watch.feed(status(a=3, b=6))
    assert watch.growing("a") is False  # a plateau breaks the growth
    assert watch.samples("a") == [2, 3, 3]
    assert watch.names() == ["a", "b"]  # c is gone from status, so forgotten
    with pytest.raises(ValueError):
        LagWatch(samples=1)


def test_growing_lag(led, clock):
    ensure_bus_schema(led)
    watch = LagWatch(samples=3)
    for lag in (1, 4, 9):
        watch.feed(status(slow=lag, quick=0))
    found = doctor(led, lag_watch=watch)
    assert keys(found) == ["lag:slow"]
    assert "from 1 to 9" in found[0].message and found[0].severity == "warning"

    # Without a watch (say `keel doctor` from the CLI) the lag check does not run.
    assert keys(doctor(led)) == ["lag:slow"]
    # A fresh watch (a restarted daemon) with too few samples keeps the finding as it is.
    fresh = LagWatch(samples=3)
    fresh.feed(status(slow=12))
    before = head(led)
    assert keys(doctor(led, lag_watch=fresh)) == ["lag:slow"] and head(led) == before

    # Once it stops growing, the finding resolves.
    for lag in (12, 3):
        watch.feed(status(slow=lag, quick=0))
    assert doctor(led, lag_watch=watch) == []
    assert state(led, "lag:slow")["keel.finding/state"] == "resolved"


def test_growing_lag_from_a_real_bus_through_the_probe(led, clock, opener):
    led.declare([{"attribute": "note/text", "type": "string"}])
    gate = threading.Event()
    bus = Bus(opener, poll=0.02, flush_every=0.05)
    bus.subscribe("stuck", lambda event: gate.wait(30))
    bus.start()
    watch = LagWatch(samples=3)
    ctx = RunContext(opener, None, threading.Event(), extra={"lag_watch": watch, "bus": bus})
    try:
        for i in range(3):
            for j in range(2):
                led.transact([{"e": "#n", "a": "note/text", "v": f"{i}.{j}"}], reason="note")
            outcome = doctor_probe(ctx)
            assert outcome.outcome == "ok"
        assert watch.growing("stuck") is True
        assert keys(open_findings(led)) == ["lag:stuck"]
        assert b"lag stuck" in outcome.artifact

        gate.set()  # the subscriber catches up
        assert wait_for(lambda: bus.status(head(led))[0]["lag"] == 0)
        outcome = doctor_probe(ctx)
        assert outcome.outcome == "ok" and b"resolved: lag:stuck" in outcome.artifact
        assert open_findings(led) == []
    finally:
        gate.set()
        bus.stop()


# -- doctor, probe, runtime -----------------------------------------------------------------
def test_doctor_probe_is_ok_with_findings_and_fails_when_a_check_crashes(
    led, clock, opener, monkeypatch
):
    job(led, "sweep", kind="probe", run="ok", max_silence="1h")
    clock.advance(2 * HOUR)
    ctx = RunContext(opener, None, threading.Event())
    outcome = doctor_probe(ctx)
    assert outcome.outcome == "ok"  # findings are the signal, not the run's outcome
    text = outcome.artifact.decode()
    assert text.startswith(f"keel doctor at {format_instant(clock.now())}: 1 open finding")
    assert "[error] silence sweep: no ok run since" in text

    def boom(view, now):
        raise RuntimeError("the check itself is broken")

    monkeypatch.setitem(checks.CHECKS, "boom", boom)
    run(led, clock, "sweep", "ok")
    outcome = doctor_probe(ctx)
    assert outcome.outcome == "failed" and "boom" in outcome.error
    assert b"check boom crashed: RuntimeError: the check itself is broken" in outcome.artifact
    # The checks that did run still recorded what they found.
    assert open_findings(led) == []
    with pytest.raises(ChecksFailed) as err:
        doctor(led)
    assert "boom" in str(err.value) and err.value.report.checks[0] == "silence"

    report = examine(led)
    assert report.errors.keys() == {"boom"} and report.to_json()["count"] == 0


def test_install_wires_the_probe(home, monkeypatch):
    monkeypatch.setitem(PROBES, "doctor", None)  # restored after the test
    clock = ManualClock(now_us())  # the home's genesis was written in real time
    runtime = Runtime(home, clock=clock)
    watch = install(runtime, samples=4)
    assert isinstance(watch, LagWatch) and watch.size == 4
    assert runtime.probes["doctor"] is not None
    try:
        runtime.prepare()  # the default cadence: probe.daily and doctor.sweep (run = doctor)
        with runtime.open_ledger() as ledger:
            key, fut = runtime.scheduler.run_now(ledger, "doctor.sweep")
            assert fut is not None and fut.result(30).outcome == "ok"
            assert open_findings(ledger) == []
            artifact = ledger.view().value(run_entity(key), "keel.run/artifact")
            assert artifact.startswith(b"keel doctor at") and b"lag" in artifact

            clock.advance(27 * HOUR)  # probe.daily (26h) and doctor.sweep (3h) fell silent
            key, fut = runtime.scheduler.run_now(ledger, "doctor.sweep")
            assert fut.result(30).outcome == "ok"
        with runtime.open_ledger() as ledger:
            found = open_findings(ledger)
        assert [f.key for f in found] == ["silence:doctor.sweep", "silence:probe.daily"]
    finally:
        runtime.stop()


def test_duration():
    assert [duration(s) for s in (0, 59, 90, 3600, 93600, 26 * 3600)] == [
        "0s",
        "59s",
        "1m30s",
        "1h",
        "1d2h",
        "1d2h",
    ]
