"""Injectable clocks, so tests can travel through days in seconds.

`SystemClock` is real time. `ManualClock` moves only when told (in-process tests).
`ScaledClock` starts at a chosen instant and runs N times faster: a real daemon process
under test takes it from `KEEL_CLOCK="2026-03-07T00:00:00Z@3600"` (one hour per second).
"""

from __future__ import annotations

import os
import threading
import time

from ..ledger.errors import BadInput
from ..ledger.instants import now_us, parse_instant

US = 1_000_000


class SystemClock:
    def now(self) -> int:
        return now_us()

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(max(0.0, seconds))


class ScaledClock:
    """Time that starts at `start_us` and runs `speed` times fast. It starts when this
    process does — or, given `origin` (a Unix time in real seconds), at that real instant,
    so that several processes (the nodes of one ledger under test) read the same time."""

    def __init__(self, start_us: int, speed: float, origin: float | None = None):
        self.start_us, self.speed, self.origin = start_us, speed, origin
        self._t0 = time.monotonic()

    def now(self) -> int:
        if self.origin is not None:
            elapsed = time.time() - self.origin
        else:
            elapsed = time.monotonic() - self._t0
        return self.start_us + int(elapsed * self.speed * US)

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(max(0.0, seconds) / self.speed)


class ManualClock:
    """Time stands still until `advance` or `set`; sleepers wake when it moves."""

    def __init__(self, start_us: int):
        self._now = start_us
        self._moved = threading.Condition()

    def now(self) -> int:
        return self._now

    def set(self, us: int) -> None:
        with self._moved:
            self._now = us
            self._moved.notify_all()

    def advance(self, seconds: float) -> None:
        self.set(self._now + int(seconds * US))

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        deadline = self._now + int(seconds * US)
        with self._moved:
            while self._now < deadline and not stop.is_set():
                self._moved.wait(0.05)
                if stop.is_set():
                    return


def clock_from_env() -> SystemClock | ScaledClock:
    spec = os.environ.get("KEEL_CLOCK", "").strip()
    if not spec:
        return SystemClock()
    start, _, rest = spec.partition("@")
    speed, _, origin = rest.partition("@")
    try:
        return ScaledClock(
            parse_instant(start), float(speed or 1), float(origin) if origin else None
        )
    except ValueError:
        raise BadInput(
            f"KEEL_CLOCK {spec!r} must look like 2026-03-07T00:00:00Z@3600, or with the real "
            "Unix time it starts at: 2026-03-07T00:00:00Z@3600@1780000000"
        ) from None
