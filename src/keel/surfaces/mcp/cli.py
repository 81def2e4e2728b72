"""`keel mcp`: serve keel's memory tools over stdio as one identity; `keel mcp token NAME`
prints the bearer token a client uses for the daemon's HTTP endpoint (/mcp)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ...govern.home import Home, home_dir

mcp_app = typer.Typer(
    invoke_without_command=True,
    help="Serve keel's memory tools to MCP clients (Claude Code, Codex, Cursor) over stdio, "
    "signing every write as --as (default: the operator). Only the protocol goes to stdout. "
    "The daemon serves the same tools over HTTP at /mcp; 'keel mcp token NAME' prints a "
    "client's bearer token for it.",
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
    from .server import serve_stdio  # the MCP SDK loads only for this command

    home = Home(home_dir())
    serve_stdio(home, as_name or home.operator)


@mcp_app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="The identity (see 'keel identity add').")],
) -> None:
    """Print the bearer token that makes an HTTP MCP client act as NAME (KEEL_HOME/tokens)."""
    sys.stdout.write(Home(home_dir()).client_token(name) + "\n")


def register(app: typer.Typer) -> None:
    """Add `keel mcp` to `app`."""
    app.add_typer(mcp_app, name="mcp")
