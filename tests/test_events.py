"""The live-event hub's limit holds when streams are accepted together (a defect fixed).

Before, a stream was counted only from its first byte: streams accepted in the same moment
all passed the check, and with ``sse_max_clients: 2`` five were accepted.
"""

from __future__ import annotations

import gc

import pytest

from gateway.web.events import EventHub, TooManyClients


async def test_streams_accepted_together_count_against_the_limit() -> None:
    hub = EventHub(max_clients=2, keepalive_s=30)
    accepted = []
    refused = 0
    for _ in range(5):
        try:
            accepted.append(hub.stream(operator=False))
        except TooManyClients:
            refused += 1
    assert (len(accepted), refused) == (2, 3)
    assert hub.statistics()["clients"] == 2
    assert hub.statistics()["refused"] == 3
    for body in accepted:
        await body.aclose()


async def test_a_stream_that_ends_frees_its_place() -> None:
    hub = EventHub(max_clients=1, keepalive_s=30)
    body = hub.stream(operator=True)
    assert await anext(body) == b"retry: 3000\n: hello\n\n"
    with pytest.raises(TooManyClients):
        hub.stream(operator=True)
    await body.aclose()
    assert hub.statistics()["clients"] == 0
    again = hub.stream(operator=True)
    await again.aclose()


def test_a_stream_never_started_frees_its_place_when_dropped() -> None:
    # The client left before the first byte: the response never iterated the body.
    hub = EventHub(max_clients=1, keepalive_s=30)
    body = hub.stream(operator=False)
    with pytest.raises(TooManyClients):
        hub.stream(operator=False)
    del body
    gc.collect()
    assert hub.statistics()["clients"] == 0
    hub.stream(operator=False).aclose().close()
