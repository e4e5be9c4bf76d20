"""Clock without RTC: when the wall clock can be believed, and fixing what was stamped before.

A Raspberry Pi has no real-time clock. After a power cut it boots in 1970, or at the time
fake-hwclock saved at the last shutdown (days or weeks behind), and keeps that until NTP steps
it. A reading the gateway stamps meanwhile would reach InfluxDB at a wrong time, for good.

The verdict (:func:`clock_trusted`), taken every ``check_interval_s`` by :class:`TimeSync`:

- a wall clock before ``min_valid_ns`` (the build's floor, 2026-01-01 unless configured) is
  never believed, whatever the kernel says;
- ``require_sync="auto"``: not believed while the kernel says it is unsynchronised
  (``adjtimex``: return ``TIME_ERROR`` or status bit ``STA_UNSYNC``, which systemd-timesyncd
  and chrony clear when they sync); believed when the kernel says synchronised or cannot say;
- ``"yes"``: believed only when the kernel positively says synchronised;
- ``"no"``: the floor alone (a development machine without NTP of its own).

What the pipeline does with a reading while the clock is not believed (gateway/pipeline/ingest.py):
a reading it stamped itself (no plausible device time) is *held*: its line without the
timestamp goes to the spool's ``held`` table with the receipt instant on ``CLOCK_BOOTTIME``,
committed (and only then acknowledged) like any other line. ``CLOCK_BOOTTIME`` does not jump
when NTP steps the wall clock and keeps counting through a suspend, so once the verdict flips
``offset = wall - boottime`` is sampled and each held line gets ``boot_ns + offset``: the time
it would have had with a good clock, to the oscillator's drift over the wait (tens of ppm:
under 0.2 s after an hour unsynchronised). Held rows of an earlier boot have no known offset
(boottime restarts at zero): they are moved to the ``unsynced`` table, counted, never sent.

Receipt instants: sources read the wall clock when a message's bytes complete
(``received_at_ns``); the pipeline turns that into boottime as
``boottime_now - (wall_now - received_at_ns)`` (:meth:`TimeSync.receipt_boot_ns`), exact while
the wall clock did not step in between. When it did (the step landed between receipt and
processing, microseconds to milliseconds), ``boottime_now`` itself is used: off by that delay.

A device's own time is judged by :meth:`TimeSync.refuse_reason`: before the floor it is
refused (quarantined with the reason, a device clock never set), more than ``max_future_ns``
ahead of a believed clock likewise. The pipeline asks before the spool (cheap, per source);
the forwarder asks again before every send, the last line of defence for lines that came
another way (the gateway's own points, an older version's spool, a future time only a
synchronised clock can see).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from gateway.config import ClockConfig
from gateway.core.aio import clock_sleep_or_event
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import SpoolError
from gateway.store.spool import HeldLine, Spool

log = logging.getLogger(__name__)

RequireSync = Literal["auto", "yes", "no"]

# 2026-01-01T00:00:00Z: no reading of this product's life is older than its first build year.
DEFAULT_MIN_VALID_NS = 1_767_225_600 * 10**9
DEFAULT_MAX_FUTURE_NS = 86_400 * 10**9

STA_UNSYNC = 0x0040
TIME_ERROR = 5
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
EARLIER_BOOT = ("an earlier boot ended before its clock was synchronised: the receive time "
                "cannot be corrected")


class TimeSource(Protocol):
    def wall_ns(self) -> int:
        """CLOCK_REALTIME, nanoseconds since the epoch (as right as NTP made it)."""
        ...

    def boottime_ns(self) -> int:
        """CLOCK_BOOTTIME: since this boot, never stepped, counting suspend."""
        ...

    def boot_id(self) -> str:
        """Different on every boot."""
        ...

    def synchronised(self) -> bool | None:
        """What the kernel says about the wall clock; None when it cannot be asked."""
        ...


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # struct timex of <sys/timex.h>; c_long matches the kernel's on 64-bit and on 32-bit
    # (armhf) builds alike. The tail is generous: the kernel writes only its own size.
    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 32),
    ]


def kernel_synchronised(status: int, result: int) -> bool:
    """adjtimex's verdict: what ``timedatectl`` calls "System clock synchronized"."""
    return result != TIME_ERROR and not status & STA_UNSYNC


class SystemTimeSource:
    """The real clocks of this machine."""

    def __init__(self, *, boot_id_path: Path = BOOT_ID_PATH,
                 timesyncd_flag: Path = TIMESYNCD_FLAG) -> None:
        self._boot_id_path = boot_id_path
        self._flag = timesyncd_flag
        self._adjtimex: Any = None
        with contextlib.suppress(OSError, AttributeError, TypeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            self._adjtimex = libc.adjtimex
            self._adjtimex.argtypes = [ctypes.POINTER(_Timex)]
            self._adjtimex.restype = ctypes.c_int

    def wall_ns(self) -> int:
        return time.time_ns()

    def boottime_ns(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def boot_id(self) -> str:
        try:
            return self._boot_id_path.read_text(encoding="ascii").strip()
        except OSError:
            # No /proc (not Linux): one id per process start is the safe side: held rows of
            # an earlier run are then kept apart, never corrected with a wrong offset.
            return f"process-{time.time_ns()}"

    def synchronised(self) -> bool | None:
        if self._adjtimex is not None:
            timex = _Timex()  # modes 0: read only, allowed without privileges
            result = self._adjtimex(ctypes.byref(timex))
            if result >= 0:
                return kernel_synchronised(timex.status, result)
        # systemd-timesyncd touches this file (on tmpfs, so this boot) when it has synced.
        return True if self._flag.exists() else None


class ClockTimeSource(SystemTimeSource):
    """The wall clock of an injected :class:`~gateway.core.clock.Clock` (a test's FakeClock),
    believed as it is: a gateway run on a fake clock has no kernel to ask about it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock

    def wall_ns(self) -> int:
        return self._clock.now_ns()

    def synchronised(self) -> bool | None:
        return True


@dataclass
class FakeTimeSource:
    """A machine's clocks for tests: ``advance`` lets time pass, ``step`` is NTP's jump,
    ``reboot`` starts a new boot."""

    wall: int
    boot: int = 7 * 10**9
    boot_name: str = "boot-1"
    kernel: bool | None = False

    def wall_ns(self) -> int:
        return self.wall

    def boottime_ns(self) -> int:
        return self.boot

    def boot_id(self) -> str:
        return self.boot_name

    def synchronised(self) -> bool | None:
        return self.kernel

    def advance(self, seconds: float) -> None:
        delta = round(seconds * 1e9)
        self.wall += delta
        self.boot += delta

    def step(self, wall_ns: int, *, synchronised: bool | None = True) -> None:
        self.wall = wall_ns
        self.kernel = synchronised

    def reboot(self, *, boot_id: str, wall_ns: int, boot_ns: int = 7 * 10**9,
               synchronised: bool | None = False) -> None:
        self.boot_name, self.wall, self.boot, self.kernel = (boot_id, wall_ns, boot_ns,
                                                             synchronised)


def clock_trusted(require_sync: RequireSync, kernel: bool | None, wall_ns: int,
                  min_valid_ns: int) -> bool:
    if wall_ns < min_valid_ns:
        return False
    if require_sync == "no":
        return True
    if require_sync == "yes":
        return kernel is True
    return kernel is not False


def iso(ns: int) -> str:
    """A timestamp for a reason or a log line (seconds, UTC)."""
    try:
        return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns"


@dataclass
class _Counts:
    checks: int = 0
    flips: int = 0
    released: int = 0
    kept_apart: int = 0
    last_step_ns: int | None = None
    kernel: bool | None = None
    since_boot_ns: int = 0
    synced_at_ns: int | None = None


class TimeSync:
    """Knows whether the wall clock is believed, and releases held readings once it is."""

    def __init__(
        self,
        *,
        source: TimeSource,
        spool: Spool | None = None,
        require_sync: RequireSync = "auto",
        min_valid_ns: int = DEFAULT_MIN_VALID_NS,
        max_future_ns: int = DEFAULT_MAX_FUTURE_NS,
        check_interval_s: float = 1.0,
        synced_check_interval_s: float = 60.0,
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self._spool = spool
        self.require_sync: RequireSync = require_sync
        self.min_valid_ns = min_valid_ns
        self.max_future_ns = max_future_ns
        self._check_interval = check_interval_s
        self._synced_interval = synced_check_interval_s
        self._clock = clock or SystemClock()
        self.boot_id = source.boot_id()
        self._trusted = False
        self._counts = _Counts()
        self._earlier_boots_done = False
        # wall - boottime at the last check that did not believe the clock: the step is
        # measured against it when the verdict flips.
        self._untrusted_offset: int | None = None
        self.check()

    @classmethod
    def from_config(cls, config: ClockConfig, *, source: TimeSource | None = None,
                    spool: Spool | None = None, clock: Clock | None = None) -> TimeSync:
        return cls(source=source or SystemTimeSource(), spool=spool,
                   require_sync=config.require_sync, min_valid_ns=config.min_valid_ns,
                   max_future_ns=config.max_future_ns,
                   check_interval_s=config.check_interval_s,
                   synced_check_interval_s=config.synced_check_interval_s, clock=clock)

    @property
    def trusted(self) -> bool:
        """Whether readings may be stamped with the wall clock now."""
        return self._trusted

    def check(self) -> bool:
        """Ask the clocks again (a system call, microseconds); returns the verdict."""
        kernel = self.source.synchronised()
        boot = self.source.boottime_ns()
        wall = self.source.wall_ns()
        trusted = clock_trusted(self.require_sync, kernel, wall, self.min_valid_ns)
        counts = self._counts
        counts.checks += 1
        counts.kernel = kernel
        if not trusted:
            self._untrusted_offset = wall - boot
        elif not self._trusted and self._untrusted_offset is not None:
            counts.last_step_ns = wall - boot - self._untrusted_offset
        if trusted != self._trusted:
            counts.flips += 1
            counts.since_boot_ns = boot
            if trusted:
                counts.synced_at_ns = wall
                log.info("clock synchronised: wall=%s kernel=%s step=%.3fs held=%d; held "
                         "readings are released with corrected times", iso(wall), kernel,
                         (counts.last_step_ns or 0) / 1e9, self.held_rows)
            else:
                log.warning("clock not synchronised: wall=%s kernel=%s require_sync=%s "
                            "floor=%s; readings the gateway stamps are held until it is",
                            iso(wall), kernel, self.require_sync, iso(self.min_valid_ns))
        elif counts.checks == 1 and not trusted:
            counts.since_boot_ns = boot
            log.warning("clock not synchronised at start: wall=%s kernel=%s require_sync=%s "
                        "floor=%s; readings the gateway stamps are held until it is",
                        iso(wall), kernel, self.require_sync, iso(self.min_valid_ns))
        self._trusted = trusted
        return trusted

    # -- what the pipeline asks ---------------------------------------------------------

    def receipt_boot_ns(self, received_at_ns: int) -> int:
        """``received_at_ns`` (the wall clock at receipt) on this boot's CLOCK_BOOTTIME."""
        boot = self.source.boottime_ns()
        ago = self.source.wall_ns() - received_at_ns
        if 0 <= ago <= boot:
            return boot - ago
        # The wall clock stepped between receipt and now: the receipt is "just now".
        return boot

    def hold(self, body: str, received_at_ns: int) -> HeldLine:
        return HeldLine(body=body, boot_id=self.boot_id,
                        boot_ns=self.receipt_boot_ns(received_at_ns),
                        received_at_ns=received_at_ns)

    def refuse_reason(self, time_ns: int) -> str | None:
        """Why a point at ``time_ns`` must not be sent, or None when it may."""
        if time_ns < self.min_valid_ns:
            if time_ns < 86_400 * 366 * 10**9:
                hint = "a device clock never set?"
            else:
                hint = "a device clock behind?"
            return (f"timestamp {iso(time_ns)} is before clock.min_valid_time "
                    f"{iso(self.min_valid_ns)}: {hint}")
        if self._trusted and time_ns > self.source.wall_ns() + self.max_future_ns:
            return (f"timestamp {iso(time_ns)} is more than clock.max_future_s="
                    f"{self.max_future_ns / 1e9:g} ahead of the synchronised clock: a device "
                    "clock ahead, or a unit mistaken?")
        return None

    # -- held readings ------------------------------------------------------------------

    @property
    def held_rows(self) -> int:
        return self._spool.held_rows if self._spool is not None else 0

    async def keep_earlier_boots_apart(self) -> int:
        """At start: held rows of an earlier boot go to ``unsynced``."""
        if self._spool is None:
            return 0
        try:
            moved = await self._spool.keep_apart(self.boot_id, reason=EARLIER_BOOT)
        except SpoolError:
            return 0  # a full card (the spool reported it): tried again at the next check
        self._earlier_boots_done = True
        if moved:
            self._counts.kept_apart += moved
            log.warning("held readings of an earlier boot kept apart: rows=%d in table "
                        "unsynced (never sent; docs/technician.md \"The clock\")", moved)
        return moved

    async def release(self) -> int:
        """Move this boot's held rows to the spool with corrected times (clock believed)."""
        if self._spool is None or not self._trusted or not self._spool.held_rows:
            return 0
        # Sampled now, back to back: exact to the few hundred nanoseconds between the reads.
        offset = self.source.wall_ns() - self.source.boottime_ns()
        released = 0
        while True:
            try:
                n = await self._spool.release_held(self.boot_id, offset)
            except SpoolError:
                break  # a full card (the spool reported it): they wait, held, for next time
            if not n:
                break
            released += n
        if released:
            self._counts.released += released
            log.info("held readings released: rows=%d offset=%d ns", released, offset)
        return released

    async def run(self) -> None:
        """Check the clock and release what waits; cancellation is the way to stop."""
        await self.keep_earlier_boots_apart()
        while True:
            if not self._earlier_boots_done:
                await self.keep_earlier_boots_apart()
            self.check()
            held_event = self._spool.held_appended if self._spool is not None else None
            if held_event is not None:
                held_event.clear()
            await self.release()
            if not self._trusted:
                await self._clock.sleep(self._check_interval)
            elif held_event is None:
                await self._clock.sleep(self._synced_interval)
            else:
                # Readings held by a batch that began before the clock was believed (or a
                # redelivery first received before) are released as soon as committed.
                await clock_sleep_or_event(self._clock, self._synced_interval, held_event)

    def statistics(self) -> dict[str, Any]:
        c = self._counts
        totals = self._spool.db.clock_totals() if self._spool is not None else {}
        return {
            "synced": self._trusted,
            "kernel_synchronised": c.kernel,
            "require_sync": self.require_sync,
            "boot_id": self.boot_id,
            "since_boottime_s": c.since_boot_ns / 1e9,
            "synced_at_ns": c.synced_at_ns,
            "last_step_s": None if c.last_step_ns is None else c.last_step_ns / 1e9,
            "held_rows": self.held_rows,
            "unsynced_rows": self._spool.db.unsynced_rows if self._spool is not None else 0,
            "held": totals.get("held", 0),
            "released": totals.get("released", 0),
            "kept_apart": totals.get("kept_apart", 0),
            "held_evicted": totals.get("held_evicted", 0),
            # Device times refused by the pipeline (the forwarder counts its own).
            "refused_time": totals.get("refused_time", 0),
        }
