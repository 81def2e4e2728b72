"""Cadence operations: recurring jobs and their runs.

A command job runs a shell command on keel's machine, so declaring one needs
`cadence.command`; any other job needs `cadence.write`. Running a job now needs
`cadence.run`. When a daemon runs for the home, a job fired from another process runs in
the daemon (the one place runs execute); otherwise here.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

from pydantic import Field

from ..cadence import canon as canon_mod
from ..cadence import jobs as jobs_mod
from ..cadence.runs import run_entity, run_json, runs_of
from ..errors import BadInput, Forbidden, NotFound, Refused
from ..govern import secrets
from ..ledger import Ledger
from ..ledger.instants import format_instant
from . import daemon_client
from .call import Call
from .models import Input, Job, Limit, NoArguments, Output, Run
from .registry import operation

JobName = Annotated[str, Field(min_length=1, max_length=80, description="A job's name.")]
Duration = Annotated[
    str | float | None, Field(description="A duration: 90s, 30m, 2h, 1d, or seconds.")
]


def run_model(values: dict, with_artifact: bool = False) -> Run:
    data = run_json(values, with_artifact=with_artifact)
    return Run.model_validate({k.replace("-", "_"): v for k, v in data.items()})


def job_model(
    ledger: Ledger, spec: jobs_mod.JobSpec, values: dict, nexts: dict, runs: int = 0
) -> Job:
    last = runs_of(ledger, job=spec.name, limit=max(runs, 1))
    last_fire = values.get("keel.job/last-fire")
    paused = bool(values.get("keel.job/paused"))
    return Job(
        name=spec.name,
        spec=spec.model_dump(),
        paused=paused,
        source=values.get("keel.job/source"),
        next=None if paused else nexts.get(spec.name),
        last_fire=format_instant(last_fire) if last_fire is not None else None,
        last=run_model(last[-1]) if last else None,
        runs=[run_model(r) for r in last] if runs else None,
    )


def all_jobs(call: Call) -> list[Job]:
    ledger = call.ledger
    nexts = _nexts(call, ledger)
    return [
        job_model(ledger, spec, values, nexts)
        for _name, (spec, values) in sorted(jobs_mod.load_jobs(ledger).items())
    ]


def _nexts(call: Call, ledger: Ledger) -> dict[str, str | None]:
    scheduler = call.services.local_runtime().scheduler
    return {j["job"]: j["next"] for j in scheduler.next_fires(ledger)}


def _job(call: Call, name: str, runs: int = 0) -> Job:
    ledger = call.ledger
    spec, values = jobs_mod.get_job(ledger, name)
    return job_model(ledger, spec, values, _nexts(call, ledger), runs)


@operation("cadence.list", capability="cadence.read", writes=False)
def cadence_list(call: Call, p: NoArguments) -> list[Job]:
    """Every job, with its next fire and last run."""
    return all_jobs(call)


class ShowIn(Input):
    name: JobName
    runs: Annotated[int, Field(ge=0, le=1000, description="How many recent runs.")] = 10


@operation("cadence.show", capability="cadence.read", writes=False)
def cadence_show(call: Call, p: ShowIn) -> Job:
    """One job: its spec, state, next fire and recent runs."""
    return _job(call, p.name, p.runs)


class JobIn(Input):
    """A job spec. Durations take 90s, 30m, 2h, 1d or seconds; the time zone defaults to
    the home's."""

    name: JobName
    schedule: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="A 5-field cron line or @daily-style macro (in tz), 'every 30m', or "
        "'at 2026-12-01T09:00'."
    )
    kind: Annotated[str, Field(max_length=80)] = Field(
        "command",
        description="command (a program and its arguments, run without a shell) or probe "
        "(a named cheap check).",
    )
    run: Annotated[str, Field(max_length=10_000)] = Field(
        "",
        description="The program and its arguments (split into words as a shell would, but "
        "no shell runs them), or the probe's name.",
    )
    owner: Annotated[str | None, Field(max_length=64)] = Field(
        None,
        description="Whose job it is (default: the caller; only the operator names another). "
        "Its secrets are those granted to the owner.",
    )
    tz: Annotated[str | None, Field(max_length=64)] = Field(
        None, description="The schedule's time zone (default: the home's)."
    )
    timeout: Duration = "300s"
    retries: Annotated[int, Field(ge=0, le=100)] = 0
    backoff: Duration = "30s"
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catch_up: Literal["skip", "once", "all"] = "once"
    catch_up_window: Duration = "1d"
    stagger: Duration = "0s"
    active_hours: Annotated[str | None, Field(max_length=11)] = Field(
        None, description="Only fire between these local hours, like 08:00-22:00."
    )
    expect_artifact: bool = False
    max_silence: Duration = Field(
        None, description="Open a finding after this long with no ok run."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables for a command job. A value may ask for a secret "
        "as ${secret:NAME}: the child process alone sees its value, and only when the job's "
        "owner is granted it.",
    )


class JobSaved(Job):
    changed: bool


def _add_capability(p: JobIn) -> str:
    return "cadence.command" if p.kind == "command" else "cadence.write"


def _add_resources(p: JobIn, identity: str) -> dict:
    found: dict[str, list] = {"job_kind": [p.kind]}
    if p.kind == "command":
        found["command"] = [jobs_mod.command_argv(p.run, p.name)]
    return found


def _precheck(call: Call, p: JobIn) -> str:
    """The job's owner, once its secrets are found granted to it."""
    owner = _owner(call, p.owner)
    _check_secrets(call, owner, p.env)
    return owner


def _owner(call: Call, named: str | None) -> str:
    """A job is its caller's; only the operator declares one for someone else."""
    if call.role == "operator":
        return named or "operator"
    if named not in (None, call.identity):
        raise Refused(
            f"{call.identity!r} may not declare a job owned by {named!r}; only the operator "
            "names another owner"
        )
    return call.identity


def _check_secrets(call: Call, owner: str, env: dict[str, str]) -> None:
    """The secrets a job asks for must be granted to its owner, and asked for by name:
    a value written out would be stored (redacted), and run as the placeholder."""
    services = call.services
    redactor = services.secrets.redactor()
    for key, value in env.items():
        if redactor is not None and redactor.found(value):
            raise BadInput(
                f"{key} holds a secret's value: ask for it as ${{secret:NAME}} instead, so the "
                "value never enters the ledger"
            )
    operator = services.home.operator
    who = operator if owner == "operator" else owner
    for name in sorted(secrets.references(env)):
        reason = secrets.may_use(call.ledger, name, who, operator)
        if reason:
            services.record_denial(
                call.identity, call.operation, "secret.use", call.caller.surface, reason
            )
            raise Forbidden(
                f"{call.identity!r} may not declare a job using secret {name!r}: {reason}",
                "secret.use",
                call.operation,
            )


def _add_basis(call: Call, p: JobIn) -> dict:
    """The job as it is now (an approved change must find it as it was asked about)."""
    try:
        spec = jobs_mod.get_job(call.ledger, p.name)[0].model_dump()
    except NotFound:
        spec = None
    return {f"job {p.name}": spec}


@operation(
    "cadence.add",
    capability=_add_capability,
    capabilities=("cadence.write", "cadence.command"),
    writes=True,
    resources=_add_resources,
    basis=_add_basis,
    precheck=_precheck,
)
def cadence_add(call: Call, p: JobIn) -> JobSaved:
    """Declare a job or change it.

    A command job runs a program on keel's machine (never through a shell; its path is
    fixed when the job is declared), so it needs `cadence.command`."""
    data: dict[str, Any] = p.model_dump(exclude_none=True)
    data["owner"] = _precheck(call, p)
    kinds = set(call.services.local_runtime().kinds)
    # A job keeps its zone when changed without naming one; a new job takes the home's.
    zone = call.services.timezone()
    with contextlib.suppress(NotFound):
        zone = jobs_mod.get_job(call.ledger, p.name)[0].tz
    spec = jobs_mod.parse_job(data, kinds, default_tz=zone)
    changed = jobs_mod.save_job(call.ledger, spec, call.caller.surface)
    return JobSaved(**_job(call, spec.name).model_dump(), changed=changed)


class NameIn(Input):
    name: JobName


def _set_paused(call: Call, name: str, paused: bool) -> Job:
    ledger = call.ledger
    _spec, values = jobs_mod.get_job(ledger, name)
    if bool(values.get("keel.job/paused")) != paused:
        jobs_mod.set_paused(ledger, name, paused)
    return _job(call, name)


@operation("cadence.pause", capability="cadence.write", writes=True)
def cadence_pause(call: Call, p: NameIn) -> Job:
    """Stop a job firing: fires while paused are neither run nor recorded as missed."""
    return _set_paused(call, p.name, True)


@operation("cadence.resume", capability="cadence.write", writes=True)
def cadence_resume(call: Call, p: NameIn) -> Job:
    """Let a paused job fire again."""
    return _set_paused(call, p.name, False)


class RunIn(Input):
    name: JobName
    wait: Annotated[float, Field(ge=0, le=3600)] = Field(
        0, description="Seconds to wait for the run to end (0: return once it has started)."
    )


@operation("cadence.run", capability="cadence.run", writes=True)
def cadence_run(call: Call, p: RunIn) -> Run:
    """Fire a job now, by its overlap policy; with `wait`, return once it has ended.

    Runs in the daemon when one runs for this home, else in this process."""
    services = call.services
    if services.runtime is None:
        remote = daemon_client.ask(services.home, "cadence.run", p.model_dump(), call.identity)
        if remote is not None:
            return Run.model_validate(remote)
    scheduler = services.local_runtime().scheduler
    jobs_mod.get_job(call.ledger, p.name)
    key, future = scheduler.run_now(call.ledger, p.name)
    here = services.runtime is None  # this process ends with the call: see the run through
    if future is not None and (here or p.wait > 0):
        with contextlib.suppress(TimeoutError):  # still running: its outcome comes later
            future.result(timeout=None if here else p.wait)
    values = call.ledger.view().get(run_entity(key)) or {}
    return run_model(values, with_artifact=True)


class JobHistoryIn(Input):
    name: JobName
    limit: Limit = 50


@operation("cadence.history", capability="cadence.read", writes=False)
def cadence_history(call: Call, p: JobHistoryIn) -> list[Run]:
    """A job's runs, newest last."""
    ledger = call.ledger
    jobs_mod.get_job(ledger, p.name)
    return [run_model(r) for r in runs_of(ledger, job=p.name, limit=p.limit)]


class RunsIn(Input):
    job: Annotated[str | None, Field(max_length=80)] = None
    outcome: Annotated[str | None, Field(max_length=40)] = None
    limit: Limit = 100


@operation("cadence.runs", capability="cadence.read", writes=False)
def cadence_runs(call: Call, p: RunsIn) -> list[Run]:
    """Runs of every job (or one job, or one outcome), newest last."""
    ledger = call.ledger
    if p.job is not None:
        jobs_mod.get_job(ledger, p.job)
    return [run_model(r) for r in runs_of(ledger, job=p.job, outcome=p.outcome)[-p.limit :]]


class RunKeyIn(Input):
    key: Annotated[str, Field(min_length=1, max_length=300, description="job@instant...")]


@operation("cadence.run_info", capability="cadence.read", writes=False)
def cadence_run_info(call: Call, p: RunKeyIn) -> Run:
    """One run, with what it produced."""
    values = call.ledger.view().get(run_entity(p.key))
    if not values or "keel.run/key" not in values:
        raise NotFound(f"there is no run {p.key!r}")
    return run_model(values, with_artifact=True)


class Synced(Output):
    changed: list[str] = Field(description="The jobs whose specs changed.")
    state: str | None = Field(
        None, description="How this node's file stood with the ledger's canon before."
    )


@operation("cadence.sync", capability="cadence.write", writes=True)
def cadence_sync(call: Call, p: NoArguments) -> Synced:
    """Apply this node's canon/cadence.toml, on purpose: it becomes the ledger's canon
    (a fresh home gets the ledger's, or the default cadence)."""
    runtime = call.services.local_runtime()
    changed = runtime.prepare(on_purpose=True)
    return Synced(changed=changed, state=runtime.canon_state)


class CanonNode(Output):
    node: str
    file: str
    state: str = Field(
        description="in-sync; behind (another node's edit, not yet synced here); conflict "
        "(this node's file and the ledger's canon both changed: nothing was overwritten)."
    )
    agreed: str | None = Field(description="The digest of the text it last agreed with.")
    file_digest: str | None = Field(description="Its file's digest when last seen.")
    ledger_digest: str | None = Field(description="The digest of the ledger's canon.")


@operation("canon.status", capability="cadence.read", writes=False)
def canon_status(call: Call, p: NoArguments) -> list[CanonNode]:
    """Each node's canon cadence file against the ledger's: the one truth is the ledger's;
    a node's file is an input and a view."""
    return [CanonNode(**row) for row in canon_mod.status(call.ledger)]
