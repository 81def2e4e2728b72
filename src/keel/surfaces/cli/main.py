"""The `keel` command line. Every command reads KEEL_HOME; read commands offer --json.

A user's mistake is one sentence on stderr and a non-zero exit (3 for a failed
precondition or merge conflict), never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ...govern.home import Home, add_identity, home_dir, init, prepare_home
from ...ledger import BadInput, KeelError, Ledger
from ...ledger.text import entity_ref, typed_value
from ..mcp import cli as mcp_cli
from . import memory_cmds, runtime_cmds

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="keel: a signed, bitemporal ledger for your agents' work and memory.",
)
identity_app = typer.Typer(no_args_is_help=True, help="Identities that sign transactions.")
schema_app = typer.Typer(no_args_is_help=True, help="Declare and list attributes.")
branch_app = typer.Typer(no_args_is_help=True, help="Fork, merge and drop branches.")
proof_app = typer.Typer(no_args_is_help=True, help="Merkle proofs over the transaction log.")
app.add_typer(identity_app, name="identity")
app.add_typer(schema_app, name="schema")
app.add_typer(branch_app, name="branch")
app.add_typer(proof_app, name="proof")

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
BranchOpt = Annotated[str, typer.Option("--branch", "-b", help="Branch to use.")]
FileOpt = Annotated[str, typer.Option("--file", "-f", help="A JSON file, or - for stdin.")]


def _home() -> Home:
    return Home(home_dir())


def _ledger(as_name: str | None = None) -> Ledger:
    return _home().ledger(as_name)


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def _read_json(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = "stdin" if source == "-" else source
        raise BadInput(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno})") from None


@app.command("init")
def init_cmd() -> None:
    """Create KEEL_HOME, its config, the operator's key and the ledger (idempotent)."""
    home, created = init()
    if created:
        out.print(f"keel home ready at {home.path} (operator: {home.operator})")
    else:
        out.print(f"keel home at {home.path} is already set up")


@identity_app.command("add")
def identity_add(
    name: str,
    role: Annotated[str, typer.Option(help="agent, connector or operator")] = "agent",
) -> None:
    """Make a key for an agent or connector and register it in the ledger."""
    signer = add_identity(_home(), name, role)
    out.print(f"identity {name} ({role}) key {signer.public_key.hex()}")


@identity_app.command("list")
def identity_list(as_json: JsonFlag = False) -> None:
    """Identities registered in the ledger."""
    with _ledger() as ledger:
        found = ledger.identities()
    if as_json:
        _emit(found)
        return
    table = Table("name", "role", "public key")
    for ident in found:
        table.add_row(ident["name"], ident["role"] or "", ", ".join(ident["keys"]))
    out.print(table)


@schema_app.command("add")
def schema_add(file: FileOpt, as_json: JsonFlag = False) -> None:
    """Declare attributes from a JSON list (forward-only changes)."""
    decls = _read_json(file)
    if not isinstance(decls, list):
        raise BadInput("the schema file must hold a JSON list of attribute declarations")
    with _ledger() as ledger:
        result = ledger.declare(decls)
    if as_json:
        _emit(result.to_json() if result else {"tx": None, "unchanged": True})
    elif result:
        out.print(f"declared {len(decls)} attribute(s) in tx {result.tx}")
    else:
        out.print("schema already up to date")


@schema_app.command("list")
def schema_list(as_json: JsonFlag = False) -> None:
    """Declared attributes."""
    with _ledger() as ledger:
        attrs = [a.to_json() for a in sorted(ledger.schema.values(), key=lambda a: a.ident)]
    if as_json:
        _emit(attrs)
        return
    table = Table("attribute", "type", "cardinality", "unique", "fulltext", "doc")
    for a in attrs:
        table.add_row(
            a["attribute"],
            a["type"],
            a["cardinality"],
            a["unique"] or "",
            "yes" if a["fulltext"] else "",
            a["doc"],
        )
    out.print(table)


@app.command()
def transact(
    file: FileOpt,
    as_name: Annotated[str | None, typer.Option("--as", help="Sign as this identity.")] = None,
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """Commit a transaction document: {"reason", "ops": [...], "expect": [...]}."""
    doc = _read_json(file)
    if not isinstance(doc, dict):
        raise BadInput("a transaction document must be a JSON object with 'ops'")
    unknown = set(doc) - {"reason", "ops", "expect"}
    if unknown:
        raise BadInput(f"unknown field(s) {sorted(unknown)} in the transaction document")
    with _ledger(as_name) as ledger:
        result = ledger.transact(
            doc.get("ops"),
            reason=doc.get("reason", ""),
            expect=doc.get("expect", []),
            branch=branch,
        )
    if as_json:
        _emit(result.to_json())
    else:
        out.print(f"tx {result.tx} {result.hash}")
        for temp, real in result.tempids.items():
            out.print(f"  {temp} → {real}")


@app.command()
def get(
    entity: str,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="A tx id, tx hash or instant.")
    ] = None,
    valid_at: Annotated[str | None, typer.Option("--valid-at", help="An instant.")] = None,
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """An entity's values: now, as of a transaction or instant, at a valid instant."""
    with _ledger() as ledger:
        view = ledger.view(branch, as_of, valid_at)
        e = view.resolve_entity(entity_ref(entity))
        found = view.get_json(e)
    if found is None:
        raise KeelError(f"entity {entity} has no values in this view")
    if as_json:
        _emit(found)
        return
    table = Table("attribute", "value", title=f"{found.pop('db/id')}")
    for a, v in found.items():
        table.add_row(a, json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v)
    out.print(table)


@app.command()
def history(
    entity: str,
    attr: Annotated[str | None, typer.Argument()] = None,
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """Every change to an entity (or one attribute) along both time axes."""
    with _ledger() as ledger:
        view = ledger.view(branch)
        e = view.resolve_entity(entity_ref(entity))
        if attr:
            ledger.attribute(attr)
        rows = view.history(e, attr)
    if as_json:
        _emit(rows)
        return
    table = Table("tx", "recorded", "op", "attribute", "value", "valid from", "valid to", "author")
    for r in rows:
        table.add_row(
            str(r["tx"]),
            r["tx_time"],
            r["op"],
            r["a"],
            json.dumps(r["v"]),
            r["valid_from"] or "-∞",
            r["valid_to"] or "∞",
            r["author"],
        )
    out.print(table)


@app.command()
def find(
    attr: str,
    value: Annotated[str | None, typer.Argument()] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    after: Annotated[str, typer.Option(help="Page on after this entity id.")] = "",
    as_of: Annotated[str | None, typer.Option("--as-of")] = None,
    valid_at: Annotated[str | None, typer.Option("--valid-at")] = None,
    branch: BranchOpt = "main",
    as_json: JsonFlag = False,
) -> None:
    """Entities whose current ATTR is VALUE (or that have ATTR at all)."""
    with _ledger() as ledger:
        view = ledger.view(branch, as_of, valid_at)
        parsed = typed_value(ledger, attr, value) if value is not None else None
        found = view.find(attr, parsed, limit=limit, after=after)
    if as_json:
        _emit(found)
    else:
        for e in found:
            out.print(e)


@app.command()
def log(
    since: Annotated[
        str, typer.Option(help="Only transactions after this one (id, hash or instant).")
    ] = "0",
    branch: Annotated[str | None, typer.Option("--branch", "-b")] = None,
) -> None:
    """Transactions as JSON lines, oldest first."""
    with _ledger() as ledger:
        for entry in ledger.log(ledger.resolve_tx(since), branch):
            _emit(entry)


@app.command()
def verify(as_json: JsonFlag = False) -> None:
    """Recompute every hash, signature, chain link and checkpoint; exit 1 on the first bad tx."""
    with _ledger() as ledger:
        report = ledger.verify()
    if as_json:
        _emit(report.to_json())
    elif report.ok:
        out.print(
            f"ok: {report.transactions} transactions, {report.datoms} datoms, "
            f"{report.checkpoints} checkpoints verified in {report.seconds}s; "
            f"root {report.root}"
        )
    if not report.ok:
        if not as_json:
            sys.stderr.write(f"keel: transaction {report.first_bad} is bad: {report.problem}\n")
        raise typer.Exit(1)


@proof_app.command("inclusion")
def proof_inclusion(tx: str) -> None:
    """An RFC 9162 inclusion proof for a transaction (id or hash), as JSON."""
    with _ledger() as ledger:
        _emit(ledger.inclusion_proof(tx))


@proof_app.command("consistency")
def proof_consistency(old_size: int, new_size: int) -> None:
    """An RFC 9162 consistency proof between two log sizes, as JSON."""
    with _ledger() as ledger:
        _emit(ledger.consistency_proof(old_size, new_size))


@app.command()
def checkpoint() -> None:
    """Sign the Merkle log's current size and root with the operator's key."""
    with _ledger() as ledger:
        _emit(ledger.checkpoint())


@branch_app.command("create")
def branch_create(
    name: str, at: Annotated[str | None, typer.Option(help="Fork at this tx.")] = None
) -> None:
    """Fork a branch (at the newest transaction, or --at TX)."""
    with _ledger() as ledger:
        b = ledger.create_branch(name, ledger.resolve_tx(at) if at else None)
    out.print(f"branch {b.name} forked at tx {b.base}")


@branch_app.command("list")
def branch_list(as_json: JsonFlag = False) -> None:
    """Branches and their state."""
    with _ledger() as ledger:
        found = ledger.branches()
        rows = [
            {
                "name": b.name,
                "id": b.id,
                "parent": ledger._branch_by_id(b.parent).name,
                "base": b.base,
                "state": b.state,
            }
            for b in found
        ]
    if as_json:
        _emit(rows)
        return
    table = Table("name", "forked from", "at tx", "state")
    for r in rows:
        table.add_row(r["name"], r["parent"], str(r["base"]), r["state"])
    out.print(table)


@branch_app.command("merge")
def branch_merge(name: str) -> None:
    """Merge a branch into the branch it was forked from; exit 3 naming each clash."""
    with _ledger() as ledger:
        result = ledger.merge_branch(name)
    out.print(f"merged {name} in tx {result.tx}")


@branch_app.command("drop")
def branch_drop(name: str) -> None:
    """Drop a branch: it takes no more writes and no longer reads."""
    with _ledger() as ledger:
        result = ledger.drop_branch(name)
    out.print(f"dropped {name} in tx {result.tx}")


@app.command()
def restore(
    entity: str,
    to: Annotated[str, typer.Option("--to", help="A tx id, hash or instant.")],
    branch: BranchOpt = "main",
) -> None:
    """Make an entity read as it did as of a transaction, as a new signed transaction."""
    with _ledger() as ledger:
        e = ledger.view(branch).resolve_entity(entity_ref(entity))
        result = ledger.restore(e, to, branch)
    if result is None:
        out.print(f"{e} already reads as it did then; nothing written")
    else:
        out.print(f"restored {e} in tx {result.tx}")


@app.command("export")
def export_cmd(file: Path) -> None:
    """Write every transaction and checkpoint as JSONL."""
    with _ledger() as ledger, _open_out(file) as f:
        count = ledger.export(f)
    err.print(f"exported {count} transactions to {file}")


def _open_out(file: Path):
    try:
        return file.open("w")
    except OSError as exc:
        raise BadInput(f"cannot write {file}: {exc.strerror}") from None


@app.command("import")
def import_cmd(file: Path) -> None:
    """Append an export after verifying every transaction in it (into a new home too)."""
    home = _home()
    if not home.config_path.exists():
        prepare_home(home)  # a restore: the ledger's genesis comes from the file
    with _ledger() as ledger:
        count = ledger.import_file(file)
    out.print(f"imported {count} transactions from {file}")


@app.command()
def demo() -> None:
    """Build a small ledger in a temporary home and show what it can do."""
    from .demo import run_demo

    run_demo(out)


runtime_cmds.register(app)
memory_cmds.register(app)
mcp_cli.register(app)


# Typer vendors click; its usage errors share this base class.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def run() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except _USAGE_ERROR as exc:
        sys.stderr.write(f"keel: {exc.format_message()}\n")  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except KeelError as exc:
        sys.stderr.write(f"keel: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    if isinstance(code, int):
        sys.exit(code)
