"""Attributes and their rules. The schema is itself stored as datoms in the ledger.

An attribute is declared by asserting `db/*` facts about the entity `attr:<ident>`.
Changes are forward-only: a declared type or uniqueness never changes, and cardinality
may only widen from one to many, so data written under an older schema stays valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property

from .errors import SchemaError
from .values import TYPE_TAGS

CARDINALITIES = ("one", "many")
UNIQUENESS = (None, "identity", "value")
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
RESERVED_PREFIXES = ("db/", "keel.")


@dataclass(frozen=True)
class Attribute:
    ident: str
    type: str
    cardinality: str = "one"
    unique: str | None = None
    fulltext: bool = False
    doc: str = ""

    @cached_property
    def tag(self) -> int:
        return TYPE_TAGS[self.type]

    @cached_property
    def many(self) -> bool:
        return self.cardinality == "many"

    def to_json(self) -> dict:
        return {
            "attribute": self.ident,
            "type": self.type,
            "cardinality": self.cardinality,
            "unique": self.unique,
            "fulltext": self.fulltext,
            "doc": self.doc,
        }


def attr_entity(ident: str) -> str:
    return f"attr:{ident}"


# The meta-schema: attributes keel itself relies on. They are not declared in the ledger.
BUILTIN: dict[str, Attribute] = {
    a.ident: a
    for a in (
        Attribute("db/ident", "string", unique="identity", doc="the name of an attribute"),
        Attribute("db/type", "string", doc="the value type of an attribute"),
        Attribute("db/cardinality", "string", doc="one or many"),
        Attribute("db/unique", "string", doc="identity or value"),
        Attribute("db/fulltext", "bool", doc="whether values are full-text indexed"),
        Attribute("db/doc", "string", doc="what the attribute means"),
        Attribute("keel.identity/name", "string", unique="identity", doc="who signs"),
        Attribute("keel.identity/key", "bytes", "many", doc="an Ed25519 public key"),
        Attribute("keel.identity/role", "string", doc="operator, agent or connector"),
        Attribute("keel.branch/name", "string", unique="identity", doc="a branch's name"),
        Attribute("keel.branch/id", "int", unique="value", doc="a branch's number"),
        Attribute("keel.branch/parent", "int", doc="the branch it was forked from"),
        Attribute("keel.branch/base", "int", doc="the transaction it was forked at"),
        Attribute("keel.branch/state", "string", doc="open, merged or dropped"),
        Attribute("keel.forget/entity", "string", doc="the entity a forgetting erased from"),
        Attribute("keel.forget/attribute", "string", doc="the attribute it erased, if one"),
        Attribute("keel.forget/why", "string", doc="why it was forgotten"),
        Attribute("keel.forget/datoms", "json", doc="the erased datoms: [tx, idx, group]"),
    )
}
SCHEMA_ATTRS = ("db/ident", "db/type", "db/cardinality", "db/unique", "db/fulltext", "db/doc")


def declaration(ident: str, type_: str, doc: str, **rules: object) -> dict:
    """A declaration as `Ledger.declare` takes it, for modules that declare their own
    attributes (memory, files)."""
    return {"attribute": ident, "type": type_, "doc": doc, **rules}


def parse_declaration(item: object, reserved_ok: bool = False) -> Attribute:
    """A user's declaration (one element of `keel schema add`) as an Attribute."""
    if not isinstance(item, dict):
        raise SchemaError(f"each attribute declaration must be an object, got {item!r}")
    unknown = set(item) - {"attribute", "type", "cardinality", "unique", "fulltext", "doc"}
    if unknown:
        raise SchemaError(f"unknown field(s) {sorted(unknown)} in declaration {item!r}")
    ident = item.get("attribute")
    if not isinstance(ident, str) or not _IDENT.match(ident):
        raise SchemaError(f"attribute name {ident!r} must look like 'namespace/name'")
    if ident.startswith(RESERVED_PREFIXES) and not (reserved_ok and ident.startswith("keel.")):
        raise SchemaError(f"attribute {ident} is in a namespace reserved for keel")
    vtype = item.get("type")
    if vtype not in TYPE_TAGS:
        raise SchemaError(f"{ident}: type must be one of {', '.join(TYPE_TAGS)}, got {vtype!r}")
    cardinality = item.get("cardinality", "one")
    if cardinality not in CARDINALITIES:
        raise SchemaError(f"{ident}: cardinality must be one or many, got {cardinality!r}")
    unique = item.get("unique")
    if unique not in UNIQUENESS:
        raise SchemaError(f"{ident}: unique must be null, identity or value, got {unique!r}")
    fulltext = item.get("fulltext", False)
    doc = item.get("doc", "")
    if not isinstance(fulltext, bool) or not isinstance(doc, str):
        raise SchemaError(f"{ident}: fulltext must be a boolean and doc a string")
    if fulltext and vtype != "string":
        raise SchemaError(f"{ident}: only string attributes can be full-text indexed")
    if unique and cardinality == "many":
        raise SchemaError(f"{ident}: a unique attribute must have cardinality one")
    return Attribute(ident, vtype, cardinality, unique, fulltext, doc)


def check_change(old: Attribute, new: Attribute) -> None:
    """Refuse a change that would make stored data invalid (forward-only schema)."""
    if old.type != new.type:
        raise SchemaError(f"{old.ident} is {old.type}; a declared type cannot change")
    if old.unique != new.unique:
        raise SchemaError(f"{old.ident}: uniqueness cannot change once declared")
    if old.many and not new.many:
        raise SchemaError(f"{old.ident}: cardinality can widen to many but never narrow to one")


def declaration_facts(attr: Attribute, old: Attribute | None) -> list[tuple[str, object]]:
    """The (db/attribute, value) facts that bring the ledger from `old` to `attr`."""
    facts = [
        ("db/ident", attr.ident),
        ("db/type", attr.type),
        ("db/cardinality", attr.cardinality),
        ("db/fulltext", attr.fulltext),
        ("db/doc", attr.doc),
    ]
    if attr.unique:
        facts.append(("db/unique", attr.unique))
    if old is None:
        return facts
    current = {f: v for f, v in declaration_facts(old, None)}
    return [(f, v) for f, v in facts if current.get(f) != v]


def fold_schema(rows: dict[str, dict[str, object]]) -> dict[str, Attribute]:
    """Build Attributes from the current db/* values of each `attr:` entity."""
    out: dict[str, Attribute] = {}
    for values in rows.values():
        ident = values.get("db/ident")
        if not isinstance(ident, str):
            continue
        base = Attribute(ident, str(values.get("db/type", "string")))
        out[ident] = replace(
            base,
            cardinality=str(values.get("db/cardinality", "one")),
            unique=values.get("db/unique"),  # type: ignore[arg-type]
            fulltext=bool(values.get("db/fulltext", False)),
            doc=str(values.get("db/doc", "")),
        )
    return out
