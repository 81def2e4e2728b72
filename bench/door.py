"""What the door costs: a small signed transaction through `Door.call`, beside the same
transaction committed on a bare ledger connection in the same run.

    uv run python bench/door.py [--rounds 15] [--calls 40] [--postgres]

The baseline is `Ledger.transact` of one datom on a connection with no guards, stamp or
redaction: a small signed transaction and nothing else. The "check alone" rows are
`Door.check`: every decision the door makes before the operation runs (identity, the
governance verdict, validation, tier and pins, read-only) — the figure the target is
about. The other rows commit the same transaction through the whole door, which also
signs it as the caller, stamps it with its operation and capability (three more datoms:
the audit trail), runs the write guards and redacts the output: as the operator (T0), as
a T1 client whose pin grants `ledger.write`, and as the operator once a secret exists
(so every transaction and output passes the redactor). Rounds alternate the rows, so a busy
machine slows all of them alike; the table shows the median per call and each as a
share of the baseline (target for the check: < 5%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from keel.ops.door import Caller, Door
from keel.ops.services import Services

PG_BASE = "postgresql://127.0.0.1:5432/test"
PIN = """
[identities.bench-client]
tier = "T1"
pins = ["writer"]
[pins.writer]
capabilities = ["ledger.write"]
"""


def per_call(fn, calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - started) / calls


def run(home: Path, rounds: int, calls: int) -> dict[str, list[float]]:
    services, _ = Services.init(home)
    door = Door(services)
    operator = Caller(services.home.operator, "bench")
    door.call("schema.add", {"attributes": [{"attribute": "b/n", "type": "int"}]}, operator)
    door.call("identity.add", {"name": "bench-client"}, operator)
    path = home / "canon" / "governance.toml"
    path.write_text(path.read_text() + PIN)
    door.call("governance.sign", {}, operator)
    client = Caller("bench-client", "bench")
    bare = services.home.ledger()  # no guards, no stamp, no redaction

    def tx(i: int) -> list[dict]:
        return [{"op": "add", "e": f"n{i % 7}", "a": "b/n", "v": i}]

    def check_only(caller: Caller):
        def run(i: int) -> None:
            door.check("ledger.transact", {"ops": tx(i)}, caller)[2].close()

        return run

    rows = {
        "Ledger.transact (baseline)": lambda i: bare.transact(tx(i)),
        "door check alone, operator": check_only(operator),
        "door check alone, T1 client": check_only(client),
        "door, operator (T0)": lambda i: door.call("ledger.transact", {"ops": tx(i)}, operator),
        "door, T1 client with a pin": lambda i: door.call(
            "ledger.transact", {"ops": tx(i)}, client
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for fn in rows.values():
        per_call(fn, 5)  # warm up
    for _ in range(rounds):
        for name, fn in rows.items():
            samples[name].append(per_call(fn, calls))
    # With a secret set, every transaction and every output passes the redactor.
    door.call("secret.set", {"name": "BENCH", "value": "sk-bench-" + uuid.uuid4().hex}, operator)
    name = "door, operator, a secret set"
    samples[name] = []
    with_secret = rows["door, operator (T0)"]
    per_call(with_secret, 5)
    for _ in range(rounds):
        samples["Ledger.transact (baseline)"].append(
            per_call(rows["Ledger.transact (baseline)"], calls)
        )
        samples[name].append(per_call(with_secret, calls))
    bare.close()
    services.close()
    return samples


def report(title: str, samples: dict[str, list[float]]) -> None:
    base = statistics.median(samples["Ledger.transact (baseline)"])
    print(f"\n{title}")
    print(f"{'row':<32} {'median/call':>12} {'÷ baseline':>11} {'added':>9}")
    for name, times in samples.items():
        median = statistics.median(times)
        if name.endswith("(baseline)"):
            shown = "—"
        elif name.startswith("door check"):
            shown = f"{median / base * 100:.1f}%"  # the check is all it adds
        else:
            shown = f"+{(median - base) / base * 100:.0f}%"
        print(f"{name:<32} {median * 1e6:>10.0f}µs {median / base:>10.3f}× {shown:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-door-") as tmp:
        os.environ.pop("KEEL_DB", None)
        report("SQLite", run(Path(tmp) / "sqlite", args.rounds, args.calls))
        if args.postgres:
            schema = f"keel_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            os.environ["KEEL_DB"] = f"{PG_BASE}?options=-csearch_path%3D{schema}"
            try:
                report("PostgreSQL", run(Path(tmp) / "pg", args.rounds, args.calls))
            finally:
                os.environ.pop("KEEL_DB", None)
                with psycopg.connect(PG_BASE, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"\n{args.rounds} rounds of {args.calls} calls; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
