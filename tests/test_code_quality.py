"""The code rules CI holds us to: ruff clean and the layer contract (import-linter)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_clean():
    dirs = [d for d in ("src", "tests", "bench") if (REPO / d).is_dir()]
    proc = _run("ruff", "check", *dirs)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_layers_point_down_only():
    proc = _run("lint-imports")
    assert proc.returncode == 0, proc.stdout + proc.stderr
