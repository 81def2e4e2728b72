"""What the ledger needs from a store: SQL shared by both back ends, and their differences.

All of the ledger's SQL lives in the stores. Rows come back named (`rows.py`); the
ledger above owns every rule, the store only keeps rows and serialises writers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .rows import (
    DATOM_COLUMNS,
    FACT_COLUMNS,
    TX_COLUMNS,
    CheckpointRow,
    DatomRow,
    EntityFact,
    Fact,
    Head,
    TxRow,
    WriteStart,
    named,
)

__all__ = ["DATOM_COLUMNS", "INLINE_LIMIT", "TX_COLUMNS", "Segments", "Store"]

#: Values whose canonical bytes are longer than this live in the blob store.
INLINE_LIMIT = 1024

#: Which transactions a view can see: (branch id, highest visible tx) pairs.
Segments = Sequence[tuple[int, int]]

_HEAD = "SELECT id, hash, time FROM txs ORDER BY id DESC LIMIT 1"
_HEAD_ID = "SELECT max(id) FROM txs"
_SCHEMA_VERSION = "SELECT max(id) FROM txs WHERE schema = 1"
_HEAD_AND_SCHEMA_VERSION = (
    "SELECT id, hash, time, (SELECT max(id) FROM txs WHERE schema = 1)"
    " FROM txs ORDER BY id DESC LIMIT 1"
)
_MAIN_KEYS = (
    f"SELECT {FACT_COLUMNS} FROM datoms WHERE e = ? AND a = 'keel.identity/key'"
    " AND branch = 0 ORDER BY tx, idx"
)


def visibility(segments: Segments, prefix: str = "") -> tuple[str, list[int]]:
    clauses, params = [], []
    for branch, upto in segments:
        clauses.append(f"({prefix}branch = ? AND {prefix}tx <= ?)")
        params += [branch, upto]
    return "(" + " OR ".join(clauses) + ")", params


class Store:
    """Common SQL over a DB-API connection; subclasses set the dialect."""

    placeholder = "?"
    #: Exceptions by which the back end says its storage is damaged or unreadable.
    storage_errors: tuple[type[Exception], ...] = ()

    # -- dialect hooks -------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    @contextmanager
    def write(self) -> Iterator[None]:
        """An exclusive write transaction: commits serialize across processes and hosts."""
        raise NotImplementedError
        yield

    def put_blob(self, digest: bytes, data: bytes) -> None:
        raise NotImplementedError

    def get_blob(self, digest: bytes) -> bytes | None:
        raise NotImplementedError

    def drop_blobs(self, digests: Sequence[bytes]) -> None:
        """Within a write: remove these large values (no datom refers to them any more)."""
        raise NotImplementedError

    def scrub(self) -> list[str]:
        """After a write that erased values: make the back end drop every copy it keeps of
        what was erased (free pages, write-ahead log, dead row versions, blob files).
        Returns where bytes may still linger and why; empty when none do."""
        raise NotImplementedError

    def integrity_problem(self) -> str | None:
        """What is wrong with the storage itself (a damaged file), below the rows that
        verification recomputes; None when the back end finds nothing."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def location(self) -> str:
        raise NotImplementedError

    # -- plain SQL, for tests and benches that look beneath the ledger --------------------
    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._execute(self._q(sql), params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self._execute(self._q(sql), params).fetchone()

    # -- writing --------------------------------------------------------------------------
    def write_start(self, author_entity: str) -> WriteStart:
        """What a commit reads under the write lock: the head with the schema version, and
        the author's key datoms on main. Both queries are sent before either result is
        read, so a pipelining back end answers them in one round trip."""
        head = self._execute(self._q(_HEAD_AND_SCHEMA_VERSION))
        keys = self._execute(self._q(_MAIN_KEYS), [author_entity])
        row = head.fetchone()
        return WriteStart(
            _head(row),
            (row[3] or 0) if row else 0,
            named(Fact, keys.fetchall()),
        )

    def insert(
        self, tx: TxRow, datoms: Sequence[DatomRow], blobs: Mapping[bytes, bytes] | None = None
    ) -> None:
        """One transaction's rows, after the large values they refer to."""
        for digest, data in (blobs or {}).items():
            self.put_blob(digest, data)
        self._execute(self._q(f"INSERT INTO txs ({TX_COLUMNS}) VALUES ({_marks(12)})"), tx)
        self._executemany(
            self._q(f"INSERT INTO datoms ({DATOM_COLUMNS}) VALUES ({_marks(13)})"), datoms
        )

    def erase_values(self, positions: Sequence[tuple[int, int]]) -> None:
        """Within a write: drop the value and salt of each datom at (tx, idx), keeping its
        digest (what forgetting erases; docs/ledger-format.md §12)."""
        self._executemany(
            self._q("UPDATE datoms SET v = NULL, salt = NULL WHERE tx = ? AND idx = ?"),
            positions,
        )

    def blobs_in_use(self, digests: Sequence[bytes], attrs: Sequence[str]) -> set[bytes]:
        """Which of these blob keys some datom (of one of `attrs`, every attribute there
        is) still refers to. Asked per attribute, so each lookup uses the (a, v) index."""
        used: set[bytes] = set()
        for digest in digests:
            marks = ", ".join("?" * len(attrs))
            row = self.fetchone(
                f"SELECT 1 FROM datoms WHERE a IN ({marks}) AND v = ? AND big = 1 LIMIT 1",
                [*attrs, digest],
            )
            if row:
                used.add(digest)
        return used

    def add_checkpoint(self, cp: CheckpointRow) -> None:
        self._execute(
            self._q("INSERT INTO checkpoints (size, root, time, key, sig) VALUES (?, ?, ?, ?, ?)"),
            cp,
        )

    # -- transactions ---------------------------------------------------------------------
    def head(self) -> Head | None:
        """The newest transaction, or None for an empty ledger."""
        return _head(self.fetchone(_HEAD))

    def head_id(self) -> int:
        """The newest transaction's number (0: empty): the cheapest sign the ledger moved."""
        return _first_int(self._execute(_HEAD_ID).fetchone())

    def schema_version(self) -> int:
        """The newest transaction that changed the schema (0: none yet)."""
        return _first_int(self.fetchone(_SCHEMA_VERSION))

    def tx_rows(self, lo: int = 1, hi: int | None = None, branches: Sequence[int] = ()) -> list:
        """Transactions lo..hi (inclusive; hi None: to the end), oldest first."""
        sql = f"SELECT {TX_COLUMNS} FROM txs WHERE id >= ?"
        args: list[Any] = [lo]
        if hi is not None:
            sql += " AND id <= ?"
            args.append(hi)
        if branches:
            sql += f" AND branch IN ({', '.join('?' * len(branches))})"
            args += list(branches)
        return named(TxRow, self.fetchall(sql + " ORDER BY id", args))

    def last_tx_of(self, author: str) -> TxRow | None:
        """The newest transaction `author` signed (None: it never signed one)."""
        sql = f"SELECT {TX_COLUMNS} FROM txs WHERE author = ? ORDER BY id DESC LIMIT 1"
        rows = named(TxRow, self.fetchall(sql, [author]))
        return rows[0] if rows else None

    def tx_time(self, tx: int) -> int | None:
        row = self.fetchone("SELECT time FROM txs WHERE id = ?", [tx])
        return row[0] if row else None

    def tx_hashes(self, upto: int | None = None, after: int = 0) -> list[bytes]:
        """The hash column alone, in id order: all the Merkle log needs."""
        sql, args = "SELECT hash FROM txs WHERE id > ?", [after]
        if upto is not None:
            sql += " AND id <= ?"
            args.append(upto)
        return [bytes(r[0]) for r in self.fetchall(sql + " ORDER BY id", args)]

    def tx_id_by_hash(self, digest: bytes) -> int | None:
        row = self.fetchone("SELECT id FROM txs WHERE hash = ?", [digest])
        return row[0] if row else None

    def last_tx_on(self, branch: int) -> int:
        return _first_int(self.fetchone("SELECT max(id) FROM txs WHERE branch = ?", [branch]))

    def last_tx_at(self, instant: int) -> int:
        return _first_int(self.fetchone("SELECT max(id) FROM txs WHERE time <= ?", [instant]))

    def tx_count(self) -> int:
        return _first_int(self.fetchone("SELECT count(*) FROM txs"))

    def tx_ids(self, start: int, limit: int) -> list[int]:
        """Stored transaction ids from `start` on, ascending: for finding a gap."""
        rows = self.fetchall("SELECT id FROM txs WHERE id >= ? ORDER BY id LIMIT ?", [start, limit])
        return [r[0] for r in rows]

    # -- datoms ---------------------------------------------------------------------------
    def datom_rows(self, lo: int, hi: int) -> list:
        """The datoms of transactions lo..hi, by (tx, idx)."""
        rows = self.fetchall(
            f"SELECT {DATOM_COLUMNS} FROM datoms WHERE tx >= ? AND tx <= ? ORDER BY tx, idx",
            [lo, hi],
        )
        return named(DatomRow, rows)

    def datoms_after(self, tx: int) -> int:
        """How many datoms claim a transaction beyond `tx`."""
        return _first_int(self.fetchone("SELECT count(*) FROM datoms WHERE tx > ?", [tx]))

    def entity_datoms(
        self, e: str, segments: Segments | None, attr: str | None = None
    ) -> list[Fact]:
        """The visible datoms of one entity (or of one of its attributes), oldest first;
        with no segments, on every branch."""
        vis, params = visibility(segments) if segments is not None else ("1 = 1", [])
        sql = f"SELECT {FACT_COLUMNS} FROM datoms WHERE e = ? AND {vis}"
        args: list[Any] = [e, *params]
        if attr is not None:
            sql += " AND a = ?"
            args.append(attr)
        return named(Fact, self.fetchall(sql + " ORDER BY tx, idx", args))

    def entities_with(
        self, attr: str, key: bytes | None, big: int, segments: Segments, after: str, limit: int
    ) -> list[str]:
        """Entity ids that ever had `attr` (= key), in id order after `after`."""
        vis, params = visibility(segments)
        sql = f"SELECT DISTINCT e FROM datoms WHERE a = ? AND e > ? AND {vis}"
        args: list[Any] = [attr, after, *params]
        if key is not None:
            sql += " AND v = ? AND big = ?"
            args += [key, big]
        return [r[0] for r in self.fetchall(sql + " ORDER BY e LIMIT ?", [*args, limit])]

    def referrers(self, e: str, ref_tag: int, segments: Segments) -> list[tuple[str, str]]:
        vis, params = visibility(segments)
        rows = self.fetchall(
            f"SELECT DISTINCT e, a FROM datoms WHERE vtype = {ref_tag} AND v = ? AND {vis}"
            " ORDER BY e, a",
            [e.encode("utf-8"), *params],
        )
        return [(r[0], r[1]) for r in rows]

    def attr_datoms(self, attrs: Sequence[str], segments: Segments | None) -> list[EntityFact]:
        """The datoms of some attributes, oldest first; with no segments, on every branch."""
        vis, params = visibility(segments) if segments is not None else ("1 = 1", [])
        marks = ", ".join("?" * len(attrs))
        rows = self.fetchall(
            f"SELECT e, {FACT_COLUMNS} FROM datoms WHERE a IN ({marks}) AND {vis} ORDER BY tx, idx",
            [*attrs, *params],
        )
        return named(EntityFact, rows)

    def branch_datoms(self, branch: int, skip_prefix: str) -> list[EntityFact]:
        """Every datom written on one branch, oldest first, except attributes under
        `skip_prefix` (bookkeeping that is never replayed)."""
        rows = self.fetchall(
            f"SELECT e, {FACT_COLUMNS} FROM datoms WHERE branch = ? AND a NOT LIKE ?"
            " ORDER BY tx, idx",
            [branch, skip_prefix + "%"],
        )
        return named(EntityFact, rows)

    def changed_since(
        self, branch: int, after: int, skip_prefix: str
    ) -> list[tuple[str, str, int]]:
        """(entity, attribute, first tx) of what a branch changed after tx `after`."""
        rows = self.fetchall(
            "SELECT e, a, min(tx) FROM datoms WHERE branch = ? AND tx > ? AND a NOT LIKE ?"
            " GROUP BY e, a",
            [branch, after, skip_prefix + "%"],
        )
        return [(r[0], r[1], r[2]) for r in rows]

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoints(self) -> list[CheckpointRow]:
        """Every checkpoint, ordered by (size, time)."""
        rows = self.fetchall(
            "SELECT size, root, time, key, sig FROM checkpoints ORDER BY size, time"
        )
        return [CheckpointRow(r[0], bytes(r[1]), r[2], bytes(r[3]), bytes(r[4])) for r in rows]


def _head(row: Sequence | None) -> Head | None:
    return Head(row[0], bytes(row[1]), row[2]) if row else None


def _first_int(row: Sequence | None) -> int:
    return (row[0] or 0) if row else 0


def _marks(n: int) -> str:
    return ", ".join("?" * n)
