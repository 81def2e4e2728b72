"""The HTTP API: versioned JSON under /api/v1, one route per operation, served by the daemon.

Every route is built from the operation it calls (`routes.ROUTES`): its path parameters,
query string (GET) or JSON body (POST, PUT) become the arguments, the door validates them
and checks the caller's capability, and the answer is the operation's typed output. The
OpenAPI document at /api/v1/openapi.json (public) says exactly that: the input models, the
output models, and the one error model `{"error", "kind"}` every failure uses.

Before anything else, the gate (`Gate`) checks the Host header (so a page in a browser
cannot reach the API through DNS rebinding) and the bearer token, which names the caller.

Events also come as Server-Sent Events (`GET /api/v1/events/stream`, each with
`id: <tx.n>`, so a reconnecting client resumes from `Last-Event-ID`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import typing
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import BadInput, KeelError
from ...ops import registry, version
from ...ops.door import Caller, Door
from .routes import ROUTES

API = "/api/v1"
OPENAPI = f"{API}/openapi.json"
#: A request body larger than this is refused before it is read.
MAX_BODY = 64 * 1024 * 1024
#: How often an idle event stream looks for new transactions, and sends a keep-alive.
STREAM_POLL = 0.2
STREAM_KEEPALIVE = 15.0
STREAM_PAGE = 1000
SCOPE_CALLER = "keel.caller"


class ErrorBody(BaseModel):
    """Every failure, on every route: one sentence and its kind."""

    error: str
    kind: str
    capability: str | None = None
    operation: str | None = None
    files: list[str] | None = None


_ERRORS = {
    400: "bad input: malformed JSON, arguments or values",
    401: "no token, or a token that names no identity",
    403: "the caller may not do this (the capability is named) or a rule refused it",
    404: "a named thing does not exist",
    409: "a precondition failed or a merge clashed: re-read and retry",
    422: "the schema refuses the value",
    503: "keel is read-only: its ledger failed verification",
}


def error_response(exc: KeelError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


def plain_error(status: int, kind: str, message: str, headers: dict | None = None):
    return JSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)


# -- the gate -----------------------------------------------------------------------------------
class Gate:
    """Host header and token checks in front of the API and MCP alike.

    `hosts` lists the Host values accepted. A request that passes carries its caller in the
    ASGI scope. Only HTTP passes (keel serves no websockets); lifespan events go through.
    """

    def __init__(self, app: Any, door: Door, hosts: Collection[str], public: Collection[str]):
        self.app, self.door, self.hosts, self.public = app, door, set(hosts), set(public)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        headers = dict(scope.get("headers") or ())
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.hosts:
            response = plain_error(
                421, "bad-host", f"keel answers only to {', '.join(sorted(self.hosts))}"
            )
            return await response(scope, receive, send)
        if scope.get("path") in self.public:
            return await self.app(scope, receive, send)
        scheme, _, credentials = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        try:
            token = credentials.strip() if scheme.lower() == "bearer" else None
            identity = await run_in_threadpool(self.door.identify, token)
        except KeelError as exc:
            response = error_response(exc, {"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        scope[SCOPE_CALLER] = identity
        await self.app(scope, receive, send)


#: The addresses keel serves on: this machine only. Another machine reaches keel through a
#: tunnel the operator sets up (ssh -L), never through a port keel opens to the network.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_host(host: str) -> None:
    if host not in LOOPBACK:
        raise BadInput(
            f"the address must be loopback ({', '.join(LOOPBACK)}), not {host!r}: keel "
            "serves this machine only (reach it from elsewhere through a tunnel, ssh -L)"
        )


def allowed_hosts(port: int) -> list[str]:
    """The Host header values a loopback server answers to (a DNS-rebinding page sends its
    own name, and is turned away)."""
    return [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]


# -- routes built from operations -----------------------------------------------------------
def _path_names(path: str) -> list[str]:
    return [p[1:-1].split(":")[0] for p in path.split("/") if p.startswith("{")]


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation))


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object a request carries ({} for none), refused when larger than MAX_BODY."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise BadInput(f"the request body is larger than {MAX_BODY // 2**20} MiB")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadInput(f"the request body is larger than {MAX_BODY // 2**20} MiB")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"the request body is not valid JSON ({exc.msg})") from None
    except (UnicodeDecodeError, RecursionError):
        raise BadInput("the request body is not UTF-8 JSON, or nests too deeply") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise BadInput("the request body holds a number too long to read") from None
    if not isinstance(data, dict):
        raise BadInput("the request body must be a JSON object of named arguments")
    return data


def _endpoint(door: Door, op: registry.Operation, method: str, path: str) -> Callable:
    path_names = set(_path_names(path))
    lists = {n for n, f in op.input.model_fields.items() if _is_list(f.annotation)}

    async def endpoint(request: Request) -> JSONResponse:
        if method == "GET":
            q = request.query_params
            given = {n: q.getlist(n) if n in lists else q.getlist(n)[-1] for n in q}
        else:
            given = await _body(request)
        clash = path_names & set(given)
        if clash:
            where = "the query" if method == "GET" else "the body"
            raise BadInput(f"{', '.join(sorted(clash))} comes from the path, not {where}")
        args = {**given, **request.path_params}
        caller = Caller(request.scope[SCOPE_CALLER], "http")
        result = await run_in_threadpool(door.call_json, op.name, args, caller)
        return JSONResponse(result)

    endpoint.__name__ = op.name.replace(".", "_")
    return endpoint


def _parameters(op: registry.Operation, method: str, path: str, defs: dict) -> dict:
    """The OpenAPI parameters and request body of a route, from its operation's input."""
    schema = op.input.model_json_schema(ref_template="#/components/schemas/{model}")
    defs.update(schema.pop("$defs", {}))
    props, required = schema.get("properties", {}), set(schema.get("required", []))
    in_path = _path_names(path)
    params = [
        {"name": n, "in": "path", "required": True, "schema": props.get(n, {"type": "string"})}
        for n in in_path
    ]
    extra: dict[str, Any] = {}
    if method == "GET":
        for name, prop in props.items():
            if name in in_path:
                continue
            entry = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if prop.get("description"):
                entry["description"] = prop["description"]
            params.append(entry)
    else:
        body_props = {n: p for n, p in props.items() if n not in in_path}
        if body_props:
            name = op.input.__name__ + ("Body" if in_path else "")
            body: dict[str, Any] = {
                "type": "object",
                "title": name,
                "properties": body_props,
                "additionalProperties": False,
            }
            body_required = sorted(required - set(in_path))
            if body_required:
                body["required"] = body_required
            if schema.get("description"):
                body["description"] = schema["description"]
            defs[name] = body
            ref = {"$ref": f"#/components/schemas/{name}"}
            extra["requestBody"] = {
                "required": bool(body_required),
                "content": {"application/json": {"schema": ref}},
            }
    if params:
        extra["parameters"] = params
    return extra


def _responses(op: registry.Operation) -> dict:
    codes = [400, 401, 403, 404, 422] + ([409, 503] if op.writes else [])
    return {code: {"model": ErrorBody, "description": _ERRORS[code]} for code in codes}


# -- the app ----------------------------------------------------------------------------------
def create_app(door: Door) -> FastAPI:
    app = FastAPI(
        title="keel",
        version=version(),
        description="keel's operations over HTTP. Every route needs `Authorization: Bearer "
        "<token>` (the operator's token is KEEL_HOME/token; `keel mcp token NAME` makes a "
        "client's) and a loopback Host. Every failure is `{error, kind}` with a 4xx status.",
        openapi_url=OPENAPI,
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.state.stopping = threading.Event()
    #: Which operation each route calls (what the surface tests check).
    app.state.operations = {}
    defs: dict[str, Any] = {}
    ops = registry.load()
    for method, path, name in ROUTES:
        op = ops[name]
        app.add_api_route(
            API + path,
            _endpoint(door, op, method, path),
            methods=[method],
            response_model=op.output,
            responses=_responses(op),
            summary=op.summary,
            description=op.description,
            operation_id=op.name.replace(".", "_"),
            tags=list(op.tags),
            openapi_extra=_parameters(op, method, path, defs),
        )
        app.state.operations[(method, API + path)] = name
    _stream_route(app, door)
    _errors(app)
    _openapi(app, defs)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(KeelError)
    async def keel_error(_request: Request, exc: KeelError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not-found", 405: "method-not-allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "there is no such API route"
        if exc.status_code == 405:
            message = "this route does not take that method"
        return plain_error(exc.status_code, kinds.get(exc.status_code, "http"), message)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        return plain_error(500, "internal", f"internal error: {type(exc).__name__}")


def _openapi(app: FastAPI, defs: dict) -> None:
    """The generated document, with the input models' schemas and the bearer scheme."""
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = base()
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name, schema in defs.items():
            schemas.setdefault(name, schema)
        _, error_schema = models_json_schema(
            [(ErrorBody, "serialization")], ref_template="#/components/schemas/{model}"
        )
        schemas.update(error_schema.get("$defs", {}))
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


# -- Server-Sent Events -----------------------------------------------------------------------
def _stream_route(app: FastAPI, door: Door) -> None:
    @app.get(
        f"{API}/events/stream",
        tags=["events"],
        summary="Server-Sent Events: one per event, as they are committed",
        description="Starts after `after` (or the `Last-Event-ID` header), else at the newest "
        "transaction. Each message has `id: tx.n`, `event: <type>` and JSON `data` (an Event). "
        "Needs the capability `events.read`.",
        operation_id="events_stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **_responses(_events_op())},
    )
    async def stream(
        request: Request, after: str | None = None, types: str | None = None
    ) -> StreamingResponse:
        caller = Caller(request.scope[SCOPE_CALLER], "http")
        start = request.headers.get("last-event-id") or after
        wanted = [t for t in (types or "").split(",") if t.strip()]

        def read(position: str | None) -> dict:
            args: dict[str, Any] = {"types": wanted, "limit": STREAM_PAGE}
            if position is not None:
                args["after"] = position
            return door.call_json("events.list", args, caller)

        first = await run_in_threadpool(read, start)  # refused here, before the stream opens
        if start is None:
            first = {"events": [], "next": str(first["head"]), "head": first["head"]}  # from now
        return StreamingResponse(
            _frames(app, read, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _events_op() -> registry.Operation:
    return registry.get("events.list")


async def _frames(
    app: FastAPI, read: Callable[[str | None], dict], page: dict
) -> AsyncIterator[str]:
    stopping: threading.Event = app.state.stopping
    yield f"retry: 1000\n: connected after {page['next']}\n\n"
    beat = time.monotonic()
    while not stopping.is_set():
        chunk = "".join(_sse(e) for e in page["events"])
        if chunk:
            yield chunk
            beat = time.monotonic()
        if len(page["events"]) < STREAM_PAGE:  # caught up: wait a moment for more
            if time.monotonic() - beat >= STREAM_KEEPALIVE:
                yield ": keep-alive\n\n"
                beat = time.monotonic()
            await asyncio.sleep(STREAM_POLL)
        try:
            page = await run_in_threadpool(read, page["next"])
        except KeelError:
            return  # the caller may no longer read events: end the stream


def _sse(event: dict) -> str:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
