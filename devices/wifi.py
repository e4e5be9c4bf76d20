"""Access-point traffic: byte counters and rates become current rates and daily totals.

Access points report traffic per interface in one of two shapes (see :mod:`devices.collectd`):
byte counters (``rx_bytes``, ``tx_bytes``: cumulative, wrapping at 2**32 or 2**64, restarting
near 0 when the AP reboots), or rates (``rx_bytes_per_s``, ``tx_bytes_per_s``: collectd's default
``StoreRates`` sends bytes per second over the last interval). ``clients`` is a gauge per radio.

:class:`ByteCounter` turns one counter series into steps, telling a wrap from a reboot by the
rate each would imply. :class:`UsageTracker` keeps, per AP, the current rates and the bytes of
the local day (the park's residents and the regency think in local days, WITA by default), and
can hand those totals over a restart through :meth:`UsageTracker.snapshot`.

Like everything in ``devices/`` this is pure: the caller passes every time (``t_ns`` of a
sample, ``now_ns`` of a question); nothing here reads a clock.

Decisions worth knowing when reading the numbers:

- A sample that is not newer than the previous one of its series (a duplicate, or a message
  that overtook another) changes nothing: the counters are cumulative, so the next newer
  sample counts those bytes anyway. A sample more than ``max_gap_s`` *older* than the previous
  one is not a straggler but a clock that jumped back (an AP without a real-time clock boots
  with a stale time until NTP syncs): it becomes the new baseline, as a "gap".
- A step is believed only if the rate it implies is at most ``max_rate_bps``: an increase
  faster than that is a "gap" (nothing counted, new baseline) rather than terabytes of phantom
  traffic; so no step ever counts more than ``max_rate_bps / 8 * max_gap_s`` bytes.
- For a 32-bit counter a wrap and a reboot look alike (both go down): the rule above decides,
  and with a generous ``max_rate_bps`` a reboot that happens while the counter is low is read
  as a wrap. Set ``max_rate_bps`` to what the AP can really carry to narrow that window.
- A step is counted into the local day in which it *ends*: the bytes of a step spanning
  midnight go to the new day. A step ending in a day before the AP's current day (a late
  message from another interface after midnight) is not counted: yesterday is closed.
"""

from __future__ import annotations

import fnmatch
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any, Literal, TypeGuard

StepKind = Literal["first", "ok", "wrap32", "wrap64", "reset", "gap"]
EVENT_KINDS: tuple[StepKind, ...] = ("wrap32", "wrap64", "reset", "gap")

_NS = 10**9
_DAY_NS = 86_400 * _NS
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MAX_TIME_NS = 2**63  # what InfluxDB (and Reading) can hold; beyond it, days are not dates
_COUNTER_LIMIT = 2**64
# No radio has this many associated stations; a larger "clients" is a broken sender.
_MAX_CLIENTS = 100_000
_DIRECTIONS = ("rx", "tx")
_SNAPSHOT_VERSION = 1


def local_day(t_ns: int, utc_offset_minutes: int) -> int:
    """Days since 1970-01-01 in local time ``utc_offset_minutes`` east of UTC."""
    return (t_ns + utc_offset_minutes * 60 * _NS) // _DAY_NS


def day_text(day: int) -> str:
    """``YYYY-MM-DD`` of a :func:`local_day` number."""
    return date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


@dataclass(frozen=True, slots=True)
class CounterStep:
    """What one counter sample meant.

    ``delta`` is the bytes counted for the step (None for "first" and "gap": nothing can be
    said). ``rate_bps`` is bits per second over the step, None for "first", "reset", "gap" and
    for a sample that was not newer than the previous one; that last case is ``kind == "ok"``,
    ``delta == 0``, ``rate_bps is None`` and leaves the counter as it was.
    """

    kind: StepKind
    delta: int | None
    rate_bps: float | None


class ByteCounter:
    """One monotonically increasing byte counter (one interface, one direction)."""

    __slots__ = ("_gap_ns", "_last_ns", "_last_value", "_max_rate_bps")

    def __init__(self, *, max_rate_bps: float = 10e9, max_gap_s: float = 3600.0) -> None:
        if not (math.isfinite(max_rate_bps) and max_rate_bps > 0):
            raise ValueError(f"max_rate_bps must be a positive number, got {max_rate_bps!r}")
        if not (math.isfinite(max_gap_s) and max_gap_s > 0):
            raise ValueError(f"max_gap_s must be a positive number, got {max_gap_s!r}")
        self._max_rate_bps = float(max_rate_bps)
        self._gap_ns = max_gap_s * _NS
        self._last_value: int | None = None
        self._last_ns: int | None = None

    @property
    def last_value(self) -> int | None:
        return self._last_value

    @property
    def last_ns(self) -> int | None:
        return self._last_ns

    def update(self, value: int, t_ns: int) -> CounterStep:
        if type(value) is not int:
            raise TypeError(f"counter value must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"counter value {value} is negative")
        if value >= _COUNTER_LIMIT:
            raise ValueError(f"counter value {value} does not fit 64 bits")
        prev, prev_ns = self._last_value, self._last_ns
        if prev is None or prev_ns is None:
            self._last_value, self._last_ns = value, t_ns
            return CounterStep("first", None, None)
        dt_ns = t_ns - prev_ns
        if dt_ns <= 0:
            if -dt_ns > self._gap_ns:
                # The sender's clock went back (see the module docstring): start again there.
                return self._rebase(value, t_ns)
            return CounterStep("ok", 0, None)
        if dt_ns > self._gap_ns:
            return self._rebase(value, t_ns)
        kind: StepKind
        if value >= prev:
            kind, delta = "ok", value - prev
        elif prev < 2**32 and self._plausible(value + 2**32 - prev, dt_ns):
            kind, delta = "wrap32", value + 2**32 - prev
        elif self._plausible(value + 2**64 - prev, dt_ns):
            kind, delta = "wrap64", value + 2**64 - prev
        else:
            # The AP rebooted: its counter restarted at 0 somewhere within the step, so the
            # value is what it carried since. The rate is unknown (when did it reboot?).
            if not self._plausible(value, dt_ns):
                return self._rebase(value, t_ns)
            self._last_value, self._last_ns = value, t_ns
            return CounterStep("reset", value, None)
        if not self._plausible(delta, dt_ns):
            return self._rebase(value, t_ns)
        self._last_value, self._last_ns = value, t_ns
        return CounterStep(kind, delta, delta * 8 * _NS / dt_ns)

    def _plausible(self, nbytes: int, dt_ns: int) -> bool:
        return nbytes * 8 * _NS <= self._max_rate_bps * dt_ns

    def _rebase(self, value: int, t_ns: int) -> CounterStep:
        self._last_value, self._last_ns = value, t_ns
        return CounterStep("gap", None, None)


@dataclass(frozen=True, slots=True)
class ApUsage:
    """One access point now: current rates (bits/s), today's bytes, connected clients.

    ``rx_bps``, ``tx_bps`` and ``clients`` are None when no counted interface reported one
    within ``fresh_s``. ``events`` counts wraps, resets and gaps since the tracker started.
    """

    device: str
    site: str
    rx_bps: float | None
    tx_bps: float | None
    rx_bytes_today: int
    tx_bytes_today: int
    clients: int | None
    day: str
    last_ns: int | None
    events: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class SiteUsage:
    """The sum over a site's access points; ``aps_reporting`` counts those heard within
    ``fresh_s``."""

    site: str
    rx_bps: float
    tx_bps: float
    rx_bytes_today: int
    tx_bytes_today: int
    clients: int
    aps_reporting: int
    day: str


class _Series:
    """One interface and direction of one AP, fed by a counter or by rates, never both at once:
    switching drops the other's baseline so that no interval is counted twice."""

    __slots__ = ("bps", "bps_ns", "counter", "counter_ns", "rate_ns")

    def __init__(self) -> None:
        self.counter: ByteCounter | None = None
        self.counter_ns: int | None = None  # last counter sample used
        self.rate_ns: int | None = None  # last rate sample used (the start of the next step)
        self.bps: float | None = None
        self.bps_ns = 0


class _Ap:
    __slots__ = ("clients", "day", "events", "last_ns", "series", "site", "today")

    def __init__(self, site: str) -> None:
        self.site = site
        self.day: int | None = None  # the local day ``today`` belongs to
        self.today = [0, 0]  # rx, tx bytes
        self.last_ns: int | None = None
        self.series: dict[tuple[str, int], _Series] = {}
        self.clients: dict[str, tuple[int, int]] = {}  # interface -> (count, t_ns)
        self.events: dict[str, int] = dict.fromkeys(EVENT_KINDS, 0)


class UsageTracker:
    """Per-AP rates, daily byte totals and clients, from what :func:`observe` is shown.

    Memory is bounded: at most ``max_series`` series (one per AP, interface and direction, and
    one per radio for clients) and at most ``max_series`` APs. When a new one would exceed
    that, the AP heard from least recently is forgotten whole, totals included; an AP that
    alone fills the bound gets no new series. Interface names arrive from the network, so
    without this a sender inventing names could grow the gateway without end.
    """

    def __init__(
        self,
        *,
        utc_offset_minutes: int = 480,
        interfaces: Sequence[str] = ("wlan*", "phy*", "ath*", "wifi*"),
        max_rate_bps: float = 10e9,
        max_gap_s: float = 3600.0,
        fresh_s: float = 180.0,
        max_series: int = 10_000,
    ) -> None:
        if type(utc_offset_minutes) is not int or not -14 * 60 <= utc_offset_minutes <= 14 * 60:
            raise ValueError(f"utc_offset_minutes must be within ±840, got {utc_offset_minutes!r}")
        if isinstance(interfaces, str):
            raise TypeError("interfaces is a sequence of patterns, not one string")
        if not (math.isfinite(fresh_s) and fresh_s > 0):
            raise ValueError(f"fresh_s must be a positive number, got {fresh_s!r}")
        if max_series < 1:
            raise ValueError(f"max_series must be at least 1, got {max_series!r}")
        ByteCounter(max_rate_bps=max_rate_bps, max_gap_s=max_gap_s)  # checks both
        self._offset = utc_offset_minutes
        self._patterns = tuple(interfaces)
        self._max_rate_bps = float(max_rate_bps)
        self._max_gap_s = float(max_gap_s)
        self._gap_ns = max_gap_s * _NS
        self._fresh_ns = fresh_s * _NS
        self._max_series = max_series
        self._aps: OrderedDict[str, _Ap] = OrderedDict()
        self._n_series = 0
        self._counted: dict[str, bool] = {}

    # --- input ---------------------------------------------------------------------------

    def observe(
        self,
        device: str,
        site: str,
        interface: str | None,
        fields: Mapping[str, object],
        t_ns: int,
    ) -> bool:
        """Take what a reading says about traffic and clients; True if anything was used.

        Values that make no sense (bools, NaN, infinities, negatives, fractional counters,
        rates above ``max_rate_bps``) are ignored, never raised: a bad AP must not stop the
        pipeline. A message with both a counter and a rate for a direction uses the counter,
        which is exact.
        """
        if type(t_ns) is not int or not 0 <= t_ns < _MAX_TIME_NS:
            return False
        if not isinstance(device, str) or not isinstance(site, str):
            return False
        if interface is None:
            interface = ""
        elif not isinstance(interface, str) or not self._is_counted(interface):
            return False
        wanted: list[tuple[int, int | None, float | None]] = []
        for direction, name in enumerate(_DIRECTIONS):
            counter = _as_counter(fields.get(f"{name}_bytes"))
            rate = None if counter is not None else _as_rate(fields.get(f"{name}_bytes_per_s"))
            if rate is not None and rate * 8 > self._max_rate_bps:
                rate = None
            if counter is not None or rate is not None:
                wanted.append((direction, counter, rate))
        clients = _as_clients(fields.get("clients"))
        if not wanted and clients is None:
            return False  # before touching the AP table, so junk cannot evict anything
        ap = self._aps.get(device)
        if ap is None:
            ap = self._new_ap(device, site)
        else:
            self._aps.move_to_end(device)
            ap.site = site
        used = False
        for direction, counter, rate in wanted:
            key = (interface, direction)
            if counter is not None:
                used |= self._counter(ap, device, key, counter, t_ns)
            elif rate is not None:
                used |= self._rate(ap, device, key, rate, t_ns)
        if clients is not None:
            used |= self._clients(ap, device, interface, clients, t_ns)
        if used:
            ap.last_ns = t_ns if ap.last_ns is None else max(ap.last_ns, t_ns)
        elif not ap.series and not ap.clients and ap.day is None:
            del self._aps[device]  # nothing worth keeping
        return used

    def _is_counted(self, interface: str) -> bool:
        known = self._counted.get(interface)
        if known is None:
            known = any(fnmatch.fnmatchcase(interface, p) for p in self._patterns)
            if len(self._counted) >= 4096:
                self._counted.clear()
            self._counted[interface] = known
        return known

    def _new_ap(self, device: str, site: str) -> _Ap:
        while len(self._aps) >= self._max_series:
            self._evict_oldest()
        ap = _Ap(site)
        self._aps[device] = ap
        return ap

    def forget(self, device: str) -> bool:
        """Drop everything known of ``device`` (a forgotten discovered AP)."""
        ap = self._aps.pop(device, None)
        if ap is None:
            return False
        self._n_series -= len(ap.series) + len(ap.clients)
        return True

    def _evict_oldest(self) -> None:
        _, old = self._aps.popitem(last=False)
        self._n_series -= len(old.series) + len(old.clients)

    def _room(self, device: str) -> bool:
        """Make room for one more series of ``device`` (the AP heard from most recently)."""
        while self._n_series >= self._max_series:
            if next(iter(self._aps)) == device:
                return False  # this AP alone fills the bound
            self._evict_oldest()
        return True

    def _series(self, ap: _Ap, device: str, key: tuple[str, int]) -> _Series | None:
        series = ap.series.get(key)
        if series is None:
            if not self._room(device):
                return None
            series = ap.series[key] = _Series()
            self._n_series += 1
        return series

    def _counter(self, ap: _Ap, device: str, key: tuple[str, int], value: int, t_ns: int) -> bool:
        series = self._series(ap, device, key)
        if series is None:
            return False
        if series.counter is None:
            series.counter = ByteCounter(max_rate_bps=self._max_rate_bps, max_gap_s=self._max_gap_s)
        step = series.counter.update(value, t_ns)
        if step.kind == "ok" and step.rate_bps is None:
            return False  # not newer than the previous sample
        series.counter_ns = t_ns
        series.rate_ns = None  # rates, should they come back, start afresh
        if step.kind in ap.events:
            ap.events[step.kind] += 1
        if step.rate_bps is not None:
            series.bps, series.bps_ns = step.rate_bps, t_ns
        elif step.kind in ("reset", "gap"):
            series.bps = None
        if step.delta:
            self._count(ap, key[1], step.delta, t_ns)
        return True

    def _rate(
        self, ap: _Ap, device: str, key: tuple[str, int], bytes_per_s: float, t_ns: int
    ) -> bool:
        series = self._series(ap, device, key)
        if series is None:
            return False
        if series.counter_ns is not None and t_ns - series.counter_ns <= self._fresh_ns:
            return False  # the counter of this interface is alive and exact
        series.counter = series.counter_ns = None
        prev = series.rate_ns
        if prev is not None:
            dt_ns = t_ns - prev
            if dt_ns <= 0 and -dt_ns <= self._gap_ns:
                return False  # a duplicate or a straggler
            if dt_ns > self._gap_ns or dt_ns <= 0:
                ap.events["gap"] += 1
            else:
                # collectd's rate is the average over the interval that ends at this sample.
                self._count(ap, key[1], round(bytes_per_s * dt_ns / _NS), t_ns)
        series.rate_ns = t_ns
        series.bps, series.bps_ns = bytes_per_s * 8, t_ns
        return True

    def _clients(self, ap: _Ap, device: str, interface: str, count: int, t_ns: int) -> bool:
        previous = ap.clients.get(interface)
        if previous is None:
            if not self._room(device):
                return False
            self._n_series += 1
        elif t_ns < previous[1]:
            return False
        ap.clients[interface] = (count, t_ns)
        return True

    def _count(self, ap: _Ap, direction: int, nbytes: int, t_ns: int) -> None:
        day = local_day(t_ns, self._offset)
        if ap.day is None or day > ap.day:
            ap.day = day
            ap.today = [0, 0]
        elif day < ap.day:
            return
        ap.today[direction] += nbytes

    # --- questions -----------------------------------------------------------------------

    def ap(self, device: str, now_ns: int) -> ApUsage | None:
        """The AP as of ``now_ns``, or None if it was never heard (or was forgotten)."""
        ap = self._aps.get(device)
        if ap is None:
            return None
        return self._usage(device, ap, now_ns, local_day(now_ns, self._offset))

    def aps(self, now_ns: int) -> list[ApUsage]:
        """Every tracked AP, by site then device."""
        today = local_day(now_ns, self._offset)
        return sorted(
            (self._usage(device, ap, now_ns, today) for device, ap in self._aps.items()),
            key=lambda u: (u.site, u.device),
        )

    def site(self, site: str, now_ns: int) -> SiteUsage:
        """The sum over the site's APs (zeros for a site never heard)."""
        today = local_day(now_ns, self._offset)
        rx_bps = tx_bps = 0.0
        rx_today = tx_today = clients = reporting = 0
        for device, ap in self._aps.items():
            if ap.site != site:
                continue
            usage = self._usage(device, ap, now_ns, today)
            rx_bps += usage.rx_bps or 0.0
            tx_bps += usage.tx_bps or 0.0
            rx_today += usage.rx_bytes_today
            tx_today += usage.tx_bytes_today
            clients += usage.clients or 0
            if ap.last_ns is not None and now_ns - ap.last_ns <= self._fresh_ns:
                reporting += 1
        return SiteUsage(
            site, rx_bps, tx_bps, rx_today, tx_today, clients, reporting, day_text(today)
        )

    def _usage(self, device: str, ap: _Ap, now_ns: int, today: int) -> ApUsage:
        fresh = now_ns - self._fresh_ns
        bps: list[float | None] = [None, None]
        for (_, direction), series in ap.series.items():
            if series.bps is not None and series.bps_ns >= fresh:
                bps[direction] = (bps[direction] or 0.0) + series.bps
        clients: int | None = None
        for count, t_ns in ap.clients.values():
            if t_ns >= fresh:
                clients = (clients or 0) + count
        rx_today, tx_today = ap.today if ap.day == today else (0, 0)
        return ApUsage(
            device=device,
            site=ap.site,
            rx_bps=bps[0],
            tx_bps=bps[1],
            rx_bytes_today=rx_today,
            tx_bytes_today=tx_today,
            clients=clients,
            day=day_text(today),
            last_ns=ap.last_ns,
            events=MappingProxyType(dict(ap.events)),
        )

    # --- over a restart ------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Today's totals per AP, as JSON-able data, to be handed to :meth:`restore`.

        Only totals travel: rates and counter baselines are stale after a restart anyway, and
        the first sample afterwards is a new baseline (the bytes of that one step are lost).
        """
        aps = {
            device: {
                "site": ap.site,
                "day": day_text(ap.day),
                "rx_bytes": ap.today[0],
                "tx_bytes": ap.today[1],
            }
            for device, ap in self._aps.items()
            if ap.day is not None
        }
        return {"version": _SNAPSHOT_VERSION, "utc_offset_minutes": self._offset, "aps": aps}

    def restore(self, snap: Mapping[str, Any], now_ns: int) -> None:
        """Take back the totals of a :meth:`snapshot` that are for today; ignore the rest.

        Meant for a fresh tracker, before the first :meth:`observe`: the totals of an AP in
        the snapshot replace what this tracker counted for it today. A snapshot taken at
        another UTC offset is ignored whole (its days are not our days); an entry that is not
        what :meth:`snapshot` writes is skipped. Nothing here raises on bad input: a corrupt
        state file must not keep the gateway from starting.
        """
        if not isinstance(snap, Mapping):
            return
        if snap.get("version") != _SNAPSHOT_VERSION:
            return
        offset = snap.get("utc_offset_minutes")
        if type(offset) is not int or offset != self._offset:
            return
        aps = snap.get("aps")
        if not isinstance(aps, Mapping):
            return
        if type(now_ns) is not int or not 0 <= now_ns < _MAX_TIME_NS:
            return
        today = local_day(now_ns, self._offset)
        today_text = day_text(today)
        for device, entry in list(aps.items())[: self._max_series]:
            if not isinstance(device, str) or not isinstance(entry, Mapping):
                continue
            site, day = entry.get("site"), entry.get("day")
            rx, tx = entry.get("rx_bytes"), entry.get("tx_bytes")
            if not isinstance(site, str) or day != today_text:
                continue
            if not (_is_total(rx) and _is_total(tx)):
                continue
            ap = self._aps.get(device)
            if ap is None:
                ap = self._new_ap(device, site)
            ap.day = today
            ap.today = [rx, tx]


def _is_total(value: object) -> TypeGuard[int]:
    return type(value) is int and 0 <= value < 2**63


def _as_counter(value: object) -> int | None:
    """A counter value as an exact int, or None when it cannot be one."""
    if type(value) is int:
        return value if 0 <= value < _COUNTER_LIMIT else None
    if type(value) is float and math.isfinite(value) and value.is_integer():
        # JSON firmware may print 12345.0; beyond 2**53 a float is no longer exact, but it is
        # still the best reading of what was sent.
        return int(value) if 0 <= value < _COUNTER_LIMIT else None
    return None


def _as_rate(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = float(value)
        if math.isfinite(rate) and rate >= 0:
            return rate
    return None


def _as_clients(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and 0 <= number <= _MAX_CLIENTS:
            return round(number)
    return None
