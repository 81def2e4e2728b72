"""Generate tests/ledger/vectors/ledger-vectors.json: test vectors for docs/ledger-format.md.

Everything here is fixed, so the output is byte-for-byte reproducible:

- the Ed25519 private key is the 32-byte seed 00 01 02 ... 1f (Ed25519 signatures are
  deterministic, so the signatures are fixed too);
- every salt is the first 16 bytes of SHA-256("keel-vectors/salt/" + label), where the
  label names the datom (the salt's hex is written into the file beside it);
- every time is a constant below.

The values are computed with keel's own encoding functions (keel.ledger.values,
keel.ledger.encoding, keel.ledger.merkle); tests/ledger/test_vectors.py checks them against an
independent implementation written from the specification, and checks that this script
still reproduces the committed file.

Usage (from the repository root):

    uv run python tests/ledger/vectors/generate.py          # rewrite the JSON file
    uv run python tests/ledger/vectors/generate.py --check  # exit 1 if the file is out of date

Only regenerate on purpose: a changed file means the ledger format changed, and every
existing ledger and every independent verifier breaks with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keel.ledger import encoding, merkle, values
from keel.ledger.instants import FOREVER, SINCE_ALWAYS
from keel.ledger.schema import SCHEMA_ATTRS
from keel.ledger.signing import public_bytes
from keel.ledger.stores.base import INLINE_LIMIT

OUT = Path(__file__).with_name("ledger-vectors.json")

SEED = bytes(range(32))
AUTHOR = "operator"

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
SECOND = 1_000_000
ALICE = "01JV3Z8K5M2Q7R9T4W6X8Y0A1B"
DENVER_FROM = 1_556_668_800_000_000  # 2019-05-01T00:00:00Z
DENVER_TO = 1_722_470_400_000_000  # 2024-08-01T00:00:00Z

PRIVATE_KEY = Ed25519PrivateKey.from_private_bytes(SEED)
PUBLIC_KEY = public_bytes(PRIVATE_KEY)
B64_PUBLIC_KEY = base64.b64encode(PUBLIC_KEY).decode("ascii")

# A value big enough to live in the blob store (canonical bytes > INLINE_LIMIT).
PHOTO = bytes((i * 7 + 3) % 256 for i in range(1500))
B64_PHOTO = base64.b64encode(PHOTO).decode("ascii")

# -- single datoms, several of each value type -------------------------------------------
# (label, e, a, op, type, value as JSON input, valid_from, valid_to)
DATOMS: list[tuple[str, str, str, int, str, Any, int, int]] = [
    ("string-empty", "e1", "note/text", 1, "string", "", T0, FOREVER),
    ("string-ascii", ALICE, "person/city", 1, "string", "Denver", DENVER_FROM, DENVER_TO),
    ("string-unicode", "e1", "note/text", 1, "string", "Zürich — 東京 🚀", T0, FOREVER),
    ("string-retract", ALICE, "person/city", 0, "string", "Denver", SINCE_ALWAYS, FOREVER),
    ("string-big", "e2", "note/text", 1, "string", "keel " * 300, T0, FOREVER),
    ("int-zero", "e1", "item/count", 1, "int", 0, T0, FOREVER),
    ("int-negative", "e1", "item/count", 1, "int", -1, T0, FOREVER),
    ("int-max", "e1", "item/count", 1, "int", 2**63 - 1, T0, FOREVER),
    ("int-min", "e1", "item/count", 0, "int", -(2**63), T0, T0 + SECOND),
    ("float-zero", "e1", "item/weight", 1, "float", 0.0, T0, FOREVER),
    ("float-negative-zero", "e1", "item/weight", 1, "float", -0.0, T0, FOREVER),
    ("float-fraction", "e1", "item/weight", 1, "float", 1.5, T0, FOREVER),
    ("float-pi", "e1", "item/weight", 1, "float", 3.141592653589793, T0, FOREVER),
    ("float-tiny", "e1", "item/weight", 1, "float", -2.5e-300, T0, FOREVER),
    ("float-from-integer", "e1", "item/weight", 1, "float", 7, T0, FOREVER),
    ("bool-true", "e1", "item/done", 1, "bool", True, T0, FOREVER),
    ("bool-false", "e1", "item/done", 1, "bool", False, SINCE_ALWAYS, FOREVER),
    ("instant-iso", "e1", "task/due", 1, "instant", "2019-05-01T00:00:00Z", T0, FOREVER),
    ("instant-offset", "e1", "task/due", 1, "instant", "2026-05-01T09:30:00+02:00", T0, FOREVER),
    ("instant-before-epoch", "e1", "task/due", 1, "instant", "1969-12-31T23:59:59.999999Z", T0,
     FOREVER),
    ("instant-integer", "e1", "task/due", 1, "instant", 0, T0, FOREVER),
    ("ref-ulid", "task-17", "task/owner", 1, "ref", ALICE, T0, FOREVER),
    ("ref-identity", "task-17", "task/owner", 1, "ref", "identity:operator", T0, FOREVER),
    ("json-object", "e1", "item/meta", 1, "json",
     {"b": [1, 2.5, None, True], "a": "é", "B": {"z": 1e16, "y": -0.0}, "é": "\u001f\u2028"},
     T0, FOREVER),
    ("json-array", "e1", "item/meta", 1, "json", [], T0, FOREVER),
    ("json-string", "e1", "item/meta", 1, "json", "text", T0, FOREVER),
    ("json-number", "e1", "item/meta", 1, "json", 12, T0, FOREVER),
    ("bytes-empty", "e1", "item/blob", 1, "bytes", "", T0, FOREVER),
    ("bytes-short", "e1", "item/blob", 1, "bytes", "AAEC/w==", T0, FOREVER),
    ("bytes-public-key", "identity:operator", "keel.identity/key", 1, "bytes", B64_PUBLIC_KEY,
     T0, FOREVER),
    ("bytes-big", "e1", "item/blob", 1, "bytes", B64_PHOTO, T0, FOREVER),
]  # fmt: skip

# -- a small chain of transactions --------------------------------------------------------
# Each: (time, branch name, branch id, reason, [(e, a, op, type, value, valid_from, valid_to)])
# valid_from None means "the transaction's time" (keel's default).
TXS: list[tuple[int, str, int, str, list[tuple]]] = [
    (
        T0,
        "main",
        0,
        "register identity operator",
        [
            ("identity:operator", "keel.identity/name", 1, "string", "operator", None, FOREVER),
            ("identity:operator", "keel.identity/key", 1, "bytes", B64_PUBLIC_KEY, None, FOREVER),
            ("identity:operator", "keel.identity/role", 1, "string", "operator", None, FOREVER),
        ],
    ),
    (
        T0 + SECOND,
        "main",
        0,
        "declare attributes",
        [
            ("attr:person/handle", "db/ident", 1, "string", "person/handle", None, FOREVER),
            ("attr:person/handle", "db/type", 1, "string", "string", None, FOREVER),
            ("attr:person/handle", "db/cardinality", 1, "string", "one", None, FOREVER),
            ("attr:person/handle", "db/fulltext", 1, "bool", False, None, FOREVER),
            ("attr:person/handle", "db/doc", 1, "string", "short name", None, FOREVER),
            ("attr:person/handle", "db/unique", 1, "string", "identity", None, FOREVER),
            ("attr:person/city", "db/ident", 1, "string", "person/city", None, FOREVER),
            ("attr:person/city", "db/type", 1, "string", "string", None, FOREVER),
            ("attr:person/city", "db/cardinality", 1, "string", "one", None, FOREVER),
            ("attr:person/city", "db/fulltext", 1, "bool", False, None, FOREVER),
            ("attr:person/city", "db/doc", 1, "string", "", None, FOREVER),
            ("attr:person/photo", "db/ident", 1, "string", "person/photo", None, FOREVER),
            ("attr:person/photo", "db/type", 1, "string", "bytes", None, FOREVER),
            ("attr:person/photo", "db/cardinality", 1, "string", "one", None, FOREVER),
            ("attr:person/photo", "db/fulltext", 1, "bool", False, None, FOREVER),
            ("attr:person/photo", "db/doc", 1, "string", "", None, FOREVER),
        ],
    ),
    (
        T0 + 2 * SECOND,
        "main",
        0,
        "Alice moved",
        [
            (ALICE, "person/handle", 1, "string", "alice", None, FOREVER),
            (ALICE, "person/city", 1, "string", "Denver", DENVER_FROM, DENVER_TO),
            (ALICE, "person/city", 1, "string", "Boulder", DENVER_TO, FOREVER),
            (ALICE, "person/photo", 1, "bytes", B64_PHOTO, None, FOREVER),
        ],
    ),
    (
        T0 + 3 * SECOND,
        "main",
        0,
        "create branch what-if",
        [
            ("branch:what-if", "keel.branch/name", 1, "string", "what-if", None, FOREVER),
            ("branch:what-if", "keel.branch/id", 1, "int", 1, None, FOREVER),
            ("branch:what-if", "keel.branch/parent", 1, "int", 0, None, FOREVER),
            ("branch:what-if", "keel.branch/base", 1, "int", 3, None, FOREVER),
            ("branch:what-if", "keel.branch/state", 1, "string", "open", None, FOREVER),
        ],
    ),
    (
        T0 + 3 * SECOND,  # the same time as the transaction before: time never decreases
        "what-if",
        1,
        "what if Alice had moved to Austin",
        [
            (ALICE, "person/city", 0, "string", "Boulder", DENVER_TO, FOREVER),
            (ALICE, "person/city", 1, "string", "Austin", DENVER_TO, FOREVER),
        ],
    ),
]
CHECKPOINT_TIME = T0 + 10 * SECOND


def salt_for(label: str) -> bytes:
    return hashlib.sha256(b"keel-vectors/salt/" + label.encode()).digest()[:16]


def datom_vector(
    label: str, e: str, a: str, op: int, vtype: str, value: Any, vf: int, vt: int
) -> dict:
    tag = values.TYPE_TAGS[vtype]
    canonical = values.encode(tag, values.coerce(vtype, value, a))
    salt = salt_for(label)
    vdigest = values.value_digest(salt, tag, canonical)
    big = len(canonical) > INLINE_LIMIT
    stored = hashlib.sha256(canonical).digest() if big else canonical
    raw = encoding.datom_bytes(e, a, op, tag, vdigest, vf, vt)
    return {
        "label": label,
        "e": e,
        "a": a,
        "op": op,
        "type": vtype,
        "tag": tag,
        "value": value,
        "salt": salt.hex(),
        "valid_from": vf,
        "valid_to": vt,
        "canonical_value": canonical.hex(),
        "value_digest": vdigest.hex(),
        "big": big,
        "stored_value": stored.hex(),
        "datom_bytes": raw.hex(),
        "datom_hash": encoding.datom_hash(e, a, op, tag, vdigest, vf, vt).hex(),
    }


def build() -> dict:
    datoms = [datom_vector(*row) for row in DATOMS]

    txs, prev, tx_hashes = [], encoding.ZERO_HASH, []
    for seq, (time_us, branch, branch_id, reason, rows) in enumerate(TXS, start=1):
        tx_datoms = [
            datom_vector(f"tx{seq}/{i}", e, a, op, vtype, value, time_us if vf is None else vf, vt)
            for i, (e, a, op, vtype, value, vf, vt) in enumerate(rows)
        ]
        hashes = [bytes.fromhex(d["datom_hash"]) for d in tx_datoms]
        root = merkle.root_of(hashes)
        fields = (seq, prev, branch, time_us, AUTHOR, PUBLIC_KEY, reason, len(hashes), root)
        raw = encoding.tx_bytes(*fields)
        txh = encoding.tx_hash(*fields)
        txs.append(
            {
                "tx": seq,
                "prev": prev.hex(),
                "branch": branch,
                "branch_id": branch_id,
                "time": time_us,
                "author": AUTHOR,
                "key": PUBLIC_KEY.hex(),
                "reason": reason,
                "n": len(hashes),
                "schema": int(any(d["a"] in SCHEMA_ATTRS for d in tx_datoms)),
                "datoms": tx_datoms,
                "datoms_root": root.hex(),
                "tx_bytes": raw.hex(),
                "tx_hash": txh.hex(),
                "signature": PRIVATE_KEY.sign(txh).hex(),
            }
        )
        prev = txh
        tx_hashes.append(txh)

    log = merkle.MerkleLog()
    for h in tx_hashes:
        log.append(h)
    size = log.size
    cp_raw = encoding.checkpoint_bytes(size, log.root(), CHECKPOINT_TIME)
    checkpoint = {
        "size": size,
        "root": log.root().hex(),
        "time": CHECKPOINT_TIME,
        "key": PUBLIC_KEY.hex(),
        "checkpoint_bytes": cp_raw.hex(),
        "signature": PRIVATE_KEY.sign(cp_raw).hex(),
    }
    merkle_log = {
        "leaves": [h.hex() for h in tx_hashes],
        "roots": {str(n): log.root(n).hex() for n in range(size + 1)},
        "inclusion": [
            {"index": i, "size": n, "path": [p.hex() for p in log.inclusion_proof(i, n)]}
            for n in range(1, size + 1)
            for i in range(n)
        ],
        "consistency": [
            {"old_size": m, "new_size": n, "proof": [p.hex() for p in log.consistency_proof(m, n)]}
            for n in range(1, size + 1)
            for m in range(1, n + 1)
        ],
    }
    return {
        "description": (
            "Test vectors for docs/ledger-format.md, generated by "
            "tests/ledger/vectors/generate.py. Byte strings are lowercase hex; 'value' is the "
            "value as a transaction gives it in JSON (instants as ISO 8601 or integer "
            "microseconds, bytes as base64)."
        ),
        "constants": {
            "datom_domain": encoding.DATOM_DOMAIN.hex(),
            "tx_domain": encoding.TX_DOMAIN.hex(),
            "checkpoint_domain": encoding.CHECKPOINT_DOMAIN.hex(),
            "zero_hash": encoding.ZERO_HASH.hex(),
            "empty_tree_root": merkle.EMPTY_ROOT.hex(),
            "forever": FOREVER,
            "since_always": SINCE_ALWAYS,
            "inline_limit": INLINE_LIMIT,
            "type_tags": dict(values.TYPE_TAGS),
        },
        "key": {
            "seed": SEED.hex(),
            "public_key": PUBLIC_KEY.hex(),
            "salt_rule": 'salt = SHA-256("keel-vectors/salt/" + label)[:16]',
        },
        "datoms": datoms,
        "transactions": txs,
        "merkle_log": merkle_log,
        "checkpoint": checkpoint,
        "export": export_lines(txs, checkpoint),
    }


def export_lines(txs: list[dict], checkpoint: dict) -> list[str]:
    """The JSONL export of this chain, as keel writes it (one string per line)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    lines: list[dict] = [{"keel": "ledger-export", "version": 1}]
    for tx in txs:
        lines.append(
            {
                "tx": tx["tx"],
                "hash": tx["tx_hash"],
                "prev": tx["prev"],
                "branch": tx["branch"],
                "branch_id": tx["branch_id"],
                "time": tx["time"],
                "author": tx["author"],
                "key": tx["key"],
                "reason": tx["reason"],
                "root": tx["datoms_root"],
                "sig": tx["signature"],
                "schema": tx["schema"],
                "datoms": [
                    {
                        "e": d["e"],
                        "a": d["a"],
                        "op": d["op"],
                        "type": d["tag"],
                        "v": b64(bytes.fromhex(d["canonical_value"])),
                        "salt": b64(bytes.fromhex(d["salt"])),
                        "vdigest": d["value_digest"],
                        "valid_from": d["valid_from"],
                        "valid_to": d["valid_to"],
                    }
                    for d in tx["datoms"]
                ],
            }
        )
    lines.append(
        {
            "checkpoint": {k: checkpoint[k] for k in ("size", "root", "time", "key")}
            | {"sig": checkpoint["signature"]}
        }
    )
    return [json.dumps(line, separators=(",", ":")) for line in lines]


def render() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date with keel's encoding", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
