"""PostgreSQL: one ledger shared by several processes and hosts.

Writers take a transaction-scoped advisory lock, so commits serialize and the chain
stays linear whichever process or host writes. A write runs in pipeline mode: the BEGIN
and the lock travel with the first reads, and the inserts with the COMMIT, so a small
commit costs two round trips to the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from ..errors import KeelError
from .base import Store

#: The advisory lock key that serializes ledger commits ("keel" in ASCII).
WRITE_LOCK = 0x6B65656C

DDL = (
    """CREATE TABLE IF NOT EXISTS txs (
        id BIGINT PRIMARY KEY, hash BYTEA NOT NULL, prev BYTEA NOT NULL,
        branch BIGINT NOT NULL, time BIGINT NOT NULL, author TEXT NOT NULL,
        key BYTEA NOT NULL, reason TEXT NOT NULL, root BYTEA NOT NULL, n BIGINT NOT NULL,
        sig BYTEA NOT NULL, schema SMALLINT NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS txs_hash ON txs (hash)",
    "CREATE INDEX IF NOT EXISTS txs_time ON txs (time)",
    "CREATE INDEX IF NOT EXISTS txs_schema ON txs (id) WHERE schema = 1",
    """CREATE TABLE IF NOT EXISTS datoms (
        tx BIGINT NOT NULL, idx INTEGER NOT NULL, branch BIGINT NOT NULL,
        e TEXT NOT NULL, a TEXT NOT NULL, v BYTEA, vtype SMALLINT NOT NULL,
        big SMALLINT NOT NULL, op SMALLINT NOT NULL, vf BIGINT NOT NULL, vt BIGINT NOT NULL,
        salt BYTEA, vdigest BYTEA NOT NULL, PRIMARY KEY (tx, idx))""",
    "CREATE INDEX IF NOT EXISTS datoms_eavt ON datoms (e, a, tx)",
    "CREATE INDEX IF NOT EXISTS datoms_avet ON datoms (a, v, e)",
    "CREATE INDEX IF NOT EXISTS datoms_vaet ON datoms (v) WHERE vtype = 6",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        size BIGINT NOT NULL, root BYTEA NOT NULL, time BIGINT NOT NULL,
        key BYTEA NOT NULL, sig BYTEA NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS blobs (hash BYTEA PRIMARY KEY, data BYTEA NOT NULL)",
)


class PostgresStore(Store):
    placeholder = "%s"
    storage_errors = (psycopg.errors.DataCorrupted, psycopg.errors.IndexCorrupted)

    def __init__(self, dsn: str):
        self.dsn = dsn
        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
            with self.write():
                for stmt in DDL:
                    self.conn.execute(stmt)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise KeelError(f"cannot open the PostgreSQL ledger: {first}") from None

    @property
    def location(self) -> str:
        return self.dsn

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params, prepare=True)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Inside a write this rides the write's pipeline: the rows go out with the
        COMMIT, and nothing waits for their results until then."""
        with self.conn.cursor() as cur:
            cur.executemany(sql, rows)

    @contextmanager
    def write(self) -> Iterator[None]:
        conn = self.conn
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK], prepare=True)
                yield
                conn.execute("COMMIT")
        finally:
            # The body raised, or the server refused a write: the pipeline has synced, and
            # what it wrote is undone before the connection is used again.
            if conn.pgconn.transaction_status in _OPEN:
                conn.execute("ROLLBACK")

    def put_blob(self, digest: bytes, data: bytes) -> None:
        self.conn.execute(
            "INSERT INTO blobs (hash, data) VALUES (%s, %s) ON CONFLICT DO NOTHING", [digest, data]
        )

    def get_blob(self, digest: bytes) -> bytes | None:
        row = self.conn.execute("SELECT data FROM blobs WHERE hash = %s", [digest]).fetchone()
        return bytes(row[0]) if row else None

    def drop_blobs(self, digests: Sequence[bytes]) -> None:
        if digests:
            self.conn.execute("DELETE FROM blobs WHERE hash = ANY(%s)", [list(digests)])

    def scrub(self) -> list[str]:
        """Rewrite the tables a forgetting changed, with their indexes and TOAST.

        A plain VACUUM marks the dead row versions' space free but leaves their bytes in
        the pages (index entries and deleted blobs above all), so only VACUUM FULL, which
        writes new files from the live rows and drops the old ones, leaves no copy. It
        holds an exclusive lock on each table while it runs, and it cannot run in a
        transaction, so it runs after the commit (see `vacuum_full`). Outside its reach:
        PostgreSQL's own write-ahead log and archives, and backups."""
        return vacuum_full(self.conn, ("datoms", "blobs"))

    def integrity_problem(self) -> str | None:
        """PostgreSQL checks its own pages (and checksums, when enabled) as it reads them;
        verification's recomputation of every row is the ledger's check."""
        return None

    def close(self) -> None:
        self.conn.close()


_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)

#: How long a scrub waits for transactions older than the erasure to end.
SNAPSHOT_WAIT = 60.0


def vacuum_full(conn: psycopg.Connection, tables: Sequence[str]) -> list[str]:
    """VACUUM FULL `tables` once no transaction that began before now is still open.

    Such a transaction may still see the row versions an erasure just replaced, so VACUUM
    FULL would copy them, bytes and all, into the new files (and while it holds a lock on
    a table, VACUUM FULL cannot start). Waits up to `SNAPSHOT_WAIT` seconds for them to
    end, and as long again for each table's lock; returns notes on what it could not do."""
    (since,) = conn.execute("SELECT clock_timestamp()").fetchone()
    deadline = time.monotonic() + SNAPSHOT_WAIT
    while True:
        older = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_xmin IS NOT NULL AND xact_start < %s",
                [since],
            ).fetchall()
        ]
        if not older or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    notes = []
    if older:
        notes.append(
            f"PostgreSQL sessions {', '.join(map(str, older))} kept transactions open from "
            f"before the erasure, so old row versions of {', '.join(tables)} may survive until "
            "the next forgetting (or a VACUUM FULL) after they end"
        )
    conn.execute(f"SET lock_timeout = '{int(SNAPSHOT_WAIT * 1000)}ms'")
    try:
        for table in tables:
            try:
                conn.execute(f"VACUUM FULL {table}")
            except psycopg.errors.LockNotAvailable:
                notes.append(
                    f"{table} was locked by another session and could not be rewritten; the "
                    "next forgetting (or a VACUUM FULL) does it"
                )
    finally:
        conn.execute("RESET lock_timeout")
    return notes
