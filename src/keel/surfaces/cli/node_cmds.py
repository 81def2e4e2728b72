"""`keel node join|approve|list`: several machines on one shared ledger."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .adapter import JsonFlag, call, local, out, table

node_app = typer.Typer(
    no_args_is_help=True,
    help="Machines sharing one PostgreSQL ledger: each a node with a key of its own.",
)


@node_app.command("join")
def join(
    dsn: Annotated[str, typer.Argument(help="The shared ledger: postgresql://…")],
    name: Annotated[str, typer.Option(help="This node's name (default: the host's).")] = "",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the operator's approval.")] = 0,
) -> None:
    """Make this machine's KEEL_HOME a node of the shared ledger, with a key of its own,
    and show what the operator approves on a node that already belongs (exit 5 until
    then)."""
    import socket

    from ...errors import Pending
    from ...ops.services import Services

    name = name or socket.gethostname().split(".")[0]
    joined = Services.join(dsn, name)
    deadline = time.monotonic() + wait
    registered = joined.registered
    while not registered and time.monotonic() < deadline:
        time.sleep(1)
        registered = Services.is_registered(joined)
    if registered:
        out().print(
            f"{joined.home.path} is node {name} of the shared ledger "
            f"(key {joined.fingerprint}); start it with 'keel up'"
        )
        return
    out().print(
        f"this machine's key for node {name}: {joined.fingerprint}\n"
        f"on a node of this ledger, the operator runs:\n"
        f"  keel node approve {name} {joined.public_key}\n"
        f"(check that the fingerprint it shows is {joined.fingerprint}), then here: "
        f"keel node join {dsn} --name {name} --wait 60"
    )
    raise Pending(f"node {name} waits for the operator's approval", "")


@node_app.command("approve")
def approve(
    name: Annotated[str, typer.Argument(help="The node's name, as it asked.")],
    key: Annotated[str, typer.Argument(help="The public key `keel node join` printed.")],
    as_json: JsonFlag = False,
) -> None:
    """Register a joining machine's key as node NAME (operator only)."""
    node = call("node.approve", {"name": name, "key": key}, json=as_json)
    out().print(f"node {node.name} approved (key {node.fingerprint})")


@node_app.command("list")
def node_list(as_json: JsonFlag = False) -> None:
    """The operator's home and every node: host, version, last start, last write."""
    nodes = call("node.list", json=as_json)
    t = table("name", "role", "key", "host", "version", "started", "last seen", "holds")
    for n in nodes:
        t.add_row(
            n.name,
            n.role or "",
            n.fingerprint or "revoked",
            n.host or "—",
            n.version or "—",
            local(n.started) if n.started else "—",
            local(n.last_seen) if n.last_seen else "—",
            ", ".join(n.holds) or "—",
        )
    out().print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
