"""The recall benchmark harness (bench/recall.py): its metric arithmetic, its positional
handles, and runs over a tiny LongMemEval-format file through the command line path: every
mode (keel's three retrievers on one index, BM25, the plain dense baseline, the peer), the
split filter, and a peer that cannot be imported being a note rather than a crash."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

from keel.ledger import Ledger, Signer
from keel.memory.recall import Recall

BENCH = Path(__file__).resolve().parents[2] / "bench" / "recall.py"


@pytest.fixture(scope="module")
def rb():
    spec = importlib.util.spec_from_file_location("bench_recall", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_recall"] = module
    spec.loader.exec_module(module)
    return module


def _session(*lines: str, answer: bool = False) -> list[dict]:
    turns = []
    for line in lines:
        turns.append({"role": "user", "content": line, **({"has_answer": True} if answer else {})})
        turns.append({"role": "assistant", "content": "Noted, thanks."})
    return turns


def _fixture() -> list[dict]:
    filler = [
        _session("How long should I roast a chicken for dinner?"),
        _session("Can you explain how a heat pump moves heat?"),
        _session("What is a good warm-up before running?"),
    ]
    return [
        {
            "question_id": "q_single",
            "question_type": "single",
            "question": "Which saxophone brand did I buy?",
            "answer": "Yanagisawa",
            "question_date": "2023/06/01 (Thu) 10:00",
            "haystack_dates": [
                "2023/01/02 (Mon) 09:00",
                "2023/02/03 (Fri) 09:00",
                "2023/03/04 (Sat) 09:00",
                "2023/04/05 (Wed) 09:00",
            ],
            "haystack_session_ids": ["ORIGSESS_a1", "ORIGSESS_a2", "ORIGSESS_a3", "ORIGSESS_a4"],
            "haystack_sessions": [
                filler[0],
                _session("I bought a Yanagisawa saxophone, the alto one.", answer=True),
                filler[1],
                filler[2],
            ],
            "answer_session_ids": ["ORIGSESS_a2"],
        },
        {
            "question_id": "q_temporal",
            "question_type": "temporal",
            "question": "Which trombone teacher do I have?",
            "answer": "Mr. Quaresma",
            "question_date": "2023/05/01 (Mon) 12:00",
            "haystack_dates": [
                "2023/01/10 (Tue) 09:00",
                "2023/02/10 (Fri) 09:00",
                "2023/08/10 (Thu) 09:00",
            ],
            "haystack_session_ids": ["ORIGSESS_b1", "ORIGSESS_b2", "ORIGSESS_b3"],
            "haystack_sessions": [
                _session("My trombone teacher is Mr. Quaresma.", answer=True),
                filler[0],
                _session("I switched trombone teacher, it's Ms. Ilunga now."),
            ],
            "answer_session_ids": ["ORIGSESS_b1"],
        },
        {
            "question_id": "q_none",
            "question_type": "abstention",
            "question": "What is my favourite colour?",
            "answer": "unknown",
            "question_date": "2023/05/01 (Mon) 12:00",
            "haystack_dates": ["2023/01/10 (Tue) 09:00"],
            "haystack_session_ids": ["ORIGSESS_c1"],
            "haystack_sessions": [filler[1]],
            "answer_session_ids": [],
        },
    ]


def test_metric_arithmetic(rb):
    ranked = ["x", "a", "y", "b", "z"]
    rel = {"a", "b"}
    one = rb.metrics(ranked, rel, 1)
    assert one == {"recall_any@1": 0.0, "recall_all@1": 0.0, "ndcg@1": 0.0}
    two = rb.metrics(ranked, rel, 2)
    assert two["recall_any@2"] == 1.0 and two["recall_all@2"] == 0.0
    assert two["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    five = rb.metrics(ranked, rel, 5)
    assert five["recall_all@5"] == 1.0
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    assert five["ndcg@5"] == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    # The hand-built case: first place is evidence, the second piece of evidence is missed.
    got = rb.metrics(["a", "x"], rel, 1)
    assert got == {"recall_any@1": 1.0, "recall_all@1": 0.0, "ndcg@1": 1.0}
    assert rb.metrics(["a", "x"], rel, 2)["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert rb.parse_date("2023/05/20 (Sat) 02:21") == "2023-05-20T02:21:00Z"


def test_positional_handles_hide_session_ids(rb, tmp_path):
    inst = _fixture()[0]
    op = Signer.generate("operator")
    led = Ledger.open(str(tmp_path / "k.db"), signer=op)
    led.register_identity("operator", op.public_key, "operator")
    back = rb.load_instance(led, inst)
    assert sorted(back.values()) == sorted(inst["haystack_session_ids"])
    handles = {led.view().value(e, "episode/session") for e in back}
    assert handles == {"s00", "s01", "s02", "s03"}
    datoms, _ = led.committed(0, 10_000)
    assert datoms
    for d in datoms:
        assert "ORIGSESS" not in f"{d['e']} {d['v']}"
    rec = Recall(led, embedder="none")
    rec.catch_up()
    rows, _vecs = rec.store.load()
    texts = rec.store.text_of([r[0] for r in rows])
    assert texts and not any("ORIGSESS" in t for t in texts.values())
    found = [back[r["id"]] for r in rec.search("saxophone", k=10)["results"]]
    assert found == ["ORIGSESS_a2"]
    rec.close()
    led.close()


def test_harness_end_to_end(rb, tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(_fixture()))
    rb.main([str(path), "--json", "--modes", "fulltext,bm25", "--k", "1,5"])
    out = json.loads(capsys.readouterr().out)
    assert out["questions"] == 2
    assert out["skipped_no_evidence"] == ["q_none"]
    rows = {r["question_id"]: r for r in out["per_question"]}
    single = rows["q_single"]["modes"]
    assert single["fulltext"]["top"][0] == "ORIGSESS_a2"
    assert single["fulltext"]["recall_all@1"] == 1.0
    assert single["bm25"]["top"][0] == "ORIGSESS_a2"
    # Asked in May, the August session had not happened: keel must not return it.
    temporal = rows["q_temporal"]["modes"]
    assert "ORIGSESS_b3" not in temporal["fulltext"]["top"]
    assert temporal["fulltext"]["top"][0] == "ORIGSESS_b1"
    assert "ORIGSESS_b3" in temporal["bm25"]["top"]  # the baseline has no time filter
    assert out["overall"]["fulltext"]["recall_any@1"] == 1.0
    assert set(out["by_type"]) == {"single", "temporal"}
    for k in ("recall_any@5", "recall_all@5", "ndcg@5", "latency_p50_ms", "latency_p95_ms"):
        assert k in out["overall"]["bm25"]
    assert all(re.fullmatch(r"[\w.@]+", k) for k in out["ratio_to_bm25"]["fulltext"])


def _split_fixture() -> list[dict]:
    """The three questions, two of them dev and one test (the abstention one has evidence
    here, so all three are asked)."""
    data = _fixture()
    data[2]["answer_session_ids"] = ["ORIGSESS_c1"]
    data[2]["question"] = "How does a heat pump move heat?"
    for inst, split in zip(data, ("dev", "test", "dev"), strict=True):
        inst["split"] = split
    return data


def test_every_mode_side_by_side(rb, tmp_path, capsys):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(_split_fixture()))
    explain = tmp_path / "explain.json"
    rb.main([str(path), "--json", "--k", "1,5", "--explain-file", str(explain)])
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "all" and out["questions"] == 3
    wanted = {"hybrid", "fulltext", "dense", "bm25", "dense-baseline"}
    assert wanted <= set(out["overall"])
    for mode in wanted:
        assert out["overall"][mode]["recall_all@5"] == 1.0, mode
        assert "latency_p50_ms" in out["overall"][mode]
    for mode in wanted - {"bm25"}:
        assert mode in out["ratio_to_bm25"]
    rows = {r["question_id"]: r for r in out["per_question"]}
    for mode in ("hybrid", "dense-baseline"):
        assert rows["q_single"]["modes"][mode]["top"][0] == "ORIGSESS_a2", mode
    for mode in ("hybrid", "fulltext", "dense", "dense-baseline"):
        # The August session had not happened in May: neither keel nor the baseline has it.
        assert "ORIGSESS_b3" not in rows["q_temporal"]["modes"][mode]["top"], mode
        assert "ORIGSESS_b1" in rows["q_temporal"]["modes"][mode]["top"], mode
    assert set(out["by_type"]["temporal"]) >= wanted | {"questions"}
    assert rows["q_single"]["split"] == "dev"
    assert out["embedder"] == rb.embedders.load().name
    # The peer runs when its package is installed (dependency group bench-peers), and is
    # named with its version; otherwise it is a note.
    if "peer:taosmd" in out["overall"]:
        assert re.fullmatch(r"taosmd==[\w.]+", out["peers"]["peer:taosmd"])
        assert rows["q_single"]["modes"]["peer:taosmd"]["top"][0] == "ORIGSESS_a2"
        assert "ORIGSESS_b3" not in rows["q_temporal"]["modes"]["peer:taosmd"]["top"]
    else:
        assert "peer:taosmd" in out["skipped_modes"]
    got = json.loads(explain.read_text())
    assert [q["question_id"] for q in got] == ["q_single", "q_temporal", "q_none"]
    first = got[0]["keel"]["hybrid"][0]
    assert first["session"] == "ORIGSESS_a2" and first["ranks"] and first["score"] > 0


def test_split_filters(rb, tmp_path, capsys):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(_split_fixture()))
    rb.main([str(path), "--json", "--split", "dev", "--modes", "fulltext,bm25"])
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "dev"
    assert sorted(r["question_id"] for r in out["per_question"]) == ["q_none", "q_single"]
    rb.main([str(path), "--json", "--split", "test", "--modes", "bm25"])
    out = json.loads(capsys.readouterr().out)
    assert [r["question_id"] for r in out["per_question"]] == ["q_temporal"]


def test_missing_peer_is_a_note(rb, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "taosmd", None)  # its import now fails
    monkeypatch.setitem(sys.modules, "taosmd.vector_memory", None)
    path = tmp_path / "split.json"
    path.write_text(json.dumps(_split_fixture()[:1]))
    rb.main([str(path), "--json", "--modes", "bm25,peer:taosmd"])
    out = json.loads(capsys.readouterr().out)
    assert list(out["overall"]) == ["bm25"]
    assert out["peers"] == {}
    assert "does not import" in out["skipped_modes"]["peer:taosmd"]
    rb.main([str(path), "--modes", "bm25,peer:taosmd"])  # the tables say so too
    assert "peer:taosmd: skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        rb.main([str(path), "--modes", "bm25,nonesuch"])
