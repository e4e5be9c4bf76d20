"""What systemd's watchdog vouches for, and the ``systemd.notify`` task that tells it.

:meth:`Watchdog.why_not_alive` is the verdict: None while every long-lived task still runs, the
event loop answered the watchdog's last wake-up in time, and the committer is not stuck (lines
waiting and no commit, not even a failed one, finishing for ``commit_stall_s``). A disk that
refuses commits (full, read-only) counts failures: that gateway is alive, says so in its
status, and a restart would not mend the disk (it would lose what waits in RAM).

:meth:`Watchdog.run` (only under systemd): READY=1 once the API listens, a STATUS line at the
summary's rate, and WATCHDOG=1 every half ``WatchdogSec`` only while alive. A withheld
WATCHDOG=1 lets systemd restart the gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.app.sdnotify import Notifier
from gateway.core.clock import Clock
from gateway.core.status import WatchdogStatus
from gateway.pipeline import Committer

log = logging.getLogger(__name__)

# How often systemd's STATUS line (systemctl status) is refreshed: the summary's rate.
STATUS_S = 60.0


class Watchdog:
    def __init__(self, *, notifier: Notifier, tasks: Mapping[str, asyncio.Task[Any]],
                 committer: Committer, commit_stall_s: float, status_line: Callable[[], str],
                 clock: Clock) -> None:
        self._notifier = notifier
        self._tasks = tasks
        self._committer = committer
        self.commit_stall_s = commit_stall_s
        self._status_line = status_line
        self._clock = clock
        self._commit_mark = (0, 0)
        self._commit_moved = clock.monotonic()
        self._loop_late_s = 0.0
        self._loop_late_limit_s = float("inf")
        self._not_alive: str | None = None
        self.pings = 0
        self.skips = 0

    def alive(self) -> bool:
        return self.why_not_alive() is None

    def why_not_alive(self) -> str | None:
        """None while alive; else the first check that failed, in words for the journal."""
        for name, task in self._tasks.items():
            if task.done():
                if task.cancelled():
                    return f"task {name} was cancelled"
                exc = task.exception()
                return f"task {name} ended" + (f": {exc!r}" if exc is not None else "")
        if self._loop_late_s > self._loop_late_limit_s:
            return (f"event loop blocked: the watchdog woke {self._loop_late_s:.2f}s late "
                    f"(limit {self._loop_late_limit_s:.2f}s)")
        c = self._committer.statistics()
        mark = (c["commits"], c["failures"])
        now = self._clock.monotonic()
        # A refused commit waits out its backoff (a full card): slow on purpose, not stuck.
        if c["pending_lines"] == 0 or mark != self._commit_mark or c.get("backing_off"):
            self._commit_mark, self._commit_moved = mark, now
        elif now - self._commit_moved > self.commit_stall_s:
            return (f"spool.commit stuck: {c['pending_lines']} lines waiting and no commit "
                    f"finished for {now - self._commit_moved:.0f}s")
        return None

    def status(self, why_not: str | None) -> WatchdogStatus:
        return WatchdogStatus(alive=why_not is None, why_not=why_not, pings=self.pings,
                              skips=self.skips)

    async def run(self, listening: Awaitable[Any] | None) -> None:
        """READY=1 once the tasks run and the API listens (``listening``); then STATUS every
        STATUS_S and, when systemd watches (WatchdogSec=), WATCHDOG=1 every half interval
        while alive."""
        notifier = self._notifier
        if listening is not None:
            await listening
        notifier.ready(self._status_line())
        watchdog_s = notifier.watchdog_s
        log.info("systemd: ready, watchdog=%s", f"{watchdog_s:g}s" if watchdog_s else "off")
        loop = asyncio.get_running_loop()
        period = watchdog_s / 2 if watchdog_s else STATUS_S
        self._loop_late_limit_s = period
        next_status = loop.time() + STATUS_S
        while True:
            due = loop.time() + period
            await asyncio.sleep(period)
            now = loop.time()
            # A wake-up this late means the loop did nothing else for that long either.
            self._loop_late_s = now - due
            if watchdog_s:
                self._tick()
            if now >= next_status:
                next_status = now + STATUS_S
                notifier.status(self._status_line() if self._not_alive is None
                                else f"not alive: {self._not_alive}")

    def _tick(self) -> None:
        problem = self.why_not_alive()
        if problem is not None:
            self.skips += 1
            if self._not_alive is None:
                log.error("watchdog: not alive, WATCHDOG=1 withheld (systemd restarts the "
                          "gateway after WatchdogSec): %s", problem)
                self._notifier.status(f"not alive: {problem}")
            self._not_alive = problem
            return
        if self._not_alive is not None:
            log.warning("watchdog: alive again (was: %s)", self._not_alive)
            self._not_alive = None
        self._notifier.watchdog()
        self.pings += 1
