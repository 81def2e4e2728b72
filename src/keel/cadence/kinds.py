"""What a job runs. Kinds are pluggable: later subsystems add briefs, sweeps, agent tasks.

`command` runs a program with its arguments — never through a shell — with a timeout
(stdout and stderr become the artifact);
`probe` runs a named cheap, deterministic check that costs nothing. Probes, like kinds,
are registered by whoever composes the daemon (e.g. health registers `doctor`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..ledger import BadInput, Ledger
from .jobs import JobSpec, command_argv


@dataclass
class Outcome:
    outcome: str  # ok | failed | timed-out | interrupted
    artifact: bytes = b""
    error: str = ""


@dataclass
class RunContext:
    open_ledger: Callable[[], Ledger]
    home: Path | None
    stop: threading.Event
    grace: float = 10.0
    probes: dict[str, Callable[[RunContext], Outcome]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


Kind = Callable[[JobSpec, RunContext], Outcome]
Probe = Callable[[RunContext], Outcome]


def run_command(spec: JobSpec, ctx: RunContext) -> Outcome:
    try:
        argv = command_argv(spec.run)
    except BadInput as exc:
        return Outcome("failed", error=str(exc))
    try:
        proc = _start(argv, spec, ctx)
    except OSError as exc:
        return Outcome("failed", error=f"{argv[0]} could not be started: {exc.strerror or exc}")
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.read()), daemon=True)
    reader.start()
    deadline_hit = threading.Event()

    def watch() -> None:
        # Ends the command at its timeout, or when the daemon stops and the grace is over.
        if ctx.stop.wait(spec.timeout):
            if proc.poll() is None and not _wait(proc, ctx.grace):
                _kill(proc)
        elif proc.poll() is None:
            deadline_hit.set()
            _kill(proc)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = proc.wait()
    reader.join(5)
    output = result[0] if result else b""
    if deadline_hit.is_set():
        return Outcome("timed-out", output, f"timed out after {spec.timeout:g}s")
    if ctx.stop.is_set() and code < 0:
        return Outcome("interrupted", output, "the daemon stopped during the run")
    if code != 0:
        return Outcome("failed", output, f"exit status {code}")
    return Outcome("ok", output)


def _start(argv: list[str], spec: JobSpec, ctx: RunContext) -> subprocess.Popen:
    """The command as its own process group, with no shell between keel and it."""
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ctx.home,
        env={**os.environ, "KEEL_JOB": spec.name},
    )


def _wait(proc: subprocess.Popen, seconds: float) -> bool:
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def probe_ledger(ctx: RunContext) -> Outcome:
    with ctx.open_ledger() as ledger:
        size = ledger.head().id
    return Outcome("ok", f"ledger readable: {size} transactions\n".encode())


def probe_ok(ctx: RunContext) -> Outcome:
    return Outcome("ok", b"ok\n")


def probe_fail(ctx: RunContext) -> Outcome:
    return Outcome("failed", error="this probe always fails")


PROBES: dict[str, Probe] = {"ledger": probe_ledger, "ok": probe_ok, "fail": probe_fail}


def run_probe(spec: JobSpec, ctx: RunContext) -> Outcome:
    probes = ctx.probes or PROBES
    probe = probes.get(spec.run)
    if probe is None:
        return Outcome("failed", error=f"unknown probe {spec.run!r} ({', '.join(sorted(probes))})")
    return probe(ctx)


KINDS: dict[str, Kind] = {"command": run_command, "probe": run_probe}
