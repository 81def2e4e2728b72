"""Import: what was done in the vault recorded as signed transactions, and a report of it.

Every markdown note outside dot-folders is read and checked before anything is written.
A note with a keel id (or at a path the record gives an item) is that item's file and is
merged back (`merge.py`); a note without one becomes a new item where it is (`create.py`),
its surface taken from its `surface:` property, else its top folder, else `capture`.
Nothing is moved or renamed: where a note lives is recorded, so the next export updates it
there. What is not taken in is listed under `skipped` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...ledger import BadInput, Ledger, Signer
from ..memory import Memory
from ..model import ENTITY_KINDS
from .create import create
from .document import Reader, parse
from .exporter import choose, write_file
from .fields import FOLDERS, INDEX, SURFACE_OF, known_keys
from .manifest import Manifest, scan
from .merge import apply
from .names import Layout
from .render import Snap, derived_aliases, render

#: Report lists that say a file was recorded in full; any other entry leaves it as it is.
_DONE = ("applied", "merged", "created", "moved")
_TROUBLE = ("conflicts", "refused", "skipped")


@dataclass
class _File:
    rel: str
    data: bytes
    meta: dict
    body: str
    generated: str | None
    surface: str | None = None
    id: str | None = None
    version: int | None = None
    #: byte for byte what keel last wrote there: nothing to read back
    clean: bool = False
    #: another file holds the same keel id and is the one imported
    copy_of: str | None = None
    #: a new note with nothing to import yet
    empty: bool = False
    stated: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)


class _Importer:
    """One import: every note is parsed and checked before anything is written."""

    def __init__(self, ledger: Ledger, root: Path, signer: Signer | None):
        self.ledger, self.root, self.signer = ledger, root, signer
        self.manifest = Manifest.load(root)
        self.layout = Layout(self.manifest.paths())
        self.reader = Reader(self.layout)
        self.head = Snap(ledger, self.layout)  # the ledger as the import found it
        self._mem: Memory | None = None
        self._bases: dict[int, Snap] = {}
        self.report: dict[str, Any] = {
            "files": 0,
            "unchanged": 0,
            "applied": [],
            "merged": [],
            "conflicts": [],
            "refused": [],
            "created": [],
            "skipped": [],
            "missing": [],
            "moved": [],
        }

    @property
    def mem(self) -> Memory:
        if self._mem is None:
            self._mem = Memory(self.ledger, self.signer)
        return self._mem

    def base(self, version: int) -> Snap:
        if version not in self._bases:
            self._bases[version] = Snap(self.ledger, self.layout, as_of=version)
        return self._bases[version]

    def note(self, kind: str, rel: str, name: str, detail: str | None = None) -> None:
        entry = {"file": rel, "field": name}
        if detail is not None:
            entry["detail"] = detail
        self.report[kind].append(entry)

    def _troubled(self, rel: str) -> bool:
        return any(x["file"] == rel for k in _TROUBLE for x in self.report[k])

    # -- phase 1: read and check everything ----------------------------------------------
    def prepare(self) -> list[_File]:
        names, others = scan(self.root)
        for rel in others:
            self.note("skipped", rel, "*", "not a markdown note; keel imports .md files only")
        files = [self._read(rel) for rel in names]
        self._place(files)
        kinds = self._kinds()
        for f in files:
            if f.copy_of or f.clean:
                continue
            if f.id == INDEX:
                self._index(f)
                continue
            if f.id is not None:
                self._existing(f)
            else:
                self._new(f)
            kind = f.stated.get("kind")
            if f.surface == "entity" and kind not in (None, f.base.get("kind"), *kinds):
                raise BadInput(f"{f.rel}: {kind!r} is not an entity kind ({', '.join(kinds)})")
        return files

    def _read(self, rel: str) -> _File:
        try:
            data = (self.root / rel).read_bytes()
            meta, body, generated = parse(data.decode("utf-8"), rel)
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{rel}: cannot be read as UTF-8 text ({exc})") from None
        f = _File(rel, data, meta, body, generated)
        keel, entry = meta.get("keel"), self.manifest.entry(rel)
        if keel is not None:
            if not isinstance(keel, dict) or not isinstance(keel.get("id"), str):
                raise BadInput(f"{rel}: keel must be a mapping with the item's id")
            version = keel.get("version")
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise BadInput(f"{rel}: keel.version must be the tx id it was exported at")
            f.id, f.version = keel["id"], version
        elif entry is not None:  # a note keel took in but did not write, or lost its header
            f.id, f.version = entry.id, entry.version
        f.clean = entry is not None and entry.id == f.id and self.manifest.wrote(rel, data)
        return f

    def _place(self, files: list[_File]) -> None:
        """Each item's file is where it is: the recorded one if it is still there, else
        where it was found (moved in Obsidian). Other files with the same id are copies."""
        by_id: dict[str, list[_File]] = {}
        for f in files:
            if f.id is not None:
                by_id.setdefault(f.id, []).append(f)
        for e, group in by_id.items():
            recorded = self.layout.paths.get(e)
            home = next((f for f in group if f.rel == recorded), group[0])
            for f in group:
                if f is not home:
                    f.copy_of = home.rel
                    detail = f"a copy of {home.rel} (the same keel id); only that file is read"
                    self.note("skipped", f.rel, "*", detail)
            if recorded != home.rel:
                if recorded is not None:
                    self.report["moved"].append({"file": home.rel, "id": e, "was": recorded})
                self.layout.place(e, home.rel)

    def _index(self, f: _File) -> None:
        """keel's generated index: edits to it are not recorded (an index exported before
        keel kept a record is simply taken as keel's)."""
        if self.manifest.entry(f.rel) is None:
            self.manifest.record(f.rel, INDEX, f.version or 0, f.data.decode())
        else:
            self.note("refused", f.rel, "*", "the index is generated; edits to it are not kept")

    def _existing(self, f: _File) -> None:
        if f.version > self.head.tx:
            raise BadInput(f"{f.rel}: version {f.version} is newer than the ledger")
        base = self.base(f.version)
        surface = base.get(f.id).get("mem/surface")
        if surface not in FOLDERS:
            raise BadInput(
                f"{f.rel}: the ledger had no memory item {f.id!r} at version {f.version}"
            )
        f.surface = surface
        f.base = self.reader.fields(base, surface, f.id)
        derived = derived_aliases(base, surface, f.id)
        f.stated = self.reader.stated(base, surface, f.meta, f.body, f.generated, f.rel, derived)
        self._unknown(f, {"surface"} if f.meta.get("surface") == surface else set())

    def _new(self, f: _File) -> None:
        declared = f.meta.get("surface")
        top = f.rel.split("/", 1)[0] if "/" in f.rel else None
        if declared in FOLDERS:
            f.surface = declared
        else:
            f.surface = SURFACE_OF.get(top, "capture")
            if declared is not None:
                detail = f"{declared!r} is not a memory surface ({', '.join(FOLDERS)})"
                self.note("skipped", f.rel, "surface", detail)
        f.stated = self.reader.stated(self.head, f.surface, f.meta, f.body, f.generated, f.rel)
        if f.surface != "entity" and not f.stated.get("body"):
            f.empty = True
            detail = "no text to import; the note is taken in once it has some"
            stem = f.rel.rsplit("/", 1)[-1].removesuffix(".md")
            shadowed = self.layout.link_target(self.layout.resolve(stem) or "")
            if shadowed and shadowed.casefold() != f.rel.casefold().removesuffix(".md"):
                # Obsidian made it for a link that did not resolve; now one would, but
                # Obsidian prefers the note nearer the vault's root.
                detail += f"; delete it so that [[{stem}]] reaches {shadowed}.md"
            self.note("skipped", f.rel, "*", ("an empty note: " if not f.meta else "") + detail)
            return
        self._unknown(f, {"surface"})

    def _unknown(self, f: _File, allowed: set[str]) -> None:
        """Properties keel does not store are listed; such a note is left as it is."""
        for key in sorted(set(map(str, f.meta)) - known_keys(f.surface) - allowed):
            self.note("skipped", f.rel, key, "keel does not store this property; file left as is")

    def _kinds(self) -> list[str]:
        """Entity kinds, read without `Memory`."""
        if "entity-kind/name" not in self.ledger.schema:
            return list(ENTITY_KINDS)
        view = self.ledger.view()
        extra = {view.value(e, "entity-kind/name") for e in view.find("entity-kind/name")}
        return [*ENTITY_KINDS, *sorted(k for k in extra if k)]

    # -- phase 2: write ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        files = self.prepare()
        for f in files:
            if f.copy_of or f.clean or f.empty or f.id == INDEX:
                continue
            if f.id is None:
                f.id = create(self, f)
                if f.id is None:
                    continue
                self.layout.place(f.id, f.rel)
                self.report["created"].append({"file": f.rel, "id": f.id, "surface": f.surface})
            else:
                apply(self, f)
            self._settle(f)
        self._missing(files)
        self.manifest.save()
        items = [f for f in files if f.id != INDEX]
        touched = {x["file"] for k in (*_DONE, *_TROUBLE) for x in self.report[k]}
        self.report["files"] = len(items)
        self.report["unchanged"] = sum(f.rel not in touched for f in items)
        return self.report

    def _settle(self, f: _File) -> None:
        """Rewrite a file the import recorded in full as keel renders it now, so its version
        is a correct base for the next edit; a file with anything left unrecorded stays as
        the user wrote it (and export will not overwrite it until it is)."""
        snap = Snap(self.ledger, self.layout)
        if self._troubled(f.rel) or snap.get(f.id).get("mem/surface") != f.surface:
            entry = self.manifest.entry(f.rel)
            if entry is None or entry.id != f.id:
                self.manifest.record(f.rel, f.id, f.version or snap.tx, None)
            return
        content = render(snap, f.surface, f.id)
        text, version = choose(self.manifest, f.rel, f.id, content, f.data, snap.tx)
        if text.encode() != f.data:
            write_file(self.root, f.rel, text)
        self.manifest.record(f.rel, f.id, version, text)

    def _missing(self, files: list[_File]) -> None:
        """Items whose recorded file is gone: left alone (the next export writes it again)."""
        found = {f.id for f in files}
        for rel, entry in sorted(self.manifest.entries.items()):
            if entry.id not in found and entry.id != INDEX and not (self.root / rel).exists():
                self.report["missing"].append(
                    {"file": rel, "id": entry.id, "detail": "missing, left alone"}
                )


def import_vault(ledger: Ledger, directory: str | Path, signer: Signer | None = None) -> dict:
    """Record what was done in a vault as transactions, and report it:

    {files, unchanged, applied, merged, conflicts, refused, created, skipped, missing,
    moved} — `files` counts the notes read (not keel's index), `unchanged` those with
    nothing to report; each list entry names its `file` and `field` (`*` for the whole
    file) and, where there is one, a `detail`. `created` entries carry the new item's
    `id` and `surface`; `skipped` lists what was not taken in, with the reason (other
    files, empty notes, copies, properties keel does not store); `moved` lists items
    whose file the user moved (`was` the old path). Bad input (no such directory,
    malformed frontmatter) raises BadInput before any write."""
    root = Path(directory)
    if not root.is_dir():
        raise BadInput(f"{root} is not a directory (export a vault there first)")
    return _Importer(ledger, root, signer).run()


import_ = import_vault
