"""Recall operations: hybrid search that respects both time axes, and the index's upkeep."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field

from ..ledger import BadInput
from ..memory.embedders import Unavailable, load
from ..memory.model import SURFACES
from .call import Call
from .memory import Surface
from .models import AsOf, Input, NoArguments, OpenOutput, Output, ValidAt
from .registry import operation


class SearchIn(Input):
    query: Annotated[str, Field(min_length=1, max_length=10_000, description="What to recall.")]
    surface: Surface | None = Field(  # type: ignore[valid-type]
        None, description=f"Only this memory surface: {', '.join(SURFACES)}."
    )
    as_of: AsOf = None
    valid_at: ValidAt = None
    k: Annotated[int, Field(ge=1, le=200, description="How many results.")] = 10
    mode: Literal["hybrid", "fulltext", "dense"] | None = Field(
        None,
        description="Which retrievers: both (hybrid, the default) or one alone, to compare.",
    )
    explain: bool = Field(False, description="Add each result's score components.")


class Provenance(Output):
    entity: str
    attribute: str
    tx: int
    tx_time: str | None
    author: str | None
    source: str | None
    valid_from: str | None
    valid_to: str | None


class Previous(Output):
    text: str
    valid_from: str | None
    valid_to: str | None


class Recalled(OpenOutput):
    id: str
    surface: str
    title: str | None
    text: str
    score: float
    ranks: dict[str, int]
    provenance: Provenance
    updates: str | None = Field(
        None, description="An older result this one replaces (same thing, later)."
    )
    updated_by: str | None = Field(None, description="A newer result that replaces this one.")
    previous: list[Previous] | None = Field(
        None, description="For a fact: the values it held before, newest first."
    )
    explain: dict[str, float] | None = Field(
        None, description="Score components (dense, fulltext, fact, recency, ...), if asked."
    )


class Answer(Output):
    query: str
    mode: str = Field(description="hybrid, fulltext, or how recall had to degrade.")
    note: str | None
    as_of: int
    valid_at: str | None
    results: list[Recalled]


@operation("recall.search", capability="recall.query", writes=False)
def search(call: Call, p: SearchIn) -> Answer:
    """Search memory: full text and meaning, fused, filtered by both time axes.

    Each result carries its provenance (entity, attribute, transaction, author, source,
    valid interval); nothing comes back that was not valid, and known, at the time asked."""
    # A caller who may not read every working-memory scope asks for more and is shown
    # only what it may read.
    k = p.k if call.tier == "T0" else min(p.k * 3, 200)
    found = call.recall().search(
        p.query,
        surface=p.surface,
        as_of=p.as_of,
        valid_at=p.valid_at,
        k=k,
        mode=p.mode,
        explain=p.explain,
    )
    if call.tier != "T0":
        view = call.ledger.view()
        found["results"] = [
            r
            for r in found["results"]
            if r["surface"] != "working" or call.may_see_scope(view.value(r["id"], "mem/scope"))
        ][: p.k]
    return Answer.model_validate(found)


class IndexStatus(OpenOutput):
    mode: str = Field(description="hybrid, fulltext, or ledger-fulltext while it is broken.")
    healthy: bool = Field(True, description="False while the index cannot be read.")
    embedder: str | None
    rows: int
    cursor: int
    head: int
    note: str | None


@operation("recall.status", capability="recall.query", writes=False)
def status(call: Call, p: NoArguments) -> IndexStatus:
    """The recall index: its mode, embedder, rows, and how far it has followed the ledger."""
    return IndexStatus.model_validate(call.recall().status())


class Reindexed(IndexStatus):
    reindexed: int = Field(description="Rows written.")
    seconds: float


class ReindexIn(Input):
    embedder: Annotated[
        str | None,
        Field(
            max_length=500,
            description="Rebuild with this embedder (local, local:use-m3, none, "
            "ollama:MODEL[@URL], openai:MODEL@URL) and make it the home's.",
        ),
    ] = None


@operation("recall.reindex", capability="recall.reindex", writes=False)
def reindex(call: Call, p: ReindexIn) -> Reindexed:
    """Rebuild the recall index from the whole ledger, whatever state it is in; with an
    embedder, re-embed everything with it (vectors of two models are never mixed)."""
    index = call.recall()
    started = time.monotonic()
    if p.embedder is not None:
        try:
            load(p.embedder)
        except Unavailable as exc:
            raise BadInput(f"{exc}; the index is unchanged") from None
        # The home's choice first: another process that sees the index change follows it.
        call.services.home.set_config("recall", "embedder", p.embedder)
    rows = index.reindex(progress=call.progress, embedder=p.embedder)
    status: dict[str, Any] = index.status()
    return Reindexed.model_validate(
        {**status, "reindexed": rows, "seconds": round(time.monotonic() - started, 3)}
    )
