"""CLI commands for the runtime: up, status, doctor, events, cadence, service."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ...bus.events import EventSource, Position
from ...cadence import jobs as jobs_mod
from ...cadence.runs import run_json, runs_of
from ...cadence.scheduler import ensure_schema
from ...daemon.lock import DaemonLock, read_holder
from ...daemon.runtime import Runtime
from ...daemon.service import install_service, uninstall_service
from ...govern.home import Home, home_dir, init
from ...health import checks as health
from ...ledger import BadInput, KeelError

out = Console()
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]

cadence_app = typer.Typer(no_args_is_help=True, help="Recurring jobs and their runs.")
service_app = typer.Typer(no_args_is_help=True, help="Start keel at login.")


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def _home() -> Home:
    return Home(home_dir())


def _runtime(home: Home | None = None) -> Runtime:
    runtime = Runtime(home or _home())
    health.install(runtime)
    return runtime


def _api(home: Home, method: str, path: str, body: Any = None) -> Any | None:
    """Call the running daemon's API; None when no daemon runs for this home."""
    holder = read_holder(home.path)
    if not holder or not holder.get("port"):
        return None
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{holder['port']}/api/v1{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {home.token()}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except (ValueError, AttributeError):
            message = str(exc)
        raise KeelError(message) from None
    except (urllib.error.URLError, OSError):
        return None


def up(
    port: Annotated[
        int | None, typer.Option(help="Port for the HTTP API (default: config).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run keel: the ledger, the event bus, the scheduler and the HTTP API, in one process."""
    from ..api.server import serve  # fastapi and uvicorn load only for the daemon

    home, _ = init()
    lock = DaemonLock(home.path)
    lock.acquire({"port": None})
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    runtime = _runtime(home)
    server = None
    try:
        runtime.start()
        server = serve(runtime, host=host, port=home.port() if port is None else port)
        lock.update({"port": server.port, "address": host})
        out.print(f"keel is up: http://{host}:{server.port}/api/v1 (token in {home.token_path})")
        out.print(f"ledger: {home.db_target()}")
        with runtime.open_ledger() as ledger:
            for job in runtime.scheduler.next_fires(ledger)[:10]:
                state = "paused" if job["paused"] else f"next {job['next']}"
                out.print(f"  {job['job']}: {state}")
        sys.stdout.flush()
        while not stopping.wait(0.5):
            pass
        out.print("keel: stopping (letting runs finish)")
    finally:
        if server is not None:
            server.stop()
        runtime.stop()
        lock.release()


def status(as_json: JsonFlag = False) -> None:
    """Whether keel runs, its jobs' next fires and last outcomes, subscriptions, findings."""
    home = _home()
    data = _api(home, "GET", "/status")
    if data is None:
        data = _runtime(home).status()
        data["running"] = False
    if as_json:
        _emit(data)
        return
    state = f"running, up {data['uptime']}s" if data["running"] else "not running"
    out.print(f"keel is {state}; ledger {data['ledger']['transactions']} transactions")
    table = Table("job", "schedule", "next", "last outcome", "last run")
    for job in data["jobs"]:
        last = job.get("last") or {}
        table.add_row(
            job["name"],
            job["schedule"],
            "paused" if job["paused"] else job["next"] or "—",
            last.get("outcome", "—"),
            last.get("scheduled", "—"),
        )
    out.print(table)
    for sub in data.get("subscriptions", []):
        out.print(f"subscription {sub['name']}: lag {sub['lag']}, dead {sub['dead']}")
    findings = (data.get("health") or {}).get("open", [])
    for f in findings:
        out.print(f"[red]finding[/] {f['check']} {f['subject']}: {f['message']}", highlight=False)


def doctor(as_json: JsonFlag = False) -> None:
    """Run the health checks, record findings; exit 1 while any finding is open."""
    runtime = _runtime()
    with runtime.open_ledger() as ledger:
        ensure_schema(ledger)
        findings = health.doctor(ledger, runtime.clock.now())
    if as_json:
        _emit([f.to_json() for f in findings])
    elif findings:
        for f in findings:
            out.print(f"[red]✗[/] {f.check} {f.subject}: {f.message}", highlight=False)
    else:
        out.print("[green]✓[/] no open findings")
    if findings:
        raise typer.Exit(1)


def events(
    after: Annotated[str, typer.Option(help="Start after this position (tx.n).")] = "0.0",
    types: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
) -> None:
    """Events as JSON lines, from the ledger; --follow waits for new ones."""
    try:
        position = Position.parse(after)
    except ValueError:
        raise BadInput(f"{after!r} is not a position like 12.0") from None
    wanted = set(types or ())
    with _home().ledger() as ledger:
        source = EventSource(ledger)
        while True:
            batch, reached = source.read(position)
            for event in batch:
                if not wanted or event.type in wanted:
                    _emit(event.to_json())
            position = max(position, reached) if not batch else batch[-1].position
            if not batch and reached.tx >= source.head():
                if not follow:
                    return
                sys.stdout.flush()
                time.sleep(0.2)


@cadence_app.command("list")
def cadence_list(as_json: JsonFlag = False) -> None:
    """Jobs, their schedules and next fires."""
    runtime = _runtime()
    with runtime.open_ledger() as ledger:
        ensure_schema(ledger)
        nexts = {j["job"]: j["next"] for j in runtime.scheduler.next_fires(ledger)}
        rows = [
            {
                **spec.model_dump(),
                "paused": bool(v.get("keel.job/paused")),
                "source": v.get("keel.job/source"),
                "next": nexts.get(spec.name),
            }
            for spec, v in jobs_mod.load_jobs(ledger).values()
        ]
    if as_json:
        _emit(rows)
        return
    table = Table("job", "schedule", "tz", "kind", "run", "next")
    for r in sorted(rows, key=lambda r: r["name"]):
        table.add_row(
            r["name"],
            r["schedule"],
            r["tz"],
            r["kind"],
            r["run"],
            "paused" if r["paused"] else r["next"] or "—",
        )
    out.print(table)


@cadence_app.command("show")
def cadence_show(name: str) -> None:
    """One job's spec and state, as JSON."""
    with _runtime().open_ledger() as ledger:
        ensure_schema(ledger)
        spec, values = jobs_mod.get_job(ledger, name)
    _emit(
        {
            **spec.model_dump(),
            "paused": bool(values.get("keel.job/paused")),
            "source": values.get("keel.job/source"),
        }
    )


@cadence_app.command("add")
def cadence_add(
    name: Annotated[str | None, typer.Argument(help="The job's name.")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Cron line, 'every 30m' or 'at ...'.")
    ] = None,
    command: Annotated[str | None, typer.Option(help="A shell command to run.")] = None,
    probe: Annotated[str | None, typer.Option(help="A named probe to run.")] = None,
    tz: Annotated[str, typer.Option(help="Time zone of the schedule.")] = "UTC",
    timeout: Annotated[str, typer.Option(help="e.g. 5m")] = "300s",
    retries: Annotated[int, typer.Option()] = 0,
    overlap: Annotated[str, typer.Option(help="skip, queue or allow")] = "skip",
    catch_up: Annotated[str, typer.Option("--catch-up", help="skip, once or all")] = "once",
    max_silence: Annotated[str | None, typer.Option(help="e.g. 26h")] = None,
    expect_artifact: Annotated[bool, typer.Option("--expect-artifact")] = False,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="A JSON job spec, - for stdin.")
    ] = None,
) -> None:
    """Add or change a job (flags, or a full JSON spec with -f)."""
    if file is not None:
        text = sys.stdin.read() if file == "-" else _read(file)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"the job spec is not valid JSON: {exc.msg}") from None
    else:
        if not name or not schedule or (command is None) == (probe is None):
            raise BadInput("give NAME, --schedule and one of --command or --probe (or -f FILE)")
        data = {
            "name": name,
            "schedule": schedule,
            "tz": tz,
            "timeout": timeout,
            "retries": retries,
            "overlap": overlap,
            "catch_up": catch_up,
            "max_silence": max_silence,
            "expect_artifact": expect_artifact,
            "kind": "command" if command is not None else "probe",
            "run": command if command is not None else probe,
        }
    runtime = _runtime()
    spec = jobs_mod.parse_job(data, set(runtime.kinds))
    with runtime.open_ledger() as ledger:
        ensure_schema(ledger)
        changed = jobs_mod.save_job(ledger, spec, "cli")
    out.print(f"job {spec.name} {'saved' if changed else 'unchanged'}")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from None


@cadence_app.command("run")
def cadence_run(name: str, as_json: JsonFlag = False) -> None:
    """Run a job now: through the daemon if it runs, else here, waiting for the outcome."""
    home = _home()
    result = _api(home, "POST", f"/jobs/{name}/run")
    if result is None:
        runtime = _runtime(home)
        scheduler = runtime.scheduler
        with runtime.open_ledger() as ledger:
            ensure_schema(ledger)
            key, future = scheduler.run_now(ledger, name)
        if future is not None:
            future.result()
        scheduler.pool.shutdown()
        with runtime.open_ledger() as ledger:
            values = ledger.view().get(f"run:{key}") or {}
        result = run_json(values, with_artifact=True)
    if as_json:
        _emit(result)
    else:
        out.print(f"{result.get('key')}: {result.get('outcome')}")
        if result.get("artifact"):
            out.print(result["artifact"], markup=False, highlight=False)
    if result.get("outcome") in ("failed", "timed-out", "interrupted"):
        raise typer.Exit(1)


def _set_paused(name: str, paused: bool) -> None:
    with _runtime().open_ledger() as ledger:
        ensure_schema(ledger)
        jobs_mod.set_paused(ledger, name, paused)
    out.print(f"job {name} {'paused' if paused else 'resumed'}")


@cadence_app.command("pause")
def cadence_pause(name: str) -> None:
    """Stop a job firing (fires while paused are not run or recorded)."""
    _set_paused(name, True)


@cadence_app.command("resume")
def cadence_resume(name: str) -> None:
    """Let a paused job fire again."""
    _set_paused(name, False)


@cadence_app.command("history")
def cadence_history(
    name: str, limit: Annotated[int, typer.Option()] = 50, as_json: JsonFlag = False
) -> None:
    """A job's runs, newest last."""
    with _runtime().open_ledger() as ledger:
        ensure_schema(ledger)
        jobs_mod.get_job(ledger, name)
        rows = [run_json(r) for r in runs_of(ledger, job=name, limit=limit)]
    if as_json:
        _emit(rows)
        return
    table = Table("scheduled", "trigger", "attempt", "outcome", "error")
    for r in rows:
        table.add_row(
            r.get("scheduled", ""),
            r.get("trigger", ""),
            str(r.get("attempt", "")),
            r.get("outcome", ""),
            (r.get("error") or "")[:60],
        )
    out.print(table)


@cadence_app.command("sync")
def cadence_sync() -> None:
    """Load canon/cadence.toml into the ledger."""
    runtime = _runtime()
    changed = runtime.prepare()
    out.print(
        f"cadence synced: {len(changed)} job(s) changed"
        + (f" ({', '.join(changed)})" if changed else "")
    )


@service_app.command("install")
def service_install() -> None:
    """Write a systemd user unit (Linux) or launchd agent (macOS) that runs `keel up`."""
    path, hint = install_service(_home().path)
    out.print(f"wrote {path}\n{hint}")


@service_app.command("uninstall")
def service_uninstall() -> None:
    """Remove the unit or agent written by `keel service install`."""
    path = uninstall_service()
    out.print(f"removed {path}" if path else "no keel service was installed")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(status)
    app.command()(doctor)
    app.command()(events)
    app.add_typer(cadence_app, name="cadence")
    app.add_typer(service_app, name="service")
