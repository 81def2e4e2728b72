"""How recall orders what its two retrievers found: one score per item from normalised
evidence, then updates before what they replaced, then diversity.

A result is an *item* — a memory entity, or one fact of an entity — found through its
*passages* (rows: a line or turn of its text, see `indexer.passages`). An item scores by
its best passage and, a little, by its second best (max and sum: a session that says a
thing twice beats one that says it once, but a fact said once is not diluted by the
filler around it). Its relevance is a convex mix of the dense (cosine) and full-text
(BM25 over the best full-text score of the query) evidence, plus a bonus when it is a
fact whose entity and key the question names ("where does Alice live" → "Alice lives
in: Berlin"). Recency only breaks near-ties: its weight is far below any real
difference in relevance.

Two further steps look at the top of that order:

- **Updates.** Two items about the same thing (their best passages' vectors nearly
  alike) at different valid times are a "then" and a "now": the newer goes first, the
  older right after it, each marked, so an agent sees both.
- **Diversity.** Maximal marginal relevance: an item nearly alike an item already placed
  loses some of its score, so an answer spread over several items fills the top k
  instead of near-copies of one.

The weights are fitted on the dev split of the bench fixtures by `bench/fit_recall.py`
and judged on their test split (docs/benchmarks.md); nothing here is tuned on a test
split.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import numpy as np

US_PER_DAY = 86_400_000_000
RECENCY_HALF_LIFE_DAYS = 180.0
#: How many of the best items the update and diversity steps look at, beyond k.
WINDOW = 30


@dataclass(frozen=True)
class Ranking:
    """The weights of one ranking. `DEFAULT` is the one `bench/fit_recall.py` chose on the
    dev split of both fixtures (2026-12-02, all-MiniLM-L6-v2): dev recall_all@5 0.920,
    test 0.922 (docs/benchmarks.md)."""

    fulltext: float = 0.3  # share of full-text evidence in relevance (dense has the rest)
    lexical: float = 0.7  # the share of the query's term weight below which a passage's
    # full-text evidence counts for nothing (only strong lexical matches add)
    second: float = 0.0  # weight of an item's second-best passage
    fact: float = 0.5  # bonus for a fact whose entity and key the question names
    update: float = 0.9  # cosine above which two items are one thing at two times
    diversity: float = 0.1  # MMR: how much being a copy of a placed item costs
    copies: float = 0.0  # cosine from which an item starts to count as a copy (MMR)
    recency: float = 0.001  # tie-breaker: at most this much for something valid today


DEFAULT = Ranking()


@dataclass
class Item:
    """One candidate result and the evidence for it."""

    key: str
    best: int  # position (in the cache) of its best passage
    time: int  # valid-from of its best passage
    dense: list[float] = field(default_factory=list)  # normalised, best first
    fulltext: list[float] = field(default_factory=list)
    fact: float = 0.0
    recency: float = 0.0
    relevance: float = 0.0
    score: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)
    updates: str | None = None  # the key of an older item this one replaces
    updated_by: str | None = None

    def explain(self) -> dict[str, float]:
        """The components of its score, for `recall --explain`."""
        dense, fulltext = (
            [*sorted(v, reverse=True), 0.0, 0.0] for v in (self.dense, self.fulltext)
        )
        parts = {
            "dense": dense[0],
            "fulltext": fulltext[0],
            "dense_second": dense[1],
            "fulltext_second": fulltext[1],
            "fact": self.fact,
            "recency": self.recency,
            "relevance": self.relevance,
            "score": self.score,
        }
        return {name: round(value, 4) for name, value in parts.items()}


def recency(valid_from: int, at: int, timeless: bool) -> float:
    """1 for something valid from `at`, halving every half-life before it; 0 for rows
    that have no time (an entity's name)."""
    if timeless:
        return 0.0
    age_days = max(0.0, (at - valid_from) / US_PER_DAY)
    return math.exp(-age_days * math.log(2) / RECENCY_HALF_LIFE_DAYS)


def relevance(item: Item, ranking: Ranking, dense: bool, fulltext: bool) -> float:
    """The mix of the evidence the asked retrievers gave (one alone gets all the weight)."""

    def best_two(scores: list[float]) -> float:
        top = [*sorted(scores, reverse=True)[:2], 0.0, 0.0]
        return top[0] + ranking.second * top[1]

    share = ranking.fulltext if dense and fulltext else (1.0 if fulltext else 0.0)
    floor = ranking.lexical if dense and fulltext else 0.0
    lexical = [max(0.0, c - floor) / (1.0 - floor) for c in item.fulltext]
    mixed = (1.0 - share) * best_two(item.dense) + share * best_two(lexical)
    return mixed + ranking.fact * item.fact


# -- full-text evidence ------------------------------------------------------------------
def term_weights(df: dict[str, int], rows: int) -> dict[str, float]:
    """Each query term's weight: its inverse document frequency (BM25's), keyed by stem."""
    weights: dict[str, float] = {}
    for term, n in df.items():
        idf = math.log((rows - n + 0.5) / (n + 0.5) + 1.0)
        weights[stem(term)] = max(weights.get(stem(term), 0.0), idf)
    return weights


def coverage(weights: dict[str, float], text: str) -> float:
    """The share of the query's term weight a passage holds: 1 when it has every term, little
    when it has only common ones. Unlike a BM25 score divided by the query's best, it does
    not call the best of a poor lot a full match."""
    total = sum(weights.values())
    if not total:
        return 0.0
    held = words(text)
    return sum(w for t, w in weights.items() if t in held) / total


# -- fact matching -----------------------------------------------------------------------
_SUFFIXES = ("ing", "ed", "es", "s", "e")


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """A crude stem, enough to see "live", "lives" and "lived" as one word."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def words(text: str) -> set[str]:
    return {stem(w) for w in re.findall(r"\w+", text.lower())}


def fact_match(query_words: set[str], key: str, text: str) -> float:
    """1 when the question names a fact's entity and its key or value: "where does Alice
    live" and "Alice lives in: Berlin" (`text`, as the indexer writes a fact: name, key
    words, colon, value); "who lives in Berlin" too. 0 otherwise."""
    head, _, value = text.partition(": ")
    key_text = key.replace("_", " ")
    named = words(head.removesuffix(key_text)) if head.endswith(key_text) else set()
    if not named or not named <= query_words:
        return 0.0
    key_words = words(key_text) - _FILLER
    if key_words & query_words or words(value) & query_words:
        return 1.0
    return 0.0


#: Words of a fact key that say nothing about which fact it is ("lives_in": "in").
_FILLER = frozenset({"in", "at", "of", "on", "to", "the", "a", "is", "for", "by"})


# -- the order ------------------------------------------------------------------------
def order(items: list[Item], vectors: np.ndarray | None, ranking: Ranking, k: int) -> list[Item]:
    """The items best first: by score, then diversity, then updates before what they
    replaced, over the first `k + WINDOW` of them; the rest follow by score."""
    items.sort(key=lambda i: (-i.score, i.key))
    head, tail = items[: k + WINDOW], items[k + WINDOW :]
    if vectors is None or len(head) < 2:
        return items
    alike = _likeness(head, vectors)
    _pair_updates(head, alike, ranking.update)
    if ranking.diversity > 0:
        head = _diversified(head, alike, ranking.diversity, ranking.copies)
    return _updates_first(head) + tail


def _likeness(items: list[Item], vectors: np.ndarray) -> np.ndarray:
    """Cosines between the items' best passages."""
    block = vectors[[i.best for i in items]]
    return block @ block.T


def _pair_updates(items: list[Item], alike: np.ndarray, threshold: float) -> None:
    """Mark each item that has a newer near-copy (`updated_by`), and that copy (`updates`):
    at most one pair per item, the best-scored first."""
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if alike[i, j] < threshold or items[i].time == items[j].time:
                continue
            old, new = (
                (items[i], items[j]) if items[i].time < items[j].time else (items[j], items[i])
            )
            if old.updated_by is None and new.updates is None:
                old.updated_by, new.updates = new.key, old.key


def _updates_first(items: list[Item]) -> list[Item]:
    """The items in their order, except that an update is moved up to just before what
    it replaced (and its own update before it, along a chain of them)."""
    by_key = {i.key: i for i in items}
    placed: list[Item] = []
    done: set[str] = set()
    for item in items:
        chain: list[Item] = []
        while item is not None and item.key not in done:
            done.add(item.key)
            chain.append(item)
            item = by_key.get(item.updated_by or "")
        placed += reversed(chain)
    return placed


def _diversified(items: list[Item], alike: np.ndarray, weight: float, floor: float) -> list[Item]:
    """Maximal marginal relevance over copies: an item costs `weight` times how far its
    likeness to an item already placed goes beyond `floor` (all of it for an exact copy).
    Only near-copies pay: items of one answer spread over several sessions are alike too,
    and must not push each other out. An update and what it replaced are not penalised
    (both are wanted)."""
    n = len(items)
    index = {item.key: i for i, item in enumerate(items)}
    exempt = np.zeros((n, n), dtype=bool)
    for i, item in enumerate(items):
        j = index.get(item.updates or "")
        if j is not None:
            exempt[i, j] = exempt[j, i] = True
    scores = np.array([item.score for item in items])
    copied = np.zeros(n)  # how much of a copy of a placed item each item is, 0 to 1
    left = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for _ in range(n):
        best = int(np.argmax(np.where(left, scores - weight * copied, -np.inf)))
        chosen.append(best)
        left[best] = False
        copy = np.clip((alike[:, best] - floor) / max(1.0 - floor, 1e-6), 0.0, 1.0)
        copied = np.maximum(copied, np.where(exempt[:, best], 0.0, copy))
    return [items[i] for i in chosen]
