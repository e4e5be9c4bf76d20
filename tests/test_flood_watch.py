"""The flood watch at run time (issue 16, parts 1-4): readings in, events and polder_status out.

Pure in-process tests on an injected clock; the end-to-end path (broker, InfluxDB, alerts) is in
tests/test_polder_e2e.py."""

from __future__ import annotations

from typing import Any

import pytest

from devices.reading import Reading
from devices.simulators.storm import storm
from gateway.config.polder import PolderConfig
from gateway.park.flood import FloodWatch, PolderEvent
from gateway.park.polder import LEVELS
from gateway.testing.clock import FakeClock

NS = 10**9
T0 = 1_800_000_000 * NS


def polder(**over: Any) -> PolderConfig:
    raw: dict[str, Any] = {"device": "polder-1", "field": "level_cm", "name": "Bukit Pelangi",
                           "thresholds": {"waspada": 150, "siaga": 200, "awas": 250},
                           "interval_s": 60, "sensor_min": 0, "sensor_max": 500}
    raw.update(over)
    return PolderConfig.model_validate(raw)


class Park:
    def __init__(self, *polders: PolderConfig) -> None:
        self.clock = FakeClock(T0)
        self.events: list[PolderEvent] = []
        self.lines: list[str] = []
        self.watch = FloodWatch(polders or (polder(),), clock=self.clock, site="taman",
                                gateway_id="gw-1", notify=self.events.append,
                                emit=self.lines.extend)

    def read(self, value: float, *, device: str = "polder-1", field: str = "level_cm",
             step_s: float = 60) -> None:
        self.clock.set(self.clock.now_ns() + int(step_s * NS))
        self.watch.readings([Reading.build("polder", {"device": device},
                                           {field: value}, self.clock.now_ns())])

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def test_a_rise_through_every_level_alerts_each_once_and_estimates_the_next() -> None:
    park = Park()
    for i in range(280):                       # 30 cm/h from 120 cm, one reading a minute
        park.read(120 + i * 0.5)
        if i == 100:                           # 170 cm, Waspada, rising toward Siaga
            s = park.watch.states()[0]
            assert s.alert_level == "waspada"
            assert s.next_level == "siaga"
            assert s.trend_per_h == pytest.approx(30, rel=0.01)
            assert s.eta_next_s == pytest.approx(60 * 60, rel=0.02)   # 30 cm at 30 cm/h
            assert s.eta_low_s is not None
            assert s.eta_high_s is not None
            assert s.eta_next_s
            assert s.eta_low_s <= s.eta_next_s <= s.eta_high_s
    levels = [(e.previous_alert_level, e.state.alert_level) for e in park.events
              if e.kind == "polder_level"]
    assert levels == [("normal", "waspada"), ("waspada", "siaga"), ("siaga", "awas")]
    assert park.kinds().count("polder_rising") == 1
    assert park.watch.states()[0].next_level is None       # past Awas: nothing to estimate


def test_falling_or_flat_water_has_no_time_to_the_next_level() -> None:
    park = Park()
    for i in range(40):
        park.read(180 - i * 0.5)
    s = park.watch.states()[0]
    assert (s.eta_next_s, s.eta_low_s, s.eta_high_s, s.next_level) == (None,) * 4
    assert s.trend_per_h is not None
    assert s.trend_per_h < 0


def test_wandering_around_a_threshold_changes_the_level_at_most_once_per_hold() -> None:
    park = Park()
    for i in range(24 * 60):                   # a day at 200 +- 2 cm (Siaga's threshold)
        park.read(200 + (2 if i % 2 else -2))
    changes = [e.at_ns for e in park.events if e.kind == "polder_level"]
    assert len(changes) <= 1 + (24 * 60 * 60) // 1800


def test_the_rise_alert_fires_below_waspada_within_two_readings_of_a_fast_rise() -> None:
    park = Park(polder(rise_alert_per_h=20))
    for _ in range(30):
        park.read(100, step_s=300)
        park.read(100.5, step_s=300)
    assert "polder_rising" not in park.kinds()
    park.read(106.5, step_s=300)                # 72 cm/h at a reading every 5 minutes
    park.read(112.5, step_s=300)
    assert park.kinds() == ["polder_rising"]
    assert park.watch.states()[0].alert_level == "normal"


def test_noise_alone_never_makes_a_rise_alert() -> None:
    park = Park(polder(rise_alert_per_h=20, noise=4))
    wobble = [0, 1.9, -1.9, 2, -2, 1, 0, -1.5, 1.8, -0.5]
    for i in range(24 * 60):
        park.read(120 + wobble[i % len(wobble)])
    assert park.kinds() == []


def test_a_single_spike_is_rejected_counted_and_not_a_fault() -> None:
    park = Park()
    for _ in range(5):
        park.read(120)
    park.read(400)                              # a bird on the sensor: 280 cm in a minute
    s = park.watch.states()[0]
    assert s.quality == "spike"
    assert not s.fault
    assert s.level == 120
    assert s.alert_level == "normal"           # the spike moved nothing
    park.read(120.5)
    assert park.watch.states()[0].quality == "ok"
    assert park.kinds() == []
    assert park.watch.statistics()["polder-1"]["spike"] == 1


def test_out_of_range_twice_is_a_fault_that_never_moves_the_level_and_recovers() -> None:
    park = Park()
    for _ in range(3):
        park.read(180)                          # Waspada
    park.read(900)
    park.read(900)
    assert park.kinds() == ["polder_level", "polder_sensor_fault"]
    s = park.watch.states()[0]
    assert (s.quality, s.fault, s.level, s.alert_level) == ("range", True, None, "waspada")
    assert s.eta_next_s is None
    park.read(181)
    assert park.kinds()[-1] == "polder_sensor_ok"
    assert park.events[-1].reason == "range"
    assert park.watch.states()[0].level == 181


def test_a_stuck_sensor_is_flagged_as_a_flatline_within_its_time() -> None:
    park = Park(polder(flatline_s=1800))
    park.read(150.2)
    for _ in range(30):
        park.read(150.2)
    faults = [e for e in park.events if e.kind == "polder_sensor_fault"]
    assert [f.reason for f in faults] == ["flatline"]
    assert faults[0].at_ns - T0 <= 31 * 60 * NS
    assert park.watch.states()[0].level is None


def test_silence_for_three_intervals_is_stale_and_the_next_reading_recovers() -> None:
    park = Park()
    park.read(120)
    park.clock.set(park.clock.now_ns() + 179 * NS)
    park.watch.check()
    assert park.kinds() == []
    park.clock.set(park.clock.now_ns() + 2 * NS)
    park.watch.check()
    park.watch.check()                          # said once
    assert park.kinds() == ["polder_sensor_fault"]
    assert park.watch.states()[0].quality == "stale"
    assert park.watch.states()[0].level is None
    park.read(121)
    assert park.kinds() == ["polder_sensor_fault", "polder_sensor_ok"]


def test_two_sensors_that_disagree_are_neither_believed() -> None:
    park = Park(polder(second={"device": "polder-2", "field": "level_cm"}, disagree_by=10))
    for _ in range(3):
        park.read(120, device="polder-2", step_s=1)
        park.read(121)
    assert park.watch.states()[0].quality == "ok"
    for _ in range(4):  # the second's own spike check takes the step after three readings
        park.read(160, device="polder-2", step_s=1)  # the second one says Waspada
        park.read(121)
    s = park.watch.states()[0]
    assert (s.quality, s.fault, s.alert_level) == ("disagree", True, "normal")
    assert park.kinds() == ["polder_sensor_fault"]


def test_every_judged_reading_is_a_polder_status_point() -> None:
    park = Park()
    park.read(120)
    park.read(900)
    assert len(park.lines) == 2
    assert park.lines[0].startswith("polder_status,device=polder-1,gateway=gw-1,site=taman ")
    assert 'quality="ok"' in park.lines[0]
    assert "reading=120" in park.lines[0]
    assert 'quality="range"' in park.lines[1]
    assert "trusted=false" in park.lines[1]


def test_a_seeded_storm_with_a_stuck_episode_alerts_levels_and_the_fault() -> None:
    s = storm(seed=7, start_ns=T0, rise_per_h=20, crest=260, stuck_at_h=1.0, spikes=5)
    park = Park()
    for r in s.readings:
        park.clock.set(r.time_ns)
        park.watch.readings([Reading.build("polder", {"device": "polder-1"},
                                           {"level_cm": r.value}, r.time_ns)])
    kinds = park.kinds()
    assert "polder_sensor_fault" in kinds
    assert "polder_sensor_ok" in kinds
    ups = [e.state.alert_level for e in park.events if e.kind == "polder_level"
           and e.previous_alert_level is not None
           and LEVELS.index(e.state.alert_level) > LEVELS.index(e.previous_alert_level)]
    assert {"siaga", "awas"} <= set(ups)


def test_the_last_hours_rain_from_amounts_and_from_a_running_total() -> None:
    park = Park(polder(rain={"device": "rain-1", "field": "rain_mm"}),
                polder(device="polder-2", rain={"device": "rain-2", "counter": True}))
    assert [s.rain_mm_1h for s in park.watch.states()] == [None, None]
    for total in (100.0, 101.5, 103.0):       # the counter: 3 mm in two readings
        park.read(0.5, device="rain-1", field="rain_mm", step_s=1200)
        park.read(total, device="rain-2", field="rain_mm", step_s=0)
    assert [s.rain_mm_1h for s in park.watch.states()] == [1.5, 3.0]
    park.read(0.0, device="rain-1", field="rain_mm", step_s=3000)   # older ones leave the hour
    park.read(2.0, device="rain-2", field="rain_mm", step_s=0)      # reset: not negative rain
    assert [s.rain_mm_1h for s in park.watch.states()] == [0.5, 1.5]


def test_a_restart_remembers_the_level_and_the_fault_said_before_it() -> None:
    saved: list[dict[str, Any]] = []
    park = Park()
    park.watch = FloodWatch([polder()], clock=park.clock, site="taman", gateway_id="gw-1",
                            notify=park.events.append, emit=park.lines.extend,
                            save=saved.append)
    for level in (180, 205, 900, 900):                    # Siaga, then the sensor goes bad
        park.read(level, step_s=1800)
    assert park.kinds() == ["polder_level", "polder_level", "polder_sensor_fault"]
    assert saved[-1]["polder-1"]["level"] == 2
    assert saved[-1]["polder-1"]["fault"] == "range"
    after = Park()                                        # the next start, same state file
    after.watch.restore(saved[-1])
    assert after.watch.states()[0].alert_level == "siaga"
    after.read(206)                                       # still Siaga: nothing new to say
    assert after.kinds() == ["polder_sensor_ok"]          # but the fault said is over
    after.read(207)
    assert after.kinds() == ["polder_sensor_ok"]
    after.watch.restore({"polder-1": {"level": 9}, "other": "x"})  # nonsense is ignored
    assert after.watch.states()[0].alert_level == "siaga"
