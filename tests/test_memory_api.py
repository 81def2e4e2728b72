"""Memory and recall over real loopback HTTP: uvicorn in a thread, an httpx client, a real
ledger (SQLite and PostgreSQL, through the `home` fixture)."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from keel.cadence.clock import SystemClock
from keel.daemon.runtime import Runtime
from keel.govern.home import add_identity
from keel.memory.memory import Memory
from keel.surfaces.api.server import serve

API = "/api/v1"


@pytest.fixture
def api(home):
    runtime = Runtime(home, clock=SystemClock())
    runtime.prepare()
    server = serve(runtime, port=0)
    client = httpx.Client(
        base_url=server.url + API,
        headers={"Authorization": f"Bearer {home.token()}"},
        timeout=httpx.Timeout(20.0),
    )
    yield client
    client.close()
    server.stop()
    runtime.stop()


def ok(r: httpx.Response) -> object:
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def error(r: httpx.Response, status: int, kind: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    if kind is not None:
        assert body["kind"] == kind, body
    return body


def root_of(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def head(home) -> int:
    with home.ledger() as ledger:
        return ledger.store.head()[0]


def authors(client: httpx.Client, entity: str) -> set[str]:
    return {row["author"] for row in ok(client.get(f"/entities/{entity}/history"))}


def test_every_surface_round_trips(api, home):
    work = ok(api.post("/memory/remember", json={"text": "scratch", "scope": "run-1", "ttl": "2h"}))
    assert ok(api.get("/memory/working", params={"scope": "run-1"}))[0]["id"] == work["id"]

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
    assert alice["id"] == "entity:alice-smith"
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
    then = ok(api.get("/memory/entities/alice-smith", params={"valid_at": "2023-01-01"}))
    now = ok(api.get("/memory/entities/Alice Smith"))
    assert then["facts"]["lives_in"] == "Denver" and now["facts"]["lives_in"] == "Boston"
    assert now["entity/aliases"] == ["Al"] and now["links"][0]["entity"] == "entity:acme"
    timeline = ok(api.get("/memory/entities/entity:alice-smith/timeline"))
    assert [e["id"] for e in timeline if e["type"] == "observation"] == [obs["id"]]
    assert "person" in ok(api.get("/memory/kinds"))

    decision = ok(
        api.post(
            "/memory/decisions",
            json={"title": "Use SQLite", "why": "simple", "alternatives": ["Postgres"]},
        )
    )
    got = ok(api.get("/memory/decisions"))
    assert got[0]["id"] == decision["id"] and got[0]["decision/by"] == "operator"

    ok(api.put("/memory/canon/style", json={"text": "Write short sentences."}))
    assert [c["canon/name"] for c in ok(api.get("/memory/canon"))] == ["style"]
    assert ok(api.get("/memory/canon/style"))["text"] == "Write short sentences."

    ep = ok(
        api.post("/memory/episodes", json={"text": "user: hi", "agent": "claude", "session": "s-1"})
    )
    assert ep["id"] == "episode:s-1"
    cap = ok(api.post("/memory/capture", json={"text": "an idea", "tags": ["idea"]}))
    day = ok(api.post("/memory/daybook", json={"text": "shipped", "at": "2026-05-01T09:00:00Z"}))
    assert day["day"] == "2026-05-01"
    assert [d["text"] for d in ok(api.get("/memory/daybook/2026-05-01"))] == ["shipped"]
    items = ok(api.get("/memory/items", params={"surface": "capture"}))
    assert [i["id"] for i in items] == [cap["id"]] and items[0]["tags"] == ["idea"]
    assert ok(api.get("/memory/items", params={"surface": "episode"}))[0]["id"] == "episode:s-1"


def test_wiki_routes(api):
    text = "Raw notes about topic X."
    digest = hashlib.sha256(text.encode()).hexdigest()
    src = ok(api.post("/memory/wiki/sources", json={"text": text, "topics": ["ML"]}))
    assert src["hash"] == f"sha256:{digest}"
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
    error(api.get("/memory/wiki/articles/nothing"), 404, "not-found")
    bad = error(api.put("/memory/wiki/articles/y", json={"body": "[[sources/abcdef12]]"}), 400)
    assert "matches no source" in bad["error"]


def test_client_tokens_sign_as_their_identity(api, home):
    add_identity(home, "claude-code")
    token = home.client_token("claude-code")
    client = httpx.Client(
        base_url=root_of(api), headers={"Authorization": f"Bearer {token}"}, timeout=20
    )
    with client:
        cap = ok(client.post("/memory/capture", json={"text": "from the agent"}))
        work = ok(client.post("/memory/remember", json={"text": "note", "scope": "s", "ttl": "1h"}))
        dec = ok(client.post("/memory/decisions", json={"title": "T", "why": "W"}))
        ent = ok(client.post("/memory/entities", json={"name": "Bob", "facts": {"role": "x"}}))
        for e in (cap["id"], work["id"], dec["id"]):
            assert authors(api, e) == {"claude-code"}
        assert "claude-code" in authors(api, ent["id"])
        assert ok(client.get("/memory/decisions"))[0]["decision/by"] == "claude-code"
        # the ledger routes sign as the caller too, and never as someone else
        tx = ok(
            client.post("/transact", json={"ops": [{"e": cap["id"], "a": "mem/tags", "v": "t"}]})
        )
        assert (
            ok(client.get("/log", params={"since": tx["tx"] - 1}))["transactions"][0]["author"]
            == "claude-code"
        )
        ops = {"ops": [{"e": cap["id"], "a": "mem/tags", "v": "u"}]}
        error(client.post("/transact", params={"as": "operator"}, json=ops), 403, "refused")

        before = head(home)
        refused = error(client.put("/memory/canon/style", json={"text": "Rule."}), 403, "refused")
        assert "only the operator" in refused["error"]
        error(client.post("/vault/export", json={"dir": "/tmp/x"}), 403, "refused")
        assert head(home) == before
        assert ok(api.get("/memory/canon")) == []

    error(httpx.get(f"{root_of(api)}/memory/working"), 401, "unauthorized")
    bad = {"Authorization": "Bearer claude-code~wrong"}
    error(httpx.get(f"{root_of(api)}/memory/working", headers=bad), 401, "unauthorized")
    error(httpx.get(f"{root_of(api)}/recall", params={"q": "x"}), 401, "unauthorized")


def test_bad_input_is_a_4xx_json_error_and_writes_nothing(api, home):
    ok(api.get("/memory/kinds"))  # the memory schema is declared: not under test
    before = head(home)
    remember = {"text": "x", "scope": "s"}
    cases = [
        (api.post("/memory/remember", json={**remember, "extra": 1}), 422),
        (api.post("/memory/remember", json={"text": "x"}), 422),
        (api.post("/memory/remember", json={**remember, "ttl": "nope"}), 400),
        (api.post("/memory/remember", json={**remember, "text": 5}), 422),
        (
            api.post(
                "/memory/remember", content=b"{", headers={"content-type": "application/json"}
            ),
            400,
        ),
        (api.post("/memory/capture", json={"text": "a\x00b"}), 400),
        (api.post("/memory/capture", json={"text": "  "}), 400),
        (api.post("/memory/entities", json={"name": "Bob", "kind": "spaceship"}), 400),
        (api.post("/memory/entities", json={"name": "Bob", "facts": {"Bad Key": "x"}}), 400),
        (api.post("/memory/entities/bob/observations", json={"text": "t", "at": "nope"}), 400),
        (api.post("/memory/decisions", json={"title": "T", "why": "W", "supersedes": "d"}), 404),
        (api.get("/memory/entities/nobody"), 404),
        (api.get("/memory/items", params={"surface": "nowhere"}), 400),
        (api.get("/memory/items"), 422),
        (api.get("/recall", params={"q": " "}), 400),
        (api.get("/recall", params={"q": "x", "k": 0}), 422),
        (api.get("/recall", params={"q": "x", "valid_at": "not a date"}), 400),
        (api.post("/vault/export", json={"dir": "relative/path"}), 400),
        (api.post("/vault/import", json={"dir": "/no/such/vault"}), 400),
    ]
    for r, status in cases:
        body = error(r, status)
        assert set(body) == {"error", "kind"}, body
    assert head(home) == before


def test_recall_over_http_respects_valid_time(api, home):
    with home.ledger() as ledger:
        mem = Memory(ledger)
        mem.upsert_entity("Alice", "person", facts={"lives_in": "Denver"}, valid_from="2019-05-01")
        mem.observe(
            "Alice", "Alice moved to Boston", at="2024-08-01", fact="lives_in", value="Boston"
        )

    def lived(**params: str) -> list[str]:
        found = ok(api.get("/recall", params={"q": "where does Alice live", **params}))
        assert found["mode"] == "hybrid"
        return [
            r["text"] for r in found["results"] if r["provenance"]["attribute"] == "fact/lives_in"
        ]

    then, now = lived(valid_at="2023-06-01"), lived()
    assert then and all("Denver" in t for t in then)
    assert now and all("Boston" in t for t in now)
    only = ok(api.get("/recall", params={"q": "Boston", "surface": "observation"}))
    assert {r["surface"] for r in only["results"]} == {"observation"}

    status = ok(api.get("/recall/status"))
    assert status["rows"] > 0 and status["cursor"] == status["head"]
    rebuilt = ok(api.post("/recall/reindex"))
    assert rebuilt["rows"] == status["rows"] and rebuilt["mode"] == "hybrid"


def test_vault_over_http(api, home, tmp_path):
    with home.ledger() as ledger:
        mem = Memory(ledger)
        mem.upsert_entity("Alice Smith", "person", summary="Alice.")
    root = tmp_path / "vault"
    done = ok(api.post("/vault/export", json={"dir": str(root)}))
    assert done["files"] >= 2 and (root / "entities" / "alice-smith.md").exists()
    same = ok(api.post("/vault/import", json={"dir": str(root)}))
    assert same["conflicts"] == [] and same["unchanged"] == same["files"]

    alice = root / "entities" / "alice-smith.md"
    alice.write_text(alice.read_text().replace("kind: person", "kind: project"))
    with home.ledger() as ledger:
        Memory(ledger).upsert_entity("Alice Smith", "organisation")
    before = head(home)
    body = error(api.post("/vault/import", json={"dir": str(root)}), 409, "conflict")
    assert [c["field"] for c in body["report"]["conflicts"]] == ["kind"]
    assert head(home) == before


def test_memory_routes_are_in_the_openapi_document(api):
    paths = set(httpx.get(f"{root_of(api)}/openapi.json").json()["paths"])
    for route in (
        "/memory/remember",
        "/memory/entities/{ref}/observations",
        "/memory/wiki/articles/{slug}",
        "/recall",
        "/vault/import",
    ):
        assert API + route in paths
