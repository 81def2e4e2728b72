"""The HTTP API over real loopback HTTP: uvicorn in a thread, an httpx client, a real
ledger (SQLite and PostgreSQL), every route through the door."""

from __future__ import annotations

import json
import shutil
import socket
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest

from conftest import newest_act
from keel.errors import KeelError
from keel.ops.door import Caller, Door
from keel.ops.services import Services
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
    services: Services
    door: Door
    server: ApiServer
    client: httpx.Client

    def head(self) -> int:
        return newest_act(self.services.ledger())

    def transact(self, ops: list[dict], client: httpx.Client | None = None) -> dict:
        r = (client or self.client).post(f"{API}/transact", json={"ops": ops})
        assert r.status_code == 200, r.text
        return r.json()

    def token_for(self, name: str) -> httpx.Client:
        operator = Caller(self.services.home.operator)
        self.door.call("identity.add", {"name": name}, operator)
        token = self.door.call("identity.token", {"name": name}, operator).token
        return httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def api(keel_home):
    services = Services.open(keel_home.path)
    door = Door(services)
    server = serve(door, port=0)
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {keel_home.token()}"},
        timeout=httpx.Timeout(20.0, read=20.0),
    )
    r = client.post(f"{API}/schema", json={"attributes": SCHEMA})
    assert r.status_code == 200, r.text
    yield Api(services, door, server, client)
    client.close()
    server.stop()
    services.close()


def entity_path(ref: object) -> str:
    text = ref if isinstance(ref, str) else json.dumps(ref)
    return f"{API}/entities/{quote(text, safe='')}"


def assert_error(r: httpx.Response, status: int | tuple[int, ...], kind: str | None = None):
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert {"error", "kind"} <= set(body) <= {"error", "kind", "capability", "operation"}, body
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    if kind is not None:
        assert body["kind"] == kind, body
    return body


def test_token_and_host_required_and_openapi_published(api):
    url = api.server.url
    assert api.server.host == "127.0.0.1"
    assert_error(httpx.get(f"{url}{API}/status"), 401, "unauthorized")
    r = httpx.get(f"{url}{API}/status", headers={"Authorization": "Bearer wrong"})
    assert_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"] == "Bearer"
    token = api.services.home.token()
    r = httpx.get(f"{url}{API}/status", headers={"Authorization": f"Basic {token}"})
    assert_error(r, 401)
    r = httpx.post(f"{url}{API}/transact", content=b"{", headers={"content-type": "x"})
    assert_error(r, 401)  # the token is checked before the body is read
    assert_error(httpx.get(f"{url}{API}/events/stream"), 401)
    assert_error(httpx.get(f"{url}{API}/no-such-route"), 401)
    assert_error(httpx.get(f"{url}/mcp"), 401)

    # DNS rebinding: a page served as evil.example that resolves to 127.0.0.1 is refused,
    # token or not, on the API and on /mcp alike.
    good = {"Authorization": f"Bearer {token}"}
    for path in (f"{API}/status", "/mcp", f"{API}/openapi.json"):
        r = httpx.get(f"{url}{path}", headers={**good, "Host": "evil.example:80"})
        assert_error(r, 421, "bad-host")
    ok = httpx.get(f"{url}{API}/status", headers={**good, "Host": f"localhost:{api.server.port}"})
    assert ok.status_code == 200

    doc = httpx.get(f"{url}{API}/openapi.json").json()  # public
    paths = set(doc["paths"])
    for route in ("/status", "/transact", "/entities/{entity}", "/cadence/jobs/{name}/run"):
        assert API + route in paths, route
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"

    status = api.client.get(f"{API}/status").json()
    assert status["ledger"]["transactions"] == api.head()
    assert {j["name"] for j in status["jobs"]} >= {"probe.daily", "doctor.sweep"}
    assert status["read_only"] is None and status["timezone"]
    assert_error(api.client.get(f"{API}/no-such-route"), 404, "not-found")
    assert_error(api.client.delete(f"{API}/status"), 405, "method-not-allowed")


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
    assert set(first) == {"tx", "hash", "tempids", "time", "branch"}
    second = api.transact([{"op": "add", "e": alice, "a": "person/city", "v": "Denver"}])
    assert second["tx"] == first["tx"] + 1

    got = c.get(entity_path(alice)).json()
    assert got == {"db/id": alice, "person/handle": "alice", "person/city": "Denver"}
    assert c.get(entity_path(["person/handle", "alice"])).json() == got
    then = c.get(entity_path(alice), params={"as_of": first["tx"]}).json()
    assert then["person/city"] == "Boston"
    assert c.get(entity_path(alice), params={"as_of": first["hash"]}).json() == then
    past = c.get(entity_path(alice), params={"valid_at": "2019-06-01"}).json()
    assert past["person/tags"] == ["old"]

    hist = c.get(f"{entity_path(alice)}/history").json()
    assert [h["v"] for h in hist if h["a"] == "person/city"] == ["Boston", "Denver"]
    only = c.get(
        f"{entity_path(['person/handle', 'alice'])}/history", params={"attribute": "person/city"}
    )
    assert {h["a"] for h in only.json()} == {"person/city"}
    assert {h["author"] for h in hist} == {"operator"}

    find = f"{API}/find"
    found = c.get(find, params={"attribute": "person/city", "value": "Boston"}).json()
    assert found == {"entities": [bob], "next": None}
    page = c.get(find, params={"attribute": "person/handle", "limit": 1}).json()
    assert page["entities"] == [min(alice, bob)] and page["next"] == min(alice, bob)
    rest = c.get(find, params={"attribute": "person/handle", "limit": 1, "after": page["next"]})
    assert rest.json()["entities"] == [max(alice, bob)]

    log = c.get(f"{API}/log", params={"since": first["tx"] - 1}).json()
    assert [t["tx"] for t in log["transactions"]] == [first["tx"], second["tx"]]
    assert log["transactions"][0]["hash"] == first["hash"] and log["next"] is None
    paged = c.get(f"{API}/log", params={"limit": 2}).json()
    assert [t["tx"] for t in paged["transactions"]] == [1, 2] and paged["next"] == 2

    # A client's writes are signed as that client: memory, through its own token.
    scout = api.token_for("scout")
    note = scout.post(f"{API}/memory/capture", json={"text": "seen"}).json()
    entry = c.get(f"{API}/log", params={"since": note["tx"] - 1}).json()["transactions"]
    assert entry[0]["author"] == "scout"


def test_bad_input_is_4xx_json_and_writes_nothing(api):
    c = api.client
    api.transact([{"op": "add", "e": "p1", "a": "person/handle", "v": "p1"}])
    head = api.head()
    tx = f"{API}/transact"

    def post(body: object) -> httpx.Response:
        return c.post(tx, json=body)

    raw = c.post(tx, content=b'{"ops": [', headers={"content-type": "application/json"})
    assert_error(raw, 400, "bad-input")
    assert_error(c.post(tx, content=b"\xff\xfe\x00binary"), 400, "bad-input")
    deep = b'{"ops": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(c.post(tx, content=deep), 400, "bad-input")
    assert_error(c.post(tx), 400, "bad-input")
    assert_error(post([1, 2]), 400, "bad-input")
    assert_error(post({"ops": "nope"}), 400, "bad-input")
    assert_error(post({"ops": [], "extra": 1}), 400, "bad-input")
    assert_error(post({"ops": []}), 400, "bad-input")
    assert_error(post({"ops": [{"e": "p1"}]}), 400, "bad-input")
    assert_error(post({"ops": [{"e": "p1", "a": "nope/x", "v": 1}]}), 422, "schema")
    assert_error(post({"ops": [{"e": "p1", "a": "person/age", "v": "old"}]}), 422, "schema")
    assert_error(post({"ops": [{"e": "p1", "a": "person/age", "v": 2**80}]}), 422, "schema")
    assert_error(post({"ops": [{"e": "p1", "a": "person/handle", "v": None}]}), 422)
    bad_time = {"e": "p1", "a": "person/city", "v": "x", "valid_from": "yesterday-ish"}
    assert_error(post({"ops": [bad_time]}), 400, "bad-input")
    huge_time = {"e": "p1", "a": "person/city", "v": "x", "valid_from": 10**30}
    assert_error(post({"ops": [huge_time]}), 400, "bad-input")
    assert_error(post({"ops": [{"e": ["person/handle", "ghost"], "a": "person/age", "v": 1}]}), 404)
    assert_error(post({"ops": [{"e": "p1", "a": "person/age", "v": 1}], "reason": 5}), 400)
    assert_error(post({"ops": [{"op": {"x": 1}, "e": "p1", "a": "person/age", "v": 1}]}), 400)
    age = {"e": "p1", "a": "person/age", "v": 1}
    assert_error(post({"ops": [age], "expect": [{"e": "p1", "a": ["x"]}]}), 400, "bad-input")
    assert_error(post({"ops": [{"e": "a\x00b", "a": "person/age", "v": 1}]}), 400, "bad-input")
    lone = b'{"ops": [{"e": "\\ud800", "a": "person/age", "v": 1}]}'
    raw = c.post(tx, content=lone, headers={"content-type": "application/json"})
    assert_error(raw, 400, "bad-input")
    assert_error(post({"ops": [age], "branch": "no-such-branch"}), 404, "not-found")
    assert_error(c.post(f"{API}/schema", json={"attributes": [{"attribute": "bad"}]}), 422)
    assert_error(c.post(f"{API}/schema", json=[{"attribute": "x/y"}]), 400, "bad-input")

    assert_error(c.get(entity_path("ghost")), 404, "not-found")
    assert_error(c.get(entity_path(["person/handle", "ghost"])), 404, "not-found")
    assert_error(c.get(entity_path(["person/city", "x"])), 422, "schema")
    assert_error(c.get(entity_path("[not json")), 400, "bad-input")
    assert_error(c.get(entity_path("a\x00b")), 400, "bad-input")
    assert_error(c.get(f"{entity_path('ghost')}/history"), 404, "not-found")
    assert_error(c.get(f"{entity_path('p1')}/history", params={"attribute": "no/such"}), 422)
    assert_error(c.get(entity_path("p1"), params={"as_of": "not a time"}), 400, "bad-input")
    assert_error(c.get(entity_path("p1"), params={"as_of": "99999"}), 404, "not-found")
    for huge in ("99999999999999999999", "-99999999999999999999", "1" * 400):
        assert_error(c.get(entity_path("p1"), params={"as_of": huge}), 400, "bad-input")
    assert_error(c.get(entity_path("p1"), params={"valid_at": "2026-13-45"}), 400)
    assert_error(c.get(entity_path("p1"), params={"branch": "nope"}), 404)
    find = f"{API}/find"
    assert_error(c.get(find), 400, "bad-input")
    assert_error(c.get(find, params={"attribute": "no/such"}), 422, "schema")
    assert_error(c.get(find, params={"attribute": "person/age", "value": "old"}), 400)
    assert_error(c.get(find, params={"attribute": "person/age", "limit": "many"}), 400)
    assert_error(c.get(find, params={"attribute": "person/age", "limit": 0}), 400)
    assert_error(c.get(f"{API}/log", params={"since": -1}), 400)
    assert_error(c.get(f"{API}/log", params={"since": "10" * 30}), 400)
    assert_error(c.get(f"{API}/log", params={"limit": 10**30}), 400)
    assert_error(c.get(f"{API}/events", params={"after": "x.y"}), 400, "bad-input")
    assert_error(c.get(f"{API}/events", params={"after": "9" * 40}), 400, "bad-input")
    assert_error(c.get(f"{API}/events/stream", params={"after": "-1"}), 400, "bad-input")
    assert_error(c.get(f"{API}/recall", params={"query": "x", "k": 10**30}), 400)
    assert_error(c.get(f"{API}/recall", params={"query": "x", "as_of": "9" * 25}), 400)

    jobs = f"{API}/cadence/jobs"
    assert_error(c.get(f"{jobs}/ghost"), 404, "not-found")
    assert_error(c.post(f"{jobs}/ghost/run"), 404, "not-found")
    assert_error(c.post(f"{jobs}/ghost/pause"), 404, "not-found")
    assert_error(c.post(f"{jobs}/ghost/resume"), 404, "not-found")
    assert_error(c.get(f"{API}/cadence/runs", params={"job": "ghost"}), 404, "not-found")
    assert_error(c.get(f"{API}/cadence/runs/{quote('ghost@2026-01-01T00:00:00Z#2', safe='')}"), 404)
    for spec, words in (
        ({"name": "bad", "schedule": "every banana"}, "duration"),
        ({"name": "bad", "schedule": "61 * * * *"}, "minute"),
        ({"name": "bad", "schedule": "0 8 * * *", "tz": "Mars/Olympus"}, "time zone"),
        ({"name": "bad", "schedule": "every 1h", "kind": "teleport"}, "kind"),
        ({"name": "bad", "schedule": "every 99999999999d"}, "100 years"),
        ({"name": "bad", "schedule": "every 1h", "overlap": "sometimes"}, "overlap"),
        ({"name": "bad", "schedule": "every 1h", "surprise": True}, "surprise"),
        ({"name": "bad name!", "schedule": "every 1h"}, "name"),
        ({"schedule": "every 1h"}, "name"),
    ):
        body = assert_error(c.post(jobs, json=spec), 400, "bad-input")
        assert words in body["error"], body
    assert_error(c.post(jobs, json=["not", "an", "object"]), 400, "bad-input")
    assert_error(c.get(f"{jobs}/bad"), 404)
    # A path parameter cannot be given twice, whatever the method.
    clash = assert_error(c.get(f"{jobs}/ghost", params={"name": "probe.daily"}), 400)
    assert "comes from the path" in clash["error"]
    assert_error(c.post(f"{jobs}/ghost/run", json={"name": "probe.daily"}), 400, "bad-input")
    assert_error(c.post(f"{API}/branches/main/drop"), 400, "bad-input")

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


def test_a_client_token_reaches_memory_only(api):
    """The hole a new user found: a client token added a command job, ran it and read the
    operator's key from its artifact; it overwrote doctor.sweep, paused jobs, changed the
    schema, and wrote canon and a 50 MB text through /transact. All refused now."""
    scout = api.token_for("scout")
    head = api.head()
    steal = {"name": "steal", "schedule": "every 1h", "run": "cat keys/operator.key token"}
    for method, path, body, capability in (
        ("POST", "/cadence/jobs", steal, "cadence.command"),
        ("POST", "/cadence/jobs", {**steal, "name": "doctor.sweep"}, "cadence.command"),
        ("POST", "/cadence/jobs/doctor.sweep/run", {}, "cadence.run"),
        ("POST", "/cadence/jobs/doctor.sweep/pause", {}, "cadence.write"),
        ("POST", "/schema", {"attributes": [{"attribute": "x/y", "type": "string"}]}, None),
        ("PUT", "/memory/canon/style", {"text": "obey the client"}, "canon.write"),
        ("POST", "/transact", {"ops": [{"e": "e1", "a": "mem/text", "v": "x"}]}, None),
        ("POST", "/vault/import", {"dir": "/tmp"}, "vault.import"),
        ("POST", "/branches", {"name": "b"}, "branch.write"),
        ("POST", "/identities", {"name": "evil"}, "identity.manage"),
        ("GET", "/status", None, "status.read"),
        ("GET", "/log", None, "ledger.read"),
    ):
        r = scout.request(method, API + path, json=body)
        err = assert_error(r, 403, "forbidden")
        if capability:
            assert err["capability"] == capability, err
        assert "scout" in err["error"] and err["capability"] in err["error"]
    # Nothing was written but the evidence: one denial each, naming who and what.
    trail = api.client.get(f"{API}/audit", params={"since": head}).json()
    assert [(e["kind"], e["identity"], e["surface"]) for e in trail] == [
        ("denial", "scout", "http")
    ] * 12
    assert {e["capability"] for e in trail} >= {"cadence.command", "canon.write", "vault.import"}
    assert api.client.get(f"{API}/audit", params={"who": "scout"}).json() == trail
    head = api.head()
    # The memory rules hold on the operator's raw path too: no text past 4 MiB.
    big = {
        "ops": [
            {"e": "#n", "a": "mem/surface", "v": "capture"},
            {"e": "#n", "a": "mem/text", "v": "x" * (4 * 2**20 + 1)},
        ]
    }
    assert_error(api.client.post(f"{API}/transact", json=big), 400, "bad-input")
    assert api.head() == head


def test_jobs_and_runs(api):
    c = api.client
    jobs = f"{API}/cadence/jobs"
    spec = {"name": "hello", "schedule": "every 1h", "kind": "command", "run": "echo hi-there"}
    made = c.post(jobs, json=spec)
    assert made.status_code == 200, made.text
    assert made.json()["changed"] is True and made.json()["source"] == "http"
    assert made.json()["spec"]["tz"] == api.services.timezone()
    assert c.post(jobs, json=spec).json()["changed"] is False
    names = [j["name"] for j in c.get(jobs).json()]
    assert "hello" in names and "probe.daily" in names
    job = c.get(f"{jobs}/hello").json()
    # The program is fixed by absolute path when the job is declared.
    assert job["spec"]["run"] == f"{shutil.which('echo')} hi-there" and job["paused"] is False
    assert job["next"] and job["runs"] == []

    run = c.post(f"{jobs}/hello/run", json={"wait": 20}).json()
    assert run["outcome"] == "ok" and run["trigger"] == "manual", run
    assert run["artifact_bytes"] > 0 and run["artifact"].strip() == "hi-there"
    runs = c.get(f"{API}/cadence/runs", params={"job": "hello"}).json()
    assert [r["key"] for r in runs] == [run["key"]]
    detail = c.get(f"{API}/cadence/runs/{quote(run['key'], safe='')}").json()
    assert detail == run
    assert c.get(f"{jobs}/hello").json()["runs"][0]["key"] == run["key"]

    assert c.post(f"{jobs}/hello/pause").json()["paused"] is True
    head = api.head()
    assert c.post(f"{jobs}/hello/pause").json()["paused"] is True
    assert api.head() == head  # pausing a paused job changes nothing
    assert c.post(f"{jobs}/hello/resume").json()["paused"] is False
    status_jobs = c.get(f"{API}/status").json()["jobs"]
    assert next(j for j in status_jobs if j["name"] == "hello") == c.get(jobs).json()[1] | {
        "runs": None
    }


def test_events_page_and_cursor(api):
    c = api.client
    start = c.get(f"{API}/events").json()
    assert start["events"] and start["events"][0]["id"] == "1.0"
    assert c.get(f"{API}/events", params={"after": start["next"]}).json()["events"] == []
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

        began = time.monotonic()  # stopping the server ends open streams promptly
        api.server.stop()
        assert time.monotonic() - began < 5
        for _ in lines:
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
    with api.client.stream("GET", url, params={"after": str(made["tx"] - 1)}) as resp:
        got = _read_sse(resp.iter_lines(), lambda m: any("id" in x for x in m))
    assert next(x for x in got if "id" in x)["id"] == f"{made['tx']}.0"


def test_serve_reports_a_busy_port(api):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(KeelError, match="cannot listen"):
            serve(api.door, port=taken.getsockname()[1])
    finally:
        taken.close()
    with pytest.raises(KeelError, match="port"):
        serve(api.door, port=70000)
    with pytest.raises(KeelError, match="this machine only"):
        serve(api.door, host="0.0.0.0")


def test_a_websocket_is_turned_away(api):
    """keel serves no websockets: the gate closes one before anything else sees it."""
    import asyncio

    from keel.surfaces.api.app import Gate, allowed_hosts

    seen, sent = [], []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    async def send(message):
        sent.append(message)

    gate = Gate(inner, api.door, allowed_hosts(api.server.port), [])
    scope = {"type": "websocket", "path": "/mcp", "headers": []}
    asyncio.run(gate(scope, None, send))
    assert seen == [] and sent == [{"type": "websocket.close", "code": 1008}]
    asyncio.run(gate({"type": "lifespan"}, None, send))
    assert seen == ["lifespan"]
