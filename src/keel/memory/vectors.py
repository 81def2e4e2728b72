"""The recall cache's vectors, and the nearest of them to a query among the rows a mask
lets through.

Small indexes are scanned exactly: one float32 matrix-vector product. From `APPROXIMATE`
rows up, the scan runs over 8-bit scalar-quantised copies of the vectors (faiss, a
quarter of the bytes to read, which is what a scan over a memory-bound matrix costs) with
the mask applied inside the scan (a bitmap, so filtering stays exact: no row outside the
mask is ever a candidate), and the best `RESCORE`× as many candidates as asked are scored
again exactly in float32. Only the choice of candidates is approximate; their order and
scores are exact. `bench/recall_scale.py` measures what the approximation loses.
"""

from __future__ import annotations

import numpy as np

#: Rows from which the quantised scan is used.
APPROXIMATE = 20_000
#: Candidates taken from the quantised scan per candidate asked, before exact scoring.
RESCORE = 4


class Vectors:
    """Row vectors in cache order, grown in place (appending copies nothing already held,
    most of the time), with the quantised copy made on first use and kept up to date."""

    def __init__(self) -> None:
        self._data = np.zeros((0, 0), dtype=np.float32)
        self.rows = 0
        self._quantised = None  # a faiss index over rows [0, self._quantised_rows)
        self._quantised_rows = 0

    @property
    def dim(self) -> int:
        return self._data.shape[1]

    @property
    def matrix(self) -> np.ndarray:
        return self._data[: self.rows]

    def append(self, block: np.ndarray) -> None:
        """Add rows (an (n, dim) float32 array; zeros where a row has no vector). A block of
        another width replaces everything held: vectors of two models never mix."""
        n = len(block)
        if self.rows and block.shape[1] != self.dim:
            self.__init__()
        if self.rows + n > len(self._data) or self._data.shape[1] != block.shape[1]:
            grown = np.zeros((max(2 * (self.rows + n), 1024), block.shape[1]), dtype=np.float32)
            if self.rows:
                grown[: self.rows] = self._data[: self.rows]
            self._data = grown
        self._data[self.rows : self.rows + n] = block
        self.rows += n

    def nearest(
        self, q: np.ndarray, live: np.ndarray, n: int, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The positions of the (at most) `n` live rows nearest `q` by cosine, best first,
        with their exact cosines. `exact` forces the full float32 scan."""
        live = live[: self.rows]
        count = int(live.sum())
        n = min(n, count)
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if exact or self.rows < APPROXIMATE:
            sims = np.where(live, self.matrix @ q, -np.inf)
            top = np.argpartition(-sims, n - 1)[:n] if n < len(sims) else np.arange(len(sims))
        else:
            top = self._candidates(q, live, min(count, n * RESCORE))
            sims = np.full(self.rows, -np.inf, dtype=np.float32)
            sims[top] = self._data[top] @ q
            top = top[np.argpartition(-sims[top], n - 1)[:n]] if n < len(top) else top
        top = top[np.argsort(-sims[top], kind="stable")]
        return top, sims[top]

    def cosines(self, q: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self._data[positions] @ q

    def _candidates(self, q: np.ndarray, live: np.ndarray, n: int) -> np.ndarray:
        import faiss

        index = self._quantised_index()
        bits = np.packbits(live, bitorder="little")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(self.rows, faiss.swig_ptr(bits)))
        _scores, found = index.search(q.reshape(1, -1).astype(np.float32), n, params=params)
        found = found[0]
        return found[found >= 0].astype(np.int64)

    def _quantised_index(self):
        import faiss

        if self._quantised is None or self._quantised.d != self.dim:
            faiss.omp_set_num_threads(1)  # one query: a thread team costs more than it saves
            # One range for every dimension (QT_8bit_uniform): a third faster to scan than
            # a range per dimension, and as good after exact re-scoring (docs/benchmarks.md).
            index = faiss.IndexScalarQuantizer(
                self.dim, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT
            )
            # The range from the rows held now; later rows outside it are clipped in the
            # quantised copy only (their exact score is unharmed).
            index.train(self.matrix)
            self._quantised, self._quantised_rows = index, 0
        if self._quantised_rows < self.rows:
            self._quantised.add(self._data[self._quantised_rows : self.rows])
            self._quantised_rows = self.rows
        return self._quantised
