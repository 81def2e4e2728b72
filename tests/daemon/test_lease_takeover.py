"""Leases between real daemons on one PostgreSQL ledger (real time, a 2 s lease): a node
killed with kill -9 while it holds a run loses it to the other node within two leases, and
its command dies with it; a node paused with SIGSTOP past its lease, then resumed, does
not record over the run the other node reclaimed."""

from __future__ import annotations

import os
import re
import signal
import time
from itertools import pairwise
from pathlib import Path

from conftest import keel, start_daemon, stop_daemon, wait_until
from keel.cadence.runs import run_entity, runs_of
from keel.ledger import Ledger

LEASE = 2.0


def two_nodes(tmp_path: Path, pg_dsn: str, cadence: str) -> tuple[Path, Path]:
    """Two homes on one PostgreSQL ledger: the second joined as a node with a key of its
    own, approved by the operator (`keel node join`, `keel node approve`). Both lease
    their runs for LEASE seconds."""
    first = tmp_path / "node1"
    keel("init", env={"KEEL_HOME": str(first), "KEEL_DB": pg_dsn}, check=True)
    (first / "canon").mkdir(parents=True, exist_ok=True)
    (first / "canon" / "cadence.toml").write_text(cadence)
    keel("cadence", "sync", env={"KEEL_HOME": str(first), "KEEL_DB": ""}, check=True)
    second = join(first, tmp_path / "node2", pg_dsn)
    with (first / "config.toml").open("a") as f:
        f.write(f'\n[cadence]\nlease = "{LEASE:g}s"\n')
    return first, second


def join(first: Path, home: Path, pg_dsn: str) -> Path:
    """A node joined from a clean home, approved on `first`, leasing for LEASE seconds."""
    name = home.name
    asked = keel("node", "join", pg_dsn, "--name", name, env={"KEEL_HOME": str(home)})
    key = re.search(rf"keel node approve {name} ([0-9a-f]{{64}})", asked.stdout)[1]
    keel("node", "approve", name, key, env={"KEEL_HOME": str(first)}, check=True)
    with (home / "config.toml").open("a") as f:
        f.write(f'\n[cadence]\nlease = "{LEASE:g}s"\n')
    return home


def runs(dsn: str, job: str) -> list[dict]:
    with Ledger.open(dsn) as ledger:
        return runs_of(ledger, job)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its reaper does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def child_of(log: Path, key: str) -> int:
    """The pid of run `key`'s command, as it wrote it to the log."""
    return int(next(ln for ln in log.read_text().splitlines() if ln.startswith(key)).split()[1])


def holder(procs, values: dict):
    pid = int(values["keel.run/node"].rpartition(":")[2])
    return next(p for p in procs if p.pid == pid)


def test_kill_9_of_the_holder_hands_its_job_to_the_other_node(tmp_path, pg_dsn):
    log = tmp_path / "log"
    cadence = f"""
[[job]]
name = "slow"
schedule = "every 5s"
kind = "command"
run = "/bin/sh -c 'echo $KEEL_RUN $$ >> {log}; exec sleep 3'"
retries = 1
overlap = "skip"
"""
    homes = two_nodes(tmp_path, pg_dsn, cadence)
    procs = [start_daemon(h, extra_env={"KEEL_DB": pg_dsn})[0] for h in homes]
    try:
        (held,) = wait_until(
            lambda: [r for r in runs(pg_dsn, "slow") if r["keel.run/outcome"] == "running"]
        )
        key = held["keel.run/key"]
        wait_until(lambda: log.exists() and key in log.read_text())
        child = child_of(log, key)
        victim = holder(procs, held)
        victim.kill()  # SIGKILL: no chance to record anything
        died = time.monotonic()
        victim.wait()
        wait_until(lambda: not alive(child), timeout=2)  # the command died with its daemon
        child_gone = time.monotonic() - died
        wait_until(lambda: _outcome(pg_dsn, key) == "interrupted", timeout=4 * LEASE)
        takeover = time.monotonic() - died
        print(
            f"\ntakeover after kill -9: {takeover:.2f}s (lease {LEASE:g}s); child gone in "
            f"{child_gone:.2f}s"
        )
        assert takeover <= 2 * LEASE
        survivor = next(p for p in procs if p is not victim)
        # Later fires run, once each, on the survivor.
        wait_until(
            lambda: (
                len(
                    [
                        r
                        for r in runs(pg_dsn, "slow")
                        if r["keel.run/outcome"] == "ok" and r["keel.run/trigger"] == "schedule"
                    ]
                )
                >= 2
            ),
            timeout=30,
        )
    finally:
        for p in procs:
            stop_daemon(p)
    rows = runs(pg_dsn, "slow")
    assert not [r for r in rows if r["keel.run/outcome"] in ("running", "pending")]
    reclaimed = next(r for r in rows if r["keel.run/key"] == key)
    assert reclaimed["keel.run/node"] in reclaimed["keel.run/error"]
    assert f":{survivor.pid}" in reclaimed["keel.run/error"]
    scheduled = [r["keel.run/scheduled"] for r in rows if r["keel.run/trigger"] == "schedule"]
    assert len(scheduled) == len(set(scheduled)), "a fire was claimed twice"
    executed = [ln.split()[0] for ln in log.read_text().splitlines()]
    assert len(executed) == len(set(executed)), "a run executed twice"
    ran = {r["keel.run/key"] for r in rows if r["keel.run/outcome"] in ("ok", "interrupted")}
    assert set(executed) == ran
    later = [r for r in rows if r["keel.run/scheduled"] > reclaimed["keel.run/scheduled"]]
    assert {r["keel.run/node"] for r in later if r["keel.run/outcome"] == "ok"} == {
        reclaimed["keel.run/error"].split()[-1]
    }


def _outcome(dsn: str, key: str) -> str | None:
    with Ledger.open(dsn) as ledger:
        return (ledger.view().get(run_entity(key)) or {}).get("keel.run/outcome")


def test_a_paused_holder_does_not_record_over_the_reclaim(tmp_path, pg_dsn):
    log = tmp_path / "log"
    cadence = f"""
[[job]]
name = "slow"
schedule = "every 5s"
kind = "command"
run = "/bin/sh -c 'echo $KEEL_RUN $$ >> {log}; exec sleep 8'"
overlap = "skip"
"""
    homes = two_nodes(tmp_path, pg_dsn, cadence)
    procs = [start_daemon(h, extra_env={"KEEL_DB": pg_dsn})[0] for h in homes]
    outputs = {}
    try:
        (held,) = wait_until(
            lambda: [r for r in runs(pg_dsn, "slow") if r["keel.run/outcome"] == "running"]
        )
        key = held["keel.run/key"]
        wait_until(lambda: log.exists() and key in log.read_text())
        child = child_of(log, key)
        paused = holder(procs, held)
        paused.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: _outcome(pg_dsn, key) == "interrupted", timeout=4 * LEASE)
        finally:
            paused.send_signal(signal.SIGCONT)
        # On waking, its renewal fails: it kills its command and records nothing.
        wait_until(lambda: not alive(child), timeout=2 * LEASE)
        time.sleep(LEASE)  # room for a wrongful record, were there one
    finally:
        for p in procs:
            outputs[p.pid] = stop_daemon(p)
    with Ledger.open(pg_dsn) as ledger:
        history = [d["v"] for d in ledger.view().history(run_entity(key), "keel.run/outcome")]
    assert history == ["running", "interrupted"], history
    assert "lost its lease" in outputs[paused.pid], outputs[paused.pid]
    assert os.path.exists(log)


def test_three_nodes_run_each_fire_once_when_one_dies_between_runs(tmp_path, pg_dsn):
    """Three nodes schedule one job every 2 s; one is killed with kill -9 between runs.
    Every fire is claimed once — no duplicate, no gap — and nothing stays running."""
    log = tmp_path / "log"
    cadence = f"""
[[job]]
name = "tick"
schedule = "every 2s"
kind = "command"
run = "/bin/sh -c 'echo $KEEL_RUN >> {log}'"
catch_up = "skip"
"""
    first, second = two_nodes(tmp_path, pg_dsn, cadence)
    homes = [first, second, join(first, tmp_path / "node3", pg_dsn)]
    procs = [start_daemon(h, extra_env={"KEEL_DB": pg_dsn})[0] for h in homes]

    def done() -> list[dict]:
        return [r for r in runs(pg_dsn, "tick") if r["keel.run/outcome"] == "ok"]

    try:
        wait_until(lambda: len(done()) >= 4, timeout=60)
        wait_until(
            lambda: not [r for r in runs(pg_dsn, "tick") if r["keel.run/outcome"] == "running"]
        )
        procs[2].kill()  # between runs
        procs[2].wait()
        before = len(done())
        wait_until(lambda: len(done()) >= before + 4, timeout=60)
    finally:
        for p in procs:
            stop_daemon(p)
    rows = [r for r in runs(pg_dsn, "tick") if r["keel.run/trigger"] == "schedule"]
    assert not [r for r in rows if r["keel.run/outcome"] in ("running", "pending")]
    scheduled = sorted(r["keel.run/scheduled"] for r in rows)
    assert len(scheduled) == len(set(scheduled)), "a fire was claimed twice"
    gaps = {b - a for a, b in pairwise(scheduled)}
    assert gaps == {2_000_000}, f"fires are not every 2 s: {sorted(gaps)}"
    executed = log.read_text().split()
    assert len(executed) == len(set(executed)), "a run executed twice"


def test_two_nodes_under_a_fast_clock_share_one_time_and_each_fire(tmp_path, pg_dsn):
    """Two nodes on one fast clock (3,600×, started at one real instant for both), an
    hourly job, one node killed with kill -9: a day's fires in seconds, each claimed once,
    none skipped, nothing left running."""
    log = tmp_path / "log"
    cadence = f"""
[[job]]
name = "hourly"
schedule = "every 1h"
kind = "command"
run = "/bin/sh -c 'echo $KEEL_RUN >> {log}'"
catch_up = "skip"
"""
    homes = two_nodes(tmp_path, pg_dsn, cadence)  # a lease is real time: 2 s is 2 h here
    clock = f"2027-06-01T00:00:00Z@3600@{time.time() + 2:.3f}"
    procs = [start_daemon(h, clock=clock, extra_env={"KEEL_DB": pg_dsn})[0] for h in homes]

    def fired() -> list[dict]:
        return [r for r in runs(pg_dsn, "hourly") if r["keel.run/trigger"] == "schedule"]

    try:
        wait_until(lambda: len(fired()) >= 6, timeout=60)
        procs[1].kill()
        procs[1].wait()
        before = len(fired())
        wait_until(lambda: len(fired()) >= before + 6, timeout=60)
    finally:
        for p in procs:
            stop_daemon(p)
    rows = fired()
    assert not [r for r in rows if r["keel.run/outcome"] in ("running", "pending")]
    scheduled = sorted(r["keel.run/scheduled"] for r in rows)
    assert len(scheduled) == len(set(scheduled)), "a fire was claimed twice"
    assert {b - a for a, b in pairwise(scheduled)} == {3_600_000_000}, "an hour was skipped"
    executed = log.read_text().split()
    assert len(executed) == len(set(executed)), "a run executed twice"
