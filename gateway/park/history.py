"""The pages' charts from the gateway's own rollups, so they draw with InfluxDB remote or down.

Every numeric field of every reading that names a ``device`` is folded into buckets of each
:class:`Tier` (by default one minute kept 48 h, and 15 minutes kept 30 days). A bucket holds
the count, sum, minimum and maximum of its values, keyed by the reading's own timestamp
floored to the tier's step, so a sensor's backlog lands where it belongs.

Three paths, three costs:

- :meth:`History.readings` runs on the ingest hot path for every accepted message: dict
  updates only, never SQLite. Booleans, strings, NaN and infinities are not charted. Readings
  older than the longest tier keeps or more than five minutes ahead of the clock are skipped
  and counted. Memory is bounded: past ``max_series`` distinct (device, field) pairs new
  series are refused, and past ``max(10_000, 20 * max_series)`` pending buckets (a disk that
  has refused writes for a long time) new buckets are refused; both are counted.
- :meth:`History.flush` (every ``flush_interval_s`` from :meth:`History.run`, once more when
  it is cancelled) merges the pending buckets into ``history.sqlite3`` in one transaction
  (``n`` and ``sum`` added, ``min``/``max`` kept), so a bucket half flushed before a restart
  is completed after it, and deletes buckets older than their tier keeps. A SQLite error
  (disk full, read-only card, locked file) is counted, logged at most once a minute per kind,
  and the buckets stay in memory for the next flush: nothing recorded is lost to a failure
  the disk recovers from.
- :meth:`History.query` answers from the finest tier that still covers the start of the
  range, merging what is on disk with what is still pending, so a point recorded a second
  ago is on the chart.

Durability: WAL with ``synchronous=NORMAL``. The rollups are derived data (InfluxDB holds
the points), so a power cut may lose the last commits and whatever was not flushed yet, at
most about one flush interval of chart; in exchange a flush costs no fsync on the SD card.

Everything runs on the event loop's thread; the clock comes from :class:`gateway.core.clock.Clock`
so tests move time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devices.reading import Reading
from gateway.core.clock import Clock
from gateway.core.disk import DiskHealth
from gateway.core.sqlite import transaction

log = logging.getLogger(__name__)

NS = 1_000_000_000
# A reading further ahead of the gateway's clock than this has a broken clock, not a future.
FUTURE_NS = 300 * NS
# Warnings of one kind (a flush failure by SQLite error name, refused series) at most this often.
WARN_EVERY_NS = 60 * NS
# Float sums of many values carry noise in the last digits (0.1 + 0.2); the average is rounded
# to this many significant digits, which keeps a counter's 1234567.8 exact.
AVG_DIGITS = 12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup (
    tier_step INTEGER NOT NULL, device TEXT NOT NULL, field TEXT NOT NULL,
    bucket_s INTEGER NOT NULL, n INTEGER NOT NULL, sum REAL NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL,
    PRIMARY KEY (tier_step, device, field, bucket_s)) WITHOUT ROWID;
"""

# A flush merges into existing buckets, then inserts the buckets that were not there: the
# INSERT's row count says how many rows are new, so ``rows`` stays exact without a count(*).
# Both take the same parameters: (n, sum, min, max, tier_step, device, field, bucket_s).
_MERGE = ("UPDATE rollup SET n = n + ?1, sum = sum + ?2, min = min(min, ?3), max = max(max, ?4)"
          " WHERE tier_step = ?5 AND device = ?6 AND field = ?7 AND bucket_s = ?8")
_INSERT = ("INSERT OR IGNORE INTO rollup (tier_step, device, field, bucket_s, n, sum, min, max)"
           " VALUES (?5, ?6, ?7, ?8, ?1, ?2, ?3, ?4)")
# Per series, so that every delete is a range of the primary key, never a scan of the table.
_PRUNE = "DELETE FROM rollup WHERE tier_step = ? AND device = ? AND field = ? AND bucket_s < ?"
_FORGET = "DELETE FROM rollup WHERE tier_step = ? AND device = ?"

# A bucket in memory: [n, sum, min, max]; mutated in place on the hot path.
_Agg = list[float]
# Bucket start (ns) -> aggregate, one dict per tier for each series.
_Buckets = dict[int, _Agg]
_Key = tuple[str, str]
# Parameters of _MERGE and _INSERT, and of _PRUNE.
_Merge = tuple[int, float, float, float, int, str, str, int]
_Prune = tuple[int, str, str, int]


@dataclass(frozen=True, slots=True)
class Tier:
    step_s: int  # bucket width, e.g. 60
    keep_s: int  # how long buckets are kept, e.g. 48 * 3600

    def __post_init__(self) -> None:
        if self.step_s < 1 or self.keep_s < self.step_s:
            raise ValueError(f"a tier needs step_s >= 1 and keep_s >= step_s, got {self}")


DEFAULT_TIERS = (Tier(60, 48 * 3600), Tier(900, 30 * 86400))


@dataclass(frozen=True, slots=True)
class HistoryAnswer:
    step_s: int  # bucket width of the tier that answered
    points: list[tuple[int, float, float, float]]  # (bucket start ns, avg, min, max), oldest first


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _avg(total: float, n: float) -> float:
    return float(f"{total / n:.{AVG_DIGITS}g}")


class History:
    """Rollups of numeric fields per (device, field), in memory until flushed to SQLite."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        tiers: Sequence[Tier] = DEFAULT_TIERS,
        max_series: int = 5000,
        busy_timeout_s: float = 1.0,
        disk: DiskHealth | None = None,
    ) -> None:
        self._tiers = tuple(tiers)
        if not self._tiers:
            raise ValueError("history needs at least one tier")
        for a, b in itertools.pairwise(self._tiers):
            if not (a.step_s < b.step_s and a.keep_s <= b.keep_s):
                raise ValueError("tiers go from finer and shorter to coarser and longer")
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.path = path
        self._clock = clock
        self._steps_ns = tuple(t.step_s * NS for t in self._tiers)
        self._keeps_ns = tuple(t.keep_s * NS for t in self._tiers)
        self._horizon_ns = self._keeps_ns[-1]
        self._max_series = max_series
        self._max_pending = max(10_000, 20 * max_series)
        # Every series with rollups on disk or pending: its pending buckets, one dict per tier.
        self._series: dict[_Key, list[_Buckets]] = {}
        # The newest bucket start (s) on disk per tier, -1 for none: when all are past their
        # tier's keep, the series has no history left and frees its place.
        self._newest: dict[_Key, list[int]] = {}
        # Per tier, how many bucket steps the last successful prune reached: buckets expire
        # only when the cutoff crosses a step, so most flushes skip the coarse tiers' deletes.
        self._pruned_to: list[int | None] = [None] * len(self._tiers)
        self._pending = 0
        self._rows = 0
        self._flushes = 0
        self._flush_failures = 0
        self._failing = 0
        self._last_flush_ns: int | None = None
        self._skipped_old = 0
        self._skipped_future = 0
        self._refused_series = 0
        self._refused_buckets = 0
        # Forgotten devices whose rows go at the next flush (never SQLite on the ingest path).
        self._forgotten: set[str] = set()
        self._warned: dict[str, int] = {}
        self._disk = disk
        self._busy_timeout_s = busy_timeout_s
        # Buckets dropped unwritten: they expired while the card refused every flush.
        self._lost_buckets = 0
        self._db: sqlite3.Connection | None = None
        # Open, or to be opened at the next flush (a full card at start); False once closed.
        self._wanted = True
        try:
            self._open()
        except (sqlite3.Error, OSError) as exc:
            if disk is None or not disk.failed("history", "open", exc):
                raise
            log.error("history %s cannot open (%s): charts come from memory until it can",
                      path, exc)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=16777216")
            # Sorts and temporary tables in memory: no file to open when sockets ran out.
            db.execute("PRAGMA temp_store=MEMORY")
            # 512 KiB of page cache, not SQLite's 2 MiB: the charts are read a few times a
            # minute at most and their pages stay in the kernel's page cache anyway.
            db.execute("PRAGMA cache_size=-512")
            db.executescript(_SCHEMA)
            self._load(db)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _load(self, db: sqlite3.Connection) -> None:
        """Learn which series are on disk by seeking the primary key, not scanning the table."""
        steps = {t.step_s: i for i, t in enumerate(self._tiers)}
        step = -1
        while (row := db.execute("SELECT min(tier_step) FROM rollup WHERE tier_step > ?",
                                 (step,)).fetchone()) and row[0] is not None:
            step = int(row[0])
            if step not in steps:
                # A tier that is no longer configured would never be pruned.
                gone = db.execute("DELETE FROM rollup WHERE tier_step = ?", (step,)).rowcount
                log.info("history drops a tier no longer configured step_s=%d rows=%d",
                         step, gone)
        self._rows = int(db.execute("SELECT count(*) FROM rollup").fetchone()[0])
        for step, i in steps.items():
            row = db.execute("SELECT device, field FROM rollup WHERE tier_step = ?"
                             " ORDER BY device, field LIMIT 1", (step,)).fetchone()
            while row is not None:
                device, field = str(row[0]), str(row[1])
                newest = db.execute(
                    "SELECT max(bucket_s) FROM rollup WHERE tier_step = ? AND device = ?"
                    " AND field = ?", (step, device, field)).fetchone()[0]
                key = (device, field)
                if key not in self._series:
                    self._series[key] = [{} for _ in self._tiers]
                if key not in self._newest:  # also a series held in memory before it opened
                    self._newest[key] = [-1] * len(self._tiers)
                self._newest[key][i] = int(newest)
                row = db.execute("SELECT device, field FROM rollup WHERE tier_step = ?"
                                 " AND (device, field) > (?, ?) ORDER BY device, field LIMIT 1",
                                 (step, device, field)).fetchone()

    # -- the hot path ----------------------------------------------------------------------

    def readings(self, readings: Sequence[Reading]) -> None:
        """Fold a batch of accepted readings into the pending buckets (no I/O).

        The ingest path calls this for every accepted message, so the loop is written for
        speed: bucket starts once per reading, plain ``float``/``int`` checked by exact type.
        """
        now = self._clock.now_ns()
        oldest = now - self._horizon_ns
        newest = now + FUTURE_NS
        steps = self._steps_ns
        indices = range(len(steps))
        series = self._series
        isfinite = math.isfinite
        for r in readings:
            device = r.tag("device")
            if device is None:
                continue
            t = r.time_ns
            if t < oldest:
                self._skipped_old += 1
                continue
            if t > newest:
                self._skipped_future += 1
                continue
            starts = [t - t % step for step in steps]
            for name, value in r.fields:
                v: float
                if type(value) is float:
                    if not isfinite(value):
                        continue
                    v = value
                elif type(value) is int:
                    v = float(value)
                # bool is an int to isinstance, but a switch is not a chart; str is text.
                elif isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                else:  # a subclass of int or float
                    v = float(value)
                    if not isfinite(v):
                        continue
                tiers = series.get((device, name))
                if tiers is None:
                    tiers = self._new_series(device, name)
                    if tiers is None:
                        continue
                # Indexing beats zip() here: zip(strict=True) costs a third of the loop.
                for i in indices:
                    agg = tiers[i].get(starts[i])
                    if agg is None:
                        self._new_bucket(tiers[i], starts[i], v)
                    else:
                        agg[0] += 1.0
                        agg[1] += v
                        if v < agg[2]:
                            agg[2] = v
                        elif v > agg[3]:
                            agg[3] = v

    def record(self, device: str, field: str, time_ns: int, value: float) -> None:
        """One value the gateway measures itself (the park's Wi-Fi clients, say)."""
        now = self._clock.now_ns()
        if time_ns < now - self._horizon_ns:
            self._skipped_old += 1
            return
        if time_ns > now + FUTURE_NS:
            self._skipped_future += 1
            return
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value)):
            return
        v = float(value)
        tiers = self._series.get((device, field)) or self._new_series(device, field)
        if tiers is None:
            return
        for buckets, step in zip(tiers, self._steps_ns, strict=True):
            start = time_ns - time_ns % step
            agg = buckets.get(start)
            if agg is None:
                self._new_bucket(buckets, start, v)
            else:
                agg[0] += 1.0
                agg[1] += v
                agg[2] = min(agg[2], v)
                agg[3] = max(agg[3], v)

    def _new_series(self, device: str, field: str) -> list[_Buckets] | None:
        if len(self._series) >= self._max_series:
            self._refused_series += 1
            self._warn("series", "history refuses new series device=%s field=%s: "
                       "max_series=%d reached", device, field, self._max_series)
            return None
        tiers: list[_Buckets] = [{} for _ in self._tiers]
        self._series[(device, field)] = tiers
        return tiers

    def _new_bucket(self, buckets: _Buckets, start: int, value: float) -> None:
        if self._pending >= self._max_pending:
            self._refused_buckets += 1
            self._warn("buckets", "history refuses new buckets: pending=%d reached",
                       self._max_pending)
            return
        buckets[start] = [1.0, value, value, value]
        self._pending += 1

    def forget(self, device: str) -> None:
        """A forgotten (discovered) device: its series free their places now, its rows go
        with the next flush. Otherwise a flood of made-up ids would hold ``max_series`` until
        the longest tier expired them, refusing every new series meanwhile."""
        for key in [k for k in self._series if k[0] == device]:
            self._pending -= sum(len(buckets) for buckets in self._series.pop(key))
            self._newest.pop(key, None)
        self._forgotten.add(device)

    # -- writing ---------------------------------------------------------------------------

    def flush(self) -> int:
        """Merge the pending buckets into the file and prune expired ones, in one transaction.

        Returns the number of buckets written. A SQLite error is counted (``flush_failures``),
        logged at most once a minute per kind, and returns 0 with every bucket still pending.
        """
        if self._db is None and self._wanted:
            try:
                self._open()
            except (sqlite3.Error, OSError) as exc:
                if self._disk is None or not self._disk.failed("history", "open", exc):
                    raise
        db = self._db
        if db is None:
            self._drop_expired_pending(
                [_ceil_div(self._clock.now_ns() - keep, NS) for keep in self._keeps_ns])
            return 0
        started = time.perf_counter()
        now = self._clock.now_ns()
        cutoffs = [_ceil_div(now - keep, NS) for keep in self._keeps_ns]  # s; older expire
        self._drop_expired_pending(cutoffs)
        merges: list[_Merge] = []
        newest: dict[_Key, list[int]] = {}
        for key, tiers in self._series.items():
            device, field = key
            for i, buckets in enumerate(tiers):
                if not buckets:
                    continue
                step = self._tiers[i].step_s
                top = newest.setdefault(key, list(self._newest.get(key, [-1] * len(tiers))))
                for start_ns, (n, total, lo, hi) in buckets.items():
                    bucket_s = start_ns // NS
                    merges.append((int(n), total, lo, hi, step, device, field, bucket_s))
                    top[i] = max(top[i], bucket_s)
        marks: list[int | None] = [
            _ceil_div(c, t.step_s) for c, t in zip(cutoffs, self._tiers, strict=True)]
        prunes: list[_Prune] = [(t.step_s, device, field, cutoffs[i])
                                for i, t in enumerate(self._tiers)
                                if marks[i] != self._pruned_to[i]
                                for device, field in self._series]
        forgets = [(t.step_s, device) for device in sorted(self._forgotten)
                   for t in self._tiers]
        try:
            inserted, deleted = self._write(db, merges, prunes, forgets)
        except sqlite3.Error as exc:
            self._flush_failures += 1
            self._failing += 1
            if self._disk is not None:
                self._disk.failed("history", "flush", exc)
            kind = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
            self._warn(f"flush:{kind}", "history flush failed kind=%s path=%s pending=%d "
                       "failures=%d, kept for the next flush: %s", kind, self.path,
                       self._pending, self._failing, exc)
            self._expire(cutoffs, pruned=False)
            return 0
        for tiers in self._series.values():
            for buckets in tiers:
                buckets.clear()
        self._pending = 0
        self._newest.update(newest)
        self._forgotten.clear()
        self._pruned_to = marks
        self._rows += inserted - deleted
        self._flushes += 1
        self._last_flush_ns = now
        if self._failing:
            log.info("history flush recovered after failures=%d rows=%d", self._failing,
                     len(merges))
            self._failing = 0
        if self._disk is not None:
            self._disk.succeeded("history")
        self._expire(cutoffs, pruned=True)
        log.debug("history flush buckets=%d inserted=%d pruned=%d series=%d ms=%.1f",
                  len(merges), inserted, deleted, len(self._series),
                  (time.perf_counter() - started) * 1000)
        return len(merges)

    @staticmethod
    def _write(db: sqlite3.Connection, merges: list[_Merge], prunes: list[_Prune],
               forgets: Sequence[tuple[int, str]] = ()) -> tuple[int, int]:
        """One transaction: forget, merge, insert what is new, prune. Returns (inserted,
        deleted)."""
        if not merges and not prunes and not forgets:
            return 0, 0  # no lock to take, nothing to write
        inserted = deleted = 0
        with transaction(db):
            if forgets:  # first: a device found again since has its new buckets merged after
                deleted += db.executemany(_FORGET, forgets).rowcount
            if merges:
                db.executemany(_MERGE, merges)
                inserted = db.executemany(_INSERT, merges).rowcount
            if prunes:
                deleted += db.executemany(_PRUNE, prunes).rowcount
        return inserted, deleted

    def _drop_expired_pending(self, cutoffs: list[int]) -> None:
        # Late data for a fine tier that only the coarser tiers still keep, and buckets that
        # expired while the disk refused writes: they would be pruned as soon as written.
        for tiers in self._series.values():
            for buckets, cutoff in zip(tiers, cutoffs, strict=True):
                if buckets and min(buckets) < cutoff * NS:
                    for start in [s for s in buckets if s < cutoff * NS]:
                        del buckets[start]
                        self._pending -= 1
                        if self._failing or self._db is None:
                            self._lost_buckets += 1
                            if self._disk is not None:
                                self._disk.lost("history_bucket")

    def _expire(self, cutoffs: list[int], *, pruned: bool) -> None:
        """Forget series with nothing pending and, once pruned, nothing left on disk."""
        gone = [key for key, tiers in self._series.items()
                if not any(tiers)
                and (key not in self._newest
                     or (pruned and all(n < c for n, c in zip(self._newest[key], cutoffs,
                                                               strict=True))))]
        for key in gone:
            del self._series[key]
            self._newest.pop(key, None)

    async def run(self, flush_interval_s: float = 60.0) -> None:
        """Flush every ``flush_interval_s``; when cancelled, flush once more and re-raise."""
        try:
            while True:
                await self._clock.sleep(flush_interval_s)
                self.flush()
        except asyncio.CancelledError:
            self.flush()
            raise

    # -- reading ---------------------------------------------------------------------------

    def query(self, device: str, field: str, start_ns: int, end_ns: int) -> HistoryAnswer:
        """Buckets with ``start_ns <= bucket start < end_ns``, oldest first, pending included.

        The tier is the finest whose keep reaches back to ``start_ns``, else the coarsest.
        """
        span = self._clock.now_ns() - start_ns
        i = next((i for i, keep in enumerate(self._keeps_ns) if span <= keep),
                 len(self._tiers) - 1)
        step = self._tiers[i].step_s
        key = (device, field)
        tiers = self._series.get(key)
        if tiers is None:
            return HistoryAnswer(step, [])
        merged: dict[int, _Agg] = {}
        if self._db is not None:
            for bucket_s, n, total, lo, hi in self._db.execute(
                    "SELECT bucket_s, n, sum, min, max FROM rollup WHERE tier_step = ?"
                    " AND device = ? AND field = ? AND bucket_s >= ? AND bucket_s < ?",
                    (step, device, field, _ceil_div(start_ns, NS), _ceil_div(end_ns, NS))):
                merged[int(bucket_s) * NS] = [float(n), float(total), float(lo), float(hi)]
        for start, (n, total, lo, hi) in tiers[i].items():
            if not start_ns <= start < end_ns:
                continue
            have = merged.get(start)
            if have is None:
                merged[start] = [n, total, lo, hi]
            else:
                merged[start] = [have[0] + n, have[1] + total, min(have[2], lo),
                                 max(have[3], hi)]
        return HistoryAnswer(step, [(start, _avg(total, n), lo, hi)
                                    for start, (n, total, lo, hi) in sorted(merged.items())])

    def series(self) -> dict[str, list[str]]:
        """Device -> sorted field names that have history (on disk or pending)."""
        out: dict[str, list[str]] = {}
        for device, field in sorted(self._series):
            out.setdefault(device, []).append(field)
        return out

    def statistics(self) -> dict[str, int | float | None]:
        """A snapshot for the status API and /metrics.

        ``skipped_old``/``skipped_future`` count readings (or ``record`` calls);
        ``refused_series`` and ``refused_buckets`` count values that found no place;
        ``rows`` is tracked, not counted; ``file_bytes`` includes the WAL.
        """
        file_bytes = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                file_bytes += os.stat(p).st_size
        return {
            "series": len(self._series),
            "pending_buckets": self._pending,
            "rows": self._rows,
            "flushes": self._flushes,
            "flush_failures": self._flush_failures,
            "last_flush_ns": self._last_flush_ns,
            "skipped_old": self._skipped_old,
            "skipped_future": self._skipped_future,
            "refused_series": self._refused_series,
            "refused_buckets": self._refused_buckets,
            "lost_buckets": self._lost_buckets,
            "file_bytes": file_bytes,
        }

    def close(self) -> None:
        """Flush what is pending and close the file (again: nothing)."""
        if self._db is None:
            if self._wanted and self._pending:
                log.warning("history closes with buckets=%d unwritten, %s never opened",
                            self._pending, self.path)
            self._wanted = False
            return
        self.flush()
        if self._pending:
            log.warning("history closes with buckets=%d unwritten path=%s", self._pending,
                        self.path)
        self._db.close()
        self._db = None
        self._wanted = False

    def _warn(self, kind: str, message: str, *args: object) -> None:
        now = self._clock.now_ns()
        last = self._warned.get(kind)
        if last is None or now - last >= WARN_EVERY_NS:
            self._warned[kind] = now
            log.warning(message, *args)
