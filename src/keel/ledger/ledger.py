"""The ledger: signed, hash-chained, bitemporal transactions over a store.

Every write goes through `Ledger.transact`, which validates against the schema, checks
preconditions and guards, signs, chains and commits under the store's write lock. That
one path is where governance plugs in (`add_guard`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import IO, Any

from . import encoding, exchange, fold, merkle, values
from .encoding import ASSERT, RETRACT
from .errors import BadInput, Conflict, KeelError, NotFound, Refused, SchemaError
from .ids import new_ulids
from .instants import FOREVER, SINCE_ALWAYS, format_instant, now_us, parse_instant
from .schema import (
    BUILTIN,
    SCHEMA_ATTRS,
    Attribute,
    attr_entity,
    check_change,
    declaration_facts,
    fold_schema,
    parse_declaration,
)
from .signing import Signer
from .stores import Store, open_store
from .stores.base import INLINE_LIMIT
from .verify import Report, verify_store

MAIN = "main"
_BRANCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_ID = 512
#: Schema and identity facts are read at the end of valid time, so clock skew between
#: hosts never hides a declaration.
LATEST = FOREVER - 1


def identity_entity(name: str) -> str:
    return f"identity:{name}"


def branch_entity(name: str) -> str:
    return f"branch:{name}"


@dataclass(frozen=True)
class Branch:
    name: str
    id: int
    parent: int
    base: int
    state: str


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


class Ledger:
    """Open with `Ledger.open(path_or_dsn, signer=...)`; one instance per thread."""

    def __init__(
        self,
        store: Store,
        signer: Signer | None = None,
        clock: Callable[[], int] = now_us,
        default_tz: tzinfo = UTC,
    ):
        self.store = store
        self.signer = signer
        self.clock = clock
        self.default_tz = default_tz
        self._guards: list[Guard] = []
        self._listeners: list[Callable[[TxResult], None]] = []
        self._schema: dict[str, Attribute] = dict(BUILTIN)
        self._schema_tx = -1
        self._many_since: dict[str, int] = {}
        self._branches: dict[str, Branch] = {}
        self._merkle: merkle.MerkleLog | None = None

    @classmethod
    def open(cls, target: Any, signer: Signer | None = None, **kw: Any) -> Ledger:
        return cls(open_store(target), signer, **kw)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_commit(self, listener: Callable[[TxResult], None]) -> None:
        """Call `listener` after each transaction this object commits (e.g. to wake the bus)."""
        self._listeners.append(listener)

    def add_guard(self, guard: Guard) -> None:
        """Register a check run on every transaction before it is signed; raise to refuse.
        Registering the same guard again changes nothing."""
        if guard not in self._guards:
            self._guards.append(guard)

    # -- schema --------------------------------------------------------------------------
    def _refresh_schema(self) -> None:
        version = self.store.schema_version()
        if version == self._schema_tx:
            return
        rows = self.store.attr_datoms(SCHEMA_ATTRS, [(0, version)])
        by_entity: dict[str, list] = {}
        for row in rows:
            by_entity.setdefault(row[0], []).append(row[1:])
        current = {e: self._fold_entity(rs, LATEST) for e, rs in by_entity.items()}
        self._schema = {**fold_schema(current), **BUILTIN}
        # When each attribute became cardinality many: older views still fold it as one.
        self._many_since = {}
        for e, a, v, _tag, _big, op, *_rest, tx, _idx in rows:
            if a == "db/cardinality" and op == ASSERT and v is not None and bytes(v) == b"many":
                self._many_since.setdefault(e.removeprefix("attr:"), tx)
        self._schema_tx = version

    @property
    def schema(self) -> dict[str, Attribute]:
        self._refresh_schema()
        return {k: v for k, v in self._schema.items() if k not in BUILTIN}

    def attribute(self, ident: str) -> Attribute:
        attr = self._schema.get(ident)
        if attr is None:
            self._refresh_schema()
            attr = self._schema.get(ident)
        if attr is None:
            raise SchemaError(f"attribute {ident!r} is not declared (see 'keel schema add')")
        return attr

    def declare(
        self, declarations: Iterable[object], signer: Signer | None = None, system: bool = False
    ) -> TxResult | None:
        """Add or widen attributes. Returns None when every declaration is already in force.

        `system` lets keel's own subsystems declare attributes in the reserved `keel.`
        namespaces; users cannot.
        """
        attrs = [parse_declaration(d, reserved_ok=system) for d in declarations]
        for attr in attrs:
            if attr.ident in BUILTIN:
                raise SchemaError(f"{attr.ident} is part of keel's meta-schema")
        if not attrs:
            raise SchemaError("the schema declaration lists no attributes")

        def build(view: View) -> list[dict]:
            ops = []
            for attr in attrs:
                old = self._schema.get(attr.ident)
                if old is not None:
                    check_change(old, attr)
                for a, v in declaration_facts(attr, old):
                    ops.append({"op": "add", "e": attr_entity(attr.ident), "a": a, "v": v})
            return ops

        return self._commit(build, reason="declare attributes", signer=signer, system=True)

    # -- branches ------------------------------------------------------------------------
    def _load_branches(self) -> None:
        attrs = (
            "keel.branch/name",
            "keel.branch/id",
            "keel.branch/parent",
            "keel.branch/base",
            "keel.branch/state",
        )
        rows = self.store.attr_datoms(attrs, None)
        by_entity: dict[str, list] = {}
        for row in rows:
            by_entity.setdefault(row[0], []).append(row[1:])
        branches = {}
        for rs in by_entity.values():
            v = self._fold_entity(rs, LATEST)
            branches[v["keel.branch/name"]] = Branch(
                v["keel.branch/name"],
                v["keel.branch/id"],
                v["keel.branch/parent"],
                v["keel.branch/base"],
                v.get("keel.branch/state", "open"),
            )
        self._branches = branches

    def branch(self, name: str, refresh: bool = True) -> Branch:
        if name == MAIN:
            return Branch(MAIN, 0, 0, 0, "open")
        if refresh or name not in self._branches:
            self._load_branches()
        found = self._branches.get(name)
        if found is None:
            raise NotFound(f"there is no branch named {name!r}")
        return found

    def branches(self) -> list[Branch]:
        self._load_branches()
        return sorted(self._branches.values(), key=lambda b: b.id)

    def _branch_by_id(self, bid: int) -> Branch:
        if bid == 0:
            return self.branch(MAIN)
        for b in self._branches.values():
            if b.id == bid:
                return b
        self._load_branches()
        for b in self._branches.values():
            if b.id == bid:
                return b
        raise NotFound(f"there is no branch number {bid}")

    def segments(self, branch: Branch, upto: int) -> list[tuple[int, int]]:
        """The (branch id, last tx) ranges a view of `branch` as of `upto` can see."""
        if branch.id == 0:
            return [(0, upto)]
        parent = self._branch_by_id(branch.parent)
        return [*self.segments(parent, min(upto, branch.base)), (branch.id, upto)]

    def create_branch(
        self, name: str, at: int | None = None, signer: Signer | None = None
    ) -> Branch:
        if not isinstance(name, str) or not _BRANCH_NAME.match(name) or name == MAIN:
            raise BadInput(f"{name!r} is not a usable branch name (letters, digits, _ . -)")

        def build(view: View) -> list[dict]:
            self._load_branches()
            if name in self._branches:
                raise Conflict(f"a branch named {name!r} already exists")
            head = view.as_of
            base = self.store.last_tx_on(0) if at is None else at
            if not 1 <= base <= head:
                raise NotFound(f"there is no transaction {at}")
            (row,) = self.store.tx_rows(base, base)
            parent = self._branch_by_id(row[3])
            if parent.state == "dropped":
                raise BadInput(f"transaction {base} is on dropped branch {parent.name!r}")
            new_id = max([b.id for b in self._branches.values()], default=0) + 1
            e = branch_entity(name)
            facts = [
                ("keel.branch/name", name),
                ("keel.branch/id", new_id),
                ("keel.branch/parent", parent.id),
                ("keel.branch/base", base),
                ("keel.branch/state", "open"),
            ]
            return [{"op": "add", "e": e, "a": a, "v": v} for a, v in facts]

        self._commit(build, reason=f"create branch {name}", signer=signer, system=True)
        return self.branch(name)

    def drop_branch(self, name: str, signer: Signer | None = None) -> TxResult:
        return self._set_branch_state(name, "dropped", signer)

    def _set_branch_state(
        self,
        name: str,
        state: str,
        signer: Signer | None,
        extra: Callable[[View], list[dict]] | None = None,
        into: str = MAIN,
    ) -> TxResult:
        def build(view: View) -> list[dict]:
            b = self.branch(name)
            if b.state != "open":
                raise Conflict(f"branch {name!r} is already {b.state}")
            ops = extra(view) if extra else []
            return [
                *ops,
                {"op": "add", "e": branch_entity(name), "a": "keel.branch/state", "v": state},
            ]

        verb = "merge" if state == "merged" else "drop"
        result = self._commit(
            build,
            reason=f"{verb} branch {name}",
            signer=signer,
            system=True,
            branch=into,
            replay=extra is not None,
        )
        assert result is not None
        return result

    def merge_branch(self, name: str, signer: Signer | None = None) -> TxResult:
        """Replay a branch's datoms onto its parent, unless the parent changed the same
        entity-attribute since the fork; then raise a Conflict naming each clash."""
        source = self.branch(name)
        if source.state != "open":
            raise Conflict(f"branch {name!r} is already {source.state}")
        parent = self._branch_by_id(source.parent)

        # The branch registry (keel.branch/*) is bookkeeping about branches, read from
        # every branch; it is never replayed and never clashes.
        def replay(view: View) -> list[dict]:
            ours = self.store.fetchall(
                "SELECT e, a, v, vtype, big, op, vf, vt, tx FROM datoms WHERE branch = ?"
                " AND a NOT LIKE ? ORDER BY tx, idx",
                [source.id, "keel.branch/%"],
            )
            theirs = self.store.fetchall(
                "SELECT e, a, min(tx) FROM datoms WHERE branch = ? AND tx > ?"
                " AND a NOT LIKE ? GROUP BY e, a",
                [parent.id, source.base, "keel.branch/%"],
            )
            touched = {(r[0], r[1]) for r in ours}
            clashes = sorted((e, a, tx) for e, a, tx in theirs if (e, a) in touched)
            if clashes:
                listing = "; ".join(
                    f"{e} {a} (changed on {parent.name} in tx {tx})" for e, a, tx in clashes
                )
                raise Conflict(f"cannot merge {name!r}: {len(clashes)} clash(es): {listing}")
            ops = []
            for e, a, v, vtype, big, op, vf, vt, _tx in ours:
                ops.append(
                    {
                        "op": "add" if op == ASSERT else "retract",
                        "e": e,
                        "a": a,
                        "v": self._decode(v, vtype, big),
                        "valid_from": vf,
                        "valid_to": vt,
                    }
                )
            return ops

        return self._set_branch_state(name, "merged", signer, replay, into=parent.name)

    # -- views ---------------------------------------------------------------------------
    def view(
        self, branch: str = MAIN, as_of: int | str | None = None, valid_at: int | str | None = None
    ) -> View:
        """A read view. `as_of` is a tx id, tx hash or instant; `valid_at` an instant.

        With `as_of` and no `valid_at`, the view is valid at the as-of moment (what we knew
        then about then), so an as-of view never changes afterwards. Without either, it is
        valid now — or at the newest transaction's time, if the clock is behind it.
        """
        b = self.branch(branch)
        if b.state == "dropped":
            raise NotFound(f"branch {branch!r} was dropped")
        if as_of is None:
            head = self.store.head()
            tx, tx_time = (head[0], head[2]) if head else (0, SINCE_ALWAYS)
            # Now, but never before the newest transaction: a clock behind the ledger (a
            # test clock, a skewed host) still sees what was just written as current.
            default_valid = max(self.clock(), tx_time)
        else:
            tx = self.resolve_tx(as_of)
            default_valid = self._tx_time(tx)
        if isinstance(valid_at, str):
            valid = parse_instant(valid_at, self.default_tz)
        elif valid_at is not None:
            valid = valid_at
        else:
            valid = default_valid
        return View(self, b, tx, valid, self.segments(b, tx))

    def resolve_tx(self, ref: int | str) -> int:
        """A transaction id from an id, a full hash or an ISO instant (the last tx by then)."""
        if isinstance(ref, int):
            if ref != 0 and self._tx_time(ref) == SINCE_ALWAYS:
                raise NotFound(f"there is no transaction {ref}")
            return ref
        text = ref.strip()
        if text.isdigit():
            return self.resolve_tx(int(text))
        if re.fullmatch(r"[0-9a-fA-F]{64}", text):
            found = self.store.tx_id_by_hash(bytes.fromhex(text))
            if found is None:
                raise NotFound(f"there is no transaction with hash {text}")
            return found
        return self.store.last_tx_at(parse_instant(text, self.default_tz))

    def _tx_time(self, tx: int) -> int:
        """When `tx` was recorded; SINCE_ALWAYS for tx 0 or one that does not exist."""
        row = self.store.fetchone("SELECT time FROM txs WHERE id = ?", [tx])
        return row[0] if row else SINCE_ALWAYS

    def _decode(self, v: bytes | None, tag: int, big: int) -> Any:
        if v is None:
            return None
        data = bytes(v)
        if big:
            blob = self.store.get_blob(data)
            if blob is None:
                raise KeelError(f"blob {data.hex()} is missing from the blob store")
            data = blob
        return values.decode(tag, data)

    def _fold_entity(
        self, rows: Sequence[Sequence], at: int, as_of: int | None = None
    ) -> dict[str, Any]:
        """Values at valid instant `at`, with each attribute's cardinality as of `as_of`."""
        out: dict[str, Any] = {}
        for a, group in fold.group_by_attr(rows).items():
            attr = self._schema.get(a) or self.attribute(a)
            if attr.many and (as_of is None or as_of >= self._many_since.get(a, 0)):
                live = fold.fold_many(group, at)
                if live:
                    out[a] = [self._decode(r[1], r[2], r[3]) for r in live]
            else:
                row = fold.fold_one(group, at)
                if row is not None:
                    out[a] = self._decode(row[1], row[2], row[3])
        return out

    # -- writes --------------------------------------------------------------------------
    def transact(
        self,
        ops: Sequence[dict],
        reason: str = "",
        expect: Sequence[dict] = (),
        branch: str = MAIN,
        signer: Signer | None = None,
        declare: Sequence[object] = (),
    ) -> TxResult:
        """Commit `ops` atomically, if every expectation in `expect` holds.

        `declare` lists attribute declarations (as for `declare`) that the ops may use:
        those not yet in force are declared in this same transaction, so a write that
        needs a new attribute is one atomic step, never a declaration left behind by a
        write that was then refused."""
        if not isinstance(ops, list | tuple) or not ops:
            raise BadInput("a transaction needs a non-empty list of ops")
        if not isinstance(expect, list | tuple):
            raise BadInput("'expect' must be a list")

        def build(view: View) -> list[dict]:
            view.check_expectations(expect)
            return list(ops)

        result = self._commit(build, reason, signer=signer, branch=branch, declare=declare)
        assert result is not None
        return result

    def update(
        self,
        build: Callable[[View], list[dict]],
        reason: str = "",
        signer: Signer | None = None,
        branch: str = MAIN,
        declare: Sequence[object] = (),
    ) -> TxResult | None:
        """Read-modify-write in one step: `build(view)` sees the branch under the write lock
        and returns the ops to commit (none: nothing is written and None is returned).
        `declare` is as for `transact`."""
        return self._commit(build, reason, signer=signer, branch=branch, declare=declare)

    def committed(self, after: int, limit: int = 500) -> tuple[list[dict], int]:
        """Decoded datoms of main-branch transactions after tx `after` (at most `limit`
        transactions), oldest first, and the last tx id read. Followers (the recall index)
        page through the ledger with this."""
        head = self.store.head()
        hi = min(head[0] if head else 0, after + limit)
        if hi <= after:
            return [], after
        txs = {r[0]: r for r in self.store.tx_rows(after + 1, hi, branches=[0])}
        out = []
        for row in self.store.datom_rows(after + 1, hi):
            tx = row[0]
            if tx not in txs:
                continue
            tag = row[6]
            out.append(
                {
                    "tx": tx,
                    "e": row[3],
                    "a": row[4],
                    "v": self._decode(row[5], tag, row[7]),
                    "op": "add" if row[8] == ASSERT else "retract",
                    "valid_from": row[9],
                    "valid_to": row[10],
                    "tx_time": txs[tx][4],
                    "author": txs[tx][5],
                }
            )
        return out, hi

    def _commit(
        self,
        build: Callable[[View], list[dict]],
        reason: str,
        *,
        signer: Signer | None,
        branch: str = MAIN,
        system: bool = False,
        replay: bool = False,
        declare: Sequence[object] = (),
    ) -> TxResult | None:
        signer = signer or self.signer
        wanted = [parse_declaration(d) for d in declare]
        if signer is None:
            raise Refused("no identity to sign with (open the ledger with a signer)")
        if not isinstance(reason, str):
            raise BadInput("'reason' must be a string")
        with self.store.write():
            head = self.store.head()
            seq, prev, prev_time = (
                (head[0] + 1, head[1], head[2]) if head else (1, encoding.ZERO_HASH, SINCE_ALWAYS)
            )
            self._refresh_schema()
            b = self.branch(branch)
            if b.state != "open":
                raise BadInput(f"branch {branch!r} is {b.state}; it takes no more writes")
            time_us = max(self.clock(), prev_time)
            view = View(self, b, seq - 1, time_us, self.segments(b, seq - 1))
            ops = build(view)
            if not ops:
                return None
            new_attrs, declared_ops = self._declaration_ops(wanted)
            if declared_ops and b.id != 0:
                raise SchemaError("declare attributes on main, not on a branch")
            prepared = _Preparer(
                self, view, time_us, system, replay, new_attrs, len(declared_ops)
            ).prepare([*declared_ops, *ops])
            tempids = prepared.tempids
            if head is None:
                _check_genesis(prepared.datoms, signer)
            else:
                self._check_author(signer)
            if system and b.id != 0 and any(d.a in SCHEMA_ATTRS for d in prepared.datoms):
                raise SchemaError("declare attributes on main, not on a branch")
            pending = PendingTx(seq, b.name, signer.name, reason, time_us, prepared.datoms, view)
            for guard in self._guards:
                guard(pending)
            key = signer.public_key
            try:
                rows, hashes = self._datom_rows(seq, b.id, prepared.datoms)
                root = merkle.root_of(hashes)
                txh = encoding.tx_hash(
                    seq, prev, b.name, time_us, signer.name, key, reason, len(rows), root
                )
            except UnicodeEncodeError:
                raise BadInput("entity ids, values and reasons must be valid Unicode") from None
            schema_flag = int(any(d.a in SCHEMA_ATTRS for d in prepared.datoms))
            tx_row = (
                seq,
                txh,
                prev,
                b.id,
                time_us,
                signer.name,
                key,
                reason,
                root,
                len(rows),
                signer.sign(txh),
                schema_flag,
            )
            self.store.insert(tx_row, rows)
        if self._merkle is not None and self._merkle.size == seq - 1:
            self._merkle.append(txh)
        result = TxResult(seq, txh.hex(), time_us, b.name, tempids)
        for listener in self._listeners:
            listener(result)
        return result

    def _declaration_ops(self, wanted: list[Attribute]) -> tuple[dict[str, Attribute], list]:
        """The attributes of `wanted` not yet in force, and the ops that declare them."""
        new: dict[str, Attribute] = {}
        ops: list[dict] = []
        for attr in wanted:
            old = self._schema.get(attr.ident)
            if attr.ident in BUILTIN:
                raise SchemaError(f"{attr.ident} is part of keel's meta-schema")
            if old is not None:
                check_change(old, attr)
            facts = declaration_facts(attr, old)
            if facts:
                new[attr.ident] = attr
            for a, v in facts:
                ops.append({"op": "add", "e": attr_entity(attr.ident), "a": a, "v": v})
        return new, ops

    def _check_author(self, signer: Signer) -> None:
        rows = self.store.entity_datoms(
            identity_entity(signer.name), [(0, 2**62)], "keel.identity/key"
        )
        keys = fold.fold_many(rows, LATEST)
        if not any(bytes(r[1]) == signer.public_key for r in keys):
            raise Refused(f"identity {signer.name!r} with this key is not registered in the ledger")

    def _datom_rows(self, seq: int, branch_id: int, datoms: list[Datom]) -> tuple[list, list]:
        salts = os.urandom(16 * len(datoms))
        rows, hashes = [], []
        datom_hash, value_digest, encode = encoding.datom_hash, values.value_digest, values.encode
        for i, d in enumerate(datoms):
            tag = d.attr.tag
            data = d.value.encode("utf-8") if tag == 1 else encode(tag, d.value)
            salt = salts[16 * i : 16 * i + 16]
            vdigest = value_digest(salt, tag, data)
            stored, big = data, 0
            if len(data) > INLINE_LIMIT:
                stored, big = hashlib.sha256(data).digest(), 1
                self.store.put_blob(stored, data)
            hashes.append(datom_hash(d.e, d.a, d.op, tag, vdigest, d.vf, d.vt))
            rows.append(
                (seq, i, branch_id, d.e, d.a, stored, tag, big, d.op, d.vf, d.vt, salt, vdigest)
            )
        return rows, hashes

    def register_identity(
        self, name: str, public_key: bytes, role: str = "agent", signer: Signer | None = None
    ) -> TxResult | None:
        """Record an identity's public key so its transactions verify."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or ""):
            raise BadInput(f"{name!r} is not a usable identity name (letters, digits, _ . -)")
        e = identity_entity(name)

        def build(view: View) -> list[dict]:
            current = view.get(e) or {}
            if public_key in current.get("keel.identity/key", []):
                return []
            return [
                {"op": "add", "e": e, "a": "keel.identity/name", "v": name},
                {"op": "add", "e": e, "a": "keel.identity/key", "v": public_key},
                {"op": "add", "e": e, "a": "keel.identity/role", "v": role},
            ]

        return self._commit(build, reason=f"register identity {name}", signer=signer, system=True)

    def identities(self) -> list[dict]:
        view = self.view()
        out = []
        for e in view.find("keel.identity/name"):
            ent = view.get(e)
            out.append(
                {
                    "name": ent["keel.identity/name"],
                    "role": ent.get("keel.identity/role"),
                    "keys": [k.hex() for k in ent.get("keel.identity/key", [])],
                }
            )
        return out

    def restore(
        self, e: str, to: int | str, branch: str = MAIN, signer: Signer | None = None
    ) -> TxResult | None:
        """Make `e` read again as it did as of transaction `to`, in a new transaction.

        Works along both axes: every attribute's whole valid-time timeline is put back.
        Returns None when the entity already matches.
        """
        b = self.branch(branch)
        target = self.resolve_tx(to)

        def build(view: View) -> list[dict]:
            then = self.store.entity_datoms(e, self.segments(b, target))
            now = self.store.entity_datoms(e, view.segments)
            if not now:
                raise NotFound(f"there is no entity {e!r}")
            old, new = fold.group_by_attr(then), fold.group_by_attr(now)
            ops: list[dict] = []
            for a in sorted(set(old) | set(new)):
                many = self.attribute(a).many
                before = fold.timeline(old.get(a, []), many)
                after = fold.timeline(new.get(a, []), many)
                if [s[:3] for s in before] == [s[:3] for s in after]:
                    continue
                for key in {s[0] for s in after}:
                    row = next(s[3] for s in after if s[0] == key)
                    ops.append(
                        {
                            "op": "retract",
                            "e": e,
                            "a": a,
                            "v": self._decode(*row[1:4]),
                            "valid_from": SINCE_ALWAYS,
                            "valid_to": FOREVER,
                        }
                    )
                for _key, vf, vt, row in before:
                    ops.append(
                        {
                            "op": "add",
                            "e": e,
                            "a": a,
                            "v": self._decode(*row[1:4]),
                            "valid_from": vf,
                            "valid_to": vt,
                        }
                    )
            return ops

        return self._commit(
            build,
            reason=f"restore {e} to tx {target}",
            signer=signer,
            branch=branch,
            system=e.startswith(("attr:", "identity:", "branch:")),
        )

    # -- integrity and exchange ----------------------------------------------------------
    def verify(self, workers: int | None = None, progress=None) -> Report:
        """Recompute the whole history; the report names the first bad transaction."""
        return verify_store(self.store, workers, progress)

    def export(self, out: IO[str]) -> int:
        return exchange.export(self.store, out)

    def import_file(self, path: Path) -> int:
        count = exchange.import_file(self.store, path)
        self._merkle = None
        return count

    # -- log and Merkle ------------------------------------------------------------------
    def log(self, since: int = 0, branch: str | None = None) -> Iterator[dict]:
        """One dict per transaction, oldest first; on a branch, what that branch can see."""
        if branch is None:
            ranges = [(None, None)]
        else:
            b = self.branch(branch)
            head = self.store.head()
            ranges = self.segments(b, head[0] if head else 0)
        for bid, upto in ranges:
            lo = since + 1
            for row in self.store.tx_rows(lo, upto, [bid] if bid is not None else ()):
                yield self._tx_json(row)

    def _tx_json(self, row: Sequence) -> dict:
        return {
            "tx": row[0],
            "hash": bytes(row[1]).hex(),
            "prev": bytes(row[2]).hex(),
            "branch": self._branch_by_id(row[3]).name,
            "time": format_instant(row[4]),
            "author": row[5],
            "key": bytes(row[6]).hex(),
            "reason": row[7],
            "root": bytes(row[8]).hex(),
            "datoms": row[9],
            "sig": bytes(row[10]).hex(),
        }

    def merkle_log(self) -> merkle.MerkleLog:
        """The Merkle log over every transaction hash, kept up to date incrementally."""
        head = self.store.head()
        size = head[0] if head else 0
        if self._merkle is None or self._merkle.size > size:
            self._merkle = merkle.MerkleLog()
        if self._merkle.size < size:
            for row in self.store.fetchall(
                "SELECT hash FROM txs WHERE id > ? ORDER BY id", [self._merkle.size]
            ):
                self._merkle.append(bytes(row[0]))
        return self._merkle

    def inclusion_proof(self, tx: int | str) -> dict:
        log = self.merkle_log()
        seq = self.resolve_tx(tx)
        if seq == 0:
            raise NotFound("transaction 0 does not exist")
        leaf = self.store.tx_rows(seq, seq)[0][1]
        path = log.inclusion_proof(seq - 1)
        return {
            "tx": seq,
            "leaf_index": seq - 1,
            "tree_size": log.size,
            "leaf": bytes(leaf).hex(),
            "root": log.root().hex(),
            "path": [p.hex() for p in path],
        }

    def consistency_proof(self, old_size: int, new_size: int) -> dict:
        log = self.merkle_log()
        if not 0 < old_size <= new_size <= log.size:
            raise BadInput(f"sizes must satisfy 0 < old <= new <= {log.size}")
        path = log.consistency_proof(old_size, new_size)
        return {
            "old_size": old_size,
            "new_size": new_size,
            "old_root": log.root(old_size).hex(),
            "new_root": log.root(new_size).hex(),
            "path": [p.hex() for p in path],
        }

    def checkpoint(self, signer: Signer | None = None) -> dict:
        """Sign (size, root, time) of the Merkle log with the operator's key."""
        signer = signer or self.signer
        if signer is None:
            raise Refused("no identity to sign the checkpoint with")
        with self.store.write():
            log = self.merkle_log()
            size, root, t = log.size, log.root(), self.clock()
            sig = signer.sign(encoding.checkpoint_bytes(size, root, t))
            self.store.add_checkpoint(size, root, t, signer.public_key, sig)
        return {
            "size": size,
            "root": root.hex(),
            "time": format_instant(t),
            "key": signer.public_key.hex(),
            "sig": sig.hex(),
        }


def _check_genesis(datoms: list[Datom], signer: Signer) -> None:
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


class View:
    """What a branch looked like as of a transaction, at one valid instant."""

    def __init__(
        self,
        ledger: Ledger,
        branch: Branch,
        as_of: int,
        valid_at: int,
        segments: list[tuple[int, int]],
    ):
        self.ledger = ledger
        self.branch = branch
        self.as_of = as_of
        self.valid_at = valid_at
        self.segments = segments

    def _many(self, attr: Attribute) -> bool:
        return attr.many and self.as_of >= self.ledger._many_since.get(attr.ident, 0)

    def get(self, e: str) -> dict[str, Any] | None:
        """Current attribute values of `e`, or None when it has none."""
        rows = self.ledger.store.entity_datoms(check_id(e), self.segments)
        found = self.ledger._fold_entity(rows, self.valid_at, self.as_of)
        return found or None

    def value(self, e: str, a: str) -> Any:
        rows = self.ledger.store.entity_datoms(check_id(e), self.segments, a)
        return self.ledger._fold_entity(rows, self.valid_at, self.as_of).get(a)

    def get_json(self, e: str) -> dict[str, Any] | None:
        entity = self.get(e)
        if entity is None:
            return None
        out: dict[str, Any] = {"db/id": e}
        for a, v in entity.items():
            tag = self.ledger.attribute(a).tag
            out[a] = (
                [values.to_json(tag, x) for x in v]
                if isinstance(v, list)
                else values.to_json(tag, v)
            )
        return out

    def find(
        self, a: str, v: Any = None, *, limit: int | None = None, after: str = ""
    ) -> list[str]:
        """Entities whose current `a` is `v` (or who have `a` at all), in id order, paged."""
        attr = self.ledger.attribute(a)
        key, big = None, 0
        if v is not None:
            value = values.coerce(attr.type, v, a, self.ledger.default_tz)
            if attr.type == "ref":
                value = self.resolve_entity(value)
            key = values.encode(attr.tag, value)
            if len(key) > INLINE_LIMIT:
                key, big = hashlib.sha256(key).digest(), 1
        out: list[str] = []
        batch = 256
        while limit is None or len(out) < limit:
            ids = self.ledger.store.entities_with(a, key, big, self.segments, after, batch)
            for e in ids:
                current = self.value(e, a)
                if current is None:
                    continue
                if v is not None:
                    have = current if self._many(attr) else [current]
                    if value not in have:
                        continue
                out.append(e)
                if limit is not None and len(out) >= limit:
                    break
            if len(ids) < batch:
                break
            after = ids[-1]
        return out

    def refs(self, e: str) -> list[tuple[str, str]]:
        """(entity, attribute) pairs that currently refer to `e`."""
        out = []
        for src, a in self.ledger.store.referrers(e, values.REF, self.segments):
            current = self.value(src, a)
            have = current if isinstance(current, list) else [current]
            if e in have:
                out.append((src, a))
        return out

    def history(self, e: str, a: str | None = None) -> list[dict]:
        """Every datom about `e` (or `e`/`a`) visible to this view, with both time axes."""
        rows = self.ledger.store.entity_datoms(e, self.segments, a)
        txs = {}
        out = []
        for r in rows:
            tx = r[7]
            if tx not in txs:
                txs[tx] = self.ledger.store.tx_rows(tx, tx)[0]
            t = txs[tx]
            tag = r[2]
            out.append(
                {
                    "e": e,
                    "a": r[0],
                    "v": values.to_json(tag, self.ledger._decode(r[1], tag, r[3])),
                    "op": "add" if r[4] == ASSERT else "retract",
                    "valid_from": format_instant(r[5]),
                    "valid_to": format_instant(r[6]),
                    "tx": tx,
                    "tx_time": format_instant(t[4]),
                    "author": t[5],
                    "reason": t[7],
                }
            )
        return out

    def timeline(self, e: str, a: str) -> list[dict]:
        """What `e`/`a` was over valid time, as known in this view."""
        attr = self.ledger.attribute(a)
        rows = self.ledger.store.entity_datoms(e, self.segments, a)
        return [
            {
                "v": values.to_json(attr.tag, self.ledger._decode(r[1], r[2], r[3])),
                "valid_from": format_instant(vf),
                "valid_to": format_instant(vt),
                "tx": r[7],
            }
            for _k, vf, vt, r in fold.timeline(rows, self._many(attr))
        ]

    def intervals(self, e: str, a: str) -> list[tuple[Any, int, int]]:
        """`timeline` as (value, valid_from, valid_to) in microseconds, for code that
        computes with the intervals rather than showing them."""
        attr = self.ledger.attribute(a)
        rows = self.ledger.store.entity_datoms(e, self.segments, a)
        return [
            (self.ledger._decode(r[1], r[2], r[3]), vf, vt)
            for _k, vf, vt, r in fold.timeline(rows, self._many(attr))
        ]

    def resolve_entity(self, ref: Any) -> str:
        """An entity id from an id or a lookup ref `[unique-attr, value]`."""
        if isinstance(ref, list | tuple):
            if len(ref) != 2 or not isinstance(ref[0], str):
                raise BadInput(f"a lookup ref is [attribute, value], got {ref!r}")
            attr = self.ledger.attribute(ref[0])
            if attr.unique is None:
                raise SchemaError(f"{ref[0]} is not unique, so it cannot look an entity up")
            found = self.find(ref[0], ref[1], limit=1)
            if not found:
                raise NotFound(f"no entity has {ref[0]} = {ref[1]!r}")
            return found[0]
        return check_id(ref)

    def check_expectations(self, expect: Sequence[dict]) -> None:
        for i, exp in enumerate(expect):
            if not isinstance(exp, dict) or "e" not in exp or not isinstance(exp.get("a"), str):
                raise BadInput(f"expectation {i + 1} must be an object with 'e', 'a' and 'v'")
            attr = self.ledger.attribute(exp["a"])
            try:
                e = self.resolve_entity(exp["e"])
            except NotFound:
                e = None
            current = self.value(e, exp["a"]) if e else None
            wanted = exp.get("v")
            if wanted is not None:
                wanted = values.coerce(attr.type, wanted, exp["a"], self.ledger.default_tz)
            ok = (
                wanted in current
                if attr.many and wanted is not None and current
                else current == wanted
            )
            if not ok:
                shown = values.to_json(attr.tag, current) if not attr.many else current
                raise Conflict(
                    f"expectation failed: {exp['e']} {exp['a']} is {shown!r}, "
                    f"not {exp.get('v')!r} (re-read and retry)"
                )


@dataclass
class _Prepared:
    datoms: list[Datom]
    tempids: dict[str, str]


class _Preparer:
    """Turns user ops into checked datoms: resolves ids, coerces values, enforces schema."""

    def __init__(
        self,
        ledger: Ledger,
        view: View,
        time_us: int,
        system: bool,
        replay: bool,
        declared: dict[str, Attribute] | None = None,
        system_ops: int = 0,
    ):
        self.ledger, self.view, self.time, self.system = ledger, view, time_us, system
        # A replay (a merge) carries datoms from several transactions: later ones win,
        # as they did on the branch, so two values for one time are not a mistake there.
        self.replay = replay
        # Attributes this transaction declares itself, usable by its other ops; the first
        # `system_ops` ops are those declarations (db/* facts only keel may write).
        self.schema = {**ledger._schema, **declared} if declared else ledger._schema
        self.system_ops = system_ops
        self.tempids: dict[str, str] = {}

    def prepare(self, ops: Sequence[dict]) -> _Prepared:
        parsed = [self._parse(i, op) for i, op in enumerate(ops)]
        self._upsert_tempids(parsed)
        self._mint_tempids(parsed)
        datoms = []
        entity, tempids, max_id, now = self._entity, self.tempids, _MAX_ID, self.time
        for op, attr, e_raw, value in parsed:
            if type(e_raw) is str and 0 < len(e_raw) <= max_id and e_raw.isprintable():
                e = tempids[e_raw] if e_raw[0] == "#" else check_id(e_raw)
            else:
                e = entity(e_raw)
            if attr.type == "ref":
                value = entity(value)
            if "valid_from" in op or "valid_to" in op:
                vf, vt = self._interval(op)
            else:
                vf, vt = now, FOREVER
            datoms.append(Datom(e, attr.ident, value, _OPS[op.get("op", "add")], vf, vt, attr))
        self._check(datoms)
        return _Prepared(datoms, dict(self.tempids))

    def _parse(self, i: int, op: Any) -> tuple[dict, Attribute, Any, Any]:
        if type(op) is not dict or not op.keys() <= _OP_FIELDS or not op.keys() >= _OP_NEEDS:
            raise _malformed(i, op)
        if not isinstance(op.get("op", "add"), str) or op.get("op", "add") not in _OPS:
            raise BadInput(f"op {i + 1}: 'op' must be add or retract, got {op.get('op')!r}")
        a = op["a"]
        attr = self.schema.get(a) if type(a) is str else None
        if attr is None:
            if not isinstance(a, str):
                raise BadInput(f"op {i + 1}: 'a' must be an attribute name")
            attr = self.ledger.attribute(a)
        if attr.ident in BUILTIN and not (self.system or i < self.system_ops):
            raise SchemaError(f"{a} is written by keel itself, not by a transaction")
        value = op["v"]
        if value is None:
            raise SchemaError(f"op {i + 1}: {a} needs a value (use retract to remove one)")
        vtype = attr.type
        if vtype == "string" and type(value) is str and value.isascii():
            pass  # the common case, already valid
        elif vtype != "ref":
            value = values.coerce(vtype, value, a, self.ledger.default_tz)
        return op, attr, op["e"], value

    def _upsert_tempids(self, parsed: list) -> None:
        """A temp id asserting a unique-identity value already held resolves to its holder."""
        for op, attr, e_raw, value in parsed:
            if not (_is_tempid(e_raw) and attr.unique == "identity" and op.get("op") != "retract"):
                continue
            if attr.ident not in self.ledger._schema:
                continue  # declared by this very transaction: nothing holds it yet
            holder = self.view.find(attr.ident, value, limit=1)
            if holder:
                bound = self.tempids.setdefault(e_raw, holder[0])
                if bound != holder[0]:
                    raise SchemaError(f"{e_raw} matches two existing entities by identity")

    def _mint_tempids(self, parsed: list) -> None:
        """Give every temp id not bound by identity a fresh ULID, in order of appearance."""
        fresh: dict[str, None] = {}
        for _op, attr, e_raw, value in parsed:
            for ref in (e_raw, value) if attr.type == "ref" else (e_raw,):
                if _is_tempid(ref) and ref not in self.tempids:
                    if len(ref) < 2:
                        raise BadInput("a temp id needs a name after '#'")
                    fresh[ref] = None
        self.tempids.update(zip(fresh, new_ulids(len(fresh), self.time), strict=True))

    def _entity(self, ref: Any) -> str:
        if isinstance(ref, str):
            if ref[:1] == "#":
                return self.tempids[ref]
            if len(ref) <= _MAX_ID:
                return ref or self.view.resolve_entity(ref)
        return self.view.resolve_entity(ref)

    def _interval(self, op: dict) -> tuple[int, int]:
        def instant(key: str, default: int) -> int:
            raw = op.get(key)
            if raw is None:
                return default
            if isinstance(raw, int) and not isinstance(raw, bool):
                if not SINCE_ALWAYS <= raw <= FOREVER:
                    raise BadInput(f"{key} {raw} is outside 64-bit microseconds")
                return raw
            return parse_instant(raw, self.ledger.default_tz)

        vf = instant("valid_from", self.time)
        vt = instant("valid_to", FOREVER)
        if vf >= vt:
            raise BadInput(f"valid_from must be before valid_to in {op!r}")
        return vf, vt

    def _check(self, datoms: list[Datom]) -> None:
        asserted: dict[tuple[str, str], list[Datom]] = {}
        unique: list[Datom] = []
        released: set[tuple[str, str, Any]] = set()
        for d in datoms:
            attr = d.attr
            if d.op == ASSERT:
                if not attr.many and not self.replay:
                    for other in asserted.get((d.e, d.a), []):
                        if other.value != d.value and other.vf < d.vt and d.vf < other.vt:
                            raise SchemaError(
                                f"{d.a} has cardinality one, but this transaction gives {d.e} "
                                f"two values for the same time: {other.value!r} and {d.value!r}"
                            )
                asserted.setdefault((d.e, d.a), []).append(d)
                if attr.unique:
                    unique.append(d)
            else:
                released.add((d.e, d.a, _hashable(d.value)))
                same_tx = any(x.value == d.value for x in asserted.get((d.e, d.a), []))
                if not same_tx and not self._ever_asserted(d):
                    raise SchemaError(f"{d.e} has no {d.a} = {d.value!r} to retract")
        if unique:
            self._check_unique(unique, asserted, released)

    def _check_unique(self, unique: list[Datom], asserted: dict, released: set) -> None:
        """A unique value may have one holder, counting what this transaction releases:
        a retraction, or a cardinality-one holder moving on to another value."""
        seen: dict[tuple[str, Any], str] = {}
        for d in unique:
            key = _hashable(d.value)
            holder = seen.setdefault((d.a, key), d.e)
            if holder != d.e:
                raise SchemaError(
                    f"{d.a} is unique, but {holder} and {d.e} both take {d.value!r} "
                    "in this transaction"
                )
            if d.a not in self.ledger._schema:
                continue  # declared by this very transaction: no one else holds it
            for other in self.view.find(d.a, d.value, limit=2):
                moved = any(x.value != d.value for x in asserted.get((other, d.a), []))
                if other != d.e and (other, d.a, key) not in released and not moved:
                    raise SchemaError(f"{d.a} is unique and {other} already has {d.value!r}")

    def _ever_asserted(self, d: Datom) -> bool:
        data = values.encode(d.attr.tag, d.value)
        if len(data) > INLINE_LIMIT:
            data = hashlib.sha256(data).digest()
        rows = self.ledger.store.entity_datoms(d.e, self.view.segments, d.a)
        return any(r[4] == ASSERT and r[1] is not None and bytes(r[1]) == data for r in rows)


_OP_FIELDS = frozenset({"op", "e", "a", "v", "valid_from", "valid_to"})
_OP_NEEDS = frozenset({"e", "a", "v"})
_OPS = {"add": ASSERT, "retract": RETRACT}


def _malformed(i: int, op: Any) -> BadInput:
    """Name what is wrong with a malformed op."""
    where = f"op {i + 1}"
    if not isinstance(op, dict):
        return BadInput(f"{where} must be an object, got {op!r}")
    unknown = set(op) - _OP_FIELDS
    if unknown:
        return BadInput(f"{where} has unknown field(s) {sorted(unknown)}")
    missing = sorted(_OP_NEEDS - set(op))
    return BadInput(f"{where} is missing {', '.join(map(repr, missing))}")


def check_id(ref: Any) -> str:
    """An entity id: a non-empty string of at most 512 characters, valid Unicode, no NUL
    (which PostgreSQL text cannot hold, so both stores refuse it alike)."""
    if not isinstance(ref, str) or not ref or len(ref) > _MAX_ID:
        raise BadInput(f"an entity id must be a non-empty string of at most {_MAX_ID} characters")
    if not ref.isascii():
        values.check_text(ref, "an entity id")
    if "\x00" in ref:
        raise BadInput("an entity id cannot contain a NUL character")
    return ref


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def _is_tempid(ref: Any) -> bool:
    return isinstance(ref, str) and ref.startswith("#")
