"""A broken recall index never breaks recall. Whatever state the index is found in —
garbage bytes, a truncated file, a stale write-ahead log, tables dropped or altered, broken
while a process has it open — recall answers with full text over the ledger and says so,
`status` reports it, and `reindex` rebuilds the index from the ledger."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import psycopg
import pytest

from keel.ledger import Ledger
from keel.memory import Memory, Recall
from keel.memory.memory import ensure_schema

sqlite_only = pytest.mark.parametrize("store_kind", ["sqlite"])
CAR = "Renew the car insurance before it lapses"


@pytest.fixture
def before_move(ledger) -> int:
    """Memory items on several surfaces; returns the last transaction before Alice moved."""
    ensure_schema(ledger)
    memory = Memory(ledger)
    memory.capture(CAR, source="phone")
    memory.log_decision("Use SQLite as the embedded store", "one file and no server to run")
    memory.upsert_entity("Alice", "person", facts={"lives_in": "Denver"}, valid_from="2019-05-01")
    head = ledger.store.head()[0]
    memory.observe(
        "alice", "Alice moved to Berlin", at="2024-08-01", fact="lives_in", value="Berlin"
    )
    return head


def index_path(ledger: Ledger) -> Path:
    ledger_path = Path(ledger.store.location)
    return ledger_path.with_name(ledger_path.stem + ".recall.db")


def on_index(ledger: Ledger, *statements: str) -> None:
    """Run SQL on the index's database over a connection of its own, as another process
    (or a person with a database shell) would."""
    dsn = getattr(ledger.store, "dsn", None)
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)
        return
    with contextlib.closing(sqlite3.connect(index_path(ledger))) as conn:
        for sql in statements:
            conn.execute(sql)


def build(ledger: Ledger, embedder: str | None = "none") -> None:
    """Build the index; closing it checkpoints its write-ahead log into the file."""
    recall = Recall(ledger, embedder)
    recall.catch_up()
    recall.close()


def texts(result: dict) -> list[str]:
    return [r["text"] for r in result["results"]]


def assert_answers_from_the_ledger(recall: Recall) -> None:
    found = recall.search("car insurance")
    assert found["mode"] == "ledger-fulltext"
    assert "unreadable" in found["note"] and "keel reindex" in found["note"]
    assert texts(found) == [CAR]
    status = recall.status()
    assert status["healthy"] is False and status["mode"] == "ledger-fulltext"
    assert "keel reindex" in status["note"]
    assert recall.catch_up() == 0  # the daemon's bus calls this: no failure, nothing indexed


def assert_repaired(recall: Recall, ledger: Ledger, mode: str = "fulltext") -> None:
    assert recall.reindex() > 0
    status = recall.status()
    assert status["healthy"] is True and status["mode"] == mode
    assert "unreadable" not in (status["note"] or "")
    assert status["cursor"] == ledger.store.head()[0]
    found = recall.search("car insurance")
    assert found["mode"] == mode and texts(found)[0] == CAR


@sqlite_only
def test_a_garbage_index_file_answers_from_the_ledger_until_reindex(ledger, before_move):
    """The fault a new user hit: a garbage keel.recall.db (here beside a stale -wal and
    -shm of an earlier index) made /recall fail and `keel reindex` fail."""
    build(ledger)
    path = index_path(ledger)
    earlier = Recall(ledger, "none")  # indexes one more item, into its write-ahead log
    Memory(ledger).capture("Pick up the dry cleaning")
    earlier.catch_up()
    stale_wal = path.with_name(path.name + "-wal").read_bytes()  # closing removes it
    earlier.close()
    path.write_bytes(b"this is not a database " * 500)
    path.with_name(path.name + "-wal").write_bytes(stale_wal)
    path.with_name(path.name + "-shm").write_bytes(b"\xff" * 32768)
    head = ledger.store.head()[0]

    recall = Recall(ledger)  # the default, hybrid embedder
    assert recall.mode == "ledger-fulltext"
    assert_answers_from_the_ledger(recall)
    car = recall.search("car insurance")["results"][0]
    assert car["surface"] == "capture"
    prov = car["provenance"]
    assert prov["attribute"] == "mem/text" and prov["author"] == "operator"
    assert prov["source"] == "phone" and prov["tx"] > 0 and prov["tx_time"]

    # The same time filtering as the index: what held then, as known then.
    def cities(**kw) -> set[str]:
        found = recall.search("where does Alice live", k=10, **kw)
        assert found["mode"] == "ledger-fulltext"
        return {
            r["text"] for r in found["results"] if r["provenance"]["attribute"] == "fact/lives_in"
        }

    assert cities() == {"Alice lives in: Berlin"}
    assert cities(valid_at="2023-03-01") == {"Alice lives in: Denver"}
    assert cities(as_of=before_move) == {"Alice lives in: Denver"}
    found = recall.search("Alice Denver", valid_at="2023-03-01")["results"]
    denver = next(r for r in found if r["provenance"]["attribute"] == "fact/lives_in")
    assert denver["provenance"]["valid_from"] == "2019-05-01T00:00:00Z"
    assert denver["provenance"]["valid_to"] == "2024-08-01T00:00:00Z"
    decided = recall.search("SQLite store", surface="decision")["results"]
    assert [r["surface"] for r in decided] == ["decision"]
    # In 2010 only the entity's timeless name held: no fact, no observation.
    early = recall.search("Alice moved Berlin", valid_at="2010-01-01")["results"]
    assert [r["provenance"]["attribute"] for r in early] == ["entity/name"]

    assert_repaired(recall, ledger, mode="hybrid")
    top = recall.search("vehicle coverage renewal", k=1)["results"][0]
    assert top["text"] == CAR and top["ranks"].get("vector") == 1
    recall.close()
    # The repaired index opens as any other, and the ledger was left alone.
    again = Recall(ledger)
    assert again.status()["healthy"] and again.mode == "hybrid"
    again.close()
    assert ledger.store.head()[0] == head and ledger.verify().ok


@sqlite_only
def test_a_truncated_index_file(ledger, before_move):
    memory = Memory(ledger)
    for i in range(150):
        memory.capture(f"note {i} about the garden shed roof, which leaks when it rains hard")
    build(ledger)
    path = index_path(ledger)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 3)

    recall = Recall(ledger, "none")
    assert_answers_from_the_ledger(recall)
    assert len(recall.search("garden shed", k=200)["results"]) == 150
    assert_repaired(recall, ledger)
    assert len(recall.search("garden shed", k=200)["results"]) == 150
    recall.close()


def test_a_table_dropped_while_open(ledger, before_move):
    recall = Recall(ledger, "none")
    assert texts(recall.search("car insurance")) == [CAR]
    on_index(ledger, "DROP TABLE recall_rows")
    assert_answers_from_the_ledger(recall)
    assert_repaired(recall, ledger)
    recall.close()


def test_an_index_whose_tables_were_all_dropped_is_made_anew(ledger, before_move):
    """With nothing of the index left, opening it again makes a new, empty one, which
    catches up with the ledger like an index that never existed."""
    recall = Recall(ledger, "none")
    assert recall.search("car insurance")["mode"] == "fulltext"
    tables = ["recall_rows", "recall_entities", "recall_meta"]
    if not getattr(ledger.store, "dsn", None):
        tables.append("recall_fts")
    on_index(ledger, *(f"DROP TABLE {t}" for t in tables))
    assert recall.search("car insurance")["mode"] == "ledger-fulltext"
    found = recall.search("car insurance")
    assert found["mode"] == "fulltext" and texts(found) == [CAR]
    assert recall.status()["healthy"] is True
    recall.close()


@pytest.mark.parametrize(
    "damage",
    ["ALTER TABLE recall_rows RENAME COLUMN text TO body", "DROP TABLE recall_entities"],
    ids=["column-renamed", "table-dropped"],
)
def test_an_index_of_another_shape_is_found_out_when_opened(ledger, before_move, damage):
    """A table altered or missing would fail a later query — or, recall_entities made
    anew and empty, silently leave new text on existing items out of the index."""
    build(ledger)
    on_index(ledger, damage)
    Memory(ledger).upsert_entity("Alice", summary="Alice restores old harpsichords")
    recall = Recall(ledger, "none")
    assert texts(recall.search("harpsichords")) == ["Alice restores old harpsichords"]
    assert_answers_from_the_ledger(recall)
    assert_repaired(recall, ledger)
    assert texts(recall.search("harpsichords")) == ["Alice restores old harpsichords"]
    recall.close()


@sqlite_only
def test_an_index_corrupted_while_open(ledger, before_move):
    recall = Recall(ledger, "none")
    assert texts(recall.search("car insurance")) == [CAR]
    path = index_path(ledger)
    on_index(ledger, "PRAGMA wal_checkpoint(TRUNCATE)")  # the rows are in the file now
    path.write_bytes(b"\x00garbage" * (path.stat().st_size // 8))
    assert_answers_from_the_ledger(recall)
    Memory(ledger).capture("Book the boiler service for May")
    assert texts(recall.search("boiler service")) == ["Book the boiler service for May"]
    assert_repaired(recall, ledger)
    assert texts(recall.search("boiler service")) == ["Book the boiler service for May"]
    recall.close()
