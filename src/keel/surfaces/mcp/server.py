"""keel's memory as MCP tools and resources, for any agent that speaks MCP.

One server definition, two transports:

- stdio (`keel mcp --as NAME`): one process, one identity, one `Recall`;
- streamable HTTP at `/mcp` on the daemon's API server (`McpHttp`): the bearer token of each
  request names the identity (`Home.identity_for`), and a session stays bound to the token
  that opened it.

Every write is one transaction signed with the connection's identity's key, so the ledger
says which agent remembered what. A keel error (bad input, not found, refused) comes back as
a tool result with `isError` set and keel's one-sentence message; it never ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from ...govern.home import Home
from ...ledger import BadInput, KeelError, Ledger, NotFound
from ...memory.memory import Memory
from ...memory.model import SURFACES
from ...memory.recall import Recall
from ...memory.wiki import Wiki

PATH = "/mcp"
#: Where a request's identity sits in its ASGI scope (set by `McpHttp`'s token gate).
SCOPE_IDENTITY = "keel.identity"
RECENT_DECISIONS = 20

INSTRUCTIONS = """\
keel is the operator's signed, bitemporal memory. Use `recall` before answering from memory,
`remember` for notes that should expire (or, with `entity`, a dated observation about a person,
project or thing), `log_decision` when something is decided, `capture` for a raw note,
`add_source` / `wiki_article` for the topic wiki. Every write is signed as you and kept
forever in history; `as_of` (what was known then) and `valid_at` (what was true then) read the
past. Canon (the operator's rules) is at keel://canon."""

# -- argument types (module level: the SDK resolves annotations in this module) --------------
Instant = str | int | None
AsOf = Annotated[
    Instant,
    Field(
        description="Read as of this transaction id, transaction hash or ISO 8601 instant "
        "(what was known then). Default: now."
    ),
]
ValidAt = Annotated[
    str | None,
    Field(description="Read what was true at this ISO 8601 instant. Default: now."),
]
Ref = Annotated[
    str, Field(description="The entity: its id (entity:alice), slug (alice) or name (Alice).")
]
Strings = Annotated[list[str] | None, Field(description="A list of short strings.")]


@dataclass
class Backend:
    """What the tools run against: a ledger signed as an identity, and the recall index.

    `open_ledger(name)` opens a ledger signing as `name` (None: whoever the home's default
    is); the tools close what they open. `recall()` returns a shared, self-locking `Recall`.
    """

    open_ledger: Callable[[str | None], Ledger]
    recall: Callable[[], Recall]


def home_backend(home: Home, identity: str) -> Backend:
    """A backend for one process acting as `identity`: its own ledgers, one lazy Recall."""
    home.signer(identity)  # no key, no server: say so before the first tool call
    lock = threading.Lock()
    made: list[Recall] = []

    def recall() -> Recall:
        with lock:
            if not made:
                embedder = home.config().get("recall", {}).get("embedder")
                made.append(Recall(home.ledger(identity), embedder))
            return made[0]

    return Backend(lambda name: home.ledger(name or identity), recall)


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, default=str)


def _ok(data: Any) -> CallToolResult:
    structured = data if isinstance(data, dict) else {"items": data}
    return CallToolResult(
        content=[TextContent(type="text", text=_json(data))], structured_content=structured
    )


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _identity_of(ctx: Context | None) -> str:
    """The identity of an HTTP request, from the scope the token gate filled in."""
    request = ctx.request_context.request if ctx is not None else None
    scope = getattr(request, "scope", None) or {}
    name = scope.get(SCOPE_IDENTITY)
    if not name:
        raise KeelError("this MCP request carries no keel identity")
    return name


def _bad(message: str) -> None:
    raise BadInput(message)


def _argument_error(tool: str, exc: ValidationError) -> str:
    """One sentence for the first thing wrong with a tool's arguments."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
    if err.get("type") == "missing":
        return f"{tool} needs the argument {where!r}"
    return f"{tool}: argument {where!r}: {err.get('msg', 'is not valid')}"


def build_server(backend: Backend, identity: str | None = None) -> MCPServer:
    """The MCP server. With `identity`, every call acts as it (stdio); without, each call
    acts as the identity its HTTP request's token names."""

    def who(ctx: Context | None) -> str:
        return identity or _identity_of(ctx)

    def act(ctx: Context | None, work: Callable[[Memory], Any]) -> CallToolResult:
        try:
            with backend.open_ledger(who(ctx)) as ledger:
                return _ok(work(Memory(ledger)))
        except KeelError as exc:
            return _error(str(exc))

    # -- tools ---------------------------------------------------------------------------
    def remember(
        text: Annotated[str, Field(description="What to remember (markdown).")],
        ctx: Context,
        scope: Annotated[
            str | None,
            Field(description="Working memory: the agent or run it belongs to. Default: you."),
        ] = None,
        ttl: Annotated[
            str | None,
            Field(description="Working memory: how long it stays current, like 30m, 24h, 7d."),
        ] = None,
        entity: Annotated[
            str | None,
            Field(
                description="Instead of working memory, record a dated observation on this "
                "entity (id, slug or name; created if new)."
            ),
        ] = None,
        fact: Annotated[
            str | None,
            Field(description="With entity: a fact key the observation sets, like lives_in."),
        ] = None,
        value: Annotated[
            str | None, Field(description="With entity and fact: the fact's new value.")
        ] = None,
        at: Annotated[
            str | None,
            Field(description="With entity: when it happened (ISO 8601). Default: now."),
        ] = None,
        source: Annotated[
            str | None, Field(description="Where it came from: a URL, file, session or person.")
        ] = None,
    ) -> CallToolResult:
        """Remember something. Without `entity`: working memory for you (or `scope`) that
        leaves the current view after `ttl` (default 24h) and stays in history. With
        `entity`: a permanent, dated observation on that entity's timeline; with
        `fact`/`value` it also sets that fact from `at`, closing what it contradicts."""

        def work(memory: Memory) -> dict:
            if entity is not None:
                if ttl is not None or scope is not None:
                    _bad("an observation on an entity takes no scope or ttl")
                return memory.observe(entity, text, at=at, source=source, fact=fact, value=value)
            if fact is not None or value is not None or at is not None:
                _bad("fact, value and at go with entity (an observation)")
            return memory.remember(text, scope=scope or who(ctx), ttl=ttl, source=source)

        return act(ctx, work)

    def recall(
        query: Annotated[str, Field(description="What to look for, in words.")],
        ctx: Context,
        surface: Annotated[
            str | None,
            Field(description=f"Only this memory surface: {', '.join(SURFACES)}."),
        ] = None,
        as_of: AsOf = None,
        valid_at: ValidAt = None,
        k: Annotated[int, Field(ge=1, le=200, description="How many results.")] = 10,
    ) -> CallToolResult:
        """Search memory (full text and meaning, newest first among equals). Each result
        carries its provenance: entity, attribute, transaction, author, source and the
        valid-time interval; nothing comes back that was not valid (and known) at the
        time asked."""
        try:
            who(ctx)
            return _ok(
                backend.recall().search(query, surface=surface, as_of=as_of, valid_at=valid_at, k=k)
            )
        except KeelError as exc:
            return _error(str(exc))

    def get_entity(
        ref: Ref, ctx: Context, as_of: AsOf = None, valid_at: ValidAt = None
    ) -> CallToolResult:
        """An entity as it stood at a time: name, kind, summary, facts, links and how
        many observations it has."""
        return act(ctx, lambda m: m.entity(ref, as_of=as_of, valid_at=valid_at))

    def entity_timeline(ref: Ref, ctx: Context, as_of: AsOf = None) -> CallToolResult:
        """An entity's observations, oldest first (each with its author), and how each of
        its facts changed over valid time."""
        return act(ctx, lambda m: {"entity": m.resolve(ref), "events": m.timeline(ref, as_of)})

    def log_decision(
        title: Annotated[str, Field(description="What was decided, in one line.")],
        why: Annotated[str, Field(description="Why.")],
        ctx: Context,
        alternatives: Annotated[
            list[str] | None, Field(description="What else was considered.")
        ] = None,
        evidence: Annotated[
            list[str] | None, Field(description="What supports it: links, files, facts.")
        ] = None,
    ) -> CallToolResult:
        """Record a decision with its reasons, the alternatives and the evidence; you are
        recorded as who decided."""
        return act(
            ctx,
            lambda m: m.log_decision(
                title, why, alternatives=alternatives or (), evidence=evidence or ()
            ),
        )

    def capture(
        text: Annotated[str, Field(description="The raw note.")],
        ctx: Context,
        source: Annotated[str | None, Field(description="Where it came from.")] = None,
    ) -> CallToolResult:
        """Quick capture: a raw note to sort out later."""
        return act(ctx, lambda m: m.capture(text, source=source))

    def add_source(
        text: Annotated[str, Field(description="The source's full text; never changed later.")],
        ctx: Context,
        title: Annotated[str | None, Field(description="Its title.")] = None,
        url: Annotated[str | None, Field(description="Where it came from.")] = None,
        topics: Annotated[list[str] | None, Field(description="Topics it is about.")] = None,
    ) -> CallToolResult:
        """Ingest a raw source into the topic wiki. The same text twice is one source (the
        second time only adds new topics). Cite it in an article as [[sources/<hash>]]
        with at least 8 hex digits of the returned hash."""
        return act(
            ctx, lambda m: Wiki(m).add_source(text, title=title, url=url, topics=topics or ())
        )

    def wiki_article(
        slug: Annotated[str, Field(description="The article's handle, like vector-search.")],
        ctx: Context,
        body: Annotated[
            str | None,
            Field(
                description="Markdown to write; its [[sources/<hash>]] citations must each "
                "name a known source. Leave out to read the article."
            ),
        ] = None,
        title: Annotated[str | None, Field(description="When writing: its title.")] = None,
        topic: Annotated[str | None, Field(description="When writing: its topic.")] = None,
        as_of: AsOf = None,
    ) -> CallToolResult:
        """Read a wiki article (without `body`) or write it (with `body`; the old body stays
        in history)."""

        def work(memory: Memory) -> dict:
            wiki = Wiki(memory)
            if body is None:
                if title is not None or topic is not None:
                    _bad("title and topic go with a body to write")
                return wiki.article(slug, as_of=as_of)
            if as_of is not None:
                _bad("as_of is for reading; leave it out when writing")
            return wiki.write_article(slug, body, title=title, topic=topic)

        return act(ctx, work)

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
    tools = {
        fn.__name__: Tool.from_function(fn, annotations=ann)
        for fn, ann in (
            (remember, writes),
            (recall, read_only),
            (get_entity, read_only),
            (entity_timeline, read_only),
            (log_decision, writes),
            (capture, writes),
            (add_source, writes),
            (wiki_article, ToolAnnotations(destructive_hint=False, open_world_hint=False)),
        )
    }

    async def plain_argument_errors(ctx: ServerRequestContext, call_next) -> Any:
        """A bad argument is a tool result with one sentence, not a pydantic report."""
        if ctx.method == "tools/call" and isinstance(ctx.params, dict):
            tool = tools.get(str(ctx.params.get("name")))
            if tool is not None:
                try:
                    tool.fn_metadata.validate_arguments(ctx.params.get("arguments") or {})
                except ValidationError as exc:
                    return _error(_argument_error(tool.name, exc))
        return await call_next(ctx)

    server = MCPServer(
        "keel",
        title="keel memory",
        instructions=INSTRUCTIONS,
        tools=list(tools.values()),
        log_level="WARNING",
        middleware=[plain_argument_errors],
    )

    # -- resources -----------------------------------------------------------------------
    def reading(work: Callable[[Memory], Any]) -> Any:
        try:
            with backend.open_ledger(identity) as ledger:
                return work(Memory(ledger))
        except NotFound as exc:
            raise ResourceError(str(exc)) from None
        except KeelError as exc:
            raise ResourceError(str(exc)) from None

    @server.resource(
        "keel://canon",
        name="canon",
        title="Canon",
        description="The operator's source-of-truth documents: name, title and URI of each.",
        mime_type="application/json",
    )
    def canon_index() -> str:
        docs = reading(lambda m: m.canon())
        return _json(
            [
                {
                    "name": d.get("canon/name"),
                    "title": d.get("title"),
                    "uri": f"keel://canon/{d.get('canon/name')}",
                }
                for d in sorted(docs, key=lambda d: d.get("canon/name") or "")
            ]
        )

    @server.resource(
        "keel://canon/{name}",
        name="canon-document",
        title="Canon document",
        description="One canon document's text (markdown).",
        mime_type="text/markdown",
    )
    def canon_document(name: str) -> str:
        def work(memory: Memory) -> str:
            for doc in memory.canon():
                if doc.get("canon/name") == name:
                    return doc.get("text") or ""
            raise NotFound(f"there is no canon document {name!r}")

        return reading(work)

    @server.resource(
        "keel://decisions/recent",
        name="recent-decisions",
        title="Recent decisions",
        description=f"The {RECENT_DECISIONS} newest decisions: title, why, alternatives, "
        "evidence, who and when.",
        mime_type="application/json",
    )
    def recent_decisions() -> str:
        return _json(reading(lambda m: m.items("decision", limit=RECENT_DECISIONS)))

    return server


# -- stdio ------------------------------------------------------------------------------------
def serve_stdio(home: Home, identity: str) -> None:
    """Serve over this process's stdin/stdout as `identity` until the client hangs up."""
    server = build_server(home_backend(home, identity), identity)
    print(f"keel mcp: serving over stdio as {identity} ({home.path})", file=sys.stderr)
    anyio.run(server.run_stdio_async)


# -- streamable HTTP on the daemon ------------------------------------------------------------
class McpHttp:
    """The MCP endpoint of the daemon's API server.

    `mount(api)` returns an ASGI app that sends `/mcp` here and everything else to `api`.
    `serve(uvicorn_server.serve(...))` runs the session manager around serving (the API
    server runs uvicorn with lifespan off), and `close()` ends the sessions on shutdown.
    """

    def __init__(self, runtime: Any, host: str = "127.0.0.1"):
        self.home: Home = runtime.home
        self.server = build_server(Backend(runtime.open_ledger, runtime.recall))
        local = host in ("127.0.0.1", "localhost", "::1")
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=local,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
        self.app = self.server.streamable_http_app(
            streamable_http_path=PATH, transport_security=security, host=host
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self._closed = threading.Event()

    async def serve(self, serving: Awaitable[None]) -> None:
        """Await `serving` (uvicorn's `serve()`) with the session manager running. `close()`
        ends the sessions first, so open event streams do not hold up the shutdown."""
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        ready = asyncio.Event()

        async def sessions() -> None:
            try:
                async with self.server.session_manager.run():
                    ready.set()
                    await self._closing.wait()
            finally:
                self._closed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sessions)
            await ready.wait()
            try:
                await serving
            finally:
                self._closing.set()

    def close(self, timeout: float = 5.0) -> None:
        """From any thread: end every MCP session and stop taking new ones."""
        loop, closing = self._loop, self._closing
        if loop is None or closing is None or self._closed.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(closing.set)
            self._closed.wait(timeout)

    def mount(self, api: Any) -> Callable:
        gate = self._gate

        async def app(scope: dict, receive: Callable, send: Callable) -> None:
            path = scope.get("path", "")
            if scope["type"] == "http" and (path == PATH or path.startswith(PATH + "/")):
                if self._closing is None or self._closing.is_set():
                    await _refuse(send, 503, "unavailable", "keel is stopping")
                else:
                    await gate(scope, receive, send)
            else:
                await api(scope, receive, send)

        return app

    async def _gate(self, scope: dict, receive: Callable, send: Callable) -> None:
        """No valid bearer token, no MCP: 401 with keel's JSON error body."""
        token = ""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
        if not token:
            return await _unauthorized(send, "MCP needs an 'Authorization: Bearer <token>' header")
        try:
            identity = self.home.identity_for(token)
        except KeelError as exc:
            return await _unauthorized(send, str(exc))
        if identity is None:
            return await _unauthorized(send, "the token belongs to no keel identity")
        user = AuthenticatedUser(AccessToken(token=token, client_id=identity, scopes=[]))
        scope = {**scope, "user": user, SCOPE_IDENTITY: identity}
        await self.app(scope, receive, send)


async def _unauthorized(send: Callable, message: str) -> None:
    await _refuse(send, 401, "unauthorized", message, [(b"www-authenticate", b"Bearer")])


async def _refuse(
    send: Callable, status: int, kind: str, message: str, headers: list | None = None
) -> None:
    body = json.dumps({"error": message, "kind": kind}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
