"""The shapes operations take and give: one JSON shape per thing (a transaction, a job, a
run, a finding, a memory item) on every surface.

Inputs refuse unknown fields; instants are ISO 8601 text in and out (UTC, with a Z);
integers that name transactions are bounded to 64 bits, so a stranger's huge number is a
clear 400, not a crash deep in a store.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_INT = 2**63 - 1


def _absolute(text: str) -> str:
    """A path on keel's machine, absolute (after ~): a relative one would be relative to
    whichever process serves the call, which a caller over HTTP cannot know."""
    from pathlib import Path

    if not Path(text).expanduser().is_absolute():
        raise ValueError("give an absolute path (a relative one means nothing to the daemon)")
    return text


def _bounded_digits(text: str) -> str:
    digits = text.strip()
    if digits.isdigit() and int(digits) > MAX_INT:
        raise ValueError("a transaction number must fit in 64 bits")
    return text


class Input(BaseModel):
    """An operation's arguments: unknown ones are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class NoArguments(Input):
    """An operation that takes no arguments."""


class Output(BaseModel):
    """What an operation returns."""

    model_config = ConfigDict(extra="forbid")


class OpenOutput(BaseModel):
    """An output whose named fields are fixed but which may carry more (attributes of a
    memory item, sections a subsystem adds to status)."""

    model_config = ConfigDict(extra="allow")


TxNumber = Annotated[int, Field(ge=0, le=MAX_INT)]
AsOf = Annotated[
    TxNumber | Annotated[str, Field(max_length=200), AfterValidator(_bounded_digits)] | None,
    Field(description="What keel knew then: a transaction number, hash or ISO 8601 instant."),
]
ValidAt = Annotated[
    str | None,
    Field(max_length=64, description="What was true then: an ISO 8601 instant."),
]
Instant = Annotated[str | None, Field(max_length=64, description="An ISO 8601 instant.")]
Branch = Annotated[str, Field(max_length=64, description="A branch name.")]
Limit = Annotated[int, Field(ge=1, le=10_000)]
LocalPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, description="An absolute path on keel's machine."),
    AfterValidator(_absolute),
]
Name = Annotated[str, Field(min_length=1, max_length=200)]
EntityRef = Annotated[
    str | list[Any],
    Field(
        description="An entity id, or a lookup ref [unique attribute, value] (as JSON text "
        'like ["person/handle", "alice"] where only text fits)'
    ),
]


class TxResult(Output):
    """A committed transaction."""

    tx: int
    hash: str
    time: str
    branch: str
    tempids: dict[str, str] = {}


class Written(Output):
    """A write that may have found nothing to change (then `tx` is null)."""

    tx: int | None
    id: str | None = None


class SlugWritten(Output):
    """A write to an item known by a slug (an entity, an article)."""

    id: str
    slug: str
    tx: int | None = Field(description="The transaction, or null when it already said that.")


class Run(Output):
    """One fire of a job, with its outcome."""

    key: str
    job: str
    scheduled: str | None = None
    not_before: str | None = None
    started: str | None = None
    ended: str | None = None
    outcome: str
    attempt: int = 1
    trigger: str | None = None
    catch_up: str | None = None
    node: str | None = None
    lease_until: str | None = Field(
        None, description="While running: when the holding node's lease lapses unless renewed."
    )
    lease_gen: int | None = None
    error: str | None = None
    artifact_bytes: int = 0
    artifact: str | None = Field(None, description="What the run produced (one run only).")


class Job(Output):
    """A recurring job: its spec, its state and its last run."""

    name: str
    spec: dict[str, Any]
    paused: bool
    source: str | None
    next: str | None = Field(description="The next fire (UTC), or null if none or paused.")
    last_fire: str | None
    last: Run | None
    runs: list[Run] | None = Field(None, description="Recent runs, newest last (one job only).")


class Finding(Output):
    """Something a health check found: open until the check no longer finds it."""

    key: str
    check: str
    subject: str
    message: str
    severity: str
    state: str
    opened: str | None
    resolved: str | None = None


class ForgottenInfo(Output):
    by: str | None = Field(description="Who forgot it.")
    tx: int | None = Field(description="The transaction that records the forgetting.")
    time: str | None
    why: str | None


class ForgottenValue(Output):
    """What reads show in place of a value that was forgotten (erased, the chain intact)."""

    forgotten: ForgottenInfo


#: A value as reads show it: itself, or the marker of its forgetting.
Shown = str | ForgottenValue


class MemoryItem(OpenOutput):
    """A memory item: short keys for its `mem/*` values, `ns/attr` for the rest, facts
    apart. A forgotten value shows as its marker, `{"forgotten": {...}}`."""

    id: str
    surface: Shown | None = None
    text: Shown | None = None
    title: Shown | None = None
    source: Shown | None = None
    tags: list[Shown] | None = None
    at: Shown | None = None
    facts: dict[str, Any] | None = None
