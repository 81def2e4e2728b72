"""Hybrid recall: full text (BM25 on SQLite FTS5, ts_rank on PostgreSQL) and dense vectors
find candidate passages among the rows valid and known at the times asked; `ranking` orders
the items they belong to; and every result is re-checked against the ledger view asked
for, so recall never returns a fact that was not valid (or not yet known) at the time asked.

The index is derived data and may be found broken — garbage or truncated bytes, tables
dropped or altered — when it is opened or while it is in use. Recall then does not fail: it
answers with plain full text over the ledger itself and says so, and `reindex` rebuilds the
index whatever its state.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..ledger import BadInput, Ledger, View
from ..ledger.instants import FOREVER, SINCE_ALWAYS, format_instant
from . import embedders, ranking
from .index_store import IndexStore, IndexUnreadable, drop_index, open_index, query_terms
from .indexer import EmbedderChanged, Indexer, passages, row_text, searchable, value_hash
from .model import SURFACES
from .vectors import Vectors

#: The mode of an answer computed from the ledger because the index could not be read.
LEDGER_MODE = "ledger-fulltext"
#: The retrievers a search may be asked to use.
MODES = ("hybrid", "fulltext", "dense")
#: Passages each retriever brings, or k if more are asked for (the full-text query looks
#: 4x deeper, since rows that are not live are dropped after it).
CANDIDATES = 100


class _Cache:
    """Row metadata and vectors in memory, for masks and one matrix product per query."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.meta: list[tuple] = []  # (e, a, surface, vhash, author)
        self.cols = {k: np.zeros(0, dtype=np.int64) for k in ("vf", "vt", "txf", "txt", "time")}
        self.surface = np.zeros(0, dtype=np.int16)
        self.vectors = Vectors()
        self.pos: dict[int, int] = {}
        self.cursor = -1
        self.epoch: str | None = None

    @classmethod
    def loaded(cls, rows: list[tuple], vecs: list[bytes | None], cursor: int) -> _Cache:
        """A cache of the index's stored rows (whose text stays in the store)."""
        cache = cls()
        cache.append([(*r[:4], None, *r[4:], v) for r, v in zip(rows, vecs, strict=True)])
        cache.cursor = cursor
        return cache

    def append(self, rows: list[tuple]) -> None:
        """Rows as the indexer makes them: (id, e, a, surface, text, vhash, vf, vt, txf, txt,
        tx_time, author, vec)."""
        if not rows:
            return
        start = len(self.ids)
        self.ids = np.concatenate([self.ids, np.array([r[0] for r in rows], dtype=np.int64)])
        for i, key in enumerate(("vf", "vt", "txf", "txt", "time")):
            col = np.array([r[6 + i] for r in rows], dtype=np.int64)
            self.cols[key] = np.concatenate([self.cols[key], col])
        codes = np.array([_surface_code(r[3]) for r in rows], dtype=np.int16)
        self.surface = np.concatenate([self.surface, codes])
        self.meta += [(r[1], r[2], r[3], r[5], r[11]) for r in rows]
        for offset, r in enumerate(rows):
            self.pos[r[0]] = start + offset
        blobs = [r[12] for r in rows]
        vectors = self.vectors
        if any(b is not None for b in blobs):
            dim = len(next(b for b in blobs if b is not None)) // 4
            block = np.zeros((len(rows), dim), dtype=np.float32)
            for i, b in enumerate(blobs):
                if b is not None and len(b) == dim * 4:
                    block[i] = np.frombuffer(b, dtype=np.float32)
            if vectors.rows and vectors.dim != dim:
                vectors = self.vectors = Vectors()  # another model's: never mixed
            if vectors.rows < start:
                vectors.append(np.zeros((start - vectors.rows, dim), dtype=np.float32))
            vectors.append(block)
        elif vectors.rows:
            vectors.append(np.zeros((len(rows), vectors.dim), dtype=np.float32))

    def close(self, closed: list[tuple[int, int]]) -> None:
        for rid, tx in closed:
            p = self.pos.get(rid)
            if p is not None:
                self.cols["txt"][p] = tx


def _surface_code(surface: str) -> int:
    return SURFACES.index(surface) if surface in SURFACES else -1


class Recall:
    """The recall index over one ledger. Thread-safe: one lock around index and ledger.

    `store` and `indexer` are None while the index cannot be used (`broken` says why);
    every call tries to open it again first, since another process may have rebuilt it."""

    def __init__(
        self,
        ledger: Ledger,
        embedder: str | embedders.Embedder | None = None,
        configured: Callable[[], str | None] | None = None,
    ):
        """`embedder` is a spec (see `embedders`) or an embedder; `configured`, if given,
        reads the spec the home is configured with now, so a process follows an index
        rebuilt with another model (`keel reindex --embedder`) instead of going full text."""
        self.ledger = ledger
        self.configured_spec = configured
        self._use_embedder(embedder)
        self.lock = threading.RLock()
        #: The weights of the order (fitted; a bench may try others).
        self.ranking = ranking.DEFAULT
        self._pool: ThreadPoolExecutor | None = None  # the full-text query's thread
        self.cache = _Cache()
        self.store: IndexStore | None = None
        self.indexer: Indexer | None = None
        self.broken: IndexUnreadable | None = None
        self._usable()

    def _use_embedder(self, embedder: str | embedders.Embedder | None) -> None:
        """Load the embedder to index and search with (raises BadInput for a spec that names
        none); one that cannot run here leaves recall full text, with a note saying why."""
        self.spec = embedder if isinstance(embedder, str | None) else embedder.name
        self.embedder_note = ""
        try:
            self.embedder = (
                embedders.load(embedder) if isinstance(embedder, str | None) else embedder
            )
        except embedders.Unavailable as exc:
            self.embedder, self.embedder_note = None, f"{exc}; recall is full text only"
        if self.embedder is None and not self.embedder_note:
            self.embedder_note = "no embedder is configured; recall is full text only"
        self.configured = self.embedder
        self.note = self.embedder_note

    @property
    def mode(self) -> str:
        if self.store is None:
            return LEDGER_MODE
        return "hybrid" if self.embedder is not None else "fulltext"

    def _open(self) -> None:
        """Open the index (making it if there is none); raises IndexUnreadable."""
        store = open_index(self.ledger)
        try:
            self._check_embedder(store)
        except IndexUnreadable:
            with contextlib.suppress(IndexUnreadable):
                store.close()
            raise
        self.store, self.broken = store, None
        self.indexer = Indexer(store, self.ledger, self.embedder)
        self.cache = _Cache()

    def _usable(self) -> bool:
        """Whether the index is open, opening it if it is not: another process may have
        rebuilt it since it failed here."""
        if self.store is None:
            try:
                self._open()
            except IndexUnreadable as exc:
                self.broken = exc
        return self.store is not None

    def _broke(self, exc: IndexUnreadable) -> None:
        """Put a failing index aside: answers come from the ledger until it opens again."""
        self.broken = exc
        if self.store is not None:
            with contextlib.suppress(IndexUnreadable):
                self.store.close()
        self.store = self.indexer = None
        self.cache = _Cache()

    def _broken_note(self) -> str:
        return (
            f"{self.broken}; answering with full text over the ledger until 'keel reindex' "
            "rebuilds the index"
        )

    def _check_embedder(self, store: IndexStore) -> None:
        self.embedder, self.note = self.configured, self.embedder_note
        name = self.embedder.name if self.embedder else "none"
        stored = store.meta("embedder")
        if stored is None:
            store.set_meta("embedder", name)
        elif stored != name and store.count():
            spec = self.configured_spec() if self.configured_spec else self.spec
            if spec != self.spec:
                # The home was told to use another model (and the index may have been
                # rebuilt with it): follow, then look again.
                self._use_embedder(spec)
                self._check_embedder(store)
                return
            # Vectors from another model are meaningless here; keep full text and say so.
            self.note = (
                f"the index was built with {stored}, not {name}; run 'keel reindex' "
                f"(recall is full text only until then)"
            )
            self.embedder = None

    def close(self) -> None:
        """Close the index (a later call opens it again rather than calling it unreadable)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.store is not None:
            with contextlib.suppress(IndexUnreadable):
                self.store.close()
        self.store = self.indexer = None

    # -- following the ledger -------------------------------------------------------------
    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Index what the ledger committed after the index's cursor; returns the rows added.

        A broken index adds nothing and raises nothing: the daemon calls this after every
        transaction, and a failure there would dead-letter each one (every dead letter being
        one more transaction). `status` and every answer's note show the breakage."""
        with self.lock:
            if not self._usable():
                return 0
            try:
                return self._catch_up(progress)
            except IndexUnreadable as exc:
                self._broke(exc)
                return 0

    def _catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        with self.lock:
            if self.embedder is None and self.configured_spec is not None:
                # Full text only because the index holds another model's vectors: the
                # home may have been switched to that model since.
                self._check_embedder(self.store)
                self.indexer.embedder = self.embedder
            self._sync_cache()
            try:
                added = self.indexer.catch_up(progress, self._follow)
            except EmbedderChanged:
                self._check_embedder(self.store)
                self.indexer.embedder = self.embedder
                self.cache.cursor = -1  # its vectors are the other model's now
                self._sync_cache()
                added = self.indexer.catch_up(progress, self._follow)
            if self.indexer.others_moved:
                self.indexer.others_moved = False
                self.cache.cursor = -1
                self._sync_cache()
            self.cache.cursor = self.store.cursor()
            return added

    def _follow(self, rows: list[tuple], closed: list[tuple[int, int]]) -> None:
        # Rows first: a row may be made and closed in one batch.
        self.cache.append(rows)
        self.cache.close(closed)

    def _sync_cache(self) -> None:
        """Reload when another process moved the index since this one last looked, or
        dropped rows from it (a forgetting: its `epoch` moves)."""
        cursor, epoch = self.store.cursor(), self.store.meta("epoch")
        if cursor != self.cache.cursor or epoch != self.cache.epoch:
            rows, vecs = self.store.load()
            self.cache = _Cache.loaded(rows, vecs, cursor)
            self.cache.epoch = epoch

    def reindex(
        self,
        progress: Callable[[int, int], None] | None = None,
        embedder: str | None = None,
    ) -> int:
        """Rebuild the index from the ledger, whatever state it is in; returns the rows.

        An index that opens is emptied in place, since other processes may have it open.
        One that cannot be opened, read or written is dropped — on SQLite its files are
        deleted — and made anew. One that is merely held by another process is left alone
        (IndexUnreadable with `busy`). With `embedder`, the index is rebuilt with that
        model (a spec; BadInput if it names none, Unavailable if it cannot run here)."""
        with self.lock:
            if embedder is not None:
                embedders.load(embedder)  # raises here, rather than degrading quietly
                self._use_embedder(embedder)
            if self._usable():
                try:
                    return self._rebuild(progress)
                except IndexUnreadable as exc:
                    self._broke(exc)
            if self.broken.busy:
                raise self.broken
            drop_index(self.ledger)
            if not self._usable():
                raise self.broken
            return self._rebuild(progress)

    def _rebuild(self, progress: Callable[[int, int], None] | None) -> int:
        # Built with another model, the index is rebuilt with the configured one.
        self.embedder, self.note = self.configured, self.embedder_note
        self.indexer.embedder = self.embedder
        self.store.clear()
        self.store.set_meta("embedder", self.embedder.name if self.embedder else "none")
        self.cache = _Cache()
        self.cache.cursor = 0
        return self._catch_up(progress)

    def forget(self, e: str) -> tuple[int, list[str]]:
        """Drop every row derived from entity `e` (a forgetting erased some of its values),
        scrub the index's storage so neither the texts nor their vectors survive there,
        then derive `e`'s rows again from the ledger as it is now. Returns the rows
        dropped, and notes on what could not be done.

        Dropping and scrubbing come first and stand on their own: if deriving again fails
        (an embedder that cannot run, say), the index lacks `e` until `keel reindex`, and
        never holds what was forgotten. An index that cannot be opened is deleted (it is
        derived data, rebuilt on its next use) rather than left holding it."""
        with self.lock:
            if not self._usable():
                if self.broken is not None and self.broken.busy:
                    return 0, [f"{self.broken}; run 'keel forget' again to clean the index"]
                drop_index(self.ledger)
                return 0, []
            store = self.store
            try:
                store.begin()
                try:
                    dropped = store.delete_entity(e)
                    store.set_meta("epoch", str(int(store.meta("epoch") or 0) + 1))
                except BaseException:
                    store.rollback()
                    raise
                store.commit()
                notes = store.scrub()
            except IndexUnreadable as exc:
                self._broke(exc)
                drop_index(self.ledger)
                return 0, []
            try:
                self._derive(e)
            except (IndexUnreadable, embedders.Unavailable) as exc:
                notes.append(f"the recall index lacks {e} until 'keel reindex' ({exc})")
            self.cache.cursor = -1  # reload: rows are gone
            return dropped, notes

    def _derive(self, e: str) -> None:
        store = self.store
        store.begin()
        try:
            self.indexer.rederive(e)
        except BaseException:
            store.rollback()
            raise
        store.commit()

    def status(self) -> dict[str, Any]:
        """The index's state; `healthy` is false while it cannot be used, and `note` then
        says why and that `keel reindex` repairs it."""
        with self.lock:
            head = self.ledger.head().id
            if self._usable():
                try:
                    return {
                        "mode": self.mode,
                        "healthy": True,
                        "embedder": self.embedder.name if self.embedder else None,
                        "rows": self.store.count(),
                        "cursor": self.store.cursor(),
                        "head": head,
                        "note": self.note or None,
                    }
                except IndexUnreadable as exc:
                    self._broke(exc)
            # No index in use: no rows, no transaction followed (as numbers, so that
            # readers comparing cursor with head see it behind).
            return {
                "mode": LEDGER_MODE,
                "healthy": False,
                "embedder": None,
                "rows": 0,
                "cursor": 0,
                "head": head,
                "note": self._broken_note(),
            }

    # -- querying ----------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        surface: str | None = None,
        as_of: Any = None,
        valid_at: Any = None,
        k: int = 10,
        mode: str | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """The k best results for `query` among what was valid at `valid_at` and known at
        `as_of`. `mode` picks the retrievers: `hybrid` (the default when the index has
        vectors), `fulltext` or `dense` (one of them alone, for comparison). `explain` adds each
        result's score components (see `ranking.Item.explain`)."""
        if not isinstance(query, str) or not query.strip():
            raise BadInput("recall needs a query")
        if mode is not None and mode not in MODES:
            raise BadInput(f"{mode!r} is not a recall mode ({', '.join(MODES)})")
        if surface is not None and surface not in SURFACES:
            raise BadInput(f"{surface!r} is not a memory surface ({', '.join(SURFACES)})")
        if not isinstance(k, int) or not 1 <= k <= 200:
            raise BadInput("k must be a whole number from 1 to 200")
        with self.lock:
            if self._usable():
                try:
                    return self._search_index(query, surface, as_of, valid_at, k, mode, explain)
                except IndexUnreadable as exc:
                    self._broke(exc)
            return self._search_ledger(query, surface, as_of, valid_at, k)

    def _search_index(
        self,
        query: str,
        surface: str | None,
        as_of: Any,
        valid_at: Any,
        k: int,
        mode: str | None,
        explain: bool,
    ) -> dict[str, Any]:
        note = self.note
        with self.lock:
            try:
                self._catch_up()
            except embedders.Unavailable as exc:
                note = f"the index is behind the ledger ({exc}); results may miss new items"
            view = self.ledger.view(as_of=as_of, valid_at=valid_at)
            live = self._mask(view, surface)
            words = query if mode != "dense" else ""
            # The full-text query runs beside the query's embedding and the vector scan
            # (SQLite, PostgreSQL, onnxruntime and faiss all let go of the GIL).
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="keel-recall-fulltext")
            depth, rows = 4 * max(CANDIDATES, k), len(self.cache.pos)
            fts = self._pool.submit(self.store.fulltext, words, depth, rows)
            dense = self.embedder is not None and mode != "fulltext"
            try:
                query_vector = self.embedder.embed([query])[0] if dense else None
            except embedders.Unavailable as exc:
                query_vector = None
                note = "; ".join(filter(None, [note, f"{exc}; this answer is full text only"]))
            ranked = self._rank(words, fts, query_vector, live, view.valid_at, k)
            results = self._verified(ranked, view, k, explain)
        return {
            "query": query,
            "mode": self.mode if mode is None or self.embedder is None else mode,
            "note": note or None,
            "as_of": view.as_of,
            "valid_at": format_instant(view.valid_at),
            "results": results,
        }

    def _mask(self, view: View, surface: str | None) -> np.ndarray:
        c = self.cache.cols
        mask = (c["txf"] <= view.as_of) & (c["txt"] > view.as_of)
        mask &= (c["vf"] <= view.valid_at) & (c["vt"] > view.valid_at)
        if surface is not None:
            mask &= self.cache.surface == _surface_code(surface)
        return mask

    def _rank(
        self,
        query: str,
        fulltext: Future,
        q: np.ndarray | None,
        live: np.ndarray,
        at: int,
        k: int,
    ) -> list[ranking.Item]:
        """The live items the retrievers found, best first (see `ranking`); `fulltext` is
        the full-text query under way."""
        cache, pos = self.cache, self.cache.pos
        vectors = cache.vectors
        dense = q is not None and vectors.rows > 0 and vectors.dim == len(q)
        depth = max(CANDIDATES, k)
        if dense:
            top, cosines = vectors.nearest(q, live, depth)
        fts = [
            (pos[rid], -float(rank))
            for rid, rank in fulltext.result()
            if rid in pos and live[pos[rid]]
        ][:depth]
        sims: dict[int, float] | None = None
        found: dict[int, dict[str, int]] = {}
        for rank, (p, _score) in enumerate(fts, start=1):
            found.setdefault(p, {})["fulltext"] = rank
        if dense:
            sims = dict(zip(top.tolist(), cosines.tolist(), strict=True))
            for rank, p in enumerate(top.tolist(), start=1):
                found.setdefault(p, {})["vector"] = rank
            rest = [p for p in found if p not in sims and p < vectors.rows]
            if rest:
                sims.update(zip(rest, vectors.cosines(q, np.array(rest)).tolist(), strict=True))
        if not found:
            return []
        # Full-text evidence: the share of the query's term weight a passage holds, for
        # the passages full text found (one it did not find holds none of the rarer terms,
        # and so falls below any useful share).
        texts = self.store.text_of([int(cache.ids[p]) for p, _s in fts])
        term_weight = (
            ranking.term_weights(self.store.frequencies(query_terms(query), len(pos)), len(pos))
            if query
            else {}
        )
        fts_score = {
            p: ranking.coverage(term_weight, texts.get(int(cache.ids[p]), "")) for p, _s in fts
        }
        query_words = ranking.words(query) if query else set()
        items: dict[str, ranking.Item] = {}
        facts: list[tuple[ranking.Item, int]] = []
        for p, ranks in found.items():
            e, a = cache.meta[p][0], cache.meta[p][1]
            key = f"{e}\x00{a}" if a.startswith("fact/") else e
            item = items.get(key)
            if item is None:
                item = items[key] = ranking.Item(key, p, int(cache.cols["vf"][p]))
            if sims is not None:
                if sims.get(p, 0.0) > sims.get(item.best, 0.0):
                    item.best, item.time = p, int(cache.cols["vf"][p])
                item.dense.append(max(sims.get(p, 0.0), 0.0))
            if query:
                item.fulltext.append(fts_score.get(p, 0.0))
            for name, rank in ranks.items():
                item.ranks[name] = min(rank, item.ranks.get(name, rank))
            if a.startswith("fact/") and query_words:
                facts.append((item, p))
        if facts:
            texts.update(self.store.text_of([int(cache.ids[p]) for _i, p in facts]))
            for item, p in facts:
                key = cache.meta[p][1].removeprefix("fact/")
                text = texts.get(int(cache.ids[p]), "")
                item.fact = max(item.fact, ranking.fact_match(query_words, key, text))
        weights = self.ranking
        for item in items.values():
            vf = int(cache.cols["vf"][item.best])
            item.recency = ranking.recency(vf, at, vf == SINCE_ALWAYS)
            item.relevance = ranking.relevance(item, weights, sims is not None, bool(query))
            item.score = item.relevance + weights.recency * item.recency
        likeness = vectors.matrix if sims is not None else None
        return ranking.order(list(items.values()), likeness, weights, k)

    def _verified(
        self, ranked: list[ranking.Item], view: View, k: int, explain: bool
    ) -> list[dict[str, Any]]:
        """The first k items whose best passage the ledger view still holds."""
        results: list[dict[str, Any]] = []
        cache, c = self.cache, self.cache.cols
        texts = self.store.text_of([int(cache.ids[i.best]) for i in ranked[: k * 2]])
        for item in ranked:
            if len(results) >= k:
                break
            p = item.best
            rid = int(cache.ids[p])
            e, a, surface, vh, author = cache.meta[p]
            entity = view.get(e)
            if not entity or entity.get("mem/surface") != surface:
                continue
            held = entity.get(a)
            held = held if isinstance(held, list) else [held]
            if not any(value_hash(v) == vh for v in held if isinstance(v, str)):
                continue
            result = {
                "id": e,
                "surface": surface,
                "title": entity.get("mem/title") or entity.get("entity/name"),
                "text": texts.get(rid) or self.store.text_of([rid]).get(rid, ""),
                "score": round(item.score, 6),
                "ranks": item.ranks,
                "provenance": {
                    "entity": e,
                    "attribute": a,
                    "tx": int(c["txf"][p]),
                    "tx_time": format_instant(int(c["time"][p])),
                    "author": author,
                    "source": entity.get("mem/source"),
                    "valid_from": format_instant(int(c["vf"][p])),
                    "valid_to": format_instant(int(c["vt"][p])) if c["vt"][p] != FOREVER else None,
                },
            }
            if item.updates:
                result["updates"] = item.updates.split("\x00")[0]
            if item.updated_by:
                result["updated_by"] = item.updated_by.split("\x00")[0]
            if a.startswith("fact/"):
                previous = _previous(view, e, a, held, entity.get("entity/name"))
                if previous:
                    result["previous"] = previous
            if explain:
                result["explain"] = item.explain()
            results.append(result)
        return results

    # -- answering without the index ----------------------------------------------------
    def _search_ledger(
        self, query: str, surface: str | None, as_of: Any, valid_at: Any, k: int
    ) -> dict[str, Any]:
        """Full text over the ledger itself, for when the index cannot be read: the values
        the view holds for the searchable attributes of its memory items (chunked and
        grouped as the index does), ranked by how many query terms each matches. It reads
        every item, so it is slow on a large ledger; it is there to be right, not fast."""
        view = self.ledger.view(as_of=as_of, valid_at=valid_at)
        terms = query_terms(query)
        best: dict[str, tuple[float, str, str, str, str, dict]] = {}
        for e in view.find("mem/surface", surface) if surface else view.find("mem/surface"):
            entity = view.get(e) or {}
            for a, held in entity.items():
                if not searchable(a):
                    continue
                for value in held if isinstance(held, list) else [held]:
                    if not isinstance(value, str):
                        continue
                    key = f"{e}\x00{a}" if a.startswith("fact/") else e
                    for piece in passages(row_text(a, value, entity.get("entity/name"))):
                        score = _term_score(terms, piece)
                        if score and score > best.get(key, (0.0,))[0]:
                            best[key] = (score, e, a, value, piece, entity)
        ranked = sorted(best.values(), key=lambda r: (-r[0], r[1], r[2]))[:k]
        return {
            "query": query,
            "mode": LEDGER_MODE,
            "note": self._broken_note(),
            "as_of": view.as_of,
            "valid_at": format_instant(view.valid_at),
            "results": [
                _ledger_result(view, rank, *found) for rank, found in enumerate(ranked, start=1)
            ],
        }


def _previous(view: View, e: str, a: str, held: list, name: str | None) -> list[dict]:
    """The values fact `a` of `e` held before the one it holds now, newest first: the
    "then" beside the "now", each with the valid interval it held for."""
    at = view.valid_at
    earlier = [(v, f, t) for v, f, t in view.intervals(e, a) if t <= at and v not in held]
    earlier.sort(key=lambda x: -x[2])
    return [
        {
            "text": row_text(a, v, name),
            "valid_from": format_instant(f),
            "valid_to": format_instant(t),
        }
        for v, f, t in earlier[:3]
        if isinstance(v, str)
    ]


def _term_score(terms: list[str], text: str) -> float:
    """How many of `terms` the text holds — a term matches a word it begins, so "tax"
    finds "taxes" — plus, below one, the share of its words that matched, so a short
    text about the terms ranks before a long one that mentions them. 0 for no match."""

    def matches(word: str, term: str) -> bool:
        return word.startswith(term) if len(term) > 2 else word == term

    words = re.findall(r"\w+", text.lower())
    hit = [t for t in terms if any(matches(w, t) for w in words)]
    if not hit:
        return 0.0
    matched = sum(1 for w in words if any(matches(w, t) for t in hit))
    return len(hit) + matched / (len(words) + 1)


def _ledger_result(
    view: View, rank: int, score: float, e: str, a: str, value: str, text: str, entity: dict
) -> dict[str, Any]:
    """A result in the shape the index gives, its provenance read from the view: the
    last assertion of the value it sees, and the valid interval holding the view's instant."""
    added = [d for d in view.history(e, a) if d["op"] == "add" and d["v"] == value]
    last = max(added, key=lambda d: d["tx"]) if added else {}
    vf, vt = next(
        ((f, t) for v, f, t in view.intervals(e, a) if v == value and f <= view.valid_at < t),
        (SINCE_ALWAYS, FOREVER),
    )
    return {
        "id": e,
        "surface": entity.get("mem/surface"),
        "title": entity.get("mem/title") or entity.get("entity/name"),
        "text": text,
        "score": round(score, 6),
        "ranks": {"ledger": rank},
        "provenance": {
            "entity": e,
            "attribute": a,
            "tx": last.get("tx"),
            "tx_time": last.get("tx_time"),
            "author": last.get("author"),
            "source": entity.get("mem/source"),
            "valid_from": format_instant(vf),
            "valid_to": format_instant(vt),
        },
    }
