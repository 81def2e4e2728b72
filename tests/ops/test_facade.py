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
