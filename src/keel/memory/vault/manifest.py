"""What keel wrote into a vault, so that it never overwrites what someone else wrote.

`.keel/vault.json` (a dot-folder: Obsidian neither shows nor indexes it) lists each file
keel placed an item in, with the item's id, the version the file was rendered at and the
SHA-256 of the bytes keel wrote. A file whose bytes still hash to that is keel's to rewrite;
any other file at a path keel wants — edited since, or never keel's — is the user's. The
record is also where an item lives: a file the user moved or created stays where it is.

    {"format": 1,
     "files": [{"path": "entities/Acme Corp.md", "id": "entity:acme-corp",
                "version": 42, "sha256": "9f86d0…"}, ...]}

`sha256` is null for a note keel took in but did not write (it kept a property keel does
not store), so export leaves that note alone until it is imported clean or forced.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ...ledger import BadInput

FILE = ".keel/vault.json"
FORMAT = 1


def scan(root: Path) -> tuple[list[str], list[str]]:
    """The vault's markdown notes and its other files, vault-relative, leaving out
    dot-folders and dot-files (`.obsidian/`, `.trash/`, this record's `.keel/`): they are
    Obsidian's and keel's own, and Obsidian does not show them either."""
    notes, others = [], []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                rel = (Path(folder) / name).relative_to(root).as_posix()
                (notes if name.endswith(".md") else others).append(rel)
    return sorted(notes), sorted(others)


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass(frozen=True)
class Entry:
    id: str
    version: int
    sha256: str | None


class Manifest:
    """The record of one vault, keyed by vault-relative path."""

    def __init__(self, root: Path, entries: dict[str, Entry]):
        self.root = root
        self.entries = entries
        self._path_of = {entry.id: rel for rel, entry in entries.items()}
        self._saved = dict(entries)

    @property
    def exists(self) -> bool:
        return (self.root / FILE).exists()

    @classmethod
    def load(cls, root: Path) -> Manifest:
        path = root / FILE
        if not path.exists():
            return cls(root, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r} is not {FORMAT}")
            entries = {
                f["path"]: Entry(str(f["id"]), int(f["version"]), f["sha256"])
                for f in data["files"]
            }
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadInput(
                f"{path} is damaged ({exc}); remove it and export again (files changed since "
                f"keel wrote them then count as yours)"
            ) from None
        return cls(root, entries)

    def paths(self) -> dict[str, str]:
        """Item id -> the path of its file."""
        return dict(self._path_of)

    def entry(self, rel: str) -> Entry | None:
        return self.entries.get(rel)

    def wrote(self, rel: str, data: bytes) -> bool:
        """Whether the bytes at `rel` are exactly what keel last wrote there."""
        entry = self.entries.get(rel)
        return entry is not None and entry.sha256 == digest(data)

    def record(self, rel: str, e: str, version: int, text: str | None) -> None:
        """`e` lives at `rel`; keel wrote `text` there (None: the note is the user's)."""
        old = self._path_of.get(e)
        if old is not None and old != rel:
            del self.entries[old]
        self.forget(rel)
        self.entries[rel] = Entry(e, version, None if text is None else digest(text))
        self._path_of[e] = rel

    def forget(self, rel: str) -> None:
        entry = self.entries.pop(rel, None)
        if entry is not None and self._path_of.get(entry.id) == rel:
            del self._path_of[entry.id]

    def save(self) -> None:
        """Write the record if it changed, atomically (a crash leaves the old one)."""
        if self.entries == self._saved:
            return
        path = self.root / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        files = [{"path": rel, **asdict(e)} for rel, e in sorted(self.entries.items())]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n")
        os.replace(tmp, path)
        self._saved = dict(self.entries)
