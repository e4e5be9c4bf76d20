"""The park's summary on MQTT (issue 17): one retained message the regency reads every park by.

``garden/<site>/summary``, QoS 1, retained, JSON in the shape of
:class:`gateway.core.status.ParkSummary` (``"schema": 1``). Published when what it says changes
(devices up and down, outages, the polder's level, the backlog), at most every
``liveness.summary_min_interval_s``, and at least every ``liveness.report_interval_s`` even when
nothing changed (so a central service can tell a silent park from a quiet one), and again after
every reconnection to the broker. The shipped bridge forwards it at QoS 0, retained: a long WAN
outage queues nothing, and the latest arrives on reconnect.

The builder is the composition root's (it reads the parts' snapshots); this module decides when
to publish and compares summaries without their clock fields.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from gateway.core.aio import clock_sleep_or_event
from gateway.core.clock import Clock
from gateway.core.status import ParkSummary
from gateway.park.state_topics import TOPIC_PREFIX

log = logging.getLogger(__name__)

NS = 1_000_000_000
# What changes every time without the park changing: left out of the comparison.
_MOVING = {"time_ns", "time", "gateway", "spool"}


def summary_topic(site: str) -> str:
    return f"{TOPIC_PREFIX}/{site}/summary"


def payload(summary: ParkSummary) -> bytes:
    return orjson.dumps(summary.model_dump(mode="json", by_alias=True))


def _content(summary: ParkSummary) -> dict[str, Any]:
    body = summary.model_dump(mode="json", by_alias=True, exclude=_MOVING)
    # The backlog counts, but not its age ticking by.
    body["spool_rows"] = summary.spool.rows
    return body


class SummaryPublisher:
    def __init__(self, *, site: str, build: Callable[[], ParkSummary],
                 publish: Callable[[str, bytes], bool], clock: Clock, min_interval_s: float,
                 every_s: float) -> None:
        self.topic = summary_topic(site)
        self._build = build
        self._publish = publish
        self._clock = clock
        self._min_ns = int(min_interval_s * NS)
        self._every_ns = int(every_s * NS)
        self._last: dict[str, Any] | None = None
        self._last_ns: int | None = None
        self._wake = asyncio.Event()
        self.published = 0

    def republish(self) -> None:
        """After a (re)connection: publish again at once (what was published while the broker
        was away is lost)."""
        self._last = None
        self._wake.set()

    def tick(self) -> None:
        """Publish now if the summary changed (and the last is old enough) or is due."""
        now = self._clock.now_ns()
        summary = self._build()
        content = _content(summary)
        last_ns = self._last_ns
        due = last_ns is None or self._last is None or now - last_ns >= self._every_ns
        changed = content != self._last and (last_ns is None or now - last_ns >= self._min_ns)
        if not (due or changed):
            return
        if self._publish(self.topic, payload(summary)):
            self._last, self._last_ns = content, now
            self.published += 1

    async def run(self) -> None:
        """Look every ``min_interval_s`` (or at a reconnection), until cancelled."""
        while True:
            self._wake.clear()
            try:
                self.tick()
            except Exception:  # a snapshot that fails must not end the task: said, tried again
                log.exception("park summary not published")
            await clock_sleep_or_event(self._clock, self._min_ns / NS, self._wake)
