"""Lease benchmark: what a node's heartbeat costs while it holds runs.

    uv run python bench/leases.py [--json] [--beats 50] [--no-postgres]

A scheduler holds 1, 10 and 100 runs in flight (a kind that waits until released); the
figure is the time of one heartbeat (one transaction renewing every lease it holds, each a
compare-and-set on its generation), beside the same ledger's commit of a one-fact
transaction (the baseline). A node beats every third of the lease, so at the default 30 s
lease it spends `heartbeat × 0.1/s` of its time renewing: the last column.
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

from keel.cadence.jobs import parse_job, save_job
from keel.cadence.kinds import Outcome
from keel.cadence.scheduler import LEASE, Scheduler, ensure_schema
from keel.ledger import Ledger, Signer

PG_BASE = "postgresql://127.0.0.1:5432/test"
HELD = (1, 10, 100)


def measure(target: str, op: Signer, held: int, beats: int) -> dict:
    led = Ledger.open(target, signer=op)
    led.register_identity("operator", op.public_key, "operator")
    ensure_schema(led)
    led.declare([{"attribute": "bench/n", "type": "int"}])
    release = threading.Event()

    def gate(spec, ctx) -> Outcome:
        release.wait(600)
        return Outcome("ok")

    job = {"name": "held", "schedule": "every 1d", "kind": "gate", "run": "x"}
    save_job(led, parse_job({**job, "overlap": "allow"}, {"gate"}))
    s = Scheduler(lambda: Ledger.open(target, signer=op), kinds={"gate": gate}, workers=held)
    for _ in range(held):
        s.run_now(led, "held")
    start = time.perf_counter()
    for _ in range(beats):
        assert s.heartbeat(led) == []
    beat = (time.perf_counter() - start) / beats
    start = time.perf_counter()
    for i in range(beats):
        led.transact([{"e": "bench", "a": "bench/n", "v": i}])
    plain = (time.perf_counter() - start) / beats
    release.set()
    s.stop()
    led.close()
    return {"held": held, "heartbeat_s": beat, "plain_tx_s": plain}


def run_store(kind: str, beats: int) -> list[dict]:
    op = Signer.generate("operator")
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-leases-"))
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
        return [measure(target(), op, held, beats) for held in HELD]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if schemas:
            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                for schema in schemas:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--beats", type=int, default=50)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = {"sqlite": run_store("sqlite", args.beats)}
    if not args.no_postgres:
        results["postgres"] = run_store("postgres", args.beats)
    if args.json:
        print(json.dumps(results))
        return
    table = Table(
        "store",
        "runs held",
        "heartbeat ms",
        "baseline: 1-fact tx ms",
        "ratio",
        f"time renewing ({LEASE:g}s lease)",
    )
    for store, rows in results.items():
        for r in rows:
            table.add_row(
                store,
                str(r["held"]),
                f"{r['heartbeat_s'] * 1000:.2f}",
                f"{r['plain_tx_s'] * 1000:.2f}",
                f"{r['heartbeat_s'] / r['plain_tx_s']:.2f}×",
                f"{r['heartbeat_s'] * 3 / LEASE:.4%}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
