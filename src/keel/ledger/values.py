"""Value types: how a user's value is checked, encoded canonically, digested and shown.

The canonical bytes of a value are what the ledger stores and what its digest commits to;
see docs/ledger-format.md for the exact rules.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import struct
from datetime import UTC, tzinfo
from typing import Any

from .errors import SchemaError
from .instants import format_instant, parse_instant

TYPE_TAGS: dict[str, int] = {
    "string": 1,
    "int": 2,
    "float": 3,
    "bool": 4,
    "instant": 5,
    "ref": 6,
    "json": 7,
    "bytes": 8,
}
TAG_TYPES = {tag: name for name, tag in TYPE_TAGS.items()}
REF = TYPE_TAGS["ref"]

_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def coerce(vtype: str, raw: Any, attr: str, default_tz: tzinfo = UTC) -> Any:
    """Check a JSON-ish input value against ``vtype`` and return keel's Python form.

    Instants become integer microseconds, bytes accept base64 text. Refs are returned as
    given (the transaction resolves temp ids and lookup refs).
    """

    def wrong(expected: str) -> SchemaError:
        return SchemaError(f"{attr} takes {expected}, got {raw!r}")

    if vtype == "string":
        if not isinstance(raw, str):
            raise wrong("a string")
        check_text(raw, attr)
        return raw
    if vtype == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise wrong("an integer")
        if not _INT_MIN <= raw <= _INT_MAX:
            raise wrong("a 64-bit integer")
        return raw
    if vtype == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise wrong("a number")
        value = float(raw)
        if not math.isfinite(value):
            raise wrong("a finite number")
        return value
    if vtype == "bool":
        if not isinstance(raw, bool):
            raise wrong("true or false")
        return raw
    if vtype == "instant":
        if isinstance(raw, int) and not isinstance(raw, bool):
            if not _INT_MIN <= raw <= _INT_MAX:
                raise wrong("an instant within 64-bit microseconds")
            return raw
        return parse_instant(raw, default_tz)
    if vtype == "ref":
        return raw
    if vtype == "json":
        try:
            encode(TYPE_TAGS["json"], raw)
        except (TypeError, ValueError):
            raise wrong("a JSON value (finite numbers, valid Unicode)") from None
        return raw
    if vtype == "bytes":
        if isinstance(raw, bytes | bytearray):
            return bytes(raw)
        if isinstance(raw, str):
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise wrong("base64 text") from None
        raise wrong("base64 text")
    raise SchemaError(f"unknown value type {vtype!r}")


def check_text(text: str, attr: str) -> None:
    """Refuse text that has no UTF-8 form (a lone surrogate, as JSON input can carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SchemaError(f"{attr} takes valid Unicode text, not lone surrogates") from None


def encode(tag: int, value: Any) -> bytes:
    """Canonical bytes of a coerced value."""
    if tag in (1, 6):
        return value.encode("utf-8")
    if tag in (2, 5):
        return _I64.pack(value)
    if tag == 3:
        return _F64.pack(value)
    if tag == 4:
        return b"\x01" if value else b"\x00"
    if tag == 7:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    if tag == 8:
        return value
    raise ValueError(f"unknown type tag {tag}")


def decode(tag: int, data: bytes) -> Any:
    if tag in (1, 6):
        return data.decode("utf-8")
    if tag in (2, 5):
        return _I64.unpack(data)[0]
    if tag == 3:
        return _F64.unpack(data)[0]
    if tag == 4:
        return data == b"\x01"
    if tag == 7:
        return json.loads(data)
    if tag == 8:
        return bytes(data)
    raise ValueError(f"unknown type tag {tag}")


def to_json(tag: int, value: Any) -> Any:
    """The value as it appears in JSON output (a forgotten value's marker is already JSON)."""
    if value is None or (isinstance(value, dict) and "forgotten" in value):
        return value
    if tag == 5:
        return format_instant(value)
    if tag == 8:
        return base64.b64encode(value).decode("ascii")
    return value


def value_digest(salt: bytes, tag: int, data: bytes) -> bytes:
    """SHA-256(salt || tag || canonical value): what a datom commits to instead of the value."""
    return hashlib.sha256(salt + bytes((tag,)) + data).digest()
