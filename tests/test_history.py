"""The charts' rollups on their own: real SQLite files in tmp_path, a FakeClock, no sleeps."""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.reading import FieldValue, Reading
from gateway.park.history import DEFAULT_TIERS, NS, History, HistoryAnswer, Tier
from gateway.testing.clock import FakeClock
from tests.conftest import until

MIN = 60 * NS
HOUR = 3600 * NS
DAY = 86400 * NS
T0 = FakeClock().now_ns()  # 1_800_000_000 s: on a minute and a quarter-hour boundary


def reading(device: str | None, time_ns: int, **fields: FieldValue) -> Reading:
    tags = {"site": "taman"} | ({"device": device} if device is not None else {})
    return Reading.build("garden", tags, fields, time_ns)


def rows(path: Path) -> list[tuple[int, str, str, int, int, float, float, float]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM rollup ORDER BY tier_step, device, field, bucket_s"
                          ).fetchall()
    finally:
        db.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


def test_minute_buckets_hold_average_minimum_and_maximum_by_the_readings_own_time(
    path: Path, clock: FakeClock,
) -> None:
    clock.advance(3600)
    h = History(path, clock=clock)
    ten_ago = clock.now_ns() - 10 * MIN
    h.readings([reading("kebun-1", ten_ago + 5 * NS, temperature_c=28.0, humidity_pct=80),
                reading("kebun-1", ten_ago + 20 * NS, temperature_c=30.5, humidity_pct=82),
                reading("kebun-1", ten_ago + 59 * NS, temperature_c=29.0, humidity_pct=81)])
    h.readings([reading("kebun-1", ten_ago + 60 * NS, temperature_c=31.0, humidity_pct=79)])
    answer = h.query("kebun-1", "temperature_c", clock.now_ns() - HOUR, clock.now_ns())
    assert answer == HistoryAnswer(60, [(ten_ago, 29.1666666667, 28.0, 30.5),
                                        (ten_ago + MIN, 31.0, 31.0, 31.0)])
    assert h.query("kebun-1", "humidity_pct", clock.now_ns() - HOUR, clock.now_ns()).points == [
        (ten_ago, 81.0, 80.0, 82.0), (ten_ago + MIN, 79.0, 79.0, 79.0)]
    assert h.flush() == 6  # 2 fields x 2 minutes in the fine tier, 2 fields x 1 quarter
    assert h.query("kebun-1", "temperature_c", clock.now_ns() - HOUR, clock.now_ns()) == answer
    h.close()


def test_query_range_is_start_inclusive_end_exclusive(path: Path, clock: FakeClock) -> None:
    h = History(path, clock=clock)
    for minute in range(5):
        h.record("polder-1", "level_cm", T0 - minute * MIN, 100.0 + minute)
    h.flush()
    h.record("polder-1", "level_cm", T0 - 5 * MIN, 105.0)  # pending, outside the range
    points = h.query("polder-1", "level_cm", T0 - 4 * MIN, T0).points
    assert [p[0] for p in points] == [T0 - 4 * MIN, T0 - 3 * MIN, T0 - 2 * MIN, T0 - MIN]
    h.close()


def test_booleans_strings_non_finite_values_and_readings_without_a_device_are_not_charted(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock)
    h.readings([reading("pump-1", T0, running=True, mode="auto", flow_lpm=12, rssi=-61.5),
                reading(None, T0, flow_lpm=99.0)])
    h.record("pump-1", "flow_lpm", T0, math.nan)
    h.record("pump-1", "flow_lpm", T0, math.inf)
    h.record("pump-1", "running", T0, True)
    assert h.series() == {"pump-1": ["flow_lpm", "rssi"]}
    assert h.query("pump-1", "flow_lpm", T0 - HOUR, T0 + 1).points == [(T0, 12.0, 12.0, 12.0)]
    assert h.query("pump-1", "running", T0 - HOUR, T0 + 1).points == []
    h.flush()
    assert {(r[1], r[2]) for r in rows(path)} == {("pump-1", "flow_lpm"), ("pump-1", "rssi")}
    h.close()


def test_quarter_hour_tier_and_the_query_picks_the_finest_tier_that_covers_the_range(
    path: Path, clock: FakeClock,
) -> None:
    clock.advance(3 * 3600)
    now = clock.now_ns()
    h = History(path, clock=clock)
    start = now - 2 * HOUR  # on a quarter-hour boundary
    h.readings([reading("polder-1", start + m * MIN, level_cm=float(m)) for m in range(120)])
    day = h.query("polder-1", "level_cm", now - 24 * HOUR, now)
    assert day.step_s == 60
    assert len(day.points) == 120
    for span in (48 * HOUR, 7 * DAY, 30 * DAY):
        assert h.query("polder-1", "level_cm", now - span, now).step_s == (
            60 if span <= 48 * HOUR else 900)
    h.flush()
    week = h.query("polder-1", "level_cm", now - 7 * DAY, now)
    assert week.step_s == 900
    assert week.points == [(start + q * 15 * MIN, q * 15 + 7.0, float(q * 15), q * 15 + 14.0)
                           for q in range(8)]
    assert h.query("polder-1", "level_cm", now - 30 * DAY, now) == week
    # Further back than any tier keeps: the coarsest answers with what it has.
    assert h.query("polder-1", "level_cm", now - 90 * DAY, now) == week
    assert [(r[0], r[4]) for r in rows(path) if r[0] == 900] == [(900, 15)] * 8
    h.close()


def test_a_bucket_half_flushed_merges_with_what_is_pending_and_survives_a_restart(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock)
    bucket = T0 - 3 * MIN
    for s, v in ((1, 10.0), (2, 14.0), (3, 12.0)):
        h.record("kebun-1", "soil_pct", bucket + s * NS, v)
    assert h.flush() == 2
    for s, v in ((40, 9.0), (50, 20.0)):
        h.record("kebun-1", "soil_pct", bucket + s * NS, v)
    merged = h.query("kebun-1", "soil_pct", T0 - HOUR, T0)
    assert merged.points == [(bucket, 13.0, 9.0, 20.0)]
    assert h.statistics()["pending_buckets"] == 2
    h.close()  # flushes the rest
    h = History(path, clock=clock)
    assert h.query("kebun-1", "soil_pct", T0 - HOUR, T0) == merged
    assert h.series() == {"kebun-1": ["soil_pct"]}
    assert h.statistics()["rows"] == 2
    assert [r[4:] for r in rows(path)] == [(5, 65.0, 9.0, 20.0)] * 2
    # A restart in the middle of the bucket: the next values still land in the same row.
    h.record("kebun-1", "soil_pct", bucket + 55 * NS, 0.5)
    h.flush()
    assert h.query("kebun-1", "soil_pct", T0 - HOUR, T0).points == [(bucket, 10.9166666667,
                                                                      0.5, 20.0)]
    assert h.statistics()["rows"] == 2
    h.close()


def test_the_file_is_wal_and_opening_creates_the_data_directory(path: Path,
                                                                  clock: FakeClock) -> None:
    History(path, clock=clock).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_buckets_past_their_tiers_keep_are_pruned_and_the_series_forgotten(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock)
    h.record("polder-1", "level_cm", T0, 150.0)
    h.flush()
    assert h.statistics()["rows"] == 2
    clock.advance(48 * 3600 + 60)
    h.flush()
    assert [r[0] for r in rows(path)] == [900]
    assert h.statistics()["rows"] == 1
    now = clock.now_ns()
    assert h.query("polder-1", "level_cm", now - 24 * HOUR, now).points == []
    assert h.query("polder-1", "level_cm", now - 7 * DAY, now).points == [
        (T0, 150.0, 150.0, 150.0)]
    assert h.series() == {"polder-1": ["level_cm"]}
    clock.advance(30 * 86400)
    h.flush()
    assert rows(path) == []
    assert h.series() == {}
    assert h.statistics()["rows"] == 0
    assert h.statistics()["series"] == 0
    h.close()
    assert History(path, clock=clock).series() == {}


def test_late_readings_only_the_coarse_tier_still_keeps_go_there_alone(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock)
    three_days_ago = T0 - 3 * DAY
    h.readings([reading("kebun-1", three_days_ago, soil_pct=41.0)])
    assert h.flush() == 1
    assert [r[0] for r in rows(path)] == [900]
    assert h.query("kebun-1", "soil_pct", T0 - 7 * DAY, T0).points == [
        (three_days_ago, 41.0, 41.0, 41.0)]
    h.close()


def test_readings_too_old_or_too_far_in_the_future_are_skipped_and_counted(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock)
    h.readings([reading("kebun-1", T0 - 30 * DAY - NS, soil_pct=1.0, temp_c=2.0),
                reading("kebun-1", T0 - 30 * DAY, soil_pct=3.0),
                reading("kebun-1", T0 + 300 * NS, soil_pct=4.0),
                reading("kebun-1", T0 + 301 * NS, soil_pct=5.0)])
    h.record("kebun-1", "soil_pct", T0 + DAY, 6.0)
    stats = h.statistics()
    assert (stats["skipped_old"], stats["skipped_future"]) == (1, 2)
    assert [p[1] for p in h.query("kebun-1", "soil_pct", T0 - 30 * DAY, T0 + HOUR).points] == [
        3.0, 4.0]
    h.close()


def test_past_max_series_new_series_are_refused_counted_and_warned_about_once(
    path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    h = History(path, clock=clock, max_series=3)
    with caplog.at_level(logging.WARNING, logger="gateway.park.history"):
        h.readings([reading("kebun-1", T0, soil_pct=40.0, temp_c=29.0),
                    reading("kebun-2", T0, soil_pct=41.0, temp_c=30.0),
                    reading("kebun-3", T0, soil_pct=42.0)])
        h.readings([reading("kebun-1", T0, soil_pct=44.0)])  # a known series still grows
    assert h.series() == {"kebun-1": ["soil_pct", "temp_c"], "kebun-2": ["soil_pct"]}
    assert h.statistics()["refused_series"] == 2
    assert h.query("kebun-1", "soil_pct", T0 - HOUR, T0 + 1).points == [(T0, 42.0, 40.0, 44.0)]
    assert len([r for r in caplog.records if "max_series=3" in r.getMessage()]) == 1
    # Series that have expired give their places back.
    h.flush()
    clock.advance(31 * 86400)
    h.flush()
    h.readings([reading("kebun-3", clock.now_ns(), soil_pct=42.0)])
    assert h.series() == {"kebun-3": ["soil_pct"]}
    h.close()


def test_a_forgotten_device_gives_its_series_back_at_once_and_its_rows_at_the_flush(
    path: Path, clock: FakeClock,
) -> None:
    """A flood of made-up ids must not hold max_series until the longest tier expires."""
    h = History(path, clock=clock, max_series=2)
    h.readings([reading("made-up-1", T0, x=1.0), reading("kebun-1", T0, soil_pct=40.0)])
    h.flush()
    h.readings([reading("made-up-1", T0 + MIN, x=2.0)])  # pending when forgotten
    h.forget("made-up-1")
    assert h.statistics()["pending_buckets"] == 0
    h.readings([reading("kebun-2", T0 + MIN, soil_pct=41.0)])  # the freed place
    assert h.series() == {"kebun-1": ["soil_pct"], "kebun-2": ["soil_pct"]}
    assert {r[1] for r in rows(path)} == {"made-up-1", "kebun-1"}  # nothing on the hot path
    h.flush()
    assert {r[1] for r in rows(path)} == {"kebun-1", "kebun-2"}
    assert h.statistics()["rows"] == len(rows(path))
    # Found again after being forgotten: a new series from then on.
    h.forget("kebun-2")
    h.readings([reading("kebun-2", T0 + 2 * MIN, soil_pct=43.0)])
    h.flush()
    assert h.query("kebun-2", "soil_pct", T0, T0 + HOUR).points == [
        (T0 + 2 * MIN, 43.0, 43.0, 43.0)]
    h.close()


def test_a_failed_flush_is_counted_keeps_every_bucket_and_the_next_one_writes_them(
    path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture,
) -> None:
    h = History(path, clock=clock, busy_timeout_s=0)
    h.record("polder-1", "level_cm", T0 - 30 * NS, 150.0)
    h.flush()
    h.record("polder-1", "level_cm", T0 - 20 * NS, 160.0)
    h.record("polder-1", "level_cm", T0 - 2 * MIN, 140.0)
    before = h.query("polder-1", "level_cm", T0 - HOUR, T0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.park.history"):
            assert h.flush() == 0
            clock.advance(30)
            assert h.flush() == 0
        stats = h.statistics()
        assert (stats["flushes"], stats["flush_failures"], stats["pending_buckets"]) == (1, 2, 3)
        assert stats["last_flush_ns"] == T0
        assert h.query("polder-1", "level_cm", T0 - HOUR, T0) == before
        warned = [r for r in caplog.records if "history flush failed" in r.getMessage()]
        assert len(warned) == 1  # once a minute per kind
        assert "SQLITE_BUSY" in warned[0].getMessage()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert h.flush() == 3
    stats = h.statistics()
    assert (stats["flushes"], stats["flush_failures"], stats["pending_buckets"]) == (2, 2, 0)
    assert stats["rows"] == 3
    h.close()
    h = History(path, clock=clock)
    assert h.query("polder-1", "level_cm", T0 - HOUR, T0) == before
    assert before.points == [(T0 - 2 * MIN, 140.0, 140.0, 140.0), (T0 - MIN, 155.0, 150.0, 160.0)]
    h.close()


async def test_run_flushes_every_interval_and_once_more_when_cancelled(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock)
    task = asyncio.create_task(h.run(flush_interval_s=60), name="history.flush")
    await until(lambda: clock.sleepers == 1)
    h.record("polder-1", "level_cm", T0, 150.0)
    clock.advance(60)
    await until(lambda: h.statistics()["flushes"] == 1)
    assert h.statistics()["pending_buckets"] == 0
    await until(lambda: clock.sleepers == 1)
    h.record("polder-1", "level_cm", clock.now_ns(), 151.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = h.statistics()
    assert (stats["flushes"], stats["pending_buckets"]) == (2, 0)
    assert len(rows(path)) == 3  # two minutes, one quarter
    h.close()


def test_statistics_name_every_counter(path: Path, clock: FakeClock) -> None:
    h = History(path, clock=clock)
    stats = h.statistics()
    assert stats == {"series": 0, "pending_buckets": 0, "rows": 0, "flushes": 0,
                     "flush_failures": 0, "last_flush_ns": None, "skipped_old": 0,
                     "skipped_future": 0, "refused_series": 0, "refused_buckets": 0,
                     "lost_buckets": 0,
                     "file_bytes": stats["file_bytes"]}
    assert isinstance(stats["file_bytes"], int)
    assert stats["file_bytes"] > 0
    h.close()


def test_a_tier_no_longer_configured_is_dropped_when_the_file_opens(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock)
    h.record("polder-1", "level_cm", T0, 150.0)
    h.close()
    h = History(path, clock=clock, tiers=[Tier(60, 48 * 3600), Tier(3600, 30 * 86400)])
    assert [r[0] for r in rows(path)] == [60]
    assert h.statistics()["rows"] == 1
    assert h.series() == {"polder-1": ["level_cm"]}
    h.close()


@pytest.mark.parametrize("tiers", [
    [], [Tier(900, 86400), Tier(60, 3600)], [Tier(60, 86400), Tier(900, 3600)]])
def test_tiers_must_go_from_finer_and_shorter_to_coarser_and_longer(
    path: Path, clock: FakeClock, tiers: list[Tier],
) -> None:
    with pytest.raises(ValueError, match="tier"):
        History(path, clock=clock, tiers=tiers)
    with pytest.raises(ValueError, match="keep_s >= step_s"):
        Tier(60, 30)


_EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("value"), st.sampled_from(["a", "b"]),
                  st.integers(0, 3 * 3600 - 1),
                  st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 1000))),
        st.tuples(st.just("flush"), st.just(""), st.just(0), st.just(0)),
        st.tuples(st.just("reopen"), st.just(""), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(events=_EVENTS)
def test_what_a_query_answers_equals_a_direct_aggregation_whatever_was_flushed_when(
    events: list[tuple[str, str, int, float]],
) -> None:
    clock = FakeClock()
    clock.advance(3 * 3600)
    now = clock.now_ns()
    start = now - 3 * HOUR
    expected: dict[tuple[str, int], dict[int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.sqlite3"
        h = History(path, clock=clock)
        for kind, device, offset_s, value in events:
            if kind == "flush":
                h.flush()
            elif kind == "reopen":
                h.close()
                h = History(path, clock=clock)
            else:
                t = start + offset_s * NS
                h.readings([reading(device, t, v=value)])
                for tier in DEFAULT_TIERS:
                    step = tier.step_s * NS
                    b = expected.setdefault((device, tier.step_s), {}).setdefault(
                        t - t % step, [0, 0.0, math.inf, -math.inf])
                    b[0] += 1
                    b[1] += value
                    b[2] = min(b[2], value)
                    b[3] = max(b[3], value)
        for device in ("a", "b"):
            for span, step_s in ((3 * HOUR, 60), (7 * DAY, 900)):
                answer = h.query(device, "v", now - span, now)
                assert answer.step_s == step_s
                want = sorted(expected.get((device, step_s), {}).items())
                assert [p[0] for p in answer.points] == [b for b, _ in want]
                for (_, avg, lo, hi), (_, (n, total, wlo, whi)) in zip(answer.points, want,
                                                                      strict=True):
                    assert (lo, hi) == (wlo, whi)
                    assert avg == pytest.approx(total / n, rel=1e-9, abs=1e-9)
        h.close()


def test_pending_buckets_are_bounded_while_the_disk_refuses_writes(
    path: Path, clock: FakeClock,
) -> None:
    h = History(path, clock=clock, max_series=5)  # at most max(10_000, 20 x 5) pending
    for minute in range(2880):
        for device in range(5):
            h.record(f"kebun-{device}", "soil_pct", T0 - minute * MIN, 40.0)
    stats = h.statistics()
    assert stats["pending_buckets"] == 10_000
    # Counted per value: at least one for every bucket that found no place.
    assert isinstance(stats["refused_buckets"], int)
    assert stats["refused_buckets"] >= 5 * (2880 + 192) - 10_000
    h.record("kebun-0", "soil_pct", T0, 50.0)  # a bucket it has still takes values
    assert h.query("kebun-0", "soil_pct", T0 - HOUR, T0 + 1).points[-1] == (T0, 45.0, 40.0, 50.0)
    assert h.flush() == 10_000
    assert h.statistics()["pending_buckets"] == 0
    h.close()
