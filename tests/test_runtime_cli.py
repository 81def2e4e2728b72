"""The runtime's CLI without a daemon: cadence commands, events, doctor, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import keel


def lines(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def one_clear_line(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1, proc.stderr
    return err[0]


def head(env) -> int:
    return len(lines(keel("log", env=env, check=True)))


def test_cadence_commands_end_to_end(home):
    env = {"KEEL_HOME": str(home.path)}
    keel(
        "cadence",
        "add",
        "hello",
        "--schedule",
        "every 30m",
        "--command",
        "echo hello there",
        "--expect-artifact",
        "--retries",
        "1",
        env=env,
        check=True,
    )
    listed = json.loads(keel("cadence", "list", "--json", env=env, check=True).stdout)
    (job,) = [j for j in listed if j["name"] == "hello"]
    assert job["schedule"] == "every 30m" and job["retries"] == 1 and job["next"]
    shown = json.loads(keel("cadence", "show", "hello", env=env, check=True).stdout)
    assert shown["run"] == "echo hello there" and shown["paused"] is False
    ran = json.loads(keel("cadence", "run", "hello", "--json", env=env, check=True).stdout)
    assert ran["outcome"] == "ok" and ran["trigger"] == "manual"
    assert "hello there" in ran["artifact"]
    keel("cadence", "pause", "hello", env=env, check=True)
    assert json.loads(keel("cadence", "show", "hello", env=env, check=True).stdout)["paused"]
    keel("cadence", "resume", "hello", env=env, check=True)
    history = json.loads(keel("cadence", "history", "hello", "--json", env=env, check=True).stdout)
    assert [r["outcome"] for r in history] == ["ok"]
    # A failing job exits 1 and records the failure.
    keel(
        "cadence",
        "add",
        "broken",
        "--schedule",
        "every 1h",
        "--command",
        "exit 7",
        env=env,
        check=True,
    )
    failed = keel("cadence", "run", "broken", "--json", env=env)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"] == "exit status 7"
    # The same job spec as JSON through -f -.
    spec = {
        "name": "probe",
        "schedule": "0 9 * * 1-5",
        "tz": "Europe/Berlin",
        "kind": "probe",
        "run": "ledger",
    }
    keel("cadence", "add", "-f", "-", input=json.dumps(spec), env=env, check=True)
    assert json.loads(keel("cadence", "show", "probe", env=env, check=True).stdout)["tz"] == (
        "Europe/Berlin"
    )


def test_cadence_bad_input_changes_nothing(home):
    env = {"KEEL_HOME": str(home.path)}
    keel("cadence", "list", env=env, check=True)  # declares the cadence schema
    before = head(env)
    cases = [
        ("cadence", "add", "x", "--schedule", "every banana", "--command", "true"),
        ("cadence", "add", "x", "--schedule", "61 * * * *", "--command", "true"),
        (
            "cadence",
            "add",
            "x",
            "--schedule",
            "0 9 * * *",
            "--command",
            "true",
            "--tz",
            "Mars/Base",
        ),
        (
            "cadence",
            "add",
            "x",
            "--schedule",
            "every 1h",
            "--command",
            "true",
            "--overlap",
            "maybe",
        ),
        ("cadence", "add", "x", "--schedule", "every 1h"),
        ("cadence", "show", "nope"),
        ("cadence", "run", "nope"),
        ("cadence", "pause", "nope"),
        ("cadence", "history", "nope"),
        ("events", "--after", "x.y"),
    ]
    for args in cases:
        line = one_clear_line(keel(*args, env=env))
        assert line.startswith("keel: "), (args, line)
    assert head(env) == before


def test_events_prints_json_lines_and_follows(home):
    env = {"KEEL_HOME": str(home.path)}
    schema = [{"attribute": "task/title", "type": "string"}]
    keel("schema", "add", "-f", "-", input=json.dumps(schema), env=env, check=True)
    doc = {"ops": [{"e": "#t", "a": "task/title", "v": "call the plumber"}]}
    tx = json.loads(
        keel("transact", "-f", "-", "--json", input=json.dumps(doc), env=env, check=True).stdout
    )
    events = lines(keel("events", "--type", "task", env=env, check=True))
    assert [(e["type"], e["entity"]) for e in events] == [("task", tx["tempids"]["#t"])]
    everything = lines(keel("events", env=env, check=True))
    assert {"tx", "task"} <= {e["type"] for e in everything}
    # --follow keeps printing what is committed later.
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keel",
            "events",
            "--follow",
            "--type",
            "task",
            "--after",
            f"{tx['tx']}.99",
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        doc = {"ops": [{"e": "#u", "a": "task/title", "v": "later"}]}
        later = json.loads(
            keel("transact", "-f", "-", "--json", input=json.dumps(doc), env=env, check=True).stdout
        )
        line = follower.stdout.readline()
        assert json.loads(line)["entity"] == later["tempids"]["#u"]
    finally:
        follower.kill()
        follower.wait()


def test_doctor_is_quiet_on_a_fresh_home(home):
    proc = keel("doctor", "--json", env={"KEEL_HOME": str(home.path)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
