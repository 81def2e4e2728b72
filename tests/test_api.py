"""The HTTP API over real loopback HTTP: uvicorn in a thread, an httpx client, a real
ledger (SQLite and PostgreSQL, through the `home` fixture)."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest

from keel.cadence.clock import SystemClock
from keel.daemon.runtime import Runtime
from keel.govern.home import Home, add_identity
from keel.ledger import KeelError
from keel.surfaces.api.server import ApiServer, serve

API = "/api/v1"
SCHEMA = [
    {"attribute": "person/handle", "type": "string", "unique": "identity"},
    {"attribute": "person/city", "type": "string"},
    {"attribute": "person/age", "type": "int"},
    {"attribute": "person/tags", "type": "string", "cardinality": "many"},
]


@dataclass
class Api:
    home: Home
    runtime: Runtime
    server: ApiServer
    client: httpx.Client

    def head(self) -> int:
        with self.runtime.open_ledger() as ledger:
            head = ledger.store.head()
        return head[0] if head else 0

    def transact(self, ops: list[dict], **params: str) -> dict:
        r = self.client.post(f"{API}/transact", json={"ops": ops}, params=params)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def api(home):
    runtime = Runtime(home, clock=SystemClock())
    runtime.prepare()
    server = serve(runtime, port=0)
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {home.token()}"},
        timeout=httpx.Timeout(10.0, read=10.0),
    )
    r = client.post(f"{API}/schema", json=SCHEMA)
    assert r.status_code == 200, r.text
    yield Api(home, runtime, server, client)
    client.close()
    server.stop()
    runtime.scheduler.stop()


def entity_path(ref: object) -> str:
    text = ref if isinstance(ref, str) else json.dumps(ref)
    return f"{API}/entities/{quote(text, safe='')}"


def assert_error(r: httpx.Response, status: int | tuple[int, ...], kind: str | None = None):
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "kind"}, body
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    if kind is not None:
        assert body["kind"] == kind, body
    return body


def test_token_required_and_openapi_published(api):
    url = api.server.url
    assert api.server.host == "127.0.0.1"
    assert_error(httpx.get(f"{url}{API}/status"), 401, "unauthorized")
    r = httpx.get(f"{url}{API}/status", headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{url}{API}/status", headers={"Authorization": f"Basic {api.home.token()}"})
    assert_error(r, 401)
    r = httpx.post(f"{url}{API}/transact", json={"ops": [{"e": "x", "a": "person/age", "v": 1}]})
    assert_error(r, 401)
    r = httpx.get(f"{url}{API}/events/stream")
    assert_error(r, 401)
    json_type = {"content-type": "application/json"}
    r = httpx.post(f"{url}{API}/transact", content=b"{", headers=json_type)
    assert_error(r, 401)  # the token is checked before the body is read
    assert_error(httpx.get(f"{url}{API}/no-such-route"), 401)

    doc = httpx.get(f"{url}{API}/openapi.json").json()  # public
    paths = set(doc["paths"])
    for route in (
        "/status",
        "/transact",
        "/schema",
        "/entities/{entity}",
        "/entities/{entity}/history",
        "/find",
        "/log",
        "/jobs",
        "/jobs/{name}",
        "/jobs/{name}/run",
        "/jobs/{name}/pause",
        "/jobs/{name}/resume",
        "/runs",
        "/runs/{key}",
        "/events",
        "/events/stream",
    ):
        assert API + route in paths, route
    assert "HTTPBearer" in doc["components"]["securitySchemes"]

    status = api.client.get(f"{API}/status").json()
    assert status["ledger"]["transactions"] == api.head()
    assert {j["name"] for j in status["jobs"]} >= {"probe.daily", "doctor.sweep"}
    assert "password" not in status["ledger"]["location"]
    assert_error(api.client.get(f"{API}/no-such-route"), 404, "not-found")


def test_transact_get_history_find_log(api):
    c = api.client
    assert {a["attribute"] for a in c.get(f"{API}/schema").json()} >= {"person/handle"}
    first = api.transact(
        [
            {"op": "add", "e": "#alice", "a": "person/handle", "v": "alice"},
            {"op": "add", "e": "#alice", "a": "person/city", "v": "Boston"},
            {
                "op": "add",
                "e": "#alice",
                "a": "person/tags",
                "v": "old",
                "valid_from": "2019-01-01T00:00:00Z",
                "valid_to": "2020-01-01T00:00:00Z",
            },
            {"op": "add", "e": "#bob", "a": "person/handle", "v": "bob"},
            {"op": "add", "e": "#bob", "a": "person/city", "v": "Boston"},
        ]
    )
    alice, bob = first["tempids"]["#alice"], first["tempids"]["#bob"]
    assert set(first) >= {"tx", "hash", "tempids", "time", "branch"}
    second = api.transact([{"op": "add", "e": alice, "a": "person/city", "v": "Denver"}])
    assert second["tx"] == first["tx"] + 1

    got = c.get(entity_path(alice)).json()
    assert got == {"db/id": alice, "person/handle": "alice", "person/city": "Denver"}
    by_ref = c.get(entity_path(["person/handle", "alice"])).json()
    assert by_ref == got
    then = c.get(entity_path(alice), params={"as_of": first["tx"]}).json()
    assert then["person/city"] == "Boston"
    assert c.get(entity_path(alice), params={"as_of": first["hash"]}).json() == then
    past = c.get(entity_path(alice), params={"valid_at": "2019-06-01"}).json()
    assert past["person/tags"] == ["old"]

    hist = c.get(f"{entity_path(alice)}/history").json()
    assert [h["v"] for h in hist if h["a"] == "person/city"] == ["Boston", "Denver"]
    alice_ref = entity_path(["person/handle", "alice"])
    only = c.get(f"{alice_ref}/history", params={"attr": "person/city"})
    assert {h["a"] for h in only.json()} == {"person/city"}
    assert {h["author"] for h in hist} == {"operator"}

    found = c.get(f"{API}/find", params={"attr": "person/city", "value": "Boston"}).json()
    assert found == {"entities": [bob], "next": None}
    page = c.get(f"{API}/find", params={"attr": "person/handle", "limit": 1}).json()
    assert page["entities"] == [min(alice, bob)] and page["next"] == min(alice, bob)
    rest = c.get(
        f"{API}/find", params={"attr": "person/handle", "limit": 1, "after": page["next"]}
    ).json()
    assert rest["entities"] == [max(alice, bob)]

    log = c.get(f"{API}/log", params={"since": first["tx"] - 1}).json()
    assert [t["tx"] for t in log["transactions"]] == [first["tx"], second["tx"]]
    assert log["transactions"][0]["hash"] == first["hash"] and log["next"] is None
    paged = c.get(f"{API}/log", params={"limit": 2}).json()
    assert [t["tx"] for t in paged["transactions"]] == [1, 2] and paged["next"] == 2

    add_identity(api.home, "scout", "agent")
    signed = api.transact([{"op": "add", "e": bob, "a": "person/age", "v": 40}], **{"as": "scout"})
    entry = c.get(f"{API}/log", params={"since": signed["tx"] - 1}).json()["transactions"]
    assert entry[0]["author"] == "scout"


def test_bad_input_is_4xx_json_and_writes_nothing(api):
    c = api.client
    api.transact([{"op": "add", "e": "p1", "a": "person/handle", "v": "p1"}])
    head = api.head()
    tx = f"{API}/transact"

    def post(body: object, **params: str) -> httpx.Response:
        return c.post(tx, json=body, params=params)

    raw = c.post(tx, content=b'{"ops": [', headers={"content-type": "application/json"})
    assert_error(raw, 400, "bad-input")
    assert_error(c.post(tx), (400, 422), "bad-input")
    assert_error(post([1, 2]), (400, 422), "bad-input")
    assert_error(post({"ops": "nope"}), (400, 422), "bad-input")
    assert_error(post({"ops": [], "extra": 1}), (400, 422), "bad-input")
    assert_error(post({"ops": []}), 400, "bad-input")
    assert_error(post({"ops": [{"e": "p1"}]}), 400, "bad-input")
    assert_error(post({"ops": [{"e": "p1", "a": "nope/x", "v": 1}]}), 422, "schema")
    assert_error(post({"ops": [{"e": "p1", "a": "person/age", "v": "old"}]}), 422, "schema")
    assert_error(post({"ops": [{"e": "p1", "a": "person/handle", "v": None}]}), 422)
    bad_time = {"e": "p1", "a": "person/city", "v": "x", "valid_from": "yesterday-ish"}
    assert_error(post({"ops": [bad_time]}), 400, "bad-input")
    assert_error(post({"ops": [{"e": ["person/handle", "ghost"], "a": "person/age", "v": 1}]}), 404)
    assert_error(post({"ops": [{"e": "p1", "a": "person/age", "v": 1}], "reason": 5}), 422)
    assert_error(post({"ops": [{"op": {"x": 1}, "e": "p1", "a": "person/age", "v": 1}]}), 400)
    age = {"e": "p1", "a": "person/age", "v": 1}
    assert_error(post({"ops": [age], "expect": [{"e": "p1", "a": ["x"]}]}), 400, "bad-input")
    assert_error(post({"ops": [{"e": "a\x00b", "a": "person/age", "v": 1}]}), 400, "bad-input")
    lone = b'{"ops": [{"e": "\\ud800", "a": "person/age", "v": 1}]}'
    raw = c.post(tx, content=lone, headers={"content-type": "application/json"})
    assert_error(raw, 400, "bad-input")
    ok_ops = {"ops": [age]}
    assert_error(post(ok_ops, **{"as": "../../etc/passwd"}), 400, "bad-input")
    assert_error(post(ok_ops, **{"as": "nobody"}), 403, "refused")
    assert_error(post(ok_ops, branch="no-such-branch"), 404, "not-found")
    assert_error(c.post(f"{API}/schema", json=[{"attribute": "bad name"}]), 422, "schema")
    assert_error(c.post(f"{API}/schema", json={"attribute": "x/y"}), 422, "bad-input")

    assert_error(c.get(entity_path("ghost")), 404, "not-found")
    assert_error(c.get(entity_path(["person/handle", "ghost"])), 404, "not-found")
    assert_error(c.get(entity_path(["person/city", "x"])), 422, "schema")
    assert_error(c.get(entity_path("[not json")), 400, "bad-input")
    assert_error(c.get(entity_path("a\x00b")), 400, "bad-input")
    assert_error(c.get(f"{entity_path('ghost')}/history"), 404, "not-found")
    assert_error(c.get(f"{entity_path('p1')}/history", params={"attr": "no/such"}), 422)
    assert_error(c.get(entity_path("p1"), params={"as_of": "not a time"}), 400, "bad-input")
    assert_error(c.get(entity_path("p1"), params={"as_of": "99999"}), 404, "not-found")
    assert_error(c.get(entity_path("p1"), params={"valid_at": "2026-13-45"}), 400)
    assert_error(c.get(entity_path("p1"), params={"branch": "nope"}), 404)
    find = f"{API}/find"
    assert_error(c.get(find), 422, "bad-input")
    assert_error(c.get(find, params={"attr": "no/such"}), 422, "schema")
    assert_error(c.get(find, params={"attr": "person/age", "value": "old"}), 400)
    assert_error(c.get(find, params={"attr": "person/age", "limit": "many"}), 422)
    assert_error(c.get(find, params={"attr": "person/age", "limit": 0}), 422)
    assert_error(c.get(f"{API}/log", params={"since": -1}), 422)
    assert_error(c.get(f"{API}/log", params={"since": "10" * 30}), 422)
    assert_error(c.get(f"{API}/events", params={"after": "x.y"}), 400, "bad-input")
    assert_error(c.get(f"{API}/events", params={"after": "9" * 40}), 400, "bad-input")
    assert_error(c.get(f"{API}/events/stream", params={"after": "-1"}), 400, "bad-input")

    jobs = f"{API}/jobs"
    assert_error(c.get(f"{jobs}/ghost"), 404, "not-found")
    assert_error(c.post(f"{jobs}/ghost/run"), 404, "not-found")
    assert_error(c.post(f"{jobs}/ghost/pause"), 404, "not-found")
    assert_error(c.post(f"{jobs}/ghost/resume"), 404, "not-found")
    assert_error(c.get(f"{API}/runs", params={"job": "ghost"}), 404, "not-found")
    assert_error(c.get(f"{API}/runs/{quote('ghost@2026-01-01T00:00:00Z#2', safe='')}"), 404)
    for spec in (
        {"name": "bad", "schedule": "every banana"},
        {"name": "bad", "schedule": "61 * * * *"},
        {"name": "bad", "schedule": "0 8 * * *", "tz": "Mars/Olympus"},
        {"name": "bad", "schedule": "every 1h", "kind": "teleport"},
        {"name": "bad", "schedule": "every 99999999999d"},
        {"name": "bad", "schedule": "every 1h", "overlap": "sometimes"},
        {"name": "bad", "schedule": "every 1h", "surprise": True},
        {"name": "bad name!", "schedule": "every 1h"},
        {"schedule": "every 1h"},
    ):
        assert_error(c.post(jobs, json=spec), 400, "bad-input")
    assert_error(c.post(jobs, json=["not", "an", "object"]), 422, "bad-input")
    assert_error(c.get(f"{jobs}/bad"), 404)

    assert api.head() == head, "a rejected request wrote to the ledger"


def test_failed_expectation_is_409(api):
    created = api.transact([{"op": "add", "e": "#t", "a": "person/handle", "v": "t"}])
    t = created["tempids"]["#t"]
    api.transact([{"op": "add", "e": t, "a": "person/city", "v": "Oslo"}])
    head = api.head()
    doc = {
        "reason": "move",
        "ops": [{"op": "add", "e": t, "a": "person/city", "v": "Bergen"}],
        "expect": [{"e": t, "a": "person/city", "v": "Paris"}],
    }
    body = assert_error(api.client.post(f"{API}/transact", json=doc), 409, "conflict")
    assert "expectation" in body["error"]
    assert api.head() == head
    doc["expect"] = [{"e": t, "a": "person/city", "v": "Oslo"}]
    assert api.client.post(f"{API}/transact", json=doc).status_code == 200
    assert api.client.get(entity_path(t)).json()["person/city"] == "Bergen"


def test_jobs_and_runs(api):
    c = api.client
    spec = {"name": "hello", "schedule": "every 1h", "kind": "command", "run": "echo hi-there"}
    made = c.post(f"{API}/jobs", json=spec)
    assert made.status_code == 200, made.text
    assert made.json()["changed"] is True and made.json()["source"] == "api"
    again = c.post(f"{API}/jobs", json=spec).json()
    assert again["changed"] is False
    names = [j["name"] for j in c.get(f"{API}/jobs").json()]
    assert "hello" in names and "probe.daily" in names
    job = c.get(f"{API}/jobs/hello").json()
    assert job["spec"]["run"] == "echo hi-there" and job["paused"] is False
    assert job["next"] and job["runs"] == []

    run = c.post(f"{API}/jobs/hello/run", params={"wait": 20}).json()
    assert run["outcome"] == "ok" and run["trigger"] == "manual", run
    assert run["artifact_bytes"] > 0
    runs = c.get(f"{API}/runs", params={"job": "hello"}).json()
    assert [r["key"] for r in runs] == [run["key"]]
    detail = c.get(f"{API}/runs/{quote(run['key'], safe='')}").json()
    assert detail["artifact"].strip() == "hi-there" and detail["job"] == "hello"
    assert c.get(f"{API}/jobs/hello").json()["runs"][0]["key"] == run["key"]
    assert any(r["key"] == run["key"] for r in c.get(f"{API}/runs").json())
    assert c.get(f"{API}/runs", params={"outcome": "ok", "limit": 1}).json()[-1]["outcome"] == "ok"

    paused = c.post(f"{API}/jobs/hello/pause").json()
    assert paused["paused"] is True
    assert c.get(f"{API}/jobs/hello").json()["paused"] is True
    head = api.head()
    assert c.post(f"{API}/jobs/hello/pause").json()["paused"] is True
    assert api.head() == head  # pausing a paused job changes nothing
    assert c.post(f"{API}/jobs/hello/resume").json()["paused"] is False
    assert c.get(f"{API}/status").json()["jobs"][1]["name"] == "hello"


def test_events_page_and_cursor(api):
    c = api.client
    start = c.get(f"{API}/events").json()
    assert start["events"] and start["events"][0]["id"] == "1.0"
    cursor = c.get(f"{API}/events", params={"after": start["next"]}).json()
    assert cursor["events"] == []
    made = api.transact([{"op": "add", "e": "#z", "a": "person/handle", "v": "zed"}])
    page = c.get(f"{API}/events", params={"after": start["next"]}).json()
    assert [e["type"] for e in page["events"]] == ["tx", "person"]
    assert page["events"][1]["entity"] == made["tempids"]["#z"]
    only = c.get(f"{API}/events", params={"after": start["next"], "types": "person"}).json()
    assert [e["id"] for e in only["events"]] == [f"{made['tx']}.1"]
    one = c.get(f"{API}/events", params={"after": start["next"], "limit": 1}).json()
    assert [e["id"] for e in one["events"]] == [f"{made['tx']}.0"]
    after = c.get(f"{API}/events", params={"after": one["next"]}).json()
    assert [e["id"] for e in after["events"]] == [f"{made['tx']}.1"]


def _read_sse(lines, until, seconds: float = 10.0) -> list[dict]:
    """SSE messages from a line iterator until `until(messages)` holds."""
    messages: list[dict] = []
    current: dict = {}
    deadline = time.monotonic() + seconds
    for line in lines:
        if line == "":
            if current:
                messages.append(current)
                current = {}
                if until(messages):
                    return messages
        elif line.startswith(":"):
            current.setdefault("comment", line[1:].strip())
        else:
            field, _, value = line.partition(":")
            current[field] = value.removeprefix(" ")
        assert time.monotonic() < deadline, f"no matching event in {seconds}s: {messages}"
    raise AssertionError(f"the stream ended early: {messages}")


def test_sse_stream_delivers_commits_after_connecting(api):
    url = f"{API}/events/stream"
    with api.client.stream("GET", url, params={"types": "person"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        hello = _read_sse(lines, lambda m: True)
        assert hello[0]["comment"].startswith("connected")
        made = api.transact([{"op": "add", "e": "#s", "a": "person/handle", "v": "streamed"}])
        got = _read_sse(lines, lambda m: any("data" in x for x in m))
        event = next(x for x in got if "data" in x)
        assert event["event"] == "person" and event["id"] == f"{made['tx']}.1"
        data = json.loads(event["data"])
        assert data["entity"] == made["tempids"]["#s"]
        assert data["attributes"] == ["person/handle"]

        # Stopping the server ends open streams promptly.
        began = time.monotonic()
        api.server.stop()
        assert time.monotonic() - began < 5
        for _ in lines:  # drains and ends
            pass

    assert not api.server._thread.is_alive()


def test_sse_resumes_from_last_event_id(api):
    made = api.transact([{"op": "add", "e": "#r", "a": "person/handle", "v": "resumed"}])
    headers = {"Last-Event-ID": f"{made['tx']}.0"}
    url = f"{API}/events/stream"
    with api.client.stream("GET", url, headers=headers, params={"after": "0"}) as resp:
        got = _read_sse(resp.iter_lines(), lambda m: any("id" in x for x in m))
    first = next(x for x in got if "id" in x)
    assert first["id"] == f"{made['tx']}.1" and first["event"] == "person"
    # with `after` alone it replays from there
    with api.client.stream("GET", url, params={"after": str(made["tx"] - 1)}) as resp:
        got = _read_sse(resp.iter_lines(), lambda m: any("id" in x for x in m))
    assert next(x for x in got if "id" in x)["id"] == f"{made['tx']}.0"


def test_serve_reports_a_busy_port(api):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        with pytest.raises(KeelError, match="cannot listen"):
            serve(api.runtime, port=port)
    finally:
        taken.close()
    with pytest.raises(KeelError, match="port"):
        serve(api.runtime, port=70000)
