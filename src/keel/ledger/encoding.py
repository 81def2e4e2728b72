"""Canonical byte encodings of datoms, transactions and checkpoints, and their hashes.

Specified in docs/ledger-format.md (with test vectors in tests/ledger/vectors/) so that a
verifier can be written in another language. Every variable-length field is prefixed
by its length as a big-endian u32; integers are big-endian, signed where they can be
negative. A datom commits to the *digest* of its value, never the value, so that a
value can later be erased while the chain still verifies.
"""

from __future__ import annotations

import hashlib
import struct

DATOM_DOMAIN = b"keel.datom.v1\x00"
TX_DOMAIN = b"keel.tx.v1\x00"
CHECKPOINT_DOMAIN = b"keel.checkpoint.v1\x00"
ZERO_HASH = bytes(32)

ASSERT, RETRACT = 1, 0

_U32 = struct.Struct(">I")
_sha256 = hashlib.sha256
_DATOM_TAIL = struct.Struct(">BB32sqq")
_TX_HEAD = struct.Struct(">Q32s")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")


def _lp(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def datom_bytes(e: str, a: str, op: int, tag: int, vdigest: bytes, vf: int, vt: int) -> bytes:
    eb, ab = e.encode("utf-8"), a.encode("utf-8")
    return b"".join(
        (
            DATOM_DOMAIN,
            _U32.pack(len(eb)),
            eb,
            _U32.pack(len(ab)),
            ab,
            _DATOM_TAIL.pack(op, tag, vdigest, vf, vt),
        )
    )


def datom_hash(e: str, a: str, op: int, tag: int, vdigest: bytes, vf: int, vt: int) -> bytes:
    return _sha256(datom_bytes(e, a, op, tag, vdigest, vf, vt)).digest()


def tx_bytes(
    seq: int,
    prev: bytes,
    branch: str,
    time_us: int,
    author: str,
    key: bytes,
    reason: str,
    n: int,
    root: bytes,
) -> bytes:
    return b"".join(
        (
            TX_DOMAIN,
            _TX_HEAD.pack(seq, prev),
            _lp(branch),
            _I64.pack(time_us),
            _lp(author),
            key,
            _lp(reason),
            _U32.pack(n),
            root,
        )
    )


def tx_hash(*fields) -> bytes:
    return hashlib.sha256(tx_bytes(*fields)).digest()


def checkpoint_bytes(size: int, root: bytes, time_us: int) -> bytes:
    return CHECKPOINT_DOMAIN + _U64.pack(size) + root + _I64.pack(time_us)
