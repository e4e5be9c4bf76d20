"""Logging that a device cannot flood: one line per kind of problem per interval.

A sensor that sends garbage ten times a second must not write ten log lines a second to the SD
card; the technician still needs to see that it happens and how often. Each kind (a key such as
``(source, "decode")``) is logged at most once per ``interval_s``; the next line says how many
were skipped meanwhile.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from gateway.core.clock import SYSTEM_CLOCK, Clock


class RateLimitedLog:
    """Log a kind of problem at most once per ``interval_s``, saying how many were skipped."""

    def __init__(self, logger: logging.Logger, interval_s: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: Counter[tuple[str, str]] = Counter()

    def warning(self, key: tuple[str, str], msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: tuple[str, str], msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def log(self, level: int, key: tuple[str, str], msg: str, *args: Any) -> bool:
        now = self._clock.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] += 1
            return False
        skipped = self._suppressed.pop(key, 0)
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = now
        if skipped:
            msg += " (%d more like this not logged)"
            args = (*args, skipped)
        self._logger.log(level, msg, *args)
        return True
