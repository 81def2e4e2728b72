"""Cadence on both stores: schedules (with DST), jobs, runs, missed fires, catch-up, overlap,
retries, pause, exactly-once with two schedulers, recovery and canon.

Time is a ManualClock shared by the ledger and the scheduler, so the tests travel through
days in seconds; `command` jobs are real subprocesses.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from conftest import sh, wait_for
from keel.cadence.clock import ManualClock
from keel.cadence.jobs import (
    get_job,
    load_jobs,
    parse_job,
    read_canon,
    save_job,
    set_paused,
    sync_canon,
)
from keel.cadence.kinds import KINDS, PROBES
from keel.cadence.runs import new_run, run_json, run_key, runs_of
from keel.cadence.schedule import parse_duration, parse_schedule
from keel.cadence.scheduler import Scheduler, ensure_schema
from keel.ledger import BadInput, Ledger, NotFound
from keel.ledger.instants import format_instant, parse_instant

US = 1_000_000
HOUR = 3600
START = parse_instant("2026-01-05T00:00:00Z")
EXECUTED = {"ok", "failed", "timed-out", "running", "interrupted"}


def utc(text: str) -> int:
    return parse_instant(text)


def iso(us: int | None) -> str | None:
    return None if us is None else format_instant(us)


def fires_between(schedule, start: int, end: int) -> list[int]:
    """Every fire in (start, end]."""
    out, t = [], start
    while True:
        nxt = schedule.next_after(t)
        if nxt is None or nxt > end:
            return out
        out.append(nxt)
        t = nxt


def local(text: str, tz: str) -> int:
    return parse_instant(text, ZoneInfo(tz))


def drain(*schedulers: Scheduler, timeout: float = 30.0) -> None:
    """Wait for every run the schedulers started; a run that raised fails the test."""
    deadline = time.monotonic() + timeout
    for s in schedulers:
        while s.futures:
            for fut in list(s.futures):
                fut.result(max(0.1, deadline - time.monotonic()))


class Env:
    """A ledger and schedulers on one ManualClock.

    Not the `ledger` fixture: its genesis is stamped with real time, and a transaction is
    never stamped earlier than the one before it, so the ledger would not follow the clock.
    """

    def __init__(self, target: str, operator, start: int = START):
        self.target, self.operator = target, operator
        self.clock = ManualClock(start)
        self.ledger = self.open()
        self.ledger.register_identity("operator", operator.public_key, "operator")
        ensure_schema(self.ledger)
        self.schedulers: list[Scheduler] = []

    def open(self) -> Ledger:
        return Ledger.open(self.target, signer=self.operator, clock=self.clock.now)

    def scheduler(self, node: str = "node-a:1", **kw) -> Scheduler:
        kw.setdefault("grace", 1.0)
        kw.setdefault("workers", 8)
        s = Scheduler(self.open, clock=self.clock, node=node, **kw)
        self.schedulers.append(s)
        return s

    def at(self, text: str) -> None:
        self.clock.set(utc(text))

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def add(self, **job):
        spec = parse_job(job, set(KINDS))
        save_job(self.ledger, spec)
        return spec

    def runs(self, job: str | None = None, outcome: str | None = None) -> list[dict]:
        return runs_of(self.ledger, job, outcome)

    def head(self) -> int:
        return self.ledger.store.head()[0]

    def close(self) -> None:
        for s in self.schedulers:
            s.stop()
        self.ledger.close()


@pytest.fixture
def env(target, operator):
    e = Env(target, operator)
    yield e
    e.close()


def summary(runs: list[dict]) -> list[tuple]:
    """(scheduled, outcome, trigger, attempt) per run, oldest first."""
    return [
        (
            iso(r["keel.run/scheduled"]),
            r["keel.run/outcome"],
            r["keel.run/trigger"],
            r["keel.run/attempt"],
        )
        for r in runs
    ]


def settle(env: Env, s: Scheduler, rounds: int = 50) -> None:
    """Tick (without moving the clock) until no run is pending or running."""
    for _ in range(rounds):
        s.tick(env.ledger)
        drain(s)
        if not env.runs(outcome="pending") and not env.runs(outcome="running"):
            return
    raise AssertionError(f"runs still pending: {summary(env.runs(outcome='pending'))}")


# -- schedules ---------------------------------------------------------------------------------


def test_parse_valid_schedules():
    cron = parse_schedule("0 9 * * 1-5", "Europe/Berlin")
    assert (cron.kind, cron.expr, cron.tz) == ("cron", "0 9 * * 1-5", "Europe/Berlin")
    # Saturday 2026-01-10 -> Monday 09:00 in Berlin (CET, UTC+1).
    assert iso(cron.next_after(utc("2026-01-10T12:00:00Z"))) == "2026-01-12T08:00:00Z"
    assert parse_schedule("cron 0 9 * * 1-5", "Europe/Berlin") == cron
    assert cron.to_text() == "0 9 * * 1-5"
    ny = parse_schedule("  15 18 * * *  ", "America/New_York")
    assert iso(ny.next_after(utc("2026-07-01T00:00:00Z"))) == "2026-07-01T22:15:00Z"  # EDT
    assert iso(ny.next_after(utc("2026-01-01T00:00:00Z"))) == "2026-01-01T23:15:00Z"  # EST

    every = parse_schedule("every 30m")
    assert (every.kind, every.expr, every.to_text()) == ("every", "30m", "every 30m")
    assert iso(every.next_after(utc("2026-02-02T10:07:00Z"))) == "2026-02-02T10:30:00Z"
    assert iso(every.next_after(utc("2026-02-02T10:30:00Z"))) == "2026-02-02T11:00:00Z"
    # `every` is aligned to the Unix epoch, so every node computes the same fires.
    seven = parse_schedule("every 7m", "Asia/Tokyo")
    t = utc("2026-02-02T10:00:00Z")
    fires = fires_between(seven, t, t + 2 * HOUR * US)
    assert all(f % (420 * US) == 0 for f in fires)
    assert [b - a for a, b in itertools.pairwise(fires)] == [420 * US] * (len(fires) - 1)

    at = parse_schedule("at 2026-12-01T09:00", "America/New_York")
    assert at.kind == "at" and at.to_text() == "at 2026-12-01T09:00"
    assert iso(at.next_after(utc("2026-11-01T00:00:00Z"))) == "2026-12-01T14:00:00Z"
    assert at.next_after(utc("2026-12-01T14:00:00Z")) is None
    with_offset = parse_schedule("at 2026-12-01T09:00:00Z", "America/New_York")
    assert iso(with_offset.next_after(0)) == "2026-12-01T09:00:00Z"

    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400
    assert parse_duration("1.5m") == 90
    assert parse_duration(5) == 5.0


@pytest.mark.parametrize(
    "text, tz",
    [
        ("61 * * * *", "UTC"),
        ("* * * *", "UTC"),
        ("0 9 * * * *", "UTC"),
        ("0 25 * * *", "UTC"),
        ("@reboot", "UTC"),
        ("whenever", "UTC"),
        ("", "UTC"),
        ("every", "UTC"),
        ("every 0s", "UTC"),
        ("every 10 parsecs", "UTC"),
        ("every -5m", "UTC"),
        ("every 0.0000001s", "UTC"),
        ("at tomorrow", "UTC"),
        ("at 2026-02-30T09:00", "UTC"),
        ("at 2026-13-01T09:00", "UTC"),
        ("0 9 * * *", "Mars/Olympus_Mons"),
        ("every 1h", "not a zone"),
    ],
)
def test_bad_schedules_are_refused(text, tz):
    with pytest.raises(BadInput):
        parse_schedule(text, tz)


@pytest.mark.parametrize("text", ["ten minutes", "5 fortnights", "-5m", "", "m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(BadInput):
        parse_duration(text)


BAD_SPECS = [
    {"name": "j", "schedule": "every 1h", "kind": "teleport", "run": "x"},
    {"name": "j", "schedule": "every 1h", "run": "true", "overlap": "sometimes"},
    {"name": "j", "schedule": "every 1h", "run": "true", "catch_up": "maybe"},
    {"name": "j", "schedule": "every 1h", "run": "true", "active_hours": "8-22"},
    {"name": "j", "schedule": "every 1h", "run": "true", "active_hours": "25:00-26:00"},
    {"name": "j", "schedule": "every 1h", "run": "true", "active_hours": "08:00-22:60"},
    {"name": "j", "schedule": "61 * * * *", "run": "true"},
    {"name": "j", "schedule": "0 9 * * *", "tz": "Nowhere/City", "run": "true"},
    {"name": "j", "schedule": "at not-a-date", "run": "true"},
    {"name": "bad name!", "schedule": "every 1h", "run": "true"},
    {"name": "j", "schedule": "every 1h", "run": "true", "timeout": "soon"},
    {"name": "j", "schedule": "every 1h", "run": "true", "retries": -1},
    {"name": "j", "schedule": "every 1h", "run": "true", "timeout": -5},
    {"name": "j", "schedule": "every 1h", "run": "true", "timeout": 0},
    {"name": "j", "schedule": "every 1h", "run": "true", "catch_up_window": "-3"},
    {"name": "j", "schedule": "every 1h", "run": "true", "colour": "blue"},
    {"schedule": "every 1h", "run": "true"},
]


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_bad_job_specs_are_refused(spec):
    with pytest.raises(BadInput):
        parse_job(spec, set(KINDS))


def test_bad_job_specs_store_nothing(env):
    head = env.head()
    for spec in BAD_SPECS:
        with pytest.raises(BadInput):
            save_job(env.ledger, parse_job(spec, set(KINDS)))
    assert env.head() == head
    assert load_jobs(env.ledger) == {}
    with pytest.raises(NotFound):
        get_job(env.ledger, "j")
    with pytest.raises(NotFound):
        set_paused(env.ledger, "j", True)
    assert env.head() == head


# -- DST ---------------------------------------------------------------------------------------

# (zone, local day, cron, the one expected fire in UTC)
DST_DAILY = [
    # Spring forward: 02:30 does not exist; it fires once, at 03:30 local.
    ("America/New_York", "2026-03-08", "30 2 * * *", "2026-03-08T07:30:00Z"),
    ("Europe/Berlin", "2026-03-29", "30 2 * * *", "2026-03-29T01:30:00Z"),
    # Fall back: the time happens twice; it fires once, at its first occurrence.
    ("America/New_York", "2026-11-01", "30 1 * * *", "2026-11-01T05:30:00Z"),
    ("Europe/Berlin", "2026-10-25", "30 2 * * *", "2026-10-25T00:30:00Z"),
]


@pytest.mark.parametrize("tz, day, cron, expected", DST_DAILY)
def test_daily_fire_on_dst_day_happens_once(tz, day, cron, expected):
    schedule = parse_schedule(cron, tz)
    start = local(f"{day}T00:00:00", tz) - 1
    end = local(f"{day}T23:59:59", tz)
    assert [iso(f) for f in fires_between(schedule, start, end)] == [expected]
    if "-03-" in day:  # spring: 02:30 does not exist, the fire is at 03:30 local
        wall = datetime.fromtimestamp(utc(expected) / US, ZoneInfo(tz))
        assert (wall.hour, wall.minute) == (3, 30)
    # And the days either side fire once each, at the ordinary wall time.
    around = fires_between(schedule, start - 86400 * US, end + 86400 * US)
    assert len(around) == 3
    hour, minute = int(cron.split()[1]), int(cron.split()[0])
    for f in (around[0], around[2]):
        wall = datetime.fromtimestamp(f / US, ZoneInfo(tz))
        assert (wall.hour, wall.minute) == (hour, minute)


# (zone, window start UTC, window end UTC, expected hourly fires in UTC)
DST_HOURLY = [
    # New York spring: 01:00 EST, then 02:00 does not exist (-> 03:00 EDT, the same instant).
    (
        "America/New_York",
        "2026-03-08T05:30:00Z",
        "2026-03-08T09:30:00Z",
        ["06:00", "07:00", "08:00", "09:00"],
    ),
    # New York fall: 01:00 EDT (05Z) fires, the repeated 01:00 EST (06Z) does not, 02:00 EST.
    (
        "America/New_York",
        "2026-11-01T03:30:00Z",
        "2026-11-01T08:30:00Z",
        ["04:00", "05:00", "07:00", "08:00"],
    ),
    # Berlin spring: 01:00 CET (00Z), 03:00 CEST (01Z), 04:00 CEST (02Z).
    (
        "Europe/Berlin",
        "2026-03-28T22:30:00Z",
        "2026-03-29T02:30:00Z",
        ["23:00", "00:00", "01:00", "02:00"],
    ),
    # Berlin fall: 02:00 CEST (00Z) fires, the repeated 02:00 CET (01Z) does not, 03:00 CET.
    (
        "Europe/Berlin",
        "2026-10-24T22:30:00Z",
        "2026-10-25T03:30:00Z",
        ["23:00", "00:00", "02:00", "03:00"],
    ),
]


@pytest.mark.parametrize("tz, start, end, expected", DST_HOURLY)
def test_hourly_cron_around_dst(tz, start, end, expected):
    fires = fires_between(parse_schedule("0 * * * *", tz), utc(start), utc(end))
    assert [iso(f)[11:16] for f in fires] == expected
    assert len(set(fires)) == len(fires)


def hourly_oracle(tz: str, start: int, end: int) -> list[int]:
    """UTC hours in (start, end] that are the first occurrence of a local HH:00."""
    zone, out = ZoneInfo(tz), []
    t = (start // (HOUR * US) + 1) * HOUR * US
    while t <= end:
        wall = datetime.fromtimestamp(t / US, zone)
        if wall.minute == 0 and wall.fold == 0:
            out.append(t)
        t += HOUR * US
    return out


# (zone, local start, local end, daily cron, expected daily fires in UTC)
DST_SIMULATIONS = [
    (
        "America/New_York",
        "2026-03-07T22:00:00",
        "2026-03-10T04:00:00",
        "30 2 * * *",
        ["2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"],
    ),
    (
        "America/New_York",
        "2026-10-31T22:00:00",
        "2026-11-03T04:00:00",
        "30 1 * * *",
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"],
    ),
    (
        "Europe/Berlin",
        "2026-03-28T22:00:00",
        "2026-03-31T04:00:00",
        "30 2 * * *",
        ["2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"],
    ),
    (
        "Europe/Berlin",
        "2026-10-24T22:00:00",
        "2026-10-27T04:00:00",
        "30 2 * * *",
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"],
    ),
]


@pytest.mark.parametrize("tz, start, end, cron, expected", DST_SIMULATIONS)
def test_scheduler_through_dst_records_one_run_per_fire(env, tz, start, end, cron, expected):
    t0, t1 = local(start, tz), local(end, tz)
    env.clock.set(t0)
    env.add(name="daily", schedule=cron, tz=tz, kind="probe", run="ok")
    env.add(name="hourly", schedule="0 * * * *", tz=tz, kind="probe", run="ok")
    s = env.scheduler()
    # Tick like the daemon: at each soonest fire, and also every 97 minutes in between.
    while True:
        soonest = s.tick(env.ledger)
        drain(s)
        now = env.clock.now()
        if now >= t1:
            break
        env.clock.set(min(x for x in (soonest, now + 97 * 60 * US, t1) if x is not None))
    daily = env.runs("daily")
    assert summary(daily) == [(f, "ok", "schedule", 1) for f in expected]
    hourly = env.runs("hourly")
    want = hourly_oracle(tz, t0, t1)
    # 54 local hours: 53 real ones in spring; 55 in autumn, one of them a repeated wall hour.
    assert len(want) == (53 if "-03-" in start else 54)
    assert [r["keel.run/scheduled"] for r in hourly] == want
    assert {r["keel.run/outcome"] for r in hourly} == {"ok"}
    assert {r["keel.run/trigger"] for r in hourly} == {"schedule"}


# -- every / at --------------------------------------------------------------------------------


def test_every_schedule_fires_on_its_grid(env):
    env.at("2026-02-02T10:07:00Z")
    env.add(name="half", schedule="every 30m", kind="probe", run="ok")
    s = env.scheduler()
    assert iso(s.tick(env.ledger)) == "2026-02-02T10:30:00Z"
    env.at("2026-02-02T10:29:59Z")
    s.tick(env.ledger)
    assert env.runs("half") == []
    for t in ("10:30:00", "10:45:00", "11:00:00", "11:00:20", "11:30:00"):
        env.at(f"2026-02-02T{t}Z")
        s.tick(env.ledger)
        drain(s)
    assert summary(env.runs("half")) == [
        ("2026-02-02T10:30:00Z", "ok", "schedule", 1),
        ("2026-02-02T11:00:00Z", "ok", "schedule", 1),
        ("2026-02-02T11:30:00Z", "ok", "schedule", 1),
    ]
    assert s.next_fires(env.ledger) == [
        {"job": "half", "paused": False, "next": "2026-02-02T12:00:00Z"}
    ]


def test_at_job_fires_once_and_never_again(env):
    env.at("2026-02-03T07:00:00Z")
    env.add(name="once", schedule="at 2026-02-03T09:00", tz="Europe/Berlin", run="echo once")
    # A second one-off whose instant passes while no scheduler ticks.
    env.add(name="gone", schedule="at 2026-02-03T07:30:00Z", kind="probe", run="ok")
    s = env.scheduler()
    s.tick(env.ledger)
    nexts = {j["job"]: j["next"] for j in s.next_fires(env.ledger)}
    assert nexts == {"once": "2026-02-03T08:00:00Z", "gone": "2026-02-03T07:30:00Z"}
    env.at("2026-02-03T08:00:00Z")
    s.tick(env.ledger)
    drain(s)
    for _ in range(30):  # a day and more, hour by hour
        env.advance(HOUR)
        s.tick(env.ledger)
        drain(s)
    assert summary(env.runs("once")) == [("2026-02-03T08:00:00Z", "ok", "schedule", 1)]
    assert env.runs("once")[0]["keel.run/artifact"] == b"once\n"
    # The missed one-off is recorded as missed, and caught up once (the default policy).
    assert summary(env.runs("gone")) == [
        ("2026-02-03T07:30:00Z", "missed", "schedule", 1),
        ("2026-02-03T07:30:00Z", "ok", "catch-up", 1),
    ]
    assert {j["job"]: j["next"] for j in s.next_fires(env.ledger)} == {"once": None, "gone": None}


# -- runs --------------------------------------------------------------------------------------


def test_a_command_is_argv_never_shell_text(env, tmp_path):
    """Shell syntax in a command is plain arguments: `;`, `>` and `$(...)` do nothing; the
    program is fixed by absolute path when the job is declared."""
    marker = tmp_path / "pwned"
    env.at("2026-02-02T00:30:00Z")
    spec = env.add(name="plain", schedule="every 1h", run=f"echo a; touch {marker} > $(id)")
    assert spec.run.startswith("/") and spec.run.split()[0].endswith("/echo")
    with pytest.raises(BadInput, match="no program 'no-such-program-x'"):
        env.add(name="nope", schedule="every 1h", run="no-such-program-x --flag")
    with pytest.raises(BadInput, match="cannot be split"):
        env.add(name="quote", schedule="every 1h", run="echo 'unclosed")
    s = env.scheduler()
    s.tick(env.ledger)
    env.at("2026-02-02T01:00:00Z")
    s.tick(env.ledger)
    drain(s)
    (run,) = env.runs("plain")
    assert run["keel.run/outcome"] == "ok"
    assert run["keel.run/artifact"] == f"a; touch {marker} > $(id)\n".encode()
    assert not marker.exists()


def test_run_outcomes(env):
    env.at("2026-02-02T00:30:00Z")
    env.add(name="hello", schedule="every 1h", run=sh("echo hello $KEEL_JOB; echo oops >&2"))
    env.add(name="broken", schedule="every 1h", run=sh("echo partial; exit 3"))
    env.add(name="slow", schedule="every 1h", run="sleep 5", timeout=1)
    env.add(name="probe", schedule="every 1h", kind="probe", run="ok")
    env.add(name="ledgerprobe", schedule="every 1h", kind="probe", run="ledger")
    env.add(name="noprobe", schedule="every 1h", kind="probe", run="no-such-probe")
    with pytest.raises(BadInput, match="the command is empty"):
        env.add(name="empty", schedule="every 1h", run="")
    s = env.scheduler()
    s.tick(env.ledger)
    env.at("2026-02-02T01:00:00Z")
    began = time.monotonic()
    s.tick(env.ledger)
    running = {r["keel.run/job"] for r in env.runs(outcome="running")}
    assert "slow" in running
    drain(s)
    elapsed = time.monotonic() - began
    assert elapsed < 4.5, f"the timeout did not end the command ({elapsed:.1f}s)"

    def one(job: str) -> dict:
        (run,) = env.runs(job)
        assert run["keel.run/scheduled"] == utc("2026-02-02T01:00:00Z")
        assert run["keel.run/key"] == run_key(job, utc("2026-02-02T01:00:00Z"))
        assert run["keel.run/node"] == "node-a:1"
        assert run["keel.run/started"] <= run["keel.run/ended"]
        return run

    hello = one("hello")
    assert hello["keel.run/outcome"] == "ok"
    assert hello["keel.run/artifact"] == b"hello hello\noops\n"
    assert "keel.run/error" not in hello
    shown = run_json(hello, with_artifact=True)
    assert shown["outcome"] == "ok" and shown["artifact"] == "hello hello\noops\n"
    assert shown["artifact_bytes"] == len(b"hello hello\noops\n")
    assert shown["scheduled"] == "2026-02-02T01:00:00Z" and shown["trigger"] == "schedule"

    broken = one("broken")
    assert broken["keel.run/outcome"] == "failed"
    assert broken["keel.run/error"] == "exit status 3"
    assert broken["keel.run/artifact"] == b"partial\n"

    slow = one("slow")
    assert slow["keel.run/outcome"] == "timed-out"
    assert "timed out after 1s" in slow["keel.run/error"]

    probe = one("probe")
    assert probe["keel.run/outcome"] == "ok" and probe["keel.run/artifact"] == b"ok\n"
    assert one("ledgerprobe")["keel.run/outcome"] == "ok"
    assert b"ledger readable" in one("ledgerprobe")["keel.run/artifact"]

    noprobe = one("noprobe")
    assert noprobe["keel.run/outcome"] == "failed"
    assert "unknown probe 'no-such-probe'" in noprobe["keel.run/error"]
    assert all(name in noprobe["keel.run/error"] for name in PROBES)

    # On demand: trigger `manual`, its own run.
    key, fut = s.run_now(env.ledger, "hello")
    assert fut is not None and fut.result(10).outcome == "ok"
    manual = env.ledger.view().get(f"run:{key}")
    assert manual["keel.run/trigger"] == "manual" and manual["keel.run/outcome"] == "ok"
    with pytest.raises(NotFound):
        s.run_now(env.ledger, "nobody")


# -- missed fires and catch-up -----------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, window, caught",
    [
        ("once", "1d", ["05"]),
        ("all", "1d", ["01", "02", "03", "04", "05"]),
        ("all", "3h", ["03", "04", "05"]),
        ("skip", "1d", []),
    ],
)
def test_missed_fires_and_catch_up(env, policy, window, caught):
    env.at("2026-02-02T00:00:00Z")
    env.add(
        name="hourly",
        schedule="every 1h",
        kind="probe",
        run="ok",
        catch_up=policy,
        catch_up_window=window,
    )
    s = env.scheduler()
    s.tick(env.ledger)
    env.at("2026-02-02T05:30:00Z")  # not ticked for five and a half hours
    settle(env, s)
    runs = env.runs("hourly")
    missed = [r for r in runs if r["keel.run/outcome"] == "missed"]
    assert [iso(r["keel.run/scheduled"])[11:13] for r in missed] == ["01", "02", "03", "04", "05"]
    for r in missed:
        assert r["keel.run/catch-up"] == policy
        assert r["keel.run/trigger"] == "schedule"
        assert "keel.run/started" not in r
    catch = [r for r in runs if r["keel.run/trigger"] == "catch-up"]
    assert [iso(r["keel.run/scheduled"])[11:13] for r in catch] == caught
    for r in catch:
        assert r["keel.run/outcome"] == "ok"
        assert r["keel.run/catch-up"] == policy
        assert r["keel.run/key"].endswith("~catch-up")
    assert len(runs) == len(missed) + len(catch)
    # Ticking again changes nothing; the next fire is ordinary.
    head = env.head()
    s.tick(env.ledger)
    assert env.head() == head
    env.at("2026-02-02T06:00:00Z")
    s.tick(env.ledger)
    drain(s)
    assert summary(env.runs("hourly"))[-1] == ("2026-02-02T06:00:00Z", "ok", "schedule", 1)


def test_a_long_outage_is_caught_up_once(env):
    """More missed fires than one tick deals with (500) still give one catch-up run."""
    env.at("2026-02-02T00:00:00Z")
    env.add(name="often", schedule="every 10s", kind="probe", run="ok", catch_up="once")
    s = env.scheduler(late_after=5)
    s.tick(env.ledger)
    env.at("2026-02-02T02:00:07Z")  # 720 fires while down, the last one 7 s ago
    for _ in range(4):
        settle(env, s)
    runs = env.runs("often")
    missed = [r for r in runs if r["keel.run/outcome"] == "missed"]
    assert len(missed) == 720
    assert [iso(r["keel.run/scheduled"]) for r in runs if r["keel.run/trigger"] == "catch-up"] == [
        iso(missed[-1]["keel.run/scheduled"])
    ]


@pytest.mark.parametrize(
    "policy, caught", [("skip", []), ("once", ["03"]), ("all", ["01", "02", "03"])]
)
def test_fires_within_late_after_are_normal_runs(env, policy, caught):
    env.at("2026-02-02T00:00:00Z")
    env.add(name="hourly", schedule="every 1h", kind="probe", run="ok", catch_up=policy)
    s = env.scheduler(late_after=60)
    s.tick(env.ledger)
    env.at("2026-02-02T04:00:45Z")  # 04:00 is 45 s late: still on time
    settle(env, s)
    runs = env.runs("hourly")
    assert [
        (iso(r["keel.run/scheduled"])[11:13], r["keel.run/trigger"])
        for r in runs
        if (r["keel.run/outcome"] == "missed")
    ] == [("01", "schedule"), ("02", "schedule"), ("03", "schedule")]
    # The on-time fire runs as an ordinary run, whatever catch-up the same tick started.
    assert summary([r for r in runs if r["keel.run/scheduled"] == utc("2026-02-02T04:00:00Z")]) == [
        ("2026-02-02T04:00:00Z", "ok", "schedule", 1)
    ]
    catch = [r for r in runs if r["keel.run/trigger"] == "catch-up"]
    assert {iso(r["keel.run/scheduled"])[11:13] for r in catch} <= set(caught)
    assert {r["keel.run/outcome"] for r in catch} <= {"ok"}


def test_fires_missed_while_the_scheduler_was_stopped(env):
    env.at("2026-02-02T00:00:00Z")
    env.add(name="hourly", schedule="every 1h", kind="probe", run="ok", catch_up="once")
    first = env.scheduler(node="node-a:1", tick=0.05)
    first.start()
    assert wait_for(lambda: "keel.job/last-fire" in get_job(env.ledger, "hourly")[1])
    env.advance(HOUR)
    assert wait_for(lambda: [r["keel.run/outcome"] for r in env.runs("hourly")] == ["ok"])
    first.stop()
    env.advance(5.5 * HOUR)  # down until 06:30
    second = env.scheduler(node="node-b:2", tick=0.05)
    second.start()
    assert wait_for(lambda: len(env.runs("hourly")) == 7 and not env.runs(outcome="running"))
    second.stop()
    assert summary(env.runs("hourly")) == [
        ("2026-02-02T01:00:00Z", "ok", "schedule", 1),
        ("2026-02-02T02:00:00Z", "missed", "schedule", 1),
        ("2026-02-02T03:00:00Z", "missed", "schedule", 1),
        ("2026-02-02T04:00:00Z", "missed", "schedule", 1),
        ("2026-02-02T05:00:00Z", "missed", "schedule", 1),
        ("2026-02-02T06:00:00Z", "missed", "schedule", 1),
        ("2026-02-02T06:00:00Z", "ok", "catch-up", 1),
    ]
    nodes = [r.get("keel.run/node") for r in env.runs("hourly")]
    assert nodes[0] == "node-a:1" and nodes[-1] == "node-b:2"


# -- overlap -----------------------------------------------------------------------------------


def test_overlap_skip(env):
    env.at("2026-02-02T00:00:30Z")
    env.add(name="long", schedule="every 1m", run="sleep 1.2", overlap="skip")
    a = env.scheduler(node="node-a:1")
    b = env.scheduler(node="node-b:2")
    a.tick(env.ledger)
    env.at("2026-02-02T00:01:00Z")
    a.tick(env.ledger)
    env.at("2026-02-02T00:02:00Z")
    a.tick(env.ledger)  # still running here: skipped
    env.at("2026-02-02T00:03:00Z")
    assert a.heartbeat(env.ledger) == []  # a's lease is live (its heartbeat renewed it)
    b.tick(env.ledger)  # and on another node too, which sees it running in the ledger
    assert [r["keel.run/outcome"] for r in env.runs("long")] == [
        "running",
        "skipped-overlap",
        "skipped-overlap",
    ]
    drain(a, b)
    assert [r["keel.run/outcome"] for r in env.runs("long")] == [
        "ok",
        "skipped-overlap",
        "skipped-overlap",
    ]
    env.at("2026-02-02T00:04:00Z")
    b.tick(env.ledger)
    drain(b)
    assert env.runs("long")[-1]["keel.run/outcome"] == "ok"


def test_overlap_queue(env):
    env.at("2026-02-02T00:00:30Z")
    env.add(name="long", schedule="every 1m", run=sh("sleep 1; echo done"), overlap="queue")
    s = env.scheduler()
    s.tick(env.ledger)
    env.at("2026-02-02T00:01:00Z")
    s.tick(env.ledger)
    env.at("2026-02-02T00:02:00Z")
    s.tick(env.ledger)
    assert [r["keel.run/outcome"] for r in env.runs("long")] == ["running", "pending"]
    s.tick(env.ledger)  # while the first runs, the queued one waits
    assert [r["keel.run/outcome"] for r in env.runs("long")] == ["running", "pending"]
    drain(s)
    assert [r["keel.run/outcome"] for r in env.runs("long")] == ["ok", "pending"]
    s.tick(env.ledger)
    assert [r["keel.run/outcome"] for r in env.runs("long")] == ["ok", "running"]
    drain(s)
    runs = env.runs("long")
    assert [r["keel.run/outcome"] for r in runs] == ["ok", "ok"]
    assert runs[1]["keel.run/artifact"] == b"done\n"
    assert runs[1]["keel.run/scheduled"] == utc("2026-02-02T00:02:00Z")


def test_overlap_allow(env):
    env.at("2026-02-02T00:00:30Z")
    env.add(name="long", schedule="every 1m", run="sleep 1", overlap="allow")
    s = env.scheduler()
    s.tick(env.ledger)
    began = time.monotonic()
    for t in ("00:01:00", "00:02:00", "00:03:00"):
        env.at(f"2026-02-02T{t}Z")
        s.tick(env.ledger)
    assert [r["keel.run/outcome"] for r in env.runs("long")] == ["running"] * 3
    drain(s)
    assert [r["keel.run/outcome"] for r in env.runs("long")] == ["ok"] * 3
    assert time.monotonic() - began < 2.8, "the three runs did not run concurrently"


# -- retries -----------------------------------------------------------------------------------


def test_retries_with_backoff(env):
    env.at("2026-02-02T00:00:00Z")
    env.add(name="flaky", schedule="every 1d", run=sh("echo no; exit 1"), retries=2, backoff="1m")
    s = env.scheduler()
    s.tick(env.ledger)
    fire = utc("2026-02-03T00:00:00Z")
    env.clock.set(fire)
    s.tick(env.ledger)
    drain(s)
    assert summary(env.runs("flaky")) == [
        ("2026-02-03T00:00:00Z", "failed", "schedule", 1),
        ("2026-02-03T00:00:00Z", "pending", "retry", 2),
    ]
    second = env.runs("flaky")[1]
    assert second["keel.run/not-before"] == fire + 60 * US
    assert second["keel.run/key"] == run_key("flaky", fire, "#2")
    # Not before the backoff.
    s.tick(env.ledger)
    env.advance(59)
    s.tick(env.ledger)
    drain(s)
    assert env.runs("flaky")[1]["keel.run/outcome"] == "pending"
    env.advance(1)
    s.tick(env.ledger)
    drain(s)
    runs = env.runs("flaky")
    assert summary(runs)[1:] == [
        ("2026-02-03T00:00:00Z", "failed", "retry", 2),
        ("2026-02-03T00:00:00Z", "pending", "retry", 3),
    ]
    assert runs[1]["keel.run/started"] == fire + 60 * US
    # The backoff doubles: attempt 3 waits two minutes after attempt 2 ended.
    assert runs[2]["keel.run/not-before"] == fire + 180 * US
    env.advance(119)
    s.tick(env.ledger)
    drain(s)
    assert env.runs("flaky")[2]["keel.run/outcome"] == "pending"
    env.advance(1)
    s.tick(env.ledger)
    drain(s)
    env.advance(3600)
    s.tick(env.ledger)
    drain(s)
    runs = env.runs("flaky")
    assert summary(runs) == [
        ("2026-02-03T00:00:00Z", "failed", "schedule", 1),
        ("2026-02-03T00:00:00Z", "failed", "retry", 2),
        ("2026-02-03T00:00:00Z", "failed", "retry", 3),
    ]
    assert [r["keel.run/error"] for r in runs] == ["exit status 1"] * 3
    assert [r["keel.run/artifact"] for r in runs] == [b"no\n"] * 3


def test_retry_that_succeeds_stops_retrying(env, tmp_path):
    marker = tmp_path / "tried"
    env.at("2026-02-02T00:00:00Z")
    env.add(
        name="second-time",
        schedule="every 1d",
        run=sh(f"test -f {marker} || {{ touch {marker}; exit 1; }}"),
        retries=3,
        backoff="10s",
    )
    s = env.scheduler()
    s.tick(env.ledger)
    env.at("2026-02-03T00:00:00Z")
    s.tick(env.ledger)
    drain(s)
    env.advance(10)
    s.tick(env.ledger)
    drain(s)
    env.advance(3600)
    s.tick(env.ledger)
    drain(s)
    assert summary(env.runs("second-time")) == [
        ("2026-02-03T00:00:00Z", "failed", "schedule", 1),
        ("2026-02-03T00:00:00Z", "ok", "retry", 2),
    ]


# -- pause / resume ----------------------------------------------------------------------------


def test_paused_fires_are_not_run(env):
    env.at("2026-02-02T00:00:00Z")
    env.add(name="hourly", schedule="every 1h", kind="probe", run="ok")
    s = env.scheduler()
    s.tick(env.ledger)
    env.advance(HOUR)
    s.tick(env.ledger)
    drain(s)
    set_paused(env.ledger, "hourly", True)
    assert get_job(env.ledger, "hourly")[1]["keel.job/paused"] is True
    assert s.next_fires(env.ledger)[0]["paused"] is True
    for _ in range(3):  # 02:00, 03:00, 04:00 fall while paused
        env.advance(HOUR)
        s.tick(env.ledger)
        drain(s)
    assert summary(env.runs("hourly")) == [("2026-02-02T01:00:00Z", "ok", "schedule", 1)]
    env.advance(HOUR / 2)  # resume at 04:30
    set_paused(env.ledger, "hourly", False)
    s.tick(env.ledger)
    drain(s)
    env.at("2026-02-02T05:00:00Z")
    s.tick(env.ledger)
    drain(s)
    ran = [
        (iso(r["keel.run/scheduled"]), r["keel.run/trigger"])
        for r in env.runs("hourly")
        if r["keel.run/outcome"] in EXECUTED
    ]
    # Nothing that fell while the job was paused runs, not even as a catch-up on resume.
    assert ran == [("2026-02-02T01:00:00Z", "schedule"), ("2026-02-02T05:00:00Z", "schedule")]


# -- exactly once ------------------------------------------------------------------------------


def _exactly_once_jobs(env: Env, log) -> None:
    env.add(name="ten", schedule="every 10m", run=sh(f"echo ten >> {log}"), overlap="allow")
    env.add(
        name="quarter",
        schedule="*/15 * * * *",
        tz="America/New_York",
        run=sh(f"echo quarter >> {log}"),
        overlap="allow",
    )
    env.add(name="probe", schedule="every 5m", kind="probe", run="ok", overlap="allow")


GAP_AT, STEP, LATE = 20, 293, 300  # 40 steps of 4 min 53 s; before step 20 both are down 2 h


def _check_exactly_once(env: Env, log, t0: int, nodes: bool) -> None:
    """Every fire claimed once; every execution once (the log counts executions)."""
    gap_start = t0 + GAP_AT * STEP * US
    gap_end = gap_start + (2 * HOUR + STEP - LATE) * US  # older than late_after: missed
    lines = log.read_text().split()
    for job in ("ten", "quarter", "probe"):
        spec, _ = get_job(env.ledger, job)
        fires = fires_between(spec.parsed_schedule(), t0, env.clock.now())
        runs = env.runs(job)
        scheduled = [r["keel.run/scheduled"] for r in runs if r["keel.run/trigger"] == "schedule"]
        assert scheduled == fires, job
        missed = [f for f in fires if gap_start < f < gap_end]
        assert missed, job
        assert [r["keel.run/scheduled"] for r in runs if r["keel.run/outcome"] == "missed"] == (
            missed
        ), job
        catch = [r["keel.run/scheduled"] for r in runs if r["keel.run/trigger"] == "catch-up"]
        assert catch == missed[-1:], job
        executed = [r for r in runs if r["keel.run/outcome"] != "missed"]
        assert {r["keel.run/outcome"] for r in executed} == {"ok"}, job
        assert len(executed) == len(fires) - len(missed) + len(catch), job
        if job != "probe":
            assert lines.count(job) == len(executed), job
    if nodes:
        ran = {r.get("keel.run/node") for r in env.runs() if r["keel.run/outcome"] == "ok"}
        assert ran == {"node-a:1", "node-b:2"}


def test_two_schedulers_interleaved_run_each_fire_once(env, tmp_path):
    log = tmp_path / "fires.log"
    t0 = utc("2026-02-02T00:00:00Z")
    env.clock.set(t0)
    _exactly_once_jobs(env, log)
    a = env.scheduler(node="node-a:1", late_after=LATE)
    b = env.scheduler(node="node-b:2", late_after=LATE)
    with env.open() as la, env.open() as lb:
        pair = [(a, la), (b, lb)]
        for step in range(40):
            if step == GAP_AT:
                env.advance(2 * HOUR)
            env.advance(STEP)
            for s, led in pair if step % 2 else pair[::-1]:
                s.tick(led)
                s.tick(led)
            drain(a, b)
    _check_exactly_once(env, log, t0, nodes=True)


def test_two_schedulers_in_threads_run_each_fire_once(env, tmp_path):
    log = tmp_path / "fires.log"
    t0 = utc("2026-02-02T00:00:00Z")
    env.clock.set(t0)
    _exactly_once_jobs(env, log)
    a = env.scheduler(node="node-a:1", late_after=LATE)
    b = env.scheduler(node="node-b:2", late_after=LATE)
    steps = 40
    go, done = threading.Barrier(3, timeout=60), threading.Barrier(3, timeout=60)
    errors: list[BaseException] = []

    def worker(s: Scheduler) -> None:
        with env.open() as led:
            for _ in range(steps):
                go.wait()
                try:
                    s.tick(led)
                    s.tick(led)
                except Exception as exc:
                    errors.append(exc)
                finally:
                    done.wait()

    threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for step in range(steps):
        if step == GAP_AT:
            env.advance(2 * HOUR)
        env.advance(STEP)
        go.wait()
        done.wait()
        drain(a, b)
    for t in threads:
        t.join(30)
    assert errors == []
    _check_exactly_once(env, log, t0, nodes=False)


# -- recovery ----------------------------------------------------------------------------------


def test_recover_marks_dead_runs_interrupted_and_retries(env):
    env.at("2026-02-02T00:00:00Z")
    env.add(name="flaky", schedule="every 1d", run="echo again", retries=1, backoff="1h")
    env.add(name="noretry", schedule="every 1d", run="echo never", retries=0)
    env.add(name="alive", schedule="every 1d", run="echo x")
    env.add(name="remote", schedule="every 1d", run="echo x")
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    fire = utc("2026-02-01T23:00:00Z")
    started = utc("2026-02-01T23:00:01Z")
    ops = []
    for job, node in [
        ("flaky", f"{host}:{dead.pid}"),
        ("noretry", f"{host}:{dead.pid}"),
        ("alive", f"{host}:{os.getppid()}"),  # its daemon still lives
        ("remote", f"elsewhere.example:{dead.pid}"),  # another host's business
    ]:
        ops += new_run(
            run_key(job, fire), job, fire, "running", "schedule", started=started, node=node
        )
    env.ledger.transact(ops, reason="runs left by a daemon that died")
    s = env.scheduler()
    recovered = s.recover(env.ledger)
    assert sorted(recovered) == sorted([run_key("flaky", fire), run_key("noretry", fire)])
    assert s.recover(env.ledger) == []  # nothing left to recover
    for job in ("flaky", "noretry"):
        first = env.runs(job)[0]
        assert first["keel.run/outcome"] == "interrupted"
        assert str(dead.pid) in first["keel.run/error"]
        assert first["keel.run/ended"] == utc("2026-02-02T00:00:00Z")
    assert [r["keel.run/outcome"] for r in env.runs("alive")] == ["running"]
    assert [r["keel.run/outcome"] for r in env.runs("remote")] == ["running"]
    # The retry of an interrupted run is due at once (no backoff).
    assert summary(env.runs("flaky")) == [
        ("2026-02-01T23:00:00Z", "interrupted", "schedule", 1),
        ("2026-02-01T23:00:00Z", "pending", "retry", 2),
    ]
    assert env.runs("flaky")[1]["keel.run/not-before"] == utc("2026-02-02T00:00:00Z")
    s.tick(env.ledger)
    drain(s)
    flaky = env.runs("flaky")
    assert summary(flaky) == [
        ("2026-02-01T23:00:00Z", "interrupted", "schedule", 1),
        ("2026-02-01T23:00:00Z", "ok", "retry", 2),
    ]
    assert flaky[1]["keel.run/artifact"] == b"again\n"
    assert summary(env.runs("noretry")) == [("2026-02-01T23:00:00Z", "interrupted", "schedule", 1)]


# -- canon -------------------------------------------------------------------------------------

CANON = """
[[job]]
name = "daily-probe"
schedule = "0 6 * * *"
tz = "Europe/Berlin"
kind = "probe"
run = "ledger"

[[job]]
name = "backup"
schedule = "every 6h"
run = "echo backup"
timeout = "10m"
retries = 2
backoff = "5m"
overlap = "queue"
catch_up = "all"
catch_up_window = "12h"
active_hours = "08:00-22:00"
"""


def test_sync_canon_is_idempotent(env, tmp_path):
    path = tmp_path / "cadence.toml"
    path.write_text(CANON)
    kinds = set(KINDS)
    assert sorted(sync_canon(env.ledger, path, kinds)) == ["backup", "daily-probe"]
    jobs = load_jobs(env.ledger)
    assert set(jobs) == {"backup", "daily-probe"}
    backup, values = jobs["backup"]
    assert values["keel.job/source"] == "canon" and values["keel.job/paused"] is False
    assert (backup.timeout, backup.backoff, backup.catch_up_window) == (600, 300, 43200)
    assert (backup.retries, backup.overlap, backup.catch_up) == (2, "queue", "all")
    assert jobs["daily-probe"][0].parsed_schedule().tz == "Europe/Berlin"
    head = env.head()
    assert sync_canon(env.ledger, path, kinds) == []
    assert env.head() == head
    # A change to one job changes that job only, and keeps its paused state.
    set_paused(env.ledger, "backup", True)
    path.write_text(CANON.replace('"every 6h"', '"every 4h"'))
    assert sync_canon(env.ledger, path, kinds) == ["backup"]
    backup, values = get_job(env.ledger, "backup")
    assert backup.schedule == "every 4h" and values["keel.job/paused"] is True
    assert read_canon(tmp_path / "missing.toml", kinds) == []


def test_a_job_without_tz_runs_in_the_callers_default_zone(env):
    job = {"name": "standup", "schedule": "0 9 * * 1-5", "kind": "probe", "run": "ok"}
    spec = parse_job(job, set(KINDS), default_tz="America/New_York")
    assert spec.tz == "America/New_York"
    assert spec.model_dump()["tz"] == "America/New_York"  # stored, not implied
    # Monday 2026-01-05 09:00 EST.
    assert iso(spec.parsed_schedule().next_after(START)) == "2026-01-05T14:00:00Z"
    # An explicit zone wins over the default; a null one is no zone.
    explicit = parse_job({**job, "tz": "Asia/Tokyo"}, set(KINDS), default_tz="America/New_York")
    assert explicit.tz == "Asia/Tokyo"
    assert parse_job({**job, "tz": None}, set(KINDS), default_tz="Europe/Berlin").tz == (
        "Europe/Berlin"
    )
    assert parse_job(job, set(KINDS)).tz == "UTC"
    # The stored spec keeps its zone whatever the next caller's default is.
    save_job(env.ledger, spec)
    stored, _ = get_job(env.ledger, "standup")
    assert stored.tz == "America/New_York"
    assert [j["next"] for j in env.scheduler().next_fires(env.ledger)] == ["2026-01-05T14:00:00Z"]


@pytest.mark.parametrize(
    "job, default_tz, message",
    [
        ({"tz": "Nowhere/City"}, "UTC", "job tz: 'Nowhere/City' is not a known time zone"),
        ({"tz": ""}, "UTC", "job tz: '' is not a known time zone"),
        ({}, "Mars/Olympus_Mons", "job tz: 'Mars/Olympus_Mons' is not a known time zone"),
    ],
)
def test_an_unknown_zone_is_one_sentence(job, default_tz, message):
    data = {"name": "j", "schedule": "0 9 * * *", "run": "true", **job}
    with pytest.raises(BadInput) as err:
        parse_job(data, set(KINDS), default_tz=default_tz)
    assert str(err.value) == message


def test_canon_jobs_take_the_home_zone_once(env, tmp_path):
    """A canon job without `tz` takes the default zone when it is first synced and keeps
    it when the home's zone changes later; an explicit `tz` always wins."""
    path = tmp_path / "cadence.toml"
    path.write_text(CANON)
    kinds = set(KINDS)
    specs = {s.name: s for s in read_canon(path, kinds, default_tz="America/New_York")}
    assert (specs["backup"].tz, specs["daily-probe"].tz) == ("America/New_York", "Europe/Berlin")

    assert sorted(sync_canon(env.ledger, path, kinds, default_tz="America/New_York")) == [
        "backup",
        "daily-probe",
    ]
    zones = {name: spec.tz for name, (spec, _) in load_jobs(env.ledger).items()}
    assert zones == {"backup": "America/New_York", "daily-probe": "Europe/Berlin"}

    # The home moves to Tokyo: nothing that exists moves with it.
    head = env.head()
    assert sync_canon(env.ledger, path, kinds, default_tz="Asia/Tokyo") == []
    assert env.head() == head
    # A job new to the canon takes the new zone; an edited job keeps its own.
    path.write_text(
        CANON.replace('"every 6h"', '"every 4h"')
        + '\n[[job]]\nname = "tea"\nschedule = "0 15 * * *"\nkind = "probe"\nrun = "ok"\n'
    )
    assert sorted(sync_canon(env.ledger, path, kinds, default_tz="Asia/Tokyo")) == [
        "backup",
        "tea",
    ]
    zones = {name: spec.tz for name, (spec, _) in load_jobs(env.ledger).items()}
    assert zones == {
        "backup": "America/New_York",
        "daily-probe": "Europe/Berlin",
        "tea": "Asia/Tokyo",
    }
    # Writing `tz` is how a job moves.
    path.write_text(CANON.replace('name = "backup"', 'name = "backup"\ntz = "Asia/Tokyo"'))
    assert sync_canon(env.ledger, path, kinds, default_tz="UTC") == ["backup"]
    assert get_job(env.ledger, "backup")[0].tz == "Asia/Tokyo"


BAD_CANONS = [
    "[[job]\nname = 'x'",  # not TOML
    "job = 'x'",  # not tables
    CANON + '\n[[job]]\nname = "backup"\nschedule = "every 1h"\nrun = "true"\n',  # twice
    CANON + '\n[[job]]\nname = "bad"\nschedule = "0 9 * * * *"\nrun = "true"\n',
    CANON + '\n[[job]]\nname = "bad"\nschedule = "every 1h"\nkind = "teleport"\n',
    CANON + '\n[[job]]\nname = "bad"\nschedule = "every 1h"\noverlap = "sometimes"\n',
    CANON + '\n[[job]]\nname = "bad"\nschedule = "every 1h"\nactive_hours = "9-5"\n',
]


@pytest.mark.parametrize("text", BAD_CANONS)
def test_bad_canon_is_refused_and_stores_nothing(env, tmp_path, text):
    path = tmp_path / "cadence.toml"
    path.write_text(text)
    head = env.head()
    with pytest.raises(BadInput):
        sync_canon(env.ledger, path, set(KINDS))
    assert env.head() == head
    assert load_jobs(env.ledger) == {}


def test_bad_canon_on_a_fresh_ledger_changes_nothing(target, operator, tmp_path):
    """A bad canon file is refused before anything, even the cadence schema, is written."""
    clock = ManualClock(START)
    with Ledger.open(target, signer=operator, clock=clock.now) as led:
        led.register_identity("operator", operator.public_key, "operator")
        head = led.store.head()[0]
        path = tmp_path / "cadence.toml"
        path.write_text(BAD_CANONS[3])
        with pytest.raises(BadInput):
            sync_canon(led, path, set(KINDS))
        assert led.store.head()[0] == head
