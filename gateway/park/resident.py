"""What the residents' page says about the park: pure code over the devices' current state.

Words a resident understands, decided here and not in the browser, so the API, the page and
the tests agree:

- Wi-Fi ``normal`` (every access point up), ``gangguan`` (some down), ``mati`` (none up and at
  least one known to be down), ``unmonitored`` (none up, none known down, and the gateway
  cannot see some: its broker is down), ``unknown`` (no access point heard yet);
- polder ``normal`` / ``waspada`` / ``siaga`` / ``awas`` from the configured thresholds
  (a level equal to a threshold is already that level), ``unknown`` without a value;
- the polder *not measured* (``measured: false``, ``not_measured_since_ns``) while its sensor
  is ``offline`` or ``unmonitored`` (its bus's adapter is gone): then no level is given at
  all, since an old level shown as the water now is worse than none.

Only what is safe to show anyone is here: no device ids beyond those the charts need, no
addresses, no errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from gateway.config import PagesConfig, Thresholds
from gateway.config.polder import PolderConfig
from gateway.park.flood import PolderState
from gateway.park.polder import LEVELS
from gateway.park.registry import Device

NS = 1_000_000_000
WifiWord = Literal["normal", "gangguan", "mati", "unmonitored", "unknown"]
Level = Literal["normal", "waspada", "siaga", "awas", "unknown"]
CLIENTS_FIELD = "wifi_clients"
# The polder sensor's states in which the page shows no level at all.
NOT_MEASURED = frozenset({"offline", "unmonitored"})


def wifi_word(states: Iterable[str]) -> WifiWord:
    states = list(states)
    up = states.count("online")
    # An unmonitored access point is not known to be down: "mati" needs one that is. None up,
    # none known down and some the gateway cannot see (its broker is down): not monitored.
    if states and up == 0 and "offline" not in states and "unmonitored" in states:
        return "unmonitored"
    if not states or (up == 0 and "offline" not in states):
        return "unknown"
    if up == len(states):
        return "normal"
    return "mati" if up == 0 else "gangguan"


def polder_level(value: float | None, th: Thresholds) -> Level:
    if value is None:
        return "unknown"
    if value >= th.awas:
        return "awas"
    if value >= th.siaga:
        return "siaga"
    if value >= th.waspada:
        return "waspada"
    return "normal"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def resident_view(*, site: str, pages: PagesConfig, wifi_kind: str,
                  devices: Mapping[str, Device], clients_now: int | None,
                  now_ns: int, polder: PolderConfig | None = None,
                  flood: PolderState | None = None) -> dict[str, Any]:
    members = [d for d in devices.values() if d.site == site and d.origin != "removed"]
    aps = [d for d in members if d.kind == wifi_kind]
    seen = [d.latest_ns for d in members if d.latest_ns is not None and d.kind != "gateway"]
    body: dict[str, Any] = {
        "site": site,
        "name": pages.name or site,
        "time_ns": now_ns,
        "updated_ns": max(seen) if seen else None,
        "wifi": {"status": wifi_word(d.state for d in aps),
                 "aps_up": sum(d.state == "online" for d in aps), "aps_total": len(aps),
                 "clients_now": clients_now},
        "polder": None,
        "garden": None,
        "charts": {"clients": {"device": site, "field": CLIENTS_FIELD}} if aps else {},
    }
    fresh_ns = int(pages.fresh_s * NS)
    if polder is not None:
        body["polder"] = _polder(polder, flood, devices.get(polder.device), now_ns, fresh_ns)
        body["polder"]["rain_mm_1h"] = flood.rain_mm_1h if flood is not None else None
        body["charts"]["polder"] = {"device": polder.device, "field": polder.field}
    if pages.garden is not None:
        g = pages.garden
        d = devices.get(g.device)
        temp = _number(d.latest.get(g.temperature_field)) if d is not None else None
        hum = _number(d.latest.get(g.humidity_field)) if d is not None else None
        at = d.latest_ns if d is not None and (temp, hum) != (None, None) else None
        body["garden"] = {"temperature_c": temp, "humidity_pct": hum, "time_ns": at,
                          "stale": at is None or now_ns - at > fresh_ns,
                          "state": d.state if d is not None else "unknown"}
        body["charts"]["temperature"] = {"device": g.device, "field": g.temperature_field}
        body["charts"]["humidity"] = {"device": g.device, "field": g.humidity_field}
    return body


def _polder(p: PolderConfig, flood: PolderState | None, d: Device | None, now_ns: int,
            fresh_ns: int) -> dict[str, Any]:
    """The polder as residents see it. With the flood watch's verdict (the gateway runs one):
    the level is its last trusted reading and its warning level (with hysteresis); a sensor it
    judged faulty shows no number at all (``fault``), never an old one as if current."""
    measured = d is None or d.state not in NOT_MEASURED
    if flood is not None:
        fault = flood.fault or not measured
        value = None if fault else flood.level
        at = None if fault else flood.level_time_ns
        level = "unknown" if fault or flood.alert_level not in LEVELS else flood.alert_level
        estimate = {k: None if fault else getattr(flood, k)
                    for k in ("trend_per_h", "eta_next_s", "eta_low_s", "eta_high_s",
                              "next_level")}
        quality = flood.quality if measured else "not_measured"
    else:
        last = _number(d.latest.get(p.field)) if d is not None else None
        at = d.latest_ns if d is not None and last is not None else None
        value = last if measured else None
        level, fault, quality = polder_level(value, p.thresholds), False, "ok"
        estimate = dict.fromkeys(("trend_per_h", "eta_next_s", "eta_low_s", "eta_high_s",
                                  "next_level"))
    return {
        "name": p.title, "value": value, "unit": p.unit, "level": level,
        "thresholds": p.thresholds.model_dump(), "time_ns": at,
        "stale": not measured or at is None or now_ns - at > fresh_ns,
        "state": d.state if d is not None else "unknown",
        "measured": measured,
        "not_measured_since_ns": None if measured or d is None else d.since_ns,
        "sensor_fault": bool(fault) and measured,
        "quality": quality,
        **estimate,
        "guidance": {"siaga": p.siaga_guidance, "awas": p.awas_guidance},
        "emergency_number": p.emergency_number,
    }


def public_series(pages: PagesConfig, site: str, polder: PolderConfig | None = None
                  ) -> set[tuple[str, str]]:
    """The (device, field) histories anyone may read: those the residents' charts draw."""
    series = {(site, CLIENTS_FIELD)}
    if polder is not None:
        series.add((polder.device, polder.field))
    if pages.garden is not None:
        series.add((pages.garden.device, pages.garden.temperature_field))
        series.add((pages.garden.device, pages.garden.humidity_field))
    return series
