"""Runs: every fire of a job, recorded in the ledger with its outcome.

A run's entity is `run:<key>`, with key `<job>@<scheduled instant>` (plus `#n` for a
retry and `~catch-up` for a catch-up). Creating it is the claim: the transaction expects
the run not to exist yet, so with several daemons on one ledger each fire runs once.
A running run carries a lease (holder `node`, `lease-until`, `lease-gen`) that its holder
renews; a lapsed lease lets any live node reclaim the run (see `scheduler.py`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..ledger import Ledger
from ..ledger.instants import format_instant

SCHEMA = [
    {"attribute": "keel.run/key", "type": "string", "unique": "identity", "doc": "job@fire"},
    {"attribute": "keel.run/job", "type": "string", "doc": "the job's name"},
    {"attribute": "keel.run/scheduled", "type": "instant", "doc": "when it was due"},
    {"attribute": "keel.run/not-before", "type": "instant", "doc": "a pending run's time"},
    {"attribute": "keel.run/started", "type": "instant"},
    {"attribute": "keel.run/ended", "type": "instant"},
    {
        "attribute": "keel.run/outcome",
        "type": "string",
        "doc": "pending, running, ok, failed, timed-out, skipped-overlap, missed, interrupted",
    },
    {"attribute": "keel.run/attempt", "type": "int"},
    {
        "attribute": "keel.run/trigger",
        "type": "string",
        "doc": "schedule, catch-up, manual, retry or queue",
    },
    {"attribute": "keel.run/catch-up", "type": "string", "doc": "the policy that applied"},
    {"attribute": "keel.run/node", "type": "string", "doc": "host:pid of the daemon"},
    {
        "attribute": "keel.run/lease-until",
        "type": "instant",
        "doc": "a running run's lease: past this instant any live node may reclaim it",
    },
    {
        "attribute": "keel.run/lease-gen",
        "type": "int",
        "doc": "the lease's generation, moved by every claim, renewal and reclaim (fencing)",
    },
    {"attribute": "keel.run/artifact", "type": "bytes", "doc": "what the run produced"},
    {"attribute": "keel.run/error", "type": "string"},
]

TERMINAL = frozenset({"ok", "failed", "timed-out", "skipped-overlap", "missed", "interrupted"})


def run_key(job: str, scheduled: int, suffix: str = "") -> str:
    return f"{job}@{format_instant(scheduled)}{suffix}"


def run_entity(key: str) -> str:
    return f"run:{key}"


def facts(run: str, **values: object) -> list[dict]:
    e = run_entity(run)
    return [
        {"op": "add", "e": e, "a": f"keel.run/{a.replace('_', '-')}", "v": v}
        for a, v in values.items()
        if v is not None
    ]


def new_run(
    key: str,
    job: str,
    scheduled: int,
    outcome: str,
    trigger: str,
    attempt: int = 1,
    **extra: object,
) -> list[dict]:
    return facts(
        key,
        key=key,
        job=job,
        scheduled=scheduled,
        outcome=outcome,
        trigger=trigger,
        attempt=attempt,
        **extra,
    )


def claim_expectation(key: str) -> dict:
    return {"e": run_entity(key), "a": "keel.run/outcome", "v": None}


def run_json(values: dict, with_artifact: bool = False) -> dict:
    out = {k.removeprefix("keel.run/"): v for k, v in values.items() if k != "keel.run/artifact"}
    for key in ("scheduled", "not-before", "started", "ended", "lease-until"):
        if key in out:
            out[key] = format_instant(out[key])
    artifact = values.get("keel.run/artifact")
    out["artifact_bytes"] = len(artifact) if artifact else 0
    if with_artifact and artifact:
        out["artifact"] = artifact.decode("utf-8", "replace")
    return out


def runs_of(
    ledger: Ledger, job: str | None = None, outcome: str | None = None, limit: int | None = None
) -> list[dict]:
    """Runs (entity values), oldest scheduled first."""
    view = ledger.view()
    ids: Iterable[str]
    if outcome is not None:
        ids = view.find("keel.run/outcome", outcome)
    elif job is not None:
        ids = view.find("keel.run/job", job)
    else:
        ids = view.find("keel.run/key")
    out = []
    for e in ids:
        values = view.get(e)
        if values and (job is None or values.get("keel.run/job") == job):
            out.append(values)
    out.sort(
        key=lambda v: (
            v.get("keel.run/scheduled", 0),
            v.get("keel.run/attempt", 0),
            v.get("keel.run/key", ""),
        )
    )
    return out[-limit:] if limit else out
