"""The runtime's commands without a daemon: cadence, events, status, doctor and health,
and bad input, run in this process through the `cli` fixture on SQLite and PostgreSQL.
`keel events --follow` keeps a real process: it runs until killed, reading what another
process commits."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time

from conftest import sh, sqlite_only

# What these commands do with the store is tested on both stores below them (operations,
# subsystems) and through the surfaces (tests/surfaces/test_through_the_door.py, api, mcp).
pytestmark = sqlite_only


def ok(result):
    assert result.code == 0, result
    assert "Traceback" not in result.err
    return result


def one_clear_line(result) -> str:
    assert result.code != 0, result
    assert "Traceback" not in result.err + result.out
    err = [line for line in result.err.splitlines() if line.strip()]
    assert len(err) == 1, result.err
    return err[0]


def test_cadence_commands_end_to_end(keel_home, cli):
    made = ok(
        cli("cadence", "add", "hello", "--schedule", "every 30m", "--command",
            "echo hello there", "--expect-artifact", "--retries", "1", "--json")
    ).json()  # fmt: skip
    assert made["name"] == "hello" and made["changed"] is True and made["source"] == "cli"
    again = cli("cadence", "add", "hello", "--schedule", "every 30m", "--command",
                "echo hello there", "--expect-artifact", "--retries", "1")  # fmt: skip
    assert "unchanged" in ok(again).out
    listed = ok(cli("cadence", "list", "--json")).json()
    (job,) = [j for j in listed if j["name"] == "hello"]
    assert job["spec"]["schedule"] == "every 30m" and job["spec"]["retries"] == 1 and job["next"]
    assert {"probe.daily", "doctor.sweep"} <= {j["name"] for j in listed}  # made by init
    shown = ok(cli("cadence", "show", "hello", "--json")).json()
    assert shown["spec"]["run"] == f"{shutil.which('echo')} hello there"
    assert shown["spec"]["kind"] == "command"
    assert shown["paused"] is False and shown["runs"] == []
    ran = ok(cli("cadence", "run", "hello", "--json")).json()
    assert ran["outcome"] == "ok" and ran["trigger"] == "manual" and ran["job"] == "hello"
    assert "hello there" in ran["artifact"]
    assert "hello there" in ok(cli("cadence", "run", "hello")).out  # the human form shows it
    assert ok(cli("cadence", "pause", "hello", "--json")).json()["paused"] is True
    paused = ok(cli("cadence", "show", "hello", "--json")).json()
    assert paused["paused"] and paused["next"] is None
    assert ok(cli("cadence", "resume", "hello", "--json")).json()["paused"] is False
    history = ok(cli("cadence", "history", "hello", "--json")).json()
    assert [r["outcome"] for r in history] == ["ok", "ok"]
    assert history[0]["key"] == ran["key"]
    # New: every job's runs, and one run with what it produced.
    runs = ok(cli("cadence", "runs", "--job", "hello", "--json")).json()
    assert [r["key"] for r in runs] == [r["key"] for r in history]
    info = ok(cli("cadence", "run-info", ran["key"], "--json")).json()
    assert info == ran
    # A failing job exits 1 and records the failure.
    ok(cli("cadence", "add", "broken", "--schedule", "every 1h", "--command", sh("exit 7")))
    failed = cli("cadence", "run", "broken", "--json")
    assert failed.code == 1
    assert failed.json()["error"] == "exit status 7" and failed.json()["outcome"] == "failed"
    failures = ok(cli("cadence", "runs", "--outcome", "failed", "--json")).json()
    assert [(r["job"], r["key"]) for r in failures] == [("broken", failed.json()["key"])]
    # The same job spec as JSON through -f -.
    spec = {
        "name": "probe",
        "schedule": "0 9 * * 1-5",
        "tz": "Europe/Berlin",
        "kind": "probe",
        "run": "ledger",
    }
    ok(cli("cadence", "add", "-f", "-", input=json.dumps(spec)))
    probe = ok(cli("cadence", "show", "probe", "--json")).json()
    assert probe["spec"]["tz"] == "Europe/Berlin" and probe["spec"]["kind"] == "probe"
    assert probe["next"].endswith("Z")


def test_cadence_bad_input_changes_nothing(keel_home, cli, head):
    before = head()
    add = ("cadence", "add", "x", "--schedule")
    cases = [
        ((*add, "every banana", "--command", "true"), 2),
        ((*add, "61 * * * *", "--command", "true"), 2),
        ((*add, "0 9 * * *", "--command", "true", "--tz", "Mars/Base"), 2),
        ((*add, "every 1h", "--command", "true", "--overlap", "maybe"), 2),
        ((*add, "every 1h"), 2),
        ((*add, "every 1h", "--command", "true", "--probe", "ok"), 2),
        (("cadence", "add", "-f", "-"), 2),  # empty stdin is not JSON
        (("cadence", "show", "nope"), 1),
        (("cadence", "run", "nope"), 1),
        (("cadence", "pause", "nope"), 1),
        (("cadence", "history", "nope"), 1),
        (("cadence", "run-info", "nope@2026-01-01T00:00:00Z#1"), 1),
        (("events", "--after", "x.y"), 2),
    ]
    for args, code in cases:
        result = cli(*args)
        line = one_clear_line(result)
        assert line.startswith("keel: ") and result.code == code, (args, result)
    assert head() == before


def test_events_prints_json_lines_and_follows(keel_home, cli):
    schema = [{"attribute": "task/title", "type": "string"}]
    ok(cli("schema", "add", "-f", "-", input=json.dumps(schema)))
    doc = {"ops": [{"e": "#t", "a": "task/title", "v": "call the plumber"}]}
    tx = ok(cli("transact", "-f", "-", "--json", input=json.dumps(doc))).json()
    events = ok(cli("events", "--type", "task", "--json")).lines()
    assert [(e["type"], e["entity"], e["tx"]) for e in events] == [
        ("task", tx["tempids"]["#t"], tx["tx"])
    ]
    assert events[0]["id"] == f"{tx['tx']}.1" and events[0]["attributes"] == ["task/title"]
    everything = ok(cli("events", "--json")).lines()
    assert {"tx", "task"} <= {e["type"] for e in everything}
    assert everything[0]["id"] == "1.0"
    after = ok(cli("events", "--after", f"{tx['tx']}.0", "--json")).lines()
    assert [e["id"] for e in after] == [f"{tx['tx']}.1"]
    assert tx["tempids"]["#t"] in ok(cli("events", "--type", "task")).out
    # --follow keeps printing what is committed later (a real process: it never returns).
    follower = subprocess.Popen(
        [sys.executable, "-m", "keel", "events", "--follow", "--json", "--type", "task",
         "--after", f"{tx['tx']}.99"],
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        doc = {"ops": [{"e": "#u", "a": "task/title", "v": "later"}]}
        later = ok(cli("transact", "-f", "-", "--json", input=json.dumps(doc))).json()
        ready, _, _ = select.select([follower.stdout], [], [], 30)
        assert ready, "keel events --follow printed nothing in 30 s"
        line = follower.stdout.readline()
        assert json.loads(line)["entity"] == later["tempids"]["#u"]
    finally:
        follower.kill()
        follower.wait()


def test_doctor_status_and_findings_on_a_fresh_home(keel_home, cli):
    report = ok(cli("doctor", "--json")).json()
    assert report["open"] == [] and report["count"] == 0 and report["errors"] == {}
    assert report["checks"]
    assert "no open findings" in ok(cli("doctor")).out
    assert ok(cli("health", "findings", "--json")).json() == []
    status = ok(cli("status", "--json")).json()
    assert status["running"] is False and status["read_only"] is None
    assert status["ledger"]["transactions"] >= 1
    assert {j["name"] for j in status["jobs"]} >= {"probe.daily", "doctor.sweep"}
    assert "not running" in ok(cli("status")).out


def test_up_serves_this_machine_only(keel_home, cli, head):
    before = head()
    refused = cli("up", "--host", "0.0.0.0")
    assert refused.code == 2 and "this machine only" in one_clear_line(refused)
    assert head() == before  # refused before the home was touched
