"""The default client pins, on each surface and both stores: every operation a new client
may use works for it — with real arguments, over HTTP, MCP and the CLI — and everything
else is refused (the refusals of every route, tool and command are in
tests/surfaces/test_through_the_door.py and tests/ops/test_door.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import client_may, mcp_over_http
from keel.ops import registry
from keel.ops.door import Caller
from keel.surfaces.api.app import API
from keel.surfaces.api.routes import ROUTES
from keel.surfaces.mcp.server import TOOLS

#: A working call of every operation the default pins give a client, in an order where
#: each finds what it reads.
WORKS: list[tuple[str, dict]] = [
    ("memory.capture", {"text": "call the plumber"}),
    ("memory.daybook.add", {"text": "shipped the release"}),
    ("memory.daybook.day", {}),
    ("memory.decide", {"title": "Use SQLite", "why": "one file"}),
    ("memory.decisions", {}),
    ("memory.entity.add_kind", {"name": "gadget"}),
    ("memory.entity.kinds", {}),
    ("memory.entity.add", {"name": "Alice", "kind": "person"}),
    ("memory.observe", {"entity": "alice", "text": "Alice moved to Berlin"}),
    ("memory.entity.show", {"ref": "alice"}),
    ("memory.entity.timeline", {"ref": "alice"}),
    ("memory.episode.add", {"text": "we talked about the release"}),
    ("memory.remember", {"text": "CI is red"}),
    ("memory.working", {}),
    ("memory.items", {"surface": "capture"}),
    ("memory.canon.list", {}),
    ("memory.canon.show", {"name": "style"}),
    ("wiki.source.add", {"text": "a paper about recall"}),
    ("wiki.sources", {}),
    ("wiki.article.write", {"slug": "recall", "body": "Recall fuses BM25 and vectors."}),
    ("wiki.article.show", {"slug": "recall"}),
    ("wiki.index", {}),
    ("wiki.log", {}),
    ("wiki.lint", {}),
    ("wiki.fix", {}),
    ("recall.search", {"query": "plumber"}),
    ("recall.status", {}),
]
#: Allowed, but with nothing of the client's own to show here (tested where it is made).
ELSEWHERE = {"approval.show": "a request of the client's own: tests/govern/test_approvals.py"}


def test_the_table_covers_every_operation_a_client_may_use():
    allowed = {name for name, op in registry.load().items() if client_may(op)}
    assert {name for name, _ in WORKS} | set(ELSEWHERE) == allowed


@pytest.fixture
def style(run):
    run("memory.canon.set", name="style", text="Short sentences.")  # the operator's


def test_each_allowed_operation_works_for_a_client_through_the_door(door, client, style):
    for name, arguments in WORKS:
        door.call(name, arguments, Caller(client, "test"))


def _fill(path: str, arguments: dict) -> tuple[str, dict]:
    rest = dict(arguments)
    for field in list(rest):
        for form in (f"{{{field}}}", f"{{{field}:path}}"):
            if form in path:
                path = path.replace(form, str(rest.pop(field)))
    return path, rest


def test_each_allowed_operation_works_over_http(keel_home, door, client, server, style):
    token = door.call("identity.token", {"name": client}, Caller(keel_home.operator)).token
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    routes = {name: (method, path) for method, path, name in ROUTES}
    for name, arguments in WORKS:
        method, path = routes[name]
        url, rest = _fill(API + path, arguments)
        body = {"params": rest} if method == "GET" else {"json": rest}
        r = http.request(method, url, **body)
        assert r.status_code == 200, (name, r.status_code, r.text)


def test_each_allowed_tool_works_over_mcp(keel_home, door, client, server, style):
    token = door.call("identity.token", {"name": client}, Caller(keel_home.operator)).token
    tools = {spec.operation: tool for tool, spec in TOOLS.items()}
    offered = [(tools[name], arguments) for name, arguments in WORKS if name in tools]
    assert len(offered) >= 12

    async def scenario(session) -> None:
        for tool, arguments in offered:
            result = await session.call_tool(tool, arguments)
            assert not result.is_error, (tool, result.content)

    mcp_over_http(server.url, token, scenario)


#: Command lines that work for a client (`keel --as NAME ...`: every command can act as
#: another identity).
CLI_WORKS = [
    ["entity", "add-kind", "gadget"],
    ["entity", "add", "Alice", "--kind", "person"],
    ["entity", "observe", "alice", "Alice moved to Berlin"],
    ["entity", "timeline", "alice"],
    ["entity", "kinds"],
    ["canon", "list"],
    ["canon", "show", "style"],
    ["wiki", "sources"],
    ["wiki", "index"],
    ["wiki", "log"],
    ["capture", "call the plumber"],
    ["remember", "CI is red"],
    ["working"],
    ["decide", "Use SQLite", "--why", "one file"],
    ["decisions"],
    ["recall", "plumber"],
    ["daybook", "shipped"],
]
CLI_REFUSED = [
    (["canon", "set", "style", "-"], "canon.write"),
    (["cadence", "add", "x", "--schedule", "every 1h", "--probe", "ok"], "cadence.write"),
    (["vault", "import", "/nonexistent/v"], "vault.import"),
]


def test_the_cli_acts_as_a_client_with_the_same_pins(cli, client, style, monkeypatch, keel_home):
    operator = keel_home.operator
    for argv in CLI_WORKS:
        done = cli("--as", client, *argv, "--json")
        assert done.code == 0, (argv, done)
        json.loads(done.out.splitlines()[0])
    for argv, capability in CLI_REFUSED:
        refused = cli("--as", client, *argv, input="text")
        assert refused.code == 4 and capability in refused.err, (argv, refused)
    # KEEL_AS says the same for a whole shell session; --as wins over it.
    assert cli("secret", "list").code == 0
    monkeypatch.setenv("KEEL_AS", client)
    assert cli("secret", "list").code == 4
    assert cli("capture", "noted").code == 0
    assert cli("--as", operator, "secret", "list").code == 0
