"""``garden-gateway polder-replay FILE.csv``: the flood watch over a recorded level series.

The very code the gateway runs on live readings (:class:`gateway.park.flood.FloodWatch`, with
a polder from the config or from the options) replayed over a CSV of ``time,level`` (and
optionally ``rain``, and the labels a synthetic storm carries: ``true`` level, ``spike``,
``stuck``), on a clock that follows the readings' times. It prints the alerts the gateway would
have sent, and, where the file is labelled, the scores the issue set targets for:

- Siaga/Awas crossings alerted: an upward change to that level (or higher) by 30 minutes after
  the true level crossed it, while the true level was within 3 x the noise of the threshold;
- false level alerts: an upward change while the true level is further below its threshold;
- the time to the next level issued >= 30 minutes before the crossing (rises >= 10 cm/h), and
  its median error an hour before;
- spikes rejected; minutes from a stuck sensor to its flatline verdict; readings from the start
  of a rise to the rate-of-rise alert.

``time`` is ISO 8601 or Unix seconds; ``level`` in the polder's unit. The bench
(bench/polder_replay.py) runs it over the seeded storms of :mod:`devices.simulators.storm`.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from devices.reading import Reading as Point
from gateway.config.polder import PolderConfig
from gateway.park.flood import FloodWatch, PolderEvent
from gateway.park.polder import LEVELS, NS
from gateway.testing.clock import FakeClock

MIN_NS = 60 * NS


@dataclass(frozen=True, slots=True)
class Row:
    time_ns: int
    level: float
    true: float | None = None
    spike: bool = False
    stuck: bool = False
    rain: float | None = None


@dataclass(slots=True)
class Replay:
    """What the flood watch did over one series."""

    events: list[PolderEvent] = field(default_factory=list)
    # next level -> [(time, eta_s)] for every reading that had an estimate
    estimates: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)   # per reading: ok or the reason

    def ups(self) -> list[PolderEvent]:
        return [e for e in self.events if e.kind == "polder_level"
                and e.previous_alert_level in LEVELS and e.state.alert_level in LEVELS
                and LEVELS.index(e.state.alert_level) > LEVELS.index(e.previous_alert_level)]


def replay(rows: Sequence[Row], polder: PolderConfig) -> Replay:
    """Feed ``rows`` to a fresh flood watch on a clock at each row's time."""
    clock = FakeClock(rows[0].time_ns if rows else 0)
    out = Replay()
    watch = FloodWatch([polder], clock=clock, site="replay", gateway_id="replay",
                       notify=out.events.append, emit=lambda lines: None)
    rain_device = polder.rain.device if polder.rain is not None else None
    for row in rows:
        clock.set(max(clock.now_ns(), row.time_ns))
        watch.check()
        points = [Point.build("polder", {"device": polder.device},
                              {polder.field: row.level}, row.time_ns)]
        if row.rain is not None and rain_device is not None and polder.rain is not None:
            points.append(Point.build("rain", {"device": rain_device},
                                      {polder.rain.field: row.rain}, row.time_ns))
        watch.readings(points)
        state = watch.states()[0]
        out.verdicts.append(state.quality)
        if state.eta_next_s is not None and state.next_level is not None:
            out.estimates.setdefault(state.next_level, []).append((row.time_ns,
                                                                   state.eta_next_s))
    return out


@dataclass(slots=True)
class Score:
    crossings: int = 0
    alerted: int = 0
    false_alerts: int = 0
    lead_n: int = 0
    lead_ok: int = 0
    errors: list[float] = field(default_factory=list)
    spikes: int = 0
    rejected: int = 0
    flat_delays_min: list[float] = field(default_factory=list)
    rise_readings: list[int] = field(default_factory=list)
    false_rises: int = 0

    def add(self, rows: Sequence[Row], r: Replay, polder: PolderConfig, *,
            rise_per_h: float | None = None, rise_start_ns: int | None = None) -> None:
        """Score one replay against the truth in ``rows`` (rows without ``true``: only what
        needs no truth)."""
        thresholds = polder.thresholds.values()
        margin = 3 * polder.amount("noise") / 2          # 3 x the +- noise
        ups = r.ups()
        truth = {row.time_ns: row.true for row in rows}
        crossed: dict[int, int] = {}
        for row in rows:
            for i, th in enumerate(thresholds):
                if row.true is not None and row.true >= th and i not in crossed:
                    crossed[i] = row.time_ns
        for i, name in ((1, "siaga"), (2, "awas")):
            at = crossed.get(i)
            if at is None:
                continue
            self.crossings += 1
            level = i + 1
            if any(LEVELS.index(e.state.alert_level) >= level and e.at_ns <= at + 30 * MIN_NS
                   and (truth.get(e.at_ns) or 0.0) >= thresholds[i] - margin for e in ups):
                self.alerted += 1
            if rise_per_h is not None and rise_per_h >= 10:
                est = r.estimates.get(name, [])
                self.lead_n += 1
                self.lead_ok += any(t <= at - 30 * MIN_NS for t, _ in est)
                hour_before = [(t, eta) for t, eta in est if t <= at - 60 * MIN_NS]
                if hour_before:
                    t, eta = hour_before[-1]
                    actual = (at - t) / NS
                    self.errors.append(abs(eta - actual) / actual)
        for e in ups:
            true = truth.get(e.at_ns)
            threshold = thresholds[LEVELS.index(e.state.alert_level) - 1]
            if true is not None and true < threshold - margin:
                self.false_alerts += 1
        for row, verdict in zip(rows, r.verdicts, strict=True):
            if row.spike:
                self.spikes += 1
                self.rejected += verdict != "ok"
        stuck = next((row.time_ns for row in rows if row.stuck), None)
        flagged = next((e.at_ns for e in r.events if e.kind == "polder_sensor_fault"
                        and e.reason == "flatline" and stuck is not None
                        and e.at_ns >= stuck), None)
        if stuck is not None and flagged is not None:
            self.flat_delays_min.append((flagged - stuck) / MIN_NS)
        rises = [e.at_ns for e in r.events if e.kind == "polder_rising"]
        limit = polder.amount("rise_alert_per_h")
        if rise_per_h is not None and rise_per_h == limit:
            pass  # exactly at the limit: an alert or none are both right
        elif rise_per_h is not None and rise_per_h > limit and rise_start_ns is not None:
            after = [t for t in rises if t >= rise_start_ns]
            if after:
                # Readings taken after the rise began, the alerted one included.
                self.rise_readings.append(sum(rise_start_ns < row.time_ns <= after[0]
                                              for row in rows))
        else:
            self.false_rises += len(rises)

    def lines(self) -> list[str]:
        def pct(a: int, b: int) -> str:
            return f"{100 * a / b:.1f} %" if b else "-"
        median_error = (f"{100 * statistics.median(self.errors):.1f} %" if self.errors
                        else "-")
        flat = (f"{statistics.median(self.flat_delays_min):.0f} min (median of "
                f"{len(self.flat_delays_min)})" if self.flat_delays_min else "-")
        rise = (f"{statistics.median(self.rise_readings):.0f} (median of "
                f"{len(self.rise_readings)}; max {max(self.rise_readings)})"
                if self.rise_readings else "-")
        return [
            "| measure | result | target |",
            "| --- | ---: | ---: |",
            f"| Siaga/Awas crossings alerted (of {self.crossings}) | "
            f"{pct(self.alerted, self.crossings)} | >= 95 % |",
            f"| false level alerts | {self.false_alerts} | <= 1 a month |",
            f"| time to next level issued >= 30 min before (rises >= 10 cm/h, {self.lead_n} "
            f"crossings) | {pct(self.lead_ok, self.lead_n)} | >= 80 % |",
            f"| median error of the estimate 1 h before | {median_error} | <= 20 % |",
            f"| spikes rejected (of {self.spikes}) | {pct(self.rejected, self.spikes)} | "
            "100 % |",
            f"| stuck sensor flagged after | {flat} | <= 30 min |",
            f"| readings from a rise's start to its rate-of-rise alert | {rise} | <= 2 |",
            f"| rate-of-rise alerts where the water rose slower than rise_alert_per_h | "
            f"{self.false_rises} | 0 |",
        ]


def read_csv(path: Path) -> list[Row]:
    """``time,level[,true,spike,stuck,rain]`` rows; a clear ValueError naming the line."""
    rows: list[Row] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"time", "level"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: the first line must name the columns time and level")
        for n, raw in enumerate(reader, start=2):
            try:
                rows.append(Row(time_ns=_time_ns(raw["time"]), level=float(raw["level"]),
                                true=_number(raw.get("true")), spike=_flag(raw.get("spike")),
                                stuck=_flag(raw.get("stuck")), rain=_number(raw.get("rain"))))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path} line {n}: {exc}") from exc
    rows.sort(key=lambda r: r.time_ns)
    return rows


def write_csv(path: Path, rows: Iterable[Row]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["time", "level", "true", "spike", "stuck", "rain"])
        for r in rows:
            out.writerow([f"{r.time_ns / NS:.3f}", r.level, "" if r.true is None else r.true,
                          int(r.spike), int(r.stuck), "" if r.rain is None else r.rain])


def _time_ns(text: str) -> int:
    text = text.strip()
    try:
        return round(float(text) * NS)
    except ValueError:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise ValueError(f"time {text!r} has no time zone (add Z or +08:00)") from None
        return round(when.timestamp() * NS)


def _number(text: str | None) -> float | None:
    return None if text is None or not text.strip() else float(text)


def _flag(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes")


def event_line(e: PolderEvent) -> str:
    st = e.state
    when = datetime.fromtimestamp(e.at_ns / NS).astimezone().isoformat(timespec="seconds")
    extra = (f" from {e.previous_alert_level}" if e.kind == "polder_level" else
             f" ({e.reason})" if e.reason else "")
    eta = f" eta_next_s={st.eta_next_s:.0f} ({st.next_level})" if st.eta_next_s else ""
    return (f"{when} {e.kind} alert_level={st.alert_level}{extra} level={st.level} "
            f"trend_per_h={st.trend_per_h}{eta}")


def run(path: Path, polder: PolderConfig, *, quiet: bool = False) -> tuple[Replay, Score,
                                                                          list[Row]]:
    rows = read_csv(path)
    result = replay(rows, polder)
    score = Score()
    score.add(rows, result, polder)
    if not quiet:
        for e in result.events:
            print(event_line(e))
    return result, score, rows
