"""What a vault file says for each surface: its folder, and each field it states with the
attribute behind it and how an edit to it merges back."""

from __future__ import annotations

FOLDERS = {
    "entity": "entities",
    "article": "wiki",
    "source": "sources",
    "decision": "decisions",
    "canon": "canon",
    "episode": "episodes",
    "capture": "capture",
    "daybook": "daybook",
    "working": "working",
}
SURFACE_OF = {folder: surface for surface, folder in FOLDERS.items()}
#: Surfaces a new note (one without a keel id) may create items in.
CREATABLE = ("entity", "capture", "decision", "daybook", "canon")
#: The keel id of the generated index at the vault's root.
INDEX = "index"

GEN_OPEN = "<!-- keel:generated: read-only; rewritten on export, ignored on import -->"
GEN_CLOSE = "<!-- /keel:generated -->"

# Field kinds: how a field is merged back.
TEXT, SCALAR, SET, READONLY, FACTS, LINKS, TIMELINE = (
    "text",
    "scalar",
    "set",
    "readonly",
    "facts",
    "links",
    "timeline",
)

_TITLE = ("mem/title", SCALAR)
_TAGS = ("mem/tags", SET)
_SOURCE = ("mem/source", SCALAR)
_AT = ("mem/at", READONLY)

#: What each surface's file states: field -> (attribute, kind). `body` is the markdown
#: below the frontmatter; every other field is a frontmatter key of the same name.
FIELDS: dict[str, dict[str, tuple[str | None, str]]] = {
    "entity": {
        "name": ("entity/name", SCALAR),
        "kind": ("entity/kind", SCALAR),
        "aliases": ("entity/aliases", SET),
        "tags": _TAGS,
        "source": _SOURCE,
        "facts": (None, FACTS),
        "links": (None, LINKS),
        "body": ("mem/text", TEXT),
        "timeline": (None, TIMELINE),
    },
    "article": {
        "title": _TITLE,
        "tags": _TAGS,
        "topic": ("article/topic", SCALAR),
        "slug": ("article/slug", READONLY),
        "cites": ("article/cites", READONLY),
        "body": ("mem/text", TEXT),
    },
    "source": {
        "title": ("mem/title", READONLY),
        "source": ("mem/source", READONLY),
        "topics": ("source/topics", READONLY),
        "hash": ("source/hash", READONLY),
        "at": _AT,
        "body": ("mem/text", READONLY),
    },
    "decision": {
        "title": _TITLE,
        "tags": _TAGS,
        "by": ("decision/by", SCALAR),
        "alternatives": ("decision/alternatives", SET),
        "evidence": ("decision/evidence", SET),
        "supersedes": ("decision/supersedes", READONLY),
        "at": _AT,
        "body": ("decision/why", TEXT),
    },
    "canon": {"title": _TITLE, "name": ("canon/name", READONLY), "body": ("mem/text", TEXT)},
    "episode": {
        "title": _TITLE,
        "source": _SOURCE,
        "agent": ("episode/agent", SCALAR),
        "session": ("episode/session", READONLY),
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
    "capture": {
        "title": _TITLE,
        "tags": _TAGS,
        "source": _SOURCE,
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
    "daybook": {
        "title": _TITLE,
        "tags": _TAGS,
        "day": ("daybook/day", READONLY),
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
    "working": {
        "title": _TITLE,
        "tags": _TAGS,
        "source": _SOURCE,
        "scope": ("mem/scope", READONLY),
        "expires": (None, READONLY),
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
}

#: Surfaces whose files carry `aliases:` only for Obsidian to find them by (a source's
#: full hash, an article's title); for entities `aliases` is a field.
ALIASED = ("source", "article")


def known_keys(surface: str) -> set[str]:
    """The frontmatter keys keel reads or writes in a file of `surface`."""
    keys = {n for n, (_a, kind) in FIELDS[surface].items() if n != "body" and kind != TIMELINE}
    keys.add("keel")
    return keys | ({"aliases"} if surface in ALIASED else set())


def empty(kind: str) -> object:
    """What a field a file leaves out stands for."""
    return {FACTS: {}, SET: [], LINKS: []}.get(kind)
