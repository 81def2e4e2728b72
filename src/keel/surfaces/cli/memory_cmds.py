"""Memory commands: recall, reindex, remember, working, entity, decide, decisions, canon,
episode, capture, daybook, wiki and vault.

Writes act as the operator unless `--as NAME` names another identity with a key in the
home; the door then applies that identity's rights. Read commands offer `--json`.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from .adapter import (
    AsOfOpt,
    AsOpt,
    JsonFlag,
    ValidAtOpt,
    call,
    emit,
    local,
    local_path,
    marked,
    out,
    progress,
    read_text,
    snippet,
    table,
)

entity_app = typer.Typer(no_args_is_help=True, help="The brain: entities, facts, timelines.")
canon_app = typer.Typer(no_args_is_help=True, help="Source-of-truth rules (operator only).")
episode_app = typer.Typer(no_args_is_help=True, help="Agents' session transcripts.")
wiki_app = typer.Typer(no_args_is_help=True, help="The topic wiki: sources and articles.")
vault_app = typer.Typer(no_args_is_help=True, help="Memory as an Obsidian vault.")

AtOpt = Annotated[str | None, typer.Option("--at", help="When it happened (ISO 8601).")]
SourceArg = Annotated[str, typer.Argument(help="A file, or - for stdin.")]


def _facts(pairs: list[str] | None) -> dict[str, str]:
    from ...errors import BadInput

    facts: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"a fact is key=value, like lives_in=Denver; got {pair!r}")
        facts[key.strip()] = value.strip()
    return facts


def _items_table(items: list[Any], *columns: str) -> Any:
    t = table("id", *columns)
    for item in items:
        data = item.model_dump(by_alias=True)
        row = [item.id]
        for c in columns:
            value = data.get(c)
            if c == "at":
                row.append(local(value))
                continue
            row.append(snippet(", ".join(value) if isinstance(value, list) else value))
        t.add_row(*row)
    return t


def _written(result: Any, what: str | None = None) -> None:
    name = what or result.id
    if getattr(result, "tx", None) is None:
        out().print(f"{name} already says that; nothing written")
    else:
        out().print(f"{name} (tx {result.tx})")


# -- recall -----------------------------------------------------------------------------------
def recall(
    query: str,
    surface: Annotated[str | None, typer.Option(help="Only this memory surface.")] = None,
    as_of: AsOfOpt = None,
    valid_at: ValidAtOpt = None,
    k: Annotated[int, typer.Option("--k", help="At most this many results.")] = 10,
    mode: Annotated[
        str | None, typer.Option(help="hybrid (default), or fulltext or dense alone.")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show why: each result's score components.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search memory: full text and vectors, fused, as of and valid at the times asked."""
    found = call(
        "recall.search",
        {
            "query": query,
            "surface": surface,
            "as_of": as_of,
            "valid_at": valid_at,
            "k": k,
            "mode": mode,
            "explain": explain,
        },
    )
    if found.note:
        sys.stderr.write(f"keel: {found.note}\n")
    if as_json:
        return emit("recall.search", found)
    if not found.results:
        out().print(f"nothing recalled for {query!r}")
        return
    parts = ("dense", "fulltext", "fact", "recency", "score")
    t = table("surface", "title / text", "author", "tx", "valid", *(parts if explain else ()))
    for r in found.results:
        p = r.provenance
        title, text = r.title or "", r.text or ""
        text = text if text.startswith(title) else f"{title}: {text}"
        if r.updated_by:
            text = f"(then) {text}"
        elif r.updates:
            text = f"(now) {text}"
        valid = f"{local(p.valid_from) or '-∞'} → {local(p.valid_to) or '∞'}"
        why = [f"{(r.explain or {}).get(name, 0.0):.3f}" for name in parts] if explain else []
        t.add_row(r.surface, snippet(text, 80), p.author or "", str(p.tx), valid, *why)
        for before in r.previous or []:
            span = f"{local(before.valid_from) or '-∞'} → {local(before.valid_to) or '∞'}"
            t.add_row("", snippet(f"  before: {before.text}", 80), "", "", span)
    out().print(t)


def reindex(
    embedder: Annotated[
        str | None,
        typer.Option(
            help="Re-embed everything with this embedder and make it the home's "
            "(local, local:use-m3, none, ollama:MODEL[@URL], openai:MODEL@URL)."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rebuild the recall index from the whole ledger, whatever state it is in."""
    with progress("indexing") as report_progress:
        result = call(
            "recall.reindex", {"embedder": embedder}, progress=report_progress, json=as_json
        )
    rate = result.reindexed / max(result.seconds, 1e-6)
    out().print(
        f"reindexed {result.reindexed} rows in {result.seconds:.2f}s "
        f"({rate:.0f} rows/s, {result.mode})"
    )


# -- working memory ------------------------------------------------------------------------------
def remember(
    text: str,
    scope: Annotated[
        str | None, typer.Option(help="The agent or run it belongs to (default: you).")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="How long it lasts: 90s, 30m, 2h, 1d.")] = None,
    expires: Annotated[str | None, typer.Option(help="When it expires (ISO 8601).")] = None,
    title: Annotated[str | None, typer.Option(help="A short title.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Keep a note in working memory until it expires (default 24h)."""
    res = call(
        "memory.remember",
        {"text": text, "scope": scope, "ttl": ttl, "expires": expires, "title": title},
        as_name,
        json=as_json,
    )
    out().print(f"remembered {res.id} until {local(res.expires)} (tx {res.tx})")


def working(
    scope: Annotated[str | None, typer.Option(help="Only this agent or run.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Working memory that has not expired."""
    items = call("memory.working", {"scope": scope}, json=as_json)
    out().print(_items_table(items, "scope", "text"))


# -- entities -----------------------------------------------------------------------------------
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
    res = call(
        "memory.entity.add",
        {
            "name": name,
            "kind": kind,
            "facts": _facts(fact),
            "aliases": alias or [],
            "summary": summary,
            "valid_from": valid_from,
        },
        as_name,
        json=as_json,
    )
    _written(res)


@entity_app.command("show")
def entity_show(
    ref: str, as_of: AsOfOpt = None, valid_at: ValidAtOpt = None, as_json: JsonFlag = False
) -> None:
    """An entity as it stood: name, kind, facts, links."""
    found = call(
        "memory.entity.show", {"ref": ref, "as_of": as_of, "valid_at": valid_at}, json=as_json
    )
    data = found.model_dump(by_alias=True)
    name = data.get("entity/name") or found.id
    t = table("", "", title=f"{name} ({data.get('entity/kind') or 'entity'})")
    t.show_header = False
    t.add_row("id", found.id)
    if data.get("entity/aliases"):
        t.add_row("aliases", ", ".join(data["entity/aliases"]))
    for key, value in sorted((found.facts or {}).items()):
        t.add_row(key, str(value))
    for link in found.links:
        arrow = "→" if link.direction == "out" else "←"
        t.add_row(link.type or "link", f"{arrow} {link.entity}")
    t.add_row("observations", str(found.observations))
    t.add_row("valid at", local(found.valid_at))
    out().print(t)
    if found.text:
        from rich.markdown import Markdown

        out().print(Markdown(found.text))


@entity_app.command("timeline")
def entity_timeline(ref: str, as_of: AsOfOpt = None, as_json: JsonFlag = False) -> None:
    """Observations and fact changes, oldest first."""
    found = call("memory.entity.timeline", {"ref": ref, "as_of": as_of}, json=as_json)
    t = table("at", "type", "what", "author / until")
    for ev in found.events:
        data = ev.model_dump()
        if ev.type == "observation":
            what = snippet(data.get("text"))
            if ev.fact:
                what += f" [{ev.fact}={ev.value}]"
            t.add_row(local(ev.at), "observation", what, data.get("author") or "")
        else:
            t.add_row(
                local(ev.at), "fact", f"{ev.fact} = {ev.value}", local(data.get("valid_to")) or "∞"
            )
    out().print(t)


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
    kind: Annotated[str | None, typer.Option(help="The kind of a new entity.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Record a dated, sourced observation on an entity's timeline (one transaction)."""
    key = value = None
    if fact is not None:
        ((key, value),) = _facts([fact]).items()
    res = call(
        "memory.observe",
        {
            "entity": ref,
            "text": text,
            "at": at,
            "source": source,
            "fact": key,
            "value": value,
            "valid_to": valid_to,
            "kind": kind,
        },
        as_name,
        json=as_json,
    )
    out().print(f"observed {res.entity} as {res.id} (tx {res.tx})")


@entity_app.command("kinds")
def entity_kinds(as_json: JsonFlag = False) -> None:
    """The entity kinds there are."""
    kinds = call("memory.entity.kinds", json=as_json)
    for kind in kinds:
        out().print(kind)


@entity_app.command("add-kind")
def entity_add_kind(name: str, as_name: AsOpt = None, as_json: JsonFlag = False) -> None:
    """Add an entity kind."""
    res = call("memory.entity.add_kind", {"name": name}, as_name, json=as_json)
    out().print(f"kind {res.kind} added (tx {res.tx})" if res.tx else f"kind {res.kind} exists")


# -- decisions ------------------------------------------------------------------------------------
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
    res = call(
        "memory.decide",
        {
            "title": title,
            "why": why,
            "alternatives": alt or [],
            "evidence": evidence or [],
            "at": at,
            "supersedes": supersedes,
        },
        as_name,
        json=as_json,
    )
    out().print(f"decision {res.id} (tx {res.tx})")


def decisions(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Decisions, newest first."""
    items = call("memory.decisions", {"limit": limit}, json=as_json)
    out().print(_items_table(items, "at", "title", "decision/why", "decision/by"))


# -- canon --------------------------------------------------------------------------------------
@canon_app.command("set")
def canon_set(
    name: str,
    source: SourceArg,
    title: Annotated[str | None, typer.Option(help="A title.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a canon document from FILE or stdin (only the operator may)."""
    res = call(
        "memory.canon.set",
        {"name": name, "text": read_text(source), "title": title},
        as_name,
        json=as_json,
    )
    _written(res)


@canon_app.command("list")
def canon_list(as_json: JsonFlag = False) -> None:
    """Canon documents."""
    items = call("memory.canon.list", json=as_json)
    out().print(_items_table(items, "canon/name", "title"))


@canon_app.command("show")
def canon_show(name: str, as_of: AsOfOpt = None, as_json: JsonFlag = False) -> None:
    """One canon document's text."""
    item = call("memory.canon.show", {"name": name, "as_of": as_of}, json=as_json)
    sys.stdout.write((item.text or "").rstrip("\n") + "\n")


@canon_app.command("status")
def canon_status(as_json: JsonFlag = False) -> None:
    """Each node's canon/cadence.toml against the ledger's canon (exit 1 on a conflict)."""
    rows = call("canon.status", json=as_json)
    t = table("node", "file", "state", "agreed with")
    for row in rows:
        t.add_row(row.node, row.file, row.state, (row.agreed or "—")[:12])
    out().print(t)
    if any(row.state == "conflict" for row in rows):
        raise typer.Exit(1)


# -- episodes, capture, daybook -----------------------------------------------------------------
@episode_app.command("add")
def episode_add(
    source: SourceArg,
    agent: Annotated[
        str | None, typer.Option(help="The agent whose session this was (default: --as).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="A title.")] = None,
    session: Annotated[str | None, typer.Option(help="The tool's own session id.")] = None,
    at: AtOpt = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Record a transcript from FILE or stdin."""
    res = call(
        "memory.episode.add",
        {
            "text": read_text(source),
            "agent": agent,
            "title": title,
            "session": session,
            "at": at,
        },
        as_name,
        json=as_json,
    )
    out().print(f"episode {res.id} (tx {res.tx})")


def capture(
    text: str,
    source: Annotated[str | None, typer.Option(help="Where it came from.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag.")] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Quick capture: keep a raw note."""
    res = call(
        "memory.capture", {"text": text, "source": source, "tags": tag or []}, as_name, json=as_json
    )
    out().print(f"captured {res.id} (tx {res.tx})")


def daybook(
    text: Annotated[str | None, typer.Argument(help="An entry; without it, show the day.")] = None,
    day: Annotated[str | None, typer.Option(help="The day to show, YYYY-MM-DD.")] = None,
    at: AtOpt = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Add to the daybook, or show a day of it (today by default)."""
    from ...errors import BadInput

    if text is not None:
        if day is not None:
            raise BadInput("--day picks a day to show; to date a new entry use --at")
        res = call("memory.daybook.add", {"text": text, "at": at}, as_name, json=as_json)
        out().print(f"daybook {res.day}: {res.id} (tx {res.tx})")
        return
    if at is not None or as_name is not None:
        raise BadInput("--at and --as apply to a new entry; give its text")
    entries = call("memory.daybook.day", {"day": day}, json=as_json)
    if not entries:
        out().print(f"nothing in the daybook for {day or 'today'}")
    for entry in entries:
        marked(local(entry.at), "dim", f" {entry.text or ''}")


# -- wiki ---------------------------------------------------------------------------------------
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
    res = call(
        "wiki.source.add",
        {"text": read_text(source), "title": title, "url": url, "topics": topic or []},
        as_name,
        json=as_json,
    )
    state = "already known" if res.duplicate else "ingested"
    out().print(f"{res.id} {state} ({res.hash})")


@wiki_app.command("sources")
def wiki_sources(
    topic: Annotated[str | None, typer.Option(help="Only sources about this topic.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Sources, newest first."""
    found = call("wiki.sources", {"topic": topic}, json=as_json)
    t = table("id", "title", "topics", "at")
    for s in found:
        t.add_row(s.id, snippet(s.title or s.text), ", ".join(s.topics), local(s.at))
    out().print(t)


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
    res = call(
        "wiki.article.write",
        {"slug": slug, "body": read_text(source), "title": title, "topic": topic, "tags": tag},
        as_name,
        json=as_json,
    )
    _written(res)


@wiki_app.command("show")
def wiki_show(slug: str, as_of: AsOfOpt = None, as_json: JsonFlag = False) -> None:
    """One article."""
    article = call("wiki.article.show", {"slug": slug, "as_of": as_of}, json=as_json)
    from rich.markdown import Markdown

    topic = article.topic or "-"
    marked(article.title, "bold", f" ({article.slug}, topic {topic})")
    out().print(Markdown(article.body or ""))


@wiki_app.command("index")
def wiki_index(as_json: JsonFlag = False) -> None:
    """Articles grouped by topic."""
    groups = call("wiki.index", json=as_json)
    for group in groups:
        marked(group.topic, "bold")
        for a in group.articles:
            out().print(f"  {a.slug}: {a.title} ({a.sources} sources)")


@wiki_app.command("log")
def wiki_log(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """What was ingested, compiled and fixed, newest first."""
    entries = call("wiki.log", {"limit": limit}, json=as_json)
    t = table("tx", "time", "op", "target", "author")
    for e in entries:
        t.add_row(str(e.tx), local(e.time), e.op or "", e.target or "", e.author)
    out().print(t)


@wiki_app.command("lint")
def wiki_lint(
    fix: Annotated[bool, typer.Option("--fix", help="Apply the mechanical fixes first.")] = False,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Where the wiki has drifted; exit 1 while findings remain (after any fixes)."""
    if fix:
        report = call("wiki.fix", {}, as_name)
        fixed, findings = report.fixed, report.findings
        if as_json:
            emit("wiki.fix", report)
    else:
        fixed, findings = [], call("wiki.lint", {}, as_name)
        if as_json:
            emit("wiki.lint", findings)
    if not as_json:
        for f in fixed:
            marked("fixed", "green", f" {f.kind} {f.target}: {f.detail}")
        for f in findings:
            mark = " (fixable)" if f.fixable else ""
            marked("✗", "red", f" {f.kind} {f.target}: {f.detail}{mark}")
        if not findings:
            marked("✓", "green", " the wiki is clean")
    if findings:
        raise typer.Exit(1)


# -- vault --------------------------------------------------------------------------------------
@vault_app.command("export")
def vault_export(
    directory: str,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files changed since keel wrote them.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write every memory surface as markdown files under DIR (an Obsidian vault). Refuses
    to overwrite a file edited since keel wrote it: import first, or --force."""
    report = call("vault.export", {"dir": local_path(directory), "force": force}, json=as_json)
    out().print(f"exported {report.files} files to {report.directory} (version {report.version})")


@vault_app.command("import")
def vault_import(directory: str, as_name: AsOpt = None, as_json: JsonFlag = False) -> None:
    """Record edits made in an exported vault; exit 3 when any field conflicts."""
    report = call("vault.import", {"dir": local_path(directory)}, as_name)
    if as_json:
        emit("vault.import", report)
    else:
        out().print(
            f"{report.files} files: {report.unchanged} unchanged, "
            f"{len(report.applied)} applied, {len(report.merged)} merged, "
            f"{len(report.created)} created, {len(report.conflicts)} conflicts, "
            f"{len(report.refused)} refused, {len(report.skipped)} skipped, "
            f"{len(report.missing)} missing"
        )
        for kind in ("conflicts", "refused", "skipped", "missing"):
            for entry in getattr(report, kind):
                detail = f": {entry['detail']}" if entry.get("detail") else ""
                out().print(f"  {kind} {entry['file']} {entry.get('field', '')}{detail}")
    if report.conflicts:
        if not as_json:
            sys.stderr.write(
                f"keel: {len(report.conflicts)} conflict(s); resolve them in the files "
                "and import again\n"
            )
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add the memory commands to `app`."""
    for command in (recall, reindex, remember, working, decide, decisions, capture, daybook):
        app.command()(command)
    app.add_typer(entity_app, name="entity")
    app.add_typer(canon_app, name="canon")
    app.add_typer(episode_app, name="episode")
    app.add_typer(wiki_app, name="wiki")
    app.add_typer(vault_app, name="vault")
