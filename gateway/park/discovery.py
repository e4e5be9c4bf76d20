"""Which unlisted ids become discovered devices: how many, how fast, and for how long.

Discovery is on by default so that a technician can point a new sensor at the gateway and see
it at once. On a park's public network it is also the one thing an outsider can make the
gateway remember at will, so it is bounded (docs/security.md, "Floods"):

- at most ``ingest.max_discovered`` discovered devices. At the cap a newcomer takes the place
  of the discovered device heard least recently, which is forgotten (``why="evicted"``): after
  a flood of made-up ids the table is full of ids heard once, and the next real device pushes
  one of them out instead of being refused until someone intervenes;
- at most ``ingest.discovery_per_minute`` new ids a minute: a token bucket holding that many,
  refilled evenly over the minute. An id beyond it is refused (``reason="rate"``); the same id
  is considered again with its next message, so a real device gets in a second or two after a
  flood stops;
- a discovered device not heard for ``ingest.forget_discovered_after_s`` is forgotten
  (``why="silent"``), and an operator may forget one (``why="operator"``).

Devices in the device list, and the ones a bus or serial source names (``exempt``), never pass
through here: they are never refused, evicted or forgotten.

Forgetting tells the ``on_forget`` listeners: liveness drops the device from the registry,
the pipeline its cached enrichment, Wi-Fi usage and the live feed their state of it. Times are
kept on the monotonic clock: a wall clock that jumps when it first synchronises forgets no one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.core.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

NS = 10**9
RATE = "rate"
EVICTED, SILENT, OPERATOR, LIMIT = "evicted", "silent", "operator", "limit"
# Silence is looked for at most this often (the table is small: one pass over it).
SWEEP_EVERY_S = 60.0

ForgetListener = Callable[[str, str], None]


class Discovery:
    """The discovered devices' admission table: ``admit`` new ids, ``heard`` known ones."""

    def __init__(self, *, limit: int, per_minute: float, forget_after_s: float,
                 clock: Clock = SYSTEM_CLOCK, log_interval_s: float = 60.0) -> None:
        self.limit = limit
        self.per_minute = per_minute
        self.forget_after_s = forget_after_s
        self._clock = clock
        self._capacity = float(per_minute)
        self._tokens = float(per_minute)
        self._filled_at = clock.monotonic()
        self._swept_at = self._filled_at
        # Discovered id -> when last heard (monotonic seconds); dict order is admission order.
        self._heard: dict[str, float] = {}
        self._exempt: set[str] = set()
        self._log = RateLimitedLog(log, log_interval_s, clock=clock)
        self.on_forget: list[ForgetListener] = []
        self.admitted = 0
        self.refused: Counter[str] = Counter()
        self.forgotten: Counter[str] = Counter()

    def __contains__(self, device: object) -> bool:
        return device in self._heard

    def __len__(self) -> int:
        return len(self._heard)

    def ids(self) -> list[str]:
        return sorted(self._heard)

    def exempt(self, device: str) -> None:
        """``device`` is named by the gateway's own config (a polled slave): never counted."""
        self._exempt.add(device)
        self._heard.pop(device, None)

    def is_exempt(self, device: str) -> bool:
        return device in self._exempt

    # -- the ingest path -----------------------------------------------------------------

    def admit(self, device: str) -> str | None:
        """None when ``device`` is (now) a discovered device; otherwise why it is not."""
        if device in self._heard or device in self._exempt:
            return None
        now = self._clock.monotonic()
        if not self._take(now):
            self.refused[RATE] += 1  # the caller logs it, once a minute, with the count
            return RATE
        while len(self._heard) >= self.limit:
            quietest = min(self._heard, key=self._heard.__getitem__)
            self.forget(quietest, EVICTED)
        self._heard[device] = now
        self.admitted += 1
        self._log.info(("discovery", "new"), "device discovered device=%s (%d discovered, "
                       "cap ingest.max_discovered=%d)", device, len(self._heard), self.limit)
        return None

    def heard(self, device: str) -> None:
        """A reading or a presence of discovered ``device``: it is not the quietest."""
        if device in self._heard:
            self._heard[device] = self._clock.monotonic()

    def _take(self, now: float) -> bool:
        self._tokens = min(self._capacity,
                           self._tokens + (now - self._filled_at) * self.per_minute / 60.0)
        self._filled_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    # -- forgetting ----------------------------------------------------------------------

    def forget(self, device: str, why: str) -> bool:
        """Forget discovered ``device``; False when it is not one."""
        if self._heard.pop(device, None) is None:
            return False
        self.forgotten[why] += 1
        self._log.info(("discovery", f"forgotten-{why}"), "discovered device forgotten "
                       "device=%s why=%s", device, why)
        for listener in self.on_forget:
            listener(device, why)
        return True

    def sweep(self) -> list[str]:
        """Forget the discovered devices silent for ``forget_after_s``; at most once a
        minute (cheap to call often)."""
        now = self._clock.monotonic()
        if now - self._swept_at < min(SWEEP_EVERY_S, self.forget_after_s):
            return []
        self._swept_at = now
        silent = [d for d, at in self._heard.items() if now - at >= self.forget_after_s]
        for device in silent:
            self.forget(device, SILENT)
        return silent

    def restore(self, last_seen: Mapping[str, int | None], now_ns: int) -> list[str]:
        """At start: the registry's discovered devices, with when each was last seen (wall
        time). The most recently seen ``limit`` are kept (a flooded table from an older
        version shrinks here); the others are forgotten and returned."""
        mono = self._clock.monotonic()
        order = sorted(last_seen.items(), key=lambda kv: kv[1] or 0, reverse=True)
        self._heard = {}
        for device, seen in reversed(order[:self.limit]):
            if device in self._exempt:
                continue
            ago_s = max(0.0, (now_ns - seen) / NS) if seen is not None else 0.0
            self._heard[device] = mono - ago_s
        dropped = [device for device, _ in order[self.limit:]]
        for device in dropped:
            self.forgotten[LIMIT] += 1
            for listener in self.on_forget:
                listener(device, LIMIT)
        if dropped:
            log.warning("discovery: %d discovered devices over ingest.max_discovered=%d "
                        "forgotten at start (the least recently seen)", len(dropped),
                        self.limit)
        return dropped

    def statistics(self) -> dict[str, Any]:
        return {"discovered": len(self._heard), "limit": self.limit,
                "admitted": self.admitted, "refused": dict(self.refused),
                "forgotten": dict(self.forgotten)}
