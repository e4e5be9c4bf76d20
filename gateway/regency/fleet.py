"""Every park's state, from what the central broker hears, with its transitions on disk.

Per park (``site``) three sources, each the latest retained message of its topic:

- ``garden/<site>/summary``: the gateway's :class:`~gateway.core.status.ParkSummary`;
- ``garden/<site>/gateway/<id>/status``: ``online`` / ``offline`` (the gateway's will);
- ``garden/<site>/bridge/connection``: ``1`` / ``0`` (the park's bridge; central publishes
  ``0`` as its will when the WAN link drops).

A park's state, the first that holds:

==============  ============================================================================
``link_down``   its bridge says 0: nothing from the park can arrive (not the park's fault)
``down``        its gateway's will said offline (the gateway stopped or died; the link is up)
``unknown``     nothing heard yet, or no summary yet
``stale``       its last summary is older than ``stale_after_s``
``up``          a recent summary and the gateway online
==============  ============================================================================

Every change of state is a transition with its time, kept in ``regency.sqlite3`` with the latest
message of each source, so a restart of the service starts where it stopped. The outages are the
spans in ``down``; ``link_down``, ``stale`` and ``unknown`` are unobserved time, never down.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.core.clock import Clock
from gateway.core.status import iso
from gateway.park.polder import LEVELS

log = logging.getLogger(__name__)

NS = 1_000_000_000
FILE_NAME = "regency.sqlite3"
ParkState = Literal["up", "down", "link_down", "stale", "unknown"]
# Worst first, for the lists.
ORDER: dict[str, int] = {"down": 0, "link_down": 1, "stale": 2, "unknown": 3, "up": 4}
# The most urgent polder first: awas, siaga, waspada, normal, then unknown.
ALERT_ORDER = {level: len(LEVELS) - i for i, level in enumerate(LEVELS)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parks (site TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY, site TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL,
    at_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS transitions_site ON transitions (site, at_ns);
CREATE TABLE IF NOT EXISTS device_transitions (
    id INTEGER PRIMARY KEY, site TEXT NOT NULL, device TEXT NOT NULL, state TEXT NOT NULL,
    at_ns INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS device_transitions_at ON device_transitions (site, device, at_ns);
"""
DEVICE_STATES = frozenset({"online", "offline", "unknown", "unmonitored"})


@dataclass(slots=True)
class Park:
    site: str
    state: ParkState = "unknown"
    since_ns: int | None = None
    summary: dict[str, Any] | None = None
    summary_ns: int | None = None          # when it was made (arrival if the park's clock
    #                                        was not believed; never later than arrival)
    gateway: str | None = None
    gateway_online: bool | None = None
    gateway_ns: int | None = None
    link_up: bool | None = None
    link_ns: int | None = None

    def stored(self) -> dict[str, Any]:
        return {"state": self.state, "since_ns": self.since_ns, "summary": self.summary,
                "summary_ns": self.summary_ns, "gateway": self.gateway,
                "gateway_online": self.gateway_online, "gateway_ns": self.gateway_ns,
                "link_up": self.link_up, "link_ns": self.link_ns}


class Fleet:
    def __init__(self, path: Path, *, clock: Clock, stale_after_s: float,
                 on_transition: Callable[[Park, str], None] | None = None,
                 on_summary: Callable[[Park], None] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._clock = clock
        self._stale_ns = int(stale_after_s * NS)
        self._on_transition = on_transition
        self._on_summary = on_summary
        self.parks: dict[str, Park] = {}
        self.refused = 0
        for site, body in self._db.execute("SELECT site, body FROM parks"):
            try:
                self.parks[site] = Park(site=site, **json.loads(body))
            except (TypeError, ValueError):
                log.warning("regency: stored park %s unreadable: starts unknown", site)

    def close(self) -> None:
        self._db.close()

    # -- what the broker says -------------------------------------------------------------

    def summary(self, site: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("site") != site:
            self.refused += 1
            log.warning("regency: summary of %s refused: not a park summary of that site",
                        site)
            return
        park = self._park(site)
        now = self._clock.now_ns()
        # How old it is: from when the park made it (a retained summary of a park that died
        # long ago is old at once), unless the park's clock was not believed then.
        made = body.get("time_ns")
        if body.get("clock_synced") is not True or not isinstance(made, int):
            made = now
        park.summary, park.summary_ns = body, min(now, made)
        self._settle(park)
        if self._on_summary is not None:
            self._on_summary(park)

    def gateway_status(self, site: str, gateway: str, payload: bytes) -> None:
        word = payload.decode("utf-8", "replace").strip().lower()
        if word not in ("online", "offline"):
            self.refused += 1
            return
        park = self._park(site)
        park.gateway, park.gateway_online = gateway, word == "online"
        park.gateway_ns = self._clock.now_ns()
        self._settle(park)

    def link(self, site: str, payload: bytes) -> None:
        word = payload.strip()
        if word not in (b"0", b"1"):
            self.refused += 1
            return
        park = self._park(site)
        park.link_up, park.link_ns = word == b"1", self._clock.now_ns()
        self._settle(park)

    def device_state(self, site: str, device: str, payload: bytes) -> None:
        """A device's retained state (``garden/<site>/<device>/state``, bridged): its changes
        are kept for the monthly report."""
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        state = body.get("state") if isinstance(body, dict) else None
        if state not in DEVICE_STATES:
            self.refused += 1
            return
        last = self._db.execute(
            "SELECT state FROM device_transitions WHERE site = ? AND device = ? "
            "ORDER BY at_ns DESC, id DESC LIMIT 1", (site, device)).fetchone()
        if last is None or last[0] != state:
            self._db.execute("INSERT INTO device_transitions (site, device, state, at_ns) "
                             "VALUES (?, ?, ?, ?)", (site, device, state, self._clock.now_ns()))

    def check(self) -> None:
        """Summaries that grew old: their parks are stale now."""
        for park in list(self.parks.values()):
            self._settle(park, save=False)

    # -- views ----------------------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        """One entry per park, worst first: nothing that names a device."""
        out = [self._entry(p) for p in self.parks.values()]
        out.sort(key=lambda e: (ORDER[e["state"]],
                                min((ALERT_ORDER.get(x["alert_level"], 9)
                                     for x in e["polder"]), default=9), e["site"]))
        return out

    def outages(self, *, site: str | None = None, since_ns: int | None = None
                ) -> list[dict[str, Any]]:
        """Spans in ``down``, newest first, from the transitions."""
        rows = self._db.execute(
            "SELECT site, old, new, at_ns FROM transitions WHERE (? IS NULL OR site = ?) "
            "ORDER BY site, at_ns, id", (site, site)).fetchall()
        spans: list[dict[str, Any]] = []
        open_: dict[str, int] = {}
        for s, _old, new, at in rows:
            if new == "down" and s not in open_:
                open_[s] = at
            elif new != "down" and s in open_:
                start = open_.pop(s)
                spans.append({"site": s, "start_ns": start, "end_ns": at})
        spans += [{"site": s, "start_ns": start, "end_ns": None} for s, start in open_.items()]
        now = self._clock.now_ns()
        out = []
        for span in spans:
            end = span["end_ns"]
            if since_ns is not None and (end if end is not None else now) < since_ns:
                continue
            out.append({**span, "start": iso(span["start_ns"]), "end": iso(end),
                        "ongoing": end is None,
                        "duration_s": round(((end or now) - span["start_ns"]) / NS, 3)})
        out.sort(key=lambda o: o["start_ns"], reverse=True)
        return out

    def report(self, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
        """Uptime of every park and device over ``[start_ns, end_ns)`` (a calendar month):
        seconds up, down and unobserved. A park is observed while ``up`` or ``down``
        (``link_down``, ``stale``, ``unknown`` are unobserved); a device only while its park
        is ``up`` and it is ``online`` or ``offline`` (``unmonitored``, ``unknown``: not)."""
        end_ns = min(end_ns, self._clock.now_ns())
        rows: list[dict[str, Any]] = []
        for site in sorted(self.parks):
            park_line = [(at, new) for _, new, at in self.transitions(site)]
            rows.append(_row(site, None, _account(park_line, start_ns, end_ns, "up", "down")))
            devices = self._db.execute(
                "SELECT device, state, at_ns FROM device_transitions WHERE site = ? "
                "ORDER BY device, at_ns, id", (site,)).fetchall()
            lines: dict[str, list[tuple[int, str]]] = {}
            for device, state, at in devices:
                lines.setdefault(device, []).append((at, state))
            for device, line in sorted(lines.items()):
                merged = _merge(line, park_line)
                rows.append(_row(site, device,
                                 _account(merged, start_ns, end_ns, "online", "offline")))
        return rows

    def transitions(self, site: str) -> list[tuple[str, str, int]]:
        return [(old, new, at) for old, new, at in self._db.execute(
            "SELECT old, new, at_ns FROM transitions WHERE site = ? ORDER BY at_ns, id",
            (site,))]

    # -- inside ---------------------------------------------------------------------------

    def _park(self, site: str) -> Park:
        park = self.parks.get(site)
        if park is None:
            park = self.parks[site] = Park(site=site)
        return park

    def _state(self, park: Park, now: int) -> ParkState:
        if park.link_up is False:
            return "link_down"
        if park.gateway_online is False:
            return "down"
        if park.summary_ns is None:
            return "unknown"
        if now - park.summary_ns > self._stale_ns:
            return "stale"
        return "up"

    def _settle(self, park: Park, *, save: bool = True) -> None:
        now = self._clock.now_ns()
        new = self._state(park, now)
        old = park.state
        changed = new != old
        if changed:
            park.state, park.since_ns = new, now
            self._db.execute("INSERT INTO transitions (site, old, new, at_ns) VALUES (?, ?, ?, "
                             "?)", (park.site, old, new, now))
            log.info("regency: park %s %s -> %s", park.site, old, new)
        if changed or save:
            self._db.execute("INSERT OR REPLACE INTO parks (site, body) VALUES (?, ?)",
                             (park.site, json.dumps(park.stored())))
        if changed and self._on_transition is not None:
            self._on_transition(park, old)

    def _entry(self, p: Park) -> dict[str, Any]:
        s = p.summary or {}
        devices = s.get("devices") or {}
        wifi = s.get("wifi") or {}
        current = p.state == "up"
        return {
            "site": p.site, "state": p.state, "since_ns": p.since_ns, "since": iso(p.since_ns),
            "devices_up": sum(int(t.get("up", 0)) for t in devices.values()),
            "devices_total": sum(int(t.get("total", 0)) for t in devices.values()),
            # An old level is not the water now: said with its time, never as current.
            "current": current,
            "polder": [{"name": x.get("name"), "level": x.get("level"), "unit": x.get("unit"),
                        "alert_level": x.get("alert_level", "unknown"),
                        "eta_next_s": x.get("eta_next_s") if current else None,
                        "next_level": x.get("next_level") if current else None,
                        "quality": x.get("quality")}
                       for x in s.get("polder") or []],
            "wifi": {"clients_now": wifi.get("clients_now")},
            "last_summary_ns": p.summary_ns, "last_summary": iso(p.summary_ns),
        }


def _merge(device: list[tuple[int, str]], park: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The device's state where its park is up, ``unobserved`` elsewhere: one step line."""
    points = sorted({t for t, _ in device} | {t for t, _ in park})
    out: list[tuple[int, str]] = []
    for t in points:
        d = next((s for at, s in reversed(device) if at <= t), "unknown")
        p = next((s for at, s in reversed(park) if at <= t), "unknown")
        state = d if p == "up" else "unobserved"
        if not out or out[-1][1] != state:
            out.append((t, state))
    return out


def _account(line: list[tuple[int, str]], start: int, end: int, up: str, down: str
             ) -> tuple[float, float, float]:
    """Seconds in ``up``, in ``down``, and the rest, of the step line over [start, end)."""
    totals = {"up": 0, "down": 0, "other": 0}
    if end <= start:
        return 0.0, 0.0, 0.0
    state, at = "unknown", start
    for t, s in line:
        if t <= start:
            state = s
            continue
        if t >= end:
            break
        key = "up" if state == up else "down" if state == down else "other"
        totals[key] += t - at
        state, at = s, t
    key = "up" if state == up else "down" if state == down else "other"
    totals[key] += end - at
    return totals["up"] / NS, totals["down"] / NS, totals["other"] / NS


def _row(site: str, device: str | None, times: tuple[float, float, float]) -> dict[str, Any]:
    up, down, unobserved = times
    observed = up + down
    return {"site": site, "device": device, "up_s": round(up, 3), "down_s": round(down, 3),
            "unobserved_s": round(unobserved, 3),
            "uptime_pct": round(100 * up / observed, 3) if observed else None}
