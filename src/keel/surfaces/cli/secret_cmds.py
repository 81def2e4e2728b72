"""`keel secret set|list|rm|grant|revoke`: values in, never out.

`set` reads the value from standard input when it is not a terminal, or asks for it
without echoing: never from the command line, where the shell's history and every
process listing would keep it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .adapter import AsOpt, JsonFlag, call, local, out, table

secret_app = typer.Typer(
    no_args_is_help=True,
    help="Secrets for jobs: kept encrypted, given only to the jobs of identities granted "
    "them, redacted from everything keel stores or shows.",
)


def _read_value(name: str) -> str:
    from ...errors import BadInput

    if sys.stdin.isatty():
        value = typer.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read()
        # One trailing newline is how `echo` and here-strings end a value, not part of it.
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
    if not value:
        raise BadInput(f"no value for {name} on standard input")
    return value


@secret_app.command("set")
def secret_set(
    name: Annotated[str, typer.Argument(help="The secret's name.")],
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Set a secret from standard input (or a prompt that does not echo)."""
    found = call("secret.set", {"name": name, "value": _read_value(name)}, as_name, json=as_json)
    out().print(f"secret {found.name} set (version {found.version})")


@secret_app.command("list")
def secret_list(as_json: JsonFlag = False) -> None:
    """Every secret by name: version, grants and uses — never a value."""
    found = call("secret.list", json=as_json)
    t = table("name", "version", "granted to", "set", "uses", "last use")
    for s in found:
        t.add_row(
            s.name,
            str(s.version),
            ", ".join(s.grants) or "-",
            local(s.set_at) if s.set_at else "-",
            str(s.uses),
            local(s.last_use) if s.last_use else "-",
        )
    out().print(t)


@secret_app.command("rm")
def secret_rm(name: str, as_json: JsonFlag = False) -> None:
    """Remove a secret (its value is deleted; jobs asking for it fail, saying so)."""
    call("secret.rm", {"name": name}, json=as_json)
    out().print(f"secret {name} removed")


@secret_app.command("grant")
def secret_grant(name: str, identity: str, as_json: JsonFlag = False) -> None:
    """Let the jobs IDENTITY owns be given secret NAME."""
    found = call("secret.grant", {"name": name, "identity": identity}, json=as_json)
    out().print(f"secret {found.name} granted to {', '.join(found.grants)}")


@secret_app.command("revoke")
def secret_revoke(name: str, identity: str, as_json: JsonFlag = False) -> None:
    """Stop giving secret NAME to the jobs IDENTITY owns."""
    call("secret.revoke", {"name": name, "identity": identity}, json=as_json)
    out().print(f"secret {name} no longer granted to {identity}")


def register(app: typer.Typer) -> None:
    app.add_typer(secret_app, name="secret")
