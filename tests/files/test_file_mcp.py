"""Shared files over MCP with the official client: an agent whose pin grants a root reads,
writes (signed as itself) and meets a conflict as a one-sentence tool error."""

from __future__ import annotations

import json

import pytest
from mcp import ClientSession

from conftest import govern, mcp_over_http
from keel.ops.door import Caller

AGENT = "claude-code"


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_an_agent_edits_a_shared_file_over_mcp(keel_home, door, run, server, tmp_path):
    root = (tmp_path / "shared").resolve()
    root.mkdir()
    target = root / "plan.md"
    target.write_text("one\ntwo\nthree\n")
    operator = Caller(keel_home.operator)
    door.call("identity.add", {"name": AGENT}, operator)
    govern(
        run,
        keel_home,
        f'[identities.{AGENT}]\ntier = "T1"\npins = ["files"]\n'
        f'[pins.files]\ncapabilities = ["file.read", "file.write"]\nfiles = ["{root}"]\n',
    )
    token = door.call("identity.token", {"name": AGENT}, operator).token
    seen: dict = {}

    async def scenario(s: ClientSession) -> None:
        got = await s.call_tool("read_file", {"path": str(target)})
        assert not got.is_error, got.content[0].text
        read = json.loads(got.content[0].text)
        assert read["generation"] == 0
        text = read["content"].replace("one", "ONE")
        wrote = await s.call_tool("write_file", {"path": str(target), "content": text, "expect": 0})
        assert not wrote.is_error, wrote.content[0].text
        clash = await s.call_tool(
            "write_file", {"path": str(target), "content": "uno\ntwo\nthree\n", "expect": 0}
        )
        assert clash.is_error
        seen["conflict"] = clash.content[0].text
        denied = await s.call_tool("read_file", {"path": str(tmp_path / "elsewhere.txt")})
        assert denied.is_error
        hist = await s.call_tool("file_history", {"path": str(target)})
        seen["history"] = json.loads(hist.content[0].text)

    mcp_over_http(server.url, token, scenario)
    assert "line 1" in seen["conflict"] and "\n" not in seen["conflict"]
    assert target.read_text() == "ONE\ntwo\nthree\n"
    assert [(h["generation"], h["author"]) for h in seen["history"]] == [(1, AGENT)]
