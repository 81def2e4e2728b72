"""Where the recall index keeps its rows: SQLite with FTS5 beside a SQLite ledger, or
tables with PostgreSQL full text in the ledger's own PostgreSQL database.

The index is derived data: it can be dropped and rebuilt from the ledger at any time
(`keel reindex`). Each row is one searchable text (a value or a chunk of one) with both
time axes: valid [vf, vt) from its datom, and known [txf, txt) in transaction time.

Every database error on the index's connection surfaces as `IndexUnreadable`, so recall
can tell a broken index (answer from the ledger, say so) from a broken ledger (fail) —
both may be SQLite.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..ledger import KeelError, Ledger
from ..ledger.stores.sqlite import scrub_sqlite

#: How long a writer waits for another process's hold on the index before it is `busy`.
LOCK_WAIT_S = 60

ROW_COLUMNS = "id, e, a, surface, vhash, vf, vt, txf, txt, tx_time, author"

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


class IndexUnreadable(KeelError):
    """The recall index cannot be opened, read or written: garbage or truncated bytes,
    tables missing or of another shape, its database gone. `busy` when it is only held
    by another process for longer than the wait allows, which is no reason to rebuild it."""

    def __init__(self, message: str, busy: bool = False):
        super().__init__(message)
        self.busy = busy


def _unreadable(where: str, why: object, busy: bool = False) -> IndexUnreadable:
    lines = str(why).strip().splitlines()
    detail = lines[0] if lines else type(why).__name__
    return IndexUnreadable(f"the recall index {where} is unreadable: {detail}", busy)


def _difference(columns: tuple, expected: tuple) -> str:
    def names(cols: list) -> str:
        return ", ".join(" ".join(c) if isinstance(c, tuple) else c for c in cols) or "none"

    lost = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    if not lost and not extra:
        return "has its columns in another order"
    return f"has other columns (missing: {names(lost)}; unexpected: {names(extra)})"


class _Rows:
    """A statement's rows, fetched at once so that a fault in reading them (SQLite reads
    pages as rows are stepped through) is raised where the store turns it into
    IndexUnreadable. Offers the two cursor methods callers use."""

    def __init__(self, rows: list[tuple]):
        self.rows = rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return self.rows


def query_terms(query: str) -> list[str]:
    """Lower-case word tokens of a query, stop words dropped (unless nothing else is left)."""
    words = re.findall(r"\w+", query.lower())
    kept = [w for w in words if w not in _STOPWORDS]
    return list(dict.fromkeys(kept or words))[:32]


class IndexStore:
    """Shared SQL; the subclasses differ in connection, DDL, shape checks and full-text
    query."""

    ph = "?"
    #: The driver's errors, each raised to callers as IndexUnreadable.
    errors: tuple[type[Exception], ...]
    #: Where the index is, for messages ("at PATH", "in PostgreSQL": never a DSN).
    where: str
    DDL: tuple[str, ...]
    #: What an index of this version holds: the objects `DDL` makes (all or none may be
    #: missing) and each table's columns, in the form `_columns` reads them.
    OBJECTS: tuple[str, ...]
    COLUMNS: ClassVar[dict[str, tuple]]

    def _q(self, sql: str) -> str:
        return sql if self.ph == "?" else sql.replace("?", self.ph)

    def _busy(self, exc: Exception) -> bool:
        return False

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self.errors as exc:
            raise _unreadable(self.where, exc, self._busy(exc)) from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        with self._guard():
            cur = self.conn.execute(self._q(sql), params)
            return _Rows(cur.fetchall() if cur.description is not None else [])

    def _prepare(self) -> None:
        """Make a missing index, or check the one found: an index missing some of its
        tables, or with tables of another shape, would answer with silent gaps or fail on
        some later query, so it is unreadable until `keel reindex` rebuilds it. Runs in a
        write transaction, so two processes opening a new index cannot see each other's
        half-made one."""
        found = self._objects()
        missing = [name for name in self.OBJECTS if name not in found]
        if found and missing:
            raise _unreadable(self.where, f"{', '.join(missing)} missing")
        for stmt in self.DDL:
            self.execute(stmt)
        for table, expected in self.COLUMNS.items():
            columns = self._columns(table)
            if columns != expected:
                raise _unreadable(self.where, f"{table} {_difference(columns, expected)}")

    def meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM recall_meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.execute(
            "INSERT INTO recall_meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )

    #: A term in more than this share of rows is dropped from the full-text query: it
    #: ranks nothing, and scoring every row it matches is most of a query's time (1%:
    #: at 125k rows, 5% left a median query ranking about 20,000 matches, 30 ms).
    COMMON = 0.01
    _df: dict[str, int]
    _df_rows: int = 0

    def frequencies(self, terms: list[str], rows: int) -> dict[str, int]:
        """How many rows hold each term (counted once, and again when the index has grown
        by a tenth since); `rows` is how many rows the index holds."""
        if not hasattr(self, "_df") or rows > self._df_rows * 1.1:
            self._df, self._df_rows = {}, rows  # document frequencies drift as rows grow
        for t in terms:
            if t not in self._df:
                self._df[t] = self.doc_frequency(t)
        return {t: self._df[t] for t in terms}

    def selective(self, terms: list[str], rows: int) -> list[str]:
        """`terms` without the very common ones (the rarest two are always kept)."""
        if rows < 1000:
            return terms
        df = self.frequencies(terms, rows)
        by_rarity = sorted(terms, key=lambda t: df[t])
        keep = [t for t in terms if df[t] <= rows * self.COMMON]
        return keep if len(keep) >= 2 else [t for t in terms if t in by_rarity[:2]]

    #: From this many rows on, full text first asks for the passages that hold every kept
    #: term, and ORs the terms only when fewer than `ENOUGH` do: the AND is answered from
    #: the rarest term's rows, while the OR ranks every row any term is in.
    LARGE = 1000
    ENOUGH = 20

    def fulltext(self, query: str, limit: int, rows: int) -> list[tuple[int, float]]:
        """(row id, rank) of the best passages for `query`, best (lowest rank) first;
        `rows` is how many rows the index holds."""
        terms = query_terms(query)
        if not terms:
            return []
        kept = self.selective(terms, rows)
        if rows >= self.LARGE and len(kept) > 1:
            found = self._match(kept, True, limit)
            if len(found) >= self.ENOUGH:
                return found
        return self._match(kept, False, limit)

    def _match(self, terms: list[str], every: bool, limit: int) -> list[tuple[int, float]]:
        """Rows holding every term (`every`) or any, by rank."""
        raise NotImplementedError

    def cursor(self) -> int:
        return int(self.meta("cursor") or 0)

    def next_id(self) -> int:
        row = self.execute("SELECT max(id) FROM recall_rows").fetchone()
        return (row[0] or 0) + 1

    def insert_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (id, e, a, surface, text, vhash, vf, vt, txf, txt, tx_time, author, vec)."""
        self._executemany(
            self._q(
                "INSERT INTO recall_rows (id, e, a, surface, text, vhash, vf, vt, txf, txt, "
                "tx_time, author, vec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            rows,
        )

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._guard():
            self.conn.executemany(sql, rows)

    def open_rows(self, e: str, a: str, vhash: str, forever: int) -> list[tuple]:
        return self.execute(
            "SELECT id, text, vf, vt, vec FROM recall_rows "
            "WHERE e = ? AND a = ? AND vhash = ? AND txt = ?",
            [e, a, vhash, forever],
        ).fetchall()

    def close_row(self, row_id: int, tx: int) -> None:
        self.execute("UPDATE recall_rows SET txt = ? WHERE id = ?", [tx, row_id])

    def entity_info(self, e: str) -> tuple[str | None, str | None]:
        row = self.execute("SELECT surface, name FROM recall_entities WHERE e = ?", [e]).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def set_entity(self, e: str, surface: str | None, name: str | None) -> None:
        old_surface, old_name = self.entity_info(e)
        self.execute("DELETE FROM recall_entities WHERE e = ?", [e])
        self.execute(
            "INSERT INTO recall_entities (e, surface, name) VALUES (?, ?, ?)",
            [e, surface or old_surface, name or old_name],
        )

    def load(self) -> tuple[list[tuple], list[bytes | None]]:
        rows = self.execute(f"SELECT {ROW_COLUMNS}, vec FROM recall_rows ORDER BY id").fetchall()
        return [r[:-1] for r in rows], [r[-1] for r in rows]

    def text_of(self, ids: Sequence[int]) -> dict[int, str]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = self.execute(f"SELECT id, text FROM recall_rows WHERE id IN ({marks})", list(ids))
        return dict(rows.fetchall())

    def count(self) -> int:
        return self.execute("SELECT count(*) FROM recall_rows").fetchone()[0]

    def delete_entity(self, e: str) -> int:
        """Within a write: drop every row derived from entity `e`, and what the index knows
        of it (its surface and name); returns how many rows there were."""
        found = self.execute("SELECT count(*) FROM recall_rows WHERE e = ?", [e]).fetchone()[0]
        self.execute("DELETE FROM recall_rows WHERE e = ?", [e])
        self.execute("DELETE FROM recall_entities WHERE e = ?", [e])
        return found

    def scrub(self) -> list[str]:
        """After deleting rows: leave no copy of them in the index's storage. Returns what
        could not be done, and why."""
        raise NotImplementedError


_ROW_NAMES = (
    "id",
    "e",
    "a",
    "surface",
    "text",
    "vhash",
    "vf",
    "vt",
    "txf",
    "txt",
    "tx_time",
    "author",
    "vec",
)


class SqliteIndex(IndexStore):
    errors = (sqlite3.DatabaseError,)
    OBJECTS = ("recall_meta", "recall_rows", "recall_entities", "recall_fts", "recall_rows_fts")
    COLUMNS: ClassVar[dict[str, tuple]] = {
        "recall_meta": ("key", "value"),
        "recall_rows": _ROW_NAMES,
        "recall_entities": ("e", "surface", "name"),
        "recall_fts": ("text",),
    }
    DDL = (
        "CREATE TABLE IF NOT EXISTS recall_meta (key TEXT PRIMARY KEY, value TEXT)",
        """CREATE TABLE IF NOT EXISTS recall_rows (
            id INTEGER PRIMARY KEY, e TEXT NOT NULL, a TEXT NOT NULL, surface TEXT NOT NULL,
            text TEXT NOT NULL, vhash TEXT NOT NULL, vf INTEGER NOT NULL, vt INTEGER NOT NULL,
            txf INTEGER NOT NULL, txt INTEGER NOT NULL, tx_time INTEGER NOT NULL,
            author TEXT NOT NULL, vec BLOB)""",
        "CREATE INDEX IF NOT EXISTS recall_rows_eav ON recall_rows (e, a, vhash)",
        "CREATE TABLE IF NOT EXISTS recall_entities (e TEXT PRIMARY KEY, surface TEXT, name TEXT)",
        "CREATE VIRTUAL TABLE IF NOT EXISTS recall_fts USING fts5(text, content='recall_rows',"
        " content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
        "CREATE TRIGGER IF NOT EXISTS recall_rows_fts AFTER INSERT ON recall_rows BEGIN"
        " INSERT INTO recall_fts (rowid, text) VALUES (new.id, new.text); END",
    )

    def __init__(self, path: Path):
        self.path = path
        self.where = f"at {path}"
        if not path.exists() and path.parent.is_dir():
            # Derived from memory, so as private as the ledger: its -wal and -shm follow.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        with self._guard():
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_S
            )
        try:
            self.execute("PRAGMA journal_mode=WAL")
            self.execute("PRAGMA synchronous=NORMAL")
            self.execute("PRAGMA secure_delete=ON")  # as the ledger: freed bytes are zeroed
            self._in_transaction(self._prepare)
        except IndexUnreadable:
            self.conn.close()
            raise

    def _busy(self, exc: Exception) -> bool:
        return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))

    def _objects(self) -> set[str]:
        marks = ", ".join("?" * len(self.OBJECTS))
        rows = self.execute(f"SELECT name FROM sqlite_master WHERE name IN ({marks})", self.OBJECTS)
        return {r[0] for r in rows.fetchall()}

    def _columns(self, table: str) -> tuple:
        return tuple(r[1] for r in self.execute(f"PRAGMA table_info({table})").fetchall())

    def _in_transaction(self, work: Callable[[], None]) -> None:
        self.begin()
        try:
            work()
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def begin(self) -> None:
        self.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        with self._guard():
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def _match(self, terms: list[str], every: bool, limit: int) -> list[tuple[int, float]]:
        match = (" AND " if every else " OR ").join(_quoted(t) for t in terms)
        return self.execute(
            "SELECT rowid, rank FROM recall_fts WHERE recall_fts MATCH ? ORDER BY rank LIMIT ?",
            [match, limit],
        ).fetchall()

    def doc_frequency(self, term: str) -> int:
        return self.execute(
            "SELECT count(*) FROM recall_fts WHERE recall_fts MATCH ?", [_quoted(term)]
        ).fetchone()[0]

    def clear(self) -> None:
        def empty() -> None:
            for table in ("recall_rows", "recall_entities", "recall_meta"):
                self.execute(f"DELETE FROM {table}")
            self.execute("INSERT INTO recall_fts (recall_fts) VALUES ('delete-all')")

        self._in_transaction(empty)

    def delete_entity(self, e: str) -> int:
        """Also take the rows' words out of the full-text index: it keeps its own copy of
        each text's tokens (external content), and a deleted row's stay in their segment
        until every segment is merged into a new one ('optimize')."""
        rows = self.execute("SELECT id, text FROM recall_rows WHERE e = ?", [e]).fetchall()
        for rid, text in rows:
            self.execute(
                "INSERT INTO recall_fts (recall_fts, rowid, text) VALUES ('delete', ?, ?)",
                [rid, text],
            )
        super().delete_entity(e)
        if rows:
            self.execute("INSERT INTO recall_fts (recall_fts) VALUES ('optimize')")
        return len(rows)

    def scrub(self) -> list[str]:
        """As the ledger's file: rebuilt, and its write-ahead log truncated."""
        with self._guard():
            return scrub_sqlite(self.conn, self.path)

    def close(self) -> None:
        with self._guard():
            self.conn.close()


class PostgresIndex(IndexStore):
    ph = "%s"
    where = "in PostgreSQL"
    OBJECTS = ("recall_meta", "recall_rows", "recall_entities")
    COLUMNS: ClassVar[dict[str, tuple]] = {
        "recall_meta": (("key", "text"), ("value", "text")),
        "recall_rows": (
            ("id", "bigint"),
            *((name, "text") for name in ("e", "a", "surface", "text", "vhash")),
            *((name, "bigint") for name in ("vf", "vt", "txf", "txt", "tx_time")),
            ("author", "text"),
            ("vec", "bytea"),
            ("tsv", "tsvector"),
        ),
        "recall_entities": (("e", "text"), ("surface", "text"), ("name", "text")),
    }
    DDL = (
        "CREATE TABLE IF NOT EXISTS recall_meta (key TEXT PRIMARY KEY, value TEXT)",
        """CREATE TABLE IF NOT EXISTS recall_rows (
            id BIGINT PRIMARY KEY, e TEXT NOT NULL, a TEXT NOT NULL, surface TEXT NOT NULL,
            text TEXT NOT NULL, vhash TEXT NOT NULL, vf BIGINT NOT NULL, vt BIGINT NOT NULL,
            txf BIGINT NOT NULL, txt BIGINT NOT NULL, tx_time BIGINT NOT NULL,
            author TEXT NOT NULL, vec BYTEA,
            tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)""",
        "CREATE INDEX IF NOT EXISTS recall_rows_eav ON recall_rows (e, a, vhash)",
        "CREATE INDEX IF NOT EXISTS recall_rows_tsv ON recall_rows USING GIN (tsv)",
        "CREATE TABLE IF NOT EXISTS recall_entities (e TEXT PRIMARY KEY, surface TEXT, name TEXT)",
    )

    def __init__(self, dsn: str):
        import psycopg

        self.errors = (psycopg.Error,)
        with self._guard():
            self.conn = psycopg.connect(dsn, autocommit=True)
            # As SQLite's busy timeout: a writer held up longer than this (another process
            # paused while it holds the index's lock) gives up, `busy`, instead of waiting
            # for ever.
            self.conn.execute(f"SET lock_timeout = '{LOCK_WAIT_S}s'")
        try:
            with self._guard(), self.conn.transaction():
                self.execute("SELECT pg_advisory_xact_lock(7717001)")
                self._prepare()
        except IndexUnreadable:
            self.conn.close()
            raise

    def _busy(self, exc: Exception) -> bool:
        return getattr(exc, "sqlstate", None) == "55P03"  # lock_not_available

    @staticmethod
    def drop(dsn: str) -> None:
        """Drop the index's tables, whatever their state, so the next open makes them anew."""
        import psycopg

        try:
            with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(7717001)")
                conn.execute("DROP TABLE IF EXISTS recall_rows, recall_entities, recall_meta")
        except psycopg.Error as exc:
            raise _unreadable(PostgresIndex.where, exc) from exc

    def _objects(self) -> set[str]:
        rows = self.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = ANY(?)",
            [list(self.OBJECTS)],
        )
        return {r[0] for r in rows.fetchall()}

    def _columns(self, table: str) -> tuple:
        return tuple(
            self.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = ?"
                " ORDER BY ordinal_position",
                [table],
            ).fetchall()
        )

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._guard(), self.conn.cursor() as cur:
            cur.executemany(sql, rows)

    def begin(self) -> None:
        self.execute("BEGIN")
        # One indexer at a time per database; a second one waits, then sees the new cursor.
        self.execute("SELECT pg_advisory_xact_lock(7717001)")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    def _match(self, terms: list[str], every: bool, limit: int) -> list[tuple[int, float]]:
        found = self.execute(
            "SELECT id, ts_rank_cd(tsv, q) AS r FROM recall_rows,"
            " to_tsquery('english', %s) q WHERE tsv @@ q ORDER BY r DESC LIMIT %s",
            [(" & " if every else " | ").join(terms), limit],
        ).fetchall()
        return [(r[0], -r[1]) for r in found]

    def doc_frequency(self, term: str) -> int:
        return self.execute(
            "SELECT count(*) FROM recall_rows WHERE tsv @@ to_tsquery('english', ?)", [term]
        ).fetchone()[0]

    def clear(self) -> None:
        with self._guard(), self.conn.transaction():
            for table in ("recall_rows", "recall_entities", "recall_meta"):
                self.execute(f"DELETE FROM {table}")

    def scrub(self) -> list[str]:
        """As the ledger's tables: rewritten (VACUUM FULL), so no dead row version, index
        entry or TOAST chunk keeps a deleted text or vector."""
        from ..ledger.stores.postgres import vacuum_full

        with self._guard():
            return vacuum_full(self.conn, ("recall_rows", "recall_entities"))

    def close(self) -> None:
        with self._guard():
            self.conn.close()


def _quoted(term: str) -> str:
    return '"' + term.replace('"', "") + '"'


def _sqlite_path(ledger: Ledger) -> Path:
    path = Path(ledger.store.location)
    return path.with_name(path.stem + ".recall.db")


def open_index(ledger: Ledger) -> IndexStore:
    """The index for `ledger`'s store: beside the SQLite file, or in the same PostgreSQL.

    Raises IndexUnreadable when the index found there cannot be used."""
    dsn = getattr(ledger.store, "dsn", None)
    return PostgresIndex(dsn) if dsn else SqliteIndex(_sqlite_path(ledger))


def drop_index(ledger: Ledger) -> None:
    """Remove `ledger`'s index whatever its state, so `open_index` makes a new one.

    Beside a SQLite ledger that is deleting the index file with its -wal, -shm and
    -journal, which belong to the deleted file and must never be paired with a new one;
    the ledger's own files are never among them. Another process holding the old file
    open keeps its (unlinked) copy until it reopens."""
    dsn = getattr(ledger.store, "dsn", None)
    if dsn:
        PostgresIndex.drop(dsn)
        return
    path = _sqlite_path(ledger)
    for suffix in ("", "-wal", "-shm", "-journal"):
        leftover = path.with_name(path.name + suffix)
        try:
            leftover.unlink(missing_ok=True)
        except OSError as exc:
            raise KeelError(
                f"cannot delete the recall index file {leftover}: {exc.strerror}"
            ) from None


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()
