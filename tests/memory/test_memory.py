"""Memory surfaces and their rules, on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.ledger import BadInput, Ledger, NotFound, Refused, Signer
from keel.memory import Memory
from keel.memory.links import extract
from keel.memory.memory import ensure_schema
from keel.memory.model import MAX_TEXT


@pytest.fixture
def memory(ledger) -> Memory:
    ensure_schema(ledger)  # what `keel init` does for a home
    return Memory(ledger)


@pytest.fixture
def agent(ledger) -> Signer:
    bot = Signer.generate("claude-code")
    ledger.register_identity("claude-code", bot.public_key, "agent")
    return bot


def head(ledger: Ledger) -> int:
    return ledger.store.head()[0]


def test_a_contradicted_fact_is_closed_in_valid_time_never_deleted(memory):
    memory.upsert_entity("Alice", "person", facts={"lives_in": "Denver"}, valid_from="2019-05-01")
    memory.observe(
        "alice",
        "Alice moved to [[Berlin]]",
        at="2024-08-01",
        fact="lives_in",
        value="Berlin",
        source="chat 2024-08-02",
    )
    assert memory.entity("alice")["facts"] == {"lives_in": "Berlin"}
    assert memory.entity("Alice", valid_at="2023-03-01")["facts"] == {"lives_in": "Denver"}
    assert "facts" not in memory.entity("alice", valid_at="2018-01-01")
    facts = [ev for ev in memory.timeline("alice") if ev["type"] == "fact"]
    assert [(f["value"], f["valid_from"][:10], (f["valid_to"] or "")[:10]) for f in facts] == [
        ("Denver", "2019-05-01", "2024-08-01"),
        ("Berlin", "2024-08-01", ""),
    ]
    # The closing is a retraction in history, with the observation's reason.
    history = memory.view().history("entity:alice", "fact/lives_in")
    assert [h["op"] for h in history] == ["add", "add", "retract"]
    [obs] = [ev for ev in memory.timeline("alice") if ev["type"] == "observation"]
    assert obs["source"] == "chat 2024-08-02" and obs["author"] == "operator"


def test_a_back_dated_observation_holds_only_until_the_next_known_change(memory):
    memory.observe(
        "bob", "Bob lives in Paris", at="2020-01-01", fact="lives_in", value="Paris", kind="person"
    )
    memory.observe("bob", "Bob moved to Rome", at="2022-01-01", fact="lives_in", value="Rome")
    memory.observe(
        "bob", "Bob was in Oslo for a while", at="2021-01-01", fact="lives_in", value="Oslo"
    )
    at = {
        d: memory.entity("bob", valid_at=d)["facts"]["lives_in"]
        for d in ("2020-06-01", "2021-06-01", "2022-06-01")
    }
    assert at == {"2020-06-01": "Paris", "2021-06-01": "Oslo", "2022-06-01": "Rome"}
    assert memory.entity("bob")["entity/kind"] == "person"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from("ABC")), min_size=1, max_size=8))
def test_facts_match_a_model_where_the_latest_observation_starting_before_wins(ledger, obs):
    """Model: at year t, the value is the one observed with the greatest start <= t (a
    later write wins a tie), whatever order the observations arrive in."""
    ensure_schema(ledger)
    memory = Memory(ledger)
    slug = f"p{head(ledger)}"
    for year, value in obs:
        memory.observe(
            slug,
            f"{slug} in {value}",
            at=f"{2000 + year}-01-01",
            fact="city",
            value=value,
            kind="person",
        )
    for t in range(10):
        started = [(year, i, v) for i, (year, v) in enumerate(obs) if year <= t]
        expected = max(started)[2] if started else None
        got = memory.entity(slug, valid_at=f"{2000 + t}-06-01").get("facts", {}).get("city")
        assert got == expected, (obs, t)


def test_links_come_from_wiki_links_and_frontmatter_and_make_stubs(memory):
    assert extract(
        "met [[Bob Smith|Bob]] at [[Acme#hq]]; see [[sources/abcd1234]]",
        {"works_at": "[[Acme]]", "friends": ["[[Carol]]", "plain"]},
    ) == [
        ("works_at", "acme"),
        ("friends", "carol"),
        ("mentions", "bob-smith"),
        ("mentions", "acme"),
    ]
    memory.upsert_entity(
        "Alice", "person", summary="Friend of [[Bob Smith]]", frontmatter={"works_at": "[[Acme]]"}
    )
    links = memory.entity("alice")["links"]
    assert {(x["type"], x["entity"]) for x in links} == {
        ("mentions", "entity:bob-smith"),
        ("works_at", "entity:acme"),
    }
    bob = memory.entity("bob-smith")
    assert bob["entity/name"] == "Bob Smith" and "entity/kind" not in bob  # a stub
    assert {(x["type"], x["direction"]) for x in bob["links"]} == {("mentions", "in")}
    before = head(memory.ledger)
    memory.upsert_entity(
        "Alice", "person", summary="Friend of [[Bob Smith]]", frontmatter={"works_at": "[[Acme]]"}
    )
    assert head(memory.ledger) == before  # the same entity again writes nothing
    with pytest.raises(NotFound, match="no entity"):
        memory.entity("nobody")


def test_working_memory_expires_from_the_view_and_stays_in_history(memory, ledger):
    clock = {"now": 1_900_000_000_000_000}
    ledger.clock = lambda: clock["now"]
    item = memory.remember("the build is red", scope="agent:codex", ttl="1h")
    assert [w["text"] for w in memory.working("agent:codex")] == ["the build is red"]
    clock["now"] += 3600 * 1_000_000 + 1
    assert memory.working("agent:codex") == []
    with pytest.raises(NotFound):
        memory.item(item["id"])
    assert memory.item(item["id"], valid_at=clock["now"] - 10**9)["text"] == "the build is red"
    assert any(h["a"] == "mem/text" for h in memory.view().history(item["id"]))
    with pytest.raises(BadInput, match="needs an expiry"):
        ledger.transact(
            [
                {"op": "add", "e": "#w", "a": "mem/surface", "v": "working"},
                {"op": "add", "e": "#w", "a": "mem/text", "v": "forever?"},
            ]
        )
    with pytest.raises(BadInput, match="scope"):
        memory.remember("x", scope=" ")


def test_canon_is_the_operators_alone(memory, ledger, agent):
    from keel.memory import rules

    Memory(ledger)  # a second Memory on the same ledger does not add the guard again
    assert ledger._guards.count(rules.check) == 1
    memory.write_canon("style", "Be brief.")
    before = head(ledger)
    with pytest.raises(Refused, match="only the operator"):
        Memory(ledger, signer=agent).write_canon("style", "Be long.")
    with pytest.raises(Refused):
        ledger.transact(
            [{"op": "add", "e": "canon:style", "a": "mem/text", "v": "Be long."}], signer=agent
        )
    assert head(ledger) == before
    assert [c["text"] for c in memory.canon()] == ["Be brief."]


def test_sources_and_observations_never_change(memory, ledger):
    ledger.transact(
        [
            {"op": "add", "e": "source:1", "a": "mem/surface", "v": "source"},
            {"op": "add", "e": "source:1", "a": "mem/text", "v": "raw"},
            {"op": "add", "e": "source:1", "a": "source/hash", "v": "sha256:1"},
        ]
    )
    for op in (
        {"op": "add", "e": "source:1", "a": "mem/text", "v": "edited"},
        {"op": "add", "e": "source:1", "a": "mem/surface", "v": "capture"},
        {"op": "retract", "e": "source:1", "a": "mem/text", "v": "raw"},
    ):
        with pytest.raises(Refused, match="never changes"):
            ledger.transact([op])
    ledger.transact([{"op": "add", "e": "source:1", "a": "source/topics", "v": "ai"}])
    obs = memory.observe("carol", "Carol joined", kind="person")["id"]
    with pytest.raises(Refused, match="observation"):
        ledger.transact([{"op": "retract", "e": obs, "a": "mem/text", "v": "Carol joined"}])


def test_writes_a_surface_cannot_take_are_errors_not_truncations(memory, ledger):
    before = head(ledger)
    with pytest.raises(BadInput, match="not a memory surface"):
        ledger.transact([{"op": "add", "e": "x", "a": "mem/surface", "v": "diary"}])
    with pytest.raises(BadInput, match="nothing was truncated"):
        memory.capture("x" * (MAX_TEXT + 1))
    with pytest.raises(BadInput, match="not an entity kind"):
        memory.upsert_entity("Zed", "spaceship")
    with pytest.raises(BadInput, match="snake case"):
        memory.observe("zed", "text", fact="Lives In", value="x")
    with pytest.raises(BadInput, match="both a fact"):
        memory.observe("zed", "text", fact="lives_in")
    with pytest.raises(BadInput, match="non-empty"):
        memory.capture("   ")
    assert head(ledger) == before
    memory.add_kind("vehicle")
    assert memory.upsert_entity("Zed", "vehicle")["slug"] == "zed"


def test_decisions_episodes_capture_and_daybook(memory, agent, ledger):
    first = memory.log_decision(
        "Use SQLite",
        "one file, no server",
        alternatives=["Postgres"],
        evidence=["bench/ledger.py"],
        at="2026-01-05",
    )
    memory.log_decision("Add PostgreSQL", "several hosts", supersedes=first["id"])
    decisions = memory.items("decision")
    assert [d["title"] for d in decisions] == ["Add PostgreSQL", "Use SQLite"]
    assert decisions[1]["decision/alternatives"] == ["Postgres"]
    assert decisions[0]["decision/supersedes"] == first["id"]
    # A decision is valid from when it was taken.
    assert memory.items("decision", valid_at="2026-01-04") == []
    with pytest.raises(NotFound):
        memory.log_decision("x", "y", supersedes="nope")

    ep = Memory(ledger, signer=agent).add_episode(
        "user: hi\nassistant: hello",
        agent="claude-code",
        session="sess-1",
        at="2026-02-01T10:00:00Z",
    )
    assert memory.item(ep["id"])["episode/agent"] == "claude-code"
    assert memory.view().history(ep["id"])[0]["author"] == "claude-code"
    again = memory.add_episode("user: hi again", agent="claude-code", session="sess-1")
    assert again["id"] == ep["id"] and memory.item(ep["id"])["text"] == "user: hi again"

    memory.capture("call the plumber", source="phone", tags=["home"])
    assert memory.items("capture")[0]["tags"] == ["home"]
    entry = memory.daybook("shipped recall", at="2026-03-04T23:30:00Z")
    assert entry["day"] == "2026-03-04"
    assert [d["text"] for d in memory.day("2026-03-04")] == ["shipped recall"]
