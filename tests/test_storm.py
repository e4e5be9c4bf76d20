"""The synthetic storm generator (devices/simulators/storm.py) that the polder replay scores the
early warning against: seeded, labelled crossings, spikes and a stuck sensor where asked."""

from __future__ import annotations

from devices.simulators.storm import NS, storm

T0 = 1_800_000_000 * NS


def test_a_storm_is_seeded_and_labels_its_crossings() -> None:
    a = storm(seed=4, start_ns=T0, rise_per_h=20, crest=270, hours=12)
    b = storm(seed=4, start_ns=T0, rise_per_h=20, crest=270, hours=12)
    assert a.readings == b.readings
    # Flat at 100 cm for 2 h, then 20 cm/h: 150 after 2.5 h more, 200 after 5 h, 250 after 7.5 h.
    assert {th: (t - T0) / NS / 3600 for th, t in a.crossings.items()} == {
        150.0: 4.5, 200.0: 7.0, 250.0: 9.5}
    assert all(abs(r.value - r.true) <= 2.05 for r in a.readings if not r.spike)  # +-2, 0.1 cm
    assert sum(r.spike for r in a.readings) == 5
    assert all(abs(r.value - r.true) >= 30 for r in a.readings if r.spike)


def test_a_stuck_sensor_repeats_one_value_for_its_hour() -> None:
    s = storm(seed=1, start_ns=T0, stuck_at_h=1.0, stuck_for_h=1.0, hours=4)
    stuck = [r for r in s.readings if r.stuck]
    assert len(stuck) == 60
    assert len({r.value for r in stuck}) == 1
