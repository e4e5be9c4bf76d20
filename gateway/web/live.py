"""What the pages' live streams carry: new readings, state changes, the residents' summary.

:class:`LiveFeed` sits between the park and :class:`~gateway.web.events.EventHub`:

- ``readings`` (a pipeline hook, on the ingest path) only remembers the newest fields per
  device, and only while an operator's page is listening: nobody watching, nothing kept;
- ``transition`` (a liveness listener) publishes a ``state`` event at once;
- ``run`` (the task ``events.pump``) sends the remembered readings every ``PUMP_S``, so a
  burst of readings becomes one event per device, and the residents' summary whenever it
  changed; once a minute it also records the park's connected clients into the local history
  for the residents' chart, listening or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from devices.reading import Reading
from gateway.core.clock import Clock
from gateway.core.status import ResidentView
from gateway.park.history import History
from gateway.park.liveness import Liveness, Transition
from gateway.park.resident import CLIENTS_FIELD
from gateway.web.events import EventHub

# How often the pages' live events go out: bursts of readings become one event per device.
PUMP_S = 0.5
# How often the site's connected-clients count goes into the local history.
CLIENTS_SAMPLE_S = 60.0


class LiveFeed:
    def __init__(self, *, events: EventHub, liveness: Liveness, history: History | None,
                 resident: Callable[[], ResidentView], site: str, clock: Clock) -> None:
        self._events = events
        self._liveness = liveness
        self._history = history
        self._resident = resident
        self._site = site
        self._clock = clock
        self._fresh: dict[str, tuple[int, dict[str, Any]]] = {}

    def readings(self, readings: Sequence[Reading]) -> None:
        # Cheap on the ingest path: remember the newest fields per device; run() sends.
        # Nobody watching, nothing kept: a page fetches the whole state when it connects.
        if not self._events.operators_listening:
            return
        for r in readings:
            device = r.tag("device")
            if device is None:
                continue
            at, fields = self._fresh.get(device) or (0, {})
            fields.update(r.fields)
            self._fresh[device] = (max(at, r.time_ns), fields)

    def transition(self, t: Transition) -> None:
        d = self._liveness.devices.get(t.device)
        self._events.publish("state", {
            "device": t.device, "state": t.new, "old": t.old, "since_ns": t.at_ns,
            "cause": t.cause, "last_seen_ns": d.last_seen_ns if d is not None else None,
        }, public=False)

    async def run(self) -> None:
        last_resident: dict[str, Any] | None = None
        last_sample_ns: int | None = None
        while True:
            # Real time even under a test's FakeClock: the pages' cadence, not a judgement.
            await asyncio.sleep(PUMP_S)
            fresh, self._fresh = self._fresh, {}
            for device, (at, fields) in fresh.items():
                self._events.publish("reading", {"device": device, "time_ns": at,
                                                 "fields": fields}, public=False)
            now = self._clock.now_ns()
            sample = self._history is not None and (
                last_sample_ns is None or now - last_sample_ns >= CLIENTS_SAMPLE_S * 1e9)
            if not (sample or self._events.listening):
                last_resident = None  # the next page to connect gets a fresh summary
                continue
            view = self._resident()
            body = view.model_dump(mode="json", by_alias=True)
            comparable = {k: v for k, v in body.items() if k != "time_ns"}
            if comparable != last_resident and self._events.listening:
                last_resident = comparable
                self._events.publish("resident", body, public=True)
            clients = view.wifi.clients_now
            if sample and self._history is not None:
                last_sample_ns = now
                if clients is not None:
                    self._history.record(self._site, CLIENTS_FIELD, now, clients)
