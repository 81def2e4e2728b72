"""Recall at scale: index build rate and query latency over ~100k memory rows.

    uv run python bench/recall_scale.py [--n 100000] [--queries 200] [--store sqlite|postgres]
                                        [--json] [--profile DIR]

A ledger gets about N index rows of generated memory in a realistic vocabulary (people,
projects, tools, meetings): captures, observations, decisions (title and why), entity
facts, and episode transcripts of a few thousand characters (several ~1000-character
chunks each). Items are written through the memory surfaces' own datom shapes, in
transactions of 200 items, valid from dates spread over two years.

Build: `Recall(ledger, "none").catch_up()` over the whole ledger (rows/s without vectors)
beside a raw FTS5 (or PostgreSQL tsvector) insert of the same rows into a fresh table; and
`Recall(ledger, "local").catch_up()` on a second ledger of --embed-n rows of the same mix
(rows/s with embeddings) beside the bare embedder on 1,000 of those texts.

Vectors for the 100k hybrid queries are stand-ins unless --full-embed: 1,000 of the
index's rows are embedded for real and every row gets one of those vectors (latency
depends on how many vectors there are, not which; embedding 100k rows takes minutes on a
quiet 2-core box and about an hour on a busy one).

Queries: 200 generated questions, k=10, current time. Keel hybrid and full-text search
latency (p50/p95), interleaved with baselines on the same rows: the raw full-text MATCH
keel's store issues (LIMIT 10, and LIMIT 800 = keel's candidate depth), and a raw numpy
search over the same vectors (query embedding + one matrix product + top 10; the embedding
and the product are also shown apart). Targets (issue): p50 < 30 ms, p95 < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from keel.ledger import Ledger, Signer
from keel.memory import embedders
from keel.memory import vectors as vectors_module
from keel.memory.index_store import query_terms, to_blob
from keel.memory.memory import Memory, ensure_schema, fact_declaration
from keel.memory.recall import CANDIDATES, Recall

PG_BASE = os.environ.get("KEEL_TEST_PG", "postgresql://127.0.0.1:5432/test")
SEED = 7
ITEMS_PER_TX = 200
US = 1_000_000
NOW = int(time.time()) * US
SPAN = 2 * 365 * 86_400 * US

FIRST = [
    "Alice",
    "Bob",
    "Carmen",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiroshi",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Marco",
    "Nadia",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tariq",
    "Ursula",
    "Viktor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
]
LAST = [
    "Abbott",
    "Becker",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Huber",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Meyer",
    "Novak",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Usman",
    "Varga",
    "Weber",
    "Yilmaz",
]
PROJECTS = [
    "Atlas",
    "Borealis",
    "Cobalt",
    "Driftwood",
    "Ember",
    "Falcon",
    "Granite",
    "Harbor",
    "Ion",
    "Juniper",
    "Keystone",
    "Lantern",
    "Meridian",
    "Nimbus",
    "Orchard",
    "Pylon",
    "Quarry",
    "Ridge",
    "Sable",
    "Tundra",
]
COMPONENTS = [
    "billing service",
    "search index",
    "auth gateway",
    "data pipeline",
    "mobile app",
    "payments API",
    "reporting dashboard",
    "onboarding flow",
    "event bus",
    "CI pipeline",
    "backup job",
    "recommendation model",
    "invoice export",
    "admin console",
    "notification service",
    "feature flags",
    "rate limiter",
    "cache layer",
]
TOOLS = [
    "PostgreSQL",
    "SQLite",
    "Kafka",
    "Redis",
    "Terraform",
    "Kubernetes",
    "Grafana",
    "Prometheus",
    "Sentry",
    "GitHub Actions",
    "Airflow",
    "dbt",
    "Snowflake",
    "S3",
    "Nginx",
    "Envoy",
    "Celery",
    "FastAPI",
    "React",
    "Vault",
    "OpenTelemetry",
    "DuckDB",
]
STATES = [
    "blocked on review",
    "behind schedule",
    "ready for launch",
    "failing in staging",
    "paging too often",
    "over budget",
    "waiting for legal",
    "slower than last week",
    "leaking memory",
    "missing tests",
    "rolled back",
    "green again",
]
MEETINGS = [
    "standup",
    "planning",
    "retro",
    "one-to-one",
    "design review",
    "incident review",
    "all-hands",
    "customer call",
    "budget meeting",
    "hiring panel",
]
REASONS = [
    "it halves the hosting cost",
    "the team already knows it",
    "latency dropped by 40%",
    "the vendor contract ends in March",
    "it passed the security review",
    "it keeps the data in the EU",
    "the old setup paged us every night",
    "it is simpler to operate",
    "customers asked for it twice",
    "it scales past 10k rps",
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ROLES = [
    "staff engineer",
    "product manager",
    "designer",
    "SRE",
    "data scientist",
    "engineering manager",
    "support lead",
    "security engineer",
    "analyst",
    "CTO",
]
CITIES = [
    "Berlin",
    "Lisbon",
    "Warsaw",
    "Toronto",
    "Nairobi",
    "Osaka",
    "Austin",
    "Leeds",
    "Lyon",
    "Bangalore",
    "Porto",
    "Vienna",
]


class Text:
    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def pick(self, seq):
        return self.r.choice(seq)

    def person(self) -> str:
        return f"{self.pick(FIRST)} {self.pick(LAST)}"

    def capture(self) -> str:
        p = self.pick
        return p(
            [
                f"Note: {self.person()} says the {p(PROJECTS)} {p(COMPONENTS)} is {p(STATES)}; "
                f"check {p(TOOLS)} before {p(MONTHS)}.",
                f"Idea for {p(PROJECTS)}: move the {p(COMPONENTS)} to {p(TOOLS)} because "
                f"{p(REASONS)}.",
                f"TODO ask {self.person()} about the {p(COMPONENTS)} numbers from the "
                f"{p(MEETINGS)}.",
                f"Link from {self.person()}: postmortem for the {p(COMPONENTS)} outage, "
                f"{p(TOOLS)} config was wrong.",
            ]
        )

    def observation(self) -> str:
        p = self.pick
        return (
            f"In the {p(MEETINGS)}, {self.person()} said {p(PROJECTS)} will ship the "
            f"{p(COMPONENTS)} by {p(MONTHS)}; the {p(COMPONENTS)} is {p(STATES)} and "
            f"{p(TOOLS)} dashboards show it."
        )

    def decision(self) -> tuple[str, str]:
        p = self.pick
        tool = p(TOOLS)
        return (
            f"Use {tool} for the {p(PROJECTS)} {p(COMPONENTS)}",
            f"Because {p(REASONS)}; {self.person()} agreed after comparing it with "
            f"{p(TOOLS)} in the {p(MEETINGS)}. Revisit in {p(MONTHS)}.",
        )

    def episode(self, turns: int) -> str:
        out = []
        for _ in range(turns):
            out.append(f"user: {self.capture()} {self.observation()}")
            out.append(
                f"assistant: I looked at the {self.pick(COMPONENTS)}. {self.decision()[1]} "
                f"The {self.pick(TOOLS)} metrics for {self.pick(PROJECTS)} look "
                f"{self.pick(STATES)}."
            )
        return "\n".join(out)

    def query(self) -> str:
        p = self.pick
        return p(
            [
                f"what did {p(FIRST)} say about the {p(PROJECTS)} {p(COMPONENTS)}",
                f"why did we pick {p(TOOLS)} for the {p(COMPONENTS)}",
                f"when will {p(PROJECTS)} ship",
                f"{p(COMPONENTS)} outage {p(TOOLS)}",
                f"who is the {p(ROLES)} on {p(PROJECTS)}",
                f"decisions from the {p(MEETINGS)} about {p(COMPONENTS)}",
                f"is the {p(COMPONENTS)} still {p(STATES)}",
                f"where does {p(FIRST)} {p(LAST)} live",
            ]
        )


def when(r: random.Random) -> int:
    return NOW - SPAN + int(r.random() * SPAN)


def build_ledger(led: Ledger, n: int, log) -> dict[str, int]:
    """About n index rows of memory; returns the items written by kind."""
    ensure_schema(led)  # a bare ledger: declare what `keel init` declares for a home
    led.declare([fact_declaration(key) for key in ("role", "lives_in", "works_on")])
    mem = Memory(led)
    t = Text(SEED)
    r = t.r
    counts = {"capture": 0, "observation": 0, "decision": 0, "entity": 0, "fact": 0, "episode": 0}
    # Row budget: captures 35%, observations 25%, decisions 20% (two rows each), entity
    # names and facts 5%, episode chunks 10% (about 4 chunks per episode).
    plan = (
        ["capture"] * int(n * 0.35)
        + ["observation"] * int(n * 0.25)
        + ["decision"] * int(n * 0.10)
        + ["entity"] * int(n * 0.0125)
        + ["episode"] * int(n * 0.025)
    )
    r.shuffle(plan)
    ops: list[dict] = []
    for i, kind in enumerate(plan):
        at = when(r)
        e = f"#i{i}"
        if kind == "capture":
            ops += mem._item_ops(e, "capture", t.capture(), at=at)
        elif kind == "observation":
            ops += mem._item_ops(e, "observation", t.observation(), at=at, valid_from=at)
        elif kind == "decision":
            title, why = t.decision()
            ops += mem._item_ops(e, "decision", None, title=title, at=at, valid_from=at)
            ops.append({"op": "add", "e": e, "a": "decision/why", "v": why, "valid_from": at})
        elif kind == "entity":
            name = f"{t.person()} {i}"
            ent = f"entity:bench-{i}"
            ops += [
                {"op": "add", "e": ent, "a": "entity/slug", "v": f"bench-{i}"},
                {"op": "add", "e": ent, "a": "entity/name", "v": name},
                {"op": "add", "e": ent, "a": "entity/kind", "v": "person"},
                {"op": "add", "e": ent, "a": "mem/surface", "v": "entity"},
            ]
            for key, value in (
                ("role", f"{t.pick(ROLES)} on {t.pick(PROJECTS)}"),
                ("lives_in", t.pick(CITIES)),
                ("works_on", f"the {t.pick(PROJECTS)} {t.pick(COMPONENTS)}"),
            ):
                ops.append(
                    {"op": "add", "e": ent, "a": f"fact/{key}", "v": value, "valid_from": at}
                )
                counts["fact"] += 1
        else:
            text = t.episode(r.randint(6, 9))
            ops += mem._item_ops(e, "episode", text, title=f"session {i}", at=at, valid_from=at)
            ops.append({"op": "add", "e": e, "a": "episode/agent", "v": "bench", "valid_from": at})
        counts[kind] += 1
        if (i + 1) % ITEMS_PER_TX == 0:
            led.transact(ops, reason="bench")
            ops = []
            log(f"\rledger: {i + 1}/{len(plan)} items")
    if ops:
        led.transact(ops, reason="bench")
    log("\n")
    return counts


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))] if s else 0.0


def lat(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": pct(values, 50) * 1000,
        "p95_ms": pct(values, 95) * 1000,
        "mean_ms": statistics.fmean(values) * 1000,
    }


class RawFulltext:
    """The full-text query keel's store issues, straight to the database."""

    def __init__(self, led: Ledger):
        self.dsn = getattr(led.store, "dsn", None)
        if self.dsn:
            import psycopg

            self.conn = psycopg.connect(self.dsn, autocommit=True)
        else:
            path = Path(led.store.location)
            self.conn = sqlite3.connect(path.with_name(path.stem + ".recall.db"))

    def search(self, query: str, limit: int) -> list:
        terms = query_terms(query)
        if self.dsn:
            return self.conn.execute(
                "SELECT id, ts_rank_cd(tsv, q) AS r FROM recall_rows,"
                " to_tsquery('english', %s) q WHERE tsv @@ q ORDER BY r DESC LIMIT %s",
                [" | ".join(terms), limit],
            ).fetchall()
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms)
        return self.conn.execute(
            "SELECT rowid, rank FROM recall_fts WHERE recall_fts MATCH ? ORDER BY rank LIMIT ?",
            [match, limit],
        ).fetchall()

    def texts(self, limit: int) -> list[str]:
        return [
            r[0]
            for r in self.conn.execute(
                f"SELECT text FROM recall_rows ORDER BY id LIMIT {int(limit)}"
            ).fetchall()
        ]

    def insert_rate(self, texts: list[str]) -> float:
        """Rows/s of a raw full-text insert of these texts into a fresh table."""
        if self.dsn:
            schema = f"bench_raw_{uuid.uuid4().hex[:8]}"
            self.conn.execute(f"CREATE SCHEMA {schema}")
            try:
                self.conn.execute(
                    f"CREATE TABLE {schema}.t (id BIGINT PRIMARY KEY, text TEXT, tsv tsvector "
                    "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED)"
                )
                self.conn.execute(f"CREATE INDEX ON {schema}.t USING GIN (tsv)")
                start = time.perf_counter()
                with self.conn.transaction(), self.conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {schema}.t (id, text) VALUES (%s, %s)", list(enumerate(texts))
                    )
                return len(texts) / (time.perf_counter() - start)
            finally:
                self.conn.execute(f"DROP SCHEMA {schema} CASCADE")
        tmp = Path(tempfile.mkdtemp(prefix="keel-bench-fts-"))
        try:
            conn = sqlite3.connect(tmp / "raw.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT)")
            conn.execute(
                "CREATE VIRTUAL TABLE f USING fts5(text, content='t', content_rowid='id',"
                " tokenize='porter unicode61 remove_diacritics 2')"
            )
            start = time.perf_counter()
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t (id, text) VALUES (?, ?)", list(enumerate(texts, 1)))
            conn.execute("INSERT INTO f (rowid, text) SELECT id, text FROM t")
            conn.execute("COMMIT")
            elapsed = time.perf_counter() - start
            conn.close()
            return len(texts) / elapsed
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class Targets:
    """Fresh ledgers (SQLite files or PostgreSQL schemas), all removed at the end."""

    def __init__(self, store: str):
        self.store = store
        self.tmp = Path(tempfile.mkdtemp(prefix="keel-bench-recall-scale-"))
        self.schemas: list[str] = []

    def new(self) -> Ledger:
        if self.store == "sqlite":
            path = self.tmp / uuid.uuid4().hex / "keel.db"
            path.parent.mkdir()
            target = str(path)
        else:
            import psycopg

            schema = f"bench_rscale_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            self.schemas.append(schema)
            target = f"{PG_BASE}?options=-csearch_path%3D{schema}"
        op = Signer.generate("operator")
        led = Ledger.open(target, signer=op)
        led.register_identity("operator", op.public_key, "operator")
        return led

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.schemas:
            import psycopg

            with psycopg.connect(PG_BASE, autocommit=True) as conn:
                for schema in self.schemas:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")


def stand_in_vectors(rec: Recall, raw: RawFulltext, emb: Any, sample: int, log) -> dict:
    """Give every row of a full-text index the real vector of one of `sample` of its rows
    (embedded with the default embedder), moved a little at random.

    Hybrid latency depends on how many vectors there are, not on which, so this measures
    the same query path at full size without embedding every row on a busy 2-core box."""
    rows, _ = rec.store.load()
    ids = [r[0] for r in rows]
    step = max(1, len(ids) // sample)
    picked = ids[::step][:sample]
    texts = rec.store.text_of(picked)
    sample_texts = [texts[i] for i in picked]
    start = time.perf_counter()
    vectors = emb.embed(sample_texts)
    embed_s = time.perf_counter() - start
    # Each row: one of the real vectors, moved a little at random, so no two rows tie
    # (an approximate scan is judged against an exact one: ties would blur that).
    noise = np.random.default_rng(SEED).standard_normal((len(ids), vectors.shape[1]))
    noisy = vectors[np.arange(len(ids)) % len(vectors)] + 0.5 * noise / np.sqrt(vectors.shape[1])
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    blobs = [to_blob(v) for v in noisy]
    store = rec.store
    store.begin()
    cur = store.conn.cursor()
    cur.executemany(
        store._q("UPDATE recall_rows SET vec = ? WHERE id = ?"),
        [(blobs[j], rid) for j, rid in enumerate(ids)],
    )
    store.set_meta("embedder", emb.name)
    store.commit()
    log(f"stand-in vectors: {len(vectors)} embedded in {embed_s:.0f} s, {len(ids)} rows\n")
    return {"sample": len(vectors), "rows": len(ids), "embed_texts_per_s": len(vectors) / embed_s}


def approximation(rec: Recall, qs: list[str]) -> dict[str, Any]:
    """What the quantised vector scan costs and loses against the exact scan, on the same
    index and queries: hybrid latency both ways, interleaved, and how much of the exact
    top 5 (and of the dense top 10) the approximate answer holds."""
    saved = vectors_module.APPROXIMATE
    t_exact, t_approx, kept5, kept10 = [], [], [], []
    live = np.ones(rec.cache.vectors.rows, dtype=bool)
    try:
        for q in qs:
            got = {}
            for label, threshold, times in (
                ("approx", saved, t_approx),
                ("exact", 10**12, t_exact),
            ):
                vectors_module.APPROXIMATE = threshold
                s = time.perf_counter()
                res = rec.search(q, k=5)
                times.append(time.perf_counter() - s)
                got[label] = {r["id"] + r["provenance"]["attribute"] for r in res["results"]}
            exact = got["exact"]
            kept5.append(len(exact & got["approx"]) / len(exact) if exact else 1.0)
            v = rec.embedder.embed([q])[0]
            vectors_module.APPROXIMATE = saved
            a, _ = rec.cache.vectors.nearest(v, live, 10)
            e, _ = rec.cache.vectors.nearest(v, live, 10, exact=True)
            kept10.append(len(set(a.tolist()) & set(e.tolist())) / 10)
    finally:
        vectors_module.APPROXIMATE = saved
    return {
        "hybrid_exact": lat(t_exact),
        "hybrid_approximate": lat(t_approx),
        "top5_kept": statistics.fmean(kept5),
        "dense_top10_kept": statistics.fmean(kept10),
    }


def run(
    n: int, queries: int, store: str, profile: Path | None, embed_n: int, full_embed: bool, log
) -> dict[str, Any]:
    targets = Targets(store)
    out: dict[str, Any] = {"store": store, "n_target": n, "queries": queries}
    try:
        led = targets.new()
        start = time.perf_counter()
        out["items"] = build_ledger(led, n, log)
        out["ledger_load_s"] = time.perf_counter() - start

        # -- full text: build, then query beside the raw MATCH ---------------------------
        rec = Recall(led, embedder="none")
        start = time.perf_counter()
        rows = rec.catch_up(lambda c, h: log(f"\rindex (fulltext): tx {c}/{h}"))
        ft_s = time.perf_counter() - start
        log("\n")
        out["rows"] = rows
        out["build_fulltext"] = {"rows": rows, "seconds": ft_s, "rows_per_s": rows / ft_s}
        raw = RawFulltext(led)
        all_texts = raw.texts(rows)
        out["baseline_fts_insert_rows_per_s"] = raw.insert_rate(all_texts)
        del all_texts
        qgen = Text(SEED + 1)
        qs = [qgen.query() for _ in range(queries)]
        for q in qs[:5]:  # warm-up
            rec.search(q, k=10)
            raw.search(q, 10)
        t_ft, t_f10, t_f800 = [], [], []
        for q in qs:
            s = time.perf_counter()
            rec.search(q, k=10)
            t_ft.append(time.perf_counter() - s)
            s = time.perf_counter()
            raw.search(q, 10)
            t_f10.append(time.perf_counter() - s)
            s = time.perf_counter()
            raw.search(q, CANDIDATES * 4)
            t_f800.append(time.perf_counter() - s)
        out["query_fulltext"] = lat(t_ft)
        out["baseline_fts_limit10"] = lat(t_f10)
        out["baseline_fts_limit800"] = lat(t_f800)
        if profile:
            _profile(profile / f"recall_fulltext_{store}.txt", rec, qs[:50])
        log("fulltext queries done\n")

        # -- vectors for every row: real (slow) or stand-in -------------------------------
        emb = embedders.load("local")
        emb.embed(["warm up"])
        if full_embed:
            rec.store.clear()
            rec.close()
            rec = Recall(led, embedder="local")
            start = time.perf_counter()
            got = rec.catch_up(lambda c, h: log(f"\rindex (hybrid): tx {c}/{h}"))
            secs = time.perf_counter() - start
            out["build_hybrid_full"] = {"rows": got, "seconds": secs, "rows_per_s": got / secs}
            out["vectors_kind"] = "real"
        else:
            out["stand_in"] = stand_in_vectors(rec, raw, emb, 1000, log)
            rec.close()
            rec = Recall(led, embedder="local")
            out["vectors_kind"] = "stand-in"
        assert rec.mode == "hybrid", rec.note

        # -- hybrid queries beside raw numpy ----------------------------------------------
        _rows, blobs = rec.store.load()
        matrix = np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs if b is not None])
        out["vectors"] = list(matrix.shape)
        for q in qs[:5]:
            rec.search(q, k=10)
        t_h, t_np, t_emb, t_mm, hits = [], [], [], [], []
        for q in qs:
            s = time.perf_counter()
            res = rec.search(q, k=10)
            t_h.append(time.perf_counter() - s)
            hits.append(len(res["results"]))
            s = time.perf_counter()
            v = emb.embed([q])[0]
            m = time.perf_counter()
            sims = matrix @ v
            top = np.argpartition(-sims, 10)[:10]
            top[np.argsort(-sims[top])]
            e = time.perf_counter()
            t_np.append(e - s)
            t_emb.append(m - s)
            t_mm.append(e - m)
        out["query_hybrid"] = lat(t_h)
        out["query_hybrid"]["mean_results"] = statistics.fmean(hits)
        out["approximation"] = approximation(rec, qs)
        out["baseline_numpy"] = lat(t_np)
        out["baseline_numpy_embed_only"] = lat(t_emb)
        out["baseline_numpy_matmul_only"] = lat(t_mm)
        if profile:
            _profile(profile / f"recall_hybrid_{store}.txt", rec, qs[:50])
        rec.close()
        raw.conn.close()
        led.close()
        log("hybrid queries done\n")

        # -- build rate with embeddings, on a smaller ledger of the same mix --------------
        led2 = targets.new()
        build_ledger(led2, embed_n, lambda _m: None)
        rec2 = Recall(led2, embedder="local")
        start = time.perf_counter()
        got = rec2.catch_up()
        secs = time.perf_counter() - start
        out["build_hybrid"] = {"rows": got, "seconds": secs, "rows_per_s": got / secs}
        sample = RawFulltext(led2).texts(1000)
        start = time.perf_counter()
        emb.embed(sample)
        out["baseline_embed_texts_per_s"] = len(sample) / (time.perf_counter() - start)
        rec2.close()
        led2.close()

        out["targets"] = {
            mode: {
                "p50_ok": out[f"query_{mode}"]["p50_ms"] < 30,
                "p95_ok": out[f"query_{mode}"]["p95_ms"] < 100,
            }
            for mode in ("hybrid", "fulltext")
        }
        out["loadavg"] = os.getloadavg()
    finally:
        targets.close()
    return out


def _profile(path: Path, rec: Recall, qs: list[str]) -> None:
    from pyinstrument import Profiler

    path.parent.mkdir(parents=True, exist_ok=True)
    prof = Profiler(interval=0.0005)
    prof.start()
    for q in qs:
        rec.search(q, k=10)
    prof.stop()
    path.write_text(prof.output_text(unicode=False, color=False))


def show(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width))
    b = Table(
        "build",
        "keel rows/s",
        "baseline",
        "baseline /s",
        "ratio",
        title=f"{r['store']}: {r['rows']:,} index rows ({r['vectors'][0]:,} {r['vectors_kind']} "
        f"vectors), ledger loaded in {r['ledger_load_s']:.0f} s",
    )
    bh, bf = r["build_hybrid"], r["build_fulltext"]
    b.add_row(
        f"with embeddings ({bh['rows']:,} rows, {bh['seconds']:.0f} s)",
        f"{bh['rows_per_s']:,.0f}",
        "bare embedder, 1,000 of the row texts",
        f"{r['baseline_embed_texts_per_s']:,.0f}",
        f"{bh['rows_per_s'] / r['baseline_embed_texts_per_s']:.2f}×",
    )
    b.add_row(
        f"full text only ({bf['rows']:,} rows, {bf['seconds']:.0f} s)",
        f"{bf['rows_per_s']:,.0f}",
        "raw FTS insert of the same rows",
        f"{r['baseline_fts_insert_rows_per_s']:,.0f}",
        f"{bf['rows_per_s'] / r['baseline_fts_insert_rows_per_s']:.2f}×",
    )
    console.print(b)
    q = Table(
        "query (k=10)",
        "p50 ms",
        "p95 ms",
        "baseline",
        "p50 ms",
        "p95 ms",
        "p50 ratio",
        "target p50<30 / p95<100",
        title=f"{r['queries']} queries",
    )
    for mode, base in (
        ("hybrid", "baseline_numpy"),
        ("hybrid", "baseline_fts_limit10"),
        ("fulltext", "baseline_fts_limit10"),
        ("fulltext", "baseline_fts_limit800"),
    ):
        k, bl = r[f"query_{mode}"], r[base]
        t = r["targets"][mode]
        q.add_row(
            f"keel {mode}",
            f"{k['p50_ms']:.1f}",
            f"{k['p95_ms']:.1f}",
            base.removeprefix("baseline_"),
            f"{bl['p50_ms']:.2f}",
            f"{bl['p95_ms']:.2f}",
            f"{k['p50_ms'] / bl['p50_ms']:.1f}×",
            f"{'yes' if t['p50_ok'] else 'NO'} / {'yes' if t['p95_ok'] else 'NO'}",
        )
    for part in ("baseline_numpy_embed_only", "baseline_numpy_matmul_only"):
        bl = r[part]
        q.add_row(
            "",
            "",
            "",
            part.removeprefix("baseline_"),
            f"{bl['p50_ms']:.2f}",
            f"{bl['p95_ms']:.2f}",
            "",
            "",
        )
    console.print(q)
    a = r["approximation"]
    t = Table(
        "hybrid search, k=5",
        "p50 ms",
        "p95 ms",
        "exact top 5 kept",
        "dense top 10 kept",
        title="quantised vector scan against the exact scan (same index, interleaved)",
    )
    ex, ap = a["hybrid_exact"], a["hybrid_approximate"]
    t.add_row("exact float32 scan (baseline)", f"{ex['p50_ms']:.1f}", f"{ex['p95_ms']:.1f}", "", "")
    t.add_row(
        f"quantised scan + exact re-scoring ({ap['p50_ms'] / ex['p50_ms']:.2f}× p50)",
        f"{ap['p50_ms']:.1f}",
        f"{ap['p95_ms']:.1f}",
        f"{a['top5_kept']:.4f}",
        f"{a['dense_top10_kept']:.4f}",
    )
    console.print(t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="about this many index rows")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--embed-n", type=int, default=5000, help="rows for the build rate with embeddings"
    )
    parser.add_argument(
        "--full-embed",
        action="store_true",
        help="embed all N rows for real (slow) instead of stand-in vectors for the hybrid queries",
    )
    parser.add_argument("--profile", type=Path, help="write pyinstrument profiles here")
    args = parser.parse_args()
    embedders.load("local")  # fail early if the local embedder is missing

    def log(msg: str) -> None:
        print(msg, end="", file=sys.stderr, flush=True)

    result = run(args.n, args.queries, args.store, args.profile, args.embed_n, args.full_embed, log)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)


if __name__ == "__main__":
    main()
