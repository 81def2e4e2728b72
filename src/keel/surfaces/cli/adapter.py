"""How a command reaches keel: it names an operation and hands its parsed arguments to
the door, as the person at the terminal (the home's operator) or `--as NAME`.

Commands only parse and present. This module opens the home for the command's one call,
prints JSON in the operation's one shape, and shows instants in the operator's time zone.
Nothing heavy is imported until a command runs, so `keel --help` stays quick.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from ...ops.door import Door


# Options many commands share.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AsOpt = Annotated[
    str | None, typer.Option("--as", help="Act as this identity (a key in the home).")
]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="A tx number, tx hash or instant.")]
ValidAtOpt = Annotated[str | None, typer.Option("--valid-at", help="An ISO 8601 instant.")]


#: The identity every command of this command line acts as (`keel --as NAME ...`, or
#: KEEL_AS); a command's own `--as` wins. None: the operator.
acting_as: str | None = None


@contextmanager
def session(as_name: str | None = None) -> Iterator[tuple[Door, str]]:
    """The door of the home in KEEL_HOME and the identity this command acts as."""
    from ...ops.door import Door
    from ...ops.services import Services

    services = Services.open()
    try:
        yield Door(services), as_name or acting_as or services.home.identity
    finally:
        services.close()


def call(
    name: str,
    arguments: dict[str, Any] | None = None,
    as_name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    json: bool = False,
) -> Any:
    """Run one operation through the door; returns its typed output. With `json` (a
    command's --json), print the output as JSON and end the command there."""
    from ...ops.door import Caller

    args = {k: v for k, v in (arguments or {}).items() if v is not None}
    with session(as_name) as (door, identity):
        use_zone(door.services.timezone())
        result = door.call(name, args, Caller(identity, "cli"), progress)
    if json:
        emit(name, result)
        raise typer.Exit(0)
    return result


def to_json(name: str, result: Any) -> Any:
    """The operation's output as JSON data: the same shape HTTP and MCP send."""
    from ...ops import registry

    return registry.get(name).dump(result)


def emit(name: str, result: Any) -> None:
    """Print an operation's output as one line of JSON."""
    sys.stdout.write(json.dumps(to_json(name, result), ensure_ascii=False) + "\n")


def emit_data(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


# -- presentation ---------------------------------------------------------------------------
@cache
def out() -> Console:
    """Standard output. Piped output is never wrapped: a pipe has no width. Text is never
    read as markup: what keel prints is often what someone stored (`marked` styles)."""
    from rich.console import Console

    wide = None if sys.stdout.isatty() else 10_000
    return Console(width=wide, highlight=False, markup=False)


@cache
def err() -> Console:
    from rich.console import Console

    wide = None if sys.stderr.isatty() else 10_000
    return Console(stderr=True, width=wide, highlight=False, markup=False)


def marked(label: str, style: str, text: str = "") -> None:
    """Print `label` in `style`, then `text` exactly as it is."""
    from rich.text import Text

    out().print(Text.assemble((label, style), text))


@contextmanager
def progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr while long work runs (only on a terminal); yields the
    `progress(done, total)` callback an operation reports to."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    console = err()
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def table(*columns: str, title: str | None = None):
    from rich.table import Table

    return Table(*columns, title=title)


_ZONE: list[Any] = []


def use_zone(name: str | None) -> None:
    """Show instants in this zone from now on (the home's; None: UTC)."""
    from zoneinfo import ZoneInfo

    _ZONE[:] = [ZoneInfo(name)] if name else []


def local(instant: str | None) -> str:
    """An ISO 8601 UTC instant as the operator reads it: in the home's time zone."""
    if not instant:
        return ""
    if not _ZONE:
        return instant
    try:
        moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    except ValueError:
        return instant
    shown = moment.astimezone(_ZONE[0])
    text = shown.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} {shown.tzname()}"


def snippet(text: Any, n: int = 70) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def read_text(source: str) -> str:
    """The text of a file, or stdin for `-`."""
    from ...errors import BadInput

    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{'stdin' if source == '-' else source} is not UTF-8 text") from None


def read_json(source: str) -> Any:
    from ...errors import BadInput

    text = read_text(source)
    where = "stdin" if source == "-" else source
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except RecursionError:
        raise BadInput(f"{where} nests too deeply to be a keel document") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise BadInput(f"{where} holds a number too long to read") from None


def local_path(text: str) -> str:
    """A path typed at the terminal, made absolute: keel's operations take absolute paths,
    since the process that serves a call may not share the shell's directory."""
    return str(Path(text).expanduser().absolute())
