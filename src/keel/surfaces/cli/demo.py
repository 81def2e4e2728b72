"""`keel demo`: a small ledger in a temporary home, showing as-of, valid time, a branch,
a restore and a verify. It uses only the public Python API."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ...govern.home import add_identity, init

SCHEMA = [
    {"attribute": "person/handle", "type": "string", "unique": "identity", "doc": "a short name"},
    {"attribute": "person/city", "type": "string", "doc": "where the person lives"},
    {"attribute": "task/title", "type": "string"},
    {"attribute": "task/status", "type": "string"},
    {"attribute": "task/owner", "type": "ref"},
]


def run_demo(out: Console) -> None:
    # The demo keeps to its own temporary SQLite ledger, whatever KEEL_DB says.
    saved = os.environ.pop("KEEL_DB", None)
    try:
        _demo(out)
    finally:
        if saved is not None:
            os.environ["KEEL_DB"] = saved


def _demo(out: Console) -> None:
    with tempfile.TemporaryDirectory(prefix="keel-demo-") as tmp:
        home, _ = init(Path(tmp) / "home")
        out.rule("[bold]keel demo")
        out.print(f"A fresh home at {home.path}: config, operator key (mode 0600), ledger.")
        agent = add_identity(home, "claude-code")
        with home.ledger() as ledger:
            ledger.declare(SCHEMA)
            first = ledger.transact(
                [
                    {"op": "add", "e": "#alice", "a": "person/handle", "v": "alice"},
                    {"op": "add", "e": "#alice", "a": "person/city", "v": "Boston"},
                ],
                reason="met Alice",
            )
            alice = first.tempids["#alice"]
            out.print(
                f"\n[bold]1. A transaction[/] (tx {first.tx}, {first.hash[:16]}…): "
                f"Alice, id {alice}, lives in Boston."
            )
            correction = ledger.transact(
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
            out.print(
                f"[bold]2. A valid-time correction[/] (tx {correction.tx}): "
                "she lived in Denver from 2019 to 2024."
            )
            table = Table("question", "answer")
            table.add_row("where does Alice live?", ledger.view().value(alice, "person/city"))
            table.add_row(
                "where did she live in March 2023?",
                ledger.view(valid_at="2023-03-01").value(alice, "person/city") or "—",
            )
            table.add_row(
                f"as of tx {first.tx}, where did she live in 2023?",
                ledger.view(as_of=first.tx, valid_at="2023-03-01").value(alice, "person/city")
                or "(not known then)",
            )
            out.print(table)

        with home.ledger("claude-code") as ledger:
            task = ledger.transact(
                [
                    {"op": "add", "e": "#t", "a": "task/title", "v": "book the plumber"},
                    {"op": "add", "e": "#t", "a": "task/status", "v": "open"},
                    {"op": "add", "e": "#t", "a": "task/owner", "v": ["person/handle", "alice"]},
                ],
                reason="captured from chat",
            )
            t = task.tempids["#t"]
            out.print(
                f"\n[bold]3. An agent writes[/]: claude-code (key "
                f"{agent.public_key.hex()[:12]}…) signed tx {task.tx}, a task for Alice."
            )

        with home.ledger() as ledger:
            ledger.create_branch("what-if")
            ledger.transact(
                [{"op": "add", "e": t, "a": "task/status", "v": "done"}],
                expect=[{"e": t, "a": "task/status", "v": "open"}],
                branch="what-if",
                reason="try closing it",
            )
            out.print(
                "\n[bold]4. A branch[/]: on 'what-if' the task is "
                f"{ledger.view('what-if').value(t, 'task/status')!r}; on main it is still "
                f"{ledger.view().value(t, 'task/status')!r}."
            )
            merged = ledger.merge_branch("what-if")
            out.print(
                f"   merged into main in tx {merged.tx}: now "
                f"{ledger.view().value(t, 'task/status')!r}."
            )
            restored = ledger.restore(t, task.tx)
            out.print(
                f"[bold]5. A restore[/] (tx {restored.tx}, a new forward transaction): "
                f"the task is {ledger.view().value(t, 'task/status')!r} again; "
                f"{len(ledger.view().history(t))} datoms of its history remain readable."
            )
            cp = ledger.checkpoint()
            proof = ledger.inclusion_proof(task.tx)
            report = ledger.verify()
            out.print(
                f"[bold]6. Verify[/]: {report.transactions} transactions, {report.datoms} "
                f"datoms, signatures and chain intact: {report.ok}. Signed checkpoint at "
                f"size {cp['size']}, root {cp['root'][:16]}…; tx {task.tx}'s inclusion "
                f"proof has {len(proof['path'])} hashes."
            )
        out.rule()
