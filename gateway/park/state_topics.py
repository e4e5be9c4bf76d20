"""The park's state on MQTT, retained, so that a central broker (bridged) sees every park.

- ``garden/<site>/gateway/<gateway-id>/status``: ``online`` / ``offline``, the gateway's own
  birth and last will (see :class:`gateway.sources.mqtt.MqttSource`).
- ``garden/<site>/<device>/state``: each device's computed state as JSON, published on every
  transition and again after every (re)connection, since what was published while the broker
  was away is lost and only the latest state matters::

      {"device": "ap-gerbang-utama", "name": "AP gerbang utama", "kind": "wifi_ap",
       "site": "taman-bukit-pelangi", "zone": "gerbang", "gateway": "gw-...",
       "state": "offline", "since": "2026-11-28T06:05:00Z", "cause": "no reading for 3 ...",
       "last_seen": "2026-11-28T06:04:00Z"}

  ``state`` is ``unknown``, ``online``, ``offline`` or ``unmonitored``; for ``unmonitored``
  ``cause`` names the missing link (``port_gone``: its bus's adapter is gone), never a fault
  of the device's own.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from gateway.core.status import iso
from gateway.park.liveness import Liveness, Transition
from gateway.park.registry import Device

TOPIC_PREFIX = "garden"


def gateway_status_topic(site: str, gateway_id: str) -> str:
    return f"{TOPIC_PREFIX}/{site}/gateway/{gateway_id}/status"


def device_state_topic(site: str, device: str) -> str:
    return f"{TOPIC_PREFIX}/{site}/{device}/state"


def state_payload(d: Device, gateway_id: str) -> bytes:
    return orjson.dumps({
        "device": d.id, "name": d.name, "kind": d.kind, "site": d.site, "zone": d.zone,
        "gateway": gateway_id, "state": d.state, "since": iso(d.since_ns, timespec="seconds"),
        "cause": d.cause,
        "last_seen": iso(d.last_seen_ns, timespec="seconds"),
    })


class StatePublisher:
    def __init__(self, *, liveness: Liveness, publish: Callable[[str, bytes], bool]) -> None:
        self._liveness = liveness
        self._publish = publish

    def _devices(self) -> list[Device]:
        return [d for d in self._liveness.devices.values()
                if d.origin in ("config", "discovered")]

    def transition(self, t: Transition) -> None:
        d = self._liveness.devices.get(t.device)
        if d is not None:
            self._publish(device_state_topic(d.site, d.id),
                          state_payload(d, self._liveness.gateway_id))

    def forgotten(self, d: Device, why: str) -> None:
        """A forgotten device's retained state is cleared (an empty retained message)."""
        self._publish(device_state_topic(d.site, d.id), b"")

    def republish(self) -> None:
        for d in self._devices():
            self._publish(device_state_topic(d.site, d.id),
                          state_payload(d, self._liveness.gateway_id))
