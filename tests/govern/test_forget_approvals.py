"""Forgetting under governance, on SQLite and PostgreSQL: the default file holds a
forgetting asked by anyone but an operator until someone else approves it; approved, it runs
once as its requester — and takes the copy of the value its request kept with it; it fails
clearly if the entity changed meanwhile; a file without the rule lets it run at once; a
rule may hold operators too; a client without the capability is refused (exit 4, 403)."""

from __future__ import annotations

import os
import re
import secrets

import httpx
import pytest

from conftest import files_holding, govern, pg_rows_holding

API = "/api/v1"
CLERK = """[identities.clerk]
pins = ["memory-client", "forgetter"]
[identities.deputy]
tier = "T0"
[pins.forgetter]
capabilities = ["ledger.forget", "ledger.read"]
"""
RULE = """[[approvals]]
capability = "ledger.forget"
why = "forgetting cannot be undone"
"""


@pytest.fixture
def clerk(keel_home, run):
    """A trusted writer whose pins grant forgetting, and a second operator."""
    run("identity.add", name="clerk")
    run("identity.add", name="deputy", role="operator")
    govern(run, keel_home, CLERK)
    return "clerk"


def pending_id(result) -> str:
    assert result.code == 5, result
    found = re.search(r"waits for approval ([0-9a-f]{10})", result.err)
    assert found and "forgetting cannot be undone" in result.err, result.err
    return found.group(1)


def holders(keel_home, needle: bytes) -> list[str]:
    dsn = os.environ.get("KEEL_DB")
    return files_holding(keel_home.path, needle) + (pg_rows_holding(dsn, needle) if dsn else [])


def test_a_requested_forgetting_runs_once_approved_and_takes_its_request_along(
    keel_home, cli, run, clerk
):
    secret = secrets.token_hex(16)
    text = f"the alarm code is {secret}"
    note = run("memory.capture", text=text).id
    asked = ["forget", note, "mem/text", "--value", text, "--why", "asked", "--as", "clerk"]
    approval = pending_id(cli(*asked))
    assert run("ledger.get", entity=note)["mem/text"] == text  # nothing erased yet
    assert cli("approvals", "approve", approval, "--as", "clerk").code == 4  # not its own

    done = cli("approvals", "approve", approval, "--why", "agreed", "--json")
    assert done.code == 0, done
    answer = done.json()
    assert answer["state"] == "done" and answer["decided_by"] == "operator"
    assert answer["result"]["datoms"] == 1 and answer["input"] is None  # the quote went too
    marker = run("ledger.get", entity=note)["mem/text"]["forgotten"]
    assert marker["by"] == "clerk" and marker["why"] == "asked"  # it ran as its requester
    assert run("ledger.verify").ok
    assert holders(keel_home, secret.encode()) == []
    trail = [(e.kind, e.identity, e.outcome) for e in run("audit.list", capability="ledger.*")]
    assert ("approval", "clerk", "pending") in trail and ("approval", "operator", "done") in trail
    assert cli("approvals", "approve", approval).code == 3  # once


def test_an_approved_forgetting_fails_if_the_entity_changed_meanwhile(keel_home, cli, run, clerk):
    note = run("memory.capture", text="first").id
    approval = pending_id(cli("forget", note, "--why", "all of it", "--as", "clerk"))
    run("ledger.transact", ops=[{"e": note, "a": "mem/title", "v": "added since"}])
    failed = cli("approvals", "approve", approval, "--json").json()
    assert failed["state"] == "failed"
    assert "datoms changed since it was requested" in failed["error"]
    assert run("ledger.get", entity=note)["mem/text"] == "first"


def test_without_the_rule_a_trusted_writer_forgets_at_once(keel_home, cli, run, clerk):
    path = keel_home.path / "canon" / "governance.toml"
    path.write_text(path.read_text().replace(RULE, ""))
    run("governance.sign")
    note = run("memory.capture", text="passing thought").id
    done = cli("forget", note, "--why", "not worth keeping", "--as", "clerk", "--json")
    assert done.code == 0, done
    assert run("ledger.get", entity=note)["mem/text"]["forgotten"]["by"] == "clerk"


def test_a_rule_may_hold_operators_too_and_another_operator_approves(
    keel_home, cli, run, clerk, door
):
    govern(run, keel_home, '[[approvals]]\ncapability = "ledger.forget"\ntiers = ["T0"]\n')
    note = run("memory.capture", text="the operator's own note").id
    approval = pending_id_any(cli("forget", note, "--why", "four eyes"))
    assert cli("approvals", "approve", approval).code == 4  # the operator asked: not its own
    done = cli("approvals", "approve", approval, "--as", "deputy", "--json")
    assert done.code == 0 and done.json()["state"] == "done", done
    assert "forgotten" in run("ledger.get", entity=note)["mem/text"]


def pending_id_any(result) -> str:
    assert result.code == 5, result
    return re.search(r"waits for approval ([0-9a-f]{10})", result.err).group(1)


def test_over_http_held_refused_or_done_by_who_asks(keel_home, run, clerk, client, server):
    note = run("memory.capture", text="over the wire").id
    body = {"entity": note, "why": "by http"}

    def post(identity: str) -> httpx.Response:
        token = (
            keel_home.token()
            if identity == "operator"
            else run("identity.token", name=identity).token
        )
        return httpx.post(
            f"{server.url}{API}/forget", json=body, headers={"Authorization": f"Bearer {token}"}
        )

    refused = post("client")
    assert refused.status_code == 403 and refused.json()["capability"] == "ledger.forget"
    held = post("clerk")
    assert held.status_code == 202 and held.json()["kind"] == "pending"
    missing = httpx.post(
        f"{server.url}{API}/forget",
        json={"entity": note},
        headers={"Authorization": f"Bearer {keel_home.token()}"},
    )
    assert missing.status_code == 400 and "why is required" in missing.json()["error"]
    done = post("operator")
    assert done.status_code == 200, done.text
    assert done.json()["entity"] == note and done.json()["datoms"] >= 2
