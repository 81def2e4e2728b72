"""The ledger: signed, hash-chained, bitemporal transactions over a store.

Every write goes through `Ledger._commit`, which validates against the schema (`prepare`),
checks preconditions and guards, signs and chains (`transactions.seal`) and commits under
the store's write lock. That one path is where governance plugs in (`add_guard`). Reads
go through views (`view`) or, for followers of the whole history, `tx_range`.

The other ideas live beside it: branches, identities, restore, proofs, verification and
exchange; the ledger holds them together and keeps their public methods in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, tzinfo
from pathlib import Path
from typing import IO, Any

from . import encoding, exchange, fold, forget, history, proofs, values
from .branches import (
    MAIN,
    Branch,
    BranchRegistry,
    branch_entity,
    closing_op,
    creation_ops,
    replay_ops,
)
from .branches import check_name as check_branch_name
from .encoding import ASSERT
from .errors import BadInput, Conflict, Corrupt, KeelError, NotFound, Refused, SchemaError
from .forget import Forgetting, Forgotten
from .history import TxRecord
from .identities import (
    check_author,
    check_genesis,
    identity_entity,
    registration_ops,
    revocation_ops,
)
from .identities import check_name as check_identity_name
from .identities import listing as identity_listing
from .instants import SINCE_ALWAYS, format_instant, now_us, parse_instant
from .merkle import MerkleLog
from .prepare import Preparer, check_id
from .restore import restore_ops
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
from .stores.rows import DatomRow, Fact, Head, TxRow
from .transactions import Datom, Guard, PendingTx, TxResult, seal
from .verify import Report, verify_store
from .view import View

# Names other packages import from here (keel.ledger.ledger) since before the split.
__all__ = [
    "MAIN",
    "Branch",
    "Datom",
    "Guard",
    "Ledger",
    "PendingTx",
    "TxResult",
    "View",
    "branch_entity",
    "check_id",
    "identity_entity",
]

#: The head of a ledger with no transactions: what the genesis links to.
EMPTY_HEAD = Head(0, encoding.ZERO_HASH, SINCE_ALWAYS)


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
        #: Ops added to each transaction this connection commits (not replays), given its
        #: number: how a caller marks what its writes were for (governance's evidence).
        self.stamp: Callable[[int], list[dict]] | None = None
        #: Rewrites each transaction's (ops, reason) before they are prepared, so what
        #: must never be stored (a secret's value) never reaches the store in any form.
        self.redact: Callable[[tuple], tuple] | None = None
        self._guards: list[Guard] = []
        self._listeners: list[Callable[[TxResult], None]] = []
        self._schema: dict[str, Attribute] = dict(BUILTIN)
        self._schema_tx = -1
        self._many_since: dict[str, int] = {}
        self._branches = BranchRegistry(store, self._decode)
        self._merkle = proofs.MerkleCache(store)
        self._erasures = forget.Erasures(store, self._decode)

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
    def _refresh_schema(self, version: int | None = None) -> None:
        """Re-read the schema if a schema transaction landed since (`version`: the newest
        one, when the caller already knows it)."""
        if version is None:
            version = self.store.schema_version()
        if version == self._schema_tx:
            return
        rows = self.store.attr_datoms(SCHEMA_ATTRS, [(0, version)])
        by_entity: dict[str, list[Fact]] = {}
        for row in rows:
            by_entity.setdefault(row.e, []).append(row.fact)
        current = {}
        for e, rs in by_entity.items():
            # A declaration damaged behind the ledger's back is left out, so the rest can
            # still be read — `keel verify` above all, which names the damage.
            with contextlib.suppress(Corrupt):
                current[e] = self._fold_entity(rs, fold.LATEST)
        self._schema = {**fold_schema(current), **BUILTIN}
        # When each attribute became cardinality many: older views still fold it as one.
        self._many_since = {}
        for r in rows:
            if (
                r.a == "db/cardinality"
                and r.op == ASSERT
                and r.v is not None
                and bytes(r.v) == b"many"
            ):
                self._many_since.setdefault(r.e.removeprefix("attr:"), r.tx)
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
    def branch(self, name: str, refresh: bool = True) -> Branch:
        return self._branches.get(name, refresh)

    def branches(self) -> list[Branch]:
        return self._branches.all()

    def _branch_by_id(self, bid: int) -> Branch:
        return self._branches.by_id(bid)

    def segments(self, branch: Branch, upto: int) -> list[tuple[int, int]]:
        """The (branch id, last tx) ranges a view of `branch` as of `upto` can see."""
        return self._branches.segments(branch, upto)

    def create_branch(
        self, name: str, at: int | None = None, signer: Signer | None = None
    ) -> Branch:
        check_branch_name(name)
        self._commit(
            lambda view: creation_ops(self._branches, view, name, at),
            reason=f"create branch {name}",
            signer=signer,
            system=True,
        )
        return self.branch(name)

    def drop_branch(self, name: str, signer: Signer | None = None) -> TxResult:
        result = self._commit(
            lambda view: [closing_op(self._branches, name, "dropped")],
            reason=f"drop branch {name}",
            signer=signer,
            system=True,
        )
        assert result is not None
        return result

    def merge_branch(self, name: str, signer: Signer | None = None) -> TxResult:
        """Replay a branch's datoms onto its parent, unless the parent changed the same
        entity-attribute since the fork; then raise a Conflict naming each clash."""
        if name == MAIN:
            raise BadInput(f"{MAIN} is the trunk every branch forks from; it cannot be merged")
        source = self.branch(name)
        if source.state != "open":
            raise Conflict(f"branch {name!r} is already {source.state}")
        parent = self._branch_by_id(source.parent)

        def build(view: View) -> list[dict]:
            close = closing_op(self._branches, name, "merged")
            return [*replay_ops(self._branches, source, parent), close]

        result = self._commit(
            build,
            reason=f"merge branch {name}",
            signer=signer,
            system=True,
            branch=parent.name,
            replay=True,
        )
        assert result is not None
        return result

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
            head = self.head()
            tx = head.id
            # Now, but never before the newest transaction: a clock behind the ledger (a
            # test clock, a skewed host) still sees what was just written as current.
            default_valid = max(self.clock(), head.time)
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
        found = self.store.tx_time(tx)
        return SINCE_ALWAYS if found is None else found

    def decode(self, d: DatomRow) -> Any:
        """A stored datom's value (None when it has none)."""
        return self._decode(d.v, d.vtype, d.big)

    def _decode(self, v: bytes | None, tag: int, big: int) -> Any:
        if v is None:
            return None
        if big == forget.ERASED:
            return self._erasures.marker(v)
        data = bytes(v)
        if big:
            blob = self.store.get_blob(data)
            if blob is None:
                raise KeelError(f"blob {data.hex()} is missing from the blob store")
            data = blob
        try:
            return values.decode(tag, data)
        except (ValueError, TypeError, struct.error) as exc:
            # Bytes that do not decode were changed behind the ledger's back: a reader says
            # so in one sentence; `keel verify` names the transaction.
            raise Corrupt(
                f"a stored value cannot be read ({type(exc).__name__}); the ledger is damaged: "
                "'keel verify' names the first bad transaction"
            ) from None

    def _fold_entity(
        self, rows: Sequence[Fact], at: int, as_of: int | None = None, marked: bool = False
    ) -> dict[str, Any]:
        """Values at valid instant `at`, with each attribute's cardinality as of `as_of`.
        A forgotten value is its marker when `marked` (reads that show), else absent
        (reads that compute); either way it folds as the value it was."""
        out: dict[str, Any] = {}
        decode = self._decode
        for a, group in fold.group_by_attr(self._readable(rows)).items():
            attr = self._schema.get(a) or self.attribute(a)
            if attr.many and (as_of is None or as_of >= self._many_since.get(a, 0)):
                live = [decode(r.v, r.vtype, r.big) for r in fold.fold_many(group, at)]
                if not marked:
                    live = [v for v in live if not isinstance(v, Forgotten)]
                if live:
                    out[a] = live
            else:
                row = fold.fold_one(group, at)
                if row is not None:
                    value = decode(row.v, row.vtype, row.big)
                    if marked or not isinstance(value, Forgotten):
                        out[a] = value
        return out

    def _readable(self, rows: Sequence[Fact]) -> Sequence[Fact]:
        """`rows` with each erased one standing for its forgetting (see `forget.Erasures`):
        folding still counts it, and decoding it gives the marker."""
        for r in rows:
            if r[1] is None:
                break
        else:
            return rows  # the usual case: nothing forgotten
        return [self._erasures.row(r) if r[1] is None else r for r in rows]

    def _shown(self, tx: int, idx: int, v: bytes | None, tag: int, big: int) -> Any:
        """A stored datom's value, or its forgetting's marker when it was erased."""
        return self._erasures.marker_of(tx, idx) if v is None else self._decode(v, tag, big)

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
        after: Callable[[], None] | None = None,
    ) -> TxResult | None:
        """The one write path. `after` runs in the same store transaction once the rows
        are in (a forgetting's erasure: both commit, or neither does)."""
        signer = signer or self.signer
        wanted = [parse_declaration(d) for d in declare]
        if signer is None:
            raise Refused("no identity to sign with (open the ledger with a signer)")
        if not isinstance(reason, str):
            raise BadInput("'reason' must be a string")
        if "\x00" in reason:
            raise BadInput("a reason cannot contain a NUL character")
        with self.store.write():
            # The head, the schema version and the signer's keys, read together: on
            # PostgreSQL in the same round trip as the BEGIN and the lock.
            start = self.store.write_start(identity_entity(signer.name))
            head = start.head or EMPTY_HEAD
            seq = head.id + 1
            self._refresh_schema(start.schema_version)
            b = self.branch(branch)
            if b.state != "open":
                raise BadInput(f"branch {branch!r} is {b.state}; it takes no more writes")
            time_us = max(self.clock(), head.time)
            view = View(self, b, head.id, time_us, self.segments(b, head.id))
            ops = build(view)
            if not ops:
                return None
            if self.redact is not None and not replay:
                ops, reason = self.redact((list(ops), reason))
            if self.stamp is not None and not replay:
                ops = [*ops, *self.stamp(seq)]
            new_attrs, declared_ops = self._declaration_ops(wanted)
            if declared_ops and b.id != 0:
                raise SchemaError("declare attributes on main, not on a branch")
            prepared = Preparer(
                self, view, time_us, system, replay, new_attrs, len(declared_ops)
            ).prepare([*declared_ops, *ops])
            if start.head is None:
                check_genesis(prepared.datoms, signer)
            else:
                check_author(start.author_keys, signer)
            if system and b.id != 0 and any(d.a in SCHEMA_ATTRS for d in prepared.datoms):
                raise SchemaError("declare attributes on main, not on a branch")
            pending = PendingTx(seq, b.name, signer.name, reason, time_us, prepared.datoms, view)
            for guard in self._guards:
                guard(pending)
            sealed = seal(pending, b.id, head.hash, signer)
            self.store.insert(sealed.tx, sealed.datoms, sealed.blobs)
            if after is not None:
                after()
        self._merkle.committed(seq, sealed.tx.hash)
        result = TxResult(seq, sealed.tx.hash.hex(), time_us, b.name, prepared.tempids)
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

    # -- identities and recovery ---------------------------------------------------------
    def register_identity(
        self, name: str, public_key: bytes, role: str = "agent", signer: Signer | None = None
    ) -> TxResult | None:
        """Record an identity's public key so its transactions verify."""
        check_identity_name(name)
        return self._commit(
            lambda view: registration_ops(view, name, public_key, role),
            reason=f"register identity {name}",
            signer=signer,
            system=True,
        )

    def identities(self) -> list[dict]:
        return identity_listing(self.view())

    def revoke_identity(self, name: str, signer: Signer | None = None) -> TxResult:
        """Retract every key of `name` in one transaction (see `revocation_ops`)."""
        result = self._commit(
            lambda view: revocation_ops(view, name),
            reason=f"revoke identity {name}",
            signer=signer,
            system=True,
        )
        assert result is not None
        return result

    def last_tx_of(self, author: str) -> TxRow | None:
        """The newest transaction `author` signed, if any."""
        return self.store.last_tx_of(author)

    def restore(
        self, e: str, to: int | str, branch: str = MAIN, signer: Signer | None = None
    ) -> TxResult | None:
        """Make `e` read again as it did as of transaction `to`, in a new transaction.

        Works along both axes: every attribute's whole valid-time timeline is put back.
        Returns None when the entity already matches.
        """
        b = self.branch(branch)
        target = self.resolve_tx(to)
        return self._commit(
            lambda view: restore_ops(self, view, e, self.segments(b, target)),
            reason=f"restore {e} to tx {target}",
            signer=signer,
            branch=branch,
            system=e.startswith(("attr:", "identity:", "branch:")),
        )

    # -- forgetting -----------------------------------------------------------------------
    def forget(
        self,
        e: str,
        a: str | None = None,
        value: Any = None,
        *,
        why: str,
        signer: Signer | None = None,
        also: Sequence[tuple[str, str]] = (),
    ) -> Forgetting:
        """Erase the value bytes and salts of `e`'s datoms — of attribute `a` only, and
        holding `value` only, when given — on every branch and at every point of history,
        in one signed transaction that records the forgetting (docs/ledger-format.md §12).

        `also` names (entity, attribute) pairs elsewhere that quote what is forgotten (a
        request to forget it, say); their datoms are erased in the same step. Large values
        no datom refers to any more leave the blob store, and the store then scrubs its own
        copies (free pages, log, dead row versions). The chain still verifies; reads show
        each erased value as forgotten, with who, when and why."""
        why = forget.check_why(why)
        e = check_id(e)
        forget.check_target(e, a)
        attr = self.attribute(a) if a is not None else None
        key = None
        if value is not None:
            if attr is None:
                raise BadInput("forgetting one value needs the attribute that holds it")
            key = self._stored_form(attr, value)
        erased: list[Fact] = []
        quoting: list[Fact] = []
        dropped: list[bytes] = []

        def build(view: View) -> list[dict]:
            found = self.store.entity_datoms(e, None, a)
            rows = [r for r in found if r.v is not None]
            if key is not None:
                rows = [r for r in rows if (bytes(r.v), r.big) == key]
            elif a is None:
                forget.check_rows(e, rows)
            if not rows:
                raise NotFound(_nothing_to_forget(e, a, key is not None, bool(found)))
            quoted = [
                r
                for qe, qa in also
                if not qa.startswith(forget.STRUCTURAL_ATTRS)
                for r in self.store.entity_datoms(qe, None, qa)
                if r.v is not None
            ]
            erased[:] = rows + quoted
            quoting[:] = quoted
            return forget.record_ops(view.as_of + 1, e, a, why, forget.groups(erased))

        def erase() -> None:
            self.store.erase_values([(r.tx, r.idx) for r in erased])
            big = sorted({bytes(r.v) for r in erased if r.big and r.v is not None})
            used = self.store.blobs_in_use(big, list(self._schema)) if big else set()
            dropped[:] = [d for d in big if d not in used]
            self.store.drop_blobs(dropped)

        target = f"{e} {a}" if a else e
        result = self._commit(
            build, f"forget {target}: {why}", signer=signer, system=True, after=erase
        )
        assert result is not None
        notes = self.store.scrub()
        quotes = len(quoting)
        return Forgetting(result, e, a, len(erased) - quotes, quotes, len(dropped), notes)

    def _stored_form(self, attr: Attribute, value: Any) -> tuple[bytes, int]:
        """How a store keeps `value` of `attr`: its canonical bytes inline, or its SHA-256
        with the big flag when it lives in the blob store."""
        coerced = values.coerce(attr.type, value, attr.ident, self.default_tz)
        if attr.type == "ref":
            coerced = self.view().resolve_entity(coerced)
        data = values.encode(attr.tag, coerced)
        if len(data) > INLINE_LIMIT:
            return hashlib.sha256(data).digest(), 1
        return data, 0

    def positions(self, e: str, a: str | None = None) -> list[tuple[int, int]]:
        """Where each datom of `e` (or of `e`'s `a`) sits, (tx, idx), on every branch:
        what a forgetting of it would reach."""
        return [(r.tx, r.idx) for r in self.store.entity_datoms(check_id(e), None, a)]

    def entity_committed(self, e: str, upto: int) -> list[dict]:
        """`committed`'s datoms for one entity, on main up to transaction `upto`: for a
        follower that rebuilds what it derived from one entity (after a forgetting)."""
        rows = self.store.entity_datoms(check_id(e), [(0, upto)])
        txs = {t: self.store.tx_rows(t, t)[0] for t in sorted({r.tx for r in rows})}
        return [
            {
                "tx": r.tx,
                "e": e,
                "a": r.a,
                "v": self._decode(r.v, r.vtype, r.big),
                "op": "add" if r.op == ASSERT else "retract",
                "valid_from": r.vf,
                "valid_to": r.vt,
                "tx_time": txs[r.tx].time,
                "author": txs[r.tx].author,
            }
            for r in rows
        ]

    # -- history -------------------------------------------------------------------------
    def head(self) -> Head:
        """The newest transaction (id, hash, time); id 0 for an empty ledger, whose hash is
        the 32 zero bytes the genesis links to."""
        return self.store.head() or EMPTY_HEAD

    def tx_range(self, after: int = 0, until: int | None = None) -> Iterator[TxRecord]:
        """Committed transactions after `after` up to and including `until` (None: the
        newest now), oldest first, each with its stored datoms: the one reader for
        everything that follows the whole history (bus, recall index, export, verify)."""
        return history.tx_range(self.store, after, until)

    def committed(self, after: int, limit: int = 500) -> tuple[list[dict], int]:
        """Decoded datoms of main-branch transactions after tx `after` (at most `limit`
        transactions), oldest first, and the last tx id read. Followers (the recall index)
        page through the ledger with this."""
        hi = min(self.head().id, after + limit)
        if hi <= after:
            return [], after
        out = []
        for record in self.tx_range(after, hi):
            tx = record.tx
            if tx.branch != 0:
                continue
            for d in record.datoms:
                out.append(
                    {
                        "tx": tx.id,
                        "e": d.e,
                        "a": d.a,
                        "v": self._decode(d.v, d.vtype, d.big),
                        "op": "add" if d.op == ASSERT else "retract",
                        "valid_from": d.vf,
                        "valid_to": d.vt,
                        "tx_time": tx.time,
                        "author": tx.author,
                    }
                )
        return out, hi

    def log(self, since: int = 0, branch: str | None = None) -> Iterator[dict]:
        """One dict per transaction, oldest first; on a branch, what that branch can see."""
        if branch is None:
            ranges: list[tuple[int | None, int | None]] = [(None, None)]
        else:
            ranges = list(self.segments(self.branch(branch), self.head().id))
        for bid, upto in ranges:
            for row in self.store.tx_rows(since + 1, upto, [bid] if bid is not None else ()):
                yield self._tx_json(row)

    def _tx_json(self, row: TxRow) -> dict:
        return {
            "tx": row.id,
            "hash": bytes(row.hash).hex(),
            "prev": bytes(row.prev).hex(),
            "branch": self._branch_by_id(row.branch).name,
            "time": format_instant(row.time),
            "author": row.author,
            "key": bytes(row.key).hex(),
            "reason": row.reason,
            "root": bytes(row.root).hex(),
            "datoms": row.n,
            "sig": bytes(row.sig).hex(),
        }

    # -- integrity and exchange ----------------------------------------------------------
    def verify(self, workers: int | None = None, progress=None) -> Report:
        """Recompute the whole history and check the store's own integrity; the report
        names the first bad transaction."""
        return verify_store(self.store, workers, progress)

    def verify_incremental(self, workers: int | None = None, progress=None) -> Report:
        """Verify what was written after the newest trustworthy checkpoint (every
        transaction, when there is none), then every checkpoint and the store's own
        integrity. `Report.since` is that checkpoint's size: transactions up to it were
        trusted through its signed Merkle root, not recomputed."""
        return verify_store(self.store, workers, progress, incremental=True)

    def export(self, out: IO[str]) -> int:
        return exchange.export(self.store, out, self._erasures.positions())

    def import_file(self, path: Path) -> int:
        count = exchange.import_file(self.store, path)
        self._merkle.forget()
        return count

    # -- log and Merkle ------------------------------------------------------------------
    def merkle_log(self) -> MerkleLog:
        """The Merkle log over every transaction hash, kept up to date incrementally."""
        return self._merkle.log()

    def inclusion_proof(self, tx: int | str) -> dict:
        log = self.merkle_log()
        seq = self.resolve_tx(tx)
        if seq == 0:
            raise NotFound("transaction 0 does not exist")
        (row,) = self.store.tx_rows(seq, seq)
        return proofs.inclusion_proof(log, seq, bytes(row.hash))

    def consistency_proof(self, old_size: int, new_size: int) -> dict:
        return proofs.consistency_proof(self.merkle_log(), old_size, new_size)

    def checkpoint(self, signer: Signer | None = None) -> dict:
        """Sign (size, root, time) of the Merkle log with the operator's key."""
        signer = signer or self.signer
        if signer is None:
            raise Refused("no identity to sign the checkpoint with")
        with self.store.write():
            cp = proofs.sign_checkpoint(self.merkle_log(), self.clock(), signer)
            self.store.add_checkpoint(cp)
        return proofs.checkpoint_json(cp)


def _nothing_to_forget(e: str, a: str | None, by_value: bool, any_datoms: bool) -> str:
    """Why a forgetting found nothing to erase, without repeating the value asked for."""
    what = f"{e} {a}" if a else e
    if by_value:
        return f"no datom of {what} holds that value on any branch (or it is forgotten already)"
    if any_datoms:
        return f"every value of {what} is forgotten already"
    return f"there is nothing to forget: {what} has no datoms on any branch"
