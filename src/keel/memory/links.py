"""Deterministic link extraction: `[[wiki links]]` in text and `[[...]]` values in
frontmatter. No model is involved, so the same text always yields the same links."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from .model import slugify

WIKI_LINK = re.compile(r"\[\[([^\[\]|#\n]+)(?:#[^\[\]|\n]*)?(?:\|[^\[\]\n]*)?\]\]")
#: Link targets under these folders are citations or articles, not entities.
NON_ENTITY_PREFIXES = ("sources/", "wiki/", "decisions/", "canon/")


def targets(text: str) -> list[str]:
    """Every `[[target]]` in `text`, in order, without repeats."""
    seen: list[str] = []
    for m in WIKI_LINK.finditer(text or ""):
        target = m.group(1).strip()
        if target and target not in seen:
            seen.append(target)
    return seen


def entity_targets(text: str) -> list[str]:
    """Link targets that name entities (not sources, articles or canon)."""
    return [t for t in targets(text) if not t.startswith(NON_ENTITY_PREFIXES)]


def citations(text: str) -> list[str]:
    """Source hash prefixes cited as `[[sources/<hash>]]`."""
    return [t.removeprefix("sources/") for t in targets(text) if t.startswith("sources/")]


def extract(text: str, frontmatter: Mapping[str, object] | None = None) -> list[tuple[str, str]]:
    """(link type, target slug) pairs: `mentions` for links in the text, the key's name for
    links in frontmatter values (`works_at: "[[Acme]]"` -> ("works_at", "acme"))."""
    out: list[tuple[str, str]] = []

    def add(kind: str, names: Iterable[str]) -> None:
        for name in names:
            pair = (kind, slugify(name.split("/")[-1]))
            if pair[1] and pair not in out:
                out.append(pair)

    for key, value in (frontmatter or {}).items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str):
                add(_link_type(key), entity_targets(item))
    add("mentions", entity_targets(text))
    return out


def _link_type(key: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", key.lower()).strip("_") or "related"
