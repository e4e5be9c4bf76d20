"""A clock that moves only when a test says so: :class:`FakeClock`.

It satisfies :class:`gateway.core.clock.Clock`. It stands still until a test calls
:meth:`FakeClock.advance` (or :meth:`FakeClock.set`), which wakes every sleeper whose deadline
has come, in deadline order. Test support, like trio's ``MockClock`` in ``trio.testing``: the
product never imports it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """A clock that moves only when told to; sleepers wake in deadline order."""

    def __init__(self, start_ns: int = 1_800_000_000 * 10**9) -> None:
        self._now = start_ns
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_ns(self) -> int:
        return self._now

    def monotonic(self) -> float:
        """Moves with :meth:`advance`, like the wall clock here (a fake never jumps back)."""
        return self._now / 1e9

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (a test waits for this before advancing)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers,
                       (self._now + int(seconds * 1e9), next(self._order), future))
        await future

    def set(self, now_ns: int) -> None:
        """Jump to ``now_ns`` (forward only) and wake whoever is due."""
        if now_ns < self._now:
            raise ValueError("a FakeClock only moves forward")
        self._now = now_ns
        while self._sleepers and self._sleepers[0][0] <= now_ns:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def advance(self, seconds: float) -> None:
        self.set(self._now + int(seconds * 1e9))
