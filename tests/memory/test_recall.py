"""Recall: hybrid and full-text retrieval that respects both time axes, an index that
follows the ledger resumably, and pluggable embedders (one served over real HTTP)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.ledger import BadInput, Ledger
from keel.memory import Memory, Recall, indexer
from keel.memory.embedders import Unavailable
from keel.memory.indexer import passages
from keel.memory.memory import ensure_schema


@pytest.fixture
def memory(ledger) -> Memory:
    ensure_schema(ledger)  # a bare ledger: no `keel init` declared the memory attributes
    return Memory(ledger)


def ids(result: dict) -> list[str]:
    return [r["id"] for r in result["results"]]


def texts(result: dict) -> list[str]:
    return [r["text"] for r in result["results"]]


def test_hybrid_recall_finds_paraphrases_with_provenance(memory, ledger):
    memory.capture("Renew the car insurance before it lapses", source="phone")
    memory.log_decision("Use SQLite as the embedded store", "one file and no server to run")
    memory.capture("The dentist appointment moved to Thursday")
    recall = Recall(ledger)
    assert recall.mode == "hybrid"
    found = recall.search("which database did we pick", k=3)
    assert found["results"][0]["title"] == "Use SQLite as the embedded store"
    top = recall.search("vehicle coverage renewal", k=1)["results"][0]
    assert top["text"] == "Renew the car insurance before it lapses"
    assert top["ranks"].get("vector") == 1
    prov = top["provenance"]
    assert prov["author"] == "operator" and prov["source"] == "phone"
    assert prov["attribute"] == "mem/text" and prov["tx"] > 0


def test_full_text_only_when_no_embedder_and_it_says_so(memory, ledger):
    memory.capture("Renew the car insurance before it lapses")
    recall = Recall(ledger, embedder="none")
    result = recall.search("car insurance")
    assert result["mode"] == "fulltext" and "full text only" in result["note"]
    assert texts(result) == ["Renew the car insurance before it lapses"]
    assert recall.search("vehicle coverage")["results"] == []  # no shared words, no vectors


def test_recall_never_returns_what_was_not_valid_or_not_yet_known(memory, ledger):
    memory.upsert_entity("Alice", "person", facts={"lives_in": "Denver"}, valid_from="2019-05-01")
    known_before_move = ledger.store.head()[0]
    memory.observe(
        "alice", "Alice moved to Berlin", at="2024-08-01", fact="lives_in", value="Berlin"
    )
    recall = Recall(ledger)

    def cities(**kw):
        found = recall.search("where does Alice live", k=10, **kw)["results"]
        return {r["text"] for r in found if r["provenance"]["attribute"] == "fact/lives_in"}

    assert cities() == {"Alice lives in: Berlin"}
    assert cities(valid_at="2023-03-01") == {"Alice lives in: Denver"}
    # As we knew it before the move was recorded, Alice still lived in Denver.
    assert cities(as_of=known_before_move) == {"Alice lives in: Denver"}
    # Nothing about Alice was true in 2010: facts and the dated observation are absent.
    early = recall.search("Alice moved Berlin", valid_at="2010-01-01")["results"]
    assert all(r["provenance"]["attribute"] != "fact/lives_in" for r in early)
    assert "Alice moved to Berlin" not in [r["text"] for r in early]


def test_expired_working_memory_is_not_recalled(memory, ledger):
    clock = {"now": 1_900_000_000_000_000}
    ledger.clock = lambda: clock["now"]
    memory.remember("the staging deploy is frozen", scope="agent:codex", ttl="1h")
    recall = Recall(ledger)
    assert texts(recall.search("staging deploy frozen", surface="working")) == [
        "the staging deploy is frozen"
    ]
    clock["now"] += 2 * 3600 * 1_000_000
    memory.capture("unrelated")  # a new tx, so "now" moves on for the view as well
    assert recall.search("staging deploy frozen", surface="working")["results"] == []


def test_surface_filter_and_bad_queries(memory, ledger):
    memory.capture("quarterly taxes are due")
    memory.log_decision("Pay taxes quarterly", "avoid a penalty")
    recall = Recall(ledger)
    assert {r["surface"] for r in recall.search("taxes", surface="decision")["results"]} == {
        "decision"
    }
    for kwargs, message in (
        ({"query": " "}, "needs a query"),
        ({"query": "x", "surface": "diary"}, "not a memory surface"),
        ({"query": "x", "k": 0}, "k must be"),
    ):
        with pytest.raises(BadInput, match=message):
            recall.search(**kwargs)


def test_long_transcripts_are_chunked_and_count_once(memory, ledger):
    turns = [
        f"user: tell me about topic {i}\nassistant: topic {i} is about gardening tomatoes"
        for i in range(40)
    ]
    memory.add_episode("\n\n".join(turns), agent="claude-code", title="a long chat")
    recall = Recall(ledger)
    assert recall.status()["rows"] == 0  # nothing indexed until asked (or told by the bus)
    result = recall.search("gardening tomatoes", k=5)
    assert ids(result).count(result["results"][0]["id"]) == 1
    assert recall.status()["rows"] > 3
    pieces = passages("\n\n".join(turns))
    assert all(len(p) <= indexer.CHUNK for p in pieces) and len(pieces) > 3
    assert " ".join(pieces).split() == "\n\n".join(turns).split()


class FlakyEmbedder:
    """The real default embedder, failing after `ok` calls, to interrupt a catch-up midway."""

    def __init__(self, ok: int):
        from keel.memory import embedders

        self.inner, self.ok = embedders.load("local"), ok
        self.name = self.inner.name

    def embed(self, texts):
        if self.ok == 0:
            raise Unavailable("the embedder went away")
        self.ok -= 1
        return self.inner.embed(texts)


def test_an_interrupted_index_resumes_to_exactly_a_fresh_build(memory, ledger, monkeypatch):
    for i in range(30):
        memory.capture(f"note {i} about the garden shed roof")
    monkeypatch.setattr(indexer, "BATCH_TXS", 5)
    recall = Recall(ledger)
    recall.indexer.embedder = FlakyEmbedder(ok=2)
    with pytest.raises(Unavailable):
        recall.catch_up()
    cursor = recall.store.cursor()
    assert 0 < cursor < ledger.store.head()[0]
    # A search while the embedder is down still answers, from what is indexed, and says so.
    partial = recall.search("garden shed", k=50)
    assert "behind" in partial["note"]
    recall.indexer.embedder = recall.embedder
    recall.catch_up()
    resumed = recall.store.execute(
        "SELECT e, a, text, vf, vt, txf, txt FROM recall_rows ORDER BY e, a, vf"
    ).fetchall()
    recall.reindex()
    fresh = recall.store.execute(
        "SELECT e, a, text, vf, vt, txf, txt FROM recall_rows ORDER BY e, a, vf"
    ).fetchall()
    assert resumed == fresh and len(fresh) == 30
    assert len(recall.search("garden shed roof", k=50)["results"]) == 30


def test_a_partial_retraction_splits_the_row_in_valid_time(memory, ledger):
    ledger.transact(
        [
            {
                "op": "add",
                "e": "c1",
                "a": "mem/surface",
                "v": "capture",
                "valid_from": "2020-01-01",
            },
            {
                "op": "add",
                "e": "c1",
                "a": "mem/text",
                "v": "office plants need water",
                "valid_from": "2020-01-01",
            },
        ]
    )
    ledger.transact(
        [
            {
                "op": "retract",
                "e": "c1",
                "a": "mem/text",
                "v": "office plants need water",
                "valid_from": "2022-01-01",
                "valid_to": "2023-01-01",
            }
        ]
    )
    recall = Recall(ledger, embedder="none")
    found = {
        d: texts(recall.search("office plants", valid_at=d))
        for d in ("2021-06-01", "2022-06-01", "2023-06-01")
    }
    assert found == {
        "2021-06-01": ["office plants need water"],
        "2022-06-01": [],
        "2023-06-01": ["office plants need water"],
    }
    rows = recall.store.execute(
        "SELECT vf, vt FROM recall_rows WHERE e = 'c1' AND txt > 1000000000000 ORDER BY vf"
    ).fetchall()
    assert len(rows) == 2


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    facts=st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from(["red", "green", "blue"])),
        min_size=1,
        max_size=6,
    ),
    ask=st.integers(0, 9),
)
def test_every_recalled_fact_held_at_the_instant_asked(ledger, facts, ask):
    ensure_schema(ledger)
    memory = Memory(ledger)
    slug = f"kite{ledger.store.head()[0]}"
    for year, colour in facts:
        memory.observe(
            slug,
            f"{slug} is {colour}",
            at=f"{2000 + year}-01-01",
            fact="colour",
            value=colour,
            kind="concept",
        )
    recall = Recall(ledger, embedder="none")
    at = f"{2000 + ask}-06-01"
    got = [
        r
        for r in recall.search(f"{slug} colour", valid_at=at, k=50)["results"]
        if r["provenance"]["attribute"] == "fact/colour" and r["id"] == f"entity:{slug}"
    ]
    held = memory.entity(slug, valid_at=at).get("facts", {}).get("colour")
    assert [r["text"].rsplit(": ", 1)[1] for r in got] == ([held] if held else [])
    recall.close()


class _Embeddings(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/embeddings: a bag of hashed words, deterministic."""

    calls: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, self.headers.get("Authorization"), body["model"]))
        data = []
        for i, text in enumerate(body["input"]):
            v = np.zeros(64)
            for word in text.lower().split():
                v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 64] += 1
            data.append({"index": i, "embedding": v.tolist()})
        payload = json.dumps({"data": data[::-1]}).encode()  # out of order on purpose
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_an_openai_compatible_embedder_over_http(memory, ledger, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    try:
        memory.capture("lemon tart recipe for sunday")
        memory.capture("fix the bike chain")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        recall = Recall(ledger, embedder=f"openai:tiny@{url}")
        result = recall.search("sunday lemon tart")
        assert result["mode"] == "hybrid" and result["results"][0]["ranks"]["vector"] == 1
        assert ("/v1/embeddings", "Bearer sk-test", "tiny") in _Embeddings.calls
        assert recall.status()["embedder"] == "openai:tiny"
        recall.close()
        # The index was built with this model: another embedder is told to reindex.
        other = Recall(ledger)
        assert other.mode == "fulltext" and "reindex" in other.note
        other.reindex()
        assert other.store.meta("embedder") == "local:minilm-l6-int8" and other.mode == "hybrid"
    finally:
        server.shutdown()
        server.server_close()
    # With the server gone, a new index cannot embed: search still answers in full text.
    other.store.clear()
    other.close()
    gone = Recall(ledger, embedder=f"openai:tiny@{url}")
    result = gone.search("lemon tart")
    assert "behind" in result["note"]


def test_a_bad_embedder_spec_is_one_clear_error(ledger):
    with pytest.raises(BadInput, match="not an embedder"):
        Recall(ledger, embedder="word2vec")


def test_the_daemons_index_follows_the_ledger_through_the_bus(home):
    """No search triggers indexing here: the bus subscription alone moves the index."""
    import time

    from keel.cadence.clock import SystemClock
    from keel.daemon.runtime import Runtime

    runtime = Runtime(home, clock=SystemClock(), tick=0.2)
    runtime.start()
    try:
        with runtime.open_ledger() as ledger:
            Memory(ledger).capture("the boiler service is booked for May")
            head = ledger.store.head()[0]
        deadline = time.monotonic() + 20
        while runtime.recall().status()["cursor"] < head and time.monotonic() < deadline:
            time.sleep(0.05)
        status = runtime.recall().status()
        assert status["cursor"] >= head and status["rows"] >= 1
        assert runtime.recall_status()["mode"] == "hybrid"
        subs = {s["name"] for s in runtime.bus.status(head)}
        assert f"recall-index@{home.node}" in subs
    finally:
        runtime.stop()
    # Resumable: a new process's index starts from the cursor it left, not from scratch.
    with home.ledger() as ledger:
        recall = Recall(ledger)
        assert recall.store.cursor() >= head
        assert recall.catch_up() == 0
        recall.close()


def test_two_indexers_at_once_index_each_row_once(memory, ledger, target, operator):
    """Two processes catching up one index: the cursor is read under the index's write
    lock, so neither indexes what the other already did."""
    for i in range(40):
        memory.capture(f"greenhouse note {i}")
    ledgers = [Ledger.open(target, signer=operator) for _ in range(2)]
    recalls = [Recall(led, embedder="none") for led in ledgers]
    errors: list[BaseException] = []

    def run(r: Recall) -> None:
        try:
            r.catch_up()
        except BaseException as exc:  # reported below; a thread cannot raise
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in recalls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    count = recalls[0].store.execute("SELECT count(*), count(DISTINCT e) FROM recall_rows")
    assert count.fetchone() == (40, 40)
    for r in recalls:
        assert len(r.search("greenhouse note", k=100)["results"]) == 40
        r.close()
    for led in ledgers:
        led.close()


def test_very_common_terms_are_left_out_of_the_full_text_query(ledger):
    """A term in more than 5% of rows ranks nothing and costs most of a query's time."""
    from keel.ledger.instants import FOREVER
    from keel.memory.index_store import open_index

    store = open_index(ledger)
    rows = [
        [
            i,
            f"c{i}",
            "mem/text",
            "capture",
            f"note {i} about the {'garden' if i % 2 else 'house'}"
            + (" with a rare heron" if i == 7 else ""),
            "h",
            0,
            FOREVER,
            1,
            FOREVER,
            0,
            "op",
            None,
        ]
        for i in range(1, 1201)
    ]
    store.begin()
    store.insert_rows(rows)
    store.commit()
    kept = store.selective(["note", "garden", "heron"], 1200)
    assert "note" not in kept and "heron" in kept
    assert store.selective(["note", "garden"], 1200) == ["note", "garden"]  # the rarest two stay
    assert store.fulltext("the heron note", 5, 1200)[0][0] == 7
    store.close()
