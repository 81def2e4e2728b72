"""What the ledger needs from a store: SQL shared by both back ends, and their differences.

Rows are plain tuples in a fixed column order (see TX_COLUMNS and DATOM_COLUMNS); the
ledger above owns every rule, the store only keeps rows and serialises writers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

TX_COLUMNS = "id, hash, prev, branch, time, author, key, reason, root, n, sig, schema"
DATOM_COLUMNS = "tx, idx, branch, e, a, v, vtype, big, op, vf, vt, salt, vdigest"

#: Values whose canonical bytes are longer than this live in the blob store.
INLINE_LIMIT = 1024

#: Which transactions a view can see: (branch id, highest visible tx) pairs.
Segments = Sequence[tuple[int, int]]


def visibility(segments: Segments, prefix: str = "") -> tuple[str, list[int]]:
    clauses, params = [], []
    for branch, upto in segments:
        clauses.append(f"({prefix}branch = ? AND {prefix}tx <= ?)")
        params += [branch, upto]
    return "(" + " OR ".join(clauses) + ")", params


class Store:
    """Common SQL over a DB-API connection; subclasses set the dialect."""

    placeholder = "?"
    ddl: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._in_write = False

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

    def close(self) -> None:
        raise NotImplementedError

    @property
    def location(self) -> str:
        raise NotImplementedError

    # -- shared SQL -----------------------------------------------------------------------
    def _q(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._execute(self._q(sql), params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self._execute(self._q(sql), params).fetchone()

    def head(self) -> tuple[int, bytes, int] | None:
        """(id, hash, time) of the newest transaction, or None for an empty ledger."""
        row = self.fetchone("SELECT id, hash, time FROM txs ORDER BY id DESC LIMIT 1")
        return (row[0], bytes(row[1]), row[2]) if row else None

    def schema_version(self) -> int:
        row = self.fetchone("SELECT max(id) FROM txs WHERE schema = 1")
        return row[0] or 0 if row else 0

    def insert(self, tx_row: Sequence[Any], datom_rows: Sequence[Sequence[Any]]) -> None:
        self._execute(self._q(f"INSERT INTO txs ({TX_COLUMNS}) VALUES ({_marks(12)})"), tx_row)
        self._executemany(
            self._q(f"INSERT INTO datoms ({DATOM_COLUMNS}) VALUES ({_marks(13)})"), datom_rows
        )

    def entity_datoms(self, e: str, segments: Segments, attr: str | None = None) -> list[tuple]:
        """(a, v, vtype, big, op, vf, vt, tx, idx) for one entity, oldest first."""
        vis, params = visibility(segments)
        sql = f"SELECT a, v, vtype, big, op, vf, vt, tx, idx FROM datoms WHERE e = ? AND {vis}"
        args: list[Any] = [e, *params]
        if attr is not None:
            sql += " AND a = ?"
            args.append(attr)
        return self.fetchall(sql + " ORDER BY tx, idx", args)

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

    def attr_datoms(self, attrs: Sequence[str], segments: Segments | None) -> list[tuple]:
        """(e, a, v, vtype, big, op, vf, vt, tx, idx) of some attributes, oldest first.

        With no segments, every branch's datoms are read.
        """
        vis, params = visibility(segments) if segments is not None else ("1 = 1", [])
        marks = ", ".join("?" * len(attrs))
        return self.fetchall(
            f"SELECT e, a, v, vtype, big, op, vf, vt, tx, idx FROM datoms"
            f" WHERE a IN ({marks}) AND {vis} ORDER BY tx, idx",
            [*attrs, *params],
        )

    def tx_rows(self, lo: int = 1, hi: int | None = None, branches: Sequence[int] = ()) -> list:
        sql = f"SELECT {TX_COLUMNS} FROM txs WHERE id >= ?"
        args: list[Any] = [lo]
        if hi is not None:
            sql += " AND id <= ?"
            args.append(hi)
        if branches:
            sql += f" AND branch IN ({', '.join('?' * len(branches))})"
            args += list(branches)
        return self.fetchall(sql + " ORDER BY id", args)

    def datom_rows(self, lo: int, hi: int) -> list:
        return self.fetchall(
            f"SELECT {DATOM_COLUMNS} FROM datoms WHERE tx >= ? AND tx <= ? ORDER BY tx, idx",
            [lo, hi],
        )

    def tx_hashes(self) -> list[bytes]:
        return [bytes(r[0]) for r in self.fetchall("SELECT hash FROM txs ORDER BY id")]

    def tx_id_by_hash(self, digest: bytes) -> int | None:
        row = self.fetchone("SELECT id FROM txs WHERE hash = ?", [digest])
        return row[0] if row else None

    def last_tx_on(self, branch: int) -> int:
        row = self.fetchone("SELECT max(id) FROM txs WHERE branch = ?", [branch])
        return row[0] or 0 if row else 0

    def last_tx_at(self, instant: int) -> int:
        row = self.fetchone("SELECT max(id) FROM txs WHERE time <= ?", [instant])
        return row[0] or 0 if row else 0

    def add_checkpoint(self, size: int, root: bytes, time_us: int, key: bytes, sig: bytes) -> None:
        self._execute(
            self._q("INSERT INTO checkpoints (size, root, time, key, sig) VALUES (?, ?, ?, ?, ?)"),
            [size, root, time_us, key, sig],
        )

    def checkpoints(self) -> list[tuple[int, bytes, int, bytes, bytes]]:
        rows = self.fetchall(
            "SELECT size, root, time, key, sig FROM checkpoints ORDER BY size, time"
        )
        return [(r[0], bytes(r[1]), r[2], bytes(r[3]), bytes(r[4])) for r in rows]


def _marks(n: int) -> str:
    return ", ".join("?" * n)
