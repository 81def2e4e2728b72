"""Proving history intact: recompute every digest, hash, root, signature and link.

The heavy part (`checks.check_tx`: hashing and Ed25519 checks, one transaction at a time)
runs in worker processes over ranges of transactions; the sequential part
(`checks.Sequencer`: the chain, which keys were registered when, the branch registry) and
the checkpoints run in the parent on their results. An incremental run starts after the
newest trustworthy checkpoint (`anchor.py`) instead of at the genesis. Either way the
store's own integrity check runs too: every row can read back while the file holding
them is damaged.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import encoding
from .anchor import newest_anchor
from .checks import Checked, Sequencer, branch_names, check_tx
from .history import tx_range
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
    #: Transactions 1..since were trusted through a verified checkpoint, not recomputed
    #: (0: every transaction was checked).
    since: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @property
    def failure(self) -> str | None:
        """What is wrong, in one sentence that names the first bad transaction."""
        return None if self.ok else describe_failure(self.first_bad, self.problem)


def describe_failure(first_bad: int | None, problem: str | None) -> str:
    where = f"transaction {first_bad} is bad: " if first_bad else ""
    return f"{where}{problem or 'the ledger failed verification'}"


def _check_range(
    location: str, blob_dir: str | None, lo: int, hi: int, names: dict[int, str]
) -> list[Checked]:
    store = open_store(location, Path(blob_dir) if blob_dir else None)
    try:
        return _check_with(store, lo, hi, names)
    finally:
        store.close()


def _check_with(store: Store, lo: int, hi: int, names: dict[int, str]) -> list[Checked]:
    out = []
    for record in tx_range(store, lo - 1, hi):
        name = names.get(record.tx.branch, f"#unknown-branch-{record.tx.branch}")
        out.append(check_tx(record.tx, record.datoms, name, store.get_blob))
    return out


def first_gap(store: Store, size: int) -> int | None:
    """The first missing tx id when ids are not exactly 1..size (a damaged id column)."""
    if store.tx_count() == size:
        return None
    expected = 1
    while True:
        ids = store.tx_ids(expected, 10000)
        for tid in ids:
            if tid != expected:
                return expected
            expected += 1
        if len(ids) < 10000:
            return expected


def verify_store(
    store: Store,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    incremental: bool = False,
) -> Report:
    """Verify `store`: every transaction, or (`incremental`) those after the newest
    trustworthy checkpoint; then the checkpoints and the store's own integrity."""
    started = time.perf_counter()
    report = Report(ok=True)
    try:
        _verify_rows(store, report, workers, progress, incremental)
    except store.storage_errors as exc:
        report.ok, report.problem = False, f"the store could not be read: {exc}"
    damage = store.integrity_problem()
    if damage:
        report.problem = f"{report.problem}; and {damage}" if not report.ok else damage
        report.ok = False
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _verify_rows(
    store: Store,
    report: Report,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    incremental: bool,
) -> None:
    head = store.head()
    size = head.id if head else 0
    report.transactions = size
    names = branch_names(store)
    gap = first_gap(store, size)
    if gap is not None:
        report.ok, report.first_bad = False, gap
        report.problem = f"transaction {gap} is missing: the ids jump past it"
        size = gap - 1
    found = newest_anchor(store, size) if incremental else None
    seq = found.sequencer if found else Sequencer()
    report.since = found.checkpoint.size if found else 0
    first = seq.expected_id
    workers = workers or min(2, os.cpu_count() or 1)
    todo = size - first + 1
    # Enough ranges to keep every worker busy, even for a ledger of few large transactions.
    chunk = max(1, min(CHUNK, -(-todo // (4 * workers))))
    ranges = [(lo, min(lo + chunk - 1, size)) for lo in range(first, size + 1, chunk)]

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

    if todo < PARALLEL_FROM or workers < 2:
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
    if report.ok and (found := seq.unaccounted()):
        report.ok = False
        report.first_bad, report.problem = found
    if report.ok and store.datoms_after(size):
        report.ok, report.first_bad = False, size + 1
        report.problem = "datoms exist beyond the last transaction"
    if report.ok:
        report.root = seq.log.root().hex()
        _check_checkpoints(store, seq, report, size)


def _check_checkpoints(store: Store, seq: Sequencer, report: Report, size: int) -> None:
    """Each checkpoint's root is the log's at its size, signed by a registered key."""
    for cp in store.checkpoints():
        report.checkpoints += 1
        if cp.size > seq.log.size or seq.log.root(cp.size) != cp.root:
            report.ok, report.first_bad = False, min(cp.size, size) or None
            report.problem = f"the checkpoint at size {cp.size} does not match the log"
            return
        msg = encoding.checkpoint_bytes(cp.size, cp.root, cp.time)
        if cp.key not in seq.ever_registered or not verify_signature(cp.key, cp.sig, msg):
            report.ok = False
            report.problem = f"the checkpoint at size {cp.size} has an invalid signature"
            return
