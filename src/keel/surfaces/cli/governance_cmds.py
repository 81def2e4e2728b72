"""`keel governance show|diff|check|sign|restore` and `keel audit`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from .adapter import AsOpt, JsonFlag, call, emit_data, local, marked, out, table, to_json

governance_app = typer.Typer(
    no_args_is_help=True,
    help="The governance file (canon/governance.toml): who may do what. An edit takes "
    "effect once signed; until then keel is read-only.",
)


@governance_app.command("show")
def show(
    signed: Annotated[
        bool, typer.Option("--signed", help="Print the newest signed version instead.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Whether keel acts on the file, who signed it when, each identity's tier and pins,
    and the file itself."""
    state = call("governance.show", {"signed": signed}, json=as_json)
    if state.ok:
        marked("✓", "green", f" {state.path}: signed by {state.signer} at "
               f"{local(state.signed_time)} (tx {state.signed_tx})")  # fmt: skip
    else:
        marked("✗", "red", f" keel is read-only: {state.problem}")
    t = table("identity", "tier", "pins")
    for rules in state.identities:
        t.add_row(rules.name, rules.tier, ", ".join(rules.pins))
    out().print(t)
    if state.text is not None:
        sys.stdout.write("\n" + state.text)


@governance_app.command("diff")
def diff(as_json: JsonFlag = False) -> None:
    """What changed in the file since it was signed (exit 1 when anything did)."""
    found = call("governance.diff", json=as_json)
    sys.stdout.write(found.diff or "the file is as signed\n")
    if found.changed:
        raise typer.Exit(1)


@governance_app.command("check")
def check(as_json: JsonFlag = False) -> None:
    """Whether keel acts on the file (exit 1 when it does not), and any capability it names
    that no operation needs."""
    found = call("governance.check")
    if as_json:
        emit_data(to_json("governance.check", found))
    else:
        for warning in found.warnings:
            marked("!", "yellow", f" {warning}")
        if found.ok:
            marked("✓", "green", " keel acts on the governance file as signed")
    if not found.ok:
        if not as_json:
            sys.stderr.write(f"keel: {found.problems[0]}\n")
        raise typer.Exit(1)


@governance_app.command("sign")
def sign(as_json: JsonFlag = False) -> None:
    """Sign the file as it is, as the operator: keel acts on it from now on."""
    found = call("governance.sign", json=as_json)
    state = "already signed" if found.tx is None else f"signed in tx {found.tx}"
    out().print(f"governance file {found.digest[:16]}… {state}")


@governance_app.command("restore")
def restore(as_json: JsonFlag = False) -> None:
    """Write back the newest signed version of a missing file."""
    found = call("governance.restore", json=as_json)
    out().print(f"restored {found.path} as last signed")


approvals_app = typer.Typer(
    no_args_is_help=True,
    help="Requests for approval: calls a governance rule holds until someone else answers.",
)
WhyOpt = Annotated[str | None, typer.Option("--why", help="Your reason, kept with the answer.")]


def _show_approval(a) -> None:
    t = table("id", "state", "operation", "requester", "rule", "expires")
    t.add_row(a.id, a.state, a.operation, a.requester, a.rule, local(a.expires))
    out().print(t)
    if a.error:
        sys.stderr.write(f"keel: {a.error}\n")


@approvals_app.command("list")
def approvals_list(
    state: Annotated[str | None, typer.Option(help="pending, approved, denied, ...")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Requests, newest first."""
    found = call("approval.list", {"state": state}, as_name, json=as_json)
    t = table("id", "state", "operation", "requester", "expires", "decided by")
    for a in found:
        t.add_row(a.id, a.state, a.operation, a.requester, local(a.expires), a.decided_by or "—")
    out().print(t)


@approvals_app.command("show")
def approvals_show(
    approval: Annotated[str, typer.Argument(metavar="ID")],
    wait: Annotated[float, typer.Option(min=0, max=300, help="Seconds to wait for an answer.")] = 0,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """One request: the exact action, its state, and the outcome once it ran."""
    found = call("approval.show", {"id": approval, "wait": wait}, as_name, json=as_json)
    _show_approval(found)
    out().print(json.dumps(found.input, indent=2, ensure_ascii=False))


@approvals_app.command("approve")
def approvals_approve(
    approval: Annotated[str, typer.Argument(metavar="ID")],
    why: WhyOpt = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve someone else's request: its exact action runs now, once (exit 1 if it
    failed)."""
    found = call("approval.approve", {"id": approval, "why": why}, as_name, json=as_json)
    _show_approval(found)
    if found.state == "failed":
        raise typer.Exit(1)


@approvals_app.command("deny")
def approvals_deny(
    approval: Annotated[str, typer.Argument(metavar="ID")],
    why: WhyOpt = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Deny someone else's request: its action never runs."""
    _show_approval(call("approval.deny", {"id": approval, "why": why}, as_name, json=as_json))


def audit(
    who: Annotated[str | None, typer.Option("--who", help="One identity.")] = None,
    capability: Annotated[
        str | None, typer.Option("--capability", help="A capability or pattern (memory.*).")
    ] = None,
    since: Annotated[
        str, typer.Option(help="After this transaction (number, hash or instant).")
    ] = "0",
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Every write and refusal: who, what, by which capability, through which surface,
    and how it ended (--json: one JSON object per line)."""
    args = {"who": who, "capability": capability, "since": since, "limit": limit}
    entries = call("audit.list", args)
    if as_json:
        for entry in to_json("audit.list", entries):
            emit_data(entry)
        return
    t = table("tx", "time", "identity", "outcome", "operation", "capability", "surface", "reason")
    for e in entries:
        t.add_row(
            str(e.tx), local(e.time), e.identity, e.outcome, e.operation or "—",
            e.capability or "—", e.surface or "—", e.reason,
        )  # fmt: skip
    out().print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(governance_app, name="governance")
    app.add_typer(approvals_app, name="approvals")
    app.command()(audit)
