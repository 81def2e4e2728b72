"""The vault: every memory surface as markdown with YAML frontmatter, a folder that opens
as an Obsidian vault.

The ledger stays the one source of truth. `export` renders one consistent view of it (the
ledger head at export time); `import_vault` turns edits to those files back into signed
transactions, merging each field three ways: the file, the ledger as of the version the
file was exported at (the base) and the ledger now. Nothing is deleted from the vault side.

Layout (one file per item; the keel id in the frontmatter, not the path, names the item):

    index.md                          links to everything
    entities/<slug>.md                facts, aliases, links; summary; generated timeline
    wiki/<article slug>.md            compiled articles
    sources/<hash16>.md               raw sources (immutable)
    decisions/<date>-<id>.md          body = why
    canon/<name>.md
    episodes/<date>-<id>.md
    capture/<date>-<id>.md
    daybook/<YYYY-MM-DD>-<id>.md      one file per entry
    working/<scope>-<id>.md           current (unexpired) working memory only
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from merge3 import Merge3

from ..ledger import BadInput, Conflict, KeelError, Ledger, Signer
from ..ledger.instants import FOREVER, format_instant, from_us
from . import links
from .memory import ALWAYS, Memory, entity_id
from .model import ENTITY_KINDS, FACT_KEY, slugify

FOLDERS = {
    "entity": "entities",
    "article": "wiki",
    "source": "sources",
    "decision": "decisions",
    "canon": "canon",
    "episode": "episodes",
    "capture": "capture",
    "daybook": "daybook",
    "working": "working",
}
SURFACE_OF = {folder: surface for surface, folder in FOLDERS.items()}
#: Surfaces a new file (one without a keel id) may create items in.
CREATABLE = ("entity", "capture", "decision", "daybook", "canon")

GEN_OPEN = "<!-- keel:generated: read-only; rewritten on export, ignored on import -->"
GEN_CLOSE = "<!-- /keel:generated -->"
_FRONT = re.compile(r"\A---[ \t]*\n(.*?)^---[ \t]*(?:\n|\Z)", re.S | re.M)

# Field kinds: how a field is merged back.
TEXT, SCALAR, SET, READONLY, FACTS, LINKS, TIMELINE = (
    "text",
    "scalar",
    "set",
    "readonly",
    "facts",
    "links",
    "timeline",
)

_TITLE = ("mem/title", SCALAR)
_TAGS = ("mem/tags", SET)
_SOURCE = ("mem/source", SCALAR)
_AT = ("mem/at", READONLY)

#: What each surface's file states: field -> (attribute, kind). `body` is the markdown
#: below the frontmatter; every other field is a frontmatter key of the same name.
FIELDS: dict[str, dict[str, tuple[str | None, str]]] = {
    "entity": {
        "name": ("entity/name", SCALAR),
        "kind": ("entity/kind", SCALAR),
        "aliases": ("entity/aliases", SET),
        "tags": _TAGS,
        "source": _SOURCE,
        "facts": (None, FACTS),
        "links": (None, LINKS),
        "body": ("mem/text", TEXT),
        "timeline": (None, TIMELINE),
    },
    "article": {
        "title": _TITLE,
        "tags": _TAGS,
        "topic": ("article/topic", SCALAR),
        "slug": ("article/slug", READONLY),
        "cites": ("article/cites", READONLY),
        "body": ("mem/text", TEXT),
    },
    "source": {
        "title": ("mem/title", READONLY),
        "source": ("mem/source", READONLY),
        "topics": ("source/topics", READONLY),
        "hash": ("source/hash", READONLY),
        "at": _AT,
        "body": ("mem/text", READONLY),
    },
    "decision": {
        "title": _TITLE,
        "tags": _TAGS,
        "by": ("decision/by", SCALAR),
        "alternatives": ("decision/alternatives", SET),
        "evidence": ("decision/evidence", SET),
        "supersedes": ("decision/supersedes", READONLY),
        "at": _AT,
        "body": ("decision/why", TEXT),
    },
    "canon": {"title": _TITLE, "name": ("canon/name", READONLY), "body": ("mem/text", TEXT)},
    "episode": {
        "title": _TITLE,
        "source": _SOURCE,
        "agent": ("episode/agent", SCALAR),
        "session": ("episode/session", READONLY),
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
    "capture": {
        "title": _TITLE,
        "tags": _TAGS,
        "source": _SOURCE,
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
    "daybook": {
        "title": _TITLE,
        "tags": _TAGS,
        "day": ("daybook/day", READONLY),
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
    "working": {
        "title": _TITLE,
        "tags": _TAGS,
        "source": _SOURCE,
        "scope": ("mem/scope", READONLY),
        "expires": (None, READONLY),
        "at": _AT,
        "body": ("mem/text", TEXT),
    },
}


# -- reading the ledger --------------------------------------------------------------------
class _Snap:
    """One consistent reading of the ledger: a view as of one tx (valid then, or now for the
    current ledger) and the same tx valid at the end of time, for timelines."""

    def __init__(self, ledger: Ledger, as_of: int | None = None):
        self.ledger = ledger
        self.view = ledger.view() if as_of is None else ledger.view(as_of=as_of)
        self.tx = self.view.as_of
        self.ever = ledger.view(as_of=self.tx, valid_at=FOREVER - 1)
        self._got: dict[str, dict] = {}

    def get(self, e: str) -> dict[str, Any]:
        if e not in self._got:
            self._got[e] = self.view.get(e) or {}
        return self._got[e]

    def items(self, now: int | None = None) -> list[tuple[str, str]]:
        """(surface, entity) of everything the vault shows, in a stable order. With `now`,
        working memory that has expired by then is left out."""
        if "mem/surface" not in self.ledger.schema:
            return []
        out = []
        for surface in FOLDERS:
            for e in self.view.find("mem/surface", surface):
                if surface == "working" and now is not None and self.expiry(e) <= now:
                    continue
                out.append((surface, e))
        return out

    def expiry(self, e: str) -> int:
        for _v, vf, vt in self.view.intervals(e, "mem/surface"):
            if vf <= self.view.valid_at < vt:
                return vt
        return FOREVER

    def date(self, us: int | None) -> str:
        if us is None:
            return "undated"
        return from_us(us).astimezone(self.ledger.default_tz or dt.UTC).date().isoformat()

    def path(self, surface: str, e: str) -> str:
        """Where an item's file lives, relative to the vault."""
        got = self.get(e)
        safe = _safe(e.split(":", 1)[-1] if surface == "episode" else e)
        if surface == "entity":
            name = got.get("entity/slug") or safe
        elif surface == "article":
            name = got.get("article/slug") or safe
        elif surface == "source":
            name = (got.get("source/hash") or safe)[:16]
        elif surface == "canon":
            name = got.get("canon/name") or safe
        elif surface == "daybook":
            name = f"{got.get('daybook/day') or 'undated'}-{safe}"
        elif surface == "working":
            name = f"{_safe(got.get('mem/scope') or 'unscoped')}-{safe}"
        else:
            name = f"{self.date(got.get('mem/at'))}-{safe}"
        return f"{FOLDERS[surface]}/{name}.md"

    def link(self, e: str, label: str | None = None) -> str:
        """An Obsidian link to an item's file: `[[entities/alice|Alice]]`."""
        surface = self.get(e).get("mem/surface")
        target = self.path(surface, e)[:-3] if surface in FOLDERS else e
        return f"[[{target}|{label}]]" if label else f"[[{target}]]"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "item"


def _label(snap: _Snap, surface: str, e: str) -> str:
    got = snap.get(e)
    text = got.get("entity/name") or got.get("mem/title") or got.get("mem/text") or e
    line = str(text).strip().splitlines()[0] if str(text).strip() else e
    return line[:80]


# -- rendering -----------------------------------------------------------------------------
def _render(snap: _Snap, surface: str, e: str) -> tuple[dict, str, str | None]:
    """An item as (frontmatter without `keel`, body, generated section or None)."""
    got = snap.get(e)
    meta: dict[str, Any] = {}
    body = ""
    for name, (attr, kind) in FIELDS[surface].items():
        if kind in (FACTS, LINKS, TIMELINE):
            continue
        if name == "expires":
            meta[name] = format_instant(snap.expiry(e))
            continue
        value = got.get(attr)
        if value is None or value == []:
            continue
        type_ = snap.ledger.attribute(attr).type
        if type_ == "instant":
            value = format_instant(value)
        elif type_ == "ref":
            refs = value if isinstance(value, list) else [value]
            value = sorted(snap.link(r) for r in refs)
        elif isinstance(value, list):
            value = sorted(value)
        if name == "body":
            body = str(value)
        else:
            meta[name] = value
    generated = None
    if surface == "entity":
        facts = {a.removeprefix("fact/"): v for a, v in got.items() if a.startswith("fact/")}
        if facts:
            meta["facts"] = facts
        out = _links_out(snap, e)
        if out:
            meta["links"] = out
        generated = _timeline(snap, e)
    return meta, body, generated


def _links_out(snap: _Snap, e: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for link, attr in snap.view.refs(e):
        if attr != "link/from":
            continue
        got = snap.get(link)
        target = got.get("link/to")
        if target and got.get("link/type"):
            name = snap.get(target).get("entity/name") or target
            grouped.setdefault(got["link/type"], []).append(snap.link(target, name))
    return {k: sorted(set(v)) for k, v in sorted(grouped.items())}


def _timeline(snap: _Snap, e: str) -> str:
    """The generated part of an entity's file: its observations (immutable) and who links to
    it. Rebuilt on every export; on import it is only checked for edits."""
    rows = []
    for obs in snap.ever.find("obs/entity", e):
        got = snap.ever.get(obs) or {}
        text = " ".join(str(got.get("mem/text") or "").split())
        line = f"- {format_instant(got.get('mem/at', 0))} — {text}"
        if got.get("obs/fact"):
            line += f" (`{got['obs/fact']}` = {got.get('obs/value')})"
        if got.get("mem/source"):
            line += f" · source: {got['mem/source']}"
        rows.append((got.get("mem/at", 0), obs, f"{line} · `{obs}`"))
    lines = [GEN_OPEN, "## Timeline", ""]
    lines += [r[2] for r in sorted(rows)] or ["(no observations)"]
    incoming = []
    for link, attr in snap.view.refs(e):
        got = snap.get(link)
        if attr == "link/to" and got.get("link/from"):
            source = got["link/from"]
            name = snap.get(source).get("entity/name") or source
            incoming.append(f"- {snap.link(source, name)} ({got.get('link/type')})")
    if incoming:
        lines += ["", "## Linked from", "", *sorted(set(incoming))]
    return "\n".join([*lines, GEN_CLOSE])


def _document(meta: dict, body: str, generated: str | None, e: str, version: int) -> str:
    front = {**meta, "keel": {"id": e, "version": version}}
    text = "---\n" + _dump(front) + "---\n"
    if body.strip():
        text += "\n" + body.strip() + "\n"
    if generated:
        text += "\n" + generated + "\n"
    return text


def _dump(data: dict) -> str:
    return yaml.safe_dump(
        data, sort_keys=True, allow_unicode=True, default_flow_style=False, width=10**9
    )


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8", newline="\n")


def _index(snap: _Snap, items: list[tuple[str, str]]) -> str:
    lines = ["# Memory", ""]
    for surface, folder in FOLDERS.items():
        entries = sorted(
            (snap.path(s, e)[:-3], _label(snap, s, e)) for s, e in items if s == surface
        )
        if entries:
            lines += [f"## {folder.capitalize()}", ""]
            lines += [
                f"- [[{p}|{label.replace('|', '/').replace(']', ')')}]]" for p, label in entries
            ]
            lines.append("")
    front = _dump({"keel": {"id": "index", "version": snap.tx}})
    return "---\n" + front + "---\n\n" + "\n".join(lines).rstrip() + "\n"


def export(ledger: Ledger, directory: str | Path) -> dict[str, Any]:
    """Write every memory surface under `directory` as it stands at the ledger head. The
    same ledger always renders the same bytes; files of items gone since are left alone."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise BadInput(f"{root} is a file, not a directory to export a vault into")
    snap = _Snap(ledger, as_of=ledger.view().as_of)
    items = snap.items(now=ledger.clock())
    counts: dict[str, int] = {}
    for surface, e in items:
        meta, body, generated = _render(snap, surface, e)
        _write(root, snap.path(surface, e), _document(meta, body, generated, e, snap.tx))
        counts[surface] = counts.get(surface, 0) + 1
    _write(root, "index.md", _index(snap, items))
    return {"directory": str(root), "version": snap.tx, "files": len(items) + 1, **counts}


# -- reading files -------------------------------------------------------------------------
@dataclass
class _File:
    rel: str
    path: Path
    surface: str
    meta: dict
    body: str
    generated: str | None
    id: str | None = None
    version: int | None = None
    stated: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)


def _parse(text: str, rel: str) -> tuple[dict, str, str | None]:
    """(frontmatter, body, generated section) of a markdown file."""
    text = text.replace("\r\n", "\n")
    meta: Any = {}
    m = _FRONT.match(text)
    if m:
        try:
            meta = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise BadInput(f"{rel}: the frontmatter is not valid YAML ({problem})") from None
        if not isinstance(meta, dict):
            raise BadInput(f"{rel}: the frontmatter must be a mapping of keys to values")
        text = text[m.end() :]
    generated = None
    start = text.find("<!-- keel:generated")
    if start >= 0:
        end = text.find(GEN_CLOSE, start)
        stop = len(text) if end < 0 else end + len(GEN_CLOSE)
        generated = text[start:stop]
        text = text[:start] + text[stop:]
    return meta, text, generated


def _norm_generated(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _scalar(value: Any, rel: str, name: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | dt.date):
        raise BadInput(f"{rel}: {name} must be a text or number value, got {value!r}")
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _stated(surface: str, meta: dict, body: str, generated: str | None, rel: str) -> dict:
    """The fields a file states, normalised so a file rendered from the ledger states
    exactly what the ledger holds. A key the file leaves out is not stated."""
    out: dict[str, Any] = {}
    for name, (_attr, kind) in FIELDS[surface].items():
        if kind == TEXT or (kind == READONLY and name == "body"):
            if body.strip():
                out[name] = body.strip()
        elif kind == TIMELINE:
            if generated is not None:
                out[name] = _norm_generated(generated)
        elif name not in meta or meta[name] is None:
            continue
        elif kind == SCALAR:
            if (v := _scalar(meta[name], rel, name)) is not None:
                out[name] = v
        elif kind == SET:
            raw = meta[name] if isinstance(meta[name], list) else [meta[name]]
            values = {_scalar(v, rel, name) for v in raw}
            out[name] = sorted(v.strip() for v in values if v and v.strip())
        elif kind == READONLY:
            out[name] = meta[name]
        elif kind == FACTS:
            if not isinstance(meta[name], dict):
                raise BadInput(f"{rel}: facts must be a mapping of fact keys to values")
            facts = {}
            for key, value in meta[name].items():
                if not isinstance(key, str) or not FACT_KEY.match(key):
                    raise BadInput(f"{rel}: fact key {key!r} must be lower snake case")
                if (v := _scalar(value, rel, f"fact {key}")) is not None:
                    facts[key] = v.strip()
            out[name] = facts
        elif kind == LINKS:
            if not isinstance(meta[name], dict):
                raise BadInput(f"{rel}: links must map a link type to [[Name]] values")
            out[name] = sorted(links.extract("", meta[name]))
    return out


def _fields(snap: _Snap, surface: str, e: str) -> dict[str, Any]:
    """What a file exported from `snap` states: rendered, written out and read back, so
    that it compares equal to an unedited file."""
    meta, body, generated = _render(snap, surface, e)
    text = _document(meta, body, generated, e, snap.tx)
    return _stated(surface, *_parse(text, e), e)


def _read(root: Path) -> list[_File]:
    files = []
    for folder, surface in sorted(SURFACE_OF.items()):
        for path in sorted((root / folder).rglob("*.md")):
            rel = path.relative_to(root).as_posix()
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInput(f"{rel}: cannot be read as UTF-8 text ({exc})") from None
            meta, body, generated = _parse(text, rel)
            f = _File(rel, path, surface, meta, body, generated)
            keel = meta.get("keel")
            if keel is not None:
                if not isinstance(keel, dict) or not isinstance(keel.get("id"), str):
                    raise BadInput(f"{rel}: keel must be a mapping with the item's id")
                version = keel.get("version")
                if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                    raise BadInput(f"{rel}: keel.version must be the tx id it was exported at")
                f.id, f.version = keel["id"], version
            files.append(f)
    return files


# -- merging -------------------------------------------------------------------------------
def merge_text(base: str, current: str, mine: str) -> str | None:
    """A line-based three-way merge; None when the two sides change the same lines."""
    m = Merge3(
        (base + "\n").splitlines(True),
        (current + "\n").splitlines(True),
        (mine + "\n").splitlines(True),
    )
    out: list[str] = []
    for group in m.merge_groups():
        if group[0] == "conflict":
            return None
        out += group[1]
    return "".join(out).rstrip("\n")


class _Importer:
    """One import: every file is parsed and checked before anything is written."""

    def __init__(self, ledger: Ledger, root: Path, signer: Signer | None):
        self.ledger, self.root, self.signer = ledger, root, signer
        self._mem: Memory | None = None
        self._bases: dict[int, _Snap] = {}
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
        }

    @property
    def mem(self) -> Memory:
        if self._mem is None:
            self._mem = Memory(self.ledger, self.signer)
        return self._mem

    def base(self, version: int) -> _Snap:
        if version not in self._bases:
            self._bases[version] = _Snap(self.ledger, as_of=version)
        return self._bases[version]

    def note(self, kind: str, f: _File, name: str, detail: str | None = None) -> None:
        entry = {"file": f.rel, "field": name}
        if detail is not None:
            entry["detail"] = detail
        self.report[kind].append(entry)

    # -- phase 1: parse and check everything ---------------------------------------------
    def prepare(self) -> list[_File]:
        files = _read(self.root)
        head = self.ledger.view().as_of
        kinds = self._kinds()
        for f in files:
            if f.id is not None:
                if f.version > head:
                    raise BadInput(f"{f.rel}: version {f.version} is newer than the ledger")
                base = self.base(f.version)
                surface = base.get(f.id).get("mem/surface")
                if surface not in FOLDERS:
                    raise BadInput(
                        f"{f.rel}: the ledger had no memory item {f.id!r} at version {f.version}"
                    )
                f.surface = surface
                f.base = _fields(base, surface, f.id)
            f.stated = _stated(f.surface, f.meta, f.body, f.generated, f.rel)
            kind = f.stated.get("kind")
            if f.surface == "entity" and kind not in (None, f.base.get("kind"), *kinds):
                raise BadInput(f"{f.rel}: {kind!r} is not an entity kind ({', '.join(kinds)})")
            new = f.id is None and f.surface in CREATABLE and f.surface != "entity"
            if new and not f.stated.get("body"):
                raise BadInput(f"{f.rel}: a new {f.surface} file needs text below the ---")
        return files

    def _kinds(self) -> list[str]:
        """Entity kinds, read without `Memory` (which may declare schema: a write)."""
        if "entity-kind/name" not in self.ledger.schema:
            return list(ENTITY_KINDS)
        view = self.ledger.view()
        extra = {view.value(e, "entity-kind/name") for e in view.find("entity-kind/name")}
        return [*ENTITY_KINDS, *sorted(k for k in extra if k)]

    # -- phase 2: write ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        files = self.prepare()
        self.report["files"] = len(files)
        for f in files:
            before = self._count()
            wrote = self.create(f) if f.id is None else self.apply(f)
            if self._count() == before:
                self.report["unchanged"] += 1
            if wrote and f.id is not None and not self._troubled(f):
                self._rewrite(f)
        self._missing(files)
        return self.report

    def _count(self) -> int:
        keys = ("applied", "merged", "conflicts", "refused", "created", "skipped")
        return sum(len(self.report[k]) for k in keys)

    def _troubled(self, f: _File) -> bool:
        return any(x["file"] == f.rel for k in ("conflicts", "refused") for x in self.report[k])

    def _rewrite(self, f: _File) -> None:
        """Re-export a file the import wrote from, so its version is the new head and a
        second edit of the same field is not mistaken for a clash with the first."""
        snap = _Snap(self.ledger, as_of=self.ledger.view().as_of)
        meta, body, generated = _render(snap, f.surface, f.id)
        _write(self.root, f.rel, _document(meta, body, generated, f.id, snap.tx))

    def apply(self, f: _File) -> bool:
        """Three-way merge each stated field of an existing item; True if anything was
        written."""
        e, spec = f.id, FIELDS[f.surface]
        changed = [n for n, v in f.stated.items() if v != f.base.get(n, _empty(spec[n][1]))]
        if not changed:
            return False
        if f.surface == "source":
            self.note("refused", f, ", ".join(changed), "sources are immutable")
            return False
        cur = _Snap(self.ledger)
        raw = cur.get(e)
        if raw.get("mem/surface") != f.surface:
            self.note("refused", f, ", ".join(changed), f"{e} is no longer current in keel")
            return False
        now = _fields(cur, f.surface, e)
        ops: list[dict] = []
        expect: list[dict] = []
        done: list[tuple[str, str]] = []
        facts: dict[str, str] = {}
        new_links: list[tuple[str, str]] = []
        span = self._span(f.surface, cur, e)
        for name in changed:
            attr, kind = spec[name]
            mine, base = f.stated[name], f.base.get(name, _empty(kind))
            theirs = now.get(name, _empty(kind))
            if kind == TIMELINE:
                self.note(
                    "refused", f, name, "observations are immutable; the timeline is generated"
                )
            elif kind == READONLY:
                self.note("refused", f, name, f"{name} is read-only in the vault")
            elif kind == FACTS:
                facts = self._facts(f, mine, base, theirs)
            elif kind == LINKS:
                new_links = self._links(f, mine, base, theirs)
            elif mine == theirs:
                continue
            elif kind == SET:
                merged = sorted((set(theirs) | (set(mine) - set(base))) - (set(base) - set(mine)))
                have = raw.get(attr) or []
                for v in sorted(set(merged) - set(have)):
                    ops.append({"op": "add", "e": e, "a": attr, "v": v, **span})
                for v in sorted(set(have) - set(merged)):
                    ops.append({"op": "retract", "e": e, "a": attr, "v": v, **span})
                    expect.append({"e": e, "a": attr, "v": v})
                done.append(("applied" if theirs == base else "merged", name))
            else:
                value, how = mine, "applied"
                if theirs != base:
                    value = merge_text(base or "", theirs or "", mine) if kind == TEXT else None
                    how = "merged"
                    if value is None:
                        self.note("conflicts", f, name, _clash(kind, base, theirs, mine))
                        continue
                    if value == theirs:
                        continue
                ops.append({"op": "add", "e": e, "a": attr, "v": value, **span})
                expect.append({"e": e, "a": attr, "v": raw.get(attr)})
                done.append((how, name))
        if f.surface == "entity":
            ops += self._link_ops(cur, e, f, ops, new_links)
        wrote = False
        if ops:
            try:
                self.ledger.transact(
                    ops, reason=f"vault edit: {f.rel}", expect=expect, signer=self.signer
                )
                wrote = True
                for how, name in done:
                    self.note(how, f, name)
                if new_links:
                    self.note("applied", f, "links")
            except Conflict as exc:
                for _how, name in done or [("", "links")]:
                    self.note("conflicts", f, name, str(exc))
            except KeelError as exc:
                self.note("refused", f, ", ".join(n for _h, n in done) or "links", str(exc))
        for key, value in facts.items():
            try:
                self.mem.observe(
                    e, text=f"vault edit: {key} = {value}", fact=key, value=value, source="vault"
                )
                self.note("applied", f, f"facts.{key}")
                wrote = True
            except KeelError as exc:
                self.note("refused", f, f"facts.{key}", str(exc))
        return wrote

    def _span(self, surface: str, cur: _Snap, e: str) -> dict:
        """Valid time for a vault write: an entity's identity holds over all of valid time,
        working memory keeps its expiry, the rest holds from now on."""
        if surface == "entity":
            return dict(ALWAYS)
        if surface == "working":
            return {"valid_to": cur.expiry(e)}
        return {}

    def _facts(self, f: _File, mine: dict, base: dict, theirs: dict) -> dict[str, str]:
        out = {}
        for key in sorted(set(base) - set(mine)):
            self.note("skipped", f, f"facts.{key}", "removing a fact is not done from the vault")
        for key, value in sorted(mine.items()):
            if value == base.get(key) or value == theirs.get(key):
                continue
            if theirs.get(key) != base.get(key):
                self.note(
                    "conflicts",
                    f,
                    f"facts.{key}",
                    _clash(SCALAR, base.get(key), theirs.get(key), value),
                )
                continue
            out[key] = value
        return out

    def _links(self, f: _File, mine: list, base: list, theirs: list) -> list[tuple[str, str]]:
        gone = sorted(set(map(tuple, base)) - set(map(tuple, mine)))
        if gone:
            self.note("skipped", f, "links", "removing a link is not done from the vault")
        return sorted(set(map(tuple, mine)) - set(map(tuple, base)) - set(map(tuple, theirs)))

    def _link_ops(
        self, cur: _Snap, e: str, f: _File, ops: list[dict], new: list[tuple[str, str]]
    ) -> list[dict]:
        """Links the edit adds: new `[[...]]` values under `links`, and mentions in a
        changed summary. Targets that do not exist yet become stub entities named as
        written."""
        text = next((o["v"] for o in ops if o["a"] == "mem/text"), "")
        if not new and "[[" not in text:
            return []
        front: dict[str, list[str]] = {}
        for kind, slug in new:
            front.setdefault(kind, []).append(f"[[{slug}]]")
        names = {}
        for values in f.meta.get("links", {}).values():
            for item in values if isinstance(values, list) else [values]:
                for target in links.entity_targets(str(item)):
                    names[slugify(target.split("/")[-1])] = target.split("/")[-1].strip()
        added = self.mem._link_ops(cur.view, e, e, text, front, self.ledger.clock())
        for op in added:
            slug = op["e"].removeprefix("entity:")
            if op["a"] == "entity/name" and op["v"] == slug and slug in names:
                op["v"] = names[slug]
        return added

    # -- new files -----------------------------------------------------------------------
    def create(self, f: _File) -> bool:
        """A file without a keel id becomes a new item (entities, capture, decisions,
        daybook entries, canon), then is replaced by its exported form so the next import
        does not create it again."""
        s, mem = f.stated, self.mem if f.surface in CREATABLE else None
        stem = f.path.stem
        try:
            if f.surface == "entity":
                name = s.get("name") or stem
                if self.ledger.view().get(entity_id(slugify(name))):
                    self.note(
                        "conflicts",
                        f,
                        "name",
                        f"entity {slugify(name)!r} already exists; edit its file instead",
                    )
                    return False
                res = mem.upsert_entity(
                    name,
                    s.get("kind"),
                    aliases=s.get("aliases", ()),
                    summary=s.get("body"),
                    facts=s.get("facts"),
                    source=s.get("source"),
                    frontmatter=f.meta.get("links")
                    if isinstance(f.meta.get("links"), dict)
                    else None,
                )
                e = res["id"]
                if s.get("tags"):
                    self.ledger.transact(
                        [
                            {"op": "add", "e": e, "a": "mem/tags", "v": t, **ALWAYS}
                            for t in s["tags"]
                        ],
                        reason=f"vault: tags of {e}",
                        signer=self.signer,
                    )
            elif f.surface == "capture":
                e = mem.capture(s["body"], s.get("source"), s.get("tags", ()))["id"]
            elif f.surface == "decision":
                e = mem.log_decision(
                    s.get("title") or stem,
                    s["body"],
                    alternatives=s.get("alternatives", ()),
                    evidence=s.get("evidence", ()),
                    by=s.get("by"),
                    at=_scalar(f.meta.get("at"), f.rel, "at"),
                    tags=s.get("tags", ()),
                )["id"]
            elif f.surface == "daybook":
                e = mem.daybook(s["body"], at=_scalar(f.meta.get("at"), f.rel, "at"))["id"]
            elif f.surface == "canon":
                name = _scalar(f.meta.get("name"), f.rel, "name") or stem
                if self.ledger.view().get(f"canon:{slugify(name)}"):
                    self.note("conflicts", f, "name", f"canon {slugify(name)!r} already exists")
                    return False
                e = mem.write_canon(name, s["body"], s.get("title"))["id"]
            else:
                self.note(
                    "refused", f, "*", f"new {f.surface} items are not created from the vault"
                )
                return False
        except KeelError as exc:
            self.note("refused", f, "*", str(exc))
            return False
        snap = _Snap(self.ledger, as_of=self.ledger.view().as_of)
        rel = snap.path(f.surface, e)
        meta, body, generated = _render(snap, f.surface, e)
        _write(self.root, rel, _document(meta, body, generated, e, snap.tx))
        if rel != f.rel:
            f.path.unlink()
        self.report["created"].append({"file": f.rel, "id": e, "surface": f.surface, "now": rel})
        return True

    def _missing(self, files: list[_File]) -> None:
        """Items the vault showed at its version whose file is gone: left alone."""
        versions = [f.version for f in files if f.version is not None]
        if not versions:
            return
        snap = self.base(max(versions))
        seen = {f.id for f in files}
        for surface, e in snap.items():
            if e not in seen:
                self.report["missing"].append(
                    {"file": snap.path(surface, e), "id": e, "detail": "missing, left alone"}
                )


def _empty(kind: str) -> Any:
    return {FACTS: {}, SET: [], LINKS: []}.get(kind)


def _clash(kind: str, base: Any, theirs: Any, mine: Any) -> str:
    if kind == TEXT:
        return "the file and keel changed the same lines since the export; nothing written"
    return f"was {base!r} at export, keel now has {theirs!r}, the file says {mine!r}"


def import_vault(ledger: Ledger, directory: str | Path, signer: Signer | None = None) -> dict:
    """Record edits made in an exported vault as transactions, and report what happened:
    {files, unchanged, applied, merged, conflicts, refused, created, skipped, missing}.
    Bad input (no such directory, malformed frontmatter) raises BadInput before any write."""
    root = Path(directory)
    if not root.is_dir():
        raise BadInput(f"{root} is not a directory (export a vault there first)")
    return _Importer(ledger, root, signer).run()


import_ = import_vault
