"""Ledger operations: transactions, reads along both time axes, schema, branches,
forgetting, integrity proofs, export and import."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Annotated, Any, Literal

from pydantic import Field

from ..errors import BadInput, NotFound
from ..govern import approvals
from ..ledger import MAIN
from ..ledger.text import entity_ref, typed_value
from ..ledger.verify import describe_failure
from .call import Call
from .models import (
    AsOf,
    Branch,
    EntityRef,
    Input,
    Limit,
    LocalPath,
    Name,
    NoArguments,
    Output,
    TxNumber,
    TxResult,
    ValidAt,
    Written,
)
from .registry import operation


def _tx_result(result: Any) -> TxResult:
    return TxResult.model_validate(result.to_json())


def _entity(call: Call, ref: str | list[Any], branch: str = MAIN) -> str:
    view = call.ledger.view(branch)
    return view.resolve_entity(ref if isinstance(ref, list) else entity_ref(ref))


# -- writing ----------------------------------------------------------------------------------
class TransactIn(Input):
    ops: list[dict[str, Any]] = Field(
        description='[{"op": "add"|"retract", "e": id|"#temp"|[attr, value], "a", "v", '
        '"valid_from"?, "valid_to"?}]'
    )
    reason: Annotated[str, Field(max_length=10_000)] = ""
    expect: list[dict[str, Any]] = Field(
        default_factory=list, description='Compare-and-set: [{"e", "a", "v"}] (v null = absent).'
    )
    branch: Branch = MAIN


@operation("ledger.transact", capability="ledger.write", writes=True)
def transact(call: Call, p: TransactIn) -> TxResult:
    """Commit a transaction document atomically, if every expectation holds.

    Signed with the caller's key. A failed expectation is a conflict: re-read and retry."""
    for i, op in enumerate(p.ops, start=1):
        if not isinstance(op.get("op", "add"), str):
            raise BadInput(f"op {i}: 'op' must be add or retract")
        if "a" in op and not isinstance(op["a"], str):
            raise BadInput(f"op {i}: 'a' must be an attribute name")
    for i, exp in enumerate(p.expect, start=1):
        if not isinstance(exp.get("a"), str):
            raise BadInput(f"expectation {i} needs 'a', an attribute name")
    result = call.ledger.transact(
        p.ops, reason=p.reason, expect=p.expect, branch=p.branch, signer=call.signer
    )
    return _tx_result(result)


# -- reading ----------------------------------------------------------------------------------
class GetIn(Input):
    entity: EntityRef
    as_of: AsOf = None
    valid_at: ValidAt = None
    branch: Branch = MAIN


@operation("ledger.get", capability="ledger.read", writes=False)
def get(call: Call, p: GetIn) -> dict[str, Any]:
    """An entity's values: now, as of a transaction or instant, at a valid instant.

    The answer is `{"db/id": id, attribute: value, ...}`."""
    view = call.ledger.view(p.branch, p.as_of, p.valid_at)
    e = view.resolve_entity(p.entity if isinstance(p.entity, list) else entity_ref(p.entity))
    found = view.get_json(e)
    if found is None:
        raise NotFound(f"entity {e} has no values in this view")
    return found


class HistoryIn(Input):
    entity: EntityRef
    attribute: Annotated[str | None, Field(max_length=200)] = None
    branch: Branch = MAIN


class HistoryEntry(Output):
    e: str
    a: str
    v: Any
    op: Literal["add", "retract"]
    valid_from: str | None
    valid_to: str | None
    tx: int
    tx_time: str
    author: str
    reason: str


@operation("ledger.history", capability="ledger.read", writes=False)
def history(call: Call, p: HistoryIn) -> list[HistoryEntry]:
    """Every change to an entity (or one attribute) along both time axes."""
    view = call.ledger.view(p.branch)
    e = _entity(call, p.entity, p.branch)
    if p.attribute:
        call.ledger.attribute(p.attribute)
    rows = view.history(e, p.attribute)
    if not rows:
        what = f" for {p.attribute}" if p.attribute else ""
        raise NotFound(f"entity {e} has no history{what}")
    return [HistoryEntry.model_validate(r) for r in rows]


class FindIn(Input):
    attribute: Name
    value: Annotated[
        str | int | float | bool | None,
        Field(description="The value to match, read by the attribute's type when text."),
    ] = None
    limit: Limit = 100
    after: Annotated[str, Field(max_length=512, description="Page on after this id.")] = ""
    as_of: AsOf = None
    valid_at: ValidAt = None
    branch: Branch = MAIN


class FindPage(Output):
    entities: list[str]
    next: str | None = Field(description="Pass as `after` for the next page; null at the end.")


@operation("ledger.find", capability="ledger.read", writes=False)
def find(call: Call, p: FindIn) -> FindPage:
    """Entities whose current attribute has a value (or that have the attribute), paged."""
    ledger = call.ledger
    view = ledger.view(p.branch, p.as_of, p.valid_at)
    value = p.value
    if isinstance(value, str):
        value = typed_value(ledger, p.attribute, value)
    found = view.find(p.attribute, value, limit=p.limit, after=p.after)
    return FindPage(entities=found, next=found[-1] if len(found) >= p.limit else None)


class LogIn(Input):
    since: AsOf = Field(0, description="Only transactions after this one (number, hash, instant).")
    branch: Annotated[str | None, Field(max_length=64)] = None
    limit: Limit = 1000


class TxInfo(Output):
    tx: int
    hash: str
    prev: str
    branch: str
    time: str
    author: str
    key: str
    reason: str
    root: str
    datoms: int
    sig: str


class LogPage(Output):
    transactions: list[TxInfo]
    next: int | None = Field(description="Pass as `since` for the next page; null at the end.")


@operation("ledger.log", capability="ledger.read", writes=False)
def log(call: Call, p: LogIn) -> LogPage:
    """Transactions, oldest first, paged: who signed what, when and why."""
    ledger = call.ledger
    since = ledger.resolve_tx(p.since) if p.since not in (None, 0, "0") else 0
    out: list[TxInfo] = []
    for entry in ledger.log(since, p.branch):
        out.append(TxInfo.model_validate(entry))
        if len(out) >= p.limit:
            break
    return LogPage(transactions=out, next=out[-1].tx if len(out) >= p.limit else None)


# -- schema -----------------------------------------------------------------------------------
class AttributeInfo(Output):
    attribute: str
    type: str
    cardinality: str
    unique: str | None
    fulltext: bool
    doc: str


@operation("schema.list", capability="schema.read", writes=False)
def schema_list(call: Call, p: NoArguments) -> list[AttributeInfo]:
    """Declared attributes."""
    attrs = sorted(call.ledger.schema.values(), key=lambda a: a.ident)
    return [AttributeInfo.model_validate(a.to_json()) for a in attrs]


class SchemaAddIn(Input):
    attributes: list[dict[str, Any]] = Field(
        min_length=1,
        description='[{"attribute": "ns/name", "type": "string|int|float|bool|instant|ref|'
        'json|bytes", "cardinality"?, "unique"?, "fulltext"?, "doc"?}]',
    )


class Declared(Output):
    tx: int | None = Field(description="The transaction, or null when nothing changed.")
    unchanged: bool


def _schema_basis(call: Call, p: SchemaAddIn) -> dict:
    """The attributes as declared now (an approved change must find them unchanged)."""
    schema = call.ledger.schema
    out: dict[str, Any] = {}
    for d in p.attributes:
        name = d.get("attribute")
        if isinstance(name, str):
            a = schema.get(name)
            out[name] = None if a is None else [a.type, a.cardinality, a.unique, a.fulltext, a.doc]
    return out


@operation("schema.add", capability="schema.write", writes=True, basis=_schema_basis)
def schema_add(call: Call, p: SchemaAddIn) -> Declared:
    """Declare attributes (forward-only changes: a type never changes, cardinality widens)."""
    result = call.ledger.declare(p.attributes, signer=call.signer)
    return Declared(tx=result.tx if result else None, unchanged=result is None)


# -- branches ---------------------------------------------------------------------------------
class BranchInfo(Output):
    name: str
    id: int
    parent: str
    base: int
    state: str


def _branch_info(call: Call, b: Any) -> BranchInfo:
    names = {x.id: x.name for x in call.ledger.branches()}
    names[0] = MAIN
    return BranchInfo(
        name=b.name, id=b.id, parent=names.get(b.parent, "?"), base=b.base, state=b.state
    )


@operation("branch.list", capability="branch.read", writes=False)
def branch_list(call: Call, p: NoArguments) -> list[BranchInfo]:
    """Branches and their state (open, merged, dropped)."""
    return [_branch_info(call, b) for b in call.ledger.branches()]


class BranchCreateIn(Input):
    name: Branch
    at: AsOf = Field(None, description="Fork at this transaction (default: the newest).")


@operation("branch.create", capability="branch.write", writes=True)
def branch_create(call: Call, p: BranchCreateIn) -> BranchInfo:
    """Fork a branch at the newest transaction, or at any earlier one."""
    ledger = call.ledger
    at = ledger.resolve_tx(p.at) if p.at is not None else None
    return _branch_info(call, ledger.create_branch(p.name, at, signer=call.signer))


class BranchNameIn(Input):
    name: Branch


def _not_main(name: str, verb: str) -> None:
    if name == MAIN:
        raise BadInput(f"{MAIN} is the trunk every branch forks from; it cannot be {verb}")


@operation("branch.merge", capability="branch.write", writes=True)
def branch_merge(call: Call, p: BranchNameIn) -> TxResult:
    """Replay a branch onto the branch it forked from; a conflict names each clash."""
    _not_main(p.name, "merged")
    return _tx_result(call.ledger.merge_branch(p.name, signer=call.signer))


@operation("branch.drop", capability="branch.write", writes=True)
def branch_drop(call: Call, p: BranchNameIn) -> TxResult:
    """Drop a branch: it takes no more writes and no longer reads."""
    _not_main(p.name, "dropped")
    return _tx_result(call.ledger.drop_branch(p.name, signer=call.signer))


class RestoreIn(Input):
    entity: EntityRef
    to: Annotated[
        TxNumber | Annotated[str, Field(max_length=200)],
        Field(description="The transaction (number, hash or instant) to read as again."),
    ]
    branch: Branch = MAIN


@operation("ledger.restore", capability="ledger.restore", writes=True)
def restore(call: Call, p: RestoreIn) -> Written:
    """Make an entity read as it did as of a transaction, in a new signed transaction
    (nothing is overwritten); `tx` is null when it already reads so."""
    e = _entity(call, p.entity, p.branch)
    result = call.ledger.restore(e, p.to, p.branch, signer=call.signer)
    return Written(tx=result.tx if result else None, id=e)


# -- forgetting -------------------------------------------------------------------------------
class ForgetIn(Input):
    entity: EntityRef
    why: Annotated[
        str,
        Field(
            min_length=1,
            max_length=2000,
            description="Why it is forgotten: kept, signed, with the forgetting.",
        ),
    ]
    attribute: Annotated[str | None, Field(max_length=200)] = Field(
        None, description="Only this attribute's datoms (default: every attribute)."
    )
    value: Annotated[
        str | int | float | bool | None,
        Field(
            description="Only datoms holding this value (needs `attribute`); text is read by "
            "the attribute's type."
        ),
    ] = None


class ForgetResult(Output):
    tx: int = Field(description="The transaction that records the forgetting.")
    entity: str
    attribute: str | None
    datoms: int = Field(description="The entity's datoms whose value and salt were erased.")
    quotes: int = Field(
        description="Datoms elsewhere that quoted what they held (a request to forget it), "
        "erased too."
    )
    blobs: int = Field(description="Large values removed from the blob store.")
    recall_rows: int = Field(description="Rows the recall index dropped (then derived again).")
    notes: list[str] = Field(
        description="Where bytes may still linger, and why (empty when nowhere)."
    )


def _forget_basis(call: Call, p: ForgetIn) -> dict:
    """Where each datom of the entity (or attribute) sits now, as a digest: an approved
    forgetting must find them unchanged, or it would erase what its approver never saw."""
    positions = call.ledger.positions(_entity(call, p.entity), p.attribute)
    digest = hashlib.sha256(json.dumps(positions).encode()).hexdigest()[:16]
    return {"datoms": digest}


def _quoting(call: Call, p: ForgetIn) -> list[tuple[str, str]]:
    """Requests to forget this same thing quote the value (or a lookup ref holding one) in
    their stored input, and their digest is an unsalted hash of that input: both go with
    the value — for the request this call runs under, and any other like it."""
    if p.value is None and not isinstance(p.entity, list):
        return []
    asked = (p.entity, p.attribute, p.value)
    ids = [
        a.id
        for a in approvals.listing(call.ledger.view())
        if a.operation == "ledger.forget"
        and isinstance(a.input, dict)
        and (a.input.get("entity"), a.input.get("attribute"), a.input.get("value")) == asked
    ]
    if call.approval and call.approval not in ids:
        ids.append(call.approval)
    return [(approvals.entity(i), f"keel.approval/{f}") for i in ids for f in ("input", "digest")]


@operation("ledger.forget", capability="ledger.forget", writes=True, basis=_forget_basis)
def forget(call: Call, p: ForgetIn) -> ForgetResult:
    """Erase the values of an entity's datoms — of one attribute, holding one value, when
    given — on every branch and in all of history, and from the recall index.

    One signed transaction records the forgetting (who, when, why, which datoms); the
    chain still verifies, and reads show each value as forgotten. It cannot be undone."""
    ledger = call.ledger
    e = _entity(call, p.entity)
    value = p.value
    if value is not None and p.attribute is None:
        raise BadInput("ledger.forget: a value needs the attribute that holds it")
    if p.attribute is not None:
        ledger.attribute(p.attribute)
        if isinstance(value, str):
            value = typed_value(ledger, p.attribute, value)
    done = ledger.forget(
        e, p.attribute, value, why=p.why, signer=call.signer, also=_quoting(call, p)
    )
    dropped, notes = call.recall().forget(e)
    return ForgetResult(
        tx=done.result.tx,
        entity=e,
        attribute=p.attribute,
        datoms=done.datoms,
        quotes=done.quotes,
        blobs=done.blobs,
        recall_rows=dropped,
        notes=done.notes + notes,
    )


# -- integrity ----------------------------------------------------------------------------------
class VerifyReport(Output):
    ok: bool
    transactions: int
    datoms: int
    checkpoints: int
    root: str
    first_bad: int | None
    problem: str | None
    seconds: float
    since: int = Field(0, description="Transactions up to here were vouched for by a checkpoint.")

    @property
    def failure(self) -> str | None:
        """What is wrong, in one sentence that names the first bad transaction."""
        return None if self.ok else describe_failure(self.first_bad, self.problem)


@operation("ledger.verify", capability="ledger.verify", writes=False)
def verify(call: Call, p: NoArguments) -> VerifyReport:
    """Recompute every digest, hash, signature, chain link and checkpoint.

    A failure names the first bad transaction and makes keel read-only until a verify
    passes again."""
    report = call.ledger.verify(progress=call.progress)
    call.services.home.set_integrity_problem(report.failure, report.first_bad)
    return VerifyReport.model_validate(
        {k: v for k, v in report.to_json().items() if k in VerifyReport.model_fields}
    )


class Checkpoint(Output):
    size: int
    root: str
    time: str
    key: str
    sig: str


@operation("ledger.checkpoint", capability="ledger.checkpoint", writes=True)
def checkpoint(call: Call, p: NoArguments) -> Checkpoint:
    """Sign the Merkle log's current size and root with the operator's key."""
    return Checkpoint.model_validate(call.ledger.checkpoint(signer=call.signer))


class InclusionIn(Input):
    tx: Annotated[TxNumber | Annotated[str, Field(max_length=200)], Field(description="A tx.")]


class InclusionProof(Output):
    tx: int
    leaf_index: int
    tree_size: int
    leaf: str
    root: str
    path: list[str]


@operation("ledger.proof.inclusion", capability="ledger.read", writes=False)
def proof_inclusion(call: Call, p: InclusionIn) -> InclusionProof:
    """An RFC 9162 inclusion proof for a transaction (number or hash)."""
    return InclusionProof.model_validate(call.ledger.inclusion_proof(p.tx))


class ConsistencyIn(Input):
    old_size: TxNumber
    new_size: TxNumber


class ConsistencyProof(Output):
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    path: list[str]


@operation("ledger.proof.consistency", capability="ledger.read", writes=False)
def proof_consistency(call: Call, p: ConsistencyIn) -> ConsistencyProof:
    """An RFC 9162 consistency proof between two sizes of the log."""
    return ConsistencyProof.model_validate(call.ledger.consistency_proof(p.old_size, p.new_size))


# -- exchange ---------------------------------------------------------------------------------
class PathIn(Input):
    path: LocalPath


class Exchanged(Output):
    path: str
    transactions: int


@operation("ledger.export", capability="ledger.export", writes=False)
def export(call: Call, p: PathIn) -> Exchanged:
    """Write every transaction and checkpoint as JSONL (salts and values included), to a
    new file readable by its owner only, outside the home."""
    path = call.services.outside_home(p.path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            count = call.ledger.export(out)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror or exc}") from None
    return Exchanged(path=str(path), transactions=count)


@operation("ledger.import", capability="ledger.import", writes=True)
def import_(call: Call, p: PathIn) -> Exchanged:
    """Append an export after verifying every transaction in it."""
    path = call.services.outside_home(p.path)
    if not path.is_file():
        raise NotFound(f"there is no file {path}")
    imported = call.ledger.import_file(path)
    # A home restored from an export gets back the governance file its ledger signed.
    call.services.governance.restore(call.ledger.view())
    return Exchanged(path=str(path), transactions=imported)
