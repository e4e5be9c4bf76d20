"""Replay synthetic storms through the gateway's flood watch and score it (issue 16).

    .venv/bin/python bench/polder_replay.py [--storms 40] [--month-days 30]

Storms (devices/simulators/storm.py): a reading a minute, +-2 cm noise, 5 spikes each, rises of
5 to 30 cm/h to a crest past Siaga (half of them past Awas), every fourth storm with its sensor
stuck for an hour; then storms read every 5 minutes rising 30 to 90 cm/h, for the rate-of-rise
alert; and a month of flat water 5 cm under Waspada with 50 spikes. The detector is the flood
watch the gateway runs (gateway/park/flood.py through gateway/ops/polder_replay.py, the same as
`garden-gateway polder-replay`), with the shipped defaults in cm: Waspada 150, Siaga 200,
Awas 250, sensor range 0-500. What is scored: see gateway/ops/polder_replay.py.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.simulators.storm import NS, Storm, storm  # noqa: E402
from gateway.config.polder import PolderConfig  # noqa: E402
from gateway.ops.polder_replay import Row, Score, replay  # noqa: E402

T0 = 1_800_000_000 * NS


def polder(interval_s: float) -> PolderConfig:
    return PolderConfig.model_validate({
        "device": "polder-1", "field": "level_cm", "unit": "cm", "sensor_min": 0,
        "sensor_max": 500, "interval_s": interval_s,
        "thresholds": {"waspada": 150, "siaga": 200, "awas": 250}})


def rows(s: Storm) -> list[Row]:
    return [Row(r.time_ns, r.value, true=r.true, spike=r.spike, stuck=r.stuck)
            for r in s.readings]


def scored(storms: list[Storm], *, interval_s: float = 60, flat: bool = False) -> Score:
    score = Score()
    config = polder(interval_s)
    for s in storms:
        series = rows(s)
        # The storm generator rises from two hours in.
        score.add(series, replay(series, config), config,
                  rise_per_h=None if flat else s.rise_per_h,
                  rise_start_ns=None if flat else T0 + 2 * 3600 * NS)
    return score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storms", type=int, default=40, help="storms to replay")
    parser.add_argument("--month-days", type=int, default=30,
                        help="days of flat water 5 cm under Waspada, for false alerts")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the watch logs every alert; the tables say it all
    speeds = (5.0, 10.0, 15.0, 20.0, 30.0)
    storms = [storm(seed=i, start_ns=T0, rise_per_h=speeds[i % len(speeds)], hours=36,
                    crest=270.0 if i % 2 == 0 else 230.0,
                    stuck_at_h=1.0 if i % 4 == 3 else None)
              for i in range(args.storms)]
    fast = [storm(seed=100 + i, start_ns=T0, step_s=300, rise_per_h=(30.0, 60.0, 90.0)[i % 3],
                  hours=12, crest=270.0) for i in range(12)]
    month = storm(seed=999, start_ns=T0, hours=24 * args.month_days, base=145, rise_per_h=0,
                  crest=145, spikes=50)
    print(f"## Polder early warning replay: {args.storms} storms, {args.month_days} flat days\n")
    print(f"### {args.storms} storms, a reading a minute, rises of 5-30 cm/h\n")
    print("\n".join(scored(storms).lines()))
    print("\n### 12 storms, a reading every 5 minutes, rises of 30-90 cm/h\n")
    print("\n".join(scored(fast, interval_s=300).lines()))
    print("\n### Readings from a rise's start to its rate-of-rise alert (20 cm/h), by speed\n")
    print("| reading every | rise | storms | median | max |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    groups = [(60, 30.0, [s for s in storms if s.rise_per_h == 30.0])]
    groups += [(300, speed, [s for s in fast if s.rise_per_h == speed])
               for speed in (30.0, 60.0, 90.0)]
    for step, speed, chosen in groups:
        got = scored(chosen, interval_s=step).rise_readings
        print(f"| {step // 60} min | {speed:.0f} cm/h | {len(got)} | "
              f"{statistics.median(got):.0f} | {max(got)} |")
    print(f"\n### {args.month_days} days of flat water 5 cm under Waspada, 50 spikes\n")
    print("\n".join(scored([month], flat=True).lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
