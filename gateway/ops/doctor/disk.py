"""``disk``, ``spool`` and ``files``: free space where ``data_dir`` lives against
``spool.max_bytes`` and ``spool.min_free_bytes``; the spool's size, waiting readings and the
oldest one's age; each SQLite file intact or damaged, and damaged files set aside at start.

The spool is read through its own read-only API (:func:`gateway.store.spool.inspect_spool`),
with a short busy timeout, so the running gateway is never blocked.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.core.disk import NEARLY_FULL_BYTES, NOTICES_FILE
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
# The gateway's SQLite files in data_dir.
FILES = (FILE_NAME, "state.sqlite3", "history.sqlite3", "outbox.sqlite3")


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
    if usage.free < NEARLY_FULL_BYTES:
        return [Result("disk", "disk", "FAIL", f"disk full: {found}",
                       f"{clean}; meanwhile the gateway takes nothing it cannot commit (the "
                       "broker keeps it) and says disk_full in its status")]
    reserve = cfg.spool.min_free_bytes
    if usage.free < reserve:
        return [Result("disk", "disk", "WARN",
                       f"{found}: under spool.min_free_bytes ({size_text(reserve)}), so the "
                       "spool evicts its oldest readings rather than grow", clean)]
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


def check_files(cfg: Config) -> list[Result]:
    """Each SQLite file checked (read-only ``PRAGMA quick_check``), and the damaged files the
    gateway set aside at start that no operator has acknowledged yet."""
    results: list[Result] = []
    for name in FILES:
        path = cfg.data_dir / name
        if not path.exists():
            continue
        problem = _quick_check(path)
        if problem is None:
            continue
        if problem.startswith("busy:"):
            results.append(Result("disk", name, "WARN", f"{path} is busy ({problem[5:]})",
                                  "the gateway is writing a lot right now; run doctor again"))
            continue
        results.append(Result(
            "disk", name, "FAIL", f"{path} is damaged: {problem}",
            "restart the gateway (`sudo systemctl restart garden-gateway`): at start it sets "
            "a damaged file aside and keeps what can still be read; then replace the SD card "
            "if it happens again"))
    for notice in _notices(cfg.data_dir):
        lost = "unknown" if notice.get("lost") is None else notice["lost"]
        results.append(Result(
            "disk", f"{notice.get('file')} set aside", "WARN",
            f"{notice.get('detail')} (moved to {notice.get('set_aside_as')}; "
            f"{notice.get('salvaged', 0)} rows kept, {lost} lost)",
            "a power cut or a worn SD card: check the power supply and the card; acknowledge "
            "it on the operator page (Disk) once read"))
    if not results:
        names = ", ".join(n for n in FILES if (cfg.data_dir / n).exists()) or "none yet"
        results.append(Result("disk", "files", "OK", f"intact ({names})"))
    return results


def _quick_check(path: Path) -> str | None:
    """None when SQLite finds the file intact; else its words ("busy: ..." when locked)."""
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                             timeout=SPOOL_BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.OperationalError as exc:
        busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
        return f"busy: {exc}" if busy else str(exc)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    return "; ".join(problems[:3]) if problems else None


def _notices(data_dir: Path) -> list[dict[str, Any]]:
    try:
        raw = json.loads((data_dir / NOTICES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(raw, list):
        return []
    return [n for n in raw if isinstance(n, dict) and not n.get("acknowledged")]


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
