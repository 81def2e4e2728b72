"""Recall's order: exact facts first, recency only a tie-breaker, updates before what they
replaced (both kept), diversity, and the order as a permutation of what was found."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.memory import Memory, Recall, ranking
from keel.memory.memory import ensure_schema


@pytest.fixture
def memory(ledger) -> Memory:
    ensure_schema(ledger)
    return Memory(ledger)


def test_an_exact_fact_outranks_recent_near_copies(memory, ledger):
    memory.upsert_entity("Alice", "person", facts={"lives_in": "Berlin"}, valid_from="2021-03-01")
    for i in range(4):
        memory.capture(f"Note about Alice: coffee with Alice, she talked about her flat ({i})")
    found = Recall(ledger).search("where does Alice live", k=3, explain=True)["results"]
    assert found[0]["text"] == "Alice lives in: Berlin"
    assert found[0]["explain"]["fact"] == 1.0
    # Recency is there, but it only breaks ties: the captures are newer and lose.
    captures = [r for r in found if r["surface"] == "capture"]
    assert captures and all(
        r["explain"]["recency"] > found[0]["explain"]["recency"] for r in captures
    )


def test_a_fact_shows_the_values_it_held_before(memory, ledger):
    memory.upsert_entity("Alice", "person", facts={"lives_in": "Denver"}, valid_from="2019-05-01")
    memory.observe("alice", "Alice moved", at="2024-08-01", fact="lives_in", value="Berlin")
    recall = Recall(ledger)
    now = recall.search("where does Alice live", k=3)["results"][0]
    assert now["text"] == "Alice lives in: Berlin"
    assert now["previous"] == [
        {
            "text": "Alice lives in: Denver",
            "valid_from": "2019-05-01T00:00:00Z",
            "valid_to": "2024-08-01T00:00:00Z",
        }
    ]
    then = recall.search("where does Alice live", k=3, valid_at="2020-01-01")["results"][0]
    assert then["text"] == "Alice lives in: Denver" and "previous" not in then


def test_an_update_comes_before_what_it_replaced_and_both_stay(memory, ledger):
    old = memory.add_episode(
        "user: I park the car in bay 14.\nassistant: Noted.",
        agent="chat",
        title="march",
        at="2024-03-01",
    )["id"]
    memory.add_episode(
        "user: Can you suggest a pasta recipe for tonight?\nassistant: Try cacio e pepe.",
        agent="chat",
        title="pasta",
        at="2024-05-01",
    )
    new = memory.add_episode(
        "user: I park the car in bay 22 now.\nassistant: Noted.",
        agent="chat",
        title="october",
        at="2024-10-01",
    )["id"]
    found = Recall(ledger).search("where do I park", k=3, valid_at="2025-01-01")["results"]
    assert [r["id"] for r in found[:2]] == [new, old]
    assert found[0]["updates"] == old and found[1]["updated_by"] == new
    # Before the newer one was said, the older one is simply the answer.
    before = Recall(ledger).search("where do I park", k=3, valid_at="2024-06-01")["results"]
    assert before[0]["id"] == old and "updated_by" not in before[0]


def test_diversity_lets_a_different_answer_into_the_top(memory, ledger):
    for i in range(4):
        memory.capture(f"Flight to Lisbon booked for the conference, seat {12 + i}A")
    other = memory.capture("Train tickets to Porto for the conference weekend")["id"]
    recall = Recall(ledger)
    recall.ranking = replace(ranking.DEFAULT, diversity=0.0, update=2.0)
    plain = [r["id"] for r in recall.search("travel booked for the conference", k=2)["results"]]
    recall.ranking = replace(ranking.DEFAULT, diversity=1.0, update=2.0)
    diverse = [r["id"] for r in recall.search("travel booked for the conference", k=2)["results"]]
    assert other not in plain and other in diverse


def _items(scores: list[float], times: list[int]) -> list[ranking.Item]:
    return [
        ranking.Item(key=f"i{n}", best=n, time=t, score=s)
        for n, (s, t) in enumerate(zip(scores, times, strict=True))
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 2), st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=40
    ),
    st.sampled_from([0.0, 0.3]),
    st.sampled_from([0.5, 0.9, 2.0]),
    st.integers(1, 10),
)
def test_the_order_is_a_permutation_and_plain_sort_without_its_steps(found, div, upd, k):
    scores = [s for s, _t, _c in found]
    times = [t for _s, t, _c in found]
    # Items in a few clusters of identical vectors: alike within, unlike across.
    basis = np.eye(4, dtype=np.float32)
    vectors = np.stack([basis[c] for _s, _t, c in found])
    weights = replace(ranking.DEFAULT, diversity=div, update=upd)
    ordered = ranking.order(_items(scores, times), vectors, weights, k)
    assert sorted(i.key for i in ordered) == sorted(f"i{n}" for n in range(len(found)))
    if div == 0.0 and upd == 2.0:
        assert [i.score for i in ordered] == sorted(scores, reverse=True)
    for i in ordered:  # every update is placed before what it replaced
        if i.updated_by:
            keys = [x.key for x in ordered]
            assert keys.index(i.updated_by) < keys.index(i.key)


def test_relevance_mixes_both_retrievers_and_one_alone_gets_all_the_weight():
    item = ranking.Item(key="x", best=0, time=0, dense=[0.8, 0.6], fulltext=[0.5])
    weights = replace(ranking.DEFAULT, fulltext=0.25, lexical=0.0, second=0.5, fact=1.0)
    both = ranking.relevance(item, weights, dense=True, fulltext=True)
    assert both == pytest.approx(0.75 * (0.8 + 0.5 * 0.6) + 0.25 * 0.5)
    assert ranking.relevance(item, weights, dense=True, fulltext=False) == pytest.approx(1.1)
    assert ranking.relevance(item, weights, dense=False, fulltext=True) == pytest.approx(0.5)
    # Below the lexical floor, full text counts for nothing; above it, what is above.
    floored = replace(weights, lexical=0.6)
    assert ranking.relevance(item, floored, True, True) == pytest.approx(0.75 * 1.1)
    item.fulltext = [0.8]
    assert ranking.relevance(item, floored, True, True) == pytest.approx(0.75 * 1.1 + 0.25 * 0.5)
    item.fulltext = [0.5]
    item.fact = 1.0
    assert ranking.relevance(item, weights, True, True) == pytest.approx(both + 1.0)


@pytest.mark.parametrize(
    ("query", "key", "text", "expected"),
    [
        ("where does Alice live", "lives_in", "Alice lives in: Berlin", 1.0),
        ("who lived in Berlin", "lives_in", "Alice lives in: Berlin", 0.0),  # no name
        ("does Alice live in Berlin", "lives_in", "Alice lives in: Berlin", 1.0),
        ("where does Bob live", "lives_in", "Alice lives in: Berlin", 0.0),
        ("what is Alice Smith's role", "role", "Alice Smith role: SRE on Atlas", 1.0),
        ("what is Alice's role", "role", "Alice Smith role: SRE on Atlas", 0.0),  # half a name
    ],
)
def test_an_exact_fact_match_needs_the_name_and_the_key_or_value(query, key, text, expected):
    assert ranking.fact_match(ranking.words(query), key, text) == expected
