"""Reading entity refs and values written as plain text: command-line arguments and
HTTP query strings, where everything arrives as a string."""

from __future__ import annotations

import json
from typing import Any

from .errors import BadInput
from .ledger import Ledger


def entity_ref(text: str) -> Any:
    """An entity id, or a JSON lookup ref like '["person/handle", "alice"]'."""
    if text.startswith("["):
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise BadInput(f"{text[:80]!r} is neither an entity id nor a JSON lookup ref") from None
    return text


def typed_value(ledger: Ledger, attr: str, text: str) -> Any:
    """`text` read according to the type of `attr` (coercion and checks happen later)."""
    vtype = ledger.attribute(attr).type
    try:
        if vtype == "int":
            return int(text)
        if vtype == "float":
            return float(text)
        if vtype == "bool":
            return {"true": True, "false": False}[text.lower()]
        if vtype == "json":
            return json.loads(text)
    except (ValueError, KeyError, RecursionError):
        raise BadInput(f"{text[:80]!r} is not a valid {vtype} for {attr}") from None
    return entity_ref(text) if vtype == "ref" else text
