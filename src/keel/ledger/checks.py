"""The rules of verification (docs/ledger-format.md §14), one transaction at a time.

`check_tx` recomputes what a single transaction commits to: value digests, datom hashes,
the datoms root, the schema flag, the transaction hash and its signature. `Sequencer`
applies the rules that need history in order: ids without gaps, links, times, and which
keys and branches were registered before each transaction.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import encoding, forget, merkle, values
from .encoding import ASSERT
from .schema import SCHEMA_ATTRS
from .signing import verify_signature
from .stores import Store
from .stores.rows import DatomRow, TxRow


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
    #: Indexes of its datoms whose value was erased, and the (tx, idx) of the datoms its
    #: forgetting (if it records one) names.
    erased: list[int] = field(default_factory=list)
    forgets: list[tuple[int, int]] = field(default_factory=list)


def check_tx(
    tx: TxRow,
    datoms: Sequence[DatomRow],
    branch_name: str,
    get_blob: Callable[[bytes], bytes | None],
) -> Checked:
    """Recompute one transaction from its stored rows."""
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
            elif a == forget.DATOMS:
                try:
                    named = forget.parse_datoms(values.decode(tag, data))
                except ValueError:
                    return bad(f"datom {i}: its forgetting does not list [tx, idx, group]s")
                out.forgets += [(t, x) for t, x, _g in named]
        else:
            out.erased.append(i)
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
        #: Datoms named by a forgetting so far, and those found without a value.
        self.forgotten: set[tuple[int, int]] = set()
        self.erased: list[tuple[int, int]] = []

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
        if c.forgets and c.branch != 0:
            return "it records a forgetting on a branch (forgettings are written on main)"
        if any(tx >= c.id for tx, _idx in c.forgets):
            return "its forgetting names a datom that is not older than it"
        self.forgotten.update(c.forgets)
        self.erased += [(c.id, i) for i in c.erased]
        self.register_branches(c.branches)
        self.expected_id += 1
        self.prev = c.hash
        self.time = c.time
        self.log.append(c.hash)
        return None

    def unaccounted(self) -> tuple[int, str] | None:
        """The first datom (its tx, and why) whose value is gone though no forgetting
        names it: erasure is only ever a recorded act."""
        for tx, i in self.erased:
            if (tx, i) not in self.forgotten:
                return tx, f"datom {i} has no value, and no forgetting names it"
        return None

    def register_branches(self, facts: Sequence[tuple[str, str, object]]) -> None:
        """Apply one transaction's (entity, keel.branch/* attribute, value) facts: its ids
        first, so a name registered beside its id in the same transaction counts."""
        for e, a, v in facts:
            if a == "keel.branch/id":
                self.branch_ids[e] = v  # type: ignore[assignment]
        for e, a, v in facts:
            if a == "keel.branch/name" and e in self.branch_ids:
                self.branch_names[self.branch_ids[e]] = v  # type: ignore[assignment]


def branch_names(store: Store) -> dict[int, str]:
    """Every branch id registered anywhere in history, with its name: a transaction's
    hash covers its branch's name, and the rows store only the id."""
    names = {0: "main"}
    by_e: dict[str, dict] = {}
    for row in store.attr_datoms(("keel.branch/id", "keel.branch/name"), None):
        try:
            by_e.setdefault(row.e, {})[row.a] = values.decode(row.vtype, bytes(row.v))
        except (TypeError, ValueError, struct.error):
            continue  # a damaged datom: its transaction fails its own checks and is named
    for d in by_e.values():
        if "keel.branch/id" in d and "keel.branch/name" in d:
            names[d["keel.branch/id"]] = d["keel.branch/name"]
    return names
