"""Event bus benchmark: events/s from commit to handler with durable cursors, and catch-up.

    uv run python bench/bus.py [--json] [--events 20000] [--no-postgres]

Live: one writer commits transactions of 50 entities each (51 events: the `tx` event and
one per entity) while a durable subscription handles them; the figure is events handled
per second from the first commit to the last handler call, beside the same ledger's
commit rate alone (the baseline: the bus cannot deliver faster than events are made).
Catch-up: the subscriber is down while the events are committed, then starts from its
cursor; the figure is events/s until it is caught up, beside a raw read of the same
(tx, e, a) rows with one SQL query per batch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from keel.bus import Bus
from keel.ledger import Ledger, Signer

PG_BASE = "postgresql://127.0.0.1:5432/test"
PER_TX = 50


def make(target: str, op: Signer) -> Ledger:
    led = Ledger.open(target, signer=op)
    led.register_identity("operator", op.public_key, "operator")
    led.declare([{"attribute": "task/n", "type": "int"}])
    return led


def commit(led: Ledger, txs: int) -> float:
    start = time.perf_counter()
    for i in range(txs):
        led.transact([{"e": f"t{j}", "a": "task/n", "v": i} for j in range(PER_TX)])
    return time.perf_counter() - start


def live(target: str, op: Signer, txs: int) -> dict:
    led = make(target, op)
    expected = txs * (PER_TX + 1)
    count = [0]
    done = threading.Event()

    def handler(ev) -> None:
        count[0] += 1
        if count[0] >= expected:
            done.set()

    bus = Bus(lambda: Ledger.open(target, signer=op), poll=0.05)
    bus.subscribe("bench", handler)
    led.on_commit(bus.notify)
    base = led.store.head()[0]
    bus.start()
    start = time.perf_counter()
    commit_seconds = commit(led, txs)
    done.wait(600)
    elapsed = time.perf_counter() - start
    bus.stop()
    led.close()
    handled = count[0] - 0
    return {
        "events": handled,
        "seconds": round(elapsed, 3),
        "events_per_s": handled / elapsed,
        "commit_events_per_s": expected / commit_seconds,
        "base_tx": base,
    }


def catch_up(target: str, op: Signer, txs: int) -> dict:
    led = make(target, op)
    bus = Bus(lambda: Ledger.open(target, signer=op), poll=0.05)
    count = [0]
    bus.subscribe("late", lambda ev: count.__setitem__(0, count[0] + 1))
    commit(led, txs)
    expected = txs * (PER_TX + 1)
    # Baseline: the same rows read raw, in the same batches of 200 transactions.
    head = led.store.head()[0]
    start = time.perf_counter()
    rows = 0
    for lo in range(1, head + 1, 200):
        rows += len(
            led.store.fetchall(
                "SELECT tx, e, a FROM datoms WHERE tx >= ? AND tx <= ? ORDER BY tx, idx",
                [lo, min(head, lo + 199)],
            )
        )
    raw = time.perf_counter() - start
    start = time.perf_counter()
    bus.start()
    deadline = time.monotonic() + 600
    while count[0] < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    bus.stop()
    led.close()
    return {
        "events": count[0],
        "seconds": round(elapsed, 3),
        "events_per_s": count[0] / elapsed,
        "raw_rows_per_s": rows / raw,
    }


def run_store(kind: str, txs: int) -> dict:
    op = Signer.generate("operator")
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-bus-"))
    schemas = []

    def target() -> str:
        if kind == "sqlite":
            path = tmp / uuid.uuid4().hex / "keel.db"
            path.parent.mkdir()
            return str(path)
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        schemas.append(schema)
        return f"{PG_BASE}?options=-csearch_path%3D{schema}"

    try:
        return {"live": live(target(), op, txs), "catch_up": catch_up(target(), op, txs)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if schemas:
            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--events", type=int, default=20000, help="about this many events")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    txs = max(1, args.events // (PER_TX + 1))
    results = {"sqlite": run_store("sqlite", txs)}
    if not args.no_postgres:
        results["postgres"] = run_store("postgres", txs)
    if args.json:
        print(json.dumps(results))
        return
    table = Table("store", "workload", "events/s", "baseline", "baseline /s", "ratio")
    for store, r in results.items():
        lv, cu = r["live"], r["catch_up"]
        table.add_row(
            store,
            f"live, {lv['events']} events",
            f"{lv['events_per_s']:,.0f}",
            "commit rate (events made)",
            f"{lv['commit_events_per_s']:,.0f}",
            f"{lv['events_per_s'] / lv['commit_events_per_s']:.2f}×",
        )
        table.add_row(
            store,
            f"catch-up, {cu['events']} events",
            f"{cu['events_per_s']:,.0f}",
            "raw SQL read of the rows",
            f"{cu['raw_rows_per_s']:,.0f}",
            f"{cu['events_per_s'] / cu['raw_rows_per_s']:.2f}×",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
