"""The ledger's commands (init, identities, schema, transact, get, history, find, log,
verify, proofs, checkpoints, branches, restore, export and import, bad input), run in this
process through the `cli` fixture on SQLite and PostgreSQL.

Set-up that is not under test goes through the door as the operator; results are read back
through the command under test or `services.ledger()`. Two things keep a real process: `keel
init` in a brand-new home (the umask and file modes only the console script sets) and `keel
demo` (a whole run of the console script, whatever KEEL_HOME and KEEL_DB say).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable

import psycopg
import pytest
from ulid import ULID

from conftest import fresh_pg_schema, govern, sqlite_only
from keel.govern.home import Home
from keel.ledger.encoding import checkpoint_bytes
from keel.ledger.instants import parse_instant
from keel.ledger.merkle import verify_consistency, verify_inclusion
from keel.ledger.signing import verify_signature

SCHEMA = [
    {"attribute": "person/handle", "type": "string", "cardinality": "one", "unique": "identity"},
    {"attribute": "person/city", "type": "string", "doc": "where the person lives"},
    {"attribute": "person/tags", "type": "string", "cardinality": "many"},
    {"attribute": "person/age", "type": "int"},
    {"attribute": "person/born", "type": "instant"},
    {"attribute": "person/avatar", "type": "bytes"},
    {"attribute": "person/meta", "type": "json"},
    {"attribute": "person/manager", "type": "ref"},
    {"attribute": "task/title", "type": "string"},
    {"attribute": "task/status", "type": "string"},
    {"attribute": "task/due", "type": "instant"},
]


# -- helpers -----------------------------------------------------------------------------


def add(e, a, v, **kw) -> dict:
    return {"op": "add", "e": e, "a": a, "v": v, **kw}


def ok(result):
    """A command that succeeded: exit 0 and no traceback."""
    assert result.code == 0, result
    assert "Traceback" not in result.err
    return result


def one_clear_line(result, *words: str) -> str:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.code != 0, f"expected a failure, got 0: {result.out}"
    assert "Traceback" not in result.err and "Traceback" not in result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {result.err!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash, written independently of keel.ledger.merkle."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


@pytest.fixture
def state(services) -> Callable[[], tuple[int, int]]:
    """(head tx, datom count) of the home's ledger, read in this process, leaving out the
    evidence a refused call leaves (a denial record is all it writes)."""

    def read() -> tuple[int, int]:
        acts = [e for e in services.ledger().log() if not e["reason"].startswith("refused ")]
        return (acts[-1]["tx"] if acts else 0), sum(e["datoms"] for e in acts)

    return read


@pytest.fixture
def fresh_db(store_kind):
    """KEEL_DB for a second, empty ledger: a home's own SQLite file, or a fresh PG schema."""
    if store_kind == "sqlite":
        yield ""
        return
    with fresh_pg_schema() as dsn:
        yield dsn


@pytest.fixture
def people(run):
    """A declared schema, bob, and alice with a value of every type (tx results)."""
    run("schema.add", attributes=SCHEMA)
    bob = run("ledger.transact", ops=[add("#b", "person/handle", "bob", valid_from="2000-01-01")])
    bob_id = bob.tempids["#b"]
    first = run(
        "ledger.transact",
        ops=[
            add("#a", "person/handle", "alice", valid_from="2000-01-01"),
            add("#a", "person/city", "Boston", valid_from="2024-08-01T00:00:00Z"),
            add("#a", "person/tags", "a", valid_from="2000-01-01"),
            add("#a", "person/tags", "b", valid_from="2000-01-01"),
            add("#a", "person/age", 30, valid_from="2000-01-01"),
            add("#a", "person/born", "1990-01-02T03:04:05Z", valid_from="2000-01-01"),
            add("#a", "person/avatar", b"\x00\x01\xfe", valid_from="2000-01-01"),
            add("#a", "person/meta", {"k": [1, None]}, valid_from="2000-01-01"),
            add("#a", "person/manager", bob_id, valid_from="2000-01-01"),
        ],
        reason="met alice",
    )
    alice = first.tempids["#a"]
    second = run(
        "ledger.transact",
        ops=[
            add(
                alice,
                "person/city",
                "Denver",
                valid_from="2019-05-01T00:00:00Z",
                valid_to="2024-08-01T00:00:00Z",
            ),
            add(alice, "person/tags", "c", valid_from="2000-01-01"),
        ],
        reason="Alice lived in Denver",
    )
    return {"alice": alice, "bob": bob_id, "first": first, "second": second}


# -- init and identities (a real process: the console script's umask) ----------------------


def test_init_creates_a_home_and_is_idempotent(tmp_path, fresh_db, monkeypatch, cli):
    path = tmp_path / "brand-new"
    env = {**os.environ, "KEEL_HOME": str(path), "KEEL_DB": fresh_db}

    def keel_init() -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "keel", "init"], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc
        return proc

    assert "ready" in keel_init().stdout
    key = path / "keys" / "operator.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((path / "keys").stat().st_mode) == 0o700
    for made in (path / "config.toml", path / "token"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
    for sub in ("blobs", "canon"):
        assert (path / sub).is_dir()
        assert stat.S_IMODE((path / sub).stat().st_mode) == 0o700, sub
    if not fresh_db:
        assert stat.S_IMODE((path / "keel.db").stat().st_mode) == 0o600
    before = {p: p.read_bytes() for p in (key, path / "config.toml")}

    monkeypatch.setenv("KEEL_HOME", str(path))
    monkeypatch.setenv("KEEL_DB", fresh_db)
    log = ok(cli("log", "--json")).lines()
    genesis = log[0]
    assert genesis["author"] == "operator"
    assert genesis["key"] == Home(path).signer().public_key.hex()
    assert {e["author"] for e in log} == {"operator"}
    assert "already" in keel_init().stdout
    assert {p: p.read_bytes() for p in before} == before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ok(cli("log", "--json")).lines() == log  # a second init writes nothing
    assert ok(cli("verify", "--json")).json()["ok"] is True


@sqlite_only
def test_identity_add_and_list(keel_home, cli, state):
    ok(cli("identity", "add", "claude-code"))
    before = state()
    assert ok(cli("identity", "add", "feeds", "--role", "connector"))
    one_clear_line(cli("identity", "add", "x", "--role", "overlord"), "role")
    one_clear_line(cli("identity", "add", "no good"), "name")
    ok(cli("identity", "add", "claude-code"))  # again: nothing changes
    escalate = cli("identity", "add", "claude-code", "--role", "operator")
    assert escalate.code == 3 and "already registered, as agent" in one_clear_line(escalate)
    assert state()[0] == before[0] + 1
    for name in ("claude-code", "feeds"):
        assert stat.S_IMODE(keel_home.key_path(name).stat().st_mode) == 0o600
    assert not keel_home.key_path("x").exists()
    found = {i["name"]: i for i in ok(cli("identity", "list", "--json")).json()}
    assert set(found) == {"operator", "claude-code", "feeds"}
    assert found["operator"]["role"] == "operator"
    assert found["claude-code"]["role"] == "agent"
    assert found["feeds"]["role"] == "connector"
    for name in found:
        assert found[name]["keys"] == [keel_home.signer(name).public_key.hex()]


@sqlite_only
def test_schema_add_from_file_and_stdin(keel_home, cli, state, tmp_path):
    file = tmp_path / "schema.json"
    file.write_text(json.dumps(SCHEMA[:3]))
    ok(cli("schema", "add", "-f", str(file)))
    # A list, or the {"attributes": [...]} document HTTP takes.
    ok(cli("schema", "add", "-f", "-", input=json.dumps({"attributes": SCHEMA[3:]})))
    before = state()
    same = ok(cli("schema", "add", "-f", str(file), "--json"))
    assert same.json() == {"tx": None, "unchanged": True}
    changed = cli("schema", "add", "-f", "-", input=json.dumps([{**SCHEMA[1], "type": "int"}]))
    one_clear_line(changed, "person/city")
    assert state() == before
    listed = {a["attribute"]: a for a in ok(cli("schema", "list", "--json")).json()}
    assert {a: listed[a] for a in listed if a.startswith(("person/", "task/"))} == {
        d["attribute"]: {
            "attribute": d["attribute"],
            "type": d["type"],
            "cardinality": d.get("cardinality", "one"),
            "unique": d.get("unique"),
            "fulltext": False,
            "doc": d.get("doc", ""),
        }
        for d in SCHEMA
    }
    assert "mem/text" in listed  # keel's own attributes, declared by init


def test_transact_json_and_signing_as_another_identity(keel_home, cli, run, state, services):
    run("schema.add", attributes=SCHEMA)
    agent = run("identity.add", name="claude-code")
    deputy = run("identity.add", name="deputy", role="operator")
    govern(run, keel_home, '[identities.deputy]\ntier = "T0"')  # governance makes it one
    doc = {
        "reason": "met Alice",
        "ops": [
            {"op": "add", "e": "#alice", "a": "person/handle", "v": "alice"},
            {
                "op": "add",
                "e": "#alice",
                "a": "person/city",
                "v": "Denver",
                "valid_from": "2019-05-01T00:00:00Z",
                "valid_to": "2024-08-01T00:00:00Z",
            },
            {"op": "add", "e": "#task", "a": "task/title", "v": "call"},
            {"op": "add", "e": "#task", "a": "task/due", "v": "2026-12-01T00:00:00Z"},
        ],
    }
    file = keel_home.path.parent / "tx.json"
    file.write_text(json.dumps(doc))
    result = ok(cli("transact", "-f", str(file), "--json")).json()
    assert {"tx", "hash", "tempids", "time", "branch"} == set(result)
    assert result["branch"] == "main" and result["time"].endswith("Z")
    assert set(result["tempids"]) == {"#alice", "#task"}
    for real in result["tempids"].values():
        assert str(ULID.from_str(real)) == real
    alice, task = result["tempids"]["#alice"], result["tempids"]["#task"]
    second = {
        "reason": "agent work",
        "ops": [
            {"op": "add", "e": task, "a": "task/status", "v": "open"},
            {"op": "retract", "e": task, "a": "task/due", "v": "2026-12-01T00:00:00Z"},
            {"op": "add", "e": ["person/handle", "alice"], "a": "person/tags", "v": "x"},
        ],
        "expect": [{"e": task, "a": "task/status", "v": None}],
    }
    # Changed on purpose with the door: an agent may no longer transact raw ops (only write
    # memory); `--as agent` is refused, naming the capability, and nothing is written.
    before = state()
    refused = cli("transact", "-f", "-", "--as", "claude-code", input=json.dumps(second))
    assert refused.code == 4, refused
    one_clear_line(refused, "claude-code", "ledger.transact", "ledger.write")
    assert state() == before
    # Another identity with the operator's role signs a raw transaction as itself.
    by_deputy = ok(
        cli("transact", "-f", "-", "--as", "deputy", "--json", input=json.dumps(second))
    ).json()
    assert by_deputy["tx"] == state()[0]  # the refusal wrote nothing but its evidence
    assert by_deputy["tempids"] == {}
    # An agent still signs what it may write (memory) with its own key.
    note = ok(cli("capture", "agent note", "--as", "claude-code", "--json")).json()
    entries = ok(cli("log", "--since", str(result["tx"] - 1), "--json")).lines()
    entries = [e for e in entries if not e["reason"].startswith("refused ")]
    assert [(e["tx"], e["hash"], e["author"], e["reason"]) for e in entries[:2]] == [
        (result["tx"], result["hash"], "operator", "met Alice"),
        (by_deputy["tx"], by_deputy["hash"], "deputy", "agent work"),
    ]
    assert [(e["tx"], e["author"]) for e in entries[2:]] == [(note["tx"], "claude-code")]
    assert entries[0]["key"] == keel_home.signer().public_key.hex()
    assert entries[1]["key"] == deputy.keys[0] == keel_home.signer("deputy").public_key.hex()
    assert entries[2]["key"] == agent.keys[0] == keel_home.signer("claude-code").public_key.hex()
    assert ok(cli("get", task, "--json")).json() == {
        "db/id": task,
        "task/title": "call",
        "task/status": "open",
    }
    ledger = services.ledger()
    assert ledger.view(valid_at="2020-01-01").value(alice, "person/city") == "Denver"
    assert ledger.view().value(alice, "person/tags") == ["x"]


@sqlite_only
def test_failed_precondition_exits_3(keel_home, cli, run, state):
    run("schema.add", attributes=SCHEMA)
    task = run("ledger.transact", ops=[add("#t", "task/status", "open")]).tempids["#t"]
    before = state()
    doc = {
        "reason": "close it",
        "ops": [{"op": "add", "e": task, "a": "task/status", "v": "done"}],
        "expect": [{"e": task, "a": "task/status", "v": "waiting"}],
    }
    failed = cli("transact", "-f", "-", input=json.dumps(doc))
    assert failed.code == 3
    one_clear_line(failed, "expectation", "task/status", "waiting")
    assert state() == before
    doc["expect"] = [{"e": task, "a": "task/status", "v": "open"}]
    ok(cli("transact", "-f", "-", input=json.dumps(doc)))
    assert ok(cli("get", task, "--json")).json()["task/status"] == "done"


# -- reads -------------------------------------------------------------------------------


def test_get(keel_home, cli, run, people, services):
    alice, first, second = people["alice"], people["first"], people["second"]
    run("branch.create", name="side")
    run("ledger.transact", ops=[add(alice, "person/city", "Rome")], branch="side")
    first_time = next(e["time"] for e in services.ledger().log() if e["tx"] == first.tx)

    def get(*args: str) -> dict:
        return ok(cli("get", *args, "--json")).json()

    now = get(alice)
    as_of_id = get(alice, "--as-of", str(first.tx))
    as_of_time = get(alice, "--as-of", first_time)
    in_2023 = get(alice, "--valid-at", "2023-03-01T00:00:00Z")
    both = get(alice, "--as-of", first.hash, "--valid-at", "2023-03-01")
    side = get(json.dumps(["person/handle", "alice"]), "--branch", "side")
    assert sorted(now.pop("person/tags")) == ["a", "b", "c"]
    assert now == {
        "db/id": alice,
        "person/handle": "alice",
        "person/city": "Boston",
        "person/age": 30,
        "person/born": "1990-01-02T03:04:05Z",
        "person/avatar": base64.b64encode(b"\x00\x01\xfe").decode(),
        "person/meta": {"k": [1, None]},
        "person/manager": people["bob"],
    }
    # As of the first transaction (by id or by its instant): tags a and b only (c came
    # later); Boston, valid from 2024-08-01, already holds at that moment.
    for view in (as_of_id, as_of_time):
        assert view["db/id"] == alice
        assert sorted(view["person/tags"]) == ["a", "b"]
        assert view["person/city"] == "Boston"
    # Valid in March 2023: Denver (recorded later), the rest as now.
    assert in_2023["person/city"] == "Denver"
    assert sorted(in_2023["person/tags"]) == ["a", "b", "c"]
    # Both axes: as of the first tx, nothing was known about a city in 2023.
    assert "person/city" not in both and both["person/handle"] == "alice"
    assert sorted(both["person/tags"]) == ["a", "b"]
    assert side["db/id"] == alice and side["person/city"] == "Rome"
    assert second.tx > first.tx
    # Without --json: a table, every value on one line (a pipe has no width).
    shown = ok(cli("get", alice)).out
    assert alice in shown and "Boston" in shown and "person/manager" in shown


@sqlite_only
def test_history_and_find(keel_home, cli, people):
    alice = people["alice"]
    rows = ok(cli("history", alice, "--json")).json()
    assert len(rows) == 11
    assert {r["tx"] for r in rows} == {people["first"].tx, people["second"].tx}
    assert all(r["e"] == alice and r["author"] == "operator" for r in rows)
    city = ok(
        cli("history", json.dumps(["person/handle", "alice"]), "person/city", "--json")
    ).json()
    assert [
        (r["v"], r["op"], r["valid_from"], r["valid_to"], r["tx"], r["reason"]) for r in city
    ] == [
        ("Boston", "add", "2024-08-01T00:00:00Z", None, people["first"].tx, "met alice"),
        (
            "Denver",
            "add",
            "2019-05-01T00:00:00Z",
            "2024-08-01T00:00:00Z",
            people["second"].tx,
            "Alice lived in Denver",
        ),
    ]
    assert all(r["tx_time"].endswith("Z") for r in city)
    # find pages now: {"entities", "next"}.
    assert ok(cli("find", "person/age", "30", "--json")).json() == {
        "entities": [alice],
        "next": None,
    }
    both = sorted([alice, people["bob"]])
    assert ok(cli("find", "person/handle", "--json")).json()["entities"] == both
    page = ok(cli("find", "person/handle", "--limit", "1", "--json")).json()
    assert page == {"entities": both[:1], "next": both[0]}
    rest = cli("find", "person/handle", "--limit", "1", "--after", page["next"], "--json")
    assert ok(rest).json()["entities"] == both[1:]
    assert ok(cli("find", "person/handle")).out.split() == both


@sqlite_only
def test_log(keel_home, cli, run, people, services):
    made = run("branch.create", name="b")
    fork = made.base
    on_b = run("ledger.transact", ops=[add(people["alice"], "person/city", "Oslo")], branch="b")
    after = run("ledger.transact", ops=[add(people["alice"], "person/age", 31)])
    head = services.ledger().head().id
    entries = ok(cli("log", "--json")).lines()
    assert [e["tx"] for e in entries] == list(range(1, head + 1))
    keys = {"tx", "hash", "prev", "branch", "time", "author", "key", "reason", "root", "sig"}
    assert all(keys <= set(e) for e in entries)
    assert entries[0]["prev"] == "0" * 64
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert ok(cli("log", "--since", "3", "--json")).lines() == entries[3:]
    assert ok(cli("log", "--since", entries[2]["hash"], "--json")).lines() == entries[3:]
    on_branch = ok(cli("log", "--branch", "b", "--json")).lines()
    assert [e["tx"] for e in on_branch] == [*range(1, fork + 1), on_b.tx]
    assert after.tx not in [e["tx"] for e in on_branch]
    assert on_branch[-1]["branch"] == "b"
    assert entries[on_b.tx - 1]["branch"] == "b"
    table = ok(cli("log")).out
    assert "met alice" in table and "Alice lived in Denver" in table


def test_log_pages_through_a_long_ledger(keel_home, cli, people, services, monkeypatch):
    from keel.surfaces.cli import ledger_cmds

    monkeypatch.setattr(ledger_cmds, "PAGE", 2)  # pages of two: every page boundary is hit
    head = services.ledger().head().id
    assert head > 5
    every = [e["tx"] for e in ok(cli("log", "--json")).lines()]
    assert every == list(range(1, head + 1))
    assert [e["tx"] for e in ok(cli("log", "--limit", "3", "--json")).lines()] == [1, 2, 3]
    assert [e["tx"] for e in ok(cli("log", "--since", "1", "--limit", "5", "--json")).lines()] == [
        2, 3, 4, 5, 6
    ]  # fmt: skip
    assert len(ok(cli("log")).out.splitlines()) > head


# -- integrity ---------------------------------------------------------------------------


def _tamper(home: Home, store_kind: str, tx: int) -> None:
    """Change one stored transaction's reason behind keel's back."""
    if store_kind == "sqlite":
        with sqlite3.connect(home.path / "keel.db") as conn:
            conn.execute("UPDATE txs SET reason = 'forged' WHERE id = ?", [tx])
        conn.close()
    else:
        with psycopg.connect(os.environ["KEEL_DB"], autocommit=True) as conn:
            conn.execute("UPDATE txs SET reason = 'forged' WHERE id = %s", [tx])


def test_verify(keel_home, cli, people, state, store_kind):
    report = ok(cli("verify", "--json")).json()
    assert report["ok"] is True and report["first_bad"] is None
    assert (report["transactions"], report["datoms"]) == state()
    assert "ok:" in ok(cli("verify")).out
    _tamper(keel_home, store_kind, people["first"].tx)
    text = cli("verify")
    assert text.code == 1
    one_clear_line(text, f"transaction {people['first'].tx}")
    as_json = cli("verify", "--json")
    assert as_json.code == 1
    bad = as_json.json()
    assert bad["ok"] is False and bad["first_bad"] == people["first"].tx and bad["problem"]
    # And keel is read-only until a verify passes: a write is refused with exit 6.
    refused = cli("capture", "a note")
    assert refused.code == 6
    one_clear_line(refused, "read-only", f"transaction {people['first'].tx}")


@sqlite_only
def test_proofs_and_checkpoint(keel_home, cli, people, services):
    hashes = [bytes.fromhex(e["hash"]) for e in services.ledger().log()]
    n = len(hashes)
    assert n >= 5
    root = mth(hashes)
    for args, tx in ((("3",), 3), ((hashes[1].hex(),), 2)):
        proof = ok(cli("proof", "inclusion", *args, "--json")).json()
        assert proof["tx"] == tx and proof["leaf_index"] == tx - 1 and proof["tree_size"] == n
        assert bytes.fromhex(proof["leaf"]) == hashes[tx - 1]
        assert bytes.fromhex(proof["root"]) == root
        path = [bytes.fromhex(p) for p in proof["path"]]
        assert verify_inclusion(hashes[tx - 1], tx - 1, n, path, root)
        assert not verify_inclusion(hashes[tx], tx - 1, n, path, root)
        assert not verify_inclusion(hashes[tx - 1], tx - 1, n, path, mth(hashes[:-1]))
    c = ok(cli("proof", "consistency", "2", str(n), "--json")).json()
    assert (c["old_size"], c["new_size"]) == (2, n)
    assert bytes.fromhex(c["old_root"]) == mth(hashes[:2])
    assert bytes.fromhex(c["new_root"]) == root
    path = [bytes.fromhex(p) for p in c["path"]]
    assert verify_consistency(2, n, mth(hashes[:2]), root, path)
    assert not verify_consistency(2, n, mth(hashes[:3]), root, path)
    assert not verify_consistency(2, n, mth(hashes[:2]), mth(hashes[:-1]), path)
    # A signed checkpoint over the same log.
    cp = ok(cli("checkpoint", "--json")).json()
    assert cp["size"] == n and bytes.fromhex(cp["root"]) == root
    assert cp["key"] == keel_home.signer().public_key.hex()
    signed = checkpoint_bytes(n, root, parse_instant(cp["time"]))
    assert verify_signature(bytes.fromhex(cp["key"]), bytes.fromhex(cp["sig"]), signed)
    assert not verify_signature(bytes.fromhex(cp["key"]), bytes.fromhex(cp["sig"]), signed[:-1])
    report = ok(cli("verify", "--json")).json()
    assert report["ok"] and report["checkpoints"] == 1
    assert services.ledger().head().id == n  # a checkpoint is not a transaction


# -- branches and restore ----------------------------------------------------------------


@sqlite_only
def test_branch_commands(keel_home, cli, people, services, state):
    alice = people["alice"]
    fork_at = people["first"].tx

    def city(v: str) -> str:
        return json.dumps({"ops": [{"op": "add", "e": alice, "a": "person/city", "v": v}]})

    assert ok(cli("branch", "create", "exp", "--json")).json()["name"] == "exp"
    ok(cli("branch", "create", "old", "--at", str(fork_at)))
    ok(cli("branch", "create", "rival"))
    on_exp = ok(cli("transact", "-f", "-", "--branch", "exp", "--json", input=city("Denver")))
    assert on_exp.json()["branch"] == "exp"
    in_doc = json.dumps({**json.loads(city("Rome")), "branch": "rival"})
    assert ok(cli("transact", "-f", "-", "--json", input=in_doc)).json()["branch"] == "rival"
    ledger = services.ledger()
    assert {b.name: b.base for b in ledger.branches()}["old"] == fork_at
    assert ledger.view("exp").value(alice, "person/city") == "Denver"
    assert sorted(ledger.view("old").value(alice, "person/tags")) == ["a", "b"]
    assert ledger.view().value(alice, "person/city") == "Boston"
    ok(cli("branch", "merge", "exp"))
    assert services.ledger().view().value(alice, "person/city") == "Denver"
    # rival changed alice's city too, and main changed it since rival's fork: a conflict.
    before = state()
    clash = cli("branch", "merge", "rival")
    assert clash.code == 3
    one_clear_line(clash, alice, "person/city")
    assert state() == before
    ok(cli("branch", "drop", "rival"))
    branches = {b["name"]: b for b in ok(cli("branch", "list", "--json")).json()}
    assert set(branches) == {"exp", "old", "rival"}
    assert branches["old"]["base"] == fork_at and branches["old"]["parent"] == "main"
    assert branches["exp"]["base"] >= people["second"].tx
    assert {n: b["state"] for n, b in branches.items()} == {
        "exp": "merged",
        "old": "open",
        "rival": "dropped",
    }
    one_clear_line(cli("transact", "-f", "-", "--branch", "rival", input=city("X")), "rival")
    assert ok(cli("verify", "--json")).json()["ok"]
    assert state()[0] == before[0] + 1


@sqlite_only
def test_restore(keel_home, cli, run, people, services, state):
    alice = people["alice"]
    good = people["second"].tx
    wanted = services.ledger().view().get_json(alice)
    run(
        "ledger.transact",
        ops=[
            add(alice, "person/city", "Wrong", valid_from="2000-01-01"),
            {"op": "retract", "e": alice, "a": "person/tags", "v": "a"},
        ],
    )
    out = ok(cli("restore", alice, "--to", str(good))).out
    ledger = services.ledger()
    restored = ledger.view().get_json(alice)
    assert sorted(restored.pop("person/tags")) == sorted(wanted.pop("person/tags"))
    assert restored == wanted
    assert ledger.view(valid_at="2023-01-01").value(alice, "person/city") == "Denver"
    last = list(ledger.log())[-1]
    assert last["author"] == "operator" and str(good) in last["reason"]
    assert str(last["tx"]) in out
    assert ok(cli("verify", "--json")).json()["ok"]
    before = state()
    again = ok(cli("restore", json.dumps(["person/handle", "alice"]), "--to", str(good)))
    assert "nothing written" in again.out
    assert state() == before
    as_json = ok(cli("restore", alice, "--to", str(good), "--json")).json()
    assert as_json == {"tx": None, "id": alice}


# -- export and import -------------------------------------------------------------------


def _rich_history(run) -> None:
    """Schema, a large value, a branch and a checkpoint."""
    run("schema.add", attributes=SCHEMA)
    alice = run(
        "ledger.transact",
        ops=[add("#a", "person/handle", "alice"), add("#a", "person/avatar", os.urandom(3000))],
    ).tempids["#a"]
    run("branch.create", name="b")
    run("ledger.transact", ops=[add(alice, "person/city", "Oslo")], branch="b")
    run("ledger.transact", ops=[add(alice, "person/city", "Lima")])
    run("ledger.checkpoint")


def test_export_then_import_into_a_fresh_home(keel_home, cli, run, tmp_path, fresh_db, monkeypatch):
    """Import into a home that does not exist yet: the home is made, its genesis comes
    from the file; a tampered export is refused whole, and importing twice adds nothing."""
    _rich_history(run)
    original = ok(cli("log", "--json")).lines()
    dump = tmp_path / "ledger.jsonl"
    exported = ok(cli("export", str(dump), "--json")).json()
    assert exported == {"path": str(dump), "transactions": len(original)}
    text = dump.read_text()
    assert text.count('"reason":"register identity operator"') == 1
    forged = tmp_path / "forged.jsonl"
    forged.write_text(text.replace('"register identity operator"', '"register identity 0perator"'))

    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("KEEL_DB", fresh_db)
    one_clear_line(cli("import", str(forged)), "transaction 1")
    assert ok(cli("log", "--json")).lines() == []  # nothing was written
    done = ok(cli("import", str(dump), "--json")).json()
    assert done["transactions"] == len(original)
    assert ok(cli("log", "--json")).lines() == original
    report = ok(cli("verify", "--json")).json()
    assert report["ok"] and report["transactions"] == len(original)
    assert report["checkpoints"] == 1
    assert "imported 0" in ok(cli("import", str(dump))).out
    assert ok(cli("log", "--json")).lines() == original


# -- bad input ---------------------------------------------------------------------------


def test_bad_input_is_one_clear_line_and_writes_nothing(keel_home, cli, people, state, tmp_path):
    """Malformed JSON, unknown attribute, wrong type, unknown branch, bad instant, unknown
    identity, missing file or entity: one line each, and nothing written."""
    alice = people["alice"]
    before = state()

    def tx(*ops) -> str:
        return json.dumps({"ops": list(ops)})

    stdin = ("transact", "-f", "-")
    cases = [
        (stdin, '{"ops": [ {"op": "add",', ["JSON"]),
        (stdin, "", ["JSON"]),
        (stdin, "[1, 2]", ["object"]),
        (stdin, tx(add(alice, "person/nope", 1)), ["person/nope"]),
        (stdin, tx(add(alice, "person/age", "old")), ["person/age"]),
        (stdin, tx(add(alice, "person/age", 5, valid_from="2024-99-01")), ["2024-99-01"]),
        ((*stdin, "--branch", "nope"), tx(add(alice, "person/age", 1)), ["nope"]),
        ((*stdin, "--as", "ghost"), tx(add(alice, "person/age", 1)), ["ghost"]),
        (("transact", "-f", str(tmp_path / "missing.json")), None, ["missing.json"]),
        (("get", alice, "--branch", "nope"), None, ["nope"]),
        (("get", alice, "--as-of", "not-a-time"), None, ["not-a-time"]),
        (("get", alice, "--valid-at", "2024-13-01"), None, ["2024-13-01"]),
        (("get", "no-such-entity"), None, ["no-such-entity"]),
        (("history", alice, "person/nope"), None, ["person/nope"]),
        (("find", "person/age", "thirty"), None, ["thirty"]),
        (("restore", alice, "--to", "yesterday-ish"), None, ["yesterday-ish"]),
        (("log", "--since", "yesterday"), None, ["yesterday"]),
    ]
    for args, stdin_text, words in cases:
        try:
            one_clear_line(cli(*args, input=stdin_text), *words)
        except AssertionError as exc:
            raise AssertionError(f"keel {' '.join(args)}: {exc}") from None
    assert state() == before


def test_commands_without_a_home(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "none"))
    monkeypatch.delenv("KEEL_DB", raising=False)
    for args in (("get", "x"), ("log",), ("capture", "a note")):
        result = cli(*args)
        assert result.code == 1, result
        one_clear_line(result, "keel init")
    assert not (tmp_path / "none").exists()


def test_demo(keel_home, state):
    """`keel demo`, as a real process: it builds its own temporary home, works whatever
    KEEL_HOME/KEEL_DB say, and leaves the user's ledger alone."""
    before = state()
    proc = subprocess.run(
        [sys.executable, "-m", "keel", "demo"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc
    assert "verify" in proc.stdout.lower()
    assert "signatures and chain intact: True" in proc.stdout
    assert "[bold]" not in proc.stdout  # its emphasis is rendered, not printed
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100  # piped: readable
    assert state() == before
