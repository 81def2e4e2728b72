"""The event bus on both stores: derived events, durable cursors, retries, dead letters."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from conftest import wait_for
from keel.bus import Bus, EventSource, Position
from keel.bus.subscriptions import load_cursor
from keel.ledger import Ledger

SCHEMA = [
    {"attribute": "task/title", "type": "string"},
    {"attribute": "task/status", "type": "string"},
    {"attribute": "person/name", "type": "string"},
]


@pytest.fixture
def opener(ledger, target, operator):
    ledger.declare(SCHEMA)

    def open_ledger() -> Ledger:
        return Ledger.open(target, signer=operator)

    return open_ledger


def test_events_are_derived_from_transactions(ledger, opener):
    r = ledger.transact(
        [
            {"e": "#t", "a": "task/title", "v": "plumber"},
            {"e": "#t", "a": "task/status", "v": "open"},
            {"e": "#p", "a": "person/name", "v": "Alice"},
        ],
        reason="capture",
    )
    events, reached = EventSource(ledger).read(Position(r.tx - 1, 2**31 - 1))
    assert [e.type for e in events] == ["tx", "person", "task"]
    tx_event, person, task = events
    assert tx_event.reason == "capture" and tx_event.tx == r.tx
    assert task.entity == r.tempids["#t"] and task.attributes == ("task/title", "task/status")
    assert person.entity == r.tempids["#p"]
    assert reached.tx == r.tx
    # Reading from the middle of a transaction resumes after that event.
    rest, _ = EventSource(ledger).read(person.position)
    assert [e.id for e in rest] == [task.id]


def test_subscription_delivers_in_order_and_persists_its_cursor(ledger, opener):
    got: list[str] = []
    bus = Bus(opener, poll=0.05, flush_every=0.05)
    bus.subscribe("tasks", lambda ev: got.append(ev.id), types=["task"])
    ledger.on_commit(bus.notify)
    bus.start()
    try:
        ids = [
            ledger.transact([{"e": f"t{i}", "a": "task/title", "v": str(i)}]).tx for i in range(30)
        ]
        assert wait_for(lambda: len(got) == 30)
    finally:
        bus.stop()
    assert got == [f"{tx}.1" for tx in ids]
    # The cursor is in the ledger, at or beyond the last delivered event.
    assert load_cursor(ledger, "tasks") >= Position(ids[-1], 1)
    # A subscriber that was down catches up from its cursor, and only with what is new.
    more = [ledger.transact([{"e": f"u{i}", "a": "task/title", "v": str(i)}]).tx for i in range(5)]
    again: list[str] = []
    bus2 = Bus(opener, poll=0.05, flush_every=0.05)
    bus2.subscribe("tasks", lambda ev: again.append(ev.id), types=["task"])
    bus2.start()
    try:
        assert wait_for(lambda: len(again) == 5)
        time.sleep(0.2)
    finally:
        bus2.stop()
    assert again == [f"{tx}.1" for tx in more]


def test_filters_by_type(ledger, opener):
    seen: list[str] = []
    bus = Bus(opener, poll=0.05)
    bus.subscribe("people", lambda ev: seen.append(ev.type), types=["person"])
    bus.start()
    try:
        ledger.transact([{"e": "t", "a": "task/title", "v": "x"}])
        ledger.transact([{"e": "p", "a": "person/name", "v": "Bo"}])
        bus.notify()
        assert wait_for(lambda: seen == ["person"])
    finally:
        bus.stop()


def test_a_failing_handler_is_retried_with_backoff(ledger, opener):
    attempts: list[float] = []

    def flaky(ev):
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    bus = Bus(opener, poll=0.05)
    sub = bus.subscribe("flaky", flaky, types=["task"], backoff=0.05)
    bus.start()
    try:
        ledger.transact([{"e": "t", "a": "task/title", "v": "x"}])
        bus.notify()
        assert wait_for(lambda: sub.delivered == 1)
    finally:
        bus.stop()
    assert len(attempts) == 3 and sub.dead == 0
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[1] > gaps[0] * 1.5  # exponential backoff
    assert not ledger.view().find("keel.dead/event")


def test_dead_letter_after_max_failures_and_delivery_moves_on(ledger, opener):
    good: list[str] = []

    def picky(ev):
        if ev.entity == "bad":
            raise ValueError("cannot handle bad")
        good.append(ev.entity)

    bus = Bus(opener, poll=0.05)
    sub = bus.subscribe("picky", picky, types=["task"], max_failures=3, backoff=0.01)
    bus.start()
    try:
        ledger.transact([{"e": "bad", "a": "task/title", "v": "x"}])
        ledger.transact([{"e": "fine", "a": "task/title", "v": "y"}])
        bus.notify()
        assert wait_for(lambda: good == ["fine"])
    finally:
        bus.stop()
    assert sub.dead == 1
    (dead,) = ledger.view().find("keel.dead/subscription", "picky")
    values = ledger.view().get(dead)
    assert values["keel.dead/attempts"] == 3
    assert values["keel.dead/state"] == "open"
    assert "cannot handle bad" in values["keel.dead/error"]
    status = {s["name"]: s for s in bus.status(ledger.store.head()[0])}
    assert status["picky"]["dead"] == 1


def test_idle_subscriptions_write_nothing(ledger, opener):
    """Cursor writes are quiet: an idle bus must not keep the ledger growing."""
    bus = Bus(opener, poll=0.02, flush_every=0.02)
    for name in ("a", "b"):
        bus.subscribe(name, lambda ev: None)
    bus.start()
    try:
        ledger.transact([{"e": "t", "a": "task/title", "v": "x"}])
        bus.notify()
        time.sleep(0.5)
        head = ledger.store.head()[0]
        time.sleep(0.5)
        assert ledger.store.head()[0] == head
    finally:
        bus.stop()


def test_concurrent_subscribers_each_see_everything(ledger, opener):
    counts = {"one": 0, "two": 0}
    lock = threading.Lock()

    def counter(name):
        def handle(ev):
            with lock:
                counts[name] += 1

        return handle

    bus = Bus(opener, poll=0.02)
    for name in counts:
        bus.subscribe(name, counter(name), types=["task"])
    ledger.on_commit(bus.notify)
    bus.start()
    try:
        for i in range(20):
            ledger.transact([{"e": f"t{j}", "a": "task/title", "v": str(i)} for j in range(5)])
        assert wait_for(lambda: counts == {"one": 100, "two": 100})
    finally:
        bus.stop()


def test_two_processes_on_one_cursor_keep_running(ledger, opener):
    """Two buses (two nodes, say) that share a subscription's cursor: a cursor write that
    finds the other's conflicts, takes the further cursor and goes on — the thread never
    dies of it, and between them every event is delivered (node-local state has a
    subscription per node instead: the recall index's)."""
    got: dict[str, list[str]] = {"a": [], "b": []}
    buses = []
    for name in ("a", "b"):
        bus = Bus(opener, poll=0.02, flush_every=0.0, flush_events=1)
        bus.subscribe("shared", lambda ev, name=name: got[name].append(ev.id), types=["task"])
        ledger.on_commit(bus.notify)
        buses.append(bus)
    for bus in buses:
        bus.start()
    try:
        expected = {
            f"{ledger.transact([{'e': f't{i}', 'a': 'task/title', 'v': f'task {i}'}]).tx}.1"
            for i in range(30)
        }
        assert wait_for(lambda: expected <= set(got["a"]) | set(got["b"]), timeout=30), got
        for bus in buses:
            (row,) = bus.status(ledger.head().id)
            assert row["stopped"] is None
            assert bus.subscriptions["shared"].thread.is_alive()
    finally:
        for bus in buses:
            bus.stop()


def test_a_subscription_that_cannot_run_says_so(ledger, opener):
    """A thread that cannot run at all (here: its connection cannot be opened) ends with
    the reason in status — which the daemon's health turns into a `thread` finding."""
    from keel.health.checks import examine

    bus = Bus(opener, poll=0.02)
    bus.subscribe("doomed", lambda ev: None)
    bus.open_ledger = lambda: (_ for _ in ()).throw(OSError("the server went away"))
    bus.start()
    try:
        sub = bus.subscriptions["doomed"]
        assert wait_for(lambda: sub.stopped is not None, timeout=10)
        assert "the server went away" in bus.status(0)[0]["stopped"]
        report = examine(ledger, bus=bus)
        (found,) = [f for f in report.findings if f.check == "thread"]
        assert found.subject == "doomed" and "the server went away" in found.message
    finally:
        bus.stop()
