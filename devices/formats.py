"""The payload formats a source can be configured with, by the name used in the config file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devices import collectd, esphome, influx, jsonmap, native, tasmota
from devices.reading import Reading


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    # The format's Options dataclass; the gateway validates the config's options into it.
    options: type[Any]
    decode: Callable[[str, bytes, int, Any], list[Reading]]
    # True when each reading names its own measurement, which the device's kind must not replace.
    own_measurement: bool = False


FORMATS: dict[str, Format] = {
    "native": Format("native", native.Options, native.decode),
    "collectd": Format("collectd", collectd.Options, collectd.decode),
    "tasmota": Format("tasmota", tasmota.Options, tasmota.decode),
    "esphome": Format("esphome", esphome.Options, esphome.decode),
    "influx": Format("influx", influx.Options, influx.decode, own_measurement=True),
    "json": Format("json", jsonmap.Options, jsonmap.decode),
}
