"""Who signs: identities and their public keys, recorded in the ledger itself.

An identity is the entity `identity:<name>` with a name, a role and one or more Ed25519
public keys (docs/ledger-format.md §6). Keys live in the ledger, so verifying needs no
private key; writing needs the signer's key to be registered on main.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import fold
from .errors import BadInput, NotFound, Refused
from .stores.rows import Fact
from .transactions import Datom

if TYPE_CHECKING:
    from .signing import Signer
    from .view import View

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def identity_entity(name: str) -> str:
    return f"identity:{name}"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(f"{name!r} is not a usable identity name (letters, digits, _ . -)")
    return name


def registration_ops(view: View, name: str, public_key: bytes, role: str) -> list[dict]:
    """The facts that register `public_key` to `name`; none when it already is."""
    e = identity_entity(name)
    current = view.get(e) or {}
    if public_key in current.get("keel.identity/key", []):
        return []
    return [
        {"op": "add", "e": e, "a": "keel.identity/name", "v": name},
        {"op": "add", "e": e, "a": "keel.identity/key", "v": public_key},
        {"op": "add", "e": e, "a": "keel.identity/role", "v": role},
    ]


def check_author(key_datoms: Sequence[Fact], signer: Signer) -> None:
    """Refuse a signer whose key is not currently asserted for its identity on main."""
    keys = fold.fold_many(key_datoms, fold.LATEST)
    if not any(bytes(r.v) == signer.public_key for r in keys if r.v is not None):
        raise Refused(f"identity {signer.name!r} with this key is not registered in the ledger")


def check_genesis(datoms: list[Datom], signer: Signer) -> None:
    """The first transaction must register the key that signs it."""
    registers = any(
        d.e == identity_entity(signer.name)
        and d.a == "keel.identity/key"
        and d.value == signer.public_key
        for d in datoms
    )
    if not registers:
        raise Refused(
            "the first transaction must register the identity that signs it (run 'keel init')"
        )


def revocation_ops(view: View, name: str) -> list[dict]:
    """The facts that revoke every key of `name`: its later writes are refused; what it
    signed before still verifies (a transaction is checked against the keys registered
    when it was written)."""
    e = identity_entity(check_name(name))
    current = view.get(e)
    if not current:
        raise NotFound(f"{name!r} is not an identity registered in this ledger")
    keys = current.get("keel.identity/key", [])
    if not keys:
        raise BadInput(f"{name!r} is already revoked")
    return [{"op": "retract", "e": e, "a": "keel.identity/key", "v": k} for k in keys]


def listing(view: View) -> list[dict]:
    """Every registered identity with its role and keys (hex); a revoked one has none."""
    out = []
    for e in view.find("keel.identity/name"):
        ent = view.get(e) or {}
        out.append(
            {
                "name": ent["keel.identity/name"],
                "role": ent.get("keel.identity/role"),
                "keys": [k.hex() for k in ent.get("keel.identity/key", [])],
            }
        )
    return out
