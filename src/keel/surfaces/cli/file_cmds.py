"""`keel file read|write|history`: shared files with generations, merged or refused
writes, and their history (see docs/files.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .adapter import AsOpt, JsonFlag, call, local, local_path, out, table

file_app = typer.Typer(
    no_args_is_help=True,
    help="Files shared by agents: read with a generation, write over it (merged or a "
    "conflict naming the lines), and each file's history.",
)


@file_app.command("read")
def file_read(
    path: Annotated[str, typer.Argument(help="The file.")],
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a file's content (its generation goes to stderr; with --json, both)."""
    found = call("file.read", {"path": local_path(path)}, as_name, json=as_json)
    sys.stdout.write(found.content)
    sys.stdout.flush()
    sys.stderr.write(f"generation {found.generation}\n")


@file_app.command("write")
def file_write(
    path: Annotated[str, typer.Argument(help="The file.")],
    expect: Annotated[
        int | None,
        typer.Option(
            "--expect",
            help="The generation you read (0 for a new file); default: the current one.",
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--from", help="Read the content from this file, not stdin.")
    ] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a file from stdin (or --from FILE) over the generation you read; exit 3
    with the lines when your edit overlaps a newer one (nothing is written)."""
    from ...errors import BadInput

    if source is not None:
        try:
            content = Path(source).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"cannot read {source}: {exc}") from None
    else:
        content = sys.stdin.read()
    args = {"path": local_path(path), "content": content, "expect": expect}
    res = call("file.write", args, as_name, json=as_json)
    how = " (merged with newer edits)" if res.merged else ""
    out().print(f"{res.path} written: generation {res.generation}{how}, tx {res.tx}")


@file_app.command("history")
def file_history(
    path: Annotated[str, typer.Argument(help="The file.")],
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Every write keel made to a file: generation, author, time, size, hash."""
    found = call("file.history", {"path": local_path(path)}, as_name, json=as_json)
    t = table("generation", "author", "time", "size", "sha256", "merged")
    for g in found:
        t.add_row(
            str(g.generation),
            g.author or "-",
            local(g.time) if g.time else "-",
            str(g.size),
            (g.sha256 or "")[:16],
            "yes" if g.merged else "",
        )
    out().print(t)


def register(app: typer.Typer) -> None:
    app.add_typer(file_app, name="file")
