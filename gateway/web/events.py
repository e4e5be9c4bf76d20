"""Server-Sent Events: the pages' live updates.

The hub never blocks whoever publishes (ingest, liveness): each subscriber has a small bounded
queue; a subscriber that cannot keep up loses its oldest events and is told so with a
``resync`` event, after which the page fetches the whole state again (it does the same on
every reconnection, so nothing depends on replaying missed events).

Events carry a ``public`` flag: residents' streams get only public events (``resident``, the
park's summary), operators' streams get everything (``state``, ``reading``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

QUEUE_LIMIT = 256


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]
    public: bool

    def encode(self, event_id: int) -> bytes:
        body = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
        # json.dumps never writes a raw newline, so the data is always one SSE line.
        return f"id: {event_id}\nevent: {self.kind}\ndata: {body}\n\n".encode()


class TooManyClients(Exception):
    pass


class _Subscriber:
    def __init__(self, operator: bool) -> None:
        self.operator = operator
        self.queue: collections.deque[tuple[int, Event]] = collections.deque()
        self.wake = asyncio.Event()
        self.lost = 0
        self.closed = False


class EventHub:
    def __init__(self, *, max_clients: int = 50, keepalive_s: float = 15.0) -> None:
        self._max_clients = max_clients
        self._keepalive_s = keepalive_s
        self._subscribers: set[_Subscriber] = set()
        self._next_id = 1
        self.published = 0
        self.sent = 0
        self.dropped = 0
        self.refused = 0
        self.connections = 0

    @property
    def listening(self) -> bool:
        return bool(self._subscribers)

    @property
    def operators_listening(self) -> bool:
        return any(s.operator for s in self._subscribers)

    def publish(self, kind: str, data: dict[str, Any], *, public: bool) -> None:
        """Queue an event for every subscriber allowed to see it; never waits."""
        if not self._subscribers:
            return
        event = Event(kind, data, public)
        event_id, self._next_id = self._next_id, self._next_id + 1
        self.published += 1
        for sub in self._subscribers:
            if not (public or sub.operator):
                continue
            if len(sub.queue) >= QUEUE_LIMIT:
                sub.queue.popleft()
                sub.lost += 1
                self.dropped += 1
            sub.queue.append((event_id, event))
            sub.wake.set()

    def close(self) -> None:
        """End every stream (the gateway is stopping): the browsers reconnect later."""
        for sub in self._subscribers:
            sub.closed = True
            sub.wake.set()

    def stream(self, *, operator: bool) -> AsyncGenerator[bytes, None]:
        """The bytes of one client's stream, until it goes away or the hub closes."""
        if len(self._subscribers) >= self._max_clients:
            self.refused += 1
            raise TooManyClients(f"{len(self._subscribers)} live pages already open")
        # Counted from now, not from the stream's first byte: streams that are accepted
        # together but not yet started must count against the limit too.
        sub = _Subscriber(operator)
        self._subscribers.add(sub)
        self.connections += 1
        body = self._stream(sub)
        # A stream whose client left before its first byte is never started, so its finally
        # never runs: the subscriber goes when the generator does.
        weakref.finalize(body, self._subscribers.discard, sub)
        return body

    async def _stream(self, sub: _Subscriber) -> AsyncGenerator[bytes, None]:
        try:
            # The browser waits this long before reconnecting after the stream ends.
            yield b"retry: 3000\n: hello\n\n"
            while not sub.closed:
                if not sub.queue:
                    sub.wake.clear()
                    try:
                        async with asyncio.timeout(self._keepalive_s):
                            await sub.wake.wait()
                    except TimeoutError:
                        # A small event keeps proxies and phones from closing an idle stream,
                        # and tells the page the gateway is still there: a page that hears
                        # nothing for 2 x keepalive knows the stream is dead even when no
                        # error came (a phone that walked out of the Wi-Fi).
                        yield b"event: ping\ndata: {}\n\n"
                        continue
                if sub.lost:
                    lost, sub.lost = sub.lost, 0
                    yield Event("resync", {"lost": lost}, True).encode(0)
                chunk = bytearray()
                while sub.queue:
                    event_id, event = sub.queue.popleft()
                    chunk += event.encode(event_id)
                    self.sent += 1
                if chunk:
                    yield bytes(chunk)
        finally:
            self._subscribers.discard(sub)

    def statistics(self) -> dict[str, int]:
        return {"clients": len(self._subscribers),
                "operator_clients": sum(s.operator for s in self._subscribers),
                "connections": self.connections, "published": self.published,
                "sent": self.sent, "dropped": self.dropped, "refused": self.refused}
