"""Instants are integers: microseconds since the Unix epoch, UTC.

Integers keep the canonical encoding exact and make comparisons in SQL cheap; ISO 8601
is only the human form at the edges.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta, tzinfo

from .errors import BadInput

#: The open end of a valid-time interval ("forever") and its opposite ("since always").
FOREVER = 2**63 - 1
SINCE_ALWAYS = -(2**63)

_US = 1_000_000
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * _US + delta.microseconds


#: The instants a calendar can show: years 1 to 9999, UTC. Anything else is refused when
#: written, so reading never meets a time it cannot format.
EARLIEST = -62135596800 * _US
LATEST = 253402300799 * _US + 999_999


def check_range(us: int, what: str = "an instant") -> int:
    """`us` if a calendar can show it (or it is one of valid time's open ends)."""
    if us in (FOREVER, SINCE_ALWAYS) or EARLIEST <= us <= LATEST:
        return us
    raise BadInput(f"{what} must fall in the years 1 to 9999 (UTC)")


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def parse_instant(text: str, default_tz: tzinfo = UTC) -> int:
    """Parse ISO 8601 (a date, or a date-time with or without offset) to microseconds.

    A value without an offset is read in ``default_tz`` (the operator's zone).
    """
    if not isinstance(text, str):
        raise BadInput(f"expected an ISO 8601 instant, got {text!r}")
    s = text.strip()
    try:
        if _DATE_ONLY.match(s):
            d = date.fromisoformat(s)
            dt = datetime(d.year, d.month, d.day)
        else:
            dt = datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError:
        raise BadInput(f"{text!r} is not an ISO 8601 instant (e.g. 2026-05-01T09:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=default_tz)
    try:
        return check_range(to_us(dt), f"{text!r}")
    except OverflowError:
        raise BadInput(f"{text!r} must fall in the years 1 to 9999 (UTC)") from None


def format_instant(us: int) -> str | None:
    """UTC ISO 8601 with a trailing Z; None for the open ends of valid time. An instant no
    calendar can show (a raw transaction may store any 64-bit value) is shown as its
    microseconds, never an error."""
    if us in (FOREVER, SINCE_ALWAYS):
        return None
    if not EARLIEST <= us <= LATEST:
        return f"{us}us"
    dt = from_us(us)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    return text + "Z"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 100 * 365 * 86400.0


def parse_duration(text: str | int | float) -> float:
    """Seconds from `90s`, `30m`, `2h`, `1d` or a bare number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if not -MAX_DURATION <= text <= MAX_DURATION:
            raise BadInput(f"{text!r} seconds is longer than the 100 years a duration may span")
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise BadInput(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise BadInput(f"{text!r} is longer than the 100 years a duration may span")
    return seconds
