"""The MCP server through the official MCP Python client, no mocks: over stdio (`keel mcp` as a
real subprocess) and over streamable HTTP (the daemon's API server, in-process and as a real
`keel up`), on SQLite and PostgreSQL. Every write must be signed by the connection's identity."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from conftest import keel
from keel.cadence.clock import SystemClock
from keel.daemon.runtime import Runtime
from keel.govern.home import Home
from keel.memory.memory import Memory
from keel.surfaces.api.server import serve
from test_daemon import start_daemon, stop_daemon

AGENT = "claude-code"
TOOLS = {
    "remember",
    "recall",
    "get_entity",
    "entity_timeline",
    "log_decision",
    "capture",
    "add_source",
    "wiki_article",
}
Scenario = Callable[[ClientSession], Awaitable[None]]


@pytest.fixture
def agent_home(home: Home) -> Home:
    """The `home` fixture with an agent identity and a canon document (by the operator)."""
    keel("identity", "add", AGENT, check=True)
    with home.ledger() as ledger:
        Memory(ledger).write_canon("style", "Times are UTC. Decisions cite evidence.", "Style")
    return home


def store_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("KEEL_HOME", "KEEL_DB") if os.environ.get(k)}


def run_stdio(scenario: Scenario, *args: str, errlog: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "keel", "mcp", *args], env=store_env()
    )

    async def main() -> None:
        with errlog.open("w") as err:
            async with (
                stdio_client(params, errlog=err) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                await scenario(session)

    asyncio.run(main())


def run_http(scenario: Scenario, url: str, token: str) -> None:
    async def main() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await scenario(session)

    asyncio.run(main())


async def call(session: ClientSession, tool: str, **arguments) -> dict:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    text = json.loads(result.content[0].text)
    assert result.structured_content == (text if isinstance(text, dict) else {"items": text})
    return text


async def error(session: ClientSession, tool: str, **arguments) -> str:
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    assert result.structured_content is None
    return result.content[0].text


def authors(home: Home, *entities: str) -> dict[str, set[str]]:
    """Who signed each datom of each entity, from the ledger's own history."""
    with home.ledger() as ledger:
        view = ledger.view()
        return {e: {h["author"] for h in view.history(e)} for e in entities}


# -- stdio ------------------------------------------------------------------------------------
def test_stdio_tools_resources_and_authorship(agent_home: Home, tmp_path: Path):
    written: dict[str, str] = {}

    async def scenario(s: ClientSession) -> None:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        # Typed schemas with descriptions; reads say they are read-only.
        schema = tools["remember"].input_schema
        assert schema["required"] == ["text"]
        assert "description" in schema["properties"]["ttl"]
        assert tools["recall"].input_schema["properties"]["k"]["maximum"] == 200
        assert tools["recall"].annotations.read_only_hint is True
        assert tools["capture"].annotations.read_only_hint is False

        resources = {str(r.uri) for r in (await s.list_resources()).resources}
        assert resources == {"keel://canon", "keel://decisions/recent"}
        templates = (await s.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["keel://canon/{name}"]

        # Working memory: scoped to the identity by default, with an expiry.
        note = await call(s, "remember", text="The deploy key rotates on Fridays.", ttl="2h")
        assert note["expires"]
        written["working"] = note["id"]
        # An observation on an entity, setting a fact.
        obs = await call(
            s,
            "remember",
            text="Alice moved to Denver.",
            entity="Alice",
            fact="lives_in",
            value="Denver",
            at="2024-05-01T00:00:00Z",
            source="chat",
        )
        assert obs["entity"] == "entity:alice"
        written["observation"] = obs["id"]
        written["entity"] = obs["entity"]
        decision = await call(
            s,
            "log_decision",
            title="Use PostgreSQL for the shared ledger",
            why="Several hosts write to it.",
            alternatives=["SQLite on NFS"],
            evidence=["docs/runtime.md"],
        )
        written["decision"] = decision["id"]
        written["capture"] = (await call(s, "capture", text="Idea: a weekly digest"))["id"]
        source = await call(
            s,
            "add_source",
            text="Reciprocal rank fusion merges ranked lists by 1/(k + rank).",
            title="RRF",
            topics=["search"],
        )
        written["source"] = source["id"]
        digits = source["hash"].removeprefix("sha256:")[:12]
        article = await call(
            s,
            "wiki_article",
            slug="rank-fusion",
            body=f"Fusion adds 1/(k + rank) per list [[sources/{digits}]].",
            topic="search",
        )
        written["article"] = article["id"]
        read = await call(s, "wiki_article", slug="rank-fusion")
        assert read["cites"] == [source["id"]] and read["topic"] == "search"

        entity = await call(s, "get_entity", ref="Alice")
        assert entity["facts"] == {"lives_in": "Denver"}
        assert entity["observations"] == 1
        before = await call(s, "get_entity", ref="alice", valid_at="2024-01-01T00:00:00Z")
        assert "facts" not in before
        timeline = await call(s, "entity_timeline", ref="alice")
        assert timeline["entity"] == "entity:alice"
        observed = [e for e in timeline["events"] if e["type"] == "observation"]
        assert observed[0]["author"] == AGENT and observed[0]["source"] == "chat"
        assert any(e["type"] == "fact" and e["value"] == "Denver" for e in timeline["events"])

        found = await call(s, "recall", query="Alice Denver", k=5)
        assert found["results"], found
        first = found["results"][0]
        assert first["provenance"]["author"] == AGENT
        assert {"tx", "valid_from", "attribute"} <= set(first["provenance"])
        only = await call(s, "recall", query="deploy key", surface="working")
        assert [r["id"] for r in only["results"]] == [note["id"]]

        # Resources: canon (written by the operator) and recent decisions.
        index = json.loads((await s.read_resource("keel://canon")).contents[0].text)
        assert index == [{"name": "style", "title": "Style", "uri": "keel://canon/style"}]
        doc = (await s.read_resource("keel://canon/style")).contents[0]
        assert doc.text.startswith("Times are UTC") and doc.mime_type == "text/markdown"
        recent = json.loads((await s.read_resource("keel://decisions/recent")).contents[0].text)
        assert recent[0]["title"] == "Use PostgreSQL for the shared ledger"
        assert recent[0]["decision/by"] == AGENT
        with pytest.raises(MCPError, match="no canon document 'nope'"):
            await s.read_resource("keel://canon/nope")

    run_stdio(scenario, "--as", AGENT, errlog=tmp_path / "stderr")
    # Every write of the session is signed by the agent, not the operator.
    signed = authors(agent_home, *written.values())
    assert signed == {e: {AGENT} for e in written.values()}, signed
    with agent_home.ledger() as ledger:
        working = Memory(ledger).working(AGENT)
    assert [w["id"] for w in working] == [written["working"]]


def test_stdio_errors_are_tool_results(agent_home: Home, tmp_path: Path):
    async def scenario(s: ClientSession) -> None:
        assert await error(s, "get_entity", ref="nobody") == "there is no entity 'nobody'"
        assert await error(s, "entity_timeline", ref="nobody") == "there is no entity 'nobody'"
        assert await error(s, "remember") == "remember needs the argument 'text'"
        message = await error(s, "recall", query="x", k="many")
        assert message.startswith("recall: argument 'k':")
        assert "\n" not in message
        assert await error(s, "recall", query="x", k=201) == (
            "recall: argument 'k': Input should be less than or equal to 200"
        )
        assert "not a memory surface" in await error(s, "recall", query="x", surface="diary")
        assert await error(s, "remember", text="  ") == "text must be a non-empty string"
        assert "go with entity" in await error(s, "remember", text="x", fact="lives_in")
        assert "ttl" in await error(s, "remember", text="x", entity="Bob", ttl="1h")
        message = await error(s, "wiki_article", slug="x", body="Claim [[sources/deadbeef]].")
        assert message == "citation [[sources/deadbeef]] matches no source"
        assert await error(s, "wiki_article", slug="missing") == (
            "there is no article 'missing' at that time"
        )
        # Rules hold on this path too, and the session carries on after each error.
        assert (
            await error(s, "log_decision", title="x", why=" ") == "why must be a non-empty string"
        )
        assert (await call(s, "capture", text="still here"))["tx"]

    run_stdio(scenario, "--as", AGENT, errlog=tmp_path / "stderr")


def test_stdio_only_protocol_on_stdout(agent_home: Home):
    """A raw client: every stdout line is a JSON-RPC message; the banner goes to stderr."""
    lines = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "recall", "arguments": {"query": "anything"}},
        },
        {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel", "mcp", "--as", AGENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    replies = []
    try:
        for message in lines:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            if "id" in message:
                replies.append(json.loads(proc.stdout.readline()))
        rest, err = proc.communicate(timeout=60)  # closes stdin: the server exits
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rest.strip() == ""
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert all(r["jsonrpc"] == "2.0" and "result" in r for r in replies), replies
    assert replies[0]["result"]["serverInfo"]["name"] == "keel"
    assert f"serving over stdio as {AGENT}" in err


def test_stdio_refuses_an_identity_without_a_key(home: Home):
    proc = keel("mcp", "--as", "nobody")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == "keel: no key for identity 'nobody' (see 'keel identity add')"


def test_token_command(agent_home: Home):
    proc = keel("mcp", "token", AGENT, check=True)
    token = proc.stdout.strip()
    assert token == agent_home.client_token(AGENT)
    assert agent_home.identity_for(token) == AGENT
    assert keel("mcp", "token", agent_home.operator, check=True).stdout.strip() == (
        agent_home.token()
    )
    missing = keel("mcp", "token", "nobody")
    assert missing.returncode == 1 and "no key for identity 'nobody'" in missing.stderr


# -- streamable HTTP on the API server ----------------------------------------------------------
@pytest.fixture
def api(agent_home: Home):
    runtime = Runtime(agent_home, clock=SystemClock())
    runtime.prepare()
    server = serve(runtime, port=0)
    yield server
    server.stop()
    runtime.stop()


def test_http_each_token_acts_as_its_identity(agent_home: Home, api):
    ids: dict[str, str] = {}

    def scenario_for(name: str) -> Scenario:
        async def scenario(s: ClientSession) -> None:
            assert {t.name for t in (await s.list_tools()).tools} == TOOLS
            ids[name] = (await call(s, "capture", text=f"captured over HTTP by {name}"))["id"]
            note = await call(s, "remember", text=f"working note of {name}")
            ids[f"{name}-note"] = note["id"]
            found = await call(s, "recall", query=f"captured over HTTP by {name}", k=3)
            assert found["results"][0]["provenance"]["author"] == name
            assert await error(s, "get_entity", ref="nobody") == "there is no entity 'nobody'"
            doc = (await s.read_resource("keel://canon/style")).contents[0].text
            assert doc.startswith("Times are UTC")

        return scenario

    run_http(scenario_for(AGENT), api.url, agent_home.client_token(AGENT))
    run_http(scenario_for("operator"), api.url, agent_home.token())
    signed = authors(agent_home, *ids.values())
    assert signed[ids[AGENT]] == {AGENT} and signed[ids[f"{AGENT}-note"]] == {AGENT}
    assert signed[ids["operator"]] == {"operator"}
    with agent_home.ledger() as ledger:
        memory = Memory(ledger)
        assert [w["id"] for w in memory.working(AGENT)] == [ids[f"{AGENT}-note"]]
        assert [w["id"] for w in memory.working("operator")] == [ids["operator-note"]]


def test_http_needs_a_valid_token(agent_home: Home, api):
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {AGENT}~forged"},
        {"Authorization": f"Basic {agent_home.token()}"},
    ):
        r = httpx.post(f"{api.url}/mcp", json=init, headers={**accept, **headers}, timeout=10)
        assert r.status_code == 401, (headers, r.text)
        body = r.json()
        assert set(body) == {"error", "kind"} and body["kind"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    # The API beside it is unchanged.
    r = httpx.get(f"{api.url}/api/v1/status", timeout=10)
    assert r.status_code == 401 and r.json()["kind"] == "unauthorized"
    token = {"Authorization": f"Bearer {agent_home.token()}"}
    assert httpx.get(f"{api.url}/api/v1/status", headers=token, timeout=10).status_code == 200
    # A session belongs to the token that opened it.
    agent = {**accept, "Authorization": f"Bearer {agent_home.client_token(AGENT)}"}
    opened = httpx.post(f"{api.url}/mcp", json=init, headers=agent, timeout=10)
    assert opened.status_code == 200, opened.text
    session = {"mcp-session-id": opened.headers["mcp-session-id"]}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    stolen = httpx.post(
        f"{api.url}/mcp", json=ping, headers={**accept, **token, **session}, timeout=10
    )
    assert stolen.status_code == 404
    own = httpx.post(f"{api.url}/mcp", json=ping, headers={**agent, **session}, timeout=10)
    assert own.status_code == 200, own.text


def test_daemon_serves_mcp(agent_home: Home):
    """A real `keel up`: /mcp on its API port, writes signed by the token's identity."""
    proc, port = start_daemon(agent_home.path)
    ids: list[str] = []
    try:

        async def scenario(s: ClientSession) -> None:
            ids.append((await call(s, "capture", text="from the daemon"))["id"])
            found = await call(s, "recall", query="from the daemon")
            assert found["results"][0]["id"] == ids[0]

        run_http(scenario, f"http://127.0.0.1:{port}", agent_home.client_token(AGENT))
        r = httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=10)
        assert r.status_code == 401 and r.json()["kind"] == "unauthorized"
    finally:
        out = stop_daemon(proc)
    assert proc.returncode == 0, out
    assert authors(agent_home, ids[0]) == {ids[0]: {AGENT}}
