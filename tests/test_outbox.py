"""Alerts that survive (issue 16, part 5): the durable outbox, its order, its 72 hours.

In-process: the Alerter against the real HTTP receiver of tests/test_alerts.py on an injected
clock, the outbox a real SQLite file. The crash test (kill -9 of the real gateway between the
commit and the send) is in tests/test_polder_e2e.py."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway.park.alerts import Alerter, TargetStats
from gateway.park.flood import PolderEvent, PolderState
from gateway.park.outbox import Outbox
from gateway.testing.clock import FakeClock
from tests.test_alerts import (
    AP,
    POLDER,
    T0,
    Answer,
    Receiver,
    config,
    hook,
    receiver,
    running,
    settle,
)

__all__ = ["receiver"]  # the fixture, imported

S = 10**9
HOUR = 3600


def make(cfg_targets: list[dict[str, object]], clock: FakeClock, path: Path,
         **kw: object) -> Alerter:
    return Alerter(config(*cfg_targets, down_after_s=0, **kw), clock=clock, gateway_id="gw-01",
                   site="taman-sangatta", rng=random.Random(1), outbox=Outbox(path))


def siaga(at_ns: int) -> PolderEvent:
    state = PolderState(
        id="polder-1", name="Polder Bukit Pelangi", device="polder-1", field="level_m",
        unit="m", level=1.12, level_time_ns=at_ns, alert_level="siaga", since_ns=at_ns,
        trend_per_h=0.06, eta_next_s=3 * 3600.0, eta_low_s=2 * 3600.0, eta_high_s=4 * 3600.0,
        next_level="awas", quality="ok", fault=False, fault_since_ns=None, rising=False,
        thresholds={"waspada": 0.9, "siaga": 1.1, "awas": 1.3})
    return PolderEvent("polder_level", at_ns, state, previous_alert_level="waspada")


def retried(n: int) -> Callable[[TargetStats], bool]:
    return lambda t: t.retries == n


def rows(path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT target, id, priority FROM outbox ORDER BY seq").fetchall()


async def test_an_alert_is_on_disk_before_it_is_sent_and_gone_once_accepted(
        receiver: Receiver, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    path = tmp_path / "outbox.sqlite3"
    alerter = make([hook(receiver)], clock, path)
    alerter.polder(siaga(T0), wifi_clients=37)
    # Committed the moment it was made, before any delivery task ran.
    ((target, alert_id, priority),) = rows(path)
    assert (target, priority) == ("it", 0)
    async with running(alerter):
        (got,) = await receiver.wait_for("/hook", 1)
        await settle(alerter, "it", lambda t: t.sent == 1)
    body = got.json()
    assert body["id"] == alert_id
    assert body["event"] == "polder_level"
    assert (body["alert_level"], body["previous_alert_level"], body["wifi_clients"]) == (
        "siaga", "waspada", 37)
    assert (body["eta_next_s"], body["eta_low_s"], body["eta_high_s"]) == (10800, 7200, 14400)
    assert body["text"] == ("🟠 SIAGA: Polder Bukit Pelangi 1,12 m, naik 6 cm/jam, perkiraan "
                            "AWAS dalam ± 3 jam (2\N{EN DASH}4 jam); 37 ponsel terhubung di taman. "
                            "(pukul 16:00 WITA)")
    assert rows(path) == []


async def test_a_restart_sends_what_the_last_run_did_not_with_the_same_id(
        receiver: Receiver, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    path = tmp_path / "outbox.sqlite3"
    receiver.plan("/hook", Answer(503))
    first = make([hook(receiver)], clock, path)
    async with running(first):
        first.polder(siaga(T0), wifi_clients=None)
        (refused,) = await receiver.wait_for("/hook", 1)
        await settle(first, "it", lambda t: t.retries == 1)
    assert len(rows(path)) == 1
    second = make([hook(receiver)], clock, path)          # the next start, same card
    assert second.statistics().targets[0].pending == 1
    async with running(second):
        clock.advance(60)
        _, again = await receiver.wait_for("/hook", 2)
        await settle(second, "it", lambda t: t.sent == 1)
    assert again.json()["id"] == refused.json()["id"]
    assert rows(path) == []


async def test_flood_alerts_go_before_device_reminders(receiver: Receiver,
                                                       tmp_path: Path) -> None:
    clock = FakeClock(T0)
    path = tmp_path / "outbox.sqlite3"
    receiver.plan("/hook", *[Answer(503)] * 2)
    alerter = make([hook(receiver)], clock, path, repeat_s=600, backoff_min_s=700,
                   backoff_max_s=700)
    async with running(alerter):
        alerter.down(AP, T0)
        await receiver.wait_for("/hook", 1)            # the down alert, refused
        await settle(alerter, "it", lambda t: t.retries == 1)
        clock.advance(600)                              # its reminder is due meanwhile
        await settle(alerter, "it", lambda t: t.pending == 2)
        alerter.down(POLDER, clock.now_ns())
        alerter.polder(siaga(clock.now_ns()), wifi_clients=3)
        await settle(alerter, "it", lambda t: t.pending == 4)
        clock.advance(100)                              # the down's retry: refused again
        await receiver.wait_for("/hook", 2)
        await settle(alerter, "it", lambda t: t.retries == 2)
        clock.advance(700)
        got = await receiver.wait_for("/hook", 6)
    events = [r.json()["event"] for r in got[2:]]
    # The one in flight goes on; then the flood warning before the older down and reminder.
    assert events == ["down", "polder_level", "down", "reminder"]


async def test_a_target_down_for_70_hours_still_gets_the_alert_and_only_once(
        receiver: Receiver, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    path = tmp_path / "outbox.sqlite3"
    receiver.plan("/hook", *[Answer(503)] * 35)
    alerter = make([hook(receiver)], clock, path, backoff_max_s=2 * HOUR)
    async with running(alerter):
        alerter.polder(siaga(T0), wifi_clients=None)
        for tries in range(1, 36):                       # 35 refusals over 70 hours
            await receiver.wait_for("/hook", tries)
            await settle(alerter, "it", retried(tries))
            clock.advance(2 * HOUR)
        await settle(alerter, "it", lambda t: t.sent == 1)   # the 36th try, at 70 h
        assert clock.now_ns() - T0 == 70 * HOUR * S
        assert rows(path) == []
        # A later alert arrives after it: the accepted one was not sent again meanwhile.
        clock.advance(10 * HOUR)
        alerter.down(AP, clock.now_ns())
        got = await receiver.wait_for("/hook", 37)
    first_id = got[0].json()["id"]
    assert [r.json().get("id") == first_id for r in got] == [True] * 36 + [False]
    assert alerter.statistics().targets[0].dropped == 0


def test_a_card_that_refuses_the_outbox_still_queues_the_alert_in_memory(
        tmp_path: Path) -> None:
    clock = FakeClock(T0)
    (tmp_path / "ro").mkdir()
    path = tmp_path / "ro" / "missing-dir" / "outbox.sqlite3"   # cannot be created
    alerter = Alerter(config({"kind": "webhook", "name": "it", "url": "http://127.0.0.1:9/h"}),
                      clock=clock, gateway_id="gw-01", site="taman-sangatta",
                      outbox=Outbox(path))
    alerter.polder(siaga(T0), wifi_clients=None)
    st = alerter.statistics()
    assert (st.not_durable, st.targets[0].pending, st.outbox_rows) == (1, 1, None)
