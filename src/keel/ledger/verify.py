"""Proving history intact: recompute every digest, hash, root, signature and link.

The heavy part (hashing and Ed25519 checks, one transaction at a time) runs in worker
processes over ranges of transactions; the sequential part (the chain, which keys were
registered when, the branch registry, checkpoints) runs in the parent on their results.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import encoding, merkle, values
from .encoding import ASSERT
from .schema import SCHEMA_ATTRS
from .signing import verify_signature
from .stores import Store, open_store

CHUNK = 4000
PARALLEL_FROM = 3000


@dataclass
class Report:
    ok: bool
    transactions: int = 0
    datoms: int = 0
    checkpoints: int = 0
    root: str = ""
    first_bad: int | None = None
    problem: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Checked:
    """What a worker learned from one transaction, for the parent's sequential checks."""

    id: int
    hash: bytes
    prev: bytes
    time: int
    branch: int
    author: str
    key: bytes
    n: int
    problem: str | None = None
    keys: list[tuple[str, int, bytes]] = field(default_factory=list)
    branches: list[tuple[str, str, object]] = field(default_factory=list)


def check_tx(
    tx: Sequence,
    datoms: Sequence[Sequence],
    branch_name: str,
    get_blob: Callable[[bytes], bytes | None],
) -> Checked:
    """Recompute one transaction from its stored rows (TX_COLUMNS / DATOM_COLUMNS order)."""
    (tid, stored_hash, prev, branch, t, author, key, reason, root, n, sig, schema) = tx
    stored_hash, prev, key, root, sig = (bytes(x) for x in (stored_hash, prev, key, root, sig))
    out = Checked(tid, stored_hash, prev, t, branch, author, key, n)

    def bad(problem: str) -> Checked:
        out.problem = problem
        return out

    if len(datoms) != n or n == 0:
        return bad(f"holds {len(datoms)} datoms but records {n}")
    if not len(stored_hash) == len(prev) == len(key) == len(root) == 32 or len(sig) != 64:
        return bad("a hash, key or signature has the wrong length")
    hashes = []
    touches_schema = False
    for i, d in enumerate(datoms):
        (dtx, idx, dbranch, e, a, v, tag, big, op, vf, vt, salt, vdigest) = d
        if dtx != tid or idx != i:
            return bad(f"datom {i} is out of place")
        if dbranch != branch:
            return bad(f"datom {i} is on branch {dbranch}, its transaction on {branch}")
        if op not in (0, 1) or tag not in values.TAG_TYPES or big not in (0, 1):
            return bad(f"datom {i}: its op, type or storage flag is out of range")
        vdigest = bytes(vdigest)
        if len(vdigest) != 32 or (salt is not None and len(salt) != 16):
            return bad(f"datom {i}: its digest or salt has the wrong length")
        if v is not None:
            data = bytes(v)
            if big:
                blob = get_blob(data)
                if blob is None or hashlib.sha256(blob).digest() != data:
                    return bad(f"datom {i}: its blob {data.hex()[:16]}… is missing or altered")
                data = blob
            if salt is None or values.value_digest(bytes(salt), tag, data) != vdigest:
                return bad(f"datom {i}: value does not match its digest")
            if a == "keel.identity/key":
                out.keys.append((e, op, data))
            elif a.startswith("keel.branch/"):
                out.branches.append((e, a, values.decode(tag, data)))
        touches_schema = touches_schema or a in SCHEMA_ATTRS
        hashes.append(encoding.datom_hash(e, a, op, tag, vdigest, vf, vt))
    if merkle.root_of(hashes) != root:
        return bad("datoms do not match the transaction's root")
    if int(touches_schema) != schema:
        return bad("its schema flag is wrong")
    computed = encoding.tx_hash(tid, prev, branch_name, t, author, key, reason, n, root)
    if computed != stored_hash:
        return bad("its contents do not match its hash")
    if not verify_signature(key, sig, computed):
        return bad(f"the signature by {author!r} is invalid")
    return out


def _check_range(
    location: str, blob_dir: str | None, lo: int, hi: int, names: dict[int, str]
) -> list[Checked]:
    store = open_store(location, Path(blob_dir) if blob_dir else None)
    try:
        return _check_with(store, lo, hi, names)
    finally:
        store.close()


def _check_with(store: Store, lo: int, hi: int, names: dict[int, str]) -> list[Checked]:
    txs = store.tx_rows(lo, hi)
    datoms = store.datom_rows(lo, hi)
    by_tx: dict[int, list] = {}
    for d in datoms:
        by_tx.setdefault(d[0], []).append(d)
    out = []
    for tx in txs:
        name = names.get(tx[3], f"#unknown-branch-{tx[3]}")
        out.append(check_tx(tx, by_tx.pop(tx[0], []), name, store.get_blob))
    for orphan in sorted(by_tx):
        out.append(
            Checked(
                orphan,
                b"",
                b"",
                0,
                0,
                "",
                b"",
                0,
                problem="datoms exist for a transaction that does not",
            )
        )
    return out


class Sequencer:
    """The checks that need history in order: chain links, keys and branches as registered."""

    def __init__(self) -> None:
        self.expected_id = 1
        self.prev = encoding.ZERO_HASH
        self.time = -(2**63)
        self.keys: dict[str, set[bytes]] = {}
        self.ever_registered: set[bytes] = set()
        self.branch_ids: dict[str, int] = {}
        self.branch_names: dict[int, str] = {0: "main"}
        self.log = merkle.MerkleLog()

    def feed(self, c: Checked, names: dict[int, str]) -> str | None:
        if c.problem:
            return c.problem
        if c.id != self.expected_id:
            return f"expected transaction {self.expected_id} here"
        if c.prev != self.prev:
            return "it does not link to the previous transaction's hash"
        if c.time < self.time:
            return "its time is earlier than the transaction before it"
        if c.branch not in self.branch_names or self.branch_names[c.branch] != names.get(c.branch):
            return f"its branch {c.branch} was not registered before it"
        genesis = c.id == 1
        if not genesis and c.key not in self.keys.get(c.author, ()):
            return f"{c.author!r} signed with a key that was not registered to it"
        for e, op, key in c.keys if c.branch == 0 else ():
            owned = self.keys.setdefault(e.removeprefix("identity:"), set())
            (owned.add if op == ASSERT else owned.discard)(key)
            self.ever_registered.add(key)
        if genesis and c.key not in self.keys.get(c.author, ()):
            return "the first transaction does not register the key that signs it"
        for e, a, v in c.branches:
            if a == "keel.branch/id":
                self.branch_ids[e] = v  # type: ignore[assignment]
        for e, a, v in c.branches:
            if a == "keel.branch/name" and e in self.branch_ids:
                self.branch_names[self.branch_ids[e]] = v  # type: ignore[assignment]
        self.expected_id += 1
        self.prev = c.hash
        self.time = c.time
        self.log.append(c.hash)
        return None


def first_gap(store: Store, size: int) -> int | None:
    """The first missing tx id when ids are not exactly 1..size (a damaged id column)."""
    row = store.fetchone("SELECT count(*) FROM txs")
    if not row or row[0] == size:
        return None
    expected = 1
    while True:
        ids = [
            r[0]
            for r in store.fetchall(
                "SELECT id FROM txs WHERE id >= ? ORDER BY id LIMIT 10000", [expected]
            )
        ]
        for tid in ids:
            if tid != expected:
                return expected
            expected += 1
        if len(ids) < 10000:
            return expected


def branch_names(store: Store) -> dict[int, str]:
    names = {0: "main"}
    rows = store.attr_datoms(("keel.branch/id", "keel.branch/name"), None)
    by_e: dict[str, dict] = {}
    for e, a, v, tag, _big, *_ in rows:
        try:
            by_e.setdefault(e, {})[a] = values.decode(tag, bytes(v))
        except (TypeError, ValueError, struct.error):
            continue  # a damaged datom: its transaction fails its own checks and is named
    for d in by_e.values():
        if "keel.branch/id" in d and "keel.branch/name" in d:
            names[d["keel.branch/id"]] = d["keel.branch/name"]
    return names


def verify_store(
    store: Store, workers: int | None = None, progress: Callable[[int, int], None] | None = None
) -> Report:
    started = time.perf_counter()
    head = store.head()
    size = head[0] if head else 0
    names = branch_names(store)
    seq = Sequencer()
    report = Report(ok=True, transactions=size)
    gap = first_gap(store, size)
    if gap is not None:
        report.ok, report.first_bad = False, gap
        report.problem = f"transaction {gap} is missing: the ids jump past it"
        size = gap - 1
    workers = workers or min(2, os.cpu_count() or 1)
    # Enough ranges to keep every worker busy, even for a ledger of few large transactions.
    chunk = max(1, min(CHUNK, -(-size // (4 * workers))))
    ranges = [(lo, min(lo + chunk - 1, size)) for lo in range(1, size + 1, chunk)]

    def consume(results: list[Checked]) -> bool:
        for c in results:
            report.datoms += c.n
            problem = seq.feed(c, names)
            if problem:
                report.ok, report.first_bad, report.problem = False, c.id, problem
                return False
        if progress:
            progress(seq.expected_id - 1, size)
        return True

    if size < PARALLEL_FROM or workers < 2:
        for lo, hi in ranges:
            if not consume(_check_with(store, lo, hi, names)):
                break
    else:
        blob_dir = str(getattr(store, "blob_dir", "") or "") or None
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [
                pool.submit(_check_range, store.location, blob_dir, lo, hi, names)
                for lo, hi in ranges
            ]
            for fut in futures:
                if not consume(fut.result()):
                    for f in futures:
                        f.cancel()
                    break
    if report.ok:
        extra = store.fetchone("SELECT count(*) FROM datoms WHERE tx > ?", [size])
        if extra and extra[0]:
            report.ok, report.first_bad = False, size + 1
            report.problem = "datoms exist beyond the last transaction"
    if report.ok:
        report.root = seq.log.root().hex()
        registered = seq.ever_registered
        for cp_size, root, t, key, sig in store.checkpoints():
            report.checkpoints += 1
            if cp_size > seq.log.size or seq.log.root(cp_size) != root:
                report.ok, report.first_bad = False, min(cp_size, size) or None
                report.problem = f"the checkpoint at size {cp_size} does not match the log"
                break
            msg = encoding.checkpoint_bytes(cp_size, root, t)
            if key not in registered or not verify_signature(key, sig, msg):
                report.ok = False
                report.problem = f"the checkpoint at size {cp_size} has an invalid signature"
                break
    report.seconds = round(time.perf_counter() - started, 3)
    return report
