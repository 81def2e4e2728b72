"""Fit recall's ranking weights on the dev split of LongMemEval-format fixtures; judge the
fit on their test split.

    uv run python bench/fit_recall.py bench/fixtures/keel_recall_hard.json \\
        bench/fixtures/keel_memory.json [--json] [--limit N]

Each dev question is indexed once (a fresh SQLite ledger, its sessions as episodes, as
`bench/recall.py` does) and asked under every ranking of a grid, in stages (`STAGES`: how
the evidence is mixed, then how the top is ordered, each with the other weights at the
best found so far); the ranking with the best mean recall_all@5 over all dev questions
(nDCG@5 breaking ties, then the ranking nearest the current default) wins. Only then are
the test questions run, with the default and with the winner, so the test split never
chooses anything. A fixture without a `split`
key on its instances counts as test only (nothing in it is fitted on).

The winner is printed as a `Ranking(...)` to put in `keel/memory/ranking.py` as DEFAULT.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from keel.ledger import Ledger, Signer
from keel.memory import embedders, ranking
from keel.memory.indexer import passages
from keel.memory.recall import Recall
from recall import CachedEmbedder, Stores, load_instance, metrics, parse_date, render

#: Searched stage by stage, each stage a grid over its weights with the others at the
#: best found so far: first how the evidence is mixed, then how the top is ordered.
STAGES = (
    {
        "fulltext": (0.0, 0.1, 0.2, 0.3, 0.4),
        "lexical": (0.0, 0.5, 0.7),
        "second": (0.0, 0.1),
    },
    {
        # Always on: an agent must see "now" before "then". The fit only picks how alike
        # two items must be to count as one thing at two times.
        "update": (0.8, 0.9),
        "diversity": (0.0, 0.1, 0.3),
        "copies": (0.0, 0.9),
    },
)
DEPTH = 10


def warm(embedder: CachedEmbedder, data: list[dict], batch: int = 256) -> None:
    """Embed every passage the instances will index, in large batches, once."""
    texts: dict[str, None] = {}
    for inst in data:
        texts[inst["question"]] = None
        for session in inst["haystack_sessions"]:
            for piece in passages(render(session).strip() or "(empty session)"):
                texts[piece] = None
    todo = list(texts)
    for start in range(0, len(todo), batch):
        embedder.embed(todo[start : start + batch])


class Indexed:
    """One question's haystack in a ledger of its own, indexed once and asked many times
    (the ledger and its index stay on disk between askings)."""

    def __init__(self, stores: Stores, embedder: Any, inst: dict):
        self.inst, self.embedder, self.target = inst, embedder, stores.new()
        self.signer = Signer.generate("operator")
        with Ledger.open(self.target, signer=self.signer) as led:
            led.register_identity("operator", self.signer.public_key, "operator")
            self.back = load_instance(led, inst)
            rec = Recall(led, embedder=embedder)
            rec.catch_up()
            rec.close()

    def ask(self, rankings: list[ranking.Ranking]) -> list[dict[str, float]]:
        """recall_all@5 and nDCG@5 of the question under each ranking."""
        relevant = set(self.inst["answer_session_ids"])
        at = parse_date(self.inst["question_date"])
        with Ledger.open(self.target, signer=self.signer) as led:
            rec = Recall(led, embedder=self.embedder)
            out = []
            for weights in rankings:
                rec.ranking = weights
                found = rec.search(self.inst["question"], valid_at=at, k=DEPTH)
                ranked = list(dict.fromkeys(self.back[r["id"]] for r in found["results"]))
                out.append(metrics(ranked, relevant, 5))
            rec.close()
        return out


def stage_grid(base: ranking.Ranking, stage: dict[str, tuple]) -> list[ranking.Ranking]:
    names = list(stage)
    return [
        replace(base, **dict(zip(names, values, strict=True)))
        for values in itertools.product(*(stage[n] for n in names))
    ]


def mean_of(rows: list[list[dict[str, float]]], i: int, key: str) -> float:
    return statistics.fmean(r[i][key] for r in rows) if rows else float("nan")


def best_of(candidates: list[ranking.Ranking], rows: list[list[dict]]) -> int:
    """Best mean recall_all@5, then nDCG@5, then the candidate nearest the default."""

    def merit(i: int) -> tuple:
        distance = sum(
            abs(getattr(candidates[i], f) - getattr(ranking.DEFAULT, f))
            for stage in STAGES
            for f in stage
        )
        return (mean_of(rows, i, "recall_all@5"), mean_of(rows, i, "ndcg@5"), -distance)

    return max(range(len(candidates)), key=merit)


def fit(data: list[dict], progress: bool = True) -> dict[str, Any]:
    dev = [d for d in data if d.get("split") == "dev"]
    test = [d for d in data if d.get("split", "test") == "test"]
    embedder = CachedEmbedder(embedders.load())
    warm(embedder, data)
    stores = Stores("sqlite")

    def say(text: str) -> None:
        if progress:
            print(f"\r{text}", end="", file=sys.stderr)

    try:
        indexed = []
        for n, inst in enumerate(dev, start=1):
            indexed.append(Indexed(stores, embedder, inst))
            say(f"dev indexed {n}/{len(dev)}")
        winner, searched, dev_best = ranking.DEFAULT, 0, {}
        for s_no, stage in enumerate(STAGES, start=1):
            candidates = stage_grid(winner, stage)
            rows = []
            for n, one in enumerate(indexed, start=1):
                rows.append(one.ask(candidates))
                say(f"stage {s_no}: {n}/{len(indexed)}")
            best = best_of(candidates, rows)
            winner, searched = candidates[best], searched + len(candidates)
            dev_best = {k: mean_of(rows, best, k) for k in ("recall_all@5", "ndcg@5")}
        dev_default = [one.ask([ranking.DEFAULT]) for one in indexed]
        judged = []
        for n, inst in enumerate(test, start=1):
            one = Indexed(stores, embedder, inst)
            judged.append(one.ask([ranking.DEFAULT, winner]))
            stores.drop(one.target)
            say(f"test {n}/{len(test)}")
    finally:
        stores.close()
        if progress:
            print(file=sys.stderr)
    return {
        "embedder": embedder.name,
        "dev_questions": len(dev),
        "test_questions": len(test),
        "rankings_tried": searched,
        "default": asdict(ranking.DEFAULT),
        "winner": asdict(winner),
        "dev": {
            "default": {k: mean_of(dev_default, 0, k) for k in ("recall_all@5", "ndcg@5")},
            "winner": dev_best,
        },
        "test": {
            "default": {k: mean_of(judged, 0, k) for k in ("recall_all@5", "ndcg@5")},
            "winner": {k: mean_of(judged, 1, k) for k in ("recall_all@5", "ndcg@5")},
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="LongMemEval-format JSON files")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="only the first N of each split")
    args = parser.parse_args(argv)
    data: list[dict] = []
    for path in args.paths:
        loaded = json.loads(Path(path).read_text())
        if args.limit:
            dev = [d for d in loaded if d.get("split") == "dev"][: args.limit]
            test = [d for d in loaded if d.get("split", "test") == "test"][: args.limit]
            loaded = dev + test
        data += loaded
    result = fit(data)
    if args.json:
        print(json.dumps(result))
        return
    print(f"embedder {result['embedder']}; {result['rankings_tried']} rankings tried")
    print(f"winner: ranking.Ranking(**{result['winner']})")
    for split in ("dev", "test"):
        for who in ("default", "winner"):
            m = result[split][who]
            if m.get("recall_all@5") is not None:
                print(
                    f"{split:4} {who:7} recall_all@5 {m['recall_all@5']:.3f}"
                    f"  ndcg@5 {m['ndcg@5']:.3f}"
                )


if __name__ == "__main__":
    main()
