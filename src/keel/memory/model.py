"""What memory is made of: the surfaces and the attributes every memory item is stored with.

Every memory item is an entity in the ledger with `mem/surface` naming its surface, so it
has an author (the signer of each transaction), a history and a valid-time interval like
any other fact. Surface-specific attributes sit in their own namespaces; the recall index
and the vault read the same attributes.
"""

from __future__ import annotations

import re

SURFACES = (
    "working",  # per agent or run, with an expiry (valid_to)
    "entity",  # the brain: people, organisations, projects, ...
    "observation",  # a dated, sourced note on an entity's timeline
    "source",  # a raw wiki source, immutable, deduplicated by content hash
    "article",  # a compiled wiki article whose claims cite sources
    "decision",  # what was decided, why, alternatives, evidence, who, when
    "canon",  # source-of-truth rules; only the operator writes them
    "episode",  # an agent's conversation or session transcript
    "capture",  # raw quick capture
    "daybook",  # a dated log of what happened
)

ENTITY_KINDS = ("person", "organisation", "project", "place", "concept", "tool", "event")

#: Fact keys become attributes `fact/<key>`; the key is lower snake case.
FACT_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

#: Anything longer is refused rather than truncated.
MAX_TEXT = 4 * 1024 * 1024


def _attr(ident: str, type_: str, doc: str, **kw: object) -> dict:
    return {"attribute": ident, "type": type_, "doc": doc, **kw}


DECLARATIONS = [
    _attr("mem/surface", "string", "which memory surface an item belongs to"),
    _attr("mem/text", "string", "the item's text (markdown)", fulltext=True),
    _attr("mem/title", "string", "a short title", fulltext=True),
    _attr("mem/source", "string", "where the item came from: a URL, file, session or person"),
    _attr("mem/tags", "string", "free tags", cardinality="many"),
    _attr("mem/at", "instant", "when the thing happened or was observed"),
    _attr("mem/scope", "string", "working memory: the agent or run it belongs to"),
    _attr("entity/slug", "string", "an entity's stable handle", unique="identity"),
    _attr("entity/name", "string", "an entity's display name", fulltext=True),
    _attr("entity/kind", "string", "person, organisation, project, place, concept, ..."),
    _attr("entity/aliases", "string", "other names", cardinality="many"),
    _attr("entity-kind/name", "string", "an entity kind added by schema", unique="identity"),
    _attr("obs/entity", "ref", "the entity an observation is about"),
    _attr("obs/fact", "string", "the fact key an observation sets, if any"),
    _attr("obs/value", "string", "the value it sets the fact to"),
    _attr("link/from", "ref", "the entity a link starts at"),
    _attr("link/to", "ref", "the entity a link points to"),
    _attr("link/type", "string", "what the link means (mentions, works_at, ...)"),
    _attr("link/origin", "ref", "the observation or entity the link was extracted from"),
    _attr("source/hash", "string", "sha256 of a source's content", unique="identity"),
    _attr("source/topics", "string", "topics a source is about", cardinality="many"),
    _attr("article/slug", "string", "a wiki article's handle", unique="identity"),
    _attr("article/topic", "string", "the topic an article compiles"),
    _attr("article/cites", "ref", "sources the article cites", cardinality="many"),
    _attr("wikilog/op", "string", "an operation on the wiki (ingest, compile, fix)"),
    _attr("wikilog/target", "string", "what the operation touched"),
    _attr("decision/why", "string", "why it was decided", fulltext=True),
    _attr("decision/alternatives", "string", "what else was considered", cardinality="many"),
    _attr("decision/evidence", "string", "what supports it", cardinality="many"),
    _attr("decision/by", "string", "who decided"),
    _attr("decision/supersedes", "ref", "an earlier decision this replaces"),
    _attr("canon/name", "string", "a canon document's handle", unique="identity"),
    _attr("episode/agent", "string", "the agent whose session this was"),
    _attr("episode/session", "string", "the tool's own session id", unique="identity"),
    _attr("daybook/day", "string", "the operator's local date, YYYY-MM-DD"),
]

#: Attributes whose values the recall index makes searchable.
SEARCHABLE = ("mem/title", "mem/text", "entity/name", "decision/why")


def fact_attr(key: str) -> str:
    return f"fact/{key}"


def slugify(name: str) -> str:
    """A stable handle from a name: 'Alice Smith' -> 'alice-smith'."""
    slug = re.sub(r"[^\w]+", "-", name.strip().lower(), flags=re.UNICODE).strip("-_")
    return slug[:80]
