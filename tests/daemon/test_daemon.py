"""`keel up` as a real process: one per home, clean shutdown, kill -9 recovery, missed fires,
an injected clock (KEEL_CLOCK) that travels through hours in seconds, and two daemons on one
PostgreSQL ledger where each fire runs exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import keel, sqlite_only, start_daemon, stop_daemon, wait_until
from keel.daemon.lock import read_holder
from keel.govern.home import Home


def api(home: Path, port: int, path: str, method: str = "GET", body=None):
    token = (home / "token").read_text().strip()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def runs(home: Path, job: str) -> list[dict]:
    proc = keel(
        "cadence",
        "history",
        job,
        "--json",
        "--limit",
        "1000",
        env={"KEEL_HOME": str(home)},
        check=True,
    )
    return json.loads(proc.stdout)


def write_cadence(home: Path, text: str) -> None:
    (home / "canon").mkdir(parents=True, exist_ok=True)
    (home / "canon" / "cadence.toml").write_text(text)


@sqlite_only
def test_up_on_a_fresh_home_status_and_clean_shutdown(home):
    path = home.path
    proc, port = start_daemon(path)
    try:
        status = api(path, port, "/status")
        assert status["running"] is True
        names = {j["name"] for j in status["jobs"]}
        assert {"probe.daily", "doctor.sweep"} <= names
        assert all(j["next"] for j in status["jobs"])
        # keel status talks to the running daemon.
        cli = json.loads(keel("status", "--json", env={"KEEL_HOME": str(path)}, check=True).stdout)
        assert cli["running"] is True and cli["node"] == status["node"]
        # A second daemon on the same home says who holds it and exits 75 (EX_TEMPFAIL),
        # the status a service manager is told not to restart on.
        second = keel("up", "--port", "0", env={"KEEL_HOME": str(path)})
        assert second.returncode == 75
        assert f"pid {proc.pid}" in second.stderr and "Traceback" not in second.stderr
        # The API needs the token.
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/status")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
    finally:
        out = stop_daemon(proc)
    assert proc.returncode == 0, out
    assert "keel is up" in out and "doctor.sweep" in out
    assert read_holder(path) is None
    offline = json.loads(keel("status", "--json", env={"KEEL_HOME": str(path)}, check=True).stdout)
    assert offline["running"] is False


@sqlite_only
def test_injected_clock_runs_hours_in_seconds_and_records_missed_fires(home):
    """An hourly job under a 3600x clock; then the daemon is down for five simulated hours."""
    path = home.path
    write_cadence(
        path,
        """
[[job]]
name = "hourly"
schedule = "every 1h"
kind = "command"
run = "echo tick"
catch_up = "once"
""",
    )
    proc, _port = start_daemon(path, clock="2027-06-01T00:00:00Z@3600")
    try:
        wait_until(
            lambda: len([r for r in runs(path, "hourly") if r["outcome"] == "ok"]) >= 3, timeout=90
        )
    finally:
        stop_daemon(proc)
    before = runs(path, "hourly")
    assert all(r["outcome"] in ("ok", "running") for r in before), [
        (r["scheduled"], r["outcome"], r.get("error")) for r in before
    ]
    last = max(r["scheduled"] for r in before)
    # Restart five simulated hours later: the fires in between were missed.
    restart = (datetime.fromisoformat(last) + timedelta(hours=5, minutes=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    proc, _port = start_daemon(path, clock=f"{restart}@1")
    try:
        after = wait_until(
            lambda: (
                (rs := runs(path, "hourly"))
                and any(r["trigger"] == "catch-up" and r["outcome"] == "ok" for r in rs)
                and rs
            ),
            timeout=60,
        )
    finally:
        stop_daemon(proc)
    missed = [r for r in after if r["outcome"] == "missed"]
    assert len(missed) == 5
    assert all(r["catch_up"] == "once" for r in missed)
    catch = [r for r in after if r["trigger"] == "catch-up"]
    assert len(catch) == 1 and catch[0]["scheduled"] == max(r["scheduled"] for r in missed)


def test_kill_9_during_a_run_marks_it_interrupted_and_retries(home):
    path = home.path
    marker = path / "started"
    write_cadence(
        path,
        f"""
[[job]]
name = "slow"
schedule = "every 1h"
kind = "command"
run = "/bin/sh -c 'echo $$ >> {marker}; sleep 30; echo done'"
retries = 1
timeout = "5m"
""",
    )
    proc, _port = start_daemon(path, clock="2027-06-01T00:59:58Z@1")
    try:
        wait_until(lambda: marker.exists(), timeout=60)
    finally:
        proc.kill()  # SIGKILL: no chance to record anything
        proc.wait()
    (running,) = [r for r in runs(path, "slow") if r["outcome"] == "running"]
    child = int(marker.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
    marker.unlink()
    proc, _port = start_daemon(path, clock="2027-06-01T01:00:30Z@1")
    try:
        rs = wait_until(
            lambda: (
                (rs := runs(path, "slow"))
                and any(r.get("trigger") == "retry" and r["outcome"] == "running" for r in rs)
                and rs
            ),
            timeout=60,
        )
    finally:
        out = stop_daemon(proc)
    assert proc.returncode == 0, out
    first = next(r for r in rs if r["key"] == running["key"])
    assert first["outcome"] == "interrupted"
    retry = next(r for r in rs if r.get("trigger") == "retry")
    assert retry["attempt"] == 2 and retry["scheduled"] == first["scheduled"]
    # The retry was running when we stopped the daemon: SIGTERM records it as interrupted
    # (its grace period is shorter than the 30 s sleep) rather than leaving it hanging.
    final = {r["key"]: r for r in runs(path, "slow")}
    assert final[retry["key"]]["outcome"] == "interrupted"
    assert len([r for r in final.values() if r["scheduled"] == first["scheduled"]]) == 2


@sqlite_only
def test_dst_spring_forward_in_a_real_daemon(home):
    """New York skips 02:00-03:00 on 2027-03-14: a 02:30 job runs once, at 03:30 EDT."""
    path = home.path
    write_cadence(
        path,
        """
[[job]]
name = "night"
schedule = "30 2 * * *"
tz = "America/New_York"
kind = "probe"
run = "ok"
""",
    )
    proc, _port = start_daemon(path, clock="2027-03-14T05:00:00Z@3600")
    try:
        rs = wait_until(
            lambda: [r for r in runs(path, "night") if r["outcome"] == "ok"], timeout=90
        )
    finally:
        stop_daemon(proc)
    assert [r["scheduled"] for r in rs] == ["2027-03-14T07:30:00Z"]


def test_service_install_and_uninstall(tmp_path, home):
    env = {"KEEL_HOME": str(home.path), "HOME": str(tmp_path / "user")}
    out = keel("service", "install", env=env, check=True).stdout
    unit = tmp_path / "user" / ".config" / "systemd" / "user" / "keel.service"
    text = unit.read_text()
    assert "-m keel up" in text and f"KEEL_HOME={home.path}" in text
    assert "systemctl --user" in out
    keel("service", "uninstall", env=env, check=True)
    assert not unit.exists()


def test_two_daemons_on_one_postgres_ledger_run_each_fire_once(tmp_path, pg_dsn):
    first = tmp_path / "node1"
    env = {"KEEL_HOME": str(first), "KEEL_DB": pg_dsn}
    keel("init", env=env, check=True)
    second = tmp_path / "node2"
    shutil.copytree(first, second, ignore=shutil.ignore_patterns("daemon.lock"))
    counter = tmp_path / "fires"
    cadence = f"""
[[job]]
name = "minutely"
schedule = "every 1m"
kind = "command"
run = "/bin/sh -c 'echo $KEEL_JOB >> {counter}'"
"""
    write_cadence(first, cadence)
    write_cadence(second, cadence)
    clock = "2027-06-01T00:00:00Z@60"
    procs = [
        start_daemon(h, clock=clock, extra_env={"KEEL_DB": pg_dsn})[0] for h in (first, second)
    ]
    try:
        wait_until(lambda: counter.exists() and len(counter.read_text().split()) >= 8, timeout=120)
    finally:
        for p in procs:
            stop_daemon(p)
    proc = keel(
        "cadence",
        "history",
        "minutely",
        "--json",
        "--limit",
        "10000",
        env={"KEEL_HOME": str(first), "KEEL_DB": pg_dsn},
        check=True,
    )
    rows = json.loads(proc.stdout)
    scheduled = [r["scheduled"] for r in rows if r.get("trigger") == "schedule"]
    assert len(scheduled) == len(set(scheduled)), "a fire was claimed twice"
    ran = [r for r in rows if r["outcome"] == "ok"]
    assert len(counter.read_text().split()) == len(ran)
    nodes = {r["node"] for r in ran}
    assert len(nodes) >= 1
    verify = keel("verify", env={"KEEL_HOME": str(first), "KEEL_DB": pg_dsn})
    assert verify.returncode == 0, verify.stderr


@sqlite_only
def test_doctor_exits_non_zero_while_findings_are_open(home):
    path = home.path
    env = {"KEEL_HOME": str(path)}
    keel(
        "cadence",
        "add",
        "never",
        "--schedule",
        "every 1h",
        "--probe",
        "fail",
        "--max-silence",
        "2h",
        env=env,
        check=True,
    )
    proc, _port = start_daemon(path, clock="2027-06-01T00:00:00Z@3600")
    try:
        wait_until(lambda: len(runs(path, "never")) >= 3, timeout=90)
    finally:
        stop_daemon(proc)
    doctor = keel("doctor", "--json", env={**env, "KEEL_CLOCK": "2027-06-01T06:00:00Z@1"})
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    findings = json.loads(doctor.stdout)["open"]
    assert any(f["check"] == "silence" and "never" in f["subject"] for f in findings)
    assert Home(path).token()
