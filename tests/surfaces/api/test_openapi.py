"""The OpenAPI document tells the truth: every route has a typed success response and the
error model the server really sends; a client generated from it works; and a fuzzer
driven by it finds no 5xx."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from keel.ops.door import Caller, Door
from keel.ops.services import Services
from keel.surfaces.api.server import serve

API = "/api/v1"
#: The generator, run in a tool environment of its own (it pins an older typer than keel's).
GENERATOR = "openapi-python-client==0.29.1"


@pytest.fixture
def live(keel_home):
    services = Services.open(keel_home.path)
    door = Door(services)
    operator = Caller(keel_home.operator)
    door.call("identity.add", {"name": "client"}, operator)
    client_token = door.call("identity.token", {"name": "client"}, operator).token
    server = serve(door, port=0)
    yield server, keel_home.token(), client_token
    server.stop()
    services.close()


@pytest.fixture
def document(live) -> dict:
    server, *_ = live
    return httpx.get(f"{server.url}{API}/openapi.json").json()


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_every_operation_is_typed_with_the_real_error_model(document):
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorBody"]["required"]) == {"error", "kind"}
    count = 0
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            count += 1
            ok = op["responses"]["200"]["content"]
            if path.endswith("/events/stream"):
                assert "text/event-stream" in ok
                continue
            schema = ok["application/json"]["schema"]
            assert schema not in ({}, {"type": "object"}), (method, path)
            for status in ("400", "401", "403", "404"):
                error = op["responses"][status]["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
            assert "422" not in op["responses"] or "HTTPValidationError" not in str(
                op["responses"]["422"]
            ), "the server never sends FastAPI's {detail}"
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                body = schemas[ref.rsplit("/", 1)[-1]]
                assert body["type"] == "object" and body["additionalProperties"] is False
    assert count >= 66
    assert "HTTPValidationError" not in schemas


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_a_generated_client_works(live, document, tmp_path):
    uv = shutil.which("uv") or shutil.which("uvx")
    assert uv, "uv is what runs the generator in a tool environment of its own"
    spec = tmp_path / "openapi.json"
    spec.write_text(__import__("json").dumps(document))
    command = [uv, "tool", "run", "--from", GENERATOR, "openapi-python-client"]
    if uv.endswith("uvx"):
        command = [uv, "--from", GENERATOR, "openapi-python-client"]
    made = subprocess.run(
        [
            *command,
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "keel_client"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "Warning" not in made.stdout + made.stderr, made.stdout + made.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        client_pkg = importlib.import_module("keel_client")
        server, operator_token, client_token = live
        client = client_pkg.AuthenticatedClient(base_url=server.url, token=operator_token)
        memory = importlib.import_module("keel_client.api.memory")
        capture = importlib.import_module("keel_client.api.memory.memory_capture")
        models = importlib.import_module("keel_client.models")
        added = capture.sync(client=client, body=models.CaptureIn(text="from a generated client"))
        assert isinstance(added, models.Added) and added.tx > 0, added
        status = importlib.import_module("keel_client.api.status.status_show")
        shown = status.sync(client=client)
        assert isinstance(shown, models.Status) and shown.ledger.transactions >= added.tx
        # An error comes back as the documented model, with its kind.
        stranger = client_pkg.AuthenticatedClient(base_url=server.url, token=client_token)
        refused = status.sync_detailed(client=stranger)
        assert refused.status_code == 403
        assert isinstance(refused.parsed, models.ErrorBody)
        assert refused.parsed.kind == "forbidden" and refused.parsed.capability == "status.read"
        del memory
    finally:
        sys.path.remove(str(tmp_path))
        for name in list(sys.modules):
            if name == "keel_client" or name.startswith("keel_client."):
                del sys.modules[name]


#: Routes the fuzzer may not drive as the operator: they run shell commands or write files
#: at paths it makes up (tests/ops/test_door.py proves a client is refused them).
OPERATOR_UNSAFE = {
    ("POST", f"{API}/cadence/jobs"),
    ("POST", f"{API}/cadence/jobs/{{name}}/run"),
    ("POST", f"{API}/vault/export"),
    ("POST", f"{API}/vault/import"),
    ("POST", f"{API}/export"),
    ("POST", f"{API}/import"),
    ("POST", f"{API}/files"),
    ("GET", f"{API}/events/stream"),
}


@pytest.mark.parametrize("store_kind", ["sqlite"])
def test_a_fuzzer_finds_no_5xx(live, document):
    """Schemathesis, bounded: valid and invalid inputs to every route, as the operator (a
    client is refused before its arguments are read; tests/ops/test_door.py covers that).
    Any answer is fine but a server error."""
    server, operator_token, _client_token = live
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    auth = {"Authorization": f"Bearer {operator_token}"}
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in OPERATOR_UNSAFE:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=op.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=3,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def probe(case) -> None:
                    response = case.call(base_url=server.url, headers=auth, timeout=30)
                    if response.status_code >= 500:
                        body = str(case.body)[:200]
                        failures.append(
                            f"{case.method} {case.formatted_path} {case.query!r} {body!r} "
                            f"-> {response.status_code} {response.text[:200]}"
                        )

                try:
                    probe()
                except Exception as exc:  # an unsatisfiable schema is the fuzzer's problem
                    if "Unsatisfiable" not in type(exc).__name__:
                        raise
    assert not failures, "\n".join(failures[:20])
