"""A damaged ledger is never used as if healthy: `keel up` verifies what was written since its
last verified checkpoint before it serves; a broken chain makes keel read-only, opens a
health finding and names the first bad transaction — on every surface."""

from __future__ import annotations

import json
import sqlite3

import pytest
from test_daemon import api, start_daemon, stop_daemon


def _flip_a_value_byte(db, needle: bytes) -> None:
    """Flip one bit of a stored value in the database file itself, behind SQLite's back."""
    data = bytearray(db.read_bytes())
    found = 0
    at = data.find(needle)
    while at >= 0:  # every copy: a free page may still hold an old one
        data[at] ^= 0x01
        found += 1
        at = data.find(needle, at + 1)
    assert found, "the value is on disk"
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_up_on_a_damaged_ledger_is_read_only_and_names_the_bad_transaction(
    keel_home, cli, store_kind
):
    path = keel_home.path
    assert cli("capture", "the plumber comes on Tuesday").code == 0
    noted = cli("capture", "remember the milk", "--json").json()
    db = path / "keel.db"
    with sqlite3.connect(db) as conn:  # everything written is in the main file, not the WAL
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    _flip_a_value_byte(db, b"remember the milk")

    proc, port = start_daemon(path)
    try:
        status = api(path, port, "/status")
        assert status["running"] is True and not status["subscriptions"]  # up, running nothing
        assert status["read_only"] and f"transaction {noted['tx']}" in status["read_only"]
        finding = [f for f in status["health"]["open"] if f["check"] == "integrity"]
        assert finding and f"transaction {noted['tx']}" in finding[0]["message"]
        # Writes are refused, with the reason, on every surface; reads still answer.
        refused = cli("capture", "written on top")
        assert refused.code == 6 and "read-only" in refused.err, refused
        assert f"transaction {noted['tx']}" in refused.err
        assert cli("decisions", "--json").code == 0
        with pytest.raises(Exception) as caught:
            api(path, port, "/memory/capture", "POST", {"text": "over HTTP"})
        assert caught.value.code == 503
        assert json.loads(caught.value.read())["kind"] == "read-only"
    finally:
        out = stop_daemon(proc)
    assert "read-only" in out
    verify = cli("verify")
    assert verify.code == 1 and f"transaction {noted['tx']} is bad" in verify.err


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_up_on_a_healthy_ledger_signs_a_checkpoint_and_clears_read_only(keel_home, cli, store_kind):
    path = keel_home.path
    keel_home.set_integrity_problem("transaction 2 is bad: an old problem since repaired", 2)
    proc, port = start_daemon(path)
    try:
        status = api(path, port, "/status")
        assert status["read_only"] is None
        assert not [f for f in status["health"]["open"] if f["check"] == "integrity"]
    finally:
        stop_daemon(proc)
    assert cli("verify", "--json").json()["checkpoints"] >= 1
    assert cli("capture", "writes again").code == 0


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_a_marked_home_is_verified_in_full_before_the_mark_is_lifted(services, keel_home):
    from keel.ops.daemon import Daemon

    with services.open_ledger() as ledger:
        ledger.checkpoint()  # an incremental pass would start after this one
    keel_home.set_integrity_problem("transaction 2 is bad: found by an earlier check", 2)
    daemon = Daemon(services)
    try:
        verified = daemon.start()
    finally:
        daemon.stop()
    assert verified.ok and verified.since == 0  # every transaction recomputed
    assert keel_home.integrity_problem() is None


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_read_only_holds_below_the_door(services, keel_home):
    """A write that never passes the door (the scheduler, the bus, a library caller) is
    refused too; only the finding that reports the damage is written."""
    from keel.errors import ReadOnly
    from keel.health.findings import Finding, record

    keel_home.set_integrity_problem("transaction 2 is bad: a flipped bit", 2)
    with services.open_ledger() as ledger:
        head = ledger.head().id
        with pytest.raises(ReadOnly, match="a flipped bit"):
            ledger.transact([{"e": "note:x", "a": "mem/text", "v": "on top"}], "below the door")
        damage = Finding("integrity", "ledger", "the ledger failed", "error")
        record(ledger, [damage], ["integrity"])
        assert ledger.head().id == head + 1  # the finding, and nothing else
