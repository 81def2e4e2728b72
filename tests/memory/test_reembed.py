"""Changing the embedder: `keel reindex --embedder` re-embeds the whole index with the new
model and makes it the home's; another process holding the index follows; vectors of two
models are never in the index together."""

from __future__ import annotations

from keel.memory.index_store import open_index
from keel.memory.recall import Recall
from keel.ops.services import Services


def widths(ledger) -> set[int]:
    store = open_index(ledger)
    try:
        _rows, vectors = store.load()
    finally:
        store.close()
    return {len(v) // 4 for v in vectors if v is not None}


def test_changing_the_embedder_re_embeds_everything_and_others_follow(home, cli):
    for text in ("Renew the car insurance before it lapses", "Book the dentist for June"):
        assert cli("capture", text).code == 0
    services = Services(home)
    ledger = services.open_ledger()
    # Another process's index (as a daemon holds it), following the home's configuration.
    other = Recall(ledger, home.embedder(), configured=home.embedder)
    assert other.search("vehicle coverage", k=1)["mode"] == "hybrid"
    assert widths(ledger) == {384}  # the default: all-MiniLM-L6-v2

    done = cli("reindex", "--embedder", "local:use-m3")
    assert done.code == 0, done.err
    assert "reindexed" in done.out
    assert home.embedder() == "local:use-m3"
    assert widths(ledger) == {512}  # every row again, with the Universal Sentence Encoder

    # The other process sees the index change under it, follows, and adds no 384-wide row.
    assert cli("capture", "Water the tomatoes every evening").code == 0
    found = other.search("garden plants", k=1)
    assert found["mode"] == "hybrid" and found["note"] is None
    assert found["results"][0]["text"] == "Water the tomatoes every evening"
    assert other.status()["embedder"] == "local:use-m3"
    assert widths(ledger) == {512}

    # A spec that names no embedder: one sentence, nothing changed.
    bad = cli("reindex", "--embedder", "word2vec")
    assert bad.code != 0 and "not an embedder" in bad.err and "Traceback" not in bad.err
    assert home.embedder() == "local:use-m3" and widths(ledger) == {512}
    other.close()
    services.close()
