"""An edited file recorded back, field by field, as a three-way merge of the file (mine), the
ledger as of the version the file was rendered at (base) and the ledger now (theirs).

A field only the file changed is applied; one both changed merges when it can (text line
by line, sets by what each side added and removed) and is a conflict when it cannot. Every
write carries `expect` preconditions on the values it read, so a writer landing between
the read and the write turns into a conflict, never a lost update."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from merge3 import Merge3

from ...ledger import Conflict, KeelError
from .. import links
from ..memory import ALWAYS
from ..model import slugify
from .fields import FACTS, FIELDS, LINKS, READONLY, SCALAR, SET, TEXT, TIMELINE, empty
from .linking import for_extraction
from .render import Snap

if TYPE_CHECKING:
    from .importer import _File, _Importer


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


def apply(imp: _Importer, f: _File) -> bool:
    """Merge each field the file changed into the item; True if anything was written."""
    e, spec = f.id, FIELDS[f.surface]
    changed = [n for n, v in f.stated.items() if v != f.base.get(n, empty(spec[n][1]))]
    if not changed:
        return False
    if f.surface == "source":
        imp.note("refused", f.rel, ", ".join(changed), "sources are immutable")
        return False
    cur = Snap(imp.ledger, imp.layout)
    raw = cur.get(e)
    if raw.get("mem/surface") != f.surface:
        imp.note("refused", f.rel, ", ".join(changed), f"{e} is no longer current in keel")
        return False
    now = imp.reader.fields(cur, f.surface, e)
    ops: list[dict] = []
    expect: list[dict] = []
    done: list[tuple[str, str]] = []
    facts: dict[str, str] = {}
    new_links: list[tuple[str, str]] = []
    span = _span(f.surface, cur, e)
    for name in changed:
        attr, kind = spec[name]
        mine, base = f.stated[name], f.base.get(name, empty(kind))
        theirs = now.get(name, empty(kind))
        if kind == TIMELINE:
            imp.note(
                "refused", f.rel, name, "observations are immutable; the timeline is generated"
            )
        elif kind == READONLY:
            imp.note("refused", f.rel, name, f"{name} is read-only in the vault")
        elif kind == FACTS:
            facts = _facts(imp, f, mine, base, theirs)
        elif kind == LINKS:
            new_links = _links(imp, f, mine, base, theirs)
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
                    imp.note("conflicts", f.rel, name, _clash(kind, base, theirs, mine))
                    continue
                if value == theirs:
                    continue
            ops.append({"op": "add", "e": e, "a": attr, "v": value, **span})
            expect.append({"e": e, "a": attr, "v": raw.get(attr)})
            done.append((how, name))
    if f.surface == "entity":
        ops += _link_ops(imp, cur, e, f, ops, new_links)
    wrote = False
    if ops:
        try:
            imp.ledger.transact(
                ops, reason=f"vault edit: {f.rel}", expect=expect, signer=imp.signer
            )
            wrote = True
            for how, name in done:
                imp.note(how, f.rel, name)
            if new_links:
                imp.note("applied", f.rel, "links")
        except Conflict as exc:
            for _how, name in done or [("", "links")]:
                imp.note("conflicts", f.rel, name, str(exc))
        except KeelError as exc:
            imp.note("refused", f.rel, ", ".join(n for _h, n in done) or "links", str(exc))
    for key, value in facts.items():
        try:
            imp.mem.observe(
                e, text=f"vault edit: {key} = {value}", fact=key, value=value, source="vault"
            )
            imp.note("applied", f.rel, f"facts.{key}")
            wrote = True
        except KeelError as exc:
            imp.note("refused", f.rel, f"facts.{key}", str(exc))
    return wrote


def _span(surface: str, cur: Snap, e: str) -> dict:
    """Valid time for a vault write: an entity's identity holds over all of valid time,
    working memory keeps its expiry, the rest holds from now on."""
    if surface == "entity":
        return dict(ALWAYS)
    if surface == "working":
        return {"valid_to": cur.expiry(e)}
    return {}


def _facts(imp: _Importer, f: _File, mine: dict, base: dict, theirs: dict) -> dict[str, str]:
    out = {}
    for key in sorted(set(base) - set(mine)):
        imp.note("skipped", f.rel, f"facts.{key}", "removing a fact is not done from the vault")
    for key, value in sorted(mine.items()):
        if value == base.get(key) or value == theirs.get(key):
            continue
        if theirs.get(key) != base.get(key):
            clash = _clash(SCALAR, base.get(key), theirs.get(key), value)
            imp.note("conflicts", f.rel, f"facts.{key}", clash)
            continue
        out[key] = value
    return out


def _links(imp: _Importer, f: _File, mine: list, base: list, theirs: list) -> list[tuple]:
    gone = sorted(set(map(tuple, base)) - set(map(tuple, mine)))
    if gone:
        imp.note("skipped", f.rel, "links", "removing a link is not done from the vault")
    return sorted(set(map(tuple, mine)) - set(map(tuple, base)) - set(map(tuple, theirs)))


def _link_ops(
    imp: _Importer, cur: Snap, e: str, f: _File, ops: list[dict], new: list[tuple[str, str]]
) -> list[dict]:
    """Links the edit adds: new `[[...]]` values under `links`, and mentions in a changed
    summary. A link reaching an entity's file is to that entity; targets that do not exist
    yet become stub entities named as written."""
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
    text = for_extraction(text, imp.layout)
    added = imp.mem._link_ops(cur.view, e, e, text, front, imp.ledger.clock())
    for op in added:
        slug = op["e"].removeprefix("entity:")
        if op["a"] == "entity/name" and op["v"] == slug and slug in names:
            op["v"] = names[slug]
    return added


def _clash(kind: str, base: Any, theirs: Any, mine: Any) -> str:
    if kind == TEXT:
        return "the file and keel changed the same lines since the export; nothing written"
    return f"was {base!r} at export, keel now has {theirs!r}, the file says {mine!r}"
