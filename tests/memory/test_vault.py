"""The vault: export renders every surface as markdown, import records edits back, merged
three ways against the version each file was exported at. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from keel.ledger import BadInput
from keel.memory.memory import Memory, ensure_schema
from keel.memory.vault import export, import_vault, merge_text

SUMMARY = "line one\nline two\nline three\nline four\nline five"
SOURCE_TEXT = "Raw notes about topic X."
HASH = hashlib.sha256(SOURCE_TEXT.encode()).hexdigest()
ALICE = "entities/Alice Smith.md"
SOURCE = f"sources/{HASH[:8]}.md"


def build(ledger) -> dict:
    """A ledger with something on every surface."""
    ensure_schema(ledger)
    mem = Memory(ledger)
    mem.upsert_entity("Acme", "organisation", summary="A company.")
    mem.upsert_entity(
        "Alice Smith",
        "person",
        aliases=["Al"],
        summary=SUMMARY,
        facts={"lives_in": "Denver", "role": "engineer"},
        valid_from="2020-01-01",
        frontmatter={"works_at": "[[Acme]]"},
    )
    mem.observe("Alice Smith", "Met Alice at the conference", source="notes", at="2021-06-01")
    decision = mem.log_decision("Use SQLite", "It is simple.", alternatives=["Postgres"])
    mem.write_canon("style", "Write short sentences.")
    mem.add_episode("user: hi\nagent: hello", agent="claude", session="s-1", title="Greeting")
    mem.capture("an idea", tags=["idea"])
    mem.daybook("shipped the vault", at="2026-05-01T09:00:00Z")
    mem.remember("scratch note", scope="run-1", ttl="1h")
    res = ledger.transact(
        [
            {"op": "add", "e": "#s", "a": "mem/surface", "v": "source"},
            {"op": "add", "e": "#s", "a": "source/hash", "v": HASH},
            {"op": "add", "e": "#s", "a": "mem/text", "v": SOURCE_TEXT},
            {"op": "add", "e": "#s", "a": "mem/title", "v": "Notes on X"},
            {"op": "add", "e": "#a", "a": "mem/surface", "v": "article"},
            {"op": "add", "e": "#a", "a": "article/slug", "v": "topic-x"},
            {"op": "add", "e": "#a", "a": "mem/title", "v": "Topic X"},
            {"op": "add", "e": "#a", "a": "mem/text", "v": f"X is a thing [[sources/{HASH[:16]}]]"},
            {"op": "add", "e": "#a", "a": "article/cites", "v": "#s"},
        ],
        reason="wiki",
    )
    return {"mem": mem, "decision": decision["id"], "article": res.tempids["#a"]}


def head(ledger) -> int:
    return ledger.view().as_of


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.md")}


def front(path: Path) -> dict:
    return yaml.safe_load(path.read_text().split("---\n")[1])


def changes(report: dict) -> int:
    keys = ("applied", "merged", "conflicts", "refused", "created", "skipped", "missing")
    return sum(len(report[k]) for k in keys)


def test_export_writes_every_surface_and_an_unedited_import_changes_nothing(ledger, tmp_path):
    made = build(ledger)
    before = head(ledger)
    out = export(ledger, tmp_path / "v")
    root = tmp_path / "v"
    assert out["version"] == before
    folders = {p.parent.name for p in root.rglob("*.md")}
    assert folders >= {"entities", "wiki", "sources", "decisions", "canon", "episodes"}
    assert folders >= {"capture", "daybook", "working"}
    alice = front(root / ALICE)
    assert alice["keel"] == {"id": "entity:alice-smith", "version": before}
    assert alice["facts"] == {"lives_in": "Denver", "role": "engineer"}
    assert alice["aliases"] == ["Al"]
    assert alice["links"] == {"works_at": ["[[entities/Acme|Acme]]"]}
    text = (root / ALICE).read_text()
    assert SUMMARY in text and "Met Alice at the conference" in text
    assert "<!-- keel:generated" in text and "<!-- /keel:generated -->" in text
    assert (root / SOURCE).exists()
    assert front(root / "wiki/topic-x.md")["cites"] == [f"[[sources/{HASH[:8]}]]"]
    assert "Use SQLite" in (root / "index.md").read_text()
    assert all("version" in front(p)["keel"] for p in root.rglob("*.md"))
    assert (root / ".keel" / "vault.json").exists()
    assert list((root / "decisions").glob(f"*-{made['decision']}.md"))

    first = snapshot(root)
    report = import_vault(ledger, root)
    assert head(ledger) == before, "an unedited vault must not write anything"
    assert report["files"] == len(first) - 1  # index.md is not an item
    assert report["unchanged"] == report["files"] and changes(report) == 0
    assert snapshot(root) == first

    export(ledger, tmp_path / "again")
    assert snapshot(tmp_path / "again") == first
    export(ledger, root)
    assert snapshot(root) == first


def test_summary_and_fact_edits_are_applied_and_the_old_fact_stays_in_valid_time(ledger, tmp_path):
    made = build(ledger)
    mem = made["mem"]
    root = tmp_path / "v"
    export(ledger, root)
    edit(root / ALICE, "line three", "line three, edited in Obsidian")
    edit(root / ALICE, "lives_in: Denver", "lives_in: Boston")
    before = head(ledger)

    report = import_vault(ledger, root)
    assert {(a["file"], a["field"]) for a in report["applied"]} == {
        (ALICE, "body"),
        (ALICE, "facts.lives_in"),
    }
    assert report["conflicts"] == [] and report["refused"] == []
    assert head(ledger) > before
    alice = mem.entity("alice-smith")
    assert "line three, edited in Obsidian" in alice["text"]
    assert alice["facts"]["lives_in"] == "Boston"
    assert mem.entity("alice-smith", valid_at="2021-01-01")["facts"]["lives_in"] == "Denver"
    notes = [e for e in mem.timeline("alice-smith") if e["type"] == "observation"]
    assert any(
        n["text"] == "vault edit: lives_in = Boston" and n["source"] == "vault" for n in notes
    )
    # The file was re-exported at the new head, so a second edit of the same fact applies.
    assert front(root / ALICE)["keel"]["version"] == head(ledger)
    edit(root / ALICE, "lives_in: Boston", "lives_in: Chicago")
    again = import_vault(ledger, root)
    assert again["conflicts"] == [] and again["applied"] == [
        {"file": ALICE, "field": "facts.lives_in"}
    ]
    assert mem.entity("alice-smith")["facts"]["lives_in"] == "Chicago"


def test_a_stale_edit_that_does_not_overlap_is_merged(ledger, tmp_path):
    made = build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    made["mem"].upsert_entity("Alice Smith", summary=SUMMARY.replace("line one", "line ONE"))
    edit(root / ALICE, "line five", "line five, from the vault")

    report = import_vault(ledger, root)
    assert report["merged"] == [{"file": ALICE, "field": "body"}]
    assert report["conflicts"] == []
    text = made["mem"].entity("alice-smith")["text"]
    assert "line ONE" in text and "line five, from the vault" in text
    assert "line ONE" in (root / ALICE).read_text()


def test_an_overlapping_stale_edit_is_a_conflict_and_writes_nothing_for_it(ledger, tmp_path):
    made = build(ledger)
    mem = made["mem"]
    root = tmp_path / "v"
    export(ledger, root)
    mem.upsert_entity("Alice Smith", summary=SUMMARY.replace("line three", "line three (keel)"))
    mem.upsert_entity("Alice Smith", kind="organisation")
    mem.observe("Alice Smith", "moved", fact="lives_in", value="Austin")
    edit(root / ALICE, "line three", "line three (vault)")
    edit(root / ALICE, "kind: person", "kind: project")
    edit(root / ALICE, "lives_in: Denver", "lives_in: Boston")
    edited = (root / ALICE).read_text()
    before = head(ledger)

    report = import_vault(ledger, root)
    assert {(c["file"], c["field"]) for c in report["conflicts"]} == {
        (ALICE, "body"),
        (ALICE, "kind"),
        (ALICE, "facts.lives_in"),
    }
    assert all(c["detail"] for c in report["conflicts"])
    assert head(ledger) == before
    alice = mem.entity("alice-smith")
    assert "line three (keel)" in alice["text"] and "(vault)" not in alice["text"]
    assert alice["entity/kind"] == "organisation"
    assert alice["facts"]["lives_in"] == "Austin"
    assert (root / ALICE).read_text() == edited, "a conflicted file is left as the user wrote it"


def test_sources_and_observations_are_refused_and_deleted_files_left_alone(ledger, tmp_path):
    build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    source = root / SOURCE
    edit(source, SOURCE_TEXT, "Rewritten history.")
    edit(root / ALICE, "Met Alice at the conference", "Never met Alice")
    (root / "canon" / "style.md").unlink()
    before = head(ledger)

    report = import_vault(ledger, root)
    refused = {(r["file"], r["field"]): r["detail"] for r in report["refused"]}
    assert refused[(SOURCE, "body")] == "sources are immutable"
    assert "observations are immutable" in refused[(ALICE, "timeline")]
    assert report["missing"] == [
        {"file": "canon/style.md", "id": "canon:style", "detail": "missing, left alone"}
    ]
    assert head(ledger) == before
    assert ledger.view().value("canon:style", "mem/text") == "Write short sentences."


def test_bad_input_names_the_file_and_writes_nothing(ledger, tmp_path):
    build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    capture = next((root / "capture").glob("*.md"))
    edit(capture, "an idea", "a better idea")  # valid, and read before the broken file
    edit(root / "wiki/topic-x.md", "title: Topic X", "title: [Topic X")
    before = head(ledger)

    with pytest.raises(BadInput, match=r"wiki/topic-x\.md.*not valid YAML"):
        import_vault(ledger, root)
    assert head(ledger) == before
    with pytest.raises(BadInput, match="not a directory"):
        import_vault(ledger, tmp_path / "nowhere")


def test_new_files_create_items_once(ledger, tmp_path):
    made = build(ledger)
    mem = made["mem"]
    root = tmp_path / "v"
    export(ledger, root)
    (root / "entities" / "bob.md").write_text(
        "---\nname: Bob Jones\nkind: person\nfacts:\n  role: engineer\n"
        "links:\n  knows: ['[[Alice Smith]]']\n---\n\nBob builds things.\n"
    )
    (root / "capture" / "quick.md").write_text("remember the milk\n")
    (root / "decisions" / "new.md").write_text(
        "---\ntitle: Ship on Fridays\nalternatives: [Mondays]\n---\nBecause the week is done.\n"
    )
    (root / "wiki" / "mine.md").write_text("an article by hand\n")

    report = import_vault(ledger, root)
    created = {c["surface"]: c for c in report["created"]}
    assert set(created) == {"entity", "capture", "decision"}
    assert report["refused"] == [
        {
            "file": "wiki/mine.md",
            "field": "*",
            "detail": "new article items are not created from the vault",
        }
    ]
    bob = mem.entity("bob-jones")
    assert bob["entity/name"] == "Bob Jones" and bob["facts"] == {"role": "engineer"}
    assert {"type": "knows", "direction": "out", "entity": "entity:alice-smith"} in bob["links"]
    assert any(c["text"] == "remember the milk" for c in mem.items("capture"))
    decision = mem.item(created["decision"]["id"])
    assert decision["decision/why"] == "Because the week is done."
    assert decision["decision/alternatives"] == ["Mondays"]
    # Each new file now carries its keel id, where the user put it.
    assert front(root / "capture" / "quick.md")["keel"]["id"] == created["capture"]["id"]
    assert front(root / "entities" / "bob.md")["keel"]["id"] == "entity:bob-jones"

    (root / "wiki" / "mine.md").unlink()
    after = head(ledger)
    again = import_vault(ledger, root)
    assert again["created"] == [] and changes(again) == 0
    assert head(ledger) == after


def test_set_fields_merge_and_new_links_make_stubs(ledger, tmp_path):
    made = build(ledger)
    mem = made["mem"]
    root = tmp_path / "v"
    export(ledger, root)
    mem.upsert_entity("Alice Smith", aliases=["Ally"])
    edit(root / ALICE, "- Al\n", "- Alice S.\n")
    edit(root / ALICE, "works_at:", "knows:\n  - '[[Carol King]]'\n  works_at:")

    report = import_vault(ledger, root)
    assert {"file": ALICE, "field": "aliases"} in report["merged"]
    assert {"file": ALICE, "field": "links"} in report["applied"]
    view = ledger.view()
    assert sorted(view.value("entity:alice-smith", "entity/aliases")) == ["Alice S.", "Ally"]
    assert view.value("entity:carol-king", "entity/name") == "Carol King"
    alice = mem.entity("alice-smith")
    assert {"type": "knows", "direction": "out", "entity": "entity:carol-king"} in alice["links"]


def test_merge_text_is_line_based():
    assert merge_text("a\nb\nc", "A\nb\nc", "a\nb\nC") == "A\nb\nC"
    assert merge_text("a\nb\nc", "a\nX\nc", "a\nY\nc") is None


def test_a_concurrent_writer_turns_into_a_conflict_not_a_lost_update(ledger, tmp_path, monkeypatch):
    made = build(ledger)
    mem = made["mem"]
    root = tmp_path / "v"
    export(ledger, root)
    edit(root / ALICE, "line two", "line two, from the vault")
    real = ledger.transact
    raced: list[int] = []

    def racing(ops, reason="", expect=(), **kw):
        """Another writer lands between the import's read and its write."""
        if reason.startswith("vault edit") and not raced:
            raced.append(1)
            mem.upsert_entity("Alice Smith", summary="someone else wrote this")
        return real(ops, reason=reason, expect=expect, **kw)

    monkeypatch.setattr(ledger, "transact", racing)
    report = import_vault(ledger, root)
    assert raced
    assert [(c["file"], c["field"]) for c in report["conflicts"]] == [(ALICE, "body")]
    assert "expectation failed" in report["conflicts"][0]["detail"]
    assert report["applied"] == []
    assert mem.entity("alice-smith")["text"] == "someone else wrote this"
