"""From the ledger to markdown: one consistent reading of the ledger (`Snap`), and each item
rendered as frontmatter, body and generated section. Rendering is a pure function of the
reading and the layout, so an item that did not change renders the same bytes."""

from __future__ import annotations

import bisect
import datetime as dt
from typing import Any

import yaml

from ...ledger import Ledger
from ...ledger.instants import EARLIEST, FOREVER, LATEST, format_instant, from_us
from .fields import FACTS, FIELDS, FOLDERS, GEN_CLOSE, GEN_OPEN, LINKS, TIMELINE
from .linking import for_obsidian
from .names import Layout


class Snap:
    """One consistent reading of the ledger: a view as of one tx (valid then, or now for the
    current ledger) and the same tx valid at the end of time, for timelines; paths and links
    come from `layout`."""

    def __init__(self, ledger: Ledger, layout: Layout, as_of: int | None = None):
        self.ledger = ledger
        self.layout = layout
        self.view = ledger.view() if as_of is None else ledger.view(as_of=as_of)
        self.tx = self.view.as_of
        self.ever = ledger.view(as_of=self.tx, valid_at=FOREVER - 1)
        self._got: dict[str, dict] = {}
        self._sources: list[tuple[str, str]] | None = None

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
        if us is None or not EARLIEST <= us <= LATEST:  # a raw transaction may store any int
            return "undated"
        return from_us(us).astimezone(self.ledger.default_tz or dt.UTC).date().isoformat()

    def source(self, prefix: str) -> str | None:
        """The one source whose hash starts with `prefix` (8 or more hex digits)."""
        p = prefix.strip().lower().removeprefix("sha256:")
        if len(p) < 8 or any(c not in "0123456789abcdef" for c in p):
            return None
        if self._sources is None:
            found = self.view.find("source/hash") if "source/hash" in self.ledger.schema else []
            self._sources = sorted(
                (str(self.get(s).get("source/hash", "")).removeprefix("sha256:"), s) for s in found
            )
        i = bisect.bisect_left(self._sources, (p, ""))
        hits = [s for h, s in self._sources[i : i + 2] if h.startswith(p)]
        return hits[0] if len(hits) == 1 else None

    def link(self, e: str, label: str | None = None) -> str:
        """A link to an item's file, `[[entities/Alice Smith|Alice Smith]]`; plain text for
        an item the vault has no file for."""
        target = self.layout.link_target(e)
        if target is None:
            return label or e
        if label is None:
            return f"[[{target}]]"
        label = " ".join(label.split()).replace("|", "/").replace("[", "(").replace("]", ")")
        return f"[[{target}|{label}]]"


def label(snap: Snap, e: str) -> str:
    """An item's name in a list: its name, title or first line."""
    got = snap.get(e)
    text = got.get("entity/name") or got.get("mem/title") or got.get("mem/text") or e
    line = str(text).strip().splitlines()[0] if str(text).strip() else e
    return line[:80]


def derived_aliases(snap: Snap, surface: str, e: str) -> set[str]:
    """Names the file's `aliases:` carries for Obsidian to find it by that are not stored
    as aliases: an entity's or article's own name when the file name could not carry it, a
    source's full hash."""
    got = snap.get(e)
    rel = snap.layout.paths.get(e, "")
    stem = rel.rsplit("/", 1)[-1].removesuffix(".md")
    if surface == "source" and got.get("source/hash"):
        return {got["source/hash"]}
    name = got.get("entity/name") if surface == "entity" else None
    name = got.get("mem/title") if surface == "article" else name
    return {name} if name and name != stem else set()


def render(snap: Snap, surface: str, e: str) -> tuple[dict, str, str | None]:
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
            body = for_obsidian(str(value), snap, snap.layout)
        else:
            meta[name] = value
    aliases = derived_aliases(snap, surface, e)
    if aliases:
        meta["aliases"] = sorted(set(meta.get("aliases", [])) | aliases)
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


def _links_out(snap: Snap, e: str) -> dict[str, list[str]]:
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


def _timeline(snap: Snap, e: str) -> str:
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


def render_index(snap: Snap, items: list[tuple[str, str]]) -> tuple[dict, str, None]:
    """`index.md`: a link to every item, by surface."""
    lines = ["# Memory", ""]
    for surface, folder in FOLDERS.items():
        entries = sorted(
            (snap.layout.paths[e], snap.link(e, label(snap, e))) for s, e in items if s == surface
        )
        if entries:
            lines += [f"## {folder.capitalize()}", "", *(f"- {link}" for _p, link in entries), ""]
    return {}, "\n".join(lines), None


def document(meta: dict, body: str, generated: str | None, e: str, version: int) -> str:
    """The file's text: frontmatter (with `keel: {id, version}`), body, generated part."""
    front = {**meta, "keel": {"id": e, "version": version}}
    text = "---\n" + dump(front) + "---\n"
    if body.strip():
        text += "\n" + body.strip() + "\n"
    if generated:
        text += "\n" + generated + "\n"
    return text


def dump(data: dict) -> str:
    return yaml.safe_dump(
        data, sort_keys=True, allow_unicode=True, default_flow_style=False, width=10**9
    )
