"""Reading history without SQL: `Ledger.head`, the typed reader `Ledger.tx_range`, and
`Ledger.committed` built on it; and the named rows the stores hand up.

Every test runs on a real SQLite file and a real PostgreSQL schema (conftest `ledger`).
"""

from __future__ import annotations

import pytest

from keel.ledger import DatomRow, Head, Ledger, TxRecord, TxRow
from keel.ledger.encoding import ZERO_HASH
from keel.ledger.instants import SINCE_ALWAYS
from keel.ledger.stores.rows import EntityFact, Fact

SCHEMA = [
    {"attribute": "doc/title", "type": "string"},
    {"attribute": "doc/body", "type": "string"},
    {"attribute": "doc/tags", "type": "string", "cardinality": "many"},
]


@pytest.fixture
def led(ledger):
    ledger.declare(SCHEMA)
    return ledger


def test_head_names_the_newest_transaction_and_is_zero_for_an_empty_ledger(target, operator):
    with Ledger.open(target, signer=operator) as empty:
        assert empty.head() == Head(0, ZERO_HASH, SINCE_ALWAYS)
        assert empty.store.head() is None
        result = empty.register_identity("operator", operator.public_key, "operator")
        head = empty.head()
        assert (head.id, head.hash.hex(), head.time) == (result.tx, result.hash, result.time)
        assert empty.store.head() == head and empty.store.head()[0] == head.id


def test_tx_range_yields_each_transaction_with_its_datoms_in_order(led):
    first = led.head().id
    a = led.transact([{"e": "d1", "a": "doc/title", "v": "one"}], reason="a")
    led.create_branch("draft")
    b = led.transact(
        [
            {"e": "d2", "a": "doc/title", "v": "two"},
            {"e": "d2", "a": "doc/tags", "v": "x"},
            {"e": "d2", "a": "doc/tags", "v": "y"},
        ],
        branch="draft",
        reason="b",
    )
    records = list(led.tx_range(first))
    assert [r.tx.id for r in records] == list(range(first + 1, b.tx + 1))
    assert all(isinstance(r, TxRecord) and isinstance(r.tx, TxRow) for r in records)
    by_id = {r.tx.id: r for r in records}
    assert by_id[a.tx].tx.reason == "a" and by_id[a.tx].tx.hash.hex() == a.hash
    on_branch = by_id[b.tx]
    assert on_branch.tx.branch == led.branch("draft").id and on_branch.tx.n == 3
    assert [(d.idx, d.e, d.a) for d in on_branch.datoms] == [
        (0, "d2", "doc/title"),
        (1, "d2", "doc/tags"),
        (2, "d2", "doc/tags"),
    ]
    assert all(isinstance(d, DatomRow) and d.tx == b.tx for d in on_branch.datoms)
    assert [r.tx.id for r in led.tx_range(a.tx - 1, a.tx)] == [a.tx]
    assert list(led.tx_range(a.tx, a.tx)) == []
    assert list(led.tx_range(b.tx)) == []
    assert [r.tx.id for r in led.tx_range()] == list(range(1, b.tx + 1))


def test_tx_range_reads_past_its_batch_size(led, monkeypatch):
    from keel.ledger import history

    monkeypatch.setattr(history, "BATCH", 3)
    start = led.head().id
    for i in range(8):
        led.transact([{"e": f"n{i}", "a": "doc/title", "v": str(i)}])
    records = list(led.tx_range(start))
    assert [r.tx.id for r in records] == list(range(start + 1, start + 9))
    assert all(len(r.datoms) == 1 for r in records)


def test_committed_decodes_main_branch_datoms_only(led):
    start = led.head().id
    big = "a long body " * 200
    one = led.transact(
        [{"e": "d1", "a": "doc/title", "v": "one"}, {"e": "d1", "a": "doc/body", "v": big}]
    )
    led.create_branch("draft")
    led.transact([{"e": "d9", "a": "doc/title", "v": "draft only"}], branch="draft")
    two = led.transact([{"op": "retract", "e": "d1", "a": "doc/title", "v": "one"}])
    datoms, upto = led.committed(start)
    assert upto == two.tx
    mine = [(d["tx"], d["e"], d["a"], d["v"], d["op"]) for d in datoms if d["e"].startswith("d")]
    assert mine == [
        (one.tx, "d1", "doc/title", "one", "add"),
        (one.tx, "d1", "doc/body", big, "add"),
        (two.tx, "d1", "doc/title", "one", "retract"),
    ]
    first = datoms[0]
    assert first["tx_time"] == one.time and first["author"] == "operator"
    assert set(first) == {"tx", "e", "a", "v", "op", "valid_from", "valid_to", "tx_time", "author"}
    assert led.committed(start, limit=1) == ([d for d in datoms if d["tx"] == one.tx], one.tx)
    assert led.committed(two.tx) == ([], two.tx)


def test_store_rows_are_named_and_still_index_like_tuples(led):
    r = led.transact([{"e": "d1", "a": "doc/title", "v": "one"}])
    (fact,) = led.store.entity_datoms("d1", [(0, r.tx)])
    assert isinstance(fact, Fact)
    assert (fact.a, bytes(fact.v), fact.tx) == ("doc/title", b"one", r.tx)
    assert fact[0] == fact.a and fact[4] == fact.op and fact[7] == fact.tx
    (row,) = led.store.tx_rows(r.tx, r.tx)
    assert row.id == row[0] == r.tx and row.hash.hex() == r.hash
    facts = led.store.attr_datoms(("doc/title",), None)
    assert all(isinstance(f, EntityFact) and f.fact.a == "doc/title" for f in facts)
    cp = led.checkpoint()
    assert led.store.checkpoints()[-1].size == cp["size"]
