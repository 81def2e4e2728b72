"""Generations, merges and atomic writes of files in the operator's file roots.

A file's **generation** counts keel's writes to it: 0 for a file keel never wrote, then 1,
2, ... Each write is one signed transaction that records, on its own generation entity, the
content written (the ledger keeps large values as blobs), its SHA-256 and size, and whether
it was merged; the first write also records what the file held before (generation 0), so a
writer that read it then can still be merged. A write names the generation it read: when
the file has moved on since, its edit is merged (`merge.merge`) with the newer content,
base = that generation's content; edits on the same lines are a conflict and nothing is
written.

Check-then-write is atomic across processes: an advisory lock (fcntl) on a lock file per
path in keel's lock directory is held from reading the generation to renaming the new
content into place, and the ledger transaction checks the generation again under the
ledger's own write lock (which also serialises writers on other hosts of a PostgreSQL
ledger).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import BadInput, Conflict, NotFound
from ..ledger import Ledger, Signer
from ..ledger.schema import declaration
from .merge import describe, merge

#: Anything larger is refused rather than truncated.
MAX_BYTES = 8 * 1024 * 1024


DECLARATIONS = [
    declaration("file/path", "string", "a shared file's absolute path", unique="identity"),
    declaration("file/generation", "int", "the number of keel's writes to a file"),
    declaration("file/of", "string", "the path a generation of a file belongs to"),
    declaration("file/number", "int", "which generation of its file this is"),
    declaration("file/content", "string", "a generation's content"),
    declaration("file/sha256", "string", "the SHA-256 of a generation's content"),
    declaration("file/size", "int", "a generation's size in bytes"),
    declaration("file/expected", "int", "the generation the writer had read"),
    declaration("file/merged", "bool", "whether the write was merged with a newer generation"),
]


def resolve(text: str) -> Path:
    """An absolute path with its symlinks resolved (a root is judged by where a path
    really leads, so a link cannot lead out of it)."""
    if not isinstance(text, str) or not text.strip():
        raise BadInput("a file path cannot be empty")
    if "\x00" in text:
        raise BadInput("a file path cannot contain a NUL character")
    if not os.path.isabs(text):
        raise BadInput(f"{text!r} is not an absolute path; give the whole path")
    return Path(text).resolve()


def _key(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:32]


def _digest(text: str) -> tuple[str, int]:
    data = text.encode()
    return hashlib.sha256(data).hexdigest(), len(data)


def _read_disk(path: Path) -> str | None:
    if not path.exists():
        return None
    if not path.is_file():
        raise BadInput(f"{path} is not a regular file")
    data = path.read_bytes()
    if len(data) > MAX_BYTES:
        raise BadInput(f"{path} is larger than {MAX_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not UTF-8 text; keel coordinates text files") from None


class SharedFiles:
    """Shared files over one ledger connection, writing as `signer`."""

    def __init__(self, ledger: Ledger, signer: Signer | None, lock_dir: Path):
        self.ledger, self.signer, self.lock_dir = ledger, signer, lock_dir

    # -- reads -------------------------------------------------------------------------
    def generation(self, path: Path, view: Any = None) -> int:
        view = view or self.ledger.view()
        try:
            return view.value(f"file:{_key(path)}", "file/generation") or 0
        except BadInput:
            return 0  # the attributes are not declared yet: nothing was ever written

    def _content(self, path: Path, number: int, view: Any = None) -> str | None:
        view = view or self.ledger.view()
        return view.value(f"file:{_key(path)}:{number}", "file/content")

    def read(self, path: Path) -> dict:
        text = _read_disk(path)
        if text is None:
            raise NotFound(f"{path} does not exist")
        sha, size = _digest(text)
        return {
            "path": str(path),
            "content": text,
            "generation": self.generation(path),
            "sha256": sha,
            "size": size,
        }

    def history(self, path: Path) -> list[dict]:
        view = self.ledger.view()
        current = self.generation(path, view)
        out = []
        for number in range(1, current + 1):
            e = f"file:{_key(path)}:{number}"
            got = view.get(e) or {}
            rows = view.history(e, "file/number")
            first = rows[0] if rows else {}
            out.append(
                {
                    "generation": number,
                    "author": first.get("author"),
                    "time": first.get("tx_time"),
                    "tx": first.get("tx"),
                    "size": got.get("file/size"),
                    "sha256": got.get("file/sha256"),
                    "merged": bool(got.get("file/merged")),
                    "expected": got.get("file/expected"),
                }
            )
        return out

    # -- the write ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / f"{_key(path)}.lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def write(self, path: Path, content: str, expect: int) -> dict:
        """Write `content` over the generation `expect` the writer read (merged with any
        newer one); a Conflict names the lines when the edits overlap."""
        if expect < 0:
            raise BadInput("the expected generation cannot be negative")
        size = len(content.encode())
        if size > MAX_BYTES:
            raise BadInput(f"the content is larger than {MAX_BYTES} bytes")
        if not path.parent.is_dir():
            raise BadInput(f"{path.parent} is not a directory")
        with self._locked(path):
            current = self.generation(path)
            disk = _read_disk(path)
            if disk is None and expect > 0:
                raise BadInput(
                    f"{path} does not exist (it was removed); write it with expected generation 0"
                )
            if expect > current:
                raise BadInput(
                    f"{path} is at generation {current}; there is no generation {expect} yet"
                )
            theirs = disk if disk is not None else ""
            if expect == current == 0:
                base = theirs  # keel never wrote it: the writer read it as it is now
            else:
                stored = self._content(path, expect)
                base = stored if stored is not None else ""
            result = merge(base, theirs, content)
            if not result.clean:
                spans = ", ".join(
                    f"{describe(c.base)} (now {describe(c.theirs)})" for c in result.conflicts
                )
                raise Conflict(
                    f"conflict: {path} changed since generation {expect} on the lines this "
                    f"write changes: {spans}; nothing was written (read it again and retry)"
                )
            text = result.text
            assert text is not None
            merged = text != content
            return self._commit(path, text, expect, current, merged, disk)

    def _commit(
        self, path: Path, text: str, expect: int, current: int, merged: bool, disk: str | None
    ) -> dict:
        key, number = _key(path), current + 1
        sha, size = _digest(text)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".keel-tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text.encode())
                fh.flush()
                os.fsync(fh.fileno())
            if disk is not None:
                with contextlib.suppress(OSError):
                    os.chmod(tmp, path.stat().st_mode & 0o7777)

            def build(view: Any) -> list[dict]:
                now = view.value(f"file:{key}", "file/generation") or 0
                if now != current:
                    raise Conflict(f"{path} was written meanwhile by another node; retry")
                ops = [
                    {"op": "add", "e": f"file:{key}", "a": "file/path", "v": str(path)},
                    {"op": "add", "e": f"file:{key}", "a": "file/generation", "v": number},
                ]
                if current == 0 and view.value(f"file:{key}:0", "file/number") is None:
                    ops += _generation_ops(key, path, 0, disk or "", 0, False)
                return ops + _generation_ops(key, path, number, text, expect, merged)

            res = self.ledger.update(
                build, f"file write {path}", signer=self.signer, declare=DECLARATIONS
            )
            assert res is not None
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return {
            "path": str(path),
            "generation": number,
            "merged": merged,
            "tx": res.tx,
            "sha256": sha,
            "size": size,
        }


def _generation_ops(
    key: str, path: Path, number: int, text: str, expect: int, merged: bool
) -> list[dict]:
    e = f"file:{key}:{number}"
    sha, size = _digest(text)
    return [
        {"op": "add", "e": e, "a": "file/of", "v": str(path)},
        {"op": "add", "e": e, "a": "file/number", "v": number},
        {"op": "add", "e": e, "a": "file/content", "v": text},
        {"op": "add", "e": e, "a": "file/sha256", "v": sha},
        {"op": "add", "e": e, "a": "file/size", "v": size},
        {"op": "add", "e": e, "a": "file/expected", "v": expect},
        {"op": "add", "e": e, "a": "file/merged", "v": merged},
    ]
