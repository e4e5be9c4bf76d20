"""Wi-Fi usage per access point and per park: rates, daily totals, clients, distinct clients.

The pure parts are in :mod:`devices.wifi` (counters and rates → bits/s and bytes per local
day) and :mod:`devices.privacy` (client MACs → distinct clients per day, through a keyed hash
whose key lives in memory only). This adapter feeds them from the pipeline and writes, every
``wifi.report_interval_s``, one ``wifi_usage`` point per AP and one ``wifi_site_usage`` point
per park through the spool.

Which readings are an AP's: readings of a device whose kind (device list) is ``wifi.kind``
(``wifi_ap``), or, for a device not in the list, readings whose measurement is ``wifi.kind``
(collectd's subscription sets ``measurement: wifi_ap``). The interface comes from the
reading's ``interface`` tag (collectd's interface plugin) or ``iwinfo`` tag (its iwinfo
plugin); counted are those matching ``wifi.interfaces`` (the radios), and readings without one.

Rates and day boundaries follow the readings' own timestamps (collectd stamps each sample);
the daily totals are kept in the registry at every report and at stop, so a restart the same
day goes on counting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from devices.privacy import DistinctClients
from devices.reading import DecodeError, FieldValue, Reading
from devices.wifi import UsageTracker
from gateway.config import DeviceConfig, WifiConfig
from gateway.core.clock import Clock
from gateway.park.registry import Registry
from gateway.store.lineproto import encode

log = logging.getLogger(__name__)

NS = 10**9
SNAPSHOT_KEY = "wifi_usage"


class WifiUsage:
    def __init__(self, *, config: WifiConfig, devices: Sequence[DeviceConfig], gateway_id: str,
                 site: str, registry: Registry, clock: Clock,
                 emit: Callable[[list[str]], None] | None = None) -> None:
        self._config = config
        self._kinds = {d.id: d.kind for d in devices}
        self._sites = {d.id: d.site for d in devices if d.site}
        self._gateway_id = gateway_id
        self._site = site
        self._registry = registry
        self._clock = clock
        self._emit = emit
        self.tracker = UsageTracker(
            utc_offset_minutes=config.utc_offset_minutes, interfaces=config.interfaces,
            max_rate_bps=config.max_rate_bps, max_gap_s=config.max_gap_s,
            fresh_s=config.fresh_s)
        self.distinct = DistinctClients(utc_offset_minutes=config.utc_offset_minutes)
        self.observed = 0
        self.reports = 0

    def _is_ap(self, device: str, measurement: str) -> bool:
        kind = self._kinds.get(device)
        return (kind if device in self._kinds else measurement) == self._config.kind

    def _site_of(self, device: str, reading: Reading) -> str:
        return self._sites.get(device) or reading.tag("site") or self._site

    # -- from the pipeline (plain functions, never waiting) ------------------------------

    def readings(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            device = r.tag("device")
            if device is None or not self._is_ap(device, r.measurement):
                continue
            interface = r.tag("interface") or r.tag("iwinfo")
            if self.tracker.observe(device, self._site_of(device, r), interface,
                                    dict(r.fields), r.time_ns):
                self.observed += 1

    def macs(self, readings: Sequence[Reading], macs: Sequence[bytes]) -> None:
        """Client MACs a message carried (already out of it): counted, then forgotten."""
        device = next((d for r in readings if (d := r.tag("device")) is not None), None)
        if device is None or not readings:
            return
        now = readings[0].time_ns
        self.distinct.add(f"ap:{device}", macs, now)
        self.distinct.add(f"site:{self._site_of(device, readings[0])}", macs, now)

    def forget(self, device: str) -> None:
        """A forgotten discovered AP: its counters and rates go (its day's distinct clients
        stay counted in the site's until the day ends)."""
        self.tracker.forget(device)

    # -- reports -------------------------------------------------------------------------

    def ap_view(self, device: str) -> dict[str, Any] | None:
        now = self._clock.now_ns()
        ap = self.tracker.ap(device, now)
        if ap is None:
            return None
        return {"rx_bps": ap.rx_bps, "tx_bps": ap.tx_bps, "rx_bytes_today": ap.rx_bytes_today,
                "tx_bytes_today": ap.tx_bytes_today, "clients": ap.clients, "day": ap.day,
                "distinct_clients_today": self.distinct.count(f"ap:{device}", now),
                "counter_events": dict(ap.events)}

    def site_view(self, site: str) -> dict[str, Any] | None:
        now = self._clock.now_ns()
        s = self.tracker.site(site, now)
        if not any(ap.site == site for ap in self.tracker.aps(now)):
            return None
        return {"rx_bps": s.rx_bps, "tx_bps": s.tx_bps, "rx_bytes_today": s.rx_bytes_today,
                "tx_bytes_today": s.tx_bytes_today, "clients": s.clients,
                "distinct_clients_today": self.distinct.count(f"site:{site}", now),
                "aps_reporting": s.aps_reporting, "day": s.day}

    def points(self) -> list[str]:
        now = self._clock.now_ns()
        lines: list[str] = []
        sites: set[str] = set()
        for ap in self.tracker.aps(now):
            sites.add(ap.site)
            fields: dict[str, FieldValue] = {
                "rx_bytes_today": ap.rx_bytes_today, "tx_bytes_today": ap.tx_bytes_today,
                "distinct_clients_today": self.distinct.count(f"ap:{ap.device}", now)}
            _put(fields, rx_bps=ap.rx_bps, tx_bps=ap.tx_bps, clients=ap.clients)
            self._line(lines, "wifi_usage", {"device": ap.device, "site": ap.site}, fields, now)
        for site in sorted(sites):
            s = self.tracker.site(site, now)
            self._line(lines, "wifi_site_usage", {"site": site}, {
                "rx_bps": float(s.rx_bps), "tx_bps": float(s.tx_bps),
                "rx_bytes_today": s.rx_bytes_today, "tx_bytes_today": s.tx_bytes_today,
                "clients": s.clients, "aps_reporting": s.aps_reporting,
                "distinct_clients_today": self.distinct.count(f"site:{site}", now)}, now)
        return lines

    def _line(self, lines: list[str], measurement: str, tags: dict[str, str],
              fields: Mapping[str, FieldValue], now: int) -> None:
        try:
            lines.append(encode(Reading.build(measurement, {**tags,
                                                            "gateway": self._gateway_id},
                                              fields, now)))
        except DecodeError as exc:
            log.warning("%s point not written: %s", measurement, exc)

    def report(self) -> None:
        lines = self.points()
        self.reports += 1
        if lines and self._emit is not None:
            self._emit(lines)
        self.save()

    def save(self) -> None:
        self._registry.put_json(SNAPSHOT_KEY, self.tracker.snapshot())

    def restore(self) -> None:
        snap = self._registry.get_json(SNAPSHOT_KEY)
        if isinstance(snap, dict):
            self.tracker.restore(snap, self._clock.now_ns())

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self._config.report_interval_s)
            self.report()

    def statistics(self) -> dict[str, int]:
        return {"aps": len(self.tracker.aps(self._clock.now_ns())), "observed": self.observed,
                "reports": self.reports}


def _put(fields: dict[str, FieldValue], **values: float | int | None) -> None:
    for key, value in values.items():
        if value is not None:
            fields[key] = float(value) if key.endswith("_bps") else value
