"""The ledger format's test vectors (tests/ledger/vectors/ledger-vectors.json), checked two ways.

1. Independently: the encodings are re-implemented below from docs/ledger-format.md with
   struct, hashlib, json and cryptography only -- nothing from keel -- and must reproduce
   every byte in the committed vectors.
2. Against keel: keel.ledger.values / encoding / merkle / signing must produce the same
   bytes, keel must verify and import the vectors' export, and the generator must still
   reproduce the committed file.

So any change to the format breaks this test; regenerate the vectors only on purpose.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VECTORS_DIR = Path(__file__).parent / "vectors"
VECTORS = json.loads((VECTORS_DIR / "ledger-vectors.json").read_text(encoding="utf-8"))
DATOMS = VECTORS["datoms"]
TXS = VECTORS["transactions"]
ALL_DATOMS = DATOMS + [d for tx in TXS for d in tx["datoms"]]


# -- an independent implementation, from docs/ledger-format.md ----------------------------

DATOM_DOMAIN = b"keel.datom.v1\x00"
TX_DOMAIN = b"keel.tx.v1\x00"
CHECKPOINT_DOMAIN = b"keel.checkpoint.v1\x00"
TAGS = {"string": 1, "int": 2, "float": 3, "bool": 4, "instant": 5, "ref": 6, "json": 7, "bytes": 8}
FOREVER, SINCE_ALWAYS = 2**63 - 1, -(2**63)
INLINE_LIMIT = 1024
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def lp(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def instant_us(value: str | int) -> int:
    if isinstance(value, int):
        return value
    dt = datetime.fromisoformat(value)
    return (dt - EPOCH) // timedelta(microseconds=1)


def canonical_value(vtype: str, value) -> bytes:
    if vtype in ("string", "ref"):
        return value.encode("utf-8")
    if vtype == "int":
        return struct.pack(">q", value)
    if vtype == "instant":
        return struct.pack(">q", instant_us(value))
    if vtype == "float":
        return struct.pack(">d", float(value))
    if vtype == "bool":
        return b"\x01" if value else b"\x00"
    if vtype == "json":
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    if vtype == "bytes":
        return base64.b64decode(value, validate=True)
    raise AssertionError(vtype)


def value_digest(salt: bytes, tag: int, canonical: bytes) -> bytes:
    return sha256(salt + bytes([tag]) + canonical)


def datom_bytes(e: str, a: str, op: int, tag: int, vdigest: bytes, vf: int, vt: int) -> bytes:
    assert len(vdigest) == 32
    return (
        DATOM_DOMAIN
        + lp(e)
        + lp(a)
        + struct.pack(">BB", op, tag)
        + vdigest
        + struct.pack(">qq", vf, vt)
    )


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, recursively."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 section 2.1.3.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 section 2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], b), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def tx_bytes(tx: dict, root: bytes) -> bytes:
    key, prev = bytes.fromhex(tx["key"]), bytes.fromhex(tx["prev"])
    assert len(key) == 32 and len(prev) == 32 and len(root) == 32
    return b"".join(
        (
            TX_DOMAIN,
            struct.pack(">Q", tx["tx"]),
            prev,
            lp(tx["branch"]),
            struct.pack(">q", tx["time"]),
            lp(tx["author"]),
            key,
            lp(tx["reason"]),
            struct.pack(">I", len(tx["datoms"])),
            root,
        )
    )


def checkpoint_bytes(size: int, root: bytes, time_us: int) -> bytes:
    return CHECKPOINT_DOMAIN + struct.pack(">Q", size) + root + struct.pack(">q", time_us)


def raw_public_key(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ids(items: list[dict]) -> list[str]:
    return [d["label"] for d in items]


# -- the vectors, independently --------------------------------------------------------


def test_constants():
    c = VECTORS["constants"]
    assert bytes.fromhex(c["datom_domain"]) == DATOM_DOMAIN
    assert bytes.fromhex(c["tx_domain"]) == TX_DOMAIN
    assert bytes.fromhex(c["checkpoint_domain"]) == CHECKPOINT_DOMAIN
    assert bytes.fromhex(c["zero_hash"]) == bytes(32)
    assert bytes.fromhex(c["empty_tree_root"]) == sha256(b"")
    assert (c["forever"], c["since_always"]) == (FOREVER, SINCE_ALWAYS)
    assert c["inline_limit"] == INLINE_LIMIT
    assert c["type_tags"] == TAGS


def test_every_type_has_several_vectors():
    for vtype in TAGS:
        assert sum(d["type"] == vtype for d in DATOMS) >= 2, vtype
    assert {d["op"] for d in DATOMS} == {0, 1}
    assert any(d["big"] for d in DATOMS) and any(not d["big"] for d in DATOMS)


def test_key_from_seed():
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["key"]["seed"]))
    assert raw_public_key(private).hex() == VECTORS["key"]["public_key"]


@pytest.mark.parametrize("d", ALL_DATOMS, ids=ids(ALL_DATOMS))
def test_datom_independently(d):
    canonical = canonical_value(d["type"], d["value"])
    assert canonical.hex() == d["canonical_value"]
    assert d["tag"] == TAGS[d["type"]]
    assert d["big"] == (len(canonical) > INLINE_LIMIT)
    stored = sha256(canonical) if d["big"] else canonical
    assert stored.hex() == d["stored_value"]
    salt = bytes.fromhex(d["salt"])
    assert len(salt) == 16
    vdigest = value_digest(salt, d["tag"], canonical)
    assert vdigest.hex() == d["value_digest"]
    raw = datom_bytes(d["e"], d["a"], d["op"], d["tag"], vdigest, d["valid_from"], d["valid_to"])
    assert raw.hex() == d["datom_bytes"]
    assert sha256(raw).hex() == d["datom_hash"]


def test_datom_byte_layout_by_hand():
    """One datom spelled out field by field, so the layout itself is pinned."""
    d = next(x for x in DATOMS if x["label"] == "string-ascii")
    raw = bytes.fromhex(d["datom_bytes"])
    e, a = d["e"].encode(), d["a"].encode()
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return raw[pos - n : pos]

    assert take(14) == b"keel.datom.v1\x00"
    assert int.from_bytes(take(4), "big") == len(e) and take(len(e)) == e
    assert int.from_bytes(take(4), "big") == len(a) and take(len(a)) == a
    assert take(1) == b"\x01" and take(1) == b"\x01"  # assert, string
    assert take(32).hex() == d["value_digest"]
    assert int.from_bytes(take(8), "big", signed=True) == d["valid_from"]
    assert int.from_bytes(take(8), "big", signed=True) == d["valid_to"]
    assert pos == len(raw)


@pytest.mark.parametrize("tx", TXS, ids=[f"tx{t['tx']}" for t in TXS])
def test_transaction_independently(tx):
    hashes = [bytes.fromhex(d["datom_hash"]) for d in tx["datoms"]]
    root = mth(hashes)
    assert root.hex() == tx["datoms_root"]
    assert tx["n"] == len(hashes)
    raw = tx_bytes(tx, root)
    assert raw.hex() == tx["tx_bytes"]
    txh = sha256(raw)
    assert txh.hex() == tx["tx_hash"]
    # Ed25519 is deterministic: the fixed seed gives exactly this signature over the hash.
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["key"]["seed"]))
    assert private.sign(txh).hex() == tx["signature"]
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(tx["key"])).verify(
        bytes.fromhex(tx["signature"]), txh
    )


def test_chain_rules():
    """Genesis links to 32 zero bytes, ids run 1..n, time never decreases, keys registered."""
    prev, last_time, keys = bytes(32), SINCE_ALWAYS, {}
    branches = {0: "main"}
    for number, tx in enumerate(TXS, start=1):
        assert tx["tx"] == number
        assert bytes.fromhex(tx["prev"]) == prev
        assert tx["time"] >= last_time
        assert branches.get(tx["branch_id"]) == tx["branch"]
        registered = keys.get(tx["author"], set())
        if number > 1:
            assert tx["key"] in registered
        ids_seen = {}
        for d in tx["datoms"]:
            if d["a"] == "keel.identity/key":
                owner = d["e"].removeprefix("identity:")
                key = bytes.fromhex(d["canonical_value"]).hex()
                (keys.setdefault(owner, set()).add if d["op"] == 1 else keys[owner].discard)(key)
            if d["a"] == "keel.branch/id":
                ids_seen[d["e"]] = d["value"]
        for d in tx["datoms"]:
            if d["a"] == "keel.branch/name":
                branches[ids_seen[d["e"]]] = d["value"]
        if number == 1:
            assert tx["key"] in keys[tx["author"]]
        prev, last_time = bytes.fromhex(tx["tx_hash"]), tx["time"]


def test_merkle_log_and_checkpoint_independently():
    leaves = [bytes.fromhex(tx["tx_hash"]) for tx in TXS]
    log = VECTORS["merkle_log"]
    assert log["leaves"] == [x.hex() for x in leaves]
    for n, root in log["roots"].items():
        assert mth(leaves[: int(n)]).hex() == root
    for p in log["inclusion"]:
        assert [x.hex() for x in path(p["index"], leaves[: p["size"]])] == p["path"]
    for p in log["consistency"]:
        m, n = p["old_size"], p["new_size"]
        expected = [] if m == n else subproof(m, leaves[:n], True)
        assert [x.hex() for x in expected] == p["proof"]

    cp = VECTORS["checkpoint"]
    assert cp["size"] == len(leaves)
    assert cp["root"] == mth(leaves).hex()
    raw = checkpoint_bytes(cp["size"], bytes.fromhex(cp["root"]), cp["time"])
    assert raw.hex() == cp["checkpoint_bytes"]
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["key"]["seed"]))
    assert private.sign(raw).hex() == cp["signature"]  # signed directly, not hashed first


def test_export_lines_independently():
    lines = [json.loads(x) for x in VECTORS["export"]]
    assert lines[0] == {"keel": "ledger-export", "version": 1}
    assert [x["tx"] for x in lines[1:-1]] == [tx["tx"] for tx in TXS]
    for line, tx in zip(lines[1:-1], TXS, strict=True):
        assert line["hash"] == tx["tx_hash"] and line["sig"] == tx["signature"]
        assert line["root"] == tx["datoms_root"]
        for xd, d in zip(line["datoms"], tx["datoms"], strict=True):
            value = base64.b64decode(xd["v"])
            digest = value_digest(base64.b64decode(xd["salt"]), xd["type"], value)
            assert digest.hex() == xd["vdigest"] == d["value_digest"]
    assert lines[-1]["checkpoint"]["sig"] == VECTORS["checkpoint"]["signature"]
    for text in VECTORS["export"]:
        assert text == json.dumps(json.loads(text), separators=(",", ":"))


# -- keel's own code must agree ------------------------------------------------------------


@pytest.mark.parametrize("d", ALL_DATOMS, ids=ids(ALL_DATOMS))
def test_datom_with_keel(d):
    from keel.ledger import encoding, values

    tag = values.TYPE_TAGS[d["type"]]
    canonical = values.encode(tag, values.coerce(d["type"], d["value"], d["a"]))
    assert canonical.hex() == d["canonical_value"]
    assert values.decode(tag, canonical) == values.coerce(d["type"], d["value"], d["a"])
    vdigest = values.value_digest(bytes.fromhex(d["salt"]), tag, canonical)
    assert vdigest.hex() == d["value_digest"]
    args = (d["e"], d["a"], d["op"], tag, vdigest, d["valid_from"], d["valid_to"])
    assert encoding.datom_bytes(*args).hex() == d["datom_bytes"]
    assert encoding.datom_hash(*args).hex() == d["datom_hash"]


@pytest.mark.parametrize("tx", TXS, ids=[f"tx{t['tx']}" for t in TXS])
def test_transaction_with_keel(tx):
    from keel.ledger import encoding, merkle
    from keel.ledger.signing import Signer, verify_signature

    root = merkle.root_of([bytes.fromhex(d["datom_hash"]) for d in tx["datoms"]])
    assert root.hex() == tx["datoms_root"]
    fields = (
        tx["tx"],
        bytes.fromhex(tx["prev"]),
        tx["branch"],
        tx["time"],
        tx["author"],
        bytes.fromhex(tx["key"]),
        tx["reason"],
        tx["n"],
        root,
    )
    assert encoding.tx_bytes(*fields).hex() == tx["tx_bytes"]
    txh = encoding.tx_hash(*fields)
    assert txh.hex() == tx["tx_hash"]
    signer = Signer(
        tx["author"], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["key"]["seed"]))
    )
    assert signer.public_key.hex() == tx["key"]
    assert signer.sign(txh).hex() == tx["signature"]
    assert verify_signature(signer.public_key, bytes.fromhex(tx["signature"]), txh)


def test_merkle_log_and_checkpoint_with_keel():
    from keel.ledger import encoding, merkle

    log = merkle.MerkleLog()
    for h in VECTORS["merkle_log"]["leaves"]:
        log.append(bytes.fromhex(h))
    for n, root in VECTORS["merkle_log"]["roots"].items():
        assert log.root(int(n)).hex() == root
    for p in VECTORS["merkle_log"]["inclusion"]:
        proof = log.inclusion_proof(p["index"], p["size"])
        assert [x.hex() for x in proof] == p["path"]
        leaf = bytes.fromhex(VECTORS["merkle_log"]["leaves"][p["index"]])
        assert merkle.verify_inclusion(leaf, p["index"], p["size"], proof, log.root(p["size"]))
    for p in VECTORS["merkle_log"]["consistency"]:
        m, n = p["old_size"], p["new_size"]
        proof = log.consistency_proof(m, n)
        assert [x.hex() for x in proof] == p["proof"]
        assert merkle.verify_consistency(m, n, log.root(m), log.root(n), proof)
    cp = VECTORS["checkpoint"]
    raw = encoding.checkpoint_bytes(cp["size"], bytes.fromhex(cp["root"]), cp["time"])
    assert raw.hex() == cp["checkpoint_bytes"]


def test_keel_verifies_imports_and_reexports_the_vectors(tmp_path):
    """The vectors are a valid ledger: keel imports their export, verifies it, and writes
    the identical export back."""
    import io

    from keel.ledger import Ledger

    export = tmp_path / "vectors.jsonl"
    export.write_text("".join(line + "\n" for line in VECTORS["export"]))
    ledger = Ledger.open(str(tmp_path / "keel.db"))
    try:
        assert ledger.import_file(export) == len(TXS)
        report = ledger.verify()
        assert report.ok, report.problem
        assert report.transactions == len(TXS)
        assert report.checkpoints == 1
        assert report.root == VECTORS["checkpoint"]["root"]
        out = io.StringIO()
        ledger.export(out)
        assert out.getvalue().splitlines() == VECTORS["export"]
        # The big value went to the blob store, under the SHA-256 of its canonical bytes.
        photo = next(d for d in TXS[2]["datoms"] if d["big"])
        blob = ledger.store.get_blob(bytes.fromhex(photo["stored_value"]))
        assert blob is not None and blob.hex() == photo["canonical_value"]
        # And the branch registered in tx 4 reads as a branch.
        assert [b.name for b in ledger.branches()] == ["what-if"]
    finally:
        ledger.close()


def test_generator_reproduces_the_committed_file():
    spec = importlib.util.spec_from_file_location(
        "keel_vectors_generate", VECTORS_DIR / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (VECTORS_DIR / "ledger-vectors.json").read_text(encoding="utf-8")
    assert module.render() == committed, "run: uv run python tests/ledger/vectors/generate.py"
