"""The `keel` command-line contract of issue 2, run as a real subprocess.

Every command that writes or reads ledger data in a way the store could change (init,
transact, get, branches, verify, export/import, bad input writing nothing, demo) runs on
both stores through the `home` fixture. Commands whose CLI logic does not depend on the
store run on SQLite only (`SQLITE_ONLY`): the Python API tests cover both stores under them,
and each `keel` process costs most of a second of imports.

Set-up that is not under test is done in-process through the Python API of the same home;
everything the contract names is checked through the real command. Independent commands run
side by side (each is its own process).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import sqlite3
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from ulid import ULID

from conftest import PG_BASE, keel, require_pg
from keel.govern.home import Home, add_identity
from keel.ledger import Ledger
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


#: For commands whose CLI logic does not depend on the store (see the module docstring).
SQLITE_ONLY = pytest.mark.parametrize("store_kind", ["sqlite"])


# -- helpers -----------------------------------------------------------------------------


def ok(*args: str, input: str | None = None, env: dict | None = None):
    proc = keel(*args, input=input, env=env)
    assert proc.returncode == 0, f"keel {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def out_json(*args: str, input: str | None = None, env: dict | None = None):
    return json.loads(ok(*args, input=input, env=env).stdout)


def parallel(*calls) -> list:
    """Run several independent `keel` commands at once; each call is a tuple of args, or
    (args tuple, stdin text)."""

    def one(call):
        if call and isinstance(call[0], tuple):
            args, stdin = call
            return keel(*args, input=stdin)
        return keel(*call)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, calls))


def one_clear_line(proc, *words: str) -> str:
    """A user error: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, f"expected a failure, got 0: {proc.stdout}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {proc.stderr!r}"
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def state(home: Home) -> tuple[int, int]:
    """(head tx, datom count) of the home's ledger, read in-process."""
    with home.ledger() as led:
        return led.store.head()[0], led.store.fetchone("SELECT count(*) FROM datoms")[0]


def log_lines(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def write_json(path: Path, data) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def declare(home: Home) -> None:
    with home.ledger() as led:
        led.declare(SCHEMA)


def transact(home: Home, ops: list[dict], **kw):
    with home.ledger() as led:
        return led.transact(ops, **kw)


def add(e, a, v, **kw) -> dict:
    return {"op": "add", "e": e, "a": a, "v": v, **kw}


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 Merkle tree hash, written independently of keel.ledger.merkle."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


@pytest.fixture
def fresh_db(store_kind):
    """Environment for a second, empty ledger: a fresh SQLite home or a fresh PG schema."""
    if store_kind == "sqlite":
        yield {"KEEL_DB": ""}
        return
    require_pg()
    schema = f"keel_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_BASE else "?"
    yield {"KEEL_DB": f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"}
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def people(home):
    """A declared schema, bob, and alice with a value of every type (tx ids and hashes)."""
    declare(home)
    bob = transact(home, [add("#b", "person/handle", "bob", valid_from="2000-01-01")])
    bob_id = bob.tempids["#b"]
    first = transact(
        home,
        [
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
    second = transact(
        home,
        [
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


# -- init and identities -----------------------------------------------------------------


def test_init_creates_a_home_and_is_idempotent(tmp_path, fresh_db, store_kind):
    path = tmp_path / "brand-new"
    env = {"KEEL_HOME": str(path), **fresh_db}
    first = ok("init", env=env)
    assert "ready" in first.stdout
    key = path / "keys" / "operator.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((path / "keys").stat().st_mode) == 0o700
    assert (path / "config.toml").is_file()
    for sub in ("blobs", "canon"):
        assert (path / sub).is_dir()
    if store_kind == "sqlite":
        assert (path / "keel.db").is_file()
    target = fresh_db["KEEL_DB"] or path / "keel.db"
    before = {p: p.read_bytes() for p in (key, path / "config.toml")}
    with Ledger.open(target) as led:
        (genesis,) = led.log()
    assert (
        genesis["author"] == "operator" and genesis["key"] == Home(path).signer().public_key.hex()
    )
    again = ok("init", env=env)
    assert "already" in again.stdout
    assert {p: p.read_bytes() for p in before} == before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with Ledger.open(target) as led:
        assert list(led.log()) == [genesis]
        assert led.verify().ok


@SQLITE_ONLY
def test_identity_add_and_list(home):
    ok("identity", "add", "claude-code")
    before = state(home)
    feeds, bad_role = parallel(
        ("identity", "add", "feeds", "--role", "connector"),
        ("identity", "add", "x", "--role", "overlord"),
    )
    assert feeds.returncode == 0, feeds.stderr
    one_clear_line(bad_role, "role")
    assert state(home)[0] == before[0] + 1
    for name in ("claude-code", "feeds"):
        assert stat.S_IMODE(home.key_path(name).stat().st_mode) == 0o600
    assert not home.key_path("x").exists()
    found = {i["name"]: i for i in out_json("identity", "list", "--json")}
    assert set(found) == {"operator", "claude-code", "feeds"}
    assert found["operator"]["role"] == "operator"
    assert found["claude-code"]["role"] == "agent"
    assert found["feeds"]["role"] == "connector"
    for name in found:
        assert found[name]["keys"] == [home.signer(name).public_key.hex()]


@SQLITE_ONLY
def test_schema_add_from_file_and_stdin(home, tmp_path):
    file = write_json(tmp_path / "schema.json", SCHEMA[:3])
    ok("schema", "add", "-f", file)
    ok("schema", "add", "-f", "-", input=json.dumps(SCHEMA[3:]))
    before = state(home)
    same, changed = parallel(
        ("schema", "add", "-f", file, "--json"),
        (("schema", "add", "-f", "-"), json.dumps([{**SCHEMA[1], "type": "int"}])),
    )
    assert same.returncode == 0 and json.loads(same.stdout) == {"tx": None, "unchanged": True}
    one_clear_line(changed, "person/city")
    assert state(home) == before
    with home.ledger() as led:
        assert {a: led.schema[a].to_json() for a in led.schema} == {
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


def test_transact_json_and_signing_as_another_identity(home, tmp_path):
    declare(home)
    agent = add_identity(home, "claude-code")
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
    result = out_json("transact", "-f", write_json(tmp_path / "tx.json", doc), "--json")
    assert {"tx", "hash", "tempids"} <= set(result)
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
    by_agent = out_json(
        "transact", "-f", "-", "--as", "claude-code", "--json", input=json.dumps(second)
    )
    assert by_agent["tx"] == result["tx"] + 1
    assert by_agent["tempids"] == {}
    entries = log_lines(ok("log", "--since", str(result["tx"] - 1)))
    assert [(e["tx"], e["hash"], e["author"], e["reason"]) for e in entries] == [
        (result["tx"], result["hash"], "operator", "met Alice"),
        (by_agent["tx"], by_agent["hash"], "claude-code", "agent work"),
    ]
    assert entries[1]["key"] == agent.public_key.hex()
    assert entries[0]["key"] == home.signer().public_key.hex()
    with home.ledger() as led:
        view = led.view()
        assert view.get_json(task) == {"db/id": task, "task/title": "call", "task/status": "open"}
        assert led.view(valid_at="2020-01-01").value(alice, "person/city") == "Denver"
        assert view.value(alice, "person/tags") == ["x"]


def test_failed_precondition_exits_3(home):
    declare(home)
    task = transact(home, [add("#t", "task/status", "open")]).tempids["#t"]
    before = state(home)
    doc = {
        "reason": "close it",
        "ops": [{"op": "add", "e": task, "a": "task/status", "v": "done"}],
        "expect": [{"e": task, "a": "task/status", "v": "waiting"}],
    }
    failed = keel("transact", "-f", "-", input=json.dumps(doc))
    assert failed.returncode == 3
    one_clear_line(failed, "expectation", "task/status", "waiting")
    assert state(home) == before


# -- reads -------------------------------------------------------------------------------


def test_get(home, people):
    alice, first, second = people["alice"], people["first"], people["second"]
    with home.ledger() as led:
        led.create_branch("side")
        led.transact([add(alice, "person/city", "Rome")], branch="side")
        first_time = next(e["time"] for e in led.log() if e["tx"] == first.tx)
    procs = parallel(
        ("get", alice, "--json"),
        ("get", alice, "--as-of", str(first.tx), "--json"),
        ("get", alice, "--as-of", first_time, "--json"),
        ("get", alice, "--valid-at", "2023-03-01T00:00:00Z", "--json"),
        ("get", alice, "--as-of", first.hash, "--valid-at", "2023-03-01", "--json"),
        ("get", json.dumps(["person/handle", "alice"]), "--branch", "side", "--json"),
    )
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
    now, as_of_id, as_of_time, in_2023, both, side = (json.loads(p.stdout) for p in procs)
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


@SQLITE_ONLY
def test_history_and_find(home, people):
    alice = people["alice"]
    hist_all, hist_city, by_value, by_attr = parallel(
        ("history", alice, "--json"),
        ("history", json.dumps(["person/handle", "alice"]), "person/city", "--json"),
        ("find", "person/age", "30", "--json"),
        ("find", "person/handle", "--json"),
    )
    rows = json.loads(hist_all.stdout)
    assert len(rows) == 11
    assert {r["tx"] for r in rows} == {people["first"].tx, people["second"].tx}
    assert all(r["e"] == alice and r["author"] == "operator" for r in rows)
    city = json.loads(hist_city.stdout)
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
    assert json.loads(by_value.stdout) == [alice]
    assert json.loads(by_attr.stdout) == sorted([alice, people["bob"]])


@SQLITE_ONLY
def test_log(home, people):
    with home.ledger() as led:
        led.create_branch("b")
        fork = led.branch("b").base
        on_b = led.transact([add(people["alice"], "person/city", "Oslo")], branch="b")
        after = transact(home, [add(people["alice"], "person/age", 31)])
        head = led.store.head()[0]
    full, since, branch = parallel(("log",), ("log", "--since", "3"), ("log", "--branch", "b"))
    entries = log_lines(full)
    assert [e["tx"] for e in entries] == list(range(1, head + 1))
    keys = {"tx", "hash", "prev", "branch", "time", "author", "key", "reason", "root", "sig"}
    assert all(keys <= set(e) for e in entries)
    assert entries[0]["prev"] == "0" * 64
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert log_lines(since) == entries[3:]
    on_branch = log_lines(branch)
    assert [e["tx"] for e in on_branch] == [*range(1, fork + 1), on_b.tx]
    assert after.tx not in [e["tx"] for e in on_branch]
    assert on_branch[-1]["branch"] == "b"
    assert entries[on_b.tx - 1]["branch"] == "b"


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


def test_verify(home, people, store_kind):
    report = out_json("verify", "--json")
    assert report["ok"] is True and report["first_bad"] is None
    assert (report["transactions"], report["datoms"]) == state(home)
    _tamper(home, store_kind, people["first"].tx)
    text, as_json = parallel(("verify",), ("verify", "--json"))
    assert text.returncode == 1
    one_clear_line(text, f"transaction {people['first'].tx}")
    assert as_json.returncode == 1
    bad = json.loads(as_json.stdout)
    assert bad["ok"] is False and bad["first_bad"] == people["first"].tx and bad["problem"]


@SQLITE_ONLY
def test_proofs_and_checkpoint(home, people):
    with home.ledger() as led:
        hashes = [bytes.fromhex(e["hash"]) for e in led.log()]
    n = len(hashes)
    assert n >= 5
    inc, inc_by_hash, cons = parallel(
        ("proof", "inclusion", "3"),
        ("proof", "inclusion", hashes[1].hex()),
        ("proof", "consistency", "2", str(n)),
    )
    root = mth(hashes)
    for proc, tx in ((inc, 3), (inc_by_hash, 2)):
        assert proc.returncode == 0, proc.stderr
        proof = json.loads(proc.stdout)
        assert proof["tx"] == tx and proof["leaf_index"] == tx - 1 and proof["tree_size"] == n
        assert bytes.fromhex(proof["leaf"]) == hashes[tx - 1]
        assert bytes.fromhex(proof["root"]) == root
        path = [bytes.fromhex(p) for p in proof["path"]]
        assert verify_inclusion(hashes[tx - 1], tx - 1, n, path, root)
        assert not verify_inclusion(hashes[tx], tx - 1, n, path, root)
        assert not verify_inclusion(hashes[tx - 1], tx - 1, n, path, mth(hashes[:-1]))
    c = json.loads(cons.stdout)
    assert (c["old_size"], c["new_size"]) == (2, n)
    assert bytes.fromhex(c["old_root"]) == mth(hashes[:2])
    assert bytes.fromhex(c["new_root"]) == root
    path = [bytes.fromhex(p) for p in c["path"]]
    assert verify_consistency(2, n, mth(hashes[:2]), root, path)
    assert not verify_consistency(2, n, mth(hashes[:3]), root, path)
    assert not verify_consistency(2, n, mth(hashes[:2]), mth(hashes[:-1]), path)
    # A signed checkpoint over the same log.
    cp = out_json("checkpoint")
    assert cp["size"] == n and bytes.fromhex(cp["root"]) == root
    assert cp["key"] == home.signer().public_key.hex()
    signed = checkpoint_bytes(n, root, parse_instant(cp["time"]))
    assert verify_signature(bytes.fromhex(cp["key"]), bytes.fromhex(cp["sig"]), signed)
    assert not verify_signature(bytes.fromhex(cp["key"]), bytes.fromhex(cp["sig"]), signed[:-1])
    with home.ledger() as led:
        report = led.verify()
        assert report.ok and report.checkpoints == 1
        assert led.store.head()[0] == n  # a checkpoint is not a transaction


# -- branches and restore ----------------------------------------------------------------


def test_branch_commands(home, people):
    alice = people["alice"]
    fork_at = people["first"].tx

    def city(v: str) -> str:
        return json.dumps({"ops": [{"op": "add", "e": alice, "a": "person/city", "v": v}]})

    created = parallel(
        ("branch", "create", "exp"),
        ("branch", "create", "old", "--at", str(fork_at)),
        ("branch", "create", "rival"),
    )
    assert [p.returncode for p in created] == [0, 0, 0], [p.stderr for p in created]
    on_exp, on_rival = parallel(
        (("transact", "-f", "-", "--branch", "exp", "--json"), city("Denver")),
        (("transact", "-f", "-", "--branch", "rival"), city("Rome")),
    )
    assert on_exp.returncode == 0 and json.loads(on_exp.stdout)["branch"] == "exp"
    assert on_rival.returncode == 0
    with home.ledger() as led:
        assert {b.name: b.base for b in led.branches()}["old"] == fork_at
        assert led.view("exp").value(alice, "person/city") == "Denver"
        assert sorted(led.view("old").value(alice, "person/tags")) == ["a", "b"]
        assert led.view().value(alice, "person/city") == "Boston"
    ok("branch", "merge", "exp")
    with home.ledger() as led:
        assert led.view().value(alice, "person/city") == "Denver"
    # rival changed alice's city too, and main changed it since rival's fork: a conflict.
    before = state(home)
    clash = keel("branch", "merge", "rival")
    assert clash.returncode == 3
    one_clear_line(clash, alice, "person/city")
    assert state(home) == before
    ok("branch", "drop", "rival")
    branches = {b["name"]: b for b in out_json("branch", "list", "--json")}
    assert set(branches) == {"exp", "old", "rival"}
    assert branches["old"]["base"] == fork_at and branches["old"]["parent"] == "main"
    assert branches["exp"]["base"] >= people["second"].tx
    assert {n: b["state"] for n, b in branches.items()} == {
        "exp": "merged",
        "old": "open",
        "rival": "dropped",
    }
    with home.ledger() as led:
        assert led.verify().ok
        assert led.store.head()[0] == before[0] + 1


@SQLITE_ONLY
def test_restore(home, people):
    alice = people["alice"]
    good = people["second"].tx
    with home.ledger() as led:
        wanted = led.view().get_json(alice)
    transact(
        home,
        [
            add(alice, "person/city", "Wrong", valid_from="2000-01-01"),
            {"op": "retract", "e": alice, "a": "person/tags", "v": "a"},
        ],
    )
    proc = ok("restore", alice, "--to", str(good))
    with home.ledger() as led:
        restored = led.view().get_json(alice)
        assert sorted(restored.pop("person/tags")) == sorted(wanted.pop("person/tags"))
        assert restored == wanted
        assert led.view(valid_at="2023-01-01").value(alice, "person/city") == "Denver"
        last = list(led.log())[-1]
        assert last["author"] == "operator" and str(good) in last["reason"]
        assert str(last["tx"]) in proc.stdout
        assert led.verify().ok
    before = state(home)
    again = ok("restore", json.dumps(["person/handle", "alice"]), "--to", str(good))
    assert "nothing written" in again.stdout
    assert state(home) == before


# -- export and import -------------------------------------------------------------------


def _rich_history(home: Home) -> list[dict]:
    """Schema, a large value, a branch and a checkpoint; returns the log."""
    with home.ledger() as led:
        led.declare(SCHEMA)
        alice = led.transact(
            [add("#a", "person/handle", "alice"), add("#a", "person/avatar", os.urandom(3000))]
        ).tempids["#a"]
        led.create_branch("b")
        led.transact([add(alice, "person/city", "Oslo")], branch="b")
        led.transact([add(alice, "person/city", "Lima")])
        led.checkpoint()
        return list(led.log())


def _compare_copy(target, original: list[dict]) -> None:
    with Ledger.open(target) as copy:
        assert list(copy.log()) == original
        report = copy.verify()
        assert report.ok and report.transactions == len(original)
        assert report.checkpoints == 1


def test_export_then_import_into_a_fresh_home(home, tmp_path, fresh_db):
    original = _rich_history(home)
    dump = tmp_path / "ledger.jsonl"
    ok("export", str(dump))
    elsewhere = tmp_path / "elsewhere"
    ok("import", str(dump), env={"KEEL_HOME": str(elsewhere), **fresh_db})
    _compare_copy(fresh_db["KEEL_DB"] or elsewhere / "keel.db", original)


@SQLITE_ONLY
def test_import_reproduces_hashes_and_reverifies(home, tmp_path, fresh_db):
    """Import into an empty ledger (a home with a config file but no genesis yet)."""
    original = _rich_history(home)
    dump = tmp_path / "ledger.jsonl"
    ok("export", str(dump))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.toml").write_text('operator = "operator"\ntimezone = "UTC"\ndb = ""\n')
    other = {"KEEL_HOME": str(empty), **fresh_db}
    target = fresh_db["KEEL_DB"] or empty / "keel.db"
    # A tampered export is refused and nothing is written.
    text = dump.read_text()
    assert text.count('"reason":"register identity operator"') == 1
    forged = tmp_path / "forged.jsonl"
    forged.write_text(text.replace('"register identity operator"', '"register identity 0perator"'))
    one_clear_line(keel("import", str(forged), env=other), "transaction 1")
    with Ledger.open(target) as copy:
        assert copy.store.head() is None
    ok("import", str(dump), env=other)
    _compare_copy(target, original)
    # Importing the same file again adds nothing.
    assert "imported 0" in ok("import", str(dump), env=other).stdout
    _compare_copy(target, original)


# -- bad input ---------------------------------------------------------------------------


def _assert_all_clear_failures(cases, procs) -> None:
    for (call, words), proc in zip(cases, procs, strict=True):
        try:
            one_clear_line(proc, *words)
        except AssertionError as exc:
            raise AssertionError(f"keel {call}: {exc}") from None


def test_bad_input_is_one_clear_line_and_writes_nothing(home, people):
    """Malformed JSON, unknown attribute, wrong type, unknown branch, bad instant."""
    alice = people["alice"]
    before = state(home)

    def tx(*ops) -> str:
        return json.dumps({"ops": list(ops)})

    stdin = ("transact", "-f", "-")
    cases = [
        ((stdin, '{"ops": [ {"op": "add",'), ["JSON"]),
        ((stdin, tx(add(alice, "person/nope", 1))), ["person/nope"]),
        ((stdin, tx(add(alice, "person/age", "old"))), ["person/age"]),
        ((stdin, tx(add(alice, "person/age", 5, valid_from="2024-99-01"))), ["2024-99-01"]),
        ((("transact", "-f", "-", "--branch", "nope"), tx(add(alice, "person/age", 1))), ["nope"]),
        (("get", alice, "--branch", "nope"), ["nope"]),
        (("get", alice, "--as-of", "not-a-time"), ["not-a-time"]),
    ]
    _assert_all_clear_failures(cases, parallel(*(call for call, _ in cases)))
    assert state(home) == before


@SQLITE_ONLY
def test_more_bad_input(home, people, tmp_path):
    alice = people["alice"]
    before = state(home)
    stdin = ("transact", "-f", "-")
    as_ghost = ("transact", "-f", "-", "--as", "ghost")
    cases = [
        ((stdin, ""), ["JSON"]),
        ((stdin, "[1, 2]"), ["object"]),
        (("get", alice, "--valid-at", "2024-13-01"), ["2024-13-01"]),
        (("transact", "-f", str(tmp_path / "missing.json")), ["missing.json"]),
        ((as_ghost, json.dumps({"ops": [add(alice, "person/age", 1)]})), ["ghost"]),
        (("get", "no-such-entity"), ["no-such-entity"]),
        (("history", alice, "person/nope"), ["person/nope"]),
        (("find", "person/age", "thirty"), ["thirty"]),
        (("restore", alice, "--to", "yesterday-ish"), ["yesterday-ish"]),
        (("log", "--since", "yesterday"), ["yesterday"]),
    ]
    _assert_all_clear_failures(cases, parallel(*(call for call, _ in cases)))
    assert state(home) == before


def test_commands_without_a_home(tmp_path):
    env = {"KEEL_HOME": str(tmp_path / "none"), "KEEL_DB": ""}
    one_clear_line(keel("get", "x", env=env), "keel init")
    assert not (tmp_path / "none").exists()


def test_demo(home):
    """`keel demo` builds its own temporary home: it works whatever KEEL_HOME/KEEL_DB say,
    and leaves the user's ledger alone."""
    before = state(home)
    proc = ok("demo")
    assert "verify" in proc.stdout.lower()
    assert state(home) == before
