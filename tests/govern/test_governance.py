"""The governance file in a real home (SQLite and PostgreSQL): keel acts on it only as
signed by an operator, and otherwise is read-only on every surface — fail closed, never
open — until the operator signs it or puts it back."""

from __future__ import annotations

import httpx
import pytest

from conftest import govern, mcp_over_http, newest_act
from keel.errors import BadInput, Forbidden, ReadOnly, Unauthorized
from keel.govern import governance
from keel.ops.door import Caller

API = "/api/v1"


def edit(home, text: str) -> None:
    path = home.path / "canon" / "governance.toml"
    path.write_text(path.read_text() + text)


def test_a_new_home_acts_on_its_signed_default(services, keel_home):
    verdict = services.verdict()
    assert verdict.problem is None and verdict.signer == keel_home.operator
    text = (keel_home.path / "canon" / "governance.toml").read_text()
    assert text == governance.default_text(keel_home.operator)
    signed = governance.accepted(services.ledger().view())
    assert signed["digest"] == governance.digest(text.encode())


def test_every_way_the_file_can_be_wrong_makes_keel_read_only(services, keel_home, run, door):
    path = keel_home.path / "canon" / "governance.toml"
    good = path.read_text()
    operator = Caller(keel_home.operator)

    def problem() -> str | None:
        return services.verdict().problem

    path.write_text(good + "\n# a harmless comment\n")
    assert "changed since it was signed" in problem()
    with pytest.raises(ReadOnly, match="changed since it was signed"):
        run("memory.capture", text="refused")
    assert "a harmless comment" in run("governance.diff").diff
    assert run("governance.sign").tx is not None
    assert problem() is None
    run("memory.capture", text="accepted")

    path.write_text("format = 1\n[pins.p\n")
    assert "not valid TOML" in problem()
    with pytest.raises(BadInput, match="not valid TOML"):
        run("governance.sign")
    path.write_text(good)  # reverted to a version that was signed before: not the newest
    assert "changed since it was signed" in problem()
    run("governance.sign")

    path.unlink()
    assert "missing" in problem()
    with pytest.raises(ReadOnly):
        run("memory.capture", text="refused")
    assert run("governance.restore").restored
    assert problem() is None
    # Reads still answer the operator while it is read-only.
    path.write_text(good + "\n")
    assert door.call("governance.show", {}, operator).ok is False
    assert door.call("memory.decisions", {}, operator) == []
    path.write_text(good)
    run("governance.sign")


def test_a_signature_that_is_not_an_operators_is_not_governance(services, keel_home, run):
    """Written below the door with an agent's own key, a 'signed' file is still refused."""
    run("identity.add", name="mallory")
    text = governance.default_text(keel_home.operator) + "\n[identities.mallory]\ntier = 'T1'\n"
    (keel_home.path / "canon" / "governance.toml").write_text(text)
    with services.home.ledger("mallory") as ledger:
        ledger.transact(governance.sign_ops(text, ledger.signer), "my own rules")
    services.governance.forget()
    assert "not by a registered operator" in services.verdict().problem
    # A signature over something else does not verify either.
    forged = governance.sign_ops("format = 1\n", keel_home.signer())
    ops = [o for o in governance.sign_ops(text, keel_home.signer()) if "signature" not in o["a"]]
    ops.append(next(o for o in forged if o["a"].endswith("signature")))
    with services.home.ledger() as ledger:
        ledger.transact(ops, "a pasted signature")
    services.governance.forget()
    assert services.verdict().problem.endswith("does not verify")


def test_read_only_holds_on_every_surface_and_signing_lifts_it(
    keel_home, door, client, server, cli, run
):
    token = door.call("identity.token", {"name": client}, Caller(keel_home.operator)).token
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    operator = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {keel_home.token()}"}
    )
    edit(keel_home, "\n# edited, not signed\n")

    refused = cli("capture", "from the command line")
    assert refused.code == 6 and "changed since it was signed" in refused.err
    r = http.post(f"{API}/memory/capture", json={"text": "over HTTP"})
    assert r.status_code == 503 and r.json()["kind"] == "read-only"
    r = http.get(f"{API}/memory/decisions")  # a client may not even read meanwhile
    assert r.status_code == 503
    shown = operator.get(f"{API}/governance").json()
    assert shown["ok"] is False and "changed" in shown["problem"]
    status = operator.get(f"{API}/status").json()
    assert "changed since it was signed" in status["read_only"]

    async def scenario(session) -> None:
        result = await session.call_tool("capture", {"text": "over MCP"})
        assert result.is_error and "read-only" in result.content[0].text

    mcp_over_http(server.url, token, scenario)

    assert cli("governance", "check").code == 1
    assert cli("governance", "diff").code == 1
    assert "signed in tx" in cli("governance", "sign").out
    assert cli("governance", "check").code == 0
    assert http.post(f"{API}/memory/capture", json={"text": "over HTTP"}).status_code == 200


def test_a_write_below_the_door_is_refused_too(services, keel_home):
    edit(keel_home, "\n# unsigned\n")
    with services.open_ledger() as ledger:
        with pytest.raises(ReadOnly):
            ledger.transact([{"e": "n", "a": "mem/text", "v": "x"}], "below the door")
        # Evidence still goes in: a finding about the very problem.
        assert services.governance_findings()[0].check == "governance"


def test_the_scheduler_holds_and_a_finding_opens_while_governance_is_wrong(services, keel_home):
    from keel.health.findings import open_findings

    assert services.hold() is None
    edit(keel_home, "\n# unsigned\n")
    assert "changed since it was signed" in services.hold()
    found = [f for f in open_findings(services.ledger()) if f.check == "governance"]
    assert found and found[0].severity == "error" and "read-only" in found[0].message
    governance.Governance.forget(services.governance)
    path = keel_home.path / "canon" / "governance.toml"
    path.write_text(governance.default_text(keel_home.operator))
    assert services.hold() is None
    assert not [f for f in open_findings(services.ledger()) if f.check == "governance"]


def test_a_home_from_before_governance_gets_the_default_on_first_open(tmp_path, monkeypatch):
    from keel.govern.home import init as bare_init
    from keel.ops.services import Services

    path = tmp_path / "old"
    monkeypatch.setenv("KEEL_HOME", str(path))
    monkeypatch.delenv("KEEL_DB", raising=False)
    home, _ = bare_init(path)  # a key and a genesis, as an older keel left them
    assert not (path / "canon" / "governance.toml").exists()
    with Services.open(path) as services:
        verdict = services.verdict()
        assert verdict.problem is None and verdict.signer == home.operator
    assert (path / "canon" / "governance.toml").read_text() == governance.default_text(
        home.operator
    )


def test_a_revoked_identity_can_do_nothing_and_its_past_still_verifies(
    keel_home, door, run, server
):
    run("identity.add", name="temp")
    token = run("identity.token", name="temp").token
    as_temp = Caller("temp", "test")
    written = door.call("memory.capture", {"text": "before"}, as_temp)
    revoked = run("identity.revoke", name="temp")
    assert revoked.revoked and revoked.keys == []
    assert not keel_home.key_path("temp").exists()
    with pytest.raises(Unauthorized, match="revoked"):
        door.call("memory.capture", {"text": "after"}, as_temp)
    r = httpx.get(
        f"{server.url}{API}/memory/decisions", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 401
    report = run("ledger.verify")
    assert report.ok and report.transactions >= written.tx
    with pytest.raises(Exception, match="cannot be revoked"):
        run("identity.revoke", name=keel_home.operator)
    listed = {i.name: i for i in run("identity.list")}
    assert listed["temp"].revoked and listed["operator"].tier == "T0"


def test_the_audit_names_who_what_by_which_right_and_where(
    keel_home, door, client, server, cli, run
):
    token = run("identity.token", name=client).token
    start = newest_act(door.services.ledger())
    assert cli("capture", "by the operator").code == 0
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    assert http.post(f"{API}/memory/capture", json={"text": "by the client"}).status_code == 200
    assert http.post(f"{API}/schema", json={"attributes": []}).status_code == 403

    async def scenario(session) -> None:
        assert not (await session.call_tool("capture", {"text": "over MCP"})).is_error

    mcp_over_http(server.url, token, scenario)
    trail = [(e.kind, e.identity, e.operation, e.capability, e.surface, e.outcome)
             for e in run("audit.list", since=start)]  # fmt: skip
    assert trail == [
        ("write", "operator", "memory.capture", "memory.write", "cli", "committed"),
        ("write", client, "memory.capture", "memory.write", "http", "committed"),
        ("denial", client, "schema.add", "schema.write", "http", "denied"),
        ("write", client, "memory.capture", "memory.write", "mcp", "committed"),
    ]
    assert [e.surface for e in run("audit.list", since=start, who=client)] == [
        "http", "http", "mcp"
    ]  # fmt: skip
    assert len(run("audit.list", since=start, capability="schema.*")) == 1
    lines = cli("audit", "--since", str(start), "--json").lines()
    assert [line["operation"] for line in lines] == [t[2] for t in trail]


def test_working_memory_belongs_to_its_identity(keel_home, door, run):
    run("identity.add", name="ann")
    run("identity.add", name="bob")
    ann, bob = Caller("ann"), Caller("bob")
    door.call("memory.remember", {"text": "ann's scratch"}, ann)
    door.call("memory.remember", {"text": "bob's scratch", "scope": "bob/run-1"}, bob)
    assert [w.text for w in door.call("memory.working", {}, ann)] == ["ann's scratch"]
    with pytest.raises(Forbidden, match="scope"):
        door.call("memory.working", {"scope": "bob/run-1"}, ann)
    with pytest.raises(Forbidden):
        door.call("memory.remember", {"text": "x", "scope": "bob"}, ann)
    found = door.call("recall.search", {"query": "scratch"}, ann).results
    assert [r.text for r in found] == ["ann's scratch"]
    everything = {w.text for w in run("memory.working")}
    assert everything == {"ann's scratch", "bob's scratch"}  # the operator sees every scope
    # A pin may share a scope.
    govern(
        run,
        keel_home,
        '[identities.ann]\npins = ["memory-client", "team"]\n'
        '[pins.team]\ncapabilities = ["memory.read"]\nscopes = ["bob/*"]',
    )
    assert [w.text for w in door.call("memory.working", {"scope": "bob/run-1"}, ann)] == [
        "bob's scratch"
    ]


def test_a_command_pin_allows_that_program_and_nothing_else(keel_home, door, run):
    import shutil

    echo = shutil.which("echo")
    run("identity.add", name="ops")
    govern(
        run,
        keel_home,
        '[identities.ops]\npins = ["runner"]\n[pins.runner]\n'
        'capabilities = ["cadence.command", "cadence.read"]\njob_kinds = ["command"]\n'
        f'commands = [{{ path = "{echo}", args = "[a-z]+" }}]',
    )
    # (Approval of command jobs is its own rule; this file has the default's rule, so the
    # call is judged by the pins first.)
    ops = Caller("ops")
    job = {"name": "hi", "schedule": "every 1h", "kind": "command"}
    with pytest.raises(Forbidden, match="no pin allows the command"):
        door.call("cadence.add", {**job, "run": "/bin/sh -c 'echo hi'"}, ops)
    with pytest.raises(Forbidden, match="no pin allows the command"):
        door.call("cadence.add", {**job, "run": "echo HI"}, ops)
    with pytest.raises(Forbidden):
        door.call("cadence.add", {**job, "kind": "probe", "run": "ok"}, ops)
