"""What a job runs. Kinds are pluggable: later subsystems add briefs, sweeps, agent tasks.

`command` runs a program with its arguments — never through a shell — with a timeout
(stdout and stderr become the artifact);
`probe` runs a named cheap, deterministic check that costs nothing. Probes, like kinds,
are registered by whoever composes the daemon (e.g. health registers `doctor`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput, Forbidden, KeelError
from ..govern import secrets
from ..govern.home import Home
from ..ledger import Ledger
from ..ledger.instants import format_instant
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
    run: str = ""  # the run's key
    scheduled: int | None = None  # the fire's instant (µs)
    attempt: int = 1
    #: Set (with `stop`) when this node lost the run's lease to another node: the run is
    #: no longer ours, so it ends at once, with no grace, and its outcome is not recorded.
    lost: threading.Event = field(default_factory=threading.Event)


Kind = Callable[[JobSpec, RunContext], Outcome]
Probe = Callable[[RunContext], Outcome]


def run_command(spec: JobSpec, ctx: RunContext) -> Outcome:
    try:
        argv = command_argv(spec.run)
    except BadInput as exc:
        return Outcome("failed", error=str(exc))
    try:
        env = environment(spec, ctx)
    except KeelError as exc:
        return Outcome("failed", error=str(exc))
    try:
        proc = _start(argv, env, ctx)
    except OSError as exc:
        return Outcome("failed", error=f"{argv[0]} could not be started: {exc.strerror or exc}")
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.read()), daemon=True)
    reader.start()
    deadline_hit = threading.Event()

    def watch() -> None:
        # Ends the command at its timeout, when the daemon stops and the grace is over, or
        # at once when the run's lease was lost (another node now owns the fire).
        if ctx.stop.wait(spec.timeout):
            if proc.poll() is None and (ctx.lost.is_set() or not _wait(proc, ctx.grace)):
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
    if ctx.lost.is_set():
        return Outcome("interrupted", output, "this node lost the run's lease")
    if ctx.stop.is_set() and code < 0:
        return Outcome("interrupted", output, "the daemon stopped during the run")
    if code != 0:
        return Outcome("failed", output, f"exit status {code}")
    return Outcome("ok", output)


def environment(spec: JobSpec, ctx: RunContext) -> dict[str, str]:
    """The child's environment: keel's own; the job's name, the run's key, the fire's
    instant and the attempt (so a command can tell a retry from a first run, or dedupe
    its own effects by fire); and the job's variables, each `${secret:NAME}` replaced by
    its value — given only when the job's owner is granted that secret, and every use (or
    refusal) recorded in the ledger first."""
    env = {
        **os.environ,
        "KEEL_JOB": spec.name,
        "KEEL_RUN": ctx.run,
        "KEEL_ATTEMPT": str(ctx.attempt),
    }
    if ctx.scheduled is not None:
        env["KEEL_SCHEDULED"] = format_instant(ctx.scheduled) or ""
    else:
        env.pop("KEEL_SCHEDULED", None)  # never a value inherited from keel's own caller
    names = sorted(secrets.references(spec.env))
    if not names:
        return {**env, **spec.env}
    if ctx.home is None:
        raise BadInput("secrets are given only to jobs run by a keel home's scheduler")
    home = Home(ctx.home)
    owner = home.operator if spec.owner == "operator" else spec.owner
    with ctx.open_ledger() as ledger:
        refusals = {n: secrets.may_use(ledger, n, owner, home.operator) for n in names}
        ops = [
            op for n in names for op in secrets.use_ops(n, owner, spec.name, ctx.run, refusals[n])
        ]
        ledger.transact(ops, reason=f"{ctx.run or spec.name}: secrets for {spec.name}")
    refused = [r for r in refusals.values() if r]
    if refused:
        raise Forbidden(f"the job was given no secrets: {refused[0]}", "secret.use", "run")
    box = secrets.SecretBox(home.keys)
    return {**env, **secrets.expand(spec.env, {n: box.value(n) for n in names})}


#: The command's first moments (Linux), run by a Python of its own so that nothing of the
#: daemon's runs between fork and exec (code there broke the daemon's PostgreSQL
#: connections): ask the kernel to SIGKILL this process when the thread that started it
#: dies, give up if the daemon is already gone, then become the command.
_DIE_WITH_PARENT = """\
import ctypes, os, sys
ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
if os.getppid() != int(sys.argv[1]):
    os._exit(137)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _dying_with_daemon(argv: list[str]) -> list[str]:
    """`argv`, started so that the command dies with the daemon, even by kill -9 (Linux).
    Without it a killed daemon's command ran on, finished, and left the ledger saying
    `interrupted`, so a retry ran the fire a second time. The signal fires when the
    starting thread ends — keel starts commands from its worker threads, which live as
    long as the daemon — and reaches the command's own process (across its exec), not
    processes it forks off."""
    if not sys.platform.startswith("linux"):
        return argv
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]


def _start(argv: list[str], env: dict[str, str], ctx: RunContext) -> subprocess.Popen:
    """The command as its own process group, with no shell between keel and it, dying
    with the daemon."""
    if not os.access(argv[0], os.X_OK):
        raise FileNotFoundError(errno.ENOENT, "it is missing or not executable")
    return subprocess.Popen(
        _dying_with_daemon(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ctx.home,
        env=env,
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
