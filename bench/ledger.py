"""Ledger benchmarks: every keel figure beside a raw baseline measured in the same run.

    uv run python bench/ledger.py [--json] [--sizes 10000,100000,1000000] [--quick]
                                  [--no-postgres] [--profile DIR] [--small-only]

Workloads (see docs/benchmarks.md for what each one means and the targets):

* bulk load: `Ledger.transact` in batches of 1,000 datoms, against raw `executemany` of
  the very rows keel wrote (copied back out of keel's store, untimed) into a database with
  keel's own DDL and pragmas. The two are interleaved batch by batch, so noise from other
  work on the machine hits both alike. The ledger grows through every size in `--sizes`;
  at each size the other figures are taken.
* small signed transactions (1–5 datoms): commits/s against raw single-row commits.
* as-of entity read: `Ledger.view(as_of=tx).get(e)` (and `View.get` on a ready view)
  against a raw SELECT of the same entity's rows from the baseline copy.
* verify: `Ledger.verify()` (2 worker processes) of a ledger of small signed
  transactions, against the same verify with one process; and `Ledger.verify_incremental()`
  after a checkpoint and 1,000 more transactions (what `keel up` checks), against a full
  verify of the same ledger.
* PostgreSQL: the same, against raw psycopg.

`--small-only` measures just the small signed transactions, on a ledger bulk-loaded to the
first size: the figure that round trips decide on PostgreSQL, in about a minute.

Progress goes to stderr; stdout gets the table, or with --json one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from keel.ledger import Ledger, Signer
from keel.ledger.stores.base import DATOM_COLUMNS, TX_COLUMNS
from keel.ledger.stores.sqlite import DDL as SQLITE_DDL
from keel.ledger.stores.sqlite import SqliteStore

PG_BASE = os.environ.get("KEEL_BENCH_PG", "postgresql://127.0.0.1:5432/test")
BATCH = 1000  # datoms per bulk transaction
NEW_PER_BATCH = 90  # new entities per bulk batch (10 datoms each) ...
UPDATES_PER_BATCH = 100  # ... plus this many updates of earlier entities
T0 = 1_700_000_000_000_000  # a fixed instant (µs) for instant-typed values
SINCE_CHECKPOINT = 1000  # transactions written after the checkpoint an incremental verify trusts

ATTRS = [
    {"attribute": "bench/n", "type": "int", "doc": "a counter, updated over time"},
    {"attribute": "bench/name", "type": "string"},
    {"attribute": "bench/score", "type": "float"},
    {"attribute": "bench/rank", "type": "int"},
    {"attribute": "bench/note", "type": "string"},
    {"attribute": "bench/at", "type": "instant"},
    {"attribute": "bench/flag", "type": "bool"},
    {"attribute": "bench/batch", "type": "int"},
    {"attribute": "bench/kind", "type": "string"},
    {"attribute": "bench/parent", "type": "ref"},
]
SCALAR = [a["attribute"] for a in ATTRS if a["type"] != "ref"]

console = Console(stderr=True)


def say(msg: str) -> None:
    console.log(msg)


# -- small helpers ----------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def value_for(attr: str, rng: random.Random, k: int, j: int) -> Any:
    if attr == "bench/n":
        return rng.randrange(1_000_000)
    if attr == "bench/name":
        return f"entity {k}-{j}"
    if attr == "bench/score":
        return rng.random() * 100
    if attr == "bench/rank":
        return j
    if attr == "bench/note":
        return "note " + "x" * rng.randint(0, 60)
    if attr == "bench/at":
        return T0 + k * 1_000_000 + j
    if attr == "bench/flag":
        return bool(j & 1)
    if attr == "bench/batch":
        return k
    if attr == "bench/kind":
        return rng.choice(("person", "place", "task", "note"))
    raise ValueError(attr)


class Workload:
    """Deterministic bulk batches: new entities with 10 attributes, plus updates."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.entities: list[str] = []  # entity ids, creation order
        self.created: list[int] = []  # the tx that created each one

    def batch(self, k: int) -> tuple[list[dict], list[str]]:
        rng = self.rng
        new = NEW_PER_BATCH if self.entities else BATCH // len(ATTRS)
        ops, temps = [], []
        for j in range(new):
            e = f"#e{j}"
            temps.append(e)
            for attr in SCALAR:
                ops.append({"op": "add", "e": e, "a": attr, "v": value_for(attr, rng, k, j)})
            parent = rng.choice(self.entities) if self.entities else "#e0"
            ops.append({"op": "add", "e": e, "a": "bench/parent", "v": parent})
        if self.entities:
            for e in rng.sample(self.entities, min(UPDATES_PER_BATCH, len(self.entities))):
                ops.append({"op": "add", "e": e, "a": "bench/n", "v": rng.randrange(1_000_000)})
        assert len(ops) == BATCH, len(ops)
        return ops, temps

    def record(self, tx: int, temps: list[str], tempids: dict[str, str]) -> None:
        for t in temps:
            self.entities.append(tempids[t])
            self.created.append(tx)

    def small(self, rng: random.Random) -> list[dict]:
        attrs = rng.sample(SCALAR, rng.randint(1, 5))
        return [{"op": "add", "e": "#s", "a": a, "v": value_for(a, rng, 0, 1)} for a in attrs]


# -- raw baselines ----------------------------------------------------------------------


class RawSqlite:
    """A bare sqlite3 database with keel's DDL and pragmas."""

    def __init__(self, path: Path, synchronous: str = "FULL"):
        import sqlite3

        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA busy_timeout=60000")
        self.conn.execute("PRAGMA cache_size=-65536")
        for stmt in SQLITE_DDL:
            self.conn.execute(stmt)
        self.mark = "?"

    def bulk(self, tx_row: tuple, rows: list[tuple]) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute(f"INSERT INTO txs ({TX_COLUMNS}) VALUES ({marks('?', 12)})", tx_row)
        c.executemany(f"INSERT INTO datoms ({DATOM_COLUMNS}) VALUES ({marks('?', 13)})", rows)
        c.execute("COMMIT")

    def single(self, row: tuple) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute(f"INSERT INTO datoms ({DATOM_COLUMNS}) VALUES ({marks('?', 13)})", row)
        c.execute("COMMIT")

    def read(self, e: str, tx: int) -> list:
        return self.conn.execute(
            "SELECT a, v, vtype, big, op, vf, vt, tx, idx FROM datoms"
            " WHERE e = ? AND branch = 0 AND tx <= ? ORDER BY tx, idx",
            (e, tx),
        ).fetchall()

    def close(self) -> None:
        self.conn.close()


class RawPostgres:
    """A bare psycopg connection to a schema holding keel's PostgreSQL DDL."""

    def __init__(self, dsn: str, create: bool = True):
        import psycopg

        from keel.ledger.stores.postgres import DDL as PG_DDL

        self.conn = psycopg.connect(dsn, autocommit=True)
        if create:
            for stmt in PG_DDL:
                self.conn.execute(stmt)
        self.tx_sql = f"INSERT INTO txs ({TX_COLUMNS}) VALUES ({marks('%s', 12)})"
        self.datom_sql = f"INSERT INTO datoms ({DATOM_COLUMNS}) VALUES ({marks('%s', 13)})"

    def bulk(self, tx_row: tuple, rows: list[tuple]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(self.tx_sql, tx_row)
            cur.executemany(self.datom_sql, rows)

    def single(self, row: tuple) -> None:
        self.conn.execute(self.datom_sql, row, prepare=True)

    def read(self, e: str, tx: int) -> list:
        return self.conn.execute(
            "SELECT a, v, vtype, big, op, vf, vt, tx, idx FROM datoms"
            " WHERE e = %s AND branch = 0 AND tx <= %s ORDER BY tx, idx",
            (e, tx),
            prepare=True,
        ).fetchall()

    def close(self) -> None:
        self.conn.close()


def marks(m: str, n: int) -> str:
    return ", ".join([m] * n)


def small_raw_row(counter: int, rng: random.Random) -> tuple:
    """One datom-shaped row for a raw single-row commit (tx ids far above keel's)."""
    return (
        (1 << 40) + counter,
        0,
        0,
        f"raw-{counter}",
        rng.choice(SCALAR),
        rng.randbytes(8),
        2,
        0,
        1,
        T0,
        2**62,
        rng.randbytes(16),
        rng.randbytes(32),
    )


# -- PostgreSQL schemas -----------------------------------------------------------------


@contextlib.contextmanager
def pg_schema(tag: str) -> Iterator[str]:
    import psycopg

    name = f"keel_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in PG_BASE else "?"
    try:
        yield f"{PG_BASE}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_BASE, connect_timeout=3) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])
    except Exception as exc:  # any failure means: skip PostgreSQL, saying why
        say(f"[yellow]PostgreSQL not reachable at {PG_BASE}: {exc}")
        return None


# -- the measurements -------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    reads: int
    rounds: int
    per_round: int
    verify_txs: int
    pg_sizes: list[int]
    pg_verify_txs: int
    profile: Path | None
    verify_repeats: int
    small_only: bool = False


@dataclass
class Backend:
    """How to open keel and the raw baseline on one store."""

    kind: str  # "sqlite" | "postgres"
    open_keel: Callable[[Signer], Ledger]
    raw: Any
    # SQLite only: the same files opened with synchronous=NORMAL
    open_keel_normal: Callable[[Signer], Ledger] | None = None
    raw_normal: Any = None
    extra: dict = field(default_factory=dict)


def new_ledger(open_keel: Callable[[Signer], Ledger], op: Signer) -> Ledger:
    L = open_keel(op)
    L.register_identity("operator", op.public_key, "operator")
    L.declare(ATTRS)
    return L


def bulk_step(L: Ledger, raw: Any, wl: Workload, k: int) -> tuple[float, float]:
    """One keel batch and its raw copy; returns (keel seconds, raw seconds)."""
    ops, temps = wl.batch(k)
    t = time.perf_counter()
    res = L.transact(ops, reason=f"bulk {k}")
    keel_s = time.perf_counter() - t
    wl.record(res.tx, temps, res.tempids)
    tx_row = tuple(L.store.tx_rows(res.tx, res.tx)[0])
    rows = [tuple(r) for r in L.store.datom_rows(res.tx, res.tx)]
    t = time.perf_counter()
    raw.bulk(tx_row, rows)
    raw_s = time.perf_counter() - t
    return keel_s, raw_s


def measure_reads(L: Ledger, raw: Any, wl: Workload, n: int, rng: random.Random) -> dict:
    """As-of reads of random entities at random transactions since their creation.

    Each method reads its own random sample, so no method finds pages another one just
    loaded; each read is then repeated at once, for the warm (cached) figure.
    """
    head = L.store.head()[0]

    def sample(count: int) -> list[tuple[str, int]]:
        out = []
        for _ in range(count):
            i = rng.randrange(len(wl.entities))
            out.append((wl.entities[i], rng.randint(wl.created[i], head)))
        return out

    for e, tx in sample(max(50, n // 10)):  # warm up connections and statement caches
        L.view(as_of=tx).get(e)
        raw.read(e, tx)
    picks = [sample(n) for _ in range(3)]
    views = {tx: L.view(as_of=tx) for e, tx in picks[1]}
    times: dict[str, list[float]] = {k: [] for k in ("full", "get", "raw")}
    warm: dict[str, list[float]] = {k: [] for k in ("full", "get", "raw")}
    pc = time.perf_counter
    for i in range(n):
        for step in range(3):
            which = (i + step) % 3
            e, tx = picks[which][i]
            for bucket in (times, warm):
                if which == 0:
                    t = pc()
                    got = L.view(as_of=tx).get(e)
                    bucket["full"].append(pc() - t)
                    assert got, (e, tx)
                elif which == 1:
                    view = views[tx]
                    t = pc()
                    view.get(e)
                    bucket["get"].append(pc() - t)
                else:
                    t = pc()
                    raw.read(e, tx)
                    bucket["raw"].append(pc() - t)
    us = 1e6
    return {
        "samples": n,
        "view_get_p50_us": pct(times["full"], 0.5) * us,
        "view_get_p95_us": pct(times["full"], 0.95) * us,
        "get_p50_us": pct(times["get"], 0.5) * us,
        "get_p95_us": pct(times["get"], 0.95) * us,
        "raw_p50_us": pct(times["raw"], 0.5) * us,
        "raw_p95_us": pct(times["raw"], 0.95) * us,
        "warm_view_get_p50_us": pct(warm["full"], 0.5) * us,
        "warm_get_p50_us": pct(warm["get"], 0.5) * us,
        "warm_raw_p50_us": pct(warm["raw"], 0.5) * us,
    }


def measure_small(
    L: Ledger, raw: Any, wl: Workload, cfg: Config, rng: random.Random, counter: list[int]
) -> dict:
    """Rounds of small signed transactions and raw single-row commits, interleaved."""
    keel_rates, raw_rates = [], []
    for r in range(cfg.rounds + 1):  # round 0 is a warm-up

        def run_keel() -> float:
            t = time.perf_counter()
            for _ in range(cfg.per_round):
                L.transact(wl.small(rng), reason="small")
            return cfg.per_round / (time.perf_counter() - t)

        def run_raw() -> float:
            rows = []
            for _ in range(cfg.per_round):
                counter[0] += 1
                rows.append(small_raw_row(counter[0], rng))
            t = time.perf_counter()
            for row in rows:
                raw.single(row)
            return cfg.per_round / (time.perf_counter() - t)

        if r % 2:
            kr, rr = run_keel(), run_raw()
        else:
            rr, kr = run_raw(), run_keel()
        if r:
            keel_rates.append(kr)
            raw_rates.append(rr)
    k, b = statistics.median(keel_rates), statistics.median(raw_rates)
    return {"commits_per_s": k, "raw_commits_per_s": b, "ratio": k / b}


def run_growth(be: Backend, sizes: list[int], cfg: Config, results: dict) -> Ledger:
    op = Signer.generate("operator")
    L = new_ledger(be.open_keel, op)
    normal = be.open_keel_normal(op) if be.open_keel_normal else None
    wl = Workload()
    rng = random.Random(11)
    counter = [0]
    growth: list[dict] = []
    keel_times: list[float] = []
    raw_times: list[float] = []
    k = 0
    started = time.perf_counter()
    keel_total = 0.0
    for size in sizes:
        seg_keel, seg_raw = [], []
        seg_start = time.perf_counter()
        while k * BATCH < size:
            ks, rs = bulk_step(L, be.raw, wl, k)
            seg_keel.append(ks)
            seg_raw.append(rs)
            keel_total += ks
            k += 1
            if k % 100 == 0:
                say(
                    f"{be.kind}: {k * BATCH:,} datoms loaded"
                    f" ({BATCH / statistics.median(seg_keel[-100:]):,.0f}/s keel,"
                    f" {BATCH / statistics.median(seg_raw[-100:]):,.0f}/s raw)"
                )
        keel_times += seg_keel
        raw_times += seg_raw
        seg_wall = time.perf_counter() - seg_start
        say(f"{be.kind}: at {size:,} datoms; reads and small transactions")
        gc.collect()
        point: dict[str, Any] = {
            "datoms": size,
            "bulk_datoms_per_s": BATCH / statistics.median(seg_keel),
            "raw_bulk_datoms_per_s": BATCH / statistics.median(seg_raw),
            "segment_batches": len(seg_keel),
            "segment_wall_s": seg_wall,
        }
        point["bulk_ratio"] = point["bulk_datoms_per_s"] / point["raw_bulk_datoms_per_s"]
        point["load_avg"] = load_avg()
        point["read"] = measure_reads(L, be.raw, wl, cfg.reads, rng)
        point["small"] = measure_small(L, be.raw, wl, cfg, rng, counter)
        if normal is not None:
            point["small_normal"] = measure_small(normal, be.raw_normal, wl, cfg, rng, counter)
        growth.append(point)
    base = growth[0]
    for p in growth:
        p["read_p50_vs_first"] = p["read"]["view_get_p50_us"] / base["read"]["view_get_p50_us"]
        p["get_p50_vs_first"] = p["read"]["get_p50_us"] / base["read"]["get_p50_us"]
        p["warm_read_p50_vs_first"] = (
            p["read"]["warm_view_get_p50_us"] / base["read"]["warm_view_get_p50_us"]
        )
        p["log_n_allowance"] = math.log(p["datoms"]) / math.log(base["datoms"])
    results["growth"] = growth
    results["bulk"] = {
        "datoms": k * BATCH,
        "batches": k,
        "datoms_per_s": BATCH / statistics.median(keel_times),
        "raw_datoms_per_s": BATCH / statistics.median(raw_times),
        "keel_transact_s": keel_total,
        "raw_s": sum(raw_times),
        "wall_s_with_measurements": time.perf_counter() - started,
    }
    results["bulk"]["ratio"] = results["bulk"]["datoms_per_s"] / results["bulk"]["raw_datoms_per_s"]
    # verify of the bulk ledger: few, large transactions
    t = time.perf_counter()
    rep = L.verify()
    assert rep.ok, rep
    results["verify_bulk_ledger"] = {
        "transactions": rep.transactions,
        "datoms": rep.datoms,
        "seconds": time.perf_counter() - t,
    }
    if normal is not None:
        normal.close()
    results["_workload"] = wl
    return L


def run_small_only(be: Backend, size: int, cfg: Config) -> dict:
    """Only the small-transaction figure, on a ledger bulk-loaded to `size` datoms."""
    op = Signer.generate("operator")
    L = new_ledger(be.open_keel, op)
    wl = Workload()
    k = 0
    while k * BATCH < size:
        bulk_step(L, be.raw, wl, k)
        k += 1
    say(f"{be.kind}: at {size:,} datoms; small transactions only")
    gc.collect()
    point = {
        "datoms": size,
        "load_avg": load_avg(),
        "small": measure_small(L, be.raw, wl, cfg, random.Random(11), [0]),
    }
    L.close()
    return {"small_only": point}


def cpu_now() -> float:
    """CPU seconds of this process and its reaped children (the verify workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def crypto_floor(L: Ledger) -> float:
    """Seconds one process needs for the bare cryptography of a verify: per datom two
    SHA-256 (value digest, datom hash), per transaction one SHA-256 and one Ed25519
    check, over rows already in memory. No SQL, no parsing, no checks."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    txs = [(bytes(r[1]), bytes(r[6]), bytes(r[10])) for r in L.store.tx_rows(1, None)]
    datoms = [
        (r[0].encode(), r[1].encode(), bytes(r[2] or b""), r[3], bytes(r[4] or b""))
        for r in L.store.fetchall("SELECT e, a, v, vtype, salt FROM datoms ORDER BY tx, idx")
    ]
    sha = hashlib.sha256
    keys: dict[bytes, Any] = {}
    t = time.perf_counter()
    for e, a, v, tag, salt in datoms:
        vd = sha(salt + bytes((tag,)) + v).digest()
        sha(e + a + vd).digest()
    for h, key, sig in txs:
        pk = keys.get(key) or keys.setdefault(key, Ed25519PublicKey.from_public_bytes(key))
        sha(h).digest()
        pk.verify(sig, h)
    return time.perf_counter() - t


def run_verify(
    open_keel: Callable[[Signer], Ledger], n_tx: int, repeats: int, profile: Path | None
) -> dict:
    op = Signer.generate("operator")
    L = new_ledger(open_keel, op)
    wl = Workload()
    rng = random.Random(5)
    t = time.perf_counter()
    for i in range(n_tx - 2):
        L.transact(wl.small(rng), reason="small")
        if (i + 1) % 10_000 == 0:
            say(f"verify ledger: {i + 1:,} transactions")
    build_s = time.perf_counter() - t
    par, one, par_cpu, one_cpu = [], [], [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), cpu_now()
        rep = L.verify()
        par.append(time.perf_counter() - t)
        par_cpu.append(cpu_now() - c)
        assert rep.ok, rep
        t, c = time.perf_counter(), cpu_now()
        rep1 = L.verify(workers=1)
        one.append(time.perf_counter() - t)
        one_cpu.append(cpu_now() - c)
        assert rep1.ok, rep1
    floor = crypto_floor(L)
    L.checkpoint()
    for _ in range(SINCE_CHECKPOINT):
        L.transact(wl.small(rng), reason="after the checkpoint")
    incremental = []
    for _ in range(repeats):
        t = time.perf_counter()
        rep_inc = L.verify_incremental()
        incremental.append(time.perf_counter() - t)
        assert rep_inc.ok and rep_inc.since == rep.transactions, rep_inc
    t = time.perf_counter()
    assert L.verify().ok
    full_after = time.perf_counter() - t
    if profile:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0005)
        prof.start()
        L.verify(workers=1)
        prof.stop()
        path = profile / f"verify-{L.store.__class__.__name__}.txt"
        path.write_text(prof.output_text(unicode=True, color=False))
        say(f"profile of verify written to {path}")
    L.close()
    load = load_avg()
    p, s = statistics.median(par), statistics.median(one)
    return {
        "transactions": rep.transactions,
        "datoms": rep.datoms,
        "build_s": build_s,
        "seconds": p,
        "cpu_s": statistics.median(par_cpu),
        "single_process_s": s,
        "single_process_cpu_s": statistics.median(one_cpu),
        "speedup": s / p,
        "crypto_floor_1_process_s": floor,
        "incremental_s": statistics.median(incremental),
        "incremental_txs": SINCE_CHECKPOINT,
        "full_after_s": full_after,
        "repeats": repeats,
        "load_avg": load,
    }


def run_profile(L: Ledger, raw: Any, wl: Workload, out: Path) -> dict:
    from pyinstrument import Profiler

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(3)
    found = {}
    head = L.store.head()[0]
    picks = []
    for _ in range(3000):
        i = rng.randrange(len(wl.entities))
        picks.append((wl.entities[i], rng.randint(wl.created[i], head)))
    k0 = len(wl.entities)  # batch numbers only label values

    def bulk() -> None:
        for k in range(30):
            ops, temps = wl.batch(k0 + k)
            res = L.transact(ops, reason="profile bulk")
            wl.record(res.tx, temps, res.tempids)

    def small() -> None:
        for _ in range(500):
            L.transact(wl.small(rng), reason="profile small")

    def read() -> None:
        for e, tx in picks:
            L.view(as_of=tx).get(e)

    for name, fn in (("bulk", bulk), ("small", small), ("read", read)):
        prof = Profiler(interval=0.0002)
        prof.start()
        fn()
        prof.stop()
        text = prof.output_text(unicode=True, color=False, show_all=False)
        (out / f"{name}.txt").write_text(text)
        found[name] = str(out / f"{name}.txt")
        say(f"profile of {name} written to {out / (name + '.txt')}")
    return found


def sqlite_backend(root: Path) -> Backend:
    db = root / "keel.db"
    raw_db = root / "raw.db"

    def open_keel(op: Signer) -> Ledger:
        return Ledger(SqliteStore(db), op)

    def open_keel_normal(op: Signer) -> Ledger:
        return Ledger(SqliteStore(db, synchronous="NORMAL"), op)

    raw = RawSqlite(raw_db, "FULL")
    raw_normal = RawSqlite(raw_db, "NORMAL")
    return Backend("sqlite", open_keel, raw, open_keel_normal, raw_normal)


def bench_sqlite(cfg: Config, root: Path) -> dict:
    res: dict[str, Any] = {}
    (root / "grow").mkdir()
    be = sqlite_backend(root / "grow")
    if cfg.small_only:
        res = run_small_only(be, cfg.sizes[0], cfg)
        be.raw.close()
        be.raw_normal.close()
        return res
    L = run_growth(be, cfg.sizes, cfg, res)
    wl = res.pop("_workload")
    if cfg.profile:
        res["profiles"] = run_profile(L, be.raw, wl, cfg.profile)
    L.close()
    be.raw.close()
    be.raw_normal.close()
    res["db_bytes"] = sum(p.stat().st_size for p in (root / "grow").glob("keel.db*"))
    (root / "verify").mkdir()
    vdb = root / "verify" / "keel.db"
    say(f"sqlite: building a ledger of {cfg.verify_txs:,} small signed transactions")
    # The build is not a measured figure; synchronous=OFF only makes it quicker.
    res["verify"] = run_verify(
        lambda op: Ledger(SqliteStore(vdb, synchronous="OFF"), op),
        cfg.verify_txs,
        cfg.verify_repeats,
        cfg.profile,
    )
    return res


def bench_postgres(cfg: Config) -> dict:
    res: dict[str, Any] = {}
    with pg_schema("keel") as dsn, pg_schema("raw") as raw_dsn:
        raw = RawPostgres(raw_dsn)
        be = Backend("postgres", lambda op: Ledger.open(dsn, signer=op), raw)
        if cfg.small_only:
            res = run_small_only(be, cfg.pg_sizes[0], cfg)
            raw.close()
            return res
        L = run_growth(be, cfg.pg_sizes, cfg, res)
        res.pop("_workload")
        L.close()
        raw.close()
    with pg_schema("verify") as dsn:
        say(f"postgres: building a ledger of {cfg.pg_verify_txs:,} small signed transactions")
        res["verify"] = run_verify(
            lambda op: Ledger.open(dsn, signer=op), cfg.pg_verify_txs, cfg.verify_repeats, None
        )
    return res


def warm_up(root: Path) -> None:
    """Import everything and run every path once on a throwaway ledger."""
    (root / "warm").mkdir()
    op = Signer.generate("operator")
    L = new_ledger(lambda s: Ledger(SqliteStore(root / "warm" / "keel.db"), s), op)
    wl = Workload()
    for k in range(3):
        ops, temps = wl.batch(k)
        res = L.transact(ops, reason="warm")
        wl.record(res.tx, temps, res.tempids)
    rng = random.Random(1)
    for _ in range(20):
        L.transact(wl.small(rng), reason="warm")
    L.view(as_of=3).get(wl.entities[0])
    L.verify()
    L.close()


# -- report -----------------------------------------------------------------------------


def load_avg() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the machine was (2 cores here)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def cpu_pressure() -> str:
    """Linux PSI: the share of time some runnable task waited for a CPU."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""


def machine() -> dict:
    import sqlite3

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_avg_at_start": load_avg(),
        "cpu_pressure_at_start": cpu_pressure(),
    }


def figures(results: dict) -> list[dict]:
    """Flat rows: figure, store, size, keel value, baseline, ratio, target, met."""
    rows: list[dict] = []

    def add(store, figure, size, value, unit, baseline, ratio, target, met):
        rows.append(
            {
                "store": store,
                "figure": figure,
                "datoms": size,
                "value": value,
                "unit": unit,
                "baseline": baseline,
                "ratio": ratio,
                "target": target,
                "met": met,
            }
        )

    for store in ("sqlite", "postgres"):
        r = results.get(store)
        if not r:
            continue
        if "small_only" in r:
            p = r["small_only"]
            s = p["small"]
            add(
                store,
                "small signed tx, 1–5 datoms" + (", sync FULL" if store == "sqlite" else ""),
                p["datoms"],
                s["commits_per_s"],
                "commits/s",
                s["raw_commits_per_s"],
                s["ratio"],
                "≥ 0.25× raw" if store == "sqlite" else "beside SQLite",
                s["ratio"] >= 0.25 if store == "sqlite" else None,
            )
            continue
        b = r["bulk"]
        target_bulk = 0.5 if store == "sqlite" else None
        add(
            store,
            "bulk load, 1,000-datom batches",
            b["datoms"],
            b["datoms_per_s"],
            "datoms/s",
            b["raw_datoms_per_s"],
            b["ratio"],
            "≥ 0.5× raw" if store == "sqlite" else "beside SQLite",
            None if target_bulk is None else b["ratio"] >= target_bulk,
        )
        add(
            store,
            "bulk load time (transact only)",
            b["datoms"],
            b["keel_transact_s"],
            "s",
            b["raw_s"],
            b["keel_transact_s"] / b["raw_s"],
            "≤ ~6 min for 1M",
            b["keel_transact_s"] <= 360 if b["datoms"] >= 1_000_000 else None,
        )
        top = r["growth"][-1]
        for key, label in (("small", "FULL"), ("small_normal", "NORMAL")):
            if key not in top:
                continue
            s = top[key]
            sync = f", sync {label}" if store == "sqlite" else ""
            add(
                store,
                f"small signed tx, 1–5 datoms{sync}",
                top["datoms"],
                s["commits_per_s"],
                "commits/s",
                s["raw_commits_per_s"],
                s["ratio"],
                "≥ 0.25× raw" if store == "sqlite" else "beside SQLite",
                s["ratio"] >= 0.25 if store == "sqlite" else None,
            )
        rd = top["read"]
        add(
            store,
            "as-of read p50 (view + get)",
            top["datoms"],
            rd["view_get_p50_us"],
            "µs",
            rd["raw_p50_us"],
            rd["view_get_p50_us"] / rd["raw_p50_us"],
            "p50 ≤ 200 µs",
            rd["view_get_p50_us"] <= 200 if store == "sqlite" else None,
        )
        add(
            store,
            "as-of read p95 (view + get)",
            top["datoms"],
            rd["view_get_p95_us"],
            "µs",
            rd["raw_p95_us"],
            rd["view_get_p95_us"] / rd["raw_p95_us"],
            "",
            None,
        )
        add(
            store,
            "as-of read p50, warm (view + get)",
            top["datoms"],
            rd["warm_view_get_p50_us"],
            "µs",
            rd["warm_raw_p50_us"],
            rd["warm_view_get_p50_us"] / rd["warm_raw_p50_us"],
            "",
            None,
        )
        add(
            store,
            "as-of read p50 (View.get, view ready)",
            top["datoms"],
            rd["get_p50_us"],
            "µs",
            rd["raw_p50_us"],
            rd["get_p50_us"] / rd["raw_p50_us"],
            "",
            None,
        )
        v = r["verify"]
        add(
            store,
            f"verify {v['transactions']:,} tx, 2 workers (base: 1)",
            v["datoms"],
            v["seconds"],
            "s",
            v["single_process_s"],
            v["speedup"],
            "≤ 15 s (100k tx)" if store == "sqlite" else "beside SQLite",
            (v["seconds"] <= 15 and v["transactions"] >= 100_000) if store == "sqlite" else None,
        )
        add(
            store,
            "verify, 1 process (base: crypto floor)",
            v["datoms"],
            v["single_process_s"],
            "s",
            v["crypto_floor_1_process_s"],
            v["single_process_s"] / v["crypto_floor_1_process_s"],
            "",
            None,
        )
        add(
            store,
            "verify CPU, 2 workers (base: 1 process)",
            v["datoms"],
            v["cpu_s"],
            "s",
            v["single_process_cpu_s"],
            v["cpu_s"] / v["single_process_cpu_s"],
            "",
            None,
        )
        add(
            store,
            f"verify since checkpoint, {v['incremental_txs']:,} new tx (base: full verify)",
            v["datoms"],
            v["incremental_s"],
            "s",
            v["full_after_s"],
            v["incremental_s"] / v["full_after_s"],
            "",
            None,
        )
        vb = r["verify_bulk_ledger"]
        add(
            store,
            f"verify bulk ledger, {vb['transactions']:,} tx",
            vb["datoms"],
            vb["seconds"],
            "s",
            None,
            None,
            "",
            None,
        )
        for p in r["growth"]:
            add(
                store,
                "growth: bulk load",
                p["datoms"],
                p["bulk_datoms_per_s"],
                "datoms/s",
                p["raw_bulk_datoms_per_s"],
                p["bulk_ratio"],
                "≥ 0.5× raw" if store == "sqlite" else "",
                p["bulk_ratio"] >= 0.5 if store == "sqlite" else None,
            )
            add(
                store,
                "growth: small tx, sync FULL" if store == "sqlite" else "growth: small tx",
                p["datoms"],
                p["small"]["commits_per_s"],
                "commits/s",
                p["small"]["raw_commits_per_s"],
                p["small"]["ratio"],
                "≥ 0.25× raw" if store == "sqlite" else "",
                p["small"]["ratio"] >= 0.25 if store == "sqlite" else None,
            )
            add(
                store,
                "growth: read p50 (ratio ÷ first size)",
                p["datoms"],
                p["read"]["view_get_p50_us"],
                "µs",
                p["read"]["raw_p50_us"],
                p["read_p50_vs_first"],
                f"ratio ≤ {p['log_n_allowance']:.2f} (log n)",
                p["read_p50_vs_first"] <= p["log_n_allowance"],
            )
            add(
                store,
                "growth: warm read p50 (ratio ÷ first size)",
                p["datoms"],
                p["read"]["warm_view_get_p50_us"],
                "µs",
                p["read"]["warm_raw_p50_us"],
                p["warm_read_p50_vs_first"],
                f"ratio ≤ {p['log_n_allowance']:.2f} (log n)",
                p["warm_read_p50_vs_first"] <= p["log_n_allowance"],
            )
    return rows


def fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if unit == "s":
            return f"{x:,.2f}"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:,.1f}"
    return str(x)


def table(rows: list[dict], out: Console) -> None:
    t = Table(title="keel ledger benchmarks (baseline measured in the same run)")
    for col in ("store", "figure", "datoms", "keel", "baseline", "ratio", "target", "met"):
        t.add_column(col, justify="right" if col in ("datoms", "keel", "baseline") else "left")
    for r in rows:
        met = {True: "[green]yes", False: "[red]no", None: ""}[r["met"]]
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        t.add_row(
            r["store"],
            r["figure"],
            f"{r['datoms']:,}",
            f"{fmt(r['value'], r['unit'])} {r['unit']}",
            fmt(r["baseline"], r["unit"]),
            ratio,
            r["target"],
            met,
        )
    out.print(t)


def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s.replace("_", "")) for s in text.split(",") if s.strip()})
    if not sizes or sizes[0] < BATCH:
        raise SystemExit(f"sizes must be at least {BATCH}")
    return [math.ceil(s / BATCH) * BATCH for s in sizes]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--sizes", help="ledger sizes in datoms (default 10000,100000,1000000)")
    ap.add_argument("--quick", action="store_true", help="small sizes and fewer samples")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--pg-sizes", help="PostgreSQL sizes (default: the SQLite sizes)")
    ap.add_argument("--verify-txs", type=int, help="transactions to verify (default 100000)")
    ap.add_argument("--pg-verify-txs", type=int, help="on PostgreSQL (default 20000)")
    ap.add_argument("--reads", type=int, help="as-of reads per size (default 2000)")
    ap.add_argument("--profile", type=Path, help="write pyinstrument profiles into DIR")
    ap.add_argument(
        "--small-only", action="store_true", help="only small signed transactions (first size)"
    )
    ap.add_argument("--rounds", type=int, help="rounds of small transactions (default 5)")
    args = ap.parse_args(argv)

    q = args.quick
    sizes = parse_sizes(args.sizes or ("10000,100000" if q else "10000,100000,1000000"))
    cfg = Config(
        sizes=sizes,
        reads=args.reads or (300 if q else 2000),
        rounds=args.rounds or (3 if q else 5),
        per_round=30 if q else 60,
        verify_txs=args.verify_txs or (10_000 if q else 100_000),
        pg_sizes=parse_sizes(args.pg_sizes) if args.pg_sizes else sizes,
        pg_verify_txs=args.pg_verify_txs or (5_000 if q else 20_000),
        profile=args.profile,
        verify_repeats=1 if q else 3,
        small_only=args.small_only,
    )
    results: dict[str, Any] = {"machine": machine(), "config": {}}
    results["config"] = {
        "sizes": cfg.sizes,
        "pg_sizes": cfg.pg_sizes,
        "reads_per_size": cfg.reads,
        "small_tx_rounds": cfg.rounds,
        "small_tx_per_round": cfg.per_round,
        "verify_txs": cfg.verify_txs,
        "pg_verify_txs": cfg.pg_verify_txs,
        "batch_datoms": BATCH,
        "quick": q,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        root = Path(tmp)
        if not cfg.small_only:
            warm_up(root)
        say(f"sqlite: growing a ledger through {', '.join(f'{s:,}' for s in sizes)} datoms")
        results["sqlite"] = bench_sqlite(cfg, root)
    if not args.no_postgres:
        version = pg_available()
        if version:
            results["machine"]["postgres"] = version
            say("postgres: the same workloads")
            results["postgres"] = bench_postgres(cfg)
    results["total_s"] = time.perf_counter() - started
    results["load_avg_at_end"] = load_avg()
    results["cpu_pressure_at_end"] = cpu_pressure()
    results["figures"] = figures(results)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=150)
        table(results["figures"], out)
        m = results["machine"]
        out.print(
            f"{m['cpu']}, {m['cores']} cores, {m['memory_mib']:,} MiB; Python {m['python']},"
            f" SQLite {m['sqlite']}, PostgreSQL {m.get('postgres', '—')};"
            f" total {results['total_s']:.0f} s; load average {m['load_avg_at_start']} at"
            f" start, {results['load_avg_at_end']} at end"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
