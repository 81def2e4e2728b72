"""No route, command or tool reaches keel around the door: every HTTP route, MCP tool and
resource, and CLI command calls the one operation it names, through `Door.call`, so the
door's capability check applies to it — proven by watching the door while each is used
(and, statically, by the import contract that surfaces import nothing but `keel.ops`)."""

from __future__ import annotations

import contextlib
import re
from contextlib import contextmanager

import httpx
import pytest
import typer
from mcp import ClientSession

from conftest import client_may, mcp_over_http
from keel.ops import registry
from keel.ops.door import Caller, Door
from keel.surfaces.api.app import API
from keel.surfaces.api.routes import NOT_OVER_HTTP
from keel.surfaces.cli import main as cli
from keel.surfaces.mcp.server import TOOLS


@pytest.fixture
def calls(monkeypatch):
    """Every (operation, identity, surface) that reaches the door."""
    seen: list[tuple[str, str, str]] = []
    original = Door.call

    def watched(self, name, arguments, caller, progress=None):
        seen.append((name, caller.identity, caller.surface))
        return original(self, name, arguments, caller, progress)

    monkeypatch.setattr(Door, "call", watched)
    return seen


def _client_token(door: Door, home) -> str:
    return door.call("identity.token", {"name": "client"}, Caller(home.operator)).token


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_every_route_calls_its_operation_through_the_door(keel_home, door, client, server, calls):
    token = _client_token(door, keel_home)
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    routes = server.app.state.operations
    offered = set(routes.values())
    assert offered | set(NOT_OVER_HTTP) == set(registry.load()), "every operation has a route"
    for (method, path), name in sorted(routes.items()):
        calls.clear()
        op = registry.get(name)
        r = http.request(method, _fill(path), json={} if method != "GET" else None)
        assert calls and calls[0][:2] == (name, "client"), (method, path, calls)
        assert r.status_code < 500, (path, r.text)
        body = r.json()
        if not client_may(op):
            assert r.status_code == 403, (path, body)
            assert body["kind"] == "forbidden" and body["operation"] == name
            assert body["capability"] in " or ".join(op.capabilities)
    calls.clear()
    r = http.get(f"{API}/events/stream")
    assert r.status_code == 403 and r.json()["capability"] == "events.read"
    assert calls[0][0] == "events.list"


def test_every_tool_and_resource_calls_its_operation(keel_home, door, client, server, calls):
    token = _client_token(door, keel_home)

    async def scenario(s: ClientSession) -> None:
        listed = {t.name for t in (await s.list_tools()).tools}
        assert listed == set(TOOLS)
        for tool, spec in TOOLS.items():
            calls.clear()
            result = await s.call_tool(tool, {})
            assert calls and calls[0][:3] == (spec.operation, "client", "mcp"), (tool, calls)
            op = registry.get(spec.operation)
            if not client_may(op):
                assert result.is_error
                text = result.content[0].text
                assert "may not" in text and any(c in text for c in op.capabilities), text
        for uri, operation in [
            ("keel://canon", "memory.canon.list"),
            ("keel://decisions/recent", "memory.decisions"),
            ("keel://canon/style", "memory.canon.show"),
        ]:
            calls.clear()
            # A missing canon document is an error; the call still went through the door.
            with contextlib.suppress(Exception):
                await s.read_resource(uri)
            assert calls and calls[0][:2] == (operation, "client"), (uri, calls)

    mcp_over_http(server.url, token, scenario)


#: A sample command line for every CLI command that calls an operation, and the operation.
SAMPLES: dict[str, tuple[list[str], str]] = {
    "transact": (["transact", "-f", "-"], "ledger.transact"),
    "get": (["get", "x"], "ledger.get"),
    "history": (["history", "x"], "ledger.history"),
    "find": (["find", "mem/surface"], "ledger.find"),
    "log": (["log"], "ledger.log"),
    "verify": (["verify"], "ledger.verify"),
    "checkpoint": (["checkpoint"], "ledger.checkpoint"),
    "restore": (["restore", "x", "--to", "1"], "ledger.restore"),
    "forget": (["forget", "x", "--why", "a test"], "ledger.forget"),
    "export": (["export", "/dev/null"], "ledger.export"),
    "import": (["import", "/nonexistent.jsonl"], "ledger.import"),
    "identity add": (["identity", "add", "bot"], "identity.add"),
    "identity list": (["identity", "list"], "identity.list"),
    "schema add": (["schema", "add", "-f", "-"], "schema.add"),
    "schema list": (["schema", "list"], "schema.list"),
    "branch create": (["branch", "create", "b1"], "branch.create"),
    "branch list": (["branch", "list"], "branch.list"),
    "branch merge": (["branch", "merge", "b1"], "branch.merge"),
    "branch drop": (["branch", "drop", "b1"], "branch.drop"),
    "proof inclusion": (["proof", "inclusion", "1"], "ledger.proof.inclusion"),
    "proof consistency": (["proof", "consistency", "1", "2"], "ledger.proof.consistency"),
    "status": (["status"], "status.show"),
    "doctor": (["doctor"], "health.doctor"),
    "events": (["events"], "events.list"),
    "health findings": (["health", "findings"], "health.findings"),
    "cadence list": (["cadence", "list"], "cadence.list"),
    "cadence show": (["cadence", "show", "probe.daily"], "cadence.show"),
    "cadence add": (
        ["cadence", "add", "j", "--schedule", "@daily", "--probe", "ok"],
        "cadence.add",
    ),
    "cadence run": (["cadence", "run", "nope"], "cadence.run"),
    "cadence pause": (["cadence", "pause", "probe.daily"], "cadence.pause"),
    "cadence resume": (["cadence", "resume", "probe.daily"], "cadence.resume"),
    "cadence history": (["cadence", "history", "probe.daily"], "cadence.history"),
    "cadence runs": (["cadence", "runs"], "cadence.runs"),
    "cadence run-info": (["cadence", "run-info", "x"], "cadence.run_info"),
    "cadence sync": (["cadence", "sync"], "cadence.sync"),
    "service install": (["service", "install"], "service.install"),
    "service uninstall": (["service", "uninstall"], "service.uninstall"),
    "recall": (["recall", "anything"], "recall.search"),
    "reindex": (["reindex"], "recall.reindex"),
    "remember": (["remember", "a note"], "memory.remember"),
    "working": (["working"], "memory.working"),
    "entity add": (["entity", "add", "Alice"], "memory.entity.add"),
    "entity show": (["entity", "show", "alice"], "memory.entity.show"),
    "entity timeline": (["entity", "timeline", "alice"], "memory.entity.timeline"),
    "entity observe": (["entity", "observe", "alice", "hello"], "memory.observe"),
    "entity kinds": (["entity", "kinds"], "memory.entity.kinds"),
    "entity add-kind": (["entity", "add-kind", "gadget"], "memory.entity.add_kind"),
    "decide": (["decide", "A", "--why", "B"], "memory.decide"),
    "decisions": (["decisions"], "memory.decisions"),
    "canon set": (["canon", "set", "style", "-"], "memory.canon.set"),
    "canon list": (["canon", "list"], "memory.canon.list"),
    "canon show": (["canon", "show", "style"], "memory.canon.show"),
    "canon status": (["canon", "status"], "canon.status"),
    "node list": (["node", "list"], "node.list"),
    "node approve": (["node", "approve", "laptop", "00" * 32], "node.approve"),
    "episode add": (["episode", "add", "-", "--agent", "a"], "memory.episode.add"),
    "capture": (["capture", "x"], "memory.capture"),
    "daybook": (["daybook", "x"], "memory.daybook.add"),
    "wiki add-source": (["wiki", "add-source", "-"], "wiki.source.add"),
    "wiki sources": (["wiki", "sources"], "wiki.sources"),
    "wiki write": (["wiki", "write", "a", "-"], "wiki.article.write"),
    "wiki show": (["wiki", "show", "a"], "wiki.article.show"),
    "wiki index": (["wiki", "index"], "wiki.index"),
    "wiki log": (["wiki", "log"], "wiki.log"),
    "wiki lint": (["wiki", "lint"], "wiki.lint"),
    "vault export": (["vault", "export", "/nonexistent/v"], "vault.export"),
    "vault import": (["vault", "import", "/nonexistent/v"], "vault.import"),
    "mcp token": (["mcp", "token", "client"], "identity.token"),
    "identity revoke": (["identity", "revoke", "nobody-here"], "identity.revoke"),
    "governance show": (["governance", "show"], "governance.show"),
    "governance diff": (["governance", "diff"], "governance.diff"),
    "governance check": (["governance", "check"], "governance.check"),
    "governance sign": (["governance", "sign"], "governance.sign"),
    "governance restore": (["governance", "restore"], "governance.restore"),
    "audit": (["audit"], "audit.list"),
    "approvals list": (["approvals", "list"], "approval.list"),
    "approvals show": (["approvals", "show", "0123456789"], "approval.show"),
    "approvals approve": (["approvals", "approve", "0123456789"], "approval.approve"),
    "approvals deny": (["approvals", "deny", "0123456789"], "approval.deny"),
    "secret set": (["secret", "set", "TOKEN"], "secret.set"),
    "secret list": (["secret", "list"], "secret.list"),
    "secret rm": (["secret", "rm", "TOKEN"], "secret.rm"),
    "secret grant": (["secret", "grant", "TOKEN", "client"], "secret.grant"),
    "secret revoke": (["secret", "revoke", "TOKEN", "client"], "secret.revoke"),
    "file read": (["file", "read", "/nonexistent/f.txt"], "file.read"),
    "file write": (["file", "write", "/nonexistent/f.txt", "--expect", "0"], "file.write"),
    "file history": (["file", "history", "/nonexistent/f.txt"], "file.history"),
}
#: Commands that call no single operation, and why.
NOT_AN_OPERATION = {
    "init": "creates the home the door stands in",
    "demo": "runs the facade in a temporary home of its own",
    "up": "is the daemon: it hosts the door",
    "mcp": "serves MCP over stdio: a surface of its own, tested through its tools",
    "node join": "makes the home (a node of a shared ledger) the door stands in",
}


def _leaves(group: typer.Typer, prefix: str = "") -> list[str]:
    names = [
        prefix + (c.name or c.callback.__name__).replace("_", "-")
        for c in group.registered_commands
    ]
    for sub in group.registered_groups:
        inner = sub.typer_instance
        if inner.registered_callback and inner.registered_callback.callback.__name__ == "mcp":
            names.append(prefix + sub.name)
        names += _leaves(inner, f"{prefix}{sub.name} ")
    return names


@contextmanager
def _stdin(text: str):
    import io
    import sys

    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(text.encode()))
    try:
        yield
    finally:
        sys.stdin = saved


def test_every_command_calls_its_operation_through_the_door(keel_home, calls, monkeypatch, capsys):
    monkeypatch.setattr("keel.ops.runtime.install_service", lambda home: (home / "unit", "ok"))
    monkeypatch.setattr("keel.ops.runtime.uninstall_service", lambda: None)
    commands = set(_leaves(cli.app))
    assert commands == set(SAMPLES) | set(NOT_AN_OPERATION), commands ^ (
        set(SAMPLES) | set(NOT_AN_OPERATION)
    )
    for command, (argv, operation) in SAMPLES.items():
        calls.clear()
        with _stdin("{}"):
            cli.main(argv)
        assert calls and calls[0][0] == operation and calls[0][2] == "cli", (command, calls)
    # --as makes the command act as that identity, through the same door.
    calls.clear()
    cli.main(["identity", "add", "client"])
    calls.clear()
    code = cli.main(["canon", "set", "style", "/dev/null", "--as", "client"])
    assert calls[0][:2] == ("memory.canon.set", "client") and code == 4
    assert "canon.write" in capsys.readouterr().err
