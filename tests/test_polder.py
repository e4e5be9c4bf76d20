"""The polder's early-warning core (issue 16, started): trust, rate of rise, level with
hysteresis and hold, time to the next level. Pure code on synthetic series with seeded noise;
times are given, no clock."""

from __future__ import annotations

import itertools
import random

import pytest

from gateway.park.polder import LEVELS, LevelState, Quality, theil_sen

NS = 1_000_000_000
MIN = 60 * NS
T0 = 1_800_000_000 * NS
THRESHOLDS = (150.0, 200.0, 250.0)  # cm: waspada, siaga, awas


def quality() -> Quality:
    return Quality(low=0, high=500, max_rate_per_h=120, flatline_s=1800, tolerance=5)


# -- rate of rise ----------------------------------------------------------------------------


def test_theil_sen_reads_a_rise_through_noise_and_a_spike() -> None:
    rng = random.Random(7)
    points = [(T0 + i * MIN, 100 + 0.2 * i + rng.uniform(-1, 1)) for i in range(31)]
    points[15] = (points[15][0], 400.0)  # one wild reading
    slope = theil_sen(points)
    assert slope is not None
    assert slope.per_h == pytest.approx(12.0, abs=1.5)  # 0.2 cm a minute
    assert slope.low_per_h <= slope.per_h <= slope.high_per_h
    assert slope.points == 31


def test_theil_sen_needs_three_points_at_two_times() -> None:
    assert theil_sen([(T0, 1.0), (T0 + MIN, 2.0)]) is None
    assert theil_sen([(T0, 1.0), (T0, 2.0), (T0, 3.0)]) is None
    flat = theil_sen([(T0 + i * MIN, 5.0) for i in range(5)])
    assert flat is not None
    assert flat.per_h == 0


# -- trust -----------------------------------------------------------------------------------


def test_out_of_range_and_not_a_number_are_not_trusted() -> None:
    q = quality()
    assert q.judge(T0, 120).trusted
    assert q.judge(T0 + MIN, 900).reason == "range"
    assert q.judge(T0 + 2 * MIN, -5).reason == "range"
    assert q.judge(T0 + 3 * MIN, float("nan")).reason == "range"


def test_every_spike_is_rejected_and_the_water_goes_on() -> None:
    q = quality()
    rng = random.Random(3)
    rejected, spikes = 0, 0
    for i in range(600):
        value = 100 + i * 0.05 + rng.uniform(-0.5, 0.5)
        if i % 37 == 5:
            value += rng.choice((-1, 1)) * rng.uniform(30, 80)  # faster than 120 cm/h
            spikes += 1
        verdict = q.judge(T0 + i * MIN, value)
        if not verdict.trusted:
            assert verdict.reason == "spike"
            rejected += 1
    assert rejected == spikes


def test_a_step_that_stays_becomes_the_reference_after_three_readings() -> None:
    q = quality()
    assert q.judge(T0, 100).trusted
    reasons = [q.judge(T0 + (i + 1) * MIN, 160.0 + i * 0.1).reason for i in range(4)]
    assert reasons == ["spike", "spike", None, None]


def test_a_flatline_is_flagged_after_flatline_s_and_clears_when_the_value_moves() -> None:
    q = quality()
    first_flag = None
    for i in range(60):
        verdict = q.judge(T0 + i * MIN, 132.4)  # a stuck float: every minute the same
        if not verdict.trusted and first_flag is None:
            first_flag = i
            assert verdict.reason == "flatline"
    assert first_flag == 30  # 30 minutes of the very same value
    assert q.judge(T0 + 61 * MIN, 132.6).trusted


# -- levels ----------------------------------------------------------------------------------


@pytest.mark.parametrize("hysteresis", [0.5, 1.0, 3.0])
def test_a_level_wandering_around_a_threshold_changes_at_most_once_per_hold(
        hysteresis: float) -> None:
    state = LevelState(THRESHOLDS, hysteresis=hysteresis, min_hold_s=1800)
    for i in range(10):  # risen to Siaga
        state.add(T0 + i * MIN, 205)
    assert state.name == "siaga"
    rng = random.Random(11)
    changes = []
    start = T0 + 10 * MIN
    for i in range(12 * 60):  # 12 hours, a reading a minute, +- 2 cm around Siaga's 200 cm
        change = state.add(start + i * MIN, 200 + rng.uniform(-2, 2))
        if change is not None:
            changes.append(change)
    times = [start, *(c.time_ns for c in changes)]
    assert all(b - a >= 30 * MIN for a, b in itertools.pairwise(times)), changes


def test_back_up_to_a_level_just_left_is_held_unless_clearly_past_it() -> None:
    state = LevelState(THRESHOLDS, hysteresis=2, min_hold_s=1800)
    state.add(T0, 205)
    for i in range(1, 32):
        state.add(T0 + i * MIN, 197)  # 30 minutes below 200 - 2: down to waspada
    assert state.name == "waspada"
    left = T0 + 31 * MIN
    assert state.add(left + MIN, 200.5) is None  # wandering back: held
    change = state.add(left + 2 * MIN, 202.5)  # past it by the hysteresis: a real rise
    assert change is not None
    assert (change.old, change.new) == ("waspada", "siaga")


def test_a_rise_is_never_held_back_and_a_fall_needs_the_hold() -> None:
    state = LevelState(THRESHOLDS, hysteresis=3, min_hold_s=1800)
    seen = []
    value = 140.0
    for i in range(200):  # up 1 cm a minute: waspada at 150, siaga at 200, awas at 250
        value = 140 + i
        change = state.add(T0 + i * MIN, value)
        if change is not None:
            seen.append((change.new, round(change.value)))
    assert seen == [("waspada", 150), ("siaga", 200), ("awas", 250)]
    # Down just below Awas less the hysteresis: Siaga only after 30 minutes there.
    start = T0 + 200 * MIN
    changes = [state.add(start + i * MIN, 245.0) for i in range(40)]
    downs = [(i, c.new) for i, c in enumerate(changes) if c is not None]
    assert downs == [(30, "siaga")]


# -- time to the next level ------------------------------------------------------------------


def test_the_time_to_the_next_level_follows_the_rise_with_a_band() -> None:
    state = LevelState(THRESHOLDS, hysteresis=3, min_hold_s=1800)
    rng = random.Random(5)
    for i in range(31):  # 10 cm an hour, +- 1 cm of noise, from 180 cm
        state.add(T0 + i * MIN, 180 + i / 6 + rng.uniform(-1, 1))
    est = state.estimate()
    assert est is not None
    assert est.next_level == "siaga"
    slope = state.slope()
    assert slope is not None
    assert slope.per_h == pytest.approx(10, abs=2)
    # 185 cm now, 15 cm to go at 10 cm/h: about 90 minutes.
    assert est.eta_s == pytest.approx(90 * 60, rel=0.25)
    assert est.low_s <= est.eta_s
    assert est.high_s is None or est.eta_s <= est.high_s


@pytest.mark.parametrize("rise_per_min", [0.0, -0.2])
def test_no_time_to_the_next_level_when_flat_or_falling(rise_per_min: float) -> None:
    state = LevelState(THRESHOLDS, hysteresis=3, min_hold_s=1800)
    for i in range(31):
        state.add(T0 + i * MIN, 180 + rise_per_min * i)
    assert state.estimate() is None


def test_no_time_to_a_level_past_awas() -> None:
    state = LevelState(THRESHOLDS, hysteresis=3, min_hold_s=1800)
    for i in range(31):
        state.add(T0 + i * MIN, 240 + i)
    assert state.name == "awas"
    assert state.estimate() is None
    assert LEVELS[-1] == "awas"


def test_thresholds_must_rise() -> None:
    with pytest.raises(ValueError, match="rising"):
        LevelState((200.0, 150.0, 250.0), hysteresis=3, min_hold_s=60)
