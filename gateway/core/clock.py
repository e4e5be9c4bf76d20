"""Wall-clock time for the parts that reason about it: liveness, outages, uptime, alerts.

Everything that decides "has this device been silent for three intervals?" or "has it been
down for five minutes?" takes a :class:`Clock` instead of calling ``time`` and
``asyncio.sleep`` itself, so that tests move time forward with
:class:`gateway.testing.FakeClock` instead of waiting for it.

:class:`SystemClock` is the real one: ``time.time_ns()`` for timestamps, ``time.monotonic()``
for intervals and ``asyncio.sleep`` for waiting (the event loop's monotonic clock, so an NTP
step does not stretch a wait). It is the one seam for time in the gateway: a part that needs the
time takes a ``Clock`` and calls nothing in ``time`` itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for intervals, timeouts, rate limits)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` (at once when ``seconds <= 0``)."""
        ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()
