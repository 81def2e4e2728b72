"""Where the recall index keeps its rows: SQLite with FTS5 beside a SQLite ledger, or
tables with PostgreSQL full text in the ledger's own PostgreSQL database.

The index is derived data: it can be dropped and rebuilt from the ledger at any time
(`keel reindex`). Each row is one searchable text (a value or a chunk of one) with both
time axes: valid [vf, vt) from its datom, and known [txf, txt) in transaction time.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..ledger import KeelError, Ledger

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


def query_terms(query: str) -> list[str]:
    """Lower-case word tokens of a query, stop words dropped (unless nothing else is left)."""
    words = re.findall(r"\w+", query.lower())
    kept = [w for w in words if w not in _STOPWORDS]
    return list(dict.fromkeys(kept or words))[:32]


class IndexStore:
    """Shared SQL; the subclasses differ in connection, DDL and full-text query."""

    ph = "?"

    def _q(self, sql: str) -> str:
        return sql if self.ph == "?" else sql.replace("?", self.ph)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(self._q(sql), params)

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
    #: ranks nothing, and scoring every row it matches is most of a query's time.
    COMMON = 0.05
    _df: dict[str, int]
    _df_rows: int = 0

    def selective(self, terms: list[str], rows: int) -> list[str]:
        """`terms` without the very common ones (the rarest two are always kept); `rows` is
        how many rows the index holds."""
        if rows < 1000:
            return terms
        if not hasattr(self, "_df") or rows > self._df_rows * 1.1:
            self._df, self._df_rows = {}, rows  # document frequencies drift as rows grow
        for t in terms:
            if t not in self._df:
                self._df[t] = self.doc_frequency(t)
        by_rarity = sorted(terms, key=lambda t: self._df[t])
        keep = [t for t in terms if self._df[t] <= rows * self.COMMON]
        return keep if len(keep) >= 2 else [t for t in terms if t in by_rarity[:2]]

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


class SqliteIndex(IndexStore):
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
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=60
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            for stmt in self.DDL:
                self.conn.execute(stmt)
        except sqlite3.DatabaseError as exc:
            raise KeelError(f"cannot open the recall index at {path}: {exc}") from None

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def fulltext(self, query: str, limit: int, rows: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join(_quoted(t) for t in self.selective(terms, rows))
        return self.conn.execute(
            "SELECT rowid, rank FROM recall_fts WHERE recall_fts MATCH ? ORDER BY rank LIMIT ?",
            [match, limit],
        ).fetchall()

    def doc_frequency(self, term: str) -> int:
        return self.conn.execute(
            "SELECT count(*) FROM recall_fts WHERE recall_fts MATCH ?", [_quoted(term)]
        ).fetchone()[0]

    def clear(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        for table in ("recall_rows", "recall_entities", "recall_meta"):
            self.conn.execute(f"DELETE FROM {table}")
        self.conn.execute("INSERT INTO recall_fts (recall_fts) VALUES ('delete-all')")
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class PostgresIndex(IndexStore):
    ph = "%s"
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

        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
            with self.conn.transaction():
                self.conn.execute("SELECT pg_advisory_xact_lock(7717001)")
                for stmt in self.DDL:
                    self.conn.execute(stmt)
        except psycopg.Error as exc:
            raise KeelError(f"cannot open the recall index in PostgreSQL: {exc}") from None

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql, rows)

    def begin(self) -> None:
        self.conn.execute("BEGIN")
        # One indexer at a time per database; a second one waits, then sees the new cursor.
        self.conn.execute("SELECT pg_advisory_xact_lock(7717001)")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    def fulltext(self, query: str, limit: int, rows: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        rows = self.conn.execute(
            "SELECT id, ts_rank_cd(tsv, q) AS r FROM recall_rows,"
            " to_tsquery('english', %s) q WHERE tsv @@ q ORDER BY r DESC LIMIT %s",
            [" | ".join(self.selective(terms, rows)), limit],
        ).fetchall()
        return [(r[0], -r[1]) for r in rows]

    def doc_frequency(self, term: str) -> int:
        return self.conn.execute(
            "SELECT count(*) FROM recall_rows WHERE tsv @@ to_tsquery('english', %s)", [term]
        ).fetchone()[0]

    def clear(self) -> None:
        with self.conn.transaction():
            for table in ("recall_rows", "recall_entities", "recall_meta"):
                self.conn.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        self.conn.close()


def _quoted(term: str) -> str:
    return '"' + term.replace('"', "") + '"'


def open_index(ledger: Ledger) -> IndexStore:
    """The index for `ledger`'s store: beside the SQLite file, or in the same PostgreSQL."""
    store = ledger.store
    dsn = getattr(store, "dsn", None)
    if dsn:
        return PostgresIndex(dsn)
    path = Path(store.location)
    return SqliteIndex(path.with_name(path.stem + ".recall.db"))


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()
