"""`keel mcp`: serve keel's memory tools to an MCP client over stdio as one identity;
`keel mcp token NAME` prints the bearer token a client uses for the daemon's /mcp."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .adapter import call

mcp_app = typer.Typer(
    invoke_without_command=True,
    help="Serve keel's memory tools to MCP clients (Claude Code, Codex, Cursor) over stdio, "
    "acting as --as (default: the operator). Only the protocol goes to stdout. The daemon "
    "serves the same tools over HTTP at /mcp; 'keel mcp token NAME' prints a client's "
    "bearer token for it.",
)


@mcp_app.callback()
def mcp(
    ctx: typer.Context,
    as_name: Annotated[
        str | None,
        typer.Option("--as", help="The identity to act as (its key must be in KEEL_HOME/keys)."),
    ] = None,
) -> None:
    """Serve the MCP tools over stdio as one identity."""
    if ctx.invoked_subcommand is not None:
        return
    from ..mcp.server import serve_stdio
    from .adapter import session

    with session(as_name) as (door, identity):
        serve_stdio(door, door.admit(identity))  # a stranger is told so before serving


@mcp_app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="The identity (see 'keel identity add').")],
) -> None:
    """Print the bearer token that makes an HTTP MCP client act as NAME."""
    sys.stdout.write(call("identity.token", {"name": name}).token + "\n")


def register(app: typer.Typer) -> None:
    app.add_typer(mcp_app, name="mcp")
