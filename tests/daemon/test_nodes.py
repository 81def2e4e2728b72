"""A second machine joins a shared PostgreSQL ledger as a node of its own — a key the
operator approves, never a copy of the operator's — and runs its own daemon on it."""

from __future__ import annotations

import json
import re

from conftest import keel, start_daemon, stop_daemon, wait_for
from keel.govern.home import Home


def test_a_node_joins_with_its_own_key_and_runs(pg_dsn, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    keel("init", env={"KEEL_HOME": str(a), "KEEL_DB": pg_dsn}, check=True)
    on_a = {"KEEL_HOME": str(a), "KEEL_DB": ""}
    on_b = {"KEEL_HOME": str(b), "KEEL_DB": ""}

    asked = keel("node", "join", pg_dsn, "--name", "laptop", env=on_b)
    assert asked.returncode == 5, asked
    approve = re.search(r"keel node approve laptop ([0-9a-f]{64})", asked.stdout)
    assert approve, asked.stdout
    fingerprint = re.search(r"key for node laptop: ([0-9a-f-]{19})", asked.stdout)[1]
    home_b = Home(b)
    assert home_b.identity == "laptop" and home_b.config()["db"] == pg_dsn
    assert sorted(p.name for p in (b / "keys").iterdir()) == ["laptop.key"]  # no operator key
    assert (b / "canon" / "governance.toml").read_text() == (
        a / "canon" / "governance.toml"
    ).read_text()
    # Until approved, the node acts as nobody.
    assert keel("capture", "too early", env=on_b).returncode != 0

    done = keel("node", "approve", "laptop", approve[1], env=on_a)
    assert done.returncode == 0 and fingerprint in done.stdout, done
    joined = keel("node", "join", pg_dsn, "--name", "laptop", env=on_b)
    assert joined.returncode == 0 and "is node laptop" in joined.stdout, joined

    # Its daemon runs on the shared ledger as laptop, beside the first machine's, each
    # with its own recall index following the one ledger.
    proc_a, _ = start_daemon(a, extra_env={"KEEL_DB": ""})
    proc, _port = start_daemon(b, extra_env={"KEEL_DB": ""})
    try:
        status = json.loads(keel("status", "--json", env=on_b, check=True).stdout)
        subs = {s["name"]: s for s in status["subscriptions"]}
        assert f"recall-index@{home_b.node}" in subs
        assert all(s["stopped"] is None for s in subs.values())
        keel("capture", "the boiler service is booked for May", env=on_a, check=True)
        keel("capture", "from the laptop", env=on_b, check=True)

        def found(env: dict, text: str) -> bool:
            hits = keel("recall", text, "--json", env=env, check=True).stdout
            return text.split()[-1] in hits

        assert wait_for(lambda: found(on_b, "boiler booked May"), timeout=30)
        assert wait_for(lambda: found(on_a, "from the laptop"), timeout=30)
        # What each node holds: a run the first machine's daemon is running now.
        keel(
            "cadence", "add", "slow", "--schedule", "every 1h", "--command", "sleep 6",
            env=on_a, check=True,
        )  # fmt: skip
        ran = json.loads(keel("cadence", "run", "slow", "--wait", "0.2", "--json", env=on_a).stdout)
        nodes = {n["name"]: n for n in json.loads(keel("node", "list", "--json", env=on_b).stdout)}
        assert nodes[Home(a).identity]["holds"] == [ran["key"]]
        assert nodes["laptop"]["holds"] == []
    finally:
        out = stop_daemon(proc)
        stop_daemon(proc_a)
    assert "SHARED PostgreSQL ledger" in out and "this node is laptop" in out
    nodes = json.loads(keel("node", "list", "--json", env=on_a, check=True).stdout)
    laptop = next(n for n in nodes if n["name"] == "laptop")
    assert laptop["role"] == "node" and laptop["fingerprint"] == fingerprint
    assert laptop["host"] and laptop["started"] and laptop["last_seen"]
    log = [
        json.loads(line) for line in keel("log", "--json", env=on_a, check=True).stdout.splitlines()
    ]
    assert any(e["author"] == "laptop" for e in log)  # what it wrote, it signed as itself


def test_joining_refuses_what_cannot_work(pg_dsn, tmp_path):
    empty = keel("node", "join", pg_dsn, env={"KEEL_HOME": str(tmp_path / "x"), "KEEL_DB": ""})
    assert empty.returncode == 2 and "that ledger is empty" in empty.stderr
    local = keel("node", "join", "/tmp/file.db", env={"KEEL_HOME": str(tmp_path / "y")})
    assert local.returncode == 2 and "shared PostgreSQL ledger" in local.stderr


def test_init_on_a_ledger_another_home_made_points_to_join(pg_dsn, tmp_path):
    """`keel init` on a shared ledger that already has its operator says to join, and
    leaves nothing behind that would stand in the way (no key that could never sign)."""
    keel("init", env={"KEEL_HOME": str(tmp_path / "a"), "KEEL_DB": pg_dsn}, check=True)
    b = tmp_path / "b"
    second = keel("init", env={"KEEL_HOME": str(b), "KEEL_DB": pg_dsn})
    assert second.returncode == 2 and "keel node join" in second.stderr, second
    assert not list((b / "keys").iterdir()) and not (b / "config.toml").exists()
    asked = keel("node", "join", pg_dsn, "--name", "laptop", env={"KEEL_HOME": str(b)})
    assert asked.returncode == 5 and "keel node approve laptop" in asked.stdout, asked
