"""File names and where each item's file is, and which file a `[[link]]` reaches.

Names must work wherever a vault is opened — Windows, macOS, Linux, Android — and in
Obsidian's links: no `: * ? " < > | \\ /` (Windows), no `# ^ [ ] |` (they end or split an
Obsidian link), no leading dot (a hidden file Obsidian does not show), no trailing dot or
space, no reserved Windows device name (CON, NUL, COM1, ...), at most 100 bytes.

Obsidian resolves `[[target]]` without looking at frontmatter aliases: a target with a
folder is a path from the vault root, a bare one is a file name anywhere in the vault, both
case-insensitively with `.md` optional. So an entity's file is named by its display name
(`entities/Acme Corp.md`, reached by `[[Acme Corp]]`) and a source's file by the first 8
hex digits of its hash (`sources/5fd7f9b8.md`, reached by `[[sources/5fd7f9b8]]`).

Once an item has a file its path is recorded (the manifest) and kept: a later rename in
keel, or a move in Obsidian, never makes a second copy.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from .fields import FOLDERS, INDEX

_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f:*?"<>|\\/#^\[\]]+')
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in "0123456789¹²³"}
)
MAX_NAME_BYTES = 100
_HEX = re.compile(r"[0-9a-f]{8,64}")


class _Reads(Protocol):
    """What naming needs from a reading of the ledger (`render.Snap`)."""

    def get(self, e: str) -> dict: ...

    def date(self, us: int | None) -> str: ...


def file_stem(text: str) -> str:
    """`text` made into a file name (without `.md`) valid on every system and in links;
    runs of forbidden characters become one space."""
    text = " ".join(_FORBIDDEN.sub(" ", unicodedata.normalize("NFC", str(text))).split())
    text = text.encode()[:MAX_NAME_BYTES].decode(errors="ignore").strip(" .")
    if not text:
        return "untitled"
    head, dot, rest = text.partition(".")
    if head.rstrip().upper() in _RESERVED:
        text = f"{head.rstrip()}_{dot}{rest}"
    return text


def _names(snap: _Reads, surface: str, e: str) -> list[str]:
    """File names for an item, best first (without `.md`)."""
    got = snap.get(e)
    tail = e.split(":", 1)[-1]
    if surface == "entity":
        return [file_stem(got.get("entity/name") or got.get("entity/slug") or tail)]
    if surface == "source":
        digits = str(got.get("source/hash") or "").removeprefix("sha256:").lower()
        if _HEX.fullmatch(digits):
            return [digits[:8], digits[:16], digits]
        return [file_stem(tail)]
    if surface == "article":
        return [file_stem(got.get("article/slug") or tail)]
    if surface == "canon":
        return [file_stem(got.get("canon/name") or tail)]
    if surface == "daybook":
        return [file_stem(f"{got.get('daybook/day') or 'undated'}-{tail}")]
    if surface == "working":
        return [file_stem(f"{got.get('mem/scope') or 'unscoped'}-{tail}")]
    return [file_stem(f"{snap.date(got.get('mem/at'))}-{tail}")]


def _paths(snap: _Reads, surface: str, e: str) -> Iterator[str]:
    """Vault-relative paths an item's file may take, best first, without end."""
    if surface == INDEX:
        names, folder = [INDEX], ""
    else:
        names, folder = _names(snap, surface, e), FOLDERS[surface] + "/"
    yield from (f"{folder}{n}.md" for n in names)
    for n in itertools.count(2):
        yield f"{folder}{names[0]} {n}.md"


class Layout:
    """Where each item's file is, as vault-relative '/'-separated paths: the recorded path
    when there is one (the manifest, or where the import found the file), else the first
    free path the naming rules give."""

    def __init__(self, paths: Mapping[str, str] | None = None):
        self.paths: dict[str, str] = dict(paths or {})
        self._by_path: dict[str, str] | None = None
        self._by_name: dict[str, list[str]] = {}

    def place(self, e: str, rel: str) -> None:
        old = self.paths.get(e)
        self.paths[e] = rel
        if self._by_path is not None:  # keep the lookup current rather than rebuild it
            if old is not None:
                self._unindex(e, old)
            self._index(e, rel)

    def _index(self, e: str, rel: str) -> None:
        key = rel.casefold().removesuffix(".md")
        self._by_path[key] = e
        self._by_name.setdefault(key.rsplit("/", 1)[-1], []).append(e)

    def _unindex(self, e: str, rel: str) -> None:
        key = rel.casefold().removesuffix(".md")
        if self._by_path.get(key) == e:
            del self._by_path[key]
        same = self._by_name.get(key.rsplit("/", 1)[-1], [])
        if e in same:
            same.remove(e)

    def assign(self, snap: _Reads, items: Iterable[tuple[str, str]]) -> None:
        """Give each item without a path the first one free — compared case-insensitively,
        as macOS, Windows and Obsidian compare names."""
        used = {p.casefold() for p in self.paths.values()}
        for surface, e in items:
            if e in self.paths:
                continue
            rel = next(p for p in _paths(snap, surface, e) if p.casefold() not in used)
            used.add(rel.casefold())
            self.place(e, rel)

    def link_target(self, e: str) -> str | None:
        """What a link to `e`'s file says: its path without `.md`."""
        rel = self.paths.get(e)
        return rel[:-3] if rel else None

    def resolve(self, target: str) -> str | None:
        """The item whose file `[[target]]` reaches in Obsidian, if one does: the path from
        the vault root, else the one file of that name; case-insensitive, `.md` optional,
        aliases not considered. A name two files share reaches neither here."""
        if self._by_path is None:
            self._by_path, self._by_name = {}, {}
            for e, rel in self.paths.items():
                self._index(e, rel)
        key = target.strip().lstrip("/").casefold().removesuffix(".md")
        if key in self._by_path:
            return self._by_path[key]
        hits = self._by_name.get(key, []) if "/" not in key else []
        return hits[0] if len(hits) == 1 else None
