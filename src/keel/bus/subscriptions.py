"""Durable named subscriptions: at-least-once delivery to in-process handlers.

A subscription's cursor lives in the ledger (`keel.sub/*`). It is written in batches, at
most every `flush_every` seconds or `flush_events` events and at shutdown, so a crash
redelivers at most the events since the last flush — never skips one. A handler that keeps
failing is retried with exponential backoff; after `max_failures` attempts the event is
dead-lettered (`keel.dead/*`, visible in status and health) and delivery moves on.

A subscription's thread never dies of a passing failure: a cursor write that conflicts
(another process moved the cursor) takes the ledger's cursor and goes on, and any other
error (a lost connection) is retried with backoff, shown meanwhile in status. Only a thread
that cannot run at all stops — and says why (`stopped`, a health finding).
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ledger import Conflict, Ledger
from .events import END_OF_TX, START, Event, EventSource, Position

SCHEMA = [
    {
        "attribute": "keel.sub/name",
        "type": "string",
        "unique": "identity",
        "doc": "a durable subscription's name",
    },
    {"attribute": "keel.sub/types", "type": "json", "doc": "event types it receives; [] = all"},
    {
        "attribute": "keel.sub/cursor",
        "type": "string",
        "doc": "position (tx.n) up to which events are handled",
    },
    {"attribute": "keel.sub/max-failures", "type": "int", "doc": "attempts before dead-letter"},
    {"attribute": "keel.dead/subscription", "type": "string", "doc": "whose delivery failed"},
    {"attribute": "keel.dead/event", "type": "string", "doc": "the event id (tx.n)"},
    {"attribute": "keel.dead/type", "type": "string", "doc": "the event type"},
    {"attribute": "keel.dead/error", "type": "string", "doc": "the last error"},
    {"attribute": "keel.dead/attempts", "type": "int", "doc": "how often it was tried"},
    {"attribute": "keel.dead/state", "type": "string", "doc": "open or resolved"},
]

Handler = Callable[[Event], None]


def sub_entity(name: str) -> str:
    return f"sub:{name}"


@dataclass
class Subscription:
    name: str
    handler: Handler
    types: frozenset[str] = frozenset()
    max_failures: int = 5
    backoff: float = 0.05
    max_backoff: float = 5.0
    # live state, for status
    cursor: Position = START
    delivered: int = 0
    dead: int = 0
    failing: str | None = None
    stopped: str | None = None  # why its thread ended, when it ended on an error
    thread: threading.Thread | None = field(default=None, repr=False)

    def wants(self, event: Event) -> bool:
        return not self.types or event.type in self.types


def ensure_schema(ledger: Ledger) -> None:
    ledger.declare(SCHEMA, system=True)


def load_cursor(ledger: Ledger, name: str) -> Position:
    value = ledger.view().value(sub_entity(name), "keel.sub/cursor")
    return Position.parse(value)


class Bus:
    """Runs each subscription in a thread of its own, with a ledger connection of its own."""

    def __init__(
        self,
        open_ledger: Callable[[], Ledger],
        poll: float = 0.2,
        flush_every: float = 0.5,
        flush_events: int = 2000,
    ):
        self.open_ledger = open_ledger
        self.poll = poll
        self.flush_every = flush_every
        self.flush_events = flush_events
        self.subscriptions: dict[str, Subscription] = {}
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._started = False

    # -- registration -------------------------------------------------------------------
    def subscribe(
        self,
        name: str,
        handler: Handler,
        types: list[str] | None = None,
        max_failures: int = 5,
        backoff: float = 0.05,
    ) -> Subscription:
        """Register a durable subscription (created in the ledger on first use)."""
        sub = Subscription(name, handler, frozenset(types or ()), max_failures, backoff)
        with self.open_ledger() as ledger:
            ensure_schema(ledger)
            e = sub_entity(name)
            current = ledger.view().get(e) or {}
            wanted = {
                "keel.sub/name": name,
                "keel.sub/types": sorted(sub.types),
                "keel.sub/max-failures": max_failures,
            }
            ops = [
                {"op": "add", "e": e, "a": a, "v": v}
                for a, v in wanted.items()
                if current.get(a) != v
            ]
            if "keel.sub/cursor" not in current:
                ops.append({"op": "add", "e": e, "a": "keel.sub/cursor", "v": str(START)})
            if ops:
                ledger.transact(ops, reason=f"subscription {name}")
            sub.cursor = Position.parse(current.get("keel.sub/cursor"))
        self.subscriptions[name] = sub
        if self._started:
            self._launch(sub)
        return sub

    # -- running ------------------------------------------------------------------------
    def start(self) -> None:
        self._started = True
        for sub in self.subscriptions.values():
            self._launch(sub)

    def _launch(self, sub: Subscription) -> None:
        sub.thread = threading.Thread(
            target=self._run, args=(sub,), name=f"bus:{sub.name}", daemon=True
        )
        sub.thread.start()

    def notify(self, *_: object) -> None:
        """Wake the subscriptions: something was committed."""
        with self._wake:
            self._wake.notify_all()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.notify()
        for sub in self.subscriptions.values():
            if sub.thread is not None:
                sub.thread.join(timeout)
        self._started = False
        self._stop = threading.Event()

    def _run(self, sub: Subscription) -> None:
        try:
            self._follow(sub)
        except Exception as exc:  # it cannot run at all: status and health say so
            sub.stopped = "".join(traceback.format_exception_only(exc)).strip()[:2000]
            traceback.print_exc()

    def _follow(self, sub: Subscription) -> None:
        with self.open_ledger() as ledger:
            source = EventSource(ledger)
            sub.cursor = load_cursor(ledger, sub.name)
            flushed, pending, last_flush = sub.cursor, 0, time.monotonic()
            failures = 0
            while not self._stop.is_set():
                try:
                    events, reached = source.read(sub.cursor)
                    for event in events:
                        if self._stop.is_set():
                            break
                        if sub.wants(event):
                            self._deliver(ledger, sub, event)
                        sub.cursor = event.position
                        pending += 1
                    else:
                        sub.cursor = max(sub.cursor, reached)
                    # Only progress over real events is worth a cursor write: moving past
                    # quiet transactions (other cursors' writes) redelivers nothing.
                    due = time.monotonic() - last_flush >= self.flush_every
                    if pending and (pending >= self.flush_events or due):
                        self._flush(ledger, sub, flushed)
                        flushed, pending, last_flush = sub.cursor, 0, time.monotonic()
                    if failures:
                        failures, sub.failing = 0, None
                    if not events and reached.tx >= source.head():
                        with self._wake:
                            self._wake.wait(self.poll)
                except Conflict:
                    # Another process moved this cursor: go on from the further of the two.
                    flushed = load_cursor(ledger, sub.name)
                    sub.cursor = max(sub.cursor, flushed)
                except Exception as exc:  # a lost connection, say: retried, never fatal
                    failures += 1
                    sub.failing = "".join(traceback.format_exception_only(exc)).strip()[:500]
                    self._stop.wait(min(sub.backoff * 2**failures, sub.max_backoff))
            if pending:
                with contextlib.suppress(Conflict):
                    self._flush(ledger, sub, flushed)

    def _deliver(self, ledger: Ledger, sub: Subscription, event: Event) -> None:
        attempts = 0
        while True:
            try:
                sub.handler(event)
            except Exception as exc:  # a handler's failure must never stop the bus
                attempts += 1
                sub.failing = f"{type(exc).__name__}: {exc}"
                if attempts >= sub.max_failures or self._stop.is_set():
                    if attempts >= sub.max_failures:
                        self._dead_letter(ledger, sub, event, attempts, exc)
                    return
                delay = min(sub.backoff * 2 ** (attempts - 1), sub.max_backoff)
                self._stop.wait(delay)
                continue
            sub.delivered += 1
            sub.failing = None
            return

    def _dead_letter(
        self, ledger: Ledger, sub: Subscription, event: Event, attempts: int, exc: Exception
    ) -> None:
        error = "".join(traceback.format_exception_only(exc)).strip()[:2000]
        e = f"dead:{sub.name}:{event.id}"
        facts = {
            "keel.dead/subscription": sub.name,
            "keel.dead/event": event.id,
            "keel.dead/type": event.type,
            "keel.dead/error": error,
            "keel.dead/attempts": attempts,
            "keel.dead/state": "open",
        }
        ledger.transact(
            [{"op": "add", "e": e, "a": a, "v": v} for a, v in facts.items()],
            reason=f"dead-letter {event.id} for {sub.name}",
        )
        sub.dead += 1

    def _flush(self, ledger: Ledger, sub: Subscription, previous: Position) -> None:
        ledger.transact(
            [
                {
                    "op": "add",
                    "e": sub_entity(sub.name),
                    "a": "keel.sub/cursor",
                    "v": str(sub.cursor),
                }
            ],
            reason=f"cursor {sub.name}",
            expect=[{"e": sub_entity(sub.name), "a": "keel.sub/cursor", "v": str(previous)}],
        )

    def status(self, head: int) -> list[dict]:
        return [
            {
                "name": s.name,
                "types": sorted(s.types),
                "cursor": str(s.cursor),
                "lag": max(0, head - s.cursor.tx - (1 if s.cursor.n < END_OF_TX else 0)),
                "delivered": s.delivered,
                "dead": s.dead,
                "failing": s.failing,
                "stopped": s.stopped,
            }
            for s in self.subscriptions.values()
        ]
