"""Links in text, between what keel means by them and what Obsidian reaches with them.

keel reads `[[acme-corp]]` as the entity with that slug and `[[sources/5fd7f9b8abcd1234]]`
as the source whose hash starts with those digits; Obsidian only follows a link to a file
of that name. On export a plain link keel understands but Obsidian would not follow is
written `[[entities/Acme Corp|acme-corp]]` — the file's path, then the text as written —
and on import exactly those links are turned back, so the stored text stays as its author
wrote it and the round trip changes nothing.
"""

from __future__ import annotations

import re
from typing import Protocol

from ..links import NON_ENTITY_PREFIXES, WIKI_LINK
from ..memory import entity_id
from ..model import slugify
from .names import Layout

_PLAIN = re.compile(r"\[\[([^\[\]|#\n]+)\]\]")
_LABELLED = re.compile(r"\[\[([^\[\]|#\n]+)\|([^\[\]|#\n]+)\]\]")


class _Reads(Protocol):
    """What meaning a link needs from a reading of the ledger (`render.Snap`)."""

    def get(self, e: str) -> dict: ...

    def source(self, prefix: str) -> str | None: ...


def meant(snap: _Reads, target: str) -> str | None:
    """The item keel takes `[[target]]` to mean, if it exists: a source by hash prefix, or
    an entity by the slug of the target's last segment."""
    target = target.strip()
    if target.startswith("sources/"):
        return snap.source(target.removeprefix("sources/"))
    if target.startswith(NON_ENTITY_PREFIXES):
        return None
    slug = slugify(target.split("/")[-1])
    e = entity_id(slug)
    return e if slug and snap.get(e).get("entity/slug") else None


def for_obsidian(text: str, snap: _Reads, layout: Layout) -> str:
    """`text` with each plain link Obsidian would not follow to the item keel means written
    as `[[path|as written]]`."""

    def swap(m: re.Match) -> str:
        target = m.group(1)
        e = meant(snap, target)
        path = layout.link_target(e) if e else None
        if path is None or layout.resolve(target) == e:
            return m.group(0)
        return f"[[{path}|{target}]]"

    return _PLAIN.sub(swap, text)


def from_obsidian(text: str, snap: _Reads, layout: Layout) -> str:
    """The inverse of `for_obsidian`: `[[path|label]]` back to `[[label]]` where that is
    exactly what `for_obsidian` would have written."""

    def swap(m: re.Match) -> str:
        path, label = m.group(1), m.group(2)
        e = meant(snap, label)
        if e is None or layout.link_target(e) != path or layout.resolve(label) == e:
            return m.group(0)
        return f"[[{label}]]"

    return _LABELLED.sub(swap, text)


def reached(text: str, layout: Layout) -> str:
    """`text` with each link's target replaced by the id of the item whose file it reaches,
    so two spellings of a link to one file (after a move in Obsidian, say) compare equal."""

    def swap(m: re.Match) -> str:
        e = layout.resolve(m.group(1))
        return m.group(0) if e is None else f"[[{e}{m.group(0)[m.end(1) - m.start() :]}"

    return WIKI_LINK.sub(swap, text)


def shown(text: str) -> str:
    """`text` with each link replaced by what Obsidian shows for it (its label, else its
    target), for comparing generated text whatever the links in it now point at."""

    def swap(m: re.Match) -> str:
        label = m.group(0)[2:-2].split("|", 1)
        return label[-1]

    return WIKI_LINK.sub(swap, text)


def for_extraction(text: str, layout: Layout) -> str:
    """`text` with each link that reaches an entity's file written `[[<slug>]]`, so keel's
    link extraction (which reads a target as a slug) finds the entity Obsidian shows."""

    def swap(m: re.Match) -> str:
        e = layout.resolve(m.group(1))
        if e is None or not e.startswith("entity:"):
            return m.group(0)
        return f"[[{e.removeprefix('entity:')}]]"

    return WIKI_LINK.sub(swap, text)
