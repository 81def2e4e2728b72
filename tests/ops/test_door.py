"""The door: every operation is defined once and every call passes it with the caller's
identity; until governance, a client may only read memory, recall and write memory other
than canon."""

from __future__ import annotations

import typing

import pydantic
import pytest

from conftest import client_may
from keel.errors import BadInput, Forbidden, ReadOnly, Unauthorized
from keel.ops import registry
from keel.ops.door import Caller, Door


def _models(tp, seen):
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        if tp in seen:
            return
        seen.add(tp)
        for f in tp.model_fields.values():
            _models(f.annotation, seen)
    for arg in typing.get_args(tp):
        _models(arg, seen)


def test_every_operation_is_defined_once_with_typed_shapes():
    ops = registry.load()
    assert len(ops) >= 60
    seen: set = set()
    for name, op in ops.items():
        assert name == op.name and op.summary, name
        assert op.input.model_config.get("extra") == "forbid", name
        assert all(isinstance(c, str) and "." in c for c in op.capabilities), name
        op.input.model_json_schema()
        op.output_adapter.json_schema(mode="serialization")
        _models(op.input, seen)
        _models(op.output, seen)
    names = [m.__name__ for m in seen]
    assert len(names) == len(set(names)), "model names are OpenAPI component names: unique"


def test_a_client_is_refused_every_capability_but_memory(keel_home, door, client):
    """Each operation that needs anything but memory reads, recall and non-canon memory
    writes is refused to a client, naming the capability — with or without arguments."""
    ops = registry.load()
    refused = 0
    for op in ops.values():
        if client_may(op):
            continue
        with pytest.raises(Forbidden) as caught:
            door.call(op.name, {}, Caller(client, "test"))
        assert caught.value.operation == op.name
        assert caught.value.capability in " or ".join(op.capabilities)
        assert caught.value.status == 403 and caught.value.exit_code == 4
        refused += 1
    assert refused >= 40
    # The operator is let through the same door (here to the validation step).
    with pytest.raises(BadInput):
        door.call("cadence.add", {}, Caller(keel_home.operator))


def test_the_exact_capability_is_named(door, client):
    who = Caller(client)
    with pytest.raises(Forbidden, match=r"cadence\.command") as caught:
        door.call("cadence.add", {"name": "x", "schedule": "every 1h", "run": "id"}, who)
    assert caught.value.capability == "cadence.command"
    with pytest.raises(Forbidden) as caught:
        door.call("cadence.add", {"name": "x", "schedule": "every 1h", "kind": "probe"}, who)
    assert caught.value.capability == "cadence.write"
    with pytest.raises(Forbidden) as caught:
        door.call("memory.canon.set", {"name": "style", "text": "Short."}, who)
    assert caught.value.capability == "canon.write"
    assert door.call("memory.capture", {"text": "from a client"}, who).tx > 0


def test_a_stranger_is_nobody(door):
    with pytest.raises(Unauthorized):
        door.call("memory.working", {}, Caller("nobody"))
    with pytest.raises(Unauthorized):
        door.identify("operator~not-a-token")
    with pytest.raises(Unauthorized):
        door.identify(None)
    with pytest.raises(Unauthorized):
        door.admit("nobody")
    assert door.admit(door.services.home.operator) == door.services.home.operator
    # A home whose operator token was deleted answers every token with 401, not an error.
    door.services.home.token_path.unlink()
    with pytest.raises(Unauthorized):
        door.identify("some-token")


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        ({"entity": "x", "as_of": "99999999999999999999"}, "64 bits"),
        ({"entity": "x", "as_of": 2**70}, "less than or equal"),
        ({"entity": "x", "surprise": 1}, "no argument 'surprise'"),
        ({}, "entity is required"),
        ({"entity": "x\ud800"}, "not valid Unicode"),
        ({"entity": [[[[]]]] * 1 + [_ for _ in range(0)]}, "lookup ref"),
    ],
)
def test_bad_arguments_are_one_sentence(keel_home, door, arguments, fragment):
    with pytest.raises(BadInput) as caught:
        door.call("ledger.get", arguments, Caller(keel_home.operator))
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_deep_nesting_is_refused_before_anything_reads_it(keel_home, door):
    deep: object = "x"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(BadInput, match="deeper than"):
        door.call(
            "ledger.transact",
            {"ops": [{"op": "add", "e": "e1", "a": "mem/text", "v": deep}]},
            Caller(keel_home.operator),
        )


def test_read_only_refuses_writes_and_keeps_reads(keel_home, door):
    me = Caller(keel_home.operator)
    keel_home.set_integrity_problem("transaction 3 is bad: its contents do not match its hash", 3)
    with pytest.raises(ReadOnly, match="transaction 3 is bad") as caught:
        door.call("memory.capture", {"text": "x"}, me)
    assert caught.value.exit_code == 6 and caught.value.status == 503
    assert door.call("memory.working", {}, me) == []
    report = door.call("ledger.verify", {}, me)  # the ledger is fine: the mark is lifted
    assert report.ok and keel_home.integrity_problem() is None
    assert door.call("memory.capture", {"text": "x"}, me).tx > 0


def test_an_observation_is_one_transaction(keel_home, door, services):
    """On a fresh home, observing a new entity with a new fact is one transaction: when the
    observation is refused, neither the entity nor the fact's attribute is left behind."""
    me = Caller(keel_home.operator)
    ledger = services.ledger()
    before = ledger.store.head()[0]
    too_long = "x" * (4 * 1024 * 1024 + 1)
    with pytest.raises(BadInput, match="at most"):
        door.call(
            "memory.observe",
            {"entity": "Alice", "text": too_long, "fact": "lives_in", "value": "Berlin"},
            me,
        )
    assert ledger.store.head()[0] == before
    assert "fact/lives_in" not in ledger.schema
    assert ledger.view().get("entity:alice") is None
    done = door.call(
        "memory.observe",
        {"entity": "Alice", "text": "moved", "fact": "lives_in", "value": "Berlin"},
        me,
    )
    assert done.tx == before + 1 and done.entity == "entity:alice"


def test_constructing_writes_nothing(keel_home, services):
    import keel

    ledger = services.ledger()
    before = ledger.store.head()[0]
    with keel.open(keel_home.path) as k:
        assert k.caller == keel_home.operator
        k.memory.working()
        from keel.memory import Memory, Recall

        Memory(ledger)
        Recall(ledger, embedder="none").close()
    assert ledger.store.head()[0] == before


def test_the_door_is_the_facades_too(keel_home, client):
    import keel

    with keel.open(keel_home.path, identity=client) as k:
        with pytest.raises(Forbidden, match=r"schema\.write"):
            k.schema.add([{"attribute": "x/y", "type": "string"}])
        assert k.memory.remember("a note").id


def test_door_keeps_no_state_between_calls(keel_home, services):
    a, b = Door(services), Door(services)
    me = Caller(keel_home.operator)
    assert (
        a.call("memory.capture", {"text": "one"}, me).tx + 1
        == b.call("memory.capture", {"text": "two"}, me).tx
    )


def test_an_agent_speaks_for_itself(keel_home, door, client):
    """A client's episodes and decisions carry its own name; only the operator records one
    in another's; a session recorded by one agent is not replaced by another."""
    from keel.errors import Conflict, Refused

    who = Caller(client)
    mine = door.call("memory.episode.add", {"text": "user: hi", "session": "s-9"}, who)
    view = door.services.ledger().view
    assert view().value(mine.id, "episode/agent") == client
    with pytest.raises(Refused, match="only the operator"):
        door.call("memory.episode.add", {"text": "x", "agent": "codex"}, who)
    with pytest.raises(Refused, match="only the operator"):
        door.call("memory.decide", {"title": "T", "why": "W", "by": "operator"}, who)
    decided = door.call("memory.decide", {"title": "T", "why": "W"}, who)
    assert view().value(decided.id, "decision/by") == client
    operator = Caller(keel_home.operator)
    again = {"text": "user: hello", "session": "s-9", "agent": "codex"}
    with pytest.raises(Conflict, match=f"recorded by '{client}'"):
        door.call("memory.episode.add", again, operator)
    door.call("memory.episode.add", {**again, "agent": client}, operator)  # the operator may


def test_an_identity_that_cannot_be_registered_leaves_no_key(keel_home, door, monkeypatch):
    from keel.errors import Conflict
    from keel.ledger import Ledger

    def refuse(*args, **kwargs):
        raise Conflict("the ledger moved on")

    monkeypatch.setattr(Ledger, "register_identity", refuse)
    with pytest.raises(Conflict):
        door.call("identity.add", {"name": "late"}, Caller(keel_home.operator))
    assert not keel_home.key_path("late").exists()
