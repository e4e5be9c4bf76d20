"""The polder's flood early warning, the part that judges one level series (issue 16, started).

Pure and clock-free: each call is given the reading's time, so a storm replayed from a CSV and
the live gateway go through the same code. Three questions, in this order, for every reading:

1. **Can the reading be trusted?** (:class:`Quality`) Out of the sensor's range; a spike faster
   than the water can physically move (``max_rate_per_h``, plus the sensor's own noise,
   ``tolerance``); a flatline (the very same value for
   ``flatline_s`` while readings keep arriving: a stuck float or a frozen converter). A reading
   that fails is kept out of everything below; the verdict and its reason are the caller's to
   say. Staleness (nothing for three intervals) is the caller's too: it has the clock.
2. **How fast does it rise?** (:func:`theil_sen`) The median of the slopes between every pair of
   trusted readings in the window (30 minutes by default): one spike or a few noisy readings
   move it little, unlike a least-squares line. The band is the 25th to 75th percentile of those
   pairwise slopes.
3. **Which warning level, and when the next?** (:class:`LevelState`) Thresholds with hysteresis
   and a minimum hold, so a level wandering around a threshold changes the level at most once per
   ``min_hold_s``; a rise to a higher level is never held back. The time to the next threshold,
   with a low-high band from the slope's band, only while the level rises and is trusted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

LEVELS = ("normal", "waspada", "siaga", "awas")
# Readings agreeing with each other after a jump that make it the new reference.
REBASE_AFTER = 3
NS = 1_000_000_000
HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class Slope:
    """Rise in the field's unit per hour: the median, and the band of the pairwise slopes."""

    per_h: float
    low_per_h: float
    high_per_h: float
    points: int


def theil_sen(points: Sequence[tuple[int, float]]) -> Slope | None:
    """The Theil-Sen slope of ``(time_ns, value)`` points, per hour; None under 3 points or
    when they all share one time."""
    slopes: list[float] = []
    for i, (t1, v1) in enumerate(points):
        for t2, v2 in points[i + 1:]:
            if t2 != t1:
                slopes.append((v2 - v1) / ((t2 - t1) / NS) * HOUR_S)
    if len(points) < 3 or not slopes:
        return None
    slopes.sort()
    return Slope(per_h=_quantile(slopes, 0.5), low_per_h=_quantile(slopes, 0.25),
                 high_per_h=_quantile(slopes, 0.75), points=len(points))


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks of a sorted sequence."""
    at = q * (len(ordered) - 1)
    lo = math.floor(at)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a reading may be believed, and why not."""

    trusted: bool
    reason: str | None = None  # "range", "spike", "flatline"


class Quality:
    """Judges each reading of one sensor against its range, the water's speed and a flatline."""

    def __init__(self, *, low: float, high: float, max_rate_per_h: float,
                 flatline_s: float, tolerance: float = 0.0) -> None:
        if not low < high:
            raise ValueError("the sensor's range needs low < high")
        self.low, self.high = low, high
        self.max_rate_per_h = max_rate_per_h
        # The sensor's own noise, in the field's unit: two readings a minute apart may differ by
        # this much more than the water can move (+-2 cm of noise: 4 cm).
        self.tolerance = tolerance
        self.flatline_ns = int(flatline_s * NS)
        self._last: tuple[int, float] | None = None  # the last trusted reading
        self._same_since: tuple[int, float] | None = None  # the value repeated, since when
        # Readings refused as spikes that agree with each other: a step that stays (the sensor
        # moved, the water jumped) becomes the reference after REBASE_AFTER of them.
        self._jumped: list[tuple[int, float]] = []

    def _too_fast(self, ref: tuple[int, float], time_ns: int, value: float) -> bool:
        hours = max(0, time_ns - ref[0]) / NS / HOUR_S
        return abs(value - ref[1]) > self.max_rate_per_h * hours + self.tolerance

    def judge(self, time_ns: int, value: float) -> Verdict:
        if not math.isfinite(value) or not self.low <= value <= self.high:
            return Verdict(False, "range")
        last = self._last
        if last is not None and time_ns > last[0] and self._too_fast(last, time_ns, value):
            jumped = self._jumped
            if jumped and self._too_fast(jumped[-1], time_ns, value):
                jumped.clear()  # not even with the last jump: noise, start again
            jumped.append((time_ns, value))
            if len(jumped) < REBASE_AFTER:
                return Verdict(False, "spike")  # the last trusted reading stays the reference
            jumped.clear()
        else:
            self._jumped.clear()
        same = self._same_since
        if same is None or value != same[1]:
            self._same_since = (time_ns, value)
        elif time_ns - same[0] >= self.flatline_ns:
            self._last = (time_ns, value)
            return Verdict(False, "flatline")
        self._last = (time_ns, value)
        return Verdict(True)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Seconds to the next threshold from a reading: best guess and its band."""

    next_level: str
    eta_s: float
    low_s: float
    high_s: float | None  # None: the slow end of the band does not rise at all


@dataclass(frozen=True, slots=True)
class Change:
    """The warning level changed at ``time_ns``."""

    old: str
    new: str
    time_ns: int
    value: float


class LevelState:
    """The warning level of one polder from its trusted readings, with hysteresis and a hold.

    Up: as soon as a reading reaches a threshold (never held back), except back up to a level
    left less than ``min_hold_s`` ago unless the reading is ``hysteresis`` past the threshold.
    Down: only once readings have stayed ``hysteresis`` below the threshold for ``min_hold_s``.
    """

    def __init__(self, thresholds: Sequence[float], *, hysteresis: float, min_hold_s: float,
                 window_s: float = 1800.0, min_rise_per_h: float = 0.0) -> None:
        if len(thresholds) != len(LEVELS) - 1 or list(thresholds) != sorted(set(thresholds)):
            raise ValueError("three rising thresholds: waspada < siaga < awas")
        self.thresholds = tuple(thresholds)
        self.hysteresis = hysteresis
        self.hold_ns = int(min_hold_s * NS)
        self.window_ns = int(window_s * NS)
        self.min_rise_per_h = min_rise_per_h
        self.level = 0
        self.changed_ns: int | None = None
        self._left: dict[int, int] = {}  # level -> when it was last left (down)
        self._below_since: int | None = None
        self._window: deque[tuple[int, float]] = deque()

    @property
    def name(self) -> str:
        return LEVELS[self.level]

    @property
    def window_start_ns(self) -> int | None:
        """The time of the oldest reading in the window."""
        return self._window[0][0] if self._window else None

    def _reached(self, value: float) -> int:
        return sum(value >= t for t in self.thresholds)

    def add(self, time_ns: int, value: float) -> Change | None:
        """A trusted reading; the change of level it makes, if any."""
        window = self._window
        window.append((time_ns, value))
        while window and window[0][0] < time_ns - self.window_ns:
            window.popleft()
        old = self.level
        reached = self._reached(value)
        if reached > old:
            target = reached
            left = self._left.get(target)
            clear = value >= self.thresholds[target - 1] + self.hysteresis
            if left is not None and time_ns - left < self.hold_ns and not clear:
                target = old  # back up to a level just left, wandering: held
            if target > old:
                self._below_since = None
                return self._set(target, time_ns, value)
        if old > 0 and value < self.thresholds[old - 1] - self.hysteresis:
            if self._below_since is None:
                self._below_since = time_ns
            if time_ns - self._below_since >= self.hold_ns:
                self._left[old] = time_ns
                self._below_since = None
                return self._set(max(reached, 0), time_ns, value)
        else:
            self._below_since = None
        return None

    def _set(self, level: int, time_ns: int, value: float) -> Change:
        change = Change(LEVELS[self.level], LEVELS[level], time_ns, value)
        self.level = level
        self.changed_ns = time_ns
        return change

    def slope(self) -> Slope | None:
        """The rise over the window, from the trusted readings in it."""
        return theil_sen(list(self._window))

    def estimate(self) -> Estimate | None:
        """Time to the next threshold from the last reading; None when there is no higher
        level, or the level does not rise (faster than ``min_rise_per_h``)."""
        if not self._window or self.level >= len(self.thresholds):
            return None
        slope = self.slope()
        if slope is None or slope.per_h <= max(0.0, self.min_rise_per_h):
            return None
        _, value = self._window[-1]
        above = self._reached(value)
        if above >= len(self.thresholds):
            return None  # already past the last threshold (its level may still be held)
        gap = self.thresholds[above] - value
        eta = gap / slope.per_h * HOUR_S
        low = gap / max(slope.high_per_h, slope.per_h) * HOUR_S
        high = gap / slope.low_per_h * HOUR_S if slope.low_per_h > 0 else None
        return Estimate(next_level=LEVELS[above + 1], eta_s=eta, low_s=low, high_s=high)
