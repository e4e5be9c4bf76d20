"""The demo's park: who is in it, and the day it lives through (``garden-gateway demo``).

The park has three public access points (:mod:`devices.simulators.ap`), a Tasmota garden sensor
(:mod:`devices.simulators.tasmota`), the line-printing garden sensor
(:mod:`devices.simulators.garden`) and the polder's water-level station
(:mod:`devices.simulators.polder`). They share one :class:`DemoWeather`: the seeded weather's
daily cycle with one scripted afternoon shower instead of random ones, so that every demo day
tells the same story (:data:`SCENARIO`, printed in the demo's banner).

A real day is too long to watch. :class:`DayClock` maps the real time to the simulated time: a
simulated day passes in ``day_minutes`` real minutes, starting at :data:`START_HOUR` local time.
The simulated time only decides the values (the hour of the day, the rain, who is online);
every timestamp the gateway stores is real: readings are stamped on arrival, collectd and
Tasmota stamp their messages with the real time.

Pure, like everything in ``devices/``: the caller passes the times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from devices.simulators.ap import AccessPoint, Reboot
from devices.simulators.garden import DAY_S, HOUR_S, Weather
from devices.simulators.polder import PolderSlave
from devices.simulators.storm import Storm, storm
from devices.simulators.tasmota import Dropout, TasmotaSensor

UTC_OFFSET_H = 8.0  # WITA, Kutai Timur
START_HOUR = 10.0  # the demo's day starts mid-morning: the first event is an hour away
# The day's one shower: local hour -> millimetres in that hour.
SHOWERS: Mapping[int, float] = MappingProxyType({14: 18.0})
AP_HOSTS = ("ap-gerbang-utama", "ap-taman-bermain", "ap-tepi-polder")
REBOOTING_AP = "ap-taman-bermain"
REBOOT = Reboot(hour=11.0, down_s=1800.0)
TASMOTA_TOPIC = "kebun-1"
DROPOUT = Dropout(start=13.0, end=15.0)
# The APs had been up for this long when the demo starts: 64-bit counters well past 2**32.
AP_UPTIME_S = 9 * DAY_S
_PEAK_CLIENTS = {"ap-gerbang-utama": 45, "ap-taman-bermain": 30, "ap-tepi-polder": 15}

# What happens when (simulated local time); the tests hold the model to it.
SCENARIO: tuple[tuple[str, str], ...] = (
    ("10:00", "the day starts: a few visitors, Wi-Fi quiet"),
    ("11:00", f"{REBOOTING_AP} reboots: silent for 30 min, its counters restart from zero"),
    ("13:00", f"Tasmota garden sensor {TASMOTA_TOPIC} drops off the Wi-Fi (LWT Offline)"),
    ("14:00", "a heavy shower, 18 mm in an hour: the polder starts to rise"),
    ("15:00", f"{TASMOTA_TOPIC} is back (LWT Online); polder through Waspada and Siaga to Awas"),
    ("16:00", "polder at its highest (about 1.6 m), the pump running"),
    ("17:30", "polder falling: back under Awas, then Siaga"),
    ("19:00", "polder back to normal; evening, the Wi-Fi at its busiest until about 21:00"),
    ("02:00", "night: hardly anyone on the Wi-Fi; the day repeats from 10:00"),
)


class DemoWeather(Weather):
    """The seeded weather, but rain only as :data:`SHOWERS` says, every day."""

    __slots__ = ("showers",)

    def __init__(self, seed: int = 0, *, showers: Mapping[int, float] = SHOWERS,
                 utc_offset_h: float = UTC_OFFSET_H) -> None:
        super().__init__(seed, utc_offset_h=utc_offset_h)
        self.showers = dict(showers)

    def _shower(self, hour: int) -> float:
        return self.showers.get(int((hour + self.utc_offset_h) % 24), 0.0)


@dataclass(frozen=True, slots=True)
class DayClock:
    """Real time -> simulated time: a day in ``day_minutes`` minutes from ``real_start_s``.

    The simulated day starts at ``start_hour`` local time on the real start's local date.
    """

    real_start_s: float
    day_minutes: float = 20.0
    start_hour: float = START_HOUR
    utc_offset_h: float = UTC_OFFSET_H

    def __post_init__(self) -> None:
        if not (math.isfinite(self.day_minutes) and self.day_minutes > 0):
            raise ValueError(f"day_minutes {self.day_minutes!r}: a positive number")

    @property
    def speed(self) -> float:
        """Simulated seconds per real second."""
        return DAY_S / (self.day_minutes * 60.0)

    @property
    def sim_start_s(self) -> float:
        offset = self.utc_offset_h * HOUR_S
        midnight = math.floor((self.real_start_s + offset) / DAY_S) * DAY_S - offset
        return midnight + self.start_hour * HOUR_S

    def sim(self, real_s: float) -> float:
        return self.sim_start_s + (real_s - self.real_start_s) * self.speed

    def real(self, sim_s: float) -> float:
        """When (real time) the simulated clock shows ``sim_s``."""
        return self.real_start_s + (sim_s - self.sim_start_s) / self.speed

    def step_s(self, sim_step_s: float = 600.0, *, low: float = 0.25, high: float = 5.0) -> float:
        """Real seconds between samples: ``sim_step_s`` of simulated time, within low..high."""
        return min(high, max(low, sim_step_s / self.speed))


def access_points(clock: DayClock, *, seed: int = 0) -> list[AccessPoint]:
    boot = clock.sim_start_s - AP_UPTIME_S
    return [
        AccessPoint(host, peak_clients=_PEAK_CLIENTS[host], boot_s=boot, speed=clock.speed,
                    reboot=REBOOT if host == REBOOTING_AP else None, seed=seed + i,
                    utc_offset_h=clock.utc_offset_h)
        for i, host in enumerate(AP_HOSTS)
    ]


def tasmota(weather: Weather) -> TasmotaSensor:
    return TasmotaSensor(TASMOTA_TOPIC, weather=weather, dropout=DROPOUT)


def demo_storm(seed: int = 0) -> Storm:
    """The demo's storm, every day: flat from 12:00, the water rising 30 cm/h from 14:00 (the
    shower) past Awas (1.3 m) to 1.45 m, an hour there, falling; +-1 cm of noise, three spikes,
    and the float stuck for an hour from 15:30 (the flood watch says so after 30 minutes)."""
    return storm(seed=seed, start_ns=0, step_s=60.0, hours=12.0, base=58.0, rise_per_h=30.0,
                 crest=145.0, noise=1.0, spikes=3, stuck_at_h=3.5, stuck_for_h=1.0,
                 thresholds=(90.0, 110.0, 130.0))


def polder_slave(weather: Weather, *, unit: int = 1, storm: Storm | None = None) -> PolderSlave:
    """The demo's polder station; with ``storm``, that storm at local noon every day."""
    slave = PolderSlave(unit, seed=weather.seed)
    slave.weather = weather
    if storm is not None:
        slave.play(storm, start_s=(12 - weather.utc_offset_h) * HOUR_S, daily=True)
    return slave
