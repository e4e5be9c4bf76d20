"""CPU cost of the charts' local history: the ingest hook per reading, and one flush.

    .venv/bin/python bench/history_bench.py [--runs 5]

- ``readings()``: 50,000 readings of 3 float fields from 20 devices, times spread over the
  last hour (so each series fills 60 one-minute and 4-5 quarter-hour buckets), each passed
  alone as the ingest path does for a message with one reading. The readings are built before
  the clock starts; the figure is the hook alone. A second figure passes them in batches of
  100. Each run uses a fresh :class:`History` in a temporary directory.
- reference, in the same run: a loop of ``dict.__setitem__`` over the same 150,000
  (device, field) keys, per reading (three stores), which is about the least any per-field
  bookkeeping in Python can cost; the hook's figure reads as a multiple of it.
- ``flush()``: 20 devices x 10 fields, one value per series each minute, so a flush writes
  200 series x 2 tiers = 400 buckets. Timed over 60 consecutive minutes after 10 minutes of
  warm-up, on a :class:`FakeClock` moved a minute per flush: the first flush of a bucket
  inserts, the quarter-hour buckets are merged into 14 times out of 15, and the fine tier's
  prune (200 primary-key range deletes) runs every minute. Also timed: the very first flush
  into an empty file, and a query of 24 h and 30 d of one series.

Figures are medians over ``--runs`` with min-max beside. WAL with ``synchronous=NORMAL``:
a commit does not wait for fsync, so the flush figure is CPU and page cache, not the SD card.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devices.reading import Reading
from gateway.park.history import NS, History
from gateway.testing.clock import FakeClock

READINGS = 50_000
DEVICES = 20
FIELDS = 3
FLUSH_FIELDS = 10
FLUSH_MINUTES = 60
WARM_MINUTES = 10


def make_readings(now_ns: int) -> list[Reading]:
    out = []
    for i in range(READINGS):
        t = now_ns - 3600 * NS + i * (3600 * NS // READINGS)
        out.append(Reading.build(
            "garden", {"device": f"kebun-{i % DEVICES}", "site": "taman"},
            {"temperature_c": 25.0 + (i % 97) / 10, "humidity_pct": 60.0 + (i % 31),
             "soil_pct": 30.0 + (i % 53) / 3}, t))
    return out


def time_readings(readings: list[Reading], batch: int) -> float:
    """Seconds for the hook over every reading, ``batch`` readings per call."""
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        h = History(Path(tmp) / "history.sqlite3", clock=clock)
        hook = h.readings
        batches = [readings[i:i + batch] for i in range(0, len(readings), batch)]
        t0 = time.perf_counter()
        for b in batches:
            hook(b)
        elapsed = time.perf_counter() - t0
        assert h.statistics()["series"] == DEVICES * FIELDS
        h.close()
    return elapsed


def time_dict_reference(readings: list[Reading]) -> float:
    items = [((r.tags[0][1], k), v) for r in readings for k, v in r.fields]
    d: dict[tuple[str, str], object] = {}
    setitem = d.__setitem__
    t0 = time.perf_counter()
    for k, v in items:
        setitem(k, v)
    return time.perf_counter() - t0


def time_flushes() -> tuple[float, list[float], float, float, int, int]:
    """(first flush s, steady flushes s, 24 h query s, 30 d query s, rows, file bytes)."""
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.sqlite3"
        h = History(path, clock=clock)
        series = [(f"kebun-{d}", f"field_{f}") for d in range(DEVICES) for f in range(FLUSH_FIELDS)]

        def minute(value: float) -> None:
            now = clock.now_ns()
            for device, field in series:
                h.record(device, field, now, value)

        minute(1.0)
        t0 = time.perf_counter()
        written = h.flush()
        first = time.perf_counter() - t0
        assert written == len(series) * 2
        steady = []
        for m in range(WARM_MINUTES + FLUSH_MINUTES):
            clock.advance(60)
            minute(float(m))
            t0 = time.perf_counter()
            written = h.flush()
            if m >= WARM_MINUTES:
                steady.append(time.perf_counter() - t0)
            assert written == len(series) * 2
        now = clock.now_ns()
        t0 = time.perf_counter()
        day = h.query("kebun-0", "field_0", now - 86400 * NS, now + 1)
        q_day = time.perf_counter() - t0
        t0 = time.perf_counter()
        month = h.query("kebun-0", "field_0", now - 30 * 86400 * NS, now + 1)
        q_month = time.perf_counter() - t0
        assert len(day.points) == WARM_MINUTES + FLUSH_MINUTES + 1
        assert month.step_s == 900
        assert month.points
        st = h.statistics()
        h.close()
        rows = int(st["rows"] or 0)
        file_bytes = int(st["file_bytes"] or 0)
    return first, steady, q_day, q_month, rows, file_bytes


def median_range(values: list[float], scale: float, unit: str) -> str:
    return (f"{statistics.median(values) * scale:8.3f} {unit}"
            f"  (min {min(values) * scale:.3f}, max {max(values) * scale:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    readings = make_readings(FakeClock().now_ns())
    per_reading: dict[str, list[float]] = {"one": [], "batch": [], "dict": []}
    runs: list[tuple[str, Callable[[], float]]] = [
        ("one", lambda: time_readings(readings, 1)),
        ("batch", lambda: time_readings(readings, 100)),
        ("dict", lambda: time_dict_reference(readings)),
    ]
    for _ in range(args.runs):
        for name, run in runs:
            per_reading[name].append(run() / READINGS)
    first: list[float] = []
    steady: list[float] = []
    queries_day: list[float] = []
    queries_month: list[float] = []
    rows = file_bytes = 0
    for _ in range(args.runs):
        f, s, qd, qm, rows, file_bytes = time_flushes()
        first.append(f)
        steady.append(statistics.median(s))
        queries_day.append(qd)
        queries_month.append(qm)
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
          f"{platform.machine()}, {platform.processor() or platform.platform()}")
    print(f"medians of {args.runs} runs; {READINGS} readings x {FIELDS} fields, "
          f"{DEVICES} devices")
    print(f"readings(), one per call   {median_range(per_reading['one'], 1e6, 'us/reading')}")
    print(f"readings(), 100 per call   {median_range(per_reading['batch'], 1e6, 'us/reading')}")
    print(f"reference dict.__setitem__ {median_range(per_reading['dict'], 1e6, 'us/reading')}"
          f"  ({FIELDS} stores per reading)")
    ratio = statistics.median(per_reading["one"]) / statistics.median(per_reading["dict"])
    print(f"  hook / reference: {ratio:.1f}x")
    buckets = DEVICES * FLUSH_FIELDS * 2
    print(f"flush() first, empty file  {median_range(first, 1e3, 'ms')}  ({buckets} buckets)")
    print(f"flush() steady, per minute {median_range(steady, 1e3, 'ms')}  ({buckets} buckets, "
          f"median of {FLUSH_MINUTES} flushes per run)")
    print(f"query() 24 h, 1 series     {median_range(queries_day, 1e3, 'ms')}")
    print(f"query() 30 d, 1 series     {median_range(queries_month, 1e3, 'ms')}")
    print(f"file after {WARM_MINUTES + FLUSH_MINUTES + 1} minutes: rows={rows} "
          f"bytes={file_bytes}")


if __name__ == "__main__":
    main()
