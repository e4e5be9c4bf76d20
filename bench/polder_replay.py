"""Replay synthetic storms through the polder's early-warning core and score it (issue 16).

    .venv/bin/python bench/polder_replay.py [--storms 40] [--month-days 30]

Storms (devices/simulators/storm.py): a reading a minute, +-2 cm noise, 5 spikes each, rises of
5 to 30 cm/h to a crest past Siaga (half of them past Awas), every fourth storm with its sensor
stuck for an hour. The detector is gateway/park/polder.py as the gateway will run it: Quality
(range 0-500 cm, spikes over 120 cm/h beyond 5 cm of noise, flatline 30 min), LevelState
(Waspada 150, Siaga 200, Awas 250 cm, hysteresis 3 cm, hold 30 min, window 30 min). Scores,
against the issue's targets:

- Siaga/Awas crossings alerted: an upward change to that level (or higher) by 30 minutes after
  the true crossing, while the true level was within 6 cm (3 x the noise) of the threshold;
- false level alerts: an upward change while the true level is more than 6 cm (3 x the noise)
  below its threshold, in the storms and in a month of flat water 5 cm under Waspada;
- time to the next level: among storms rising >= 10 cm/h, the share where an estimate for
  Siaga or Awas existed >= 30 minutes before the crossing, and the median error of the estimate
  an hour before it;
- spikes rejected; minutes from a stuck sensor to its flatline verdict.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices.simulators.storm import NS, Storm, storm  # noqa: E402
from gateway.park.polder import LEVELS, LevelState, Quality  # noqa: E402

THRESHOLDS = (150.0, 200.0, 250.0)
T0 = 1_800_000_000 * NS
MIN = 60 * NS


def detector() -> tuple[Quality, LevelState]:
    return (Quality(low=0, high=500, max_rate_per_h=120, flatline_s=1800, tolerance=5),
            LevelState(THRESHOLDS, hysteresis=3, min_hold_s=1800, window_s=1800))


def replay(s: Storm) -> dict[str, object]:
    quality, state = detector()
    ups: list[tuple[int, int, float]] = []  # (time, new level index, true level)
    estimates: dict[str, list[tuple[int, float]]] = {"siaga": [], "awas": []}
    spikes = rejected_spikes = 0
    stuck_start = next((r.time_ns for r in s.readings if r.stuck), None)
    flagged: int | None = None
    for r in s.readings:
        verdict = quality.judge(r.time_ns, r.value)
        if r.spike:
            spikes += 1
            rejected_spikes += not verdict.trusted
        if verdict.reason == "flatline" and flagged is None:
            flagged = r.time_ns
        if not verdict.trusted:
            continue
        change = state.add(r.time_ns, r.value)
        if change is not None and LEVELS.index(change.new) > LEVELS.index(change.old):
            ups.append((r.time_ns, LEVELS.index(change.new), r.true))
        est = state.estimate()
        if est is not None and est.next_level in estimates:
            estimates[est.next_level].append((r.time_ns, est.eta_s))
    return {"ups": ups, "estimates": estimates, "spikes": spikes, "rejected": rejected_spikes,
            "stuck_start": stuck_start, "flagged": flagged}


def score(storms: list[Storm], month: Storm) -> dict[str, float]:
    alerted = crossings = false_alerts = 0
    lead_ok = lead_n = 0
    errors: list[float] = []
    spikes = rejected = 0
    flat_delays: list[float] = []
    for s in storms:
        r = replay(s)
        ups = r["ups"]
        assert isinstance(ups, list)
        for level, name in ((2, "siaga"), (3, "awas")):
            crossed = s.crossings.get(THRESHOLDS[level - 1])
            if crossed is None:
                continue
            crossings += 1
            # In time: by 30 minutes after the true crossing, and not a false one (the true
            # level within 3 x the noise of the threshold: the sensor's +-2 cm say it earlier).
            threshold = THRESHOLDS[level - 1]
            if any(lvl >= level and t <= crossed + 30 * MIN and true >= threshold - 6
                   for t, lvl, true in ups):
                alerted += 1
            if s.rise_per_h >= 10:
                est = r["estimates"]
                assert isinstance(est, dict)
                issued = [t for t, _ in est[name] if t <= crossed - 30 * MIN]
                lead_n += 1
                lead_ok += bool(issued)
                hour_before = [(t, eta) for t, eta in est[name] if t <= crossed - 60 * MIN]
                if hour_before:
                    t, eta = hour_before[-1]
                    actual = (crossed - t) / NS
                    errors.append(abs(eta - actual) / actual)
        for _, lvl, true in ups:
            if true < THRESHOLDS[lvl - 1] - 6:
                false_alerts += 1
        spikes += int(str(r["spikes"]))
        rejected += int(str(r["rejected"]))
        if r["stuck_start"] is not None and r["flagged"] is not None:
            flat_delays.append((int(str(r["flagged"])) - int(str(r["stuck_start"]))) / MIN)
    month_ups = replay(month)["ups"]
    assert isinstance(month_ups, list)
    return {
        "crossings": crossings, "alerted_pct": 100 * alerted / max(1, crossings),
        "false_in_storms": false_alerts, "false_in_month": len(month_ups),
        "lead_storms": lead_n, "lead_ok_pct": 100 * lead_ok / max(1, lead_n),
        "median_error_pct": 100 * statistics.median(errors) if errors else float("nan"),
        "spikes": spikes, "spikes_rejected_pct": 100 * rejected / max(1, spikes),
        "flatline_median_min": statistics.median(flat_delays) if flat_delays else float("nan"),
        "flatlines": len(flat_delays),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storms", type=int, default=40, help="storms to replay")
    parser.add_argument("--month-days", type=int, default=30,
                        help="days of flat water 5 cm under Waspada, for false alerts")
    args = parser.parse_args()
    speeds = (5.0, 10.0, 15.0, 20.0, 30.0)
    storms = [storm(seed=i, start_ns=T0, rise_per_h=speeds[i % len(speeds)], hours=36,
                    crest=270.0 if i % 2 == 0 else 230.0,
                    stuck_at_h=1.0 if i % 4 == 3 else None)
              for i in range(args.storms)]
    month = storm(seed=999, start_ns=T0, hours=24 * args.month_days, base=145, rise_per_h=0,
                  crest=145, spikes=50)
    s = score(storms, month)
    print(f"## Polder early warning replay: {args.storms} storms, {args.month_days} flat days\n")
    print("| measure | result | target |")
    print("| --- | ---: | ---: |")
    print(f"| Siaga/Awas crossings alerted (of {s['crossings']:.0f}) | "
          f"{s['alerted_pct']:.1f} % | >= 95 % |")
    print(f"| false level alerts in the storms | {s['false_in_storms']:.0f} | - |")
    print(f"| false level alerts in {args.month_days} flat days (+-2 cm, 50 spikes) | "
          f"{s['false_in_month']:.0f} | <= 1 |")
    print(f"| time to next level issued >= 30 min before (storms >= 10 cm/h, "
          f"{s['lead_storms']:.0f} crossings) | {s['lead_ok_pct']:.1f} % | >= 80 % |")
    print(f"| median error of the estimate 1 h before | {s['median_error_pct']:.1f} % | "
          "<= 20 % |")
    print(f"| spikes rejected (of {s['spikes']:.0f}) | {s['spikes_rejected_pct']:.1f} % | "
          "100 % |")
    print(f"| stuck sensor flagged after (median of {s['flatlines']:.0f}) | "
          f"{s['flatline_median_min']:.0f} min | <= 30 min |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
