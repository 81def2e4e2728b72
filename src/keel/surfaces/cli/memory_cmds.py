"""CLI commands for memory and recall: recall, reindex, remember, working, entity, decide,
decisions, canon, episode, capture, daybook, wiki and vault.

Writes sign as the operator unless `--as NAME` names another identity with a key in the
home. Read commands offer `--json`. Mistakes are raised by the memory layer (BadInput,
NotFound, Refused) and reported by `main.run` as one line on stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ...govern.home import Home, home_dir
from ...ledger import BadInput, Conflict, Ledger
from ...ledger.instants import from_us
from ...memory import vault
from ...memory.memory import Memory
from ...memory.model import slugify
from ...memory.recall import Recall
from ...memory.wiki import Wiki

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
AsOpt = Annotated[
    str | None, typer.Option("--as", help="Sign as this identity (a key in the home).")
]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="A tx id, tx hash or instant.")]
ValidAtOpt = Annotated[str | None, typer.Option("--valid-at", help="An instant.")]
AtOpt = Annotated[str | None, typer.Option("--at", help="When it happened (ISO 8601).")]
SourceArg = Annotated[str, typer.Argument(help="A file, or - for stdin.")]

entity_app = typer.Typer(no_args_is_help=True, help="The brain: entities, facts, timelines.")
canon_app = typer.Typer(no_args_is_help=True, help="Source-of-truth rules (operator only).")
episode_app = typer.Typer(no_args_is_help=True, help="Agents' session transcripts.")
wiki_app = typer.Typer(no_args_is_help=True, help="The topic wiki: sources and articles.")
vault_app = typer.Typer(no_args_is_help=True, help="Memory as an Obsidian vault.")


# -- helpers ---------------------------------------------------------------------------------
def _home() -> Home:
    return Home(home_dir())


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _memory(as_name: str | None = None) -> Iterator[Memory]:
    """Memory over a ledger of this command's own, signing as `as_name` (or the operator)."""
    with _home().ledger(as_name) as ledger:
        yield Memory(ledger)


@contextlib.contextmanager
def _recall() -> Iterator[Recall]:
    home = _home()
    embedder = home.config().get("recall", {}).get("embedder")
    with home.ledger() as ledger:
        recall = Recall(ledger, embedder=embedder)
        try:
            yield recall
        finally:
            recall.close()


def _read_text(source: str) -> str:
    """The text of FILE, or stdin for `-`."""
    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{source} is not UTF-8 text") from None


def _facts(pairs: list[str] | None) -> dict[str, str]:
    facts: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"a fact is key=value, like lives_in=Denver; got {pair!r}")
        facts[key.strip()] = value.strip()
    return facts


def _snippet(text: Any, n: int = 70) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _interval(vf: str | None, vt: str | None) -> str:
    return f"{vf or '-∞'} → {vt or '∞'}"


def _items_table(items: list[dict], *columns: str) -> Table:
    table = Table("id", *columns)
    for item in items:
        row = [item["id"]]
        for c in columns:
            value = item.get(c)
            row.append(_snippet(", ".join(value) if isinstance(value, list) else value))
        table.add_row(*row)
    return table


def _today(ledger: Ledger) -> str:
    return from_us(ledger.clock()).astimezone(ledger.default_tz or UTC).date().isoformat()


# -- recall ----------------------------------------------------------------------------------
def recall(
    query: str,
    surface: Annotated[str | None, typer.Option(help="Only this memory surface.")] = None,
    as_of: AsOfOpt = None,
    valid_at: ValidAtOpt = None,
    k: Annotated[int, typer.Option("--k", help="At most this many results.")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """Search memory: full text and vectors, fused, as of and valid at the times asked."""
    with _recall() as index:
        found = index.search(query, surface=surface, as_of=as_of, valid_at=valid_at, k=k)
    if found["mode"] == "fulltext" and found.get("note"):
        sys.stderr.write(f"keel: {found['note']}\n")
    if as_json:
        _emit(found)
        return
    if not found["results"]:
        out.print(f"nothing recalled for {query!r}")
        return
    table = Table("surface", "title / text", "author", "tx", "valid")
    for r in found["results"]:
        p = r["provenance"]
        title, text = r["title"] or "", r["text"] or ""
        text = text if text.startswith(title) else f"{title}: {text}"
        table.add_row(
            r["surface"],
            _snippet(text, 80),
            p["author"] or "",
            str(p["tx"]),
            _interval(p["valid_from"], p["valid_to"]),
        )
    out.print(table)


def reindex() -> None:
    """Rebuild the recall index from the whole ledger."""
    started = time.monotonic()
    with (
        _recall() as index,
        Progress(
            TextColumn("indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        ) as bar,
    ):
        task = bar.add_task("tx", total=None)

        def progress(cursor: int, head: int) -> None:
            bar.update(task, completed=cursor, total=head)

        rows = index.reindex(progress=progress)
        mode = index.mode
    seconds = max(time.monotonic() - started, 1e-6)
    out.print(f"reindexed {rows} rows in {seconds:.2f}s ({rows / seconds:.0f} rows/s, {mode})")


# -- working memory ----------------------------------------------------------------------------
def remember(
    text: str,
    scope: Annotated[str, typer.Option(help="The agent or run it belongs to.")],
    ttl: Annotated[str | None, typer.Option(help="How long it lasts: 90s, 30m, 2h, 1d.")] = None,
    expires: Annotated[str | None, typer.Option(help="When it expires (ISO 8601).")] = None,
    title: Annotated[str | None, typer.Option(help="A short title.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Keep a note in working memory until it expires (default 24h)."""
    with _memory(as_name) as mem:
        res = mem.remember(text, scope=scope, ttl=ttl, expires=expires, title=title)
    if as_json:
        _emit(res)
    else:
        out.print(f"remembered {res['id']} until {res['expires']} (tx {res['tx']})")


def working(
    scope: Annotated[str | None, typer.Option(help="Only this agent or run.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Working memory that has not expired."""
    with _memory() as mem:
        items = mem.working(scope)
    if as_json:
        _emit(items)
    else:
        out.print(_items_table(items, "scope", "text"))


# -- entities ----------------------------------------------------------------------------------
@entity_app.command("add")
def entity_add(
    name: str,
    kind: Annotated[str | None, typer.Option(help="person, organisation, project, ...")] = None,
    fact: Annotated[list[str] | None, typer.Option("--fact", help="key=value")] = None,
    alias: Annotated[list[str] | None, typer.Option("--alias", help="Another name.")] = None,
    summary: Annotated[str | None, typer.Option(help="A summary (markdown).")] = None,
    valid_from: Annotated[
        str | None, typer.Option("--valid-from", help="When the facts start to hold.")
    ] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an entity or add to it."""
    facts = _facts(fact)
    with _memory(as_name) as mem:
        res = mem.upsert_entity(
            name, kind, aliases=alias or (), summary=summary, facts=facts, valid_from=valid_from
        )
    if as_json:
        _emit(res)
    elif res["tx"] is None:
        out.print(f"{res['id']} already says that; nothing written")
    else:
        out.print(f"{res['id']} in tx {res['tx']}")


@entity_app.command("show")
def entity_show(
    ref: str, as_of: AsOfOpt = None, valid_at: ValidAtOpt = None, as_json: JsonFlag = False
) -> None:
    """An entity as it stood: name, kind, facts, links."""
    with _memory() as mem:
        found = mem.entity(ref, as_of=as_of, valid_at=valid_at)
    if as_json:
        _emit(found)
        return
    title = f"{found.get('entity/name', found['id'])} ({found.get('entity/kind') or 'entity'})"
    table = Table("", "", title=title, show_header=False)
    table.add_row("id", found["id"])
    if found.get("entity/aliases"):
        table.add_row("aliases", ", ".join(found["entity/aliases"]))
    for key, value in sorted((found.get("facts") or {}).items()):
        table.add_row(key, str(value))
    for link in found["links"]:
        arrow = "→" if link["direction"] == "out" else "←"
        table.add_row(link["type"] or "link", f"{arrow} {link['entity']}")
    table.add_row("observations", str(found["observations"]))
    table.add_row("valid at", found["valid_at"] or "")
    out.print(table)
    if found.get("text"):
        out.print(Markdown(found["text"]))


@entity_app.command("timeline")
def entity_timeline(ref: str, as_of: AsOfOpt = None, as_json: JsonFlag = False) -> None:
    """Observations and fact changes, oldest first."""
    with _memory() as mem:
        events = mem.timeline(ref, as_of=as_of)
    if as_json:
        _emit(events)
        return
    table = Table("at", "type", "what", "author / until")
    for ev in events:
        if ev["type"] == "observation":
            what = _snippet(ev["text"])
            if ev["fact"]:
                what += f" [{ev['fact']}={ev['value']}]"
            table.add_row(ev["at"], "observation", what, ev["author"] or "")
        else:
            table.add_row(ev["at"], "fact", f"{ev['fact']} = {ev['value']}", ev["valid_to"] or "∞")
    out.print(table)


@entity_app.command("observe")
def entity_observe(
    ref: str,
    text: str,
    at: AtOpt = None,
    source: Annotated[str | None, typer.Option(help="Where it came from.")] = None,
    fact: Annotated[str | None, typer.Option("--fact", help="key=value it sets.")] = None,
    valid_to: Annotated[
        str | None, typer.Option("--valid-to", help="When the fact stops holding.")
    ] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Record a dated, sourced observation on an entity's timeline."""
    key = value = None
    if fact is not None:
        ((key, value),) = _facts([fact]).items()
    with _memory(as_name) as mem:
        res = mem.observe(ref, text, at=at, source=source, fact=key, value=value, valid_to=valid_to)
    if as_json:
        _emit(res)
    else:
        out.print(f"observed {res['entity']} as {res['id']} (tx {res['tx']})")


@entity_app.command("kinds")
def entity_kinds(as_json: JsonFlag = False) -> None:
    """The entity kinds there are."""
    with _memory() as mem:
        kinds = mem.kinds()
    if as_json:
        _emit(kinds)
    else:
        for kind in kinds:
            out.print(kind)


@entity_app.command("add-kind")
def entity_add_kind(name: str, as_name: AsOpt = None) -> None:
    """Add an entity kind."""
    with _memory(as_name) as mem:
        res = mem.add_kind(name)
    kind = slugify(name)
    out.print(f"kind {kind} added (tx {res.tx})" if res else f"kind {kind} already exists")


# -- decisions ---------------------------------------------------------------------------------
def decide(
    title: str,
    why: Annotated[str, typer.Option("--why", help="Why it was decided.")],
    alt: Annotated[list[str] | None, typer.Option("--alt", help="An alternative.")] = None,
    evidence: Annotated[
        list[str] | None, typer.Option("--evidence", help="What supports it.")
    ] = None,
    at: AtOpt = None,
    supersedes: Annotated[
        str | None, typer.Option(help="The id of a decision this replaces.")
    ] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Log a decision: what, why, alternatives, evidence."""
    with _memory(as_name) as mem:
        res = mem.log_decision(
            title,
            why,
            alternatives=alt or (),
            evidence=evidence or (),
            at=at,
            supersedes=supersedes,
        )
    if as_json:
        _emit(res)
    else:
        out.print(f"decision {res['id']} (tx {res['tx']})")


def decisions(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Decisions, newest first."""
    with _memory() as mem:
        items = mem.items("decision", limit=limit)
    if as_json:
        _emit(items)
    else:
        out.print(_items_table(items, "at", "title", "decision/why", "decision/by"))


# -- canon -------------------------------------------------------------------------------------
@canon_app.command("set")
def canon_set(
    name: str,
    source: SourceArg,
    title: Annotated[str | None, typer.Option(help="A title.")] = None,
    as_name: AsOpt = None,
) -> None:
    """Write a canon document from FILE or stdin (only the operator may)."""
    body = _read_text(source)
    with _memory(as_name) as mem:
        res = mem.write_canon(name, body, title)
    if res["tx"] is None:
        out.print(f"{res['id']} already says that; nothing written")
    else:
        out.print(f"{res['id']} (tx {res['tx']})")


@canon_app.command("list")
def canon_list(as_json: JsonFlag = False) -> None:
    """Canon documents."""
    with _memory() as mem:
        items = mem.canon()
    if as_json:
        _emit(items)
    else:
        out.print(_items_table(items, "canon/name", "title"))


@canon_app.command("show")
def canon_show(name: str, as_of: AsOfOpt = None, as_json: JsonFlag = False) -> None:
    """One canon document's text."""
    with _memory() as mem:
        item = mem.item(f"canon:{slugify(name)}", as_of=as_of)
    if as_json:
        _emit(item)
    else:
        sys.stdout.write(item.get("text", "").rstrip("\n") + "\n")


# -- episodes, capture, daybook ----------------------------------------------------------------
@episode_app.command("add")
def episode_add(
    source: SourceArg,
    agent: Annotated[str, typer.Option(help="The agent whose session this was.")],
    title: Annotated[str | None, typer.Option(help="A title.")] = None,
    session: Annotated[str | None, typer.Option(help="The tool's own session id.")] = None,
    at: AtOpt = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Record a transcript from FILE or stdin."""
    text = _read_text(source)
    with _memory(as_name) as mem:
        res = mem.add_episode(text, agent=agent, title=title, session=session, at=at)
    if as_json:
        _emit(res)
    else:
        out.print(f"episode {res['id']} (tx {res['tx']})")


def capture(
    text: str,
    source: Annotated[str | None, typer.Option(help="Where it came from.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Quick capture: keep a raw note."""
    with _memory(as_name) as mem:
        res = mem.capture(text, source=source, tags=tag or ())
    if as_json:
        _emit(res)
    else:
        out.print(f"captured {res['id']} (tx {res['tx']})")


def daybook(
    text: Annotated[str | None, typer.Argument(help="An entry; without it, show the day.")] = None,
    day: Annotated[str | None, typer.Option(help="The day to show, YYYY-MM-DD.")] = None,
    at: AtOpt = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Add to the daybook, or show a day of it (today by default)."""
    if text is not None:
        if day is not None:
            raise BadInput("--day picks a day to show; to date a new entry use --at")
        with _memory(as_name) as mem:
            res = mem.daybook(text, at=at)
        if as_json:
            _emit(res)
        else:
            out.print(f"daybook {res['day']}: {res['id']} (tx {res['tx']})")
        return
    if at is not None or as_name is not None:
        raise BadInput("--at and --as apply to a new entry; give its text")
    with _memory() as mem:
        day = day or _today(mem.ledger)
        entries = mem.day(day)
    if as_json:
        _emit(entries)
    elif not entries:
        out.print(f"nothing in the daybook for {day}")
    else:
        for entry in entries:
            out.print(f"[dim]{entry.get('at', '')}[/] {entry.get('text', '')}", highlight=False)


# -- wiki --------------------------------------------------------------------------------------
@wiki_app.command("add-source")
def wiki_add_source(
    source: SourceArg,
    title: Annotated[str | None, typer.Option(help="A title.")] = None,
    url: Annotated[str | None, typer.Option(help="Where the source lives.")] = None,
    topic: Annotated[list[str] | None, typer.Option("--topic", help="A topic.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest a raw source from FILE or stdin (the same text twice is one source)."""
    text = _read_text(source)
    with _memory(as_name) as mem:
        res = Wiki(mem).add_source(text, title=title, url=url, topics=topic or ())
    if as_json:
        _emit(res)
    else:
        state = "already known" if res["duplicate"] else "ingested"
        out.print(f"{res['id']} {state} ({res['hash']})")


@wiki_app.command("write")
def wiki_write(
    slug: str,
    source: SourceArg,
    title: Annotated[str | None, typer.Option(help="A title.")] = None,
    topic: Annotated[str | None, typer.Option(help="The topic it compiles.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Compile an article from FILE or stdin; its [[sources/<hash>]] citations must resolve."""
    body = _read_text(source)
    with _memory(as_name) as mem:
        res = Wiki(mem).write_article(slug, body, title=title, topic=topic, tags=tag)
    if as_json:
        _emit(res)
    elif res["tx"] is None:
        out.print(f"{res['id']} already says that; nothing written")
    else:
        out.print(f"{res['id']} (tx {res['tx']})")


@wiki_app.command("show")
def wiki_show(slug: str, as_of: AsOfOpt = None, as_json: JsonFlag = False) -> None:
    """One article."""
    with _memory() as mem:
        article = Wiki(mem).article(slug, as_of=as_of)
    if as_json:
        _emit(article)
        return
    out.print(f"[bold]{article['title']}[/] ({article['slug']}, topic {article['topic'] or '-'})")
    out.print(Markdown(article["body"] or ""))


@wiki_app.command("index")
def wiki_index(as_json: JsonFlag = False) -> None:
    """Articles grouped by topic."""
    with _memory() as mem:
        groups = Wiki(mem).index()
    if as_json:
        _emit(groups)
        return
    for group in groups:
        out.print(f"[bold]{group['topic']}[/]", highlight=False)
        for a in group["articles"]:
            out.print(f"  {a['slug']}: {a['title']} ({a['sources']} sources)", highlight=False)


@wiki_app.command("log")
def wiki_log(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """What was ingested, compiled and fixed, newest first."""
    with _memory() as mem:
        entries = Wiki(mem).log(limit)
    if as_json:
        _emit(entries)
        return
    table = Table("tx", "time", "op", "target", "author")
    for e in entries:
        table.add_row(str(e["tx"]), e["time"], e["op"], e["target"], e["author"])
    out.print(table)


@wiki_app.command("lint")
def wiki_lint(
    fix: Annotated[bool, typer.Option("--fix", help="Apply the mechanical fixes first.")] = False,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Where the wiki has drifted; exit 1 while findings remain (after any fixes)."""
    with _memory(as_name) as mem:
        wiki = Wiki(mem)
        fixed = wiki.fix() if fix else []
        findings = wiki.lint()
    if as_json:
        _emit({"fixed": fixed, "findings": findings})
    else:
        for f in fixed:
            out.print(f"[green]fixed[/] {f['kind']} {f['target']}: {f['detail']}", highlight=False)
        for f in findings:
            mark = " (fixable)" if f["fixable"] else ""
            out.print(f"[red]✗[/] {f['kind']} {f['target']}: {f['detail']}{mark}", highlight=False)
        if not findings:
            out.print("[green]✓[/] the wiki is clean")
    if findings:
        raise typer.Exit(1)


# -- vault -------------------------------------------------------------------------------------
@vault_app.command("export")
def vault_export(directory: Path, as_json: JsonFlag = False) -> None:
    """Write every memory surface as markdown files under DIR (an Obsidian vault)."""
    with _home().ledger() as ledger:
        report = vault.export(ledger, directory)
    if as_json:
        _emit(report)
    else:
        out.print(f"exported {report['files']} files to {directory} (version {report['version']})")


@vault_app.command("import")
def vault_import(directory: Path, as_name: AsOpt = None, as_json: JsonFlag = False) -> None:
    """Record edits made in an exported vault; exit 3 when any field conflicts."""
    with _home().ledger(as_name) as ledger:
        report = vault.import_vault(ledger, directory)
    if as_json:
        _emit(report)
    else:
        out.print(
            f"{report['files']} files: {report['unchanged']} unchanged, "
            f"{len(report['applied'])} applied, {len(report['merged'])} merged, "
            f"{len(report['created'])} created, {len(report['conflicts'])} conflicts, "
            f"{len(report['refused'])} refused, {len(report['skipped'])} skipped, "
            f"{len(report['missing'])} missing"
        )
        for kind in ("conflicts", "refused", "skipped", "missing"):
            for entry in report[kind]:
                detail = f": {entry['detail']}" if entry.get("detail") else ""
                out.print(
                    f"  {kind} {entry['file']} {entry.get('field', '')}{detail}", highlight=False
                )
    if report["conflicts"]:
        if not as_json:
            sys.stderr.write(
                f"keel: {len(report['conflicts'])} conflict(s); resolve them in the files "
                f"and import again\n"
            )
        raise typer.Exit(Conflict.exit_code)


def register(app: typer.Typer) -> None:
    """Add the memory commands to `app`."""
    for command in (recall, reindex, remember, working, decide, decisions, capture, daybook):
        app.command()(command)
    app.add_typer(entity_app, name="entity")
    app.add_typer(canon_app, name="canon")
    app.add_typer(episode_app, name="episode")
    app.add_typer(wiki_app, name="wiki")
    app.add_typer(vault_app, name="vault")
