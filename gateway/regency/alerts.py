"""The regency's alerts (issue 17, part 3): a park down or its link down past
``alerts.down_after_s``, a polder reaching Siaga or Awas anywhere, and their recoveries.

Sent through the gateway's own alert code (:class:`gateway.park.alerts.Alerter`: Telegram,
webhooks, debounce, the durable outbox), in Bahasa Indonesia. A park's outage is a "down" of the
subject ``<site>`` (kind ``park``) with its cause; its recovery a "recovered". A polder's level
is said when a current summary (the park up) shows it entering or leaving Siaga or Awas; a
stale park's polder says nothing: its level is not the water now.
"""

from __future__ import annotations

from typing import Any

from gateway.park.alerts import Alerter, Subject, polder_text
from gateway.park.flood import PolderEvent, PolderState
from gateway.regency.alertmanager import AlertmanagerSender
from gateway.regency.fleet import Park

CAUSES = {"down": "gateway taman mati atau terputus dari broker taman",
          "link_down": "koneksi taman ke pusat (bridge) terputus"}
LOUD = ("siaga", "awas")


NAMES = {"down": "TamanMati", "link_down": "TamanTerputus"}


class RegencyAlerts:
    def __init__(self, alerter: Alerter, *, regency: str,
                 alertmanager: AlertmanagerSender | None = None) -> None:
        self._alerter = alerter
        self._regency = regency
        self._am = alertmanager
        # (site, polder id) -> the last alert level a current summary showed
        self._levels: dict[tuple[str, str], str] = {}

    def _subject(self, park: Park) -> Subject:
        return Subject(park.site, park.site, "park", self._regency, None)

    def transition(self, park: Park, old: str) -> None:
        """A park's state changed (:class:`gateway.regency.fleet.Fleet`'s listener)."""
        at = park.since_ns or 0
        if park.state in CAUSES:
            if old in CAUSES:
                self._alerter.forget(park.site)  # down <-> link_down: the new cause counts
            self._alerter.down(self._subject(park), at, CAUSES[park.state])
        elif park.state == "up" and old in CAUSES:
            self._alerter.up(self._subject(park), at)
        if self._am is not None:
            if old in NAMES and old != park.state:
                self._am.resolve({"alertname": NAMES[old], "site": park.site}, at)
            if park.state in NAMES:
                self._am.fire({"alertname": NAMES[park.state], "site": park.site},
                              {"summary": f"Taman {park.site} di {self._regency}: "
                               f"{CAUSES[park.state]}"}, at)

    def summary(self, park: Park) -> None:
        """A summary arrived: a polder entering or leaving Siaga or Awas is said."""
        if park.state != "up" or park.summary is None:
            return
        for p in park.summary.get("polder") or []:
            if not isinstance(p, dict) or not isinstance(p.get("id"), str):
                continue
            key = (park.site, p["id"])
            level = str(p.get("alert_level") or "unknown")
            before = self._levels.get(key)
            self._levels[key] = level
            if before is None or before == level or (before not in LOUD and level not in LOUD):
                continue
            event = _event(park, p, level, before, park.summary_ns or 0)
            clients = (park.summary.get("wifi") or {}).get("clients_now")
            self._alerter.polder(event, wifi_clients=clients)
            if self._am is not None:
                at = park.summary_ns or 0
                if before in LOUD:
                    self._am.resolve(_polder_labels(park, p, before), at)
                if level in LOUD:
                    self._am.fire(_polder_labels(park, p, level),
                                  {"summary": polder_text(event, wifi_clients=clients)}, at)


def _event(park: Park, p: dict[str, Any], level: str, before: str, at_ns: int) -> PolderEvent:
    name = str(p.get("name") or p["id"])
    state = PolderState(
        id=f"{park.site}:{p['id']}", name=f"{name} ({park.site})", device=str(p["id"]),
        field="", unit=str(p.get("unit") or ""), level=_number(p.get("level")),
        level_time_ns=at_ns, alert_level=level, since_ns=at_ns,
        trend_per_h=_number(p.get("trend_per_h")), eta_next_s=_number(p.get("eta_next_s")),
        eta_low_s=None, eta_high_s=None, next_level=p.get("next_level"),
        quality=str(p.get("quality") or "ok"), fault=False, fault_since_ns=None,
        rising=False, thresholds={})
    return PolderEvent("polder_level", at_ns, state, previous_alert_level=before)


def _polder_labels(park: Park, p: dict[str, Any], level: str) -> dict[str, str]:
    return {"alertname": "PolderSiaga" if level == "siaga" else "PolderAwas",
            "site": park.site, "polder": str(p["id"])}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
