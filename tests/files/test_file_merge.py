"""The three-way merge of shared files, by property: non-overlapping edits both land, and
merging with an unchanged side gives the other side."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from keel.files.merge import describe, merge

line = st.text(alphabet="abcdefgh xyz", min_size=0, max_size=12).map(lambda s: s + "\n")
texts = st.lists(line, max_size=20).map("".join)


@settings(max_examples=300, deadline=None)
@given(texts, texts)
def test_merging_with_an_unchanged_side_gives_the_other(base, x):
    assert merge(base, base, x).text == x
    assert merge(base, x, base).text == x
    assert merge(base, x, x).text == x


@st.composite
def two_edit_sets(draw):
    """A base of distinct lines and two sets of line indices with at least one untouched
    line between any index of one set and any of the other (edits that do not overlap)."""
    n = draw(st.integers(min_value=1, max_value=30))
    base = [f"line {i}\n" for i in range(n)]
    owner = draw(st.lists(st.sampled_from(["a", "b", None]), min_size=n, max_size=n))
    for i in range(1, n):  # keep the two sides apart by a line neither touches
        if owner[i] and owner[i - 1] and owner[i] != owner[i - 1]:
            owner[i] = None
    deletes = draw(st.booleans())
    return base, owner, deletes


@settings(max_examples=300, deadline=None)
@given(two_edit_sets())
def test_non_overlapping_edits_both_land(case):
    base, owner, deletes = case

    def side(name: str) -> list[str]:
        out = []
        for i, text in enumerate(base):
            if owner[i] == name:
                if deletes and i % 3 == 0:
                    continue
                out.append(f"{name} edited {i}\n")
            else:
                out.append(text)
        return out

    expected = []
    for i, text in enumerate(base):
        if owner[i] is None:
            expected.append(text)
        elif not (deletes and i % 3 == 0):
            expected.append(f"{owner[i]} edited {i}\n")
    result = merge("".join(base), "".join(side("a")), "".join(side("b")))
    assert result.clean
    assert result.text == "".join(expected)


def test_overlapping_edits_are_a_conflict_naming_the_lines():
    base = "one\ntwo\nthree\nfour\n"
    result = merge(base, "one\nTWO\nthree\nfour\n", "one\n2\n3\nfour\n")
    assert result.text is None
    [clash] = result.conflicts
    assert clash.base == (2, 3) and clash.theirs == (2, 3) and clash.ours == (2, 3)
    assert describe(clash.base) == "lines 2-3" and describe((4, 4)) == "line 4"
    assert describe((3, 2)) == "before line 3"
