"""`keel demo`: a small ledger in a temporary home, showing as-of, valid time, an agent's
signed write, a branch, a restore and a verify. It uses only the Python facade
(`keel.init`), the same operations as every other surface."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from ...errors import NotFound
from .adapter import table

SCHEMA = [
    {"attribute": "person/handle", "type": "string", "unique": "identity", "doc": "a short name"},
    {"attribute": "person/city", "type": "string", "doc": "where the person lives"},
    {"attribute": "task/title", "type": "string"},
    {"attribute": "task/status", "type": "string"},
    {"attribute": "task/owner", "type": "ref"},
]


def run_demo() -> None:
    # The demo keeps to its own temporary SQLite ledger, whatever KEEL_DB says.
    saved = os.environ.pop("KEEL_DB", None)
    try:
        with tempfile.TemporaryDirectory(prefix="keel-demo-") as tmp:
            _demo(Path(tmp) / "home")
    finally:
        if saved is not None:
            os.environ["KEEL_DB"] = saved


def _demo(path: Path) -> None:
    from rich.console import Console

    import keel

    # The demo's own text, with its own emphasis (unlike `out()`, which never reads what it
    # prints as markup); a pipe gets lines of a readable width.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 100)
    with keel.init(path) as k:
        console.rule("[bold]keel demo")
        console.print(f"A fresh home at {k.home}: config, operator key (mode 0600), ledger.")
        k.schema.add(SCHEMA)
        first = k.ledger.transact(
            [
                {"op": "add", "e": "#alice", "a": "person/handle", "v": "alice"},
                {"op": "add", "e": "#alice", "a": "person/city", "v": "Boston"},
            ],
            reason="met Alice",
        )
        alice = first.tempids["#alice"]
        console.print(
            f"\n[bold]1. A transaction[/] (tx {first.tx}, {first.hash[:16]}…): "
            f"Alice, id {alice}, lives in Boston."
        )
        correction = k.ledger.transact(
            [
                {
                    "op": "add",
                    "e": alice,
                    "a": "person/city",
                    "v": "Denver",
                    "valid_from": "2019-05-01T00:00:00Z",
                    "valid_to": "2024-08-01T00:00:00Z",
                }
            ],
            reason="Alice lived in Denver from 2019 to 2024",
        )
        console.print(
            f"[bold]2. A valid-time correction[/] (tx {correction.tx}): "
            "she lived in Denver from 2019 to 2024."
        )

        def city(**when: object) -> str:
            try:
                return k.ledger.get(alice, **when).get("person/city") or "(not known then)"
            except NotFound:  # nothing about her was known then
                return "(not known then)"

        answers = table("question", "answer")
        answers.add_row("where does Alice live?", city())
        answers.add_row("where did she live in March 2023?", city(valid_at="2023-03-01"))
        answers.add_row(
            f"as of tx {first.tx}, where did she live in 2023?",
            city(as_of=first.tx, valid_at="2023-03-01"),
        )
        console.print(answers)

        agent = k.identity.add("claude-code")
        with keel.open(path, identity="claude-code") as claude:
            note = claude.memory.capture("Alice asked us to book the plumber", source="chat")
        console.print(
            f"\n[bold]3. An agent writes[/]: claude-code (key {agent.keys[0][:12]}…) signed "
            f"tx {note.tx}, a note in memory. It may write memory, not the ledger at large."
        )

        task = k.ledger.transact(
            [
                {"op": "add", "e": "#t", "a": "task/title", "v": "book the plumber"},
                {"op": "add", "e": "#t", "a": "task/status", "v": "open"},
                {"op": "add", "e": "#t", "a": "task/owner", "v": ["person/handle", "alice"]},
            ],
            reason="from claude-code's note",
        )
        t = task.tempids["#t"]
        k.branch.create("what-if")
        k.ledger.transact(
            [{"op": "add", "e": t, "a": "task/status", "v": "done"}],
            expect=[{"e": t, "a": "task/status", "v": "open"}],
            branch="what-if",
            reason="try closing it",
        )

        def status(branch: str = "main") -> str:
            return k.ledger.get(t, branch=branch)["task/status"]

        console.print(
            f"\n[bold]4. A branch[/]: on 'what-if' the task is {status('what-if')!r}; on main "
            f"it is still {status()!r}."
        )
        merged = k.branch.merge("what-if")
        console.print(f"   merged into main in tx {merged.tx}: now {status()!r}.")
        restored = k.ledger.restore(t, task.tx)
        history = k.ledger.history(t)
        console.print(
            f"[bold]5. A restore[/] (tx {restored.tx}, a new forward transaction): the task "
            f"is {status()!r} again; {len(history)} datoms of its history remain readable."
        )
        cp = k.ledger.checkpoint()
        proof = k.ledger.proof.inclusion(task.tx)
        report = k.ledger.verify()
        console.print(
            f"[bold]6. Verify[/]: {report.transactions} transactions, {report.datoms} datoms, "
            f"signatures and chain intact: {report.ok}. Signed checkpoint at size {cp.size}, "
            f"root {cp.root[:16]}…; tx {task.tx}'s inclusion proof has {len(proof.path)} hashes."
        )
        console.rule()
