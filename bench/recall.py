"""Recall benchmark on the LongMemEval format: session-level retrieval, keel against BM25,
a plain dense retriever and a peer memory library.

    uv run python bench/recall.py PATH [--json] [--k 1,5,10] [--store sqlite|postgres]
                                       [--limit N] [--split dev|test|all]
                                       [--modes hybrid,fulltext,dense,bm25,dense-baseline,
                                                peer:taosmd] [--explain-file OUT.json]

PATH is any file in the LongMemEval format (a JSON list of instances with question_id,
question_type, question, answer, question_date, haystack_dates, haystack_session_ids,
haystack_sessions, answer_session_ids, and optionally split = "dev" | "test");
`bench/fixtures/keel_memory.json` is one. `--split dev|test` keeps the instances marked so.

For each instance a fresh ledger (a temporary SQLite file, or a fresh PostgreSQL schema
with --store postgres, from KEEL_TEST_PG) gets every haystack session as an episode,
valid from its haystack date, with no title and a *positional* session handle ("s07"),
never the original session id, so labels cannot leak into ranking. The question is then
asked with `valid_at` = the question date, results are mapped back to session ids by
their entity id, and
recall_any@k, recall_all@k and nDCG@k (binary relevance, session level) are computed.

Modes, side by side on the same sessions:
- hybrid: keel's default recall, `Recall(ledger, embedder=<the default embedder>)`,
  `search(mode=None)`;
- fulltext: the same keel index, `search(mode="fulltext")`;
- dense: the same keel index, `search(mode="dense")`. One ledger and one index per
  instance serve all three (built once, with the default embedder);
- bm25: `rank_bm25.BM25Okapi` over the same session texts, lower-case word tokens, no time
  filter. This is the baseline the ratios are taken against;
- dense-baseline: a plain dense retriever with the same embedder keel uses by default
  (`keel.memory.embedders.load()`): every turn of every session (`role: content`) is
  embedded, a session scores its best turn's cosine with the question, and sessions dated
  after the question date are dropped, so it is judged like keel's valid-time filter;
- peer:taosmd: the taOSmd memory library (PyPI `taosmd`, dependency group `bench-peers`),
  its `VectorMemory` in a temporary SQLite file, one row per session (the rendered session
  text), searched with `search(hybrid=True, fusion="rrf")` (its presets' fusion: RRF of
  cosine ranks and keyword ranks). taOSmd ships no weights: its embedder is reached over
  its own "qmd" HTTP protocol, which the bench answers in-process with keel's default
  embedder (taOSmd sends at most the first 512 characters of a text). No network, no LLM.
  It has no valid time: sessions dated after the question date are dropped from its
  answer, as for dense-baseline. A peer whose package does not import is skipped with a
  note, never a crash.

Embeddings are cached across instances (filler sessions repeat): one wrapper with the
embedder's `.name` and a text -> vector memo serves keel (`Recall(led, embedder=wrapper)`),
dense-baseline and the peer. The question is dropped from the memo before each timed
search, so every mode's latency includes embedding the query (the questions are unique).
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

import numpy as np
from rank_bm25 import BM25Okapi

from keel.ledger import Ledger, Signer
from keel.memory import embedders
from keel.memory import vectors as vectors_module
from keel.memory.memory import Memory, ensure_schema
from keel.memory.recall import Recall

PG_BASE = os.environ.get("KEEL_TEST_PG", "postgresql://127.0.0.1:5432/test")
KEEL_MODES = ("hybrid", "fulltext", "dense")  # one keel index, three retrievers
MODES = (*KEEL_MODES, "bm25", "dense-baseline")
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
def scratch(prefix: str) -> Path:
    """A temporary folder, in memory (/dev/shm) where there is one: every store here is
    thrown away, and the bench measures ranking and search time, not disk syncs (taOSmd
    commits each row it adds; on disk that was 90% of a run)."""
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


class Stores:
    """Fresh ledgers: temporary SQLite files or PostgreSQL schemas, all removed at the end."""

    def __init__(self, kind: str):
        self.kind = kind
        self.tmp = scratch("keel-bench-recall-")
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


# -- embeddings, cached across instances ------------------------------------------------------
class CachedEmbedder:
    """An embedder with the same `.name` as the one it wraps and a text -> vector memo, so
    sessions that repeat across instances are embedded once per run."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.name = inner.name
        self.memo: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            for t, v in zip(missing, self.inner.embed(missing), strict=True):
                self.memo[t] = np.asarray(v, dtype=np.float32)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.memo[t] for t in texts])

    def forget(self, text: str) -> None:
        """Drop one text, so that the next search pays for embedding it (a real latency)."""
        self.memo.pop(text, None)


_EMBEDDER: list[CachedEmbedder | None] = []


def default_embedder() -> CachedEmbedder | None:
    """keel's default embedder (`embedders.load()`), wrapped in the run's memo; None when
    it cannot run here."""
    if not _EMBEDDER:
        try:
            inner = embedders.load()
        except embedders.Unavailable:
            inner = None
        _EMBEDDER.append(CachedEmbedder(inner) if inner is not None else None)
    return _EMBEDDER[0]


# -- peers: other local memory libraries -------------------------------------------------------
class Peer:
    """A memory library from PyPI run on the same sessions. `load()` imports it lazily and
    raises PeerUnavailable when it cannot run here."""

    package = ""

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.package)
        except PackageNotFoundError:
            return "?"

    def load(self) -> None:
        raise NotImplementedError

    def rank(
        self, inst: dict, emb: CachedEmbedder
    ) -> tuple[list[str], float, float]:  # ranked ids, search s, index s
        raise NotImplementedError


class PeerUnavailable(Exception):
    pass


class _QmdReply:
    status_code = 200

    def __init__(self, vector: list[float]):
        self.vector = vector

    def json(self) -> dict:
        return {"embedding": self.vector}


class _QmdClient:
    """taOSmd's "qmd" embedding protocol (POST {url}/embed {"text": ...} -> {"embedding":
    [...]}) answered in-process by keel's default embedder: no server, no network."""

    def __init__(self, emb: CachedEmbedder):
        self.emb = emb

    async def post(self, url: str, json: dict, timeout: float | None = None) -> _QmdReply:
        return _QmdReply(self.emb.embed([json["text"]])[0].tolist())


class TaosmdPeer(Peer):
    """taOSmd's VectorMemory: one row per session, hybrid search with RRF fusion."""

    package = "taosmd"

    def load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from taosmd.vector_memory import VectorMemory
        except ImportError as exc:
            raise PeerUnavailable(
                f"{self.package} does not import ({exc}); "
                "install it with 'uv sync --group bench-peers'"
            ) from exc
        self.cls = VectorMemory

    def rank(self, inst: dict, emb: CachedEmbedder) -> tuple[list[str], float, float]:
        import asyncio

        return asyncio.run(self._rank(inst, emb))

    async def _rank(self, inst: dict, emb: CachedEmbedder) -> tuple[list[str], float, float]:
        import logging

        logging.getLogger("taosmd").setLevel(logging.ERROR)
        tmp = scratch("keel-bench-taosmd-")
        vm = self.cls(str(tmp / "v.db"), qmd_url="http://in-process", embed_mode="qmd")
        try:
            await vm.init(http_client=_QmdClient(emb))
            sessions = inst["haystack_sessions"]
            start = time.perf_counter()
            for i, session in enumerate(sessions):
                text = render(session).strip() or "(empty session)"
                await vm.add(text, metadata={"h": handle(i, len(sessions))})
            index_s = time.perf_counter() - start
            emb.forget(inst["question"])
            start = time.perf_counter()
            out = await vm.search(inst["question"], limit=len(sessions), hybrid=True, fusion="rrf")
            elapsed = time.perf_counter() - start
        finally:
            await vm.close()
            shutil.rmtree(tmp, ignore_errors=True)
        back = {handle(i, len(sessions)): sid for i, sid in enumerate(inst["haystack_session_ids"])}
        later = _later_sessions(inst)
        ranked: list[str] = []
        for r in out:
            sid = back.get((r.get("metadata") or {}).get("h", ""))
            if sid is not None and sid not in later and sid not in ranked:
                ranked.append(sid)
        return ranked[:DEPTH], elapsed, index_s


PEERS: dict[str, Peer] = {"peer:taosmd": TaosmdPeer()}
ALL_MODES = (*MODES, *PEERS)


def _later_sessions(inst: dict) -> set[str]:
    """The sessions dated after the question: they had not happened when it was asked."""
    asked = parse_date(inst["question_date"])
    return {
        sid
        for sid, date in zip(inst["haystack_session_ids"], inst["haystack_dates"], strict=True)
        if parse_date(date) > asked
    }


# -- one instance ----------------------------------------------------------------------------
def load_instance(led: Ledger, inst: dict) -> dict[str, str]:
    """Store the haystack as episodes (no title: a LongMemEval session has none, and a
    made-up one would be a searchable row of its own) under positional session handles;
    returns episode entity id -> session id."""
    ensure_schema(led)  # a bare ledger: declare what `keel init` declares for a home
    mem = Memory(led)
    sessions = inst["haystack_sessions"]
    back: dict[str, str] = {}
    for i, (sid, date, session) in enumerate(
        zip(inst["haystack_session_ids"], inst["haystack_dates"], sessions, strict=True)
    ):
        h = handle(i, len(sessions))
        text = render(session).strip() or "(empty session)"
        made = mem.add_episode(text, agent="longmemeval", session=h, at=parse_date(date))
        back[made["id"]] = sid
    return back


def keel_rank(
    rec: Recall, inst: dict, back: dict[str, str], mode: str | None = None
) -> tuple[list[str], float, dict]:
    """keel's ranking of the sessions, the search time, and the search's answer."""
    if isinstance(rec.embedder, CachedEmbedder):
        rec.embedder.forget(inst["question"])  # the query pays for its embedding
    start = time.perf_counter()
    out = rec.search(
        inst["question"], valid_at=parse_date(inst["question_date"]), k=DEPTH, mode=mode
    )
    elapsed = time.perf_counter() - start
    ranked: list[str] = []
    for r in out["results"]:
        sid = back.get(r["id"])
        if sid is not None and sid not in ranked:
            ranked.append(sid)
    return ranked, elapsed, out


def bm25_rank(inst: dict) -> tuple[list[str], float]:
    docs = [tokens(render(s)) or ["_"] for s in inst["haystack_sessions"]]
    bm25 = BM25Okapi(docs)
    ids = inst["haystack_session_ids"]
    start = time.perf_counter()
    scores = bm25.get_scores(tokens(inst["question"]))
    order = sorted(range(len(ids)), key=lambda i: -scores[i])[:DEPTH]
    elapsed = time.perf_counter() - start
    return [ids[i] for i in order], elapsed


def dense_baseline_rank(inst: dict, emb: CachedEmbedder) -> tuple[list[str], float, float]:
    """Sessions by their best turn's cosine with the question; later sessions dropped.
    Returns the ranking, the search time (query embedding included) and the index time."""
    ids = inst["haystack_session_ids"]
    later = _later_sessions(inst)
    start = time.perf_counter()
    owners: list[int] = []
    texts: list[str] = []
    for i, session in enumerate(inst["haystack_sessions"]):
        if ids[i] in later:
            continue
        for t in session:
            text = f"{t.get('role', '?')}: {t.get('content', '')}".strip()
            owners.append(i)
            texts.append(text)
    vectors = emb.embed(texts) if texts else None
    index_s = time.perf_counter() - start
    emb.forget(inst["question"])
    start = time.perf_counter()
    best = np.full(len(ids), -np.inf, dtype=np.float32)
    if vectors is not None and len(vectors):
        sims = vectors @ emb.embed([inst["question"]])[0]
        np.maximum.at(best, np.array(owners), sims)
    order = [int(i) for i in np.argsort(-best, kind="stable") if np.isfinite(best[i])][:DEPTH]
    elapsed = time.perf_counter() - start
    return [ids[i] for i in order], elapsed, index_s


def _explain(out: dict, back: dict[str, str]) -> list[dict]:
    return [
        {
            "session": back.get(r["id"]),
            "title": r.get("title"),
            "score": r.get("score"),
            "ranks": r.get("ranks"),
        }
        for r in out["results"][:10]
    ]


def run_instance(
    stores: Stores, inst: dict, modes: tuple[str, ...], peers: dict[str, Peer]
) -> dict[str, Any]:
    ranked: dict[str, list[str]] = {}
    latency: dict[str, float] = {}
    index_s: dict[str, float] = {}
    notes: dict[str, str] = {}
    explain: dict[str, list[dict]] = {}
    emb = default_embedder()
    keel_modes = [m for m in KEEL_MODES if m in modes]
    if keel_modes:
        target = stores.new()
        op = Signer.generate("operator")
        led = Ledger.open(target, signer=op)
        try:
            led.register_identity("operator", op.public_key, "operator")
            back = load_instance(led, inst)
            # One index for all three keel modes, built once with the default embedder.
            rec = Recall(led, embedder=emb if emb is not None else "none")
            try:
                start = time.perf_counter()
                rec.catch_up()
                built = time.perf_counter() - start
                for mode in keel_modes:
                    index_s[mode] = built
                    ranked[mode], latency[mode], out = keel_rank(
                        rec, inst, back, None if mode == "hybrid" else mode
                    )
                    if out["mode"] != mode:
                        notes[mode] = f"ran as {out['mode']}: {out.get('note') or rec.note}"
                    explain[mode] = _explain(out, back)
            finally:
                rec.close()
        finally:
            led.close()
            stores.drop(target)
    if "bm25" in modes:
        ranked["bm25"], latency["bm25"] = bm25_rank(inst)
    if "dense-baseline" in modes and emb is not None:
        ranked["dense-baseline"], latency["dense-baseline"], index_s["dense-baseline"] = (
            dense_baseline_rank(inst, emb)
        )
    for mode, peer in peers.items():
        if emb is not None:
            ranked[mode], latency[mode], index_s[mode] = peer.rank(inst, emb)
    return {
        "ranked": ranked,
        "latency": latency,
        "index_s": index_s,
        "notes": notes,
        "explain": explain,
    }


# -- the run ---------------------------------------------------------------------------------
def usable_modes(modes: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, Peer], dict]:
    """The modes that can run here, the loaded peers, and a note for each mode skipped."""
    skipped: dict[str, str] = {}
    peers: dict[str, Peer] = {}
    emb = None
    if any(m in modes for m in ("dense", "dense-baseline", *PEERS)):
        emb = default_embedder()
    keep: list[str] = []
    for mode in modes:
        if mode in PEERS:
            try:
                PEERS[mode].load()
            except PeerUnavailable as exc:
                skipped[mode] = f"skipped: {exc}"
                continue
            peers[mode] = PEERS[mode]
        if emb is None and (mode in ("dense", "dense-baseline") or mode in PEERS):
            skipped[mode] = "skipped: the default embedder cannot run here"
            peers.pop(mode, None)
            continue
        keep.append(mode)
    return tuple(keep), peers, skipped


def evaluate(
    data: list[dict],
    *,
    ks: tuple[int, ...] = (1, 5, 10),
    store: str = "sqlite",
    modes: tuple[str, ...] = ALL_MODES,
    split: str = "all",
    progress: bool = True,
    explain_file: str | None = None,
) -> dict[str, Any]:
    if split != "all":
        data = [inst for inst in data if inst.get("split") == split]
    modes, peers, skipped_modes = usable_modes(modes)
    stores = Stores(store)
    per_question: list[dict[str, Any]] = []
    explained: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        for n, inst in enumerate(data, start=1):
            ids = set(inst["haystack_session_ids"])
            relevant = set(inst.get("answer_session_ids") or []) & ids
            if not relevant:
                skipped.append(inst["question_id"])
                continue
            got = run_instance(stores, inst, modes, peers)
            row: dict[str, Any] = {
                "question_id": inst["question_id"],
                "question_type": inst.get("question_type", "?"),
                "split": inst.get("split"),
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
            if explain_file:
                explained.append(
                    {
                        "question_id": inst["question_id"],
                        "question_type": inst.get("question_type", "?"),
                        "question": inst["question"],
                        "question_date": inst["question_date"],
                        "relevant": sorted(relevant),
                        "keel": got["explain"],
                        "top": {mode: got["ranked"][mode][:10] for mode in modes},
                    }
                )
            if progress:
                print(f"\r{n}/{len(data)} {inst['question_id']}", end="", file=sys.stderr)
    finally:
        stores.close()
        if progress:
            print(file=sys.stderr)
    if explain_file:
        Path(explain_file).write_text(json.dumps(explained, indent=1))
    result = summarise(per_question, ks, modes, store, skipped)
    result["split"] = split
    result["peers"] = {mode: f"{p.package}=={p.version()}" for mode, p in peers.items()}
    result["skipped_modes"] = skipped_modes
    emb = default_embedder() if any(m != "bm25" for m in modes) else None
    result["embedder"] = emb.name if emb is not None else None
    return result


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
    peers = result.get("peers", {})

    def label(mode: str) -> str:
        return f"peer:{peers[mode]}" if mode in peers else mode

    keys = [f"{m}@{k}" for m in ("recall_any", "recall_all", "ndcg") for k in ks]
    console = Console(width=max(160, Console().width))
    table = Table(
        "mode",
        *[k.replace("recall_", "r_") for k in keys],
        "p50 ms",
        "p95 ms",
        title=f"{source}: {result['questions']} questions, store {result['store']}, "
        f"split {result.get('split', 'all')}",
    )
    for mode in modes:
        o = result["overall"][mode]
        table.add_row(
            label(mode),
            *[f"{o[k]:.3f}" for k in keys],
            f"{o['latency_p50_ms']:.1f}",
            f"{o['latency_p95_ms']:.1f}",
        )
    for mode, r in result["ratio_to_bm25"].items():
        table.add_row(
            f"{label(mode)} ÷ bm25", *[f"{r[k]:.2f}×" if r[k] else "—" for k in keys], "", ""
        )
    console.print(table)
    show = [k for k in keys if k.endswith(("@5", "@10")) or k == "recall_any@1"]
    bt = Table("question type", "n", "mode", *show, title="by question type")
    for t, row in result["by_type"].items():
        for i, mode in enumerate(modes):
            bt.add_row(
                t if i == 0 else "",
                str(row["questions"]) if i == 0 else "",
                label(mode),
                *[f"{row[mode][k]:.3f}" for k in show],
            )
    console.print(bt)
    key = "recall_all@5" if 5 in ks else f"recall_all@{ks[-1]}"
    wide = Table("question type", "n", *[label(m) for m in modes], title=f"{key} by question type")
    for t, row in result["by_type"].items():
        wide.add_row(t, str(row["questions"]), *[f"{row[m][key]:.3f}" for m in modes])
    wide.add_row(
        "all", str(result["questions"]), *[f"{result['overall'][m][key]:.3f}" for m in modes]
    )
    console.print(wide)
    for mode, note in result.get("skipped_modes", {}).items():
        console.print(f"{mode}: {note}")
    if result["skipped_no_evidence"]:
        console.print(f"skipped (no evidence session): {len(result['skipped_no_evidence'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a LongMemEval-format JSON file")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--k", default="1,5,10", help="cut-offs, comma-separated")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument(
        "--modes",
        default=",".join(ALL_MODES),
        help=f"comma-separated, of {', '.join(ALL_MODES)} (default: all that can run here)",
    )
    parser.add_argument("--split", choices=("dev", "test", "all"), default="all")
    parser.add_argument(
        "--explain-file", help="write each question's top 10 per mode, with keel's ranks, here"
    )
    parser.add_argument(
        "--approximate",
        action="store_true",
        help="keel scans vectors quantised (with exact re-scoring) at any size, as it does "
        "from 20,000 rows: run once with and once without to see what that loses",
    )
    args = parser.parse_args(argv)
    if args.approximate:
        vectors_module.APPROXIMATE = 0
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(ALL_MODES)}")
    data = json.loads(Path(args.path).read_text())
    if args.limit:
        data = data[: args.limit]
    ks = tuple(int(k) for k in args.k.split(",") if k.strip())
    start = time.perf_counter()
    result = evaluate(
        data,
        ks=ks,
        store=args.store,
        modes=modes,
        split=args.split,
        explain_file=args.explain_file,
    )
    result["wall_s"] = time.perf_counter() - start
    result["approximate"] = args.approximate
    result["file"] = str(args.path)
    if args.json:
        print(json.dumps(result))
    else:
        print_tables(result, Path(args.path).name)
        print(f"wall time {result['wall_s']:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
