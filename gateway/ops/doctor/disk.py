"""``disk`` and ``spool``: free space where ``data_dir`` lives against ``spool.max_bytes``;
the spool's size, waiting readings and the oldest one's age.

The spool is read through its own read-only API (:func:`gateway.store.spool.inspect_spool`),
with a short busy timeout, so the running gateway is never blocked.
"""

from __future__ import annotations

import shutil

from gateway.config import Config
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.ops.doctor.runner import Result, age_text, size_text
from gateway.store.spool import FILE_NAME, SpoolReadError, inspect_spool, spool_file_bytes

DISK_WARN_PCT = 15.0
DISK_FAIL_PCT = 5.0
# The spool this full: the gateway is dropping the oldest readings (or about to).
SPOOL_FULL_PCT = 90.0
# The oldest waiting reading older than this: InfluxDB has not been taking them.
SPOOL_STALE_S = 3600.0
# How long to wait for the gateway's write lock, at most.
SPOOL_BUSY_TIMEOUT_S = 0.5


def check_disk(cfg: Config) -> list[Result]:
    data_dir = cfg.data_dir
    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    spool_now = spool_file_bytes(data_dir / FILE_NAME)
    headroom = max(0, cfg.spool.max_bytes - spool_now)
    note = "" if where == data_dir else f" ({data_dir} does not exist yet)"
    found = (f"{size_text(usage.free)} free of {size_text(usage.total)} ({pct:.0f} %) for "
             f"{data_dir}{note}")
    clean = "make room (`sudo journalctl --vacuum-size=100M`, old files in /home, /var/log)"
    if pct < DISK_FAIL_PCT:
        return [Result("disk", "disk", "FAIL", found, clean)]
    if usage.free < headroom:
        return [Result("disk", "disk", "FAIL",
                       f"{found}, but the spool may grow by {size_text(headroom)} more "
                       f"(spool.max_bytes {size_text(cfg.spool.max_bytes)})",
                       f"{clean}, or lower spool.max_bytes")]
    if pct < DISK_WARN_PCT:
        return [Result("disk", "disk", "WARN", found, clean)]
    return [Result("disk", "disk", "OK", found)]


def _unreadable(error: SpoolReadError) -> Result:
    path = error.path
    if error.kind == "open":
        return Result("disk", "spool", "FAIL", f"cannot open {path}: {error}",
                      "check its owner and permissions (`ls -l` it); run doctor with sudo")
    if error.kind == "busy":
        return Result("disk", "spool", "WARN", f"{path} is busy ({error})",
                      "the gateway is writing a lot right now; run doctor again")
    if error.kind == "schema":
        return Result("disk", "spool", "FAIL", f"{path}: {error}",
                      "not a spool of this gateway, or damaged: stop the gateway and move "
                      "the file aside")
    return Result("disk", "spool", "FAIL", f"{path}: {error}",
                  "damaged: stop the gateway, move the file aside, start it again")


def check_spool(cfg: Config, clock: Clock = SYSTEM_CLOCK) -> list[Result]:
    path = cfg.data_dir / FILE_NAME
    if not path.exists():
        return [Result("disk", "spool", "OK",
                       f"no spool yet at {path}: the gateway has not run with this data_dir")]
    limit = cfg.spool.max_bytes
    try:
        spool = inspect_spool(path, busy_timeout_s=SPOOL_BUSY_TIMEOUT_S)
    except SpoolReadError as exc:
        return [_unreadable(exc)]
    size = spool.file_bytes
    parts = [f"{size_text(size)} of {size_text(limit)}",
             f"about {spool.rows} readings waiting"]
    age_s: float | None = None
    if spool.oldest_time_ns is not None:
        age_s = (clock.now_ns() - spool.oldest_time_ns) / 1e9
        parts.append(f"the oldest from {age_text(max(0.0, age_s))} ago")
    if spool.held_rows:
        parts.append(f"about {spool.held_rows} held until the clock is synchronised")
    if spool.totals["evicted"]:
        parts.append(f"{spool.totals['evicted']} dropped so far because it was full")
    found = ", ".join(parts)
    if size >= SPOOL_FULL_PCT / 100 * limit:
        return [Result("disk", "spool", "FAIL", f"nearly full: {found}",
                       "readings are not reaching InfluxDB (see the influx check), so the "
                       "oldest are dropped; or raise spool.max_bytes")]
    if age_s is not None and age_s > SPOOL_STALE_S:
        return [Result("disk", "spool", "WARN", found,
                       "readings are not reaching InfluxDB: see the influx check and "
                       "`journalctl -u garden-gateway -n 50`")]
    return [Result("disk", "spool", "OK", found)]
