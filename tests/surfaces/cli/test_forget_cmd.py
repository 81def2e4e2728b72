"""`keel forget` on SQLite and PostgreSQL, through the `cli` fixture: the value's bytes
leave every file under KEEL_HOME (ledger, -wal, -shm, blobs, the recall index) or every
row and relation file of the PostgreSQL schema; reads show who forgot it, when and why;
an export made afterwards carries the marker and imports into a fresh home; mistakes and
refusals are one sentence."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from conftest import files_holding, fresh_pg_schema, pg_rows_holding

NOTE = [{"attribute": "note/body", "type": "string"}]


def ok(result):
    assert result.code == 0, result
    assert "Traceback" not in result.err
    return result


def one_clear_line(result, code: int, *words: str) -> str:
    assert result.code == code, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def holders(keel_home, needle: bytes) -> list[str]:
    found = files_holding(keel_home.path, needle)
    dsn = os.environ.get("KEEL_DB")
    return found + (pg_rows_holding(dsn, needle) if dsn else [])


@pytest.fixture
def fresh_db(store_kind):
    if store_kind == "sqlite":
        yield ""
        return
    with fresh_pg_schema() as dsn:
        yield dsn


def test_keel_forget_leaves_no_byte_of_the_value_anywhere(
    keel_home, cli, run, tmp_path, fresh_db, monkeypatch
):
    small, large, kept = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(16)
    note = run("memory.capture", text=f"the locker code is {small}").id
    run("schema.add", attributes=NOTE)
    body = f"{large} " + secrets.token_hex(1200)  # beyond the inline limit: a blob
    made = run(
        "ledger.transact",
        ops=[
            {"e": "#n", "a": "note/body", "v": body},
            {"e": "#k", "a": "note/body", "v": kept},
        ],
    )
    doc = made.tempids["#n"]
    assert small in ok(cli("recall", small, "--json")).out  # the index holds it now
    for needle in (small, large):
        assert holders(keel_home, needle.encode())

    done = ok(cli("forget", note, "mem/text", "--why", "a code is not a memory", "--json"))
    assert done.json()["datoms"] == 1 and done.json()["recall_rows"] >= 1
    shown = ok(cli("forget", doc, "--why", "the whole document")).out
    assert f"forgot 1 value(s) of {doc}" in shown and "1 blob(s)" in shown

    for needle in (small, large):
        assert holders(keel_home, needle.encode()) == [], needle
    assert holders(keel_home, kept.encode())
    assert ok(cli("verify", "--json")).json()["ok"]
    got = ok(cli("get", note, "--json")).json()["mem/text"]["forgotten"]
    assert got["by"] == "operator" and got["why"] == "a code is not a memory"
    assert got["tx"] == done.json()["tx"] and got["time"]
    (entry,) = ok(cli("history", note, "mem/text", "--json")).json()
    assert entry["v"] == {"forgotten": got}
    assert "⟨forgotten by operator in tx" in ok(cli("history", note, "mem/text")).out
    assert small not in json.dumps(ok(cli("recall", small, "--json")).json()["results"])
    logged = ok(cli("log", "--json")).lines()[-1]
    assert logged["reason"] == f"forget {doc}: the whole document"

    dump = tmp_path / "after.jsonl"
    ok(cli("export", str(dump)))
    text = dump.read_text()
    assert small not in text and large not in text and f'"forgotten":{got["tx"]}' in text
    monkeypatch.setenv("KEEL_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("KEEL_DB", fresh_db)
    ok(cli("import", str(dump)))
    assert ok(cli("verify", "--json")).json()["ok"]
    again = ok(cli("get", note, "--json")).json()["mem/text"]["forgotten"]
    assert again == got


def test_forget_mistakes_and_refusals_are_one_sentence(keel_home, cli, run, client):
    note = run("memory.capture", text="a note").id
    head = ok(cli("log", "--json")).lines()[-1]["tx"]
    one_clear_line(cli("forget", note), 2, "--why")
    one_clear_line(cli("forget", note, "--why", " "), 2, "say why")
    one_clear_line(cli("forget", note, "--value", "x", "--why", "w"), 2, "needs the attribute")
    one_clear_line(cli("forget", note, "nope/attr", "--why", "w"), 2, "nope/attr")
    one_clear_line(cli("forget", "nobody", "--why", "w"), 1, "nothing to forget")
    one_clear_line(cli("forget", "identity:operator", "--why", "w"), 4, "never forgotten")
    one_clear_line(cli("forget", note, "mem/text", "--value", "other", "--why", "w"), 1)
    refused = one_clear_line(cli("forget", note, "--why", "w", "--as", "client"), 4)
    assert "'client' may not ledger.forget" in refused and "'ledger.forget'" in refused
    assert [e for e in ok(cli("log", "--json")).lines() if e["tx"] > head and
            not e["reason"].startswith("refused ")] == []  # fmt: skip
    assert json.loads(ok(cli("get", note, "--json")).out)["mem/text"] == "a note"


def test_memory_reads_show_what_was_forgotten(keel_home, cli, run):
    """Memory's own reads keep working around a forgotten value and show its marker."""
    made = run("memory.entity.add", name="Dana Doe", kind="person", facts={"lives_in": "Oslo"})
    decided = run("memory.decide", title="Pick the red one", why="Dana said so").id
    ok(cli("forget", made.id, "fact/lives_in", "--why", "her address is hers"))
    ok(cli("forget", made.id, "entity/name", "--why", "and so is her name"))
    ok(cli("forget", decided, "mem/title", "--why", "the title named her"))
    shown = ok(cli("entity", "show", made.id, "--json")).json()
    assert shown["facts"]["lives_in"]["forgotten"]["why"] == "her address is hers"
    assert shown["entity/name"]["forgotten"]["why"] == "and so is her name"
    (decision,) = ok(cli("decisions", "--json")).json()
    assert decision["title"]["forgotten"]["why"] == "the title named her"
    assert decision["decision/why"] == "Dana said so"
    events = ok(cli("entity", "timeline", made.id, "--json")).json()["events"]
    assert "Oslo" not in json.dumps(events)
