"""Memory operations: working memory, entities and their timelines, decisions, canon,
episodes, capture and the daybook.

Each write is one signed transaction by the caller (the memory rules, a ledger guard,
refuse what a surface may not take). Canon is the operator's: writing it needs
`canon.write`; every other memory write needs `memory.write`, every read `memory.read`.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import Refused
from ..ledger.instants import from_us
from ..memory.model import SURFACES, slugify
from .call import Call
from .models import (
    AsOf,
    Input,
    Instant,
    Limit,
    MemoryItem,
    Name,
    NoArguments,
    OpenOutput,
    Output,
    SlugWritten,
    ValidAt,
)
from .registry import operation

Text = Annotated[str, Field(min_length=1, description="Markdown text.")]
Tags = Annotated[list[Annotated[str, Field(max_length=200)]], Field(description="Free tags.")]
Surface = Literal[SURFACES]  # type: ignore[valid-type]
FactValue = str | int | float


class Added(Output):
    """A new memory item."""

    id: str
    tx: int


def _items(found: list[dict]) -> list[MemoryItem]:
    return [MemoryItem.model_validate(item) for item in found]


def visible(call: Call, found: list[dict]) -> list[dict]:
    """`found` without the working memory of scopes the caller may not read: an agent's
    scratch notes are its own (and the operator's), not every other agent's."""
    if call.tier == "T0":
        return found
    return [i for i in found if i.get("surface") != "working" or call.may_see_scope(i.get("scope"))]


def _working_resources(p: Any, identity: str) -> dict:
    return {"surface": ["working"], "scope": [p.scope or identity]}


def _surfaces(*names: str) -> dict:
    return {"surface": list(names)}


# -- working memory ---------------------------------------------------------------------------
class RememberIn(Input):
    text: Text
    scope: Annotated[str | None, Field(min_length=1, max_length=200)] = Field(
        None, description="The agent or run the note belongs to (default: the caller)."
    )
    ttl: Annotated[str | None, Field(max_length=32)] = Field(
        None, description="How long it lasts: 90s, 30m, 2h, 1d (default 24h)."
    )
    expires: Instant = Field(None, description="When it expires, instead of a ttl.")
    title: Annotated[str | None, Field(max_length=1000)] = None
    tags: Tags = Field(default_factory=list)
    source: Annotated[str | None, Field(max_length=4096)] = None


class Remembered(Added):
    expires: str


@operation("memory.remember", capability="memory.write", writes=True, resources=_working_resources)
def remember(call: Call, p: RememberIn) -> Remembered:
    """Keep a note in working memory until it expires (default 24h).

    It leaves the current view when it expires and stays in history."""
    fields = p.model_dump()
    fields["scope"] = fields["scope"] or call.identity
    return Remembered.model_validate(call.memory.remember(**fields))


class WorkingIn(Input):
    scope: Annotated[str | None, Field(max_length=200)] = None


@operation(
    "memory.working",
    capability="memory.read",
    writes=False,
    resources=lambda p, who: {"scope": [p.scope or who]},
)
def working(call: Call, p: WorkingIn) -> list[MemoryItem]:
    """Working memory that has not expired: of one scope, or every scope the caller may
    read (an agent's own by default; every scope for the operator)."""
    return _items(visible(call, call.memory.working(p.scope)))


# -- entities -----------------------------------------------------------------------------------
class EntityAddIn(Input):
    name: Name
    kind: Annotated[str | None, Field(max_length=80)] = Field(
        None, description="person, organisation, project, place, concept, tool, event, ..."
    )
    slug: Annotated[str | None, Field(max_length=80)] = None
    aliases: Tags = Field(default_factory=list)
    summary: Annotated[str | None, Field(description="Markdown; [[links]] link entities.")] = None
    facts: dict[Annotated[str, Field(max_length=63)], FactValue] = Field(
        {}, description="Facts by lower snake case key, like lives_in."
    )
    valid_from: Instant = Field(None, description="When the facts start to hold (default now).")
    source: Annotated[str | None, Field(max_length=4096)] = None


@operation(
    "memory.entity.add", capability="memory.write", writes=True, resources=_surfaces("entity")
)
def entity_add(call: Call, p: EntityAddIn) -> SlugWritten:
    """Create an entity or add to it: names, aliases, a summary and facts (facts given here
    are observations too)."""
    fields = p.model_dump()
    return SlugWritten.model_validate(
        call.memory.upsert_entity(fields.pop("name"), fields.pop("kind"), **fields)
    )


class EntityIn(Input):
    ref: Name = Field(description="An entity's id, slug, name or alias.")
    as_of: AsOf = None
    valid_at: ValidAt = None


class Link(Output):
    type: str | None
    direction: Literal["in", "out"]
    entity: str | None


class MemoryEntity(MemoryItem):
    """An entity as it stood: its values, facts and links."""

    links: list[Link]
    observations: int
    valid_at: str | None


@operation("memory.entity.show", capability="memory.read", writes=False)
def entity_show(call: Call, p: EntityIn) -> MemoryEntity:
    """An entity as it stood at a time: name, kind, summary, facts, links, observations."""
    return MemoryEntity.model_validate(
        call.memory.entity(p.ref, as_of=p.as_of, valid_at=p.valid_at)
    )


class TimelineIn(Input):
    ref: Name = Field(description="An entity's id, slug, name or alias.")
    as_of: AsOf = None


class TimelineEvent(OpenOutput):
    type: Literal["observation", "fact"]
    at: str | None
    fact: str | None = None
    value: Any = None


class Timeline(Output):
    entity: str
    events: list[TimelineEvent]


@operation("memory.entity.timeline", capability="memory.read", writes=False)
def entity_timeline(call: Call, p: TimelineIn) -> Timeline:
    """An entity's observations, oldest first (each with its author), and how each of its
    facts changed over valid time."""
    memory = call.memory
    view = call.ledger.view(as_of=p.as_of) if p.as_of is not None else None
    entity = memory.resolve(p.ref, view)
    events = [TimelineEvent.model_validate(e) for e in memory.timeline(p.ref, as_of=p.as_of)]
    return Timeline(entity=entity, events=events)


class ObserveIn(Input):
    entity: Name = Field(description="The entity's id, slug, name or alias (created if new).")
    text: Text
    at: Instant = Field(None, description="When it was observed (default now).")
    source: Annotated[str | None, Field(max_length=4096)] = None
    fact: Annotated[str | None, Field(max_length=63)] = Field(
        None, description="A fact key the observation sets, like lives_in."
    )
    value: FactValue | None = Field(None, description="The value it sets the fact to.")
    valid_to: Instant = Field(None, description="When the fact stops holding.")
    kind: Annotated[str | None, Field(max_length=80)] = Field(
        None, description="The kind of a new entity, if it is new."
    )


class Observed(Added):
    entity: str


@operation(
    "memory.observe",
    capability="memory.write",
    writes=True,
    resources=_surfaces("observation", "entity"),
)
def observe(call: Call, p: ObserveIn) -> Observed:
    """A dated, sourced observation on an entity's timeline, in one transaction.

    With `fact` and `value` it also sets that fact from `at`, closing (never deleting) what
    it contradicts; a new entity is created with it."""
    fields = p.model_dump()
    return Observed.model_validate(
        call.memory.observe(fields.pop("entity"), fields.pop("text"), **fields)
    )


@operation("memory.entity.kinds", capability="memory.read", writes=False)
def kinds(call: Call, p: NoArguments) -> list[str]:
    """The entity kinds there are."""
    return call.memory.kinds()


class KindIn(Input):
    name: Annotated[str, Field(min_length=1, max_length=80)]


class KindAdded(Output):
    kind: str
    tx: int | None = Field(description="The transaction, or null when the kind existed.")


@operation(
    "memory.entity.add_kind", capability="memory.write", writes=True, resources=_surfaces("entity")
)
def add_kind(call: Call, p: KindIn) -> KindAdded:
    """Add an entity kind."""
    result = call.memory.add_kind(p.name)
    return KindAdded(kind=slugify(p.name), tx=result.tx if result else None)


# -- decisions, canon, episodes, capture, daybook ---------------------------------------------
def _as_caller(call: Call, named: str | None, doing: str) -> str | None:
    """Who a record says acted: anyone, as the operator says; the caller, for anyone else
    (an agent speaks for itself, never in another's name)."""
    if named is None or call.role == "operator" or named == call.identity:
        return named
    raise Refused(f"{call.identity!r} may not {doing} {named!r}; only the operator names another")


class DecideIn(Input):
    title: Annotated[str, Field(min_length=1, max_length=1000)]
    why: Text
    alternatives: Tags = Field(default_factory=list, description="What else was considered.")
    evidence: Tags = Field(
        default_factory=list, description="What supports it: links, files, facts."
    )
    by: Annotated[str | None, Field(max_length=200)] = Field(
        None, description="Who decided (default: the caller)."
    )
    at: Instant = None
    supersedes: Annotated[str | None, Field(max_length=512)] = Field(
        None, description="The id of a decision this replaces."
    )
    tags: Tags = Field(default_factory=list)


@operation("memory.decide", capability="memory.write", writes=True, resources=_surfaces("decision"))
def decide(call: Call, p: DecideIn) -> Added:
    """Log a decision: what, why, the alternatives and the evidence."""
    fields = p.model_dump()
    fields["by"] = _as_caller(call, p.by, "log a decision by")
    return Added.model_validate(
        call.memory.log_decision(fields.pop("title"), fields.pop("why"), **fields)
    )


class ItemsIn(Input):
    surface: Surface  # type: ignore[valid-type]
    limit: Limit = 50
    as_of: AsOf = None
    valid_at: ValidAt = None


@operation("memory.items", capability="memory.read", writes=False)
def items(call: Call, p: ItemsIn) -> list[MemoryItem]:
    """Items of one memory surface, newest first."""
    found = call.memory.items(p.surface, limit=p.limit, as_of=p.as_of, valid_at=p.valid_at)
    return _items(visible(call, found))


class DecisionsIn(Input):
    limit: Limit = 50


@operation("memory.decisions", capability="memory.read", writes=False)
def decisions(call: Call, p: DecisionsIn) -> list[MemoryItem]:
    """Decisions, newest first."""
    return _items(call.memory.items("decision", limit=p.limit))


class CanonSetIn(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    text: Text
    title: Annotated[str | None, Field(max_length=1000)] = None


class CanonWritten(Output):
    id: str
    tx: int | None = Field(description="The transaction, or null when it already said that.")


@operation("memory.canon.set", capability="canon.write", writes=True, resources=_surfaces("canon"))
def canon_set(call: Call, p: CanonSetIn) -> CanonWritten:
    """Write a canon document: a source-of-truth rule only the operator writes."""
    return CanonWritten.model_validate(call.memory.write_canon(p.name, p.text, p.title))


@operation("memory.canon.list", capability="memory.read", writes=False)
def canon_list(call: Call, p: NoArguments) -> list[MemoryItem]:
    """Canon documents."""
    return _items(call.memory.canon())


class CanonShowIn(Input):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    as_of: AsOf = None


@operation("memory.canon.show", capability="memory.read", writes=False)
def canon_show(call: Call, p: CanonShowIn) -> MemoryItem:
    """One canon document."""
    return MemoryItem.model_validate(call.memory.item(f"canon:{slugify(p.name)}", as_of=p.as_of))


class EpisodeIn(Input):
    text: Text = Field(description="The transcript.")
    agent: Name | None = Field(
        None, description="The agent whose session this was (default: the caller)."
    )
    title: Annotated[str | None, Field(max_length=1000)] = None
    session: Annotated[str | None, Field(max_length=200)] = Field(
        None, description="The tool's own session id: recording it again replaces the text."
    )
    at: Instant = None
    source: Annotated[str | None, Field(max_length=4096)] = None


@operation(
    "memory.episode.add", capability="memory.write", writes=True, resources=_surfaces("episode")
)
def episode_add(call: Call, p: EpisodeIn) -> Added:
    """Record an agent's session transcript, valid from when the session happened."""
    fields = p.model_dump()
    fields["agent"] = _as_caller(call, p.agent, "record a session of") or call.identity
    return Added.model_validate(call.memory.add_episode(fields.pop("text"), **fields))


class CaptureIn(Input):
    text: Text
    source: Annotated[str | None, Field(max_length=4096)] = None
    tags: Tags = Field(default_factory=list)


@operation("memory.capture", capability="memory.write", writes=True, resources=_surfaces("capture"))
def capture(call: Call, p: CaptureIn) -> Added:
    """Quick capture: keep a raw note to sort out later."""
    return Added.model_validate(call.memory.capture(p.text, p.source, p.tags))


class DaybookIn(Input):
    text: Text
    at: Instant = None


class DaybookAdded(Added):
    day: str


@operation(
    "memory.daybook.add", capability="memory.write", writes=True, resources=_surfaces("daybook")
)
def daybook_add(call: Call, p: DaybookIn) -> DaybookAdded:
    """Add an entry to the daybook, dated in the operator's time zone."""
    return DaybookAdded.model_validate(call.memory.daybook(p.text, p.at))


class DayIn(Input):
    day: Annotated[str | None, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")] = Field(
        None, description="YYYY-MM-DD (default: today in the operator's time zone)."
    )


@operation("memory.daybook.day", capability="memory.read", writes=False)
def daybook_day(call: Call, p: DayIn) -> list[MemoryItem]:
    """One day of the daybook, oldest first."""
    ledger = call.ledger
    day = p.day or from_us(ledger.clock()).astimezone(ledger.default_tz or UTC).date().isoformat()
    return _items(call.memory.day(day))
