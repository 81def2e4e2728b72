"""The HTTP API: versioned JSON under /api/v1, token-protected, served by the daemon.

Every route needs `Authorization: Bearer <token>`: the operator's token (the one `keel init`
wrote to the home) or a client's (`Home.client_token(name)`), whose writes are signed as that
identity; only the OpenAPI document at /api/v1/openapi.json is public. Each request opens a ledger
of its own (a Ledger is one thread's) and closes it. A caller's mistake is a 4xx with a
JSON body `{"error": "<one sentence>", "kind": "..."}` and nothing written.

Events come as a JSON page (`GET /api/v1/events`) or as Server-Sent Events
(`GET /api/v1/events/stream`, each with `id: <tx.n>`, so a reconnecting client resumes
from `Last-Event-ID`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...bus.events import END_OF_TX, Event, EventSource, Position
from ...cadence import jobs as jobs_mod
from ...cadence.runs import run_entity, run_json, runs_of
from ...ledger import (
    BadInput,
    Conflict,
    Corrupt,
    KeelError,
    Ledger,
    NotFound,
    Refused,
    SchemaError,
)
from ...ledger.instants import format_instant
from ...ledger.text import entity_ref, typed_value
from . import memory_routes

API = "/api/v1"
_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_POSITION = 2**62
_POSITION = re.compile(r"^(\d{1,19})(?:\.(\d{1,10}))?$", re.ASCII)
#: How often an idle event stream looks for new transactions, and sends a keep-alive.
STREAM_POLL = 0.2
STREAM_KEEPALIVE = 15.0
#: The identity of the request being served (set by the token gate; None for the operator).
_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("keel_caller", default=None)
# Module-level: endpoint annotations are strings (PEP 563), resolved in module globals.
_bearer = HTTPBearer(auto_error=False, description="the token in KEEL_HOME/token")


# -- errors ------------------------------------------------------------------------------
def _status_of(exc: KeelError) -> tuple[int, str]:
    if isinstance(exc, SchemaError):
        return 422, "schema"
    if isinstance(exc, BadInput):
        return 400, "bad-input"
    if isinstance(exc, NotFound):
        return 404, "not-found"
    if isinstance(exc, Conflict):
        return 409, "conflict"
    if isinstance(exc, Refused):
        return 403, "refused"
    if isinstance(exc, Corrupt):
        return 500, "corrupt"
    return 500, "error"  # the home or the store itself is unusable, not the caller's input


def _error(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)


class Unauthorized(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if not errors:
        return 422, "the request is not valid"
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ())]
    if err.get("type") == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "")
        return 400, f"the request body is not valid JSON{f' ({detail})' if detail else ''}"
    if loc == ["body"] and err.get("type") == "missing":
        return 422, "the request needs a JSON body"
    if loc == ["body"] and err.get("type") in ("dict_type", "model_attributes_type"):
        return 422, "the request body must be a JSON object"
    if loc == ["body"] and err.get("type") == "list_type":
        return 422, "the request body must be a JSON list"
    where = loc[0] if loc else "request"
    rest = ".".join(loc[1:])
    if where == "body":
        where = f"body field {rest}" if rest else "body"
    elif where in ("query", "path", "header"):
        where = f"{where} parameter {rest}"
    return 422, f"{where}: {err.get('msg', 'is not valid')}"


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(KeelError)
    async def keel_error(_request: Request, exc: KeelError) -> JSONResponse:
        status, kind = _status_of(exc)
        return _error(status, kind, str(exc))

    @app.exception_handler(Unauthorized)
    async def unauthorized(_request: Request, exc: Unauthorized) -> JSONResponse:
        return _error(401, "unauthorized", exc.message, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return _error(status, "bad-input", message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {400: "bad-input", 404: "not-found", 405: "method-not-allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "there is no such API route"
        return _error(exc.status_code, kinds.get(exc.status_code, "http"), message, exc.headers)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        return _error(500, "internal", f"internal error: {type(exc).__name__}")


class _TokenGate:
    """Before anything reads a body: no token, no answer (the OpenAPI doc is public). The
    identity the token belongs to goes into `request.state.identity` and, for non-operator
    identities, into `_caller`, which `ledger_for` signs as."""

    def __init__(self, app: Any, check: Callable[[str | None], tuple[str, bool]], public: str):
        self.app, self.check, self.public = app, check, public

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(API) and path != self.public:
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            scheme, _, credentials = header.decode("latin-1").partition(" ")
            try:
                given = credentials.strip() if scheme.lower() == "bearer" else None
                who, operator = self.check(given)
            except Unauthorized as exc:
                response = _error(401, "unauthorized", exc.message, {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["identity"] = who
            token = _caller.set(None if operator else who)
            try:
                await self.app(scope, receive, send)
            finally:
                _caller.reset(token)
            return
        await self.app(scope, receive, send)


# -- request bodies ----------------------------------------------------------------------
class TxDocument(BaseModel):
    """A transaction document, as `keel transact` reads it."""

    model_config = ConfigDict(extra="forbid")

    reason: str = ""
    ops: list[dict[str, Any]] = Field(
        description='[{"op": "add"|"retract", "e": id|"#temp"|[attr, value], "a", "v", '
        '"valid_from"?, "valid_to"?}]'
    )
    expect: list[dict[str, Any]] = Field(
        default_factory=list, description='compare-and-set: [{"e", "a", "v"}] (v null = absent)'
    )


# -- helpers -----------------------------------------------------------------------------
#: What a malformed value deep in a document may raise before the ledger names it.
_SHAPE_ERRORS = (TypeError, ValueError, OverflowError, UnicodeError, RecursionError)


def _check_text(doc: object, what: str) -> None:
    """Refuse lone surrogates (not Unicode) and NUL characters (PostgreSQL cannot store
    them in ids), so both stores answer the same 4xx."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise BadInput(f"{what} holds a NUL character")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput(f"{what} holds text that is not valid Unicode") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _check_tx_document(doc: TxDocument) -> None:
    """Shape checks the ledger assumes of a trusted caller, so a stranger gets a 4xx."""
    _check_text(doc.model_dump(), "the transaction document")
    for i, op in enumerate(doc.ops, start=1):
        if not isinstance(op.get("op", "add"), str):
            raise BadInput(f"op {i}: 'op' must be add or retract")
        if "a" in op and not isinstance(op["a"], str):
            raise BadInput(f"op {i}: 'a' must be an attribute name")
    for i, exp in enumerate(doc.expect, start=1):
        if not isinstance(exp.get("a"), str):
            raise BadInput(f"expectation {i} needs 'a', an attribute name")


@contextlib.contextmanager
def _shape_errors(what: str) -> Iterator[None]:
    """A type error from deep inside a malformed document is the caller's, not ours."""
    try:
        yield
    except _SHAPE_ERRORS as exc:
        raise BadInput(f"{what} is malformed ({type(exc).__name__})") from None


class _Waker:
    """Wakes idle event streams when a transaction is committed through this API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def add(self, item: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.add(item)

    def discard(self, item: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            self._waiters.discard(item)

    def notify(self, *_: object) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                self.discard((loop, event))


def parse_position(text: str | None, what: str = "after") -> Position | None:
    """A position `tx.n` (after event n of tx) or `tx` (after all of tx), or None."""
    if text is None or not text.strip():
        return None
    match = _POSITION.match(text.strip())
    if not match:
        raise BadInput(f"{what} must be an event position like 12 or 12.3, got {text!r}")
    tx, n = match.groups()
    pos = Position(int(tx), int(n) if n else END_OF_TX)
    if pos.tx >= _MAX_POSITION or pos.n > END_OF_TX:
        raise BadInput(f"{what} {text!r} is out of range")
    return pos


def cursor_text(pos: Position) -> str:
    """A position as a cursor: `tx` once all of tx is read, else `tx.n`."""
    return str(pos.tx) if pos.n >= END_OF_TX else str(pos)


def _types(text: str | None) -> frozenset[str]:
    return frozenset(t.strip() for t in (text or "").split(",") if t.strip())


def _redact(location: str) -> str:
    """A store location without any password in it."""
    location = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", location)
    return re.sub(r"(password=)[^&\s]*", r"\1***", location)


def _read_events(
    source: EventSource, after: Position, types: frozenset[str], limit: int
) -> tuple[list[Event], Position]:
    """Up to `limit` wanted events after `after`, and where a next page starts."""
    out: list[Event] = []
    cursor = after
    while True:
        events, reached = source.read(cursor)
        for event in events:
            if not types or event.type in types:
                out.append(event)
                if len(out) >= limit:
                    return out, event.position
        cursor = max(cursor, reached)
        if reached.tx >= source.head():
            return out, cursor


def _sse(event: Event) -> str:
    data = json.dumps(event.to_json(), ensure_ascii=False)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


# -- the app -----------------------------------------------------------------------------
def create_app(runtime: Any) -> FastAPI:
    """The API over a `keel.daemon.runtime.Runtime` (or anything shaped like it)."""
    app = FastAPI(
        title="keel",
        version="1",
        summary="keel's ledger, jobs, runs and events over HTTP.",
        description="Every route needs `Authorization: Bearer <token>` (KEEL_HOME/token). "
        'Errors are `{"error": "<one sentence>", "kind": "..."}` with a 4xx status.',
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.stopping = threading.Event()
    waker = _Waker()
    app.state.waker = waker
    _install_errors(app)

    def check_token(credentials: str | None) -> tuple[str, bool]:
        """(the identity the token belongs to, whether it is the operator's token)."""
        if credentials is None:
            raise Unauthorized("this API needs an 'Authorization: Bearer <token>' header")
        try:
            who = runtime.home.identity_for(credentials)
            operator = runtime.home.operator
        except KeelError:
            raise Unauthorized("the keel home has no API token (run 'keel init')") from None
        if who is None:
            raise Unauthorized("the API token is wrong")
        return who, who == operator

    app.add_middleware(_TokenGate, check=check_token, public=f"{API}/openapi.json")

    def authorize(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        # The middleware has checked already; this declares the scheme in the OpenAPI doc.
        check_token(creds.credentials if creds else None)

    def plain_text(request: Request) -> None:
        _check_text(request.url.path, "the request path")
        _check_text(list(request.query_params.values()), "a query parameter")

    def ledger_for(as_name: str | None = None) -> Ledger:
        """A ledger of this request's own, signing as `as_name`, else as the caller (the
        operator for the operator's token); use it in a `with` block, which closes it."""
        as_name = as_name or _caller.get()
        ledger = runtime.open_ledger(as_name) if as_name else runtime.open_ledger()
        ledger.on_commit(waker.notify)
        return ledger

    v1 = APIRouter(prefix=API, dependencies=[Depends(authorize), Depends(plain_text)])

    # -- status and the ledger ---------------------------------------------------------
    @v1.get("/status", tags=["status"], summary="The daemon: jobs, subscriptions, ledger")
    def status() -> dict:
        out = runtime.status()
        ledger = out.get("ledger")
        if isinstance(ledger, dict) and isinstance(ledger.get("location"), str):
            ledger["location"] = _redact(ledger["location"])
        return out

    @v1.get("/schema", tags=["ledger"], summary="Declared attributes")
    def schema() -> list[dict]:
        with ledger_for() as ledger:
            attrs = sorted(ledger.schema.values(), key=lambda a: a.ident)
            return [a.to_json() for a in attrs]

    @v1.post("/schema", tags=["ledger"], summary="Declare attributes (forward-only changes)")
    def declare(
        decls: Annotated[
            list[Any],
            Body(
                description='[{"attribute": "ns/name", "type": "string|int|float|bool|'
                'instant|ref|json|bytes", "cardinality"?, "unique"?, "fulltext"?, "doc"?}]',
                examples=[[{"attribute": "person/handle", "type": "string"}]],
            ),
        ],
    ) -> dict:
        _check_text(decls, "the schema declaration")
        with ledger_for() as ledger, _shape_errors("the schema declaration"):
            result = ledger.declare(decls)
        return result.to_json() if result else {"tx": None, "unchanged": True}

    @v1.post("/transact", tags=["ledger"], summary="Commit a transaction document")
    def transact(
        doc: TxDocument,
        as_name: Annotated[
            str | None, Query(alias="as", description="Sign as this identity (a key in the home).")
        ] = None,
        branch: str = "main",
    ) -> dict:
        if as_name is not None and not _IDENTITY.match(as_name):
            raise BadInput(f"{as_name!r} is not an identity name (letters, digits, _ . -)")
        caller = _caller.get()
        if caller is not None and as_name not in (None, caller):
            raise Refused(f"{caller!r} may sign only as itself, not as {as_name!r}")
        _check_tx_document(doc)
        try:
            ledger = ledger_for(as_name)
        except NotFound:
            raise Refused(f"cannot sign as {as_name!r}: this home holds no key for it") from None
        with ledger, _shape_errors("the transaction document"):
            result = ledger.transact(doc.ops, reason=doc.reason, expect=doc.expect, branch=branch)
        return result.to_json()

    @v1.get(
        "/entities/{entity:path}/history",
        tags=["ledger"],
        summary="Every change to an entity (or one attribute) along both time axes",
    )
    def history(entity: str, attr: str | None = None, branch: str = "main") -> list[dict]:
        with ledger_for() as ledger:
            view = ledger.view(branch)
            e = view.resolve_entity(entity_ref(entity))
            if attr:
                ledger.attribute(attr)
            rows = view.history(e, attr or None)
        if not rows:
            raise NotFound(f"entity {entity} has no history{f' for {attr}' if attr else ''}")
        return rows

    @v1.get(
        "/entities/{entity:path}",
        tags=["ledger"],
        summary="An entity's values: now, as of a transaction or instant, at a valid instant",
        description="`entity` is an id or a URL-encoded JSON lookup ref such as "
        '`["person/handle","alice"]`.',
    )
    def get_entity(
        entity: str,
        as_of: Annotated[str | None, Query(description="A tx id, tx hash or instant.")] = None,
        valid_at: Annotated[str | None, Query(description="An ISO 8601 instant.")] = None,
        branch: str = "main",
    ) -> dict:
        with ledger_for() as ledger:
            view = ledger.view(branch, as_of, valid_at)
            e = view.resolve_entity(entity_ref(entity))
            found = view.get_json(e)
        if found is None:
            raise NotFound(f"entity {entity} has no values in this view")
        return found

    @v1.get("/find", tags=["ledger"], summary="Entities whose current attr is value (paged)")
    def find(
        attr: str,
        value: Annotated[str | None, Query(description="Read by the attribute's type.")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
        after: Annotated[str, Query(description="Page on after this entity id.")] = "",
        as_of: str | None = None,
        valid_at: str | None = None,
        branch: str = "main",
    ) -> dict:
        with ledger_for() as ledger:
            view = ledger.view(branch, as_of, valid_at)
            parsed = typed_value(ledger, attr, value) if value is not None else None
            found = view.find(attr, parsed, limit=limit, after=after)
        return {"entities": found, "next": found[-1] if len(found) >= limit else None}

    @v1.get("/log", tags=["ledger"], summary="Transactions, oldest first (paged)")
    def log(
        since: Annotated[int, Query(ge=0, lt=_MAX_POSITION)] = 0,
        branch: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> dict:
        out = []
        with ledger_for() as ledger:
            for entry in ledger.log(since, branch):
                out.append(entry)
                if len(out) >= limit:
                    break
        return {"transactions": out, "next": out[-1]["tx"] if len(out) >= limit else None}

    # -- jobs and runs ---------------------------------------------------------------
    def job_json(ledger: Ledger, spec: jobs_mod.JobSpec, values: dict, nexts: dict) -> dict:
        last = runs_of(ledger, job=spec.name, limit=1)
        last_fire = values.get("keel.job/last-fire")
        return {
            "name": spec.name,
            "spec": spec.model_dump(),
            "paused": bool(values.get("keel.job/paused")),
            "source": values.get("keel.job/source"),
            "next": nexts.get(spec.name, {}).get("next"),
            "last_fire": format_instant(last_fire) if last_fire is not None else None,
            "last": run_json(last[-1]) if last else None,
        }

    def one_job(ledger: Ledger, name: str) -> dict:
        spec, values = jobs_mod.get_job(ledger, name)
        nexts = {j["job"]: j for j in runtime.scheduler.next_fires(ledger)}
        return job_json(ledger, spec, values, nexts)

    @v1.get("/jobs", tags=["cadence"], summary="Every job with its next fire and last run")
    def list_jobs() -> list[dict]:
        with ledger_for() as ledger:
            nexts = {j["job"]: j for j in runtime.scheduler.next_fires(ledger)}
            return [
                job_json(ledger, spec, values, nexts)
                for _name, (spec, values) in sorted(jobs_mod.load_jobs(ledger).items())
            ]

    @v1.post("/jobs", tags=["cadence"], summary="Declare or update a job")
    def add_job(
        spec: Annotated[
            dict[str, Any],
            Body(
                description="A job spec: name, schedule (cron, 'every 30m' or 'at ...'), "
                "kind, run, tz, timeout, retries, backoff, overlap, catch_up, ...",
                examples=[{"name": "hello", "schedule": "every 1h", "run": "echo hello"}],
            ),
        ],
    ) -> dict:
        _check_text(spec, "the job spec")
        with _shape_errors("the job spec"):
            parsed = jobs_mod.parse_job(spec, kinds=set(runtime.kinds))
            nxt = parsed.parsed_schedule().next_after(runtime.clock.now())
            if nxt is not None:
                try:
                    format_instant(nxt)
                except (OverflowError, ValueError, OSError):
                    raise BadInput(
                        f"job {parsed.name}: schedule {parsed.schedule!r} fires too far ahead"
                    ) from None
        with ledger_for() as ledger:
            changed = jobs_mod.save_job(ledger, parsed, "api")
            return {**one_job(ledger, parsed.name), "changed": changed}

    @v1.get("/jobs/{name}", tags=["cadence"], summary="One job, with its recent runs")
    def get_job(name: str, runs: Annotated[int, Query(ge=0, le=1000)] = 10) -> dict:
        with ledger_for() as ledger:
            out = one_job(ledger, name)
            recent = runs_of(ledger, job=name, limit=runs) if runs else []
            out["runs"] = [run_json(r) for r in recent]
            return out

    @v1.post("/jobs/{name}/run", tags=["cadence"], summary="Fire a job now")
    def run_job(
        name: str,
        wait: Annotated[
            float, Query(ge=0, le=600, description="Seconds to wait for the run to end.")
        ] = 0,
    ) -> dict:
        with ledger_for() as ledger:
            key, future = runtime.scheduler.run_now(ledger, name)
        if future is not None and wait > 0:
            # A timeout leaves the run running; a failure is recorded on the run itself.
            with contextlib.suppress(Exception):
                future.result(timeout=wait)
        with ledger_for() as ledger:
            values = ledger.view().get(run_entity(key)) or {}
        return {"key": key, **run_json(values)}

    def pause(name: str, paused: bool) -> dict:
        with ledger_for() as ledger:
            _spec, values = jobs_mod.get_job(ledger, name)
            if bool(values.get("keel.job/paused")) != paused:
                jobs_mod.set_paused(ledger, name, paused)
            return one_job(ledger, name)

    @v1.post("/jobs/{name}/pause", tags=["cadence"], summary="Stop a job from firing")
    def pause_job(name: str) -> dict:
        return pause(name, True)

    @v1.post("/jobs/{name}/resume", tags=["cadence"], summary="Let a paused job fire again")
    def resume_job(name: str) -> dict:
        return pause(name, False)

    @v1.get("/runs", tags=["cadence"], summary="Runs, newest last")
    def list_runs(
        job: str | None = None,
        outcome: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    ) -> list[dict]:
        with ledger_for() as ledger:
            if job is not None:
                jobs_mod.get_job(ledger, job)
            found = runs_of(ledger, job=job, outcome=outcome)
        return [run_json(r) for r in found[-limit:]]

    @v1.get("/runs/{key}", tags=["cadence"], summary="One run, with its artifact")
    def get_run(key: str) -> dict:
        with ledger_for() as ledger:
            values = ledger.view().get(run_entity(key))
        if not values or "keel.run/key" not in values:
            raise NotFound(f"there is no run {key!r}")
        return run_json(values, with_artifact=True)

    # -- events ----------------------------------------------------------------------
    @v1.get("/events", tags=["events"], summary="Events after a position (paged)")
    def events(
        after: Annotated[
            str | None, Query(description="A position tx.n; from the start when omitted.")
        ] = None,
        types: Annotated[str | None, Query(description="Comma-separated event types.")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 500,
    ) -> dict:
        start = parse_position(after) or Position(0, 0)
        with ledger_for() as ledger:
            found, cursor = _read_events(EventSource(ledger), start, _types(types), limit)
        return {"events": [e.to_json() for e in found], "next": cursor_text(cursor)}

    @v1.get(
        "/events/stream",
        tags=["events"],
        summary="Server-Sent Events: one per event, as they are committed",
        description="Starts after `after` (or the `Last-Event-ID` header), else at the "
        "newest transaction. Each message has `id: tx.n`, `event: <type>` and JSON `data`.",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def stream(
        after: str | None = None,
        types: str | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        wanted = _types(types)
        start = parse_position(last_event_id, "Last-Event-ID") or parse_position(after)
        if start is None:

            def head() -> int:
                with ledger_for() as ledger:
                    return EventSource(ledger).head()

            start = Position(await run_in_threadpool(head), END_OF_TX)
        return StreamingResponse(
            _frames(app, ledger_for, start, wanted),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    v1.include_router(memory_routes.router(runtime, ledger_for, _check_text))
    app.include_router(v1)
    return app


class _StreamReader:
    """One stream's ledger, read from worker threads one at a time and closed only when
    no read is in flight (a cancelled stream may leave one running)."""

    def __init__(self, open_ledger: Callable[[], Ledger]):
        self._open = open_ledger
        self._lock = threading.Lock()
        self._ledger: Ledger | None = None
        self._closed = False

    def read(self, cursor: Position) -> tuple[list[Event], Position, int]:
        with self._lock:
            if self._closed:
                return [], cursor, cursor.tx
            if self._ledger is None:
                self._ledger = self._open()
            source = EventSource(self._ledger)
            events, reached = source.read(cursor)
            return events, reached, source.head()

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def close(self) -> None:
        if self._lock.acquire(blocking=False):
            self._lock.release()
            self._close()
        else:
            threading.Thread(target=self._close, name="api-stream-close", daemon=True).start()


async def _frames(
    app: FastAPI, open_ledger: Callable[[], Ledger], cursor: Position, types: frozenset[str]
) -> AsyncIterator[str]:
    stopping: threading.Event = app.state.stopping
    waker: _Waker = app.state.waker
    wake = asyncio.Event()
    me = (asyncio.get_running_loop(), wake)
    waker.add(me)
    reader = _StreamReader(open_ledger)
    try:
        yield f"retry: 1000\n: connected after {cursor_text(cursor)}\n\n"
        beat = time.monotonic()
        while not stopping.is_set():
            wake.clear()
            events, reached, head = await run_in_threadpool(reader.read, cursor)
            chunk = "".join(_sse(e) for e in events if not types or e.type in types)
            cursor = max(cursor, reached)
            if chunk:
                yield chunk
                beat = time.monotonic()
            if reached.tx < head:
                continue
            if time.monotonic() - beat >= STREAM_KEEPALIVE:
                yield ": keep-alive\n\n"
                beat = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), STREAM_POLL)
    finally:
        waker.discard(me)
        reader.close()
