"""A Tasmota board with an AM2301 (DHT21) in the garden, as a pure model.

It publishes what Tasmota does (see ``shared/samples/README.md``): telemetry on
``tele/<topic>/SENSOR``::

    {"Time":"2026-11-28T14:02:11","AM2301":{"Temperature":29.4,"Humidity":78.2,"DewPoint":25.2},"TempUnit":"C"}

and its last will on ``tele/<topic>/LWT``, ``Online`` when it connects and ``Offline`` when it
drops (retained, both). ``Time`` is the board's local time without a zone.

The readings are the park's weather (:class:`devices.simulators.garden.Weather`) under the
shade of the trees where it hangs: a little cooler and damper than the open garden. A board given
a ``dropout`` loses the park's Wi-Fi every day between those local hours and comes back after.

As in :mod:`devices.simulators.ap`, ``t_s`` is the simulated time that decides the values and
the dropout, ``stamp_s`` the real time written into ``Time``. Nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass

from devices.simulators.garden import Weather

SENSOR = "AM2301"
ONLINE = b"Online"
OFFLINE = b"Offline"
# Under the trees: cooler by this much, damper by this much.
SHADE_C = 0.6
SHADE_PCT = 3.0

_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True, slots=True)
class Dropout:
    """Off the network every day from local hour ``start`` until local hour ``end``."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not (0 <= self.start < 24 and 0 <= self.end < 24 and self.start != self.end):
            raise ValueError(f"dropout {self.start}..{self.end}: two different hours in 0..24")

    def covers(self, hour: float) -> bool:
        if self.start < self.end:
            return self.start <= hour < self.end
        return hour >= self.start or hour < self.end  # across midnight


class TasmotaSensor:
    """The board whose MQTT topic is ``topic`` (Tasmota's ``%topic%``, the gateway's device)."""

    __slots__ = ("dropout", "topic", "weather")

    def __init__(self, topic: str = "kebun-1", *, weather: Weather | None = None,
                 dropout: Dropout | None = None) -> None:
        if not _TOPIC.fullmatch(topic):
            raise ValueError(f"topic {topic!r}: 1 to 32 letters, digits, _ and -")
        self.topic = topic
        self.weather = weather if weather is not None else Weather()
        self.dropout = dropout

    @property
    def sensor_topic(self) -> str:
        return f"tele/{self.topic}/SENSOR"

    @property
    def lwt_topic(self) -> str:
        return f"tele/{self.topic}/LWT"

    def online(self, t_s: float) -> bool:
        return self.dropout is None or not self.dropout.covers(self.weather.local_hour(t_s))

    def values(self, t_s: float) -> dict[str, float]:
        """Temperature (°C), humidity (%) and dew point (°C), as Tasmota rounds them."""
        w = self.weather
        temp = w.air_temperature_c(t_s) - SHADE_C
        humidity = min(100.0, w.humidity_pct(t_s) + SHADE_PCT)
        return {"Temperature": round(temp, 1), "Humidity": round(humidity, 1),
                "DewPoint": round(dew_point_c(temp, humidity), 1)}

    def sensor_payload(self, t_s: float, stamp_s: float) -> bytes:
        """The ``tele/<topic>/SENSOR`` message: values at ``t_s``, ``Time`` from ``stamp_s``."""
        offset = dt.timedelta(hours=self.weather.utc_offset_h)
        local = dt.datetime.fromtimestamp(math.floor(stamp_s), dt.UTC) + offset
        body = {"Time": local.strftime("%Y-%m-%dT%H:%M:%S"), SENSOR: self.values(t_s),
                "TempUnit": "C"}
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def dew_point_c(temp_c: float, humidity_pct: float) -> float:
    """Magnus formula, as Tasmota computes ``DewPoint``."""
    gamma = math.log(max(humidity_pct, 1.0) / 100) + 17.62 * temp_c / (243.12 + temp_c)
    return 243.12 * gamma / (17.62 - gamma)

