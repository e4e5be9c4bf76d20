"""Synthetic storms for a polder's level sensor, with the truth beside every reading.

A storm is a level series (cm, a reading every ``step_s``) built from a base level, rises of a
chosen speed, a crest and a fall, with what a real sensor adds: noise, spikes (a wave, a bird on
the float, a bad Modbus frame that still passed its CRC) and a flatline (the float stuck). Each
reading carries its true level and whether it is a spike or stuck, and each storm the times the
true level crossed each threshold: what a replay of the early-warning detector is scored against
(bench/polder_replay.py). Seeded: the same seed gives the same storm.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Reading:
    time_ns: int
    value: float  # what the sensor says
    true: float  # the water's real level
    spike: bool = False
    stuck: bool = False


@dataclass(slots=True)
class Storm:
    readings: list[Reading] = field(default_factory=list)
    # threshold (cm) -> when the true level first reached it, rising
    crossings: dict[float, int] = field(default_factory=dict)
    rise_per_h: float = 0.0


def storm(*, seed: int, start_ns: int, step_s: float = 60.0, hours: float = 24.0,
          base: float = 100.0, rise_per_h: float = 10.0, crest: float = 230.0,
          noise: float = 2.0, spikes: int = 5, spike_size: float = 40.0,
          stuck_at_h: float | None = None, stuck_for_h: float = 1.0,
          thresholds: tuple[float, ...] = (150.0, 200.0, 250.0)) -> Storm:
    """A storm: flat at ``base`` for two hours, rising at ``rise_per_h`` to ``crest``, an hour
    there, then falling at half the speed; ``noise`` uniform +-, ``spikes`` readings off by
    about ``spike_size``, and (when ``stuck_at_h``) the sensor stuck for ``stuck_for_h``."""
    rng = random.Random(seed)
    n = int(hours * 3600 / step_s)
    step_ns = int(step_s * NS)
    rise_start_s = 2 * 3600.0
    rise_s = max(0.0, (crest - base) / rise_per_h * 3600) if rise_per_h > 0 else 0.0
    crest_end_s = rise_start_s + rise_s + 3600
    result = Storm(rise_per_h=rise_per_h)
    spike_at = set(rng.sample(range(10, n - 10), min(spikes, max(0, n - 20))))
    stuck_from = None if stuck_at_h is None else int(stuck_at_h * 3600 / step_s)
    stuck_to = None if stuck_from is None else stuck_from + int(stuck_for_h * 3600 / step_s)
    stuck_value: float | None = None
    for i in range(n):
        t = i * step_s
        if t < rise_start_s:
            true = base
        elif t < rise_start_s + rise_s:
            true = base + (t - rise_start_s) / 3600 * rise_per_h
        elif t < crest_end_s:
            true = crest
        else:
            true = max(base, crest - (t - crest_end_s) / 3600 * rise_per_h / 2)
        time_ns = start_ns + i * step_ns
        for th in thresholds:
            if true >= th and th not in result.crossings:
                result.crossings[th] = time_ns
        said = round(true + rng.uniform(-noise, noise), 1)
        spike = i in spike_at
        stuck = stuck_from is not None and stuck_to is not None and stuck_from <= i < stuck_to
        if stuck:
            stuck_value = said if stuck_value is None else stuck_value
            said = stuck_value
        elif spike:
            said = round(said + rng.choice((-1, 1)) * spike_size * rng.uniform(0.8, 1.5), 1)
        result.readings.append(Reading(time_ns, said, true, spike=spike and not stuck,
                                       stuck=stuck))
    return result
