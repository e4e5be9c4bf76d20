"""The park as the API shows it: devices, outages, sites, the residents' summary.

Read-only views over liveness (devices and their states), the registry (outages) and Wi-Fi
usage, in the typed shapes of :mod:`gateway.core.status`. Routes call these and nothing
deeper; nothing here changes state.

What an access point is comes from ``wifi.kind`` (``wifi_ap`` unless configured otherwise),
the same for the site's tally, its clients and the residents' Wi-Fi word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.config import Config
from gateway.core.clock import Clock
from gateway.core.status import (
    DeviceView,
    OutageView,
    ParkSummary,
    PolderList,
    PolderView,
    ResidentView,
    SiteView,
    SummaryGateway,
    SummarySpool,
    Tally,
    iso,
)
from gateway.park.flood import FloodWatch
from gateway.park.liveness import Liveness
from gateway.park.registry import Device, Registry
from gateway.park.resident import NOT_MEASURED, resident_view
from gateway.park.siren import Siren
from gateway.park.wifi_usage import WifiUsage

GATEWAY_KIND = "gateway"


def tally(devices: Sequence[Device]) -> Tally:
    return Tally(up=sum(d.state == "online" for d in devices),
                 down=sum(d.state == "offline" for d in devices),
                 unknown=sum(d.state == "unknown" for d in devices),
                 unmonitored=sum(d.state == "unmonitored" for d in devices),
                 total=len(devices))


class ParkViews:
    def __init__(self, *, config: Config, liveness: Liveness, registry: Registry,
                 wifi: WifiUsage, clock: Clock, flood: FloodWatch | None = None,
                 sirens: dict[str, Siren] | None = None) -> None:
        self._config = config
        self._flood = flood
        self._sirens = sirens if sirens is not None else {}
        self._liveness = liveness
        self._registry = registry
        self._wifi = wifi
        self._clock = clock
        self.ap_kind = config.wifi.kind

    def devices(self, *, site: str | None = None, kind: str | None = None,
                state: str | None = None, origin: Sequence[str] | None = None,
                include_removed: bool = False, limit: int | None = None, offset: int = 0
                ) -> tuple[int, list[DeviceView]]:
        """How many devices match, and the ``limit`` of them from ``offset`` (by site, kind,
        id). ``origin`` chooses among config, discovered, gateway, removed (removed also with
        ``include_removed``)."""
        now = self._clock.now_ns()
        origins = frozenset(origin) if origin else None
        chosen = [d for d in self._liveness.devices.values()
                  if (d.origin in origins if origins is not None
                      else include_removed or d.origin != "removed")
                  and (site is None or d.site == site) and (kind is None or d.kind == kind)
                  and (state is None or d.state == state)]
        chosen.sort(key=lambda d: (d.site, d.kind or "", d.id))
        page = chosen[offset:] if limit is None else chosen[offset:offset + limit]
        uptime, observed = self._liveness.uptime_observed(now, page)
        return len(chosen), [DeviceView.model_validate({**self._liveness.view(d, uptime[d.id]),
                                                        "uptime_observed_pct": observed[d.id],
                                                        "wifi": self._wifi.ap_view(d.id)})
                             for d in page]

    def outages(self, *, device: str | None = None, site: str | None = None,
                since_ns: int | None = None, ongoing: bool | None = None,
                limit: int = 100) -> list[OutageView]:
        now = self._clock.now_ns()
        return [OutageView(id=o.id, device=o.device, site=o.site, kind=o.kind,
                           start_ns=o.start_ns, end_ns=o.end_ns,
                           start=iso(o.start_ns, timespec="seconds"),
                           end=iso(o.end_ns, timespec="seconds"),
                           duration_s=round(o.duration_s(now), 3),
                           ongoing=o.end_ns is None, cause=o.cause, end_cause=o.end_cause)
                for o in self._registry.outages(device=device, site=site, since_ns=since_ns,
                                                ongoing=ongoing, limit=limit)]

    def sites(self) -> list[str]:
        return sorted({d.site for d in self._liveness.devices.values()
                       if d.origin != "removed"})

    def site(self, site: str) -> SiteView | None:
        now = self._clock.now_ns()
        members = [d for d in self._liveness.devices.values()
                   if d.site == site and d.origin != "removed"]
        if not members:
            return None
        aps = [d for d in members if d.kind == self.ap_kind]
        sensors = [d for d in members if d.kind not in (self.ap_kind, GATEWAY_KIND)]
        gateways = [d for d in members if d.kind == GATEWAY_KIND]
        return SiteView.model_validate({
            "site": site,
            "time_ns": now,
            "gateways": [{"id": g.id, "state": g.state, "since_ns": g.since_ns}
                         for g in gateways],
            "aps": tally(aps),
            "sensors": tally(sensors),
            "clients_now": self.clients_now(aps),
            "wifi": self._wifi.site_view(site),
            "uptime_pct": self._liveness.site_uptime(site, now),
            "open_outages": len(self._registry.outages(site=site, ongoing=True,
                                                       limit=10_000)),
        })

    def resident(self) -> ResidentView:
        site = self._config.gateway.site
        polder = self._config.polder[0] if self._config.polder else None
        flood = (self._flood.state_of(polder.device)
                 if polder is not None and self._flood is not None else None)
        return ResidentView.model_validate({**resident_view(
            site=site, pages=self._config.pages, wifi_kind=self.ap_kind,
            devices=self._liveness.devices, clients_now=self.park_clients_now(),
            now_ns=self._clock.now_ns(), polder=polder, flood=flood),
            "fresh_s": self._config.pages.fresh_s,
            "unreachable_after_s": 2 * self._config.api.sse_keepalive_s})

    def polders(self, *, operator: bool) -> PolderList:
        """Each polder's level, warning level, trend and time to the next level; the sensor's
        device and field, the fault's start and the thresholds only for operators."""
        states = self._flood.states() if self._flood is not None else []
        views = []
        for st in states:
            d = self._liveness.devices.get(st.device)
            measured = d is None or d.state not in NOT_MEASURED
            quality = st.quality if measured else "not_measured"
            trusted = measured and not st.fault
            public: dict[str, Any] = {
                "id": st.id, "name": st.name, "unit": st.unit,
                "level": st.level if trusted else None,
                "level_time_ns": st.level_time_ns if trusted else None,
                "alert_level": st.alert_level, "since_ns": st.since_ns,
                "trend_per_h": st.trend_per_h if trusted else None,
                "eta_next_s": st.eta_next_s if trusted else None,
                "eta_low_s": st.eta_low_s if trusted else None,
                "eta_high_s": st.eta_high_s if trusted else None,
                "next_level": st.next_level if trusted else None,
                "quality": quality, "rain_mm_1h": st.rain_mm_1h}
            siren = self._sirens.get(st.id)
            public["siren"] = siren.state if siren is not None else None
            if operator:
                public.update(device=st.device, field=st.field, sensor_fault=not trusted,
                              fault_since_ns=st.fault_since_ns, rising=st.rising,
                              thresholds=st.thresholds,
                              siren_detail=siren.view() if siren is not None else None)
            views.append(PolderView.model_validate(public))
        return PolderList.model_validate({"time_ns": self._clock.now_ns(), "polders": views})

    def summary(self, *, gateway: SummaryGateway, spool: SummarySpool,
                clock_synced: bool) -> ParkSummary:
        """This gateway's park for the regency: device tallies per kind, open outages, uptime
        per device, Wi-Fi clients, the polders, the backlog (``gateway`` and ``spool`` from the
        status the caller has)."""
        site = self._config.gateway.site
        now = self._clock.now_ns()
        members = [d for d in self._liveness.devices.values()
                   if d.site == site and d.origin != "removed" and d.kind != GATEWAY_KIND]
        kinds: dict[str, list[Device]] = {}
        for d in members:
            kinds.setdefault(d.kind or "unknown", []).append(d)
        uptime, _ = self._liveness.uptime_observed(now, members)
        open_outages = self._registry.outages(site=site, ongoing=True, limit=10_000)
        oldest = sorted(open_outages, key=lambda o: o.start_ns)
        wifi = self._wifi.site_view(site) or {}
        polders = self.polders(operator=False).polders
        return ParkSummary.model_validate({
            "site": site, "time_ns": now, "gateway": gateway, "spool": spool,
            "clock_synced": clock_synced,
            "devices": {kind: tally(ds) for kind, ds in sorted(kinds.items())},
            "outages": [{"device": o.device, "kind": o.kind, "since_ns": o.start_ns}
                        for o in oldest[:50]],
            "outages_open": len(open_outages),
            "uptime_pct": {d.id: {k: (round(v, 3) if v is not None else None)
                                  for k, v in uptime[d.id].items()}
                           for d in sorted(members, key=lambda d: d.id)},
            "wifi": {"clients_now": self.park_clients_now(),
                     "distinct_today": wifi.get("distinct_clients_today")},
            "polder": [{"id": p.id, "name": p.name, "level": p.level, "unit": p.unit,
                        "alert_level": p.alert_level, "since_ns": p.since_ns,
                        "trend_per_h": p.trend_per_h, "eta_next_s": p.eta_next_s,
                        "next_level": p.next_level, "quality": p.quality} for p in polders],
        })

    def park_clients_now(self) -> int | None:
        """This gateway's park's connected clients now (the residents' page, the summary, the
        flood alerts' phones in the park)."""
        site = self._config.gateway.site
        return self.clients_now([d for d in self._liveness.devices.values()
                                 if d.site == site and d.kind == self.ap_kind
                                 and d.origin != "removed"])

    def clients_now(self, aps: Sequence[Device]) -> int | None:
        """Connected clients summed over the online access points that reported a count."""
        counts = [self._wifi.ap_view(d.id) for d in aps if d.state == "online"]
        found = [c["clients"] for c in counts if c is not None and c["clients"] is not None]
        return sum(found) if found else None
