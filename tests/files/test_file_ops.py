"""Shared files through the door, the CLI and HTTP, on SQLite and PostgreSQL: generations,
merges, conflicts that write nothing, history with authors, pins' file roots, bad input."""

from __future__ import annotations

import httpx
import pytest

from conftest import govern
from keel.errors import BadInput, Conflict, Forbidden, NotFound
from keel.ops.door import Caller

BASE = "alpha\nbravo\ncharlie\ndelta\necho\n"


@pytest.fixture
def shared(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    return root.resolve()


def test_read_write_history_round_trip(run, keel_home, shared, head):
    f = shared / "notes.md"
    f.write_text(BASE)
    got = run("file.read", path=str(f))
    assert got.content == BASE and got.generation == 0  # never written by keel
    w1 = run("file.write", path=str(f), content=BASE.replace("alpha", "ALPHA"), expect=0)
    assert w1.generation == 1 and not w1.merged and w1.tx == head()
    assert f.read_text().startswith("ALPHA")
    w2 = run("file.write", path=str(f), content="new\n", expect=1)
    assert w2.generation == 2 and run("file.read", path=str(f)).generation == 2
    history = run("file.history", path=str(f))
    assert [h.generation for h in history] == [1, 2]
    assert {h.author for h in history} == {keel_home.operator}
    assert history[1].size == 4 and history[1].sha256 == w2.sha256
    assert [h.tx for h in history] == [w1.tx, w2.tx]
    # a new file: expected generation 0
    new = shared / "new.txt"
    assert run("file.write", path=str(new), content="hi\n", expect=0).generation == 1
    assert new.read_text() == "hi\n"
    assert not [p for p in shared.iterdir() if p.name.endswith(".keel-tmp")]


def test_a_stale_write_merges_when_edits_do_not_overlap(run, shared):
    f = shared / "plan.md"
    f.write_text(BASE)
    run("file.write", path=str(f), content=BASE, expect=0)
    run("file.write", path=str(f), content=BASE.replace("alpha", "ALPHA"), expect=1)
    stale = run("file.write", path=str(f), content=BASE.replace("echo", "ECHO"), expect=1)
    assert stale.merged and stale.generation == 3
    assert f.read_text() == "ALPHA\nbravo\ncharlie\ndelta\nECHO\n"
    # a writer that read the file before keel ever wrote it merges against that too
    late = run("file.write", path=str(f), content=BASE.replace("charlie", "C"), expect=0)
    assert late.merged and f.read_text() == "ALPHA\nbravo\nC\ndelta\nECHO\n"


def test_an_overlapping_stale_write_is_a_conflict_and_writes_nothing(run, shared, head):
    f = shared / "plan.md"
    f.write_text(BASE)
    run("file.write", path=str(f), content=BASE, expect=0)
    run("file.write", path=str(f), content=BASE.replace("bravo", "BRAVO"), expect=1)
    before, tx = f.read_text(), head()
    with pytest.raises(Conflict) as exc:
        run("file.write", path=str(f), content=BASE.replace("bravo", "B2"), expect=1)
    message = str(exc.value)
    assert "line 2" in message and "nothing was written" in message
    assert f.read_text() == before and head() == tx
    assert [h.generation for h in run("file.history", path=str(f))] == [1, 2]


def test_bad_input_is_one_sentence_and_writes_nothing(run, keel_home, shared, head):
    tx = head()
    with pytest.raises(BadInput, match="not an absolute path"):
        run("file.write", path="relative/x.txt", content="x", expect=0)
    with pytest.raises(BadInput, match="does not exist"):
        run("file.write", path=str(shared / "gone.txt"), content="x", expect=2)
    with pytest.raises(BadInput, match="inside the keel home"):
        run("file.write", path=str(keel_home.path / "config.toml"), content="x", expect=0)
    with pytest.raises(BadInput, match="inside the keel home"):
        run("file.read", path=str(keel_home.path / "config.toml"))
    with pytest.raises(NotFound):
        run("file.read", path=str(shared / "missing.txt"))
    # a symlink out of the home is judged where it leads
    link = shared / "sneaky"
    link.symlink_to(keel_home.path / "config.toml")
    with pytest.raises(BadInput, match="inside the keel home"):
        run("file.read", path=str(link))
    assert not (shared / "gone.txt").exists() and head() == tx


def _pin_client(run, keel_home, root) -> None:
    govern(
        run,
        keel_home,
        f'[identities.client]\ntier = "T1"\npins = ["files"]\n'
        f'[pins.files]\ncapabilities = ["file.read", "file.write"]\nfiles = ["{root}"]\n',
    )


def test_a_pin_bounds_files_to_its_roots(run, keel_home, door, client, shared, tmp_path, head):
    inside = shared / "ok.txt"
    _pin_client(run, keel_home, shared)
    elsewhere = (tmp_path / "elsewhere").resolve()
    elsewhere.mkdir()
    outside = elsewhere / "no.txt"
    outside.write_text("keep\n")
    me = Caller(client, "test")
    door.call("file.write", {"path": str(inside), "content": "mine\n", "expect": 0}, me)
    assert door.call("file.history", {"path": str(inside)}, me)[0].author == client
    tx = head()
    with pytest.raises(Forbidden, match=r"file\.write"):
        door.call("file.write", {"path": str(outside), "content": "x", "expect": 0}, me)
    with pytest.raises(Forbidden):
        door.call("file.read", {"path": str(outside)}, me)
    # a symlink inside the root that leads out of it is judged where it leads
    (shared / "link.txt").symlink_to(outside)
    with pytest.raises(Forbidden):
        door.call("file.write", {"path": str(shared / "link.txt"), "content": "x"}, me)
    assert outside.read_text() == "keep\n" and head() == tx


def test_a_client_without_a_file_pin_is_refused(door, client, shared):
    (shared / "a.txt").write_text("a\n")
    with pytest.raises(Forbidden):
        door.call("file.read", {"path": str(shared / "a.txt")}, Caller(client, "test"))


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_the_cli(cli, keel_home, shared, tmp_path):
    f = shared / "c.txt"
    f.write_text(BASE)
    r = cli("file", "read", str(f), "--json")
    assert r.code == 0 and r.json()["generation"] == 0
    r = cli("file", "read", str(f))
    assert r.out == BASE and "generation 0" in r.err
    assert cli("file", "write", str(f), "--expect", "0", input="one\n").code == 0
    src = tmp_path / "src.txt"
    src.write_text("two\n")
    r = cli("file", "write", str(f), "--expect", "1", "--from", str(src), "--json")
    assert r.code == 0 and r.json()["generation"] == 2
    r = cli("file", "write", str(f), "--expect", "1", input="three\n")
    assert r.code == 3 and "line 1" in r.err and len(r.err.strip().splitlines()) == 1
    assert f.read_text() == "two\n"
    hist = cli("file", "history", str(f), "--json").json()
    assert [h["generation"] for h in hist] == [1, 2]
    r = cli("file", "write", str(shared / "nope.txt"), "--expect", "3", input="x")
    assert r.code == 2 and "does not exist" in r.err


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_over_http(server, keel_home, shared):
    f = shared / "h.txt"
    f.write_text(BASE)
    headers = {"Authorization": f"Bearer {keel_home.token()}"}
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=20) as http:
        r = http.get("/files", params={"path": str(f)})
        assert r.status_code == 200 and r.json()["generation"] == 0
        r = http.post("/files", json={"path": str(f), "content": "x\n" + BASE, "expect": 0})
        assert r.status_code == 200 and r.json()["generation"] == 1
        r = http.post("/files", json={"path": str(f), "content": "y\n" + BASE, "expect": 0})
        assert r.status_code == 409 and r.json()["kind"] == "conflict"
        assert "line 1" in r.json()["error"] and f.read_text() == "x\n" + BASE
        r = http.post("/files", json={"path": "rel.txt", "content": "x", "expect": 0})
        assert r.status_code == 400 and "absolute" in r.json()["error"]
        r = http.get("/files/history", params={"path": str(f)})
        assert [g["generation"] for g in r.json()] == [1]
