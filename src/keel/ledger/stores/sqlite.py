"""The embedded default: one SQLite file in WAL mode, large values as files under blobs/."""

from __future__ import annotations

import contextlib
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
    storage_errors = (sqlite3.DatabaseError,)

    def __init__(self, path: Path, blob_dir: Path | None = None, synchronous: str = "FULL"):
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
            # Whatever SQLite frees it overwrites with zeros, so a forgotten value leaves no
            # copy in a free page or a page's slack (keel deletes almost nothing else).
            self.conn.execute("PRAGMA secure_delete=ON")
            with self.write():
                for stmt in DDL:
                    self.conn.execute(stmt)
        except sqlite3.DatabaseError as exc:
            raise KeelError(f"cannot open the ledger at {self.path}: {exc}") from None
        #: Blobs dropped by the write in progress: their files go once it commits.
        self._dropped: list[bytes] = []

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
            self._dropped.clear()
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
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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

    def drop_blobs(self, digests: Sequence[bytes]) -> None:
        """Files are not transactional: they are removed by `scrub`, after the commit."""
        self._dropped.extend(digests)

    def scrub(self) -> list[str]:
        """Overwrite and remove the dropped blob files; rebuild the database file; then
        checkpoint the write-ahead log into it and truncate the log.

        secure_delete zeroes the erased cells themselves, but a b-tree page that was split
        or rebuilt before keeps stale copies of cells it once held in its unallocated
        space, which no pragma clears: only VACUUM, which writes every page anew from the
        live rows, leaves none. The old page images then sit in the log until the
        checkpoint, and the truncation drops them."""
        notes = []
        dropped, self._dropped = self._dropped, []
        for digest in dropped:
            try:
                _shred(self._blob_path(digest))
            except OSError as exc:
                notes.append(f"blob {digest.hex()[:16]}… could not be removed: {exc.strerror}")
        notes += scrub_sqlite(self.conn, self.path)
        return notes

    def integrity_problem(self) -> str | None:
        """SQLite's own structural check of every page (`PRAGMA quick_check`), and the file
        header's write version. Verification recomputes rows; a damaged header or b-tree
        can leave every row readable while writes fail, and only these checks see it."""
        try:
            found = [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall()]
            header = _read_header(self.path)
        except (sqlite3.DatabaseError, OSError) as exc:
            return f"the SQLite file {self.path} is damaged: {exc}"
        if found != ["ok"]:
            listing = "; ".join(" ".join(str(f).split()) for f in found[:3])
            return f"the SQLite file {self.path} is damaged: {listing}"
        if header[_WRITE_VERSION] > _NEWEST_FORMAT:
            return (
                f"the SQLite file {self.path} is damaged: its header's write version is "
                f"{header[_WRITE_VERSION]}, so SQLite refuses every write to it"
            )
        return None

    def close(self) -> None:
        self.conn.close()


#: The header byte holding SQLite's file format write version: 1 legacy, 2 WAL. A higher
#: one opens read-only (a higher read version, byte 19, does not open at all).
_WRITE_VERSION = 18
_NEWEST_FORMAT = 2


def scrub_sqlite(conn: sqlite3.Connection, path: Path) -> list[str]:
    """Rebuild a SQLite database in WAL mode and truncate its log, so that what was
    deleted from it survives in neither file; returns what could not be done, and why.
    Shared with the recall index, which keeps its own file."""
    notes = []
    try:
        conn.execute("VACUUM")
    except sqlite3.OperationalError as exc:
        notes.append(f"{path.name} could not be rebuilt ({exc}); stale pages may keep copies")
    busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        notes.append(
            f"another connection kept {path.name}-wal from being truncated; its old pages go "
            "at the next checkpoint"
        )
    return notes


def _shred(path: Path) -> None:
    """Overwrite a file with zeros, sync it, then unlink it (and its folder, if empty)."""
    if not path.exists():
        return
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        f.write(bytes(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def _read_header(path: Path) -> bytes:
    with path.open("rb") as f:
        header = f.read(100)
    if len(header) < 100:
        raise OSError(f"its header is {len(header)} bytes long")
    return header
