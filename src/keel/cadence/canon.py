"""A node's `canon/cadence.toml` is an input and a view; the ledger holds the one truth.

Several nodes can share a ledger, each with a home and a cadence file of its own. Applying
each node's file at every start would have them overwrite each other's jobs. Instead the
ledger keeps the accepted text of the file (`canon-file:cadence`) and, for each node, the
digest of the file it last agreed with (`canon-sync:<node>:cadence`). A sync compares the
three:

- the file is the accepted text: nothing to do (the jobs are applied again, so a job
  changed by hand goes back to what canon says, as before);
- only this node's file changed since it last agreed: an **edit** — applied and accepted;
- only the ledger's text changed (another node's edit): the file is **updated** from the
  ledger, so every node shows the same canon;
- both changed: a **conflict** — nothing is overwritten either way; the node's state says
  so (`keel canon status`, and a health finding) until someone resolves it: by editing the
  file to match, or by `keel cadence sync`, which applies this file on purpose.

A ledger that has never held an accepted text takes the first file it is given.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..ledger import Ledger

_F = "keel.canon-file/"
_S = "keel.canon-sync/"
SCHEMA = [
    {"attribute": f"{_F}text", "type": "string", "doc": "the accepted text of a canon file"},
    {"attribute": f"{_F}digest", "type": "string", "doc": "its SHA-256"},
    {"attribute": f"{_S}node", "type": "string", "doc": "the node whose file this is"},
    {"attribute": f"{_S}file", "type": "string", "doc": "which canon file"},
    {"attribute": f"{_S}digest", "type": "string", "doc": "the text it last agreed with"},
    {"attribute": f"{_S}state", "type": "string", "doc": "in-sync, conflict"},
    {"attribute": f"{_S}seen", "type": "string", "doc": "the digest of its file when seen"},
]
FILE = "cadence"


def digest(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def file_entity(name: str = FILE) -> str:
    return f"canon-file:{name}"


def sync_entity(node: str, name: str = FILE) -> str:
    return f"canon-sync:{node}:{name}"


def accepted_text(ledger: Ledger, name: str = FILE) -> str | None:
    return ledger.view().value(file_entity(name), f"{_F}text")


@dataclass
class Synced:
    state: str  # accepted, in-sync, edited, updated, conflict
    changed: list[str]


def sync(
    ledger: Ledger,
    path: Path,
    node: str,
    apply: Callable[[], list[str]],
    on_purpose: bool = False,
) -> Synced:
    """Bring this node's file and the ledger's canon together (see the module's doc).
    `apply()` saves the file's jobs and returns the names that changed; `on_purpose` (an
    operator's `keel cadence sync`) applies the file whatever the ledger holds."""
    ours = path.read_text() if path.exists() else ""
    view = ledger.view()
    accepted = view.get(file_entity()) or {}
    mine = view.get(sync_entity(node)) or {}
    theirs, base = accepted.get(f"{_F}digest"), mine.get(f"{_S}digest")
    d = digest(ours)
    if theirs is None or d == theirs or on_purpose or base == theirs:
        changed = apply()
        state = "accepted" if theirs is None else "in-sync" if d == theirs else "edited"
        _record(ledger, node, ours, d, d, accept=d != theirs)
        return Synced(state, changed)
    if base == d:  # this node's file is as it last agreed: another node's edit
        text = accepted[f"{_F}text"]
        _write(path, text)
        _record(ledger, node, text, theirs, theirs, accept=False)
        return Synced("updated", apply())
    _record(ledger, node, ours, base, d, accept=False, state="conflict")
    return Synced("conflict", [])


def _record(
    ledger: Ledger,
    node: str,
    text: str,
    agreed: str | None,
    seen: str,
    accept: bool,
    state: str = "in-sync",
) -> None:
    e = sync_entity(node)
    current = ledger.view().get(e) or {}
    facts = {f"{_S}node": node, f"{_S}file": FILE, f"{_S}state": state, f"{_S}seen": seen}
    if agreed is not None:
        facts[f"{_S}digest"] = agreed
    ops = [{"op": "add", "e": e, "a": a, "v": v} for a, v in facts.items() if current.get(a) != v]
    if accept:
        ops += [
            {"op": "add", "e": file_entity(), "a": f"{_F}text", "v": text},
            {"op": "add", "e": file_entity(), "a": f"{_F}digest", "v": digest(text)},
        ]
    if ops:
        ledger.transact(ops, reason=f"canon {FILE} on {node}: {state}")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def status(ledger: Ledger) -> list[dict]:
    """Each node's agreement with the ledger's canon, as last seen."""
    view = ledger.view()
    theirs = view.value(file_entity(), f"{_F}digest")
    out = []
    for e in view.find(f"{_S}node"):
        row = view.get(e) or {}
        state = row.get(f"{_S}state", "in-sync")
        if state == "in-sync" and row.get(f"{_S}digest") != theirs:
            state = "behind"  # another node's edit it has not synced yet
        out.append(
            {
                "node": row.get(f"{_S}node", ""),
                "file": row.get(f"{_S}file", FILE),
                "state": state,
                "agreed": row.get(f"{_S}digest"),
                "file_digest": row.get(f"{_S}seen"),
                "ledger_digest": theirs,
            }
        )
    return sorted(out, key=lambda r: r["node"])
