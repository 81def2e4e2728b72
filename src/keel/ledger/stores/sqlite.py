"""The embedded default: one SQLite file in WAL mode, large values as files under blobs/."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import KeelError
from .base import Store

DDL = (
    """CREATE TABLE IF NOT EXISTS txs (
        id INTEGER PRIMARY KEY, hash BLOB NOT NULL, prev BLOB NOT NULL,
        branch INTEGER NOT NULL, time INTEGER NOT NULL, author TEXT NOT NULL,
        key BLOB NOT NULL, reason TEXT NOT NULL, root BLOB NOT NULL, n INTEGER NOT NULL,
        sig BLOB NOT NULL, schema INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS txs_hash ON txs (hash)",
    "CREATE INDEX IF NOT EXISTS txs_time ON txs (time)",
    "CREATE INDEX IF NOT EXISTS txs_schema ON txs (id) WHERE schema = 1",
    """CREATE TABLE IF NOT EXISTS datoms (
        tx INTEGER NOT NULL, idx INTEGER NOT NULL, branch INTEGER NOT NULL,
        e TEXT NOT NULL, a TEXT NOT NULL, v BLOB, vtype INTEGER NOT NULL,
        big INTEGER NOT NULL, op INTEGER NOT NULL, vf INTEGER NOT NULL, vt INTEGER NOT NULL,
        salt BLOB, vdigest BLOB NOT NULL, PRIMARY KEY (tx, idx)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS datoms_eavt ON datoms (e, a, tx)",
    "CREATE INDEX IF NOT EXISTS datoms_avet ON datoms (a, v, e)",
    "CREATE INDEX IF NOT EXISTS datoms_vaet ON datoms (v) WHERE vtype = 6",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        size INTEGER NOT NULL, root BLOB NOT NULL, time INTEGER NOT NULL,
        key BLOB NOT NULL, sig BLOB NOT NULL)""",
)


class SqliteStore(Store):
    def __init__(self, path: Path, blob_dir: Path | None = None, synchronous: str = "FULL"):
        super().__init__()
        self.path = Path(path)
        self.blob_dir = blob_dir or self.path.parent / "blobs"
        if not self.path.parent.is_dir():
            raise KeelError(f"no directory {self.path.parent} for the ledger (run 'keel init')")
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=60
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.execute("PRAGMA busy_timeout=60000")
            self.conn.execute("PRAGMA cache_size=-65536")
            self.conn.execute("PRAGMA mmap_size=1073741824")
            with self.write():
                for stmt in DDL:
                    self.conn.execute(stmt)
        except sqlite3.DatabaseError as exc:
            raise KeelError(f"cannot open the ledger at {self.path}: {exc}") from None

    @property
    def location(self) -> str:
        return str(self.path)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    @contextmanager
    def write(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _blob_path(self, digest: bytes) -> Path:
        h = digest.hex()
        return self.blob_dir / h[:2] / h[2:]

    def put_blob(self, digest: bytes, data: bytes) -> None:
        """Write atomically and durably before the transaction that refers to it commits."""
        path = self._blob_path(digest)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_blob(self, digest: bytes) -> bytes | None:
        if len(digest) != 32:
            return None
        try:
            return self._blob_path(digest).read_bytes()
        except OSError:
            return None

    def close(self) -> None:
        self.conn.close()
