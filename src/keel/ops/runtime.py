"""Runtime operations: the daemon's status, the event stream, health, and the service that
starts keel at login."""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field

from ..bus.events import END_OF_TX, EventSource, Position
from ..daemon.runtime import redact
from ..daemon.service import install_service, uninstall_service
from ..errors import BadInput
from ..health import checks, findings
from ..ledger.instants import format_instant
from . import daemon_client
from .cadence import all_jobs
from .call import Call
from .models import Finding, Input, Job, Limit, NoArguments, OpenOutput, Output
from .recall import IndexStatus
from .registry import operation
from .services import GOVERNANCE


class LedgerInfo(Output):
    location: str = Field(description="Where the ledger lives (a DSN's password hidden).")
    transactions: int


class Subscription(Output):
    name: str
    types: list[str]
    cursor: str
    lag: int
    delivered: int
    dead: int
    failing: str | None
    stopped: str | None = Field(None, description="Why its thread ended, if it did.")


class Health(Output):
    count: int
    open: list[Finding]


class Status(OpenOutput):
    running: bool = Field(description="Whether a daemon runs for this home.")
    node: str | None
    uptime: float
    now: str
    timezone: str = Field(description="The operator's time zone (instants here are UTC).")
    read_only: str | None = Field(description="Why keel refuses writes, or null.")
    ledger: LedgerInfo
    jobs: list[Job]
    subscriptions: list[Subscription]
    recall: IndexStatus | None = None
    health: Health


def _finding(f: findings.Finding) -> Finding:
    return Finding.model_validate(f.to_json())


@operation("status.show", capability="status.read", writes=False)
def status(call: Call, p: NoArguments) -> Status:
    """Whether keel runs, each job's next fire and last outcome, the bus, the recall index,
    open findings — and whether keel is read-only."""
    services = call.services
    runtime = services.runtime
    if runtime is None:
        remote = daemon_client.ask(services.home, "status.show", identity=call.identity)
        if remote is not None:
            return Status.model_validate(remote)
    ledger = call.ledger
    size = ledger.head().id
    open_now = findings.open_findings(ledger)
    started = runtime.started_at if runtime is not None else None
    recall = runtime.recall_status() if runtime is not None else None
    return Status(
        running=started is not None,
        node=runtime.node if runtime is not None else None,
        uptime=round(time.time() - started, 1) if started else 0.0,
        now=format_instant(services.clock.now()) or "",
        timezone=services.home.timezone().key,
        read_only=services.read_only(),
        ledger=LedgerInfo(location=redact(str(ledger.store.location)), transactions=size),
        jobs=all_jobs(call),
        subscriptions=[Subscription.model_validate(s) for s in runtime.bus.status(size)]
        if runtime is not None
        else [],
        recall=IndexStatus.model_validate(recall) if recall else None,
        health=Health(count=len(open_now), open=[_finding(f) for f in open_now]),
    )


# -- events -----------------------------------------------------------------------------------
class EventsIn(Input):
    after: Annotated[str | None, Field(max_length=40)] = Field(
        None, description="A position tx.n; from the start when left out."
    )
    types: list[Annotated[str, Field(max_length=80)]] = Field(
        default_factory=list,
        description="Only these event types (tx, or an attribute namespace such as mem).",
    )
    limit: Limit = 500


class Event(Output):
    id: str = Field(description="Its position, tx.n.")
    type: str
    tx: int
    time: str | None
    author: str
    branch: int
    entity: str | None = None
    attributes: list[str] | None = None
    reason: str | None = None


class EventPage(Output):
    events: list[Event]
    next: str = Field(description="Pass as `after` to read on.")
    head: int = Field(description="The newest transaction when this page was read.")


def position(text: str | None) -> Position:
    """A position `tx.n`, or `tx` for after all of that transaction; bounded, so a stranger's
    huge number is a clear 400."""
    if text is None or not text.strip():
        return Position(0, 0)
    tx, dot, n = text.strip().partition(".")
    if not tx.isdigit() or (dot and not n.isdigit()) or len(tx) > 18 or len(n) > 10:
        raise BadInput(f"{text!r} is not an event position like 12.0")
    return Position(int(tx), min(int(n), END_OF_TX) if dot else END_OF_TX)


def cursor_text(cursor: Position) -> str:
    return f"{cursor.tx}.{cursor.n}"


@operation("events.list", capability="events.read", writes=False)
def events(call: Call, p: EventsIn) -> EventPage:
    """Events after a position, oldest first, from the ledger itself (nothing is kept
    only in memory): one `tx` event per transaction, then one per namespace and entity."""
    source = EventSource(call.ledger)
    cursor = position(p.after)
    wanted = set(p.types)
    found: list[Any] = []
    head = source.head()
    while len(found) < p.limit:
        batch, reached = source.read(cursor)
        for event in batch:
            cursor = event.position
            if not wanted or event.type in wanted:
                found.append(event)
                if len(found) >= p.limit:
                    break
        else:
            cursor = max(cursor, reached)
        if not batch and reached.tx >= head:
            break
    return EventPage(
        events=[Event.model_validate(e.to_json()) for e in found],
        next=cursor_text(cursor),
        head=head,
    )


# -- health -----------------------------------------------------------------------------------
class Doctor(Output):
    now: str
    checks: list[str]
    count: int = Field(description="How many findings are open.")
    open: list[Finding]
    opened: list[str]
    resolved: list[str]
    errors: dict[str, str] = Field(description="Checks that crashed, and how.")
    tx: int | None


@operation("health.doctor", capability="health.run", writes=True)
def doctor(call: Call, p: NoArguments) -> Doctor:
    """Run every health check and record what it found: findings open while they hold and
    resolve when they stop."""
    services = call.services
    # Lag is sampled in the daemon's memory; elsewhere there is nothing to judge it by.
    watch = services.lag_watch if services.runtime is not None else None
    extra = {GOVERNANCE: services.governance_findings}
    report = checks.examine(call.ledger, services.clock.now(), watch, extra)
    data = report.to_json()
    return Doctor.model_validate({**data, "open": data["open"]})


class FindingsIn(Input):
    all: bool = Field(False, description="Resolved findings too.")


@operation("health.findings", capability="health.read", writes=False)
def health_findings(call: Call, p: FindingsIn) -> list[Finding]:
    """Findings: the open ones, or all ever recorded with their state."""
    found = (findings.all_findings if p.all else findings.open_findings)(call.ledger)
    return [_finding(f) for f in found]


# -- the service -----------------------------------------------------------------------------
class Installed(Output):
    path: str | None = Field(description="The unit or agent file, or null if there was none.")
    hint: str


@operation("service.install", capability="service.manage", writes=False)
def service_install(call: Call, p: NoArguments) -> Installed:
    """Write a systemd user unit (Linux) or launchd agent (macOS) that runs `keel up` at
    login, with this shell's PATH."""
    path, hint = install_service(call.services.home.path)
    return Installed(path=str(path), hint=hint)


@operation("service.uninstall", capability="service.manage", writes=False)
def service_uninstall(call: Call, p: NoArguments) -> Installed:
    """Remove the unit or agent `service.install` wrote."""
    path = uninstall_service()
    return Installed(
        path=str(path) if path else None,
        hint="removed" if path else "no keel service was installed",
    )
