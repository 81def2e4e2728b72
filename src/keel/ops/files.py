"""File operations: shared files in pinned roots, read with their generation and written
over the generation the writer read (merged with newer edits, or a conflict naming the
lines). Each write is a transaction signed by the caller.

Reading needs `file.read`, writing `file.write`; both name the resolved path as the
resource `file`, so a pin's `files` roots bound them. No caller, the operator included,
reads or writes inside the keel home.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from ..files import SharedFiles, resolve
from .call import Call
from .models import Input, Output
from .registry import operation

PathField = Annotated[
    str, Field(min_length=1, max_length=4096, description="The file's absolute path.")
]


def _path(call: Call, text: str) -> Path:
    resolve(text)  # a relative path is refused before anything else
    return call.services.outside_home(text)


def _resources(p: Any, identity: str) -> dict:
    return {"file": [str(resolve(p.path))]}


def _files(call: Call, writes: bool = False) -> SharedFiles:
    signer = call.signer if writes else None
    return SharedFiles(call.ledger, signer, call.services.home.path / "locks" / "files")


class FilePathIn(Input):
    path: PathField


class FileContent(Output):
    """A file's content and the generation it is at."""

    path: str
    content: str
    generation: int = Field(description="keel's writes to it so far (0: never written by keel).")
    sha256: str
    size: int


@operation("file.read", capability="file.read", writes=False, resources=_resources)
def read(call: Call, p: FilePathIn) -> FileContent:
    """A file's content and its generation (pass the generation back when writing it)."""
    return FileContent.model_validate(_files(call).read(_path(call, p.path)))


class FileWriteIn(Input):
    path: PathField
    content: Annotated[str, Field(max_length=8 * 1024 * 1024, description="The new content.")]
    expect: Annotated[int | None, Field(ge=0)] = Field(
        None,
        description="The generation the content was edited from (from file.read; 0 for a "
        "new file). Newer edits to other lines are merged in; edits to the same lines are "
        "a conflict. Omitted: the current generation (the content replaces the file).",
    )


class FileWritten(Output):
    """A write: the new generation, and whether newer edits were merged in."""

    path: str
    generation: int
    merged: bool
    tx: int
    sha256: str
    size: int


@operation("file.write", capability="file.write", writes=True, resources=_resources)
def write(call: Call, p: FileWriteIn) -> FileWritten:
    """Write a file atomically over the generation you read; a stale write whose edits
    do not overlap the newer ones is merged, an overlapping one is a conflict naming the
    lines (nothing is written)."""
    path = _path(call, p.path)
    files = _files(call, writes=True)
    expect = files.generation(path) if p.expect is None else p.expect
    return FileWritten.model_validate(files.write(path, p.content, expect))


class FileGeneration(Output):
    generation: int
    author: str | None
    time: str | None
    tx: int | None
    size: int | None
    sha256: str | None
    merged: bool
    expected: int | None = Field(description="The generation the writer had read.")


@operation("file.history", capability="file.read", writes=False, resources=_resources)
def history(call: Call, p: FilePathIn) -> list[FileGeneration]:
    """Every write keel made to a file, oldest first: generation, author, time, size, hash."""
    return [FileGeneration.model_validate(g) for g in _files(call).history(_path(call, p.path))]
