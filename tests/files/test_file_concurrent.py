"""Four real processes edit one file at once, each its own line, N times, by read → edit →
write with the generation read (retrying on a conflict): no edit is lost, and the history
holds every write with its author. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import govern

WRITERS = 4
EDITS = 6

AGENT = r"""
import random, sys, time
from keel.errors import Conflict
from keel.ops.door import Caller, Door
from keel.ops.services import Services

who, path, edits = sys.argv[1], sys.argv[2], int(sys.argv[3])
services = Services.open()
door, me = Door(services), Caller(who, "test")
merged = conflicts = 0
for _ in range(edits):
    while True:
        got = door.call("file.read", {"path": path}, me)
        lines = got.content.splitlines(keepends=True)
        i = next(n for n, line in enumerate(lines) if line.startswith(who + ":"))
        count = int(lines[i].split(":")[1])
        lines[i] = f"{who}: {count + 1}\n"
        time.sleep(random.random() / 50)  # let the others get in between
        try:
            res = door.call(
                "file.write",
                {"path": path, "content": "".join(lines), "expect": got.generation},
                me,
            )
        except Conflict:
            conflicts += 1
            continue
        merged += res.merged
        break
services.close()
print(merged, conflicts)
"""


def test_four_processes_lose_no_edit(run, keel_home, tmp_path, head):
    root = (tmp_path / "shared").resolve()
    root.mkdir()
    names = [f"agent{i}" for i in range(WRITERS)]
    for name in names:
        run("identity.add", name=name)
    govern(
        run,
        keel_home,
        "".join(f'[identities.{n}]\ntier = "T1"\npins = ["files"]\n' for n in names)
        + f'[pins.files]\ncapabilities = ["file.read", "file.write"]\nfiles = ["{root}"]\n',
    )
    target = root / "board.md"
    # the writers' lines, each with a line nobody edits between it and the next
    target.write_text("".join(f"{n}: 0\n--\n" for n in names))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AGENT, n, str(target), str(EDITS)],
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outcomes.append([int(x) for x in out.split()])
    assert target.read_text() == "".join(f"{n}: {EDITS}\n--\n" for n in names)
    history = run("file.history", path=str(target))
    assert [h.generation for h in history] == list(range(1, WRITERS * EDITS + 1))
    assert sorted(h.author for h in history) == sorted(names * EDITS)
    assert len({h.tx for h in history}) == WRITERS * EDITS
    final = run("file.read", path=str(target))
    assert final.generation == WRITERS * EDITS and final.sha256 == history[-1].sha256
    # each generation's author is the transaction's signer
