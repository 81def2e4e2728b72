"""Branches (fork, read, write, merge, drop) and restore, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from keel.ledger import BadInput, Conflict, KeelError, Ledger, NotFound, Signer

SCHEMA = [
    {"attribute": "person/handle", "type": "string", "unique": "identity"},
    {"attribute": "person/city", "type": "string"},
    {"attribute": "person/tags", "type": "string", "cardinality": "many"},
    {"attribute": "person/email", "type": "string", "unique": "value"},
    {"attribute": "task/status", "type": "string"},
    {"attribute": "task/title", "type": "string"},
]


@pytest.fixture
def led(ledger):
    ledger.declare(SCHEMA)
    return ledger


def add(e, a, v, **kw) -> dict:
    return {"op": "add", "e": e, "a": a, "v": v, **kw}


def retract(e, a, v, **kw) -> dict:
    return {"op": "retract", "e": e, "a": a, "v": v, **kw}


def head(led: Ledger) -> int:
    return led.head().id


def datom_count(led: Ledger) -> int:
    return led.store.fetchone("SELECT count(*) FROM datoms")[0]


def refused(led: Ledger, exc_type: type[KeelError], fn, *args, **kw) -> KeelError:
    before = (head(led), datom_count(led))
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    assert (head(led), datom_count(led)) == before, "a refused call wrote something"
    return info.value


def city(led: Ledger, e: str, branch: str = "main", **kw):
    return led.view(branch, **kw).value(e, "person/city")


@pytest.fixture
def alice(led) -> str:
    return led.transact(
        [add("#a", "person/handle", "alice"), add("#a", "person/city", "Boston")]
    ).tempids["#a"]


# -- fork and read -----------------------------------------------------------------------


def test_fork_at_head(led, alice):
    fork_point = head(led)
    b = led.create_branch("experiment")
    assert (b.name, b.base, b.state, b.parent) == ("experiment", fork_point, "open", 0)
    assert b.id >= 1
    assert [x.name for x in led.branches()] == ["experiment"]
    # The branch sees main up to the fork.
    assert city(led, alice, "experiment") == "Boston"
    # Writes on the branch stay on the branch.
    on_branch = led.transact([add(alice, "person/city", "Denver")], branch="experiment")
    assert on_branch.branch == "experiment"
    assert city(led, alice, "experiment") == "Denver"
    assert city(led, alice) == "Boston"
    new = led.transact([add("#n", "person/handle", "nina")], branch="experiment").tempids["#n"]
    assert led.view("experiment").get(new) == {"person/handle": "nina"}
    assert led.view().get(new) is None
    assert led.view().find("person/handle", "nina") == []
    assert led.view("experiment").find("person/handle", "nina") == [new]
    # Writes on main after the fork stay on main.
    bob = led.transact([add("#b", "person/handle", "bob")]).tempids["#b"]
    led.transact([add(alice, "person/tags", "main-only")])
    assert led.view("experiment").get(bob) is None
    assert led.view("experiment").value(alice, "person/tags") is None
    assert led.view().value(alice, "person/tags") == ["main-only"]
    # Unique identity is checked per branch: nina is free on main.
    led.transact([add("#n2", "person/handle", "nina")])
    # A branch's history holds main's datoms up to the fork and its own.
    rows = led.view("experiment").history(alice, "person/city")
    assert [(r["v"], r["tx"]) for r in rows] == [
        ("Boston", led.view().history(alice, "person/city")[0]["tx"]),
        ("Denver", on_branch.tx),
    ]
    assert rows[0]["tx"] <= fork_point
    assert led.verify().ok


def test_fork_at_an_older_tx(led, alice):
    t_boston = head(led)
    led.transact([add(alice, "person/city", "Denver")])
    t_denver = head(led)
    led.transact([add(alice, "person/city", "Lima")])
    old = led.create_branch("old", at=t_boston)
    assert old.base == t_boston
    assert city(led, alice, "old") == "Boston"
    mid = led.create_branch("mid", at=t_denver)
    assert city(led, alice, "mid") == "Denver"
    assert city(led, alice) == "Lima"
    # The branch's own writes are added to what it saw at the fork.
    led.transact([add(alice, "person/tags", "old-tag")], branch="old")
    assert led.view("old").get(alice) == {
        "person/handle": "alice",
        "person/city": "Boston",
        "person/tags": ["old-tag"],
    }
    assert city(led, alice, "mid") == "Denver"
    assert led.view("mid").value(alice, "person/tags") is None
    # As-of on a branch: before its own write, only main's state at the fork.
    assert led.view("old", as_of=head(led) - 1).value(alice, "person/tags") is None
    assert mid.base == t_denver
    # The branch log is main up to the fork and then the branch's own transactions.
    log = list(led.log(branch="old"))
    assert [e["tx"] for e in log] == [*range(1, t_boston + 1), head(led)]
    assert {e["branch"] for e in log} == {"main", "old"}
    assert all(e["branch"] == "main" for e in log[:-1])
    assert [e["tx"] for e in led.log()] == list(range(1, head(led) + 1))


def test_fork_at_head_after_writing_on_another_branch(led, alice):
    """A new fork "at head" forks main at its head, not some other branch."""
    led.create_branch("first")
    led.transact([add(alice, "person/city", "Denver")], branch="first")
    second = led.create_branch("second")
    assert second.parent == 0
    assert city(led, alice, "second") == "Boston", "a fork of main sees another branch's write"


def test_fork_of_a_fork(led, alice):
    led.create_branch("a")
    led.transact([add(alice, "person/city", "A-city")], branch="a")
    at = head(led)
    nested = led.create_branch("a-child", at=at)
    assert nested.parent == led.branch("a").id
    assert city(led, alice, "a-child") == "A-city"
    led.transact([add(alice, "person/tags", "deep")], branch="a-child")
    assert led.view("a").value(alice, "person/tags") is None
    assert led.view().value(alice, "person/tags") is None
    led.merge_branch("a-child")
    assert led.view("a").value(alice, "person/tags") == ["deep"]
    assert led.view().value(alice, "person/tags") is None
    led.merge_branch("a")
    assert led.view().value(alice, "person/tags") == ["deep"]
    assert city(led, alice) == "A-city"
    assert led.verify().ok


# -- merge -------------------------------------------------------------------------------


def test_merge_without_conflict(led, alice):
    task = led.transact([add("#t", "task/title", "plan"), add("#t", "task/status", "open")])
    task_id = task.tempids["#t"]
    led.create_branch("feature")
    led.transact(
        [
            add(alice, "person/city", "Denver"),
            add(alice, "person/tags", "x"),
            add(alice, "person/tags", "y"),
            add("#n", "person/handle", "nina"),
            add("#n", "person/city", "Oslo", valid_from="2020-01-01", valid_to="2021-01-01"),
        ],
        branch="feature",
        reason="branch work",
    )
    led.transact([retract(alice, "person/tags", "y")], branch="feature")
    # Main changes something else meanwhile: a different entity, and another attribute of
    # the same entity.
    led.transact([add(task_id, "task/status", "done")])
    led.transact([add(alice, "person/email", "alice@example.org")])
    before = head(led)
    result = led.merge_branch("feature")
    assert result.tx == before + 1 and result.branch == "main"
    view = led.view()
    assert view.value(alice, "person/city") == "Denver"
    assert view.value(alice, "person/tags") == ["x"]
    assert view.value(alice, "person/email") == "alice@example.org"
    assert view.value(task_id, "task/status") == "done"
    (nina,) = view.find("person/handle", "nina")
    assert led.view(valid_at="2020-06-01").value(nina, "person/city") == "Oslo"
    assert led.view(valid_at="2022-06-01").value(nina, "person/city") is None
    # Main as of before the merge did not have the branch's values.
    assert led.view(as_of=before).value(alice, "person/city") == "Boston"
    assert led.branch("feature").state == "merged"
    # A merged branch takes no more writes and cannot merge again.
    refused(led, BadInput, led.transact, [add(alice, "person/city", "X")], branch="feature")
    refused(led, Conflict, led.merge_branch, "feature")
    refused(led, Conflict, led.drop_branch, "feature")
    assert led.verify().ok


def test_merge_a_branch_that_changed_one_attribute_twice(led, alice):
    """Later writes on a branch win after merging, as they did on the branch."""
    led.create_branch("twice")
    led.transact([add(alice, "person/city", "Denver")], branch="twice")
    led.transact([add(alice, "person/city", "Lima")], branch="twice")
    assert city(led, alice, "twice") == "Lima"
    led.merge_branch("twice")
    assert city(led, alice) == "Lima"


def test_merge_a_branch_that_moved_a_unique_value(led, alice):
    bob = led.transact([add("#b", "person/handle", "bob")]).tempids["#b"]
    led.transact([add(alice, "person/email", "shared@example.org")])
    led.create_branch("move")
    led.transact([retract(alice, "person/email", "shared@example.org")], branch="move")
    led.transact([add(bob, "person/email", "shared@example.org")], branch="move")
    led.merge_branch("move")
    assert led.view().find("person/email", "shared@example.org") == [bob]


def test_merge_with_conflict_names_each_clash(led, alice):
    task = led.transact([add("#t", "task/status", "open")]).tempids["#t"]
    led.create_branch("rival")
    led.transact(
        [
            add(alice, "person/city", "Denver"),
            add(task, "task/status", "blocked"),
            add(alice, "person/tags", "fine"),
        ],
        branch="rival",
    )
    led.transact([add(alice, "person/city", "Paris")])
    led.transact([add(task, "task/status", "done")])
    err = refused(led, Conflict, led.merge_branch, "rival")
    message = str(err)
    assert f"{alice} person/city" in message
    assert f"{task} task/status" in message
    assert "person/tags" not in message
    assert "2 clash" in message
    assert err.exit_code == 3
    # Nothing moved: main keeps its values and the branch stays open with its own.
    assert city(led, alice) == "Paris"
    assert led.view().value(task, "task/status") == "done"
    assert led.branch("rival").state == "open"
    assert city(led, alice, "rival") == "Denver"


def test_merge_conflict_with_a_write_before_the_branch_existed(led, alice):
    """Forked at an old tx: main's writes after that tx count, even if made before forking."""
    fork_at = head(led)
    led.transact([add(alice, "person/city", "Paris")])
    led.create_branch("late", at=fork_at)
    led.transact([add(alice, "person/city", "Denver")], branch="late")
    err = refused(led, Conflict, led.merge_branch, "late")
    assert "person/city" in str(err)


def test_drop(led, alice):
    led.create_branch("scratch")
    led.transact([add(alice, "person/city", "Nowhere")], branch="scratch")
    result = led.drop_branch("scratch")
    assert result.branch == "main"
    assert led.branch("scratch").state == "dropped"
    assert [(b.name, b.state) for b in led.branches()] == [("scratch", "dropped")]
    with pytest.raises(NotFound):
        led.view("scratch")
    refused(led, BadInput, led.transact, [add(alice, "person/city", "X")], branch="scratch")
    refused(led, Conflict, led.drop_branch, "scratch")
    refused(led, Conflict, led.merge_branch, "scratch")
    refused(led, KeelError, led.create_branch, "scratch")
    # Forking from a transaction on a dropped branch is refused too.
    refused(led, BadInput, led.create_branch, "from-dropped", at=head(led) - 1)
    assert city(led, alice) == "Boston"
    assert led.verify().ok


def test_unknown_and_bad_branches(led, alice):
    with pytest.raises(NotFound) as info:
        led.view("nope")
    assert "nope" in str(info.value)
    refused(led, NotFound, led.transact, [add(alice, "person/city", "X")], branch="nope")
    refused(led, NotFound, led.merge_branch, "nope")
    refused(led, NotFound, led.drop_branch, "nope")
    with pytest.raises(NotFound):
        list(led.log(branch="nope"))
    with pytest.raises(NotFound):
        led.restore(alice, 1, branch="nope")
    for bad in ("", "main", "has space", "../x", "-lead", "x" * 65, 7):
        refused(led, BadInput, led.create_branch, bad)
    refused(led, NotFound, led.create_branch, "future", at=head(led) + 5)
    refused(led, NotFound, led.create_branch, "zero", at=0)
    led.create_branch("twin")
    refused(led, Conflict, led.create_branch, "twin")
    refused(led, KeelError, led.merge_branch, "main")


def test_branches_are_visible_to_another_connection(led, alice, target, operator):
    led.create_branch("shared")
    with Ledger.open(target, signer=operator) as other:
        other.transact([add(alice, "person/city", "Rome")], branch="shared")
        assert [b.name for b in other.branches()] == ["shared"]
    assert city(led, alice, "shared") == "Rome"
    assert city(led, alice) == "Boston"


# -- restore -----------------------------------------------------------------------------


def test_restore_to_an_older_tx(led, alice):
    led.transact(
        [
            add(alice, "person/tags", "a"),
            add(alice, "person/tags", "b"),
            add(alice, "person/city", "Denver", valid_from="2019-01-01", valid_to="2024-01-01"),
        ]
    )
    good = head(led)
    good_state = led.view().get(alice)
    good_timeline = led.view().timeline(alice, "person/city")
    good_tags = led.view().timeline(alice, "person/tags")
    # Damage: overwrite the city for all time, drop a tag, add another, add an attribute.
    led.transact(
        [
            add(alice, "person/city", "Wrong", valid_from="2000-01-01"),
            retract(alice, "person/tags", "a"),
            add(alice, "person/tags", "c"),
            add(alice, "person/email", "x@example.org"),
        ],
        reason="a bad import",
    )
    assert led.view().get(alice) != good_state
    history_before = led.view().history(alice)
    result = led.restore(alice, good)
    assert result is not None and result.tx == head(led)
    assert led.view().get(alice) == good_state
    assert [
        (s["v"], s["valid_from"], s["valid_to"]) for s in led.view().timeline(alice, "person/city")
    ] == [(s["v"], s["valid_from"], s["valid_to"]) for s in good_timeline]
    assert sorted(
        (s["v"], s["valid_from"], s["valid_to"]) for s in led.view().timeline(alice, "person/tags")
    ) == sorted((s["v"], s["valid_from"], s["valid_to"]) for s in good_tags)
    assert led.view(valid_at="2020-06-01").value(alice, "person/city") == "Denver"
    # History is kept: nothing was rewritten, the restore is a new forward transaction.
    history_after = led.view().history(alice)
    assert history_after[: len(history_before)] == history_before
    assert len(history_after) > len(history_before)
    assert {r["tx"] for r in history_after[len(history_before) :]} == {result.tx}
    assert led.view(as_of=result.tx - 1).value(alice, "person/city") == "Wrong"
    (entry,) = led.log(since=result.tx - 1)
    assert str(good) in entry["reason"]
    assert led.verify().ok
    # Restoring again changes nothing and writes nothing.
    h = head(led)
    assert led.restore(alice, good) is None
    assert head(led) == h


def test_restore_by_hash_and_signed_by_who_asked(led, alice, operator):
    first = list(led.log())[-1]
    agent = Signer.generate("fixer")
    led.register_identity("fixer", agent.public_key, "agent")
    led.transact([add(alice, "person/city", "Denver")])
    result = led.restore(alice, first["hash"], signer=agent)
    assert city(led, alice) == "Boston"
    (entry,) = led.log(since=result.tx - 1)
    assert entry["author"] == "fixer"
    assert entry["key"] == agent.public_key.hex()
    assert led.verify().ok


def test_restore_when_nothing_changed(led, alice):
    h = head(led)
    assert led.restore(alice, h) is None
    assert head(led) == h
    # Changes to other entities do not count.
    led.transact([add("#o", "person/handle", "other")])
    assert led.restore(alice, h) is None
    assert head(led) == h + 1


def test_restore_refusals(led, alice):
    refused(led, NotFound, led.restore, "nobody", head(led))
    refused(led, NotFound, led.restore, alice, head(led) + 10)
    refused(led, BadInput, led.restore, alice, "not a tx")


def test_restore_on_a_branch(led, alice):
    good = head(led)
    led.create_branch("fix")
    led.transact([add(alice, "person/city", "Broken")], branch="fix")
    led.transact([add(alice, "person/city", "Main-change")])
    result = led.restore(alice, good, branch="fix")
    assert result is not None and result.branch == "fix"
    assert city(led, alice, "fix") == "Boston"
    assert city(led, alice) == "Main-change"
    assert led.verify().ok


def test_restore_an_entity_to_before_it_existed(led):
    before = head(led)
    e = led.transact([add("#x", "person/handle", "ghost"), add("#x", "person/tags", "t")])
    ghost = e.tempids["#x"]
    led.restore(ghost, before)
    assert led.view().get(ghost) is None
    assert led.view().find("person/handle", "ghost") == []
    assert led.view(as_of=e.tx).get(ghost) == {"person/handle": "ghost", "person/tags": ["t"]}
    assert led.verify().ok
