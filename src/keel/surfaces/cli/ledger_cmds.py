"""Ledger commands: transact, get, history, find, log, verify, proofs, checkpoints,
branches, restore, forget, export and import, schema and identities."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from .adapter import (
    AsOfOpt,
    AsOpt,
    JsonFlag,
    ValidAtOpt,
    call,
    emit,
    emit_data,
    err,
    local,
    local_path,
    out,
    progress,
    read_json,
    table,
    to_json,
)

identity_app = typer.Typer(no_args_is_help=True, help="Identities that sign transactions.")
schema_app = typer.Typer(no_args_is_help=True, help="Declare and list attributes.")
branch_app = typer.Typer(no_args_is_help=True, help="Fork, merge and drop branches.")
proof_app = typer.Typer(no_args_is_help=True, help="Merkle proofs over the transaction log.")

#: Transactions `keel log` asks for at a time (the most one ledger.log call returns).
PAGE = 10_000

BranchOpt = Annotated[str, typer.Option("--branch", "-b", help="Branch to use.")]
FileOpt = Annotated[str, typer.Option("--file", "-f", help="A JSON file, or - for stdin.")]


def _value(v: Any) -> str:
    if isinstance(v, dict) and list(v) == ["forgotten"]:
        f = v["forgotten"]
        return f"⟨forgotten by {f['by']} in tx {f['tx']}: {f['why']}⟩"
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


# -- identities ------------------------------------------------------------------------------
@identity_app.command("add")
def identity_add(
    name: str,
    role: Annotated[str, typer.Option(help="agent, connector or operator")] = "agent",
    as_json: JsonFlag = False,
) -> None:
    """Make a key for an agent or connector and register it in the ledger."""
    found = call("identity.add", {"name": name, "role": role}, json=as_json)
    out().print(f"identity {found.name} ({found.role}) key {', '.join(found.keys)}")


@identity_app.command("list")
def identity_list(as_json: JsonFlag = False) -> None:
    """Identities: role, governance tier and pins, when each last signed, and its key."""
    found = call("identity.list", json=as_json)
    t = table("name", "role", "tier", "pins", "last write", "public key")
    for ident in found:
        key = "revoked" if ident.revoked else ", ".join(k[:16] + "…" for k in ident.keys)
        pins = ", ".join(ident.pins)
        t.add_row(
            ident.name,
            ident.role or "",
            ident.tier or "?",
            pins,
            local(ident.last_write) or "—",
            key,
        )
    out().print(t)


@identity_app.command("revoke")
def identity_revoke(name: str, as_json: JsonFlag = False) -> None:
    """Revoke an identity's keys and tokens at once: later writes and calls as it are
    refused; what it signed before still verifies."""
    call("identity.revoke", {"name": name}, json=as_json)
    out().print(f"identity {name} revoked: its key and token no longer work")


# -- schema ---------------------------------------------------------------------------------
@schema_app.command("add")
def schema_add(file: FileOpt, as_json: JsonFlag = False) -> None:
    """Declare attributes from a JSON list (forward-only changes)."""
    declarations = read_json(file)
    if isinstance(declarations, dict) and "attributes" in declarations:
        declarations = declarations["attributes"]
    result = call("schema.add", {"attributes": declarations}, json=as_json)
    if result.unchanged:
        out().print("schema already up to date")
    else:
        out().print(f"declared {len(declarations)} attribute(s) in tx {result.tx}")


@schema_app.command("list")
def schema_list(as_json: JsonFlag = False) -> None:
    """Declared attributes."""
    attrs = call("schema.list", json=as_json)
    t = table("attribute", "type", "cardinality", "unique", "fulltext", "doc")
    for a in attrs:
        t.add_row(
            a.attribute, a.type, a.cardinality, a.unique or "", "yes" if a.fulltext else "", a.doc
        )
    out().print(t)


# -- writing ----------------------------------------------------------------------------------
def transact(
    file: FileOpt,
    as_name: AsOpt = None,
    branch: Annotated[
        str | None,
        typer.Option("--branch", "-b", help="Branch to write (default: the document's, or main)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Commit a transaction document: {"reason", "ops": [...], "expect": [...], "branch"}."""
    from ...errors import BadInput

    doc = read_json(file)
    if not isinstance(doc, dict):
        raise BadInput("a transaction document is a JSON object with 'ops'")
    if branch is not None:
        doc = {**doc, "branch": branch}
    result = call("ledger.transact", doc, as_name, json=as_json)
    out().print(f"tx {result.tx} {result.hash}")
    for temp, real in result.tempids.items():
        out().print(f"  {temp} → {real}")


def restore(
    entity: str,
    to: Annotated[str, typer.Option("--to", help="A tx number, hash or instant.")],
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """Make an entity read as it did as of a transaction, as a new signed transaction."""
    result = call("ledger.restore", {"entity": entity, "to": to, "branch": branch}, json=as_json)
    if result.tx is None:
        out().print(f"{result.id} already reads as it did then; nothing written")
    else:
        out().print(f"restored {result.id} in tx {result.tx}")


def forget(
    entity: str,
    attr: Annotated[str | None, typer.Argument(help="Only this attribute.")] = None,
    value: Annotated[
        str | None,
        typer.Option("--value", help="Only datoms holding this value (read by ATTR's type)."),
    ] = None,
    why: Annotated[
        str | None,
        typer.Option("--why", help="Why (required): kept, signed, with the forgetting."),
    ] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Erase values for good: ENTITY's datoms (of ATTR, holding --value) on every branch and
    in all of history, and from the recall index. The chain still verifies; reads show who
    forgot them, when and why. A governance rule may hold it for approval (exit 5)."""
    from ...errors import BadInput

    if why is None:
        raise BadInput('keel forget needs --why "...": the reason is kept, signed, with it')
    arguments = {"entity": entity, "attribute": attr, "value": value, "why": why}
    result = call("ledger.forget", arguments, as_name, json=as_json)
    what = f"{result.entity} {result.attribute}" if result.attribute else result.entity
    out().print(
        f"forgot {result.datoms} value(s) of {what} in tx {result.tx}: {result.blobs} blob(s) "
        f"and {result.recall_rows} recall row(s) removed"
    )
    for note in result.notes:
        err().print(f"note: {note}")


# -- reading --------------------------------------------------------------------------------
def get(
    entity: str,
    as_of: AsOfOpt = None,
    valid_at: ValidAtOpt = None,
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """An entity's values: now, as of a transaction or instant, at a valid instant."""
    found = call(
        "ledger.get",
        {"entity": entity, "as_of": as_of, "valid_at": valid_at, "branch": branch},
        json=as_json,
    )
    data = to_json("ledger.get", found)
    t = table("attribute", "value", title=str(data.pop("db/id")))
    for a, v in data.items():
        t.add_row(a, _value(v))
    out().print(t)


def history(
    entity: str,
    attr: Annotated[str | None, typer.Argument(help="Only this attribute.")] = None,
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """Every change to an entity (or one attribute) along both time axes."""
    rows = call(
        "ledger.history", {"entity": entity, "attribute": attr, "branch": branch}, json=as_json
    )
    t = table("tx", "recorded", "op", "attribute", "value", "valid from", "valid to", "author")
    for r in rows:
        t.add_row(
            str(r.tx),
            local(r.tx_time),
            r.op,
            r.a,
            _value(r.v),
            local(r.valid_from) or "-∞",
            local(r.valid_to) or "∞",
            r.author,
        )
    out().print(t)


def find(
    attr: str,
    value: Annotated[str | None, typer.Argument(help="Read by the attribute's type.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    after: Annotated[str, typer.Option(help="Page on after this entity id.")] = "",
    as_of: AsOfOpt = None,
    valid_at: ValidAtOpt = None,
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """Entities whose current ATTR is VALUE (or that have ATTR at all)."""
    page = call(
        "ledger.find",
        {
            "attribute": attr,
            "value": value,
            "limit": limit,
            "after": after,
            "as_of": as_of,
            "valid_at": valid_at,
            "branch": branch,
        },
        json=as_json,
    )
    for e in page.entities:
        out().print(e)


def log(
    since: Annotated[
        str, typer.Option(help="Only transactions after this one (number, hash or instant).")
    ] = "0",
    branch: Annotated[str | None, typer.Option("--branch", "-b")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many (default: all).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Transactions, oldest first: who signed what, when and why (--json: one JSON object
    per line)."""
    t = None if as_json else table("tx", "time", "author", "branch", "datoms", "reason")
    left, cursor = limit, since
    while left is None or left > 0:  # page by page: a long ledger is never cut short
        size = PAGE if left is None else min(left, PAGE)
        page = call("ledger.log", {"since": cursor, "branch": branch, "limit": size})
        if t is None:
            for entry in to_json("ledger.log", page)["transactions"]:
                emit_data(entry)
        else:
            for tx in page.transactions:
                row = (tx.tx, local(tx.time), tx.author, tx.branch, tx.datoms, tx.reason)
                t.add_row(*map(str, row))
        if page.next is None:
            break
        cursor = str(page.next)
        left = None if left is None else left - len(page.transactions)
    if t is not None:
        out().print(t)


def verify(as_json: JsonFlag = False) -> None:
    """Recompute every hash, signature, chain link and checkpoint; exit 1 on the first bad tx
    (and keel turns read-only until a verify passes)."""
    with progress("verifying") as report_progress:
        report = call("ledger.verify", progress=report_progress)
    if as_json:
        emit("ledger.verify", report)
    elif report.ok:
        out().print(
            f"ok: {report.transactions} transactions, {report.datoms} datoms, "
            f"{report.checkpoints} checkpoints verified in {report.seconds}s; root {report.root}"
        )
    if not report.ok:
        if not as_json:
            sys.stderr.write(f"keel: {report.failure}\n")
        raise typer.Exit(1)


@proof_app.command("inclusion")
def proof_inclusion(tx: str, as_json: JsonFlag = False) -> None:
    """An RFC 9162 inclusion proof for a transaction (number or hash)."""
    proof = call("ledger.proof.inclusion", {"tx": tx}, json=as_json)
    out().print(f"tx {proof.tx} is leaf {proof.leaf_index} of a log of {proof.tree_size}")
    out().print(f"leaf {proof.leaf}\nroot {proof.root}")
    for i, node in enumerate(proof.path):
        out().print(f"  {i}: {node}")


@proof_app.command("consistency")
def proof_consistency(old_size: int, new_size: int, as_json: JsonFlag = False) -> None:
    """An RFC 9162 consistency proof between two sizes of the log."""
    proof = call(
        "ledger.proof.consistency", {"old_size": old_size, "new_size": new_size}, json=as_json
    )
    out().print(f"size {proof.old_size} root {proof.old_root}")
    out().print(f"size {proof.new_size} root {proof.new_root}")
    for i, node in enumerate(proof.path):
        out().print(f"  {i}: {node}")


def checkpoint(as_json: JsonFlag = False) -> None:
    """Sign the Merkle log's current size and root with the operator's key."""
    cp = call("ledger.checkpoint", json=as_json)
    out().print(f"checkpoint at size {cp.size}: root {cp.root} ({local(cp.time)})")


# -- branches ---------------------------------------------------------------------------------
@branch_app.command("create")
def branch_create(
    name: str,
    at: Annotated[str | None, typer.Option(help="Fork at this tx.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fork a branch (at the newest transaction, or --at TX)."""
    b = call("branch.create", {"name": name, "at": at}, json=as_json)
    out().print(f"branch {b.name} forked at tx {b.base}")


@branch_app.command("list")
def branch_list(as_json: JsonFlag = False) -> None:
    """Branches and their state."""
    found = call("branch.list", json=as_json)
    t = table("name", "forked from", "at tx", "state")
    for b in found:
        t.add_row(b.name, b.parent, str(b.base), b.state)
    out().print(t)


@branch_app.command("merge")
def branch_merge(name: str, as_json: JsonFlag = False) -> None:
    """Merge a branch into the branch it was forked from; exit 3 naming each clash."""
    result = call("branch.merge", {"name": name}, json=as_json)
    out().print(f"merged {name} in tx {result.tx}")


@branch_app.command("drop")
def branch_drop(name: str, as_json: JsonFlag = False) -> None:
    """Drop a branch: it takes no more writes and no longer reads."""
    result = call("branch.drop", {"name": name}, json=as_json)
    out().print(f"dropped {name} in tx {result.tx}")


# -- exchange ---------------------------------------------------------------------------------
def export_cmd(file: str, as_json: JsonFlag = False) -> None:
    """Write every transaction and checkpoint as JSONL."""
    result = call("ledger.export", {"path": local_path(file)}, json=as_json)
    err().print(f"exported {result.transactions} transactions to {result.path}")


def import_cmd(file: str, as_json: JsonFlag = False) -> None:
    """Append an export after verifying every transaction in it (into a new home too)."""
    from ...ops.services import Services

    Services.prepare()  # a restore into a new home: the ledger's genesis comes from the file
    result = call("ledger.import", {"path": local_path(file)}, json=as_json)
    out().print(f"imported {result.transactions} transactions from {result.path}")


def register(app: typer.Typer) -> None:
    app.add_typer(identity_app, name="identity")
    app.add_typer(schema_app, name="schema")
    app.add_typer(branch_app, name="branch")
    app.add_typer(proof_app, name="proof")
    for command in (transact, get, history, find, log, verify, checkpoint, restore, forget):
        app.command()(command)
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)
