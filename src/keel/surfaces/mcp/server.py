"""keel's memory as MCP tools and resources, for any agent that speaks MCP.

Each tool is one operation (`TOOLS`): its input schema is the operation's input model, its
output schema the operation's output, and a call goes through the door as the connection's
identity, which checks the capability and validates the arguments. A keel error (bad input,
not found, refused, forbidden) is a tool result with `isError` set and keel's one sentence;
it never ends the session.

One server, two transports:
- stdio (`keel mcp --as NAME`): one process, one identity;
- streamable HTTP at `/mcp` on the daemon's API server: the gate in front of it checks the
  Host header and the bearer token, which names the identity of each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import SessionMessage
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    ErrorData,
    JSONRPCError,
    JSONRPCResponse,
    Resource,
    ResourceTemplate,
    TextContent,
    Tool,
    ToolAnnotations,
)
from starlette.responses import JSONResponse

from ...errors import KeelError, NotFound, Pending
from ...ops import registry, version
from ...ops.door import Caller, Door

PATH = "/mcp"
RECENT_DECISIONS = 20

INSTRUCTIONS = """\
keel is the operator's signed, bitemporal memory. Use `recall` before answering from memory;
`remember` for notes that should expire; `observe` for a dated fact about a person, project or
thing; `log_decision` when something is decided; `capture` for a raw note; `add_source`,
`read_article` and `write_article` for the topic wiki. Every write is signed as you and kept
forever in history; `as_of` (what was known then) and `valid_at` (what was true then) read the
past. Canon (the operator's rules) is at keel://canon."""


@dataclass(frozen=True)
class ToolSpec:
    operation: str
    description: str = ""


#: Each tool and the one operation it calls.
TOOLS: dict[str, ToolSpec] = {
    "recall": ToolSpec("recall.search"),
    "remember": ToolSpec("memory.remember"),
    "working_memory": ToolSpec("memory.working"),
    "observe": ToolSpec("memory.observe"),
    "get_entity": ToolSpec("memory.entity.show"),
    "entity_timeline": ToolSpec("memory.entity.timeline"),
    "log_decision": ToolSpec("memory.decide"),
    "capture": ToolSpec("memory.capture"),
    "add_episode": ToolSpec("memory.episode.add"),
    "daybook": ToolSpec("memory.daybook.add"),
    "add_source": ToolSpec(
        "wiki.source.add",
        "Cite it in an article as [[sources/<hash>]] with at least 8 hex digits of the "
        "returned hash.",
    ),
    "read_article": ToolSpec("wiki.article.show"),
    "write_article": ToolSpec("wiki.article.write"),
    # Shared files in the roots the caller's pins grant.
    "read_file": ToolSpec("file.read"),
    "write_file": ToolSpec(
        "file.write",
        "Pass `expect`, the generation read_file returned: edits made since on other lines "
        "are merged in; a conflict names the lines, and nothing is written.",
    ),
    "file_history": ToolSpec("file.history"),
    # The operator's own agents may also keep keel: the door refuses these to everyone else.
    "write_canon": ToolSpec("memory.canon.set"),
    "status": ToolSpec("status.show"),
    "list_jobs": ToolSpec("cadence.list"),
    "add_job": ToolSpec("cadence.add"),
    "run_job": ToolSpec("cadence.run"),
    "get_facts": ToolSpec("ledger.get"),
    "history": ToolSpec("ledger.history"),
    "transact": ToolSpec("ledger.transact"),
    "forget": ToolSpec("ledger.forget"),
    # Approvals: a requester asks about its own request; an approver answers others'.
    "approval": ToolSpec("approval.show"),
    "approvals": ToolSpec("approval.list"),
    "approve": ToolSpec("approval.approve"),
    "deny": ToolSpec("approval.deny"),
}


@dataclass(frozen=True)
class ResourceSpec:
    operation: str
    title: str
    description: str
    mime_type: str
    arguments: dict[str, Any] = field(default_factory=dict)


RESOURCES: dict[str, ResourceSpec] = {
    "keel://canon": ResourceSpec(
        "memory.canon.list",
        "Canon",
        "The operator's source-of-truth documents: name, title and URI of each.",
        "application/json",
    ),
    "keel://decisions/recent": ResourceSpec(
        "memory.decisions",
        "Recent decisions",
        f"The {RECENT_DECISIONS} newest decisions: title, why, alternatives, evidence, "
        "who and when.",
        "application/json",
        {"limit": RECENT_DECISIONS},
    ),
}
CANON_TEMPLATE = "keel://canon/{name}"


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


def _error(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _object_schema(op: registry.Operation, mode: str) -> dict[str, Any]:
    """An operation's input or output as the object schema MCP asks for (a list output is
    wrapped as `{"items": [...]}`)."""
    if mode == "validation":
        return op.input.model_json_schema()
    schema = op.output_adapter.json_schema(mode="serialization")
    if schema.get("type") == "object":
        return schema
    defs = schema.pop("$defs", {})
    wrapped: dict[str, Any] = {
        "type": "object",
        "properties": {"items": schema},
        "required": ["items"],
    }
    if defs:
        wrapped["$defs"] = defs
    return wrapped


def _structured(data: Any) -> dict[str, Any]:
    return data if isinstance(data, dict) else {"items": data}


class KeelMcp(MCPServer):
    """The MCP server. With `identity`, every call acts as it (stdio); without, each call
    acts as the identity its HTTP request's token names (set in the scope by the gate)."""

    def __init__(self, door: Door, identity: str | None = None, scope_key: str = ""):
        super().__init__(
            "keel",
            title="keel memory",
            instructions=INSTRUCTIONS,
            version=version(),
            log_level="WARNING",
        )
        self.door = door
        self.identity = identity
        self.scope_key = scope_key
        ops = registry.load()
        self.tools = {name: ops[spec.operation] for name, spec in TOOLS.items()}

    # -- who is calling ---------------------------------------------------------------------
    def _caller(self, context: Context | None) -> Caller:
        if self.identity is not None:
            return Caller(self.identity, "mcp")
        request = context.request_context.request if context is not None else None
        scope = getattr(request, "scope", None) or {}
        name = scope.get(self.scope_key)
        if not name:
            raise KeelError("this MCP request carries no keel identity")
        return Caller(name, "mcp")

    async def _call(self, operation: str, arguments: dict, caller: Caller) -> Any:
        return await anyio.to_thread.run_sync(self.door.call_json, operation, arguments, caller)

    # -- tools ------------------------------------------------------------------------------
    async def list_tools(self) -> list[Tool]:
        out = []
        for name, spec in TOOLS.items():
            op = self.tools[name]
            description = " ".join(p for p in (op.summary, op.description, spec.description) if p)
            out.append(
                Tool(
                    name=name,
                    title=op.summary.split(":")[0].rstrip("."),
                    description=description,
                    input_schema=_object_schema(op, "validation"),
                    output_schema=_object_schema(op, "serialization"),
                    annotations=ToolAnnotations(
                        read_only_hint=not op.writes,
                        destructive_hint=False,
                        idempotent_hint=not op.writes,
                        open_world_hint=False,
                    ),
                )
            )
        return out

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        op = self.tools.get(name)
        return _object_schema(op, "validation") if op is not None else None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> CallToolResult:
        op = self.tools.get(name)
        if op is None:
            return _error(f"there is no tool {name!r} (tools: {', '.join(TOOLS)})")
        try:
            data = await self._call(op.name, arguments or {}, self._caller(context))
        except Pending as exc:
            # Not refused and not done: the client is told the id to ask about (the
            # `approval` tool). It is flagged as an error only so that a client does not
            # take it for the tool's output, which it is not yet.
            return CallToolResult(
                content=[TextContent(type="text", text=f"pending: {exc}")],
                is_error=True,
                _meta={"keel/approval": exc.approval, "keel/state": "pending"},
            )
        except KeelError as exc:
            return _error(str(exc))
        return CallToolResult(
            content=[TextContent(type="text", text=_json(data))],
            structured_content=_structured(data),
        )

    # -- resources ----------------------------------------------------------------------------
    async def list_resources(self) -> list[Resource]:
        return [
            Resource(
                uri=uri,
                name=uri.removeprefix("keel://").replace("/", "-"),
                title=spec.title,
                description=spec.description,
                mime_type=spec.mime_type,
            )
            for uri, spec in RESOURCES.items()
        ]

    async def list_resource_templates(self) -> list[ResourceTemplate]:
        return [
            ResourceTemplate(
                uri_template=CANON_TEMPLATE,
                name="canon-document",
                title="Canon document",
                description="One canon document's text (markdown).",
                mime_type="text/markdown",
            )
        ]

    async def read_resource(self, uri: Any, context: Context | None = None):
        text = str(uri)
        try:
            caller = self._caller(context)
            if text in RESOURCES:
                spec = RESOURCES[text]
                data = await self._call(spec.operation, dict(spec.arguments), caller)
                if spec.operation == "memory.canon.list":
                    data = [
                        {
                            "name": d.get("canon/name"),
                            "title": d.get("title"),
                            "uri": f"keel://canon/{d.get('canon/name')}",
                        }
                        for d in sorted(data, key=lambda d: d.get("canon/name") or "")
                    ]
                return [ReadResourceContents(content=_json(data), mime_type=spec.mime_type)]
            name = text.removeprefix("keel://canon/")
            if name != text and name and "/" not in name:
                doc = await self._call("memory.canon.show", {"name": name}, caller)
                text_md = doc.get("text") or ""
                return [ReadResourceContents(content=text_md, mime_type="text/markdown")]
        except NotFound as exc:
            raise ResourceNotFoundError(f"resource not found: {text} ({exc})") from None
        except KeelError as exc:
            raise ResourceError(str(exc)) from None
        raise ResourceNotFoundError(f"resource not found: {text}")


# -- stdio ------------------------------------------------------------------------------------
UNREADABLE = "the request holds text that is not valid Unicode (a lone surrogate); nothing was done"


def serve_stdio(door: Door, identity: str) -> None:
    """Serve over this process's stdin/stdout as `identity` until the client hangs up."""
    server = KeelMcp(door, identity)
    print(f"keel mcp: serving over stdio as {identity}", file=sys.stderr)
    anyio.run(_run_stdio, server)


async def _run_stdio(server: KeelMcp) -> None:
    """The SDK's stdio transport, with one repair: a request whose JSON the SDK cannot read
    because it escapes a lone surrogate (valid JSON, invalid Unicode) is answered with an
    error, rather than dropped, which would leave the client waiting forever."""
    async with stdio_server() as (incoming, outgoing):
        send, receive = anyio.create_memory_object_stream(0)

        async def screen() -> None:
            async with send:
                async for item in incoming:
                    reply = _answer_unreadable(item) if isinstance(item, Exception) else None
                    if reply is not None:
                        await outgoing.send(SessionMessage(reply))
                    else:
                        await send.send(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(screen)
            low = server._lowlevel_server  # what MCPServer.run_stdio_async serves, too
            await low.run(receive, outgoing, low.create_initialization_options())
            tg.cancel_scope.cancel()


def _answer_unreadable(exc: Exception) -> Any:
    """An error reply for a request the SDK could not parse, when Python can: the line
    escapes a lone surrogate. None for anything else (the SDK handles it)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return None
    try:
        line = errors()[0].get("input")
        message = json.loads(line) if isinstance(line, str) else None
    except (ValueError, IndexError, TypeError):
        return None
    if not isinstance(message, dict) or "id" not in message or "method" not in message:
        return None
    if message["method"] == "tools/call":
        result = CallToolResult(content=[TextContent(type="text", text=UNREADABLE)], is_error=True)
        return JSONRPCResponse(
            jsonrpc="2.0",
            id=message["id"],
            result=result.model_dump(by_alias=True, exclude_none=True, mode="json"),
        )
    return JSONRPCError(
        jsonrpc="2.0", id=message["id"], error=ErrorData(code=INVALID_PARAMS, message=UNREADABLE)
    )


# -- streamable HTTP on the daemon ------------------------------------------------------------
class McpHttp:
    """The MCP endpoint of the daemon's API server.

    `mount(api)` returns an ASGI app that sends `/mcp` here and everything else to `api`;
    it sits behind the gate, which has put the caller's identity in the scope under
    `scope_key`. `serve(uvicorn_server.serve(...))` runs the session manager around serving
    (the API server runs uvicorn with lifespan off), and `close()` ends the sessions.
    """

    def __init__(self, door: Door, scope_key: str, host: str = "127.0.0.1"):
        self.scope_key = scope_key
        self.server = KeelMcp(door, scope_key=scope_key)
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

    def mount(self, api: Callable) -> Callable:
        async def app(scope: dict, receive: Callable, send: Callable) -> None:
            path = scope.get("path", "")
            if scope["type"] == "http" and (path == PATH or path.startswith(PATH + "/")):
                if self._closing is None or self._closing.is_set():
                    stopping = {"error": "keel is stopping", "kind": "unavailable"}
                    await JSONResponse(stopping, status_code=503)(scope, receive, send)
                else:
                    # A session belongs to the identity that opened it: the SDK answers a
                    # request for it from anyone else as if it did not exist.
                    who = AccessToken(token="", client_id=scope[self.scope_key], scopes=[])
                    await self.app({**scope, "user": AuthenticatedUser(who)}, receive, send)
            else:
                await api(scope, receive, send)

        return app
