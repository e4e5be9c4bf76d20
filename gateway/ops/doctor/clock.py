"""``clock``: synchronised per ``timedatectl``, else per the kernel (``adjtimex``'s
STA_UNSYNC); a wall clock before 2026 is wrong whatever anyone says."""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.ops.doctor.runner import CommandRunner, Result, run_command

# Before this the clock is certainly wrong (no gateway ran earlier): a Pi without RTC after
# a power cut, before NTP.
CLOCK_FLOOR = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex up to `status`, then room for the rest of it (about 200 bytes on 64-bit).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 512),
    ]


def adjtimex_status() -> int | None:
    """The kernel's NTP status bits (``adjtimex`` with modes 0 only reads); None: no libc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        timex = _Timex()
        if libc.adjtimex(ctypes.byref(timex)) < 0:
            return None
    except (OSError, AttributeError):
        return None
    return int(timex.status)


def timedatectl_synchronised(run: CommandRunner, timeout_s: float) -> bool | None:
    """``timedatectl``'s NTPSynchronized; None when it cannot say (no systemd here)."""
    try:
        out = run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"], timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = out.stdout.strip()
    if out.returncode != 0 or answer not in ("yes", "no"):
        return None
    return answer == "yes"


@dataclass(frozen=True, slots=True)
class ClockSources:
    """Where the clock check looks; tests give fakes."""

    clock: Clock = SYSTEM_CLOCK
    timedatectl: Callable[[float], bool | None] = field(
        default=lambda timeout_s: timedatectl_synchronised(run_command, timeout_s))
    adjtimex: Callable[[], int | None] = adjtimex_status


def check_clock(sources: ClockSources, timeout_s: float) -> list[Result]:
    now = dt.datetime.fromtimestamp(sources.clock.now_ns() / 1e9, tz=dt.UTC)
    shown = now.strftime("%Y-%m-%d %H:%M:%S UTC")
    ntp_fix = ("check the network, then `timedatectl timesync-status`; "
               "`sudo timedatectl set-ntp true` turns NTP on")
    if now < CLOCK_FLOOR:
        return [Result("clock", "clock", "FAIL",
                       f"the clock says {shown}: certainly wrong (before "
                       f"{CLOCK_FLOOR:%Y-%m-%d}); NTP has not synchronised it", ntp_fix)]
    synced = sources.timedatectl(timeout_s)
    how = "timedatectl"
    if synced is None:
        status = sources.adjtimex()
        if status is None:
            return [Result("clock", "clock", "WARN",
                           f"{shown}; cannot tell whether it is synchronised",
                           "compare with a phone's clock; `timedatectl` says more on the Pi")]
        synced = not status & STA_UNSYNC
        how = "the kernel (adjtimex)"
    if synced:
        return [Result("clock", "clock", "OK", f"synchronised per {how}, {shown}")]
    return [Result("clock", "clock", "WARN",
                   f"{shown} but not synchronised per {how}: after a power cut it may be "
                   "behind, and so would readings' times", ntp_fix)]
