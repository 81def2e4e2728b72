"""The MCP server through the official MCP Python client, no mocks: over stdio (`keel mcp` as a
real subprocess) and over streamable HTTP (the daemon's API server), on SQLite and
PostgreSQL. Every tool is an operation through the door; every write is signed by the
connection's identity."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from conftest import mcp_over_http
from keel.ops.door import Caller, Door
from keel.ops.services import Services
from keel.surfaces.mcp.server import TOOLS

AGENT = "claude-code"
Scenario = Callable[[ClientSession], Awaitable[None]]


@pytest.fixture
def agent_home(keel_home, door):
    """A home with an agent identity and a canon document written by the operator."""
    operator = Caller(keel_home.operator)
    door.call("identity.add", {"name": AGENT}, operator)
    door.call(
        "memory.canon.set",
        {"name": "style", "text": "Times are UTC. Decisions cite evidence.", "title": "Style"},
        operator,
    )
    return keel_home


def store_env() -> dict[str, str]:
    return {k: os.environ[k] for k in ("KEEL_HOME", "KEEL_DB", "PATH") if os.environ.get(k)}


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
    mcp_over_http(url, token, scenario)


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
    text = result.content[0].text
    assert "\n" not in text and text
    return text


def authors(services: Services, *entities: str) -> dict[str, set[str]]:
    """Who signed each datom of each entity, from the ledger's own history."""
    view = services.ledger().view()
    return {e: {h["author"] for h in view.history(e)} for e in entities}


@pytest.fixture
def api(agent_home, server):
    return server


def _client_token(door: Door, home, name: str) -> str:
    return door.call("identity.token", {"name": name}, Caller(home.operator)).token


# -- stdio ------------------------------------------------------------------------------------
def test_stdio_tools_resources_and_authorship(agent_home, services, tmp_path: Path):
    written: dict[str, str] = {}

    async def scenario(s: ClientSession) -> None:
        info = s.server_info if hasattr(s, "server_info") else None
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == set(TOOLS)
        for tool in tools.values():
            # Typed both ways; descriptions are prose, not indented source.
            assert tool.input_schema["type"] == "object" and tool.output_schema, tool.name
            assert tool.output_schema["type"] == "object", tool.name
            assert "\n " not in tool.description and tool.description, tool.name
        remember = tools["remember"].input_schema
        assert remember["required"] == ["text"]
        assert "description" in remember["properties"]["ttl"]
        assert tools["recall"].input_schema["properties"]["k"]["maximum"] == 200
        assert tools["recall"].annotations.read_only_hint is True
        assert tools["capture"].annotations.read_only_hint is False
        assert "results" in tools["recall"].output_schema["properties"]
        del info

        resources = {str(r.uri) for r in (await s.list_resources()).resources}
        assert resources == {"keel://canon", "keel://decisions/recent"}
        templates = (await s.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["keel://canon/{name}"]

        note = await call(s, "remember", text="The deploy key rotates on Fridays.", ttl="2h")
        assert note["expires"]
        written["working"] = note["id"]
        obs = await call(
            s,
            "observe",
            entity="Alice",
            text="Alice moved to Denver.",
            fact="lives_in",
            value="Denver",
            at="2024-05-01T00:00:00Z",
            source="chat",
        )
        assert obs["entity"] == "entity:alice"
        written["observation"], written["entity"] = obs["id"], obs["entity"]
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
            "write_article",
            slug="rank-fusion",
            body=f"Fusion adds 1/(k + rank) per list [[sources/{digits}]].",
            topic="search",
        )
        written["article"] = article["id"]
        read = await call(s, "read_article", slug="rank-fusion")
        assert read["cites"] == [source["id"]] and read["topic"] == "search"

        entity = await call(s, "get_entity", ref="Alice")
        assert entity["facts"] == {"lives_in": "Denver"} and entity["observations"] == 1
        before = await call(s, "get_entity", ref="alice", valid_at="2024-01-01T00:00:00Z")
        assert before.get("facts") is None
        timeline = await call(s, "entity_timeline", ref="alice")
        assert timeline["entity"] == "entity:alice"
        observed = [e for e in timeline["events"] if e["type"] == "observation"]
        assert observed[0]["author"] == AGENT and observed[0]["source"] == "chat"

        found = await call(s, "recall", query="Alice Denver", k=5, explain=True)
        assert found["results"][0]["provenance"]["author"] == AGENT
        assert set(found["results"][0]["explain"]) >= {"dense", "fulltext", "fact", "score"}
        only = await call(s, "recall", query="deploy key", surface="working")
        assert [r["id"] for r in only["results"]] == [note["id"]]

        index = json.loads((await s.read_resource("keel://canon")).contents[0].text)
        assert index == [{"name": "style", "title": "Style", "uri": "keel://canon/style"}]
        doc = (await s.read_resource("keel://canon/style")).contents[0]
        assert doc.text.startswith("Times are UTC") and doc.mime_type == "text/markdown"
        recent = json.loads((await s.read_resource("keel://decisions/recent")).contents[0].text)
        assert recent[0]["title"] == "Use PostgreSQL for the shared ledger"
        assert recent[0]["decision/by"] == AGENT
        for uri in ("keel://canon/nope", "keel://nothing-here"):
            with pytest.raises(MCPError, match="resource not found") as caught:
                await s.read_resource(uri)
            assert caught.value.code == -32602  # "resource not found" (SEP-2164), not -32603

        # The door: an agent may not do what only the operator may.
        refused = await error(s, "write_canon", name="style", text="Obey the agent.")
        assert "canon.write" in refused and AGENT in refused
        assert "cadence.command" in await error(
            s, "add_job", name="x", schedule="every 1h", run="cat ~/.keel/keys/*"
        )

    run_stdio(scenario, "--as", AGENT, errlog=tmp_path / "stderr")
    signed = authors(services, *written.values())
    assert signed == {e: {AGENT} for e in written.values()}, signed


def test_stdio_errors_are_tool_results(agent_home, tmp_path: Path):
    async def scenario(s: ClientSession) -> None:
        assert await error(s, "get_entity", ref="nobody") == "there is no entity 'nobody'"
        assert await error(s, "remember") == "memory.remember: text is required"
        assert "k:" in await error(s, "recall", query="x", k="many")
        assert "k:" in await error(s, "recall", query="x", k=201)
        assert "k:" in await error(s, "recall", query="x", k=10**30)
        assert "64 bits" in await error(s, "recall", query="x", as_of="9" * 30)
        assert "surface" in await error(s, "recall", query="x", surface="diary")
        assert "mode" in await error(s, "recall", query="x", mode="psychic")
        assert await error(s, "capture", text="  ") == "text must be a non-empty string"
        assert "both a fact and its value" in await error(
            s, "observe", entity="a", text="x", fact="k"
        )
        assert "no argument 'ttl'" in await error(s, "observe", entity="Bob", text="x", ttl="1h")
        message = await error(s, "write_article", slug="x", body="Claim [[sources/deadbeef]].")
        assert message == "citation [[sources/deadbeef]] matches no source"
        assert await error(s, "read_article", slug="missing") == (
            "there is no article 'missing' at that time"
        )
        assert (
            await error(s, "log_decision", title="x", why=" ") == "why must be a non-empty string"
        )
        assert (await call(s, "capture", text="still here"))["tx"]

    run_stdio(scenario, "--as", AGENT, errlog=tmp_path / "stderr")


def _raw_stdio(lines: list[object], *args: str) -> tuple[list[dict], str, str]:
    """Send raw JSON-RPC lines to `keel mcp`, reading one reply per request."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel", "mcp", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    replies = []
    try:
        for message in lines:
            text = message if isinstance(message, str) else json.dumps(message)
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            if '"id"' in text:
                replies.append(json.loads(proc.stdout.readline()))
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return replies, rest, err


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


def test_stdio_only_protocol_on_stdout_and_hostile_input_answered(agent_home):
    """Every stdout line is a JSON-RPC message; a lone surrogate in an argument — valid JSON,
    invalid Unicode — gets an answer (the client used to hang waiting for one)."""
    lines = [
        INIT,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "recall", "arguments": {"query": "anything"}},
        },
        '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"capture",'
        '"arguments":{"text":"a\\ud800b"}}}',
        '{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"keel://canon/\\udfff"}}',
        {"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
    ]
    replies, rest, err = _raw_stdio(lines, "--as", AGENT)
    assert rest.strip() == ""
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5]
    server = replies[0]["result"]["serverInfo"]
    assert server["name"] == "keel" and server["version"] not in ("", None)
    assert replies[2]["result"]["isError"] is True
    assert "not valid Unicode" in replies[2]["result"]["content"][0]["text"]
    assert "not valid Unicode" in replies[3]["error"]["message"]
    assert len(replies[4]["result"]["tools"]) == len(TOOLS)
    assert f"serving over stdio as {AGENT}" in err


def test_stdio_refuses_an_identity_the_ledger_does_not_know(agent_home):
    proc = subprocess.run(
        [sys.executable, "-m", "keel", "mcp", "--as", "nobody"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4 and proc.stdout == ""
    assert proc.stderr.strip() == "keel: 'nobody' is not an identity registered in this ledger"


# -- streamable HTTP on the API server ----------------------------------------------------------
def test_http_each_token_acts_as_its_identity(agent_home, door, services, api):
    ids: dict[str, str] = {}

    def scenario_for(name: str) -> Scenario:
        async def scenario(s: ClientSession) -> None:
            assert {t.name for t in (await s.list_tools()).tools} == set(TOOLS)
            ids[name] = (await call(s, "capture", text=f"captured over HTTP by {name}"))["id"]
            ids[f"{name}-note"] = (await call(s, "remember", text=f"working note of {name}"))["id"]
            found = await call(s, "recall", query=f"captured over HTTP by {name}", k=3)
            assert found["results"][0]["provenance"]["author"] == name
            assert await error(s, "get_entity", ref="nobody") == "there is no entity 'nobody'"
            doc = (await s.read_resource("keel://canon/style")).contents[0].text
            assert doc.startswith("Times are UTC")

        return scenario

    run_http(scenario_for(AGENT), api.url, _client_token(door, agent_home, AGENT))
    run_http(scenario_for("operator"), api.url, agent_home.token())
    signed = authors(services, *ids.values())
    assert signed[ids[AGENT]] == {AGENT} and signed[ids[f"{AGENT}-note"]] == {AGENT}
    assert signed[ids["operator"]] == {"operator"}
    me = Caller(agent_home.operator)
    assert [w.id for w in door.call("memory.working", {"scope": AGENT}, me)] == [
        ids[f"{AGENT}-note"]
    ]


def test_http_needs_a_valid_token_and_sessions_stay_with_their_identity(agent_home, door, api):
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {AGENT}~forged"},
        {"Authorization": f"Basic {agent_home.token()}"},
    ):
        r = httpx.post(f"{api.url}/mcp", json=INIT, headers={**accept, **headers}, timeout=10)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["kind"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    token = {"Authorization": f"Bearer {agent_home.token()}"}
    agent = {**accept, "Authorization": f"Bearer {_client_token(door, agent_home, AGENT)}"}
    opened = httpx.post(f"{api.url}/mcp", json=INIT, headers=agent, timeout=10)
    assert opened.status_code == 200, opened.text
    session = {"mcp-session-id": opened.headers["mcp-session-id"]}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    stolen = httpx.post(
        f"{api.url}/mcp", json=ping, headers={**accept, **token, **session}, timeout=10
    )
    assert stolen.status_code == 404
    own = httpx.post(f"{api.url}/mcp", json=ping, headers={**agent, **session}, timeout=10)
    assert own.status_code == 200, own.text


def test_the_documented_tools_are_the_servers():
    """docs/mcp.md is tested against the code: each tool and the operation it calls."""
    import re

    doc = (Path(__file__).resolve().parents[3] / "docs" / "mcp.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| `([a-z_.]+)` \|", doc, re.M)
    assert dict(rows) == {name: spec.operation for name, spec in TOOLS.items()}
