"""Job specs: what runs, when, and what it must produce. Stored in the ledger.

A job is declared in `canon/cadence.toml` (git-friendly; synced into the ledger when the
daemon starts or `keel cadence sync` runs), or through the CLI and API. The ledger holds the
spec as JSON on entity `job:<name>`, so its history and author are kept like any fact.

A job without a `tz` runs in the zone its caller gives as the default (the home's zone),
and the spec stores that zone: a job's fires do not move when the home's zone changes
later. An explicit `tz` always wins.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..govern import secrets
from ..ledger import Ledger
from ..ledger.errors import BadInput, NotFound, SchemaError
from ..ledger.instants import from_us
from .schedule import Schedule, parse_duration, parse_schedule

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
_HOURS = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

SCHEMA = [
    {"attribute": "keel.job/name", "type": "string", "unique": "identity", "doc": "a job"},
    {"attribute": "keel.job/spec", "type": "json", "doc": "the job's spec"},
    {"attribute": "keel.job/paused", "type": "bool", "doc": "paused jobs do not fire"},
    {"attribute": "keel.job/source", "type": "string", "doc": "canon or cli"},
    {
        "attribute": "keel.job/last-fire",
        "type": "instant",
        "doc": "the last scheduled fire the scheduler has dealt with",
    },
]


class JobSpec(BaseModel):
    """One recurring job. Durations accept 90s / 30m / 2h / 1d or seconds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    schedule: str
    kind: str = "command"
    run: str = ""
    owner: str = "operator"
    # No default: parse_job fills in the caller's zone, so a stored spec always names one.
    tz: str
    timeout: float = 300.0
    retries: int = Field(0, ge=0, le=100)
    backoff: float = 30.0
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catch_up: Literal["skip", "once", "all"] = "once"
    catch_up_window: float = 86400.0
    stagger: float = 0.0
    active_hours: str | None = None
    expect_artifact: bool = False
    max_silence: float | None = None
    #: Environment variables for a command; a value may ask for a secret, `${secret:NAME}`,
    #: which only the child process ever sees (see keel.govern.secrets).
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("use letters, digits and _ . : - (at most 80)")
        return v

    @field_validator("tz")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"{v!r} is not a known time zone") from None
        return v

    @field_validator(
        "timeout", "backoff", "catch_up_window", "stagger", "max_silence", mode="before"
    )
    @classmethod
    def _duration(cls, v: object) -> object:
        if v is None:
            return None
        seconds = parse_duration(v)  # type: ignore[arg-type]
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        return seconds

    @field_validator("timeout")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("the timeout must be more than zero")
        return v

    @field_validator("active_hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None:
            m = _HOURS.match(v)
            if not m or int(m[1]) > 23 or int(m[3]) > 24 or int(m[2]) > 59 or int(m[4]) > 59:
                raise ValueError("active hours look like 08:00-22:00")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 64:
            raise ValueError("a job may set at most 64 environment variables")
        for key, value in v.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not an environment variable's name")
            if len(value) > 4096 or "\x00" in value:
                raise ValueError(f"{key}: a value is at most 4096 characters, with no NUL")
            if secrets.MARKER.search(value):
                raise ValueError(
                    f"{key} holds a redacted placeholder, not a value: ask for the secret "
                    "itself with ${secret:NAME}"
                )
            for name in secrets.references({key: value}):
                if not secrets.NAME.match(name):
                    raise ValueError(f"{key}: {name!r} is not a secret's name")
        return v

    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule, self.tz)

    def in_active_hours(self, fire_us: int) -> bool:
        if not self.active_hours:
            return True
        local = from_us(fire_us).astimezone(self.parsed_schedule().zone)
        m = _HOURS.match(self.active_hours)
        assert m
        start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
        minute = local.hour * 60 + local.minute
        return start <= minute < end if start <= end else minute >= start or minute < end


def parse_job(data: object, kinds: set[str] | None = None, default_tz: str = "UTC") -> JobSpec:
    """A checked JobSpec, or BadInput naming the first problem.

    A job that gives no `tz` (or `tz = null`) gets `default_tz`, which callers set to the
    home's zone; the spec then names that zone for good.
    """
    if isinstance(data, dict) and data.get("tz") is None:
        data = {**data, "tz": default_tz}
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "job"
        # A validator's own sentence, without pydantic's "Value error, " in front of it.
        reason = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        raise BadInput(f"job {where}: {reason}") from None
    spec.parsed_schedule()
    if kinds is not None and spec.kind not in kinds:
        raise BadInput(f"job {spec.name}: unknown kind {spec.kind!r} ({', '.join(sorted(kinds))})")
    if spec.kind == "command":
        # What runs is fixed when the job is declared: the program by absolute path.
        spec = spec.model_copy(update={"run": shlex.join(command_argv(spec.run, spec.name))})
    return spec


def command_argv(run: str, job: str = "") -> list[str]:
    """A command line as the argv it runs — split like a shell splits words, but never
    given to a shell: `|`, `&&`, `>` and `$(...)` are plain arguments. The program is
    resolved to an absolute path on PATH. A job that needs a shell names it:
    `/bin/sh -c '...'` (and a pin must grant that shell)."""
    what = f"job {job}: " if job else ""
    try:
        argv = shlex.split(run)
    except ValueError as exc:
        raise BadInput(f"{what}the command cannot be split into words ({exc})") from None
    if not argv:
        raise BadInput(f"{what}the command is empty")
    program = argv[0]
    if not os.path.isabs(program):
        found = shutil.which(program)
        if found is None:
            raise BadInput(f"{what}there is no program {program!r} on PATH (give its full path)")
        program = os.path.abspath(found)
    return [program, *argv[1:]]


def job_entity(name: str) -> str:
    return f"job:{name}"


def ensure_schema(ledger: Ledger) -> None:
    ledger.declare(SCHEMA, system=True)


def save_job(ledger: Ledger, spec: JobSpec, source: str = "cli") -> bool:
    """Record a job's spec; returns whether anything changed."""
    e = job_entity(spec.name)
    current = ledger.view().get(e) or {}
    facts = {
        "keel.job/name": spec.name,
        "keel.job/spec": spec.model_dump(),
        "keel.job/source": source,
    }
    ops = [{"op": "add", "e": e, "a": a, "v": v} for a, v in facts.items() if current.get(a) != v]
    if "keel.job/paused" not in current:
        ops.append({"op": "add", "e": e, "a": "keel.job/paused", "v": False})
    if not ops:
        return False
    ledger.transact(ops, reason=f"job {spec.name}")
    return True


def load_jobs(ledger: Ledger) -> dict[str, tuple[JobSpec, dict]]:
    """Every job: its spec and its entity's values (paused, last-fire, ...)."""
    view = ledger.view()
    out = {}
    for e in view.find("keel.job/name"):
        values = view.get(e) or {}
        spec = JobSpec.model_validate(values["keel.job/spec"])
        out[spec.name] = (spec, values)
    return out


def get_job(ledger: Ledger, name: str) -> tuple[JobSpec, dict]:
    values = ledger.view().get(job_entity(name))
    if not values or "keel.job/spec" not in values:
        raise NotFound(f"there is no job named {name!r}")
    return JobSpec.model_validate(values["keel.job/spec"]), values


def set_paused(ledger: Ledger, name: str, paused: bool) -> None:
    get_job(ledger, name)
    ledger.transact(
        [{"op": "add", "e": job_entity(name), "a": "keel.job/paused", "v": paused}],
        reason=f"{'pause' if paused else 'resume'} job {name}",
    )


def read_canon(
    path: Path,
    kinds: set[str] | None = None,
    default_tz: str = "UTC",
    existing_zones: dict[str, str] | None = None,
) -> list[JobSpec]:
    """Jobs declared in a cadence TOML file (`[[job]]` tables).

    A job without `tz` gets the zone `existing_zones` gives for its name, else `default_tz`.
    """
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from None
    jobs = data.get("job", [])
    if not isinstance(jobs, list):
        raise BadInput(f"{path}: jobs are [[job]] tables")
    zones = existing_zones or {}
    specs = [parse_job(j, kinds, _zone_for(j, zones, default_tz)) for j in jobs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise BadInput(f"{path} declares a job name twice")
    return specs


def sync_canon(
    ledger: Ledger, path: Path, kinds: set[str] | None = None, default_tz: str = "UTC"
) -> list[str]:
    """Bring canon-declared jobs into the ledger; returns the names that changed.

    A canon job without `tz` keeps the zone the ledger already has for it, so a change of
    the home's zone (`default_tz`) does not move the fires of jobs that exist; only a new
    job takes `default_tz`. To move a job, write its `tz`.
    """
    # Read before anything is written: a bad file changes nothing, not even the schema.
    specs = read_canon(path, kinds, default_tz, _stored_zones(ledger))
    ensure_schema(ledger)
    return [s.name for s in specs if save_job(ledger, s, "canon")]


def _zone_for(table: object, existing_zones: dict[str, str], default_tz: str) -> str:
    name = table.get("name") if isinstance(table, dict) else None
    return existing_zones.get(name, default_tz) if isinstance(name, str) else default_tz


def _stored_zones(ledger: Ledger) -> dict[str, str]:
    """Each stored job's zone; none on a ledger that has never held a job."""
    try:
        ledger.attribute("keel.job/name")
    except SchemaError:
        return {}
    return {name: spec.tz for name, (spec, _) in load_jobs(ledger).items()}
