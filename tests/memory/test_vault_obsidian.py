"""The vault as an Obsidian user meets it: export never destroys their edits, notes they make
anywhere are taken in (or listed as skipped) and never moved, file names are valid on every
system, every link keel writes resolves the way Obsidian resolves links, and an export
rewrites only the files whose content changed. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from keel.ledger import BadInput, Conflict
from keel.memory.links import WIKI_LINK
from keel.memory.memory import Memory, ensure_schema
from keel.memory.vault import export, import_vault
from keel.memory.wiki import Wiki

ACME = "entities/Acme Corp.md"
SUMMARY = "line one\nline two\nline three\nline four\nline five"
#: Characters no file name may hold: Windows forbids : * ? " < > | \ /, Obsidian links
#: break on # ^ [ ] |.
BAD_CHARS = re.compile(r'[:*?"<>|\\/#^\[\]\x00-\x1f]')
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{p}{i}" for p in ("COM", "LPT") for i in range(10))}


def build(ledger) -> dict:
    ensure_schema(ledger)
    mem = Memory(ledger)
    mem.upsert_entity("Acme Corp", "organisation", summary="A company.")
    mem.upsert_entity(
        "Alice Smith",
        "person",
        aliases=["Al"],
        summary=SUMMARY,
        facts={"lives_in": "Denver"},
        frontmatter={"works_at": "[[Acme Corp]]"},
    )
    mem.capture("an idea")
    return {"mem": mem}


def head(ledger) -> int:
    return ledger.view().as_of


def notes(root: Path) -> dict[str, bytes]:
    """Every markdown file outside dot-folders, by path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*.md")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def front(path: Path) -> dict:
    return yaml.safe_load(path.read_text().split("---\n")[1])


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def resolve(root: Path, target: str) -> Path | None:
    """Where Obsidian takes a `[[target]]`: the note at that path from the vault root, else
    the one note with that file name anywhere; case does not matter, `.md` is optional and
    frontmatter aliases play no part."""
    files = [root / rel for rel in notes(root)]
    want = target.split("#")[0].strip().lstrip("/").casefold().removesuffix(".md")
    for p in files:
        if p.relative_to(root).as_posix()[:-3].casefold() == want:
            return p
    if "/" in want:
        return None
    hits = [p for p in files if p.stem.casefold() == want]
    return hits[0] if len(hits) == 1 else None


def keel_id(path: Path) -> str:
    return front(path)["keel"]["id"]


def file_of(root: Path, e: str) -> str:
    """The path of the one note that carries keel id `e`."""
    found = [rel for rel in notes(root) if keel_id(root / rel) == e]
    assert len(found) == 1, f"{e} is in {found}"
    return found[0]


# -- 1: export never overwrites what the user changed ---------------------------------------
def test_export_refuses_to_overwrite_edited_files_unless_forced(ledger, tmp_path):
    made = build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    alice = file_of(root, "entity:alice-smith")
    edit(root / alice, "line three", "line three, edited in Obsidian")
    (root / "entities" / "Bob.md").write_text("My own note about Bob.\n")
    made["mem"].upsert_entity("Alice Smith", summary=SUMMARY + "\nline six")  # keel moved on
    made["mem"].upsert_entity("Bob", "person")  # keel would write entities/Bob.md
    before = notes(root)

    with pytest.raises(Conflict) as refused:
        export(ledger, root)
    message = str(refused.value)
    assert alice in message and "entities/Bob.md" in message
    assert "\n" not in message and message.endswith(".")  # one sentence
    assert notes(root) == before, "a refused export writes nothing at all"

    # The normal path: import first (the edit merges with keel's), then export is clean.
    report = import_vault(ledger, root)
    assert {"file": alice, "field": "body"} in report["merged"]
    text = made["mem"].entity("alice-smith")["text"]
    assert "edited in Obsidian" in text and "line six" in text
    (root / "entities" / "Bob.md").rename(root / "my bob.md")
    export(ledger, root)
    assert "line six" in (root / alice).read_text()

    # force overwrites, and only then.
    edit(root / alice, "line two", "line two, again")
    with pytest.raises(Conflict, match=re.escape(alice)):
        export(ledger, root)
    export(ledger, root, force=True)
    assert "line two, again" not in (root / alice).read_text()
    assert (root / "my bob.md").read_text() == "My own note about Bob.\n"


# -- 2: notes made in Obsidian are taken in where they are ----------------------------------
def test_import_takes_notes_anywhere_and_never_moves_them(ledger, tmp_path):
    made = build(ledger)
    mem = made["mem"]
    root = tmp_path / "v"
    export(ledger, root)
    (root / "Acme Corp.md").write_text("")  # Obsidian made it from an unresolved link
    (root / "Plans.md").write_text("Ship the vault fixes.\n")
    (root / "Daily Notes").mkdir()
    (root / "Daily Notes" / "2026-05-01.md").write_text("Met [[Acme Corp]] today.\n")
    (root / "Ideas").mkdir()
    (root / "Ideas" / "Use it.md").write_text(
        "---\nsurface: decision\ntitle: Use the vault\n---\nBecause Obsidian is nice.\n"
    )
    (root / "capture" / "quick.md").write_text("remember the milk\n")
    (root / "entities" / "bob.md").write_text("---\nname: Bob Jones\n---\nBob builds.\n")
    (root / "pasted.png").write_bytes(b"\x89PNG")
    (root / ".obsidian").mkdir()
    (root / ".obsidian" / "app.json").write_text("{}")
    (root / ".obsidian" / "note.md").write_text("not a vault note")
    mine = ["Plans.md", "Daily Notes/2026-05-01.md", "Ideas/Use it.md", "capture/quick.md"]
    mine.append("entities/bob.md")

    report = import_vault(ledger, root)
    created = {c["file"]: c for c in report["created"]}
    assert set(created) == set(mine)
    assert created["Plans.md"]["surface"] == "capture"
    assert created["Daily Notes/2026-05-01.md"]["surface"] == "capture"
    assert created["Ideas/Use it.md"]["surface"] == "decision"
    assert created["entities/bob.md"]["surface"] == "entity"
    skipped = {s["file"]: s["detail"] for s in report["skipped"]}
    assert set(skipped) == {"Acme Corp.md", "pasted.png"}
    assert "empty" in skipped["Acme Corp.md"] and "markdown" in skipped["pasted.png"]
    assert (
        "delete it so that [[Acme Corp]] reaches entities/Acme Corp.md" in (skipped["Acme Corp.md"])
    )
    assert mem.entity("bob-jones")["entity/name"] == "Bob Jones"
    assert mem.item(created["Ideas/Use it.md"]["id"])["decision/why"] == (
        "Because Obsidian is nice."
    )

    # Every note is where the user put it, now carrying its keel id.
    for rel in mine:
        assert keel_id(root / rel) == created[rel]["id"], rel
    assert (root / "Acme Corp.md").read_text() == ""
    assert (root / "pasted.png").read_bytes() == b"\x89PNG"

    # The next import creates nothing again; the next export updates those files in place
    # and writes no second copy of any item.
    after = head(ledger)
    again = import_vault(ledger, root)
    assert again["created"] == [] and again["applied"] == [] and head(ledger) == after
    export(ledger, root)
    ids = [keel_id(root / rel) for rel in notes(root) if rel != "Acme Corp.md"]
    assert len(ids) == len(set(ids)), "one file per item"
    for rel in mine:
        assert keel_id(root / rel) == created[rel]["id"], rel

    # An edit to a moved-in note comes back to its item.
    edit(root / "Plans.md", "Ship the vault fixes.", "Ship the vault fixes today.")
    report = import_vault(ledger, root)
    assert report["applied"] == [{"file": "Plans.md", "field": "body"}]
    assert mem.item(created["Plans.md"]["id"])["text"] == "Ship the vault fixes today."


def test_a_moved_file_stays_where_the_user_put_it(ledger, tmp_path):
    build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    (root / "People").mkdir()
    (root / file_of(root, "entity:alice-smith")).rename(root / "People" / "Alice Smith.md")

    report = import_vault(ledger, root)
    assert report["missing"] == []
    export(ledger, root)
    assert file_of(root, "entity:alice-smith") == "People/Alice Smith.md", "no second copy"
    target = WIKI_LINK.search(front(root / "People" / "Alice Smith.md")["links"]["works_at"][0])
    assert resolve(root, target.group(1)) == root / ACME


# -- 3: names valid everywhere, links resolve the way Obsidian resolves them ----------------
def test_file_names_are_portable_and_every_link_resolves_like_obsidian(ledger, tmp_path):
    made = build(ledger)
    mem = made["mem"]
    wiki = Wiki(mem)
    for name in ("AT&T: Labs?", "CON", "Trailing dot.", "Q3/Q4 plan", 'Say "hi" #1 [draft] ^x'):
        mem.upsert_entity(name, "project")
    mem.upsert_entity("Robert Jones", "person", slug="bob")
    src = wiki.add_source("Raw notes about topic X.", title="Notes on X")
    digits = src["hash"].removeprefix("sha256:")
    cites = [digits[:8], digits[:16], src["hash"]]
    body = "\n\n".join(f"Claim {i} [[sources/{c}]]." for i, c in enumerate(cites))
    wiki.write_article("topic-x", body + "\n\nAbout [[Acme Corp]] and [[acme-corp]].")
    root = tmp_path / "v"
    export(ledger, root)
    files = notes(root)

    for rel in files:
        name = rel.rsplit("/", 1)[-1]
        stem = name.removesuffix(".md")
        assert not BAD_CHARS.search(name), rel
        assert stem == stem.strip(" .") and stem, rel
        assert stem.split(".")[0].strip().upper() not in RESERVED, rel
        assert len(name.encode()) <= 255 and len(rel) <= 160, rel

    # Every link keel wrote, anywhere, reaches a file.
    for rel, data in files.items():
        for m in WIKI_LINK.finditer(data.decode()):
            assert resolve(root, m.group(1)) is not None, f"{rel}: [[{m.group(1)}]]"

    # A user's [[Acme Corp]] reaches the entity; each citation reaches the source.
    assert keel_id(resolve(root, "Acme Corp")) == "entity:acme-corp"
    assert keel_id(resolve(root, "acme corp")) == "entity:acme-corp"
    assert keel_id(resolve(root, "Robert Jones")) == "entity:bob"
    assert keel_id(resolve(root, f"sources/{digits[:8]}")) == src["id"]
    article = next(root / rel for rel in files if keel_id(root / rel) == "article:topic-x")
    found = [m.group(1) for m in WIKI_LINK.finditer(article.read_text().split("---\n", 2)[2])]
    assert len(found) == 5
    assert {keel_id(resolve(root, t)) for t in found[:3]} == {src["id"]}
    assert {keel_id(resolve(root, t)) for t in found[3:]} == {"entity:acme-corp"}

    # Other names are aliases: an entity's own name when the file could not carry it, its
    # aliases, a source's full hash.
    by_id = {keel_id(root / rel): root / rel for rel in files}
    assert "AT&T: Labs?" in front(by_id["entity:at-t-labs"])["aliases"]
    assert front(by_id["entity:alice-smith"])["aliases"] == ["Al"]
    assert src["hash"] in front(by_id[src["id"]])["aliases"]

    # The round trip keeps the article's text exactly as it was written...
    before = head(ledger)
    assert import_vault(ledger, root)["applied"] == [] and head(ledger) == before
    edit(article, "Claim 0", "Claim zero")
    report = import_vault(ledger, root)
    assert report["applied"] == [{"file": article.relative_to(root).as_posix(), "field": "body"}]
    stored = wiki.article("topic-x")["body"]
    assert stored == body.replace("Claim 0", "Claim zero") + (
        "\n\nAbout [[Acme Corp]] and [[acme-corp]]."
    )

    # ...and a link the user adds by the name on a file reaches that entity, not a stub.
    edit(by_id["entity:alice-smith"], "works_at:", "knows:\n  - '[[Robert Jones]]'\n  works_at:")
    import_vault(ledger, root)
    assert ledger.view().get("entity:robert-jones") is None
    alice = mem.entity("alice-smith")
    assert {"type": "knows", "direction": "out", "entity": "entity:bob"} in alice["links"]


# -- 4: an export rewrites only what changed -------------------------------------------------
def test_export_rewrites_only_the_files_whose_content_changed(ledger, tmp_path):
    made = build(ledger)
    mem = made["mem"]
    mem.upsert_entity("Carol", "person", summary="Carol.")
    root = tmp_path / "v"
    export(ledger, root)
    old = 1_000_000_000
    for rel in notes(root):
        os.utime(root / rel, (old, old))
    first = notes(root)

    mem.upsert_entity("Carol", summary="Carol, updated.")  # touches only Carol's file
    export(ledger, root)
    now = notes(root)
    changed = {rel for rel in now if now[rel] != first.get(rel)}
    assert changed == {file_of(root, "entity:carol")}
    touched = {rel for rel in now if (root / rel).stat().st_mtime != old}
    assert touched == changed

    # The version an unchanged file carries is still a correct base for a merge.
    alice = file_of(root, "entity:alice-smith")
    mem.upsert_entity("Alice Smith", summary=SUMMARY.replace("line one", "line ONE"))
    edit(root / alice, "line five", "line five, from the vault")
    report = import_vault(ledger, root)
    assert report["merged"] == [{"file": alice, "field": "body"}]
    assert report["conflicts"] == [] and report["refused"] == [] and report["skipped"] == []
    text = mem.entity("alice-smith")["text"]
    assert "line ONE" in text and "line five, from the vault" in text
    edit(root / alice, "line three", "line three (vault)")
    mem.upsert_entity("Alice Smith", summary=text.replace("line three", "line three (keel)"))
    report = import_vault(ledger, root)
    assert [(c["file"], c["field"]) for c in report["conflicts"]] == [(alice, "body")]


# -- the record of what keel wrote ----------------------------------------------------------
def test_a_vault_without_keels_record_is_imported_before_keel_writes_into_it(ledger, tmp_path):
    build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    record = root / ".keel" / "vault.json"
    first = notes(root)
    record.unlink()
    assert export(ledger, root)["written"] == 0, "unchanged files are recognised as keel's"
    assert notes(root) == first and record.exists()

    # A vault an older keel exported (no record, its own file names): keel would write a
    # second copy of each item under its new name, so it refuses, naming them.
    record.unlink()
    alice = file_of(root, "entity:alice-smith")
    (root / alice).rename(root / "entities" / "alice-smith.md")
    with pytest.raises(Conflict, match=r"entities/alice-smith\.md"):
        export(ledger, root)
    assert not (root / alice).exists() and not record.exists()

    # Importing it first records where each item lives; then the export updates in place.
    report = import_vault(ledger, root)
    assert report["conflicts"] == [] and report["applied"] == []
    export(ledger, root)
    assert file_of(root, "entity:alice-smith") == "entities/alice-smith.md"


def test_what_keel_does_not_keep_is_listed_and_left_in_the_file(ledger, tmp_path):
    made = build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    alice = file_of(root, "entity:alice-smith")
    edit(root / alice, "kind: person", "kind: person\nstatus: draft")
    edit(root / alice, "line two", "line two, edited")
    copy = alice.replace(".md", " 1.md")
    (root / copy).write_bytes((root / alice).read_bytes())  # Obsidian's "Make a copy"
    edit(root / "index.md", "# Memory", "# My memory")

    report = import_vault(ledger, root)
    assert report["applied"] == [{"file": alice, "field": "body"}]
    assert "line two, edited" in made["mem"].entity("alice-smith")["text"]
    skipped = {(s["file"], s["field"]): s["detail"] for s in report["skipped"]}
    assert set(skipped) == {(alice, "status"), (copy, "*")}
    assert "does not store" in skipped[(alice, "status")] and alice in skipped[(copy, "*")]
    assert [(r["file"], r["field"]) for r in report["refused"]] == [("index.md", "*")]
    assert "status: draft" in (root / alice).read_text(), "left as the user wrote it"

    # Export will not overwrite any of them until they are dealt with.
    with pytest.raises(Conflict) as refused:
        export(ledger, root)
    assert alice in str(refused.value) and "index.md" in str(refused.value)
    (root / copy).unlink()
    edit(root / alice, "status: draft\n", "")
    assert import_vault(ledger, root)["skipped"] == []
    export(ledger, root, force=True)  # the index edit is given up
    assert "# Memory" in (root / "index.md").read_text()
    assert export(ledger, root)["written"] == 0


def test_a_damaged_record_is_one_clear_sentence(ledger, tmp_path):
    build(ledger)
    root = tmp_path / "v"
    export(ledger, root)
    (root / ".keel" / "vault.json").write_text("{not json")
    before = notes(root)
    with pytest.raises(BadInput, match=r"vault\.json is damaged"):
        export(ledger, root)
    with pytest.raises(BadInput, match=r"vault\.json is damaged"):
        import_vault(ledger, root)
    assert notes(root) == before
