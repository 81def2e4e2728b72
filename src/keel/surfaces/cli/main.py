"""The `keel` command line. Every command reads KEEL_HOME; read commands offer --json.

Commands are thin: each parses its arguments, names one operation and presents what the
door returns (`adapter.call`). A user's mistake is one sentence on stderr and the exit
status of its kind (2 bad input, 3 conflict, 4 refused or forbidden, 5 read-only), never a
traceback. Everything keel creates is the operator's alone (umask 077).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from . import (
    adapter,
    file_cmds,
    governance_cmds,
    ledger_cmds,
    mcp_cmds,
    memory_cmds,
    node_cmds,
    runtime_cmds,
    secret_cmds,
)

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="keel: a signed, bitemporal ledger and the memory and runtime around it, for your "
    "agents' work and life.",
)


@app.command("init")
def init_cmd() -> None:
    """Create KEEL_HOME: config (the system's time zone), the operator's key, the ledger
    with keel's attributes and the default cadence (idempotent)."""
    from ...ops.services import Services
    from .adapter import out

    services, created = Services.init()
    try:
        home, operator = services.home.path, services.home.operator
    finally:
        services.close()
    if created:
        out().print(f"keel home ready at {home} (operator: {operator})")
    else:
        out().print(f"keel home at {home} is already set up")


@app.command()
def demo() -> None:
    """Build a small ledger in a temporary home and show what it can do."""
    from .demo import run_demo

    run_demo()


def _version(value: bool) -> None:
    if value:
        from ...ops import version

        sys.stdout.write(f"keel {version()}\n")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print keel's version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
    as_name: Annotated[
        str | None,
        typer.Option(
            "--as",
            envvar="KEEL_AS",
            help="Act as this identity (a key in the home), through the same door and pins "
            "as its HTTP and MCP calls. Default: the operator.",
        ),
    ] = None,
) -> None:
    """keel: a signed, bitemporal ledger and the memory and runtime around it."""
    adapter.acting_as = as_name


ledger_cmds.register(app)
runtime_cmds.register(app)
memory_cmds.register(app)
mcp_cmds.register(app)
governance_cmds.register(app)
secret_cmds.register(app)
node_cmds.register(app)
file_cmds.register(app)


def main(args: list[str] | None = None) -> int:
    """Run one command line; returns its exit status. A keel error is one sentence on
    stderr and the status of its kind, never a traceback."""
    # Typer vendors click; its usage errors share this base class.
    adapter.acting_as = None  # each command line says for itself
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        code = app(args, prog_name="keel", standalone_mode=False)
    except typer.Abort:
        return 130
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `keel`, `keel cadence`: the help
            sys.stdout.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
            return 0
        sys.stderr.write(f"keel: {exc.format_message()}\n")  # type: ignore[attr-defined]
        return exc.exit_code  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from ...errors import KeelError

        if not isinstance(exc, KeelError):
            raise
        sys.stderr.write(f"keel: {exc}\n")
        return exc.exit_code
    return code if isinstance(code, int) else 0


def run() -> None:
    """The `keel` console script. Everything keel creates is the operator's alone."""
    os.umask(0o077)
    sys.exit(main())
