"""Export: every memory surface written as markdown files, without ever overwriting a file
the user changed.

Each file carries `keel: {id, version}`. The version is the ledger version the file's
content was rendered at, and it only moves when that content changes: an export renders
each item at the head, and if that is what the file already holds (the same bytes at the
old version), the file and its version are left as they are. So an unrelated transaction
rewrites nothing, and the version stays a correct base for the import's three-way merge —
the ledger as of it renders exactly the file keel wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...ledger import BadInput, Conflict, Ledger
from .document import parse
from .fields import INDEX
from .manifest import Manifest, digest, scan
from .names import Layout
from .render import Snap, document, render, render_index

#: How many changed files a refusal names before it counts the rest.
_NAMED = 20


class ChangedFiles(Conflict):
    """An export that would overwrite files changed since keel wrote them (or never keel's):
    nothing was written. `files` lists them all."""

    def __init__(self, root: Path, files: list[str]):
        shown = ", ".join(files[:_NAMED])
        if len(files) > _NAMED:
            shown += f" and {len(files) - _NAMED} more"
        super().__init__(
            f"nothing exported: {len(files)} file(s) in {root} changed since keel wrote them "
            f"or are not keel's ({shown}); import the vault first, or export with --force "
            f"to overwrite them."
        )
        self.files = files

    def to_json(self) -> dict:
        return {**super().to_json(), "files": self.files}


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(f"{path} cannot be read ({exc.strerror})") from None


def choose(
    manifest: Manifest, rel: str, e: str, content: tuple, data: bytes | None, head: int
) -> tuple[str, int]:
    """The text of `e`'s file and the version it carries: the version keel last wrote it
    at (from the record, or the file itself) when the content is still the same, else the
    head."""
    entry = manifest.entry(rel)
    if entry is not None and entry.id == e:
        versions = [entry.version]
    else:  # no record of it (a vault exported before records were kept): trust the file
        versions = _file_version(data, rel) if data is not None else []
    for version in versions:
        text = document(*content, e, version)
        if (entry is not None and entry.sha256 == digest(text)) or text.encode() == data:
            return text, version
    return document(*content, e, head), head


def _keel_block(data: bytes, rel: str) -> dict:
    """A file's `keel:` frontmatter, or {} when it has none (or is not readable)."""
    if b"keel:" not in data:
        return {}
    try:
        keel = parse(data.decode("utf-8"), rel)[0].get("keel")
    except (BadInput, UnicodeDecodeError):
        return {}
    return keel if isinstance(keel, dict) else {}


def _file_version(data: bytes, rel: str) -> list[int]:
    """The version a file says it was rendered at, if it says one."""
    version = _keel_block(data, rel).get("version")
    return [version] if isinstance(version, int) and not isinstance(version, bool) else []


def _keel_note(root: Path, rel: str) -> bool:
    """Whether a note carries a keel id: one keel exported before it kept a record, which
    an export must not duplicate under another name (an import first places it)."""
    return "id" in _keel_block(read_bytes(root / rel) or b"", rel)


def write_file(root: Path, rel: str, text: str) -> None:
    path = root / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    except OSError as exc:
        raise BadInput(f"{rel} cannot be written in {root} ({exc.strerror})") from None


def export(ledger: Ledger, directory: str | Path, force: bool = False) -> dict[str, Any]:
    """Write every memory surface under `directory` as it stands at the ledger head, and
    report {directory, version, files, written, <surface>: count, ...}.

    A file changed since keel wrote it, or at a path keel wants but never wrote, is not
    overwritten: the export raises `ChangedFiles` (a Conflict) naming them and writes
    nothing, unless `force`. So does a vault without keel's record that holds notes with
    keel ids (exported by an older keel): import it first. Files of items gone since, and
    notes that are not keel's, are left alone."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root} is a file, not a directory to export a vault into")
    manifest = Manifest.load(root)
    snap = Snap(ledger, Layout(manifest.paths()), as_of=ledger.view().as_of)
    items = snap.items(now=ledger.clock())
    snap.layout.assign(snap, [*items, (INDEX, INDEX)])
    writes: list[tuple[str, str, int, str]] = []
    changed: list[str] = []
    for surface, e in [*items, (INDEX, INDEX)]:
        rel = snap.layout.paths[e]
        content = render_index(snap, items) if e == INDEX else render(snap, surface, e)
        data = read_bytes(root / rel)
        text, version = choose(manifest, rel, e, content, data, snap.tx)
        if data == text.encode():
            manifest.record(rel, e, version, text)
        elif data is None or force or manifest.wrote(rel, data):
            writes.append((rel, e, version, text))
        else:
            changed.append(rel)
    if not manifest.exists and not force:
        planned = {snap.layout.paths[e] for _s, e in [*items, (INDEX, INDEX)]}
        changed += [rel for rel in scan(root)[0] if rel not in planned and _keel_note(root, rel)]
    if changed:
        raise ChangedFiles(root, changed)
    for rel, e, version, text in writes:
        write_file(root, rel, text)
        manifest.record(rel, e, version, text)
    shown = {e for _s, e in items} | {INDEX}
    for rel, entry in list(manifest.entries.items()):
        if entry.id not in shown and not (root / rel).exists():
            manifest.forget(rel)
    manifest.save()
    counts: dict[str, int] = {}
    for surface, _e in items:
        counts[surface] = counts.get(surface, 0) + 1
    return {
        "directory": str(root),
        "version": snap.tx,
        "files": len(items) + 1,
        "written": len(writes),
        **counts,
    }
