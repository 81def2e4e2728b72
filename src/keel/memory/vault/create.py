"""A note made in Obsidian (no keel id) becoming a new item through the surface's own write,
so the same rules hold as on every other path: entities, capture, decisions, daybook
entries and canon; the other surfaces are not created from the vault."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ledger import KeelError
from ..memory import entity_id
from ..model import slugify
from .document import scalar
from .fields import FIELDS, READONLY

if TYPE_CHECKING:
    from .importer import _File, _Importer

#: Fields of a new note its surface's own write does not take, set right after it.
_AFTER = {"entity": ("tags",), "capture": ("title",), "daybook": ("title", "tags")}
#: Read-only fields a new note may state because its surface's write takes them.
_TAKEN = {"decision": ("at",), "daybook": ("at",), "canon": ("name",)}


def create(imp: _Importer, f: _File) -> str | None:
    """Create the item `f` describes; its id, or None when nothing was created (the report
    says why)."""
    s, stem = f.stated, f.rel.rsplit("/", 1)[-1].removesuffix(".md")
    try:
        if f.surface == "entity":
            name = s.get("name") or stem
            if imp.ledger.view().get(entity_id(slugify(name))):
                imp.note(
                    "conflicts",
                    f.rel,
                    "name",
                    f"entity {slugify(name)!r} already exists; merge this note into its file "
                    f"or give it another name",
                )
                return None
            links = f.meta.get("links")
            e = imp.mem.upsert_entity(
                name,
                s.get("kind"),
                aliases=s.get("aliases", ()),
                summary=s.get("body"),
                facts=s.get("facts"),
                source=s.get("source"),
                frontmatter=imp.reader.link_values(links) if isinstance(links, dict) else None,
            )["id"]
        elif f.surface == "capture":
            e = imp.mem.capture(s["body"], s.get("source"), s.get("tags", ()))["id"]
        elif f.surface == "decision":
            e = imp.mem.log_decision(
                s.get("title") or stem,
                s["body"],
                alternatives=s.get("alternatives", ()),
                evidence=s.get("evidence", ()),
                by=s.get("by"),
                at=scalar(f.meta.get("at"), f.rel, "at"),
                tags=s.get("tags", ()),
            )["id"]
        elif f.surface == "daybook":
            e = imp.mem.daybook(s["body"], at=scalar(f.meta.get("at"), f.rel, "at"))["id"]
        elif f.surface == "canon":
            name = scalar(f.meta.get("name"), f.rel, "name") or stem
            if imp.ledger.view().get(f"canon:{slugify(name)}"):
                imp.note("conflicts", f.rel, "name", f"canon {slugify(name)!r} already exists")
                return None
            e = imp.mem.write_canon(name, s["body"], s.get("title"))["id"]
        else:
            imp.note("refused", f.rel, "*", f"new {f.surface} items are not created from the vault")
            return None
        _after(imp, f, e)
    except KeelError as exc:
        imp.note("refused", f.rel, "*", str(exc))
        return None
    taken = _TAKEN.get(f.surface, ())
    for name, (_attr, kind) in FIELDS[f.surface].items():
        if kind == READONLY and name != "body" and name in s and name not in taken:
            imp.note("skipped", f.rel, name, f"{name} is set by keel for a new {f.surface}")
    return e


def _after(imp: _Importer, f: _File, e: str) -> None:
    """Set what the surface's write did not take (an entity's tags, a capture's title),
    valid over the same time as the item."""
    view = imp.ledger.view()
    since = min((vf for _v, vf, _vt in view.intervals(e, "mem/surface")), default=None)
    span = {} if since is None else {"valid_from": since}
    ops = []
    for name in _AFTER.get(f.surface, ()):
        attr = FIELDS[f.surface][name][0]
        values = f.stated.get(name)
        for v in values if isinstance(values, list) else [values] if values else []:
            ops.append({"op": "add", "e": e, "a": attr, "v": v, **span})
    if ops:
        imp.ledger.transact(ops, reason=f"vault: new note {f.rel}", signer=imp.signer)
