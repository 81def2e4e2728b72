"""The memory commands (remember, working, entity, decide, canon, episode, capture,
daybook, recall, reindex, wiki, vault), run in this process through the `cli` fixture on
SQLite and PostgreSQL.

Each test writes through the command line, then reads back with --json. Set-up that is not
under test goes through the door as the operator.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

from conftest import sqlite_only

# What these commands do with the store is tested on both stores below them (operations,
# subsystems) and through the surfaces (tests/surfaces/test_through_the_door.py, api, mcp).
pytestmark = sqlite_only


def ok(result):
    """A command that succeeded: exit 0 and no traceback."""
    assert result.code == 0, result
    assert "Traceback" not in result.err
    return result


def refused(result, code: int) -> str:
    """A user mistake: the exit code, one line on stderr, no traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keel: "), result.err
    return lines[0]


@contextmanager
def terminal(monkeypatch):
    """Make the command line's stderr console believe it is an interactive terminal."""
    from keel.surfaces.cli import adapter

    adapter.err.cache_clear()
    with monkeypatch.context() as env:
        env.setenv("TTY_COMPATIBLE", "1")
        env.setenv("TTY_INTERACTIVE", "1")
        try:
            yield
        finally:
            adapter.err.cache_clear()


def test_every_surface_round_trips(keel_home, cli, run, tmp_path):
    run("identity.add", name="claude-code")
    work = ok(
        cli("remember", "scratch note", "--scope", "claude-code/run-1", "--ttl", "2h",
            "--as", "claude-code", "--json")
    ).json()  # fmt: skip
    assert work["id"] and work["tx"] and work["expires"].endswith("Z")
    # Without --scope a note belongs to whoever wrote it (new with the door).
    mine = ok(cli("remember", "my own note", "--as", "claude-code", "--json")).json()
    alice = ok(
        cli("entity", "add", "Alice Smith", "--kind", "person", "--fact", "lives_in=Denver",
            "--fact", "role=engineer", "--alias", "Al", "--summary", "Works at [[Acme]].",
            "--valid-from", "2019-05-01", "--json")
    ).json()  # fmt: skip
    assert alice["id"] == "entity:alice-smith" and alice["slug"] == "alice-smith" and alice["tx"]
    observed = ok(
        cli("entity", "observe", "alice-smith", "Alice moved to Boston", "--at", "2024-08-01",
            "--fact", "lives_in=Boston", "--source", "notes", "--json")
    ).json()  # fmt: skip
    assert observed["entity"] == "entity:alice-smith"
    # `entity observe --kind` creates a new entity of that kind with its first observation.
    ok(cli("entity", "observe", "Initech", "Initech was founded", "--kind", "organisation"))
    decision = ok(
        cli("decide", "Use SQLite", "--why", "It is simple.", "--alt", "Postgres", "--evidence",
            "bench", "--at", "2025-01-01", "--json")
    ).json()  # fmt: skip
    canon_file = tmp_path / "style.md"
    canon_file.write_text("Write short sentences.\n")
    ok(cli("canon", "set", "style", str(canon_file)))
    ok(
        cli("episode", "add", "-", "--agent", "claude", "--session", "s-1", "--title", "Greeting",
            input="user: hi\nagent: hello\n")
    )  # fmt: skip
    ok(cli("capture", "an idea", "--source", "phone", "--as", "claude-code"))
    ok(cli("daybook", "shipped the vault", "--at", "2026-05-01T09:00:00Z"))
    assert "added" in ok(cli("entity", "add-kind", "gadget")).out

    def read(*args: str):
        return ok(cli(*args, "--json")).json()

    working = read("working", "--scope", "claude-code/run-1")
    assert [w["text"] for w in working] == ["scratch note"]
    assert working[0]["scope"] == "claude-code/run-1"
    assert [w["id"] for w in read("working", "--scope", "claude-code")] == [mine["id"]]
    history = read("history", work["id"])
    assert {h["author"] for h in history} == {"claude-code"}
    then = read("entity", "show", "Alice Smith", "--valid-at", "2023-01-01")
    assert then["facts"] == {"lives_in": "Denver", "role": "engineer"}
    assert then["entity/aliases"] == ["Al"] and then["entity/kind"] == "person"
    assert {"type": "mentions", "direction": "out", "entity": "entity:acme"} in then["links"]
    now = read("entity", "show", "entity:alice-smith")
    assert now["facts"]["lives_in"] == "Boston" and now["observations"] == 1
    initech = read("entity", "show", "initech")
    assert initech["entity/kind"] == "organisation" and initech["observations"] == 1
    timeline = read("entity", "timeline", "alice-smith")
    assert timeline["entity"] == "entity:alice-smith"
    events = timeline["events"]
    facts = [(e["value"], e["valid_to"]) for e in events if e["type"] == "fact"]
    assert ("Denver", "2024-08-01T00:00:00Z") in facts and ("Boston", None) in facts
    obs = [e for e in events if e["type"] == "observation"]
    assert [o["id"] for o in obs] == [observed["id"]]
    assert obs[0]["text"] == "Alice moved to Boston" and obs[0]["source"] == "notes"
    decisions = read("decisions")
    assert decisions[0]["id"] == decision["id"] and decisions[0]["title"] == "Use SQLite"
    assert decisions[0]["decision/alternatives"] == ["Postgres"]
    assert decisions[0]["decision/by"] == "operator"
    assert [c["canon/name"] for c in read("canon", "list")] == ["style"]
    assert ok(cli("canon", "show", "style")).out == "Write short sentences.\n"
    assert read("canon", "show", "style")["text"] == "Write short sentences.\n"
    assert [d["text"] for d in read("daybook", "--day", "2026-05-01")] == ["shipped the vault"]
    kinds = read("entity", "kinds")
    assert "gadget" in kinds and "person" in kinds
    episodes = read("recall", "hello", "--surface", "episode")
    captures = read("recall", "idea", "--surface", "capture")
    assert episodes["results"][0]["id"] == "episode:s-1"
    assert captures["results"][0]["provenance"]["author"] == "claude-code"
    assert captures["results"][0]["provenance"]["source"] == "phone"

    # Human output is a table, not JSON; reading a missing day says so.
    shown = ok(cli("entity", "show", "alice-smith")).out
    assert "Boston" in shown and "Al" in shown
    assert "nothing in the daybook" in ok(cli("daybook", "--day", "1999-01-01")).out


def test_stored_text_is_printed_as_it_is_never_as_markup(keel_home, cli):
    """What someone stored is shown verbatim: square brackets are text, not styling."""
    text = "[red]alarm[/] [link=file:///etc/passwd]click[/link] [bold"
    ok(cli("daybook", text, "--at", "2026-05-01T09:00:00Z"))
    assert text in ok(cli("daybook", "--day", "2026-05-01")).out


def test_recall_respects_valid_time_and_reindex(keel_home, cli, run, monkeypatch):
    run("memory.entity.add", name="Alice", kind="person", facts={"lives_in": "Denver"},
        valid_from="2019-05-01")  # fmt: skip
    run("memory.observe", entity="Alice", text="Alice moved to Boston", at="2024-08-01",
        fact="lives_in", value="Boston")  # fmt: skip
    run("memory.capture", text="The quarterly report is due on Friday")

    then = ok(cli("recall", "where does Alice live", "--valid-at", "2023-06-01", "--json"))
    now = ok(cli("recall", "where does Alice live", "--json"))
    table = ok(cli("recall", "quarterly report"))

    def lived(result) -> list[str]:
        return [
            r["text"]
            for r in result.json()["results"]
            if r["provenance"]["attribute"] == "fact/lives_in"
        ]

    assert lived(then) and all("Denver" in t for t in lived(then))
    assert not any("Boston" in t for t in lived(then))
    assert now.json()["mode"] == "hybrid" and now.err == ""
    assert lived(now) and all("Boston" in t for t in lived(now))
    assert not any("moved" in r["text"] for r in then.json()["results"])
    assert "quarterly report" in table.out and "capture" in table.out
    with monkeypatch.context() as env:
        env.setenv("KEEL_EMBEDDER", "none")
        fulltext = ok(cli("recall", "quarterly report", "--json"))
    assert fulltext.json()["mode"] == "fulltext"
    assert "full text" in fulltext.err

    done = ok(cli("reindex"))
    assert "reindexed" in done.out and "rows/s" in done.out and "hybrid" in done.out
    rows = int(done.out.split("reindexed ")[1].split()[0])
    assert rows >= 4
    assert "indexing" not in done.err  # a pipe gets no progress bar...
    with terminal(monkeypatch):
        shown = ok(cli("reindex"))
    assert "indexing" in shown.err  # ...a terminal does
    assert ok(cli("reindex", "--json")).json()["reindexed"] == rows
    results = ok(cli("recall", "quarterly", "--json")).json()["results"]
    assert results[0]["surface"] == "capture"


def test_canon_is_operators_only_and_mistakes_write_nothing(keel_home, cli, run, head, tmp_path):
    run("identity.add", name="claude-code")
    before = head()
    # The door refuses it (exit 4, `forbidden`, naming the capability), before any guard
    # runs: the default pins do not grant canon.
    line = refused(cli("canon", "set", "style", "-", "--as", "claude-code", input="Rule."), 4)
    assert "never holds it" in line and "canon.write" in line
    bad = [
        (("entity", "add", ""), 2),
        (("entity", "add", "Bob", "--kind", "spaceship"), 2),
        (("entity", "add", "Bob", "--fact", "lives in=Denver"), 2),
        (("entity", "add", "Bob", "--fact", "nofact"), 2),
        (("entity", "observe", "alice", "text", "--fact", "nofact"), 2),
        (("remember", "x", "--scope", "run", "--ttl", "nope"), 2),
        (("remember", "x", "--scope", "run", "--ttl", "1h", "--expires", "2030-01-01"), 2),
        (("recall", " "), 2),
        (("recall", "x", "--surface", "nowhere"), 2),
        (("canon", "set", "style", str(tmp_path / "missing.md")), 2),
        (("canon", "show", "nothing"), 1),
        (("entity", "show", "nobody"), 1),
        (("entity", "observe", "alice", "text", "--at", "not a date"), 2),
        (("decide", "Use X", "--why", ""), 2),
        (("daybook", "--at", "2026-01-01"), 2),
        (("daybook", "x", "--day", "2026-01-01"), 2),
        (("daybook", "--day", "May 1st"), 2),
        (("wiki", "show", "nothing"), 1),
        # An identity this ledger does not know is unauthorized now: exit 4 (it was 1).
        (("remember", "x", "--scope", "run", "--as", "nobody"), 4),
        (("vault", "import", str(tmp_path / "no-vault")), 2),
    ]
    for args, code in bad:
        try:
            refused(cli(*args), code)
        except AssertionError as exc:
            raise AssertionError(f"keel {' '.join(args)}: {exc}") from None
    assert head() == before
    assert ok(cli("canon", "list", "--json")).json() == []


def test_wiki(keel_home, cli, tmp_path):
    text = "Raw notes about topic X."
    digest = hashlib.sha256(text.encode()).hexdigest()
    src = tmp_path / "src.txt"
    src.write_text(text)
    added = ok(
        cli("wiki", "add-source", str(src), "--title", "Notes", "--topic", "Machine Learning",
            "--url", "https://example.org/x", "--json")
    ).json()  # fmt: skip
    assert added["hash"] == f"sha256:{digest}" and not added["duplicate"]
    again = ok(cli("wiki", "add-source", "-", "--json", input=text)).json()
    assert again["duplicate"] and again["id"] == added["id"]
    sources = ok(cli("wiki", "sources", "--json")).json()
    assert [(s["id"], s["title"], s["url"]) for s in sources] == [
        (added["id"], "Notes", "https://example.org/x")
    ]
    assert sources[0]["topics"] == ["Machine Learning"] and sources[0]["text"] == text
    assert ok(cli("wiki", "sources", "--topic", "Cooking", "--json")).json() == []
    body = f"# X\n\nX is a topic [[sources/{digest[:12]}]].\n"
    ok(
        cli("wiki", "write", "topic-x", "-", "--title", "Topic X", "--topic", "Machine Learning",
            "--tag", "machine_learnings", input=body)
    )  # fmt: skip
    article = ok(cli("wiki", "show", "topic-x", "--json")).json()
    assert article["body"] == body and article["cites"] == [added["id"]]
    assert ok(cli("wiki", "index", "--json")).json() == [
        {
            "topic": "Machine Learning",
            "articles": [{"slug": "topic-x", "title": "Topic X", "sources": 1}],
        }
    ]
    assert [entry["op"] for entry in ok(cli("wiki", "log", "--json")).json()] == [
        "compile",
        "ingest",
    ]
    uncited = cli("wiki", "write", "y", "-", input="[[sources/abcdef12]]")
    assert "matches no source" in refused(uncited, 2)

    lint = cli("wiki", "lint", "--json")
    assert lint.code == 1  # findings remain
    assert [f["kind"] for f in lint.json()] == ["near-duplicate-tags"]
    shown = cli("wiki", "lint")
    assert shown.code == 1 and "near-duplicate-tags" in shown.out
    fixed = ok(cli("wiki", "lint", "--fix", "--json")).json()
    assert [f["kind"] for f in fixed["fixed"]] == ["near-duplicate-tags"]
    assert fixed["findings"] == []
    assert "clean" in ok(cli("wiki", "lint")).out
    ok(cli("wiki", "add-source", "-", input="An orphan source."))
    orphan = cli("wiki", "lint", "--fix")
    assert orphan.code == 1 and "orphan-source" in orphan.out


def test_vault_export_import_and_conflict(keel_home, cli, run, head, tmp_path):
    run("memory.entity.add", name="Alice Smith", kind="person", summary="Alice.")
    run("memory.capture", text="an idea")
    root = tmp_path / "vault"
    assert "exported" in ok(cli("vault", "export", str(root))).out
    # Entity files are named by display name now (they were named by slug).
    alice = root / "entities" / "Alice Smith.md"
    assert alice.exists() and (root / "index.md").exists()

    same = ok(cli("vault", "import", str(root), "--json")).json()
    assert same["conflicts"] == [] and same["applied"] == [] and same["unchanged"] == same["files"]

    alice.write_text(alice.read_text().replace("kind: person", "kind: project"))
    run("memory.entity.add", name="Alice Smith", kind="organisation")
    before = head()
    clash = cli("vault", "import", str(root))
    assert clash.code == 3, clash
    assert "conflicts entities/Alice Smith.md kind" in clash.out
    assert "conflict" in refused(clash, 3)
    as_json = cli("vault", "import", str(root), "--json")
    assert as_json.code == 3 and as_json.json()["conflicts"][0]["field"] == "kind"
    assert as_json.json()["conflicts"][0]["file"] == "entities/Alice Smith.md"
    assert head() == before
    assert alice.read_text().count("kind: project") == 1

    # New with the rewritten vault: export will not overwrite a file changed since keel
    # wrote it (exit 3, naming it, nothing written) unless told to with --force.
    edited = alice.read_text()
    refused_export = cli("vault", "export", str(root))
    assert "Alice Smith.md" in refused(refused_export, 3)
    assert alice.read_text() == edited
    forced = ok(cli("vault", "export", str(root), "--force", "--json")).json()
    assert forced["directory"] == str(root) and forced["files"] >= 2
    assert "kind: organisation" in alice.read_text() and "kind: project" not in alice.read_text()
    clean = ok(cli("vault", "import", str(root), "--json")).json()
    assert clean["conflicts"] == [] and clean["unchanged"] == clean["files"]
    assert head() == before
