"""Memory, the wiki, recall and the vault over real loopback HTTP: uvicorn in a thread, an
httpx client, a real ledger (SQLite and PostgreSQL), every route through the door."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import httpx
import pytest

from conftest import sqlite_only
from keel.ops.door import Caller

API = "/api/v1"


@pytest.fixture
def api(keel_home, server):
    """An httpx client for the API as the operator."""
    client = httpx.Client(
        base_url=server.url + API,
        headers={"Authorization": f"Bearer {keel_home.token()}"},
        timeout=httpx.Timeout(20.0),
    )
    yield client
    client.close()


def ok(r: httpx.Response) -> object:
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def error(r: httpx.Response, status: int, kind: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    if kind is not None:
        assert body["kind"] == kind, body
    return body


def root_of(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def authors(client: httpx.Client, entity: str) -> set[str]:
    rows = ok(client.get(f"/entities/{quote(entity, safe='')}/history"))
    return {row["author"] for row in rows}


@sqlite_only
def test_every_surface_round_trips(api):
    work = ok(api.post("/memory/remember", json={"text": "scratch", "scope": "run-1", "ttl": "2h"}))
    assert ok(api.get("/memory/working", params={"scope": "run-1"}))[0]["id"] == work["id"]
    assert work["expires"].endswith("Z")

    alice = ok(
        api.post(
            "/memory/entities",
            json={
                "name": "Alice Smith",
                "kind": "person",
                "facts": {"lives_in": "Denver"},
                "aliases": ["Al"],
                "summary": "Works at [[Acme]].",
                "valid_from": "2019-05-01",
            },
        )
    )
    assert alice["id"] == "entity:alice-smith" and alice["slug"] == "alice-smith"
    obs = ok(
        api.post(
            "/memory/entities/alice-smith/observations",
            json={
                "text": "Moved to Boston",
                "at": "2024-08-01",
                "fact": "lives_in",
                "value": "Boston",
            },
        )
    )
    assert obs["entity"] == "entity:alice-smith"
    then = ok(api.get("/memory/entities/alice-smith", params={"valid_at": "2023-01-01"}))
    now = ok(api.get("/memory/entities/Alice Smith"))
    assert then["facts"]["lives_in"] == "Denver" and now["facts"]["lives_in"] == "Boston"
    assert now["entity/aliases"] == ["Al"] and now["links"][0]["entity"] == "entity:acme"
    timeline = ok(api.get("/memory/entities/entity:alice-smith/timeline"))
    assert timeline["entity"] == "entity:alice-smith"
    assert [e["id"] for e in timeline["events"] if e["type"] == "observation"] == [obs["id"]]
    assert "person" in ok(api.get("/memory/kinds"))
    assert ok(api.post("/memory/kinds", json={"name": "Gadget"}))["kind"] == "gadget"
    assert "gadget" in ok(api.get("/memory/kinds"))

    decision = ok(
        api.post(
            "/memory/decisions",
            json={"title": "Use SQLite", "why": "simple", "alternatives": ["Postgres"]},
        )
    )
    got = ok(api.get("/memory/decisions"))
    assert got[0]["id"] == decision["id"] and got[0]["decision/by"] == "operator"
    assert got[0]["decision/alternatives"] == ["Postgres"]

    written = ok(api.put("/memory/canon/style", json={"text": "Write short sentences."}))
    assert written["tx"]
    assert [c["canon/name"] for c in ok(api.get("/memory/canon"))] == ["style"]
    assert ok(api.get("/memory/canon/style"))["text"] == "Write short sentences."
    again = ok(api.put("/memory/canon/style", json={"text": "Write short sentences."}))
    assert again["tx"] is None  # it already said that: nothing written

    ep = ok(
        api.post("/memory/episodes", json={"text": "user: hi", "agent": "claude", "session": "s-1"})
    )
    assert ep["id"] == "episode:s-1"
    cap = ok(api.post("/memory/capture", json={"text": "an idea", "tags": ["idea"]}))
    day = ok(api.post("/memory/daybook", json={"text": "shipped", "at": "2026-05-01T09:00:00Z"}))
    assert day["day"] == "2026-05-01"
    entries = ok(api.get("/memory/daybook", params={"day": "2026-05-01"}))
    assert [d["text"] for d in entries] == ["shipped"]
    assert ok(api.get("/memory/daybook", params={"day": "1999-01-01"})) == []
    items = ok(api.get("/memory/items", params={"surface": "capture"}))
    assert [i["id"] for i in items] == [cap["id"]] and items[0]["tags"] == ["idea"]
    assert ok(api.get("/memory/items", params={"surface": "episode"}))[0]["id"] == "episode:s-1"


@sqlite_only
def test_wiki_routes(api):
    text = "Raw notes about topic X."
    digest = hashlib.sha256(text.encode()).hexdigest()
    src = ok(api.post("/memory/wiki/sources", json={"text": text, "topics": ["ML"]}))
    assert src["hash"] == f"sha256:{digest}" and src["duplicate"] is False
    assert ok(api.post("/memory/wiki/sources", json={"text": text}))["duplicate"] is True
    assert [s["id"] for s in ok(api.get("/memory/wiki/sources"))] == [src["id"]]
    assert ok(api.get("/memory/wiki/sources", params={"topic": "Cooking"})) == []
    body = f"X is a topic [[sources/{digest[:10]}]].\n"
    art = ok(
        api.put("/memory/wiki/articles/topic-x", json={"body": body, "topic": "ML", "tags": ["ml"]})
    )
    assert art["slug"] == "topic-x"
    got = ok(api.get("/memory/wiki/articles/topic-x"))
    assert got["body"] == body and got["cites"] == [src["id"]]
    assert ok(api.get("/memory/wiki/index"))[0]["topic"] == "ML"
    assert [e["op"] for e in ok(api.get("/memory/wiki/log"))] == ["compile", "ingest"]
    assert [f["kind"] for f in ok(api.get("/memory/wiki/lint"))] == ["near-duplicate-tags"]
    fixed = ok(api.post("/memory/wiki/fix"))
    assert len(fixed["fixed"]) == 1 and fixed["findings"] == []
    assert ok(api.get("/memory/wiki/lint")) == []
    error(api.get("/memory/wiki/articles/nothing"), 404, "not-found")
    bad = error(api.put("/memory/wiki/articles/y", json={"body": "[[sources/abcdef12]]"}), 400)
    assert "matches no source" in bad["error"]


def test_client_tokens_sign_as_their_identity(api, keel_home, door, client, head):
    token = door.call("identity.token", {"name": client}, Caller(keel_home.operator)).token
    as_client = httpx.Client(
        base_url=root_of(api), headers={"Authorization": f"Bearer {token}"}, timeout=20
    )
    with as_client:
        cap = ok(as_client.post("/memory/capture", json={"text": "from the agent"}))
        work = ok(as_client.post("/memory/remember", json={"text": "note", "ttl": "1h"}))
        dec = ok(as_client.post("/memory/decisions", json={"title": "T", "why": "W"}))
        ent = ok(as_client.post("/memory/entities", json={"name": "Bob", "facts": {"role": "x"}}))
        for e in (cap["id"], work["id"], dec["id"]):
            assert authors(api, e) == {client}
        assert client in authors(api, ent["id"])
        assert ok(as_client.get("/memory/decisions"))[0]["decision/by"] == client
        # Without a scope, a note belongs to whoever wrote it (new with the door).
        theirs = ok(as_client.get("/memory/working", params={"scope": client}))
        assert [w["id"] for w in theirs] == [work["id"]]
        assert ok(as_client.get("/recall", params={"query": "agent"}))["results"]

        # Changed on purpose with the door: a client may no longer write raw ledger ops
        # (the old test let it, signed as itself); /transact is 403 `forbidden`, naming
        # the capability, whatever the request says about who it is.
        before = head()
        ops = {"ops": [{"e": cap["id"], "a": "mem/tags", "v": "t"}]}
        for r in (
            as_client.post("/transact", json=ops),
            as_client.post("/transact", params={"as": "operator"}, json=ops),
        ):
            assert error(r, 403, "forbidden")["capability"] == "ledger.write"
        refused = error(as_client.put("/memory/canon/style", json={"text": "Rule."}), 403)
        assert refused["kind"] == "forbidden" and refused["capability"] == "canon.write"
        assert "a T1 identity never holds it" in refused["error"]
        body = error(as_client.post("/vault/export", json={"dir": "/tmp/x"}), 403, "forbidden")
        assert body["capability"] == "vault.export"
        error(as_client.get("/log"), 403, "forbidden")
        assert head() == before
        assert ok(api.get("/memory/canon")) == []

    error(httpx.get(f"{root_of(api)}/memory/working"), 401, "unauthorized")
    bad = {"Authorization": "Bearer client~wrong"}
    error(httpx.get(f"{root_of(api)}/memory/working", headers=bad), 401, "unauthorized")
    error(httpx.get(f"{root_of(api)}/recall", params={"query": "x"}), 401, "unauthorized")


def test_bad_input_is_a_4xx_json_error_and_writes_nothing(api, head):
    before = head()
    remember = {"text": "x", "scope": "s"}
    cases = [
        (api.post("/memory/remember", json={**remember, "extra": 1}), 400),
        (api.post("/memory/remember", json={"scope": "s"}), 400),
        (api.post("/memory/remember", json={**remember, "ttl": "nope"}), 400),
        (api.post("/memory/remember", json={**remember, "text": 5}), 400),
        (api.post("/memory/remember", json={**remember, "text": ""}), 400),
        (
            api.post(
                "/memory/remember", content=b"{", headers={"content-type": "application/json"}
            ),
            400,
        ),
        (api.post("/memory/remember", json=["not", "an", "object"]), 400),
        (api.post("/memory/capture", json={"text": "  "}), 400),
        (api.post("/memory/entities", json={"name": "Bob", "kind": "spaceship"}), 400),
        (api.post("/memory/entities", json={"name": "Bob", "facts": {"Bad Key": "x"}}), 400),
        (api.post("/memory/entities/bob/observations", json={"text": "t", "at": "nope"}), 400),
        (
            api.post("/memory/entities/bob/observations", json={"entity": "alice", "text": "t"}),
            400,
        ),
        (api.post("/memory/decisions", json={"title": "T", "why": "W", "supersedes": "d"}), 404),
        (api.get("/memory/entities/nobody"), 404),
        (api.get("/memory/canon/nothing"), 404),
        (api.get("/memory/items", params={"surface": "nowhere"}), 400),
        (api.get("/memory/items"), 400),
        (api.get("/memory/daybook", params={"day": "May 1st"}), 400),
        (api.get("/recall", params={"query": " "}), 400),
        (api.get("/recall"), 400),
        (api.get("/recall", params={"query": "x", "k": 0}), 400),
        (api.get("/recall", params={"query": "x", "valid_at": "not a date"}), 400),
        (api.post("/vault/import", json={"dir": "/no/such/vault"}), 400),
    ]
    for r, status in cases:
        body = error(r, status)
        assert set(body) == {"error", "kind"}, body
    assert head() == before


def test_a_nul_in_memory_text_is_refused(api, head):
    """The old API test refused it (400). A NUL cannot live in a PostgreSQL text column,
    which the PostgreSQL recall index uses, so it must be refused before it is written."""
    ok(api.post("/memory/capture", json={"text": "the quarterly report"}))
    before = head()
    body = error(api.post("/memory/capture", json={"text": "a\x00b quarterly"}), 400)
    assert body["kind"] == "bad-input" and "NUL" in body["error"]
    assert head() == before
    found = ok(api.get("/recall", params={"query": "quarterly"}))
    assert found["mode"] == "hybrid" and found["note"] is None


@sqlite_only
def test_a_relative_vault_folder_is_refused_over_http(api, tmp_path, monkeypatch):
    """Over HTTP a relative folder means nothing to the caller (the old API refused it,
    400); it must not land wherever the daemon happens to run."""
    monkeypatch.chdir(tmp_path)  # where an export would land if a relative folder were taken
    error(api.post("/vault/export", json={"dir": "relative/path"}), 400, "bad-input")
    error(api.post("/vault/import", json={"dir": "relative/path"}), 400, "bad-input")
    assert not (tmp_path / "relative").exists()


@sqlite_only
def test_recall_over_http_respects_valid_time(api, run):
    run("memory.entity.add", name="Alice", kind="person", facts={"lives_in": "Denver"},
        valid_from="2019-05-01")  # fmt: skip
    run("memory.observe", entity="Alice", text="Alice moved to Boston", at="2024-08-01",
        fact="lives_in", value="Boston")  # fmt: skip

    def lived(**params: str) -> list[str]:
        found = ok(api.get("/recall", params={"query": "where does Alice live", **params}))
        assert found["mode"] == "hybrid" and found["query"] == "where does Alice live"
        return [
            r["text"] for r in found["results"] if r["provenance"]["attribute"] == "fact/lives_in"
        ]

    then, now = lived(valid_at="2023-06-01"), lived()
    assert then and all("Denver" in t for t in then)
    assert now and all("Boston" in t for t in now)
    why = ok(api.get("/recall", params={"query": "where does Alice live", "explain": "true"}))
    top = why["results"][0]
    assert top["text"] == "Alice lives in: Boston" and top["explain"]["fact"] == 1.0
    assert [p["text"] for p in top["previous"]] == ["Alice lives in: Denver"]
    alone = ok(api.get("/recall", params={"query": "where does Alice live", "mode": "fulltext"}))
    assert alone["mode"] == "fulltext" and alone["results"]
    assert (
        "mode" in error(api.get("/recall", params={"query": "x", "mode": "psychic"}), 400)["error"]
    )
    only = ok(api.get("/recall", params={"query": "Boston", "surface": "observation"}))
    assert only["results"] and {r["surface"] for r in only["results"]} == {"observation"}

    status = ok(api.get("/recall/status"))
    assert status["rows"] > 0 and status["cursor"] == status["head"]
    rebuilt = ok(api.post("/recall/reindex"))
    assert rebuilt["rows"] == status["rows"] and rebuilt["mode"] == "hybrid"
    assert rebuilt["reindexed"] > 0


@sqlite_only
def test_vault_over_http(api, run, head, tmp_path):
    run("memory.entity.add", name="Alice Smith", kind="person", summary="Alice.")
    root = tmp_path / "vault"
    done = ok(api.post("/vault/export", json={"dir": str(root)}))
    alice = root / "entities" / "Alice Smith.md"  # named by display name now
    assert done["files"] >= 2 and done["directory"] == str(root) and alice.exists()
    same = ok(api.post("/vault/import", json={"dir": str(root)}))
    assert same["conflicts"] == [] and same["unchanged"] == same["files"]

    alice.write_text(alice.read_text().replace("kind: person", "kind: project"))
    run("memory.entity.add", name="Alice Smith", kind="organisation")
    before = head()
    # Changed on purpose: a conflicting import is a report (200) listing its conflicts,
    # not a 409 (the CLI still exits 3 on it).
    report = ok(api.post("/vault/import", json={"dir": str(root)}))
    assert [(c["file"], c["field"]) for c in report["conflicts"]] == [
        ("entities/Alice Smith.md", "kind")
    ]
    assert report["applied"] == []
    assert head() == before
    # Export will not overwrite the file changed since keel wrote it: 409, naming it.
    edited = alice.read_text()
    body = error(api.post("/vault/export", json={"dir": str(root)}), 409, "conflict")
    assert body["files"] == ["entities/Alice Smith.md"] and "Alice Smith.md" in body["error"]
    assert alice.read_text() == edited
    forced = ok(api.post("/vault/export", json={"dir": str(root), "force": True}))
    assert forced["files"] == done["files"]
    assert "kind: organisation" in alice.read_text()
    assert ok(api.post("/vault/import", json={"dir": str(root)}))["conflicts"] == []
    assert head() == before


@sqlite_only
def test_memory_routes_are_in_the_openapi_document(api):
    paths = set(httpx.get(f"{root_of(api)}/openapi.json").json()["paths"])
    for route in (
        "/memory/remember",
        "/memory/entities/{entity}/observations",
        "/memory/entities/{ref}",
        "/memory/wiki/articles/{slug}",
        "/memory/daybook",
        "/recall",
        "/recall/status",
        "/vault/import",
        "/vault/export",
    ):
        assert API + route in paths, route
