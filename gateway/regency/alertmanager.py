"""The regency's alerts posted to Prometheus Alertmanager (issue 17, part 3, several instances).

Two regency instances see the same parks and would each send the same alert. Alertmanager (one,
or its cluster) makes them one notification: each instance posts its firing alerts with the
same labels (``alertname``, ``site``, and for a polder ``polder`` and ``level``; never anything
of the instance), Alertmanager groups and deduplicates them by those labels, silences and routes
them (Telegram, webhooks), and sends the recovery when they are resolved.

Alertmanager forgets an alert not posted again within its ``resolve_timeout``: every firing
alert is posted again every ``resend_s`` (60 s), and a resolved one (with ``endsAt``) a few times
more, so that an instance that restarts or one Alertmanager of a cluster that missed a post
still converges. Each URL gets every post; a URL that does not answer is retried at the next
round and counted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from gateway.core.aio import clock_sleep_or_event
from gateway.core.clock import Clock
from gateway.core.status import iso

log = logging.getLogger(__name__)

RESOLVED_POSTS = 3
Labels = tuple[tuple[str, str], ...]


class AlertmanagerSender:
    def __init__(self, urls: list[str], *, clock: Clock, resend_s: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self._clock = clock
        self._resend_s = resend_s
        self._transport = transport
        self._firing: dict[Labels, dict[str, Any]] = {}
        self._resolved: dict[Labels, tuple[dict[str, Any], int]] = {}
        self._wake = asyncio.Event()
        self.posts = 0
        self.failures = 0
        self.last_error: str | None = None

    @staticmethod
    def _key(labels: dict[str, str]) -> Labels:
        return tuple(sorted(labels.items()))

    def fire(self, labels: dict[str, str], annotations: dict[str, str], starts_ns: int) -> None:
        key = self._key(labels)
        self._resolved.pop(key, None)
        self._firing[key] = {"labels": labels, "annotations": annotations,
                             "startsAt": iso(starts_ns)}
        self._wake.set()

    def resolve(self, labels: dict[str, str], ends_ns: int) -> None:
        key = self._key(labels)
        alert = self._firing.pop(key, None)
        if alert is None:
            return
        self._resolved[key] = ({**alert, "endsAt": iso(ends_ns)}, RESOLVED_POSTS)
        self._wake.set()

    def firing(self) -> list[dict[str, str]]:
        return [dict(k) for k in self._firing]

    async def run(self) -> None:
        async with httpx.AsyncClient(transport=self._transport, timeout=10,
                                     trust_env=False) as client:
            while True:
                self._wake.clear()
                await self._post(client)
                await clock_sleep_or_event(self._clock, self._resend_s, self._wake)

    async def _post(self, client: httpx.AsyncClient) -> None:
        batch = list(self._firing.values()) + [a for a, _ in self._resolved.values()]
        if not batch:
            return
        for url in self.urls:
            try:
                response = await client.post(f"{url}/api/v2/alerts", json=batch)
                response.raise_for_status()
                self.posts += 1
            except httpx.HTTPError as exc:
                self.failures += 1
                self.last_error = f"{url}: {type(exc).__name__}: {exc}"
                log.warning("regency: alertmanager post failed %s", self.last_error)
        for key, (alert, left) in list(self._resolved.items()):
            if left <= 1:
                del self._resolved[key]
            else:
                self._resolved[key] = (alert, left - 1)
