"""Durable approvals on a real ledger (SQLite and PostgreSQL): a held call is a request in
the ledger; someone else answers it; the exact action runs once — across restarts, racing
approvers and processes — or fails clearly when what it depended on has changed."""

from __future__ import annotations

import shutil
import threading

import httpx
import pytest

from conftest import govern, mcp_over_http
from keel.errors import BadInput, Conflict, Forbidden, Pending
from keel.ledger.instants import parse_instant
from keel.ops.door import Caller, Door
from keel.ops.services import Services

API = "/api/v1"
ECHO = shutil.which("echo")
RUNNER = f"""[identities.codex]
pins = ["memory-client", "runner"]
[identities.deputy]
tier = "T0"
[pins.runner]
capabilities = ["cadence.command", "cadence.read", "schema.write", "approval.decide"]
job_kinds = ["command"]
commands = [{{ path = "{ECHO}", args = "[a-z]+" }}]
"""
JOB = {"name": "greet", "schedule": "every 1h", "kind": "command", "run": "echo hello"}


@pytest.fixture
def codex(keel_home, run):
    """An agent whose pins grant command jobs, which the default rule holds for approval;
    and a second operator (deputy) to race the first."""
    run("identity.add", name="codex")
    run("identity.add", name="deputy", role="operator")
    govern(run, keel_home, RUNNER)
    return Caller("codex", "test")


def request(door: Door, caller: Caller, job: dict = JOB) -> str:
    with pytest.raises(Pending) as held:
        door.call("cadence.add", job, caller)
    assert held.value.exit_code == 5 and held.value.status == 202
    return held.value.approval


def jobs_written(run, approval: str) -> int:
    return sum(
        e.kind == "write" and e.detail.get("approval") == approval for e in run("audit.list")
    )


def test_a_held_call_runs_once_when_someone_else_approves(keel_home, door, run, codex):
    approval = request(door, codex)
    shown = door.call("approval.show", {"id": approval}, codex)  # the requester may poll
    assert shown.state == "pending" and shown.operation == "cadence.add"
    assert shown.input["run"] == "echo hello" and shown.requester == "codex"
    with pytest.raises(Exception, match="no job named"):
        run("cadence.show", name="greet")  # nothing ran yet

    with pytest.raises(Forbidden, match="its own request"):
        door.call("approval.approve", {"id": approval}, codex)
    with pytest.raises(Forbidden):
        door.call("approval.deny", {"id": approval}, codex)

    done = run("approval.approve", id=approval, why="a greeting is harmless")
    assert done.state == "done" and done.decided_by == keel_home.operator
    assert done.result["spec"]["run"] == f"{ECHO} hello"
    job = run("cadence.show", name="greet")
    assert job.spec["run"] == f"{ECHO} hello"
    with pytest.raises(Conflict, match="already done"):
        run("approval.approve", id=approval)
    assert jobs_written(run, approval) == 1
    trail = [(e.kind, e.identity, e.outcome) for e in run("audit.list", capability="cadence.*")]
    assert ("approval", "codex", "pending") in trail and ("approval", "operator", "done") in trail


def test_denied_and_expired_requests_never_run(keel_home, run, codex):
    from keel.cadence.clock import ManualClock

    clock = ManualClock(parse_instant("2026-06-01T00:00:00Z"))
    with Services.open(keel_home.path, clock=clock) as services:
        door = Door(services)
        first = request(door, codex)
        denied = door.call("approval.deny", {"id": first, "why": "no"}, Caller("operator"))
        assert denied.state == "denied" and denied.reason == "no"
        with pytest.raises(Conflict, match="already denied"):
            door.call("approval.approve", {"id": first}, Caller("operator"))

        second = request(door, codex, {**JOB, "name": "later"})
        clock.advance(8 * 86400)  # the default expiry is 7 days
        assert door.call("approval.show", {"id": second}, codex).state == "expired"
        with pytest.raises(Conflict, match="expired unanswered"):
            door.call("approval.approve", {"id": second}, Caller("operator"))
        listed = {a.id: a.state for a in door.call("approval.list", {}, Caller("operator"))}
        assert listed == {first: "denied", second: "expired"}
    assert jobs_written(run, first) == jobs_written(run, second) == 0


def test_two_approvers_racing_run_the_action_once(keel_home, run, codex, store_kind):
    approval = request(Door(Services.open(keel_home.path)), codex)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def approve(who: str) -> None:
        with Services.open(keel_home.path) as services:  # a connection (a process) each
            door = Door(services)
            barrier.wait()
            try:
                outcomes.append(door.call("approval.approve", {"id": approval}, Caller(who)).state)
            except Conflict:
                outcomes.append("lost")

    threads = [threading.Thread(target=approve, args=(w,)) for w in ("operator", "deputy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["done", "lost"]
    assert jobs_written(run, approval) == 1


def test_an_action_whose_basis_changed_fails_clearly(keel_home, door, run, codex):
    approval = request(door, codex)
    run("cadence.add", name="greet", schedule="every 2h", kind="probe", run="ok")
    failed = run("approval.approve", id=approval)
    assert failed.state == "failed"
    assert "job greet changed since it was requested" in failed.error
    assert run("cadence.show", name="greet").spec["kind"] == "probe"  # left as it was


def test_an_action_runs_under_the_pins_in_force_when_approved(keel_home, door, run, codex):
    approval = request(door, codex)
    path = keel_home.path / "canon" / "governance.toml"
    path.write_text(path.read_text().replace('"cadence.command", ', ""))
    run("governance.sign")
    failed = run("approval.approve", id=approval)
    assert failed.state == "failed" and "no pin grants it" in failed.error


def test_an_approval_is_bound_to_its_exact_action(keel_home, door, run, codex, services):
    approval = request(door, codex)
    e = f"approval:{approval}"
    tampered = {**JOB, "run": "echo pwned"}
    with services.home.ledger() as ledger:
        ledger.transact([{"e": e, "a": "keel.approval/input", "v": tampered}], "edit")
    with pytest.raises(BadInput, match="does not match its digest"):
        run("approval.approve", id=approval)


def test_approvals_over_http_and_mcp_survive_a_restart(keel_home, run, codex):
    """202 with the id over HTTP; the request outlives the server; MCP says pending; a new
    server approves it and the action runs once."""
    from keel.surfaces.api.server import serve

    token = run("identity.token", name="codex").token
    services = Services.open(keel_home.path)
    server = serve(Door(services), port=0)
    try:
        r = httpx.post(
            f"{server.url}{API}/cadence/jobs",
            json=JOB,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 202 and r.json()["kind"] == "pending"
        approval = r.json()["approval"]

        async def scenario(session) -> None:
            result = await session.call_tool("add_job", {**JOB, "name": "other"})
            assert result.is_error and result.content[0].text.startswith("pending:")
            assert result.meta["keel/state"] == "pending"
            shown = await session.call_tool("approval", {"id": result.meta["keel/approval"]})
            assert not shown.is_error and shown.structured_content["state"] == "pending"

        mcp_over_http(server.url, token, scenario)
    finally:
        server.stop()
        services.close()

    services = Services.open(keel_home.path)  # keel restarted
    server = serve(Door(services), port=0)
    try:
        operator = {"Authorization": f"Bearer {keel_home.token()}"}
        pending = httpx.get(f"{server.url}{API}/approvals", params={"state": "pending"},
                            headers=operator).json()  # fmt: skip
        assert {a["id"] for a in pending} >= {approval}
        done = httpx.post(f"{server.url}{API}/approvals/{approval}/approve", headers=operator)
        assert done.status_code == 200 and done.json()["state"] == "done"
    finally:
        server.stop()
        services.close()
    assert jobs_written(run, approval) == 1


def test_the_operator_is_not_held_by_rules_for_others(keel_home, run, codex):
    """The default rules hold T1..T3 callers; the operator's own command job just runs."""
    assert run("cadence.add", **{**JOB, "name": "mine"}).changed
    with pytest.raises(Pending):
        Door(Services.open(keel_home.path)).call(
            "schema.add", {"attributes": [{"attribute": "x/y", "type": "string"}]}, codex
        )
