"""What memory is made of: the surfaces and the attributes every memory item is stored with.

Every memory item is an entity in the ledger with `mem/surface` naming its surface, so it
has an author (the signer of each transaction), a history and a valid-time interval like
any other fact. Surface-specific attributes sit in their own namespaces; the recall index
and the vault read the same attributes.
"""

from __future__ import annotations

import re

from ..ledger.schema import declaration

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


DECLARATIONS = [
    declaration("mem/surface", "string", "which memory surface an item belongs to"),
    declaration("mem/text", "string", "the item's text (markdown)", fulltext=True),
    declaration("mem/title", "string", "a short title", fulltext=True),
    declaration("mem/source", "string", "where the item came from: a URL, file, session or person"),
    declaration("mem/tags", "string", "free tags", cardinality="many"),
    declaration("mem/at", "instant", "when the thing happened or was observed"),
    declaration("mem/scope", "string", "working memory: the agent or run it belongs to"),
    declaration("entity/slug", "string", "an entity's stable handle", unique="identity"),
    declaration("entity/name", "string", "an entity's display name", fulltext=True),
    declaration("entity/kind", "string", "person, organisation, project, place, concept, ..."),
    declaration("entity/aliases", "string", "other names", cardinality="many"),
    declaration("entity-kind/name", "string", "an entity kind added by schema", unique="identity"),
    declaration("obs/entity", "ref", "the entity an observation is about"),
    declaration("obs/fact", "string", "the fact key an observation sets, if any"),
    declaration("obs/value", "string", "the value it sets the fact to"),
    declaration("link/from", "ref", "the entity a link starts at"),
    declaration("link/to", "ref", "the entity a link points to"),
    declaration("link/type", "string", "what the link means (mentions, works_at, ...)"),
    declaration("link/origin", "ref", "the observation or entity the link was extracted from"),
    declaration("source/hash", "string", "sha256 of a source's content", unique="identity"),
    declaration("source/topics", "string", "topics a source is about", cardinality="many"),
    declaration("article/slug", "string", "a wiki article's handle", unique="identity"),
    declaration("article/topic", "string", "the topic an article compiles"),
    declaration("article/cites", "ref", "sources the article cites", cardinality="many"),
    declaration("wikilog/op", "string", "an operation on the wiki (ingest, compile, fix)"),
    declaration("wikilog/target", "string", "what the operation touched"),
    declaration("decision/why", "string", "why it was decided", fulltext=True),
    declaration("decision/alternatives", "string", "what else was considered", cardinality="many"),
    declaration("decision/evidence", "string", "what supports it", cardinality="many"),
    declaration("decision/by", "string", "who decided"),
    declaration("decision/supersedes", "ref", "an earlier decision this replaces"),
    declaration("canon/name", "string", "a canon document's handle", unique="identity"),
    declaration("episode/agent", "string", "the agent whose session this was"),
    declaration("episode/session", "string", "the tool's own session id", unique="identity"),
    declaration("daybook/day", "string", "the operator's local date, YYYY-MM-DD"),
]

#: Attributes whose values the recall index makes searchable.
SEARCHABLE = ("mem/title", "mem/text", "entity/name", "decision/why")


def fact_attr(key: str) -> str:
    return f"fact/{key}"


def slugify(name: str) -> str:
    """A stable handle from a name: 'Alice Smith' -> 'alice-smith'."""
    slug = re.sub(r"[^\w]+", "-", name.strip().lower(), flags=re.UNICODE).strip("-_")
    return slug[:80]
