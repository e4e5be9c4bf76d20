"""Alerts: the texts (pure, tables), the config, and the Alerter against a real HTTP receiver.

The receiver is a small HTTP/1.1 server (``asyncio.start_server``) on 127.0.0.1 that plays
both a webhook endpoint and the Telegram Bot API (``/bot<token>/sendMessage``); each path can
be told to answer 500, 429 with Retry-After, 400, ``"ok": false``, or to hang. Debounce,
reminders, backoff and give-up run on a :class:`FakeClock`; the only real waiting is for a
request to reach the receiver, and that waits for a condition with a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.park.alerts import (
    Alerter,
    AlertsConfig,
    Subject,
    TargetStats,
    TelegramTarget,
    WebhookTarget,
    human_duration,
    message_text,
)
from gateway.testing.clock import FakeClock
from gateway.testing.stack import free_port
from tests.conftest import until

TOKEN = "123456789:AAHsecret-Token_value-for-tests-only"
T0 = 1_800_000_000 * 10**9       # 2027-01-15 08:00:00 UTC = 16:00 WITA
MIN = 60
S = 10**9

AP = Subject(id="ap-01", name="AP Gerbang", kind="wifi_ap", site="taman-sangatta", zone="gerbang")
POLDER = Subject(id="polder-1", name="Polder Utara", kind="polder", site="taman-sangatta",
                 zone=None)
GATEWAY = Subject(id="gw-01", name="gw-01", kind="gateway", site="taman-sangatta", zone=None)


# -- the receiver -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"{}"
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False

    @classmethod
    def json(cls, status: int, obj: Any, **headers: str) -> Answer:
        return cls(status, json.dumps(obj).encode(),
                   tuple((k.replace("_", "-"), v) for k, v in headers.items()))


HANG = Answer(hang=True)
TG_OK = Answer.json(200, {"ok": True, "result": {"message_id": 7, "chat": {"id": -100123}}})


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP/1.1 server: records every request, answers as planned per path."""

    requests: list[Request] = field(default_factory=list)
    plans: dict[str, deque[Answer]] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to ``path`` so; afterwards the default (200)."""
        self.plans.setdefault(path, deque()).extend(answers)

    def to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, limit_s: float = 5.0) -> list[Request]:
        async with asyncio.timeout(limit_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.to(path)) >= count)
        return self.to(path)

    def _answer(self, path: str) -> Answer:
        planned = self.plans.get(path)
        if planned:
            return planned.popleft()
        return TG_OK if "/sendMessage" in path else Answer()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while line := await reader.readline():
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, value = h.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                answer = self._answer(path)
                async with self._arrived:
                    self.requests.append(Request(method, path, headers, body))
                    self._arrived.notify_all()
                if answer.hang:
                    await self._release.wait()
                    return
                head = [f"HTTP/1.1 {answer.status} X", "Content-Type: application/json",
                        f"Content-Length: {len(answer.body)}"]
                head += [f"{k}: {v}" for k, v in answer.headers]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + answer.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


# -- helpers ----------------------------------------------------------------------------------


def hook(receiver: Receiver, name: str = "it", path: str = "/hook", **kw: Any) -> dict[str, Any]:
    return {"kind": "webhook", "name": name, "url": receiver.url(path), **kw}


def telegram(receiver: Receiver, name: str = "lapangan", **kw: Any) -> dict[str, Any]:
    return {"kind": "telegram", "name": name, "chat_id": "-1001234567890", "bot_token": TOKEN,
            "api_url": receiver.url(""), **kw}


TG_PATH = f"/bot{TOKEN}/sendMessage"


def config(*targets: dict[str, Any], **kw: Any) -> AlertsConfig:
    base: dict[str, Any] = {"down_after_s": 300, "backoff_min_s": 10, "backoff_max_s": 60,
                            "timeout_s": 5}
    return AlertsConfig.model_validate({**base, **kw, "targets": list(targets)})


def make(cfg: AlertsConfig, clock: FakeClock) -> Alerter:
    return Alerter(cfg, clock=clock, gateway_id="gw-01", site="taman-sangatta",
                   rng=random.Random(1))


@contextlib.asynccontextmanager
async def running(alerter: Alerter) -> AsyncIterator[Alerter]:
    task = asyncio.create_task(alerter.run(), name="alerts")
    try:
        yield alerter
    finally:
        task.cancel()
        await asyncio.wait([task])
        await alerter.aclose()
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure


def target(alerter: Alerter, name: str) -> TargetStats:
    return next(t for t in alerter.statistics().targets if t.name == name)


async def settle(alerter: Alerter, name: str, cond: Callable[[TargetStats], bool]) -> TargetStats:
    await until(lambda: cond(target(alerter, name)), 5.0)
    return target(alerter, name)


async def barrier(alerter: Alerter, receiver: Receiver, path: str, before: int) -> None:
    """A later message arrives, so everything queued earlier has been dealt with (FIFO)."""
    alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
    await receiver.wait_for(path, before + 1)


# -- texts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 detik"),
    (-5, "0 detik"),
    (45.9, "45 detik"),
    (60, "1 menit"),
    (300, "5 menit"),
    (359, "5 menit"),
    (3600, "1 jam"),
    (2 * 3600 + 10 * 60, "2 jam 10 menit"),
    (86400, "1 hari"),
    (86400 + 3 * 3600 + 59 * 60, "1 hari 3 jam"),
    (10 * 86400 + 3600, "10 hari 1 jam"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(("event", "subject", "since", "at", "cause", "text"), [
    ("down", AP, T0, T0 + 300 * S, None,
     "🔴 Access point Wi-Fi AP Gerbang (ap-01) di taman-sangatta mati sejak 16:00 WITA "
     "(5 menit)."),
    ("down", POLDER, T0, T0 + 300 * S, "tidak ada data selama 3 interval.",
     "🔴 Sensor polder Polder Utara (polder-1) di taman-sangatta mati sejak 16:00 WITA "
     "(5 menit). Penyebab: tidak ada data selama 3 interval."),
    ("down", Subject("env-2", "env-2", "garden_env", "taman-b", None), T0, T0 + 600 * S, "",
     "🔴 Sensor taman env-2 di taman-b mati sejak 16:00 WITA (10 menit)."),
    ("down", Subject("x9", "Kamera", None, "taman-b", None), T0, T0 + 60 * S, None,
     "🔴 Perangkat Kamera (x9) di taman-b mati sejak 16:00 WITA (1 menit)."),
    ("down", Subject("x9", "Kamera", "camera", "taman-b", None), T0, T0 + 60 * S, None,
     "🔴 Perangkat Kamera (x9) di taman-b mati sejak 16:00 WITA (1 menit)."),
    ("recovered", AP, T0, T0 + (2 * 3600 + 10 * 60) * S, None,
     "🟢 Access point Wi-Fi AP Gerbang (ap-01) di taman-sangatta kembali menyala pukul "
     "18:10 WITA setelah mati 2 jam 10 menit."),
    ("reminder", POLDER, T0, T0 + 3600 * S, "LWT offline",
     "🔴 Sensor polder Polder Utara (polder-1) di taman-sangatta masih mati sejak 16:00 WITA "
     "(1 jam). Penyebab: LWT offline."),
    # The outage began on another (local) day: the date is shown.
    ("reminder", POLDER, T0, T0 + (27 * 3600) * S, None,
     "🔴 Sensor polder Polder Utara (polder-1) di taman-sangatta masih mati sejak "
     "15 Januari 16:00 WITA (1 hari 3 jam)."),
    ("gateway_restarted", GATEWAY, T0, T0 + (45 * 60) * S, None,
     "🟠 Gateway gw-01 di taman-sangatta mati dari 15 Januari 16:00 sampai 16:45 WITA "
     "(45 menit) dan sudah kembali menyala."),
    ("gateway_restarted", GATEWAY, T0, T0 + (9 * 3600) * S, None,
     "🟠 Gateway gw-01 di taman-sangatta mati dari 15 Januari 16:00 sampai 16 Januari 01:00 "
     "WITA (9 jam) dan sudah kembali menyala."),
])
def test_message_text(event: Any, subject: Subject, since: int, at: int, cause: str | None,
                      text: str) -> None:
    assert message_text(event, subject, since_ns=since, at_ns=at, cause=cause) == text


def test_message_text_uses_the_configured_zone() -> None:
    text = message_text("recovered", AP, since_ns=T0, at_ns=T0 + 600 * S,
                        utc_offset_minutes=420, zone_name="WIB")
    assert "pukul 15:10 WIB setelah mati 10 menit" in text


# -- config -----------------------------------------------------------------------------------


def test_config_targets_are_discriminated_by_kind_and_webhook_is_the_default() -> None:
    cfg = AlertsConfig.model_validate({"targets": [
        {"name": "it", "url": "https://it.example/hook", "headers": {"Authorization": "Bearer x"}},
        {"kind": "telegram", "name": "tg", "chat_id": "@kebun_status", "bot_token": TOKEN},
    ]})
    assert isinstance(cfg.targets[0], WebhookTarget)
    assert isinstance(cfg.targets[1], TelegramTarget)
    assert cfg.targets[1].api_url == "https://api.telegram.org"
    assert TOKEN not in repr(cfg)
    assert TOKEN not in cfg.model_dump_json()


@pytest.mark.parametrize(("targets", "extra", "message"), [
    ([{"name": "a", "url": "ftp://x/"}], {}, "http:// or https://"),
    ([{"name": "a", "url": "http://"}], {}, "http:// or https://"),
    ([{"kind": "email", "name": "a"}], {}, "does not match any of the expected tags"),
    ([{"kind": "telegram", "name": "t", "chat_id": "kebun", "bot_token": "1:a"}], {},
     "chat_id must be"),
    ([{"kind": "telegram", "name": "t", "chat_id": "@kebun_status", "bot_token": "1:a/b"}], {},
     "bot_token must be"),
    ([{"name": "a", "url": "http://x/"}, {"name": "a", "url": "http://y/"}], {},
     "target names must be unique: a"),
    ([{"name": "a", "url": "http://x/", "headers": {"X-Key": "a\r\nb"}}], {}, "line break"),
    ([{"name": "a", "url": "http://x/", "secret": "x"}], {}, "Extra inputs"),
    ([], {"backoff_min_s": 100, "backoff_max_s": 10}, "backoff_min_s"),
    ([], {"repeat_s": 5}, "greater than or equal to 60"),
])
def test_config_rejects(targets: list[dict[str, Any]], extra: dict[str, Any],
                        message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AlertsConfig.model_validate({"targets": targets, **extra})


# -- plain functions --------------------------------------------------------------------------


def test_down_and_up_are_plain_functions_that_never_wait() -> None:
    # No event loop at all here: they can only touch memory.
    for method in (Alerter.down, Alerter.up, Alerter.gateway_was_down, Alerter.statistics):
        assert not inspect.iscoroutinefunction(method)
    clock = FakeClock(T0)
    alerter = make(config({"name": "it", "url": "http://127.0.0.1:9/"}), clock)
    alerter.down(AP, T0, "x")
    alerter.down(AP, T0 + S)            # already down: nothing
    alerter.down(POLDER, T0)
    assert (alerter.statistics().waiting, alerter.statistics().suppressed) == (2, 0)
    alerter.up(AP, T0 + 10 * S)
    alerter.up(Subject("nobody", "n", None, "s", None), T0)   # unknown: nothing
    alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
    st = alerter.statistics()
    assert (st.waiting, st.suppressed, st.down, st.targets[0].pending) == (1, 1, 0, 1)


def test_disabled_alerter_ignores_everything() -> None:
    alerter = make(config({"name": "it", "url": "http://127.0.0.1:9/"}, enabled=False),
                   FakeClock(T0))
    alerter.down(AP, T0)
    alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
    st = alerter.statistics()
    assert (st.enabled, st.waiting, st.targets[0].pending) == (False, 0, 0)


# -- against the receiver ---------------------------------------------------------------------


async def test_down_then_up_within_down_after_sends_nothing(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    async with running(make(config(hook(receiver)), clock)) as alerter:
        alerter.down(AP, T0)
        await until(lambda: clock.sleepers > 0)
        clock.advance(299)
        alerter.up(AP, clock.now_ns())
        clock.advance(3600)
        assert alerter.statistics().suppressed == 1
        assert alerter.statistics().waiting == 0
        await barrier(alerter, receiver, "/hook", 0)
    assert [r.json()["event"] for r in receiver.requests] == ["gateway_restarted"]


async def test_down_past_threshold_sends_one_message_to_each_target(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    cfg = config(hook(receiver, headers={"Authorization": "Bearer it-office"}),
                 telegram(receiver))
    async with running(make(cfg, clock)) as alerter:
        alerter.down(POLDER, T0 - 60 * S, cause="tidak ada data")
        alerter.down(POLDER, T0)                       # a second down changes nothing
        await until(lambda: clock.sleepers > 0)
        assert alerter.statistics().waiting == 1
        clock.advance(240)
        (hooked,) = await receiver.wait_for("/hook", 1)
        (sent,) = await receiver.wait_for(TG_PATH, 1)
        await settle(alerter, "lapangan", lambda t: t.sent == 1)
        st = alerter.statistics()
        assert (st.waiting, st.down) == (0, 1)
        assert target(alerter, "it").last_sent_ns == T0 + 240 * S
    text = ("🔴 Sensor polder Polder Utara (polder-1) di taman-sangatta mati sejak 15:59 WITA "
            "(5 menit). Penyebab: tidak ada data.")
    assert hooked.method == "POST"
    assert hooked.headers["authorization"] == "Bearer it-office"
    assert hooked.headers["content-type"] == "application/json"
    body = hooked.json()
    assert re.fullmatch(r"[0-9a-f]{32}", body.pop("id"))  # the message's own, for repeats
    assert body == {
        "event": "down", "subject": "device", "device": "polder-1", "name": "Polder Utara",
        "kind": "polder",
        "site": "taman-sangatta", "zone": None, "gateway": "gw-01",
        "since": "2027-01-15T07:59:00Z", "at": "2027-01-15T08:04:00Z", "duration_s": 300,
        "cause": "tidak ada data", "text": text,
    }
    assert sent.json() == {"chat_id": "-1001234567890", "text": text,
                           "disable_web_page_preview": True}
    assert len(receiver.requests) == 2


async def test_recovered_message_carries_the_outage_length(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    async with running(make(config(hook(receiver)), clock)) as alerter:
        alerter.down(AP, T0)
        await until(lambda: clock.sleepers > 0)
        clock.advance(300)
        await receiver.wait_for("/hook", 1)
        clock.advance(2 * 3600 + 5 * MIN)
        alerter.up(AP, clock.now_ns())
        got = await receiver.wait_for("/hook", 2)
        assert alerter.statistics().down == 0
    body = got[1].json()
    assert (body["event"], body["duration_s"], body["since"], body["at"]) == (
        "recovered", 2 * 3600 + 10 * MIN, "2027-01-15T08:00:00Z", "2027-01-15T10:10:00Z")
    assert body["text"].endswith("kembali menyala pukul 18:10 WITA setelah mati 2 jam 10 menit.")


async def test_reminders_repeat_while_down(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    async with running(make(config(hook(receiver), repeat_s=3600), clock)) as alerter:
        alerter.down(AP, T0)
        await until(lambda: clock.sleepers > 0)
        clock.advance(300)
        await receiver.wait_for("/hook", 1)
        clock.advance(3600)
        await receiver.wait_for("/hook", 2)
        clock.advance(3600)
        await receiver.wait_for("/hook", 3)
        alerter.up(AP, clock.now_ns())
        got = await receiver.wait_for("/hook", 4)
        clock.advance(3 * 3600)                         # no more reminders once it is up
        await barrier(alerter, receiver, "/hook", 4)
    assert [r.json()["event"] for r in receiver.requests] == [
        "down", "reminder", "reminder", "recovered", "gateway_restarted"]
    assert got[2].json()["text"] == ("🔴 Access point Wi-Fi AP Gerbang (ap-01) di taman-sangatta "
                                     "masih mati sejak 16:00 WITA (2 jam 5 menit).")


async def test_gateway_was_down_sends_one_message_after_restart(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    async with running(make(config(hook(receiver), telegram(receiver)), clock)) as alerter:
        alerter.gateway_was_down(GATEWAY, T0 - 100 * S, T0)       # shorter than down_after
        alerter.gateway_was_down(GATEWAY, T0 - (3600 + 31 * MIN) * S, T0 - 60 * S)
        (hooked,) = await receiver.wait_for("/hook", 1)
        (sent,) = await receiver.wait_for(TG_PATH, 1)
        assert alerter.statistics().suppressed == 1
    text = ("🟠 Gateway gw-01 di taman-sangatta mati dari 15 Januari 14:29 sampai 15:59 WITA "
            "(1 jam 30 menit) dan sudah kembali menyala.")
    assert hooked.json()["event"] == "gateway_restarted"
    assert (hooked.json()["device"], hooked.json()["duration_s"]) == ("gw-01", 5400)
    assert hooked.json()["text"] == sent.json()["text"] == text


async def test_500_is_retried_with_backoff_and_delivered_once(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    receiver.plan("/hook", Answer.json(500, {"error": "busy"}), Answer.json(503, {}))
    async with running(make(config(hook(receiver)), clock)) as alerter:
        alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
        st = await settle(alerter, "it", lambda t: t.retries == 1)
        assert st.last_error == 'HTTP 500: {"error": "busy"}'
        # backoff_min_s=10 with jitter: between 5 and 10 s, on the fake clock.
        assert st.next_attempt_ns is not None
        assert T0 + 5 * S <= st.next_attempt_ns <= T0 + 10 * S
        clock.advance(10)
        await settle(alerter, "it", lambda t: t.retries == 2)
        clock.advance(20)
        st = await settle(alerter, "it", lambda t: t.sent == 1)
        assert (st.failed, st.pending, st.next_attempt_ns) == (0, 0, None)
    assert len(receiver.to("/hook")) == 3


async def test_retry_after_is_honoured(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    receiver.plan("/hook", Answer.json(429, {}, Retry_After="120"))
    receiver.plan(TG_PATH, Answer.json(429, {"ok": False, "error_code": 429,
                                             "description": "Too Many Requests: retry after 90",
                                             "parameters": {"retry_after": 90}}))
    async with running(make(config(hook(receiver), telegram(receiver)), clock)) as alerter:
        alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
        it = await settle(alerter, "it", lambda t: t.retries == 1)
        tg = await settle(alerter, "lapangan", lambda t: t.retries == 1)
        assert (it.next_attempt_ns, tg.next_attempt_ns) == (T0 + 120 * S, T0 + 90 * S)
        assert tg.last_error == "HTTP 429: Too Many Requests: retry after 90"
        # Both deliveries sleep on the fake clock, which wakes a sleeper only when its
        # deadline has come: still asleep after 89 s means no retry before 90 s.
        await until(lambda: clock.sleepers == 2)
        clock.advance(89)
        assert clock.sleepers == 2
        clock.advance(1)
        await receiver.wait_for(TG_PATH, 2)
        await settle(alerter, "lapangan", lambda t: t.sent == 1)
        assert clock.sleepers == 1
        clock.advance(29)
        assert clock.sleepers == 1
        assert len(receiver.to("/hook")) == 1
        clock.advance(1)
        await receiver.wait_for("/hook", 2)
        await settle(alerter, "it", lambda t: t.sent == 1)


async def test_400_fails_at_once_and_the_next_message_still_goes(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    receiver.plan("/hook", Answer(400, b"unknown field"))
    async with running(make(config(hook(receiver)), clock)) as alerter:
        alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
        st = await settle(alerter, "it", lambda t: t.failed == 1)
        assert (st.retries, st.sent, st.last_error) == (0, 0, "HTTP 400: unknown field")
        await barrier(alerter, receiver, "/hook", 1)
        st = await settle(alerter, "it", lambda t: t.sent == 1)
        assert (st.failed, st.retries) == (1, 0)
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(("answer", "error"), [
    (Answer.json(200, {"ok": False, "description": "Bad Request: message is empty"}),
     "Telegram answered 200 without ok=true: Bad Request: message is empty"),
    (Answer.json(400, {"ok": False, "error_code": 400,
                       "description": "Bad Request: chat not found"}),
     "HTTP 400: Bad Request: chat not found; check chat_id, and that the bot is a member"),
    (Answer.json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"}),
     "HTTP 401: Unauthorized; check bot_token"),
    (Answer.json(400, {"ok": False, "description": "Bad Request: group chat was upgraded",
                       "parameters": {"migrate_to_chat_id": -1009876}}),
     "set chat_id to -1009876"),
])
async def test_telegram_refusals_fail_without_retry(receiver: Receiver, answer: Answer,
                                                    error: str) -> None:
    clock = FakeClock(T0)
    receiver.plan(TG_PATH, answer)
    async with running(make(config(telegram(receiver)), clock)) as alerter:
        alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
        st = await settle(alerter, "lapangan", lambda t: t.failed == 1)
    assert (st.sent, st.retries, st.pending) == (0, 0, 0)
    assert st.last_error is not None
    assert error in st.last_error
    assert len(receiver.requests) == 1


async def test_a_hanging_target_does_not_delay_another(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    receiver.plan("/slow", HANG)
    cfg = config(hook(receiver, "slow", "/slow"), hook(receiver, "fast", "/fast"),
                 telegram(receiver), timeout_s=30)
    async with running(make(cfg, clock)) as alerter:
        alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
        alerter.down(AP, T0)
        await receiver.wait_for("/slow", 1)
        clock.advance(300)
        await receiver.wait_for("/fast", 2)
        await receiver.wait_for(TG_PATH, 2)
        await settle(alerter, "fast", lambda t: t.sent == 2)
        slow = target(alerter, "slow")
        assert (slow.sent, slow.pending) == (0, 2)


async def test_network_errors_are_retried_until_give_up(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    dead = {"kind": "webhook", "name": "dead", "url": f"http://127.0.0.1:{free_port()}/hook"}
    cfg = config(dead, hook(receiver), give_up_after_s=100)
    async with running(make(cfg, clock)) as alerter:
        alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
        st = await settle(alerter, "dead", lambda t: t.retries == 1)
        assert st.last_error is not None
        assert st.last_error.startswith("ConnectError")
        clock.advance(10)                 # backoff_min_s=10: the second attempt is due
        await settle(alerter, "dead", lambda t: t.retries == 2)
        assert target(alerter, "dead").pending == 1
        clock.advance(100)                # past give_up_after_s
        st = await settle(alerter, "dead", lambda t: t.dropped == 1)
        assert (st.sent, st.failed, st.pending) == (0, 0, 0)
        assert target(alerter, "it").sent == 1


async def test_a_full_queue_drops_the_oldest_and_counts(receiver: Receiver) -> None:
    clock = FakeClock(T0)
    alerter = make(config(hook(receiver), max_pending=3), clock)
    for hours in range(1, 6):          # queued before run(): five messages, room for three
        alerter.gateway_was_down(GATEWAY, T0 - hours * 3600 * S, T0)
    st = target(alerter, "it")
    assert (st.pending, st.dropped) == (3, 2)
    async with running(alerter):
        got = await receiver.wait_for("/hook", 3)
        await settle(alerter, "it", lambda t: t.sent == 3)
    assert [r.json()["duration_s"] // 3600 for r in got] == [3, 4, 5]


async def test_the_bot_token_never_reaches_logs_or_statistics(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    httpx_log = logging.getLogger("httpx")
    level = httpx_log.level
    httpx_log.setLevel(logging.DEBUG)    # as a technician debugging would
    clock = FakeClock(T0)
    receiver.plan(TG_PATH, Answer.json(500, {"ok": False, "description": f"echo {TOKEN}"}),
                  Answer.json(401, {"ok": False, "description": "Unauthorized"}))
    try:
        async with running(make(config(telegram(receiver)), clock)) as alerter:
            alerter.gateway_was_down(GATEWAY, T0 - 3600 * S, T0)
            await settle(alerter, "lapangan", lambda t: t.retries == 1)
            assert TOKEN not in repr(alerter.statistics())
            clock.advance(60)
            await settle(alerter, "lapangan", lambda t: t.failed == 1)
            alerter.gateway_was_down(GATEWAY, T0 - 7200 * S, T0)
            await settle(alerter, "lapangan", lambda t: t.sent == 1)
            stats = repr(alerter.statistics())
    finally:
        httpx_log.setLevel(level)
    assert len(receiver.to(TG_PATH)) == 3
    assert TOKEN not in stats
    assert TOKEN.split(":")[1] not in stats
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if TOKEN.split(":")[1] in m]
    assert any("/bot<redacted>/sendMessage" in m for m in messages)   # httpx's request line
    assert any(m.startswith("alert sent target=lapangan") for m in messages)
    assert any(m.startswith("alert failed target=lapangan") for m in messages)
