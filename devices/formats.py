"""The payload formats a source can be configured with, by the name used in the config file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devices import collectd, esphome, influx, jsonmap, native, presence, tasmota
from devices.presence import Presence
from devices.reading import Reading


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    # The format's Options dataclass; the gateway validates the config's options into it.
    options: type[Any]
    decode: Callable[[str, bytes, int, Any], list[Reading]]
    # True when each reading names its own measurement, which the device's kind must not replace.
    own_measurement: bool = False
    # Recognizes the format's presence topics (a device's own online/offline), given the
    # topic, the payload and the options; None where the format has none.
    presence: Callable[[str, bytes, Any], Presence | None] | None = None


FORMATS: dict[str, Format] = {
    "native": Format("native", native.Options, native.decode,
                     presence=lambda t, p, o: presence.native(t, p, o.topic_prefix)),
    "collectd": Format("collectd", collectd.Options, collectd.decode),
    "tasmota": Format("tasmota", tasmota.Options, tasmota.decode,
                      presence=lambda t, p, o: presence.tasmota(t, p, o.topic_prefix)),
    "esphome": Format("esphome", esphome.Options, esphome.decode,
                      presence=lambda t, p, o: presence.esphome(t, p)),
    "influx": Format("influx", influx.Options, influx.decode, own_measurement=True),
    "json": Format("json", jsonmap.Options, jsonmap.decode),
}
