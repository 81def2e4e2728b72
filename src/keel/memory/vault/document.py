"""From markdown back to fields: a file parsed into frontmatter, body and generated section,
and the fields it states, normalised so that a file keel rendered states exactly what the
ledger held — whatever Obsidian did to its links since."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from typing import Any

import yaml

from ...ledger import BadInput
from .. import links
from ..model import FACT_KEY
from .fields import FACTS, FIELDS, GEN_CLOSE, LINKS, READONLY, SCALAR, SET, TEXT, TIMELINE
from .linking import for_extraction, from_obsidian, reached, shown
from .names import Layout
from .render import Snap, derived_aliases, document, render

_FRONT = re.compile(r"\A---[ \t]*\n(.*?)^---[ \t]*(?:\n|\Z)", re.S | re.M)


def parse(text: str, rel: str) -> tuple[dict, str, str | None]:
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


def scalar(value: Any, rel: str, name: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | dt.date):
        raise BadInput(f"{rel}: {name} must be a text or number value, got {value!r}")
    return value.isoformat() if isinstance(value, dt.date) else str(value)


class Reader:
    """Reads what files state: links are taken back to what keel meant by them when the
    file was rendered (`snap`, the ledger then) and compared by the file they reach."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def stated(
        self,
        snap: Snap,
        surface: str,
        meta: dict,
        body: str,
        generated: str | None,
        rel: str,
        derived: Collection[str] = (),
    ) -> dict[str, Any]:
        """The fields a file states. A key the file leaves out is not stated; `derived` are
        aliases keel wrote only for Obsidian (see `render.derived_aliases`)."""
        out: dict[str, Any] = {}
        for name, (attr, kind) in FIELDS[surface].items():
            if kind == TEXT or (kind == READONLY and name == "body"):
                if body.strip():
                    out[name] = from_obsidian(body.strip(), snap, self.layout)
            elif kind == TIMELINE:
                if generated is not None:
                    lines = shown(generated).strip().splitlines()
                    out[name] = "\n".join(line.rstrip() for line in lines)
            elif name not in meta or meta[name] is None:
                continue
            elif kind == SCALAR:
                if (v := scalar(meta[name], rel, name)) is not None:
                    out[name] = v
            elif kind == SET:
                raw = meta[name] if isinstance(meta[name], list) else [meta[name]]
                values = {scalar(v, rel, name) for v in raw}
                kept = {v.strip() for v in values if v and v.strip()}
                out[name] = sorted(kept - set(derived) if name == "aliases" else kept)
            elif kind == READONLY:
                out[name] = self._readonly(snap, attr, meta[name])
            elif kind == FACTS:
                out[name] = _facts(meta[name], rel)
            elif kind == LINKS:
                if not isinstance(meta[name], dict):
                    raise BadInput(f"{rel}: links must map a link type to [[Name]] values")
                out[name] = sorted(links.extract("", self.link_values(meta[name])))
        return out

    def _readonly(self, snap: Snap, attr: str | None, value: Any) -> Any:
        """References compare by the item they reach, not by how the link is spelled."""
        if attr is None or snap.ledger.attribute(attr).type != "ref":
            return value
        values = value if isinstance(value, list) else [value]
        return sorted(reached(str(v), self.layout) for v in values)

    def link_values(self, front: dict) -> dict[str, list[str]]:
        """A `links:` mapping with each link that reaches an entity's file by its slug."""
        out = {}
        for key, values in front.items():
            items = values if isinstance(values, list) else [values]
            out[str(key)] = [for_extraction(v, self.layout) for v in items if isinstance(v, str)]
        return out

    def fields(self, snap: Snap, surface: str, e: str) -> dict[str, Any]:
        """What a file keel rendered from `snap` states: rendered, written out and read back,
        so that it compares equal to an unedited file."""
        text = document(*render(snap, surface, e), e, snap.tx)
        derived = derived_aliases(snap, surface, e)
        return self.stated(snap, surface, *parse(text, e), e, derived)


def _facts(value: Any, rel: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadInput(f"{rel}: facts must be a mapping of fact keys to values")
    facts = {}
    for key, v in value.items():
        if not isinstance(key, str) or not FACT_KEY.match(key):
            raise BadInput(f"{rel}: fact key {key!r} must be lower snake case")
        if (text := scalar(v, rel, f"fact {key}")) is not None:
            facts[key] = text.strip()
    return facts
