"""The command line's own promises: --json on every read command, one clear line for a
mistake, piped output never wrapped, shell completion, times in the operator's zone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import sqlite_only

# What these commands do with the store is tested on both stores below them (operations,
# subsystems) and through the surfaces (tests/surfaces/test_through_the_door.py, api, mcp).
pytestmark = sqlite_only


def test_every_read_command_speaks_json(keel_home, cli):
    assert cli("capture", "a note").code == 0
    for args in (
        ("log",),
        ("events",),
        ("cadence", "show", "probe.daily"),
        ("cadence", "list"),
        ("proof", "inclusion", "1"),
        ("proof", "consistency", "1", "2"),
        ("checkpoint",),
        ("status",),
        ("identity", "list"),
        ("schema", "list"),
        ("branch", "list"),
        ("working",),
        ("decisions",),
        ("wiki", "index"),
        ("health", "findings"),
        ("entity", "kinds"),
        ("verify",),
    ):
        result = cli(*args, "--json")
        assert result.code == 0, (args, result)
        lines = [line for line in result.out.splitlines() if line.strip()]
        assert lines, args
        for line in lines:
            json.loads(line)
    log = cli("log", "--json").lines()
    assert [e["tx"] for e in log] == list(range(1, len(log) + 1))
    assert {"tx", "hash", "prev", "author", "reason"} <= set(log[0])


def test_piped_output_is_not_wrapped(keel_home, cli):
    long = "word " * 60
    note = cli("capture", long.strip(), "--json").json()
    out = cli("get", note["id"]).out
    assert any(len(line) > 200 for line in out.splitlines()), "a pipe has no width to wrap to"


def test_a_mistake_is_one_line_and_its_kind_is_the_exit_status(keel_home, cli):
    for args, code, words in (
        (("get", "nobody"), 1, "nobody"),
        (("get", "x", "--as-of", "99999999999999999999"), 2, "64 bits"),
        (("recall", "x", "--k", "99999999999999999999999"), 2, "k"),
        (("transact", "-f", "-"), 2, "JSON"),
        (("branch", "drop", "main"), 2, "main"),
        (("cadence", "add", "x", "--schedule", "61 * * * *", "--probe", "ok"), 2, "minute"),
        (("canon", "set", "style", "/nonexistent"), 2, "cannot read"),
        (("cadence", "show", "nope"), 1, "nope"),
    ):
        result = cli(*args, input="not json" if args[0] == "transact" else None)
        assert result.code == code, (args, result)
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.err, result


def test_binary_and_deep_input_are_refused(keel_home, cli):
    assert "not UTF-8" in cli("transact", "-f", "-", input=b"\xff\xfe\x00\x01").err
    deep = '{"ops": ' + "[" * 50_000 + "]" * 50_000 + "}"
    result = cli("transact", "-f", "-", input=deep)
    assert result.code == 2 and "deep" in result.err, result
    nul = json.dumps({"ops": [{"e": "a\x00b", "a": "mem/text", "v": "x"}]})
    result = cli("transact", "-f", "-", input=nul)
    assert result.code == 2 and "NUL" in result.err, result


def test_cron_macros_and_the_home_zone(keel_home, cli):
    made = cli("cadence", "add", "nightly", "--schedule", "@daily", "--probe", "ok", "--json")
    assert made.code == 0, made
    job = made.json()
    assert job["spec"]["tz"] == keel_home.timezone().key
    assert job["next"]


def test_shell_completion(keel_home):
    """Completion is typer's: the shell asks `keel` for candidates with _KEEL_COMPLETE."""
    env = {
        **os.environ,
        "_KEEL_COMPLETE": "complete_bash",
        "COMP_WORDS": "keel cad",
        "COMP_CWORD": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "keel"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "cadence" in proc.stdout.split(), proc
    env.update(COMP_WORDS="keel cadence ru", COMP_CWORD="2")
    proc = subprocess.run(
        [sys.executable, "-m", "keel"], env=env, capture_output=True, text=True, timeout=60
    )
    assert {"run", "runs", "run-info"} <= set(proc.stdout.split()), proc
    shown = subprocess.run(
        [sys.executable, "-m", "keel", "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "_KEEL_COMPLETE" in shown.stdout, shown


def test_times_are_shown_in_the_operators_zone(tmp_path, monkeypatch, cli, store_kind):
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("TZ", "Europe/Berlin")
    monkeypatch.delenv("KEEL_DB", raising=False)
    assert cli("init").code == 0
    assert 'timezone = "Europe/Berlin"' in (tmp_path / "h" / "config.toml").read_text()
    jobs = cli("cadence", "list", "--json").json()
    assert {j["spec"]["tz"] for j in jobs} == {"Europe/Berlin"}
    daily = next(j for j in jobs if j["name"] == "probe.daily")
    assert daily["next"].endswith(("06:00:00Z", "07:00:00Z"))  # 08:00 in Berlin, in UTC
    shown = cli("status").out
    assert "CET" in shown or "CEST" in shown
    assert cli("status", "--json").json()["now"].endswith("Z")
