"""Flood early warning at run time: every polder reading judged, levelled and estimated.

:mod:`gateway.park.polder` holds the pure parts (is a reading believable, how fast does the
water rise, which warning level); this module feeds them the live readings, adds what needs a
clock or a second sensor, and says what happened:

- **stale**: no reading of the sensor for three ``interval_s`` (:meth:`FloodWatch.check`, on
  the gateway's clock);
- **disagree**: a second sensor of the same polder (``second``) further than ``disagree_by``
  from the first, both otherwise trusted: neither is believed;
- a verdict that is not ``ok`` for :data:`FAULT_AFTER` readings in a row (or stale, or a
  flatline, which are already long) is a *sensor fault*: one ``polder_sensor_fault`` event, and
  ``polder_sensor_ok`` when a reading is trusted again. A single spike is rejected and counted,
  not reported as a fault;
- an untrusted reading never moves the warning level; a trusted one may
  (``polder_level``, up at once, down after hysteresis and the hold);
- ``polder_rising`` when the rise passes ``rise_alert_per_h``: over the window (Theil-Sen), or
  at once when the last three trusted readings each rise and together by more than
  1.5 x the sensor's noise (a rise no noise explains); the window's rise counts, and the time to
  the next level is given, only once the fitted rise across the window is larger than that too;
- every judged reading becomes a ``polder_status`` point (level state, trend, time to the
  next level and its band, quality): the raw reading itself is delivered untouched as always.

Events go to ``notify`` (the alerts), points to ``emit`` (the spool); neither waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from devices.reading import DecodeError, FieldValue, Reading
from gateway.config.polder import PolderConfig
from gateway.core.clock import Clock
from gateway.park.polder import LEVELS, NS, Estimate, LevelState, Quality, Slope, theil_sen
from gateway.store.lineproto import encode

log = logging.getLogger(__name__)

PolderEventKind = Literal["polder_level", "polder_rising", "polder_sensor_fault",
                          "polder_sensor_ok"]
# Untrusted readings in a row that make a sensor fault (stale and flatline: at once).
FAULT_AFTER = 2
STALE_INTERVALS = 3
# The rise over the last three trusted readings that no noise explains, in noise units.
SHORT_RISE_NOISE = 1.5
MEASUREMENT = "polder_status"
# The low end of the window's slope band that must reach this share of rise_alert_per_h.
RISE_BAND_SHARE = 0.75


@dataclass(frozen=True, slots=True)
class PolderState:
    """What the gateway believes about one polder now (the API's and the alerts' fields)."""

    id: str
    name: str
    device: str
    field: str
    unit: str
    level: float | None          # the last trusted reading; None while the sensor is faulty
    level_time_ns: int | None
    alert_level: str             # normal, waspada, siaga, awas; "unknown" before any reading
    since_ns: int | None         # since when at alert_level
    trend_per_h: float | None
    eta_next_s: float | None
    eta_low_s: float | None
    eta_high_s: float | None
    next_level: str | None
    quality: str                 # "ok", or the reason: range, spike, flatline, stale, disagree
    fault: bool                  # the quality problem is confirmed (alerted, shown)
    fault_since_ns: int | None
    rising: bool
    thresholds: dict[str, float]
    rain_mm_1h: float | None = None


@dataclass(frozen=True, slots=True)
class PolderEvent:
    kind: PolderEventKind
    at_ns: int
    state: PolderState
    previous_alert_level: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class _Second:
    quality: Quality
    last: tuple[int, float] | None = None  # the last trusted reading


@dataclass(slots=True)
class _Rain:
    counter: bool
    last_total: float | None = None
    amounts: deque[tuple[int, float]] = field(default_factory=deque)  # (time, mm)

    def add(self, time_ns: int, value: float) -> None:
        if value < 0:
            return
        if self.counter:
            last, self.last_total = self.last_total, value
            if last is None or value < last:   # first reading, or the counter was reset
                return
            value -= last
        self.amounts.append((time_ns, value))

    def last_hour(self, now_ns: int) -> float | None:
        while self.amounts and self.amounts[0][0] <= now_ns - 3600 * NS:
            self.amounts.popleft()
        if not self.amounts and self.last_total is None:
            return None
        return round(sum(v for _, v in self.amounts), 2)


@dataclass(slots=True)
class _Watch:
    cfg: PolderConfig
    quality: Quality
    level: LevelState
    rise_per_h: float
    noise: float
    second: _Second | None
    rain: _Rain | None
    heard_ns: int | None = None          # on the gateway's clock: for staleness
    last: tuple[int, float] | None = None  # the last trusted reading
    reason: str | None = None            # the last verdict's reason
    bad_in_row: int = 0
    fault: str | None = None             # confirmed
    fault_since_ns: int | None = None
    rising: bool = False
    rising_at_ns: int | None = None
    recent: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=3))
    judged: dict[str, int] = field(default_factory=dict)  # reason ("ok") -> readings
    estimate: Estimate | None = None
    slope: Slope | None = None
    evident: bool = False


def _watch(cfg: PolderConfig) -> _Watch:
    noise = cfg.amount("noise")

    def quality() -> Quality:
        return Quality(low=cfg.sensor_min if cfg.sensor_min is not None else float("-inf"),
                       high=cfg.sensor_max if cfg.sensor_max is not None else float("inf"),
                       max_rate_per_h=cfg.amount("max_rate_per_h"),
                       flatline_s=cfg.flatline_s, tolerance=noise)

    return _Watch(cfg=cfg, quality=quality(),
                  level=LevelState(cfg.thresholds.values(), hysteresis=cfg.amount("hysteresis"),
                                   min_hold_s=cfg.min_hold_s, window_s=cfg.window_s),
                  rise_per_h=cfg.amount("rise_alert_per_h"), noise=noise,
                  second=_Second(quality()) if cfg.second is not None else None,
                  rain=_Rain(cfg.rain.counter) if cfg.rain is not None else None)


class FloodWatch:
    """The polders of one gateway: readings in, states, events and ``polder_status`` out."""

    def __init__(self, polders: Sequence[PolderConfig], *, clock: Clock, site: str,
                 gateway_id: str, notify: Callable[[PolderEvent], None],
                 emit: Callable[[list[str]], None],
                 save: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._clock = clock
        self._save = save
        self._site = site
        self._gateway_id = gateway_id
        self._notify = notify
        self._emit = emit
        self._watches = [_watch(p) for p in polders]
        # device -> [(watch, field, role)]: the hot path looks up one dict per reading.
        self._by_device: dict[str, list[tuple[_Watch, str, str]]] = {}
        for w in self._watches:
            self._by_device.setdefault(w.cfg.device, []).append((w, w.cfg.field, "level"))
            if w.cfg.second is not None:
                self._by_device.setdefault(w.cfg.second.device, []).append(
                    (w, w.cfg.second.field, "second"))
            if w.cfg.rain is not None:
                self._by_device.setdefault(w.cfg.rain.device, []).append(
                    (w, w.cfg.rain.field, "rain"))
        self.events = 0
        self._started_ns = clock.now_ns()
        # Hear every judged reading of a polder: (its state now, whether it was trusted).
        self.listeners: list[Callable[[PolderState, bool], None]] = []

    @property
    def enabled(self) -> bool:
        return bool(self._watches)

    # -- across restarts ---------------------------------------------------------------------

    def remembered(self) -> dict[str, Any]:
        """What a restart must not forget: each polder's warning level and its sensor fault
        (what was last said about them), for ``save``."""
        return {w.cfg.device: {"level": w.level.level, "changed_ns": w.level.changed_ns,
                               "fault": w.fault, "fault_since_ns": w.fault_since_ns}
                for w in self._watches}

    def restore(self, saved: Any) -> None:
        """The levels and faults of the last run: a restart during a storm does not announce
        Siaga again as if from Normal, and a fault said before it still gets its recovery."""
        if not isinstance(saved, dict):
            return
        for w in self._watches:
            one = saved.get(w.cfg.device)
            if not isinstance(one, dict):
                continue
            level = one.get("level")
            if isinstance(level, int) and 0 <= level < len(LEVELS):
                w.level.level = level
                changed = one.get("changed_ns")
                w.level.changed_ns = changed if isinstance(changed, int) else None
            fault = one.get("fault")
            if isinstance(fault, str):
                w.fault = fault
                since = one.get("fault_since_ns")
                w.fault_since_ns = since if isinstance(since, int) else None

    def _remember(self) -> None:
        if self._save is not None:
            self._save(self.remembered())

    # -- readings (the ingest path calls this; never waits) --------------------------------

    def readings(self, readings: Sequence[Reading]) -> None:
        if not self._by_device:
            return
        lines: list[str] = []
        for r in readings:
            device = r.tag("device")
            watching = self._by_device.get(device) if device is not None else None
            if not watching:
                continue
            for w, name, role in watching:
                value = _field(r, name)
                if value is None:
                    continue
                if role == "level":
                    line = self._primary(w, r.time_ns, value)
                    if line is not None:
                        lines.append(line)
                elif role == "second":
                    self._secondary(w, r.time_ns, value)
                elif w.rain is not None:
                    w.rain.add(r.time_ns, value)
        if lines:
            self._emit(lines)

    def _secondary(self, w: _Watch, time_ns: int, value: float) -> None:
        second = w.second
        assert second is not None
        if second.quality.judge(time_ns, value).trusted:
            second.last = (time_ns, value)

    def _primary(self, w: _Watch, time_ns: int, value: float) -> str | None:
        now = self._clock.now_ns()
        w.heard_ns = now
        verdict = w.quality.judge(time_ns, value)
        reason = verdict.reason
        if verdict.trusted and w.second is not None and w.second.last is not None:
            t2, v2 = w.second.last
            fresh = abs(time_ns - t2) <= STALE_INTERVALS * w.cfg.interval_s * NS
            if fresh and abs(value - v2) > w.cfg.amount("disagree_by"):
                reason = "disagree"
        w.judged[reason or "ok"] = w.judged.get(reason or "ok", 0) + 1
        if reason is None:
            self._trusted(w, time_ns, value)
        else:
            self._untrusted(w, time_ns, reason, confirmed=reason == "flatline")
        state = self._state(w)
        for listener in self.listeners:
            listener(state, reason is None)
        return self._point(w, state, time_ns, value)

    def _trusted(self, w: _Watch, time_ns: int, value: float) -> None:
        was_fault = w.fault
        w.reason, w.bad_in_row, w.last = None, 0, (time_ns, value)
        if was_fault is not None:
            w.fault, w.fault_since_ns = None, None
            self._event("polder_sensor_ok", w, time_ns, reason=was_fault)
        previous = w.level.name
        change = w.level.add(time_ns, value)
        w.recent.append((time_ns, value))
        w.slope = w.level.slope()
        # A rise no noise explains: the fitted rise across the window's readings is larger
        # than the sensor's noise. Before that (a fresh start, still water) no estimate.
        w.evident = w.slope is not None and w.slope.per_h > 0 and (
            w.slope.per_h * (time_ns - (w.level.window_start_ns or time_ns)) / NS / 3600
            > SHORT_RISE_NOISE * w.noise)
        w.estimate = w.level.estimate() if w.evident else None
        if change is not None:
            self._event("polder_level", w, time_ns, previous=previous)
        self._rise(w, time_ns)

    def _rise(self, w: _Watch, time_ns: int) -> None:
        slope = w.slope
        # The window's rise: its median past the limit and most of its band near it, so a rise
        # just under the limit does not cross it on the noise.
        fast = (w.evident and slope is not None and slope.per_h >= w.rise_per_h
                and slope.low_per_h >= RISE_BAND_SHARE * w.rise_per_h)
        if not fast and len(w.recent) == w.recent.maxlen:
            (_, a), (_, b), (_, c) = w.recent
            short = theil_sen(list(w.recent))
            fast = (a < b < c and c - a > SHORT_RISE_NOISE * w.noise
                    and short is not None and short.per_h >= w.rise_per_h)
        if w.rising:
            if slope is None or slope.per_h < w.rise_per_h / 2:
                w.rising = False
            return
        if not fast:
            return
        hold = int(w.cfg.min_hold_s * NS)
        w.rising = True
        if w.rising_at_ns is None or time_ns - w.rising_at_ns >= hold:
            w.rising_at_ns = time_ns
            self._event("polder_rising", w, time_ns)

    def _untrusted(self, w: _Watch, time_ns: int, reason: str, *, confirmed: bool) -> None:
        w.reason = reason
        w.bad_in_row += 1
        w.estimate = None
        if w.fault is None and (confirmed or w.bad_in_row >= FAULT_AFTER):
            w.fault, w.fault_since_ns = reason, time_ns
            self._event("polder_sensor_fault", w, time_ns, reason=reason)
        elif w.fault is not None and w.fault != reason and confirmed:
            w.fault = reason

    # -- the clock's part ------------------------------------------------------------------

    def check(self) -> None:
        """Stale sensors: nothing heard for three intervals (since start, or since the last
        reading). Called by :meth:`run`; tests call it after moving a fake clock."""
        now = self._clock.now_ns()
        lines: list[str] = []
        for w in self._watches:
            since = w.heard_ns if w.heard_ns is not None else self._started_ns
            if now - since < STALE_INTERVALS * w.cfg.interval_s * NS or w.fault == "stale":
                continue
            w.judged["stale"] = w.judged.get("stale", 0) + 1
            self._untrusted(w, now, "stale", confirmed=True)
            w.fault = "stale"
            line = self._point(w, self._state(w), now, None)
            if line is not None:
                lines.append(line)
        if lines:
            self._emit(lines)

    async def run(self) -> None:
        """Check for stale sensors every half of the shortest interval, until cancelled."""
        if not self._watches:
            await asyncio.Event().wait()
        step = min(w.cfg.interval_s for w in self._watches) / 2
        while True:
            await self._clock.sleep(step)
            self.check()

    # -- what others read -------------------------------------------------------------------

    def states(self) -> list[PolderState]:
        return [self._state(w) for w in self._watches]

    def state_of(self, device: str) -> PolderState | None:
        for w in self._watches:
            if w.cfg.device == device:
                return self._state(w)
        return None

    def statistics(self) -> dict[str, Any]:
        return {w.cfg.device: dict(w.judged) for w in self._watches}

    def _state(self, w: _Watch) -> PolderState:
        cfg, level, est = w.cfg, w.level, w.estimate
        trusted = w.fault is None and w.last is not None
        slope = w.slope if trusted else None
        return PolderState(
            id=cfg.device, name=cfg.title, device=cfg.device, field=cfg.field, unit=cfg.unit,
            level=w.last[1] if trusted and w.last is not None else None,
            level_time_ns=w.last[0] if trusted and w.last is not None else None,
            alert_level=level.name if w.last is not None or level.level else "unknown",
            since_ns=level.changed_ns,
            trend_per_h=round(slope.per_h, 4) if slope is not None else None,
            eta_next_s=round(est.eta_s, 1) if est is not None and trusted else None,
            eta_low_s=round(est.low_s, 1) if est is not None and trusted else None,
            eta_high_s=(round(est.high_s, 1) if est is not None and trusted
                        and est.high_s is not None else None),
            next_level=est.next_level if est is not None and trusted else None,
            quality=w.fault or w.reason or "ok", fault=w.fault is not None,
            fault_since_ns=w.fault_since_ns, rising=w.rising and trusted,
            thresholds=cfg.thresholds.model_dump(),
            rain_mm_1h=w.rain.last_hour(self._clock.now_ns()) if w.rain is not None else None)

    def _event(self, kind: PolderEventKind, w: _Watch, at_ns: int, *,
               previous: str | None = None, reason: str | None = None) -> None:
        self.events += 1
        if kind != "polder_rising":
            self._remember()
        state = self._state(w)
        log.log(logging.WARNING if kind != "polder_sensor_ok" else logging.INFO,
                "%s polder=%s alert_level=%s previous=%s quality=%s level=%s trend_per_h=%s",
                kind, w.cfg.device, state.alert_level, previous, state.quality, state.level,
                state.trend_per_h)
        self._notify(PolderEvent(kind, at_ns, state, previous_alert_level=previous,
                                 reason=reason))

    def _point(self, w: _Watch, state: PolderState, time_ns: int,
               value: float | None) -> str | None:
        fields: dict[str, FieldValue] = {
            "alert_level": state.alert_level,
            "alert_level_index": LEVELS.index(state.alert_level)
            if state.alert_level in LEVELS else -1,
            "quality": state.quality, "trusted": state.quality == "ok",
            "rising": state.rising}
        if value is not None:
            fields["reading"] = float(value)
        for key in ("trend_per_h", "eta_next_s", "eta_low_s", "eta_high_s"):
            number = getattr(state, key)
            if number is not None:
                fields[key] = float(number)
        if state.next_level is not None:
            fields["next_level"] = state.next_level
        tags = {"device": w.cfg.device, "site": self._site, "gateway": self._gateway_id}
        try:
            return encode(Reading.build(MEASUREMENT, tags, fields, time_ns))
        except DecodeError as exc:
            log.warning("polder_status for polder=%s not written: %s", w.cfg.device, exc)
            return None


def _field(r: Reading, name: str) -> float | None:
    for key, value in r.fields:
        if key == name:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            return float(value)
    return None
