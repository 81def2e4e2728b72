"""Memory and recall over HTTP: thin handlers over `keel.memory`.

Each write opens a ledger of the request's own through `ledger_for()`, which signs as the
caller (the identity of its bearer token), so every memory item names who wrote it; the
memory layer's own rules decide the rest (only the operator writes canon: 403 for anyone
else). Recall uses the runtime's shared index. Vault export and import read and write
folders on the daemon's machine, so only the operator's token may call them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ...ledger import BadInput, Ledger, Refused
from ...memory import vault
from ...memory.memory import Memory
from ...memory.model import slugify
from ...memory.wiki import Wiki

Scalar = str | int | float


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RememberBody(_Body):
    text: str
    scope: str = Field(description="The agent or run the note belongs to.")
    ttl: str | None = Field(None, description="How long it lasts: 90s, 30m, 2h, 1d (24h).")
    expires: str | None = Field(None, description="When it expires (ISO 8601), instead of ttl.")
    title: str | None = None
    tags: list[str] = []
    source: str | None = None


class EntityBody(_Body):
    name: str
    kind: str | None = Field(None, description="person, organisation, project, ...")
    slug: str | None = None
    aliases: list[str] = []
    summary: str | None = Field(None, description="Markdown; [[links]] become entity links.")
    facts: dict[str, Scalar] = Field({}, description="Fact keys in lower snake case.")
    valid_from: str | None = Field(None, description="When the facts start to hold.")
    source: str | None = None


class ObservationBody(_Body):
    text: str
    at: str | None = Field(None, description="When it was observed (default now).")
    source: str | None = None
    fact: str | None = Field(None, description="A fact key the observation sets.")
    value: Scalar | None = None
    valid_to: str | None = Field(None, description="When the fact stops holding.")
    kind: str | None = Field(None, description="The kind of a new entity, if it is new.")


class DecisionBody(_Body):
    title: str
    why: str
    alternatives: list[str] = []
    evidence: list[str] = []
    by: str | None = Field(None, description="Who decided (default: the caller).")
    at: str | None = None
    supersedes: str | None = Field(None, description="The id of a decision this replaces.")
    tags: list[str] = []


class CanonBody(_Body):
    text: str
    title: str | None = None


class EpisodeBody(_Body):
    text: str = Field(description="The transcript.")
    agent: str
    title: str | None = None
    session: str | None = Field(None, description="The tool's own session id (re-recordable).")
    at: str | None = None
    source: str | None = None


class CaptureBody(_Body):
    text: str
    source: str | None = None
    tags: list[str] = []


class DaybookBody(_Body):
    text: str
    at: str | None = None


class SourceBody(_Body):
    text: str
    title: str | None = None
    url: str | None = None
    topics: list[str] = []


class ArticleBody(_Body):
    body: str = Field(description="Markdown; cite sources as [[sources/<hash prefix>]].")
    title: str | None = None
    topic: str | None = None
    tags: list[str] | None = Field(None, description="Replaces the tags; omit to keep them.")


class VaultBody(_Body):
    dir: str = Field(description="An absolute path on the daemon's machine.")


def router(
    runtime: Any,
    ledger_for: Callable[..., Ledger],
    check_text: Callable[[object, str], None],
) -> APIRouter:
    """The memory routes, for `create_app` to include under /api/v1 (which checks tokens)."""
    api = APIRouter(tags=["memory"])

    @contextlib.contextmanager
    def memory(body: BaseModel | None = None) -> Iterator[Memory]:
        if body is not None:
            check_text(body.model_dump(), "the request body")
        with ledger_for() as ledger:
            yield Memory(ledger)

    def operator_only(request: Request, what: str) -> None:
        who = getattr(request.state, "identity", None)
        if who != runtime.home.operator:
            raise Refused(f"only the operator may {what}; this token is {who!r}'s")

    def directory(body: VaultBody, request: Request, what: str) -> Path:
        operator_only(request, what)
        check_text(body.dir, "dir")
        path = Path(body.dir)
        if not path.is_absolute():
            raise BadInput(f"dir must be an absolute path on the daemon's host, not {body.dir!r}")
        return path

    # -- working memory ------------------------------------------------------------------
    @api.post("/memory/remember", summary="Keep a note in working memory until it expires")
    def remember(body: RememberBody) -> dict:
        with memory(body) as mem:
            return mem.remember(**body.model_dump())

    @api.get("/memory/working", summary="Unexpired working memory (of one scope)")
    def working(scope: str | None = None) -> list[dict]:
        with memory() as mem:
            return mem.working(scope)

    # -- entities ------------------------------------------------------------------------
    @api.post("/memory/entities", summary="Create an entity or add to it")
    def upsert_entity(body: EntityBody) -> dict:
        with memory(body) as mem:
            fields = body.model_dump()
            return mem.upsert_entity(fields.pop("name"), fields.pop("kind"), **fields)

    @api.get("/memory/entities/{ref}", summary="An entity as it stood: facts, links")
    def entity(ref: str, as_of: str | None = None, valid_at: str | None = None) -> dict:
        with memory() as mem:
            return mem.entity(ref, as_of=as_of, valid_at=valid_at)

    @api.get("/memory/entities/{ref}/timeline", summary="Observations and fact changes")
    def timeline(ref: str, as_of: str | None = None) -> list[dict]:
        with memory() as mem:
            return mem.timeline(ref, as_of=as_of)

    @api.post("/memory/entities/{ref}/observations", summary="A dated, sourced observation")
    def observe(ref: str, body: ObservationBody) -> dict:
        with memory(body) as mem:
            return mem.observe(ref, **body.model_dump())

    @api.get("/memory/kinds", summary="Entity kinds")
    def kinds() -> list[str]:
        with memory() as mem:
            return mem.kinds()

    # -- decisions, canon, episodes, capture, daybook ------------------------------------
    @api.post("/memory/decisions", summary="Log a decision: what, why, alternatives, evidence")
    def decide(body: DecisionBody) -> dict:
        with memory(body) as mem:
            fields = body.model_dump()
            return mem.log_decision(fields.pop("title"), fields.pop("why"), **fields)

    @api.get("/memory/decisions", summary="Decisions, newest first")
    def decisions(limit: Annotated[int, Query(ge=1, le=10000)] = 50) -> list[dict]:
        with memory() as mem:
            return mem.items("decision", limit=limit)

    @api.put("/memory/canon/{name}", summary="Write a canon document (operator only)")
    def write_canon(name: str, body: CanonBody) -> dict:
        with memory(body) as mem:
            return mem.write_canon(name, body.text, body.title)

    @api.get("/memory/canon", summary="Canon documents")
    def canon() -> list[dict]:
        with memory() as mem:
            return mem.canon()

    @api.get("/memory/canon/{name}", summary="One canon document")
    def canon_one(name: str, as_of: str | None = None) -> dict:
        with memory() as mem:
            return mem.item(f"canon:{slugify(name)}", as_of=as_of)

    @api.post("/memory/episodes", summary="Record an agent's session transcript")
    def episode(body: EpisodeBody) -> dict:
        with memory(body) as mem:
            fields = body.model_dump()
            return mem.add_episode(fields.pop("text"), **fields)

    @api.post("/memory/capture", summary="Quick capture: a raw note")
    def capture(body: CaptureBody) -> dict:
        with memory(body) as mem:
            return mem.capture(body.text, body.source, body.tags)

    @api.post("/memory/daybook", summary="Add to the daybook")
    def daybook(body: DaybookBody) -> dict:
        with memory(body) as mem:
            return mem.daybook(body.text, body.at)

    @api.get("/memory/daybook/{day}", summary="One day of the daybook (YYYY-MM-DD)")
    def day(day: str) -> list[dict]:
        with memory() as mem:
            return mem.day(day)

    @api.get("/memory/items", summary="Items of one surface, newest first")
    def items(
        surface: str,
        limit: Annotated[int, Query(ge=1, le=10000)] = 50,
        as_of: str | None = None,
        valid_at: str | None = None,
    ) -> list[dict]:
        with memory() as mem:
            return mem.items(surface, limit=limit, as_of=as_of, valid_at=valid_at)

    # -- wiki ----------------------------------------------------------------------------
    @api.post("/memory/wiki/sources", tags=["wiki"], summary="Ingest a raw source (deduplicated)")
    def add_source(body: SourceBody) -> dict:
        with memory(body) as mem:
            return Wiki(mem).add_source(**body.model_dump())

    @api.put("/memory/wiki/articles/{slug}", tags=["wiki"], summary="Compile an article")
    def write_article(slug: str, body: ArticleBody) -> dict:
        with memory(body) as mem:
            fields = body.model_dump()
            return Wiki(mem).write_article(slug, fields.pop("body"), **fields)

    @api.get("/memory/wiki/articles/{slug}", tags=["wiki"], summary="One article")
    def article(slug: str, as_of: str | None = None) -> dict:
        with memory() as mem:
            return Wiki(mem).article(slug, as_of=as_of)

    @api.get("/memory/wiki/index", tags=["wiki"], summary="Articles grouped by topic")
    def wiki_index() -> list[dict]:
        with memory() as mem:
            return Wiki(mem).index()

    @api.get("/memory/wiki/log", tags=["wiki"], summary="Wiki operations, newest first")
    def wiki_log(limit: Annotated[int, Query(ge=1, le=10000)] = 50) -> list[dict]:
        with memory() as mem:
            return Wiki(mem).log(limit)

    @api.get("/memory/wiki/lint", tags=["wiki"], summary="Where the wiki has drifted")
    def wiki_lint() -> list[dict]:
        with memory() as mem:
            return Wiki(mem).lint()

    @api.post("/memory/wiki/fix", tags=["wiki"], summary="Apply the mechanical fixes")
    def wiki_fix() -> dict:
        with memory() as mem:
            wiki = Wiki(mem)
            return {"fixed": wiki.fix(), "findings": wiki.lint()}

    # -- recall --------------------------------------------------------------------------
    @api.get("/recall", tags=["recall"], summary="Hybrid search, filtered by both time axes")
    def recall(
        q: str,
        surface: str | None = None,
        as_of: str | None = None,
        valid_at: str | None = None,
        k: Annotated[int, Query(ge=1, le=200)] = 10,
    ) -> dict:
        return runtime.recall().search(q, surface=surface, as_of=as_of, valid_at=valid_at, k=k)

    @api.post("/recall/reindex", tags=["recall"], summary="Rebuild the index from the ledger")
    def reindex() -> dict:
        index = runtime.recall()
        started = time.monotonic()
        rows = index.reindex()
        return {"rows": rows, "seconds": round(time.monotonic() - started, 3), **index.status()}

    @api.get("/recall/status", tags=["recall"], summary="The index: mode, rows, cursor, head")
    def recall_status() -> dict:
        return runtime.recall().status()

    # -- vault ---------------------------------------------------------------------------
    @api.post("/vault/export", tags=["vault"], summary="Write memory as an Obsidian vault")
    def vault_export(body: Annotated[VaultBody, Body()], request: Request) -> dict:
        path = directory(body, request, "export the vault")
        with ledger_for() as ledger:
            return vault.export(ledger, path)

    @api.post(
        "/vault/import",
        tags=["vault"],
        summary="Record edits made in an exported vault",
        description="409 with the report under `report` when any field conflicts.",
    )
    def vault_import(body: Annotated[VaultBody, Body()], request: Request) -> Any:
        path = directory(body, request, "import a vault")
        with ledger_for() as ledger:
            report = vault.import_vault(ledger, path)
        if report["conflicts"]:
            message = f"{len(report['conflicts'])} field(s) conflict; resolve them and import again"
            return JSONResponse(
                {"error": message, "kind": "conflict", "report": report}, status_code=409
            )
        return report

    return api
