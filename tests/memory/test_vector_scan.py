"""The vector scan: exact below a size, quantised with exact re-scoring above it; the mask
(both time axes) is exact on either path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.memory import vectors as vectors_module
from keel.memory.vectors import Vectors


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def approximate(monkeypatch):
    """The quantised path from 200 rows, so a test can afford it."""
    monkeypatch.setattr(vectors_module, "APPROXIMATE", 200)


def filled(seed: int, n: int = 3000, dim: int = 64) -> tuple[Vectors, np.random.Generator]:
    rng = np.random.default_rng(seed)
    held = Vectors()
    for start in range(0, n, 700):  # appended in blocks, as the indexer does
        held.append(unit(rng.standard_normal((min(700, n - start), dim))))
    return held, rng


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 1.0), st.integers(1, 60))
def test_the_quantised_scan_never_returns_a_masked_row_and_scores_exactly(seed, share, n):
    vectors_module.APPROXIMATE, saved = 200, vectors_module.APPROXIMATE
    try:
        held, rng = filled(seed)
        live = rng.random(held.rows) < share
        q = unit(rng.standard_normal((1, held.dim)))[0]
        top, cosines = held.nearest(q, live, n)
        assert len(top) == min(n, int(live.sum()))
        assert live[top].all()  # nothing outside the mask, ever
        assert np.allclose(cosines, held.matrix[top] @ q)  # exact scores
        assert (np.diff(cosines) <= 1e-6).all()  # best first
        exact, _ = held.nearest(q, live, n, exact=True)
        assert len(set(top.tolist()) & set(exact.tolist())) >= 0.8 * len(exact)
    finally:
        vectors_module.APPROXIMATE = saved


def test_the_quantised_scan_finds_what_the_exact_one_finds(approximate):
    held, rng = filled(7, n=5000, dim=128)
    live = rng.random(held.rows) < 0.7
    overlap = []
    for _ in range(50):
        # Queries near held rows, as real questions are near what answers them.
        anchor = held.matrix[rng.integers(held.rows)]
        q = unit((anchor + 0.5 * rng.standard_normal(held.dim) / np.sqrt(held.dim))[None])[0]
        top, _ = held.nearest(q, live, 10)
        exact, _ = held.nearest(q, live, 10, exact=True)
        overlap.append(len(set(top.tolist()) & set(exact.tolist())) / 10)
    assert np.mean(overlap) >= 0.99


def test_rows_added_after_the_quantised_copy_are_found(approximate):
    held, rng = filled(3, n=1000)
    live = np.ones(held.rows, dtype=bool)
    held.nearest(unit(rng.standard_normal((1, held.dim)))[0], live, 5)  # builds the copy
    late = unit(rng.standard_normal((1, held.dim)))
    held.append(late)
    top, cosines = held.nearest(late[0], np.ones(held.rows, dtype=bool), 1)
    assert top.tolist() == [held.rows - 1] and cosines[0] == pytest.approx(1.0, abs=1e-5)


def test_vectors_of_another_width_replace_what_was_held():
    held = Vectors()
    held.append(unit(np.ones((3, 8))))
    held.append(unit(np.ones((2, 4))))
    assert held.rows == 2 and held.dim == 4
