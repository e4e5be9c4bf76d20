"""A line-printing garden sensor, as an Arduino or ESP32 sketch prints it, and the park's weather.

:class:`GardenSensor` is the board: every call to :meth:`~GardenSensor.line` is one line of the
sketch's output at a given time, in one of the three formats :mod:`devices.serial_lines`
reads, with or without an NMEA checksum::

    kv    id=kebun-1 soil_moisture_pct=34.9 temperature_c=28.3 humidity_pct=77.8 rain_mm=7.8
    json  {"id":"kebun-1","soil_moisture_pct":34.9,"temperature_c":28.3,...,"rain_mm":7.8}
    csv   kebun-1,34.9,28.3,77.8,7.8
    nmea  $id=kebun-1 soil_moisture_pct=34.9 temperature_c=28.3 humidity_pct=77.8 rain_mm=7.8*21

and :meth:`~GardenSensor.options` gives the :class:`~devices.serial_lines.Options` that decode
those lines to exactly :meth:`~GardenSensor.values` (every value is printed with one decimal,
and ``values`` returns it rounded the same way).

:class:`Weather` is the park's weather, a pure function of the time and a seed: air
temperature and humidity with the daily cycle of East Kalimantan (24 to 33 °C, the warmest in
the early afternoon, local time UTC+8) and tropical showers, mostly in the afternoon. The polder
simulator (:mod:`devices.simulators.polder`) fills with the same rain, so with the same seed the
garden's rain gauge and the polder's level tell one story.

Nothing here reads a clock: the caller passes the time, in seconds since the epoch.
"""

from __future__ import annotations

import json
import math
import re
from functools import reduce
from operator import xor
from typing import Literal

from devices.serial_lines import Options

Format = Literal["kv", "json", "csv"]
Checksum = Literal["none", "nmea"]

HOUR_S = 3600.0
DAY_S = 86400.0
# The field names, in the order the sketch prints them.
FIELDS = ("soil_moisture_pct", "temperature_c", "humidity_pct", "rain_mm")
MEASUREMENT = "garden_env"
DEVICE_KEY = "id"
# One tip of the usual rain gauge's bucket; the sketch counts tips since it booted.
RAIN_TIP_MM = 0.2

# As the gateway's config wants device ids; nothing a kv or csv line would split at.
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MASK64 = (1 << 64) - 1
# Noise streams: each quantity draws its own numbers from the seed.
_RAIN_CHANCE, _RAIN_AMOUNT, _TEMP_NOISE, _HUMIDITY_NOISE, _SOIL_NOISE = range(5)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform(seed: int, stream: int, index: int) -> float:
    """A number in [0, 1) that depends only on its arguments: noise without a generator."""
    h = _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ stream) ^ (index & _MASK64))
    return (h >> 11) / 2.0**53


def smooth_noise(seed: int, stream: int, t_s: float, period_s: float) -> float:
    """Noise in [-1, 1] that wanders smoothly, changing course about every ``period_s``."""
    x = t_s / period_s
    i = math.floor(x)
    a = 2 * uniform(seed, stream, i) - 1
    b = 2 * uniform(seed, stream, i + 1) - 1
    w = (1 - math.cos(math.pi * (x - i))) / 2
    return a + (b - a) * w


class Weather:
    """The park's weather for ``seed`` (see the module docstring); every method is pure."""

    __slots__ = ("_rain", "seed", "utc_offset_h")

    def __init__(self, seed: int = 0, *, utc_offset_h: float = 8.0) -> None:
        self.seed = seed
        # Kutai Timur keeps WITA (UTC+8): the daily cycle follows local solar time.
        self.utc_offset_h = utc_offset_h
        # The models look back over days of hourly rain at every step: remember the hours.
        self._rain: dict[int, float] = {}

    def local_hour(self, t_s: float) -> float:
        return (t_s / HOUR_S + self.utc_offset_h) % 24

    def daily(self, t_s: float, peak_hour: float) -> float:
        """A daily cycle: 1 at ``peak_hour`` local time, -1 twelve hours later."""
        return math.cos(2 * math.pi * (self.local_hour(t_s) - peak_hour) / 24)

    def rain_in_hour(self, hour: int) -> float:
        """Millimetres of rain in the hour starting at ``hour * 3600`` (epoch seconds)."""
        rain = self._rain.get(hour)
        if rain is None:
            if len(self._rain) >= 4096:
                self._rain.clear()
            rain = self._rain[hour] = self._shower(hour)
        return rain

    def _shower(self, hour: int) -> float:
        local = (hour + self.utc_offset_h) % 24
        # Convective showers: mostly in the afternoon, some at night; about 3000 mm a year.
        chance = 0.15 if 13 <= local < 19 else 0.025
        if uniform(self.seed, _RAIN_CHANCE, hour) >= chance:
            return 0.0
        u = uniform(self.seed, _RAIN_AMOUNT, hour)
        return min(60.0, 0.5 - 6.0 * math.log1p(-u))

    def rain_between(self, start_s: float, end_s: float) -> float:
        """Rain fallen from ``start_s`` to ``end_s``; within an hour it falls evenly."""
        if end_s <= start_s:
            return 0.0
        total = 0.0
        for hour in range(math.floor(start_s / HOUR_S), math.floor(end_s / HOUR_S) + 1):
            rain = self.rain_in_hour(hour)
            if rain:
                lo = max(start_s, hour * HOUR_S)
                hi = min(end_s, (hour + 1) * HOUR_S)
                total += rain * max(0.0, hi - lo) / HOUR_S
        return total

    def raining(self, t_s: float) -> float:
        """How hard it rains now, 0 (dry) to 1 (5 mm an hour or more)."""
        return min(1.0, self.rain_in_hour(math.floor(t_s / HOUR_S)) / 5.0)

    def air_temperature_c(self, t_s: float) -> float:
        # Warmest at 14:00, coolest at 02:00 local; a shower cools the air towards 24 °C.
        cycle = 28.5 + 4.0 * self.daily(t_s, 14)
        cooled = cycle - 0.7 * self.raining(t_s) * max(0.0, cycle - 24.0)
        return cooled + 0.4 * smooth_noise(self.seed, _TEMP_NOISE, t_s, 600.0)

    def humidity_pct(self, t_s: float) -> float:
        # Humid at night, drier in the afternoon heat, saturated in a shower.
        humid = 78.0 - 11.0 * self.daily(t_s, 14) + 14.0 * self.raining(t_s)
        humid += 2.0 * smooth_noise(self.seed, _HUMIDITY_NOISE, t_s, 900.0)
        return min(100.0, max(40.0, humid))

    def soil_moisture_pct(self, t_s: float) -> float:
        """Volumetric soil moisture: wet after rain, drying over a day or two."""
        wetness = 0.0
        now_hour = math.floor(t_s / HOUR_S)
        for hour in range(now_hour - 72, now_hour + 1):
            rain = self.rain_in_hour(hour)
            if rain:
                fallen = rain * min(1.0, max(0.0, t_s - hour * HOUR_S) / HOUR_S)
                age_s = max(0.0, t_s - (hour + 1) * HOUR_S)
                wetness += fallen * math.exp(-age_s / DAY_S)
        soil = 32.0 + 28.0 * (1 - math.exp(-wetness / 25.0))
        return soil + 0.3 * smooth_noise(self.seed, _SOIL_NOISE, t_s, 1800.0)


class GardenSensor:
    """A board printing one line of garden readings at a time (see the module docstring).

    The rain gauge counts bucket tips from ``boot_s``, the time the board was switched on; when
    it is ``None``, the first call to :meth:`values` or :meth:`line` switches it on.
    """

    __slots__ = ("_boot_s", "_counted", "checksum", "device", "format", "weather")

    def __init__(
        self,
        device: str = "kebun-1",
        format: Format = "kv",
        checksum: Checksum = "none",
        *,
        seed: int = 0,
        boot_s: float | None = None,
    ) -> None:
        if not _DEVICE.fullmatch(device):
            raise ValueError(
                f"device {device!r}: use 1 to 64 letters, digits and _ . - starting with a "
                "letter or digit (the sketch prints it unquoted in kv and csv lines)"
            )
        if format not in ("kv", "json", "csv"):
            raise ValueError(f"format {format!r}: kv, json or csv")
        if checksum not in ("none", "nmea"):
            raise ValueError(f"checksum {checksum!r}: none or nmea")
        self.device = device
        self.format: Format = format
        self.checksum: Checksum = checksum
        self.weather = Weather(seed)
        self._boot_s: float | None = None
        # The gauge's count at the start of an hour: (hour, mm since boot). A board runs for
        # months; each line adds the hours since the last one instead of summing them all.
        self._counted = (0, 0.0)
        self.boot_s = boot_s

    @property
    def boot_s(self) -> float | None:
        return self._boot_s

    @boot_s.setter
    def boot_s(self, value: float | None) -> None:
        self._boot_s = value
        if value is not None:
            self._counted = (math.floor(value / HOUR_S), 0.0)

    def rain_since_boot(self, t_s: float) -> float:
        """Millimetres of rain from ``boot_s`` to ``t_s``: what the gauge's bucket collected."""
        boot = self._boot_s if self._boot_s is not None else t_s
        if t_s <= boot:
            return 0.0
        rain = self.weather.rain_in_hour
        now = math.floor(t_s / HOUR_S)
        hour, total = self._counted
        if hour > now:
            hour, total = math.floor(boot / HOUR_S), 0.0
        # The same hours added in the same order, however the calls cut them: the same sum.
        while hour < now:
            start = max(boot, hour * HOUR_S)
            total += rain(hour) * ((hour + 1) * HOUR_S - start) / HOUR_S
            hour += 1
        self._counted = (hour, total)
        return total + rain(now) * (t_s - max(boot, now * HOUR_S)) / HOUR_S

    def values(self, t_s: float) -> dict[str, float]:
        """The readings at ``t_s`` as the line prints them (one decimal)."""
        if self._boot_s is None:
            self.boot_s = t_s
        w = self.weather
        tips = math.floor(self.rain_since_boot(t_s) / RAIN_TIP_MM + 1e-9)
        return {
            "soil_moisture_pct": round(w.soil_moisture_pct(t_s), 1),
            "temperature_c": round(w.air_temperature_c(t_s), 1),
            "humidity_pct": round(w.humidity_pct(t_s), 1),
            "rain_mm": round(tips * RAIN_TIP_MM, 1),
        }

    def line(self, t_s: float) -> bytes:
        """One line of output at ``t_s``, ending in ``\\r\\n`` as ``Serial.println`` does."""
        values = self.values(t_s)
        if self.format == "kv":
            body = " ".join(
                [f"{DEVICE_KEY}={self.device}"] + [f"{k}={v:.1f}" for k, v in values.items()]
            )
        elif self.format == "csv":
            body = ",".join([self.device] + [f"{v:.1f}" for v in values.values()])
        else:
            members = [f"{json.dumps(DEVICE_KEY)}:{json.dumps(self.device)}"]
            members += [f"{json.dumps(k)}:{v:.1f}" for k, v in values.items()]
            body = "{" + ",".join(members) + "}"
        data = body.encode("ascii")
        if self.checksum == "nmea":
            data = b"$%s*%02X" % (data, reduce(xor, data, 0))
        return data + b"\r\n"

    def options(self) -> Options:
        """The options that decode this sensor's lines (``device`` is the fallback name)."""
        return Options(
            format=self.format,
            device=self.device,
            device_key=DEVICE_KEY,
            measurement=MEASUREMENT,
            columns=(DEVICE_KEY, *FIELDS) if self.format == "csv" else (),
            checksum=self.checksum,
        )
