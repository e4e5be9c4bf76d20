"""A task cancelled in the loop turn its wait completes must still stop (Python 3.11's wait_for
does not: it returns the result and the task runs on, which hung a Modbus test for 120 s)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from gateway.core.aio import clock_sleep_or_event, wait_event, wait_future
from gateway.testing.clock import FakeClock
from tests.conftest import until


async def _waits_for_ever(event: asyncio.Event, passes: list[int]) -> None:
    while True:
        await wait_event(event, 5.0)
        passes.append(1)
        event.clear()


async def test_a_cancel_that_meets_a_set_event_still_stops_the_task() -> None:
    event, passes = asyncio.Event(), list[int]()
    task = asyncio.create_task(_waits_for_ever(event, passes))
    await asyncio.sleep(0)
    event.set()
    task.cancel()  # the same turn: the event's waiter completes before the cancel is seen
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2.0)
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for was fixed in 3.12")
async def test_the_race_is_real_with_asyncio_wait_for_on_3_11() -> None:
    """The reference: the same race with asyncio.wait_for swallows the cancel."""
    event = asyncio.Event()

    async def waits() -> str:
        await asyncio.wait_for(event.wait(), 5.0)
        return "ran on"

    task = asyncio.create_task(waits())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    assert await task == "ran on"


async def test_wait_event_and_wait_future_time_out_and_answer() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0) is True
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await wait_future(future, 0.01)
    assert future.cancelled()
    answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(answered.set_result, 7)
    assert await wait_future(answered, 1.0) == 7


async def test_clock_sleep_or_event_ends_on_either_and_leaves_no_task() -> None:
    clock, event = FakeClock(), asyncio.Event()
    before = len(asyncio.all_tasks())
    waiting = asyncio.create_task(clock_sleep_or_event(clock, 30.0, event))
    await until(lambda: clock.sleepers == 1)
    clock.advance(30)
    await asyncio.wait_for(waiting, 2.0)
    waiting = asyncio.create_task(clock_sleep_or_event(clock, 30.0, event))
    await until(lambda: clock.sleepers == 1)
    event.set()
    await asyncio.wait_for(waiting, 2.0)
    assert clock.sleepers == 0
    assert len(asyncio.all_tasks()) == before
