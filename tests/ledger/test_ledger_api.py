"""The Python API of the ledger, against a real SQLite file and a real PostgreSQL schema.

Every test opens a real store (the `ledger` / `target` fixtures of conftest). Time-sensitive
tests inject a clock, so transaction times are exact and known.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ulid import ULID

from keel.ledger import (
    BadInput,
    Conflict,
    KeelError,
    Ledger,
    NotFound,
    SchemaError,
    Signer,
)
from keel.ledger.instants import parse_instant

SCHEMA = [
    {"attribute": "person/handle", "type": "string", "unique": "identity", "doc": "short name"},
    {"attribute": "person/email", "type": "string", "unique": "value"},
    {"attribute": "person/city", "type": "string", "doc": "where the person lives"},
    {"attribute": "person/tags", "type": "string", "cardinality": "many"},
    {"attribute": "person/age", "type": "int"},
    {"attribute": "person/score", "type": "float"},
    {"attribute": "person/active", "type": "bool"},
    {"attribute": "person/born", "type": "instant"},
    {"attribute": "person/manager", "type": "ref"},
    {"attribute": "person/friends", "type": "ref", "cardinality": "many"},
    {"attribute": "person/meta", "type": "json"},
    {"attribute": "person/avatar", "type": "bytes"},
    {"attribute": "task/title", "type": "string"},
    {"attribute": "task/status", "type": "string"},
    {"attribute": "task/owner", "type": "ref"},
    {"attribute": "task/due", "type": "instant"},
    {"attribute": "item/kind", "type": "string"},
    {"attribute": "item/n", "type": "int"},
]


def us(text: str) -> int:
    return parse_instant(text)


def to_us(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class Clock:
    """A settable clock in microseconds, for Ledger(..., clock=...)."""

    def __init__(self, start: str):
        self.now = us(start)

    def __call__(self) -> int:
        return self.now

    def set(self, text: str) -> None:
        self.now = us(text)


@pytest.fixture
def led(ledger):
    """The conftest ledger with this file's schema declared."""
    ledger.declare(SCHEMA)
    return ledger


@pytest.fixture
def clocked(target, operator):
    """A ledger whose clock the test sets; it starts on 2018-01-01."""
    clock = Clock("2018-01-01T00:00:00Z")
    led = Ledger.open(target, signer=operator, clock=clock)
    led.register_identity("operator", operator.public_key, "operator")
    led.declare(SCHEMA)
    yield led, clock
    led.close()


def head(led: Ledger) -> int:
    return led.head().id


def datom_count(led: Ledger) -> int:
    return led.store.fetchone("SELECT count(*) FROM datoms")[0]


def add(e, a, v, **kw) -> dict:
    return {"op": "add", "e": e, "a": a, "v": v, **kw}


def retract(e, a, v, **kw) -> dict:
    return {"op": "retract", "e": e, "a": a, "v": v, **kw}


def person(led: Ledger, handle: str, **attrs) -> str:
    ops = [add("#p", "person/handle", handle)]
    ops += [add("#p", f"person/{k}", v) for k, v in attrs.items()]
    return led.transact(ops, reason=f"add {handle}").tempids["#p"]


def refused(led: Ledger, exc_type: type[KeelError], fn, *args, **kw) -> KeelError:
    """Call fn, expect exc_type, and check that nothing at all was written."""
    before = (head(led), datom_count(led))
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    assert isinstance(info.value, KeelError)
    assert (head(led), datom_count(led)) == before, "a refused write left something behind"
    message = str(info.value)
    assert message and "\n" not in message
    return info.value


# -- temp ids, lookup refs, uniqueness ---------------------------------------------------


def test_tempids_become_ulids(led):
    t0 = time.time()
    result = led.transact(
        [
            add("#alice", "person/handle", "alice"),
            add("#alice", "person/city", "Boston"),
            add("#bob", "person/handle", "bob"),
            add("#bob", "person/manager", "#alice"),
        ],
        reason="two people",
    )
    assert set(result.tempids) == {"#alice", "#bob"}
    alice, bob = result.tempids["#alice"], result.tempids["#bob"]
    assert alice != bob
    for real in (alice, bob):
        assert len(real) == 26
        parsed = ULID.from_str(real)
        assert str(parsed) == real
        assert abs(parsed.timestamp - t0) < 60
    assert result.tx == head(led)
    assert len(result.hash) == 64 and int(result.hash, 16) >= 0
    view = led.view()
    assert view.get(alice) == {"person/handle": "alice", "person/city": "Boston"}
    # A temp id used as a ref value in the same transaction resolves to the same entity.
    assert view.get(bob) == {"person/handle": "bob", "person/manager": alice}
    # Ids made in a later transaction sort after earlier ones (ULIDs are time-ordered).
    time.sleep(0.002)
    later = person(led, "carol")
    assert later > alice and later > bob


def test_lookup_refs(led):
    alice = person(led, "alice")
    bob = person(led, "bob")
    led.transact(
        [
            add(["person/handle", "alice"], "person/city", "Denver"),
            add(["person/handle", "bob"], "person/manager", ["person/handle", "alice"]),
        ]
    )
    view = led.view()
    assert view.resolve_entity(["person/handle", "alice"]) == alice
    assert view.value(alice, "person/city") == "Denver"
    assert view.value(bob, "person/manager") == alice
    # A lookup ref that matches nobody, or on an attribute that is not unique, is refused.
    err = refused(
        led, NotFound, led.transact, [add(["person/handle", "zed"], "person/city", "Oslo")]
    )
    assert "zed" in str(err)
    refused(led, SchemaError, led.transact, [add(["person/city", "Denver"], "person/age", 3)])
    refused(led, BadInput, led.transact, [add(["person/handle"], "person/age", 3)])
    refused(led, BadInput, led.transact, [add(["a", "b", "c"], "person/age", 3)])


def test_unique_identity_upserts(led):
    alice = person(led, "alice", city="Boston")
    result = led.transact(
        [add("#someone", "person/handle", "alice"), add("#someone", "person/city", "Denver")]
    )
    assert result.tempids["#someone"] == alice
    view = led.view()
    assert view.find("person/handle") == [alice]
    assert view.get(alice) == {"person/handle": "alice", "person/city": "Denver"}


def test_unique_value_violations(led):
    alice = person(led, "alice", email="a@example.org")
    # Another entity may not take a unique value someone holds, and a temp id does not
    # upsert through a unique-value attribute.
    err = refused(
        led,
        SchemaError,
        led.transact,
        [add("#x", "person/handle", "x"), add("#x", "person/email", "a@example.org")],
    )
    assert "person/email" in str(err)
    refused(led, SchemaError, led.transact, [add("#y", "person/email", "a@example.org")])
    # Two entities taking the same unique value in one transaction.
    refused(
        led,
        SchemaError,
        led.transact,
        [
            add("#p", "person/email", "same@example.org"),
            add("#q", "person/email", "same@example.org"),
        ],
    )
    # Unique identity is unique too: an existing id cannot take another's handle.
    bob = person(led, "bob")
    refused(led, SchemaError, led.transact, [add(bob, "person/handle", "alice")])
    # The holder may re-assert its own value, and once it lets go, another may take it.
    led.transact([add(alice, "person/email", "a@example.org")])
    led.transact([retract(alice, "person/email", "a@example.org")])
    led.transact([add(bob, "person/email", "a@example.org")])
    assert led.view().find("person/email", "a@example.org") == [bob]


def test_unique_value_moves_within_one_transaction(led):
    """Retracting a unique value and giving it to another entity is one atomic move."""
    alice = person(led, "alice", email="shared@example.org")
    bob = person(led, "bob")
    led.transact(
        [
            retract(alice, "person/email", "shared@example.org"),
            add(bob, "person/email", "shared@example.org"),
        ],
        reason="the address now belongs to bob",
    )
    assert led.view().find("person/email", "shared@example.org") == [bob]


# -- cardinality and value types ----------------------------------------------------------


def test_cardinality_one_and_many(led):
    alice = person(led, "alice", city="Boston")
    led.transact([add(alice, "person/city", "Denver")])
    assert led.view().value(alice, "person/city") == "Denver"
    assert led.view().get(alice)["person/city"] == "Denver"
    # Two values for one cardinality-one attribute over the same time: refused.
    err = refused(
        led,
        SchemaError,
        led.transact,
        [add(alice, "person/city", "Paris"), add(alice, "person/city", "Rome")],
    )
    assert "cardinality one" in str(err)
    # Many: values accumulate, repeat assertions do not duplicate, retraction removes one.
    led.transact([add(alice, "person/tags", "a"), add(alice, "person/tags", "b")])
    led.transact([add(alice, "person/tags", "c"), add(alice, "person/tags", "a")])
    assert sorted(led.view().value(alice, "person/tags")) == ["a", "b", "c"]
    led.transact([retract(alice, "person/tags", "b")])
    assert sorted(led.view().get(alice)["person/tags"]) == ["a", "c"]
    assert led.view().get_json(alice)["person/tags"] in (["a", "c"], ["c", "a"])


INSTANT = "2024-02-29T12:34:56.789012Z"
TYPE_CASES = [
    ("person/handle", "héllo ✓ \u0000 end", "héllo ✓ \u0000 end", "héllo ✓ \u0000 end"),
    ("person/age", 2**63 - 1, 2**63 - 1, 2**63 - 1),
    ("person/age", -(2**63), -(2**63), -(2**63)),
    ("person/age", 0, 0, 0),
    ("person/score", 3.25, 3.25, 3.25),
    ("person/score", 7, 7.0, 7.0),
    ("person/score", -1e300, -1e300, -1e300),
    ("person/active", True, True, True),
    ("person/active", False, False, False),
    (
        "person/born",
        INSTANT,
        to_us(datetime(2024, 2, 29, 12, 34, 56, 789012, tzinfo=UTC)),
        INSTANT,
    ),
    (
        "person/born",
        "2024-03-01T10:00:00+02:00",
        to_us(datetime(2024, 3, 1, 8, tzinfo=UTC)),
        "2024-03-01T08:00:00Z",
    ),
    ("person/born", "2024-03-01", to_us(datetime(2024, 3, 1, tzinfo=UTC)), "2024-03-01T00:00:00Z"),
    ("person/born", "1969-07-20T20:17:40Z", -14182940 * 10**6, "1969-07-20T20:17:40Z"),
    (
        "person/meta",
        {"b": [1, 2.5, None, True], "a": {"x": "ü"}},
        {"b": [1, 2.5, None, True], "a": {"x": "ü"}},
        {"b": [1, 2.5, None, True], "a": {"x": "ü"}},
    ),
    ("person/meta", [1, "two"], [1, "two"], [1, "two"]),
    ("person/meta", "just a string", "just a string", "just a string"),
    ("person/avatar", b"\x00\xff\x10binary", b"\x00\xff\x10binary", "AP8QYmluYXJ5"),
    ("person/avatar", "AP8QYmluYXJ5", b"\x00\xff\x10binary", "AP8QYmluYXJ5"),
    ("person/avatar", b"", b"", ""),
]


@pytest.mark.parametrize(("attr", "given", "python", "shown"), TYPE_CASES)
def test_value_types_round_trip(led, target, operator, attr, given, python, shown):
    e = person(led, "subject") if attr != "person/handle" else "subject-1"
    led.transact([add(e, attr, given)])
    assert led.view().value(e, attr) == python
    assert type(led.view().value(e, attr)) is type(python)
    assert led.view().get_json(e)[attr] == shown
    # Read back through a fresh connection: the value came from the store, not a cache.
    with Ledger.open(target, signer=operator) as again:
        assert again.view().value(e, attr) == python
        assert again.view().find(attr, given) == [e]
    assert led.verify().ok


def test_ref_values_round_trip(led):
    alice = person(led, "alice")
    bob = person(led, "bob", manager=alice)
    led.transact([add(bob, "person/friends", alice), add(bob, "person/friends", "ext-42")])
    view = led.view()
    assert view.value(bob, "person/manager") == alice
    assert sorted(view.value(bob, "person/friends")) == sorted([alice, "ext-42"])
    assert view.get_json(bob)["person/manager"] == alice
    assert view.find("person/manager", alice) == [bob]
    assert view.find("person/manager", ["person/handle", "alice"]) == [bob]


@pytest.mark.parametrize(
    ("attr", "bad"),
    [
        ("person/age", "12"),
        ("person/age", 1.5),
        ("person/age", True),
        ("person/age", 2**63),
        ("person/score", "1.0"),
        ("person/score", float("nan")),
        ("person/active", 1),
        ("person/active", "true"),
        ("person/handle", 5),
        ("person/handle", ["x"]),
        ("person/meta", {"x": {1, 2}}),
        ("person/avatar", "not base64!!"),
        ("person/avatar", 17),
        ("person/born", "yesterday"),
        ("person/born", "2024-13-45"),
        ("person/born", 1.5),
    ],
)
def test_wrong_types_are_refused(led, attr, bad):
    alice = person(led, "alice")
    err = refused(led, BadInput, led.transact, [add(alice, attr, bad)])
    assert attr in str(err) or "instant" in str(err)


# -- large values ------------------------------------------------------------------------


def test_large_values_go_to_the_blob_store(led, store_kind, target):
    alice = person(led, "alice")
    text = "long text ✓ " * 200
    data = bytes(range(256)) * 20
    doc = {"rows": [{"i": i, "s": "x" * 10} for i in range(100)]}
    edge_in, edge_out = "i" * 1024, "o" * 1025
    led.transact(
        [
            add(alice, "person/city", text),
            add(alice, "person/avatar", data),
            add(alice, "person/meta", doc),
            add("edge-in", "person/city", edge_in),
            add("edge-out", "person/city", edge_out),
        ]
    )

    def stored(e, a):
        (row,) = led.store.fetchall("SELECT v, big FROM datoms WHERE e = ? AND a = ?", [e, a])
        return bytes(row[0]), row[1]

    for a, canonical in (
        ("person/city", text.encode()),
        ("person/avatar", data),
        ("person/meta", json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()),
    ):
        v, big = stored(alice, a)
        assert big == 1, f"{a} should be in the blob store"
        assert v == hashlib.sha256(canonical).digest()
        assert led.store.get_blob(v) == canonical
    assert stored("edge-in", "person/city") == (edge_in.encode(), 0)
    v, big = stored("edge-out", "person/city")
    assert big == 1 and led.store.get_blob(v) == edge_out.encode()
    if store_kind == "sqlite":
        h = hashlib.sha256(data).hexdigest()
        assert (Path(target).parent / "blobs" / h[:2] / h[2:]).read_bytes() == data
    view = led.view()
    assert view.value(alice, "person/city") == text
    assert view.value(alice, "person/avatar") == data
    assert view.value(alice, "person/meta") == doc
    assert view.find("person/city", text) == [alice]
    assert view.find("person/city", edge_out) == ["edge-out"]
    # Retracting a large value works like any other.
    led.transact([retract(alice, "person/city", text)])
    assert led.view().value(alice, "person/city") is None
    assert led.view().history(alice, "person/city")[-1]["v"] == text
    assert led.verify().ok


# -- retraction and preconditions ---------------------------------------------------------


def test_retraction(led):
    alice = person(led, "alice", city="Boston")
    led.transact([retract(alice, "person/city", "Boston")], reason="moved away")
    assert led.view().value(alice, "person/city") is None
    assert "person/city" not in led.view().get(alice)
    rows = led.view().history(alice, "person/city")
    assert [(r["op"], r["v"]) for r in rows] == [("add", "Boston"), ("retract", "Boston")]
    assert rows[1]["reason"] == "moved away"
    # Retracting a value the entity never had, or an attribute it never had, is refused.
    err = refused(led, SchemaError, led.transact, [retract(alice, "person/city", "Paris")])
    assert "Paris" in str(err)
    refused(led, SchemaError, led.transact, [retract(alice, "person/age", 3)])
    refused(led, SchemaError, led.transact, [retract("nobody", "person/city", "Boston")])
    # Retracting every value of an entity leaves it with none.
    led.transact([retract(alice, "person/handle", "alice")])
    assert led.view().get(alice) is None
    # An assertion and its retraction in one transaction cancel out.
    bob = person(led, "bob")
    led.transact([add(bob, "person/tags", "t"), retract(bob, "person/tags", "t")])
    assert led.view().value(bob, "person/tags") is None


def test_preconditions(led):
    alice = person(led, "alice", city="Boston", tags="x")
    # Match: commits.
    led.transact(
        [add(alice, "person/city", "Denver")],
        expect=[{"e": alice, "a": "person/city", "v": "Boston"}],
    )
    assert led.view().value(alice, "person/city") == "Denver"
    # Mismatch: a Conflict naming the expectation, nothing written.
    err = refused(
        led,
        Conflict,
        led.transact,
        [add(alice, "person/city", "Paris")],
        expect=[{"e": alice, "a": "person/city", "v": "Boston"}],
    )
    assert "person/city" in str(err) and "Boston" in str(err) and "Denver" in str(err)
    assert Conflict.exit_code == 3
    # v null: the attribute must be absent.
    led.transact(
        [add(alice, "person/age", 30)], expect=[{"e": alice, "a": "person/age", "v": None}]
    )
    refused(
        led,
        Conflict,
        led.transact,
        [add(alice, "person/age", 31)],
        expect=[{"e": alice, "a": "person/age", "v": None}],
    )
    # ...and on an entity that does not exist yet, by lookup ref.
    led.transact(
        [add("#n", "person/handle", "newcomer")],
        expect=[{"e": ["person/handle", "newcomer"], "a": "person/handle", "v": None}],
    )
    refused(
        led,
        Conflict,
        led.transact,
        [add("#n", "person/city", "X")],
        expect=[{"e": ["person/handle", "newcomer"], "a": "person/handle", "v": None}],
    )
    # Many: the expected value must be among the current ones.
    led.transact(
        [add(alice, "person/tags", "y")], expect=[{"e": alice, "a": "person/tags", "v": "x"}]
    )
    refused(
        led,
        Conflict,
        led.transact,
        [add(alice, "person/tags", "z")],
        expect=[{"e": alice, "a": "person/tags", "v": "nope"}],
    )
    # Several expectations: all must hold.
    refused(
        led,
        Conflict,
        led.transact,
        [add(alice, "person/city", "Rome")],
        expect=[
            {"e": alice, "a": "person/city", "v": "Denver"},
            {"e": alice, "a": "person/age", "v": 99},
        ],
    )
    # Typed comparison: an instant expectation given as ISO text.
    led.transact([add(alice, "person/born", "1990-01-02T03:04:05Z")])
    led.transact(
        [add(alice, "person/city", "Oslo")],
        expect=[{"e": alice, "a": "person/born", "v": "1990-01-02T03:04:05Z"}],
    )
    assert led.view().value(alice, "person/city") == "Oslo"
    # Malformed expectations are bad input, not conflicts.
    refused(led, BadInput, led.transact, [add(alice, "person/age", 1)], expect=[{"e": alice}])
    refused(led, BadInput, led.transact, [add(alice, "person/age", 1)], expect={"e": alice})
    refused(
        led,
        SchemaError,
        led.transact,
        [add(alice, "person/age", 1)],
        expect=[{"e": alice, "a": "no/such", "v": 1}],
    )


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "kind", "words"),
    [
        ([add("x", "no/such", 1)], SchemaError, "no/such"),
        ([add("x", "nonamespace", 1)], SchemaError, "nonamespace"),
        ([add("x", "person/age", "ten")], SchemaError, "person/age"),
        ([add("x", "person/born", "not-a-date")], BadInput, "not-a-date"),
        ([add("x", "person/age", 1, valid_from="soon")], BadInput, "soon"),
        ([add("x", "person/age", 1, valid_to="2020-02-30")], BadInput, "2020-02-30"),
        (
            [add("x", "person/age", 1, valid_from="2024-01-01", valid_to="2023-01-01")],
            BadInput,
            "valid_from",
        ),
        ({"op": "add", "e": "x", "a": "person/age", "v": 1}, BadInput, "list"),
        ([], BadInput, "list"),
        ("not ops", BadInput, "list"),
        (["just a string"], BadInput, "op 1"),
        ([{"op": "upsert", "e": "x", "a": "person/age", "v": 1}], BadInput, "upsert"),
        ([{"op": "add", "e": "x", "a": "person/age"}], BadInput, "'v'"),
        ([{"op": "add", "a": "person/age", "v": 1}], BadInput, "'e'"),
        ([{"op": "add", "e": "x", "v": 1}], BadInput, "'a'"),
        ([{"op": "add", "e": "x", "a": 7, "v": 1}], BadInput, "'a'"),
        ([{**add("x", "person/age", 1), "extra": 1}], BadInput, "extra"),
        ([add("x", "person/age", None)], SchemaError, "person/age"),
        ([add("", "person/age", 1)], BadInput, "entity"),
        ([add(12, "person/age", 1)], BadInput, "entity"),
        ([add("#", "person/age", 1)], BadInput, "temp id"),
        ([add("x", "keel.identity/name", "evil")], SchemaError, "keel.identity/name"),
        ([add("x", "db/ident", "person/evil")], SchemaError, "db/ident"),
        # A good op followed by a bad one: the transaction is all or nothing.
        ([add("x", "person/age", 1), add("x", "person/nope", 1)], SchemaError, "person/nope"),
        ([add("x", "person/age", 1), add("y", "person/age", "one")], SchemaError, "person/age"),
    ],
)
def test_bad_input_writes_nothing(led, ops, kind, words):
    err = refused(led, kind, led.transact, ops)
    assert words in str(err)


def test_bad_reason_and_unsigned_ledger(led, target):
    refused(led, BadInput, led.transact, [add("x", "person/age", 1)], reason=5)
    with Ledger.open(target) as unsigned, pytest.raises(KeelError):
        unsigned.transact([add("x", "person/age", 1)])
    # An identity that is not registered cannot sign.
    stranger = Signer.generate("stranger")
    err = refused(led, KeelError, led.transact, [add("x", "person/age", 1)], signer=stranger)
    assert "stranger" in str(err)


# -- time: as-of, valid-at, both ---------------------------------------------------------


def test_as_of_by_id_hash_and_instant(clocked):
    led, clock = clocked
    clock.set("2020-01-01T00:00:00Z")
    t1 = led.transact([add("#a", "person/handle", "alice"), add("#a", "person/city", "Boston")])
    alice = t1.tempids["#a"]
    clock.set("2021-01-01T00:00:00Z")
    t2 = led.transact([add(alice, "person/city", "Denver")])
    clock.set("2022-01-01T00:00:00Z")
    t3 = led.transact([retract(alice, "person/city", "Denver")])

    assert led.view().value(alice, "person/city") is None
    for ref in (t1.tx, str(t1.tx), t1.hash, t1.hash.upper(), "2020-06-01T00:00:00Z", "2020-06-01"):
        assert led.view(as_of=ref).value(alice, "person/city") == "Boston", ref
    for ref in (t2.tx, t2.hash, "2021-01-01T00:00:00Z", "2021-12-31T23:59:59.999999Z"):
        assert led.view(as_of=ref).value(alice, "person/city") == "Denver", ref
    assert led.view(as_of=t3.tx).value(alice, "person/city") is None
    # Before the first transaction that mentions alice, she is not there.
    assert led.view(as_of=t1.tx - 1).get(alice) is None
    assert led.view(as_of="2019-01-01T00:00:00Z").get(alice) is None
    assert led.view(as_of=0).get(alice) is None
    # An as-of view does not change when later transactions arrive.
    frozen = led.view(as_of=t2.tx)
    clock.set("2023-01-01T00:00:00Z")
    led.transact([add(alice, "person/city", "Lima")])
    assert frozen.value(alice, "person/city") == "Denver"
    assert led.view(as_of=t2.hash).value(alice, "person/city") == "Denver"
    # Unknown references.
    with pytest.raises(NotFound):
        led.view(as_of=head(led) + 1)
    with pytest.raises(NotFound):
        led.view(as_of="f" * 64)
    with pytest.raises(BadInput):
        led.view(as_of="last tuesday")
    with pytest.raises(BadInput):
        led.view(valid_at="whenever")


def test_valid_at_and_both_together(clocked):
    led, clock = clocked
    clock.set("2020-01-01T00:00:00Z")
    t1 = led.transact(
        [
            add("#a", "person/handle", "alice"),
            add("#a", "person/city", "Paris", valid_from="2010-01-01", valid_to="2015-01-01"),
            add("#a", "person/city", "Rome", valid_from="2015-01-01"),
        ]
    )
    alice = t1.tempids["#a"]
    assert led.view(valid_at="2009-12-31T23:59:59Z").value(alice, "person/city") is None
    assert led.view(valid_at="2010-01-01T00:00:00Z").value(alice, "person/city") == "Paris"
    assert led.view(valid_at="2014-12-31T23:59:59.999999Z").value(alice, "person/city") == "Paris"
    assert led.view(valid_at="2015-01-01").value(alice, "person/city") == "Rome"
    assert led.view(valid_at=us("2012-06-01T00:00:00Z")).value(alice, "person/city") == "Paris"
    assert led.view().value(alice, "person/city") == "Rome"
    # A handle asserted without valid_from is valid from the transaction time, not before.
    assert led.view(valid_at="2019-12-31").value(alice, "person/handle") is None
    assert led.view(valid_at="2020-01-01").value(alice, "person/handle") == "alice"

    clock.set("2021-01-01T00:00:00Z")
    t2 = led.transact(
        [add(alice, "person/city", "Milan", valid_from="2012-01-01", valid_to="2013-01-01")],
        reason="she spent 2012 in Milan",
    )
    assert led.view(valid_at="2012-06-01").value(alice, "person/city") == "Milan"
    assert led.view(valid_at="2011-06-01").value(alice, "person/city") == "Paris"
    assert led.view(valid_at="2013-06-01").value(alice, "person/city") == "Paris"
    # Both axes: what we knew as of t1 about mid 2012, vs as of t2.
    assert led.view(as_of=t1.tx, valid_at="2012-06-01").value(alice, "person/city") == "Paris"
    assert led.view(as_of=t2.tx, valid_at="2012-06-01").value(alice, "person/city") == "Milan"
    assert (
        led.view(as_of="2020-06-01T00:00:00Z", valid_at="2012-06-01").value(alice, "person/city")
        == "Paris"
    )
    # With as-of alone the view is valid at the as-of moment.
    v = led.view(as_of=t1.tx)
    assert v.valid_at == t1.time
    assert v.as_of == t1.tx


def test_alice_denver_correction(clocked):
    """Alice lived in Denver from 2019 to 2024, recorded in 2026."""
    led, clock = clocked
    clock.set("2019-06-01T00:00:00Z")
    first = led.transact(
        [
            add("#a", "person/handle", "alice"),
            add("#a", "person/city", "Denver", valid_from="2019-05-01T00:00:00Z"),
        ],
        reason="Alice lives in Denver",
    )
    alice = first.tempids["#a"]
    clock.set("2026-03-01T00:00:00Z")
    correction = led.transact(
        [
            add(
                alice,
                "person/city",
                "Denver",
                valid_from="2019-05-01T00:00:00Z",
                valid_to="2024-08-01T00:00:00Z",
            ),
            add(alice, "person/city", "Boston", valid_from="2024-08-01T00:00:00Z"),
        ],
        reason="Alice moved",
    )
    clock.set("2026-11-01T00:00:00Z")
    city = "person/city"
    # The current answer, the March 2023 answer, and what we knew before the correction.
    assert led.view().value(alice, city) == "Boston"
    assert led.view(valid_at="2023-03-15T00:00:00Z").value(alice, city) == "Denver"
    assert led.view(valid_at="2019-04-30T00:00:00Z").value(alice, city) is None
    before = led.view(as_of=first.tx, valid_at="2026-11-01T00:00:00Z")
    assert before.value(alice, city) == "Denver"
    assert led.view(as_of="2026-02-28T00:00:00Z").value(alice, city) == "Denver"
    assert led.view(as_of=correction.tx).value(alice, city) == "Boston"
    # Nothing recorded before was lost.
    assert [
        (r["v"], r["valid_from"], r["valid_to"], r["tx"]) for r in led.view().history(alice, city)
    ] == [
        ("Denver", "2019-05-01T00:00:00Z", None, first.tx),
        ("Denver", "2019-05-01T00:00:00Z", "2024-08-01T00:00:00Z", correction.tx),
        ("Boston", "2024-08-01T00:00:00Z", None, correction.tx),
    ]
    assert [(s["v"], s["valid_from"], s["valid_to"]) for s in led.view().timeline(alice, city)] == [
        ("Denver", "2019-05-01T00:00:00Z", "2024-08-01T00:00:00Z"),
        ("Boston", "2024-08-01T00:00:00Z", None),
    ]
    assert [(s["v"], s["valid_from"], s["valid_to"]) for s in before.timeline(alice, city)] == [
        ("Denver", "2019-05-01T00:00:00Z", None)
    ]


def test_correction_ending_a_fact_by_retraction(clocked):
    """The same correction when we only learn she left Denver in 2024 (no new city)."""
    led, clock = clocked
    clock.set("2019-06-01T00:00:00Z")
    first = led.transact(
        [
            add("#a", "person/handle", "alice"),
            add("#a", "person/city", "Denver", valid_from="2019-05-01"),
        ]
    )
    alice = first.tempids["#a"]
    clock.set("2026-03-01T00:00:00Z")
    led.transact(
        [retract(alice, "person/city", "Denver", valid_from="2024-08-01T00:00:00Z")],
        reason="Alice left Denver in August 2024",
    )
    assert led.view().value(alice, "person/city") is None
    assert led.view(valid_at="2023-03-01").value(alice, "person/city") == "Denver"
    assert led.view(as_of=first.tx, valid_at="2026-03-02").value(alice, "person/city") == "Denver"
    assert [
        (s["v"], s["valid_from"], s["valid_to"]) for s in led.view().timeline(alice, "person/city")
    ] == [("Denver", "2019-05-01T00:00:00Z", "2024-08-01T00:00:00Z")]


def test_history_along_both_axes(clocked, operator):
    led, clock = clocked
    clock.set("2020-01-01T00:00:00Z")
    t1 = led.transact(
        [add("#a", "person/handle", "alice"), add("#a", "person/tags", "x")], reason="hello"
    )
    alice = t1.tempids["#a"]
    clock.set("2021-01-01T00:00:00Z")
    t2 = led.transact(
        [add(alice, "person/city", "Oslo", valid_from="2000-01-01", valid_to="2001-01-01")],
        reason="backfill",
    )
    clock.set("2022-01-01T00:00:00Z")
    t3 = led.transact([retract(alice, "person/tags", "x")], reason="untag")
    rows = led.view().history(alice)
    assert [(r["tx"], r["a"], r["op"], r["v"]) for r in rows] == [
        (t1.tx, "person/handle", "add", "alice"),
        (t1.tx, "person/tags", "add", "x"),
        (t2.tx, "person/city", "add", "Oslo"),
        (t3.tx, "person/tags", "retract", "x"),
    ]
    assert [r["tx_time"] for r in rows] == [
        "2020-01-01T00:00:00Z",
        "2020-01-01T00:00:00Z",
        "2021-01-01T00:00:00Z",
        "2022-01-01T00:00:00Z",
    ]
    assert rows[0]["valid_from"] == "2020-01-01T00:00:00Z" and rows[0]["valid_to"] is None
    assert (rows[2]["valid_from"], rows[2]["valid_to"]) == (
        "2000-01-01T00:00:00Z",
        "2001-01-01T00:00:00Z",
    )
    assert {r["author"] for r in rows} == {"operator"}
    assert [r["reason"] for r in rows] == ["hello", "hello", "backfill", "untag"]
    assert all(r["e"] == alice for r in rows)
    # One attribute only, and as of an earlier transaction.
    assert [r["op"] for r in led.view().history(alice, "person/tags")] == ["add", "retract"]
    assert [r["a"] for r in led.view(as_of=t2.tx).history(alice)] == [
        "person/handle",
        "person/tags",
        "person/city",
    ]
    assert led.view().history("nobody") == []


def test_timeline(clocked):
    led, clock = clocked
    clock.set("2020-01-01T00:00:00Z")
    e = led.transact(
        [
            add("#a", "person/handle", "alice"),
            add("#a", "person/city", "A", valid_from="2001-01-01", valid_to="2003-01-01"),
            add("#a", "person/city", "B", valid_from="2003-01-01", valid_to="2005-01-01"),
            add("#a", "person/tags", "t1", valid_from="2001-01-01", valid_to="2004-01-01"),
            add("#a", "person/tags", "t2", valid_from="2002-01-01"),
        ]
    ).tempids["#a"]
    clock.set("2021-01-01T00:00:00Z")
    t2 = led.transact([add(e, "person/city", "C", valid_from="2002-01-01", valid_to="2004-01-01")])
    segs = [
        (s["v"], s["valid_from"][:4], s["valid_to"][:4])
        for s in led.view().timeline(e, "person/city")
    ]
    assert segs == [("A", "2001", "2002"), ("C", "2002", "2004"), ("B", "2004", "2005")]
    assert all(s["tx"] in (t2.tx, t2.tx - 1) for s in led.view().timeline(e, "person/city"))
    before = led.view(as_of=t2.tx - 1).timeline(e, "person/city")
    assert [(s["v"], s["valid_from"][:4], s["valid_to"][:4]) for s in before] == [
        ("A", "2001", "2003"),
        ("B", "2003", "2005"),
    ]
    tags = led.view().timeline(e, "person/tags")
    assert sorted((s["v"], s["valid_from"][:4], (s["valid_to"] or "open")[:4]) for s in tags) == [
        ("t1", "2001", "2004"),
        ("t2", "2002", "open"),
    ]
    assert led.view().timeline("nobody", "person/city") == []
    with pytest.raises(SchemaError):
        led.view().timeline(e, "no/such")


# -- find and refs -----------------------------------------------------------------------


def test_find_and_paging(led):
    n = 310
    ops = []
    for i in range(n):
        ops += [add(f"#i{i}", "item/kind", "widget"), add(f"#i{i}", "item/n", i)]
    result = led.transact(ops)
    ids = sorted(result.tempids.values())
    assert len(ids) == n
    view = led.view()
    assert view.find("item/kind", "widget") == ids
    assert view.find("item/kind") == ids
    assert view.find("item/n", 7) == [result.tempids["#i7"]]
    assert view.find("item/kind", "gadget") == []
    # Paging: limit + after walks the whole set exactly once.
    pages, after = [], ""
    while True:
        page = view.find("item/kind", "widget", limit=100, after=after)
        if not page:
            break
        assert len(page) <= 100
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [100, 100, 100, 10]
    assert [e for p in pages for e in p] == ids
    assert view.find("item/kind", limit=5, after=ids[-3]) == ids[-2:]
    # Changed values leave the old value's result and reach the new one's.
    moved = ids[::50]
    led.transact([add(e, "item/kind", "gadget") for e in moved])
    led.transact([retract(ids[1], "item/kind", "widget")])
    now = led.view()
    assert now.find("item/kind", "gadget") == moved
    assert now.find("item/kind", "widget") == [e for e in ids if e not in moved and e != ids[1]]
    assert ids[1] not in now.find("item/kind")
    assert len(now.find("item/kind")) == n - 1
    # The old view still answers the old way.
    assert view.find("item/kind", "widget") == ids
    with pytest.raises(SchemaError):
        now.find("no/such", 1)
    with pytest.raises(BadInput):
        now.find("item/n", "seven")


def test_refs(led):
    alice = person(led, "alice")
    bob = person(led, "bob", manager=alice)
    task = led.transact([add("#t", "task/title", "plan"), add("#t", "task/owner", alice)]).tempids[
        "#t"
    ]
    led.transact([add(bob, "person/friends", alice)])
    assert sorted(led.view().refs(alice)) == sorted(
        [(bob, "person/manager"), (bob, "person/friends"), (task, "task/owner")]
    )
    assert led.view().refs(bob) == []
    before = led.view()
    led.transact([retract(task, "task/owner", alice), retract(bob, "person/friends", alice)])
    assert led.view().refs(alice) == [(bob, "person/manager")]
    # Reassigning a cardinality-one ref removes the old referrer too.
    carol = person(led, "carol")
    led.transact([add(bob, "person/manager", carol)])
    assert led.view().refs(alice) == []
    assert led.view().refs(carol) == [(bob, "person/manager")]
    assert len(before.refs(alice)) == 3


# -- schema ------------------------------------------------------------------------------


def test_schema_is_forward_only(led):
    h = head(led)
    assert led.declare(SCHEMA) is None
    assert led.declare([SCHEMA[2]]) is None
    assert head(led) == h
    assert led.schema["person/city"].type == "string"
    assert led.schema["person/handle"].unique == "identity"
    assert led.schema["person/tags"].many
    city = {"attribute": "person/city", "type": "string"}
    refused(led, SchemaError, led.declare, [{**city, "type": "int"}])
    refused(led, SchemaError, led.declare, [{**city, "unique": "value"}])
    refused(led, SchemaError, led.declare, [{**SCHEMA[3], "cardinality": "one"}])
    refused(led, SchemaError, led.declare, [{"attribute": "bad name", "type": "string"}])
    refused(led, SchemaError, led.declare, [{"attribute": "x/y", "type": "decimal"}])
    refused(led, SchemaError, led.declare, [{"attribute": "db/evil", "type": "string"}])
    refused(led, SchemaError, led.declare, [{"attribute": "keel.x/y", "type": "string"}])
    refused(led, SchemaError, led.declare, [{"attribute": "x/y", "type": "int", "fulltext": True}])
    refused(
        led,
        SchemaError,
        led.declare,
        [{"attribute": "x/y", "type": "int", "cardinality": "many", "unique": "value"}],
    )
    refused(led, SchemaError, led.declare, [{"attribute": "x/y", "type": "int", "typo": 1}])
    refused(led, SchemaError, led.declare, [])
    # A bad declaration next to a good one: neither is written.
    refused(
        led,
        SchemaError,
        led.declare,
        [{"attribute": "new/ok", "type": "int"}, {**city, "type": "bool"}],
    )
    assert "new/ok" not in led.schema
    # one -> many is allowed, and old values read as a list.
    alice = person(led, "alice", city="Boston")
    widened = led.declare([{**city, "cardinality": "many"}])
    assert widened is not None and widened.tx == head(led)
    assert led.schema["person/city"].many
    led.transact([add(alice, "person/city", "Denver")])
    assert sorted(led.view().value(alice, "person/city")) == ["Boston", "Denver"]
    # A doc change is a forward change too.
    assert led.declare([{**city, "cardinality": "many", "doc": "cities"}]) is not None
    assert led.schema["person/city"].doc == "cities"
    assert led.declare([{**city, "cardinality": "many", "doc": "cities"}]) is None
    # The schema lives in the ledger: a fresh connection sees it.
    assert led.verify().ok


def test_schema_is_read_from_the_ledger(led, target, operator):
    with Ledger.open(target, signer=operator) as other:
        assert other.schema["person/tags"].many
        other.declare([{"attribute": "late/attr", "type": "json"}])
    led.transact([add("x", "late/attr", {"k": 1})])
    assert led.view().value("x", "late/attr") == {"k": 1}


# -- clock -------------------------------------------------------------------------------


def test_injected_clock(clocked):
    led, clock = clocked
    clock.set("2024-05-06T07:08:09.123456Z")
    result = led.transact([add("#a", "person/handle", "alice")], reason="clocked")
    assert result.time == us("2024-05-06T07:08:09.123456Z")
    entry = next(iter(led.log(since=result.tx - 1)))
    assert entry["time"] == "2024-05-06T07:08:09.123456Z"
    (row,) = led.view().history(result.tempids["#a"])
    assert row["valid_from"] == "2024-05-06T07:08:09.123456Z"
    assert row["tx_time"] == "2024-05-06T07:08:09.123456Z"
    # A clock that goes backwards never makes transaction time go backwards.
    clock.set("2024-01-01T00:00:00Z")
    back = led.transact([add(result.tempids["#a"], "person/age", 1)])
    assert back.time == result.time
    # ...and the current view still shows what was just written.
    alice = result.tempids["#a"]
    assert led.view().get(alice) == {"person/handle": "alice", "person/age": 1}
    # With the clock ahead, the current view reads at the clock's now.
    clock.set("2030-01-01T00:00:00Z")
    assert led.view().valid_at == us("2030-01-01T00:00:00Z")
    led.transact([add(alice, "person/city", "Oslo", valid_from="2029-01-01")])
    assert led.view().value(alice, "person/city") == "Oslo"
    clock.set("2028-06-01T00:00:00Z")
    assert led.view(valid_at=clock()).value(alice, "person/city") is None
    assert led.verify().ok
    times = [e["time"] for e in led.log()]
    assert times == sorted(times)


def test_everything_verifies_and_log_chains(led):
    alice = person(led, "alice", city="Boston")
    led.transact([add(alice, "person/avatar", b"\x01" * 5000)])
    entries = list(led.log())
    assert [e["tx"] for e in entries] == list(range(1, len(entries) + 1))
    for prev, cur in itertools.pairwise(entries):
        assert cur["prev"] == prev["hash"]
    assert entries[0]["prev"] == "0" * 64
    report = led.verify()
    assert report.ok and report.transactions == len(entries) and report.first_bad is None
