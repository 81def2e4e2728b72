"""Shared fixtures: every ledger test runs against a real SQLite file and a real PostgreSQL.

PostgreSQL comes from KEEL_TEST_PG (default: the local server's `test` database). Each
test gets its own schema, dropped afterwards. Without a server the PostgreSQL variants
skip, saying so, except under CI=true, where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from keel.govern.home import Home
from keel.ledger import Ledger, Signer

PG_BASE = os.environ.get("KEEL_TEST_PG", "postgresql://127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_pg_error: str | None = None


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Whether `predicate()` comes true within `timeout` seconds (polled every 20 ms)."""
    try:
        return bool(wait_until(predicate, timeout, every=0.02))
    except AssertionError:
        return False


def wait_until(predicate, timeout: float = 60.0, every: float = 0.05):
    """`predicate()`'s first true result within `timeout` seconds, or AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError("condition not met in time")


def sh(script: str) -> str:
    """A command job's `run` that asks for a shell, as a job must when it wants one."""
    import shlex

    return f"/bin/sh -c {shlex.quote(script)}"


def govern(run, home, addition: str) -> None:
    """Add `addition` (TOML) to the home's governance file and sign it as the operator."""
    path = home.path / "canon" / "governance.toml"
    path.write_text(path.read_text() + "\n" + addition + "\n")
    run("governance.sign")


def client_may(op) -> bool:
    """Whether the default governance file lets a client (an MCP agent, a script) use any
    of operation `op`'s capabilities."""
    from keel.govern.governance import default_text
    from keel.govern.policy import Policy

    policy = Policy.parse(default_text("operator"), "operator")
    return any(policy.decide("client", "operator", c).allowed for c in op.capabilities)


def _pg_available() -> bool:
    global _pg_error
    try:
        with psycopg.connect(PG_BASE, connect_timeout=3):
            return True
    except psycopg.Error as exc:
        _pg_error = str(exc).strip().splitlines()[0]
        return False


PG_OK = _pg_available()


def require_pg() -> None:
    if PG_OK:
        return
    message = f"PostgreSQL not reachable at {PG_BASE}: {_pg_error}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing server is a failure)")
    pytest.skip(message)


@contextlib.contextmanager
def fresh_pg_schema():
    """A DSN whose search_path is a fresh schema of its own, dropped afterwards."""
    require_pg()
    schema = f"keel_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_BASE else "?"
    try:
        yield f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_dsn():
    """A DSN whose search_path is a fresh schema of its own."""
    with fresh_pg_schema() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request) -> str:
    return request.param


#: For tests of logic that does not depend on the store (a command's parsing and
#: presentation, say): the operations and subsystems under them are tested on both stores.
sqlite_only = pytest.mark.parametrize("store_kind", ["sqlite"])


@pytest.fixture
def target(store_kind, tmp_path, request) -> str:
    """Where a ledger lives: a SQLite path or a PostgreSQL DSN."""
    if store_kind == "sqlite":
        return str(tmp_path / "keel.db")
    return request.getfixturevalue("pg_dsn")


@pytest.fixture
def operator() -> Signer:
    return Signer.generate("operator")


@pytest.fixture
def ledger(target, operator):
    """An open ledger whose genesis registers the operator."""
    led = Ledger.open(target, signer=operator)
    led.register_identity("operator", operator.public_key, "operator")
    yield led
    led.close()


@pytest.fixture
def home(keel_home) -> Home:
    """An initialised KEEL_HOME (KEEL_DB set for the PostgreSQL variant), as `keel init`
    makes it."""
    return keel_home


def keel(
    *args: str, input: str | None = None, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run the real `keel` command in a subprocess, with the current environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "keel", *args],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"keel {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


REPO = Path(__file__).resolve().parent.parent


# -- `keel up` as a real process ---------------------------------------------------------------
def start_daemon(home: Path, clock: str | None = None, extra_env: dict | None = None):
    """`keel up` on a free port for `home`; returns the process and its port."""
    from keel.daemon.lock import read_holder

    env = {**os.environ, "KEEL_HOME": str(home), **(extra_env or {})}
    if clock:
        env["KEEL_CLOCK"] = clock
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel", "up", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        holder = read_holder(home)
        if holder and holder.get("port"):
            return proc, holder["port"]
        if proc.poll() is not None:
            raise AssertionError(f"keel up exited early: {proc.stdout.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("keel up did not start listening within 60 s")


def stop_daemon(proc: subprocess.Popen, sig=signal.SIGTERM, timeout=60) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"daemon did not stop within {timeout}s: {out}") from None
    return out


# -- looking for bytes that must be gone (forgetting) ----------------------------------------
def files_holding(root: Path, needle: bytes) -> list[str]:
    """Every file under `root` (databases with their -wal and -shm, blobs, the recall
    index, anything else) whose bytes contain `needle`, byte by byte."""
    return [
        str(p.relative_to(root))
        for p in sorted(root.rglob("*"))
        if p.is_file() and needle in p.read_bytes()
    ]


def pg_rows_holding(dsn: str, needle: bytes) -> list[str]:
    """Tables of the DSN's schema with a row holding `needle`: each row is read whole as
    text (bytea as hex), and, when the server lets this user read them (a superuser),
    every relation file of the schema (tables, indexes, TOAST) after a CHECKPOINT."""
    forms = [needle.decode("latin-1"), needle.hex()]
    found = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        for table in tables:
            for (row,) in conn.execute(f"SELECT t::text FROM {table} t").fetchall():
                if any(f in row for f in forms):
                    found.append(table)
                    break
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
        if superuser:
            conn.execute("CHECKPOINT")
            relations = conn.execute(
                "SELECT c.oid::regclass::text, pg_relation_filepath(c.oid) FROM pg_class c"
                " WHERE c.relnamespace = current_schema()::regnamespace"
                " OR c.oid IN (SELECT reltoastrelid FROM pg_class"
                "   WHERE relnamespace = current_schema()::regnamespace)"
                " OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN"
                "   (SELECT reltoastrelid FROM pg_class"
                "     WHERE relnamespace = current_schema()::regnamespace))"
            ).fetchall()
            for name, path in relations:
                if path is None:
                    continue
                data = conn.execute(
                    "SELECT pg_read_binary_file(%s, 0, (pg_stat_file(%s)).size)", [path, path]
                ).fetchone()[0]
                if needle in bytes(data):
                    found.append(f"file of {name}")
    return found


# -- the door and its surfaces ---------------------------------------------------------------
@pytest.fixture
def keel_home(store_kind, tmp_path, request, monkeypatch) -> Home:
    """A home made as `keel init` makes it: key, ledger, keel's attributes, default cadence."""
    from keel.ops.services import Services

    path = tmp_path / "home"
    monkeypatch.setenv("KEEL_HOME", str(path))
    if store_kind == "postgres":
        monkeypatch.setenv("KEEL_DB", request.getfixturevalue("pg_dsn"))
    else:
        monkeypatch.delenv("KEEL_DB", raising=False)
    services, _ = Services.init(path)
    services.close()
    return services.home


@pytest.fixture
def services(keel_home):
    from keel.ops.services import Services

    s = Services.open(keel_home.path)
    yield s
    s.close()


@pytest.fixture
def door(services):
    from keel.ops.door import Door

    return Door(services)


@pytest.fixture
def run(keel_home, door):
    """Call an operation through the door as the operator (set-up not under test)."""
    from keel.ops.door import Caller

    me = Caller(keel_home.operator)

    def call(operation: str, /, **arguments):
        return door.call(operation, arguments, me)

    return call


@pytest.fixture
def head(services):
    """The number of the ledger's newest transaction that is not evidence of a refusal
    (a refused call writes nothing but that), read when called."""
    return lambda: newest_act(services.ledger())


def newest_act(ledger) -> int:
    """The newest transaction that is not a denial record."""
    acts = [e["tx"] for e in ledger.log() if not e["reason"].startswith("refused ")]
    return acts[-1] if acts else 0


@pytest.fixture
def server(keel_home, door):
    """The daemon's HTTP server (API and /mcp) on a free loopback port."""
    from keel.surfaces.api.server import serve

    srv = serve(door, port=0)
    yield srv
    srv.stop()


def mcp_over_http(url: str, token: str, scenario) -> None:
    """Run `scenario(session)` in an official MCP client session over streamable HTTP."""
    import asyncio

    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def main() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await scenario(session)

    asyncio.run(main())


@pytest.fixture
def client(keel_home, door) -> str:
    """A registered identity that is not the operator (an MCP client, say)."""
    from keel.ops.door import Caller

    door.call("identity.add", {"name": "client"}, Caller(keel_home.operator))
    return "client"


class CliResult:
    """What one in-process `keel` command line did: its exit status and output."""

    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err
        # The names of a finished subprocess, so tests read the same either way.
        self.returncode, self.stdout, self.stderr = code, out, err

    def json(self):
        return json.loads(self.out)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"<keel exited {self.code}: out={self.out[:200]!r} err={self.err[:200]!r}>"


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `keel ...` in this process (the same `main` the console script runs), with
    `input` as stdin; returns a CliResult. Real processes are kept for what needs one."""
    import io

    from keel.surfaces.cli.main import main

    def run(*args: str, input: str | bytes | None = None) -> CliResult:
        capsys.readouterr()
        data = input.encode() if isinstance(input, str) else (input or b"")
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
