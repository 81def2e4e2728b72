"""Leases on running runs, on both stores: a node that stops renewing (dead, cut off,
paused) loses its runs to any live node once the lease lapses; the old holder is fenced
and never records over the reclaim; two reclaimers reclaim once. And what a job's command
is told about its run (KEEL_RUN, KEEL_SCHEDULED, KEEL_ATTEMPT).

Node A "dies" by never beating its heartbeat (the tests call ticks and heartbeats by
hand, on a ManualClock), so its lease lapses as the clock moves.
"""

from __future__ import annotations

import threading
import time

import pytest
from test_cadence import Env, drain, summary, utc

from conftest import sh, wait_for
from keel.cadence.jobs import parse_job, save_job
from keel.cadence.kinds import KINDS, Outcome
from keel.cadence.runs import new_run, run_entity, run_key
from keel.cadence.scheduler import Scheduler
from keel.ledger import BadInput

LEASE = 30.0


@pytest.fixture
def env(target, operator):
    e = Env(target, operator)
    yield e
    e.close()


class Gate:
    """A kind whose runs wait until the test opens the gate: a run held as long as needed."""

    def __init__(self):
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, spec, ctx) -> Outcome:
        self.entered.release()
        self.open.wait(30)
        return Outcome("ok", f"{ctx.run} done\n".encode())


def gated(env: Env, gate: Gate, node: str) -> Scheduler:
    return env.scheduler(node=node, kinds={**KINDS, "gate": gate}, lease=LEASE)


def add_gated(env: Env, **job) -> None:
    save_job(env.ledger, parse_job({"kind": "gate", "run": "x", **job}, {*KINDS, "gate"}))


def test_a_lapsed_lease_is_reclaimed_by_another_node_and_the_holder_is_fenced(env):
    gate_a, gate_b = Gate(), Gate()
    env.at("2026-02-02T00:00:30Z")
    add_gated(env, name="long", schedule="every 1m", retries=1, overlap="skip")
    a, b = gated(env, gate_a, "node-a:1"), gated(env, gate_b, "node-b:2")
    a.tick(env.ledger)
    env.at("2026-02-02T00:01:00Z")
    a.tick(env.ledger)
    assert gate_a.entered.acquire(timeout=10)
    key = run_key("long", utc("2026-02-02T00:01:00Z"))
    claimed = env.ledger.view().get(run_entity(key))
    assert claimed["keel.run/node"] == "node-a:1" and claimed["keel.run/lease-gen"] == 1
    assert claimed["keel.run/lease-until"] == utc("2026-02-02T00:01:30Z")
    # While the lease is live, nobody reclaims it.
    env.at("2026-02-02T00:01:30Z")
    assert b.reclaim(env.ledger) == []
    # A stops beating (it died); once its lease lapses B's tick reclaims the run, retries
    # it, and the 00:02 fire is admitted, not skipped as an overlap with a dead run.
    env.at("2026-02-02T00:02:00Z")
    b.tick(env.ledger)
    first = env.ledger.view().get(run_entity(key))
    assert first["keel.run/outcome"] == "interrupted"
    assert "node-a:1" in first["keel.run/error"] and "node-b:2" in first["keel.run/error"]
    assert first["keel.run/lease-gen"] == 2
    assert summary(env.runs("long")) == [
        ("2026-02-02T00:01:00Z", "interrupted", "schedule", 1),
        ("2026-02-02T00:01:00Z", "pending", "retry", 2),  # waits: B runs the 00:02 fire
        ("2026-02-02T00:02:00Z", "running", "schedule", 1),
    ]
    assert env.runs(outcome="running")[0]["keel.run/node"] == "node-b:2"
    # A wakes up and its run ends: its outcome is refused and nothing is written.
    head = env.head()
    gate_a.open.set()
    drain(a)
    assert env.head() == head
    assert env.ledger.view().get(run_entity(key))["keel.run/outcome"] == "interrupted"
    assert not a.in_flight["long"] and not a.leases
    gate_b.open.set()
    drain(b)
    b.tick(env.ledger)  # now the retry runs
    drain(b)
    assert summary(env.runs("long")) == [
        ("2026-02-02T00:01:00Z", "interrupted", "schedule", 1),
        ("2026-02-02T00:01:00Z", "ok", "retry", 2),
        ("2026-02-02T00:02:00Z", "ok", "schedule", 1),
    ]


def test_a_holder_that_loses_its_lease_kills_its_command_and_records_nothing(env, tmp_path):
    pid_file = tmp_path / "pid"
    env.at("2026-02-02T00:00:30Z")
    env.add(name="long", schedule="every 1m", run=sh(f"echo $$ > {pid_file}; exec sleep 30"))
    a = env.scheduler(node="node-a:1", lease=LEASE)
    b = env.scheduler(node="node-b:2", lease=LEASE)
    a.tick(env.ledger)
    env.at("2026-02-02T00:01:00Z")
    a.tick(env.ledger)
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    # A beats while its lease is live: the generation moves, and the record will expect it.
    env.at("2026-02-02T00:01:20Z")
    assert a.heartbeat(env.ledger) == []
    key = run_key("long", utc("2026-02-02T00:01:00Z"))
    renewed = env.ledger.view().get(run_entity(key))
    assert renewed["keel.run/lease-gen"] == 2
    assert renewed["keel.run/lease-until"] == utc("2026-02-02T00:01:50Z")
    env.at("2026-02-02T00:01:51Z")
    assert b.reclaim(env.ledger) == [key]
    head = env.head()
    began = time.monotonic()
    assert a.heartbeat(env.ledger) == [key]  # fenced: the command is killed at once
    drain(a)
    assert time.monotonic() - began < 5, "the fenced command was not killed"
    assert env.head() == head
    run = env.ledger.view().get(run_entity(key))
    assert run["keel.run/outcome"] == "interrupted" and "node-a:1" in run["keel.run/error"]


def test_two_reclaimers_reclaim_once(env):
    env.at("2026-02-02T00:00:00Z")
    env.add(name="job", schedule="every 1d", run="echo x", retries=3)
    fires = [utc(f"2026-02-01T{h:02d}:00:00Z") for h in range(8)]
    ops = []
    for f in fires:
        ops += new_run(
            run_key("job", f),
            "job",
            f,
            "running",
            "schedule",
            started=f,
            node="gone.example:7",
            lease_until=f + int(LEASE * 1e6),
            lease_gen=1,
        )
    env.ledger.transact(ops, reason="runs of a node that vanished")
    b = env.scheduler(node="node-b:2", lease=LEASE)
    c = env.scheduler(node="node-c:3", lease=LEASE)
    go = threading.Barrier(2, timeout=30)
    won: dict[str, list[str]] = {}

    def reclaim(s: Scheduler) -> None:
        with env.open() as led:
            go.wait()
            won[s.node] = s.reclaim(led)

    threads = [threading.Thread(target=reclaim, args=(s,)) for s in (b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    keys = won["node-b:2"] + won["node-c:3"]
    assert sorted(keys) == sorted(run_key("job", f) for f in fires)  # each once
    runs = env.runs("job")
    assert {r["keel.run/outcome"] for r in runs if r["keel.run/attempt"] == 1} == {"interrupted"}
    retries = [r for r in runs if r["keel.run/trigger"] == "retry"]
    assert sorted(r["keel.run/scheduled"] for r in retries) == fires  # one retry per run
    assert all("gone.example:7" in r["keel.run/error"] for r in runs if "keel.run/error" in r)


def test_a_job_is_told_its_run_fire_and_attempt(env):
    env.at("2026-02-02T00:30:00Z")
    env.add(
        name="told",
        schedule="every 1h",
        run=sh('echo "$KEEL_JOB|$KEEL_RUN|$KEEL_SCHEDULED|$KEEL_ATTEMPT"; [ "$KEEL_ATTEMPT" = 2 ]'),
        retries=1,
        backoff="1s",
    )
    s = env.scheduler()
    s.tick(env.ledger)
    env.at("2026-02-02T01:00:00Z")
    s.tick(env.ledger)
    drain(s)
    env.advance(1)
    s.tick(env.ledger)
    drain(s)
    first, retry = env.runs("told")
    key = run_key("told", utc("2026-02-02T01:00:00Z"))
    assert first["keel.run/outcome"] == "failed"
    assert first["keel.run/artifact"] == f"told|{key}|2026-02-02T01:00:00Z|1\n".encode()
    assert retry["keel.run/outcome"] == "ok"
    assert retry["keel.run/artifact"] == f"told|{key}#2|2026-02-02T01:00:00Z|2\n".encode()


def test_a_lease_must_be_positive(env):
    with pytest.raises(BadInput, match="lease must be longer than 0 seconds"):
        env.scheduler(lease=0)


def test_a_run_lost_while_it_waited_for_a_worker_never_starts(env):
    gate = Gate()
    env.at("2026-02-02T00:00:30Z")
    add_gated(env, name="wide", schedule="every 1m", overlap="allow")
    a = env.scheduler(node="node-a:1", kinds={**KINDS, "gate": gate}, lease=LEASE, workers=1)
    b = gated(env, Gate(), "node-b:2")
    a.tick(env.ledger)
    env.at("2026-02-02T00:02:00Z")
    a.tick(env.ledger)  # two fires claimed; one worker: the second waits
    assert gate.entered.acquire(timeout=10)
    env.at("2026-02-02T00:03:00Z")
    assert len(b.reclaim(env.ledger)) == 2
    assert len(a.heartbeat(env.ledger)) == 2
    head = env.head()
    gate.open.set()
    drain(a)
    assert env.head() == head
    assert not gate.entered.acquire(timeout=0.5), "a run lost while queued was started"
    assert {r["keel.run/outcome"] for r in env.runs("wide")} == {"interrupted"}
