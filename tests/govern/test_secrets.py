"""Secrets on a real ledger (SQLite and PostgreSQL): values go in and never come out — not
into the ledger, the recall index, blobs, exports, logs, run artifacts, errors, or API and
MCP output — and reach only the environment of the jobs whose owner is granted them."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from urllib.parse import quote, quote_plus

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import (
    files_holding,
    govern,
    keel,
    mcp_over_http,
    pg_rows_holding,
    sh,
    start_daemon,
    stop_daemon,
)
from keel.errors import BadInput, Forbidden, NotFound, Pending, Refused
from keel.govern.secrets import MIN_LENGTH, Redactor, SecretBox
from keel.ops.door import Caller

VALUE = "sk-live-Zq8x1LpR2vT9wYk3"
ECHOES = (
    f"{sys.executable} -c \"import os, base64, urllib.parse; v = os.environ['TOKEN']; "
    "print('raw', v); print('b64', base64.b64encode(v.encode()).decode()); "
    "print('b64nl', base64.b64encode((v + chr(10)).encode()).decode()); "
    "print('url', urllib.parse.quote(v, safe='')); print('x' * 200000)\""
)


def forms_of(value: str) -> list[bytes]:
    """What a leak looks like: the value itself and the encodings a job or a client might
    print it in."""
    raw = value.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.b64encode(raw + b"\n")[:20],
        quote(value, safe="").encode(),
        quote_plus(value).encode(),
    ]


def leaks(data: bytes | str, value: str = VALUE) -> list[bytes]:
    data = data.encode() if isinstance(data, str) else data
    return [f for f in forms_of(value) if f in data]


# -- redaction, as a property ----------------------------------------------------------------
secret_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=MIN_LENGTH, max_size=40
)
around = st.binary(max_size=12)


@settings(max_examples=300, deadline=None)
@given(secret_text, around, around)
def test_a_value_is_redacted_in_every_form_and_alignment(value, before, after):
    """Raw, URL-encoded, and base64 wherever in an encoded stream the value falls: what is
    left after redaction never holds the value's bytes or the characters that encode only
    them."""
    redactor = Redactor({"K": value})
    raw = value.encode()
    text = before.decode("utf-8", "replace") + value + after.decode("utf-8", "replace")
    assert value not in redactor.text(text)
    assert raw not in redactor.data(before + raw + after)
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(before + raw + after).decode()
        assert redactor.text(encoded) != encoded
    for encoded in (quote(value, safe=""), quote_plus(value)):
        assert value not in redactor.text(f"?q={encoded}&x=1")
        assert redactor.text(f"?q={encoded}&x=1") != f"?q={encoded}&x=1"


def test_redaction_reaches_into_structures_and_leaves_the_rest_alone():
    r = Redactor({"A": "alpha-secret", "B": "bravo-secret"})
    data = {"k": ["x alpha-secret y", b"bravo-secret"], "n": 3, "alpha-secret": None}
    assert r(data) == {
        "k": ["x [redacted:A] y", b"[redacted:B]"],
        "n": 3,
        "[redacted:A]": None,
    }
    clean = {"k": ["nothing here"], "n": 3}
    assert r(clean) is clean


# -- the box ---------------------------------------------------------------------------------
def test_values_are_encrypted_at_rest_and_private(keel_home, run):
    run("secret.set", name="TOKEN", value=VALUE)
    keys = keel_home.path / "keys"
    for name in ("_secrets.key", "_secrets.box"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    assert not leaks((keys / "_secrets.box").read_bytes())
    # A box copied without its key is unreadable, and says so.
    (keys / "_secrets.key").write_bytes(b"Wm9vb29vb29vb29vb29vb29vb29vb29vb29vb29vb28=")
    with pytest.raises(BadInput, match="not the key"):
        SecretBox(keys).value("TOKEN")


def test_the_ledger_records_names_versions_and_grants_never_values(keel_home, run, client):
    first = run("secret.set", name="TOKEN", value=VALUE)
    assert (first.version, first.grants) == (1, [])
    assert run("secret.set", name="TOKEN", value=VALUE).version == 1  # the same value: no-op
    assert run("secret.set", name="TOKEN", value=VALUE + "-2").version == 2
    assert run("secret.grant", name="TOKEN", identity="client").grants == ["client"]
    listed = run("secret.list")
    assert [(s.name, s.version, s.grants) for s in listed] == [("TOKEN", 2, ["client"])]
    assert VALUE not in json.dumps([s.model_dump() for s in listed])
    assert run("secret.revoke", name="TOKEN", identity="client").grants == []
    run("secret.rm", name="TOKEN")
    assert run("secret.list") == []
    with pytest.raises(NotFound):
        run("secret.rm", name="TOKEN")
    with pytest.raises(NotFound):
        run("secret.grant", name="NOPE", identity="client")


@pytest.mark.parametrize(
    "value,reason",
    [
        ("short", "at least"),
        ("${secret:OTHER}", "placeholder"),
        ("[redacted:TOKEN]", "placeholder"),
    ],
)
def test_values_keel_could_not_keep_or_redact_are_refused(run, value, reason):
    with pytest.raises(BadInput, match=reason):
        run("secret.set", name="TOKEN", value=value)
    assert run("secret.list") == []


def test_the_cli_reads_a_value_from_stdin_never_from_argv(cli, keel_home):
    assert cli("secret", "set", "TOKEN", VALUE).code == 2  # no such argument
    done = cli("secret", "set", "TOKEN", input=VALUE + "\n")
    assert done.code == 0 and "version 1" in done.out and VALUE not in done.out
    empty = cli("secret", "set", "OTHER", input="")
    assert empty.code == 2 and "no value" in empty.err
    listed = cli("secret", "list", "--json").json()
    assert [s["name"] for s in listed] == ["TOKEN"] and VALUE not in json.dumps(listed)
    assert SecretBox(keel_home.path / "keys").value("TOKEN") == VALUE


def test_a_rule_cannot_hold_a_secret_for_approval(keel_home, run):
    """A request is stored; a secret's value never is — so no rule may hold one."""
    path = keel_home.path / "canon" / "governance.toml"
    path.write_text(path.read_text() + '\n[[approvals]]\ncapability = "secret.*"\n')
    with pytest.raises(BadInput, match="never is"):
        run("governance.sign")


def test_clients_manage_no_secrets(keel_home, door, run, client):
    run("secret.set", name="TOKEN", value=VALUE)
    me = Caller(client, "test")
    for op, args in [
        ("secret.set", {"name": "X", "value": VALUE}),
        ("secret.list", {}),
        ("secret.grant", {"name": "TOKEN", "identity": client}),
        ("secret.rm", {"name": "TOKEN"}),
    ]:
        with pytest.raises(Forbidden):
            door.call(op, args, me)


# -- jobs ------------------------------------------------------------------------------------
def job(name: str, script: str, **extra) -> dict:
    return {"name": name, "schedule": "every 1h", "kind": "command", "run": sh(script), **extra}


def test_a_job_gets_the_value_in_its_environment_and_nothing_else_does(keel_home, run):
    run("secret.set", name="TOKEN", value=VALUE)
    out = keel_home.path.parent / "seen"
    run(
        "cadence.add",
        **job(
            "use", f'printf %s "$TOKEN" > {out}; echo "$TOKEN"', env={"TOKEN": "${secret:TOKEN}"}
        ),
    )
    done = run("cadence.run", name="use")
    assert done.outcome == "ok"
    assert out.read_text() == VALUE  # the child had it
    shown = run("cadence.run_info", key=done.key)
    assert shown.artifact.strip() == "[redacted:TOKEN]"  # what keel kept did not
    assert run("cadence.show", name="use").spec["env"] == {"TOKEN": "${secret:TOKEN}"}
    uses = [e for e in run("audit.list") if e.kind == "secret"]
    assert [(u.identity, u.outcome, u.detail["secret"]) for u in uses] == [
        (keel_home.operator, "given", "TOKEN")
    ]
    assert run("secret.list")[0].uses == 1


def test_a_job_may_not_carry_a_value_or_a_placeholder_as_its_variable(run):
    run("secret.set", name="TOKEN", value=VALUE)
    with pytest.raises(BadInput, match="secret's value"):
        run("cadence.add", **job("a", "true", env={"T": f"Bearer {VALUE}"}))
    with pytest.raises(BadInput, match="placeholder"):
        run("cadence.add", **job("b", "true", env={"T": "[redacted:TOKEN]"}))
    with pytest.raises(Forbidden, match="no secret named 'NOPE'"):
        run("cadence.add", **job("c", "true", env={"T": "${secret:NOPE}"}))
    with pytest.raises(BadInput, match="environment variable"):
        run("cadence.add", **job("d", "true", env={"1X": "y"}))


CLIENT_JOBS = """[identities.client]
pins = ["memory-client", "jobs"]
[pins.jobs]
capabilities = ["cadence.command", "cadence.read", "cadence.run"]
job_kinds = ["command"]
commands = [{ path = "/bin/sh", args = ".*" }]
"""


def test_only_a_granted_owner_s_jobs_are_given_a_secret(keel_home, door, run, client):
    run("secret.set", name="TOKEN", value=VALUE)
    path = keel_home.path / "canon" / "governance.toml"
    rule = '[[approvals]]\ncapability = "cadence.command"\nwhy = "a command runs on this machine"\n'
    assert rule in path.read_text()
    path.write_text(path.read_text().replace(rule, ""))  # this test is not about approvals
    govern(run, keel_home, CLIENT_JOBS)
    me = Caller(client, "test")
    spec = job("mine", 'test -n "$TOKEN"', env={"TOKEN": "${secret:TOKEN}"})
    with pytest.raises(Forbidden, match="not granted to 'client'"):
        door.call("cadence.add", spec, me)
    assert any(e.capability == "secret.use" for e in run("audit.list") if e.kind == "denial")
    with pytest.raises(Refused, match="only the operator"):
        door.call("cadence.add", {**spec, "owner": "operator"}, me)
    run("secret.grant", name="TOKEN", identity=client)
    saved = door.call("cadence.add", spec, me)
    assert saved.spec["owner"] == client
    assert door.call("cadence.run", {"name": "mine"}, me).outcome == "ok"
    # Revoked: the next run is refused its secret, fails saying so, and the refusal is kept.
    run("secret.revoke", name="TOKEN", identity=client)
    failed = door.call("cadence.run", {"name": "mine"}, me)
    assert failed.outcome == "failed" and "not granted to 'client'" in failed.error
    uses = [(e.outcome, e.identity) for e in run("audit.list") if e.kind == "secret"]
    assert uses == [("given", client), ("refused", client)]


# -- the leak search -------------------------------------------------------------------------
def test_a_secret_is_found_nowhere_after_a_job_prints_it(keel_home, store_kind, tmp_path):
    """Set a secret, use it in a job that prints it raw, base64- and URL-encoded (and a
    large artifact, kept as a blob), have an MCP client write it into memory, ask for it in
    errors — then search every byte keel keeps or showed: the value is nowhere."""
    home = keel_home.path
    env = {"KEEL_HOME": str(home)}
    keel("secret", "set", "TOKEN", input=VALUE + "\n", env=env, check=True)
    proc, port = start_daemon(home)
    shown: list[bytes] = []
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        http = httpx.Client(
            headers={"Authorization": f"Bearer {(home / 'token').read_text().strip()}"},
            timeout=120,
        )
        spec = {**job("leak", "true", env={"TOKEN": "${secret:TOKEN}"}), "run": ECHOES}
        added = http.post(f"{base}/cadence/jobs", json=spec)
        assert added.status_code == 200, added.text
        ran = http.post(f"{base}/cadence/jobs/leak/run", json={"wait": 60})
        assert ran.status_code == 200 and ran.json()["outcome"] == "ok", ran.text
        info = http.get(f"{base}/cadence/runs/{ran.json()['key']}")
        shown += [ran.content, info.content, http.get(f"{base}/log").content]
        assert "[redacted:TOKEN]" in info.json()["artifact"]
        # An error that names what was asked for names the value redacted.
        missing = http.get(f"{base}/entities/{quote(VALUE, safe='')}")
        assert missing.status_code == 404 and "[redacted:TOKEN]" in missing.text
        shown.append(missing.content)
        # An MCP client that knows the value writes it into memory and reads it back.
        keel("identity", "add", "agent", env=env, check=True)
        token = keel("mcp", "token", "agent", env=env, check=True).stdout.strip()

        async def scenario(session):
            wrote = await session.call_tool(
                "remember", {"text": f"the deploy key is {VALUE}", "scope": "agent"}
            )
            found = await session.call_tool("recall", {"query": "deploy key"})
            for result in (wrote, found):
                shown.append(json.dumps(result.model_dump(mode="json")).encode())
            assert "[redacted:TOKEN]" in json.dumps(found.model_dump(mode="json"))

        mcp_over_http(f"http://127.0.0.1:{port}", token, scenario)
        exported = tmp_path / "export.jsonl"
        keel("export", str(exported), env=env, check=True)
    finally:
        log = stop_daemon(proc)
    shown.append(log.encode())
    assert "keel is up" in log
    for form in forms_of(VALUE):
        assert files_holding(home, form) == [], form
        if store_kind == "postgres":
            assert pg_rows_holding(os.environ["KEEL_DB"], form) == [], form
    assert not leaks(exported.read_bytes())
    for i, data in enumerate(shown):
        assert not leaks(data), f"output {i} holds the secret: {data[:300]!r}"


def test_a_job_that_could_never_get_its_secret_is_refused_before_approval(
    keel_home, door, run, client
):
    """The default rule holds a client's command job for approval; one asking for a secret
    its owner is not granted is refused at once, not handed to an approver."""
    run("secret.set", name="TOKEN", value=VALUE)
    govern(run, keel_home, CLIENT_JOBS)
    spec = job("mine", 'test -n "$TOKEN"', env={"TOKEN": "${secret:TOKEN}"})
    with pytest.raises(Forbidden, match="not granted"):
        door.call("cadence.add", spec, Caller(client, "test"))
    assert run("approval.list") == []
    run("secret.grant", name="TOKEN", identity=client)
    with pytest.raises(Pending):
        door.call("cadence.add", spec, Caller(client, "test"))
    assert len(run("approval.list")) == 1
