"""Waiting after a failure: capped exponential backoff with jitter, and Retry-After.

Shared by every part that retries something remote (the MQTT and serial sources, the forwarder,
the alert targets), so each of them waits the same way: the first retry soon, later ones
further apart up to a cap, each drawn between half and all of its step so that gateways that
failed together do not retry together. A server's ``Retry-After`` is a floor, never ignored.
"""

from __future__ import annotations

import email.utils
import random
import time


class Backoff:
    """Capped exponential backoff with jitter (between half and all of the step)."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        step: float = min(self.maximum, self.minimum * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return step * self._rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)
