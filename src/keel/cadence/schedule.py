"""Schedules: 5-field cron (or a macro such as `@daily`) in a time zone, `every 30m`, or
`at 2026-12-01T09:00`.

Cron follows wall-clock time in its zone. A wall-clock time that does not exist (the hour
skipped when clocks go forward) fires once, at the same distance past the jump (PEP 495,
fold=0: 02:30 becomes 03:30); one that happens twice (the hour repeated when clocks go
back) fires once, at its first occurrence. A macro is its cron line (`@daily` is
`0 0 * * *`), so it follows the same wall clock in the job's zone. `every` follows real
time, aligned to the Unix epoch, so every node computes the same fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from ..ledger.errors import BadInput
from ..ledger.instants import from_us, parse_duration, parse_instant, to_us

US = 1_000_000

#: The cron macros keel runs, as the 5-field lines they stand for (`@reboot` is not one:
#: a job fires on a schedule, not when a machine starts).
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

#: Each cron field's name and what it accepts, in order, for error messages.
CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
)


@dataclass(frozen=True)
class Schedule:
    kind: str  # cron | every | at
    expr: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        # Validate eagerly so a bad schedule is refused before anything is stored.
        self.next_after(0)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def next_after(self, t_us: int) -> int | None:
        """The first fire strictly after `t_us` (µs UTC), or None when there is none."""
        if self.kind == "every":
            step = int(parse_duration(self.expr) * US)
            return (t_us // step + 1) * step
        if self.kind == "at":
            at = parse_instant(self.expr, self.zone)
            return at if at > t_us else None
        return self._next_cron(t_us)

    def _next_cron(self, t_us: int) -> int:
        zone = self.zone
        local = from_us(t_us).astimezone(zone).replace(tzinfo=None)
        # Step back one hour of wall time so a fire in a repeated hour is not missed.
        it = croniter(MACROS.get(self.expr, self.expr), local - timedelta(hours=1))
        while True:
            wall = it.get_next(datetime)
            fire = to_us(wall.replace(tzinfo=zone, fold=0).astimezone(UTC))
            if fire > t_us:
                return fire

    def to_text(self) -> str:
        return self.expr if self.kind == "cron" else f"{self.kind} {self.expr}"


def parse_schedule(text: str, tz: str = "UTC") -> Schedule:
    if not isinstance(text, str) or not text.strip():
        raise BadInput("a schedule is a cron line, 'every 30m' or 'at 2026-12-01T09:00'")
    try:
        ZoneInfo(tz)
    except Exception:
        raise BadInput(f"{tz!r} is not a known time zone") from None
    text = text.strip()
    head, _, rest = text.partition(" ")
    try:
        if head == "every":
            if parse_duration(rest) < 1:
                raise BadInput("'every' needs a duration of at least 1s")
            return Schedule("every", rest.strip(), tz)
        if head == "at":
            return Schedule("at", rest.strip(), tz)
        return Schedule("cron", _cron_expr(text), tz)
    except BadInput:
        raise
    except CroniterBadDateError:
        raise BadInput(f"{text!r} matches no date, so it would never fire") from None
    except (ValueError, KeyError) as exc:
        raise BadInput(f"{text!r} is not a valid schedule: {exc}") from None


def _cron_expr(text: str) -> str:
    """The cron line or macro in `text`, checked field by field so that an error names the
    field at fault rather than the whole line."""
    expr = " ".join(text.removeprefix("cron ").split())
    if expr.startswith("@"):
        if expr.lower() not in MACROS:
            raise BadInput(f"{text!r} is not a cron macro keel runs ({', '.join(MACROS)})")
        return expr.lower()
    fields = expr.split()
    if len(fields) == 1:
        raise BadInput(
            f"{text!r} is not a schedule: use a cron line ('0 9 * * 1-5'), a macro ('@daily'),"
            " 'every 30m' or 'at 2026-12-01T09:00'"
        )
    if len(fields) != len(CRON_FIELDS):
        raise BadInput(
            f"{text!r} has {len(fields)} fields, but a cron line has 5: minute hour"
            " day-of-month month day-of-week (e.g. '0 9 * * 1-5')"
        )
    for position, (field, (name, accepts)) in enumerate(zip(fields, CRON_FIELDS, strict=True)):
        # croniter judges each field alone, with every other field a wildcard.
        alone = ["*"] * len(CRON_FIELDS)
        alone[position] = field
        if not croniter.is_valid(" ".join(alone)):
            raise BadInput(f"{text!r}: the {name} field {field!r} is not valid ({accepts})")
    if not croniter.is_valid(expr):
        raise BadInput(f"{text!r} is not a valid cron line (e.g. '0 9 * * 1-5')")
    return expr
