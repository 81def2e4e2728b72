"""Forgetting on a real ledger (SQLite and PostgreSQL): a value's bytes leave every datom,
blob and file while `verify` still passes, reads show who forgot it, when and why, and
tampering is still caught (docs/ledger-format.md §12)."""

from __future__ import annotations

import contextlib
import io
import secrets
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import files_holding, fresh_pg_schema, pg_rows_holding
from keel.ledger import BadInput, Ledger, NotFound, Refused, Signer
from keel.ledger.forget import Forgotten

SCHEMA = [
    {"attribute": "person/email", "type": "string"},
    {"attribute": "person/city", "type": "string"},
    {"attribute": "person/tags", "type": "string", "cardinality": "many"},
    {"attribute": "person/age", "type": "int"},
    {"attribute": "person/notes", "type": "string"},
    {"attribute": "person/friend", "type": "ref"},
]


@pytest.fixture
def led(ledger):
    ledger.declare(SCHEMA)
    return ledger


def marker() -> str:
    """A value no other datom holds and no one could guess: 32 random hex characters."""
    return secrets.token_hex(16)


def raw(target: str, sql: str, params: list | tuple = ()) -> list[tuple]:
    """Plain SQL on the ledger's tables, as an attacker or a bad disk would run it."""
    if target.startswith("postgresql://"):
        with psycopg.connect(target, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def holders(store_kind: str, target: str, needle: bytes) -> list[str]:
    if store_kind == "postgres":
        return pg_rows_holding(target, needle)
    return files_holding(Path(target).parent, needle)


def test_a_forgotten_value_verifies_and_reads_as_forgotten(led, operator):
    secret = marker()
    alice = led.transact(
        [
            {"e": "#a", "a": "person/email", "v": secret},
            {"e": "#a", "a": "person/city", "v": "Denver"},
        ]
    ).tempids["#a"]
    done = led.forget(alice, "person/email", secret, why="asked to be forgotten")
    assert (done.datoms, done.blobs, done.notes) == (1, 0, [])
    assert led.verify().ok

    view = led.view()
    assert view.get(alice) == {"person/city": "Denver"}  # computing reads: no value there
    assert view.value(alice, "person/email") is None
    shown = view.get_json(alice)["person/email"]  # showing reads: the marker
    assert isinstance(shown, Forgotten)
    assert shown == {
        "forgotten": {
            "by": "operator",
            "tx": done.result.tx,
            "time": view.history(f"forget:{done.result.tx}")[0]["tx_time"],
            "why": "asked to be forgotten",
        }
    }
    (entry,) = view.history(alice, "person/email")
    assert entry["v"] == shown and entry["op"] == "add" and entry["author"] == "operator"
    assert view.timeline(alice, "person/email")[0]["v"] == shown
    assert view.intervals(alice, "person/email") == []

    # The forgetting is itself a signed transaction naming what it erased.
    record = view.get(f"forget:{done.result.tx}")
    assert record["keel.forget/entity"] == alice
    assert record["keel.forget/attribute"] == "person/email"
    assert record["keel.forget/why"] == "asked to be forgotten"
    assert record["keel.forget/datoms"] == [[alice_tx(led, alice), 0, 0]]
    last = list(led.log())[-1]
    assert last["author"] == operator.name
    assert last["reason"] == f"forget {alice} person/email: asked to be forgotten"


def alice_tx(led: Ledger, e: str) -> int:
    return led.view().history(e)[0]["tx"]


def test_a_forgotten_newer_value_still_hides_the_older_one(led):
    led.transact([{"e": "bob", "a": "person/city", "v": "Denver"}])
    secret = marker()
    moved = led.transact([{"e": "bob", "a": "person/city", "v": secret}])
    led.forget("bob", "person/city", secret, why="where he lives now is private")
    assert led.view().value("bob", "person/city") is None  # not Denver again
    assert "forgotten" in led.view().get_json("bob")["person/city"]
    assert led.view(as_of=moved.tx - 1).value("bob", "person/city") == "Denver"
    # A forgotten retraction still retracts: the value it retracted stays gone.
    led.transact([{"e": "bob", "a": "person/tags", "v": "x"}])
    led.transact([{"e": "bob", "a": "person/tags", "v": "x", "op": "retract"}])
    led.forget("bob", "person/tags", why="tags are private")
    assert "person/tags" not in led.view().get_json("bob")
    assert [h["v"]["forgotten"]["why"] for h in led.view().history("bob", "person/tags")] == [
        "tags are private",
        "tags are private",
    ]
    assert led.verify().ok


def test_values_forgotten_together_still_fold_apart(led):
    """Two forgotten tags stay two values, and a forgotten retraction of one of them still
    takes only that one away."""
    led.transact([{"e": "c", "a": "person/tags", "v": v} for v in ("p", "q", "r")])
    led.transact([{"e": "c", "a": "person/tags", "v": "q", "op": "retract"}])
    led.forget("c", "person/tags", why="all tags")
    shown = led.view().get_json("c")["person/tags"]
    assert len(shown) == 2 and all(isinstance(v, Forgotten) for v in shown)
    assert "person/tags" not in (led.view().get("c") or {})


def test_forgetting_reaches_every_branch_and_all_of_history(led):
    secret = marker()
    first = led.transact([{"e": "d", "a": "person/notes", "v": secret}])
    led.transact([{"e": "d", "a": "person/notes", "v": "other"}])
    led.create_branch("what-if")
    led.transact([{"e": "d", "a": "person/notes", "v": secret}], branch="what-if")
    led.transact([{"e": "d", "a": "person/age", "v": 3}], branch="what-if")
    done = led.forget("d", "person/notes", secret, why="never again")
    assert done.datoms == 2
    branch = led.view("what-if")
    assert branch.value("d", "person/notes") is None
    assert branch.get_json("d")["person/notes"]["forgotten"]["why"] == "never again"
    assert led.view(as_of=first.tx).get_json("d")["person/notes"]["forgotten"]["tx"] == (
        done.result.tx
    )
    assert led.view().value("d", "person/notes") == "other"  # another value stays
    led.merge_branch("what-if")  # the forgotten datom is not replayed; the rest is
    assert led.view().get("d") == {"person/notes": "other", "person/age": 3}
    assert led.verify().ok
    with pytest.raises(Refused, match="cannot restore d: a value of its person/notes"):
        led.restore("d", first.tx)


def test_every_byte_of_a_forgotten_value_is_gone(led, store_kind, target):
    """Small, near the inline limit, and in the blob store: after forgetting, no file of
    the ledger (database, -wal, -shm, blobs) — on PostgreSQL no row and no relation file —
    holds the value's bytes. Others keep theirs."""
    small, kept = marker(), marker()
    near = marker() + "n" * 960  # stored inline, in an overflowing row
    large = marker() + secrets.token_hex(1500)  # in the blob store
    for i in range(40):  # enough rows for b-tree pages to split around the values
        ops = [{"e": f"p{i}", "a": "person/city", "v": secrets.token_hex(300)}]
        if i == 17:
            ops += [
                {"e": "eve", "a": "person/email", "v": small},
                {"e": "eve", "a": "person/notes", "v": near},
                {"e": "eve", "a": "person/city", "v": large},
                {"e": "eve", "a": "person/tags", "v": kept},
            ]
        led.transact(ops)
    for value in (small, near, large):
        assert holders(store_kind, target, value[:32].encode()), "the search finds it before"
    led.forget("eve", "person/email", why="a")
    led.forget("eve", "person/notes", near, why="b")
    done = led.forget("eve", "person/city", why="c")
    assert done.blobs == 1
    led.close()
    for value in (small, near, large):
        assert holders(store_kind, target, value[:32].encode()) == []
    assert holders(store_kind, target, kept.encode())
    with Ledger.open(target) as again:
        assert again.verify().ok


def test_a_blob_another_datom_holds_stays(led):
    shared = "s" * 2000
    led.transact(
        [{"e": "x", "a": "person/notes", "v": shared}, {"e": "y", "a": "person/notes", "v": shared}]
    )
    assert led.forget("x", "person/notes", shared, why="x only").blobs == 0
    assert led.view().value("y", "person/notes") == shared
    assert led.forget("y", "person/notes", why="now y").blobs == 1
    assert led.verify().ok


def test_tampering_after_a_forgetting_is_still_caught(led, target):
    secret = marker()
    made = led.transact(
        [{"e": "f", "a": "person/email", "v": secret}, {"e": "f", "a": "person/city", "v": "Oslo"}]
    )
    done = led.forget("f", "person/email", why="gone")
    assert led.verify().ok
    tx, forget_tx = made.tx, done.result.tx

    # a changed digest of the erased datom
    (digest,) = raw(target, "SELECT vdigest FROM datoms WHERE tx = ? AND idx = 0", [tx])[0]
    bad = bytes([digest[0] ^ 1]) + bytes(digest[1:])
    raw(target, "UPDATE datoms SET vdigest = ? WHERE tx = ? AND idx = 0", [bad, tx])
    report = led.verify()
    assert not report.ok and report.first_bad == tx
    raw(target, "UPDATE datoms SET vdigest = ? WHERE tx = ? AND idx = 0", [bytes(digest), tx])
    assert led.verify().ok

    # bytes put back that do not match the digest
    raw(target, "UPDATE datoms SET v = ?, salt = ? WHERE tx = ? AND idx = 0", [b"x", bytes(16), tx])
    report = led.verify()
    assert not report.ok and "does not match its digest" in report.problem
    raw(target, "UPDATE datoms SET v = NULL, salt = NULL WHERE tx = ? AND idx = 0", [tx])
    assert led.verify().ok

    # a value erased without a forgetting
    raw(target, "UPDATE datoms SET v = NULL, salt = NULL WHERE tx = ? AND idx = 1", [tx])
    report = led.verify()
    assert not report.ok and report.first_bad == tx
    assert report.problem == "datom 1 has no value, and no forgetting names it"
    assert led.view().get_json("f")["person/city"] == {
        "forgotten": {"by": None, "tx": None, "time": None, "why": None}
    }

    # a forgetting that claims more than it erased
    rows = raw(target, "SELECT idx, a FROM datoms WHERE tx = ?", [forget_tx])
    idx = next(i for i, a in rows if a == "keel.forget/datoms")
    raw(target, "UPDATE datoms SET v = ? WHERE tx = ? AND idx = ?", [b"[[3,1,0]]", forget_tx, idx])
    report = led.verify()
    assert not report.ok and report.first_bad == forget_tx


def test_what_may_not_be_forgotten_and_bad_requests(led):
    led.transact([{"e": "g", "a": "person/age", "v": 40}])
    cases: list[tuple[Any, dict, str]] = [
        (Refused, {"e": "identity:operator"}, "part of how the ledger verifies"),
        (Refused, {"e": "attr:person/age"}, "part of how the ledger verifies"),
        (Refused, {"e": "g", "a": "keel.identity/key"}, "keel's own bookkeeping"),
        (BadInput, {"e": "g", "why": "  "}, "say why it is forgotten"),
        (BadInput, {"e": "g", "value": 40}, "needs the attribute"),
        (NotFound, {"e": "g", "a": "person/age", "value": 41}, "holds that value"),
        (NotFound, {"e": "nobody"}, "nothing to forget"),
    ]
    for error, kw, message in cases:
        args = {"why": "because", **kw}
        with pytest.raises(error, match=message):
            led.forget(args.pop("e"), args.pop("a", None), args.pop("value", None), **args)
    led.forget("g", "person/age", 40, why="age")
    with pytest.raises(NotFound, match="forgotten already"):
        led.forget("g", why="again")
    head = led.head()
    assert led.verify().ok and led.head() == head  # refusals write nothing


def test_an_entity_holding_keel_bookkeeping_is_refused_whole(led):
    led.transact([{"e": "branchy", "a": "person/age", "v": 1}])
    led.create_branch("side")
    with pytest.raises(Refused):
        led.forget("branch:side", why="no")
    done = led.forget("branchy", why="once")
    with pytest.raises(Refused, match="part of how the ledger verifies"):
        led.forget(f"forget:{done.result.tx}", why="no")


def test_an_export_after_forgetting_carries_the_marker_and_imports(led, tmp_path):
    secret, big = marker(), marker() + "b" * 3000
    led.transact(
        [{"e": "h", "a": "person/email", "v": secret}, {"e": "h", "a": "person/notes", "v": big}]
    )
    done = led.forget("h", why="leaving")
    out = io.StringIO()
    led.export(out)
    text = out.getvalue()
    assert secret not in text and big[:32] not in text
    assert '"v":null,"salt":null' in text and f'"forgotten":{done.result.tx}' in text
    path = tmp_path / "export.jsonl"
    path.write_text(text)
    (tmp_path / "fresh").mkdir()
    fresh = Ledger.open(tmp_path / "fresh" / "keel.db")
    assert fresh.import_file(path) == led.head().id
    assert fresh.verify().ok
    assert fresh.view().get_json("h")["person/email"]["forgotten"]["why"] == "leaving"
    again = io.StringIO()
    fresh.export(again)
    assert again.getvalue() == text
    fresh.close()


def test_an_export_whose_erasure_no_forgetting_names_is_refused(led, tmp_path):
    led.transact([{"e": "i", "a": "person/email", "v": "i@example.org"}])
    out = io.StringIO()
    led.export(out)
    lines = out.getvalue().splitlines()
    lines = [line.replace('"v":"aUBleGFtcGxlLm9yZw=="', '"v":null') for line in lines]
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "fresh").mkdir()
    with Ledger.open(tmp_path / "fresh" / "keel.db") as fresh:
        with pytest.raises(Exception, match="no forgetting names it"):
            fresh.import_file(path)
        assert fresh.head().id == 0


# -- the property -------------------------------------------------------------------------
ENTITIES = ["e0", "e1", "e2"]
ATTRS = ["person/email", "person/tags", "person/notes"]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["write", "write", "write", "forget-value", "forget-attr"]),
            st.sampled_from(ENTITIES),
            st.sampled_from(ATTRS),
            st.integers(0, 3),
            st.booleans(),
        ),
        min_size=3,
        max_size=14,
    )
)
def test_writes_and_forgets_in_any_order_verify_and_never_read_back(
    store_kind, tmp_path_factory, steps
):
    """Random writes and forgettings on a few entities and attributes (some values large
    enough for the blob store): the ledger always verifies, no forgotten value is ever read
    back — by a view, in history or in an export, nor found in any file or row — and every
    value not forgotten reads as a model of the same steps says."""
    home = tmp_path_factory.mktemp("prop")
    with contextlib.ExitStack() as stack:
        target = (
            stack.enter_context(fresh_pg_schema())
            if store_kind == "postgres"
            else str(home / "keel.db")
        )
        _run_steps(store_kind, target, steps)


def _run_steps(store_kind: str, target: str, steps: list) -> None:
    op = Signer.generate("operator")
    led = Ledger.open(target, signer=op)
    led.register_identity("operator", op.public_key, "operator")
    led.declare(SCHEMA)
    salt = secrets.token_hex(6)
    #: What each entity-attribute was given, oldest first: [value, forgotten?].
    model: dict[tuple[str, str], list[list]] = {}
    for kind, e, a, n, big in steps:
        size = "big" if big and a == "person/notes" else "small"
        value = f"{salt}-{e}-{a}-{n}-{size}." + ("L" * 1100 if size == "big" else "")
        entries = model.setdefault((e, a), [])
        live = [x for x in entries if not x[1]]
        if kind == "write":
            led.transact([{"e": e, "a": a, "v": value}])
            entries.append([value, False])
        elif kind == "forget-value" and any(v == value for v, _f in live):
            led.forget(e, a, value, why="one value")
            for x in entries:
                x[1] = x[1] or x[0] == value
        elif kind == "forget-attr" and live:
            led.forget(e, a, why="the attribute")
            for x in entries:
                x[1] = True
    assert led.verify().ok
    view = led.view()
    for (e, a), entries in model.items():
        current = view.value(e, a)
        if a == "person/tags":
            assert set(current or []) == {v for v, f in entries if not f}
        else:
            last = entries[-1] if entries else None
            assert current == (last[0] if last and not last[1] else None)
    gone = {v for entries in model.values() for v, f in entries if f}
    gone -= {v for entries in model.values() for v, f in entries if not f}
    out = io.StringIO()
    led.export(out)
    shown = repr([view.get_json(e) for e in ENTITIES])
    shown += repr([view.history(e) for e in ENTITIES])
    for value in gone:
        needle = value[:60]
        assert needle not in shown and needle not in out.getvalue()
    led.close()
    for value in gone:
        assert holders(store_kind, target, value[:60].encode()) == []


def test_a_ref_is_forgotten_by_the_entity_it_names(led):
    led.transact([{"e": "j", "a": "person/friend", "v": "k"}])
    assert led.forget("j", "person/friend", "k", why="unfriended").datoms == 1
    assert led.view().value("j", "person/friend") is None
    assert led.view().refs("k") == []
    assert led.verify().ok


def test_a_postgresql_session_older_than_the_erasure_is_named_not_waited_on_forever(
    pg_dsn, operator, monkeypatch
):
    """A transaction open since before the erasure may still see the old row versions, and
    it holds a lock VACUUM FULL waits for: keel waits a while, then says so, and the next
    forgetting, once it has ended, scrubs what it kept."""
    import keel.ledger.stores.postgres as pg

    monkeypatch.setattr(pg, "SNAPSHOT_WAIT", 0.3)
    led = Ledger.open(pg_dsn, signer=operator)
    led.register_identity("operator", operator.public_key, "operator")
    led.declare(SCHEMA)
    secret = marker()
    led.transact([{"e": "m", "a": "person/email", "v": secret}])
    with psycopg.connect(pg_dsn) as reader:  # not autocommit: a transaction stays open
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM datoms").fetchone()
        pid = reader.info.backend_pid
        done = led.forget("m", why="while someone reads")
        assert any(str(pid) in n for n in done.notes)
        assert any(n.startswith("datoms was locked") for n in done.notes)
    assert led.view().value("m", "person/email") is None and led.verify().ok
    led.transact([{"e": "n", "a": "person/email", "v": "later"}])
    assert led.forget("n", why="the next one").notes == []
    led.close()
    assert pg_rows_holding(pg_dsn, secret.encode()) == []
