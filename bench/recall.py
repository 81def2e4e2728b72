"""Recall benchmark on the LongMemEval format: session-level retrieval, keel against BM25.

    uv run python bench/recall.py PATH [--json] [--k 1,5,10] [--store sqlite|postgres]
                                       [--limit N] [--modes hybrid,fulltext,bm25]

PATH is any file in the LongMemEval format (a JSON list of instances with question_id,
question_type, question, answer, question_date, haystack_dates, haystack_session_ids,
haystack_sessions, answer_session_ids); `bench/fixtures/keel_memory.json` is one.

For each instance a fresh ledger (a temporary SQLite file, or a fresh PostgreSQL schema
with --store postgres, from KEEL_TEST_PG) gets every haystack session as an episode,
valid from its haystack date, whose title and session handle are *positional* ("s07"),
never the original session id, so labels cannot leak into ranking. The question is then
asked with `valid_at` = the question date, results are mapped back to session ids, and
recall_any@k, recall_all@k and nDCG@k (binary relevance, session level) are computed.

Modes, side by side on the same sessions:
- keel hybrid: `Recall(ledger, embedder="local")` (FTS5 BM25 + USE vectors, RRF, recency);
- keel fulltext: `Recall(ledger, embedder="none")`, the same index rebuilt without vectors;
- bm25: `rank_bm25.BM25Okapi` over the same session texts, lower-case word tokens, no time
  filter. This is the baseline the ratios are taken against.
Latency is the wall time of the search call alone (p50/p95), the index already built.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from rank_bm25 import BM25Okapi

from keel.ledger import Ledger, Signer
from keel.memory.memory import Memory, ensure_schema
from keel.memory.recall import Recall

PG_BASE = os.environ.get("KEEL_TEST_PG", "postgresql://127.0.0.1:5432/test")
MODES = ("hybrid", "fulltext", "bm25")
DEPTH = 50  # results asked of each mode; metrics look at the top k of these
_DATE = re.compile(
    r"(\d{4})[/-](\d{2})[/-](\d{2})(?:\s*\(\w+\))?[\sT]*(\d{2}):(\d{2})(?::(\d{2}))?"
)


def parse_date(text: str) -> str:
    """LongMemEval's '2023/05/20 (Sat) 02:21' (or ISO) as an ISO 8601 UTC instant."""
    m = _DATE.search(text or "")
    if not m:
        raise ValueError(f"cannot read the date {text!r}")
    y, mo, d, h, mi, s = m.groups()
    return datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def render(session: list[dict]) -> str:
    return "\n".join(f"{t.get('role', '?')}: {t.get('content', '')}" for t in session)


def handle(i: int, n: int) -> str:
    return f"s{i:0{max(2, len(str(n - 1)))}d}"


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


# -- metrics ---------------------------------------------------------------------------------
def metrics(ranked: list[str], relevant: set[str], k: int) -> dict[str, float]:
    """recall_any@k, recall_all@k and nDCG@k with binary relevance for one question."""
    top = ranked[:k]
    hits = [1.0 if r in relevant else 0.0 for r in top]
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return {
        f"recall_any@{k}": float(any(hits)),
        f"recall_all@{k}": float(relevant <= set(top)),
        f"ndcg@{k}": dcg / ideal if ideal else 0.0,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


# -- stores ----------------------------------------------------------------------------------
class Stores:
    """Fresh ledgers: temporary SQLite files or PostgreSQL schemas, all removed at the end."""

    def __init__(self, kind: str):
        self.kind = kind
        self.tmp = Path(tempfile.mkdtemp(prefix="keel-bench-recall-"))
        self.schemas: list[str] = []

    def new(self) -> str:
        if self.kind == "sqlite":
            path = self.tmp / uuid.uuid4().hex / "keel.db"
            path.parent.mkdir()
            return str(path)
        import psycopg

        schema = f"bench_recall_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        sep = "&" if "?" in PG_BASE else "?"
        return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"

    def drop(self, target: str) -> None:
        if self.kind == "sqlite":
            shutil.rmtree(Path(target).parent, ignore_errors=True)
            return
        import psycopg

        schema = target.rsplit("%3D", 1)[1]
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        self.schemas.remove(schema)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        for schema in list(self.schemas):
            self.drop(f"x%3D{schema}")


# -- one instance ----------------------------------------------------------------------------
def load_instance(led: Ledger, inst: dict) -> dict[str, str]:
    """Store the haystack as episodes under positional handles; returns handle -> session id."""
    ensure_schema(led)  # a bare ledger: declare what `keel init` declares for a home
    mem = Memory(led)
    sessions = inst["haystack_sessions"]
    back: dict[str, str] = {}
    for i, (sid, date, session) in enumerate(
        zip(inst["haystack_session_ids"], inst["haystack_dates"], sessions, strict=True)
    ):
        h = handle(i, len(sessions))
        back[h] = sid
        text = render(session).strip() or "(empty session)"
        mem.add_episode(text, agent="longmemeval", title=h, session=h, at=parse_date(date))
    return back


def keel_rank(rec: Recall, inst: dict, back: dict[str, str]) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = rec.search(inst["question"], valid_at=parse_date(inst["question_date"]), k=DEPTH)
    elapsed = time.perf_counter() - start
    ranked: list[str] = []
    for r in out["results"]:
        sid = back.get(r.get("title") or "")
        if sid is not None and sid not in ranked:
            ranked.append(sid)
    return ranked, elapsed


def bm25_rank(inst: dict) -> tuple[list[str], float]:
    docs = [tokens(render(s)) or ["_"] for s in inst["haystack_sessions"]]
    bm25 = BM25Okapi(docs)
    ids = inst["haystack_session_ids"]
    start = time.perf_counter()
    scores = bm25.get_scores(tokens(inst["question"]))
    order = sorted(range(len(ids)), key=lambda i: -scores[i])[:DEPTH]
    elapsed = time.perf_counter() - start
    return [ids[i] for i in order], elapsed


def run_instance(stores: Stores, inst: dict, modes: tuple[str, ...]) -> dict[str, Any]:
    ranked: dict[str, list[str]] = {}
    latency: dict[str, float] = {}
    index_s: dict[str, float] = {}
    notes: dict[str, str] = {}
    keel_modes = [m for m in ("hybrid", "fulltext") if m in modes]
    if keel_modes:
        target = stores.new()
        op = Signer.generate("operator")
        led = Ledger.open(target, signer=op)
        try:
            led.register_identity("operator", op.public_key, "operator")
            back = load_instance(led, inst)
            # Hybrid first: a fulltext Recall on an index built with vectors simply ignores
            # them, and its reindex() rebuilds the rows without vectors.
            for mode in keel_modes:
                rec = Recall(led, embedder="local" if mode == "hybrid" else "none")
                try:
                    start = time.perf_counter()
                    rec.reindex() if mode == "fulltext" else rec.catch_up()
                    index_s[mode] = time.perf_counter() - start
                    if rec.mode != mode:
                        notes[mode] = f"ran as {rec.mode}: {rec.note}"
                    ranked[mode], latency[mode] = keel_rank(rec, inst, back)
                finally:
                    rec.close()
        finally:
            led.close()
            stores.drop(target)
    if "bm25" in modes:
        ranked["bm25"], latency["bm25"] = bm25_rank(inst)
    return {"ranked": ranked, "latency": latency, "index_s": index_s, "notes": notes}


# -- the run ---------------------------------------------------------------------------------
def evaluate(
    data: list[dict],
    *,
    ks: tuple[int, ...] = (1, 5, 10),
    store: str = "sqlite",
    modes: tuple[str, ...] = MODES,
    progress: bool = True,
) -> dict[str, Any]:
    stores = Stores(store)
    per_question: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for n, inst in enumerate(data, start=1):
            ids = set(inst["haystack_session_ids"])
            relevant = set(inst.get("answer_session_ids") or []) & ids
            if not relevant:
                skipped.append(inst["question_id"])
                continue
            got = run_instance(stores, inst, modes)
            row: dict[str, Any] = {
                "question_id": inst["question_id"],
                "question_type": inst.get("question_type", "?"),
                "sessions": len(ids),
                "relevant": sorted(relevant),
                "modes": {},
            }
            for mode in modes:
                ranked = got["ranked"][mode]
                m: dict[str, Any] = {}
                for k in ks:
                    m.update(metrics(ranked, relevant, k))
                m["latency_ms"] = got["latency"][mode] * 1000
                m["top"] = ranked[:10]
                m["evidence_ranks"] = [
                    ranked.index(r) + 1 if r in ranked else None for r in sorted(relevant)
                ]
                if mode in got["index_s"]:
                    m["index_s"] = got["index_s"][mode]
                if mode in got["notes"]:
                    m["note"] = got["notes"][mode]
                row["modes"][mode] = m
            per_question.append(row)
            if progress:
                print(f"\r{n}/{len(data)} {inst['question_id']}", end="", file=sys.stderr)
    finally:
        stores.close()
        if progress:
            print(file=sys.stderr)
    return summarise(per_question, ks, modes, store, skipped)


def _mean(rows: list[dict], mode: str, key: str) -> float:
    return statistics.fmean(r["modes"][mode][key] for r in rows) if rows else float("nan")


def summarise(
    rows: list[dict], ks: tuple[int, ...], modes: tuple[str, ...], store: str, skipped: list
) -> dict[str, Any]:
    keys = [f"{m}@{k}" for m in ("recall_any", "recall_all", "ndcg") for k in ks]
    by_type: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_type[r["question_type"]].append(r)
    overall: dict[str, dict] = {}
    for mode in modes:
        lat = [r["modes"][mode]["latency_ms"] for r in rows]
        overall[mode] = {key: _mean(rows, mode, key) for key in keys}
        overall[mode]["latency_p50_ms"] = percentile(lat, 50)
        overall[mode]["latency_p95_ms"] = percentile(lat, 95)
        idx = [r["modes"][mode]["index_s"] for r in rows if "index_s" in r["modes"][mode]]
        if idx:
            overall[mode]["index_s_total"] = sum(idx)
    types = {
        t: {
            "questions": len(rs),
            **{mode: {key: _mean(rs, mode, key) for key in keys} for mode in modes},
        }
        for t, rs in sorted(by_type.items())
    }
    ratios = {}
    if "bm25" in modes:
        for mode in modes:
            if mode != "bm25":
                ratios[mode] = {
                    key: (overall[mode][key] / overall["bm25"][key])
                    if overall["bm25"][key]
                    else None
                    for key in keys
                }
    return {
        "store": store,
        "questions": len(rows),
        "skipped_no_evidence": skipped,
        "k": list(ks),
        "depth": DEPTH,
        "overall": overall,
        "ratio_to_bm25": ratios,
        "by_type": types,
        "per_question": rows,
    }


def print_tables(result: dict[str, Any], source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    ks = result["k"]
    modes = list(result["overall"])
    keys = [f"{m}@{k}" for m in ("recall_any", "recall_all", "ndcg") for k in ks]
    console = Console(width=max(160, Console().width))
    table = Table(
        "mode",
        *[k.replace("recall_", "r_") for k in keys],
        "p50 ms",
        "p95 ms",
        title=f"{source}: {result['questions']} questions, store {result['store']}",
    )
    for mode in modes:
        o = result["overall"][mode]
        table.add_row(
            mode,
            *[f"{o[k]:.3f}" for k in keys],
            f"{o['latency_p50_ms']:.1f}",
            f"{o['latency_p95_ms']:.1f}",
        )
    for mode, r in result["ratio_to_bm25"].items():
        table.add_row(f"{mode} ÷ bm25", *[f"{r[k]:.2f}×" if r[k] else "—" for k in keys], "", "")
    console.print(table)
    show = [k for k in keys if k.endswith(("@5", "@10")) or k == "recall_any@1"]
    bt = Table("question type", "n", "mode", *show, title="by question type")
    for t, row in result["by_type"].items():
        for i, mode in enumerate(modes):
            bt.add_row(
                t if i == 0 else "",
                str(row["questions"]) if i == 0 else "",
                mode,
                *[f"{row[mode][k]:.3f}" for k in show],
            )
    console.print(bt)
    if result["skipped_no_evidence"]:
        console.print(f"skipped (no evidence session): {len(result['skipped_no_evidence'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a LongMemEval-format JSON file")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--k", default="1,5,10", help="cut-offs, comma-separated")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args(argv)
    data = json.loads(Path(args.path).read_text())
    if args.limit:
        data = data[: args.limit]
    ks = tuple(int(k) for k in args.k.split(",") if k.strip())
    modes = tuple(m for m in args.modes.split(",") if m in MODES)
    result = evaluate(data, ks=ks, store=args.store, modes=modes)
    result["file"] = str(args.path)
    if args.json:
        print(json.dumps(result))
    else:
        print_tables(result, Path(args.path).name)


if __name__ == "__main__":
    main()
