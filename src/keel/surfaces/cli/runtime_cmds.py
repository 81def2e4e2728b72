"""Runtime commands: up, status, doctor, events, cadence, service."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Annotated, Any

import typer

from .adapter import (
    AsOpt,
    JsonFlag,
    call,
    emit,
    emit_data,
    local,
    marked,
    out,
    read_json,
    table,
    use_zone,
)

cadence_app = typer.Typer(no_args_is_help=True, help="Recurring jobs and their runs.")
service_app = typer.Typer(no_args_is_help=True, help="Start keel at login.")
health_app = typer.Typer(no_args_is_help=True, help="Health findings.")


def up(
    port: Annotated[
        int | None, typer.Option(help="Port for the HTTP API (default: config).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Loopback address to bind (127.0.0.1, localhost or ::1).")
    ] = "127.0.0.1",
) -> None:
    """Run keel: verify the ledger, then the event bus, the scheduler, the HTTP API and MCP,
    in one process. Exit 75 when another daemon runs for this home."""
    from ...ops.daemon import Daemon
    from ...ops.door import Door
    from ...ops.services import Services
    from ..api.server import check_host, serve

    check_host(host)
    services = Services.open_or_init()
    use_zone(services.timezone())
    daemon = Daemon(services)
    daemon.redact_log()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    verified = daemon.start()
    server = None
    try:
        if verified.ok:
            since = f", after checkpoint {verified.since}" if verified.since else ""
            out().print(
                f"ledger verified: {verified.transactions} transactions{since} "
                f"({verified.seconds}s)"
            )
        else:
            marked(
                "keel is read-only", "red", f": the ledger failed verification: {verified.problem}"
            )
        port = services.home.port() if port is None else port
        server = serve(Door(services), host=host, port=port)
        daemon.announce(server.port, host)
        out().print(
            f"keel is up: http://{host}:{server.port}/api/v1 "
            f"(token in {services.home.token_path}); MCP at /mcp"
        )
        out().print(f"ledger: {services.ledger_description()}")
        for job in daemon.next_fires():
            state = "paused" if job["paused"] else f"next {local(job['next'])}"
            out().print(f"  {job['job']}: {state}")
        sys.stdout.flush()
        while not stopping.wait(0.5):
            pass
        out().print("keel: stopping (letting runs finish)")
    finally:
        if server is not None:
            server.stop()
        daemon.stop()


def status(as_json: JsonFlag = False) -> None:
    """Whether keel runs, its jobs' next fires and last outcomes, subscriptions, findings,
    and whether it is read-only. Times are shown in the operator's zone."""
    data = call("status.show", json=as_json)
    state = f"running, up {data.uptime:g}s" if data.running else "not running"
    out().print(f"keel is {state}; ledger {data.ledger.transactions} transactions")
    out().print(f"now {local(data.now)} ({data.timezone})")
    if data.read_only:
        marked("read-only", "red", f": {data.read_only}")
    t = table("job", "schedule", "next", "last outcome", "last run")
    for job in data.jobs:
        last = job.last
        t.add_row(
            job.name,
            f"{job.spec['schedule']} ({job.spec['tz']})",
            "paused" if job.paused else local(job.next) or "—",
            last.outcome if last else "—",
            local(last.scheduled) if last else "—",
        )
    out().print(t)
    for sub in data.subscriptions:
        out().print(f"subscription {sub.name}: lag {sub.lag}, dead {sub.dead}")
    for f in data.health.open:
        marked("finding", "red", f" {f.check} {f.subject}: {f.message}")


def doctor(as_json: JsonFlag = False) -> None:
    """Run the health checks, record findings; exit 1 while any finding is open."""
    report = call("health.doctor")
    if as_json:
        emit("health.doctor", report)
    elif report.open:
        for f in report.open:
            marked("✗", "red", f" {f.check} {f.subject}: {f.message}")
    else:
        marked("✓", "green", " no open findings")
    for name, error in report.errors.items():
        sys.stderr.write(f"keel: the {name} check crashed: {error}\n")
    if report.open or report.errors:
        raise typer.Exit(1)


@health_app.command("findings")
def health_findings(
    every: Annotated[bool, typer.Option("--all", help="Resolved findings too.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Open findings (or every finding ever recorded, with its state)."""
    found = call("health.findings", {"all": every}, json=as_json)
    t = table("finding", "severity", "state", "opened", "message")
    for f in found:
        t.add_row(f.key, f.severity, f.state, local(f.opened), f.message)
    out().print(t)


def events(
    after: Annotated[str, typer.Option(help="Start after this position (tx.n).")] = "0.0",
    types: Annotated[list[str] | None, typer.Option("--type", help="Only these types.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Events from the ledger, oldest first (--json: one JSON object per line); --follow
    waits for new ones."""
    from .adapter import to_json

    position = after
    while True:
        page = call("events.list", {"after": position, "types": types or [], "limit": 1000})
        for event in to_json("events.list", page)["events"]:
            if as_json:
                emit_data(event)
            else:
                what = event.get("entity") or event.get("reason") or ""
                out().print(
                    f"{event['id']:>10}  {local(event['time'])}  {event['type']:<10} "
                    f"{event['author']:<14} {what}"
                )
        position = page.next
        if len(page.events) < 1000:
            if not follow:
                return
            sys.stdout.flush()
            time.sleep(0.2)


# -- cadence ---------------------------------------------------------------------------------
@cadence_app.command("list")
def cadence_list(as_json: JsonFlag = False) -> None:
    """Jobs, their schedules and next fires."""
    jobs = call("cadence.list", json=as_json)
    t = table("job", "schedule", "tz", "kind", "run", "next", "last")
    for j in jobs:
        t.add_row(
            j.name,
            j.spec["schedule"],
            j.spec["tz"],
            j.spec["kind"],
            j.spec["run"],
            "paused" if j.paused else local(j.next) or "—",
            j.last.outcome if j.last else "—",
        )
    out().print(t)


@cadence_app.command("show")
def cadence_show(
    name: str,
    runs: Annotated[int, typer.Option(help="How many recent runs.")] = 10,
    as_json: JsonFlag = False,
) -> None:
    """One job: its spec, state, next fire and recent runs."""
    job = call("cadence.show", {"name": name, "runs": runs}, json=as_json)
    t = table("", "", title=job.name)
    for key, value in job.spec.items():
        t.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
    t.add_row("paused", "yes" if job.paused else "no")
    t.add_row("next", local(job.next) or "—")
    out().print(t)
    _runs_table(job.runs or [])


def _runs_table(runs: list[Any]) -> None:
    t = table("run", "scheduled", "trigger", "attempt", "outcome", "error")
    for r in runs:
        t.add_row(
            r.key,
            local(r.scheduled),
            r.trigger or "",
            str(r.attempt),
            r.outcome,
            (r.error or "")[:60],
        )
    out().print(t)


@cadence_app.command("add")
def cadence_add(
    name: Annotated[str | None, typer.Argument(help="The job's name.")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Cron line or @daily, 'every 30m' or 'at ...'.")
    ] = None,
    command: Annotated[
        str | None, typer.Option(help="A program and its arguments (run without a shell).")
    ] = None,
    probe: Annotated[str | None, typer.Option(help="A named probe to run.")] = None,
    tz: Annotated[str | None, typer.Option(help="Time zone (default: the home's).")] = None,
    timeout: Annotated[str, typer.Option(help="e.g. 5m")] = "300s",
    retries: Annotated[int, typer.Option()] = 0,
    overlap: Annotated[str, typer.Option(help="skip, queue or allow")] = "skip",
    catch_up: Annotated[str, typer.Option("--catch-up", help="skip, once or all")] = "once",
    max_silence: Annotated[str | None, typer.Option(help="e.g. 26h")] = None,
    expect_artifact: Annotated[bool, typer.Option("--expect-artifact")] = False,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            help="VAR=VALUE for the command's environment (repeat it); VAR='${secret:NAME}' "
            "gives it a secret, which only the command sees.",
        ),
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="A JSON job spec, - for stdin.")
    ] = None,
    as_name: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Add or change a job (flags, or a full JSON spec with -f). A command job asked for by
    an identity a governance rule holds back waits for approval (exit 5)."""
    from ...errors import BadInput

    if file is not None:
        spec = read_json(file)
    else:
        if not name or not schedule or (command is None) == (probe is None):
            raise BadInput("give NAME, --schedule and one of --command or --probe (or -f FILE)")
        spec = {
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
            "env": dict(_assignment(e) for e in env or []),
        }
    if not isinstance(spec, dict):
        raise BadInput("a job spec is a JSON object")
    job = call("cadence.add", spec, as_name, json=as_json)
    out().print(f"job {job.name} {'saved' if job.changed else 'unchanged'}")


def _assignment(text: str) -> tuple[str, str]:
    from ...errors import BadInput

    key, eq, value = text.partition("=")
    if not eq or not key:
        raise BadInput(f"--env {text!r} is not VAR=VALUE")
    return key, value


@cadence_app.command("run")
def cadence_run(
    name: str,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the outcome when the daemon runs it.")
    ] = 300,
    as_json: JsonFlag = False,
) -> None:
    """Run a job now: in the daemon if one runs, else here, and show its outcome."""
    run = call("cadence.run", {"name": name, "wait": wait})
    if as_json:
        emit("cadence.run", run)
    else:
        out().print(f"{run.key}: {run.outcome}")
        if run.artifact:
            out().print(run.artifact)
    if run.outcome in ("failed", "timed-out", "interrupted"):
        raise typer.Exit(1)


@cadence_app.command("pause")
def cadence_pause(name: str, as_json: JsonFlag = False) -> None:
    """Stop a job firing (fires while paused are neither run nor missed)."""
    call("cadence.pause", {"name": name}, json=as_json)
    out().print(f"job {name} paused")


@cadence_app.command("resume")
def cadence_resume(name: str, as_json: JsonFlag = False) -> None:
    """Let a paused job fire again."""
    call("cadence.resume", {"name": name}, json=as_json)
    out().print(f"job {name} resumed")


@cadence_app.command("history")
def cadence_history(
    name: str, limit: Annotated[int, typer.Option()] = 50, as_json: JsonFlag = False
) -> None:
    """A job's runs, newest last."""
    runs = call("cadence.history", {"name": name, "limit": limit}, json=as_json)
    _runs_table(runs)


@cadence_app.command("runs")
def cadence_runs(
    job: Annotated[str | None, typer.Option(help="Only this job.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome.")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Runs of every job (or one job, or one outcome), newest last."""
    runs = call("cadence.runs", {"job": job, "outcome": outcome, "limit": limit}, json=as_json)
    _runs_table(runs)


@cadence_app.command("run-info")
def cadence_run_info(key: str, as_json: JsonFlag = False) -> None:
    """One run, with what it produced."""
    run = call("cadence.run_info", {"key": key}, json=as_json)
    _runs_table([run])
    if run.artifact:
        out().print(run.artifact)


@cadence_app.command("sync")
def cadence_sync(as_json: JsonFlag = False) -> None:
    """Load canon/cadence.toml into the ledger."""
    result = call("cadence.sync", json=as_json)
    changed = result.changed
    out().print(
        f"cadence synced: {len(changed)} job(s) changed"
        + (f" ({', '.join(changed)})" if changed else "")
    )


# -- the service -------------------------------------------------------------------------------
@service_app.command("install")
def service_install(as_json: JsonFlag = False) -> None:
    """Write a systemd user unit (Linux) or launchd agent (macOS) that runs `keel up`."""
    result = call("service.install", json=as_json)
    out().print(f"wrote {result.path}\n{result.hint}")


@service_app.command("uninstall")
def service_uninstall(as_json: JsonFlag = False) -> None:
    """Remove the unit or agent written by `keel service install`."""
    result = call("service.uninstall", json=as_json)
    out().print(f"removed {result.path}" if result.path else result.hint)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(status)
    app.command()(doctor)
    app.command()(events)
    app.add_typer(cadence_app, name="cadence")
    app.add_typer(service_app, name="service")
    app.add_typer(health_app, name="health")
