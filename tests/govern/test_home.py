"""A home remembers the ledger it was made on: a shared PostgreSQL ledger is announced
loudly, and a home meant for one never falls back to a local file."""

from __future__ import annotations

import pytest

from conftest import keel, start_daemon, stop_daemon
from keel.govern.home import Home


def test_a_home_made_on_a_shared_ledger_keeps_using_it(pg_dsn, tmp_path, monkeypatch):
    path = tmp_path / "home"
    keel("init", env={"KEEL_HOME": str(path), "KEEL_DB": pg_dsn}, check=True)
    home = Home(path)
    assert home.config()["db"] == pg_dsn
    monkeypatch.delenv("KEEL_DB", raising=False)
    assert home.db_target() == pg_dsn  # without KEEL_DB: still the shared ledger
    said = home.describe_ledger()
    assert said.startswith("SHARED PostgreSQL ledger at 127.0.0.1:5432/test (from config.toml)")
    assert home.node in said
    # keel up says so, and writes no local ledger file.
    proc, _port = start_daemon(path, extra_env={"KEEL_DB": ""})
    out = stop_daemon(proc)
    assert "ledger: SHARED PostgreSQL ledger" in out
    assert not (path / "keel.db").exists()


def test_a_shared_ledger_out_of_reach_stops_keel_up(tmp_path):
    """A home whose config names a shared ledger it cannot reach refuses to start — one
    sentence, a non-zero exit — rather than quietly making a local file."""
    path = tmp_path / "home"
    keel("init", env={"KEEL_HOME": str(path), "KEEL_DB": ""}, check=True)
    config = path / "config.toml"
    config.write_text(config.read_text().replace('db = ""', 'db = "postgresql://127.0.0.1:1/x"'))
    local = (path / "keel.db").read_bytes()  # the file it was made with, before the change
    done = keel("up", "--port", "0", env={"KEEL_HOME": str(path), "KEEL_DB": ""})
    assert done.returncode != 0
    assert "cannot open the PostgreSQL ledger" in done.stderr
    assert "Traceback" not in done.stderr
    assert (path / "keel.db").read_bytes() == local  # not used, not written


@pytest.mark.parametrize("configured", [None, "laptop"])
def test_each_home_is_a_node_with_a_stable_name(tmp_path, configured):
    a, b = Home(tmp_path / "a"), Home(tmp_path / "b")
    for home in (a, b):
        home.path.mkdir()
        home.config_path.write_text(f'node = "{configured}"\n' if configured else "")
    if configured:
        assert a.node == b.node == configured
    else:
        assert a.node != b.node and a.node == Home(tmp_path / "a").node
