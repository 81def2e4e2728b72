"""A transaction on its way in: checked datoms, what guards see, and the signed rows.

`seal` turns checked datoms into exactly what the store keeps: salted value digests,
datom hashes, the datoms root, the transaction hash and its signature
(docs/ledger-format.md §3–§6).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import encoding, merkle, values
from .errors import BadInput
from .instants import format_instant
from .schema import SCHEMA_ATTRS, Attribute
from .signing import Signer
from .stores.base import INLINE_LIMIT
from .stores.rows import DatomRow, TxRow

if TYPE_CHECKING:
    from .view import View


@dataclass(slots=True)
class Datom:
    """One prepared datom of a pending transaction (what guards see)."""

    e: str
    a: str
    value: Any
    op: int
    vf: int
    vt: int
    attr: Attribute


@dataclass
class PendingTx:
    """A validated transaction about to be signed and committed."""

    seq: int
    branch: str
    author: str
    reason: str
    time: int
    datoms: list[Datom]
    view: View  # the branch as the transaction found it, for guards that compare


Guard = Callable[[PendingTx], None]


@dataclass
class TxResult:
    tx: int
    hash: str
    time: int
    branch: str
    tempids: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "tx": self.tx,
            "hash": self.hash,
            "time": format_instant(self.time),
            "branch": self.branch,
            "tempids": self.tempids,
        }


@dataclass(frozen=True)
class Sealed:
    """A signed transaction's rows, and the large values they refer to by hash."""

    tx: TxRow
    datoms: list[DatomRow]
    blobs: dict[bytes, bytes]


def seal(pending: PendingTx, branch_id: int, prev: bytes, signer: Signer) -> Sealed:
    """Salt, digest, hash, root, chain and sign `pending`, linked to `prev`."""
    seq = pending.seq
    try:
        rows, hashes, blobs = _datom_rows(seq, branch_id, pending.datoms)
        root = merkle.root_of(hashes)
        txh = encoding.tx_hash(
            seq,
            prev,
            pending.branch,
            pending.time,
            signer.name,
            signer.public_key,
            pending.reason,
            len(rows),
            root,
        )
    except UnicodeEncodeError:
        raise BadInput("entity ids, values and reasons must be valid Unicode") from None
    schema_flag = int(any(d.a in SCHEMA_ATTRS for d in pending.datoms))
    tx = TxRow(
        seq,
        txh,
        prev,
        branch_id,
        pending.time,
        signer.name,
        signer.public_key,
        pending.reason,
        root,
        len(rows),
        signer.sign(txh),
        schema_flag,
    )
    return Sealed(tx, rows, blobs)


def _datom_rows(
    seq: int, branch_id: int, datoms: list[Datom]
) -> tuple[list[DatomRow], list[bytes], dict[bytes, bytes]]:
    salts = os.urandom(16 * len(datoms))
    rows, hashes, blobs = [], [], {}
    datom_hash, value_digest, encode = encoding.datom_hash, values.value_digest, values.encode
    for i, d in enumerate(datoms):
        tag = d.attr.tag
        data = d.value.encode("utf-8") if tag == 1 else encode(tag, d.value)
        salt = salts[16 * i : 16 * i + 16]
        vdigest = value_digest(salt, tag, data)
        stored, big = data, 0
        if len(data) > INLINE_LIMIT:
            stored, big = hashlib.sha256(data).digest(), 1
            blobs[stored] = data
        hashes.append(datom_hash(d.e, d.a, d.op, tag, vdigest, d.vf, d.vt))
        rows.append(
            DatomRow(seq, i, branch_id, d.e, d.a, stored, tag, big, d.op, d.vf, d.vt, salt, vdigest)
        )
    return rows, hashes, blobs
