"""docs/api.md is tested against the code: its Python examples run, top to bottom, in a
fresh home on both stores, and its route table is exactly the API's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keel.surfaces.api.routes import ROUTES

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_examples_run(keel_home, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("python")
    assert len(blocks) >= 6
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"docs/api.md block {i + 1} failed: {type(exc).__name__}: {exc}")
    k = namespace["k"]
    assert k.caller == keel_home.operator


def test_the_route_table_is_the_apis():
    documented = set(
        re.findall(r"^\| `(GET|POST|PUT) (/[^`]*)` \| `([a-z_.]+)`", DOC.read_text(), re.M)
    )
    served = {(m, p.replace(":path", ""), op) for m, p, op in ROUTES}
    assert documented == served, documented ^ served


def test_a_home_is_the_operators_alone(keel_home, tmp_path):
    """keel.db was 0644 in a 0755 home: a home is 0700 and its files 0600, a new one and one
    made by an older keel alike (opened: tightened)."""
    import os
    import stat

    import keel

    def modes() -> dict[str, int]:
        found = {".": stat.S_IMODE(keel_home.path.stat().st_mode)}
        for root, dirs, files in os.walk(keel_home.path):
            for name in dirs + files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    found[os.path.relpath(path, keel_home.path)] = stat.S_IMODE(
                        os.stat(path).st_mode
                    )
        return found

    with keel.open(keel_home.path) as k:
        k.memory.capture("x")
        k.recall.search("x")
    made = modes()
    assert {"keys/operator.key", "token", "config.toml"} <= set(made)
    assert all(
        m == (0o700 if os.path.isdir(keel_home.path / p) else 0o600) for p, m in made.items()
    ), made
    # An older keel left it open to everyone: opening it tightens it again.
    os.chmod(keel_home.path, 0o755)
    for name in ("config.toml", "token"):
        os.chmod(keel_home.path / name, 0o644)
    if (keel_home.path / "keel.db").exists():
        os.chmod(keel_home.path / "keel.db", 0o644)
    # A link out of the home is left alone, and so is what it points to.
    outside = tmp_path / "shared"
    outside.mkdir(mode=0o755)
    (outside / "notes.md").write_text("mine")
    os.chmod(outside / "notes.md", 0o644)
    (keel_home.path / "canon" / "shared").symlink_to(outside)
    os.chmod(keel_home.path, 0o755)
    keel.open(keel_home.path).close()
    assert modes() == made
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755
    assert stat.S_IMODE((outside / "notes.md").stat().st_mode) == 0o644
