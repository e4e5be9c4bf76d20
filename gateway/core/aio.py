"""Waiting with a timeout without losing a cancellation.

On Python 3.11, ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop turn
as the awaited thing completes (it returns the result instead; fixed in 3.12). A gateway task
that swallows its cancellation never stops: SIGTERM hangs until the shutdown grace runs out, and
a test waiting for the task hangs. ``asyncio.timeout`` does not have the bug, so every timed wait
in the gateway goes through here.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from gateway.core.clock import Clock

T = TypeVar("T")


def _delay(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else max(0.0, seconds)


async def wait_event(event: asyncio.Event, seconds: float | None) -> bool:
    """True once ``event`` is set, False when ``seconds`` pass first."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(_delay(seconds)):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def wait_future(future: asyncio.Future[T], seconds: float) -> T:
    """The future's result; TimeoutError (and the future cancelled) when it takes too long."""
    async with asyncio.timeout(_delay(seconds)):
        return await future


async def clock_sleep_or_event(clock: Clock, seconds: float, event: asyncio.Event) -> None:
    """Until ``event`` is set or ``seconds`` pass on ``clock`` (a FakeClock in tests)."""
    if event.is_set():
        return
    sleeper = asyncio.create_task(clock.sleep(seconds))
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()
        waiter.cancel()
        await asyncio.wait((sleeper, waiter))
