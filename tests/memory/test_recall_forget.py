"""Forgetting reaches the recall index (SQLite beside the ledger, or PostgreSQL tables):
the rows derived from the forgotten text, their words and their vectors leave the index
and its files, what else the entity holds is indexed again, and another process's cache
lets go of them too."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from conftest import files_holding, pg_rows_holding, sqlite_only
from keel.ledger import Ledger
from keel.memory import Memory, Recall
from keel.memory.memory import ensure_schema


@pytest.fixture
def memory(ledger) -> Memory:
    ensure_schema(ledger)
    return Memory(ledger)


def ids(result: dict) -> list[str]:
    return [r["id"] for r in result["results"]]


def texts(result: dict) -> str:
    return " ".join(r["text"] for r in result["results"])


def holders(store_kind: str, target: str, needle: bytes) -> list[str]:
    if store_kind == "postgres":
        return pg_rows_holding(target, needle)
    return files_holding(Path(target).parent, needle)


def test_a_forgotten_text_leaves_the_index_and_the_rest_stays_findable(
    memory, ledger, store_kind, target
):
    secret, kept = secrets.token_hex(16), secrets.token_hex(16)
    made = memory.log_decision("Move the safe", f"the old code {secret} leaked")
    e = made["id"]
    memory.capture(f"an unrelated note {kept}")
    recall = Recall(ledger)
    elsewhere = Recall(Ledger.open(target))  # another process, with its own cache
    assert ids(recall.search(secret))[0] == e == ids(elsewhere.search(secret))[0]
    assert holders(store_kind, target, secret.encode())

    ledger.forget(e, "decision/why", why="the code must not survive")
    dropped, notes = recall.forget(e)
    assert dropped >= 2 and notes == []  # the title's row and the text's

    assert secret not in texts(recall.search(secret))
    assert ids(recall.search("move the safe"))[0] == e  # derived again from what is left
    assert kept in texts(recall.search(kept))  # other items untouched
    rows = recall.store.execute(
        "SELECT count(*) FROM recall_rows WHERE e = ? AND a = 'decision/why'", [e]
    ).fetchone()
    assert rows == (0,)  # no text, no vector
    assert secret not in texts(elsewhere.search(secret))
    cached = elsewhere.store.text_of([int(i) for i in elsewhere.cache.ids])
    assert not any(secret in t for t in cached.values())
    assert recall.status()["rows"] == elsewhere.status()["rows"]

    elsewhere.ledger.close()
    elsewhere.close()
    recall.close()
    ledger.close()
    assert holders(store_kind, target, secret.encode()) == []
    assert holders(store_kind, target, kept.encode())


@sqlite_only  # beside a SQLite ledger the index is a file of its own
def test_an_index_that_cannot_be_read_is_dropped_rather_than_kept(memory, ledger):
    """A broken index may still hold the text in its file: it is deleted (derived data,
    rebuilt on its next use), never left behind."""
    secret = secrets.token_hex(16)
    e = memory.capture(f"note {secret}")["id"]
    recall = Recall(ledger, embedder="none")
    recall.search(secret)
    recall.close()
    index = Path(ledger.store.location).with_name("keel.recall.db")
    data = bytearray(index.read_bytes())
    data[:16] = b"\x00" * 16  # no longer a SQLite header
    index.write_bytes(bytes(data))
    broken = Recall(ledger, embedder="none")
    assert broken.broken is not None
    ledger.forget(e, why="gone")
    assert broken.forget(e) == (0, [])
    assert files_holding(index.parent, secret.encode()) == []
    assert broken.search("note")["results"] == []  # rebuilt from the ledger
