"""Turning committed datoms into recall rows, incrementally and resumably.

The indexer reads main-branch transactions after its cursor (kept in the index, in the
same transaction as the rows it wrote, so a crash resumes exactly), makes rows of each
searchable value (one per passage, see `passages`), embeds new texts in batches, and closes
rows in transaction time when a retraction covers them — splitting a row's valid interval when a
retraction covers only part of it, so a closed fact stays findable for the time it held.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ledger import KeelError, Ledger
from ..ledger.instants import FOREVER
from .embedders import Embedder
from .index_store import IndexStore, to_blob
from .model import SEARCHABLE

CHUNK = 400  # characters at most per row: a long text is many rows
BATCH_TXS = 400
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def searchable(a: str) -> bool:
    return a in SEARCHABLE or a.startswith("fact/")


def value_hash(value: Any) -> str:
    return hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def passages(text: str, size: int = CHUNK) -> list[str]:
    """The rows a text is searched as: one per line or paragraph (a transcript's turn), a
    long one split at sentence ends and then hard at `size`.

    Why per line, short ones too: a fact is said once, in one turn ("Ollie got a 6 in his
    chemistry mock."), among turns about other things; a row holding several turns dilutes
    it (its vector is an average of all of them), while a row per turn lets the item be
    found by its best turn (see `ranking`)."""
    return [
        piece for line in text.splitlines() if line.strip() for piece in _split(line.strip(), size)
    ]


def _split(line: str, size: int) -> list[str]:
    """A line cut into pieces of at most `size` characters, at sentence ends if it can."""
    if len(line) <= size:
        return [line]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(line):
        while len(sentence) > size:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:size])
            sentence = sentence[size:]
        if current and len(current) + 1 + len(sentence) > size:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]


def row_text(a: str, value: str, name: str | None) -> str:
    # A NUL can reach the ledger through a raw transaction; an index (PostgreSQL's text
    # above all) cannot hold one, and it means nothing to a search.
    value = value.replace("\x00", " ")
    if a.startswith("fact/"):
        return f"{name or ''} {a.removeprefix('fact/').replace('_', ' ')}: {value}".strip()
    return value


class EmbedderChanged(KeelError):
    """Another process rebuilt the index with another embedder."""


class Indexer:
    def __init__(self, store: IndexStore, ledger: Ledger, embedder: Embedder | None):
        self.store = store
        self.ledger = ledger
        self.embedder = embedder
        #: Set when another process indexed rows this one did not see being added.
        self.others_moved = False
        #: Vectors of the current batch's texts, made before its write lock was taken.
        self._ready: dict[str, bytes] = {}

    def catch_up(
        self,
        progress: Callable[[int, int], None] | None = None,
        on_rows: Callable[[list[tuple], list], None] | None = None,
    ) -> int:
        """Index everything committed after the cursor; returns the rows added.

        `on_rows(rows, closed)` lets an in-memory cache follow without reloading."""
        added = 0
        head = self.ledger.head().id
        cursor = self.store.cursor()
        while cursor < head:
            # Embed the batch's new texts before taking the index's write lock: embedding
            # is the slow part, and a process paused or slowed there must not hold a lock
            # every other indexer waits on.
            datoms, upto = self.ledger.committed(cursor, BATCH_TXS)
            self._prepare_vectors(datoms)
            self.store.begin()
            try:
                # Read under the index's write lock: another process may have indexed
                # these transactions while this one waited.
                moved = self.store.cursor()
                self._same_model()
                self.others_moved = self.others_moved or moved != cursor
                if moved >= head:
                    self.store.commit()
                    break
                if moved != cursor:
                    cursor = moved
                    datoms, upto = self.ledger.committed(cursor, BATCH_TXS)
                rows, closed = self._apply(datoms)
                self.store.set_meta("cursor", str(upto))
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
            finally:
                self._ready = {}
            if on_rows:
                on_rows(rows, closed)
            added += len(rows)
            cursor = upto
            if progress:
                progress(cursor, head)
        return added

    def _same_model(self) -> None:
        """Raise EmbedderChanged when the index was rebuilt with another model since this
        process opened it: vectors of two models must never sit in one index."""
        stored = self.store.meta("embedder")
        if self.embedder is not None and stored not in (None, self.embedder.name):
            raise EmbedderChanged(f"the recall index is now built with {stored}")

    def rederive(self, e: str) -> None:
        """Under the index's write lock: index entity `e` afresh, from its datoms up to the
        cursor as the ledger holds them now (rows made since it was last dropped, by
        another process catching up, are dropped first, so none is made twice)."""
        self.store.delete_entity(e)
        self._apply(self.ledger.entity_committed(e, self.store.cursor()))

    def _apply(self, datoms: list[dict]) -> tuple[list[tuple], list[tuple[int, int]]]:
        store = self.store
        for d in datoms:
            if d["op"] == "add" and d["a"] in ("mem/surface", "entity/name"):
                surface = d["v"] if d["a"] == "mem/surface" else None
                name = d["v"] if d["a"] == "entity/name" else None
                store.set_entity(d["e"], surface, name)
        next_id = store.next_id()
        new: list[list] = []
        flushed: list[list] = []
        closed: list[tuple[int, int]] = []
        for d in datoms:
            if not searchable(d["a"]) or not isinstance(d["v"], str):
                continue
            surface, name = store.entity_info(d["e"])
            if surface is None:
                continue
            vh = value_hash(d["v"])
            meta = (d["tx_time"], d["author"])
            if d["op"] == "add":
                for piece in passages(row_text(d["a"], d["v"], name)):
                    new.append(
                        [
                            next_id,
                            d["e"],
                            d["a"],
                            surface,
                            piece,
                            vh,
                            d["valid_from"],
                            d["valid_to"],
                            d["tx"],
                            FOREVER,
                            *meta,
                            None,
                        ]
                    )
                    next_id += 1
                continue
            rf, rt = d["valid_from"], d["valid_to"]
            flushed += self._flush(new)  # the row it closes may be in this very batch
            for rid, text, vf, vt, vec in store.open_rows(d["e"], d["a"], vh, FOREVER):
                if max(vf, rf) >= min(vt, rt):
                    continue
                store.close_row(rid, d["tx"])
                closed.append((rid, d["tx"]))
                for lo, hi in ((vf, rf), (rt, vt)):
                    if lo < hi and lo >= vf and hi <= vt:
                        new.append(
                            [
                                next_id,
                                d["e"],
                                d["a"],
                                surface,
                                text,
                                vh,
                                lo,
                                hi,
                                d["tx"],
                                FOREVER,
                                *meta,
                                vec,
                            ]
                        )
                        next_id += 1
        flushed += self._flush(new)
        return [tuple(r) for r in flushed], closed

    def _flush(self, pending: list[list]) -> list[list]:
        """Embed and store the pending rows; returns them and empties `pending`."""
        rows = list(pending)
        pending.clear()
        if rows:
            self._embed(rows)
            self.store.insert_rows(rows)
        return rows

    def _prepare_vectors(self, datoms: list[dict]) -> None:
        """Embed the texts the batch's additions will make rows of (as far as can be told
        without the lock: a name changed meanwhile makes a text embedded later)."""
        self._ready = {}
        if self.embedder is None:
            return
        names = {d["e"]: d["v"] for d in datoms if d["a"] == "entity/name" and d["op"] == "add"}
        texts: dict[str, None] = {}
        for d in datoms:
            if d["op"] != "add" or not searchable(d["a"]) or not isinstance(d["v"], str):
                continue
            name = names.get(d["e"])
            if name is None and d["a"].startswith("fact/"):
                name = self.store.entity_info(d["e"])[1]
            texts.update(dict.fromkeys(passages(row_text(d["a"], d["v"], name))))
        if texts:
            vectors = np.asarray(self.embedder.embed(list(texts)))
            self._ready = {t: to_blob(v) for t, v in zip(texts, vectors, strict=True)}

    def _embed(self, rows: list[list]) -> None:
        todo = [r for r in rows if r[-1] is None]
        if self.embedder is None or not todo:
            return
        ready = self._ready
        texts = list(dict.fromkeys(r[4] for r in todo if r[4] not in ready))
        by_text = dict(ready)
        if texts:
            vectors = self.embedder.embed(texts)
            by_text.update((t, to_blob(v)) for t, v in zip(texts, np.asarray(vectors), strict=True))
        for r in todo:
            r[-1] = by_text[r[4]]
