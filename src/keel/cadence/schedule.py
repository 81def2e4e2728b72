"""Schedules: 5-field cron in a time zone, `every 30m`, or `at 2026-12-01T09:00`.

Cron follows wall-clock time in its zone. A wall-clock time that does not exist (the hour
skipped when clocks go forward) fires once, at the same distance past the jump (PEP 495,
fold=0: 02:30 becomes 03:30); one that happens twice (the hour repeated when clocks go
back) fires once, at its first occurrence. `every` follows real time, aligned to the
Unix epoch, so every node computes the same fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from ..ledger.errors import BadInput
from ..ledger.instants import from_us, parse_duration, parse_instant, to_us

US = 1_000_000


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
        it = croniter(self.expr, local - timedelta(hours=1))
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
        expr = text.removeprefix("cron ").strip()
        if len(expr.split()) != 5 or not croniter.is_valid(expr):
            raise BadInput(f"{text!r} is not a 5-field cron line (e.g. '0 9 * * 1-5')")
        return Schedule("cron", expr, tz)
    except BadInput:
        raise
    except (ValueError, KeyError) as exc:
        raise BadInput(f"{text!r} is not a valid schedule: {exc}") from None
