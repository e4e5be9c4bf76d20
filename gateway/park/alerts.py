"""Alerts: tell people, in Bahasa Indonesia, when a device or the gateway stays down.

What happens, per subject (a device, or the gateway itself)::

    down(s, since) ──► waiting ──(since + down_after_s passes)──► alerted ──► "down" queued
        │                 │                                          │  every repeat_s: "reminder"
        │                 └── up(s) before that: nothing sent,       └── up(s): "recovered" queued
        │                     counted as suppressed                       with the outage length
        └── a second down(s) while waiting or alerted does nothing

    gateway_was_down(g, start, end), after a restart: one "gateway_restarted" message when
    end - start >= down_after_s (the gateway could not say so while it was off).

    forget(s): the watch ends without a message (a device that became ``unmonitored``: nobody
    knows whether it recovered; the component's own alert speaks for it).

A subject is a device, the gateway, or one of the gateway's own components (``bus:<name>``,
``serial:<name>``: kinds ``bus`` and ``serial``, :data:`COMPONENT_KINDS`); a component's
down/recovered go the same way, and a webhook body says ``"subject": "component"`` for them.
Devices that are merely ``unmonitored`` get no alert of their own.

Every queued message goes to every target (a generic JSON webhook, or Telegram's Bot API
``sendMessage``), each target with its own bounded FIFO queue and its own delivery coroutine,
so a slow or dead target never delays another. Per answer:

- 2xx (and, for Telegram, ``"ok": true``): sent.
- network error, timeout, 408, 429, 5xx: retried with capped exponential backoff and jitter,
  never sooner than ``Retry-After`` or Telegram's ``parameters.retry_after``.
- any other answer (400 bad chat id, 401/404 bad token, 3xx, Telegram ``"ok": false``):
  the message is given up at once and counted as failed, with ``last_error``.
- a message still undelivered ``give_up_after_s`` after it was queued is dropped and counted;
  so is the oldest message when a queue already holds ``max_pending``.

:meth:`Alerter.down`, :meth:`Alerter.up` and :meth:`Alerter.gateway_was_down` are plain
functions: they touch only in-memory state and set an :class:`asyncio.Event`, so ingest never
waits on an alert. Call them from the event loop's thread. :meth:`Alerter.run` is the one
long-lived task (timers and delivery); cancelling it is how it stops.

All time comes from the injected :class:`~gateway.core.clock.Clock`, except the HTTP timeout
(``timeout_s``), which is httpx's own monotonic timer.

The bot token is a secret: it is never logged and never kept in an error text. httpx logs the
URL of every request at INFO (the token is part of Telegram's URL path), so this module puts a
filter on the ``httpx`` logger that masks ``/bot<token>/``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sqlite3
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import httpx

from gateway.config.alerts import AlertsConfig, TelegramTarget, WebhookTarget
from gateway.core.aio import clock_sleep_or_event
from gateway.core.backoff import Backoff, parse_retry_after
from gateway.core.clock import Clock

# The statistics are the status's own shapes: one type from here to the API and /metrics.
from gateway.core.status import AlertsStatus as AlertStats
from gateway.core.status import AlertTargetStatus as TargetStats
from gateway.park.flood import PolderEvent, PolderState
from gateway.park.outbox import Outbox

log = logging.getLogger(__name__)

AlertEvent = Literal["down", "recovered", "reminder", "gateway_restarted", "polder_level",
                     "polder_rising", "polder_sensor_fault", "polder_sensor_ok"]
POLDER_EVENTS = frozenset({"polder_level", "polder_rising", "polder_sensor_fault",
                           "polder_sensor_ok"})
# Sending order within a target: flood warnings and sensor faults first, then down and
# recovered, then reminders of what is already known.
PRIORITY: dict[str, int] = {"reminder": 2, **dict.fromkeys(POLDER_EVENTS, 0)}
DEFAULT_PRIORITY = 1

_NS = 1_000_000_000
_ERROR_TEXT_LIMIT = 300
_CAUSE_LIMIT = 200
_BOT_PATH = re.compile(r"/bot[^/\s\"']+")


# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """What went down: a device, or the gateway itself (kind ``"gateway"``)."""

    id: str
    name: str
    kind: str | None
    site: str
    zone: str | None


@dataclass(frozen=True, slots=True)
class Alert:
    """One message, the same for every target."""

    event: AlertEvent
    subject: Subject
    since_ns: int
    at_ns: int
    cause: str | None
    text: str
    queued_ns: int
    id: str = ""
    # A flood alert's fields for the webhook (level, alert_level, eta_next_s, ...).
    fields: dict[str, Any] | None = None

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.event, DEFAULT_PRIORITY)

    def to_json(self) -> dict[str, Any]:
        s = self.subject
        return {"event": self.event, "id": self.id, "since_ns": self.since_ns,
                "at_ns": self.at_ns, "cause": self.cause, "text": self.text,
                "queued_ns": self.queued_ns, "fields": self.fields,
                "subject": {"id": s.id, "name": s.name, "kind": s.kind, "site": s.site,
                            "zone": s.zone}}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Alert:
        s = body["subject"]
        return cls(event=body["event"], subject=Subject(s["id"], s["name"], s["kind"],
                                                        s["site"], s["zone"]),
                   since_ns=int(body["since_ns"]), at_ns=int(body["at_ns"]),
                   cause=body.get("cause"), text=str(body["text"]),
                   queued_ns=int(body["queued_ns"]), id=str(body.get("id") or ""),
                   fields=body.get("fields"))


# -- texts (pure) -----------------------------------------------------------------------------

KIND_LABELS: dict[str, str] = {
    "wifi_ap": "Access point Wi-Fi",
    "polder": "Sensor polder",
    "garden_env": "Sensor taman",
    "gateway": "Gateway",
    "park": "Taman",
    "bus": "Bus RS485 (adaptor USB)",
    "serial": "Port serial (adaptor USB)",
}
# Subjects that are the gateway's own components, not devices.
COMPONENT_KINDS = frozenset({"bus", "serial", "broker"})
_MONTHS = ("Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus",
           "September", "Oktober", "November", "Desember")


def human_duration(seconds: float) -> str:
    """ "45 detik", "5 menit", "2 jam 10 menit", "1 hari 3 jam" (rounded down)."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total} detik"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} menit"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} jam {minutes} menit" if minutes else f"{hours} jam"
    days, hours = divmod(hours, 24)
    return f"{days} hari {hours} jam" if hours else f"{days} hari"


def _local(ns: int, offset_minutes: int) -> datetime:
    return datetime.fromtimestamp(ns // _NS, tz=timezone(timedelta(minutes=offset_minutes)))


def _clock_text(ns: int, ref_ns: int, offset_minutes: int, *, with_date: bool = False) -> str:
    """``HH:MM``; with the date in front when it is another day than ``ref_ns``."""
    when = _local(ns, offset_minutes)
    ref = _local(ref_ns, offset_minutes)
    if not with_date and when.date() == ref.date():
        return f"{when:%H:%M}"
    year = f" {when.year}" if when.year != ref.year else ""
    return f"{when.day} {_MONTHS[when.month - 1]}{year} {when:%H:%M}"


def _who(subject: Subject) -> str:
    label = KIND_LABELS.get(subject.kind or "", "Perangkat")
    if subject.name and subject.name != subject.id:
        return f"{label} {subject.name} ({subject.id})"
    return f"{label} {subject.id}"


def message_text(
    event: AlertEvent,
    subject: Subject,
    *,
    since_ns: int,
    at_ns: int,
    cause: str | None = None,
    utc_offset_minutes: int = 480,
    zone_name: str = "WITA",
) -> str:
    """The text people read, in Bahasa Indonesia, times local (``zone_name``)."""
    who = _who(subject)
    duration = human_duration((at_ns - since_ns) / _NS)
    since = _clock_text(since_ns, at_ns, utc_offset_minutes)
    at = _clock_text(at_ns, at_ns, utc_offset_minutes)
    if event == "down":
        text = f"🔴 {who} di {subject.site} mati sejak {since} {zone_name} ({duration})."
    elif event == "reminder":
        text = f"🔴 {who} di {subject.site} masih mati sejak {since} {zone_name} ({duration})."
    elif event == "recovered":
        return (f"🟢 {who} di {subject.site} kembali menyala pukul {at} {zone_name} "
                f"setelah mati {duration}.")
    else:
        start = _clock_text(since_ns, at_ns, utc_offset_minutes, with_date=True)
        end = _clock_text(at_ns, since_ns, utc_offset_minutes)
        return (f"🟠 {who} di {subject.site} mati dari {start} sampai {end} {zone_name} "
                f"({duration}) dan sudah kembali menyala.")
    reason = (cause or "").strip().rstrip(".")[:_CAUSE_LIMIT]
    return f"{text} Penyebab: {reason}." if reason else text


_LEVEL_MARK = {"normal": "🟢", "waspada": "🟡", "siaga": "🟠", "awas": "🔴"}
_FAULT_WORDS = {
    "range": "pembacaan di luar jangkauan sensor",
    "spike": "lonjakan yang tidak mungkin terjadi pada air",
    "flatline": "nilai tidak berubah sama sekali (sensor macet)",
    "stale": "tidak ada data dari sensor selama tiga interval",
    "disagree": "dua sensor di polder ini tidak sepakat",
}


def number_id(value: float, decimals: int) -> str:
    """A number the Indonesian way: decimal comma, no thousands mark (``1,12``)."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace(".", ",")


def level_text(value: float, unit: str) -> str:
    return f"{number_id(value, 2 if unit == 'm' else 1)} {unit}"


def trend_text(per_h: float, unit: str) -> str:
    """A rise per hour; a level in metres rises in centimetres (``6 cm/jam``)."""
    if unit == "m":
        return f"{number_id(per_h * 100, 0)} cm/jam"
    return f"{number_id(per_h, 1)} {unit}/jam"


def eta_text(seconds: float) -> str:
    """``40 menit``, ``3 jam``, ``1,5 jam``: minutes to the nearest 5 under an hour."""
    if seconds < 3600:
        return f"{max(5, round(seconds / 300) * 5)} menit"
    hours = seconds / 3600
    return f"{number_id(hours, 0 if hours >= 3 else 1)} jam"


def _band(low: float | None, high: float | None) -> str:
    if low is None:
        return ""
    if high is None:
        return f" (paling cepat {eta_text(low)})"
    lo, hi = eta_text(low), eta_text(high)
    same_unit = lo.split()[-1] == hi.split()[-1]
    dash = "\N{EN DASH}"
    return f" ({lo.split()[0]}{dash}{hi})" if same_unit else f" ({lo}{dash}{hi})"


def _estimate_text(st: PolderState) -> str:
    if st.eta_next_s is None or st.next_level is None:
        return ""
    return (f", perkiraan {st.next_level.upper()} dalam ± {eta_text(st.eta_next_s)}"
            f"{_band(st.eta_low_s, st.eta_high_s)}")


def polder_text(event: PolderEvent, *, wifi_clients: int | None, utc_offset_minutes: int = 480,
                zone_name: str = "WITA") -> str:
    """The flood messages, in Bahasa Indonesia: the level, how fast, when the next level,
    and how many phones are in the park now (people to warn)."""
    st = event.state
    at = _clock_text(event.at_ns, event.at_ns, utc_offset_minutes)
    name = st.name if st.name.lower().startswith("polder") else f"Polder {st.name}"
    level = level_text(st.level, st.unit) if st.level is not None else "level tidak diketahui"
    trend = ""
    if st.trend_per_h is not None and st.trend_per_h > 0:
        trend = f", naik {trend_text(st.trend_per_h, st.unit)}"
    people = (f"; {wifi_clients} ponsel terhubung di taman" if wifi_clients is not None
              else "")
    when = f" (pukul {at} {zone_name})"
    if event.kind == "polder_level":
        mark = _LEVEL_MARK.get(st.alert_level, "⚠️")
        before = event.previous_alert_level or "normal"
        rank = ("normal", "waspada", "siaga", "awas")
        if before in rank and st.alert_level in rank and rank.index(
                st.alert_level) < rank.index(before):
            return (f"{mark} {st.alert_level.upper()}: {name} turun dari {before.upper()}, "
                    f"{level}{when}.")
        return (f"{mark} {st.alert_level.upper()}: {name} {level}{trend}"
                f"{_estimate_text(st)}{people}.{when}")
    if event.kind == "polder_rising":
        return (f"⚠️ NAIK CEPAT: {name} {level}{trend} ({st.alert_level.upper()})"
                f"{_estimate_text(st)}{people}.{when}")
    reason = _FAULT_WORDS.get(event.reason or "", event.reason or "tidak diketahui")
    if event.kind == "polder_sensor_fault":
        return (f"⚠️ Sensor {name} tidak dapat dipercaya: {reason}. Levelnya tidak dipakai "
                f"untuk peringatan sampai sensor pulih; periksa sensor.{when}")
    return (f"✅ Sensor {name} kembali dapat dipercaya (sebelumnya: {reason}): {level} "
            f"({st.alert_level.upper()}).{when}")


def polder_fields(event: PolderEvent, *, wifi_clients: int | None) -> dict[str, Any]:
    """What a webhook gets besides the text: GET /api/v1/polder's fields and the event's."""
    st = event.state
    return {"level": st.level, "unit": st.unit, "alert_level": st.alert_level,
            "previous_alert_level": event.previous_alert_level,
            "since": _iso(st.since_ns) if st.since_ns is not None else None,
            "trend_per_h": st.trend_per_h, "eta_next_s": st.eta_next_s,
            "eta_low_s": st.eta_low_s, "eta_high_s": st.eta_high_s,
            "next_level": st.next_level, "quality": st.quality, "reason": event.reason,
            "siren": None, "wifi_clients": wifi_clients}


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // _NS, tz=UTC).isoformat().replace("+00:00", "Z")


def webhook_body(alert: Alert, *, gateway_id: str) -> dict[str, Any]:
    """The JSON object a webhook receives (times in UTC, ISO 8601). ``id`` is the message's
    own: the same on every retry and after a restart, so a receiver can drop a repeat."""
    s = alert.subject
    if alert.event in POLDER_EVENTS:
        return {"event": alert.event, "id": alert.id, "subject": "polder", "polder": s.id,
                "name": s.name, "site": s.site, "gateway": gateway_id,
                "at": _iso(alert.at_ns), **(alert.fields or {}), "text": alert.text}
    return {
        "event": alert.event,
        "id": alert.id,
        "subject": "component" if s.kind in COMPONENT_KINDS else "device",
        "device": s.id,
        "name": s.name,
        "kind": s.kind,
        "site": s.site,
        "zone": s.zone,
        "gateway": gateway_id,
        "since": _iso(alert.since_ns),
        "at": _iso(alert.at_ns),
        "duration_s": max(0, (alert.at_ns - alert.since_ns) // _NS),
        "cause": alert.cause,
        "text": alert.text,
    }


# -- redaction --------------------------------------------------------------------------------


def _mask_bot_path(text: str) -> str:
    return _BOT_PATH.sub("/bot<redacted>", text)


class _RedactBotToken(logging.Filter):
    """Masks ``/bot<token>`` in httpx's "HTTP Request: POST <url>" lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _mask_bot_path(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def _install_httpx_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactBotToken) for f in logger.filters):
        logger.addFilter(_RedactBotToken())


# -- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    result: Literal["sent", "retry", "failed"]
    error: str | None = None
    retry_after: float | None = None


@dataclass(slots=True)
class _Watch:
    subject: Subject
    since_ns: int
    cause: str | None
    due_ns: int | None      # when the down alert or the next reminder is due
    alerted: bool = False


@dataclass(frozen=True, slots=True)
class _Queued:
    alert: Alert
    seq: int | None  # its row in the outbox; None: in memory only


class _Target:
    def __init__(self, config: WebhookTarget | TelegramTarget, *, max_pending: int,
                 backoff: Backoff) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.queue: deque[_Queued] = deque()
        self.max_pending = max_pending
        self.inflight: _Queued | None = None
        self.wakeup = asyncio.Event()
        self.backoff = backoff
        self.not_before_ns = 0
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.retries = 0
        self.last_error: str | None = None
        self.last_sent_ns: int | None = None
        self.last_drop_log_ns: int | None = None
        self._secret = (config.bot_token.get_secret_value()
                        if isinstance(config, TelegramTarget) else None)

    def put(self, item: _Queued) -> None:
        """In sending order: after every message of the same or a more urgent priority."""
        priority = item.alert.priority
        at = len(self.queue)
        while at > 0 and self.queue[at - 1].alert.priority > priority:
            at -= 1
        self.queue.insert(at, item)

    def redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "<redacted>")
        return _mask_bot_path(text)[:_ERROR_TEXT_LIMIT]

    def stats(self) -> TargetStats:
        return TargetStats(
            name=self.name,
            kind=self.kind,
            sent=self.sent,
            failed=self.failed,
            dropped=self.dropped,
            retries=self.retries,
            pending=len(self.queue) + (self.inflight is not None),
            last_error=self.last_error,
            last_sent_ns=self.last_sent_ns,
            next_attempt_ns=self.not_before_ns or None,
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _telegram_hint(status: int, description: str, body: Any) -> str:
    params = body.get("parameters") if isinstance(body, dict) else None
    if isinstance(params, dict) and "migrate_to_chat_id" in params:
        return f"; the group became a supergroup: set chat_id to {params['migrate_to_chat_id']}"
    if status in (401, 404):
        return "; check bot_token"
    if status == 403:
        return "; the bot was removed from the chat or blocked: add it again"
    if status == 400 and "chat not found" in description.lower():
        return "; check chat_id, and that the bot is a member of the chat"
    return ""


class Alerter:
    """Debounces down/up into messages and delivers them to every target."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        clock: Clock,
        gateway_id: str,
        site: str,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._config = config
        self._outbox = outbox
        self._not_durable = 0
        self._clock = clock
        self._gateway_id = gateway_id
        self._site = site
        self._transport = transport
        self._rng = rng or random.Random()
        self._down_after_ns = int(config.down_after_s * _NS)
        self._repeat_ns = int(config.repeat_s * _NS) if config.repeat_s else None
        self._give_up_ns = int(config.give_up_after_s * _NS)
        self._watches: dict[str, _Watch] = {}
        self._timers_changed = asyncio.Event()
        self._suppressed = 0
        self._targets = [
            _Target(t, max_pending=config.max_pending,
                    backoff=Backoff(config.backoff_min_s, config.backoff_max_s, self._rng))
            for t in config.targets
        ]
        self._client: httpx.AsyncClient | None = None
        if any(t.kind == "telegram" for t in self._targets):
            _install_httpx_filter()
        self._reload()

    def _reload(self) -> None:
        """Messages a previous run committed and did not settle: back in their queues."""
        if self._outbox is None:
            return
        by_name = {t.name: t for t in self._targets}
        kept = 0
        for seq, target_name, _, _, body in self._outbox.pending():
            target = by_name.get(target_name)
            try:
                alert = Alert.from_json(body)
            except (KeyError, TypeError, ValueError):
                alert = None
            if target is None or alert is None or not self._config.enabled:
                why = ("unreadable" if alert is None else "alerts.enabled is false"
                       if not self._config.enabled else "target no longer configured")
                log.warning("outbox row seq=%d for target=%s dropped (%s)", seq, target_name,
                            why)
                self._outbox.settle(seq)
                continue
            target.put(_Queued(alert, seq))
            kept += 1
        if kept:
            log.info("alerts: %d message(s) from the outbox queued again after the restart",
                     kept)

    # -- what the liveness tracker calls (never waits) ---------------------------------------

    def down(self, subject: Subject, since_ns: int, cause: str | None = None) -> None:
        """``subject`` is down since ``since_ns``; alert if it still is ``down_after_s`` later."""
        if not self._config.enabled or subject.id in self._watches:
            return
        self._watches[subject.id] = _Watch(subject, since_ns, cause,
                                           due_ns=since_ns + self._down_after_ns)
        self._timers_changed.set()

    def up(self, subject: Subject, at_ns: int) -> None:
        """``subject`` is back at ``at_ns``: "recovered" if its "down" went out, else nothing."""
        watch = self._watches.pop(subject.id, None)
        if watch is None:
            return
        self._timers_changed.set()
        if not watch.alerted:
            self._suppressed += 1
            log.debug("alert suppressed device=%s down_for_s=%.0f (under down_after_s=%.0f)",
                      subject.id, (at_ns - watch.since_ns) / _NS, self._config.down_after_s)
            return
        self._queue("recovered", subject, since_ns=watch.since_ns, at_ns=at_ns, cause=None)

    def forget(self, subject_id: str) -> None:
        """Stop watching ``subject_id`` without a message (it became unmonitored)."""
        if self._watches.pop(subject_id, None) is not None:
            self._timers_changed.set()

    def gateway_was_down(self, subject: Subject, start_ns: int, end_ns: int) -> None:
        """After a restart: the gateway was off from ``start_ns`` to ``end_ns``.

        The caller passes times it trusts (after the clock synced, never 1970)."""
        if not self._config.enabled:
            return
        if end_ns < start_ns:
            log.warning("gateway_was_down ignored: end before start gateway=%s", subject.id)
            return
        if end_ns - start_ns < self._down_after_ns:
            self._suppressed += 1
            return
        self._queue("gateway_restarted", subject, since_ns=start_ns, at_ns=end_ns, cause=None)

    def polder(self, event: PolderEvent, *, wifi_clients: int | None) -> None:
        """A flood warning, a fast rise, a sensor fault or its recovery: sent at once, ahead
        of device reminders."""
        if not self._config.enabled:
            return
        cfg = self._config
        st = event.state
        subject = Subject(st.id, st.name, "polder", self._site, None)
        text = polder_text(event, wifi_clients=wifi_clients,
                           utc_offset_minutes=cfg.utc_offset_minutes, zone_name=cfg.zone_name)
        fields = polder_fields(event, wifi_clients=wifi_clients)
        self._enqueue(Alert(event.kind, subject, st.since_ns or event.at_ns, event.at_ns,
                            event.reason, text, queued_ns=self._clock.now_ns(),
                            id=uuid.uuid4().hex, fields=fields))

    def statistics(self) -> AlertStats:
        alerted = sum(1 for w in self._watches.values() if w.alerted)
        return AlertStats(
            enabled=self._config.enabled,
            waiting=len(self._watches) - alerted,
            down=alerted,
            suppressed=self._suppressed,
            targets=tuple(t.stats() for t in self._targets),
            outbox_rows=self._outbox.count() if self._outbox is not None else None,
            not_durable=self._not_durable,
        )

    # -- the task ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Fire timers and deliver, until cancelled."""
        if not self._config.enabled:
            # Nothing to do; stay a well-behaved long-lived task until cancelled.
            await asyncio.Event().wait()
            return
        client = self._ensure_client()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._run_timers(), name="alerts.timers")
            for target in self._targets:
                tg.create_task(self._run_target(target, client),
                               name=f"alerts[{target.name}].deliver")

    async def aclose(self) -> None:
        """Close the HTTP client (after :meth:`run` was cancelled)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _ensure_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                trust_env=False,
                timeout=httpx.Timeout(self._config.timeout_s),
                follow_redirects=False,
                headers={"User-Agent": "garden-gateway-alerts"},
            )
        return self._client

    # -- timers ------------------------------------------------------------------------------

    async def _run_timers(self) -> None:
        while True:
            self._timers_changed.clear()
            self._fire_due(self._clock.now_ns())
            due = [w.due_ns for w in self._watches.values() if w.due_ns is not None]
            await self._wait(self._timers_changed, min(due, default=None))

    def _fire_due(self, now: int) -> None:
        for watch in list(self._watches.values()):
            if watch.due_ns is None or watch.due_ns > now:
                continue
            event: AlertEvent = "reminder" if watch.alerted else "down"
            watch.alerted = True
            self._queue(event, watch.subject, since_ns=watch.since_ns, at_ns=now,
                        cause=watch.cause)
            if self._repeat_ns is None:
                watch.due_ns = None
            else:
                # After a long stall (suspend, clock step) one reminder, not a burst.
                watch.due_ns += self._repeat_ns
                if watch.due_ns <= now:
                    watch.due_ns = now + self._repeat_ns

    async def _wait(self, event: asyncio.Event, deadline_ns: int | None) -> None:
        """Until ``event`` is set or the clock reaches ``deadline_ns``."""
        if event.is_set():
            return
        if deadline_ns is None:
            await event.wait()
            return
        delay = (deadline_ns - self._clock.now_ns()) / _NS
        if delay <= 0:
            return
        await clock_sleep_or_event(self._clock, delay, event)

    # -- queues ------------------------------------------------------------------------------

    def _queue(self, event: AlertEvent, subject: Subject, *, since_ns: int, at_ns: int,
               cause: str | None) -> None:
        cfg = self._config
        if not subject.site:
            subject = Subject(subject.id, subject.name, subject.kind, self._site, subject.zone)
        text = message_text(event, subject, since_ns=since_ns, at_ns=at_ns, cause=cause,
                            utc_offset_minutes=cfg.utc_offset_minutes, zone_name=cfg.zone_name)
        now = self._clock.now_ns()
        self._enqueue(Alert(event, subject, since_ns, at_ns, cause, text, queued_ns=now,
                            id=uuid.uuid4().hex))

    def _enqueue(self, alert: Alert) -> None:
        """On the card first (one row per target, one transaction), then in the queues."""
        now = self._clock.now_ns()
        log.debug("alert queued event=%s device=%s site=%s targets=%d id=%s", alert.event,
                  alert.subject.id, alert.subject.site, len(self._targets), alert.id)
        seqs: list[int | None] = [None] * len(self._targets)
        if self._outbox is not None and self._targets:
            body = alert.to_json()
            try:
                seqs = list(self._outbox.add(
                    (t.name, alert.id, alert.priority, alert.queued_ns, body)
                    for t in self._targets))
            except sqlite3.Error:
                self._not_durable += 1  # the card refused: sent from memory all the same
        for target, seq in zip(self._targets, seqs, strict=True):
            if len(target.queue) >= target.max_pending:
                # The least urgent, oldest message makes room.
                victim = max(target.queue, key=lambda q: q.alert.priority)
                target.queue.remove(victim)
                self._settle(victim)
                self._drop(target, victim.alert, "queue_full", now)
            target.put(_Queued(alert, seq))
            target.wakeup.set()

    def _settle(self, item: _Queued) -> None:
        if item.seq is not None and self._outbox is not None:
            self._outbox.settle(item.seq)

    def _drop(self, target: _Target, alert: Alert, reason: str, now: int) -> None:
        target.dropped += 1
        # A long outage of the target can overflow its queue with every new alert: one line a
        # minute says so without flooding the journal.
        last = target.last_drop_log_ns
        if reason != "queue_full" or last is None or now - last >= 60 * _NS:
            target.last_drop_log_ns = now
            log.warning("alert dropped target=%s reason=%s event=%s device=%s dropped_total=%d",
                        target.name, reason, alert.event, alert.subject.id, target.dropped)

    # -- delivery ----------------------------------------------------------------------------

    async def _run_target(self, target: _Target, client: httpx.AsyncClient) -> None:
        while True:
            while not target.queue:
                target.wakeup.clear()
                await target.wakeup.wait()
            item = target.queue.popleft()
            target.inflight = item
            settled = False
            try:
                await self._deliver(target, client, item.alert)
                settled = True
            finally:
                target.inflight = None
                if settled:
                    self._settle(item)
                else:
                    # Cancelled mid-delivery: first again in the next run(); its outbox row
                    # stays for the next start either way.
                    target.queue.appendleft(item)

    async def _deliver(self, target: _Target, client: httpx.AsyncClient, alert: Alert) -> None:
        attempts = 0
        expires = alert.queued_ns + self._give_up_ns
        while True:
            now = self._clock.now_ns()
            if now >= expires:
                self._drop(target, alert, "expired", now)
                return
            if target.not_before_ns > now:
                await self._clock.sleep((min(target.not_before_ns, expires) - now) / _NS)
                continue
            attempts += 1
            outcome = await self._attempt(target, client, alert)
            now = self._clock.now_ns()
            if outcome.result == "sent":
                target.sent += 1
                target.last_sent_ns = now
                target.not_before_ns = 0
                target.backoff.reset()
                log.info("alert sent target=%s kind=%s event=%s device=%s attempts=%d",
                         target.name, target.kind, alert.event, alert.subject.id, attempts)
                return
            target.last_error = outcome.error
            if outcome.result == "failed":
                target.failed += 1
                # The target answered, so it is reachable: the next message goes at once.
                target.not_before_ns = 0
                target.backoff.reset()
                log.warning("alert failed target=%s kind=%s event=%s device=%s attempts=%d "
                            "error=%s", target.name, target.kind, alert.event, alert.subject.id,
                            attempts, outcome.error)
                return
            delay = target.backoff.next()
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            target.retries += 1
            target.not_before_ns = now + int(delay * _NS)
            log.info("alert retry target=%s event=%s device=%s attempt=%d in_s=%.1f error=%s",
                     target.name, alert.event, alert.subject.id, attempts, delay, outcome.error)

    async def _attempt(self, target: _Target, client: httpx.AsyncClient,
                       alert: Alert) -> _Outcome:
        config = target.config
        try:
            if isinstance(config, TelegramTarget):
                token = config.bot_token.get_secret_value()
                response = await client.post(
                    f"{config.api_url}/bot{token}/sendMessage",
                    json={"chat_id": config.chat_id, "text": alert.text,
                          "disable_web_page_preview": True},
                )
            else:
                response = await client.post(
                    config.url, json=webhook_body(alert, gateway_id=self._gateway_id),
                    headers=config.headers,
                )
        except httpx.HTTPError as exc:
            return _Outcome("retry", target.redact(f"{type(exc).__name__}: {exc}".rstrip(": ")))
        return self._classify(target, response)

    def _classify(self, target: _Target, response: httpx.Response) -> _Outcome:
        status = response.status_code
        body = _json(response)
        telegram = target.kind == "telegram"
        if telegram and isinstance(body, dict) and isinstance(body.get("description"), str):
            description = str(body["description"])
        else:
            description = " ".join(response.text.split())
        if 200 <= status < 300:
            if not telegram or (isinstance(body, dict) and body.get("ok") is True):
                return _Outcome("sent")
            return _Outcome("failed", target.redact(
                f"Telegram answered {status} without ok=true: {description}"))
        retry_after = parse_retry_after(response.headers.get("Retry-After"),
                                        now=self._clock.now_ns() / _NS)
        params = body.get("parameters") if isinstance(body, dict) else None
        if isinstance(params, dict) and isinstance(params.get("retry_after"), int | float):
            retry_after = max(retry_after or 0.0, float(params["retry_after"]))
        hint = _telegram_hint(status, description, body) if telegram else ""
        error = target.redact(f"HTTP {status}: {description}{hint}")
        if status in (408, 429) or status >= 500:
            return _Outcome("retry", error, retry_after)
        return _Outcome("failed", error)


__all__ = [
    "KIND_LABELS",
    "Alert",
    "AlertEvent",
    "AlertStats",
    "Alerter",
    "AlertsConfig",
    "Subject",
    "TargetStats",
    "TelegramTarget",
    "WebhookTarget",
    "human_duration",
    "message_text",
    "webhook_body",
]
