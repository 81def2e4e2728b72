"""`keel` as MCP clients start it: installed with `uv tool install`, on PATH, no checkout
and no `uv run` needed (docs/mcp.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_uv_tool_install_puts_keel_on_path(tmp_path, store_kind):
    uv = shutil.which("uv")
    assert uv, "uv installs keel as a tool"
    env = {
        **os.environ,
        "UV_TOOL_DIR": str(tmp_path / "tools"),
        "UV_TOOL_BIN_DIR": str(tmp_path / "bin"),
        "KEEL_HOME": str(tmp_path / "home"),
    }
    env.pop("KEEL_DB", None)
    env.pop("VIRTUAL_ENV", None)
    installed = subprocess.run(
        [uv, "tool", "install", str(REPO)], env=env, capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr
    keel = tmp_path / "bin" / "keel"
    assert keel.is_file()
    # What a client does: find `keel` on PATH, outside any checkout.
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin"
    run = lambda *args: subprocess.run(  # noqa: E731
        ["keel", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("keel "), version
    assert run("init").returncode == 0
    assert run("identity", "add", "claude-code").returncode == 0
    token = run("mcp", "token", "claude-code")
    assert token.returncode == 0 and token.stdout.startswith("claude-code~"), token
