"""Canon is one truth: nodes that share a ledger each have a cadence file, and no node's
file overwrites another's edit (both stores)."""

from __future__ import annotations

import pytest

from keel.cadence import canon
from keel.cadence import jobs as jobs_mod
from keel.health.checks import check_canon

A = """[[job]]
name = "backup"
schedule = "0 3 * * *"
kind = "probe"
run = "ok"
"""
A2 = A.replace("0 3 * * *", "0 4 * * *")
B2 = A.replace("0 3 * * *", "0 5 * * *")


@pytest.fixture
def nodes(ledger, tmp_path):
    jobs_mod.ensure_schema(ledger)
    ledger.declare(canon.SCHEMA, system=True)
    files = {"a": tmp_path / "a" / "cadence.toml", "b": tmp_path / "b" / "cadence.toml"}
    for f in files.values():
        f.parent.mkdir()

    def sync(node: str, on_purpose: bool = False) -> canon.Synced:
        path = files[node]
        return canon.sync(ledger, path, node, lambda: jobs_mod.sync_canon(ledger, path), on_purpose)

    return files, sync


def schedule(ledger) -> str:
    return jobs_mod.get_job(ledger, "backup")[0].schedule


def states(ledger) -> dict[str, str]:
    return {row["node"]: row["state"] for row in canon.status(ledger)}


def test_an_edit_on_one_node_reaches_the_other_without_being_undone(ledger, nodes):
    files, sync = nodes
    files["a"].write_text(A)
    assert sync("a").state == "accepted" and schedule(ledger) == "0 3 * * *"
    files["b"].write_text(canon.accepted_text(ledger))  # what a fresh node is given
    assert sync("b").state == "in-sync"
    files["a"].write_text(A2)
    assert sync("a").state == "edited" and schedule(ledger) == "0 4 * * *"
    assert states(ledger) == {"a": "in-sync", "b": "behind"}
    # b starts again with its old file: it is brought up to date, not applied.
    assert sync("b").state == "updated"
    assert files["b"].read_text() == A2 and schedule(ledger) == "0 4 * * *"
    assert states(ledger) == {"a": "in-sync", "b": "in-sync"}


def test_two_edits_conflict_and_nothing_is_overwritten(ledger, nodes):
    files, sync = nodes
    files["a"].write_text(A)
    sync("a")
    files["b"].write_text(A)
    sync("b")
    files["a"].write_text(A2)
    files["b"].write_text(B2)
    assert sync("a").state == "edited"
    assert sync("b").state == "conflict"
    assert files["b"].read_text() == B2 and schedule(ledger) == "0 4 * * *"
    assert states(ledger)["b"] == "conflict"
    (found,) = check_canon(ledger.view(), 0)
    assert found.subject == "b" and "nothing was overwritten" in found.message
    # Every later start keeps it so; `keel cadence sync` on b makes b's file the canon.
    assert sync("b").state == "conflict" and schedule(ledger) == "0 4 * * *"
    assert sync("b", on_purpose=True).state == "edited" and schedule(ledger) == "0 5 * * *"
    assert check_canon(ledger.view(), 0) == []
    assert states(ledger) == {"a": "behind", "b": "in-sync"}
    assert sync("a").state == "updated" and files["a"].read_text() == B2


def test_a_fresh_node_is_given_the_ledgers_canon(keel_home, run, tmp_path):
    """A home whose cadence file is missing gets the ledger's accepted text (the default
    cadence only on a ledger that has none)."""
    from keel.daemon.runtime import DEFAULT_CADENCE

    path = keel_home.path / "canon" / "cadence.toml"
    assert path.read_text() == DEFAULT_CADENCE
    edited = DEFAULT_CADENCE + '\n[[job]]\nname = "extra"\nschedule = "every 1h"\n'
    edited += 'kind = "probe"\nrun = "ok"\n'
    path.write_text(edited)
    assert run("cadence.sync").changed == ["extra"]
    path.unlink()
    assert run("cadence.sync").state == "in-sync"
    assert path.read_text() == edited
    assert [r.state for r in run("canon.status")] == ["in-sync"]
