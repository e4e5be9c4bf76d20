"""Access-point counters and rates become current rates and daily totals (devices.wifi)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import collectd
from devices.reading import Reading
from devices.wifi import ByteCounter, CounterStep, UsageTracker, day_text, local_day

SEC = 10**9
WITA = timezone(timedelta(hours=8))
CAPTURE = Path("/work/shared/samples/collectd-5.12-mqtt.tsv")


def wita(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """Nanoseconds of a WITA wall-clock time, computed by datetime, independently of the code."""
    moment = datetime(year, month, day, hour, minute, second, tzinfo=WITA)
    return int(moment.timestamp()) * SEC


# A morning in the park, well away from midnight.
T0 = wita(2026, 11, 28, 9, 0, 0)
MIDNIGHT = wita(2026, 11, 29, 0, 0, 0)


def test_local_day_is_wita_by_offset() -> None:
    assert day_text(local_day(MIDNIGHT - 1, 480)) == "2026-11-28"
    assert day_text(local_day(MIDNIGHT, 480)) == "2026-11-29"
    # The same instant is still the 28th in UTC (16:00).
    assert day_text(local_day(MIDNIGHT, 0)) == "2026-11-28"
    assert day_text(local_day(0, 0)) == "1970-01-01"


# --- ByteCounter ---------------------------------------------------------------------------

# (previous value, value, seconds between, expected step)
STEPS: list[tuple[str, int, int, float, CounterStep]] = [
    ("ok", 1000, 2000, 10, CounterStep("ok", 1000, 800.0)),
    ("unchanged", 1000, 1000, 10, CounterStep("ok", 0, 0.0)),
    ("wrap32 near 2**32", 2**32 - 1000, 500, 10, CounterStep("wrap32", 1500, 1200.0)),
    ("wrap32 from the top", 2**32 - 1, 0, 1, CounterStep("wrap32", 1, 8.0)),
    ("wrap64 near 2**64", 2**64 - 1000, 500, 10, CounterStep("wrap64", 1500, 1200.0)),
    # Above 2**32 a drop is not a 32-bit wrap; a 64-bit wrap would mean exabytes: a reboot.
    ("reset above 2**32", 5_000_000_000, 1000, 30, CounterStep("reset", 1000, None)),
    ("reset to zero", 5_000_000_000, 0, 30, CounterStep("reset", 0, None)),
    # Below 2**32 the implied rate decides: 1.3 GB in one second is more than 10 Gbit/s...
    ("reset: wrap too fast", 3_000_000_000, 100, 1, CounterStep("reset", 100, None)),
    # ...while in ten seconds it is not, and the same drop reads as a wrap (the documented
    # ambiguity of 32-bit counters).
    (
        "wrap32: plausible",
        3_000_000_000,
        100,
        10,
        CounterStep("wrap32", 2**32 - 3_000_000_000 + 100, (2**32 - 3_000_000_000 + 100) * 0.8),
    ),
    ("wrap32 at exactly 10 Gbit/s", 2**32 - 10**9, 250_000_000, 1,
     CounterStep("wrap32", 1_250_000_000, 10e9)),
    ("a byte more is a reset", 2**32 - 10**9, 250_000_001, 1,
     CounterStep("reset", 250_000_001, None)),
    ("gap: over an hour", 1000, 2000, 3600.5, CounterStep("gap", None, None)),
    ("exactly an hour", 1000, 2000, 3600, CounterStep("ok", 1000, 1000 * 8 / 3600)),
    ("gap: faster than 10 Gbit/s", 0, 1_250_000_001, 1, CounterStep("gap", None, None)),
    ("exactly 10 Gbit/s", 0, 1_250_000_000, 1, CounterStep("ok", 1_250_000_000, 10e9)),
    # After a drop the value itself is what the reboot carried; more than the line can carry
    # in the step is not believable either.
    ("gap: reset too big", 2**40, 2**39, 1, CounterStep("gap", None, None)),
    ("duplicate", 1000, 1000, 0, CounterStep("ok", 0, None)),
    ("out of order", 1000, 900, -5, CounterStep("ok", 0, None)),
    ("out of order, higher", 1000, 5000, -5, CounterStep("ok", 0, None)),
    ("clock back over an hour", 1000, 900, -3601, CounterStep("gap", None, None)),
]


@pytest.mark.parametrize(("prev", "value", "dt_s", "expected"), [s[1:] for s in STEPS],
                         ids=[s[0] for s in STEPS])
def test_counter_step(prev: int, value: int, dt_s: float, expected: CounterStep) -> None:
    counter = ByteCounter()
    assert counter.update(prev, T0) == CounterStep("first", None, None)
    step = counter.update(value, T0 + int(dt_s * SEC))
    assert step.kind == expected.kind
    assert step.delta == expected.delta
    if expected.rate_bps is None:
        assert step.rate_bps is None
    else:
        assert step.rate_bps == pytest.approx(expected.rate_bps)


def test_counter_ignores_a_sample_that_is_not_newer() -> None:
    counter = ByteCounter()
    counter.update(1000, T0)
    counter.update(2000, T0 + 10 * SEC)
    assert counter.update(1500, T0 + 5 * SEC) == CounterStep("ok", 0, None)
    assert counter.update(9999, T0 + 10 * SEC) == CounterStep("ok", 0, None)
    assert (counter.last_value, counter.last_ns) == (2000, T0 + 10 * SEC)
    # Nothing was lost: the next newer sample counts from the last accepted one.
    assert counter.update(3000, T0 + 20 * SEC) == CounterStep("ok", 1000, 800.0)


def test_counter_after_a_gap_or_reset_counts_from_the_new_value() -> None:
    counter = ByteCounter(max_gap_s=60)
    counter.update(1000, T0)
    assert counter.update(5 * 2**32, T0 + 61 * SEC).kind == "gap"
    assert counter.update(5 * 2**32 + 100, T0 + 71 * SEC) == CounterStep("ok", 100, 80.0)
    assert counter.update(10, T0 + 81 * SEC) == CounterStep("reset", 10, None)
    assert counter.update(20, T0 + 91 * SEC) == CounterStep("ok", 10, 8.0)
    # The same drop from below 2**32 reads as a wrap: 4.3 GB in 10 s is 3.4 Gbit/s, under
    # the default 10 Gbit/s (the ambiguity the module docstring describes)...
    counter.update(50_000, T0 + 200 * SEC)
    assert counter.update(10, T0 + 210 * SEC).kind == "wrap32"
    # ...and a realistic max_rate_bps for the AP tells them apart.
    slower = ByteCounter(max_rate_bps=1e9)
    slower.update(50_000, T0)
    assert slower.update(10, T0 + 10 * SEC) == CounterStep("reset", 10, None)


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (2**64, ValueError), (True, TypeError), (1.0, TypeError)],
)
def test_counter_refuses(value: Any, error: type[Exception]) -> None:
    counter = ByteCounter()
    with pytest.raises(error):
        counter.update(value, T0)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_rate_bps": 0}, {"max_rate_bps": math.nan}, {"max_gap_s": -1}, {"max_gap_s": math.inf}],
)
def test_counter_settings_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # the message names the setting
        ByteCounter(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2**64 - 1), st.integers(-2 * 3600, 2 * 3600)),
        min_size=1,
        max_size=30,
    )
)
def test_counter_never_counts_negative_or_huge(samples: list[tuple[int, int]]) -> None:
    counter = ByteCounter()
    t = T0
    for value, dt_s in samples:
        t += dt_s * SEC
        step = counter.update(value, t)
        if step.kind in ("first", "gap"):
            assert step.delta is None
        else:
            assert step.delta is not None
            assert 0 <= step.delta <= 10e9 / 8 * 3600
        if step.rate_bps is not None:
            assert 0 <= step.rate_bps <= 10e9


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, 2**32 - 1),
    steps=st.lists(
        st.tuples(st.integers(0, 2**30), st.integers(1, 120)), min_size=1, max_size=40
    ),
)
def test_daily_total_is_the_true_sum_across_32_bit_wraps(
    start: int, steps: list[tuple[int, int]]
) -> None:
    """(a) Per-step increments (at most 2**30 bytes a second, below 10 Gbit/s) applied to a
    32-bit counter, which wraps wherever the sum takes it; the tracker's total is the sum."""
    tracker = UsageTracker()
    t = T0
    true_value = start
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes": start}, t)
    wraps = 0
    for increment, dt_s in steps:
        t += dt_s * SEC
        wraps += (true_value % 2**32) + increment >= 2**32
        true_value += increment
        assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes": true_value % 2**32}, t)
    usage = tracker.ap("ap1", t)
    assert usage is not None
    assert usage.rx_bytes_today == true_value - start
    assert usage.events["wrap32"] == wraps
    assert usage.events["reset"] == usage.events["gap"] == 0


# --- UsageTracker: rates -----------------------------------------------------------------


def capture_readings() -> list[Reading]:
    rows = CAPTURE.read_text(encoding="ascii").splitlines()[1:]
    readings = []
    for row in rows:
        topic, payload_hex = row.split("\t")
        readings += collectd.decode(topic, bytes.fromhex(payload_hex), 1_795_850_801 * SEC,
                                    collectd.Options())
    return readings


def feed(tracker: UsageTracker, readings: list[Reading]) -> int:
    used = 0
    for r in readings:
        interface = r.tag("interface") or r.tag("iwinfo")
        device = r.tag("device")
        assert device is not None
        used += tracker.observe(device, "park", interface, dict(r.fields), r.time_ns)
    return used


def test_collectd_rates_from_a_real_capture_are_integrated() -> None:
    readings = capture_readings()
    # The capture's AP reported only lo and eth0: not Wi-Fi, so nothing is counted by default.
    default = UsageTracker()
    assert feed(default, readings) == 0
    assert default.ap("ap-gerbang-utama", 1_795_850_801 * SEC) is None

    tracker = UsageTracker(interfaces=("lo",))
    assert feed(tracker, readings) == 3  # the three lo if_octets after collectd's first nan
    usage = tracker.ap("ap-gerbang-utama", 1_795_850_801 * SEC)
    assert usage is not None
    # First rate sample counts nothing (no interval); then rate x interval, by hand:
    expected = round(5032.03151165311 * 1.000) + round(4719.36696929194 * 1.001)
    assert usage.rx_bytes_today == usage.tx_bytes_today == expected
    assert usage.rx_bps == pytest.approx(4719.36696929194 * 8)
    assert usage.tx_bps == pytest.approx(4719.36696929194 * 8)
    assert usage.day == "2026-11-28"


def test_rates_are_integrated_over_the_interval_since_the_previous_sample() -> None:
    tracker = UsageTracker()
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 1000.0}, T0)
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 2000.0}, T0 + 10 * SEC)
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 500}, T0 + 40 * SEC)
    # A duplicate and a straggler change nothing.
    assert not tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 9e6}, T0 + 40 * SEC)
    assert not tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 9e6}, T0 + 20 * SEC)
    usage = tracker.ap("ap1", T0 + 40 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 2000 * 10 + 500 * 30
    assert usage.tx_bytes_today == 0
    assert usage.rx_bps == 4000.0
    assert usage.tx_bps is None
    # Over an hour of silence: nothing counted for it, a gap recorded, counting resumes.
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 7.0}, T0 + 3641 * SEC)
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 8.0}, T0 + 3651 * SEC)
    usage = tracker.ap("ap1", T0 + 3651 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 2000 * 10 + 500 * 30 + 80
    assert usage.events["gap"] == 1


@pytest.mark.parametrize(("field", "values"), [
    ("rx_bytes_per_s", (100.0, 100.0, 100.0)),
    ("rx_bytes", (1000, 5000, 6000)),
])
def test_a_clock_jumping_back_hours_becomes_a_new_baseline(
    field: str, values: tuple[float, float, float]
) -> None:
    """An AP without a real-time clock reboots into a stale time: its samples are not
    stragglers to ignore until the clock catches up, but a new start."""
    tracker = UsageTracker()
    back = T0 - 2 * 3600 * SEC
    assert tracker.observe("ap1", "park", "wlan0", {field: values[0]}, T0)
    assert tracker.observe("ap1", "park", "wlan0", {field: values[1]}, back)
    assert tracker.observe("ap1", "park", "wlan0", {field: values[2]}, back + 10 * SEC)
    usage = tracker.ap("ap1", back + 10 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 1000
    assert usage.events["gap"] == 1


def test_counter_rates_and_totals_summed_over_interfaces() -> None:
    tracker = UsageTracker()
    for i, (a, b) in enumerate([(0, 0), (1000, 4000), (3000, 5000)]):
        t = T0 + i * 10 * SEC
        assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes": a, "tx_bytes": 2 * a}, t)
        assert tracker.observe("ap1", "park", "wlan1", {"rx_bytes": b}, t)
    usage = tracker.ap("ap1", T0 + 20 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 3000 + 5000
    assert usage.tx_bytes_today == 6000
    assert usage.rx_bps == pytest.approx((2000 + 1000) * 8 / 10)
    assert usage.tx_bps == pytest.approx(4000 * 8 / 10)


def test_reset_counts_the_bytes_since_the_reboot_and_clears_the_rate() -> None:
    tracker = UsageTracker()
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 6_000_000_000}, T0)
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 6_000_010_000}, T0 + 10 * SEC)
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 700}, T0 + 100 * SEC)
    usage = tracker.ap("ap1", T0 + 100 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 10_000 + 700
    assert usage.rx_bps is None  # the rate across a reboot is unknown
    assert dict(usage.events) == {"wrap32": 0, "wrap64": 0, "reset": 1, "gap": 0}


def test_a_counter_is_preferred_to_a_rate_and_switching_counts_nothing_twice() -> None:
    tracker = UsageTracker(fresh_s=60)
    both = {"rx_bytes": 1000, "rx_bytes_per_s": 123.0}
    assert tracker.observe("ap1", "park", "wlan0", both, T0)
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 2000}, T0 + 10 * SEC)
    # A rate from another path while the counter is alive is ignored.
    assert not tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 5e6}, T0 + 20 * SEC)
    # The counter goes quiet; rates take over, starting afresh (no interval back to T0).
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 100.0}, T0 + 80 * SEC)
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 100.0}, T0 + 90 * SEC)
    # The counter returns: a new baseline, not 3000 - 2000 again on top of the rates.
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 3000}, T0 + 100 * SEC)
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 3500}, T0 + 110 * SEC)
    usage = tracker.ap("ap1", T0 + 110 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 1000 + 100 * 10 + 500
    # And rates after it start afresh again, not from their last sample at +90 s.
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 100.0}, T0 + 200 * SEC)
    assert tracker.observe("ap1", "park", "wlan0", {"rx_bytes_per_s": 100.0}, T0 + 210 * SEC)
    usage = tracker.ap("ap1", T0 + 210 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 1000 + 100 * 10 + 500 + 100 * 10


@pytest.mark.parametrize(
    ("interface", "counted"),
    [
        (None, True),
        ("wlan0", True),
        ("wlan1-1", True),
        ("phy0-ap0", True),
        ("ath0", True),
        ("wifi0", True),
        ("lo", False),
        ("eth0", False),
        ("br-lan", False),
        ("WLAN0", False),  # Linux interface names are case-sensitive
        ("", False),
    ],
)
def test_interface_filter(interface: str | None, counted: bool) -> None:
    tracker = UsageTracker()
    assert tracker.observe("ap1", "park", interface, {"rx_bytes_per_s": 10.0}, T0) is counted
    assert (tracker.ap("ap1", T0) is not None) is counted


def test_interface_patterns_are_configurable() -> None:
    tracker = UsageTracker(interfaces=("br-*",))
    assert tracker.observe("ap1", "park", "br-lan", {"clients": 3}, T0)
    assert not tracker.observe("ap1", "park", "wlan0", {"clients": 3}, T0)


@pytest.mark.parametrize(
    "value",
    [True, False, math.nan, math.inf, -math.inf, -1, -0.5, "12", None, [1], 2**64, 1.5e20, 2.5],
)
def test_odd_values_are_ignored_never_raised(value: object) -> None:
    tracker = UsageTracker()
    # 2.5 and 1.5e20 are fine as rates, not as counters; the rate of 1.5e20 B/s is too fast.
    fields = {"rx_bytes": value, "tx_bytes": value, "clients": value if value != 2.5 else -2}
    assert tracker.observe("ap1", "park", "wlan0", fields, T0) is False
    assert tracker.ap("ap1", T0) is None
    rates = {"rx_bytes_per_s": value, "tx_bytes_per_s": value}
    assert tracker.observe("ap1", "park", "wlan0", rates, T0) is (value == 2.5)


@pytest.mark.parametrize("t_ns", [-1, 2**63, 1.5e18, True])
def test_odd_times_are_ignored(t_ns: Any) -> None:
    tracker = UsageTracker()
    assert not tracker.observe("ap1", "park", "wlan0", {"clients": 1}, t_ns)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["rx_bytes", "tx_bytes", "rx_bytes_per_s", "tx_bytes_per_s", "clients",
                         "other"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3)),
    ),
    st.one_of(st.none(), st.text(max_size=6)),
    st.integers(0, 2**63 - 1),
)
def test_observe_never_raises(fields: dict[str, Any], interface: str | None, t_ns: int) -> None:
    tracker = UsageTracker(interfaces=("*",))
    tracker.observe("ap1", "park", interface, fields, t_ns)
    tracker.observe("ap1", "park", interface, fields, t_ns + SEC)
    for usage in tracker.aps(t_ns):
        assert usage.rx_bytes_today >= 0
        assert usage.tx_bytes_today >= 0


# --- clients, freshness, sites -----------------------------------------------------------


def test_clients_per_radio_are_summed_and_expire() -> None:
    tracker = UsageTracker(fresh_s=180)
    assert tracker.observe("ap1", "park", "wlan0", {"clients": 5.0}, T0)
    assert tracker.observe("ap1", "park", "wlan1", {"clients": 7}, T0 + 60 * SEC)
    usage = tracker.ap("ap1", T0 + 60 * SEC)
    assert usage is not None
    assert usage.clients == 12
    # wlan0 changes; an older value arriving late does not overwrite the newer one.
    assert tracker.observe("ap1", "park", "wlan0", {"clients": 2.6}, T0 + 100 * SEC)
    assert not tracker.observe("ap1", "park", "wlan0", {"clients": 40}, T0 + 50 * SEC)
    usage = tracker.ap("ap1", T0 + 100 * SEC)
    assert usage is not None
    assert usage.clients == 3 + 7
    # wlan1 was last heard at +60 s: gone from the sum after +240 s; all gone after +280 s.
    usage = tracker.ap("ap1", T0 + 241 * SEC)
    assert usage is not None
    assert usage.clients == 3
    usage = tracker.ap("ap1", T0 + 281 * SEC)
    assert usage is not None
    assert usage.clients is None


def test_stale_rates_expire_but_totals_stay() -> None:
    tracker = UsageTracker(fresh_s=180)
    tracker.observe("ap1", "park", "wlan0", {"tx_bytes_per_s": 100.0}, T0)
    tracker.observe("ap1", "park", "wlan0", {"tx_bytes_per_s": 100.0}, T0 + 10 * SEC)
    fresh = tracker.ap("ap1", T0 + 190 * SEC)
    stale = tracker.ap("ap1", T0 + 191 * SEC)
    assert fresh is not None
    assert stale is not None
    assert fresh.tx_bps == 800.0
    assert stale.tx_bps is None
    assert stale.tx_bytes_today == 1000
    assert stale.last_ns == T0 + 10 * SEC


def test_site_sums_its_aps() -> None:
    tracker = UsageTracker(fresh_s=180)
    for device, site, rate, clients in [
        ("ap1", "park", 100.0, 3),
        ("ap2", "park", 50.0, 4),
        ("ap3", "other", 1e6, 99),
    ]:
        tracker.observe(device, site, "wlan0", {"rx_bytes_per_s": rate, "clients": clients}, T0)
        tracker.observe(device, site, "wlan0", {"rx_bytes_per_s": rate}, T0 + 10 * SEC)
    tracker.observe("ap4", "park", "wlan0", {"clients": 1}, T0 - 3600 * SEC)  # long silent
    park = tracker.site("park", T0 + 10 * SEC)
    assert park.rx_bps == 1200.0
    assert park.tx_bps == 0.0
    assert park.rx_bytes_today == 1500
    assert park.clients == 7
    assert park.aps_reporting == 2
    assert park.day == "2026-11-28"
    assert [u.device for u in tracker.aps(T0)] == ["ap3", "ap1", "ap2", "ap4"]
    nowhere = tracker.site("nowhere", T0)
    assert (nowhere.rx_bps, nowhere.clients, nowhere.aps_reporting) == (0.0, 0, 0)


def test_an_ap_moving_site_is_reported_at_the_new_one() -> None:
    tracker = UsageTracker()
    tracker.observe("ap1", "old", "wlan0", {"clients": 1}, T0)
    tracker.observe("ap1", "new", "wlan0", {"clients": 2}, T0 + SEC)
    assert tracker.site("old", T0 + SEC).clients == 0
    assert tracker.site("new", T0 + SEC).clients == 2


# --- days ----------------------------------------------------------------------------------


def test_totals_roll_over_at_local_midnight() -> None:
    tracker = UsageTracker()  # WITA
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 0}, MIDNIGHT - 30 * SEC)
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 1000}, MIDNIGHT - 10 * SEC)
    before = tracker.ap("ap1", MIDNIGHT - 1)
    assert before is not None
    assert (before.day, before.rx_bytes_today) == ("2026-11-28", 1000)
    # Nothing new yet after midnight: today is empty.
    empty = tracker.ap("ap1", MIDNIGHT)
    assert empty is not None
    assert (empty.day, empty.rx_bytes_today) == ("2026-11-29", 0)
    # The step from 23:59:50 to 00:00:10 ends in the new day and counts there.
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 1500}, MIDNIGHT + 10 * SEC)
    after = tracker.ap("ap1", MIDNIGHT + 10 * SEC)
    assert after is not None
    assert (after.day, after.rx_bytes_today) == ("2026-11-29", 500)
    # A late step of another interface ending yesterday is not counted: yesterday is closed.
    tracker.observe("ap1", "park", "wlan1", {"rx_bytes": 0}, MIDNIGHT - 20 * SEC)
    tracker.observe("ap1", "park", "wlan1", {"rx_bytes": 9999}, MIDNIGHT - 5 * SEC)
    late = tracker.ap("ap1", MIDNIGHT + 10 * SEC)
    assert late is not None
    assert late.rx_bytes_today == 500


def test_midnight_follows_the_configured_offset() -> None:
    utc = UsageTracker(utc_offset_minutes=0)
    utc.observe("ap1", "park", "wlan0", {"rx_bytes": 0}, MIDNIGHT - 10 * SEC)
    utc.observe("ap1", "park", "wlan0", {"rx_bytes": 100}, MIDNIGHT + 10 * SEC)
    usage = utc.ap("ap1", MIDNIGHT + 10 * SEC)
    assert usage is not None
    assert (usage.day, usage.rx_bytes_today) == ("2026-11-28", 100)  # 16:00 UTC, same day


@pytest.mark.parametrize("offset", [-841, 841, 1.5])
def test_offset_is_checked(offset: Any) -> None:
    with pytest.raises(ValueError, match="utc_offset_minutes"):
        UsageTracker(utc_offset_minutes=offset)


# --- snapshot and restore ----------------------------------------------------------------


def counted_tracker() -> UsageTracker:
    tracker = UsageTracker()
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 0, "tx_bytes": 0}, T0)
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 700, "tx_bytes": 300}, T0 + 10 * SEC)
    tracker.observe("ap2", "park", "wlan0", {"clients": 4}, T0)  # nothing counted: no total
    return tracker


def test_snapshot_is_json_and_restores_the_same_day() -> None:
    snap = counted_tracker().snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap == {
        "version": 1,
        "utc_offset_minutes": 480,
        "aps": {"ap1": {"site": "park", "day": "2026-11-28", "rx_bytes": 700, "tx_bytes": 300}},
    }
    restarted = UsageTracker()
    restarted.restore(json.loads(json.dumps(snap)), T0 + 3600 * SEC)
    usage = restarted.ap("ap1", T0 + 3600 * SEC)
    assert usage is not None
    assert (usage.site, usage.rx_bytes_today, usage.tx_bytes_today) == ("park", 700, 300)
    assert (usage.rx_bps, usage.clients, usage.last_ns) == (None, None, None)
    # Counting goes on from there; the first sample after the restart is a new baseline.
    restarted.observe("ap1", "park", "wlan0", {"rx_bytes": 5000}, T0 + 3600 * SEC)
    restarted.observe("ap1", "park", "wlan0", {"rx_bytes": 5100}, T0 + 3610 * SEC)
    usage = restarted.ap("ap1", T0 + 3610 * SEC)
    assert usage is not None
    assert usage.rx_bytes_today == 800
    assert restarted.site("park", T0 + 3610 * SEC).rx_bytes_today == 800


def test_restore_on_the_next_day_keeps_nothing() -> None:
    snap = counted_tracker().snapshot()
    restarted = UsageTracker()
    restarted.restore(snap, MIDNIGHT + SEC)
    assert restarted.ap("ap1", MIDNIGHT + SEC) is None
    assert restarted.snapshot()["aps"] == {}


def test_restore_at_another_offset_keeps_nothing() -> None:
    snap = counted_tracker().snapshot()
    utc = UsageTracker(utc_offset_minutes=0)
    utc.restore(snap, T0)
    assert utc.aps(T0) == []


GOOD_ENTRY = {"site": "park", "day": "2026-11-28", "rx_bytes": 1, "tx_bytes": 2}


@pytest.mark.parametrize(
    "snap",
    [
        None,
        [],
        "x",
        {},
        {"version": 2, "utc_offset_minutes": 480, "aps": {"ap1": GOOD_ENTRY}},
        {"version": 1, "utc_offset_minutes": "480", "aps": {"ap1": GOOD_ENTRY}},
        {"version": 1, "utc_offset_minutes": 480, "aps": [GOOD_ENTRY]},
        {"version": 1, "utc_offset_minutes": 480, "aps": {"ap1": None}},
        {"version": 1, "utc_offset_minutes": 480, "aps": {"ap1": {**GOOD_ENTRY, "rx_bytes": -1}}},
        {"version": 1, "utc_offset_minutes": 480, "aps": {"ap1": {**GOOD_ENTRY, "rx_bytes": True}}},
        {"version": 1, "utc_offset_minutes": 480, "aps": {"ap1": {**GOOD_ENTRY, "tx_bytes": 1.0}}},
        {"version": 1, "utc_offset_minutes": 480, "aps": {"ap1": {**GOOD_ENTRY, "site": 3}}},
        {"version": 1, "utc_offset_minutes": 480, "aps": {"ap1": {**GOOD_ENTRY, "day": "today"}}},
        {"version": 1, "utc_offset_minutes": 480, "aps": {"ap1": {"site": "park"}}},
    ],
)
def test_restore_ignores_bad_input(snap: Any) -> None:
    tracker = UsageTracker()
    tracker.restore(snap, T0)
    assert tracker.aps(T0) == []


def test_restore_skips_only_the_bad_entries() -> None:
    tracker = UsageTracker()
    tracker.restore(
        {"version": 1, "utc_offset_minutes": 480,
         "aps": {"bad": {**GOOD_ENTRY, "rx_bytes": "1"}, "good": GOOD_ENTRY}},
        T0,
    )
    assert [(u.device, u.rx_bytes_today, u.tx_bytes_today) for u in tracker.aps(T0)] == [
        ("good", 1, 2)
    ]


# --- memory --------------------------------------------------------------------------------


def test_the_ap_heard_least_recently_is_forgotten_at_the_bound() -> None:
    tracker = UsageTracker(max_series=4)
    tracker.observe("ap1", "park", "wlan0", {"rx_bytes": 1, "tx_bytes": 1}, T0)  # 2 series
    tracker.observe("ap2", "park", "wlan0", {"rx_bytes": 1}, T0)  # 1
    tracker.observe("ap1", "park", "wlan0", {"clients": 1}, T0 + SEC)  # 1: ap1 is now newest
    assert {u.device for u in tracker.aps(T0)} == {"ap1", "ap2"}
    tracker.observe("ap3", "park", "wlan0", {"clients": 1}, T0 + 2 * SEC)
    assert {u.device for u in tracker.aps(T0)} == {"ap1", "ap3"}
    # One AP inventing interfaces cannot grow past the bound, and keeps what it had.
    for i in range(10):
        tracker.observe("ap3", "park", f"wlan{i + 1}", {"clients": 1}, T0 + 3 * SEC)
    assert {u.device for u in tracker.aps(T0)} == {"ap3"}
    usage = tracker.ap("ap3", T0 + 3 * SEC)
    assert usage is not None
    assert usage.clients == 4


def test_junk_neither_creates_nor_evicts_aps() -> None:
    tracker = UsageTracker(max_series=2)
    tracker.observe("ap1", "park", "wlan0", {"clients": 1}, T0)
    tracker.observe("ap2", "park", "wlan0", {"clients": 1}, T0)
    for i in range(100):
        assert not tracker.observe(f"junk{i}", "park", "wlan0", {"clients": -1}, T0)
        assert not tracker.observe(f"junk{i}", "park", "wlan0", {"rx_bytes": 1.5}, T0)
    assert [u.device for u in tracker.aps(T0)] == ["ap1", "ap2"]
