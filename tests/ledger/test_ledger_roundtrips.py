"""What a commit costs on the wire: round trips to PostgreSQL, statements on SQLite.

Round trips are counted from libpq's own trace of the connection (`PQtrace`): each time
the client, having sent messages, reads the server's answer is one round trip. A small
commit (1–5 datoms on main, no expectation, no guard) must take at most two: the BEGIN,
the lock and the commit's first reads together, then the inserts with the COMMIT.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.pq import Trace

from keel.ledger import BadInput, Ledger, Refused, Signer

SCHEMA = [
    {"attribute": "note/title", "type": "string"},
    {"attribute": "note/rank", "type": "int"},
    {"attribute": "note/done", "type": "bool"},
]


def small(n: int) -> list[dict]:
    return [
        {"e": "#n", "a": "note/title", "v": f"note {n}"},
        {"e": "#n", "a": "note/rank", "v": n},
        {"e": "#n", "a": "note/done", "v": n % 2 == 0},
    ]


@contextmanager
def wire_trace(conn: psycopg.Connection) -> Iterator[list[str]]:
    """The protocol messages of `conn` while the block runs, as libpq prints them: one
    line per message, starting F (sent by the client) or B (sent by the server)."""
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as f:
        conn.pgconn.trace(os.dup(f.fileno()))
        conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        try:
            yield lines
        finally:
            conn.pgconn.untrace()
            f.seek(0)
            lines.extend(line for line in f.read().splitlines() if line.strip())


def round_trips(lines: list[str]) -> int:
    """How often the client turned from sending to reading the server's answer."""
    count, previous = 0, ""
    for line in lines:
        side = line.split(None, 1)[0]
        if side == "B" and previous == "F":
            count += 1
        previous = side
    return count


@pytest.fixture
def pg_ledger(pg_dsn, operator):
    led = Ledger.open(pg_dsn, signer=operator)
    led.register_identity("operator", operator.public_key, "operator")
    led.declare(SCHEMA)
    led.transact(small(0))  # statements prepared, caches warm
    yield led
    led.close()


def test_a_small_commit_is_at_most_two_round_trips_on_postgresql(pg_ledger):
    for n in range(1, 4):
        with wire_trace(pg_ledger.store.conn) as lines:
            result = pg_ledger.transact(small(n), reason="small")
        trips = round_trips(lines)
        assert trips <= 2, f"commit {n} took {trips} round trips:\n" + "\n".join(lines)
        # committed within those round trips: another connection sees it at once
        with psycopg.connect(pg_ledger.store.dsn, autocommit=True) as other:
            found = other.execute("SELECT max(id) FROM txs").fetchone()
        assert found == (result.tx,)
        assert pg_ledger.view().get(result.tempids["#n"])["note/rank"] == n
    assert pg_ledger.verify().ok


def test_a_refused_commit_rolls_back_and_the_next_is_still_two_round_trips(pg_ledger):
    before = pg_ledger.head()
    refusing = [True]

    def refuse(pending):
        if refusing[0]:
            raise Refused("not today")

    pg_ledger.add_guard(refuse)
    with pytest.raises(Refused):
        pg_ledger.transact(small(1))
    refusing[0] = False
    assert pg_ledger.head() == before
    with wire_trace(pg_ledger.store.conn) as lines:
        pg_ledger.transact(small(2))
    assert round_trips(lines) <= 2
    assert pg_ledger.head().id == before.id + 1
    assert pg_ledger.verify().ok


def test_a_write_the_server_refuses_leaves_nothing_and_the_connection_usable(pg_ledger):
    """The server's error arrives only when the pipeline syncs, after the inserts were
    sent: the transaction must be rolled back, not left open or half written."""
    conn = pg_ledger.store.conn
    conn.execute(
        """CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.e = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF;
             RETURN NEW;
           END $$"""
    )
    conn.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON datoms"
        " FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
    )
    before = pg_ledger.head()
    with pytest.raises(psycopg.errors.RaiseException):
        pg_ledger.transact([{"e": "poison", "a": "note/rank", "v": 1}])
    assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert pg_ledger.head() == before
    assert pg_ledger.store.fetchone("SELECT count(*) FROM datoms WHERE e = 'poison'")[0] == 0
    result = pg_ledger.transact(small(3))
    assert result.tx == before.id + 1
    assert pg_ledger.verify().ok


def test_a_nul_in_the_reason_is_refused_alike_on_both_stores(ledger):
    ledger.declare(SCHEMA)
    before = ledger.head()
    with pytest.raises(BadInput, match="NUL"):
        ledger.transact(small(1), reason="a\x00b")
    assert ledger.head() == before


def test_a_small_commit_on_sqlite_is_one_statement_per_step(tmp_path):
    """SQLite keeps its one-statement-per-step path: BEGIN IMMEDIATE, two reads (the head
    with the schema version, the signer's keys), the inserts, COMMIT."""
    operator = Signer.generate("operator")
    led = Ledger.open(tmp_path / "keel.db", signer=operator)
    led.register_identity("operator", operator.public_key, "operator")
    led.declare(SCHEMA)
    led.transact(small(0))  # the schema read once after declaring
    statements: list[str] = []
    led.store.conn.set_trace_callback(statements.append)
    led.transact(small(1))
    led.store.conn.set_trace_callback(None)
    kinds = [s.split()[0].upper() for s in statements]
    assert kinds[0] == "BEGIN" and kinds[-1] == "COMMIT", statements
    assert kinds.count("SELECT") == 2, statements
    assert kinds.count("INSERT") == 1 + 3, statements
    assert len(kinds) == 2 + 2 + 4, statements
    led.close()
