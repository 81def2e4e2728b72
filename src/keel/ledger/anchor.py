"""Where an incremental verify may start: the newest checkpoint that can be trusted.

A checkpoint is trusted when its root equals the Merkle root recomputed from the stored
transaction hashes 1..size (the hash column alone: cheap) and its signature is valid by a
key registered within those transactions. Then transactions 1..size need not be
recomputed: the Sequencer is primed as if it had just checked them (the last hash and
time, the keys and branches registered so far, the Merkle log), and every transaction
after them gets every check.

What the prefix trusts is its hash column, which the signed root pins down; its other
columns (the key and branch datoms that prime the Sequencer, the last time) are read, not
recomputed. A full verify recomputes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import encoding, merkle, values
from .checks import Sequencer
from .encoding import ASSERT
from .signing import verify_signature
from .stores import Store
from .stores.rows import CheckpointRow, EntityFact

_BRANCH_ATTRS = ("keel.branch/id", "keel.branch/name")


@dataclass(frozen=True)
class Anchor:
    """A trusted checkpoint, and the sequencer state just before its last transaction."""

    checkpoint: CheckpointRow
    sequencer: Sequencer


def newest_anchor(store: Store, size: int) -> Anchor | None:
    """The newest trustworthy checkpoint covering at most `size` transactions, if any."""
    candidates = sorted(
        (cp for cp in store.checkpoints() if 0 < cp.size <= size),
        key=lambda cp: (cp.size, cp.time),
        reverse=True,
    )
    if not candidates:
        return None
    hashes = store.tx_hashes(upto=candidates[0].size)
    log = merkle.MerkleLog()
    for digest in hashes:
        log.append(digest)
    key_datoms = store.attr_datoms(("keel.identity/key",), [(0, candidates[0].size)])
    for cp in candidates:
        if cp.size > log.size or log.root(cp.size) != cp.root:
            continue
        registered = {
            bytes(d.v) for d in key_datoms if d.tx <= cp.size and d.op == ASSERT and d.v is not None
        }
        signed = encoding.checkpoint_bytes(cp.size, cp.root, cp.time)
        if cp.key in registered and verify_signature(cp.key, cp.sig, signed):
            if log.size != cp.size:  # an older checkpoint: the log must end where it does
                log = merkle.MerkleLog()
                for digest in hashes[: cp.size]:
                    log.append(digest)
            return Anchor(cp, _primed(store, log, hashes[cp.size - 1], key_datoms))
    return None


def _primed(
    store: Store, log: merkle.MerkleLog, last_hash: bytes, key_datoms: list[EntityFact]
) -> Sequencer:
    """A Sequencer in the state it would reach after checking the transactions `log`
    covers, 1..done."""
    done = log.size
    seq = Sequencer()
    seq.expected_id = done + 1
    seq.prev = last_hash
    seq.log = log
    last_time = store.tx_time(done)
    if last_time is not None:
        seq.time = last_time
    for d in key_datoms:
        if d.tx > done or d.v is None:
            continue
        owned = seq.keys.setdefault(d.e.removeprefix("identity:"), set())
        (owned.add if d.op == ASSERT else owned.discard)(bytes(d.v))
        seq.ever_registered.add(bytes(d.v))
    by_tx: dict[int, list[EntityFact]] = {}
    for d in store.attr_datoms(_BRANCH_ATTRS, None):
        if d.tx <= done:
            by_tx.setdefault(d.tx, []).append(d)
    for datoms in by_tx.values():
        seq.register_branches([(d.e, d.a, v) for d in datoms if (v := _decoded(d)) is not None])
    return seq


def _decoded(d: EntityFact) -> object:
    try:
        return values.decode(d.vtype, bytes(d.v)) if d.v is not None else None
    except (TypeError, ValueError, struct.error):
        return None  # a damaged value in the prefix: that branch is not registered
