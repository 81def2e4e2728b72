"""The topic wiki on a real ledger (SQLite and PostgreSQL): sources, articles and citations,
the log, and lint/fix."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.ledger import BadInput, NotFound, Refused
from keel.memory.memory import Memory, ensure_schema
from keel.memory.wiki import Wiki, tag_key, uncited_claims

A = "Transformers use attention over the whole sequence."
B = "Retrieval augments a model with documents fetched at query time."


@pytest.fixture
def wiki(ledger) -> Wiki:
    ensure_schema(ledger)  # what `keel init` does for a home
    return Wiki(Memory(ledger))


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def kinds(findings: list[dict], kind: str) -> list[dict]:
    return [f for f in findings if f["kind"] == kind]


def cited(body: str, *texts: str) -> str:
    return body + " " + " ".join(f"[[sources/{h(t)[:8]}]]" for t in texts)


# -- sources ---------------------------------------------------------------------------------
def test_sources_are_deduplicated_by_content_hash(wiki, ledger):
    first = wiki.add_source(A, title="Attention", topics=["ml"])
    assert first == {
        "id": f"source:{h(A)[:16]}",
        "hash": f"sha256:{h(A)}",
        "duplicate": False,
        "tx": first["tx"],
    }
    head = ledger.view().as_of
    again = wiki.add_source(A, title="Another title")
    assert again["id"] == first["id"] and again["duplicate"] is True and again["tx"] is None
    assert ledger.view().as_of == head  # nothing written
    assert len(wiki.sources()) == 1 and wiki.sources()[0]["title"] == "Attention"
    other = wiki.add_source(A + " ")  # one byte more is another source
    assert other["duplicate"] is False and other["id"] != first["id"]


def test_re_adding_a_source_may_add_topics_only(wiki):
    first = wiki.add_source(A, topics=["ml"])
    again = wiki.add_source(A, topics=["ml", "attention"])
    assert again["duplicate"] is True and again["tx"] is not None
    assert wiki.sources("attention")[0]["id"] == first["id"]
    assert wiki.sources()[0]["topics"] == ["attention", "ml"]
    assert [x["op"] for x in wiki.log()] == ["topic", "ingest"]


def test_a_source_never_changes(wiki, ledger):
    e = wiki.add_source(A)["id"]
    with pytest.raises(Refused, match="never changes"):
        ledger.transact([{"op": "add", "e": e, "a": "mem/text", "v": "rewritten"}])
    with pytest.raises(Refused):
        ledger.transact([{"op": "retract", "e": e, "a": "mem/text", "v": A}])
    assert wiki.sources()[0]["text"] == A


def test_sources_filter_by_topic(wiki):
    wiki.add_source(A, topics=["Machine Learning"])
    wiki.add_source(B, topics=["retrieval"])
    assert [s["text"] for s in wiki.sources("machine-learning")] == [A]
    assert [s["text"] for s in wiki.sources("retrieval")] == [B]
    assert wiki.sources("cooking") == []


def test_empty_source_is_refused(wiki):
    with pytest.raises(BadInput):
        wiki.add_source("   ")


# -- articles --------------------------------------------------------------------------------
def test_citations_resolve_to_sources(wiki):
    a, b = wiki.add_source(A)["id"], wiki.add_source(B)["id"]
    wiki.write_article("Attention", cited("Attention is key.", A, B), topic="ml")
    art = wiki.article("attention")
    assert art["id"] == "article:attention" and art["title"] == "attention"
    assert art["cites"] == sorted([a, b]) and art["topic"] == "ml"


def test_unknown_citation_is_refused_and_nothing_stored(wiki, ledger):
    wiki.add_source(A)
    head = ledger.view().as_of
    with pytest.raises(BadInput, match=r"\[\[sources/deadbeef\]\] matches no source"):
        wiki.write_article("x", cited("Claim.", A) + " [[sources/deadbeef]]")
    with pytest.raises(BadInput, match="at least 8 hex digits"):
        wiki.write_article("x", "Claim. [[sources/abc]]")
    assert ledger.view().as_of == head
    with pytest.raises(NotFound):
        wiki.article("x")


def test_cites_follow_the_body(wiki):
    a, b = wiki.add_source(A)["id"], wiki.add_source(B)["id"]
    wiki.write_article("rag", cited("First.", A))
    assert wiki.article("rag")["cites"] == [a]
    wiki.write_article("rag", cited("Second.", B))
    assert wiki.article("rag")["cites"] == [b]


def test_an_older_body_stays_visible_as_of_its_time(wiki):
    wiki.add_source(A)
    first = wiki.write_article("attn", cited("Old claim.", A), title="Attention")
    wiki.write_article("attn", cited("New claim.", A))
    assert wiki.article("attn")["body"].startswith("New claim.")
    old = wiki.article("attn", as_of=first["tx"])
    assert old["body"].startswith("Old claim.") and old["title"] == "Attention"
    assert wiki.article("attn")["title"] == "Attention"  # kept when not given


def test_rewriting_the_same_article_writes_nothing(wiki):
    wiki.add_source(A)
    wiki.write_article("attn", cited("Claim.", A), tags=["ml"])
    assert wiki.write_article("attn", cited("Claim.", A))["tx"] is None
    assert wiki.article("attn")["tags"] == ["ml"]


def test_index_groups_articles_by_topic(wiki):
    wiki.add_source(A)
    wiki.add_source(B)
    wiki.write_article("rag", cited("R.", A, B), topic="retrieval", title="RAG")
    wiki.write_article("attn", cited("T.", A), topic="ml")
    wiki.write_article("misc", cited("M.", B))
    wiki.write_article("bert", cited("B.", A), topic="ml")
    assert wiki.index() == [
        {
            "topic": "ml",
            "articles": [
                {"slug": "attn", "title": "attn", "sources": 1},
                {"slug": "bert", "title": "bert", "sources": 1},
            ],
        },
        {"topic": "retrieval", "articles": [{"slug": "rag", "title": "RAG", "sources": 2}]},
        {"topic": "(none)", "articles": [{"slug": "misc", "title": "misc", "sources": 1}]},
    ]


def test_log_is_newest_first_with_author(wiki):
    src = wiki.add_source(A)
    art = wiki.write_article("attn", cited("Claim.", A))
    log = wiki.log()
    assert [(x["op"], x["target"], x["tx"]) for x in log] == [
        ("compile", "article:attn", art["tx"]),
        ("ingest", src["id"], src["tx"]),
    ]
    assert {x["author"] for x in log} == {"operator"}
    assert wiki.log(limit=1) == log[:1]


# -- lint and fix ----------------------------------------------------------------------------
def test_broken_links_are_found_and_gone_once_resolved(wiki):
    mem = wiki.memory
    wiki.add_source(A)
    wiki.write_article("attn", cited("See [[Ada Lovelace]] and [[wiki/rag]].", A))
    broken = kinds(wiki.lint(), "broken-link")
    assert {f["detail"].split()[0] for f in broken} == {"[[Ada", "[[wiki/rag]]"}
    assert not any(f["fixable"] for f in broken)
    mem.upsert_entity("Ada Lovelace", "person")
    wiki.write_article("rag", cited("Retrieval.", A))
    assert kinds(wiki.lint(), "broken-link") == []


def test_orphan_sources_until_cited(wiki):
    e = wiki.add_source(A)["id"]
    assert kinds(wiki.lint(), "orphan-source") == [
        {
            "kind": "orphan-source",
            "target": e,
            "detail": "no article cites this source",
            "fixable": False,
        }
    ]
    wiki.write_article("attn", cited("Claim.", A))
    assert kinds(wiki.lint(), "orphan-source") == []


def test_an_article_goes_stale_when_its_topic_gets_a_new_source(wiki):
    wiki.add_source(A, topics=["ml"])
    wiki.write_article("attn", cited("Claim.", A), topic="ml")
    assert kinds(wiki.lint(), "stale-article") == []
    b = wiki.add_source(B, topics=["ML"])["id"]  # the same topic, spelled otherwise
    stale = kinds(wiki.lint(), "stale-article")
    assert [(f["target"], f["detail"].split()[0]) for f in stale] == [("attn", b)]
    wiki.write_article("attn", cited("Claim, updated.", A, B))
    assert kinds(wiki.lint(), "stale-article") == []


def test_near_duplicate_tags_are_found_and_fixed(wiki):
    wiki.add_source(A)
    body = cited("Claim.", A)
    wiki.write_article("one", body, tags=["Machine Learning", "nlp"])
    wiki.write_article("two", body, tags=["machine-learning"])
    wiki.write_article("three", body, tags=["machine-learning", "machine_learnings"])
    [dup] = kinds(wiki.lint(), "near-duplicate-tags")
    assert dup["target"] == "machine-learning" and dup["fixable"] is True
    done = wiki.fix()
    assert [d["kind"] for d in done] == ["near-duplicate-tags"]
    assert kinds(wiki.lint(), "near-duplicate-tags") == []
    tags = {s: wiki.article(s)["tags"] for s in ("one", "two", "three")}
    assert tags == {
        "one": ["machine-learning", "nlp"],
        "two": ["machine-learning"],
        "three": ["machine-learning"],
    }
    assert wiki.log()[0]["op"] == "fix"


def test_tag_ties_go_to_the_alphabetically_first_spelling(wiki):
    wiki.add_source(A)
    wiki.write_article("one", cited("C.", A), tags=["Graphs"])
    wiki.write_article("two", cited("C.", A), tags=["graph"])
    wiki.fix()
    assert wiki.article("one")["tags"] == wiki.article("two")["tags"] == ["Graphs"]


def test_topic_spellings_on_sources_are_relabelled_but_their_text_is_not(wiki):
    wiki.add_source(A, topics=["LLMs"])
    b = wiki.add_source(B, topics=["llm", "llm-ops"])["id"]
    [dup] = kinds(wiki.lint(), "near-duplicate-tags")
    assert dup["fixable"] is True
    assert [f["kind"] for f in wiki.fix()] == ["near-duplicate-tags"]
    assert kinds(wiki.lint(), "near-duplicate-tags") == []
    view = wiki.memory.view()
    assert sorted(view.value(b, "source/topics")) == ["LLMs", "llm-ops"]  # tie: "LLMs" < "llm"
    assert view.value(b, "mem/text") == B


def test_article_topics_take_the_sources_spelling(wiki):
    wiki.add_source(A, topics=["machine-learning"])
    wiki.add_source(B, topics=["machine-learning"])
    wiki.write_article("ml", cited("C.", A, B), topic="Machine Learning")
    wiki.fix()
    assert wiki.article("ml")["topic"] == "machine-learning"
    assert kinds(wiki.lint(), "near-duplicate-tags") == []


def test_fix_respells_a_link_and_leaves_judgement_calls_alone(wiki):
    wiki.memory.upsert_entity("Ada Lovelace", "person")
    wiki.add_source(A)
    orphan = wiki.add_source(B)["id"]
    body = cited("Cited: [[ada_LOVELACE|Ada]] wrote notes.", A) + "\n\nAn uncited claim."
    wiki.write_article("ada", body)
    [link] = kinds(wiki.lint(), "broken-link")
    assert link["fixable"] is True and "[[Ada Lovelace]]" in link["detail"]
    done = wiki.fix()
    assert done == [
        {"kind": "broken-link", "target": "ada", "detail": "[[ada_LOVELACE]] -> [[Ada Lovelace]]"}
    ]
    assert "[[Ada Lovelace|Ada]]" in wiki.article("ada")["body"]
    after = wiki.lint()
    assert kinds(after, "broken-link") == []
    assert [f["target"] for f in kinds(after, "orphan-source")] == [orphan]
    assert [f["detail"] for f in kinds(after, "uncited-claim")] == ["An uncited claim."]
    assert wiki.fix() == []


def test_a_link_respelled_to_an_article(wiki):
    wiki.add_source(A)
    wiki.write_article("machine-learning", cited("ML.", A))
    wiki.write_article("x", cited("See [[wiki/Machine_Learning]].", A))
    wiki.fix()
    assert "[[wiki/machine-learning]]" in wiki.article("x")["body"]
    assert kinds(wiki.lint(), "broken-link") == []


def test_uncited_claims_are_found_until_cited(wiki):
    wiki.add_source(A)
    src = f"[[sources/{h(A)[:8]}]]"
    body = f"# Heading\n\nCited claim {src}.\n\n- an uncited item\n- a cited item {src}\n"
    wiki.write_article("attn", body)
    assert [f["detail"] for f in kinds(wiki.lint(), "uncited-claim")] == ["an uncited item"]
    wiki.write_article("attn", body.replace("an uncited item", f"now cited {src}"))
    assert kinds(wiki.lint(), "uncited-claim") == []


def test_what_counts_as_a_claim():
    body = (
        "# A heading\n\n```\ncode is not a claim\n```\n\n[[Ada]], [[wiki/x]]\n\n"
        "Prose that goes on\nover two lines.\n\n1. numbered item\n   continued\n"
    )
    assert uncited_claims(body) == [
        "Prose that goes on over two lines.",
        "numbered item continued",
    ]


# -- the tag key -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tag", ["Machine Learning", "machine-learning", "machine_learnings", " MACHINE  learning "]
)
def test_tag_key_unifies_spellings(tag):
    assert tag_key(tag) == "machine-learning"


def test_tag_key_keeps_distinct_tags_apart():
    assert tag_key("class") != tag_key("cla") and tag_key("bus") == "bus"
    assert tag_key("machine learning") != tag_key("machinelearning")


@given(st.text())
def test_tag_key_is_idempotent(tag):
    assert tag_key(tag_key(tag)) == tag_key(tag)


def _sharing_a_prefix() -> tuple[str, str]:
    """Two texts whose hashes share their first 8 hex digits (a birthday search)."""
    seen: dict[str, str] = {}
    i = 0
    while True:
        text = f"note {i}"
        prefix = h(text)[:8]
        if prefix in seen:
            return seen[prefix], text
        seen[prefix] = text
        i += 1


def test_an_ambiguous_citation_asks_for_more_digits(wiki):
    one, two = _sharing_a_prefix()
    wiki.add_source(one)
    wiki.add_source(two)
    with pytest.raises(BadInput, match="matches 2 sources; give more digits"):
        wiki.write_article("x", f"Claim [[sources/{h(one)[:8]}]].")
    wiki.write_article("x", f"Claim [[sources/{h(one)[:12]}]].")
    assert wiki.article("x")["cites"] == [f"source:{h(one)[:16]}"]
