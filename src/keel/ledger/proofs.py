"""The Merkle log over every transaction hash, its RFC 9162 proofs, and signed checkpoints.

The log is built from the store's hash column and kept in memory, growing as this process
commits or as it finds that others have (docs/ledger-format.md §7–§8).
"""

from __future__ import annotations

from . import encoding, merkle
from .errors import BadInput
from .instants import format_instant
from .signing import Signer
from .stores import Store
from .stores.rows import CheckpointRow


class MerkleCache:
    """One store's Merkle log, caught up from the hash column on demand."""

    def __init__(self, store: Store):
        self.store = store
        self._log: merkle.MerkleLog | None = None

    def log(self) -> merkle.MerkleLog:
        """The log over every transaction now in the store."""
        head = self.store.head()
        size = head.id if head else 0
        if self._log is None or self._log.size > size:
            self._log = merkle.MerkleLog()
        if self._log.size < size:
            for digest in self.store.tx_hashes(after=self._log.size):
                self._log.append(digest)
        return self._log

    def committed(self, seq: int, tx_hash: bytes) -> None:
        """Follow a commit of this process without reading it back."""
        if self._log is not None and self._log.size == seq - 1:
            self._log.append(tx_hash)

    def forget(self) -> None:
        """Rebuild on next use: history was appended from elsewhere (an import)."""
        self._log = None


def inclusion_proof(log: merkle.MerkleLog, seq: int, leaf: bytes) -> dict:
    return {
        "tx": seq,
        "leaf_index": seq - 1,
        "tree_size": log.size,
        "leaf": leaf.hex(),
        "root": log.root().hex(),
        "path": [p.hex() for p in log.inclusion_proof(seq - 1)],
    }


def consistency_proof(log: merkle.MerkleLog, old_size: int, new_size: int) -> dict:
    if not 0 < old_size <= new_size <= log.size:
        raise BadInput(f"sizes must satisfy 0 < old <= new <= {log.size}")
    return {
        "old_size": old_size,
        "new_size": new_size,
        "old_root": log.root(old_size).hex(),
        "new_root": log.root(new_size).hex(),
        "path": [p.hex() for p in log.consistency_proof(old_size, new_size)],
    }


def sign_checkpoint(log: merkle.MerkleLog, time_us: int, signer: Signer) -> CheckpointRow:
    """(size, root, time) of `log`, signed over its checkpoint bytes."""
    size, root = log.size, log.root()
    sig = signer.sign(encoding.checkpoint_bytes(size, root, time_us))
    return CheckpointRow(size, root, time_us, signer.public_key, sig)


def checkpoint_json(cp: CheckpointRow) -> dict:
    return {
        "size": cp.size,
        "root": cp.root.hex(),
        "time": format_instant(cp.time),
        "key": cp.key.hex(),
        "sig": cp.sig.hex(),
    }
